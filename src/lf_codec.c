/*
** lf_codec.c — the transfer codec: Lua values to a self-contained byte
** buffer and back (see lf_codec.h for the interface, docs/codec.md for the
** format).
**
** Threads: lf_encode and lf_decode touch only the state they are given,
** on its own thread. The handle-kind table is written by
** lf_codec_register_kind from luaopen, while a single thread runs, and only
** read afterwards.
**
** Ownership: the encoder writes into the caller's lf_buf (malloc'd) and
** records there a reference to each shared handle it wrote; on failure it
** frees the buffer before returning. The decoder allocates only Lua values
** in its state; the input is never retained. Per-state caches live in the
** registry: the encoder's (closure -> hash and bytecode, weak keys; value ->
** name for C functions and loaded modules) and the decoder's (hash ->
** bytecode and loaded closure).
**
** Format: a 24-byte header (magic "LF", version, flags, reserved, payload
** length, payload checksum), then the payload: a varint count and that many
** values, each a tag byte and its body. The decoder checks the header and the
** checksum before it reads a value, and every length against what remains.
*/
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_codec.h"

const lf_codec_opts lf_codec_defaults = { LF_CODEC_DEFAULT_DEPTH, 0, 1, 1 };

static const lf_handle_kind *kinds[LF_CODEC_MAX_KINDS];
static int nkinds;

int lf_codec_register_kind(const lf_handle_kind *kind) {
  for (int i = 0; i < nkinds; i++)
    if (kinds[i] == kind) return 0;
  if (nkinds == LF_CODEC_MAX_KINDS) return -1;
  kinds[nkinds++] = kind;
  return 0;
}

void lf_buf_free(lf_buf *b) {
  for (size_t i = 0; i < b->nhandles; i++)
    b->handles[i].kind->release(b->handles[i].obj);
  free(b->data);
  free(b->handles);
  memset(b, 0, sizeof *b);
}

/* ---- format constants ---- */

enum {
  T_NIL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STR, T_TABLE, T_REF, T_GLOBALS,
  T_MODULE, T_LFUNC, T_CFUNC, T_SHAREDUP, T_HANDLE, T_INTARRAY, T_NTAGS
};

#define HEADER_SIZE 24
#define FORMAT_VERSION 1
#define MAX_NAME 1024          /* C function and module names */
#define FCACHE_MAX 256         /* decoded functions kept per state */

/* ---- checksum: 64-bit, eight independent lanes of add-rotate-xor ----
** It guards against corruption (a truncated pipe, a flipped bit), not
** against forgery; eight lanes keep it near memory speed. */

#define PRIME1 0x9E3779B185EBCA87ULL
#define PRIME2 0xC2B2AE3D27D4EB4FULL

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t mix(uint64_t h, uint64_t w) {
  return rotl(h ^ (w * PRIME2), 31) * PRIME1;
}

static uint64_t checksum(const unsigned char *p, size_t n) {
  uint64_t lane[8];
  for (int j = 0; j < 8; j++) lane[j] = PRIME1 * (uint64_t)(j + 1);
  size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    memcpy(w, p + i, 64);
    for (int j = 0; j < 8; j++) lane[j] = rotl(lane[j] + w[j], 23) ^ w[j];
  }
  uint64_t h = (uint64_t)n * PRIME2;
  for (int j = 0; j < 8; j++) h = mix(h, lane[j]);
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = mix(h, w);
  }
  uint64_t tail = 0;
  memcpy(&tail, p + i, n - i);
  h = mix(h, tail ^ (uint64_t)(n - i));
  h ^= h >> 33; h *= PRIME2; h ^= h >> 29;
  return h;
}

/* ---- registry keys of the per-state caches ---- */

static const char ENC_FN_KEY = 'f';     /* closure -> "hash..bytecode" */
static const char NAMES_KEY = 'n';      /* C function / module -> name */
static const char DEC_FN_KEY = 'd';     /* hash -> { bytecode, closure } */

