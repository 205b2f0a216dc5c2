/*
** lf_task.c — runs tasks in a worker's lua_State (see lf_task.h).
**
** Threads: only the thread that owns L calls these.
** Ownership: everything decoded lives in L and is popped before returning;
** the encoded outcome goes to the caller's buffer.
*/
#include <malloc.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_error.h"
#include "lf_state.h"
#include "lf_task.h"

static const char TRACEBACK_KEY = 't';  /* registry: last task's traceback */

/* Message handler: keeps the error value as it is (a table stays a table)
** and records the traceback on the side. A nil or false error becomes a
** message, as lua.c makes it, so that a failed task can never look
** successful to `if f:exception() then`. [-1,+1,m] */
static int record_traceback(lua_State *L) {
  if (!lua_toboolean(L, 1)) {
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_replace(L, 1);
  }
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &TRACEBACK_KEY);
  lua_settop(L, 1);
  return 1;
}

static void push_traceback(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &TRACEBACK_KEY) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
}

/* Call the function at `fn` with the nargs values above it, under the
** traceback handler. On success leaves the results above fn's slot and
** returns LUA_OK; on failure leaves the error value and the traceback.
** [-(nargs+1),+(nres|2),-] */
static int call_task(lua_State *L, int nargs) {
  int fn = lua_gettop(L) - nargs;
  lua_pushcfunction(L, record_traceback);
  lua_insert(L, fn);
  int rc = lua_pcall(L, nargs, LUA_MULTRET, fn);
  lua_remove(L, fn);
  if (rc != LUA_OK) push_traceback(L);
  return rc;
}

/* Encode the `n` values on top of L as a failure (error, traceback) into
** out; if the error value itself cannot travel, send its description and
** why instead. [-0,+0,m] */
static void encode_failure(lua_State *L, lf_buf *out, const lf_codec_opts *o) {
  int top = lua_gettop(L);
  if (lf_encode(L, top - 1, 2, "error", 1, out, o) == 0) return;
  /* The message of the encoding failure is on top. */
  const char *why = lua_tostring(L, -1);
  const char *what = luaL_tolstring(L, top - 1, NULL);
  lua_pushfstring(L, "%s (the error value itself could not be sent: %s)",
                  what, why);
  lua_pushvalue(L, top);
  if (lf_encode(L, lua_gettop(L) - 1, 2, "error", 1, out, o) != 0) {
    lua_pop(L, 1);   /* cannot happen for two strings, short of memory */
  }
  lua_settop(L, top);
}

static int run_call(lua_State *L, int base, lf_buf *out, const lf_codec_opts *o) {
  int nargs = lua_gettop(L) - base - 1;
  if (call_task(L, nargs) != LUA_OK) {
    encode_failure(L, out, o);
    return 1;
  }
  int nres = lua_gettop(L) - base;
  if (lf_encode(L, base + 1, nres, "result", 1, out, o) != 0) {
    lua_pushliteral(L, "");   /* the encoding error's message, no traceback */
    encode_failure(L, out, o);
    return 1;
  }
  return 0;
}

/* Moves the values of item `p` of a chunk's outcome table t (ok, n, then
** n values, from index p) onto the stack; returns n. [-0,+n,m] */
static lua_Integer push_item(lua_State *L, int t, lua_Integer p) {
  lua_rawgeti(L, t, p + 1);
  lua_Integer n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, (int)n + 4, "too many results in a map chunk");
  for (lua_Integer r = 1; r <= n; r++) lua_rawgeti(L, t, p + 1 + r);
  return n;
}

