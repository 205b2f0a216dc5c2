/*
** lf_encode.c — the codec's encoder: Lua values to a self-contained byte
** buffer (lf_codec.h; the format is lf_wire.h and docs/codec.md).
**
** Threads: lf_encode touches only the lua_State it is given and runs on the
** thread that owns it; its caches live in that state's registry, so two
** states never share encoder state.
**
** Ownership: lf_encode writes into the caller's lf_buf, which then owns the
** bytes and one reference per shared handle or shared object (taken with
** kind->retain while encoding); on failure lf_encode frees both before returning. The identity
** map of one call is malloc'd when it outgrows its inline slots, owned by
** the call's context and freed before lf_encode returns, also when a Lua
** error (out of memory) unwinds through the encoder. The per-state caches
** (closure -> bytecode, weak-keyed; the name index of lf_names.c) are Lua
** tables in the registry, collected with the state.
*/
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_codec.h"
#include "lf_lend.h"
#include "lf_names.h"
#include "lf_wire.h"

static const char FCACHE_KEY = 'f';   /* weak: closure -> hash .. bytecode */

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


typedef struct enc {
  lua_State *L;
  lf_buf *b;
  const lf_codec_opts *o;
  int max_depth, depth;
  const char *what;           /* "argument" */
  int argno;                  /* base + i of the value being encoded */
  int globals;                /* stack index of the global table */
  int fcache;                 /* stack slot of the bytecode cache, nil until
                                 first needed (a fixed slot: a cache fetched
                                 in the middle of a table traversal must not
                                 sit on top of its key) */
  lf_names names;             /* the name index, in a fixed slot too */
  int failed;                 /* the error raised is complete (enc_fail) */
  uint32_t flags;
  idmap ids;
  int npath;
  lf_pathseg path[PATH_SEGS];
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

/* Raises "cannot transfer <what> #<n> (<path>): <reason>". [-0, +0, v] */
LF_COLD static void enc_fail(enc *e, const char *reason) {
  lua_State *L = e->L;
  luaL_Buffer B;
  lua_checkstack(L, 8);
  luaL_buffinit(L, &B);
  lua_pushfstring(L, "cannot transfer %s #%d", e->what, e->argno);
  luaL_addvalue(&B);
  lf_wire_addpath(&B, L, e->path, PATH_SEGS, e->npath);
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
  /* What is written is final, but for a run of one number, which becomes
  ** a scalar a few bytes shorter: the slack covers that too. */
  size_t limit = e->o->max_size ? e->o->max_size + RESERVE_SLACK : 0;
  if (limit && need > limit) enc_oversize(e);
  size_t ncap = b->cap ? b->cap : 256;
  while (ncap < need) ncap *= 2;
  if (limit && ncap > limit) ncap = limit;
  if (b->mem != NULL) {
    if (b->mem->grow == NULL || b->mem->grow(b, ncap) != 0)
      luaL_error(e->L, "not enough memory");
    return;
  }
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

/* Writes tag + the name at the top of the stack and pops it. [-1, +0, v] */
static void put_name(enc *e, int tag) {
  size_t len;
  const char *s = lua_tolstring(e->L, -1, &len);
  put_byte(e, (unsigned)tag);
  put_varint(e, len);
  put_bytes(e, s, len);
  lua_pop(e->L, 1);
  e->flags |= FLAG_NAMES;
}

/* A packed run of numbers being written in an array section. An integer
** run is written in the narrowest width that holds its numbers so far
** (lo .. hi: what that width holds) and widened in place when a number
** needs more, at most three times; so it is written once, at its final
** size (the wire format asks for the narrowest width of the whole run). */
typedef struct run {
  size_t pos;                 /* offset of its tag; 0 when none is open */
  int isint;
  unsigned w;                 /* integer run: bytes a number */
  uint32_t count;
  lua_Integer lo, hi;         /* integer run: the range of width w */
} run;

static unsigned int_width(lua_Integer v) {
  return (v >= INT8_MIN && v <= INT8_MAX) ? 1
       : (v >= INT16_MIN && v <= INT16_MAX) ? 2
       : (v >= INT32_MIN && v <= INT32_MAX) ? 4 : 8;
}

static void run_width(run *r, unsigned w) {
  r->w = w;
  r->lo = w == 1 ? INT8_MIN : w == 2 ? INT16_MIN : w == 4 ? INT32_MIN : LUA_MININTEGER;
  r->hi = w == 1 ? INT8_MAX : w == 2 ? INT16_MAX : w == 4 ? INT32_MAX : LUA_MAXINTEGER;
}

static inline lua_Integer rd_intw(const unsigned char *p, unsigned w) {
  switch (w) {
    case 1: return (int8_t)p[0];
    case 2: return (int16_t)rd16(p);
    case 4: return (int32_t)rd32(p);
    default: return (lua_Integer)rd64(p);
  }
}

static inline void wr_intw(unsigned char *p, unsigned w, lua_Integer v) {
  switch (w) {
    case 1: p[0] = (unsigned char)v; break;
    case 2: wr16(p, (uint16_t)v); break;
    case 4: wr32(p, (uint32_t)v); break;
    default: wr64(p, (uint64_t)v); break;
  }
}

/* Widens the open integer run to the width of v. [-0, +0, v] */
LF_NOINLINE static void run_widen(enc *e, run *r, lua_Integer v) {
  unsigned w = int_width(v), ow = r->w;
  size_t count = r->count;
  enc_reserve(e, count * (w - ow) + 8);
  unsigned char *src = e->b->data + r->pos + 6;
  /* back to front: each number moves to a higher address, past the ones
  ** still to move */
  for (size_t i = count; i-- > 0;) wr_intw(src + i * w, w, rd_intw(src + i * ow, ow));
  e->b->len += count * (w - ow);
  run_width(r, w);
}

/* Appends v to the open integer run. [-0, +0, v] */
static inline void run_int(enc *e, run *r, lua_Integer v) {
  if (v < r->lo || v > r->hi) run_widen(e, r, v);
  /* 8 bytes written, w kept: the rest is overwritten or past the end */
  wr64(enc_reserve(e, 8), (uint64_t)v);
  e->b->len += r->w;
  r->count++;
}

/* Closes the open run, if any: writes its width and count; a run of one
** value becomes a plain scalar. */
static void run_close(enc *e, run *r) {
  if (r->pos == 0) return;
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
  if (count == 1) {       /* T_IRUN w n x  ->  T_INTw x */
    lua_Integer v = rd_intw(base + 6, r->w);
    e->b->len = pos;
    put_int(e, v);
    return;
  }
  base[1] = (unsigned char)r->w;
  wr32(base + 2, count);
}

/* Appends the value at idx as item i of an array section: numbers join a
** packed run, anything else is a value of its own. [-0, +0, v] */
static inline void enc_item(enc *e, run *r, int idx, lua_Integer i) {
  lua_State *L = e->L;
  int isint = lua_isinteger(L, idx);
  if (isint || lua_type(L, idx) == LUA_TNUMBER) {
    if (r->pos && (r->isint != isint || r->count == UINT32_MAX)) run_close(e, r);
    if (isint) {
      lua_Integer v = lua_tointeger(L, idx);
      if (!r->pos) {
        unsigned char *q = enc_reserve(e, 6);
        q[0] = T_IRUN;
        r->pos = e->b->len; r->isint = 1; r->count = 0;
        run_width(r, int_width(v));
        e->b->len += 6;
      }
      run_int(e, r, v);
      return;
    }
    double d = (double)lua_tonumber(L, idx);
    uint64_t bits;
    memcpy(&bits, &d, 8);
    unsigned char *q = enc_reserve(e, 13);
    if (!r->pos) {
      r->pos = e->b->len; r->isint = 0; r->count = 0;
      q[0] = T_FRUN;
      q += 5;
      e->b->len += 5;
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

#define ITEM_BATCH 32   /* array items kept on the stack before one pop */
#define ARRAY_GAP 16    /* missing keys an array section bridges with NILs */

/* Encodes the table at idx. Layout: tag, u32 narr, u32 nhash, narr array
** items (the values of keys 1..narr, numbers in packed runs), nhash
** key/value pairs, then the metatable for T_TABLE_MT. [-0, +0, v]
**
** One lua_next traversal reads everything. As long as it yields the keys
** 1, 2, 3... in order (Lua 5.4 walks the array part first, in order),
** their values are array items; a key a little past the next one (up to
** ARRAY_GAP missing: the holes of an array part) is an item too, after
** NILs for the keys in between. The first key that is anything else ends
** the array section: it and every pair after it are key/value pairs. So
** no order is assumed for correctness (a traversal in any order gives
** pairs that decode to the same table, and a later pair for a key that
** the array section left as a hole just fills it), and each pair is read
** once: the array part is not read a second time to find the keys beyond
** it, which the C API cannot resume a traversal at (lua_next(t, #t + 1) is
** accepted when the hash part still holds a dead node for that key, and
** then skips every pair stored before that node).
**
** Array items stay on the stack a batch at a time: the key is pushed again
** for the next lua_next, which is cheaper than popping each value. */
static void enc_table(enc *e, int idx) {
  lua_State *L = e->L;
  if (lua_rawequal(L, idx, e->globals)) {
    /* package.loaded._G: it goes by name, as a module does */
    put_byte(e, T_GLOBALS);
    e->flags |= FLAG_NAMES;
    return;
  }
  const void *obj = lua_topointer(L, idx);
  idmap_slot *slot = enc_seen(e, obj);
  if (slot == NULL) return;
  /* a module goes by name each time: it never enters the identity map */
  if (lf_names_find(L, &e->names, idx)) { put_name(e, T_MODULE); return; }
  enc_record(e, slot, obj);
  enc_depth_in(e);
  int hasmt = lua_getmetatable(L, idx);
  if (hasmt) lua_pop(L, 1);
  unsigned char *p = enc_reserve(e, 9);
  size_t counts = e->b->len + 1;
  p[0] = hasmt ? T_TABLE_MT : T_TABLE;
  e->b->len += 9;

  run r = { 0, 0, 0, 0, 0, 0 };
  lua_Integer n = 0;          /* array slots written: keys 1..n */
  uint32_t nhash = 0;
  int base = lua_gettop(L);
  int pairs = 0, more = 1;
  lua_pushnil(L);
  while (more) {
    if (!lua_checkstack(L, 2 * ITEM_BATCH + 4)) enc_fail(e, "Lua stack overflow");
    int k = base + 1;           /* the key lua_next starts from */
    for (int j = 0; j < ITEM_BATCH; j++, k += 2) {
      if (!lua_next(L, idx)) { more = 0; break; }
      int v = k + 1;
      if (!lua_isinteger(L, k)) { pairs = 1; break; }
      lua_Integer key = lua_tointegerx(L, k, NULL);
      if (key == n + 1 && r.pos && r.isint && r.count < UINT32_MAX &&
          lua_isinteger(L, v)) {
        /* the common case: one more integer of the open run */
        run_int(e, &r, lua_tointegerx(L, v, NULL));
        n = key;
      } else {
        if (key <= n || key - n > ARRAY_GAP + 1 || key > (lua_Integer)UINT32_MAX) {
          pairs = 1;
          break;
        }
        if (key > n + 1) {
          run_close(e, &r);
          while (n + 1 < key) { put_byte(e, T_NIL); n++; }
        }
        n = key;
        enc_item(e, &r, v, key);
      }
      lua_pushvalue(L, k);
    }
    if (pairs || !more) break;
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  }
  run_close(e, &r);
  if (pairs) {
    /* the pair that ended the array section goes first */
    int k = base + 1, v = base + 2;
    lua_copy(L, -2, k);
    lua_copy(L, -1, v);
    lua_settop(L, v);
    do {
      path_push(e, P_KEYITSELF, k, 0);
      enc_value(e, k);
      path_pop(e);
      path_push(e, P_KEY, k, 0);
      enc_value(e, v);
      path_pop(e);
      if (++nhash == UINT32_MAX) enc_fail(e, "table too large");
      lua_settop(L, k);
    } while (lua_next(L, idx));
  }
  lua_settop(L, base);
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
  wr64(code, lf_wire_hash(code + 8, len - 8));
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
        if (lua_type(L, top) == LUA_TTABLE && lf_names_find(L, &e->names, top))
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

/* Records obj (of kind) as a reference owned by the buffer: a retained
** pointer for T_HANDLE, a pin for T_REMOTE. [-0, +0, m] */
static void enc_keep_ref(enc *e, const lf_handle_kind *kind, void *obj) {
  kind->retain(obj);
  if (lf_buf_add_handle(e->b, kind, obj) != 0) {
    kind->release(obj);
    luaL_error(e->L, "not enough memory");
  }
}

/* Encodes a userdata: a registered handle kind as a retained pointer when
** in-process; an export kind (queue, shared array) by id, in-process and
** toward the other processes that opts->share allows; anything else is an
** error. [-0, +0, v] */
LF_COLD static void enc_userdata(enc *e, int idx) {
  lua_State *L = e->L;
  char reason[160];
  if (lua_getmetatable(L, idx)) {
    int mt = lua_gettop(L);
    int nk = lf_kind_count();
    for (int k = 0; k < nk; k++) {
      const lf_handle_kind *kind = lf_kind_at(k);
      luaL_getmetatable(L, kind->tname);
      int same = lua_rawequal(L, -1, mt);
      lua_pop(L, 1);
      if (!same) continue;
      lua_pop(L, 1);
      char disp[64];
      kind_display(kind->tname, disp, sizeof disp);
      const lf_export_kind *ek = lf_export_of(kind);
      if (!e->o->in_process && (ek == NULL || e->o->share == LF_SHARE_NONE)) {
        snprintf(reason, sizeof reason,
                 "%s (a shared handle cannot leave the process)", disp);
        enc_fail(e, reason);
      }
      if (lua_rawlen(L, idx) < sizeof(void *)) enc_fail(e, disp);
      void *obj = *(void **)lua_touserdata(L, idx);
      if (obj == NULL) enc_fail(e, "released handle");
      uint64_t id = 0;
      if (ek != NULL) {
        int dir = e->o->in_process ? LF_SHARE_NONE : e->o->share;
        id = ek->export_id(obj, dir);
        if (id == 0) {
          snprintf(reason, sizeof reason, dir == LF_SHARE_UP
                   ? "%s made in a worker process (only what the host "
                     "shared with it can go back to the host)"
                   : "%s (it cannot be shared with another process)", disp);
          enc_fail(e, reason);
        }
      }
      idmap_slot *slot = enc_seen(e, lua_topointer(L, idx));
      if (slot == NULL) return;
      enc_record(e, slot, lua_topointer(L, idx));
      unsigned char *p = enc_reserve(e, 10);
      enc_keep_ref(e, kind, obj);
      if (ek != NULL) {
        p[0] = T_REMOTE;
        p[1] = ek->wire;
        wr64(p + 2, id);
        e->flags |= FLAG_SHARED;
      } else {
        p[0] = T_HANDLE;
        p[1] = (unsigned char)k;
        wr64(p + 2, (uint64_t)(uintptr_t)obj);
        e->flags |= FLAG_HANDLES;
      }
      e->b->len += 10;
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

/* Encodes the long string s at idx as a loan (lf_lend.h), or as a T_REF
** to the loan of this transfer that lends it already. Returns 0 when the
** state lends no more (it is closing): the caller copies the bytes.
** [-0, +0, v] */
LF_NOINLINE static int enc_lent(enc *e, int idx, const char *s, size_t len) {
  idmap_slot *slot = enc_seen(e, s);
  if (slot == NULL) return 1;
  lf_loan *loan = lf_lend(e->L, idx, e->b);
  if (loan == NULL) return 0;
  enc_record(e, slot, s);
  unsigned char *p = enc_reserve(e, 1 + 8 + 10), *q = p + 9;
  p[0] = T_LENT;
  wr64(p + 1, (uint64_t)(uintptr_t)loan);
  while (len >= 0x80) { *q++ = (unsigned char)(len | 0x80); len >>= 7; }
  *q++ = (unsigned char)len;
  e->b->len += (size_t)(q - p);
  e->flags |= FLAG_HANDLES;
  return 1;
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
      if (len >= LF_LEND_MIN && e->o->in_process == LF_CODEC_LEND &&
          enc_lent(e, idx, s, len))
        return;
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
      if (lf_names_find(L, &e->names, idx)) { put_name(e, T_CFUNC); return; }
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
  e->names.slot = lua_gettop(L);
  e->names.checked = 0;
  for (int i = 0; i < n; i++) {
    e->argno += (i > 0);
    enc_value(e, 2 + i);
    if (e->o->max_size && e->b->len > e->o->max_size) enc_oversize(e);
  }
  return 0;
}

int lf_encode(lua_State *L, int first, int n, const char *what, int base,
              lf_buf *out, const lf_codec_opts *opts) {
  if (opts == NULL) opts = &lf_codec_defaults;
  first = lua_absindex(L, first);
  if (n > LF_CODEC_MAX_VALUES) {
    if (lua_checkstack(L, 1))
      lua_pushfstring(L, "cannot transfer %d %ss: more than %d values",
                      n, what ? what : "value", LF_CODEC_MAX_VALUES);
    return -1;
  }
  if (n < 0 || !lua_checkstack(L, n + 4)) {
    if (lua_checkstack(L, 1)) lua_pushliteral(L, "cannot transfer: too many values");
    return -1;
  }
  enc e;
  out->mem = opts->mem;
  e.L = L;
  e.b = out;
  e.o = opts;
  e.max_depth = opts->max_depth <= 0 ? LF_CODEC_DEFAULT_DEPTH
              : opts->max_depth > LF_CODEC_MAX_DEPTH ? LF_CODEC_MAX_DEPTH : opts->max_depth;
  e.depth = 0;
  e.what = what ? what : "value";
  e.argno = base;
  e.globals = e.fcache = 0;
  e.names.slot = 0;
  e.names.checked = 0;
  e.failed = 0;
  e.flags = 0;
  e.npath = 0;
  idmap_init(&e.ids);
  lua_pushcfunction(L, enc_main);
  lua_pushlightuserdata(L, &e);
  for (int i = 0; i < n; i++) lua_pushvalue(L, first + i);
  int rc = lua_pcall(L, n + 1, 0, 0);
  idmap_free(&e.ids);
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
  wr64(h + 16, lf_wire_sum(h, out->len));
  return 0;
}

/* ---- one plain value ---- */

int lf_encode_scalar(int type, int isint, lua_Integer i, lua_Number f,
                     const char *str, size_t slen, lf_buf *out) {
  unsigned char v[16];
  size_t vlen;
  switch (type) {
    case LUA_TNIL: v[0] = T_NIL; vlen = 1; slen = 0; break;
    case LUA_TBOOLEAN: v[0] = i ? T_TRUE : T_FALSE; vlen = 1; slen = 0; break;
    case LUA_TNUMBER:
      slen = 0;
      if (isint) {
        if (i >= INT8_MIN && i <= INT8_MAX) {
          v[0] = T_INT8; v[1] = (unsigned char)(int8_t)i; vlen = 2;
        } else if (i >= INT16_MIN && i <= INT16_MAX) {
          v[0] = T_INT16; wr16(v + 1, (uint16_t)(int16_t)i); vlen = 3;
        } else if (i >= INT32_MIN && i <= INT32_MAX) {
          v[0] = T_INT32; wr32(v + 1, (uint32_t)(int32_t)i); vlen = 5;
        } else {
          v[0] = T_INT64; wr64(v + 1, (uint64_t)i); vlen = 9;
        }
      } else {
        double d = (double)f;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        v[0] = T_FLOAT;
        wr64(v + 1, bits);
        vlen = 9;
      }
      break;
    default: {   /* LUA_TSTRING */
      unsigned char *q = v + 1;
      size_t n = slen;
      v[0] = T_STR;
      while (n >= 0x80) { *q++ = (unsigned char)(n | 0x80); n >>= 7; }
      *q++ = (unsigned char)n;
      vlen = (size_t)(q - v);
      break;
    }
  }
  size_t len = HDR_SIZE + 1 + vlen + slen;
  unsigned char *h = malloc(len);
  if (h == NULL) return -1;
  h[HDR_SIZE] = 1;   /* one value */
  memcpy(h + HDR_SIZE + 1, v, vlen);
  if (slen > 0) memcpy(h + HDR_SIZE + 1 + vlen, str, slen);
  h[0] = MAGIC0; h[1] = MAGIC1; h[2] = MAGIC2; h[3] = FORMAT_VERSION;
  wr32(h + 4, 0);
  wr64(h + 8, (uint64_t)(len - HDR_SIZE));
  wr64(h + 16, lf_wire_sum(h, len));
  out->data = h;
  out->len = out->cap = len;
  return 0;
}

int lf_encode_plain(lua_State *L, int idx, lf_buf *out) {
  int type = lua_type(L, idx);
  size_t slen = 0;
  const char *s = NULL;
  switch (type) {
    case LUA_TNIL: break;
    case LUA_TBOOLEAN: break;
    case LUA_TNUMBER: break;
    case LUA_TSTRING: s = lua_tolstring(L, idx, &slen); break;
    default: return 1;
  }
  int isint = type == LUA_TNUMBER && lua_isinteger(L, idx);
  lua_Integer i = type == LUA_TBOOLEAN ? lua_toboolean(L, idx)
                : isint ? lua_tointeger(L, idx) : 0;
  lua_Number f = type == LUA_TNUMBER && !isint ? lua_tonumber(L, idx) : 0;
  return lf_encode_scalar(type, isint, i, f, s, slen, out);
}
