/*
** lf_context.h — the runtime's per-state context: the callbacks inbox of a
** lua_State (completed futures whose done callbacks are to run there) and
** the executors the state created, which it joins when it closes.
**
** Threads: only the thread that owns the state touches its context. The
** inbox inside is shared with the threads that complete futures (see
** lf_future.h).
**
** Ownership: the context is a full userdata in the registry, so lua_close
** finalizes it. It is created inside luaopen, after package.loadlib
** registered the module's library handle, so it is finalized before the
** module is unloaded: no worker thread runs the module's code afterwards.
** Its finalizer shuts down and joins the executors it owns, delivers the
** callbacks that are due (so none is lost at the end of a script), then
** drops the state's inbox reference and the owner references.
*/
#ifndef LF_CONTEXT_H
#define LF_CONTEXT_H

#include "lua.h"
#include "lf_executor.h"
#include "lf_future.h"

typedef struct lf_ctx {
  lf_inbox *inbox;             /* futures with callbacks for this state */
  lf_executor **owned;         /* executors created in this state */
  size_t nowned, capowned;
  int draining;                /* lf_run_callbacks is running */
  lua_State *helper;           /* a state that runs tasks on this state's
                                  thread (lf_thread_pool.c): its callbacks
                                  are delivered with this state's */
} lf_ctx;

/* Create the context of L if it has none (luaopen). [-0,+0,m] */
void lf_ctx_open(lua_State *L);

/* This state's context, created on demand. [-0,+0,m] */
lf_ctx *lf_getctx(lua_State *L);

/* This state's context if it has one, else NULL. [-0,+0,-] */
lf_ctx *lf_testctx(lua_State *L);

/* Record ex as created by this state (it takes the owner reference), after
** reaping the executors nobody can reach any more. On out of memory, ex is
** shut down, joined and released, and the error raised. [-0,+0,m] */
void lf_own_executor(lua_State *L, lf_executor *ex);

/* Run the callbacks that are due in this state; returns how many ran. An
** error in a callback is reported on stderr. Never recursive: a call from
** inside a callback returns 0 at once. A state without a context has
** nothing due. [-0,+0,m] */
int lf_run_callbacks(lua_State *L);

/* Register fn (at fidx) to run in this state when the future f (whose
** userdata is at uidx) completes. Returns 1 when registered, 0 when f is
** already done (the caller runs fn now). [-0,+0,m] */
int lf_add_callback(lua_State *L, int uidx, lf_future *f, int fidx);

/* Calls fn (at -2) with the future (at -1) under pcall; reports an error
** on stderr. Never raises. [-2,+0,-] */
void lf_call_callback(lua_State *L);

/* Make H the helper of L (NULL: none). [-0,+0,m] */
void lf_ctx_set_helper(lua_State *L, lua_State *H);

/* Does this state wait for callbacks of futures not yet done? */
int lf_has_pending_callbacks(lua_State *L);

#endif
