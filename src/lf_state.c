/*
** lf_state.c — creating worker states, their counting allocator, and the
** interrupt check of blocking calls (lf_state.h).
**
** Threads: see lf_state.h. A heap record is touched by the allocator on
** the state's own thread; `used` is an atomic so that another thread (a
** pool reporting a worker's size) may read it.
**
** Ownership: each state made by lf_new_state has a malloc'd heap record as
** its allocator's ud, which also holds the freed big blocks the state
** keeps (lf_state_keep_blocks); lf_close_state closes the state, then
** unmaps those and frees the record.
*/
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_common.h"
#include "lf_error.h"
#include "lf_future.h"
#include "lf_state.h"
#ifdef LF_FAULT_INJECTION
#include "lf_fault.h"
#endif

static _Atomic(lua_CFunction) core_opener;
static _Atomic(void (*)(lua_State *)) interpreter_preload;

void lf_state_set_opener(lua_CFunction open_core) {
  atomic_store(&core_opener, open_core);
}

void lf_state_set_interpreter(void (*preload)(lua_State *L)) {
  atomic_store(&interpreter_preload, preload);
}

int lf_state_is_interpreter(void) {
  return atomic_load(&interpreter_preload) != NULL;
}

/* ---- the counting allocator ---- */

/* Blocks of at least BIG_BLOCK bytes get a mapping of their own, given
** back to the system when freed: the C allocator keeps what a thread
** arena once held mapped (malloc_trim releases the pages, not the address
** space), so a worker that ran out of memory would leave the host none to
** allocate under an address-space limit. A mapped block keeps its mapping
** when Lua shrinks it below BIG_BLOCK and malloc cannot take it over;
** such blocks are few and listed in `shrunk`.
**
** A state that keeps blocks (lf_state_keep_blocks) puts a freed big block
** in `kept` instead (up to KEPT_SLOTS of them, LF_STATE_KEEP bytes in all,
** the oldest given back first), and takes its next big blocks from there:
** the one that fits best, cut to size with mremap (the pages it keeps stay
** warm), or else the largest, grown. Kept blocks are not counted as used,
** and are given back before an allocation may fail for want of memory;
** under a heap limit (max_memory) a block is kept only while what is used
** and kept stays within it. */
#define BIG_BLOCK ((size_t)256 << 10)
#define KEPT_SLOTS 4

typedef struct kept_block { void *p; size_t size; } kept_block;

typedef struct heap {
  atomic_size_t used;
  size_t limit;            /* 0: none */
  int hit;                 /* an allocation failed on the limit */
  void **shrunk;           /* mapped blocks now smaller than BIG_BLOCK */
  size_t nshrunk, capshrunk;
  int keep;                /* keep freed big blocks */
  double kept_at;          /* lf_now() when one was last kept or taken */
  int nkept;
  size_t kept_bytes;
  kept_block kept[KEPT_SLOTS];   /* oldest first */
} heap;

static int is_shrunk(heap *h, void *p, int forget) {
  for (size_t i = 0; i < h->nshrunk; i++) {
    if (h->shrunk[i] != p) continue;
    if (forget) h->shrunk[i] = h->shrunk[--h->nshrunk];
    return 1;
  }
  return 0;
}

/* Is the block p of `size` bytes a mapping of its own? */
static int mapped(heap *h, void *p, size_t size) {
  return size >= BIG_BLOCK || (h->nshrunk > 0 && is_shrunk(h, p, 0));
}

static void kept_remove(heap *h, int i) {
  h->kept_bytes -= h->kept[i].size;
  h->nkept--;
  memmove(&h->kept[i], &h->kept[i + 1], (size_t)(h->nkept - i) * sizeof h->kept[0]);
}

static void drop_kept(heap *h) {
  for (int i = 0; i < h->nkept; i++) munmap(h->kept[i].p, h->kept[i].size);
  h->nkept = 0;
  h->kept_bytes = 0;
}

/* Keeps the freed big block p of `size` bytes, if the state keeps blocks;
** returns 0 when the caller must unmap it. */
static int keep_block(heap *h, void *p, size_t size) {
  if (!h->keep || size > LF_STATE_KEEP) return 0;
  /* Under a heap limit, what is kept and what is used stay within it. */
  if (h->limit && atomic_load_explicit(&h->used, memory_order_relaxed) +
                  h->kept_bytes + size > h->limit)
    return 0;
  while (h->nkept == KEPT_SLOTS || h->kept_bytes + size > LF_STATE_KEEP) {
    munmap(h->kept[0].p, h->kept[0].size);
    kept_remove(h, 0);
  }
  h->kept[h->nkept].p = p;
  h->kept[h->nkept].size = size;
  h->nkept++;
  h->kept_bytes += size;
  h->kept_at = lf_now();
  return 1;
}

