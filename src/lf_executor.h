/*
** lf_executor.h — what every executor back-end shares: the interface the
** Lua face calls (submit, shutdown, join, describe, destroy), reference
** counting, the configuration a pool is made from, the queue of futures,
** and how a pool is marked broken and its futures failed. The back-ends
** are lf_thread_pool.c and lf_process_pool.c.
**
** Threads: submit, shutdown and describe may be called from any thread (a
** task may submit to its own pool); join is called by the thread that owns
** the executor's creating state, or by one that holds a handle. A queue is
** guarded by its back-end's mutex; its count is atomic so that spinning
** workers may read it without the lock. `broken` is written once, under
** the back-end's mutex.
**
** Ownership: an executor is reference-counted. Every Lua userdata and every
** encoded buffer that mentions it holds one reference, and the state that
** created it holds one more (its "owner" reference) until it has joined the
** workers. When only the owner's reference is left, nothing can reach the
** executor any more: it is shut down without waiting (its queued work still
** runs), and the owner joins it at its next reaping point. Each future it
** queued holds an origin reference (lf_origin), so that a thread waiting
** for one can still ask the executor to run it there: the memory is freed
** when the last reference of either kind is gone. A queue holds one
** reference to each future in it.
*/
#ifndef LF_EXECUTOR_H
#define LF_EXECUTOR_H

#include <stdatomic.h>
#include <stddef.h>

#include "lua.h"
#include "lf_codec.h"
#include "lf_future.h"

typedef struct lf_executor lf_executor;

/* How to shut down (bits). */
enum { LF_SHUTDOWN_CANCEL = 1, LF_SHUTDOWN_INTERRUPT = 2 };

/* Why a submit was refused. */
enum { LF_SUBMIT_OK = 0, LF_SUBMIT_SHUTDOWN, LF_SUBMIT_BROKEN, LF_SUBMIT_NOMEM };

typedef struct lf_executor_ops {
  const char *name;           /* "ThreadPoolExecutor" */
  const char *broken_type;    /* "BrokenThreadPool" */
  int in_process;             /* its codec_opts.in_process: 0 (workers in
                                 other processes), or 1 or LF_CODEC_LEND
                                 (shared handles travel; with LF_CODEC_LEND
                                 long strings are lent too) */
  /* Queue f, whose call is encoded (takes a reference to f). Returns an
  ** LF_SUBMIT_* code; never blocks on a running task. */
  int (*submit)(lf_executor *ex, lf_future *f);
  /* Stop accepting work; `how` (LF_SHUTDOWN_* bits): cancel what has not
  ** started, and stop the tasks that run (as f:interrupt() does). Wakes
  ** idle workers so they exit once the queue is empty. Idempotent. */
  void (*shutdown)(lf_executor *ex, int how);
  /* Wait until every worker has exited, at most until the monotonic time
  ** `until` (negative: no limit). Returns 1 when they all have. */
  int (*join)(lf_executor *ex, double until);
  /* The thread of state L waits for f, a task of this executor: run it
  ** here if no worker has started it and a worker's place is free (the
  ** waiting thread takes it). Returns 1 when f ran here (it is done), 0
  ** when it did not. NULL for back-ends whose tasks must run in their
  ** workers (a process pool's). [-0,+0,m] */
  int (*run_here)(lf_executor *ex, lf_future *f, lua_State *L);
  /* Send `sig` to every worker process (terminate_workers, kill_workers):
  ** the pool is broken and shut down. NULL for a thread pool. */
  void (*kill_workers)(lf_executor *ex, int sig);
  /* A short description for __tostring: "3/4 workers, 2 queued". */
  void (*describe)(lf_executor *ex, char *buf, size_t size);
  /* Free everything; called once, after join returned 1 and the last
  ** reference went. */
  void (*destroy)(lf_executor *ex);
} lf_executor_ops;

