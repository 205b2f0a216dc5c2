/*
** lf_lend.c — long strings lent by reference between the lua_States of one
** process (lf_lend.h): the per-state lender, loans and their release from
** any thread, and what happens to loans when their state closes.
**
** Threads: lf_lend, lf_lend_collect and lender_gc run on the thread that
** owns the state; loan_retain, loan_release (lf_buf_free), lf_loan_pin and
** lf_loan_unpin on any thread. lend_mu guards the lists of every lender,
** `closed`, and each loan's owner, prev and next; it is held only for list
** work, never around a Lua call or a copy. A loan's bytes pointer and its
** reader count are atomics: a decoder counts itself in, then loads the
** pointer; a closing owner stores the new pointer, then waits for the
** count to drop to zero (both sides sequentially consistent, so that a
** decoder either sees the new pointer or is waited for).
**
** Ownership: a loan is malloc'd by lf_lend with one reference, the
** buffer's; lf_buf_free drops it (loan_release). While its owner lives, the
** loan is on the owner's live list and its string is in the owner's anchor
** table; with its last reference it moves to the released list, and
** lf_lend_collect (the owner's thread) unanchors and frees it. lender_gc
** (the owner closing) frees the released loans, and gives every live loan
** a copy of its bytes (`own`) and no owner: the last release then frees
** the copy and the loan. The lender itself is a userdata of its state.
*/
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_lend.h"

typedef struct lender lender;

struct lf_loan {
  atomic_int refs;                /* buffers that hold the loan */
  atomic_int readers;             /* decoders copying its bytes now */
  _Atomic(const char *) bytes;    /* the string's, then `own`; NULL: lost */
  size_t len;
  lender *owner;                  /* lend_mu: while the string is anchored */
  char *own;                      /* the bytes, once the owner has closed */
  lf_loan *prev, *next;           /* lend_mu: in the owner's lists */
};

struct lender {
  lf_loan *live;                  /* lend_mu: anchored, held by buffers */
  lf_loan *released;              /* lend_mu: anchored, held by none */
  int closed;                     /* lend_mu: the state is closing */
  int armed;                      /* the owner's: a sentinel is out */
};

static pthread_mutex_t lend_mu = PTHREAD_MUTEX_INITIALIZER;
/* Released loans not yet unanchored, in every lender (lf_lend.h): lets a
** state that has none skip looking for its lender. */
atomic_size_t lf_lend_released;

static const char LENDER_KEY = 'l';   /* registry: the state's lender */
#define LENDER_MT "futures.lender"
#define SENTINEL_MT "futures.lender.sentinel"

static void lock(void) { if (pthread_mutex_lock(&lend_mu) != 0) abort(); }
static void unlock(void) { if (pthread_mutex_unlock(&lend_mu) != 0) abort(); }

static void unlink_live(lender *o, lf_loan *ln) {
  if (ln->prev) ln->prev->next = ln->next; else o->live = ln->next;
  if (ln->next) ln->next->prev = ln->prev;
  ln->prev = ln->next = NULL;
}

static void loan_retain(void *obj) {
  atomic_fetch_add_explicit(&((lf_loan *)obj)->refs, 1, memory_order_relaxed);
}

/* Any thread. The owner's state cannot be touched here: an anchored loan
** waits on the released list for its owner's thread. */
static void loan_release(void *obj) {
  lf_loan *ln = obj;
  if (atomic_fetch_sub_explicit(&ln->refs, 1, memory_order_acq_rel) != 1)
    return;
  lock();
  lender *o = ln->owner;
  if (o != NULL) {
    unlink_live(o, ln);
    ln->next = o->released;
    o->released = ln;
    atomic_fetch_add_explicit(&lf_lend_released, 1, memory_order_relaxed);
  }
  unlock();
  if (o == NULL) {   /* never anchored (the encode failed), or detached */
    free(ln->own);
    free(ln);
  }
}

/* Not registered with lf_kind_register: a loan is no userdata, only a
** reference that a buffer holds. */
static const lf_handle_kind loan_kind = {
  "futures.loan", loan_retain, loan_release, NULL
};

/* The owner is closing and the loan is still held: copy its bytes, let
** new decoders use the copy, wait for those copying from the string, and
** hand the loan over to its buffers. Out of memory, the bytes are lost
** (NULL): decoding them is then an error, never a read of freed memory.
** The caller holds a reference, dropped here. */
static void detach(lf_loan *ln) {
  const char *old = atomic_load(&ln->bytes);
  char *copy = malloc(ln->len > 0 ? ln->len : 1);
  if (copy != NULL) memcpy(copy, old, ln->len);
  atomic_store(&ln->bytes, copy);
  while (atomic_load(&ln->readers) != 0) sched_yield();
  lock();
  ln->own = copy;
  ln->owner = NULL;
  unlock();
  loan_release(ln);
}

