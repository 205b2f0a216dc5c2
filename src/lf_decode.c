/*
** lf_decode.c — the codec's decoder: a byte buffer back to Lua values
** (lf_codec.h; the format is lf_wire.h and docs/codec.md). Its input is
** untrusted: malformed or truncated bytes are an error, never a crash or
** an unbounded allocation.
**
** Threads: lf_decode touches only the lua_State it is given and runs on the
** thread that owns it; its function cache lives in that state's registry.
**
** Ownership: decoded values belong to the decoding state; a decoded handle
** userdata owns a reference of its own (kind->push), so decoding never
** consumes the buffer. The function cache (bytecode hash -> bytecode and
** the loaded closure) is a registry table, collected with the state.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_codec.h"
#include "lf_lend.h"
#include "lf_wire.h"

static const char RCACHE_KEY = 'r';   /* hash -> { bytecode, closure } */

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
  int refused;                  /* failed on a Lua function it may not load */
  lf_loan *pinned;              /* a loan whose bytes are being copied */
  lf_buf *relend;               /* lf_decode_relend: the buffer decoded */
  int relent;                   /* its frame was changed */
  int npath;                    /* where the value being decoded sits */
  lf_pathseg path[PATH_SEGS];
} dec;

static inline void path_push(dec *d, int kind, int idx, lua_Integer n) {
  if (d->npath < PATH_SEGS) {
    d->path[d->npath].kind = kind;
    d->path[d->npath].idx = idx;
    d->path[d->npath].n = n;
  }
  d->npath++;
}
#define path_pop(d) ((d)->npath--)

/* A Lua function where none may be loaded: raises the path to it, "#2
** (field 'x')", which lf_decode returns with -2. [-0, +0, v] */
LF_COLD static void dec_refuse(dec *d) {
  lua_State *L = d->L;
  luaL_Buffer B;
  lua_checkstack(L, 8);
  luaL_buffinit(L, &B);
  lua_pushfstring(L, "#%d", (int)d->path[0].n);
  luaL_addvalue(&B);
  lf_wire_addpath(&B, L, d->path + 1, PATH_SEGS - 1, d->npath - 1);
  luaL_pushresult(&B);
  d->refused = 1;
  lua_error(L);
}

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
** name is the module): package.loaded first, then require, unless the
** decoder may not load functions. [-0, +1, e] */
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
  lua_pushstring(L, buf);
  if (lua_rawget(L, -2) == LUA_TNIL) {
    lua_pop(L, 1);
    /* Without trust in the sender, no module is loaded on its word:
    ** loading one runs its code. */
    if (!d->o->functions)
      luaL_error(L, "cannot decode transfer data: it names module '%s', "
                 "which is not loaded here", buf);
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
  if (!hit && lf_wire_hash(code, clen) != hash)
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
      path_push(d, P_UPVAL, f, i);
      dec_value(d);
      path_pop(d);
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
      path_push(d, P_INDEX, 0, i);
      dec_value(d);
      path_pop(d);
      lua_rawseti(L, t, i);
      i++;
    }
  }
  for (uint32_t k = 0; k < nhash; k++) {
    path_push(d, P_KEYITSELF, 0, 0);
    dec_value(d);
    path_pop(d);
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER &&
                             lua_tonumber(L, -1) != lua_tonumber(L, -1)))
      dec_fail(d, "invalid table key");
    path_push(d, P_KEY, lua_gettop(L), 0);
    dec_value(d);
    path_pop(d);
    lua_rawset(L, t);
  }
  if (hasmt) {
    path_push(d, P_META, 0, 0);
    dec_value(d);
    path_pop(d);
    if (!lua_istable(L, -1)) dec_fail(d, "metatable is not a table");
    lua_setmetatable(L, t);
  }
  d->depth--;
}

