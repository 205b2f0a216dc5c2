/*
** lf_future_lua.c — the Lua face of futures: the Future userdata and its
** methods, futures.Future(), wait(), and the waiter behind as_completed.
**
** Threads: every function runs on the thread that owns the calling state.
** Blocking calls wait on an lf_waiter in slices of LF_WAIT_SLICE, checking
** for Ctrl-C in between; a waiter is always detached before a Lua error can
** unwind past the C frame that owns it.
**
** Ownership: a Future userdata holds one reference to its lf_future, dropped
** by __gc. User value 1 caches the decoded result ({ n = ..., ... }) or the
** decoded error ({ err, traceback }), so that a table result is decoded once
** per userdata and result() returns the same table each time. A waiter
** userdata owns its lf_waiter and keeps the futures it watches alive in its
** user value.
*/
#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_common.h"
#include "lf_context.h"
#include "lf_error.h"
#include "lf_executor.h"
#include "lf_future_lua.h"
#include "lf_state.h"

#define WAITER_MT "futures.Waiter"

static const char *const STATE_NAMES[] = {
  "pending", "running", "cancelled", "finished"
};

/* ---- the handle kind, for futures passed to thread tasks ---- */

static void kind_retain(void *obj) { lf_future_retain(obj); }
static void kind_release(void *obj) { lf_future_release(obj); }
/* The userdata first, the reference after: a userdata that cannot be
** made (out of memory) raises before any reference is taken. */
static void kind_push(lua_State *L, void *obj) {
  lf_push_future(L, NULL);
  lf_future_retain(obj);
  *(lf_future **)lua_touserdata(L, -1) = obj;
}

static const lf_handle_kind future_kind = {
  LF_FUTURE_MT, kind_retain, kind_release, kind_push
};

/* ---- userdata ---- */

static void set_future_mt(lua_State *L);

void lf_push_future(lua_State *L, lf_future *f) {
  lf_future **ud = lua_newuserdatauv(L, sizeof *ud, 1);
  *ud = NULL;
  set_future_mt(L);
  *ud = f;
}

void lf_check_callable(lua_State *L, int idx, const char *what) {
  if (lua_isfunction(L, idx)) return;
  if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_argerror(L, idx, lua_pushfstring(L, "%s expected, got %s", what,
                                        luaL_typename(L, idx)));
}

lf_future *lf_check_future(lua_State *L, int idx) {
  return lf_check_handle(L, idx, LF_FUTURE_MT, NULL);
}

lf_future *lf_test_future(lua_State *L, int idx) {
  lf_future **ud = luaL_testudata(L, idx, LF_FUTURE_MT);
  return ud ? *ud : NULL;
}

static int future_gc(lua_State *L) {
  lf_future **ud = luaL_checkudata(L, 1, LF_FUTURE_MT);
  if (*ud) { lf_future_release(*ud); *ud = NULL; }
  return 0;
}

static int future_tostring(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  lf_fstate s = lf_future_state(f);
  const char *what = STATE_NAMES[s];
  if (s == LF_FINISHED) {
    lf_lock(&f->mu);
    if (f->failed) what = "finished with an error";
    lf_unlock(&f->mu);
  }
  lua_pushfstring(L, "future: %p (%s)", (void *)f, what);
  return 1;
}

static int future_eq(lua_State *L) {
  lf_future *a = lf_test_future(L, 1), *b = lf_test_future(L, 2);
  lua_pushboolean(L, a != NULL && a == b);
  return 1;
}

/* ---- waiting ---- */

/* Wait until f is done or `timeout` seconds (negative: no limit) pass.
** Returns 1 when done. Interruptible. [-0,+0,v] */
int lf_future_wait(lua_State *L, lf_future *f, double timeout) {
  lf_intr intr;
  lf_intr_begin(L, &intr);
  if (f->origin != NULL && timeout < 0) {
    /* Not started by a worker yet: the waiting thread may run it (not
    ** under a timeout, which a task run here could overrun). */
    lf_executor *ex = lf_origin_executor(f->origin);
    if (ex->ops->run_here != NULL && ex->ops->run_here(ex, f, L)) {
      if (lf_intr_pending(L, &intr)) lf_intr_raise(L, &intr);
      return 1;
    }
  }
  if (lf_future_spin(f, timeout)) return 1;
  lf_waiter w;
  if (lf_waiter_init(&w, 1) != 0) return luaL_error(L, "not enough memory");
  lf_waiter_attach(&w, f);
  double deadline = timeout < 0 ? -1 : lf_now() + timeout;
  int done = 0, interrupted = 0;
  for (;;) {
    double until = lf_now() + LF_WAIT_SLICE;
    if (deadline >= 0 && deadline < until) until = deadline;
    if (lf_waiter_wait_until(&w, 0, until) > 0) { done = 1; break; }
    if (deadline >= 0 && lf_now() >= deadline) break;
    if (lf_intr_pending(L, &intr)) { interrupted = 1; break; }
  }
  lf_waiter_destroy(&w);
  if (interrupted) lf_intr_raise(L, &intr);
  return done;
}

