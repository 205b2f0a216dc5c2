/*
** lf_codec.c — the transfer codec: Lua values to a self-contained byte
** buffer and back (docs/codec.md describes the wire format).
**
** Threads: lf_encode and lf_decode touch only the lua_State they are given
** and must run on the thread that owns it; every cache they use lives in
** that state's registry, so two states never share codec state. An lf_buf
** is plain memory: once encoded it may move to any thread, and lf_buf_free
** may run on any thread (a handle's release is thread-safe by contract).
** The handle-kind table (`kinds`) only grows: lf_codec_register_kind
** appends under `kinds_lock` (luaopen may run in several states, on several
** threads) and publishes the new count with a release store; the codec
** reads the count with an acquire load and the entries below it without a
** lock. `kinds_lock` is the only mutex here and is never held with another.
**
** Ownership: lf_encode writes into the caller's lf_buf, which then owns the
** bytes and one reference per shared handle (taken with kind->retain while
** encoding); on failure lf_encode frees both before returning. The scratch
** maps of one call (the encoder's identity map) are malloc'd, owned by the
** call's context and freed before lf_encode returns, also when a Lua error
** (out of memory) unwinds through the encoder. Decoded values belong to the
** decoding state; a decoded handle userdata owns a reference of its own
** (kind->push), so decoding never consumes the buffer. The per-state caches
** (encoder: closure -> bytecode; C function/module -> name, upvalue table
** -> false once known to be plain data, and the fingerprint of
** package.loaded the map was built from; decoder: bytecode hash ->
** bytecode and loaded function) are Lua tables in the registry, collected
** with the state.
*/
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_codec.h"

const lf_codec_opts lf_codec_defaults = { LF_CODEC_DEFAULT_DEPTH, 0, 1, 1 };

/* Cold paths with buffers of their own stay out of the recursive frames of
** the encoder and decoder, which are what max_depth multiplies. */
#if defined(__GNUC__)
#define LF_COLD __attribute__((noinline, cold))
#define LF_NOINLINE __attribute__((noinline))
#else
#define LF_COLD
#define LF_NOINLINE
#endif

/* ---------------------------------------------------------------------- */
/* Wire format constants (docs/codec.md)                                   */
/* ---------------------------------------------------------------------- */

#define HDR_SIZE    24          /* magic[4] flags[4] length[8] checksum[8] */
#define MAGIC0      'L'
#define MAGIC1      'F'
#define MAGIC2      'C'
#define FORMAT_VERSION 1

#define FLAG_FUNCTIONS 0x1u     /* payload holds Lua/C functions or modules */
#define FLAG_HANDLES   0x2u     /* payload holds in-process handle pointers */
#define FLAGS_KNOWN    (FLAG_FUNCTIONS | FLAG_HANDLES)

/* A value's first byte: the low 7 bits are the tag; bit 7 (T_KEEP) marks an
** object (table, Lua function, handle) that a later T_REF or T_UPJOIN names,
** so the decoder records it. References name an object by the payload
** offset of its tag byte. */
enum {
  T_NIL = 0, T_FALSE, T_TRUE,
  T_INT8, T_INT16, T_INT32, T_INT64,   /* little-endian two's complement */
  T_FLOAT,                             /* IEEE-754 binary64 bit pattern */
  T_STR,                               /* varint length, bytes */
  T_TABLE, T_TABLE_MT,                 /* u32 narr, u32 nhash, items [, mt] */
  T_REF,                               /* varint offset of an earlier object */
  T_GLOBALS,                           /* the target's global table */
  T_MODULE,                            /* varint length, name: require(name) */
  T_CFUNC,                             /* varint length, "module.field" */
  T_LFUNC,                             /* u64 hash, varint len, bytecode,
                                          u8 nups, nups upvalue items */
  T_HANDLE,                            /* u8 kind, u64 pointer */
  T_IRUN,                              /* array only: u8 width, u32 n, ints */
  T_FRUN,                              /* array only: u32 n, n floats */
  T_UPJOIN,                            /* upvalue only: varint func, u8 n */
  T_LAST
};
#define T_KEEP 0x80u
#define T_MASK 0x7fu

#define MAX_NAME   256          /* longest C function / module name */
#define RCACHE_MAX 256          /* decoder function cache entries */

/* Registry keys: addresses unique in the process, the same in every state. */
static const char FCACHE_KEY = 'f';   /* weak: closure -> hash .. bytecode */
static const char NAMES_KEY = 'n';    /* weak: cfunction/module -> name */
static const char RCACHE_KEY = 'r';   /* hash -> { bytecode, closure } */

/* ---------------------------------------------------------------------- */
/* Handle kinds                                                            */
/* ---------------------------------------------------------------------- */

static const lf_handle_kind *kinds[LF_CODEC_MAX_KINDS];
static atomic_int nkinds;
static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER;

static inline int kinds_count(void) {
  return atomic_load_explicit(&nkinds, memory_order_acquire);
}

int lf_codec_register_kind(const lf_handle_kind *kind) {
  int rc = 0;
  if (pthread_mutex_lock(&kinds_lock) != 0) abort();
  int n = atomic_load_explicit(&nkinds, memory_order_relaxed);
  int i = 0;
  while (i < n && kinds[i] != kind) i++;
  if (i == n) {
    if (n == LF_CODEC_MAX_KINDS) {
      rc = -1;
    } else {
      kinds[n] = kind;
      atomic_store_explicit(&nkinds, n + 1, memory_order_release);
    }
  }
  if (pthread_mutex_unlock(&kinds_lock) != 0) abort();
  return rc;
}

void lf_buf_free(lf_buf *b) {
  for (size_t i = 0; i < b->nhandles; i++)
    b->handles[i].kind->release(b->handles[i].obj);
  free(b->handles);
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
  b->handles = NULL;
  b->nhandles = b->hcap = 0;
}

/* ---------------------------------------------------------------------- */
/* Little-endian access and the 64-bit hash                                */
/* ---------------------------------------------------------------------- */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE64(v) __builtin_bswap64(v)
#define LE32(v) __builtin_bswap32(v)
#define LE16(v) __builtin_bswap16(v)
#else
#define LE64(v) (v)
#define LE32(v) (v)
#define LE16(v) (v)
#endif

static inline uint64_t rd64(const unsigned char *p) {
  uint64_t v; memcpy(&v, p, 8); return LE64(v);
}
static inline uint32_t rd32(const unsigned char *p) {
  uint32_t v; memcpy(&v, p, 4); return LE32(v);
}
static inline uint16_t rd16(const unsigned char *p) {
  uint16_t v; memcpy(&v, p, 2); return LE16(v);
}
static inline void wr64(unsigned char *p, uint64_t v) {
  v = LE64(v); memcpy(p, &v, 8);
}
static inline void wr32(unsigned char *p, uint32_t v) {
  v = LE32(v); memcpy(p, &v, 4);
}
static inline void wr16(unsigned char *p, uint16_t v) {
  v = LE16(v); memcpy(p, &v, 2);
}

#define H_M1 0x9E3779B97F4A7C15ull   /* 2^64 / golden ratio */
#define H_M2 0xBF58476D1CE4E5B9ull   /* odd multipliers with good */
#define H_M3 0x94D049BB133111EBull   /* bit dispersion */