/* Push the registry table at key, creating it (weak keys if weak). */
static void push_cache(lua_State *L, const char *key, int weak) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  if (weak) {
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* ==================================================================== */
/* Encoder                                                               */
/* ==================================================================== */

/* A step of the path from the top-level value to the one being encoded;
** turned into text only when an error needs it. */
typedef struct path_step {
  enum { P_KEY, P_KEYOF, P_UPVALUE, P_META } kind;
  int idx;          /* stack index of the key, or of the function */
  int n;            /* upvalue number */
} path_step;

typedef struct encoder {
  lua_State *L;
  lf_buf *b;
  const lf_codec_opts *o;
  int refs;         /* stack slot of value -> ref id (nil until needed) */
  int upids;        /* stack slot of upvalue id -> ref*256+n (likewise) */
  const char *what;
  int base;
  int nrefs;
  int depth;
  int top_index;    /* which top-level value is being encoded */
  path_step path[LF_CODEC_MAX_DEPTH + 8];
  int npath;
} encoder;

static int fail(encoder *e, const char *why);

static void grow(encoder *e, size_t need) {
  lf_buf *b = e->b;
  if (need > SIZE_MAX / 2 - b->len) luaL_error(e->L, "not enough memory");
  /* Double, or jump straight to what a big string needs: one realloc. */
  size_t cap = b->cap ? b->cap * 2 : 256;
  if (cap < b->len + need) cap = b->len + need + need / 8;
  unsigned char *d = realloc(b->data, cap);
  if (d == NULL) luaL_error(e->L, "not enough memory");
  b->data = d;
  b->cap = cap;
}

static inline void put(encoder *e, const void *p, size_t n) {
  if (e->b->cap - e->b->len < n) grow(e, n);
  memcpy(e->b->data + e->b->len, p, n);
  e->b->len += n;
}

static inline void put_byte(encoder *e, int c) {
  if (e->b->cap == e->b->len) grow(e, 1);
  e->b->data[e->b->len++] = (unsigned char)c;
}

static inline void put_varint(encoder *e, uint64_t v) {
  unsigned char tmp[10];
  int n = 0;
  while (v >= 0x80) { tmp[n++] = (unsigned char)(v | 0x80); v >>= 7; }
  tmp[n++] = (unsigned char)v;
  put(e, tmp, (size_t)n);
}

static inline uint64_t zigzag(lua_Integer i) {
  return ((uint64_t)i << 1) ^ (uint64_t)(i >> 63);
}

static void check_size(encoder *e) {
  if (e->o->max_size && e->b->len > e->o->max_size) {
    lua_pushfstring(e->L, "encoded size over the limit of %I bytes",
                    (lua_Integer)e->o->max_size);
    fail(e, lua_tostring(e->L, -1));
  }
}

static void push_path_text(encoder *e);

/* Raise an encoding error: "cannot transfer argument #2 (field 'x'): why".
** The path is described now, while its keys are still on the stack. The
** leading \1 tells lf_encode that the message is complete. */
static int fail(encoder *e, const char *why) {
  lua_State *L = e->L;
  lua_pushstring(L, why);
  push_path_text(e);
  lua_pushfstring(L, "\1cannot transfer %s: %s", lua_tostring(L, -1),
                  lua_tostring(L, -2));
  return lua_error(L);
}

static void push_path(encoder *e, int kind, int idx, int n) {
  if (e->npath < (int)(sizeof e->path / sizeof e->path[0])) {
    path_step *s = &e->path[e->npath];
    s->kind = kind; s->idx = idx; s->n = n;
  }
  e->npath++;
}

/* Assign the next ref id to the value at idx. */
static void add_ref(encoder *e, int idx) {
  lua_State *L = e->L;
  if (lua_isnil(L, e->refs)) {
    lua_newtable(L);
    lua_replace(L, e->refs);
  }
  lua_pushvalue(L, idx);
  lua_pushinteger(L, ++e->nrefs);
  lua_rawset(L, e->refs);
}

/* If the value at idx was seen in this transfer, write a ref and return 1. */
static int put_seen(encoder *e, int idx) {
  lua_State *L = e->L;
  if (lua_isnil(L, e->refs)) return 0;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->refs) == LUA_TNUMBER) {
    put_byte(e, T_REF);
    put_varint(e, (uint64_t)lua_tointeger(L, -1));
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  return 0;
}

/* Push the name under which package.loaded makes the value at idx (a C
** function or a table) reachable, or nothing and return 0. */
static int push_name(encoder *e, int idx) {
  lua_State *L = e->L;
  idx = lua_absindex(L, idx);
  push_cache(L, &NAMES_KEY, 1);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) { lua_remove(L, -2); return 1; }
  lua_pop(L, 1);
  if (lua_type(L, idx) == LUA_TTABLE) {
    /* Tables are looked up in package.loaded itself: a miss is common
    ** (plain data), so no scan; modules found are cached. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, idx)) {
        lua_pop(L, 1);               /* names, loaded, key */
        lua_pushvalue(L, idx);
        lua_pushvalue(L, -2);
        lua_rawset(L, -5);           /* cache it */
        lua_remove(L, -2);
        lua_remove(L, -2);
        return 1;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return 0;
  }
  /* A C function: scan the functions of every loaded module once, caching
  ** them all; modules loaded later are found by the next miss's scan. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      if (lua_iscfunction(L, -1)) {
        lua_pushvalue(L, -1);
        lua_pushvalue(L, -3);
        lua_rawset(L, -6);
      } else if (lua_istable(L, -1)) {
        const char *mod = lua_tostring(L, -2);
        int is_g = strcmp(mod, "_G") == 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) {
          if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -7) == LUA_TNIL || !is_g) {
              /* base functions keep a module name if they have one */
              lua_pop(L, 1);
              lua_pushvalue(L, -1);
              lua_pushfstring(L, "%s.%s", mod, lua_tostring(L, -3));
              lua_rawset(L, -8);
            } else {
              lua_pop(L, 1);
            }
          }
          lua_pop(L, 1);
        }
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) { lua_remove(L, -2); return 1; }
  lua_pop(L, 2);
  return 0;
}

