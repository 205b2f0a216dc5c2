/* main.c — bin/lua-futures (placeholder until the full interpreter lands). */
#include <stdio.h>
#include "lauxlib.h"
#include "lualib.h"
#include "lf_core.h"
#include "lf_preload.h"

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lf_state_setup = lf_preload_open;
  lf_preload_open(L);
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i - 1); }
  lua_setglobal(L, "arg");
  int rc = argc > 1 ? luaL_dofile(L, argv[1]) : 0;
  if (rc) fprintf(stderr, "lua-futures: %s\n", lua_tostring(L, -1));
  lua_close(L);
  return rc ? 1 : 0;
}
