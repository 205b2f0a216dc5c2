/* lf_codec.c — TEMPORARY minimal codec so the pools can be tested; the real
** codec replaces this file. */
#include <stdlib.h>
#include <string.h>
#include "lauxlib.h"
#include "lf_codec.h"

const lf_codec_opts lf_codec_defaults = { LF_CODEC_DEFAULT_DEPTH, 0, 1, 1 };
static const lf_handle_kind *kinds[LF_CODEC_MAX_KINDS];
static int nkinds;

int lf_codec_register_kind(const lf_handle_kind *kind) {
  for (int i = 0; i < nkinds; i++) if (kinds[i] == kind) return 0;
  if (nkinds == LF_CODEC_MAX_KINDS) return -1;
  kinds[nkinds++] = kind;
  return 0;
}

void lf_buf_free(lf_buf *b) {
  for (size_t i = 0; i < b->nhandles; i++) b->handles[i].kind->release(b->handles[i].obj);
  free(b->data); free(b->handles);
  memset(b, 0, sizeof *b);
}

typedef struct enc { lf_buf *b; lua_State *L; int refs; int nref; const lf_codec_opts *o; } enc;

static void put(enc *e, const void *p, size_t n) {
  lf_buf *b = e->b;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n) cap *= 2;
    unsigned char *d = realloc(b->data, cap);
    if (!d) luaL_error(e->L, "not enough memory");
    b->data = d; b->cap = cap;
  }
  memcpy(b->data + b->len, p, n); b->len += n;
}
static void putc_(enc *e, int c) { unsigned char ch = (unsigned char)c; put(e, &ch, 1); }
static void puti(enc *e, lua_Integer i) { put(e, &i, sizeof i); }

static int writer(lua_State *L, const void *p, size_t sz, void *ud) { (void)L; put(ud, p, sz); return 0; }

static void enc_value(enc *e, int idx, int depth);

static int find_cname(lua_State *L, lua_CFunction fn) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1)) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_tocfunction(L, -1) == fn && lua_type(L, -2) == LUA_TSTRING) {
          lua_pushfstring(L, "%s.%s", lua_tostring(L, -4), lua_tostring(L, -2));
          lua_replace(L, -6);
          lua_pop(L, 4);
          return 1;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 0;
}

