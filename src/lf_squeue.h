/*
** lf_squeue.h — the shared queue behind futures.Queue: a FIFO of encoded
** values (each a codec buffer that pins the shared objects it names),
** bounded or not, that can be closed, shared by every state of the process
** as one reference-counted object, and by worker processes through a proxy
** (a queue object of the worker whose operations its host serves: the
** worker's transport, lf_process_worker.c, carries them over its socket to
** lf_process_pool.c).
**
** Blocked operations wait in the queue's two FIFO lists of waiters: gets
** waiting for an item, puts waiting for room. An item or room goes to the
** oldest waiter first, whoever it is: a thread of this process (woken on
** its own condition variable), a worker process's request parked by its
** pool (told through a hook, the pool answers it), or a future (the hook
** completes it: how an event loop waits for an item without a thread).
**
** Threads: every function may be called from any thread. q->mu guards the
** items, the waiter lists and `closed`; `count` is also read without it
** (spinners, qsize). A waiter's hooks run with q->mu held and may take
** only locks that are never held while q->mu is taken: a future's mutex
** (and those below it), a pool's done-list mutex. Lock order: a process
** pool's mutex, then q->mu, then those. The imports table of a worker
** process (its proxies) has its own mutex, `imports_mu`, never held with
** another lock.
**
** Ownership: lf_squeue_new returns a queue with one reference; every Lua
** userdata, every buffer that pins it, every parked waiter of a process
** pool, a pool for each worker it was shared with and a worker's imports
** table hold one each. An item belongs to the queue while buffered and to
** whoever took it afterwards (lf_sqitem_free). A parked waiter belongs to
** whoever parked it, but for a future's waiter, which the queue owns and
** disposes of through its hooks (a queue freed with such waiters closes
** them).
*/
#ifndef LF_SQUEUE_H
#define LF_SQUEUE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lf_codec.h"
#include "lf_spin.h"

#define LF_SQUEUE_WIRE 'Q'      /* its code in T_REMOTE */
#define LF_SQUEUE_MT "futures.Queue"

/* Outcomes of the operations. */
enum { LF_SQ_OK, LF_SQ_EMPTY, LF_SQ_FULL, LF_SQ_CLOSED, LF_SQ_PENDING };

#define LF_SQ_INLINE 24   /* bytes of a plain string kept in the item */

/* An encoded value and how to decode it; or, for the commonest items, a
** plain value kept as it is (a boolean, a number, a short string), which
** costs no codec pass and no allocation. */
typedef struct lf_sqitem {
  lf_buf buf;                /* the encoded value, owning its pins; empty
                                for a plain one */
  unsigned char untrusted;   /* put by a worker process: decoded as its
                                pool decodes results */
  unsigned char functions;   /* untrusted: Lua functions allowed */
  unsigned short depth;      /* untrusted: the pool's max_depth */
  unsigned char plain;       /* 0, or the Lua type of a plain value */
  unsigned char isint;       /* a plain number is an integer */
  unsigned char slen;        /* a plain string's length */
  union {
    int64_t i;               /* an integer, or a boolean (0 or 1) */
    double f;
    char s[LF_SQ_INLINE];
  } v;
} lf_sqitem;

#define LF_SQITEM_INIT { LF_BUF_INIT, 0, 0, 0, 0, 0, 0, { 0 } }

void lf_sqitem_free(lf_sqitem *it);
/* The options to decode it with (its pins included). */
lf_codec_opts lf_sqitem_opts(const lf_sqitem *it);
/* Make a plain item an encoded one (for whoever needs the bytes: a worker
** process, a future's result). Returns 0, or -1 when out of memory. */
int lf_sqitem_encode(lf_sqitem *it);

typedef struct lf_sqwait lf_sqwait;
struct lf_sqwait {
  lf_sqwait *prev, *next;    /* in the queue's list while parked */
  int put;                   /* waits for room (with item) or for an item */
  int status;                /* LF_SQ_PENDING while parked; then LF_SQ_OK
                                (received, or its item taken) or
                                LF_SQ_CLOSED (its item, if any, still here) */
  lf_sqitem item;
  /* Hooks (q->mu held, see above). claim: a get is about to receive an
  ** item: 0 if it still wants one (it cannot back out after), or -1 if it
  ** does not, having disposed of itself (the item goes to the next). done:
  ** the status left PENDING; the queue never touches w again. A waiter
  ** with no done hook is a thread's: the queue signals its cv. */
  int (*claim)(lf_sqwait *w);
  void (*done)(lf_sqwait *w);
  pthread_cond_t cv;
  void *ud;                  /* the hooks' */
};