/* The stack holds fn, m, then k*m arguments: runs fn on each item and
** encodes one table of, for each item, ok, n, values... (a failed item is
** false, 2, err, traceback). One table, not k*(n+2) values, so that a
** chunk never meets the codec's limit on the number of values. */
static int run_chunk(lua_State *L, int base, lf_buf *out, const lf_codec_opts *o) {
  int fn = base + 1;
  lua_Integer m = lua_tointeger(L, base + 2);
  int nargs = lua_gettop(L) - base - 2;
  if (m <= 0 || nargs % m != 0) {
    lua_pushliteral(L, "malformed map chunk");
    lua_pushliteral(L, "");
    encode_failure(L, out, o);
    return 1;
  }
  int k = (int)(nargs / m);
  int first_arg = base + 3;
  lua_createtable(L, 3 * k, 0);
  int t = lua_gettop(L);
  lua_Integer pos = 1;
  for (int i = 0; i < k; i++) {
    luaL_checkstack(L, (int)m + 8, "too many arguments in a map chunk");
    lua_pushvalue(L, fn);
    for (lua_Integer j = 0; j < m; j++)
      lua_pushvalue(L, first_arg + i * (int)m + (int)j);
    int rc = call_task(L, (int)m);
    int nres = lua_gettop(L) - t;
    lua_pushboolean(L, rc == LUA_OK);
    lua_rawseti(L, t, pos);
    lua_pushinteger(L, nres);
    lua_rawseti(L, t, pos + 1);
    for (int r = nres; r >= 1; r--) lua_rawseti(L, t, pos + 1 + r);
    pos += 2 + nres;
  }
  if (lf_encode(L, t, 1, "result", 1, out, o) == 0) return 0;
  lua_pop(L, 1);
  /* Some item's values cannot travel: copy the items again, replacing each
  ** such item by a failure that says why, and encode the copy. */
  lua_createtable(L, (int)pos, 0);
  int c = lua_gettop(L);
  lua_Integer cpos = 1;
  for (lua_Integer p = 1; p < pos;) {
    int mark = lua_gettop(L);
    lua_rawgeti(L, t, p);
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_Integer n = push_item(L, t, p);
    lf_buf probe = LF_BUF_INIT;
    if (lf_encode(L, mark + 1, (int)n, "result", 1, &probe, o) == 0) {
      lua_pushboolean(L, ok);
      lua_rawseti(L, c, cpos);
      lua_pushinteger(L, n);
      lua_rawseti(L, c, cpos + 1);
      for (lua_Integer r = n; r >= 1; r--) lua_rawseti(L, c, cpos + 1 + r);
      cpos += 2 + n;
    } else {
      lua_pushboolean(L, 0);
      lua_rawseti(L, c, cpos);
      lua_pushinteger(L, 2);
      lua_rawseti(L, c, cpos + 1);
      lua_rawseti(L, c, cpos + 2);   /* the message */
      lua_pushliteral(L, "");
      lua_rawseti(L, c, cpos + 3);
      cpos += 4;
    }
    lf_buf_free(&probe);
    lua_settop(L, mark);
    p += 2 + n;
  }
  if (lf_encode(L, c, 1, "result", 1, out, o) == 0) return 0;
  lua_pushliteral(L, "");
  encode_failure(L, out, o);   /* out of memory: the chunk fails as a whole */
  return 1;
}

typedef struct run_args {
  lf_taskkind kind;
  const unsigned char *call;
  size_t len;
  lf_buf *out;
  const lf_codec_opts *opts;
  int failed;
} run_args;

/* Runs under lua_pcall, so that a memory error anywhere is caught. */
static int protected_run(lua_State *L) {
  run_args *a = lua_touserdata(L, 1);
  int base = lua_gettop(L);
  int n = lf_decode(L, a->call, a->len, a->opts);
  if (n < 0) {
    lua_pushliteral(L, "");
    encode_failure(L, a->out, a->opts);
    a->failed = 1;
    return 0;
  }
  if (n < 1 || (a->kind == LF_TASK_CHUNK && n < 2)) {
    lua_pushliteral(L, "malformed task: no function");
    lua_pushliteral(L, "");
    encode_failure(L, a->out, a->opts);
    a->failed = 1;
    return 0;
  }
  a->failed = a->kind == LF_TASK_CHUNK ? run_chunk(L, base, a->out, a->opts)
                                       : run_call(L, base, a->out, a->opts);
  return 0;
}

/* The error value at 1 becomes the task's failure; runs under lua_pcall,
** since the state may be out of memory. */
static int protected_failure(lua_State *L) {
  run_args *a = lua_touserdata(L, 2);
  lua_settop(L, 1);
  lua_pushliteral(L, "");
  encode_failure(L, a->out, a->opts);
  return 0;
}

