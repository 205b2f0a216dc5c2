/*
** lf_core.c — luaopen_futures_core: the module table, the per-state
** context (callbacks inbox, executors to join at lua_close), runtime error
** objects, interrupt detection for blocking calls, and the small functions
** (cpu_count, sleep, monotonic, poll).
**
** Threads: the module functions run on the thread that owns the calling
** state, and only that thread touches the state's lf_ctx. lf_new_state may
** run on any thread.
**
** Ownership: the context is a full userdata in the registry, so lua_close
** finalizes it; its finalizer drops the state's inbox reference and the
** owner references of the executors it created, after joining them. It is
** created inside luaopen, after package.loadlib registered the library's
** handle, so it is finalized first: no worker thread runs the module's code
** once lua_close unloads it.
*/
#include <stdarg.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_bind.h"
#include "lf_common.h"
#include "lf_core.h"
#include "lf_executor.h"
#ifdef LF_FAULT_INJECTION
#include "lf_fault.h"
#endif

void (*lf_state_setup)(lua_State *L) = NULL;

static const char CTX_KEY = 'c';       /* registry: the lf_ctx userdata */
static const char ERRORS_KEY = 'e';    /* registry: error classes by type */
#define CTX_MT "futures.context"

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

/* ---- error objects ---- */

static const char *const ERROR_TYPES[] = {
  "CancelledError", "TimeoutError", "BrokenExecutor", "BrokenThreadPool",
  "BrokenProcessPool", "InvalidStateError", NULL
};

/* A Lua __tostring, so that an error's metatable can travel by value. */
static const char ERROR_TOSTRING[] =
  "local e = ... return (e.type or 'Error') .. ': ' .. (e.message or '')";

/* Push the table of error classes, creating it in this state if needed.
** [-0,+1,m] */
static void push_error_classes(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ERRORS_KEY) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  for (int i = 0; ERROR_TYPES[i] != NULL; i++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, ERROR_TYPES[i]);
    lua_setfield(L, -2, "type");
    lua_pushfstring(L, "futures.%s", ERROR_TYPES[i]);
    lua_setfield(L, -2, "__name");
    if (luaL_loadstring(L, ERROR_TOSTRING) != LUA_OK) lua_error(L);
    lua_setfield(L, -2, "__tostring");
    lua_setfield(L, -2, ERROR_TYPES[i]);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRORS_KEY);
}

static void push_error_msg(lua_State *L, const char *type, const char *msg) {
  push_error_classes(L);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_getfield(L, -2, type);
  lua_setmetatable(L, -2);
  lua_remove(L, -2);
}

void lf_push_error(lua_State *L, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  push_error_msg(L, type, msg);
  lua_remove(L, -2);
}

int lf_raise_error(lua_State *L, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  push_error_msg(L, type, msg);
  return lua_error(L);
}

typedef struct encode_error_args {
  const char *type, *msg;
  lf_buf *out;
  const lf_codec_opts *opts;
  int rc;
} encode_error_args;

static int protected_encode_error(lua_State *L) {
  encode_error_args *a = lua_touserdata(L, 1);
  push_error_msg(L, a->type, a->msg);
  lua_pushliteral(L, "");
  a->rc = lf_encode(L, lua_gettop(L) - 1, 2, "error", 1, a->out, a->opts);
  return 0;
}

int lf_error_encode(lua_State *L, const char *type, const char *msg,
                    lf_buf *out, const lf_codec_opts *opts) {
  encode_error_args a = { type, msg, out, opts, -1 };
  int top = lua_gettop(L);
  lua_pushcfunction(L, protected_encode_error);
  lua_pushlightuserdata(L, &a);
  int rc = lua_pcall(L, 1, 0, 0);
  lua_settop(L, top);
  return rc == LUA_OK ? a.rc : -1;
}

void lf_error_adopt(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return;
  if (lua_getfield(L, -1, "__name") == LUA_TSTRING) {
    const char *name = lua_tostring(L, -1);
    if (strncmp(name, "futures.", 8) == 0) {
      push_error_classes(L);
      if (lua_getfield(L, -1, name + 8) == LUA_TTABLE &&
          !lua_rawequal(L, -1, -4)) {
        lua_pushvalue(L, -1);
        lua_setmetatable(L, idx);
      }
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 2);
}

/* ---- the per-state context ---- */

static int ctx_gc(lua_State *L) {
  lf_ctx *ctx = luaL_checkudata(L, 1, CTX_MT);
  /* Shut everything down first, then join: a worker of one pool may be
  ** waiting on a future of another. */
  for (size_t i = 0; i < ctx->nowned; i++)
    ctx->owned[i]->ops->shutdown(ctx->owned[i], 0);
  for (size_t i = 0; i < ctx->nowned; i++) {
    ctx->owned[i]->ops->join(ctx->owned[i], -1);
    lf_executor_release(ctx->owned[i]);
  }
  free(ctx->owned);
  ctx->owned = NULL;
  ctx->nowned = ctx->capowned = 0;
  if (ctx->inbox) { lf_inbox_close(ctx->inbox); ctx->inbox = NULL; }
  return 0;
}

/* Create the context of L if it has none. [-0,+0,m] */
static void open_ctx(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lf_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 1);
  memset(ctx, 0, sizeof *ctx);
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);   /* callbacks waiting, by future: { userdata, fn... } */
  lua_setiuservalue(L, -2, 1);
  ctx->inbox = lf_inbox_new();
  if (ctx->inbox == NULL) luaL_error(L, "not enough memory");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
}