/* __gc of the lender: its state is closing (it is in the registry, so
** only lua_close finalizes it), while every lent string is still there. */
static int lender_gc(lua_State *L) {
  lender *o = lua_touserdata(L, 1);
  lock();
  o->closed = 1;
  lf_loan *live = o->live, *rel = o->released;
  o->live = o->released = NULL;
  /* held, so that no release can free one (or touch its links) before
  ** it is detached */
  for (lf_loan *ln = live; ln != NULL; ln = ln->next)
    atomic_fetch_add_explicit(&ln->refs, 1, memory_order_relaxed);
  unlock();
  size_t n = 0;
  while (rel != NULL) {
    lf_loan *next = rel->next;
    free(rel);
    rel = next;
    n++;
  }
  if (n > 0) atomic_fetch_sub_explicit(&lf_lend_released, n, memory_order_relaxed);
  while (live != NULL) {
    lf_loan *next = live->next;
    detach(live);
    live = next;
  }
  return 0;
}

static void arm(lua_State *L, lender *o);

/* __gc of a sentinel: a userdata nothing refers to, so finalized at the end
** of the collection cycle after the one that made it. Unanchors what was
** released meanwhile (lf_lend_collect), so that a state that neither
** encodes nor decodes any more still lets go of the strings it lent; and
** arms another while anything is anchored. */
static int sentinel_gc(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LENDER_KEY) != LUA_TUSERDATA) return 0;
  lender *o = lua_touserdata(L, -1);
  o->armed = 0;
  lf_lend_collect(L);
  lock();
  int more = !o->closed && (o->live != NULL || o->released != NULL);
  unlock();
  if (more) arm(L, o);
  return 0;
}

/* Makes a sentinel, unless one is out. [-0, +0, m] */
static void arm(lua_State *L, lender *o) {
  if (o->armed) return;
  lua_newuserdatauv(L, 1, 0);
  if (luaL_newmetatable(L, SENTINEL_MT)) {
    lua_pushcfunction(L, sentinel_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pop(L, 1);
  o->armed = 1;
}

/* Pushes L's lender, made on first use. [-0, +1, m] */
static lender *push_lender(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LENDER_KEY) == LUA_TUSERDATA)
    return lua_touserdata(L, -1);
  lua_pop(L, 1);
  lender *o = lua_newuserdatauv(L, sizeof *o, 1);
  memset(o, 0, sizeof *o);
  lua_newtable(L);                   /* the anchors: loan -> string */
  lua_setiuservalue(L, -2, 1);
  if (luaL_newmetatable(L, LENDER_MT)) {
    lua_pushcfunction(L, lender_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &LENDER_KEY);
  return o;
}

static int protected_arm(lua_State *L) {
  arm(L, lua_touserdata(L, 1));
  return 0;
}

lf_loan *lf_lend(lua_State *L, int idx, lf_buf *b) {
  idx = lua_absindex(L, idx);
  lender *o = push_lender(L);
  lock();
  int closed = o->closed;
  unlock();
  if (closed) {   /* a finalizer encoding while the state closes */
    lua_pop(L, 1);
    return NULL;
  }
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  lf_loan *ln = calloc(1, sizeof *ln);
  if (ln == NULL) luaL_error(L, "not enough memory");
  atomic_init(&ln->refs, 1);
  atomic_init(&ln->readers, 0);
  atomic_init(&ln->bytes, s);
  ln->len = len;
  if (lf_buf_add_handle(b, &loan_kind, ln) != 0) {
    free(ln);
    luaL_error(L, "not enough memory");
  }
  /* From here b owns the loan: should the anchoring raise, lf_buf_free
  ** frees it as one that was never anchored (no owner). */
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, idx);
  lua_rawsetp(L, -2, ln);
  lua_pop(L, 2);
  lock();
  ln->owner = o;
  ln->next = o->live;
  if (o->live) o->live->prev = ln;
  o->live = ln;
  unlock();
  if (!o->armed) {
    lua_pushcfunction(L, protected_arm);   /* out of memory: not armed */
    lua_pushlightuserdata(L, o);
    lua_pcall(L, 1, 0, 0);
  }
  return ln;
}

const char *lf_loan_pin(lf_loan *ln, size_t *len) {
  atomic_fetch_add(&ln->readers, 1);
  *len = ln->len;
  return atomic_load(&ln->bytes);
}

void lf_loan_unpin(lf_loan *ln) {
  atomic_fetch_sub_explicit(&ln->readers, 1, memory_order_release);
}

size_t lf_lend_collect(lua_State *L) {
  if (atomic_load_explicit(&lf_lend_released, memory_order_relaxed) == 0) return 0;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &LENDER_KEY) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    return 0;
  }
  lender *o = lua_touserdata(L, -1);
  lock();
  lf_loan *ln = o->released;
  o->released = NULL;
  unlock();
  lua_getiuservalue(L, -1, 1);
  size_t n = 0, bytes = 0;
  while (ln != NULL) {
    lf_loan *next = ln->next;
    lua_pushnil(L);          /* the key is there: setting it allocates nothing */
    lua_rawsetp(L, -2, ln);
    bytes += ln->len;
    free(ln);
    ln = next;
    n++;
  }
  if (n > 0) atomic_fetch_sub_explicit(&lf_lend_released, n, memory_order_relaxed);
  lua_pop(L, 2);
  return bytes;
}
