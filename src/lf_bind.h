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
void lf_bind_future(lua_State *L);    /* lf_future_lua.c: Future, wait, waiters */
void lf_bind_executor(lua_State *L);  /* lf_executor_lua.c: executors */
void lf_bind_process_pool(lua_State *L); /* lf_process_pool.c: process_pool */

/* Shared between the binding files (lf_core.c): */
struct lf_executor;
/* Record ex as created by this state (it takes the owner reference), after
** reaping the executors nobody can reach any more. [-0,+0,m] */
void lf_own_executor(lua_State *L, struct lf_executor *ex);
void lf_push_pending_callbacks(lua_State *L);   /* [-0,+1,-] */
void lf_call_callback(lua_State *L);            /* [-2,+0,-] */

#endif