/* Reads a T_LENT body (the tag is consumed): copies the lent string into
** L, pinned meanwhile, so that its owner's closing waits for the copy.
** [-0, +1, v] */
LF_NOINLINE static void dec_lent(dec *d, size_t self, int keep) {
  if (!d->o->in_process) dec_fail(d, "shared handle outside its process");
  need(d, 8);
  const unsigned char *at = d->p;
  lf_loan *loan = (lf_loan *)(uintptr_t)rd64(d->p);
  d->p += 8;
  uint64_t len = get_varint(d);
  if (loan == NULL) dec_fail(d, "bad lent string");
  size_t n;
  const char *s = lf_loan_pin(loan, &n);
  d->pinned = loan;
  if (n != len) dec_fail(d, "bad lent string");
  if (s == NULL) dec_fail(d, "lent string lost (not enough memory)");
  lua_pushlstring(d->L, s, n);
  d->pinned = NULL;
  lf_loan_unpin(loan);
  if (d->relend != NULL) {
    /* The copy just made lends the bytes from now on: the frame names a
    ** loan of L's, and the buffer's reference to the old loan goes. An
    ** encoder writes one T_LENT per loan (later uses are T_REFs), so the
    ** old loan is not read again. */
    lf_loan *mine = lf_lend(d->L, -1, d->relend);
    if (mine != NULL) {
      wr64((unsigned char *)at, (uint64_t)(uintptr_t)mine);
      d->relent = 1;
      lf_buf_weaken(d->relend, loan);
    }
  }
  if (keep) dec_keep(d, self);
}

/* Pushes the shared object that T_REMOTE names: one of the pins when the
** buffer has them (its ids are then only looked up there, so data from a
** worker can name nothing the pool did not check), else what this
** process's host shared with it under that id. [-0, +1, v] */
LF_NOINLINE static void dec_remote(dec *d, unsigned wire, uint64_t id) {
  lua_State *L = d->L;
  const lf_buf *pins = d->o->pins;
  if (pins != NULL) {
    for (size_t i = 0; i < pins->nhandles; i++) {
      const lf_buf_handle *h = &pins->handles[i];
      const lf_export_kind *ek = h->kind ? lf_export_of(h->kind) : NULL;
      if (ek != NULL && ek->wire == wire && ek->export_id(h->obj, 0) == id) {
        h->kind->push(L, h->obj);
        return;
      }
    }
    dec_fail(d, "unknown shared object");
  }
  const lf_export_kind *ek = lf_export_by_wire(wire);
  if (ek == NULL || ek->import == NULL || ek->import(L, id) != 0)
    dec_fail(d, "shared object outside its process");
}

/* Decodes one value and pushes it. [-0, +1, v] */
static void dec_value(dec *d) {
  lua_State *L = d->L;
  need(d, 1);
  size_t self = (size_t)(d->p - d->start);
  unsigned c = *d->p++;
  unsigned tag = c & T_MASK;
  int keep = (c & T_KEEP) != 0;
  if (keep && tag != T_TABLE && tag != T_TABLE_MT && tag != T_LFUNC &&
      tag != T_HANDLE && tag != T_REMOTE && tag != T_LENT)
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
      /* the target's own global table: writable state of its program, not
      ** data, so only from a sender that is trusted */
      if (!d->o->functions) dec_fail(d, "global table refused");
      lua_pushvalue(L, d->globals);
      return;
    case T_MODULE: case T_CFUNC: {
      size_t len = get_len(d);
      const char *name = (const char *)d->p;
      d->p += len;
      dec_resolve(d, name, len, tag == T_MODULE);
      return;
    }
    case T_LFUNC:
      if (!d->o->functions) dec_refuse(d);
      dec_lfunc(d, self, keep);
      return;
    case T_HANDLE: {
      if (!d->o->in_process) dec_fail(d, "shared handle outside its process");
      need(d, 9);
      unsigned k = d->p[0];
      uint64_t ptr = rd64(d->p + 1);
      d->p += 9;
      if (k >= (unsigned)lf_kind_count() || ptr == 0) dec_fail(d, "bad handle");
      lf_kind_at((int)k)->push(L, (void *)(uintptr_t)ptr);
      if (keep) dec_keep(d, self);
      return;
    }
    case T_REMOTE:
      need(d, 9);
      dec_remote(d, d->p[0], rd64(d->p + 1));
      d->p += 9;
      if (keep) dec_keep(d, self);
      return;
    default:
      if (tag == T_LENT) { dec_lent(d, self, keep); return; }
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
  if (n > left(d) || n > LF_CODEC_MAX_VALUES || !lua_checkstack(L, (int)n + 10))
    dec_fail(d, "too many values");
  for (uint64_t i = 0; i < n; i++) {
    d->npath = 0;
    path_push(d, P_INDEX, 0, (lua_Integer)i + 1);
    dec_value(d);
  }
  if (d->p != d->end) dec_fail(d, "trailing bytes");
  return (int)n;
}