static void put_name(encoder *e, int tag) {
  size_t len;
  const char *s = lua_tolstring(e->L, -1, &len);
  put_byte(e, tag);
  put_varint(e, len);
  put(e, s, len);
  lua_pop(e->L, 1);
}

static void encode_value(encoder *e, int idx);

static int is_globals(lua_State *L, int idx) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  int eq = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  return eq;
}

/* A table whose array part is all integers goes as one packed run; returns
** 0 (and writes nothing) when it is not such a table. */
static int put_intarray(encoder *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  if (n < 8 || lua_getmetatable(L, idx)) {
    if (n >= 8) lua_pop(L, 1);
    return 0;
  }
  lua_pushinteger(L, n);
  if (lua_next(L, idx)) {   /* anything after the array part: no */
    lua_pop(L, 2);
    return 0;
  }
  size_t mark = e->b->len;
  put_byte(e, T_INTARRAY);
  put_varint(e, (uint64_t)n);
  if (e->b->cap - e->b->len < (size_t)n * 8) grow(e, (size_t)n * 8);
  unsigned char *out = e->b->data + e->b->len;
  /* In batches: push up to 64 values, read them, drop them at once. */
  if (!lua_checkstack(L, 64)) { e->b->len = mark; return 0; }
  int top = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i += 64) {
    int k = n - i + 1 < 64 ? (int)(n - i + 1) : 64;
    for (int j = 0; j < k; j++) lua_rawgeti(L, idx, i + j);
    for (int j = 0; j < k; j++) {
      if (!lua_isinteger(L, top + 1 + j)) {
        lua_settop(L, top);
        e->b->len = mark;
        return 0;
      }
      lua_Integer v = lua_tointeger(L, top + 1 + j);
      memcpy(out + (size_t)(i - 1 + j) * 8, &v, 8);
    }
    lua_settop(L, top);
  }
  e->b->len += (size_t)n * 8;
  return 1;
}

static void encode_table(encoder *e, int idx) {
  lua_State *L = e->L;
  if (put_seen(e, idx)) return;
  if (is_globals(L, idx)) { put_byte(e, T_GLOBALS); return; }
  if (push_name(e, idx)) { put_name(e, T_MODULE); return; }
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (put_intarray(e, idx, n)) { add_ref(e, idx); check_size(e); return; }
  add_ref(e, idx);
  put_byte(e, T_TABLE);
  put_varint(e, (uint64_t)n);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushinteger(L, i);
    push_path(e, P_KEY, lua_gettop(L), 0);
    lua_rawgeti(L, idx, i);
    encode_value(e, -1);
    lua_pop(L, 2);
    e->npath--;
  }
  /* The hash part: count patched in afterwards (fixed 4 bytes). */
  size_t count_at = e->b->len;
  uint32_t count = 0;
  put(e, &count, 4);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_isinteger(L, -2)) {
      lua_Integer k = lua_tointeger(L, -2);
      if (k >= 1 && k <= n) { lua_pop(L, 1); continue; }
    }
    push_path(e, P_KEYOF, lua_gettop(L) - 1, 0);
    encode_value(e, -2);
    e->npath--;
    push_path(e, P_KEY, lua_gettop(L) - 1, 0);
    encode_value(e, -1);
    e->npath--;
    lua_pop(L, 1);
    if (++count == UINT32_MAX) fail(e, "table with too many fields");
  }
  memcpy(e->b->data + count_at, &count, 4);
  if (lua_getmetatable(L, idx)) {
    push_path(e, P_META, 0, 0);
    encode_value(e, -1);
    e->npath--;
    lua_pop(L, 1);
  } else {
    put_byte(e, T_NIL);
  }
  check_size(e);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  luaL_addlstring((luaL_Buffer *)ud, p, sz);
  return 0;
}

