/*
** lf_sarray_lua.c — the Lua face of shared arrays (lf_sarray.h):
** futures.SharedArray(kind, n), the SharedArray userdata (a[i], a[i] = v,
** #a, fill, totable, tostring, add, kind), and its handle kind, through
** which an array travels to thread tasks (the same object) and to process
** tasks (by id; the pool shares the memory).
**
** Threads: every function runs on the thread that owns the calling state;
** the kind's hooks (retain, release, export_id) on any thread. Elements
** are read and written with relaxed atomics: concurrent writes to one
** element are the user's business, but never tear a value; add is an
** atomic read-modify-write.
**
** Ownership: a SharedArray userdata holds one reference to its lf_sarray,
** dropped by __gc. For speed the userdata also caches the array's base,
** length and kind (they never change), so that a[i] reads no other memory
** than the element; its first field is the object pointer, as the codec
** expects of a handle userdata.
*/
#include <errno.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_buf.h"
#include "lf_common.h"
#include "lf_sarray.h"

typedef struct sa_ud {
  lf_sarray *obj;          /* one reference; NULL once finalized */
  unsigned char *base;     /* obj->base, or NULL once finalized */
  lua_Integer n;           /* obj->n, or 0 once finalized */
  int kind;
  const struct sa_ud *self;/* its own address: tells a real one apart */
} sa_ud;

/* ---- the handle kind ---- */

static sa_ud *new_sa_ud(lua_State *L);
static void sa_own(sa_ud *u, lf_sarray *a);

static void kind_retain(void *obj) { lf_sarray_retain(obj); }
static void kind_release(void *obj) { lf_sarray_release(obj); }
static void kind_push(lua_State *L, void *obj) {
  sa_ud *u = new_sa_ud(L);   /* may raise: before the reference */
  lf_sarray_retain(obj);
  sa_own(u, obj);
}

static const lf_handle_kind sarray_kind = {
  LF_SARRAY_MT, kind_retain, kind_release, kind_push
};

/* An array goes down to a process pool's workers when it has a memfd to
** send, and up to the host when the host shared it with this worker. */
static uint64_t kind_export_id(void *obj, int dir) {
  lf_sarray *a = obj;
  int imported = atomic_load(&a->imported);
  switch (dir) {
    case LF_SHARE_DOWN:
      return imported == LF_SA_LOCAL && a->fd >= 0 ? a->id : 0;
    case LF_SHARE_UP: return imported == LF_SA_IMPORTED ? a->id : 0;
    default: return a->id;
  }
}

static int kind_import(lua_State *L, uint64_t id) {
  sa_ud *u = new_sa_ud(L);
  lf_sarray *a = lf_sarray_find_import(id);
  if (a == NULL) { lua_pop(L, 1); return -1; }
  sa_own(u, a);
  return 0;
}

static const lf_export_kind sarray_export = {
  &sarray_kind, LF_SARRAY_WIRE, kind_export_id, kind_import
};

/* ---- userdata ---- */

static void push_sa_mt(lua_State *L);

/* Pushes a SharedArray userdata that holds nothing yet: the caller gives
** it its reference (sa_own) once nothing can raise any more. [-0,+1,m] */
static sa_ud *new_sa_ud(lua_State *L) {
  sa_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  memset(u, 0, sizeof *u);
  push_sa_mt(L);
  lua_setmetatable(L, -2);
  return u;
}

/* u takes the caller's reference to a. */
static void sa_own(sa_ud *u, lf_sarray *a) {
  u->obj = a;
  u->base = a->base;
  u->n = (lua_Integer)a->n;
  u->kind = (int)a->kind;
  u->self = u;
}

/* The SharedArray at idx; raises naming the argument. [-0,+0,v] */
static sa_ud *check_sa(lua_State *L, int idx) {
  sa_ud *u = luaL_testudata(L, idx, LF_SARRAY_MT);
  if (u == NULL) {
    const char *got = luaL_getmetafield(L, idx, "__name") == LUA_TSTRING
                    ? lua_tostring(L, -1) : luaL_typename(L, idx);
    luaL_argerror(L, idx, lua_pushfstring(L, LF_SARRAY_MT " expected, got %s; "
                                          "call it with ':'", got));
  }
  if (u->obj == NULL) luaL_argerror(L, idx, "shared array is released");
  return u;
}

/* The metamethods' first argument, which the VM guarantees to be a
** SharedArray unless someone calls them by hand: then NULL. Cheaper than
** luaL_testudata, which a[i] cannot afford. */
static sa_ud *fast_sa(lua_State *L) {
  sa_ud *u = lua_touserdata(L, 1);
  if (u == NULL || lua_rawlen(L, 1) != sizeof *u || u->self != u) return NULL;
  return u;
}

