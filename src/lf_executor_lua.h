/*
** lf_executor_lua.h — Executor userdata helpers shared by the binding
** files (the process pool's constructor uses them too).
**
** Threads: the thread that owns L.
** Ownership: see lf_executor_lua.c.
*/
#ifndef LF_EXECUTOR_LUA_H
#define LF_EXECUTOR_LUA_H

#include "lua.h"
#include "lf_executor.h"

#define LF_EXECUTOR_MT "futures.Executor"

void lf_push_executor(lua_State *L, lf_executor *ex);   /* [-0,+1,m] */
void lf_encode_initializer(lua_State *L, int fn, int args, lf_buf *out,
                           int in_process);              /* [-0,+0,e] */
void lf_push_paths(lua_State *L, const char **path, const char **cpath);
void lf_adopt_executor(lua_State *L, lf_executor **ud, lf_executor *ex);

#endif