int lf_task_run(lua_State *L, lf_taskkind kind, const unsigned char *call,
                  size_t len, lf_buf *out, const lf_codec_opts *opts) {
  int top = lua_gettop(L);
  run_args a = { kind, call, len, out, opts, 0 };
  lua_pushcfunction(L, protected_run);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    /* Out of memory outside the task's own pcall, as a rule. If even the
    ** error cannot be encoded, the outcome stays empty, which the reader
    ** takes for "not enough memory" (lf_future_lua.c). */
    lf_buf_free(out);
    lua_pushcfunction(L, protected_failure);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &a);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) lf_buf_free(out);
    a.failed = 1;
  }
  lua_settop(L, top);
  return a.failed;
}

static int protected_init(lua_State *L) {
  run_args *a = lua_touserdata(L, 1);
  int base = lua_gettop(L);
  int n = lf_decode(L, a->call, a->len, a->opts);
  if (n < 0) return lua_error(L);
  if (n < 1) return luaL_error(L, "malformed initializer");
  if (call_task(L, n - 1) != LUA_OK) {
    lua_pop(L, 1);   /* keep the error value; the traceback goes */
    if (!lua_isstring(L, -1)) luaL_tolstring(L, -1, NULL);  /* protected here */
    return lua_error(L);
  }
  lua_settop(L, base);
  return 0;
}

int lf_task_init(lua_State *L, const unsigned char *call, size_t len,
                   const lf_codec_opts *opts) {
  run_args a = { LF_TASK_CALL, call, len, NULL, opts, 0 };
  lua_pushcfunction(L, protected_init);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) return 0;
  /* protected_init made the error a string; only a failing __tostring or a
  ** memory error leaves anything else. */
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "initializer raised an error that cannot be shown");
  }
  return -1;
}

void lf_task_begin(lua_State *L, lf_task_heap *h) {
  h->before = lf_state_heap(L);
}

void lf_task_end(lua_State *L, lf_task_heap *h, int failed) {
  size_t peak = lf_state_heap(L);
  if (!failed && peak < h->before + LF_TASK_GROWTH) return;
  /* A failed task (out of memory, say) leaves its garbage; a big one
  ** leaves a big heap: an idle worker would keep both until its next
  ** task. */
  lua_gc(L, LUA_GCCOLLECT);
  if (peak > lf_state_heap(L) + LF_TASK_TRIM) h->trim = 1;
}

void lf_task_idle(lf_task_heap *h) {
  if (!h->trim) return;
  h->trim = 0;
  malloc_trim(0);   /* every arena: the worker thread's included */
}

/* Encodes (message, "") as a failure. Runs under lua_pcall. */
static int protected_message(lua_State *L) {
  lf_buf *out = lua_touserdata(L, 1);
  const lf_codec_opts *o = lua_touserdata(L, 3);
  lua_settop(L, 2);
  lua_pushliteral(L, "");
  if (lf_encode(L, 2, 2, "error", 1, out, o) != 0) lua_error(L);
  return 0;
}

int lf_task_settle(lua_State *L, int failed, int why, double limit,
                   lf_buf *out, const lf_codec_opts *opts) {
  if (why == LF_STOP_TIMEOUT) {
    char msg[96];
    snprintf(msg, sizeof msg, "the task ran longer than its limit of %.14g "
             "seconds", limit);
    lf_buf_free(out);
    lf_error_encode(L, "TimeoutError", msg, out, opts);
    return 1;
  }
  if (!failed || !lf_state_hit_limit(L)) return failed;
  lua_gc(L, LUA_GCCOLLECT);   /* room for the message */
  lf_buf_free(out);
  int top = lua_gettop(L);
  lua_pushcfunction(L, protected_message);
  lua_pushlightuserdata(L, out);
  lua_pushfstring(L, "not enough memory: the task went over its worker's "
                  "limit of %I bytes (max_memory)",
                  (lua_Integer)lf_state_limit(L));
  lua_pushlightuserdata(L, (void *)opts);
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) lf_buf_free(out);
  lua_settop(L, top);
  return 1;
}
