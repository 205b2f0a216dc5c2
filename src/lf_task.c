/*
** lf_task.c — runs tasks in a worker's lua_State (see lf_task.h).
**
** Threads: only the thread that owns L calls these.
** Ownership: everything decoded lives in L and is popped before returning;
** the encoded outcome goes to the caller's buffer.
*/
#include "lauxlib.h"

#include "lf_common.h"
#include "lf_task.h"

static const char TRACEBACK_KEY = 't';  /* registry: last task's traceback */

/* Message handler: keeps the error value as it is (a table stays a table)
** and records the traceback on the side. [-1,+1,m] */
static int record_traceback(lua_State *L) {
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

/* The stack holds fn, m, then k*m arguments. Replaces them with, for each
** item, ok, n, values... and encodes the lot. */
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
  int results = lua_gettop(L) + 1;   /* results are pushed from here on */
  for (int i = 0; i < k; i++) {
    int mark = lua_gettop(L);
    luaL_checkstack(L, (int)m + 8, "too many results in a map chunk");
    lua_pushboolean(L, 1);
    lua_pushinteger(L, 0);
    lua_pushvalue(L, fn);
    for (lua_Integer j = 0; j < m; j++)
      lua_pushvalue(L, first_arg + i * (int)m + (int)j);
    int rc = call_task(L, (int)m);
    int nres = lua_gettop(L) - mark - 2;
    if (rc != LUA_OK) { lua_pushboolean(L, 0); lua_replace(L, mark + 1); }
    lua_pushinteger(L, nres);
    lua_replace(L, mark + 2);
  }
  int n = lua_gettop(L) - results + 1;
  if (lf_encode(L, results, n, "result", 1, out, o) == 0) return 0;
  /* Some item's values cannot travel: copy the items again, replacing each
  ** such item by a failure that says why, and encode the copy. */
  lua_pop(L, 1);
  int copy = lua_gettop(L) + 1;
  for (int i = 0, pos = results; i < k; i++) {
    int nres = (int)lua_tointeger(L, pos + 1);
    lf_buf probe = LF_BUF_INIT;
    luaL_checkstack(L, nres + 4, "too many results in a map chunk");
    if (lf_encode(L, pos + 2, nres, "result", 1, &probe, o) == 0) {
      for (int j = 0; j < nres + 2; j++) lua_pushvalue(L, pos + j);
    } else {
      lua_pushboolean(L, 0);
      lua_pushinteger(L, 2);
      lua_rotate(L, -3, 2);   /* false, 2, message */
      lua_pushliteral(L, "");
    }
    lf_buf_free(&probe);
    pos += 2 + nres;
  }
  if (lf_encode(L, copy, lua_gettop(L) - copy + 1, "result", 1, out, o) == 0)
    return 0;
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