/* Optional timeout argument: nil or absent is "no limit". */
double lf_opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return -1;
  lua_Number t = luaL_checknumber(L, idx);
  luaL_argcheck(L, t == t, idx, "timeout is NaN");
  luaL_argcheck(L, t >= 0, idx, "timeout must not be negative");
  return (double)t;
}

/* Wait for f, then leave the cached outcome table in user value 1 on the
** stack: { n = k, v1..vk } for a result, { err, traceback, failed = true }
** for an error. Raises TimeoutError or CancelledError. [-0,+1,v] */
static void push_outcome(lua_State *L, int idx, lf_future *f, double timeout) {
  lf_run_callbacks(L);
  if (!lf_future_wait(L, f, timeout))
    lf_raise_error(L, "TimeoutError", "future not done after %f seconds",
                   timeout);
  lf_run_callbacks(L);
  if (lua_getiuservalue(L, idx, 1) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lf_lock(&f->mu);
  lf_fstate s = f->state;
  int failed = f->failed;
  lf_unlock(&f->mu);
  if (s == LF_CANCELLED) lf_raise_error(L, "CancelledError", "future was cancelled");
  /* FINISHED: the result buffer no longer changes. Held by this userdata
  ** alone, the future's outcome is decoded by nobody else meanwhile: the
  ** strings it borrows from the state that made it (a worker's) are lent
  ** by the copies decoded here from now on, so that the worker collects
  ** its own at once rather than when this future is collected. */
  int top = lua_gettop(L);
  lf_codec_opts opts = lf_future_decode_opts(f);
  int n = failed && f->result.len == 0
        ? (lua_pushliteral(L, "not enough memory"), -1)  /* for the error */
        : atomic_load_explicit(&f->refs, memory_order_acquire) == 1
        ? lf_decode_relend(L, &f->result, &opts)
        : lf_decode(L, f->result.data, f->result.len, &opts);
  if (n < 0) {
    /* An outcome that cannot be had becomes the error of this future, and
    ** of this future only: result() raises it, exception() returns it. */
    if (n == -2) {
      lua_pushfstring(L, "a worker process %s a Lua function (%s %s); pass "
                      "return_functions = true to the pool to allow it",
                      failed ? "raised an error holding" : "returned",
                      failed ? "error value" : "result", lua_tostring(L, -1));
      lua_replace(L, top + 1);
    }
    lua_pushliteral(L, "");
    n = 2;
    failed = 1;
  }
  lua_createtable(L, n, 1);
  lua_insert(L, top + 1);
  for (int i = n; i >= 1; i--) lua_rawseti(L, top + 1, i);
  if (failed) {
    lua_rawgeti(L, -1, 1);
    lf_error_adopt(L, -1);
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "failed");
  } else {
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
  }
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, 1);
}

/* Raises the task error of the outcome table at t, noting it for the
** interpreter (LF_TASK_ERROR_KEY). [-0,+0,v] */
static int raise_task_error(lua_State *L, int t) {
  lua_pushvalue(L, t);
  lua_setfield(L, LUA_REGISTRYINDEX, LF_TASK_ERROR_KEY);
  lua_rawgeti(L, t, 1);
  return lua_error(L);
}

static int future_result(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  double timeout = lf_opt_timeout(L, 2);
  push_outcome(L, 1, f, timeout);
  int t = lua_gettop(L);
  if (lua_getfield(L, t, "failed") == LUA_TBOOLEAN) return raise_task_error(L, t);
  lua_getfield(L, t, "n");
  int n = (int)lua_tointeger(L, -1);
  lua_settop(L, t);
  luaL_checkstack(L, n, "too many results");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  return n;
}