/* Push "hash(8 bytes) .. bytecode" of the Lua function at idx, from the
** state's cache or by dumping it. */
static void push_bytecode(encoder *e, int idx) {
  lua_State *L = e->L;
  push_cache(L, &ENC_FN_KEY, 1);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) { lua_remove(L, -2); return; }
  lua_pop(L, 1);
  luaL_Buffer lb;
  lua_pushvalue(L, idx);
  luaL_buffinit(L, &lb);
  luaL_addlstring(&lb, "hashhash", 8);
  lua_pushvalue(L, idx);
  lua_dump(L, dump_writer, &lb, 0);
  lua_pop(L, 1);
  luaL_pushresult(&lb);
  lua_remove(L, -2);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  uint64_t h = checksum((const unsigned char *)s + 8, len - 8);
  luaL_Buffer lb2;   /* Lua strings are immutable: build the final one */
  luaL_buffinit(L, &lb2);
  luaL_addlstring(&lb2, (const char *)&h, 8);
  luaL_addlstring(&lb2, s + 8, len - 8);
  luaL_pushresult(&lb2);
  lua_remove(L, -2);
  lua_pushvalue(L, idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
}

static void encode_lfunction(encoder *e, int idx) {
  lua_State *L = e->L;
  if (put_seen(e, idx)) return;
  int nup = 0, only_env = 1;
  const char *name;
  while ((name = lua_getupvalue(L, idx, nup + 1)) != NULL) {
    lua_pop(L, 1);
    nup++;
    if (strcmp(name, "_ENV") != 0) only_env = 0;
  }
  if (nup > 255) fail(e, "function with too many upvalues");
  int ref = 0;
  if (!only_env) { add_ref(e, idx); ref = e->nrefs; }
  push_bytecode(e, idx);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  put_byte(e, T_LFUNC);
  put_byte(e, only_env);
  put(e, s, 8);
  put_varint(e, len - 8);
  put(e, s + 8, len - 8);
  lua_pop(L, 1);
  put_byte(e, nup);
  for (int i = 1; i <= nup; i++) {
    name = lua_getupvalue(L, idx, i);
    if (strcmp(name, "_ENV") == 0) {
      /* A function's environment is the globals of wherever it runs:
      ** globals never travel, whatever table the function used. */
      put_byte(e, T_GLOBALS);
      lua_pop(L, 1);
      continue;
    }
    /* An upvalue shared with a closure already written is joined to it. */
    void *id = lua_upvalueid(L, idx, i);
    if (lua_isnil(L, e->upids)) { lua_newtable(L); lua_replace(L, e->upids); }
    if (lua_rawgetp(L, e->upids, id) == LUA_TNUMBER) {
      lua_Integer where = lua_tointeger(L, -1);
      put_byte(e, T_SHAREDUP);
      put_varint(e, (uint64_t)(where >> 8));
      put_byte(e, (int)(where & 0xff));
      lua_pop(L, 2);
      continue;
    }
    lua_pop(L, 1);
    lua_pushinteger(L, (lua_Integer)ref * 256 + i);
    lua_rawsetp(L, e->upids, id);
    push_path(e, P_UPVALUE, idx, i);
    encode_value(e, -1);
    e->npath--;
    lua_pop(L, 1);
  }
}

