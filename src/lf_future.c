/*
** lf_future.c — the future's state machine, and the two ways a completion
** is announced: waiters (a thread blocked in result, wait or as_completed)
** and inboxes (a state that has callbacks to run).
**
** Threads: any thread. f->mu guards the future's state, result, waiter and
** inbox lists; w->mu guards a waiter's completed list; ib->mu guards an
** inbox's queue. Lock order: a future's mutex first, then one waiter's or
** one inbox's; no other nesting. A completion notifies under the future's
** lock, so once lf_waiter_detach has unlinked a waiter no completion can
** reach it any more, and the waiter may be freed.
**
** Ownership: see lf_future.h. A waiter does not retain the futures it is
** attached to: the caller keeps them alive (they are referenced by Lua
** values or by the caller) until it detaches.
*/
#include "lf_common.h"
#include "lf_future.h"

lf_future *lf_future_new(void) {
  lf_future *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  LF_CHECK(pthread_mutex_init(&f->mu, NULL));
  atomic_init(&f->refs, 1);
  atomic_init(&f->done, 0);
  f->state = LF_PENDING;
  lf_future_decode_with(f, &lf_codec_defaults);
  return f;
}

void lf_future_retain(lf_future *f) {
  atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void lf_future_release(lf_future *f) {
  if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
    return;
  /* Nobody else can reach f: no waiter is attached (they detach before
  ** dropping their reference) and no inbox holds it. */
  lf_buf_free(&f->result);
  lf_buf_free(&f->call);
  lf_inboxnode *n = f->inboxes;
  while (n != NULL) {   /* registrations of a future that never completed */
    lf_inboxnode *next = n->next;
    lf_inbox_release(n->inbox);
    free(n);
    n = next;
  }
  LF_CHECK(pthread_mutex_destroy(&f->mu));
  free(f);
}

void lf_future_decode_with(lf_future *f, const lf_codec_opts *opts) {
  f->dec_in_process = (unsigned char)(opts->in_process != 0);
  f->dec_functions = (unsigned char)(opts->functions != 0);
  f->dec_depth = (unsigned short)opts->max_depth;
}

lf_codec_opts lf_future_decode_opts(lf_future *f) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = f->dec_in_process;
  o.functions = f->dec_functions;
  o.max_depth = f->dec_depth;
  o.pins = &f->result;   /* its shared objects, pinned by the result */
  return o;
}

lf_fstate lf_future_state(lf_future *f) {
  lf_lock(&f->mu);
  lf_fstate s = f->state;
  lf_unlock(&f->mu);
  return s;
}

int lf_future_done(lf_future *f) {
  lf_fstate s = lf_future_state(f);
  return s == LF_CANCELLED || s == LF_FINISHED;
}

int lf_future_spin(lf_future *f, double seconds) {
  double until = lf_now() + seconds;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(&f->done, memory_order_acquire)) return 1;
    if ((i & 63) == 0 && lf_now() >= until) return 0;
    lf_cpu_relax();
  }
}

/* Announce completion to every waiter and inbox. Called with f->mu held,
** right after the state became CANCELLED or FINISHED. */
static void notify_locked(lf_future *f) {
  /* Inboxes first, waiters next, the done flag last: whoever learns that f
  ** is done (by waking or by spinning) then finds its callbacks queued. */
  lf_inboxnode *n = f->inboxes;
  f->inboxes = NULL;
  while (n != NULL) {
    lf_inboxnode *next = n->next;
    lf_inbox *ib = n->inbox;
    lf_lock(&ib->mu);
    if (ib->closed) {
      lf_unlock(&ib->mu);
      lf_inbox_release(ib);
      free(n);
    } else {
      /* The node moves into the inbox queue, with a reference to f and the
      ** registration's reference to ib. */
      lf_future_retain(f);
      n->next = NULL;
      if (ib->tail) ib->tail->next = n; else ib->head = n;
      ib->tail = n;
      atomic_fetch_add_explicit(&ib->pending, 1, memory_order_release);
      lf_unlock(&ib->mu);
    }
    n = next;
  }
  for (lf_waitnode *w = f->waiters; w != NULL; w = w->next) {
    lf_waiter *wt = w->waiter;
    w->linked = 0;
    lf_lock(&wt->mu);
    wt->done[wt->ndone++] = f;
    lf_signal(&wt->cv);
    lf_unlock(&wt->mu);
  }
  f->waiters = NULL;
  atomic_store_explicit(&f->done, 1, memory_order_release);
}

