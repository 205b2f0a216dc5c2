/*
** lf_core.h — the futures.core module entry point and the helpers its
** binding files share: interruptible waits and new worker states.
**
** Threads: lf_wait_* are called by the thread that owns L (the caller of a
** blocking function); lf_new_state may be called from any thread, and the
** state it returns belongs to the caller.
** Ownership: see each function.
*/
#ifndef LF_CORE_H
#define LF_CORE_H

#include "lua.h"
#include "lf_codec.h"
#include "lf_future.h"

int luaopen_futures_core(lua_State *L);

/* The bundled interpreter sets this to lf_preload_open so that worker states
** get the embedded Lua modules too; a plain host leaves it NULL. Set once,
** before the first executor starts. */
extern void (*lf_state_setup)(lua_State *L);

/* A fresh state with the standard libraries, futures.core preloaded, and
** package.path/cpath copied from `paths` ("path\0cpath"; NULL keeps the
** defaults). Returns NULL when out of memory. Caller owns it: lua_close. */
lua_State *lf_new_state(const char *path, const char *cpath);

/* Blocking calls wait in short slices, and between two slices ask whether
** Ctrl-C arrived. The interpreters (lua5.4 and ours) answer SIGINT by
** installing a hook on the main state, so a change of hook is the signal.
** lf_intr_begin records the hook when the wait starts; lf_intr_pending
** tells whether it changed; lf_intr_raise restores the recorded hook and
** raises "interrupted!" (release what you hold first). */
typedef struct lf_intr { lua_Hook hook; int mask, count; } lf_intr;
void lf_intr_begin(lua_State *L, lf_intr *st);
int lf_intr_pending(lua_State *L, const lf_intr *st);
int lf_intr_raise(lua_State *L, const lf_intr *st);   /* [-0,+0,v] */
#define LF_WAIT_SLICE 0.05   /* seconds between two interrupt checks */

/* Per-state context of the module, created by luaopen in each state that
** opens it. Only the thread that owns the state touches it; its finalizer
** (at lua_close) shuts down and joins every executor the state created. */
typedef struct lf_ctx {
  lf_inbox *inbox;             /* futures with callbacks for this state */
  struct lf_executor **owned;  /* executors created in this state */
  size_t nowned, capowned;
  int draining;                /* lf_run_callbacks is running */
} lf_ctx;

/* Open futures.core in L if it was not (its metatables are then
** registered), as require would. [-0,+0,e] */
void lf_open_core(lua_State *L);

/* This state's context, or raises if futures.core was never opened in it
** (it is opened on demand). [-0,+0,e] */
lf_ctx *lf_getctx(lua_State *L);

/* Run the callbacks that are due in this state; returns how many ran. An
** error in a callback is reported on stderr. [-0,+0,m] */
int lf_run_callbacks(lua_State *L);

/* Runtime errors are tables { type = "TimeoutError", message = "..." }
** whose metatable is the class futures.TimeoutError (with __name
** "futures.TimeoutError" and a Lua __tostring, so that a copy travels).
** lf_push_error pushes a new one [-0,+1,m]; lf_raise_error raises it
** [-0,+0,v]. */
void lf_push_error(lua_State *L, const char *type, const char *fmt, ...);
int lf_raise_error(lua_State *L, const char *type, const char *fmt, ...);
/* Encode (error object, "") into out, for failing a future from C without
** a state of one's own: L is any scratch state. Returns 0 or -1. */
int lf_error_encode(lua_State *L, const char *type, const char *msg,
                    lf_buf *out, const lf_codec_opts *opts);
/* After decoding an error value: if it is a runtime error whose metatable
** is a travelled copy, give it this state's class again. [-0,+0,m] */
void lf_error_adopt(lua_State *L, int idx);

#endif