static void enc_value(enc *e, int idx, int depth) {
  lua_State *L = e->L;
  idx = lua_absindex(L, idx);
  if (depth > e->o->max_depth) luaL_error(L, "nesting too deep");
  luaL_checkstack(L, 10, "codec");
  switch (lua_type(L, idx)) {
    case LUA_TNIL: putc_(e, 'n'); break;
    case LUA_TBOOLEAN: putc_(e, lua_toboolean(L, idx) ? 'T' : 'F'); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) { putc_(e, 'i'); puti(e, lua_tointeger(L, idx)); }
      else { lua_Number n = lua_tonumber(L, idx); putc_(e, 'd'); put(e, &n, sizeof n); }
      break;
    case LUA_TSTRING: { size_t len; const char *s = lua_tolstring(L, idx, &len);
      putc_(e, 's'); puti(e, (lua_Integer)len); put(e, s, len); break; }
    case LUA_TTABLE: case LUA_TFUNCTION: {
      lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
      if (lua_rawequal(L, -1, idx)) { lua_pop(L, 1); putc_(e, 'G'); break; }
      lua_pop(L, 1);
      lua_pushvalue(L, idx);
      if (lua_rawget(L, e->refs) != LUA_TNIL) { putc_(e, 'r'); puti(e, lua_tointeger(L, -1)); lua_pop(L, 1); break; }
      lua_pop(L, 1);
      if (lua_iscfunction(L, idx)) {
        if (!find_cname(L, lua_tocfunction(L, idx))) luaL_error(L, "cannot transfer a C function not reachable by name");
        size_t len; const char *s = lua_tolstring(L, -1, &len);
        putc_(e, 'C'); puti(e, (lua_Integer)len); put(e, s, len); lua_pop(L, 1);
        break;
      }
      lua_pushvalue(L, idx); lua_pushinteger(L, ++e->nref); lua_rawset(L, e->refs);
      if (lua_istable(L, idx)) {
        putc_(e, 't');
        lua_pushnil(L);
        while (lua_next(L, idx)) { enc_value(e, -2, depth + 1); enc_value(e, -1, depth + 1); lua_pop(L, 1); }
        putc_(e, 'e');
        if (lua_getmetatable(L, idx)) { putc_(e, 'm'); enc_value(e, -1, depth + 1); lua_pop(L, 1); }
        else putc_(e, 'x');
      } else {
        putc_(e, 'f');
        lf_buf tmp = LF_BUF_INIT; enc t = *e; t.b = &tmp;
        lua_pushvalue(L, idx);
        lua_dump(L, writer, &t, 0);
        lua_pop(L, 1);
        puti(e, (lua_Integer)tmp.len); put(e, tmp.data, tmp.len); free(tmp.data);
        int nup = 0; while (lua_getupvalue(L, idx, nup + 1)) { lua_pop(L, 1); nup++; }
        puti(e, nup);
        for (int i = 1; i <= nup; i++) {
          const char *uname = lua_getupvalue(L, idx, i);
          int env = uname && strcmp(uname, "_ENV") == 0;
          if (env) putc_(e, 'G'); else enc_value(e, -1, depth + 1);
          lua_pop(L, 1);
        }
      }
      break;
    }
    case LUA_TUSERDATA:
      if (lua_getmetatable(L, idx)) {
        for (int k = 0; k < nkinds; k++) {
          luaL_getmetatable(L, kinds[k]->tname);
          int eq = lua_rawequal(L, -1, -2);
          lua_pop(L, 1);
          if (eq) {
            lua_pop(L, 1);
            if (!e->o->in_process) luaL_error(L, "a shared handle cannot leave the process");
            void *obj = *(void **)lua_touserdata(L, idx);
            lf_buf *b = e->b;
            lf_buf_handle *h = realloc(b->handles, (b->nhandles + 1) * sizeof *h);
            if (!h) luaL_error(L, "not enough memory");
            b->handles = h; kinds[k]->retain(obj);
            h[b->nhandles].kind = kinds[k]; h[b->nhandles].obj = obj; b->nhandles++;
            putc_(e, 'h'); puti(e, k); put(e, &obj, sizeof obj);
            return;
          }
        }
        lua_pop(L, 1);
      }
      /* fallthrough */
    default: luaL_error(L, "%s", luaL_typename(L, idx));
  }
}

typedef struct encargs { int first, n; const char *what; int base; lf_buf *out; const lf_codec_opts *o; } encargs;
static int penc(lua_State *L) {
  encargs *a = lua_touserdata(L, -1);
  lua_pop(L, 1);
  lua_newtable(L);
  enc e = { a->out, L, lua_gettop(L), 0, a->o };
  puti(&e, a->n);
  for (int i = 0; i < a->n; i++) enc_value(&e, a->first + i, 0);
  return 0;
}

int lf_encode(lua_State *L, int first, int n, const char *what, int base, lf_buf *out, const lf_codec_opts *opts) {
  first = lua_absindex(L, first);
  encargs a = { first, n, what, base, out, opts ? opts : &lf_codec_defaults };
  int top = lua_gettop(L);
  if (!lua_checkstack(L, top + 4)) { lua_pushliteral(L, "stack overflow"); return -1; }
  lua_pushcfunction(L, penc);
  for (int i = 0; i < top; i++) lua_pushvalue(L, i + 1);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, top + 1, 0, 0) != LUA_OK) {
    const char *m = lua_tostring(L, -1);
    lua_pushfstring(L, "cannot transfer %s: %s", what, m ? m : "?");
    lua_remove(L, -2);
    lf_buf_free(out);
    return -1;
  }
  return 0;
}

