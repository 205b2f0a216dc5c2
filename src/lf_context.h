/*
** lf_context.h — the runtime's per-state context: the callbacks inbox of a
** lua_State (completed futures whose done callbacks are to run there) and
** the executors the state created, which it joins when it closes.
**
** Threads: only the thread that owns the state touches its context. The
** inbox inside is shared with the threads that complete futures (see
** lf_future.h), and so is its wake-up descriptor (futures.pollfd), which
** completing threads write and this state's thread drains.
**
** Ownership: the context is a full userdata in the registry, so lua_close
** finalizes it. It is created inside luaopen, after package.loadlib
** registered the module's library handle, so it is finalized before the
** module is unloaded: no worker thread runs the module's code afterwards.
** Its finalizer shuts down and joins the executors it owns, delivers the
** callbacks that are due (so none is lost at the end of a script), then
** drops the state's inbox reference (closing the inbox's descriptor) and
** the owner references. The pending hook is not called from then on.
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
  int draining;                /* callbacks are running (lf_run_callbacks,
                                  or one called at once) */
  int nlater;                  /* callbacks deferred while they ran */
  lua_State *helper;           /* a state that runs tasks on this state's
                                  thread (lf_thread_pool.c): its callbacks
                                  are delivered with this state's */
  int closing;                 /* the finalizer runs */
  long npending;               /* futures whose callbacks wait here */
  int hooked;                  /* a pending hook is set */
  int told;                    /* what the hook was told last: busy or not */
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

/* lf_call_callback for a callback run at once (its future was done when it
** was added): the others due do not run inside it. [-2,+0,-] */
void lf_call_callback_now(lua_State *L);

/* Make H the helper of L (NULL: none). [-0,+0,m] */
void lf_ctx_set_helper(lua_State *L, lua_State *H);

/* Does this state wait for callbacks of futures not yet done? */
/* Unregister every fn (at fidx, compared with rawequal) added on f in this
** state; returns how many went. With none left, f no longer counts as
** pending and its completion no longer reaches this state. [-0,+0,-] */
int lf_remove_callback(lua_State *L, lf_future *f, int fidx);

/* What futures.poll() does: lf_run_callbacks, then, the inbox being empty,
** the wake-up taken out of this state's descriptor (if it has one), so that
** it is readable again only when more is due. [-0,+0,m] */
int lf_poll(lua_State *L);

/* Does this state wait for callbacks of futures not yet done (or done but
** not yet delivered)? ctx->npending says for how many futures. */
int lf_has_pending_callbacks(lua_State *L);

/* The pending hook (the value at idx, a function, or nil for none) is
** called as hook(busy) with busy = lf_has_pending_callbacks(L) > 0 once
** when set, then each time that changes: when a callback is added to a
** future that had none here, when the last waiting ones have run or were
** removed (at the end of lf_run_callbacks, not in its middle). An event
** loop adapter keeps its loop alive while busy. An error in the hook is
** reported on stderr. [-0,+0,m] */
void lf_set_pending_hook(lua_State *L, int idx);

/* This state's wake-up descriptor (lf_inbox_pollfd), made on the first
** call; raises when none can be made. [-0,+0,v] */
int lf_pollfd(lua_State *L);

#endif
