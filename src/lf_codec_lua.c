/*
** lf_codec_lua.c — the codec's Lua surface: futures.serialize,
** futures.serialize_with, futures.deserialize (docs/codec.md). The test
** hooks that reach further are a module of their own (lf_test.c).
**
** Threads: every function runs on the thread that owns the calling state.
** Ownership: an lf_buf lives only inside one call and is freed before any
** error is raised (the error jump would skip later cleanup).
*/
#include <string.h>

#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_codec.h"

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

/* Encodes the values first..top into a string. [-0, +1, e] */
int lf_serialize_from(lua_State *L, int first, const lf_codec_opts *o) {
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
  return lf_serialize_from(L, 1, &o);
}

/* futures.serialize_with({ max_depth =, max_size = }, ...) -> string */
static int codec_serialize_with(lua_State *L) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;
  check_opts(L, 1, &o, 0);
  return lf_serialize_from(L, 2, &o);
}

/* futures.deserialize(s [, { functions =, max_depth =, max_size = }]) -> ...
** Safe by default, as Python keeps json safe and pickle explicit: Lua
** functions are refused and names resolve only among loaded modules. */
static int codec_deserialize(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;
  o.functions = 0;   /* bytecode cannot be verified: loading it is opt-in */
  check_opts(L, 2, &o, 1);
  lua_settop(L, 2);
  int n = lf_decode(L, (const unsigned char *)s, len, &o);
  if (n == -2)
    return luaL_error(L, "deserialize: the data holds a Lua function (value "
                      "%s); pass { functions = true } to load it",
                      lua_tostring(L, -1));
  if (n < 0) return lua_error(L);
  return n;
}

static const luaL_Reg codec_funcs[] = {
  {"serialize", codec_serialize},
  {"serialize_with", codec_serialize_with},
  {"deserialize", codec_deserialize},
  {NULL, NULL}
};

void lf_bind_codec(lua_State *L) {
  luaL_setfuncs(L, codec_funcs, 0);
}
