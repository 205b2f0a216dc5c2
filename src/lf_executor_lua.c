/*
** lf_executor_lua.c — the Lua face of executors, written once for every
** back-end: the Executor userdata (submit, the chunked submit behind map,
** shutdown, __close, __gc, __tostring) and the constructors of both pools,
** core.thread_pool and core.process_pool, which share one helper.
**
** Threads: runs on the thread that owns the calling state, which may be a
** worker of the very executor it calls (a task submitting more work).
**
** Ownership: an Executor userdata holds one reference to its lf_executor,
** dropped by __gc. The creating state holds the owner reference (lf_ctx),
** so its workers are joined before that state closes. A submitted future is
** referenced by its userdata (returned to the caller) and by the queue.
*/
#include <limits.h>
#include <signal.h>

#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_common.h"
#include "lf_context.h"
#include "lf_error.h"
#include "lf_executor.h"
#include "lf_executor_lua.h"
#include "lf_future_lua.h"
#include "lf_interp.h"
#include "lf_process_pool.h"
#include "lf_state.h"
#include "lf_thread_pool.h"

/* ---- the handle kind, for executors passed to thread tasks ---- */

static void kind_retain(void *obj) { lf_executor_retain(obj); }
static void kind_release(void *obj) { lf_executor_release(obj); }
/* A new userdata for a handle, made before the reference is taken, so that
** a memory error leaves none behind. */
static void kind_push(lua_State *L, void *obj) {
  lf_executor **ud = lf_executor_newud(L);
  lf_executor_retain(obj);
  *ud = obj;
}

static const lf_handle_kind executor_kind = {
  LF_EXECUTOR_MT, kind_retain, kind_release, kind_push
};

/* An empty Executor userdata. The Lua side of the module (map, shutdown...)
** is loaded in the state first when it can be, so that a handle has the
** same methods in a worker as in the state that made it. [-0,+1,m] */
lf_executor **lf_executor_newud(lua_State *L) {
  lf_open_core(L);   /* a worker state may not have opened the module yet */
  luaL_getmetatable(L, LF_EXECUTOR_MT);
  lua_getfield(L, -1, "__index");
  int complete = lua_getfield(L, -1, "map") != LUA_TNIL;
  lua_pop(L, 3);
  if (!complete) {   /* best effort: without futures.lua, the C methods */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "futures");
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  }
  lf_executor **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  luaL_setmetatable(L, LF_EXECUTOR_MT);
  return ud;
}

void lf_executor_adopt(lua_State *L, lf_executor **ud, lf_executor *ex) {
  lf_own_executor(L, ex);       /* takes the owner reference */
  lf_executor_retain(ex);
  *ud = ex;
}

static lf_executor *check_executor(lua_State *L, int idx, const char *fname) {
  return lf_check_handle(L, idx, LF_EXECUTOR_MT, fname);
}

static int executor_gc(lua_State *L) {
  lf_executor **ud = luaL_checkudata(L, 1, LF_EXECUTOR_MT);
  if (*ud) { lf_executor_release(*ud); *ud = NULL; }
  return 0;
}

static int executor_tostring(lua_State *L) {
  lf_executor *ex = check_executor(L, 1, "__tostring");
  char desc[128];
  ex->ops->describe(ex, desc, sizeof desc);
  lua_pushfstring(L, "%s: %p (%s)", ex->ops->name, (void *)ex, desc);
  return 1;
}

/* Raise the error of a refused submit. [-0,+0,v] */
static int submit_refused(lua_State *L, lf_executor *ex, int rc) {
  switch (rc) {
    case LF_SUBMIT_SHUTDOWN:
      return lf_raise_error(L, "RuntimeError",
                            "cannot schedule new futures after shutdown");
    case LF_SUBMIT_BROKEN:
      return lf_raise_error(L, ex->ops->broken_type, "%s", ex->broken);
    default:
      return lf_raise_error(L, "RuntimeError",
                            "cannot start a worker: out of resources");
  }
}

/* Encode the values at first.. (the function and its arguments) as the
** call of a new future, queue it, and push the future. On a value that
** cannot travel, pushes nil and the message instead (the caller says where
** the call came from). [-0,+(1|2),e] */
static int submit_encoded(lua_State *L, lf_executor *ex, lf_taskkind kind,
                          double limit, int first, int n) {
  lf_push_future(L, NULL);
  lf_future **ud = lua_touserdata(L, -1);
  lf_future *f = lf_future_new();
  if (f == NULL) return luaL_error(L, "not enough memory");
  *ud = f;
  f->kind = kind;
  f->run_limit = limit > 0 ? limit : ex->task_timeout;
  lf_future_decode_with(f, &ex->opts);
  if (ex->ops->run_here != NULL) {
    lf_origin_retain(&ex->origin);
    f->origin = &ex->origin;
  }
  lf_codec_opts opts = ex->opts;
  if (lf_encode(L, first, n, "argument", 1, &f->call, &opts) != 0) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  /* A queued call may wait a long time: give back the encoder's slack, so
  ** that 100 000 queued futures stay small. */
  lf_buf_shrink(&f->call);
  int rc = ex->ops->submit(ex, f);
  if (rc != LF_SUBMIT_OK) return submit_refused(L, ex, rc);
  return 1;
}

