/*
** lf_squeue.c — the shared queue (lf_squeue.h): a ring of encoded items,
** two FIFO lists of parked waiters, and a worker process's proxies.
**
** Threads: any thread; see lf_squeue.h for q->mu, the hooks and the lock
** order. An item or room is always handed to a parked waiter under q->mu,
** and a thread's waiter re-checks its status under q->mu in a loop, so no
** wake-up is lost and a waiter on a thread's stack is never touched after
** that thread saw its status change.
**
** Ownership: see lf_squeue.h. The ring owns the items in it; taking one
** moves it (with its pins) to the taker.
*/
#include <stdlib.h>
#include <string.h>

#include "lf_common.h"
#include "lf_squeue.h"

void lf_sqitem_free(lf_sqitem *it) {
  lf_buf_free(&it->buf);
  it->plain = 0;
}

int lf_sqitem_encode(lf_sqitem *it) {
  if (!it->plain) return 0;
  if (lf_encode_scalar(it->plain, it->isint, it->v.i, it->v.f, it->v.s,
                       it->slen, &it->buf) != 0)
    return -1;
  it->plain = 0;
  return 0;
}

lf_codec_opts lf_sqitem_opts(const lf_sqitem *it) {
  lf_codec_opts o = lf_codec_defaults;
  if (it->untrusted) {
    o.in_process = 0;
    o.functions = it->functions;
    if (it->depth > 0) o.max_depth = it->depth;
  }
  o.pins = &it->buf;
  return o;
}

lf_squeue *lf_squeue_new(size_t maxsize) {
  /* aligned as its count field asks */
  size_t size = (sizeof(lf_squeue) + 63) & ~(size_t)63;
  lf_squeue *q = aligned_alloc(64, size);
  if (q == NULL) return NULL;
  memset(q, 0, size);
  LF_CHECK(pthread_mutex_init(&q->mu, NULL));
  atomic_init(&q->refs, 1);
  atomic_init(&q->count, 0);
  atomic_init(&q->forgotten, 0);
  q->maxsize = maxsize;
  q->id = lf_share_new_id();
  lf_spin_site_init(&q->getters_spin, LF_SPIN_WAITER_NS);
  return q;
}

void lf_squeue_retain(lf_squeue *q) {
  atomic_fetch_add_explicit(&q->refs, 1, memory_order_relaxed);
}

static void complete_locked(lf_sqwait *w, int status);

void lf_squeue_release(lf_squeue *q) {
  if (atomic_fetch_sub_explicit(&q->refs, 1, memory_order_acq_rel) != 1)
    return;
  /* Only futures' waiters can be left (every other waiter holds a
  ** reference): nobody can put any more, so they learn that it closed. */
  while (q->getters != NULL) {
    lf_sqwait *w = q->getters;
    q->getters = w->next;
    complete_locked(w, LF_SQ_CLOSED);
  }
  size_t n = atomic_load_explicit(&q->count, memory_order_relaxed);
  for (size_t i = 0; i < n; i++)
    lf_sqitem_free(&q->ring[(q->head + i) % q->cap]);
  free(q->ring);
  LF_CHECK(pthread_mutex_destroy(&q->mu));
  free(q);
}

/* ---- the ring (q->mu held) ---- */

static int ring_grow_locked(lf_squeue *q) {
  size_t n = atomic_load_explicit(&q->count, memory_order_relaxed);
  if (n < q->cap) return 0;
  size_t cap = q->cap ? 2 * q->cap : 8;
  lf_sqitem *r = malloc(cap * sizeof *r);
  if (r == NULL) return -1;
  for (size_t i = 0; i < n; i++) r[i] = q->ring[(q->head + i) % q->cap];
  free(q->ring);
  q->ring = r;
  q->cap = cap;
  q->head = 0;
  return 0;
}

/* Moves *item in at the back (or the front); -1 when out of memory, with
** *item untouched. */
static int ring_push_locked(lf_squeue *q, lf_sqitem *item, int front) {
  if (ring_grow_locked(q) != 0) return -1;
  size_t n = atomic_load_explicit(&q->count, memory_order_relaxed);
  if (front) {
    q->head = (q->head + q->cap - 1) % q->cap;
    q->ring[q->head] = *item;
  } else {
    q->ring[(q->head + n) % q->cap] = *item;
  }
  memset(item, 0, sizeof *item);
  atomic_store_explicit(&q->count, n + 1, memory_order_release);
  return 0;
}

#define RING_MIN 64   /* slots a ring keeps however empty it gets */

