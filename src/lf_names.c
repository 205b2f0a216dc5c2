/*
** lf_names.c — the name index of package.loaded, which lets C functions and
** module tables travel by name (string.format, socket.core.tcp, a class
** module used as a metatable) instead of by value. See lf_names.h.
**
** Threads: only the thread that owns the state; everything lives in it.
**
** Ownership: the index is a weak-keyed table in the state's registry,
** collected with the state. To know at once whether it is stale, the first
** build gives package.loaded (when it has no metatable of its own) a
** metatable whose __newindex stores the entry and counts it: require and
** luaL_requiref add a module with lua_setfield on a missing key, so every
** module loaded bumps the count. The index records the count it was built
** at. When package.loaded carries a metatable of somebody else's, the
** index falls back to a fingerprint of package.loaded (one walk of it per
** encode that looks a name up). Every hit is also checked against
** package.loaded itself, so an entry overwritten in place
** (package.loaded.x = other) never answers with the old value.
*/
#include <stdint.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_names.h"
#include "lf_wire.h"

static const char NAMES_KEY = 'n';     /* registry: the index */
static const char LOADED_MT_KEY = 'l'; /* registry: our package.loaded mt */
/* Fields of the index under keys no value can be: */
static const char STAMP_KEY = 's';     /* the count or fingerprint built at */

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

/* A fingerprint of package.loaded, for when it has a metatable that is not
** ours: a sum over its entries of a mix of key and value, so that a module
** loaded, replaced or unloaded changes it. [-0, +0, m] */
static lua_Integer loaded_print(lua_State *L, int loaded) {
  uint64_t h = 0;
  lua_pushnil(L);
  while (lua_next(L, loaded)) {
    uint64_t k = (uint64_t)(uintptr_t)lua_topointer(L, -2);
    uint64_t v = (uint64_t)(uintptr_t)lua_topointer(L, -1);
    h += rotl64(k * H_M1, 29) ^ (v * H_M2);
    lua_pop(L, 1);
  }
  return (lua_Integer)(h | 1);   /* odd: never a count of ours (even) */
}

/* __newindex of package.loaded: store, and count the change. Upvalue 1 is
** the counter (a full userdata). Counts go up by 2, so that they are even
** and never equal a fingerprint. */
static int loaded_newindex(lua_State *L) {
  lua_Integer *count = lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 3);
  lua_rawset(L, 1);
  *count += 2;
  return 0;
}

/* The stamp of package.loaded (at `loaded`) as it is now: our count when
** our metatable is on it (installed here if it has none), else its
** fingerprint. [-0, +0, m] */
static lua_Integer loaded_stamp(lua_State *L, int loaded) {
  if (!lua_getmetatable(L, loaded)) {
    lua_createtable(L, 0, 1);
    lua_Integer *count = lua_newuserdatauv(L, sizeof *count, 0);
    *count = 2;
    lua_pushcclosure(L, loaded_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOADED_MT_KEY);
    lua_setmetatable(L, loaded);
    lua_getmetatable(L, loaded);
  }
  lua_rawgetp(L, LUA_REGISTRYINDEX, &LOADED_MT_KEY);
  int ours = lua_rawequal(L, -1, -2);
  lua_Integer stamp;
  if (ours) {
    lua_getfield(L, -1, "__newindex");
    lua_getupvalue(L, -1, 1);
    stamp = *(lua_Integer *)lua_touserdata(L, -1);
    lua_pop(L, 2);
  } else {
    stamp = loaded_print(L, loaded);
  }
  lua_pop(L, 2);
  return stamp;
}

/* Builds the reverse map of package.loaded (at `loaded`): every module
** table -> its name and every C function field -> "module.field", stamped
** with `stamp`, and stores it in the registry. Leaves it at the top.
** [-0, +1, m] */
static void names_build(lua_State *L, int loaded, lua_Integer stamp) {
  lua_createtable(L, 0, 256);
  int names = lua_gettop(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, names);
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
  lua_pushinteger(L, stamp);
  lua_rawsetp(L, names, &STAMP_KEY);
  lua_pushvalue(L, names);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &NAMES_KEY);
}

/* Puts a fresh index in n->slot. [-0, +0, m] */
static void names_refresh(lua_State *L, lf_names *n, int force) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int loaded = lua_gettop(L);
  lua_Integer stamp = loaded_stamp(L, loaded);
  if (!force && lua_rawgetp(L, LUA_REGISTRYINDEX, &NAMES_KEY) == LUA_TTABLE) {
    lua_rawgetp(L, -1, &STAMP_KEY);
    int same = lua_tointeger(L, -1) == stamp;
    lua_pop(L, 1);
    if (same) {
      lua_replace(L, n->slot);
      lua_pop(L, 1);
      return;
    }
  }
  lua_pop(L, force ? 0 : 1);
  names_build(L, loaded, stamp);
  lua_replace(L, n->slot);
  lua_pop(L, 1);
}

/* Does package.loaded still hold the value at idx under the name at the
** top of the stack ("mod" for a module, "mod.field" for a C function)?
** [-0, +0, m] */
static int still_there(lua_State *L, int idx) {
  size_t len;
  const char *name = lua_tolstring(L, -1, &len);
  char buf[MAX_NAME + 1];
  if (len == 0 || len > MAX_NAME) return 0;
  memcpy(buf, name, len);
  buf[len] = '\0';
  char *field = NULL;
  if (lua_iscfunction(L, idx)) {
    field = strrchr(buf, '.');
    if (field == NULL) return 0;
    *field++ = '\0';
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  int type = lua_getfield(L, -1, buf);
  int same = 0;
  if (field == NULL) {
    same = lua_rawequal(L, -1, idx);
  } else if (type == LUA_TTABLE) {
    lua_pushstring(L, field);
    lua_rawget(L, -2);
    same = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
  }
  lua_pop(L, 2);
  return same;
}

int lf_names_find(lua_State *L, lf_names *n, int idx) {
  if (!n->checked) {
    n->checked = 1;
    names_refresh(L, n, 0);
  }
  lua_pushvalue(L, idx);
  if (lua_rawget(L, n->slot) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  if (still_there(L, idx)) return 1;
  /* Overwritten in place since the index was built: build it again. */
  lua_pop(L, 1);
  names_refresh(L, n, 1);
  lua_pushvalue(L, idx);
  if (lua_rawget(L, n->slot) == LUA_TSTRING) return 1;
  lua_pop(L, 1);
  return 0;
}