void lf_open_core(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY) == LUA_TNIL) {
    luaL_requiref(L, "futures.core", luaopen_futures_core, 0);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

lf_ctx *lf_getctx(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY) != LUA_TUSERDATA) {
    lua_pop(L, 1);
    open_ctx(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
  }
  lf_ctx *ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

/* Pushes the table of callbacks waiting in this state. [-0,+1,-] */
void lf_push_pending_callbacks(lua_State *L) {
  lf_getctx(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
}

static int report_callback_error(lua_State *L) {
  fprintf(stderr, "lua-futures: exception calling a done callback: %s\n",
          luaL_tolstring(L, 1, NULL));
  fflush(stderr);
  return 0;
}

/* Calls fn (at -2) with the future (at -1) under pcall; reports an error
** on stderr, itself protected (a __tostring may raise). Never raises.
** [-2,+0,-] */
void lf_call_callback(lua_State *L) {
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) return;
  lua_pushcfunction(L, report_callback_error);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fputs("lua-futures: exception calling a done callback "
          "(its error value could not be printed)\n", stderr);
    lua_pop(L, 1);
  }
}

int lf_run_callbacks(lua_State *L) {
  lf_ctx *ctx = lf_getctx(L);
  /* A callback that calls result() enters here again: the outer loop runs
  ** everything, so the inner call returns at once (no deep recursion). */
  if (ctx->draining || atomic_load_explicit(&ctx->inbox->pending,
                                            memory_order_acquire) == 0)
    return 0;
  ctx->draining = 1;
  int ran = 0;
  lf_future *f;
  while ((f = lf_inbox_pop(ctx->inbox)) != NULL) {
    lf_push_pending_callbacks(L);
    if (lua_rawgetp(L, -1, f) == LUA_TTABLE) {
      lua_pushnil(L);
      lua_rawsetp(L, -3, f);
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      for (lua_Integer i = 2; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -2, 1);
        lf_call_callback(L);
        ran++;
      }
    }
    lua_pop(L, 2);
    lf_future_release(f);
  }
  ctx->draining = 0;
  return ran;
}

void lf_own_executor(lua_State *L, lf_executor *ex) {
  lf_ctx *ctx = lf_getctx(L);
  /* Reap first: join and free the executors nobody can reach any more. */
  size_t keep = 0;
  for (size_t i = 0; i < ctx->nowned; i++) {
    lf_executor *old = ctx->owned[i];
    if (atomic_load(&old->refs) == 1 && old->ops->join(old, 0) == 1)
      lf_executor_release(old);
    else
      ctx->owned[keep++] = old;
  }
  ctx->nowned = keep;
  if (ctx->nowned == ctx->capowned) {
    size_t cap = ctx->capowned ? ctx->capowned * 2 : 8;
    lf_executor **owned = realloc(ctx->owned, cap * sizeof *owned);
    if (owned == NULL) {
      ex->ops->shutdown(ex, 1);
      ex->ops->join(ex, -1);
      lf_executor_release(ex);
      luaL_error(L, "not enough memory");
    }
    ctx->owned = owned;
    ctx->capowned = cap;
  }
  ctx->owned[ctx->nowned++] = ex;
}

/* ---- module functions ---- */

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
  lua_pushinteger(L, lf_run_callbacks(L));
  return 1;
}

/* Runs inside lua_pcall in a new state: a memory error is caught. */
static int setup_state(lua_State *L) {
  const char *path = lua_touserdata(L, 1);
  const char *cpath = lua_touserdata(L, 2);
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_futures_core);
  lua_setfield(L, -2, "futures.core");
  lua_pop(L, 1);
  if (lf_state_setup) lf_state_setup(L);
  lua_getglobal(L, "package");
  if (path) { lua_pushstring(L, path); lua_setfield(L, -2, "path"); }
  if (cpath) { lua_pushstring(L, cpath); lua_setfield(L, -2, "cpath"); }
  return 0;
}

lua_State *lf_new_state(const char *path, const char *cpath) {
#ifdef LF_FAULT_INJECTION
  lua_State *L = lf_fault_newstate();   /* an allocator that can fail */
#else
  lua_State *L = luaL_newstate();
#endif
  if (L == NULL) return NULL;
  lua_pushcfunction(L, setup_state);
  lua_pushlightuserdata(L, (void *)path);
  lua_pushlightuserdata(L, (void *)cpath);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    lua_close(L);
    return NULL;
  }
  return L;
}

static const luaL_Reg core_funcs[] = {
  {"cpu_count", core_cpu_count},
  {"monotonic", core_monotonic},
  {"sleep", core_sleep},
  {"poll", core_poll},
  {NULL, NULL}
};

int luaopen_futures_core(lua_State *L) {
  open_ctx(L);
  luaL_newlib(L, core_funcs);
  lua_pushliteral(L, "lua-futures " LF_VERSION);
  lua_setfield(L, -2, "_VERSION");
  push_error_classes(L);
  lua_setfield(L, -2, "errors");
  lf_bind_codec(L);
  lf_bind_future(L);
  lf_bind_executor(L);
  lf_bind_process_pool(L);
  return 1;
}