/* A kept block made n bytes long, or NULL. */
static void *take_kept(heap *h, size_t n) {
  int best = -1;
  for (int i = 0; i < h->nkept; i++)   /* the smallest that holds n */
    if (h->kept[i].size >= n && (best < 0 || h->kept[i].size < h->kept[best].size))
      best = i;
  for (int i = 0; best < 0 && i < h->nkept; i++)   /* else the largest */
    if (best < 0 || h->kept[i].size > h->kept[best].size) best = i;
  if (best < 0) return NULL;
  void *p = h->kept[best].p;
  size_t size = h->kept[best].size;
  kept_remove(h, best);
  h->kept_at = lf_now();
  if (size == n) return p;
  void *q = mremap(p, size, n, size < n ? MREMAP_MAYMOVE : 0);
  if (q != MAP_FAILED) return q;
  munmap(p, size);
  return NULL;
}

static void *map_block(heap *h, size_t n) {
  void *p = h->nkept > 0 ? take_kept(h, n) : NULL;
  if (p != NULL) return p;
  p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED && h->nkept > 0) {   /* the kept blocks' room, then */
    drop_kept(h);
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  return p == MAP_FAILED ? NULL : p;
}

/* Gives the freed big block p back: kept, or unmapped. */
static void unmap_block(heap *h, void *p, size_t size) {
  if (size < BIG_BLOCK || !keep_block(h, p, size)) munmap(p, size);
}

/* realloc with the mapping rule above; NULL when out of memory (never for
** a shrink). */
static void *block_realloc(heap *h, void *ptr, size_t osize, size_t nsize) {
  int was = ptr != NULL && mapped(h, ptr, osize);
  if (nsize >= BIG_BLOCK) {
    if (was) {
      void *q = mremap(ptr, osize, nsize, MREMAP_MAYMOVE);
      if (q == MAP_FAILED) return nsize > osize ? NULL : ptr;
      if (osize < BIG_BLOCK) is_shrunk(h, ptr, 1);
      return q;
    }
    void *q = map_block(h, nsize);
    if (q != NULL && ptr != NULL) {
      memcpy(q, ptr, osize);
      free(ptr);
    }
    return q;
  }
  if (!was) return realloc(ptr, nsize);
  void *q = malloc(nsize);   /* a mapped block shrinks into the heap */
  if (q != NULL) {
    memcpy(q, ptr, nsize);
    if (osize < BIG_BLOCK) is_shrunk(h, ptr, 1);
    unmap_block(h, ptr, osize);
    return q;
  }
  if (osize < BIG_BLOCK) return ptr;   /* listed already */
  if (h->nshrunk == h->capshrunk) {
    size_t cap = h->capshrunk ? 2 * h->capshrunk : 8;
    void **l = realloc(h->shrunk, cap * sizeof *l);
    if (l == NULL) return ptr;   /* keeps its size: stays mapped, unlisted */
    h->shrunk = l;
    h->capshrunk = cap;
  }
  h->shrunk[h->nshrunk++] = ptr;
  return ptr;
}

/* Lua's allocator contract: a free (nsize 0) and a shrink never fail. */
static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap *h = ud;
  if (ptr == NULL) osize = 0;   /* then osize is the kind of object */
  if (nsize == 0) {
    if (ptr != NULL && mapped(h, ptr, osize)) {
      if (osize < BIG_BLOCK) is_shrunk(h, ptr, 1);
      unmap_block(h, ptr, osize);
    } else {
      free(ptr);
    }
    atomic_fetch_sub_explicit(&h->used, osize, memory_order_relaxed);
    return NULL;
  }
  if (nsize > osize) {
    size_t used = atomic_load_explicit(&h->used, memory_order_relaxed);
    if (h->limit && used + (nsize - osize) > h->limit) {
      h->hit = 1;
      return NULL;
    }
#ifdef LF_FAULT_INJECTION
    if (lf_fault_state_alloc()) return NULL;
#endif
  }
  void *p = block_realloc(h, ptr, osize, nsize);
  if (p == NULL) return nsize > osize ? NULL : ptr;
  if (nsize > osize)
    atomic_fetch_add_explicit(&h->used, nsize - osize, memory_order_relaxed);
  else
    atomic_fetch_sub_explicit(&h->used, osize - nsize, memory_order_relaxed);
  return p;
}

static int state_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "lua-futures: PANIC in a worker state: %s\n",
          msg ? msg : "(error object is not a string)");
  fflush(stderr);
  return 0;   /* then Lua aborts */
}

