/*
** lf_error.h — the runtime's error objects: tables { type = "TimeoutError",
** message = "..." } whose metatable is the class futures.TimeoutError (with
** __name "futures.TimeoutError" and a Lua __tostring, so that a copy can
** travel to another state and still print).
**
** Threads: the thread that owns the state given.
** Ownership: the classes live in the state's registry.
*/
#ifndef LF_ERROR_H
#define LF_ERROR_H

#include "lua.h"
#include "lf_codec.h"

/* The classes, in the order of futures.errors. */
extern const char *const lf_error_types[];

/* Make sure the classes exist in L and are in its package.loaded, as
** "futures.TimeoutError" and so on (luaopen). [-0,+0,m] */
void lf_error_open(lua_State *L);

/* Push the table of classes by type, creating it in L if needed.
** [-0,+1,m] */
void lf_push_error_classes(lua_State *L);

/* Raise a new error object of `type`. [-0,+0,v] */
int lf_raise_error(lua_State *L, const char *type, const char *fmt, ...);

/* Encode (error object, "") into out, for failing a future from C without
** a state of one's own: L is any scratch state. Returns 0 or -1 (out of
** memory; out is left empty). */
int lf_error_encode(lua_State *L, const char *type, const char *msg,
                    lf_buf *out, const lf_codec_opts *opts);

/* After decoding an error value: if it is a runtime error whose metatable
** is a travelled copy, give it this state's class again. [-0,+0,m] */
void lf_error_adopt(lua_State *L, int idx);

#endif
