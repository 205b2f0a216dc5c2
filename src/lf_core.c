/*
** lf_core.c — luaopen_futures_core: the module table and its small
** functions (cpu_count, sleep, monotonic), interrupt detection for blocking
** calls, and the creation of worker states.
**
** Threads: the module functions run on the thread that owns the calling
** state. lf_new_state may run on any thread.
** Ownership: nothing here outlives the call, except a new state, which its
** caller closes.
*/
#include <unistd.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_common.h"
#include "lf_bind.h"
#include "lf_core.h"

void (*lf_state_setup)(lua_State *L) = NULL;

void lf_intr_begin(lua_State *L, lf_intr *st) {
  st->hook = lua_gethook(L);
  st->mask = lua_gethookmask(L);
  st->count = lua_gethookcount(L);
}

void lf_intr_check(lua_State *L, const lf_intr *st) {
  if (lua_gethook(L) == st->hook && lua_gethookmask(L) == st->mask)
    return;
  lua_sethook(L, st->hook, st->mask, st->count);
  luaL_error(L, "interrupted!");
}

static int core_cpu_count(lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n < 1 ? 1 : n);
  return 1;
}

static int core_monotonic(lua_State *L) {
  lua_pushnumber(L, lf_now());
  return 1;
}

static int core_sleep(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0, 1, "must be a non-negative number");
  lf_intr intr;
  lf_intr_begin(L, &intr);
  double until = lf_now() + secs;
  for (;;) {
    double left = until - lf_now();
    if (left <= 0) break;
    if (left > LF_WAIT_SLICE) left = LF_WAIT_SLICE;
    struct timespec ts = lf_timespec(left);
    nanosleep(&ts, NULL);  /* EINTR: the check below sees the signal */
    lf_intr_check(L, &intr);
  }
  return 0;
}

lua_State *lf_new_state(const char *path, const char *cpath) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_futures_core);
  lua_setfield(L, -2, "futures.core");
  lua_pop(L, 1);
  if (lf_state_setup) lf_state_setup(L);
  lua_getglobal(L, "package");
  if (path) { lua_pushstring(L, path); lua_setfield(L, -2, "path"); }
  if (cpath) { lua_pushstring(L, cpath); lua_setfield(L, -2, "cpath"); }
  lua_pop(L, 1);
  return L;
}

static const luaL_Reg core_funcs[] = {
  {"cpu_count", core_cpu_count},
  {"monotonic", core_monotonic},
  {"sleep", core_sleep},
  {NULL, NULL}
};

int luaopen_futures_core(lua_State *L) {
  luaL_newlib(L, core_funcs);
  lua_pushliteral(L, "lua-futures " LF_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lf_bind_codec(L);
  return 1;
}
