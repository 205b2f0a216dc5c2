/*
** lf_future.h — the future: a reference-counted C object holding a state
** (PENDING, RUNNING, CANCELLED, FINISHED), the encoded result or error, the
** encoded call that produces it, and the lists of waiters and callback
** inboxes to notify when it completes.
**
** Threads: every function may be called from any thread. A future's mutex
** guards its state, result, waiter list and inbox list. A waiter's mutex
** guards its completed list. Lock order: future, then waiter or inbox;
** never two futures at once.
**
** Ownership: lf_future_new returns a future with one reference. Each Lua
** userdata, each encoded buffer that mentions it, the executor's queue and
** the worker running it hold one reference each; the last lf_future_release
** frees it and its buffers. A waiter belongs to the thread that waits (often
** on its stack); it must be detached (lf_waiter_detach) before it is freed.
** An inbox is reference-counted: its state holds one, and every future it is
** registered with holds one until it completes.
*/
#ifndef LF_FUTURE_H
#define LF_FUTURE_H

#include <pthread.h>
#include <stdatomic.h>

#include "lf_codec.h"

typedef enum lf_fstate {
  LF_PENDING, LF_RUNNING, LF_CANCELLED, LF_FINISHED
} lf_fstate;

typedef struct lf_future lf_future;
typedef struct lf_waiter lf_waiter;
typedef struct lf_inbox lf_inbox;

/* One registration of a waiter on a future (a node of the future's list). */
typedef struct lf_waitnode {
  lf_waiter *waiter;
  lf_future *future;
  struct lf_waitnode *prev, *next;
  int linked;
} lf_waitnode;

/* A thread blocked on one or many futures. Completed futures are appended
** to `done` (each at most once, in completion order). */
struct lf_waiter {
  pthread_mutex_t mu;      /* guards ndone, done */
  pthread_cond_t cv;
  size_t ndone;
  lf_future **done;        /* capacity = n registrations; not retained */
  size_t n, nattached;
  lf_waitnode *nodes;      /* one per registration */
  lf_waitnode one_node;    /* storage when n == 1: no allocation */
  lf_future *one_done;
};

/* The callbacks inbox of one lua_State: completed futures that have
** callbacks to run in that state. */
struct lf_inbox {
  pthread_mutex_t mu;      /* guards head, tail, closed */
  atomic_int refs;
  atomic_int pending;      /* a cheap "anything there?" for entry points */
  int closed;              /* its state is gone: drop what arrives */
  struct lf_inboxnode *head, *tail;
};

typedef struct lf_inboxnode {
  lf_inbox *inbox;
  lf_future *future;       /* retained while queued in the inbox */
  struct lf_inboxnode *next;
} lf_inboxnode;

/* What a task is: one call, or a chunk of map items (see lf_worker.h). */
typedef enum lf_taskkind { LF_TASK_CALL, LF_TASK_CHUNK } lf_taskkind;

struct lf_future {
  pthread_mutex_t mu;
  atomic_int refs;
  lf_fstate state;
  atomic_int done;         /* 1 once CANCELLED or FINISHED: read without the
                              lock by a waiter that spins before it blocks */
  unsigned char failed;    /* FINISHED with an error */
  /* How the result decodes: with the options of the executor that runs
  ** the task (a process pool's results carry no handle pointers, and Lua
  ** functions only when the pool allows them), or the defaults. */
  unsigned char dec_in_process, dec_functions;
  unsigned short dec_depth;
  lf_buf result;           /* values, or (error, traceback) when failed */
  lf_waitnode *waiters;    /* a doubly-linked list of registrations */
  lf_inboxnode *inboxes;   /* states with callbacks to run */
  /* The task, embedded so that submit allocates one object. Written by the
  ** submitter before the future is queued, read by the worker that takes
  ** it, freed when it runs or is cancelled. */
  lf_taskkind kind;
  lf_buf call;
  lf_future *next_queued;  /* the executor's queue link */
};

/* The Lua userdata of a future (its metatable is registered under this
** name by the Lua face, lf_future_lua.c): one lf_future pointer, which
** owns a reference (NULL once finalized), and one user value. */
#define LF_FUTURE_MT "futures.Future"

lf_future *lf_future_new(void);            /* NULL when out of memory */
void lf_future_retain(lf_future *f);
void lf_future_release(lf_future *f);

lf_fstate lf_future_state(lf_future *f);   /* a snapshot */
int lf_future_done(lf_future *f);          /* CANCELLED or FINISHED */
/* Spin up to `seconds` for f to be done; 1 if it is. No lock taken. */
int lf_future_spin(lf_future *f, double seconds);

/* Decode the result of f with opts (in_process, functions, max_depth):
** set by the submitter before f is queued. */
void lf_future_decode_with(lf_future *f, const lf_codec_opts *opts);
/* The options to decode f's result with (its own pins included: valid
** once f is FINISHED). */
lf_codec_opts lf_future_decode_opts(lf_future *f);

/* PENDING -> CANCELLED (notifies) and returns 1; CANCELLED returns 1;
** RUNNING or FINISHED return 0. */
int lf_future_cancel(lf_future *f);

/* Cancel every future of a queue (linked by next_queued) and drop the
** queue's reference to each: what an executor's shutdown{ cancel_futures }
** does with the tasks it took off its queue. */
void lf_future_cancel_queue(lf_future *q);

/* PENDING -> RUNNING and returns 1; CANCELLED returns 0; any other state
** returns -1 (a misuse the caller reports). */
int lf_future_set_running(lf_future *f);

/* Completes the future with *res (moved: *res is left empty). Returns 0,
** or -1 if the future was already CANCELLED or FINISHED (res untouched). */
int lf_future_finish(lf_future *f, lf_buf *res, int failed);

/* Waiters. lf_waiter_init allocates room for n registrations (returns -1 on
** out of memory). attach registers on f, or records it at once as done;
** detach unregisters everywhere (safe to call twice); wait_until blocks until
** ndone > seen or the monotonic time `until` (negative: no limit) and returns
** the new ndone. */
int lf_waiter_init(lf_waiter *w, size_t n);
void lf_waiter_attach(lf_waiter *w, lf_future *f);
void lf_waiter_detach(lf_waiter *w);
void lf_waiter_destroy(lf_waiter *w);
size_t lf_waiter_wait_until(lf_waiter *w, size_t seen, double until);
size_t lf_waiter_count(lf_waiter *w);

/* Inboxes. */
lf_inbox *lf_inbox_new(void);
void lf_inbox_release(lf_inbox *ib);
void lf_inbox_close(lf_inbox *ib);        /* its state is closing */
/* Register ib on f: when f completes, f is queued in ib. Returns 1 if
** registered, 0 if f is already done (run the callbacks now), -1 on out
** of memory. */
int lf_inbox_watch(lf_inbox *ib, lf_future *f);
/* Takes the next completed future (the caller owns the reference), or NULL. */
lf_future *lf_inbox_pop(lf_inbox *ib);

#endif
