/*
** lf_future.h — the future: a reference-counted C object holding a state
** (PENDING, RUNNING, CANCELLED, FINISHED), the encoded result or error, the
** encoded call that produces it, and the lists of waiters and callback
** inboxes to notify when it completes.
**
** Threads: every function may be called from any thread. A future's mutex
** guards its state, result, waiter list and inbox list. A waiter's mutex
** guards its completed list. Lock order: future, then waiter or inbox;
** never two futures at once. The completing thread writes an inbox's
** wake-up descriptor under the inbox's mutex (a non-blocking write of an
** eventfd or pipe that holds at most one wake-up, so it never waits), and
** the state's thread drains it under that mutex too.
**
** Ownership: lf_future_new returns a future with one reference. Each Lua
** userdata, each encoded buffer that mentions it, the executor's queue and
** the worker running it hold one reference each; the last lf_future_release
** frees it and its buffers. A waiter belongs to the thread that waits (often
** on its stack); it must be detached (lf_waiter_detach) before it is freed.
** An inbox is reference-counted: its state holds one, and every future it is
** registered with holds one until it completes. The inbox owns its wake-up
** descriptor; lf_inbox_close (its state closing) closes it.
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
** callbacks to run in that state.
**
** Its wake-up descriptor (futures.pollfd) does not exist until the state
** asks for it (fd == -1): until then a completion costs no system call.
** Once it exists it is readable whenever the queue is not empty: a push
** writes it unless a wake-up is in it already (signalled), and only
** lf_inbox_drain, on an empty queue, takes that wake-up out; both happen
** under mu, so no completion slips between a drain and the emptiness it
** stands for (no lost wake-up). Other pops leave the wake-up in: a burst
** of completions delivered by result() or submit() costs one write, and
** the loop's next poll finds the queue empty and drains it. */
struct lf_inbox {
  pthread_mutex_t mu;      /* guards head, tail, closed, fd, wfd, signalled */
  atomic_int refs;
  atomic_int pending;      /* a cheap "anything there?" for entry points */
  int closed;              /* its state is gone: drop what arrives */
  int fd;                  /* what a loop watches: an eventfd, or the read
                              end of a pipe; -1 until lf_inbox_pollfd */
  int wfd;                 /* where a completion writes: fd itself, or the
                              pipe's write end */
  int signalled;           /* a write is in the descriptor, not drained */
  struct lf_inboxnode *head, *tail;
};

typedef struct lf_inboxnode {
  lf_inbox *inbox;
  lf_future *future;       /* retained while queued in the inbox */
  struct lf_inboxnode *next;
} lf_inboxnode;

/* Where a queued task came from, for a thread that waits for it and may
** run it itself when no worker has started it yet (lf_executor.h,
** run_here). Reference-counted: each future that names its origin holds
** one reference, dropped when the future is freed; `release` runs when
** the last goes. The executor layer embeds it; this layer only counts. */
typedef struct lf_origin {
  atomic_int refs;
  void (*release)(struct lf_origin *o);
} lf_origin;

void lf_origin_retain(lf_origin *o);
void lf_origin_release(lf_origin *o);

/* Who runs a task, and how to stop it (lf_future_interrupt): a thread
** worker sets a hook on its state, a process pool signals the worker.
** The runner's own record embeds one (the future keeps one pointer, and
** `stop` finds the record from it). `stop` is called with the future's
** mutex held, from any thread: it must only flag and wake (no lock of a
** pool, no Lua call but lua_sethook). */
typedef struct lf_runner lf_runner;
struct lf_runner {
  void (*stop)(lf_runner *self, lf_future *f);
};

/* Why a running task is being stopped (lf_future.stop). */
enum { LF_STOP_NONE = 0, LF_STOP_CANCEL, LF_STOP_TIMEOUT };

/* What a task is: one call, or a chunk of map items (see lf_task.h). */
typedef enum lf_taskkind { LF_TASK_CALL, LF_TASK_CHUNK } lf_taskkind;