typedef struct lf_squeue {
  pthread_mutex_t mu;
  atomic_int refs;
  /* Items buffered: on a cache line of its own, since a consumer that
  ** spins reads it while the producer takes the mutex. */
  _Alignas(64) atomic_size_t count;
  char pad_[64 - sizeof(atomic_size_t)];
  size_t maxsize;            /* 0: no limit */
  int closed;
  lf_sqitem *ring;           /* items: ring[(head + i) % cap], i < count */
  size_t cap, head;
  lf_sqwait *getters, *getters_tail;
  lf_sqwait *putters, *putters_tail;
  uint64_t id;               /* lf_share_new_id, or the host's id */
  uint64_t remote;           /* a proxy: the host's id of the queue (then
                                nothing above but refs and id is used) */
  atomic_int forgotten;      /* a proxy the host no longer serves */
  lf_spin_site getters_spin; /* how long a get may watch count first */
} lf_squeue;

/* A new open queue; maxsize 0 for no limit. NULL when out of memory. */
lf_squeue *lf_squeue_new(size_t maxsize);
void lf_squeue_retain(lf_squeue *q);
void lf_squeue_release(lf_squeue *q);

/* Without blocking. put: LF_SQ_OK (*item moved in, or handed to a
** waiting get), LF_SQ_FULL or LF_SQ_CLOSED (*item untouched). get:
** LF_SQ_OK (*out filled), LF_SQ_EMPTY, or LF_SQ_CLOSED once closed and
** drained. */
int lf_squeue_put(lf_squeue *q, lf_sqitem *item);
int lf_squeue_get(lf_squeue *q, lf_sqitem *out);

/* Try w's operation and, if it would block, park w (its fields set:
** put, item for a put, hooks, cv for a thread's). Returns LF_SQ_OK or
** LF_SQ_CLOSED when done at once (w->item then as after a completion), or
** LF_SQ_PENDING once parked. */
int lf_squeue_park(lf_squeue *q, lf_sqwait *w);
/* Withdraw a parked w: returns 1 if it was still waiting, 0 if it
** completed meanwhile (see w->status and w->item). */
int lf_squeue_unpark(lf_squeue *q, lf_sqwait *w);
/* A thread's wait for its parked w, until the monotonic time `until`
** (negative: no limit) or a completion; returns w->status. */
int lf_squeue_wait(lf_squeue *q, lf_sqwait *w, double until);

/* Give back an item that was taken but could not be used (an interrupted
** get, a worker process that died before it had it): first in line again,
** whatever maxsize says, closed or not. */
void lf_squeue_unget(lf_squeue *q, lf_sqitem *item);

/* Close: every parked waiter completes with LF_SQ_CLOSED; puts fail from
** now on; gets take what is left, then fail. Idempotent. */
void lf_squeue_close(lf_squeue *q);
int lf_squeue_closed(lf_squeue *q);
size_t lf_squeue_size(lf_squeue *q);

/* Watch for an item a moment before blocking, up to `seconds` (negative:
** the queue's own budget), when lf_spin allows it; 1 if one came. */
int lf_squeue_spin(lf_squeue *q, double seconds);

/* ---- proxies: a worker process's view of its host's queues ---- */

/* How a proxy's operations reach the host: set by the worker process at
** start (lf_process_worker.c). Each runs on the thread that called it,
** blocks until the host answers, and returns an LF_SQ_* outcome, or -1
** with a message in err. put sends item (which stays the caller's); get
** fills *out. */
typedef struct lf_squeue_transport {
  int (*put)(uint64_t id, const lf_sqitem *item, double timeout, char *err,
             size_t errlen);
  int (*get)(uint64_t id, double timeout, lf_sqitem *out, char *err,
             size_t errlen);
  int (*close)(uint64_t id, char *err, size_t errlen);
  int (*size)(uint64_t id, size_t *n, char *err, size_t errlen);
} lf_squeue_transport;

void lf_squeue_set_transport(const lf_squeue_transport *t);
const lf_squeue_transport *lf_squeue_transport_of(void);   /* or NULL */

/* The proxy of the host's queue `id` (a new reference), made on first use
** and kept in the imports table; NULL when out of memory. */
lf_squeue *lf_squeue_proxy(uint64_t id);
/* As lf_sarray_unused / lf_sarray_forget, for proxies. */
size_t lf_squeue_unused(uint64_t *ids, size_t max);
void lf_squeue_forget(uint64_t id);
size_t lf_squeue_nimports(void);

#endif
