/*
** lf_core_lua.c — the functions of futures.core that belong to no object:
** cpu_count, monotonic, sleep, poll, pollfd, the event loop adapters'
** hooks (_pending, _watch_pending, _spin), and the error classes.
**
** Threads: the thread that owns the calling state.
** Ownership: nothing outside the state.
*/
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_common.h"
#include "lf_context.h"
#include "lf_error.h"
#include "lf_state.h"

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
  lf_run_callbacks(L);
  lf_intr intr;
  lf_intr_begin(L, &intr);
  double until = lf_now() + secs;
  for (;;) {
    double left = until - lf_now();
    if (left <= 0) break;
    if (left > LF_WAIT_SLICE) left = LF_WAIT_SLICE;
    struct timespec ts = lf_timespec(left);
    nanosleep(&ts, NULL);  /* EINTR: the check below sees the signal */
    if (lf_intr_pending(L, &intr)) lf_intr_raise(L, &intr);
  }
  lf_run_callbacks(L);
  return 0;
}

static int core_poll(lua_State *L) {
  lua_pushinteger(L, lf_poll(L));
  return 1;
}

void *lf_check_handle(lua_State *L, int idx, const char *tname,
                      const char *fname) {
  void **ud = luaL_testudata(L, idx, tname);
  if (ud == NULL) {
    const char *got = luaL_getmetafield(L, idx, "__name") == LUA_TSTRING
                    ? lua_tostring(L, -1) : luaL_typename(L, idx);
    const char *msg = lua_pushfstring(L, "%s expected, got %s; call it with "
                                      "':'", tname, got);
    if (fname != NULL)
      luaL_error(L, "bad argument #%d to '%s' (%s)", idx, fname, msg);
    luaL_argerror(L, idx, msg);
  }
  if (*ud == NULL) luaL_argerror(L, idx, "released handle");
  return *ud;
}

/* pollfd() -> the descriptor a loop watches: readable while this state has
** callbacks to deliver; poll() delivers them and drains it. */
static int core_pollfd(lua_State *L) {
  lua_pushinteger(L, lf_pollfd(L));
  return 1;
}

/* _pending() -> busy, n: whether callbacks wait in this state for futures
** (n of them), which keeps a luv loop alive. */
static int core_pending(lua_State *L) {
  lf_ctx *ctx = lf_testctx(L);
  long n = ctx != NULL ? ctx->npending : 0;
  lua_pushboolean(L, n > 0);
  lua_pushinteger(L, n);
  return 2;
}

/* _spin(seconds) -> whether callbacks became due within that time, spun
** for without a system call: an event loop's last look before it sleeps,
** as result() spins before it blocks (LF_SPIN_WAITER). */
static int core_spin(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  lf_ctx *ctx = lf_testctx(L);
  int due = 0;
  if (ctx != NULL && ctx->inbox != NULL) {
    atomic_int *pending = &ctx->inbox->pending;
    double until = lf_now() + secs;
    for (unsigned i = 1;; i++) {
      if (atomic_load_explicit(pending, memory_order_acquire) > 0) { due = 1; break; }
      if ((i & 63) == 0 && lf_now() >= until) break;
      lf_cpu_relax();
    }
  }
  lua_pushboolean(L, due);
  return 1;
}

/* _watch_pending(fn | nil): fn(busy) now and whenever _pending() changes
** (see lf_set_pending_hook). */
static int core_watch_pending(lua_State *L) {
  if (!lua_isnil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lf_set_pending_hook(L, 1);
  return 0;
}

static const luaL_Reg core_funcs[] = {
  {"cpu_count", core_cpu_count},
  {"monotonic", core_monotonic},
  {"sleep", core_sleep},
  {"poll", core_poll},
  {"pollfd", core_pollfd},
  {"_pending", core_pending},
  {"_watch_pending", core_watch_pending},
  {"_spin", core_spin},
  {NULL, NULL}
};

void lf_bind_core(lua_State *L) {
  luaL_setfuncs(L, core_funcs, 0);
  lua_pushliteral(L, "lua-futures " LF_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lf_error_open(L);
  lf_push_error_classes(L);
  lua_setfield(L, -2, "errors");
}