static void encode_value(encoder *e, int idx) {
  lua_State *L = e->L;
  idx = lua_absindex(L, idx);
  if (e->depth >= e->o->max_depth) {
    lua_pushfstring(L, "nesting deeper than %d levels", e->o->max_depth);
    fail(e, lua_tostring(L, -1));
  }
  if (!lua_checkstack(L, 16)) fail(e, "nesting too deep for the Lua stack");
  e->depth++;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put_byte(e, T_NIL); break;
    case LUA_TBOOLEAN: put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        put_byte(e, T_INT);
        put_varint(e, zigzag(lua_tointeger(L, idx)));
      } else {
        lua_Number d = lua_tonumber(L, idx);
        put_byte(e, T_FLOAT);
        put(e, &d, sizeof d);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      put_byte(e, T_STR);
      put_varint(e, len);
      put(e, s, len);
      check_size(e);
      break;
    }
    case LUA_TTABLE: encode_table(e, idx); break;
    case LUA_TFUNCTION:
      if (!lua_iscfunction(L, idx)) { encode_lfunction(e, idx); break; }
      if (push_name(e, idx)) { put_name(e, T_CFUNC); break; }
      if (lua_getupvalue(L, idx, 1) != NULL)
        fail(e, "C closure with upvalues, not reachable by name");
      fail(e, "C function not reachable by name through package.loaded");
      break;
    case LUA_TUSERDATA: {
      if (lua_getmetatable(L, idx)) {
        for (int k = 0; k < nkinds; k++) {
          luaL_getmetatable(L, kinds[k]->tname);
          int eq = lua_rawequal(L, -1, -2);
          lua_pop(L, 1);
          if (!eq) continue;
          lua_pop(L, 1);
          const char *what = kinds[k]->tname;
          if (strncmp(what, "futures.", 8) == 0) what += 8;
          if (!e->o->in_process) {
            lua_pushfstring(L, "%s (a shared handle cannot leave the process)", what);
            fail(e, lua_tostring(L, -1));
          }
          void *obj = *(void **)lua_touserdata(L, idx);
          if (obj == NULL) fail(e, "released handle");
          lf_buf *b = e->b;
          if (b->nhandles == b->hcap) {
            size_t cap = b->hcap ? b->hcap * 2 : 4;
            lf_buf_handle *h = realloc(b->handles, cap * sizeof *h);
            if (h == NULL) fail(e, "not enough memory");
            b->handles = h;
            b->hcap = cap;
          }
          kinds[k]->retain(obj);
          b->handles[b->nhandles].kind = kinds[k];
          b->handles[b->nhandles].obj = obj;
          b->nhandles++;
          put_byte(e, T_HANDLE);
          put_byte(e, k);
          put(e, &obj, sizeof obj);
          e->depth--;
          return;
        }
        lua_pop(L, 1);
      }
      fail(e, "userdata");
      break;
    }
    case LUA_TLIGHTUSERDATA: fail(e, "light userdata"); break;
    case LUA_TTHREAD: fail(e, "thread (coroutine)"); break;
    default: fail(e, luaL_typename(L, idx)); break;
  }
  e->depth--;
}

/* Describe the failing value: "argument #2 (field 'conn'.[3])". [-0,+1,m] */
static void push_path_text(encoder *e) {
  lua_State *L = e->L;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_pushfstring(L, "%s #%d", e->what, e->base + e->top_index);
  luaL_addvalue(&b);
  int n = e->npath;
  if (n > (int)(sizeof e->path / sizeof e->path[0]))
    n = (int)(sizeof e->path / sizeof e->path[0]);
  for (int i = 0; i < n; i++) {
    path_step *s = &e->path[i];
    if (n > 12 && i == 6) {   /* a deep path: its two ends say enough */
      luaL_addstring(&b, ".....");
      i = n - 6;
      s = &e->path[i];
    }
    luaL_addstring(&b, i == 0 ? " (" : ".");
    switch (s->kind) {
      case P_KEY: case P_KEYOF: {
        if (s->kind == P_KEYOF) luaL_addstring(&b, "key of ");
        int t = lua_type(L, s->idx);
        if (t == LUA_TSTRING) lua_pushfstring(L, "field '%s'", lua_tostring(L, s->idx));
        else if (t == LUA_TNUMBER) lua_pushfstring(L, "[%s]", luaL_tolstring(L, s->idx, NULL)), lua_remove(L, -2);
        else lua_pushfstring(L, "[%s key]", luaL_typename(L, s->idx));
        luaL_addvalue(&b);
        break;
      }
      case P_UPVALUE: {
        lua_Debug ar;
        const char *uname = lua_getupvalue(L, s->idx, s->n);
        lua_pop(L, 1);
        lua_pushvalue(L, s->idx);
        lua_getinfo(L, ">S", &ar);
        lua_pushfstring(L, "upvalue '%s' of function at %s:%d", uname ? uname : "?",
                        ar.short_src, ar.linedefined);
        luaL_addvalue(&b);
        break;
      }
      case P_META: luaL_addstring(&b, "metatable"); break;
    }
  }
  if (n > 0) luaL_addchar(&b, ')');
  luaL_pushresult(&b);
}

typedef struct encode_args {
  int n;
  const char *what;
  int base;
  lf_buf *out;
  const lf_codec_opts *opts;
} encode_args;

/* Runs under lua_pcall: argument 1 the encode_args, then the n values;
** two more slots hold the ref tables once needed. */
static int protected_encode(lua_State *L) {
  encode_args *a = lua_touserdata(L, 1);
  encoder e;
  e.L = L; e.b = a->out; e.o = a->opts;
  e.what = a->what; e.base = a->base;
  e.nrefs = e.depth = e.npath = 0;
  lua_settop(L, a->n + 3);
  e.refs = a->n + 2;
  e.upids = a->n + 3;
  unsigned char header[HEADER_SIZE] = { 0 };
  put(&e, header, HEADER_SIZE);
  put_varint(&e, (uint64_t)a->n);
  for (int i = 0; i < a->n; i++) {
    e.top_index = i;
    encode_value(&e, 2 + i);
  }
  return 0;
}

