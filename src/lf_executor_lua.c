/*
** lf_executor_lua.c — the Lua face of executors, written once for every
** back-end: construction of a ThreadPoolExecutor, submit, the chunked
** submit behind map, shutdown, __close, __gc and __tostring.
**
** Threads: runs on the thread that owns the calling state, which may be a
** worker of the very executor it calls (a task submitting more work).
**
** Ownership: an Executor userdata holds one reference to its lf_executor,
** dropped by __gc. The creating state holds the owner reference (lf_ctx), so
** its workers are joined before that state closes. A submitted future is
** referenced by its userdata (returned to the caller) and by the queue.
*/
#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_common.h"
#include "lf_core.h"
#include "lf_executor.h"
#include "lf_executor_lua.h"
#include "lf_future_lua.h"
#include "lf_thread_pool.h"

/* ---- the handle kind, for executors passed to thread tasks ---- */

static void kind_retain(void *obj) { lf_executor_retain(obj); }
static void kind_release(void *obj) { lf_executor_release(obj); }
static void kind_push(lua_State *L, void *obj) {
  lf_executor_retain(obj);
  lf_push_executor(L, obj);
}

static const lf_handle_kind executor_kind = {
  LF_EXECUTOR_MT, kind_retain, kind_release, kind_push
};

void lf_push_executor(lua_State *L, lf_executor *ex) {
  lf_open_core(L);   /* a worker state may not have opened the module yet */
  lf_executor **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, LF_EXECUTOR_MT);
  *ud = ex;
}

static lf_executor *check_executor(lua_State *L, int idx) {
  lf_executor **ud = luaL_checkudata(L, idx, LF_EXECUTOR_MT);
  if (*ud == NULL) luaL_argerror(L, idx, "executor is released");
  return *ud;
}

static int executor_gc(lua_State *L) {
  lf_executor **ud = luaL_checkudata(L, 1, LF_EXECUTOR_MT);
  if (*ud) { lf_executor_release(*ud); *ud = NULL; }
  return 0;
}

static int executor_tostring(lua_State *L) {
  lf_executor *ex = check_executor(L, 1);
  char desc[128];
  ex->ops->describe(ex, desc, sizeof desc);
  lua_pushfstring(L, "%s: %p (%s)", ex->ops->name, (void *)ex, desc);
  return 1;
}

/* Raise the error of a refused submit. [-0,+0,v] */
static int submit_refused(lua_State *L, lf_executor *ex, int rc) {
  switch (rc) {
    case LF_SUBMIT_SHUTDOWN:
      return luaL_error(L, "cannot schedule new futures after shutdown");
    case LF_SUBMIT_BROKEN:
      return lf_raise_error(L, ex->ops->broken_type, "%s",
                            ex->broken ? ex->broken : "the pool is broken");
    default:
      return luaL_error(L, "cannot start a worker: out of resources");
  }
}

/* Encode the values at first.. (the function and its arguments) as the
** call of a new future, queue it, and push the future. [-0,+1,e] */
static int submit_encoded(lua_State *L, lf_executor *ex, lf_taskkind kind,
                          int first, int n) {
  lf_future **ud = lua_newuserdatauv(L, sizeof *ud, 1);
  *ud = NULL;
  luaL_setmetatable(L, LF_FUTURE_MT);
  lf_future *f = lf_future_new();
  if (f == NULL) return luaL_error(L, "not enough memory");
  *ud = f;
  f->kind = kind;
  lf_codec_opts opts = lf_codec_defaults;
  opts.in_process = ex->ops->in_process;
  if (lf_encode(L, first, n, "argument", 1, &f->call, &opts) != 0)
    return lua_error(L);
  /* A queued call may wait a long time: give back the encoder's slack
  ** (shrinking in place is cheap), so that 100 000 queued futures stay
  ** small. */
  if (f->call.cap - f->call.len > 64) {
    unsigned char *d = realloc(f->call.data, f->call.len);
    if (d != NULL) { f->call.data = d; f->call.cap = f->call.len; }
  }
  int rc = ex->ops->submit(ex, f);
  if (rc != LF_SUBMIT_OK) return submit_refused(L, ex, rc);
  return 1;
}

static void check_callable(lua_State *L, int idx) {
  if (lua_isfunction(L, idx)) return;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_typeerror(L, idx, "function");
}

static int executor_submit(lua_State *L) {
  lf_executor *ex = check_executor(L, 1);
  check_callable(L, 2);
  lf_run_callbacks(L);
  return submit_encoded(L, ex, LF_TASK_CALL, 2, lua_gettop(L) - 1);
}

