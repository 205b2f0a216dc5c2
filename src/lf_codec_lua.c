/*
** lf_codec_lua.c — the codec's Lua surface: futures.serialize,
** futures.serialize_with, futures.deserialize; and the test hooks of
** futures.core (_codec_handle, _codec_local, _codec_call, _codec_encode,
** _codec_reseal, _codec_time) that reach what only the executors do
** (shared handles, decoding in another lua_State) and time the C API.
** docs/codec.md documents all of them.
**
** Threads: every function runs on the thread that owns the calling state.
** The test handle's reference count is atomic, since a real handle's
** retain/release may run on any thread; _codec_call's peer state belongs to
** the calling state and is only touched from its thread.
**
** Ownership: an lf_buf lives only inside one call and is freed before any
** error is raised (the error jump would skip later cleanup). A test handle
** object is malloc'd with one reference per userdata and per encoded
** buffer; the last release frees it. The peer state is owned by a userdata
** in the calling state's registry; its __gc closes it.
*/
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_bind.h"
#include "lf_codec.h"
#include "lf_core.h"

/* Reads the option table at idx into *o. `decode` allows `functions`.
** [-0, +0, v] */
static void check_opts(lua_State *L, int idx, lf_codec_opts *o, int decode) {
  if (lua_isnoneornil(L, idx)) return;
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    if (strcmp(k, "max_depth") == 0) {
      lua_Integer v = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || v < 1 || v > LF_CODEC_MAX_DEPTH)
        luaL_argerror(L, idx, lua_pushfstring(L,
            "max_depth must be an integer from 1 to %d", LF_CODEC_MAX_DEPTH));
      o->max_depth = (int)v;
    } else if (strcmp(k, "max_size") == 0) {
      lua_Integer v = lua_tointeger(L, -1);
      if (!lua_isinteger(L, -1) || v < 0)
        luaL_argerror(L, idx, "max_size must be a non-negative integer (0: no limit)");
      o->max_size = (size_t)v;
    } else if (decode && strcmp(k, "functions") == 0) {
      if (!lua_isboolean(L, -1)) luaL_argerror(L, idx, "functions must be a boolean");
      o->functions = lua_toboolean(L, -1);
    } else {
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
    }
    lua_pop(L, 1);
  }
}

static int push_buf(lua_State *L) {
  const lf_buf *b = lua_touserdata(L, 1);
  lua_pushlstring(L, (const char *)b->data, b->len);
  return 1;
}

/* Encodes the values first..top into a string (in_process = 0: a string
** may leave the process). [-0, +1, e] */
static int serialize_from(lua_State *L, int first, const lf_codec_opts *o) {
  lf_buf b = LF_BUF_INIT;
  int n = lua_gettop(L) - first + 1;
  if (lf_encode(L, first, n, "value", 1, &b, o) != 0) return lua_error(L);
  lua_pushcfunction(L, push_buf);
  lua_pushlightuserdata(L, &b);
  int rc = lua_pcall(L, 1, 1, 0);
  lf_buf_free(&b);
  if (rc != LUA_OK) return lua_error(L);
  return 1;
}

/* futures.serialize(...) -> string */
static int codec_serialize(lua_State *L) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;
  return serialize_from(L, 1, &o);
}

/* futures.serialize_with({ max_depth =, max_size = }, ...) -> string */
static int codec_serialize_with(lua_State *L) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;
  check_opts(L, 1, &o, 0);
  return serialize_from(L, 2, &o);
}

/* futures.deserialize(s [, { functions =, max_depth =, max_size = }]) -> ... */
static int codec_deserialize(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;
  check_opts(L, 2, &o, 1);
  lua_settop(L, 2);
  int n = lf_decode(L, (const unsigned char *)s, len, &o);
  if (n < 0) return lua_error(L);
  return n;
}

/* ---------------------------------------------------------------------- */
/* Test hooks                                                              */
/* ---------------------------------------------------------------------- */

#define TESTHANDLE_MT "futures.TestHandle"

typedef struct testhandle { atomic_int refs; } testhandle;

static void th_retain(void *obj) {
  atomic_fetch_add_explicit(&((testhandle *)obj)->refs, 1, memory_order_relaxed);
}

static void th_release(void *obj) {
  testhandle *h = obj;
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) free(h);
}

