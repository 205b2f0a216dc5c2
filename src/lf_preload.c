/*
** lf_preload.c — registers the linked-in futures.core and the embedded Lua
** modules in package.preload, so that `require "futures"` works in
** bin/lua-futures without LUA_PATH or LUA_CPATH.
**
** Threads: called by the thread that owns the state, before it runs code.
** Ownership: nothing is allocated outside the state.
*/
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
}