static void ring_pop_locked(lf_squeue *q, lf_sqitem *out) {
  size_t n = atomic_load_explicit(&q->count, memory_order_relaxed);
  *out = q->ring[q->head];
  q->head = (q->head + 1) % q->cap;
  atomic_store_explicit(&q->count, n - 1, memory_order_relaxed);
  /* A burst that has drained gives its memory back (a quarter of the
  ** room, once an eighth is used: no grow-shrink ping-pong). */
  if (q->cap > RING_MIN && n - 1 < q->cap / 8) {
    size_t cap = q->cap / 4 < RING_MIN ? RING_MIN : q->cap / 4;
    lf_sqitem *r = malloc(cap * sizeof *r);
    if (r == NULL) return;   /* keep the big one */
    for (size_t i = 0; i < n - 1; i++) r[i] = q->ring[(q->head + i) % q->cap];
    free(q->ring);
    q->ring = r;
    q->cap = cap;
    q->head = 0;
  }
}

/* ---- waiters (q->mu held) ---- */

static void link_locked(lf_sqwait **head, lf_sqwait **tail, lf_sqwait *w) {
  w->next = NULL;
  w->prev = *tail;
  if (*tail) (*tail)->next = w; else *head = w;
  *tail = w;
}

static void unlink_locked(lf_sqwait **head, lf_sqwait **tail, lf_sqwait *w) {
  if (w->prev) w->prev->next = w->next; else *head = w->next;
  if (w->next) w->next->prev = w->prev; else *tail = w->prev;
  w->prev = w->next = NULL;
}

/* w is unlinked: give it its outcome. The last touch of w. */
static void complete_locked(lf_sqwait *w, int status) {
  w->status = status;
  if (w->done != NULL) w->done(w);
  else lf_signal(&w->cv);
}

/* Hands *item to the oldest get that still wants one; 1 if one took it. */
static int hand_to_getter_locked(lf_squeue *q, lf_sqitem *item) {
  while (q->getters != NULL) {
    lf_sqwait *w = q->getters;
    unlink_locked(&q->getters, &q->getters_tail, w);
    if (w->claim != NULL && w->claim(w) != 0) continue;   /* disposed of */
    w->item = *item;
    memset(item, 0, sizeof *item);
    complete_locked(w, LF_SQ_OK);
    return 1;
  }
  return 0;
}

/* Room was made: let the oldest parked puts in. */
static void admit_putters_locked(lf_squeue *q) {
  while (q->putters != NULL &&
         (q->maxsize == 0 ||
          atomic_load_explicit(&q->count, memory_order_relaxed) < q->maxsize)) {
    lf_sqwait *w = q->putters;
    if (ring_push_locked(q, &w->item, 0) != 0) return;   /* stays parked */
    unlink_locked(&q->putters, &q->putters_tail, w);
    complete_locked(w, LF_SQ_OK);
  }
}

static int put_locked(lf_squeue *q, lf_sqitem *item) {
  if (q->closed) return LF_SQ_CLOSED;
  if (hand_to_getter_locked(q, item)) return LF_SQ_OK;
  if (q->maxsize > 0 &&
      atomic_load_explicit(&q->count, memory_order_relaxed) >= q->maxsize)
    return LF_SQ_FULL;
  return ring_push_locked(q, item, 0) == 0 ? LF_SQ_OK : -1;
}

static int get_locked(lf_squeue *q, lf_sqitem *out) {
  if (atomic_load_explicit(&q->count, memory_order_relaxed) > 0) {
    ring_pop_locked(q, out);
    admit_putters_locked(q);
    return LF_SQ_OK;
  }
  return q->closed ? LF_SQ_CLOSED : LF_SQ_EMPTY;
}

/* ---- operations ---- */

int lf_squeue_put(lf_squeue *q, lf_sqitem *item) {
  lf_lock(&q->mu);
  int rc = put_locked(q, item);
  lf_unlock(&q->mu);
  return rc;
}

int lf_squeue_get(lf_squeue *q, lf_sqitem *out) {
  lf_lock(&q->mu);
  int rc = get_locked(q, out);
  lf_unlock(&q->mu);
  return rc;
}

int lf_squeue_park(lf_squeue *q, lf_sqwait *w) {
  w->prev = w->next = NULL;
  lf_lock(&q->mu);
  int rc;
  if (w->put) {
    rc = put_locked(q, &w->item);
    if (rc == LF_SQ_FULL) {
      link_locked(&q->putters, &q->putters_tail, w);
      rc = LF_SQ_PENDING;
    }
  } else {
    rc = get_locked(q, &w->item);
    if (rc == LF_SQ_EMPTY) {
      link_locked(&q->getters, &q->getters_tail, w);
      rc = LF_SQ_PENDING;
    }
  }
  w->status = rc;
  lf_unlock(&q->mu);
  return rc;
}

int lf_squeue_unpark(lf_squeue *q, lf_sqwait *w) {
  lf_lock(&q->mu);
  int was = w->status == LF_SQ_PENDING;
  if (was) {
    if (w->put) unlink_locked(&q->putters, &q->putters_tail, w);
    else unlink_locked(&q->getters, &q->getters_tail, w);
  }
  lf_unlock(&q->mu);
  return was;
}