static inline uint64_t rotl64(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t hround(uint64_t acc, uint64_t w) {
  return rotl64(acc + w * H_M2, 29) * H_M1;
}

/* A fast non-cryptographic 64-bit hash: four independent lanes over 32-byte
** blocks (so the multiplies pipeline), then the tail and a final mix. It
** detects corruption and keys the function caches; it is no defence against
** a forger (see docs/codec.md, "Trust"). */
static uint64_t lf_hash64(const unsigned char *p, size_t n) {
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
static uint64_t frame_sum(const unsigned char *data, size_t len) {
  uint64_t h = lf_hash64(data + HDR_SIZE, len - HDR_SIZE);
  return h ^ hround(hround(H_M3, rd64(data)), rd64(data + 8));
}

/* ---------------------------------------------------------------------- */
/* Encoder                                                                 */
/* ---------------------------------------------------------------------- */

/* The identity map of one encode: object pointer -> payload offset of its
** tag byte (for T_REF), and upvalue cell id | 1 -> (offset << 8 | n) (for
** T_UPJOIN). Open addressing; a small inline table first, so a call with a
** few objects allocates nothing. */
typedef struct idmap_slot { const void *key; size_t val; } idmap_slot;
#define IDMAP_INLINE 16

typedef struct idmap {
  idmap_slot *slots;          /* inline or malloc'd */
  size_t mask, count;
  idmap_slot inl[IDMAP_INLINE];
} idmap;

/* One step of the path to the value being encoded, for error messages. */
enum { P_KEY, P_INDEX, P_KEYITSELF, P_META, P_UPVAL };
typedef struct pathseg {
  int kind;
  int idx;                    /* stack index of the key or the function */
  lua_Integer n;              /* P_INDEX: the index; P_UPVAL: upvalue no. */
} pathseg;
#define PATH_SEGS 32

typedef struct enc {
  lua_State *L;
  lf_buf *b;
  const lf_codec_opts *o;
  int max_depth, depth;
  const char *what;           /* "argument" */
  int argno;                  /* base + i of the value being encoded */
  int globals;                /* stack index of the global table */
  int fcache, names;          /* stack slots of the caches, nil until first
                                 needed (fixed slots: a cache fetched in
                                 the middle of a table traversal must not
                                 sit on top of its key) */
  int failed;                 /* the error raised is complete (enc_fail) */
  size_t runshrink;           /* bytes the open integer run may shed */
  int loaded_checked;         /* package.loaded's fingerprint was checked */
  int rescanned;              /* names rebuilt during this encode */
  int names_cached;           /* the names map came from an earlier encode */
  uint32_t flags;
  idmap ids;
  int npath;
  pathseg path[PATH_SEGS];
} enc;

static void enc_value(enc *e, int idx);

static size_t idmap_hash(const void *k, size_t mask) {
  return (size_t)(((uint64_t)(uintptr_t)k * H_M1) >> 32) & mask;
}

/* The map starts empty and unset, so that a call encoding no table or
** function never clears it. */
static void idmap_init(idmap *m) {
  m->slots = NULL;
  m->mask = 0;
  m->count = 0;
}

static void idmap_free(idmap *m) {
  if (m->slots != m->inl) free(m->slots);
  m->slots = NULL;
}

/* Returns the slot of k: its value when slot->key == k, else the empty
** slot where k goes. */
static idmap_slot *idmap_find(idmap *m, const void *k) {
  if (m->slots == NULL) {
    memset(m->inl, 0, sizeof m->inl);
    m->slots = m->inl;
    m->mask = IDMAP_INLINE - 1;
  }
  size_t i = idmap_hash(k, m->mask);
  for (;;) {
    idmap_slot *s = &m->slots[i];
    if (s->key == k || s->key == NULL) return s;
    i = (i + 1) & m->mask;
  }
}

/* [-0, +0, m] grows the map when half full (raises on out of memory). */
static void idmap_put(lua_State *L, idmap *m, idmap_slot *s, const void *k,
                      size_t v) {
  s->key = k;
  s->val = v;
  if (++m->count * 2 <= m->mask + 1) return;
  size_t ncap = (m->mask + 1) * 4;
  idmap_slot *ns = calloc(ncap, sizeof *ns);
  if (ns == NULL) luaL_error(L, "not enough memory");
  idmap_slot *old = m->slots;
  size_t oldcap = m->mask + 1;
  m->slots = ns;
  m->mask = ncap - 1;
  for (size_t i = 0; i < oldcap; i++)
    if (old[i].key) *idmap_find(m, old[i].key) = old[i];
  if (old != m->inl) free(old);
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

/* Raises "cannot transfer <what> #<n> (<path>): <reason>". [-0, +0, v] */
LF_COLD static void enc_fail(enc *e, const char *reason) {
  lua_State *L = e->L;
  luaL_Buffer B;
  lua_checkstack(L, 8);
  luaL_buffinit(L, &B);
  lua_pushfstring(L, "cannot transfer %s #%d", e->what, e->argno);
  luaL_addvalue(&B);
  if (e->npath > 0) {
    int n = e->npath < PATH_SEGS ? e->npath : PATH_SEGS;
    int inkeys = 0;
    luaL_addstring(&B, " (");
    for (int i = 0; i < n; i++) {
      const pathseg *s = &e->path[i];
      if (s->kind == P_KEY || s->kind == P_INDEX) {
        luaL_addstring(&B, inkeys ? "." : (i > 0 ? ", field " : "field "));
        if (s->kind == P_KEY) {
          add_key(&B, L, s->idx);
        } else {
          char tmp[32];
          snprintf(tmp, sizeof tmp, "[" LUA_INTEGER_FMT "]", s->n);
          luaL_addstring(&B, tmp);
        }
        inkeys = 1;
        continue;
      }
      if (i > 0) luaL_addstring(&B, ", ");
      inkeys = 0;
      if (s->kind == P_KEYITSELF) {
        luaL_addstring(&B, "a key");
      } else if (s->kind == P_META) {
        luaL_addstring(&B, "metatable");
      } else {
        const char *name = lua_getupvalue(L, s->idx, (int)s->n);
        lua_pop(L, 1);
        if (name != NULL && name[0] != '\0' && name[0] != '(')
          lua_pushfstring(L, "upvalue '%s' of ", name);
        else
          lua_pushfstring(L, "upvalue #%d of ", (int)s->n);
        luaL_addvalue(&B);
        push_funcname(L, s->idx);
        luaL_addvalue(&B);
      }
    }
    if (e->npath > PATH_SEGS) luaL_addstring(&B, ", ...");
    luaL_addchar(&B, ')');
  }
  luaL_addstring(&B, ": ");
  luaL_addstring(&B, reason);
  luaL_pushresult(&B);
  e->failed = 1;
  lua_error(L);
}

static inline void path_push(enc *e, int kind, int idx, lua_Integer n) {
  if (e->npath < PATH_SEGS) {
    e->path[e->npath].kind = kind;
    e->path[e->npath].idx = idx;
    e->path[e->npath].n = n;
  }
  e->npath++;
}
#define path_pop(e) ((e)->npath--)

LF_COLD static void enc_oversize(enc *e) {
  char msg[96];
  snprintf(msg, sizeof msg, "encoded size over the limit of %zu bytes",
           e->o->max_size);
  enc_fail(e, msg);
}

/* Reservations ask for up to this much more than they write; max_size is
** checked exactly once the encoding ends. */
#define RESERVE_SLACK 16

/* Makes room for n more bytes. [-0, +0, v] */
static void enc_grow(enc *e, size_t n) {
  lf_buf *b = e->b;
  if (n > SIZE_MAX / 4 - b->len) enc_fail(e, "too large");
  size_t need = b->len + n;
  /* An open integer run is written 8 bytes a number and narrowed when it
  ** closes: while it is open, the limit allows what narrowing may give
  ** back, so that a value whose final encoding fits is never refused. */
  size_t limit = e->o->max_size
               ? e->o->max_size + RESERVE_SLACK + e->runshrink : 0;
  if (limit && need > limit) enc_oversize(e);
  size_t ncap = b->cap ? b->cap : 256;
  while (ncap < need) ncap *= 2;
  if (limit && ncap > limit) ncap = limit;
  unsigned char *nd = realloc(b->data, ncap);
  if (nd == NULL) luaL_error(e->L, "not enough memory");
  b->data = nd;
  b->cap = ncap;
}

static inline unsigned char *enc_reserve(enc *e, size_t n) {
  if (e->b->cap - e->b->len < n) enc_grow(e, n);
  return e->b->data + e->b->len;
}

static inline void put_byte(enc *e, unsigned c) {
  *enc_reserve(e, 1) = (unsigned char)c;
  e->b->len++;
}

static inline void put_varint(enc *e, uint64_t v) {
  unsigned char *p = enc_reserve(e, 10), *q = p;
  while (v >= 0x80) { *q++ = (unsigned char)(v | 0x80); v >>= 7; }
  *q++ = (unsigned char)v;
  e->b->len += (size_t)(q - p);
}

static inline void put_bytes(enc *e, const void *s, size_t n) {
  memcpy(enc_reserve(e, n), s, n);
  e->b->len += n;
}

/* Payload offset of the next byte: the id of an object whose tag goes
** there. */
#define enc_off(e) ((e)->b->len - HDR_SIZE)

static void put_int(enc *e, lua_Integer v) {
  unsigned char *p = enc_reserve(e, 9);
  if (v >= INT8_MIN && v <= INT8_MAX) {
    p[0] = T_INT8; p[1] = (unsigned char)(int8_t)v; e->b->len += 2;
  } else if (v >= INT16_MIN && v <= INT16_MAX) {
    p[0] = T_INT16; wr16(p + 1, (uint16_t)(int16_t)v); e->b->len += 3;
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    p[0] = T_INT32; wr32(p + 1, (uint32_t)(int32_t)v); e->b->len += 5;
  } else {
    p[0] = T_INT64; wr64(p + 1, (uint64_t)v); e->b->len += 9;
  }
}

static void put_float(enc *e, lua_Number v) {
  unsigned char *p = enc_reserve(e, 9);
  double d = (double)v;
  uint64_t bits;
  memcpy(&bits, &d, 8);
  p[0] = T_FLOAT;
  wr64(p + 1, bits);
  e->b->len += 9;
}

/* Looks obj up in the identity map: when it was encoded before, writes a
** T_REF to it (marking the original T_KEEP) and returns NULL; otherwise
** returns the empty slot where enc_record puts it. */
static idmap_slot *enc_seen(enc *e, const void *obj) {
  idmap_slot *s = idmap_find(&e->ids, obj);
  if (s->key != obj) return s;
  e->b->data[HDR_SIZE + s->val] |= T_KEEP;
  put_byte(e, T_REF);
  put_varint(e, s->val);
  return NULL;
}

/* Records obj at the current offset, where its tag goes. [-0, +0, m] */
#define enc_record(e, s, obj) idmap_put((e)->L, &(e)->ids, (s), (obj), enc_off(e))

LF_COLD static void enc_too_deep(enc *e) {
  char msg[64];
  snprintf(msg, sizeof msg, "nesting deeper than %d levels", e->max_depth);
  enc_fail(e, msg);
}

static inline void enc_depth_in(enc *e) {
  if (++e->depth > e->max_depth) enc_too_deep(e);
  if (!lua_checkstack(e->L, 10)) enc_fail(e, "Lua stack overflow");
}

/* 0 when the module part of a name (all of it for a module, what comes
** before the last dot for a C function) is a standard library, which every
** target state has; 1 otherwise. */
static int name_rank(const char *name, size_t len, int cfunc) {
  static const char *const std[] = { "_G", "string", "table", "math", "utf8",
    "coroutine", "io", "os", "debug", "package", NULL };
  if (cfunc) {                        /* the module part: before the last dot */
    const char *dot = NULL;
    for (size_t i = 0; i < len; i++) if (name[i] == '.') dot = name + i;
    if (dot != NULL) len = (size_t)(dot - name);
  }
  for (int i = 0; std[i]; i++)
    if (strlen(std[i]) == len && memcmp(std[i], name, len) == 0) return 0;
  return 1;
}

/* Is `cand` a better name than `cur` for one object? A standard library's
** wins (string.format must not travel as "util.fmt" because some module
** re-exports it: the target would have to require that module), then the
** shorter, then the smaller string, so the choice does not depend on table
** order. */
static int name_better(const char *cand, size_t clen, const char *cur,
                       size_t curlen, int cfunc) {
  int rc = name_rank(cand, clen, cfunc), ru = name_rank(cur, curlen, cfunc);
  if (rc != ru) return rc < ru;
  if (clen != curlen) return clen < curlen;
  return memcmp(cand, cur, clen) < 0;
}

/* Offers `name` for the value at the top of the stack in the names table
** at `names`. Pops the value. [-1, +0, m] */
static void names_offer(lua_State *L, int names, const char *name, size_t len) {
  lua_pushvalue(L, -1);
  if (lua_rawget(L, names) == LUA_TSTRING) {
    size_t curlen;
    const char *cur = lua_tolstring(L, -1, &curlen);
    if (!name_better(name, len, cur, curlen, lua_iscfunction(L, -2))) {
      lua_pop(L, 2);
      return;
    }
  }
  lua_pop(L, 1);
  lua_pushlstring(L, name, len);
  lua_rawset(L, names);
}

/* A fingerprint of package.loaded: a sum over its entries of a mix of key
** and value, so that a module loaded, replaced or unloaded changes it.
** [-0, +0, m] */
static lua_Integer loaded_print(lua_State *L) {
  uint64_t h = 0;
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    uint64_t k = (uint64_t)(uintptr_t)lua_topointer(L, -2);
    uint64_t v = (uint64_t)(uintptr_t)lua_topointer(L, -1);
    h += rotl64(k * H_M1, 29) ^ (v * H_M2);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return (lua_Integer)h;
}

/* Builds the reverse map of package.loaded: every module table -> its name
** and every C function field -> "module.field", and stores it (weak-keyed)
** in the registry. Leaves it at the top. [-0, +1, m] */
static void names_build(lua_State *L) {
  lua_createtable(L, 0, 256);
  int names = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, names);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TTABLE) {
      lua_pop(L, 1);
      continue;
    }
    size_t mlen;
    const char *mod = lua_tolstring(L, -2, &mlen);
    int modt = lua_gettop(L);
    if (mlen < MAX_NAME) {
      lua_pushvalue(L, modt);
      names_offer(L, names, mod, mlen);
    }
    lua_pushnil(L);
    while (lua_next(L, modt)) {
      size_t flen;
      if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
        const char *field = lua_tolstring(L, -2, &flen);
        if (mlen + flen + 1 < MAX_NAME && memchr(field, '.', flen) == NULL) {
          char full[MAX_NAME];
          memcpy(full, mod, mlen);
          full[mlen] = '.';
          memcpy(full + mlen + 1, field, flen);
          lua_pushvalue(L, -1);
          names_offer(L, names, full, mlen + 1 + flen);
        }
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lua_pushinteger(L, loaded_print(L));    /* under a key no value can be */
  lua_rawsetp(L, names, &NAMES_KEY);
  lua_pushvalue(L, names);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &NAMES_KEY);
}

/* Pushes the name of the value at idx (a table or a C function), or
** returns 0 and pushes nothing. [-0, +(0|1), m] */
static int enc_name(enc *e, int idx, int rescan) {
  lua_State *L = e->L;
  if (lua_isnil(L, e->names)) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &NAMES_KEY) != LUA_TTABLE) {
      lua_pop(L, 1);
      names_build(L);
      e->rescanned = 1;
    } else {
      e->names_cached = 1;
    }
    lua_replace(L, e->names);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->names) == LUA_TSTRING) return 1;
  lua_pop(L, 1);
  if (!rescan || e->rescanned) return 0;
  /* a C function we do not know: a module may have been loaded since */
  names_build(L);
  lua_replace(L, e->names);
  e->rescanned = 1;
  return enc_name(e, idx, 0);
}