/* [-0, +1, m] the new userdata owns one reference */
static void th_push(lua_State *L, void *obj) {
  void **ud = lua_newuserdatauv(L, sizeof(void *), 0);
  *ud = NULL;
  luaL_setmetatable(L, TESTHANDLE_MT);
  th_retain(obj);
  *ud = obj;
}

static const lf_handle_kind testhandle_kind = {
  TESTHANDLE_MT, th_retain, th_release, th_push
};

static int th_gc(lua_State *L) {
  void **ud = luaL_checkudata(L, 1, TESTHANDLE_MT);
  if (*ud) { th_release(*ud); *ud = NULL; }
  return 0;
}

/* h:refs() -> current reference count; h:id() -> the object's address */
static int th_refs(lua_State *L) {
  void **ud = luaL_checkudata(L, 1, TESTHANDLE_MT);
  luaL_argcheck(L, *ud != NULL, 1, "closed handle");
  lua_pushinteger(L, atomic_load(&((testhandle *)*ud)->refs));
  return 1;
}

static int th_id(lua_State *L) {
  void **ud = luaL_checkudata(L, 1, TESTHANDLE_MT);
  lua_pushfstring(L, "%p", *ud);
  return 1;
}

/* core._codec_handle() -> a new test handle (refs 1) */
static int codec_handle(lua_State *L) {
  void **ud = lua_newuserdatauv(L, sizeof(void *), 0);   /* empty first */
  *ud = NULL;
  luaL_setmetatable(L, TESTHANDLE_MT);
  testhandle *h = malloc(sizeof *h);
  if (h == NULL) return luaL_error(L, "not enough memory");
  atomic_init(&h->refs, 1);
  *ud = h;
  return 1;
}

/* core._codec_local(...) -> ...: encode in-process (handles allowed) and
** decode in the same state. */
static int codec_local(lua_State *L) {
  lf_buf b = LF_BUF_INIT;
  int top = lua_gettop(L);
  if (lf_encode(L, 1, top, "argument", 1, &b, &lf_codec_defaults) != 0)
    return lua_error(L);
  int n = lf_decode(L, b.data, b.len, &lf_codec_defaults);
  lf_buf_free(&b);
  if (n < 0) return lua_error(L);
  return n;
}

/* core._codec_encode(in_process, ...) -> string: serialize, with shared
** handles allowed when in_process is true. The string does not own the
** handles' references: specs keep the handles alive while they use it. */
static int codec_encode(lua_State *L) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = lua_toboolean(L, 1);
  return serialize_from(L, 2, &o);
}

/* core._codec_reseal(s) -> s with the header's length and checksum made
** right for its payload, so that specs can alter a payload. */
static int codec_reseal(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer B;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &B, len);
  memcpy(p, s, len);
  luaL_argcheck(L, lf_codec_reseal(p, len) == 0, 1, "shorter than a header");
  luaL_pushresultsize(&B, len);
  return 1;
}

/* The peer state of _codec_call, created on first use. */
typedef struct peer { lua_State *P; } peer;
#define PEER_MT "futures.codec_peer"
static const char PEER_KEY = 'p';      /* registry: the peer userdata */

static int peer_gc(lua_State *L) {
  peer *p = luaL_checkudata(L, 1, PEER_MT);
  if (p->P) { lua_close(p->P); p->P = NULL; }
  return 0;
}

static lua_State *get_peer(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &PEER_KEY) == LUA_TUSERDATA) {
    peer *p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return p->P;
  }
  lua_pop(L, 1);
  peer *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->P = NULL;
  if (luaL_newmetatable(L, PEER_MT)) {
    lua_pushcfunction(L, peer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  p->P = lf_new_state(lua_tostring(L, -2), lua_tostring(L, -1));
  lua_pop(L, 3);
  if (p->P == NULL) luaL_error(L, "cannot create a peer state");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &PEER_KEY);
  return p->P;
}

/* Moves the error message at the top of P to L and raises it there; P's
** stack is reset to ptop. */
static int peer_error(lua_State *L, lua_State *P, int ptop) {
  lua_pushstring(L, lua_tostring(P, -1));
  lua_settop(P, ptop);
  return lua_error(L);
}