int lf_future_cancel(lf_future *f) {
  int ok;
  lf_lock(&f->mu);
  switch (f->state) {
    case LF_PENDING:
      f->state = LF_CANCELLED;
      lf_buf_free(&f->call);   /* no worker will read it: it never runs */
      notify_locked(f);
      ok = 1;
      break;
    case LF_CANCELLED: ok = 1; break;
    default: ok = 0; break;
  }
  lf_unlock(&f->mu);
  return ok;
}

void lf_future_cancel_queue(lf_future *q) {
  while (q != NULL) {
    lf_future *next = q->next_queued;
    lf_future_cancel(q);
    lf_future_release(q);
    q = next;
  }
}

int lf_future_set_running(lf_future *f) {
  int rc;
  lf_lock(&f->mu);
  if (f->state == LF_PENDING) { f->state = LF_RUNNING; rc = 1; }
  else rc = f->state == LF_CANCELLED ? 0 : -1;
  lf_unlock(&f->mu);
  return rc;
}

int lf_future_finish(lf_future *f, lf_buf *res, int failed) {
  /* A result that holds its own future (f:set_result(f)) must not keep it
  ** alive: whoever decodes the result holds f already. The caller holds a
  ** reference of its own, so this release never frees f. */
  lf_buf_weaken(res, f);
  lf_lock(&f->mu);
  if (f->state == LF_CANCELLED || f->state == LF_FINISHED) {
    lf_unlock(&f->mu);
    return -1;
  }
  f->result = *res;
  memset(res, 0, sizeof *res);
  f->failed = failed;
  f->state = LF_FINISHED;
  lf_buf_free(&f->call);
  notify_locked(f);
  lf_unlock(&f->mu);
  return 0;
}

/* ---- waiters ---- */

int lf_waiter_init(lf_waiter *w, size_t n) {
  memset(w, 0, sizeof *w);
  if (n <= 1) {
    w->nodes = &w->one_node;
    w->done = &w->one_done;
  } else {
    w->nodes = calloc(n, sizeof *w->nodes);
    w->done = calloc(n, sizeof *w->done);
    if (w->nodes == NULL || w->done == NULL) {
      free(w->nodes);
      free(w->done);
      return -1;
    }
  }
  w->n = n;
  LF_CHECK(pthread_mutex_init(&w->mu, NULL));
  lf_cond_init(&w->cv);
  return 0;
}

void lf_waiter_attach(lf_waiter *w, lf_future *f) {
  lf_waitnode *node = &w->nodes[w->nattached++];
  node->waiter = w;
  node->future = f;
  lf_lock(&f->mu);
  if (f->state == LF_CANCELLED || f->state == LF_FINISHED) {
    lf_lock(&w->mu);
    w->done[w->ndone++] = f;
    lf_unlock(&w->mu);
  } else {
    node->prev = NULL;
    node->next = f->waiters;
    if (f->waiters) f->waiters->prev = node;
    f->waiters = node;
    node->linked = 1;
  }
  lf_unlock(&f->mu);
}

void lf_waiter_detach(lf_waiter *w) {
  for (size_t i = 0; i < w->nattached; i++) {
    lf_waitnode *node = &w->nodes[i];
    lf_future *f = node->future;
    lf_lock(&f->mu);
    if (node->linked) {
      if (node->prev) node->prev->next = node->next;
      else f->waiters = node->next;
      if (node->next) node->next->prev = node->prev;
      node->linked = 0;
    }
    lf_unlock(&f->mu);
  }
  w->nattached = 0;
}