/* enc_name for a table held by an upvalue, where modules usually are
** (`local json = require "json"`). A table is not looked for again in a
** rebuilt map (most are plain data, and a rebuild walks every module), so a
** module loaded after the map was built would be copied. Here, the first
** time a table is not found, a walk of package.loaded alone (its
** fingerprint) tells whether a module was loaded since, and rebuilds the
** map if so; a table still not found is marked as plain data in the map
** (false), so the next transfers of the same closure pay one lookup.
** [-0, +(0|1), m] */
static int enc_upvalue_name(enc *e, int idx) {
  lua_State *L = e->L;
  if (enc_name(e, idx, 0)) return 1;
  lua_pushvalue(L, idx);
  int known = lua_rawget(L, e->names) != LUA_TNIL;
  lua_pop(L, 1);
  if (known) return 0;
  if (!e->rescanned && !e->loaded_checked) {
    e->loaded_checked = 1;
    lua_rawgetp(L, e->names, &NAMES_KEY);
    lua_Integer was = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (loaded_print(L) != was) {
      names_build(L);
      lua_replace(L, e->names);
      e->rescanned = 1;
      if (enc_name(e, idx, 0)) return 1;
    }
  }
  lua_pushvalue(L, idx);
  lua_pushboolean(L, 0);
  lua_rawset(L, e->names);
  return 0;
}