/* ex:submit(fn, ...) -> future. A value that cannot travel is an error at
** the caller's line. */
static int executor_submit(lua_State *L) {
  lf_executor *ex = check_executor(L, 1, "submit");
  lf_check_callable(L, 2, "function");
  lf_run_callbacks(L);
  if (submit_encoded(L, ex, LF_TASK_CALL, 0, 2, lua_gettop(L) - 1) == 1)
    return 1;
  luaL_where(L, 1);
  lua_insert(L, -2);
  lua_concat(L, 2);
  return lua_error(L);
}

/* ex:_submit_with(limit, fn, ...) -> future, or nil and the transfer error:
** submit with a run limit of its own (the Lua side checks its options). */
static int executor_submit_with(lua_State *L) {
  lf_executor *ex = check_executor(L, 1, "submit_with");
  lua_Number limit = luaL_checknumber(L, 2);
  lf_check_callable(L, 3, "function");
  lf_run_callbacks(L);
  return submit_encoded(L, ex, LF_TASK_CALL, limit, 3, lua_gettop(L) - 2);
}

/* ex:_submit_item(fn, ...) -> future, or nil and the transfer error: one
** map item (the Lua side names the item in the error). */
static int executor_submit_item(lua_State *L) {
  lf_executor *ex = check_executor(L, 1, "map");
  lf_check_callable(L, 2, "function");
  return submit_encoded(L, ex, LF_TASK_CALL, 0, 2, lua_gettop(L) - 1);
}

/* ex:_submit_chunk(fn, m, args...) -> future, or nil and the transfer
** error: k items of m arguments each, run by one worker in one go; the
** future's value is one table of ok, n, results... per item. */
static int executor_submit_chunk(lua_State *L) {
  lf_executor *ex = check_executor(L, 1, "map");
  lf_check_callable(L, 2, "function");
  lua_Integer m = luaL_checkinteger(L, 3);
  luaL_argcheck(L, m > 0 && (lua_gettop(L) - 3) % m == 0, 3,
                "argument count is not a multiple of it");
  return submit_encoded(L, ex, LF_TASK_CHUNK, 0, 2, lua_gettop(L) - 1);
}