/* Checks the header; returns NULL or what is wrong. */
static LF_INLINE const char *check_header(const unsigned char *data, size_t len,
                                const lf_codec_opts *o) {
  if (data == NULL || len < HDR_SIZE) return "shorter than the header";
  if (data[0] != MAGIC0 || data[1] != MAGIC1 || data[2] != MAGIC2)
    return "bad magic (not lua-futures transfer data)";
  if (data[3] != FORMAT_VERSION) return "unsupported format version";
  uint32_t flags = rd32(data + 4);
  if (flags & ~FLAGS_KNOWN) return "unknown flags";
  if (rd64(data + 8) != (uint64_t)(len - HDR_SIZE)) return "length mismatch (truncated?)";
  if (o->max_size && len > o->max_size) return "larger than max_size";
  if (!o->in_process && (flags & FLAG_HANDLES)) return "shared handle outside its process";
  if (rd64(data + 16) != lf_wire_sum(data, len))
    return "checksum mismatch";
  return NULL;
}

static int dec_header_fail(lua_State *L) {
  const char *why = lua_touserdata(L, 1);
  return luaL_error(L, "cannot decode transfer data: %s", why);
}

static LF_INLINE int decode(lua_State *L, const unsigned char *data,
                            size_t len, const lf_codec_opts *opts,
                            lf_buf *relend) {
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
  d.refused = 0;
  d.pinned = NULL;
  d.relend = relend;
  d.relent = 0;
  d.npath = 0;
  lua_pushcfunction(L, dec_main);
  lua_pushlightuserdata(L, &d);
  int rc = lua_pcall(L, 1, LUA_MULTRET, 0);
  if (d.relent) lf_codec_reseal(relend->data, relend->len);
  if (rc != LUA_OK) {
    if (d.pinned != NULL) lf_loan_unpin(d.pinned);   /* the copy raised */
    return d.refused ? -2 : -1;
  }
  return lua_gettop(L) - top;
}

int lf_decode(lua_State *L, const unsigned char *data, size_t len,
              const lf_codec_opts *opts) {
  return decode(L, data, len, opts, NULL);
}

int lf_decode_relend(lua_State *L, lf_buf *b, const lf_codec_opts *opts) {
  return decode(L, b->data, b->len, opts, b);
}

/* ---- one plain value ---- */

int lf_decode_plain(lua_State *L, const unsigned char *data, size_t len) {
  if (data == NULL || len < HDR_SIZE + 2 || data[HDR_SIZE] != 1) return 0;
  const unsigned char *p = data + HDR_SIZE + 1, *end = data + len;
  size_t n = (size_t)(end - p) - 1;   /* bytes after the tag */
  switch (p[0]) {
    case T_NIL: case T_FALSE: case T_TRUE:
      if (n != 0) return 0;
      break;
    case T_INT8: if (n != 1) return 0; break;
    case T_INT16: if (n != 2) return 0; break;
    case T_INT32: if (n != 4) return 0; break;
    case T_INT64: case T_FLOAT: if (n != 8) return 0; break;
    case T_STR: {
      uint64_t slen = 0;
      const unsigned char *q = p + 1;
      for (int shift = 0;; shift += 7) {
        if (q == end || shift > 56) return 0;
        unsigned c = *q++;
        slen |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) break;
      }
      if (slen != (uint64_t)(end - q)) return 0;
      break;
    }
    default:
      return 0;
  }
  /* The header checks of lf_decode, for this buffer. */
  if (data[0] != MAGIC0 || data[1] != MAGIC1 || data[2] != MAGIC2 ||
      data[3] != FORMAT_VERSION || rd32(data + 4) != 0 ||
      rd64(data + 8) != (uint64_t)(len - HDR_SIZE) ||
      rd64(data + 16) != lf_wire_sum(data, len))
    return 0;
  switch (p[0]) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT8: lua_pushinteger(L, (int8_t)p[1]); break;
    case T_INT16: lua_pushinteger(L, (int16_t)rd16(p + 1)); break;
    case T_INT32: lua_pushinteger(L, (int32_t)rd32(p + 1)); break;
    case T_INT64: lua_pushinteger(L, (lua_Integer)rd64(p + 1)); break;
    case T_FLOAT: {
      uint64_t bits = rd64(p + 1);
      double d;
      memcpy(&d, &bits, 8);
      lua_pushnumber(L, (lua_Number)d);
      break;
    }
    default: {   /* T_STR: its bytes end the buffer */
      const unsigned char *q = p + 1;
      while (*q & 0x80) q++;
      q++;
      lua_pushlstring(L, (const char *)q, (size_t)(end - q));
      break;
    }
  }
  return 1;
}