struct lf_future {
  /* Fields ordered so that the small ones fill one cache line with the
  ** mutex and no padding is left: 100 000 queued futures are 100 000 of
  ** these. */
  pthread_mutex_t mu;
  atomic_int refs;
  atomic_int stop;         /* LF_STOP_*: set under mu, read by the runner's
                              hook without it */
  atomic_uchar done;       /* 1 once CANCELLED or FINISHED: read without the
                              lock by a waiter that spins before it blocks */
  unsigned char kind;      /* the lf_taskkind of the task below */
  unsigned char state;     /* an lf_fstate, under mu */
  unsigned char failed;    /* FINISHED with an error */
  /* How the result decodes: with the options of the executor that runs
  ** the task (a process pool's results carry no handle pointers, and Lua
  ** functions only when the pool allows them), or the defaults. */
  unsigned char dec_in_process, dec_functions;
  unsigned short dec_depth;
  double run_limit;        /* seconds the task may run (a task timeout), 0:
                              none */
  lf_buf result;           /* values, or (error, traceback) when failed */
  lf_waitnode *waiters;    /* a doubly-linked list of registrations */
  lf_inboxnode *inboxes;   /* states with callbacks to run */
  /* The task, embedded so that submit allocates one object. Written by the
  ** submitter before the future is queued, read by the worker that takes
  ** it, freed when it runs or is cancelled. */
  lf_buf call;
  lf_future *next_queued;  /* the executor's queue link */
  lf_origin *origin;       /* who queued the task, or NULL (one reference) */
  lf_runner *runner;       /* who runs it now (under mu), or NULL */
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
/* Is f done, after a spin when that pays (lf_spin.h), of at most
** `timeout` seconds (negative: the spin's own limit)? No lock taken. */
int lf_future_spin(lf_future *f, double timeout);

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

/* While f is PENDING, exchange its encoded call with *b and return 1 (a
** back-end that hands the call to a worker before the task starts, and may
** give it back); otherwise leave both and return 0. Under f's mutex, so that
** it never meets a cancel that frees the call. */
int lf_future_swap_call(lf_future *f, lf_buf *b);

/* Completes the future with *res (moved: *res is left empty). Returns 0,
** or -1 if the future was already CANCELLED or FINISHED (res untouched). A
** future being stopped with LF_STOP_CANCEL ends CANCELLED instead (res is
** dropped); one stopped with LF_STOP_TIMEOUT takes res as given (its runner
** makes it a TimeoutError). Forgets its runner. */
int lf_future_finish(lf_future *f, lf_buf *res, int failed);

/* The runner of f while it runs; set by the runner once f is RUNNING, and
** cleared (NULL) before it may not be stopped any more (its state goes on
** to another task). */
void lf_future_run_by(lf_future *f, lf_runner *r);

/* f:interrupt(): PENDING -> CANCELLED and 1; RUNNING -> asks its runner
** to stop it with `why` (LF_STOP_CANCEL or LF_STOP_TIMEOUT) and 1 (the
** future will end CANCELLED, or as a TimeoutError); CANCELLED -> 1; a
** FINISHED future, or one already being stopped for the other reason -> 0. */
int lf_future_interrupt(lf_future *f, int why);

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
/* Undo lf_inbox_watch: f will not be queued in ib when it completes
** (nothing happens if it was not registered, or is queued already). */
void lf_inbox_unwatch(lf_inbox *ib, lf_future *f);
/* Takes the next completed future (the caller owns the reference), or NULL. */
lf_future *lf_inbox_pop(lf_inbox *ib);
/* Takes the wake-up out of the descriptor if the queue is empty (what a
** loop's poll does after delivering), so that it is readable again only
** when more arrives. */
void lf_inbox_drain(lf_inbox *ib);
/* The wake-up descriptor of ib, made on the first call (an eventfd, or a
** pipe where there is none), readable at once if the queue is not empty.
** Only the thread of ib's state calls it. Returns -1 with errno set when no
** descriptor can be made; lf_inbox_close closes it. */
int lf_inbox_pollfd(lf_inbox *ib);

#endif
