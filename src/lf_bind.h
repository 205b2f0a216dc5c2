/*
** lf_bind.h — the Lua faces of futures.core, one file per exposed kind
** (as luv has one per handle type). Each adds its functions to the module
** table at the top of the stack; lf_module.c only calls them in turn.
**
** Threads: run by the thread that opens the module.  [-0, +0, e]
*/
#ifndef LF_BIND_H
#define LF_BIND_H

#include "lua.h"
#include "lf_codec.h"

void lf_bind_core(lua_State *L);      /* lf_core_lua.c: cpu_count, sleep... */
void lf_bind_codec(lua_State *L);     /* lf_codec_lua.c: serialize... */
void lf_bind_future(lua_State *L);    /* lf_future_lua.c: Future, wait */
void lf_bind_executor(lua_State *L);  /* lf_executor_lua.c: both pools */
void lf_bind_squeue(lua_State *L);    /* lf_squeue_lua.c: Queue */
void lf_bind_sarray(lua_State *L);    /* lf_sarray_lua.c: SharedArray */

/* lf_core_lua.c: the object of the handle userdata at idx (a future, an
** executor...: one pointer), whose metatable is tname; otherwise raises
** "bad argument #idx to 'fname' (tname expected, got T; call it with
** ':')", the usual slip of a method called with '.'. fname NULL: the
** function's own name. [-0,+0,v] */
void *lf_check_handle(lua_State *L, int idx, const char *tname,
                      const char *fname);

/* lf_codec_lua.c: the values at first..top as a string encoded with o
** (what futures.serialize does with its defaults). [-0, +1, e] */
int lf_serialize_from(lua_State *L, int first, const lf_codec_opts *o);

#endif