/* Writes tag + the name at the top of the stack and pops it. [-1, +0, v] */
static void put_name(enc *e, int tag) {
  size_t len;
  const char *s = lua_tolstring(e->L, -1, &len);
  put_byte(e, (unsigned)tag);
  put_varint(e, len);
  put_bytes(e, s, len);
  lua_pop(e->L, 1);
  e->flags |= FLAG_FUNCTIONS;
}

/* A packed run of numbers being written in an array section. */
typedef struct run {
  size_t pos;                 /* offset of its tag; 0 when none is open */
  int isint;
  uint32_t count;
  lua_Integer lo, hi;
} run;

/* Closes the open run, if any. An integer run is narrowed in place to the
** smallest width that holds [lo, hi]; a run of one value becomes a plain
** scalar. */
static void run_close(enc *e, run *r) {
  if (r->pos == 0) return;
  e->runshrink = 0;
  size_t pos = r->pos;
  unsigned char *base = e->b->data + pos;
  uint32_t count = r->count;
  r->pos = 0;
  if (!r->isint) {
    if (count == 1) {     /* T_FRUN n x  ->  T_FLOAT x */
      base[0] = T_FLOAT;
      memmove(base + 1, base + 5, 8);
      e->b->len = pos + 9;
    } else {
      wr32(base + 1, count);
    }
    return;
  }
  lua_Integer lo = r->lo, hi = r->hi;
  unsigned w = (lo >= INT8_MIN && hi <= INT8_MAX) ? 1
             : (lo >= INT16_MIN && hi <= INT16_MAX) ? 2
             : (lo >= INT32_MIN && hi <= INT32_MAX) ? 4 : 8;
  unsigned char *src = base + 6;
  if (count == 1) {       /* T_IRUN w n x  ->  T_INTw x */
    uint64_t v = rd64(src);
    e->b->len = pos;
    put_int(e, (lua_Integer)v);
    return;
  }
  base[1] = (unsigned char)w;
  wr32(base + 2, count);
  /* narrowing moves each value to a lower address: safe front to back */
  switch (w) {
    case 1:
      for (uint32_t i = 0; i < count; i++) src[i] = (unsigned char)rd64(src + 8 * (size_t)i);
      break;
    case 2:
      for (uint32_t i = 0; i < count; i++) wr16(src + 2 * (size_t)i, (uint16_t)rd64(src + 8 * (size_t)i));
      break;
    case 4:
      for (uint32_t i = 0; i < count; i++) wr32(src + 4 * (size_t)i, (uint32_t)rd64(src + 8 * (size_t)i));
      break;
    default:
      break;
  }
  e->b->len = pos + 6 + (size_t)w * count;
}

/* Appends the value at idx, of Lua type `type`, as item i of an array
** section: numbers join a packed run, anything else is a value of its own.
** [-0, +0, v] */
static inline void enc_item(enc *e, run *r, int idx, int type, lua_Integer i) {
  lua_State *L = e->L;
  if (type == LUA_TNUMBER) {
    int isint = lua_isinteger(L, idx);
    if (r->pos && (r->isint != isint || r->count == UINT32_MAX)) run_close(e, r);
    unsigned char *q = enc_reserve(e, 14);
    uint64_t bits;
    if (isint) {
      lua_Integer v = lua_tointeger(L, idx);
      if (!r->pos) {
        r->pos = e->b->len; r->isint = 1; r->count = 0; r->lo = r->hi = v;
        q[0] = T_IRUN;
        q += 6;
        e->b->len += 6;
      }
      if (v < r->lo) r->lo = v;
      if (v > r->hi) r->hi = v;
      bits = (uint64_t)v;
      e->runshrink += 7;
    } else {
      double d = (double)lua_tonumber(L, idx);
      if (!r->pos) {
        r->pos = e->b->len; r->isint = 0; r->count = 0;
        q[0] = T_FRUN;
        q += 5;
        e->b->len += 5;
      }
      memcpy(&bits, &d, 8);
    }
    wr64(q, bits);
    e->b->len += 8;
    r->count++;
    return;
  }
  run_close(e, r);
  path_push(e, P_INDEX, 0, i);
  enc_value(e, idx);
  path_pop(e);
}

#define ITEM_BATCH 32   /* array items on the stack before one pop */

/* Encodes the table at idx. Layout: tag, u32 narr, u32 nhash, narr array
** items (the values of keys 1..narr, numbers in packed runs), nhash
** key/value pairs, then the metatable for T_TABLE_MT. [-0, +0, v]
**
** The array items are read with lua_rawgeti up to the border n (3 API
** calls per item, against 8 for a lua_next pass that checks each key).
** The other pairs then come from a full lua_next traversal that skips the
** keys 1..n. It cannot start at n + 1 instead: lua_next(t, n + 1) is
** accepted both when n + 1 is a slot of the array part (then it would
** resume right after 1..n) and when the hash part still holds a node for
** key n + 1 whose value was set to nil (a stack popped: t[#t] = nil), and
** then it resumes after that node, silently skipping the pairs stored in
** the nodes before it. The C API cannot tell the two apart. */
static void enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  if (lua_rawequal(L, idx, e->globals)) {
    /* package.loaded._G: it goes by name, as a module does */
    put_byte(e, T_GLOBALS);
    e->flags |= FLAG_FUNCTIONS;
    return;
  }
  const void *obj = lua_topointer(L, idx);
  idmap_slot *slot = enc_seen(e, obj);
  if (slot == NULL) return;
  /* a module goes by name each time: it never enters the identity map */
  if (enc_name(e, idx, 0)) { put_name(e, T_MODULE); return; }
  enc_record(e, slot, obj);
  enc_depth_in(e);
  int hasmt = lua_getmetatable(L, idx);
  if (hasmt) lua_pop(L, 1);
  unsigned char *p = enc_reserve(e, 9);
  size_t counts = e->b->len + 1;
  p[0] = hasmt ? T_TABLE_MT : T_TABLE;
  e->b->len += 9;

  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n > (lua_Integer)UINT32_MAX) n = UINT32_MAX;
  run r = { 0, 0, 0, 0, 0 };
  int base = lua_gettop(L);
  if (!lua_checkstack(L, ITEM_BATCH + 4)) enc_fail(e, "Lua stack overflow");
  for (lua_Integer i = 1; i <= n; i += ITEM_BATCH) {
    /* items are popped a batch at a time: lua_settop is not cheap */
    int m = n - i + 1 < ITEM_BATCH ? (int)(n - i + 1) : ITEM_BATCH;
    for (int j = 0; j < m; j++) {
      int type = lua_rawgeti(L, idx, i + j);
      enc_item(e, &r, base + 1 + j, type, i + j);
    }
    lua_settop(L, base);
  }
  run_close(e, &r);

  uint32_t nhash = 0;
  int k = base + 1, v = base + 2;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (n > 0 && lua_isinteger(L, k)) {
      lua_Integer key = lua_tointeger(L, k);
      if (key >= 1 && key <= n) { lua_settop(L, k); continue; }
    }
    path_push(e, P_KEYITSELF, k, 0);
    enc_value(e, k);
    path_pop(e);
    path_push(e, P_KEY, k, 0);
    enc_value(e, v);
    path_pop(e);
    if (++nhash == UINT32_MAX) enc_fail(e, "table too large");
    lua_settop(L, k);
  }
  wr32(e->b->data + counts, (uint32_t)n);
  wr32(e->b->data + counts + 4, nhash);
  if (hasmt) {
    lua_getmetatable(L, idx);
    path_push(e, P_META, 0, 0);
    enc_value(e, lua_gettop(L));
    path_pop(e);
    lua_pop(L, 1);
  }
  e->depth--;
}