int lf_encode(lua_State *L, int first, int n, const char *what, int base,
              lf_buf *out, const lf_codec_opts *opts) {
  if (opts == NULL) opts = &lf_codec_defaults;
  lf_codec_opts o = *opts;
  if (o.max_depth <= 0 || o.max_depth > LF_CODEC_MAX_DEPTH)
    o.max_depth = o.max_depth <= 0 ? 1 : LF_CODEC_MAX_DEPTH;
  first = lua_absindex(L, first);
  if (!lua_checkstack(L, n + 8)) {
    lua_pushliteral(L, "cannot transfer: too many values");
    return -1;
  }
  encode_args a = { n, what, base, out, &o };
  lua_pushcfunction(L, protected_encode);
  lua_pushlightuserdata(L, &a);
  for (int i = 0; i < n; i++) lua_pushvalue(L, first + i);
  if (lua_pcall(L, n + 1, 0, 0) == LUA_OK) {
    size_t plen = out->len - HEADER_SIZE;
    uint64_t len64 = plen, sum = checksum(out->data + HEADER_SIZE, plen);
    out->data[0] = 'L'; out->data[1] = 'F';
    out->data[2] = FORMAT_VERSION; out->data[3] = 0;
    memcpy(out->data + 8, &len64, 8);
    memcpy(out->data + 16, &sum, 8);
    return 0;
  }
  lf_buf_free(out);
  const char *msg = lua_tostring(L, -1);
  if (msg == NULL) msg = "error object while encoding";
  if (msg[0] == '\1') lua_pushstring(L, msg + 1);
  else lua_pushfstring(L, "cannot transfer %s #%d: %s", what, base, msg);
  lua_replace(L, -2);
  return -1;
}

/* ==================================================================== */
/* Decoder                                                               */
/* ==================================================================== */

typedef struct decoder {
  lua_State *L;
  const unsigned char *p, *end;
  const lf_codec_opts *o;
  int refs;         /* stack slot: ref id -> value */
  int nrefs;
  int depth;
} decoder;

static int bad(decoder *d, const char *why) {
  return luaL_error(d->L, "malformed data: %s", why);
}

static inline void need(decoder *d, size_t n) {
  if ((size_t)(d->end - d->p) < n) bad(d, "truncated");
}

static inline int get_byte(decoder *d) {
  need(d, 1);
  return *d->p++;
}

static uint64_t get_varint(decoder *d) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    int c = get_byte(d);
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  bad(d, "varint too long");
  return 0;
}

/* A length that the remaining input must be able to hold. */
static size_t get_len(decoder *d, size_t unit) {
  uint64_t n = get_varint(d);
  if (n > (uint64_t)(d->end - d->p) / unit) bad(d, "length past the end");
  return (size_t)n;
}

static void decode_value(decoder *d);

static void new_ref(decoder *d) {
  lua_State *L = d->L;
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, ++d->nrefs);
}

/* require(name), or package.loaded[name] if already there. [-0,+1,e] */
static void push_module(lua_State *L, const char *name, size_t len) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushlstring(L, name, len);
  if (lua_rawget(L, -2) != LUA_TNIL) { lua_remove(L, -2); return; }
  lua_pop(L, 2);
  lua_getglobal(L, "require");
  lua_pushlstring(L, name, len);
  lua_call(L, 1, 1);
}

static const char *get_name(decoder *d, size_t *len) {
  *len = get_len(d, 1);
  if (*len == 0 || *len > MAX_NAME) bad(d, "bad name length");
  const char *s = (const char *)d->p;
  d->p += *len;
  return s;
}

static void decode_cfunction(decoder *d) {
  lua_State *L = d->L;
  size_t len;
  const char *name = get_name(d, &len);
  if (!d->o->functions) bad(d, "functions are refused");
  const char *dot = NULL;
  for (size_t i = 0; i < len; i++) if (name[i] == '.') dot = name + i;
  if (dot == NULL || dot == name || dot == name + len - 1) bad(d, "bad C function name");
  push_module(L, name, (size_t)(dot - name));
  lua_pushlstring(L, dot + 1, (size_t)(name + len - dot - 1));
  if (!lua_istable(L, -2) || lua_gettable(L, -2) != LUA_TFUNCTION) {
    lua_pushlstring(L, name, len);
    luaL_error(L, "C function '%s' not found here", lua_tostring(L, -1));
  }
  lua_remove(L, -2);
}

