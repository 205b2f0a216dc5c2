/*
** lf_module.c — luaopen_futures_core, the module entry: it creates the
** state's context, registers each Lua face in turn and publishes the API
** for companion modules, as Lua's linit.c only lists the libraries. No
** other file calls into this one.
**
** Threads: the thread that opens the module in its state.
** Ownership: the context it creates belongs to the state (lf_context.h).
*/
#include "lauxlib.h"

#include "lf_api.h"
#include "lf_bind.h"
#include "lf_context.h"
#include "lf_state.h"

int luaopen_futures_core(lua_State *L);

int luaopen_futures_core(lua_State *L) {
  lf_state_set_opener(luaopen_futures_core);
  lf_ctx_open(L);
  lua_newtable(L);
  lf_bind_core(L);
  lf_bind_codec(L);
  lf_bind_future(L);
  lf_bind_executor(L);
  lf_bind_squeue(L);
  lf_bind_sarray(L);
  lf_api_publish(L);
  return 1;
}