/* lua_dump writer: appends to a luaL_Buffer started on the first call, once
** lua_dump has taken the function from the top of the stack. */
typedef struct dumpstate { luaL_Buffer B; int init; } dumpstate;

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  dumpstate *ds = ud;
  if (!ds->init) {
    ds->init = 1;
    luaL_buffinit(L, &ds->B);
    luaL_addlstring(&ds->B, "\0\0\0\0\0\0\0\0", 8);   /* room for the hash */
  }
  luaL_addlstring(&ds->B, p, sz);
  return 0;
}

/* Pushes the cache entry of the Lua function at idx: a string holding its
** 64-bit bytecode hash (8 bytes, little-endian) then its bytecode, dumped
** with debug info. Dumps on a miss. [-0, +1, m] */
static void enc_bytecode(enc *e, int idx) {
  lua_State *L = e->L;
  if (lua_isnil(L, e->fcache)) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &FCACHE_KEY) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 16);
      lua_createtable(L, 0, 1);
      lua_pushliteral(L, "k");
      lua_setfield(L, -2, "__mode");
      lua_setmetatable(L, -2);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &FCACHE_KEY);
    }
    lua_replace(L, e->fcache);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->fcache) == LUA_TSTRING) return;
  lua_pop(L, 1);
  dumpstate ds;
  ds.init = 0;
  lua_pushvalue(L, idx);
  if (lua_dump(L, dump_writer, &ds, 0) != 0 || !ds.init)
    enc_fail(e, "function cannot be dumped");
  unsigned char *code = (unsigned char *)luaL_buffaddr(&ds.B);
  size_t len = luaL_bufflen(&ds.B);
  wr64(code, lf_hash64(code + 8, len - 8));
  luaL_pushresult(&ds.B);
  lua_remove(L, -2);                  /* the function copy */
  lua_pushvalue(L, idx);
  lua_pushvalue(L, -2);
  lua_rawset(L, e->fcache);
}

/* Encodes the Lua function at idx: its cached bytecode, then each upvalue:
** T_GLOBALS for the source's global table, T_UPJOIN when the upvalue cell
** was already encoded for another function of this transfer, else the
** value. [-0, +0, v] */
static void enc_lfunc(enc *e, int idx) {
  lua_State *L = e->L;
  const void *obj = lua_topointer(L, idx);
  idmap_slot *slot = enc_seen(e, obj);
  if (slot == NULL) return;
  size_t self = enc_off(e);
  enc_record(e, slot, obj);
  enc_depth_in(e);
  enc_bytecode(e, idx);
  size_t len;
  const char *entry = lua_tolstring(L, -1, &len);
  unsigned char *p = enc_reserve(e, 1 + 8 + 10 + (len - 8) + 1);
  p[0] = T_LFUNC;
  memcpy(p + 1, entry, 8);
  e->b->len += 9;
  put_varint(e, len - 8);
  put_bytes(e, entry + 8, len - 8);
  lua_pop(L, 1);
  size_t nupspos = e->b->len;
  put_byte(e, 0);
  e->flags |= FLAG_FUNCTIONS;
  int n = 0;
  const char *name;
  while ((name = lua_getupvalue(L, idx, n + 1)) != NULL) {
    n++;
    int top = lua_gettop(L);
    if (strcmp(name, "_ENV") == 0 || lua_rawequal(L, top, e->globals)) {
      /* A function's environment is the globals of wherever it runs, so
      ** an _ENV never travels, whatever table it holds in the source (a
      ** sandbox, busted's spec environment); nor does the global table. */
      put_byte(e, T_GLOBALS);
    } else {
      const void *cell = (const void *)((uintptr_t)lua_upvalueid(L, idx, n) | 1u);
      idmap_slot *s = idmap_find(&e->ids, cell);
      if (s->key == cell) {
        size_t fn = s->val >> 8;
        e->b->data[HDR_SIZE + fn] |= T_KEEP;
        put_byte(e, T_UPJOIN);
        put_varint(e, fn);
        put_byte(e, (unsigned)(s->val & 0xff));
      } else {
        idmap_put(L, &e->ids, s, cell, (self << 8) | (size_t)n);
        path_push(e, P_UPVAL, idx, n);
        if (lua_type(L, top) == LUA_TTABLE && enc_upvalue_name(e, top))
          put_name(e, T_MODULE);
        else
          enc_value(e, top);
        path_pop(e);
      }
    }
    lua_pop(L, 1);
  }
  e->b->data[nupspos] = (unsigned char)n;
  e->depth--;
}

/* A display name for a handle kind: the last dotted part of its metatable
** name, CamelCase split into lower-case words ("futures.Future" ->
** "future", "futures.ThreadPoolExecutor" -> "thread pool executor"). */
static void kind_display(const char *tname, char *out, size_t cap) {
  const char *s = strrchr(tname, '.');
  s = s ? s + 1 : tname;
  size_t j = 0;
  for (size_t i = 0; s[i] && j + 2 < cap; i++) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') {
      if (i > 0 && s[i - 1] >= 'a' && s[i - 1] <= 'z') out[j++] = ' ';
      c = (char)(c - 'A' + 'a');
    }
    out[j++] = c;
  }
  out[j] = '\0';
}

/* Encodes a userdata: a registered handle kind as a retained pointer when
** in-process; anything else is an error. [-0, +0, v] */
LF_COLD static void enc_userdata(enc *e, int idx) {
  lua_State *L = e->L;
  char reason[160];
  if (lua_getmetatable(L, idx)) {
    int mt = lua_gettop(L);
    int nk = kinds_count();
    for (int k = 0; k < nk; k++) {
      luaL_getmetatable(L, kinds[k]->tname);
      int same = lua_rawequal(L, -1, mt);
      lua_pop(L, 1);
      if (!same) continue;
      lua_pop(L, 1);
      char disp[64];
      kind_display(kinds[k]->tname, disp, sizeof disp);
      if (!e->o->in_process) {
        snprintf(reason, sizeof reason,
                 "%s (a shared handle cannot leave the process)", disp);
        enc_fail(e, reason);
      }
      if (lua_rawlen(L, idx) < sizeof(void *)) enc_fail(e, disp);
      void *obj = *(void **)lua_touserdata(L, idx);
      if (obj == NULL) enc_fail(e, "released handle");
      idmap_slot *slot = enc_seen(e, lua_topointer(L, idx));
      if (slot == NULL) return;
      enc_record(e, slot, lua_topointer(L, idx));
      lf_buf *b = e->b;
      if (b->nhandles == b->hcap) {
        size_t ncap = b->hcap ? b->hcap * 2 : 4;
        lf_buf_handle *nh = realloc(b->handles, ncap * sizeof *nh);
        if (nh == NULL) luaL_error(L, "not enough memory");
        b->handles = nh;
        b->hcap = ncap;
      }
      unsigned char *p = enc_reserve(e, 10);
      kinds[k]->retain(obj);
      b->handles[b->nhandles].kind = kinds[k];
      b->handles[b->nhandles].obj = obj;
      b->nhandles++;
      p[0] = T_HANDLE;
      p[1] = (unsigned char)k;
      wr64(p + 2, (uint64_t)(uintptr_t)obj);
      b->len += 10;
      e->flags |= FLAG_HANDLES;
      return;
    }
    lua_pushliteral(L, "__name");
    if (lua_rawget(L, mt) == LUA_TSTRING) {
      snprintf(reason, sizeof reason, "userdata (%.100s)", lua_tostring(L, -1));
      enc_fail(e, reason);
    }
  }
  enc_fail(e, "userdata");
}