/* Warnings off, as luaL_newstate leaves them. */
static void state_warn(void *ud, const char *msg, int tocont) {
  (void)ud; (void)msg; (void)tocont;
}

static heap *heap_of(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == heap_alloc ? ud : NULL;
}

size_t lf_state_heap(lua_State *L) {
  heap *h = heap_of(L);
  return h ? atomic_load_explicit(&h->used, memory_order_relaxed) : 0;
}

int lf_state_set_limit(lua_State *L, size_t bytes) {
  heap *h = heap_of(L);
  if (h == NULL) return -1;
  h->limit = bytes;
  return 0;
}

size_t lf_state_limit(lua_State *L) {
  heap *h = heap_of(L);
  return h ? h->limit : 0;
}

int lf_state_hit_limit(lua_State *L) {
  heap *h = heap_of(L);
  if (h == NULL || !h->hit) return 0;
  h->hit = 0;
  return 1;
}

void lf_state_keep_blocks(lua_State *L, int keep) {
  heap *h = heap_of(L);
  if (h == NULL) return;
  h->keep = keep;
  if (!keep) drop_kept(h);
}

size_t lf_state_kept(lua_State *L) {
  heap *h = heap_of(L);
  return h ? h->kept_bytes : 0;
}

void lf_state_drop_blocks(lua_State *L) {
  heap *h = heap_of(L);
  if (h != NULL) drop_kept(h);
}

void lf_state_drop_idle_blocks(lua_State *L, double idle) {
  heap *h = heap_of(L);
  if (h != NULL && h->nkept > 0 && lf_now() - h->kept_at >= idle) drop_kept(h);
}

/* ---- new states ---- */

/* io.popen of worker states. Lua's own calls fflush(NULL) first, which
** locks every stream of the process in turn and so waits for any other
** thread blocked reading its own pipe: thread tasks that shell out would
** run one after the other. Here only stdout is flushed, so that what a
** task printed still comes before what its command prints; the rest is
** liolib's io.popen. */
static int worker_pclose(lua_State *L) {
  luaL_Stream *p = luaL_checkudata(L, 1, LUA_FILEHANDLE);
  errno = 0;
  return luaL_execresult(L, pclose(p->f));
}

static int worker_popen(lua_State *L) {
  const char *cmd = luaL_checkstring(L, 1);
  const char *mode = luaL_optstring(L, 2, "r");
  luaL_Stream *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->closef = NULL;   /* a closed stream until it is open */
  luaL_setmetatable(L, LUA_FILEHANDLE);
  luaL_argcheck(L, (mode[0] == 'r' || mode[0] == 'w') && mode[1] == '\0', 2,
                "invalid mode");
  fflush(stdout);
  p->f = popen(cmd, mode);
  p->closef = worker_pclose;
  return p->f == NULL ? luaL_fileresult(L, 0, cmd) : 1;
}

/* Runs inside lua_pcall in a new state: a memory error is caught. */
static int setup_state(lua_State *L) {
  const char *path = lua_touserdata(L, 1);
  const char *cpath = lua_touserdata(L, 2);
  luaL_openlibs(L);
  lua_getglobal(L, "io");
  lua_pushcfunction(L, worker_popen);
  lua_setfield(L, -2, "popen");
  lua_pop(L, 1);
  lua_CFunction open = atomic_load(&core_opener);
  if (open != NULL) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, open);
    lua_setfield(L, -2, "futures.core");
    lua_pop(L, 1);
  }
  void (*preload)(lua_State *) = atomic_load(&interpreter_preload);
  if (preload != NULL) preload(L);
  lua_getglobal(L, "package");
  if (path) { lua_pushstring(L, path); lua_setfield(L, -2, "path"); }
  if (cpath) { lua_pushstring(L, cpath); lua_setfield(L, -2, "cpath"); }
  return 0;
}

lua_State *lf_new_state(const char *path, const char *cpath) {
  heap *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  atomic_init(&h->used, 0);
  lua_State *L = lua_newstate(heap_alloc, h);
  if (L == NULL) { free(h); return NULL; }
  lua_atpanic(L, state_panic);
  lua_setwarnf(L, state_warn, NULL);
  lua_pushcfunction(L, setup_state);
  lua_pushlightuserdata(L, (void *)path);
  lua_pushlightuserdata(L, (void *)cpath);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lf_close_state(L);
    return NULL;
  }
  return L;
}

void lf_close_state(lua_State *L) {
  heap *h = heap_of(L);
  lua_close(L);
  if (h != NULL) {
    drop_kept(h);   /* what lua_close freed, among others */
    free(h->shrunk);
  }
  free(h);
}