struct lf_executor {
  const lf_executor_ops *ops;
  atomic_int refs;
  /* The executor as the origin of the futures it queued (lf_future.h):
  ** they keep its memory, not its workers. The references above count as
  ** one origin reference together; destroy runs when both are gone. */
  lf_origin origin;
  double task_timeout;        /* the default run limit of its tasks */
  char *broken;               /* why it is broken, or NULL */
  lf_codec_opts opts;         /* how results from its workers decode */
};

/* What a pool is made from; both back-ends take the same shape. */
typedef struct lf_pool_config {
  int max_workers;
  const char *name;           /* thread names (thread pool), or NULL */
  lf_buf *init;               /* encoded initializer call (fn, args...), or
                                 empty; moved into the pool on success */
  const char *path, *cpath;   /* package.path/cpath of worker states */
  int max_depth;              /* codec nesting limit both ways */
  double task_timeout;        /* seconds a task may run, 0: no limit */
  double grace;               /* process pool: seconds a worker has to stop
                                 a task before it is killed */
  int return_functions;       /* results may carry Lua functions (process) */
  size_t max_memory;          /* bytes of Lua heap per worker, 0: none */
  long max_tasks_per_child;   /* process pool: 0 for no limit */
  const char *exe;            /* process pool: the interpreter, for argv[0] */
  const char *spawn_path;     /* process pool: what is executed */
} lf_pool_config;

#define LF_MAX_WORKERS 4096

/* The executor that queued a future (its origin). */
static inline lf_executor *lf_origin_executor(lf_origin *o) {
  return (lf_executor *)(void *)((char *)o - offsetof(lf_executor, origin));
}

/* The executor whose worker the calling thread is, or NULL. */
extern _Thread_local lf_executor *lf_current_executor;

/* Fill the shared part of a new back-end (one reference: the owner's). */
void lf_executor_init(lf_executor *ex, const lf_executor_ops *ops,
                      const lf_pool_config *cfg);
void lf_executor_retain(lf_executor *ex);
/* Drops a reference; when only the owner's is left, shuts it down. */
void lf_executor_release(lf_executor *ex);

/* Mark ex broken with `why` (copied), once: returns 1 the first time, 0
** after. Call with the back-end's mutex held. Even without memory for the
** copy the executor ends up broken, with a fixed reason. */
int lf_executor_mark_broken(lf_executor *ex, const char *why);
/* Free the reason; from destroy. */
void lf_executor_free_broken(lf_executor *ex);

/* ---- the queue of futures, linked through next_queued ---- */

typedef struct lf_queue {
  lf_future *head, *tail;
  atomic_size_t count;
} lf_queue;

void lf_queue_init(lf_queue *q);
void lf_queue_push(lf_queue *q, lf_future *f);   /* takes f's reference */
void lf_queue_push_front(lf_queue *q, lf_future *f);
lf_future *lf_queue_pop(lf_queue *q);           /* NULL when empty */
/* Take f out of the queue if it is among its first `limit` entries;
** returns 1 if it was (the queue's reference is the caller's now). */
int lf_queue_remove(lf_queue *q, lf_future *f, int limit);
/* Take the whole queue (a list linked by next_queued) and empty it. */
lf_future *lf_queue_take(lf_queue *q);
static inline size_t lf_queue_count(lf_queue *q) {
  return atomic_load_explicit(&q->count, memory_order_acquire);
}

/* Fail f (PENDING or RUNNING) with an error object of `type` (a
** BrokenThreadPool table, say), built in the scratch state *S (created on
** first use; the caller lua_closes it). Without memory for the object, the
** text as a string; without memory at all, an empty failure, which
** result() reports as "not enough memory". Any thread. */
void lf_future_fail(lf_future *f, const char *type, const char *msg,
                    const lf_codec_opts *opts, lua_State **S);
/* Fail every future of a list taken from a queue and drop the queue's
** reference to each. The errors are built in *scratch (as lf_future_fail),
** or, when scratch is NULL, in a state made and closed here. */
void lf_fail_queue(lf_future *q, const char *type, const char *msg,
                   const lf_codec_opts *opts, lua_State **scratch);

#endif