/* Encodes the value at idx (an absolute index). [-0, +0, v] */
static void enc_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put_byte(e, T_NIL); return;
    case LUA_TBOOLEAN: put_byte(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); return;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) put_int(e, lua_tointeger(L, idx));
      else put_float(e, lua_tonumber(L, idx));
      return;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      unsigned char *p = enc_reserve(e, 11 + len), *q = p + 1;
      size_t v = len;
      p[0] = T_STR;
      while (v >= 0x80) { *q++ = (unsigned char)(v | 0x80); v >>= 7; }
      *q++ = (unsigned char)v;
      memcpy(q, s, len);
      e->b->len += (size_t)(q - p) + len;
      return;
    }
    case LUA_TTABLE: enc_table(e, idx); return;
    case LUA_TFUNCTION:
      if (!lua_iscfunction(L, idx)) { enc_lfunc(e, idx); return; }
      if (enc_name(e, idx, 1)) { put_name(e, T_CFUNC); return; }
      if (lua_getupvalue(L, idx, 1) != NULL)
        enc_fail(e, "C closure with upvalues (not reachable by name in package.loaded)");
      enc_fail(e, "C function not reachable by name in package.loaded");
      return;
    case LUA_TUSERDATA: enc_userdata(e, idx); return;
    case LUA_TLIGHTUSERDATA: enc_fail(e, "light userdata"); return;
    case LUA_TTHREAD: enc_fail(e, "thread (coroutine)"); return;
    default: enc_fail(e, luaL_typename(L, idx)); return;
  }
}

/* The protected body of lf_encode: the light userdata `enc` at 1, then the
** values. */
static int enc_main(lua_State *L) {
  enc *e = lua_touserdata(L, 1);
  int n = lua_gettop(L) - 1;
  if (!lua_checkstack(L, 40)) luaL_error(L, "stack overflow");
  unsigned char *p = enc_reserve(e, HDR_SIZE + 10);
  memset(p, 0, HDR_SIZE);
  e->b->len = HDR_SIZE;
  put_varint(e, (uint64_t)n);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  e->globals = lua_gettop(L);
  lua_pushnil(L);
  e->fcache = lua_gettop(L);
  lua_pushnil(L);
  e->names = lua_gettop(L);
  for (int i = 0; i < n; i++) {
    e->argno += (i > 0);
    enc_value(e, 2 + i);
    if (e->o->max_size && e->b->len > e->o->max_size) enc_oversize(e);
  }
  return 0;
}

/* One encoding attempt; see lf_encode. */
static int encode_once(lua_State *L, int first, int n, const char *what,
                       int base, lf_buf *out, const lf_codec_opts *opts,
                       int *names_cached) {
  enc e;
  e.L = L;
  e.b = out;
  e.o = opts;
  e.max_depth = opts->max_depth <= 0 ? LF_CODEC_DEFAULT_DEPTH
              : opts->max_depth > LF_CODEC_MAX_DEPTH ? LF_CODEC_MAX_DEPTH : opts->max_depth;
  e.depth = 0;
  e.what = what ? what : "value";
  e.argno = base;
  e.globals = e.fcache = e.names = 0;
  e.rescanned = e.names_cached = 0;
  e.failed = 0;
  e.runshrink = 0;
  e.loaded_checked = 0;
  e.flags = 0;
  e.npath = 0;
  idmap_init(&e.ids);
  lua_pushcfunction(L, enc_main);
  lua_pushlightuserdata(L, &e);
  for (int i = 0; i < n; i++) lua_pushvalue(L, first + i);
  int rc = lua_pcall(L, n + 1, 0, 0);
  idmap_free(&e.ids);
  *names_cached = e.names_cached;
  if (rc != LUA_OK) {
    lf_buf_free(out);
    if (!e.failed) {
      /* out of memory, or an error from the Lua API: name the value */
      const char *msg = lua_tostring(L, -1);
      lua_pushfstring(L, "cannot transfer %s #%d: %s", e.what, e.argno,
                      msg ? msg : "error while encoding");
      lua_replace(L, -2);
    }
    return -1;
  }
  unsigned char *h = out->data;
  size_t plen = out->len - HDR_SIZE;
  h[0] = MAGIC0; h[1] = MAGIC1; h[2] = MAGIC2; h[3] = FORMAT_VERSION;
  wr32(h + 4, e.flags);
  wr64(h + 8, (uint64_t)plen);
  wr64(h + 16, frame_sum(h, out->len));
  return 0;
}

/* A failure with a names map from an earlier encode may come from a stale
** map: a module loaded (or reloaded) since then was copied by value instead
** of going by name, and met something that cannot travel. So the map is
** dropped and the values encoded once more; only failures pay for it. */
int lf_encode(lua_State *L, int first, int n, const char *what, int base,
              lf_buf *out, const lf_codec_opts *opts) {
  if (opts == NULL) opts = &lf_codec_defaults;
  first = lua_absindex(L, first);
  if (n < 0 || !lua_checkstack(L, n + 4)) {
    if (lua_checkstack(L, 1)) lua_pushliteral(L, "cannot transfer: too many values");
    return -1;
  }
  int cached;
  if (encode_once(L, first, n, what, base, out, opts, &cached) == 0) return 0;
  if (!cached) return -1;
  lua_pop(L, 1);                        /* the first attempt's message */
  lua_pushnil(L);                       /* removing a key never allocates */
  lua_rawsetp(L, LUA_REGISTRYINDEX, &NAMES_KEY);
  return encode_once(L, first, n, what, base, out, opts, &cached);
}

int lf_codec_reseal(unsigned char *data, size_t len) {
  if (len < HDR_SIZE) return -1;
  wr64(data + 8, (uint64_t)(len - HDR_SIZE));
  wr64(data + 16, frame_sum(data, len));
  return 0;
}

/* ---------------------------------------------------------------------- */
/* Decoder                                                                 */
/* ---------------------------------------------------------------------- */

typedef struct dec {
  lua_State *L;
  const unsigned char *start;   /* payload start: offsets count from here */
  const unsigned char *p, *end;
  const lf_codec_opts *o;
  int max_depth, depth;
  int refs;                     /* stack index of offset -> object, or 0 */
  int globals;
  int rcache;                   /* stack index, 0 until needed */
  size_t budget;                /* table slots still to preallocate */
} dec;

static void dec_value(dec *d);

/* Raises "cannot decode transfer data: <why> (at byte N)". [-0, +0, v] */
LF_COLD static void dec_fail(dec *d, const char *why) {
  luaL_error(d->L, "cannot decode transfer data: %s (at byte %I)", why,
             (lua_Integer)((d->p - d->start) + HDR_SIZE));
}

static inline void need(dec *d, size_t n) {
  if ((size_t)(d->end - d->p) < n) dec_fail(d, "truncated");
}

static inline size_t left(const dec *d) { return (size_t)(d->end - d->p); }

static uint64_t get_varint(dec *d) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    need(d, 1);
    unsigned c = *d->p++;
    if (shift == 63 && c > 1) break;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) return v;
  }
  dec_fail(d, "bad varint");
  return 0;
}

/* A length that must fit in what is left of the input. */
static size_t get_len(dec *d) {
  uint64_t v = get_varint(d);
  if (v > left(d)) dec_fail(d, "length past the end of the input");
  return (size_t)v;
}

static void dec_depth_in(dec *d) {
  if (++d->depth > d->max_depth) dec_fail(d, "nesting too deep");
  if (!lua_checkstack(d->L, 10)) dec_fail(d, "Lua stack overflow");
}

/* Records the object at the top under payload offset `off` when its tag
** carried T_KEEP. [-0, +0, m] */
static void dec_keep(dec *d, size_t off) {
  lua_State *L = d->L;
  if (d->refs == 0) {
    /* The refs table must sit below every value being built, so it is
    ** created in the slot reserved by dec_main. */
    lua_newtable(L);
    lua_replace(L, 2);
    d->refs = 2;
  }
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->refs, (lua_Integer)off);
}

static void dec_ref(dec *d) {
  lua_State *L = d->L;
  size_t here = (size_t)(d->p - 1 - d->start);
  uint64_t off = get_varint(d);
  if (d->refs == 0 || off >= here || lua_rawgeti(L, d->refs, (lua_Integer)off) == LUA_TNIL)
    dec_fail(d, "reference to an unknown object");
}

