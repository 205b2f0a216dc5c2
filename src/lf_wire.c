/*
** lf_wire.c — what the codec's encoder and decoder share (lf_wire.h):
** the hash and checksum of the wire format, the default options,
** resealing a header, and the paths of error messages.
**
** Threads: any thread; the path functions on the thread that owns L.
** Ownership: nothing here allocates outside a Lua state.
*/
#include <stdio.h>

#include "lf_codec.h"
#include "lf_wire.h"

const lf_codec_opts lf_codec_defaults = { LF_CODEC_DEFAULT_DEPTH, 0, 1, 1,
                                          LF_SHARE_NONE, NULL, NULL };

/* Four independent lanes over 32-byte blocks (so the multiplies pipeline),
** then the tail and a final mix. */
uint64_t lf_wire_hash(const unsigned char *p, size_t n) {
  uint64_t a = H_M1, b = H_M2, c = H_M3, d = H_M1 ^ H_M3;
  const size_t total = n;
  while (n >= 32) {
    a = hround(a, rd64(p));
    b = hround(b, rd64(p + 8));
    c = hround(c, rd64(p + 16));
    d = hround(d, rd64(p + 24));
    p += 32; n -= 32;
  }
  uint64_t h = rotl64(a, 1) + rotl64(b, 9) + rotl64(c, 17) + rotl64(d, 25);
  h ^= (uint64_t)total * H_M3;
  while (n >= 8) {
    h = rotl64(h ^ hround(0, rd64(p)), 27) * H_M1 + H_M3;
    p += 8; n -= 8;
  }
  if (n > 0) {
    uint64_t t = 0;
    for (size_t i = 0; i < n; i++) t |= (uint64_t)p[i] << (8 * i);
    h = rotl64(h ^ hround(n, t), 23) * H_M2;
  }
  h ^= h >> 31; h *= H_M2;
  h ^= h >> 29; h *= H_M3;
  h ^= h >> 32;
  return h;
}

/* The frame checksum: the payload's hash, mixed with the first 16 header
** bytes (magic, version, flags, length), so that no header bit escapes. */
uint64_t lf_wire_sum(const unsigned char *data, size_t len) {
  uint64_t h = lf_wire_hash(data + HDR_SIZE, len - HDR_SIZE);
  return h ^ hround(hround(H_M3, rd64(data)), rd64(data + 8));
}

int lf_codec_reseal(unsigned char *data, size_t len) {
  if (len < HDR_SIZE) return -1;
  wr64(data + 8, (uint64_t)(len - HDR_SIZE));
  wr64(data + 16, lf_wire_sum(data, len));
  return 0;
}
/* Renders one key for a path: 'name', [3], [2.5], [true], [table]. The key
** stays untouched (lua_next needs it): numbers are never converted. */
static void add_key(luaL_Buffer *B, lua_State *L, int idx) {
  char tmp[64];
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      luaL_addchar(B, '\'');
      for (size_t i = 0; i < len && i < 40; i++)
        luaL_addchar(B, (s[i] >= 32 && s[i] < 127) ? s[i] : '?');
      if (len > 40) luaL_addstring(B, "...");
      luaL_addchar(B, '\'');
      return;
    }
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx))
        snprintf(tmp, sizeof tmp, "[" LUA_INTEGER_FMT "]", lua_tointeger(L, idx));
      else
        snprintf(tmp, sizeof tmp, "[%.14g]", (double)lua_tonumber(L, idx));
      luaL_addstring(B, tmp);
      return;
    case LUA_TBOOLEAN:
      luaL_addstring(B, lua_toboolean(L, idx) ? "[true]" : "[false]");
      return;
    default:
      snprintf(tmp, sizeof tmp, "[%s]", luaL_typename(L, idx));
      luaL_addstring(B, tmp);
      return;
  }
}

/* Pushes "function at src:line" (or "function <C>") for the function at
** idx. [-0, +1, m] */
static void push_funcname(lua_State *L, int idx) {
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">S", &ar);
  if (ar.what[0] == 'C')
    lua_pushliteral(L, "C function");
  else
    lua_pushfstring(L, "function at %s:%d", ar.short_src, ar.linedefined);
}

void lf_wire_addpath(luaL_Buffer *B, lua_State *L, const lf_pathseg *segs,
                     int held, int npath) {
  if (npath <= 0) return;
  int n = npath < held ? npath : held;
  int inkeys = 0;
  luaL_addstring(B, " (");
  for (int i = 0; i < n; i++) {
    const lf_pathseg *s = &segs[i];
    if (s->kind == P_KEY || s->kind == P_INDEX) {
      luaL_addstring(B, inkeys ? "." : (i > 0 ? ", field " : "field "));
      if (s->kind == P_KEY) {
        add_key(B, L, s->idx);
      } else {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "[" LUA_INTEGER_FMT "]", s->n);
        luaL_addstring(B, tmp);
      }
      inkeys = 1;
      continue;
    }
    if (i > 0) luaL_addstring(B, ", ");
    inkeys = 0;
    if (s->kind == P_KEYITSELF) {
      luaL_addstring(B, "a key");
    } else if (s->kind == P_META) {
      luaL_addstring(B, "metatable");
    } else {
      const char *name = lua_getupvalue(L, s->idx, (int)s->n);
      if (name != NULL) lua_pop(L, 1);
      if (name != NULL && name[0] != '\0' && name[0] != '(')
        lua_pushfstring(L, "upvalue '%s' of ", name);
      else
        lua_pushfstring(L, "upvalue #%d of ", (int)s->n);
      luaL_addvalue(B);
      push_funcname(L, s->idx);
      luaL_addvalue(B);
    }
  }
  if (npath > held) luaL_addstring(B, ", ...");
  luaL_addchar(B, ')');
}