static void decode_lfunction(decoder *d) {
  lua_State *L = d->L;
  int only_env = get_byte(d);
  need(d, 8);
  uint64_t hash;
  memcpy(&hash, d->p, 8);
  d->p += 8;
  size_t len = get_len(d, 1);
  const char *code = (const char *)d->p;
  d->p += len;
  int nup = get_byte(d);
  if (!d->o->functions) bad(d, "functions are refused");
  /* The cache: hash -> { bytecode, closure }. */
  push_cache(L, &DEC_FN_KEY, 0);
  int cache = lua_gettop(L);
  int cached = 0;
  if (lua_rawgeti(L, cache, (lua_Integer)hash) == LUA_TTABLE) {
    lua_rawgeti(L, -1, 1);
    size_t clen;
    const char *c = lua_tolstring(L, -1, &clen);
    cached = c != NULL && clen == len && memcmp(c, code, len) == 0;
    lua_pop(L, 1);
  }
  if (cached && only_env) {
    /* No upvalue but the environment: the closure is stateless, reuse it. */
    lua_rawgeti(L, -1, 2);
    lua_replace(L, cache);
    lua_settop(L, cache);
    for (int i = 0; i < nup; i++)
      if (get_byte(d) != T_GLOBALS) bad(d, "bad upvalue");
    return;
  }
  if (!cached && checksum((const unsigned char *)code, len) != hash)
    bad(d, "function checksum mismatch");
  if (len < 4 || memcmp(code, LUA_SIGNATURE, 4) != 0) bad(d, "not a Lua function");
  if (luaL_loadbufferx(L, code, len, "=(transferred)", "b") != LUA_OK)
    lua_error(L);
  if (!cached) {
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, code, len);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 2);
    /* Bound the cache: start afresh when it is full. */
    lua_getfield(L, cache, "n");
    lua_Integer n = lua_tointeger(L, -1) + 1;
    lua_pop(L, 1);
    if (n > FCACHE_MAX) {
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &DEC_FN_KEY);
      lua_replace(L, cache);
      n = 1;
    }
    lua_pushinteger(L, n);
    lua_setfield(L, cache, "n");
    lua_rawseti(L, cache, (lua_Integer)hash);
  }
  lua_replace(L, cache);
  lua_settop(L, cache);
  int fn = cache;
  if (!only_env) new_ref(d);
  for (int i = 1; i <= nup; i++) {
    if (lua_getupvalue(L, fn, i) == NULL) bad(d, "more upvalues than the function has");
    lua_pop(L, 1);
    need(d, 1);
    if (*d->p == T_SHAREDUP) {
      d->p++;
      uint64_t ref = get_varint(d);
      int n = get_byte(d);
      if (ref == 0 || ref > (uint64_t)d->nrefs) bad(d, "bad shared upvalue");
      lua_rawgeti(L, d->refs, (lua_Integer)ref);
      if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1) ||
          n < 1 || lua_getupvalue(L, -1, n) == NULL)
        bad(d, "bad shared upvalue");
      lua_pop(L, 1);
      lua_upvaluejoin(L, fn, i, lua_gettop(L), n);
      lua_pop(L, 1);
      continue;
    }
    decode_value(d);
    lua_setupvalue(L, fn, i);
  }
}

static void decode_table(decoder *d) {
  lua_State *L = d->L;
  size_t narr = get_len(d, 1);
  lua_createtable(L, (int)(narr > INT_MAX ? INT_MAX : narr), 0);
  new_ref(d);
  int t = lua_gettop(L);
  for (size_t i = 1; i <= narr; i++) {
    decode_value(d);
    lua_rawseti(L, t, (lua_Integer)i);
  }
  need(d, 4);
  uint32_t nhash;
  memcpy(&nhash, d->p, 4);
  d->p += 4;
  if (nhash > (size_t)(d->end - d->p) / 2) bad(d, "length past the end");
  for (uint32_t i = 0; i < nhash; i++) {
    decode_value(d);
    if (lua_isnil(L, -1)) bad(d, "nil key");
    if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
      bad(d, "NaN key");
    decode_value(d);
    lua_rawset(L, t);
  }
  decode_value(d);   /* the metatable, or nil */
  if (lua_istable(L, -1)) lua_setmetatable(L, t);
  else if (lua_isnil(L, -1)) lua_pop(L, 1);
  else bad(d, "metatable is not a table");
}