/* Resolves "module.field" (field = 0) or "module" (field = 1: the whole
** name is the module): package.loaded first, then require. [-0, +1, e] */
LF_NOINLINE static void dec_resolve(dec *d, const char *name, size_t len,
                                    int whole) {
  lua_State *L = d->L;
  char buf[MAX_NAME + 1];
  if (len == 0 || len > MAX_NAME || memchr(name, '\0', len))
    dec_fail(d, "bad name");
  memcpy(buf, name, len);
  buf[len] = '\0';
  char *field = NULL;
  if (!whole) {
    field = strrchr(buf, '.');
    if (field == NULL || field == buf || field[1] == '\0') dec_fail(d, "bad name");
    *field++ = '\0';
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, buf) == LUA_TNIL) {
    lua_pop(L, 1);
    lua_getglobal(L, "require");
    if (!lua_isfunction(L, -1))
      luaL_error(L, "cannot resolve '%s': no require in the target state", buf);
    lua_pushstring(L, buf);
    lua_call(L, 1, 1);
  }
  lua_remove(L, -2);
  if (whole) return;
  if (!lua_istable(L, -1) || lua_getfield(L, -1, field) == LUA_TNIL ||
      !lua_isfunction(L, -1))
    luaL_error(L, "cannot resolve C function '%s.%s' in the target state",
               buf, field);
  lua_remove(L, -2);
}

/* Reads a T_LFUNC body (the tag is consumed) at payload offset `self`.
** Pushes the function. [-0, +1, v] */
typedef struct loadstate { const char *p; size_t n; } loadstate;

static const char *load_reader(lua_State *L, void *ud, size_t *size) {
  loadstate *ls = ud;
  (void)L;
  *size = ls->n;
  ls->n = 0;
  return ls->p;
}

static int all_globals(lua_State *L, int fidx, int nups, int globals) {
  for (int i = 1; i <= nups; i++) {
    if (lua_getupvalue(L, fidx, i) == NULL) return 0;
    int same = lua_rawequal(L, -1, globals);
    lua_pop(L, 1);
    if (!same) return 0;
  }
  return lua_getupvalue(L, fidx, nups + 1) == NULL;
}

LF_NOINLINE static void dec_lfunc(dec *d, size_t self, int keep) {
  lua_State *L = d->L;
  dec_depth_in(d);
  need(d, 8);
  uint64_t hash = rd64(d->p);
  d->p += 8;
  size_t clen = get_len(d);
  const unsigned char *code = d->p;
  d->p += clen;
  need(d, 1);
  int nups = *d->p++;
  int plain = left(d) >= (size_t)nups;     /* every upvalue is T_GLOBALS */
  for (int i = 0; plain && i < nups; i++) plain = d->p[i] == T_GLOBALS;
  if (clen < 4 || memcmp(code, LUA_SIGNATURE, 4) != 0)
    dec_fail(d, "not Lua bytecode");

  if (d->rcache == 0) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &RCACHE_KEY) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 16);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &RCACHE_KEY);
    }
    lua_replace(L, 3);     /* the slot dec_main reserved */
    d->rcache = 3;
  }
  int hit = 0;
  int entry = 0;
  if (lua_rawgeti(L, d->rcache, (lua_Integer)hash) == LUA_TTABLE) {
    entry = lua_gettop(L);
    lua_rawgeti(L, entry, 1);
    size_t cl;
    const char *cc = lua_tolstring(L, -1, &cl);
    hit = cc != NULL && cl == clen && memcmp(cc, code, clen) == 0;
    lua_pop(L, 1);
    if (hit && plain && lua_rawgeti(L, entry, 2) == LUA_TFUNCTION &&
        all_globals(L, lua_gettop(L), nups, d->globals)) {
      /* the common case: the same function as last time, whose only
      ** upvalue is _ENV: reuse the closure, no lua_load */
      lua_remove(L, entry);
      d->p += nups;
      if (keep) dec_keep(d, self);
      d->depth--;
      return;
    }
    if (hit && plain) lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
  if (!hit && lf_hash64(code, clen) != hash)
    dec_fail(d, "function bytecode checksum mismatch");
  loadstate ls = { (const char *)code, clen };
  if (lua_load(L, load_reader, &ls, "=transfer", "b") != LUA_OK)
    luaL_error(L, "cannot decode transfer data: %s", lua_tostring(L, -1));
  int f = lua_gettop(L);
  lua_Debug ar;
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  if (ar.nups != nups) dec_fail(d, "upvalue count does not match the bytecode");
  if (!hit || plain) {
    /* (re)cache: the bytecode, and the closure when it can be reused */
    if (!hit) {
      lua_getfield(L, d->rcache, "n");
      lua_Integer cnt = lua_tointeger(L, -1) + 1;
      lua_pop(L, 1);
      if (cnt > RCACHE_MAX) {
        lua_createtable(L, 0, 16);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &RCACHE_KEY);
        lua_replace(L, d->rcache);
        cnt = 1;
      }
      lua_pushinteger(L, cnt);
      lua_setfield(L, d->rcache, "n");
      lua_createtable(L, 2, 0);
      lua_pushlstring(L, (const char *)code, clen);
      lua_rawseti(L, -2, 1);
    } else {
      lua_pushvalue(L, entry);
    }
    if (plain) {
      lua_pushvalue(L, f);
      lua_rawseti(L, -2, 2);
    }
    lua_rawseti(L, d->rcache, (lua_Integer)hash);
  }
  if (entry) lua_remove(L, entry), f--;
  if (keep) dec_keep(d, self);
  for (int i = 1; i <= nups; i++) {
    need(d, 1);
    if (*d->p == T_UPJOIN) {
      d->p++;
      size_t here = (size_t)(d->p - 1 - d->start);
      uint64_t off = get_varint(d);
      need(d, 1);
      int n = *d->p++;
      if (d->refs == 0 || off >= here ||
          lua_rawgeti(L, d->refs, (lua_Integer)off) != LUA_TFUNCTION ||
          lua_iscfunction(L, -1) || n < 1 || lua_getupvalue(L, -1, n) == NULL)
        dec_fail(d, "bad upvalue join");
      lua_pop(L, 1);
      lua_upvaluejoin(L, f, i, -1, n);
      lua_pop(L, 1);
    } else {
      dec_value(d);
      lua_setupvalue(L, f, i);
    }
  }
  d->depth--;
}