/* The outcome table itself, for map: no unpacking. Raises like result. */
static int future_outcome(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  double timeout = lf_opt_timeout(L, 2);
  push_outcome(L, 1, f, timeout);
  if (lua_getfield(L, -1, "failed") == LUA_TBOOLEAN)
    return raise_task_error(L, lua_gettop(L) - 1);
  lua_pop(L, 1);
  return 1;
}

/* core._raise_task_error(err, traceback): how map raises the error of an
** item of a chunk, noted as result() notes one. */
static int core_raise_task_error(lua_State *L) {
  lua_settop(L, 2);
  lua_createtable(L, 2, 0);
  lua_insert(L, 1);
  lua_rawseti(L, 1, 2);
  lua_rawseti(L, 1, 1);
  return raise_task_error(L, 1);
}

/* f:exception([timeout]) -> nil for a success (one value, always), or the
** error value and the worker's traceback. */
static int future_exception(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  double timeout = lf_opt_timeout(L, 2);
  push_outcome(L, 1, f, timeout);
  if (lua_getfield(L, -1, "failed") != LUA_TBOOLEAN) {
    lua_pushnil(L);
    return 1;
  }
  lua_rawgeti(L, -2, 1);
  lua_rawgeti(L, -3, 2);
  return 2;
}

/* f:interrupt() -> whether the future will end cancelled: cancel() for a
** pending one, a stop of its task for a running one. */
static int future_interrupt(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  int ok = lf_future_interrupt(f, LF_STOP_CANCEL);
  lf_run_callbacks(L);
  lua_pushboolean(L, ok);
  return 1;
}

static int future_cancel(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  int ok = lf_future_cancel(f);
  lf_run_callbacks(L);
  lua_pushboolean(L, ok);
  return 1;
}

static int state_is(lua_State *L, lf_fstate a, lf_fstate b) {
  lf_fstate s = lf_future_state(lf_check_future(L, 1));
  lua_pushboolean(L, s == a || s == b);
  return 1;
}

static int future_cancelled(lua_State *L) { return state_is(L, LF_CANCELLED, LF_CANCELLED); }
static int future_running(lua_State *L) { return state_is(L, LF_RUNNING, LF_RUNNING); }
static int future_done(lua_State *L) { return state_is(L, LF_CANCELLED, LF_FINISHED); }

static int future_state(lua_State *L) {
  lua_pushstring(L, STATE_NAMES[lf_future_state(lf_check_future(L, 1))]);
  return 1;
}

static int future_add_done_callback(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  lf_check_callable(L, 2, "function");   /* a callable table is fine too */
  if (lf_add_callback(L, 1, f, 2)) return 0;
  lua_pushvalue(L, 2);   /* already done: call it now */
  lua_pushvalue(L, 1);
  lf_call_callback_now(L);
  return 0;
}

/* f:_remove_done_callback(fn) -> how many registrations of fn went: for
** an event loop adapter whose wait ended another way (a timeout, another
** future), so that f no longer keeps its loop alive. */
static int future_remove_done_callback(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  luaL_checkany(L, 2);
  lua_pushinteger(L, lf_remove_callback(L, f, 2));
  return 1;
}

static int future_set_running(lua_State *L) {
  lf_future *f = lf_check_future(L, 1);
  int rc = lf_future_set_running(f);
  if (rc < 0)
    return lf_raise_error(L, "InvalidStateError",
                          "future is %s: set_running_or_notify_cancel "
                          "needs a pending one", STATE_NAMES[lf_future_state(f)]);
  lf_run_callbacks(L);
  lua_pushboolean(L, rc);
  return 1;
}

/* set_result(...) and set_exception(err): encode, then finish. */
static int finish_with(lua_State *L, int first, int n, const char *what,
                       int failed) {
  lf_future *f = lf_check_future(L, 1);
  lf_buf out = LF_BUF_INIT;
  if (lf_encode(L, first, n, what, 1, &out, &lf_codec_defaults) != 0)
    return lua_error(L);
  if (lf_future_finish(f, &out, failed) != 0) {
    lf_buf_free(&out);
    return lf_raise_error(L, "InvalidStateError", "future is already %s",
                          STATE_NAMES[lf_future_state(f)]);
  }
  lf_run_callbacks(L);
  return 0;
}

static int future_set_result(lua_State *L) {
  lf_check_future(L, 1);
  return finish_with(L, 2, lua_gettop(L) - 1, "result", 0);
}