int lf_squeue_wait(lf_squeue *q, lf_sqwait *w, double until) {
  lf_lock(&q->mu);
  while (w->status == LF_SQ_PENDING) {
    if (lf_cond_wait_until(&w->cv, &q->mu, until) == ETIMEDOUT) break;
  }
  int rc = w->status;
  lf_unlock(&q->mu);
  return rc;
}

void lf_squeue_unget(lf_squeue *q, lf_sqitem *item) {
  lf_lock(&q->mu);
  if (!hand_to_getter_locked(q, item) && ring_push_locked(q, item, 1) != 0)
    lf_sqitem_free(item);   /* out of memory: the one loss we cannot help */
  lf_unlock(&q->mu);
}

void lf_squeue_close(lf_squeue *q) {
  lf_lock(&q->mu);
  if (!q->closed) {
    q->closed = 1;
    while (q->getters != NULL) {
      lf_sqwait *w = q->getters;
      unlink_locked(&q->getters, &q->getters_tail, w);
      complete_locked(w, LF_SQ_CLOSED);
    }
    while (q->putters != NULL) {
      lf_sqwait *w = q->putters;
      unlink_locked(&q->putters, &q->putters_tail, w);
      complete_locked(w, LF_SQ_CLOSED);
    }
  }
  lf_unlock(&q->mu);
}

int lf_squeue_closed(lf_squeue *q) {
  lf_lock(&q->mu);
  int c = q->closed;
  lf_unlock(&q->mu);
  return c;
}

size_t lf_squeue_size(lf_squeue *q) {
  return atomic_load_explicit(&q->count, memory_order_acquire);
}

int lf_squeue_spin(lf_squeue *q, double seconds) {
  /* The putter may be any thread, a worker or not: count it as not busy. */
  lf_spinning sp;
  if (seconds == 0 || !lf_spin_begin(&q->getters_spin, LF_SPIN_FOR_OTHER, &sp))
    return 0;
  if (seconds > 0 && sp.last + seconds < sp.until) sp.until = sp.last + seconds;
  int paid = 0;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(&q->count, memory_order_acquire) > 0) {
      paid = 1;
      break;
    }
    if ((i & 31) == 0 && !lf_spin_go_on(&sp)) break;
    lf_cpu_relax();
  }
  lf_spin_end(&q->getters_spin, &sp, paid);
  return paid;
}

/* ---- proxies ---- */

static _Atomic(const lf_squeue_transport *) transport;

void lf_squeue_set_transport(const lf_squeue_transport *t) {
  atomic_store(&transport, t);
}

const lf_squeue_transport *lf_squeue_transport_of(void) {
  return atomic_load(&transport);
}

static pthread_mutex_t imports_mu = PTHREAD_MUTEX_INITIALIZER;
static lf_squeue **imports;      /* each holds one reference */
static size_t nimports, capimports;

static size_t find_locked(uint64_t id) {
  size_t i = 0;
  while (i < nimports && imports[i]->remote != id) i++;
  return i;
}

lf_squeue *lf_squeue_proxy(uint64_t id) {
  lf_lock(&imports_mu);
  size_t i = find_locked(id);
  lf_squeue *q = i < nimports ? imports[i] : NULL;
  if (q == NULL && nimports == capimports) {
    size_t cap = capimports ? 2 * capimports : 8;
    lf_squeue **t = realloc(imports, cap * sizeof *t);
    if (t != NULL) { imports = t; capimports = cap; }
  }
  if (q == NULL && nimports < capimports && (q = lf_squeue_new(0)) != NULL) {
    q->remote = id;
    q->id = id;
    imports[nimports++] = q;
  }
  if (q != NULL) lf_squeue_retain(q);
  lf_unlock(&imports_mu);
  return q;
}

size_t lf_squeue_unused(uint64_t *ids, size_t max) {
  size_t k = 0;
  lf_lock(&imports_mu);
  for (size_t i = 0; i < nimports && k < max; i++)
    if (atomic_load_explicit(&imports[i]->refs, memory_order_acquire) == 1)
      ids[k++] = imports[i]->remote;
  lf_unlock(&imports_mu);
  return k;
}

void lf_squeue_forget(uint64_t id) {
  lf_squeue *q = NULL;
  lf_lock(&imports_mu);
  size_t i = find_locked(id);
  if (i < nimports) {
    q = imports[i];
    imports[i] = imports[--nimports];
    atomic_store(&q->forgotten, 1);
  }
  lf_unlock(&imports_mu);
  if (q != NULL) lf_squeue_release(q);
}

size_t lf_squeue_nimports(void) {
  lf_lock(&imports_mu);
  size_t n = nimports;
  lf_unlock(&imports_mu);
  return n;
}