void lf_waiter_destroy(lf_waiter *w) {
  if (w->n == 0 && w->nodes == NULL) return;
  lf_waiter_detach(w);
  if (w->nodes != &w->one_node) {
    free(w->nodes);
    free(w->done);
  }
  LF_CHECK(pthread_mutex_destroy(&w->mu));
  LF_CHECK(pthread_cond_destroy(&w->cv));
  memset(w, 0, sizeof *w);
}

size_t lf_waiter_wait_until(lf_waiter *w, size_t seen, double until) {
  lf_lock(&w->mu);
  while (w->ndone <= seen) {
    if (lf_cond_wait_until(&w->cv, &w->mu, until) == ETIMEDOUT) break;
  }
  size_t n = w->ndone;
  lf_unlock(&w->mu);
  return n;
}

size_t lf_waiter_count(lf_waiter *w) {
  lf_lock(&w->mu);
  size_t n = w->ndone;
  lf_unlock(&w->mu);
  return n;
}

/* ---- inboxes ---- */

lf_inbox *lf_inbox_new(void) {
  lf_inbox *ib = calloc(1, sizeof *ib);
  if (ib == NULL) return NULL;
  LF_CHECK(pthread_mutex_init(&ib->mu, NULL));
  atomic_init(&ib->refs, 1);
  atomic_init(&ib->pending, 0);
  return ib;
}

void lf_inbox_release(lf_inbox *ib) {
  if (atomic_fetch_sub_explicit(&ib->refs, 1, memory_order_acq_rel) != 1)
    return;
  lf_inboxnode *n = ib->head;
  while (n != NULL) {
    lf_inboxnode *next = n->next;
    lf_future_release(n->future);
    free(n);
    n = next;
  }
  LF_CHECK(pthread_mutex_destroy(&ib->mu));
  free(ib);
}

void lf_inbox_close(lf_inbox *ib) {
  lf_lock(&ib->mu);
  ib->closed = 1;
  lf_inboxnode *n = ib->head;
  ib->head = ib->tail = NULL;
  lf_unlock(&ib->mu);
  while (n != NULL) {   /* queued nodes each hold a reference to ib */
    lf_inboxnode *next = n->next;
    lf_future_release(n->future);
    free(n);
    atomic_fetch_sub_explicit(&ib->refs, 1, memory_order_acq_rel);
    n = next;
  }
  lf_inbox_release(ib);   /* the state's own reference */
}

int lf_inbox_watch(lf_inbox *ib, lf_future *f) {
  lf_inboxnode *node = malloc(sizeof *node);
  if (node == NULL) return -1;
  lf_lock(&f->mu);
  if (f->state == LF_CANCELLED || f->state == LF_FINISHED) {
    lf_unlock(&f->mu);
    free(node);
    return 0;
  }
  atomic_fetch_add_explicit(&ib->refs, 1, memory_order_relaxed);
  node->inbox = ib;
  node->future = f;
  node->next = f->inboxes;
  f->inboxes = node;
  lf_unlock(&f->mu);
  return 1;
}

lf_future *lf_inbox_pop(lf_inbox *ib) {
  if (atomic_load_explicit(&ib->pending, memory_order_acquire) == 0)
    return NULL;
  lf_lock(&ib->mu);
  lf_inboxnode *n = ib->head;
  if (n != NULL) {
    ib->head = n->next;
    if (ib->head == NULL) ib->tail = NULL;
    atomic_fetch_sub_explicit(&ib->pending, 1, memory_order_relaxed);
  }
  lf_unlock(&ib->mu);
  if (n == NULL) return NULL;
  lf_future *f = n->future;
  free(n);
  lf_inbox_release(ib);   /* the registration's reference; the state holds one */
  return f;
}