static void decode_value(decoder *d) {
  lua_State *L = d->L;
  if (d->depth >= d->o->max_depth) bad(d, "nesting too deep");
  if (!lua_checkstack(L, 8)) bad(d, "nesting too deep");
  d->depth++;
  int tag = get_byte(d);
  switch (tag) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      uint64_t z = get_varint(d);
      lua_pushinteger(L, (lua_Integer)((z >> 1) ^ (~(z & 1) + 1)));
      break;
    }
    case T_FLOAT: {
      lua_Number v;
      need(d, sizeof v);
      memcpy(&v, d->p, sizeof v);
      d->p += sizeof v;
      lua_pushnumber(L, v);
      break;
    }
    case T_STR: {
      size_t len = get_len(d, 1);
      lua_pushlstring(L, (const char *)d->p, len);
      d->p += len;
      break;
    }
    case T_TABLE: decode_table(d); break;
    case T_INTARRAY: {
      size_t n = get_len(d, 8);
      lua_createtable(L, (int)(n > INT_MAX ? INT_MAX : n), 0);
      for (size_t i = 0; i < n; i++) {
        lua_Integer v;
        memcpy(&v, d->p + i * 8, 8);
        lua_pushinteger(L, v);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
      }
      d->p += n * 8;
      new_ref(d);
      break;
    }
    case T_REF: {
      uint64_t ref = get_varint(d);
      if (ref == 0 || ref > (uint64_t)d->nrefs) bad(d, "bad reference");
      lua_rawgeti(L, d->refs, (lua_Integer)ref);
      break;
    }
    case T_GLOBALS: lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); break;
    case T_MODULE: {
      size_t len;
      const char *name = get_name(d, &len);
      if (!d->o->functions) bad(d, "modules are refused with functions");
      push_module(L, name, len);
      break;
    }
    case T_LFUNC: decode_lfunction(d); break;
    case T_CFUNC: decode_cfunction(d); break;
    case T_HANDLE: {
      int k = get_byte(d);
      void *obj;
      need(d, sizeof obj);
      memcpy(&obj, d->p, sizeof obj);
      d->p += sizeof obj;
      /* A pointer is only meaningful in the process that wrote it. */
      if (!d->o->in_process || k >= nkinds || obj == NULL) bad(d, "unexpected handle");
      kinds[k]->push(L, obj);
      break;
    }
    default: bad(d, "unknown tag");
  }
  d->depth--;
}

typedef struct decode_args {
  const unsigned char *data;
  size_t len;
  const lf_codec_opts *opts;
  int n;
} decode_args;

static int protected_decode(lua_State *L) {
  decode_args *a = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_newtable(L);   /* refs, slot 1 */
  decoder d = { L, a->data + HEADER_SIZE, a->data + a->len, a->opts, 1, 0, 0 };
  uint64_t n = get_varint(&d);
  if (n > (uint64_t)(d.end - d.p) || n > 1000000) bad(&d, "too many values");
  if (!lua_checkstack(L, (int)n + 8)) bad(&d, "too many values");
  for (uint64_t i = 0; i < n; i++) decode_value(&d);
  if (d.p != d.end) bad(&d, "trailing bytes");
  a->n = (int)n;
  return (int)n;
}

int lf_decode(lua_State *L, const unsigned char *data, size_t len,
              const lf_codec_opts *opts) {
  if (opts == NULL) opts = &lf_codec_defaults;
  lf_codec_opts o = *opts;
  if (o.max_depth <= 0 || o.max_depth > LF_CODEC_MAX_DEPTH)
    o.max_depth = o.max_depth <= 0 ? 1 : LF_CODEC_MAX_DEPTH;
  /* The header, and the checksum of the whole payload, before any value. */
  uint64_t plen, sum;
  if (len < HEADER_SIZE || data[0] != 'L' || data[1] != 'F') {
    lua_pushliteral(L, "malformed data: not an lua-futures encoding");
    return -1;
  }
  if (data[2] != FORMAT_VERSION) {
    lua_pushfstring(L, "malformed data: format version %d, expected %d",
                    (int)data[2], FORMAT_VERSION);
    return -1;
  }
  memcpy(&plen, data + 8, 8);
  memcpy(&sum, data + 16, 8);
  if (plen != len - HEADER_SIZE) {
    lua_pushliteral(L, "malformed data: truncated or padded");
    return -1;
  }
  if (o.max_size && plen > o.max_size) {
    lua_pushfstring(L, "malformed data: size over the limit of %I bytes",
                    (lua_Integer)o.max_size);
    return -1;
  }
  if (checksum(data + HEADER_SIZE, (size_t)plen) != sum) {
    lua_pushliteral(L, "malformed data: checksum mismatch");
    return -1;
  }
  if (!lua_checkstack(L, 4)) {
    lua_pushliteral(L, "malformed data: stack overflow");
    return -1;
  }
  decode_args a = { data, len, &o, 0 };
  lua_pushcfunction(L, protected_decode);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) return -1;
  return a.n;
}
