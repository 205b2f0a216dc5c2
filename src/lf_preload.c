/*
** lf_preload.c — registers the linked-in futures.core and the embedded Lua
** modules in package.preload, so that `require "futures"` works in
** bin/lua-futures without LUA_PATH or LUA_CPATH; and a last searcher that
** finds the companion C modules (futures.mpi) beside the interpreter, in
** its build tree or its install, when package.cpath has none.
**
** Threads: called by the thread that owns the state, before it runs code.
** Ownership: nothing is allocated outside the state.
*/
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_preload.h"
#include "lf_state.h"

/* package.preload loader of one embedded module: upvalue 1 is its index in
** lf_embedded_modules. Called by require as loader(name, extra). */
static int load_embedded(lua_State *L) {
  const lf_embedded_module *m =
      &lf_embedded_modules[lua_tointeger(L, lua_upvalueindex(1))];
  if (luaL_loadbufferx(L, m->source, m->size, m->chunkname, "t") != LUA_OK)
    return lua_error(L);
  lua_pushstring(L, m->name);
  lua_pushstring(L, m->chunkname + 1);
  lua_call(L, 2, 1);
  return 1;
}

/* The last of package.searchers: a C module "futures.<name>" beside this
** executable, bin/../build/futures/<name>.so (the build tree) or
** bin/../lib/lua/5.4/futures/<name>.so (an install under any prefix).
** Returns the loader and the file, or why not (searchers' conventions). */
static int search_beside(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (strncmp(name, "futures.", 8) != 0 || n <= 0) return 0;
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash == NULL) return 0;
  *slash = '\0';
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) return 0;
  lua_getfield(L, -1, "searchpath");
  lua_pushvalue(L, 1);
  lua_pushfstring(L, "%s/../build/?.so;%s/../lib/lua/" LUA_VERSION_MAJOR "."
                  LUA_VERSION_MINOR "/?.so", self, self);
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2)) return 1;   /* the message: no file '...' */
  lua_pop(L, 1);
  const char *file = lua_tostring(L, -1);
  lua_getfield(L, -2, "loadlib");
  lua_pushvalue(L, -2);
  luaL_gsub(L, name, ".", "_");
  lua_pushfstring(L, "luaopen_%s", lua_tostring(L, -1));
  lua_remove(L, -2);
  lua_call(L, 2, 2);
  if (lua_isnil(L, -2))
    return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                      name, file, lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_insert(L, -2);   /* the loader, then the file */
  return 2;
}

void lf_preload_open(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_futures_core);
  lua_setfield(L, -2, "futures.core");
  for (int i = 0; lf_embedded_modules[i].name != NULL; i++) {
    lua_pushinteger(L, i);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, lf_embedded_modules[i].name);
  }
  lua_pop(L, 1);
  if (lua_getglobal(L, "package") == LUA_TTABLE) {
    if (lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
      lua_pushcfunction(L, search_beside);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}
