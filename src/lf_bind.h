/*
** lf_bind.h — the binding files of futures.core. Each adds its functions
** to the module table at the top of the stack, from luaopen_futures_core.
**
** Threads: run by the thread that opens the module.  [-0, +0, e]
*/
#ifndef LF_BIND_H
#define LF_BIND_H

#include "lua.h"

void lf_bind_codec(lua_State *L);     /* lf_codec_lua.c: serialize, deserialize */

#endif
