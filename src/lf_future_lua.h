/*
** lf_future_lua.h — Future userdata helpers shared by the binding files.
**
** Threads: the thread that owns L.
** Ownership: lf_push_future gives the new userdata the caller's reference.
*/
#ifndef LF_FUTURE_LUA_H
#define LF_FUTURE_LUA_H

#include "lua.h"
#include "lf_future.h"


/* Registry field: the outcome { err, traceback } of the last task error
** that result() (or map) raised in this state, so that an interpreter
** that reports an uncaught error can show where it came from in the
** worker too. */
#define LF_TASK_ERROR_KEY "futures.task_error"

void lf_push_future(lua_State *L, lf_future *f);      /* [-0,+1,m] */
lf_future *lf_check_future(lua_State *L, int idx);    /* [-0,+0,v] */
/* A function, or a value whose metatable has __call; else an argument
** error "<what> expected, got <type>". [-0,+0,v] */
void lf_check_callable(lua_State *L, int idx, const char *what);
lf_future *lf_test_future(lua_State *L, int idx);     /* [-0,+0,-] */
double lf_opt_timeout(lua_State *L, int idx);         /* [-0,+0,v] */
int lf_future_wait(lua_State *L, lf_future *f, double timeout); /* [-0,+0,v] */

#endif