static int sa_gc(lua_State *L) {
  sa_ud *u = luaL_checkudata(L, 1, LF_SARRAY_MT);
  if (u->obj != NULL) {
    lf_sarray_release(u->obj);
    u->obj = NULL;
    u->base = NULL;
    u->n = 0;
  }
  return 0;
}

/* ---- elements ---- */

static inline void push_elem(lua_State *L, const sa_ud *u, lua_Integer i) {
  const unsigned char *p = u->base;
  switch (u->kind) {
    case LF_SA_F64: {
      double v;
      __atomic_load((const double *)p + i, &v, __ATOMIC_RELAXED);
      lua_pushnumber(L, (lua_Number)v);
      break;
    }
    case LF_SA_F32: {
      float v;
      __atomic_load((const float *)p + i, &v, __ATOMIC_RELAXED);
      lua_pushnumber(L, (lua_Number)v);
      break;
    }
    case LF_SA_I64:
      lua_pushinteger(L, (lua_Integer)__atomic_load_n((const int64_t *)p + i,
                                                      __ATOMIC_RELAXED));
      break;
    case LF_SA_I32:
      lua_pushinteger(L, (lua_Integer)__atomic_load_n((const int32_t *)p + i,
                                                      __ATOMIC_RELAXED));
      break;
    default:
      lua_pushinteger(L, (lua_Integer)__atomic_load_n(p + i, __ATOMIC_RELAXED));
      break;
  }
}

/* A value to store: the number, or an integer in the kind's range. */
typedef struct elem { lua_Number f; lua_Integer i; } elem;

/* Reads the value at idx for u's kind into *e; returns NULL, or what is
** wrong with it ("f64 takes numbers, got string"), pushed. [-0,+(0|1),m] */
static const char *to_elem(lua_State *L, const sa_ud *u, int idx, elem *e) {
  const char *kname = lf_sakind_name((lf_sakind)u->kind);
  if (lua_type(L, idx) != LUA_TNUMBER)
    return lua_pushfstring(L, "%s takes numbers, got %s", kname,
                           luaL_typename(L, idx));
  if (u->kind == LF_SA_F64 || u->kind == LF_SA_F32) {
    e->f = lua_tonumber(L, idx);
    return NULL;
  }
  int isint;
  e->i = lua_tointegerx(L, idx, &isint);
  if (!isint)
    return lua_pushfstring(L, "%s takes integers, got %f", kname,
                           lua_tonumber(L, idx));
  if (u->kind == LF_SA_I32 && (e->i < INT32_MIN || e->i > INT32_MAX))
    return lua_pushfstring(L, "i32 takes integers from %I to %I, got %I",
                           (lua_Integer)INT32_MIN, (lua_Integer)INT32_MAX,
                           e->i);
  if (u->kind == LF_SA_U8 && (e->i < 0 || e->i > 255))
    return lua_pushfstring(L, "u8 takes integers from 0 to 255, got %I", e->i);
  return NULL;
}

static inline void store_elem(sa_ud *u, lua_Integer i, const elem *e) {
  unsigned char *p = u->base;
  switch (u->kind) {
    case LF_SA_F64: {
      double v = (double)e->f;
      __atomic_store((double *)p + i, &v, __ATOMIC_RELAXED);
      break;
    }
    case LF_SA_F32: {
      float v = (float)e->f;
      __atomic_store((float *)p + i, &v, __ATOMIC_RELAXED);
      break;
    }
    case LF_SA_I64:
      __atomic_store_n((int64_t *)p + i, (int64_t)e->i, __ATOMIC_RELAXED);
      break;
    case LF_SA_I32:
      __atomic_store_n((int32_t *)p + i, (int32_t)e->i, __ATOMIC_RELAXED);
      break;
    default:
      __atomic_store_n(p + i, (unsigned char)e->i, __ATOMIC_RELAXED);
      break;
  }
}

/* Raises the error of a bad index at idx of array u. [-0,+0,v] */
static int bad_index(lua_State *L, const sa_ud *u, int idx) {
  if (u->obj == NULL) return luaL_error(L, "shared array is released");
  if (lua_type(L, idx) == LUA_TNUMBER) {
    if (lua_isinteger(L, idx))
      return luaL_error(L, "SharedArray index %I out of range (1..%I)",
                        lua_tointeger(L, idx), u->n);
    return luaL_error(L, "SharedArray index %f is not an integer",
                      lua_tonumber(L, idx));
  }
  return luaL_error(L, "SharedArray index must be an integer, got %s",
                    luaL_typename(L, idx));
}

/* a[i]: the element; a.name: the method. */
static int sa_index(lua_State *L) {
  sa_ud *u = fast_sa(L);
  if (u != NULL && lua_type(L, 2) == LUA_TNUMBER) {   /* no "1" for 1 */
    int isint;
    lua_Integer i = lua_tointegerx(L, 2, &isint);
    if (isint && (lua_Unsigned)i - 1u < (lua_Unsigned)u->n) {
      push_elem(L, u, i - 1);
      return 1;
    }
  }
  if (u == NULL) u = check_sa(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
  }
  return bad_index(L, u, 2);
}