typedef struct dec { const unsigned char *p, *end; lua_State *L; int refs; int nref; const lf_codec_opts *o; } dec;
static void need(dec *d, size_t n) { if ((size_t)(d->end - d->p) < n) luaL_error(d->L, "truncated"); }
static lua_Integer geti(dec *d) { lua_Integer i; need(d, sizeof i); memcpy(&i, d->p, sizeof i); d->p += sizeof i; return i; }
static void dec_value(dec *d, int depth) {
  lua_State *L = d->L;
  if (depth > d->o->max_depth) luaL_error(L, "nesting too deep");
  luaL_checkstack(L, 10, "codec");
  need(d, 1);
  int tag = *d->p++;
  switch (tag) {
    case 'n': lua_pushnil(L); break;
    case 'T': lua_pushboolean(L, 1); break;
    case 'F': lua_pushboolean(L, 0); break;
    case 'i': lua_pushinteger(L, geti(d)); break;
    case 'd': { lua_Number n; need(d, sizeof n); memcpy(&n, d->p, sizeof n); d->p += sizeof n; lua_pushnumber(L, n); break; }
    case 's': { lua_Integer n = geti(d); if (n < 0) luaL_error(L, "bad"); need(d, (size_t)n); lua_pushlstring(L, (const char *)d->p, (size_t)n); d->p += n; break; }
    case 'G': lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); break;
    case 'r': { lua_Integer r = geti(d); lua_rawgeti(L, d->refs, r); break; }
    case 'C': { lua_Integer n = geti(d); need(d, (size_t)n);
      lua_pushlstring(L, (const char *)d->p, (size_t)n); d->p += n;
      const char *name = lua_tostring(L, -1); const char *dot = strrchr(name, '.');
      lua_getglobal(L, "require"); lua_pushlstring(L, name, (size_t)(dot - name)); lua_call(L, 1, 1);
      lua_getfield(L, -1, dot + 1); lua_replace(L, -3); lua_pop(L, 1); break; }
    case 't': {
      lua_newtable(L); lua_pushvalue(L, -1); lua_rawseti(L, d->refs, ++d->nref);
      for (;;) { need(d, 1); if (*d->p == 'e') { d->p++; break; }
        dec_value(d, depth + 1); dec_value(d, depth + 1); lua_rawset(L, -3); }
      need(d, 1);
      if (*d->p++ == 'm') { dec_value(d, depth + 1); lua_setmetatable(L, -2); }
      break; }
    case 'f': {
      lua_Integer n = geti(d); need(d, (size_t)n);
      if (!d->o->functions) luaL_error(L, "functions refused");
      if (luaL_loadbufferx(L, (const char *)d->p, (size_t)n, "=?", "b") != LUA_OK) lua_error(L);
      d->p += n;
      lua_pushvalue(L, -1); lua_rawseti(L, d->refs, ++d->nref);
      lua_Integer nup = geti(d);
      for (int i = 1; i <= nup; i++) { dec_value(d, depth + 1); if (!lua_setupvalue(L, -2, i)) lua_pop(L, 1); }
      break; }
    case 'h': { lua_Integer k = geti(d); void *obj; need(d, sizeof obj); memcpy(&obj, d->p, sizeof obj); d->p += sizeof obj;
      kinds[k]->push(L, obj); break; }
    default: luaL_error(L, "bad tag");
  }
}
typedef struct decargs { const unsigned char *data; size_t len; const lf_codec_opts *o; int n; } decargs;
static int pdec(lua_State *L) {
  decargs *a = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_newtable(L);
  dec d = { a->data, a->data + a->len, L, 1, 0, a->o };
  lua_Integer n = geti(&d);
  for (lua_Integer i = 0; i < n; i++) dec_value(&d, 0);
  a->n = (int)n;
  return (int)n;
}
int lf_decode(lua_State *L, const unsigned char *data, size_t len, const lf_codec_opts *opts) {
  decargs a = { data, len, opts ? opts : &lf_codec_defaults, 0 };
  lua_pushcfunction(L, pdec);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) return -1;
  return a.n;
}