static int future_set_exception(lua_State *L) {
  lf_check_future(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  if (!lua_toboolean(L, 2)) {   /* as a task's error(nil): see lf_task.c */
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
    lua_replace(L, 2);
  }
  luaL_traceback(L, L, NULL, 1);
  return finish_with(L, 2, 2, "error", 1);
}

static int core_future(lua_State *L) {
  lf_push_future(L, NULL);   /* the userdata first: nothing to leak if it fails */
  lf_future **ud = lua_touserdata(L, -1);
  *ud = lf_future_new();
  if (*ud == NULL) return luaL_error(L, "not enough memory");
  return 1;
}

static const luaL_Reg future_methods[] = {
  {"result", future_result},
  {"exception", future_exception},
  {"cancel", future_cancel},
  {"interrupt", future_interrupt},
  {"cancelled", future_cancelled},
  {"running", future_running},
  {"done", future_done},
  {"state", future_state},
  {"add_done_callback", future_add_done_callback},
  {"set_running_or_notify_cancel", future_set_running},
  {"set_result", future_set_result},
  {"set_exception", future_set_exception},
  {"_outcome", future_outcome},
  {"_remove_done_callback", future_remove_done_callback},
  {NULL, NULL}
};

/* Push the Future metatable, creating it in this state if needed.
** [-0,+1,m] */
static void push_future_mt(lua_State *L) {
  if (luaL_newmetatable(L, LF_FUTURE_MT)) {
    luaL_newlib(L, future_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, future_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, future_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, future_eq);
    lua_setfield(L, -2, "__eq");
  }
}

static void set_future_mt(lua_State *L) {
  push_future_mt(L);
  lua_setmetatable(L, -2);
}

/* ---- waiters: wait() and as_completed ---- */

typedef struct waiter_ud {
  lf_waiter w;
  int ready;        /* w was initialized */
  size_t seen;      /* completions already handed out */
} waiter_ud;

static int waiter_gc(lua_State *L) {
  waiter_ud *wu = luaL_checkudata(L, 1, WAITER_MT);
  if (wu->ready) { lf_waiter_destroy(&wu->w); wu->ready = 0; }
  return 0;
}

/* Build a waiter userdata over the futures in table `idx`, each distinct
** future once, in order. Pushes the waiter; its user value is the sequence
** of distinct future userdata, and user value 2 maps lf_future* (light
** userdata) to its userdata. [-0,+1,e] */
static waiter_ud *new_waiter(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  waiter_ud *wu = lua_newuserdatauv(L, sizeof *wu, 2);
  memset(wu, 0, sizeof *wu);
  luaL_setmetatable(L, WAITER_MT);
  int wi = lua_gettop(L);
  lua_createtable(L, (int)n, 0);      /* distinct futures, in order */
  lua_createtable(L, 0, (int)n);      /* pointer -> userdata */
  int count = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    lf_future *f = lf_test_future(L, -1);
    if (f == NULL)
      luaL_error(L, "bad argument #1 (item %d is not a future: %s)", (int)i,
                 luaL_typename(L, -1));
    if (lua_rawgetp(L, -2, f) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, -3, f);
      lua_rawseti(L, -3, ++count);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_setiuservalue(L, wi, 2);
  lua_setiuservalue(L, wi, 1);
  if (lf_waiter_init(&wu->w, (size_t)count) != 0)
    luaL_error(L, "not enough memory");
  wu->ready = 1;
  lua_getiuservalue(L, wi, 1);
  for (int i = 1; i <= count; i++) {
    lua_rawgeti(L, -1, i);
    lf_waiter_attach(&wu->w, lf_test_future(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return wu;
}

/* Block until the waiter has more than `seen` completions or the deadline
** passes (negative: none). Interruptible: the waiter stays valid (it is a
** userdata), so raising here is safe. Returns the completion count. */
static size_t waiter_block(lua_State *L, waiter_ud *wu, size_t seen,
                           double deadline, lf_intr *intr) {
  for (;;) {
    double until = lf_now() + LF_WAIT_SLICE;
    if (deadline >= 0 && deadline < until) until = deadline;
    size_t n = lf_waiter_wait_until(&wu->w, seen, until);
    if (n > seen) return n;
    if (deadline >= 0 && lf_now() >= deadline) return n;
    if (lf_intr_pending(L, intr)) {
      lf_waiter_detach(&wu->w);
      lf_intr_raise(L, intr);
    }
  }
}

static int failed_future(lf_future *f) {
  lf_lock(&f->mu);
  int failed = f->state == LF_FINISHED && f->failed;
  lf_unlock(&f->mu);
  return failed;
}

/* core.wait(fs, timeout, when) -> done, not_done.
** when: 0 ALL_COMPLETED, 1 FIRST_COMPLETED, 2 FIRST_EXCEPTION. */
static int core_wait(lua_State *L) {
  double timeout = lf_opt_timeout(L, 2);
  int when = (int)luaL_optinteger(L, 3, 0);
  lua_settop(L, 1);
  lf_run_callbacks(L);
  lf_intr intr;
  lf_intr_begin(L, &intr);
  waiter_ud *wu = new_waiter(L, 1);              /* 2 */
  double deadline = timeout < 0 ? -1 : lf_now() + timeout;
  size_t total = wu->w.n, seen = 0;
  for (;;) {
    size_t n = lf_waiter_count(&wu->w);
    if (n >= total) break;
    if (when == 1 && n > 0) break;
    if (when == 2) {
      int hit = 0;
      for (; seen < n; seen++) if (failed_future(wu->w.done[seen])) hit = 1;
      if (hit) break;
    }
    if (deadline >= 0 && lf_now() >= deadline) break;
    waiter_block(L, wu, n, deadline, &intr);
  }
  lf_waiter_detach(&wu->w);
  lua_getiuservalue(L, 2, 1);                    /* 3: distinct futures */
  lua_newtable(L);                               /* 4: done */
  lua_newtable(L);                               /* 5: not_done */
  int nd = 0, nn = 0;
  for (size_t i = 1; i <= total; i++) {
    lua_rawgeti(L, 3, (lua_Integer)i);
    if (lf_future_done(lf_test_future(L, -1))) lua_rawseti(L, 4, ++nd);
    else lua_rawseti(L, 5, ++nn);
  }
  lf_run_callbacks(L);
  return 2;
}

/* core.waiter(fs) -> waiter, for as_completed. */
static int core_waiter(lua_State *L) {
  lua_settop(L, 1);
  new_waiter(L, 1);
  return 1;
}

/* waiter:next(deadline) -> the next completed future, or nil and the
** number of futures not yet handed out when the deadline passed, or
** nothing at all when every future has been handed out. With deadline
** false it does not wait, and returns false when no future is done yet:
** a call that cannot raise, which as_completed makes without a pcall. */
static int waiter_next(lua_State *L) {
  waiter_ud *wu = luaL_checkudata(L, 1, WAITER_MT);
  int no_wait = lua_isboolean(L, 2) && !lua_toboolean(L, 2);
  double deadline = no_wait ? -1 : luaL_optnumber(L, 2, -1);
  if (!wu->ready || wu->seen >= wu->w.n) return 0;
  lf_run_callbacks(L);
  size_t n = lf_waiter_count(&wu->w);
  if (n <= wu->seen && no_wait) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lf_intr intr;
  lf_intr_begin(L, &intr);
  if (n <= wu->seen) n = waiter_block(L, wu, wu->seen, deadline, &intr);
  if (n <= wu->seen) {
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)(wu->w.n - wu->seen));
    return 2;
  }
  lf_future *f = wu->w.done[wu->seen++];
  lua_getiuservalue(L, 1, 2);
  lua_rawgetp(L, -1, f);
  lf_run_callbacks(L);
  return 1;
}

void lf_bind_future(lua_State *L) {
  lf_kind_register(&future_kind);
  lua_pushcfunction(L, core_future);
  lua_setfield(L, -2, "Future");
  lua_pushcfunction(L, core_wait);
  lua_setfield(L, -2, "wait");
  lua_pushcfunction(L, core_waiter);
  lua_setfield(L, -2, "waiter");
  lua_pushcfunction(L, core_raise_task_error);
  lua_setfield(L, -2, "_raise_task_error");
  luaL_newmetatable(L, WAITER_MT);
  lua_pushcfunction(L, waiter_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, waiter_gc);
  lua_setfield(L, -2, "__close");
  lua_newtable(L);
  lua_pushcfunction(L, waiter_next);
  lua_setfield(L, -2, "next");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  push_future_mt(L);
  lua_pop(L, 1);
}