/* a[i] = v */
static int sa_newindex(lua_State *L) {
  sa_ud *u = fast_sa(L);
  int isint = 0;
  lua_Integer i = 0;
  if (u != NULL && lua_type(L, 2) == LUA_TNUMBER)
    i = lua_tointegerx(L, 2, &isint);
  if (isint && (lua_Unsigned)i - 1u < (lua_Unsigned)u->n) {
    elem e;
    if (lua_type(L, 3) == LUA_TNUMBER && u->kind == LF_SA_F64) {
      /* the common case first: no conversion checks */
      double v = (double)lua_tonumber(L, 3);
      __atomic_store((double *)u->base + (i - 1), &v, __ATOMIC_RELAXED);
      return 0;
    }
    const char *bad = to_elem(L, u, 3, &e);
    if (bad != NULL)
      return luaL_error(L, "bad value for SharedArray index %I (%s)", i, bad);
    store_elem(u, i - 1, &e);
    return 0;
  }
  if (u == NULL) u = check_sa(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING)
    return luaL_error(L, "cannot set field '%s' of a SharedArray",
                      lua_tostring(L, 2));
  return bad_index(L, u, 2);
}

static int sa_len(lua_State *L) {
  lua_pushinteger(L, check_sa(L, 1)->n);
  return 1;
}

static int sa_tostring(lua_State *L) {
  sa_ud *u = luaL_checkudata(L, 1, LF_SARRAY_MT);
  if (u->obj == NULL) {
    lua_pushfstring(L, "SharedArray: %p (released)", (void *)u);
    return 1;
  }
  lua_pushfstring(L, "SharedArray: %p (%s, %I element%s)", (void *)u->obj,
                  lf_sakind_name((lf_sakind)u->kind), u->n,
                  u->n == 1 ? "" : "s");
  return 1;
}

static int sa_eq(lua_State *L) {
  sa_ud *a = luaL_testudata(L, 1, LF_SARRAY_MT);
  sa_ud *b = luaL_testudata(L, 2, LF_SARRAY_MT);
  lua_pushboolean(L, a != NULL && b != NULL && a->obj != NULL &&
                     a->obj == b->obj);
  return 1;
}

/* ---- methods ---- */

/* The range [i, j] of optional arguments at idx and idx + 1 (defaults 1
** and #a), 0-based in *from and *to (to exclusive). An empty range (i >
** j) is fine; a non-empty one must lie within 1..#a. [-0,+0,v] */
static void opt_range(lua_State *L, const sa_ud *u, int idx, lua_Integer *from,
                      lua_Integer *to) {
  lua_Integer i = luaL_optinteger(L, idx, 1);
  lua_Integer j = luaL_optinteger(L, idx + 1, u->n);
  if (i <= j) {
    if (i < 1 || i > u->n)
      luaL_argerror(L, idx, lua_pushfstring(L, "index %I out of range (1..%I)",
                                            i, u->n));
    if (j > u->n)
      luaL_argerror(L, idx + 1, lua_pushfstring(L, "index %I out of range "
                                                "(1..%I)", j, u->n));
  }
  *from = i - 1;
  *to = i <= j ? j : i - 1;
}

/* a:fill(v [, i [, j]]) -> a */
static int sa_fill(lua_State *L) {
  sa_ud *u = check_sa(L, 1);
  luaL_checkany(L, 2);
  elem e;
  const char *bad = to_elem(L, u, 2, &e);
  if (bad != NULL) return luaL_argerror(L, 2, bad);
  lua_Integer from, to;
  opt_range(L, u, 3, &from, &to);
  if (u->kind == LF_SA_U8) {
    memset(u->base + from, (int)e.i, (size_t)(to - from));
  } else {
    for (lua_Integer k = from; k < to; k++) store_elem(u, k, &e);
  }
  lua_settop(L, 1);
  return 1;
}

/* a:totable([i [, j]]) -> { a[i], ..., a[j] } */
static int sa_totable(lua_State *L) {
  sa_ud *u = check_sa(L, 1);
  lua_Integer from, to;
  opt_range(L, u, 2, &from, &to);
  lua_Integer n = to - from;
  if (n > INT32_MAX) return luaL_error(L, "range too large for a table");
  lua_createtable(L, (int)n, 0);
  for (lua_Integer k = 0; k < n; k++) {
    push_elem(L, u, from + k);
    lua_rawseti(L, -2, k + 1);
  }
  return 1;
}