/* Decodes a table body (tag consumed). Pushes it. [-0, +1, v] */
static void dec_table(dec *d, size_t self, int keep, int hasmt) {
  lua_State *L = d->L;
  dec_depth_in(d);
  need(d, 8);
  uint32_t narr = rd32(d->p), nhash = rd32(d->p + 4);
  d->p += 8;
  if (narr > left(d) || nhash > left(d) / 2) dec_fail(d, "table size past the end of the input");
  /* The sizes are hints. Each is bounded by what is left of the input, but
  ** nested tables could each claim all of it (a 100 KB input made 570 MB
  ** of empty tables), so the hints of one decode share a budget of one
  ** slot per payload byte. A table larger than its hint grows as its items
  ** arrive, and each item costs input. */
  size_t na = narr < d->budget ? narr : d->budget;
  d->budget -= na;
  size_t nh = nhash < d->budget ? nhash : d->budget;
  d->budget -= nh;
  lua_createtable(L, na < (1u << 26) ? (int)na : 1 << 26,
                  nh < (1u << 24) ? (int)nh : 1 << 24);
  int t = lua_gettop(L);
  if (keep) dec_keep(d, self);
  lua_Integer i = 1;
  while (i <= (lua_Integer)narr) {
    need(d, 1);
    unsigned tag = *d->p;
    if (tag == T_IRUN) {
      need(d, 6);
      unsigned w = d->p[1];
      uint32_t cnt = rd32(d->p + 2);
      d->p += 6;
      if ((w != 1 && w != 2 && w != 4 && w != 8) || cnt == 0 ||
          cnt > (lua_Integer)narr - i + 1)
        dec_fail(d, "bad integer run");
      need(d, (size_t)w * cnt);
      const unsigned char *q = d->p;
      switch (w) {
        case 1:
          for (uint32_t k = 0; k < cnt; k++) { lua_pushinteger(L, (int8_t)q[k]); lua_rawseti(L, t, i + k); }
          break;
        case 2:
          for (uint32_t k = 0; k < cnt; k++) { lua_pushinteger(L, (int16_t)rd16(q + 2 * (size_t)k)); lua_rawseti(L, t, i + k); }
          break;
        case 4:
          for (uint32_t k = 0; k < cnt; k++) { lua_pushinteger(L, (int32_t)rd32(q + 4 * (size_t)k)); lua_rawseti(L, t, i + k); }
          break;
        default:
          for (uint32_t k = 0; k < cnt; k++) { lua_pushinteger(L, (lua_Integer)rd64(q + 8 * (size_t)k)); lua_rawseti(L, t, i + k); }
          break;
      }
      d->p += (size_t)w * cnt;
      i += cnt;
    } else if (tag == T_FRUN) {
      need(d, 5);
      uint32_t cnt = rd32(d->p + 1);
      d->p += 5;
      if (cnt == 0 || cnt > (lua_Integer)narr - i + 1) dec_fail(d, "bad float run");
      need(d, 8 * (size_t)cnt);
      for (uint32_t k = 0; k < cnt; k++) {
        uint64_t bits = rd64(d->p + 8 * (size_t)k);
        double v;
        memcpy(&v, &bits, 8);
        lua_pushnumber(L, (lua_Number)v);
        lua_rawseti(L, t, i + k);
      }
      d->p += 8 * (size_t)cnt;
      i += cnt;
    } else {
      dec_value(d);
      lua_rawseti(L, t, i);
      i++;
    }
  }
  for (uint32_t k = 0; k < nhash; k++) {
    dec_value(d);
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER &&
                             lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      dec_fail(d, "invalid table key");
    dec_value(d);
    lua_rawset(L, t);
  }
  if (hasmt) {
    dec_value(d);
    if (!lua_istable(L, -1)) dec_fail(d, "metatable is not a table");
    lua_setmetatable(L, t);
  }
  d->depth--;
}

/* Decodes one value and pushes it. [-0, +1, v] */
static void dec_value(dec *d) {
  lua_State *L = d->L;
  need(d, 1);
  size_t self = (size_t)(d->p - d->start);
  unsigned c = *d->p++;
  unsigned tag = c & T_MASK;
  int keep = (c & T_KEEP) != 0;
  if (keep && tag != T_TABLE && tag != T_TABLE_MT && tag != T_LFUNC && tag != T_HANDLE)
    dec_fail(d, "bad tag");
  switch (tag) {
    case T_NIL: lua_pushnil(L); return;
    case T_FALSE: lua_pushboolean(L, 0); return;
    case T_TRUE: lua_pushboolean(L, 1); return;
    case T_INT8: need(d, 1); lua_pushinteger(L, (int8_t)d->p[0]); d->p += 1; return;
    case T_INT16: need(d, 2); lua_pushinteger(L, (int16_t)rd16(d->p)); d->p += 2; return;
    case T_INT32: need(d, 4); lua_pushinteger(L, (int32_t)rd32(d->p)); d->p += 4; return;
    case T_INT64: need(d, 8); lua_pushinteger(L, (lua_Integer)rd64(d->p)); d->p += 8; return;
    case T_FLOAT: {
      need(d, 8);
      uint64_t bits = rd64(d->p);
      double v;
      memcpy(&v, &bits, 8);
      lua_pushnumber(L, (lua_Number)v);
      d->p += 8;
      return;
    }
    case T_STR: {
      size_t len = get_len(d);
      lua_pushlstring(L, (const char *)d->p, len);
      d->p += len;
      return;
    }
    case T_TABLE: case T_TABLE_MT:
      dec_table(d, self, keep, tag == T_TABLE_MT);
      return;
    case T_REF: dec_ref(d); return;
    case T_GLOBALS:
      /* the target's own global table, full of functions: a module */
      if (!d->o->functions) dec_fail(d, "functions refused (global table)");
      lua_pushvalue(L, d->globals);
      return;
    case T_MODULE: case T_CFUNC: {
      if (!d->o->functions)
        dec_fail(d, tag == T_CFUNC ? "functions refused (C function)"
                                   : "functions refused (module by name)");
      size_t len = get_len(d);
      const char *name = (const char *)d->p;
      d->p += len;
      dec_resolve(d, name, len, tag == T_MODULE);
      return;
    }
    case T_LFUNC:
      if (!d->o->functions) dec_fail(d, "functions refused (Lua function)");
      dec_lfunc(d, self, keep);
      return;
    case T_HANDLE: {
      if (!d->o->in_process) dec_fail(d, "shared handle outside its process");
      need(d, 9);
      unsigned k = d->p[0];
      uint64_t ptr = rd64(d->p + 1);
      d->p += 9;
      if (k >= (unsigned)kinds_count() || ptr == 0) dec_fail(d, "bad handle");
      kinds[k]->push(L, (void *)(uintptr_t)ptr);
      if (keep) dec_keep(d, self);
      return;
    }
    default:
      dec_fail(d, "bad tag");
      return;
  }
}

/* The protected body of lf_decode: the light userdata `dec` at 1. Slots 2
** and 3 are reserved for the refs table and the function cache, so that
** the values decoded above them never move. */
static int dec_main(lua_State *L) {
  dec *d = lua_touserdata(L, 1);
  lua_settop(L, 3);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  d->globals = 4;
  uint64_t n = get_varint(d);
  if (n > left(d) || n > 100000 || !lua_checkstack(L, (int)n + 10))
    dec_fail(d, "too many values");
  for (uint64_t i = 0; i < n; i++) dec_value(d);
  if (d->p != d->end) dec_fail(d, "trailing bytes");
  return (int)n;
}

/* Checks the header; returns NULL or what is wrong. */
static const char *check_header(const unsigned char *data, size_t len,
                                const lf_codec_opts *o) {
  if (data == NULL || len < HDR_SIZE) return "shorter than the header";
  if (data[0] != MAGIC0 || data[1] != MAGIC1 || data[2] != MAGIC2)
    return "bad magic (not lua-futures transfer data)";
  if (data[3] != FORMAT_VERSION) return "unsupported format version";
  uint32_t flags = rd32(data + 4);
  if (flags & ~FLAGS_KNOWN) return "unknown flags";
  if (rd64(data + 8) != (uint64_t)(len - HDR_SIZE)) return "length mismatch (truncated?)";
  if (o->max_size && len > o->max_size) return "larger than max_size";
  if (!o->functions && (flags & FLAG_FUNCTIONS)) return "functions refused";
  if (!o->in_process && (flags & FLAG_HANDLES)) return "shared handle outside its process";
  if (rd64(data + 16) != frame_sum(data, len))
    return "checksum mismatch";
  return NULL;
}

static int dec_header_fail(lua_State *L) {
  const char *why = lua_touserdata(L, 1);
  return luaL_error(L, "cannot decode transfer data: %s", why);
}

int lf_decode(lua_State *L, const unsigned char *data, size_t len,
              const lf_codec_opts *opts) {
  if (opts == NULL) opts = &lf_codec_defaults;
  if (!lua_checkstack(L, 8)) return -1;
  int top = lua_gettop(L);
  const char *why = check_header(data, len, opts);
  if (why != NULL) {
    lua_pushcfunction(L, dec_header_fail);
    lua_pushlightuserdata(L, (void *)why);
    lua_pcall(L, 1, 0, 0);
    return -1;
  }
  dec d;
  d.L = L;
  d.start = data + HDR_SIZE;
  d.p = d.start;
  d.end = data + len;
  d.o = opts;
  d.max_depth = opts->max_depth <= 0 ? LF_CODEC_DEFAULT_DEPTH
              : opts->max_depth > LF_CODEC_MAX_DEPTH ? LF_CODEC_MAX_DEPTH : opts->max_depth;
  d.depth = 0;
  d.refs = d.rcache = 0;
  d.budget = len - HDR_SIZE;
  lua_pushcfunction(L, dec_main);
  lua_pushlightuserdata(L, &d);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) return -1;
  return lua_gettop(L) - top;
}
