/*
** lf_codec_lua.c — the codec's Lua surface: futures.serialize(...),
** futures.serialize_with(opts, ...) and futures.deserialize(s [, opts]).
**
** Threads: the thread that owns the calling state.
** Ownership: the encoded buffer is freed before returning or raising.
*/
#include <string.h>

#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_codec.h"

/* Read { max_depth, max_size, functions } from the table at idx into *o.
** Unknown keys are an error. [-0,+0,v] */
static void read_opts(lua_State *L, int idx, lf_codec_opts *o, int decoding) {
  *o = lf_codec_defaults;
  o->in_process = 0;   /* a string may leave the process */
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
        luaL_argerror(L, idx, "max_size must be a non-negative integer");
      o->max_size = (size_t)v;
    } else if (decoding && strcmp(k, "functions") == 0) {
      o->functions = lua_toboolean(L, -1);
    } else {
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
    }
    lua_pop(L, 1);
  }
}

/* The buffer lives in a userdata while the string is made, so that a
** memory error anywhere frees it (through __gc) instead of leaking it. */
static int push_encoded(lua_State *L, int first, const lf_codec_opts *o) {
  int n = lua_gettop(L) - first + 1;
  lf_buf *box = lua_newuserdatauv(L, sizeof *box, 0);
  memset(box, 0, sizeof *box);
  luaL_setmetatable(L, "futures.buffer");
  if (lf_encode(L, first, n, "value", 1, box, o) != 0) return lua_error(L);
  lua_pushlstring(L, (const char *)box->data, box->len);
  lf_buf_free(box);
  return 1;
}

static int codec_serialize(lua_State *L) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;
  return push_encoded(L, 1, &o);
}

static int codec_serialize_with(lua_State *L) {
  lf_codec_opts o;
  read_opts(L, 1, &o, 0);
  return push_encoded(L, 2, &o);
}

static int codec_deserialize(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  lf_codec_opts o;
  read_opts(L, 2, &o, 1);
  lua_settop(L, 2);
  int n = lf_decode(L, (const unsigned char *)s, len, &o);
  if (n < 0) return lua_error(L);
  return n;
}

static const luaL_Reg codec_funcs[] = {
  {"serialize", codec_serialize},
  {"serialize_with", codec_serialize_with},
  {"deserialize", codec_deserialize},
  {NULL, NULL}
};

static int buffer_gc(lua_State *L) {
  lf_buf_free(luaL_checkudata(L, 1, "futures.buffer"));
  return 0;
}

void lf_bind_codec(lua_State *L) {
  luaL_setfuncs(L, codec_funcs, 0);
  if (luaL_newmetatable(L, "futures.buffer")) {
    lua_pushcfunction(L, buffer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
}
