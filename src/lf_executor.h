/*
** lf_executor.h — the interface every executor back-end implements (the
** thread pool in lf_thread_pool.c, the process pool in lf_process_pool.c),
** so that the Lua bindings, map and shutdown are written once.
**
** Threads: submit, shutdown and status may be called from any thread (a
** task may submit to its own pool); join is called by the thread that
** owns the executor's creating state, or by one that holds a handle.
** Each back-end's file says which mutex guards what.
**
** Ownership: an executor is reference-counted. Every Lua userdata and every
** encoded buffer that mentions it holds one reference, and the state that
** created it holds one more (its "owner" reference) until it has joined the
** workers. When only the owner's reference is left, nothing can reach the
** executor any more: it is shut down without waiting (its queued work still
** runs), and the owner joins and frees it at its next reaping point.
*/
#ifndef LF_EXECUTOR_H
#define LF_EXECUTOR_H

#include <stdatomic.h>
#include <stddef.h>

#include "lf_future.h"

typedef struct lf_executor lf_executor;

/* Why a submit was refused. */
enum { LF_SUBMIT_OK = 0, LF_SUBMIT_SHUTDOWN, LF_SUBMIT_BROKEN, LF_SUBMIT_NOMEM };

typedef struct lf_executor_ops {
  const char *name;           /* "ThreadPoolExecutor" */
  const char *broken_type;    /* "BrokenThreadPool" */
  int in_process;             /* may shared handles travel to its workers? */
  /* Queue f, whose call is encoded (takes a reference to f). Returns an
  ** LF_SUBMIT_* code; never blocks on a running task. */
  int (*submit)(lf_executor *ex, lf_future *f);
  /* Stop accepting work; with cancel, cancel what has not started. Wakes
  ** idle workers so they exit once the queue is empty. Idempotent. */
  void (*shutdown)(lf_executor *ex, int cancel);
  /* Wait until every worker has exited, at most until the monotonic time
  ** `until` (negative: no limit). Returns 1 when they all have. */
  int (*join)(lf_executor *ex, double until);
  /* A short description for __tostring: "(3 workers, 2 queued)". */
  void (*describe)(lf_executor *ex, char *buf, size_t size);
  /* Free everything; called once, after join returned 1 and the last
  ** reference went. */
  void (*destroy)(lf_executor *ex);
} lf_executor_ops;

struct lf_executor {
  const lf_executor_ops *ops;
  atomic_int refs;
  char *broken;               /* why it is broken (set once, under the
                                 back-end's mutex), or NULL */
};

/* The executor whose worker the calling thread is, or NULL. */
extern _Thread_local lf_executor *lf_current_executor;

void lf_executor_retain(lf_executor *ex);
/* Drops a reference; when only the owner's is left, shuts it down. */
void lf_executor_release(lf_executor *ex);

#endif