/* a:tostring([i [, j]]) -> the bytes of a u8 array */
static int sa_tostring_method(lua_State *L) {
  sa_ud *u = check_sa(L, 1);
  if (u->kind != LF_SA_U8)
    return luaL_error(L, "tostring needs a u8 array, not %s",
                      lf_sakind_name((lf_sakind)u->kind));
  lua_Integer from, to;
  opt_range(L, u, 2, &from, &to);
  lua_pushlstring(L, (const char *)u->base + from, (size_t)(to - from));
  return 1;
}

/* a:add(i, v) -> the new value: an atomic a[i] = a[i] + v (i64, i32;
** wraps around on overflow, as integer arithmetic does in Lua). */
static int sa_add(lua_State *L) {
  sa_ud *u = check_sa(L, 1);
  if (u->kind != LF_SA_I64 && u->kind != LF_SA_I32)
    return luaL_error(L, "add needs an i64 or i32 array, not %s",
                      lf_sakind_name((lf_sakind)u->kind));
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || i > u->n)
    return luaL_argerror(L, 2, lua_pushfstring(L, "index %I out of range "
                                               "(1..%I)", i, u->n));
  lua_Integer v = luaL_checkinteger(L, 3);
  if (u->kind == LF_SA_I64) {
    uint64_t r = __atomic_add_fetch((uint64_t *)u->base + (i - 1), (uint64_t)v,
                                    __ATOMIC_SEQ_CST);
    lua_pushinteger(L, (lua_Integer)(int64_t)r);
  } else {
    uint32_t r = __atomic_add_fetch((uint32_t *)u->base + (i - 1),
                                    (uint32_t)v, __ATOMIC_SEQ_CST);
    lua_pushinteger(L, (lua_Integer)(int32_t)r);
  }
  return 1;
}

/* a:kind() -> "f64" ... */
static int sa_kind(lua_State *L) {
  lua_pushstring(L, lf_sakind_name((lf_sakind)check_sa(L, 1)->kind));
  return 1;
}

/* futures.SharedArray(kind, n). Its errors name it as the module does
** (luaL_argerror would find it as futures.core's). */
static int core_shared_array(lua_State *L) {
  const char *name = lua_tostring(L, 1);
  int kind = name != NULL && lua_type(L, 1) == LUA_TSTRING
           ? lf_sakind_parse(name) : -1;
  if (kind < 0)
    return luaL_error(L, "bad argument #1 to 'SharedArray' (kind must be "
                      "\"f64\", \"f32\", \"i64\", \"i32\" or \"u8\", "
                      "got %s%s%s)",
                      name ? "\"" : "", name ? name : luaL_typename(L, 1),
                      name ? "\"" : "");
  int isint;
  lua_Integer n = lua_tointegerx(L, 2, &isint);
  if (lua_type(L, 2) != LUA_TNUMBER)
    return luaL_error(L, "bad argument #2 to 'SharedArray' (size expected, "
                      "got %s)", luaL_typename(L, 2));
  if (!isint || n < 0)
    return luaL_error(L, "bad argument #2 to 'SharedArray' (size must be a "
                      "non-negative integer)");
  if ((lua_Unsigned)n > (lua_Unsigned)(SIZE_MAX / 8))
    return luaL_error(L, "bad argument #2 to 'SharedArray' (size too large)");
  /* The userdata first, so that an error leaves nothing unowned. */
  sa_ud *u = new_sa_ud(L);
  lf_sarray *a = lf_sarray_new((lf_sakind)kind, (size_t)n);
  if (a == NULL)
    return luaL_error(L, "cannot make a shared array of %I %s elements: %s",
                      n, name, errno == ENOMEM ? "not enough memory"
                                               : strerror(errno));
  sa_own(u, a);
  return 1;
}

static const luaL_Reg sa_methods[] = {
  {"fill", sa_fill},
  {"totable", sa_totable},
  {"tostring", sa_tostring_method},
  {"add", sa_add},
  {"kind", sa_kind},
  {NULL, NULL}
};

/* Pushes the SharedArray metatable, creating it in this state if needed
** (a state that never opened futures.core may decode an array). [-0,+1,m] */
static void push_sa_mt(lua_State *L) {
  if (luaL_newmetatable(L, LF_SARRAY_MT)) {
    luaL_newlib(L, sa_methods);
    lua_setfield(L, -2, "__methods");
    lua_pushcfunction(L, sa_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, sa_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, sa_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, sa_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, sa_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, sa_eq);
    lua_setfield(L, -2, "__eq");
  }
}

void lf_bind_sarray(lua_State *L) {
  lf_export_register(&sarray_export);
  lua_pushcfunction(L, core_shared_array);
  lua_setfield(L, -2, "SharedArray");
  push_sa_mt(L);
  lua_getfield(L, -1, "__methods");   /* for the docs and the Lua side */
  lua_setfield(L, -3, "shared_array_methods");
  lua_pop(L, 1);
}
