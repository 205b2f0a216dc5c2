/*
** lf_error.c — the runtime's error objects (lf_error.h).
**
** Threads: the thread that owns the state given.
** Ownership: the classes table is in the registry, created on first use;
** each class is in package.loaded too.
*/
#include <stdarg.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_error.h"

static const char ERRORS_KEY = 'e';    /* registry: error classes by type */

const char *const lf_error_types[] = {
  "CancelledError", "TimeoutError", "BrokenExecutor", "BrokenThreadPool",
  "BrokenProcessPool", "InvalidStateError", "RuntimeError", "Empty", "Full",
  "Closed", NULL
};

/* A Lua __tostring, so that an error's metatable can travel by value. */
static const char ERROR_TOSTRING[] =
  "local e = ... return (e.type or 'Error') .. ': ' .. (e.message or '')";

/* Each class is also package.loaded["futures.<Class>"], so that an error
** object's metatable travels by name, as a module does: a state that
** refuses Lua functions still decodes it, and gets its own class. Done
** again at each luaopen, in case package.loaded was reset (busted's
** insulation does that between spec files). [-0,+0,m] */
static void register_classes(lua_State *L, int classes) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (int i = 0; lf_error_types[i] != NULL; i++) {
    lua_pushfstring(L, "futures.%s", lf_error_types[i]);
    lua_getfield(L, classes, lf_error_types[i]);
    lua_settable(L, -3);
  }
  lua_pop(L, 1);
}

void lf_error_open(lua_State *L) {
  lf_push_error_classes(L);
  register_classes(L, lua_gettop(L));
  lua_pop(L, 1);
}

void lf_push_error_classes(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ERRORS_KEY) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  for (int i = 0; lf_error_types[i] != NULL; i++) {
    lua_createtable(L, 0, 4);
    lua_pushstring(L, lf_error_types[i]);
    lua_setfield(L, -2, "type");
    lua_pushfstring(L, "futures.%s", lf_error_types[i]);
    lua_setfield(L, -2, "__name");
    if (luaL_loadstring(L, ERROR_TOSTRING) != LUA_OK) lua_error(L);
    lua_setfield(L, -2, "__tostring");
    lua_setfield(L, -2, lf_error_types[i]);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ERRORS_KEY);
  register_classes(L, lua_gettop(L));
}

static void push_error_msg(lua_State *L, const char *type, const char *msg) {
  lf_push_error_classes(L);
  lua_createtable(L, 0, 2);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_getfield(L, -2, type);
  lua_setmetatable(L, -2);
  lua_remove(L, -2);
}

int lf_raise_error(lua_State *L, const char *type, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *msg = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  push_error_msg(L, type, msg);
  return lua_error(L);
}

typedef struct encode_error_args {
  const char *type, *msg;
  lf_buf *out;
  const lf_codec_opts *opts;
  int rc;
} encode_error_args;

static int protected_encode_error(lua_State *L) {
  encode_error_args *a = lua_touserdata(L, 1);
  push_error_msg(L, a->type, a->msg);
  lua_pushliteral(L, "");
  a->rc = lf_encode(L, lua_gettop(L) - 1, 2, "error", 1, a->out, a->opts);
  return 0;
}

int lf_error_encode(lua_State *L, const char *type, const char *msg,
                    lf_buf *out, const lf_codec_opts *opts) {
  encode_error_args a = { type, msg, out, opts, -1 };
  int top = lua_gettop(L);
  lua_pushcfunction(L, protected_encode_error);
  lua_pushlightuserdata(L, &a);
  int rc = lua_pcall(L, 1, 0, 0);
  lua_settop(L, top);
  return rc == LUA_OK ? a.rc : -1;
}

void lf_error_adopt(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return;
  if (lua_getfield(L, -1, "__name") == LUA_TSTRING) {
    const char *name = lua_tostring(L, -1);
    if (strncmp(name, "futures.", 8) == 0) {
      lf_push_error_classes(L);
      if (lua_getfield(L, -1, name + 8) == LUA_TTABLE &&
          !lua_rawequal(L, -1, -4)) {
        lua_pushvalue(L, -1);
        lua_setmetatable(L, idx);
      }
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 2);
}

