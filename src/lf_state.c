/*
** lf_state.c — creating worker states, their counting allocator, and the
** interrupt check of blocking calls (lf_state.h).
**
** Threads: see lf_state.h. A heap record is touched by the allocator on
** the state's own thread; `used` is an atomic so that another thread (a
** pool reporting a worker's size) may read it.
**
** Ownership: each state made by lf_new_state has a malloc'd heap record as
** its allocator's ud; lf_close_state closes the state and then frees it.
*/
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "lauxlib.h"
#include "lualib.h"

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

typedef struct heap {
  atomic_size_t used;
  size_t limit;            /* 0: none */
  int hit;                 /* an allocation failed on the limit */
} heap;

/* Lua's allocator contract: a free (nsize 0) and a shrink never fail. */
static void *heap_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  heap *h = ud;
  if (ptr == NULL) osize = 0;   /* then osize is the kind of object */
  if (nsize == 0) {
    free(ptr);
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
  void *p = realloc(ptr, nsize);
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

int lf_state_hit_limit(lua_State *L) {
  heap *h = heap_of(L);
  if (h == NULL || !h->hit) return 0;
  h->hit = 0;
  return 1;
}

/* ---- new states ---- */

/* Runs inside lua_pcall in a new state: a memory error is caught. */
static int setup_state(lua_State *L) {
  const char *path = lua_touserdata(L, 1);
  const char *cpath = lua_touserdata(L, 2);
  luaL_openlibs(L);
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

/* ---- interrupts ---- */

void lf_intr_begin(lua_State *L, lf_intr *st) {
  st->hook = lua_gethook(L);
  st->mask = lua_gethookmask(L);
  st->count = lua_gethookcount(L);
}

int lf_intr_pending(lua_State *L, const lf_intr *st) {
  return lua_gethook(L) != st->hook || lua_gethookmask(L) != st->mask;
}

int lf_intr_raise(lua_State *L, const lf_intr *st) {
  lua_sethook(L, st->hook, st->mask, st->count);
  return luaL_error(L, "interrupted!");
}