/* ex:_submit_chunk(fn, m, args...) — k items of m arguments each, run by one
** worker in one go; the future's values are ok, n, results... per item. */
static int executor_submit_chunk(lua_State *L) {
  lf_executor *ex = check_executor(L, 1);
  check_callable(L, 2);
  lua_Integer m = luaL_checkinteger(L, 3);
  luaL_argcheck(L, m > 0 && (lua_gettop(L) - 3) % m == 0, 3,
                "argument count is not a multiple of it");
  return submit_encoded(L, ex, LF_TASK_CHUNK, 2, lua_gettop(L) - 1);
}

/* ex:shutdown(wait, cancel_futures) — the Lua side parses the options. */
static int executor_shutdown(lua_State *L) {
  lf_executor *ex = check_executor(L, 1);
  int wait = lua_isnone(L, 2) || lua_toboolean(L, 2);
  int cancel = lua_toboolean(L, 3);
  lf_run_callbacks(L);
  ex->ops->shutdown(ex, cancel);
  if (wait && lf_current_executor == ex)
    return luaL_error(L, "a worker cannot wait for the shutdown of its own "
                         "pool (use shutdown{ wait = false })");
  if (wait) {
    lf_intr intr;
    lf_intr_begin(L, &intr);
    while (!ex->ops->join(ex, lf_now() + LF_WAIT_SLICE)) {
      if (lf_intr_pending(L, &intr)) lf_intr_raise(L, &intr);
    }
  }
  lf_run_callbacks(L);
  return 0;
}

static int executor_close(lua_State *L) {
  lua_settop(L, 1);
  return executor_shutdown(L);
}

static const luaL_Reg executor_methods[] = {
  {"submit", executor_submit},
  {"_submit_chunk", executor_submit_chunk},
  {"_shutdown", executor_shutdown},   /* the Lua side wraps it: shutdown */
  {NULL, NULL}
};

/* Encode initializer and initargs (a table) for the workers. [-0,+0,e] */
void lf_encode_initializer(lua_State *L, int fn, int args, lf_buf *out,
                           int in_process) {
  if (lua_isnoneornil(L, fn)) return;
  check_callable(L, fn);
  int top = lua_gettop(L);
  lua_pushvalue(L, fn);
  int n = 0;
  if (!lua_isnoneornil(L, args)) {
    luaL_checktype(L, args, LUA_TTABLE);
    n = (int)luaL_len(L, args);
    luaL_checkstack(L, n, "too many initargs");
    for (int i = 1; i <= n; i++) lua_geti(L, args, i);
  }
  lf_codec_opts opts = lf_codec_defaults;
  opts.in_process = in_process;
  if (lf_encode(L, top + 1, n + 1, "initializer argument", 0, out, &opts) != 0)
    lua_error(L);
  lua_settop(L, top);
}

/* Push package.path and package.cpath of L as C strings (on the stack, so
** they live as long as the caller needs them). [-0,+2,e] */
void lf_push_paths(lua_State *L, const char **path, const char **cpath) {
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_getfield(L, -2, "cpath");
    lua_remove(L, -3);
  } else {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_pushnil(L);
  }
  *path = lua_tostring(L, -2);
  *cpath = lua_tostring(L, -1);
}

/* Hand a new executor to Lua: the state owns it and a userdata refers to
** it. `ud` is the empty userdata at the top of the stack. [-0,+0,e] */
void lf_adopt_executor(lua_State *L, lf_executor **ud, lf_executor *ex) {
  lf_own_executor(L, ex);       /* takes the owner reference */
  lf_executor_retain(ex);
  *ud = ex;
}

/* core.thread_pool(max_workers, name, initializer, initargs) */
static int core_thread_pool(lua_State *L) {
  lua_Integer max_workers = luaL_checkinteger(L, 1);
  luaL_argcheck(L, max_workers > 0, 1, "max_workers must be greater than 0");
  luaL_argcheck(L, max_workers <= 4096, 1, "max_workers is too large (max 4096)");
  const char *name = luaL_optstring(L, 2, NULL);
  lua_settop(L, 4);
  lf_buf init = LF_BUF_INIT;
  lf_encode_initializer(L, 3, 4, &init, 1);
  const char *path, *cpath;
  lf_push_paths(L, &path, &cpath);
  lf_executor **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, LF_EXECUTOR_MT);
  lf_executor *ex = lf_thread_pool_new((int)max_workers, name, &init, path,
                                       cpath);
  if (ex == NULL) {
    lf_buf_free(&init);
    return luaL_error(L, "not enough memory");
  }
  lf_adopt_executor(L, ud, ex);
  return 1;
}

void lf_bind_executor(lua_State *L) {
  lf_codec_register_kind(&executor_kind);
  if (luaL_newmetatable(L, LF_EXECUTOR_MT)) {
    luaL_newlib(L, executor_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, executor_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, executor_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, executor_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_getfield(L, -1, "__index");   /* the Lua side adds map to these */
  lua_setfield(L, -3, "executor_methods");
  lua_pop(L, 1);
  lua_pushcfunction(L, core_thread_pool);
  lua_setfield(L, -2, "thread_pool");
}
