/*
** lf_executor_lua.h — the Executor userdata, for the other Lua faces.
**
** Threads: the thread that owns L.
** Ownership: lf_push_executor gives the new userdata the caller's
** reference.
*/
#ifndef LF_EXECUTOR_LUA_H
#define LF_EXECUTOR_LUA_H

#include "lua.h"
#include "lf_executor.h"

#define LF_EXECUTOR_MT "futures.Executor"

/* The two steps of making an executor for Lua, in this order so that an
** error between them leaves nothing unowned: push an empty Executor
** userdata [-0,+1,m]; then, once the engine exists, give its owner
** reference to the state and one more to the userdata (on out of memory
** ex is shut down, joined and released, and the error raised) [-0,+0,e]. */
lf_executor **lf_executor_newud(lua_State *L);
/* Encode the options' (at index opts) initializer and initargs (a table)
** into out, for the workers; nothing when there is no initializer.
** [-0,+0,e] */
void lf_encode_initializer(lua_State *L, int opts, lf_buf *out,
                           const lf_codec_opts *copts);
/* Push package, package.path and package.cpath (nil, nil when there is no
** package table) and point cfg's path and cpath at the two strings, valid
** while they stay on the stack: the paths a pool's workers start with.
** [-0,+3,e] */
void lf_push_pool_paths(lua_State *L, lf_pool_config *cfg);
void lf_executor_adopt(lua_State *L, lf_executor **ud, lf_executor *ex);

#endif