void lf_open_core(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_getfield(L, -1, "futures.core") != LUA_TNIL;
  lua_pop(L, 2);
  lua_CFunction open = atomic_load(&core_opener);
  if (!loaded && open != NULL) {
    luaL_requiref(L, "futures.core", open, 0);
    lua_pop(L, 1);
  }
}

/* The waiting state whose Ctrl-C this thread also answers to. */
static _Thread_local struct { lua_State *L; lf_intr intr; } outer;



/* ---- stopping a running task ---- */

/* The task this thread runs now: where its stop request appears, and its
** run limit. */
static _Thread_local struct {
  atomic_int *why;
  double deadline, limit;
  int raised;          /* stops raised in this task so far */
} running;

/* The stop that is due for the task of this thread, or LF_STOP_NONE. A run
** limit that passed becomes a stop request of its own (unless another came
** first). */
/* How often a task with a run limit looks at the clock (the deadline is
** missed by at most this many VM instructions), and how soon a stopped
** task that went on is stopped again. */
#define LIMIT_CHECK 1000

static int stop_due(void) {
  if (running.why == NULL) return LF_STOP_NONE;
  int why = atomic_load_explicit(running.why, memory_order_relaxed);
  if (why == LF_STOP_NONE && running.deadline > 0 &&
      lf_now() >= running.deadline) {
    atomic_compare_exchange_strong(running.why, &why, LF_STOP_TIMEOUT);
    why = atomic_load_explicit(running.why, memory_order_relaxed);
  }
  return why;
}

static int raise_stop(lua_State *L, int why) {
  if (why == LF_STOP_TIMEOUT)
    return lf_raise_error(L, "TimeoutError", "the task ran longer than its "
                          "limit of %f seconds", (lua_Number)running.limit);
  return lf_raise_error(L, "CancelledError", "the task was interrupted");
}

static void stop_hook(lua_State *L, lua_Debug *ar);

/* Raise the stop, and set the hook to raise it again soon: the first times
** after LIMIT_CHECK instructions, so that a pcall handler or a <close>
** variable has room to clean up; then at every instruction, so that a task
** that swallows it in a loop cannot go on. */
static int rearm_and_raise(lua_State *L, int why) {
  int every = ++running.raised >= 3 ? 1 : LIMIT_CHECK;
  lua_sethook(L, stop_hook, LUA_MASKCOUNT, every);
  return raise_stop(L, why);
}

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  int why = stop_due();
  if (why != LF_STOP_NONE) rearm_and_raise(L, why);
  if (lf_intr_outer()) luaL_error(L, "interrupted!");
}

void lf_stop_enter(lua_State *L, atomic_int *why, double limit) {
  running.why = why;
  running.raised = 0;
  running.limit = limit;
  running.deadline = limit > 0 ? lf_now() + limit : 0;
  /* A run limit, or Ctrl-C of a waiting state to watch (lf_intr_watch):
  ** a hook from the start. Otherwise none until a stop is asked for. */
  if (limit > 0 || outer.L != NULL)
    lua_sethook(L, stop_hook, LUA_MASKCOUNT, LIMIT_CHECK);
}

void lf_stop_leave(lua_State *L) {
  running.why = NULL;
  running.deadline = 0;
  if (lua_gethook(L) == stop_hook) lua_sethook(L, NULL, 0, 0);
}

void lf_stop_now(lua_State *L) {
  lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1);
}

/* ---- interrupts ---- */

void lf_intr_begin(lua_State *L, lf_intr *st) {
  st->hook = lua_gethook(L);
  st->mask = lua_gethookmask(L);
  st->count = lua_gethookcount(L);
}


void lf_intr_watch(lua_State *L) {
  outer.L = L;
  lf_intr_begin(L, &outer.intr);
}

void lf_intr_unwatch(void) { outer.L = NULL; }

int lf_intr_outer(void) {
  return outer.L != NULL && (lua_gethook(outer.L) != outer.intr.hook ||
                             lua_gethookmask(outer.L) != outer.intr.mask);
}

int lf_intr_pending(lua_State *L, const lf_intr *st) {
  return lua_gethook(L) != st->hook || lua_gethookmask(L) != st->mask ||
         lf_intr_outer() || stop_due() != LF_STOP_NONE;
}

int lf_intr_raise(lua_State *L, const lf_intr *st) {
  int why = stop_due();
  if (why != LF_STOP_NONE) return rearm_and_raise(L, why);  /* not Ctrl-C */
  lua_sethook(L, st->hook, st->mask, st->count);
  return luaL_error(L, "interrupted!");
}