/* ex:_shutdown(wait, cancel_futures, interrupt) — the Lua side parses the
** options. */
static int executor_shutdown(lua_State *L) {
  lf_executor *ex = check_executor(L, 1, "shutdown");
  int wait = lua_isnone(L, 2) || lua_toboolean(L, 2);
  int how = (lua_toboolean(L, 3) ? LF_SHUTDOWN_CANCEL : 0) |
            (lua_toboolean(L, 4) ? LF_SHUTDOWN_INTERRUPT : 0);
  lf_run_callbacks(L);
  ex->ops->shutdown(ex, how);
  if (wait && lf_current_executor == ex) {
    lua_pushliteral(L, "a worker cannot wait for the shutdown of its own "
                       "pool (use shutdown{ wait = false })");
    return lua_error(L);
  }
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

/* ex:terminate_workers() / ex:kill_workers(): SIGTERM / SIGKILL to every
** worker process; the pool is broken and shut down. */
static int kill_workers(lua_State *L, int sig, const char *fname) {
  lf_executor *ex = check_executor(L, 1, fname);
  if (ex->ops->kill_workers == NULL)
    return luaL_error(L, "%s: a %s has no worker processes (only a "
                      "ProcessPoolExecutor has)", fname, ex->ops->name);
  ex->ops->kill_workers(ex, sig);
  lf_run_callbacks(L);
  return 0;
}

static int executor_terminate_workers(lua_State *L) {
  return kill_workers(L, SIGTERM, "terminate_workers");
}

static int executor_kill_workers(lua_State *L) {
  return kill_workers(L, SIGKILL, "kill_workers");
}

static int executor_close(lua_State *L) {
  lua_settop(L, 1);
  return executor_shutdown(L);
}

static const luaL_Reg executor_methods[] = {
  {"submit", executor_submit},
  {"_submit_item", executor_submit_item},
  {"_submit_with", executor_submit_with},
  {"terminate_workers", executor_terminate_workers},
  {"kill_workers", executor_kill_workers},
  {"_submit_chunk", executor_submit_chunk},
  {"_shutdown", executor_shutdown},   /* the Lua side wraps it: shutdown */
  {NULL, NULL}
};

/* ---- constructors ---- */

void lf_push_pool_paths(lua_State *L, lf_pool_config *cfg) {
  int pkg = lua_gettop(L) + 1;
  lua_getglobal(L, "package");
  if (lua_istable(L, pkg)) {
    lua_getfield(L, pkg, "path");
    lua_getfield(L, pkg, "cpath");
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  cfg->path = lua_tostring(L, pkg + 1);
  cfg->cpath = lua_tostring(L, pkg + 2);
}

void lf_encode_initializer(lua_State *L, int opts, lf_buf *out,
                           const lf_codec_opts *copts) {
  int top = lua_gettop(L);
  if (lua_getfield(L, opts, "initializer") == LUA_TNIL) {
    lua_settop(L, top);
    return;
  }
  int n = 0;
  if (lua_getfield(L, opts, "initargs") == LUA_TTABLE) {
    int args = lua_gettop(L);
    n = (int)luaL_len(L, args);
    luaL_checkstack(L, n, "too many initargs");
    for (int i = 1; i <= n; i++) lua_geti(L, args, i);
    lua_remove(L, args);
  } else {
    lua_pop(L, 1);
  }
  if (lf_encode(L, top + 1, n + 1, "initializer argument", 0, out, copts) != 0)
    lua_error(L);
  lua_settop(L, top);
}

static lua_Integer opt_integer(lua_State *L, int opts, const char *key,
                               lua_Integer dflt) {
  lua_getfield(L, opts, key);
  lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* Pushes the string field `key` of opts (or nil) and returns it. */
static const char *opt_string(lua_State *L, int opts, const char *key) {
  lua_getfield(L, opts, key);
  return lua_tostring(L, -1);
}

/* The constructor of both pools: core.thread_pool(opts) and
** core.process_pool(opts), with opts already checked by the Lua side. The
** userdata comes first, so that an error after the engine exists leaves
** nothing unowned. Errors carry no position: the Lua side adds the
** caller's. */
static int new_pool(lua_State *L, int process) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lf_pool_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.max_workers = (int)opt_integer(L, 1, "max_workers", 1);
  if (cfg.max_workers < 1 || cfg.max_workers > LF_MAX_WORKERS)
    return luaL_argerror(L, 1, "max_workers out of range");
  cfg.max_depth = (int)opt_integer(L, 1, "max_depth", 0);
  lua_getfield(L, 1, "return_functions");
  cfg.return_functions = lua_toboolean(L, -1);
  lua_pop(L, 1);
  cfg.max_tasks_per_child = (long)opt_integer(L, 1, "max_tasks_per_child", 0);
  cfg.max_memory = (size_t)opt_integer(L, 1, "max_memory", 0);
  lua_getfield(L, 1, "task_timeout");
  cfg.task_timeout = lua_tonumber(L, -1);
  lua_getfield(L, 1, "grace");
  cfg.grace = lua_tonumber(L, -1);
  lua_pop(L, 2);
  cfg.name = opt_string(L, 1, "name");                       /* 2 */
  char exe[PATH_MAX], spawn[PATH_MAX];
  if (process) {
    char err[PATH_MAX * 3];
    if (lf_interp_find(opt_string(L, 1, "worker"), exe, spawn, err,
                       sizeof err) != 0) {
      lua_pushfstring(L, "ProcessPoolExecutor: %s", err);
      return lua_error(L);
    }
    lua_pop(L, 1);
    cfg.exe = exe;
    cfg.spawn_path = spawn;
  }
  lf_push_pool_paths(L, &cfg);                               /* 3..5 */
  lf_executor **ud = lf_executor_newud(L);                   /* 6 */
  lf_buf init = LF_BUF_INIT;
  lf_codec_opts copts = lf_codec_defaults;
  copts.in_process = process ? 0 : LF_CODEC_LEND;   /* the pool keeps it */
  copts.share = LF_SHARE_DOWN;
  if (cfg.max_depth > 0) copts.max_depth = cfg.max_depth;
  lf_encode_initializer(L, 1, &init, &copts);
  cfg.init = &init;
  lf_executor *ex = process ? lf_process_pool_new(&cfg)
                            : lf_thread_pool_new(&cfg);
  lf_buf_free(&init);
  if (ex == NULL) return luaL_error(L, "not enough memory");
  lf_executor_adopt(L, ud, ex);
  return 1;
}

static int core_thread_pool(lua_State *L) { return new_pool(L, 0); }
static int core_process_pool(lua_State *L) { return new_pool(L, 1); }

void lf_bind_executor(lua_State *L) {
  lf_kind_register(&executor_kind);
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
  lua_pushcfunction(L, core_process_pool);
  lua_setfield(L, -2, "process_pool");
}