/* core._codec_call(f, ...) -> results of f(...) run in a peer lua_State
** (one per calling state, kept between calls, as a worker keeps its
** state): arguments and results cross both ways through the codec with
** in_process = 1. An error of f is transferred back and raised. */
static int codec_call(lua_State *L) {
  luaL_checkany(L, 1);
  lua_State *P = get_peer(L);
  lf_buf b = LF_BUF_INIT;
  int ptop = lua_gettop(P);
  if (lf_encode(L, 1, lua_gettop(L), "argument", 1, &b, &lf_codec_defaults) != 0)
    return lua_error(L);
  int n = lf_decode(P, b.data, b.len, &lf_codec_defaults);
  lf_buf_free(&b);
  if (n < 0) return peer_error(L, P, ptop);
  int status = lua_pcall(P, n - 1, LUA_MULTRET, 0);
  int nres = lua_gettop(P) - ptop;
  int rc = lf_encode(P, ptop + 1, nres, status == LUA_OK ? "result" : "error",
                     1, &b, &lf_codec_defaults);
  if (rc != 0) return peer_error(L, P, ptop);
  lua_settop(P, ptop);
  int top = lua_gettop(L);
  n = lf_decode(L, b.data, b.len, &lf_codec_defaults);
  lf_buf_free(&b);
  if (n < 0) return lua_error(L);
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - top;
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* core._codec_time(rounds, reps, ...) -> encode ns, decode ns: lf_encode
** and lf_decode of the values as an executor calls them (in-process; the
** decoded values dropped), without the Lua call and the string copies of
** serialize/deserialize. A round times `reps` encodes (each into a fresh
** buffer, freed), then `reps` decodes of one buffer; the result is the
** median round, per operation. */
static int codec_time(lua_State *L) {
  int rounds = (int)luaL_checkinteger(L, 1);
  int reps = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, rounds >= 1 && rounds <= 1000, 1, "1 .. 1000");
  luaL_argcheck(L, reps >= 1, 2, "at least 1");
  int n = lua_gettop(L) - 2;
  double *te = lua_newuserdatauv(L, 2 * sizeof(double) * (size_t)rounds, 0);
  double *td = te + rounds;
  int top = lua_gettop(L);
  for (int r = 0; r < rounds; r++) {
    lf_buf b = LF_BUF_INIT;
    lua_gc(L, LUA_GCCOLLECT);   /* each round starts without the last's garbage */
    double t0 = now_ns();
    for (int i = 0; i < reps; i++) {
      lf_buf_free(&b);
      if (lf_encode(L, 3, n, "value", 1, &b, &lf_codec_defaults) != 0)
        return lua_error(L);
    }
    double t1 = now_ns();
    for (int i = 0; i < reps; i++) {
      if (lf_decode(L, b.data, b.len, &lf_codec_defaults) < 0) {
        lf_buf_free(&b);
        return lua_error(L);
      }
      lua_settop(L, top);
    }
    double t2 = now_ns();
    lf_buf_free(&b);
    te[r] = (t1 - t0) / reps;
    td[r] = (t2 - t1) / reps;
  }
  qsort(te, (size_t)rounds, sizeof *te, cmp_double);
  qsort(td, (size_t)rounds, sizeof *td, cmp_double);
  lua_pushnumber(L, te[rounds / 2]);
  lua_pushnumber(L, td[rounds / 2]);
  return 2;
}

static const luaL_Reg codec_funcs[] = {
  {"serialize", codec_serialize},
  {"serialize_with", codec_serialize_with},
  {"deserialize", codec_deserialize},
  {"_codec_handle", codec_handle},
  {"_codec_local", codec_local},
  {"_codec_call", codec_call},
  {"_codec_time", codec_time},
  {"_codec_encode", codec_encode},
  {"_codec_reseal", codec_reseal},
  {NULL, NULL}
};

void lf_bind_codec(lua_State *L) {
  if (luaL_newmetatable(L, TESTHANDLE_MT)) {
    lua_pushcfunction(L, th_gc);
    lua_setfield(L, -2, "__gc");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, th_refs);
    lua_setfield(L, -2, "refs");
    lua_pushcfunction(L, th_id);
    lua_setfield(L, -2, "id");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lf_codec_register_kind(&testhandle_kind);
  luaL_setfuncs(L, codec_funcs, 0);
}
