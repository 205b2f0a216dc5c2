/*
** lf_future.c — the future's state machine, and the two ways a completion
** is announced: waiters (a thread blocked in result, wait or as_completed)
** and inboxes (a state that has callbacks to run).
**
** Threads: any thread. f->mu guards the future's state, result, waiter and
** inbox lists; w->mu guards a waiter's completed list; ib->mu guards an
** inbox's queue and its wake-up descriptor. Lock order: a future's mutex
** first, then one waiter's or one inbox's; no other nesting. A completion
** notifies under the future's lock, so once lf_waiter_detach has unlinked a
** waiter no completion can reach it any more, and the waiter may be freed.
** The descriptor of futures.pollfd is written by the completing thread and
** drained by the inbox's state, each under ib->mu (see lf_future.h).
**
** Ownership: see lf_future.h. A waiter does not retain the futures it is
** attached to: the caller keeps them alive (they are referenced by Lua
** values or by the caller) until it detaches.
*/
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>
#if defined(__linux__) && !defined(LF_POLLFD_PIPE)
#define LF_HAVE_EVENTFD 1
#include <sys/eventfd.h>
#endif

#include "lf_common.h"
#include "lf_future.h"
#include "lf_spin.h"

static void inbox_signal_locked(lf_inbox *ib);

lf_future *lf_future_new(void) {
  lf_future *f = calloc(1, sizeof *f);
  if (f == NULL) return NULL;
  LF_CHECK(pthread_mutex_init(&f->mu, NULL));
  atomic_init(&f->refs, 1);
  atomic_init(&f->done, 0);
  atomic_init(&f->stop, LF_STOP_NONE);
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
  if (f->origin != NULL) lf_origin_release(f->origin);
  LF_CHECK(pthread_mutex_destroy(&f->mu));
  free(f);
}

void lf_origin_retain(lf_origin *o) {
  atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

void lf_origin_release(lf_origin *o) {
  if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
    o->release(o);
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
  lf_fstate s = (lf_fstate)f->state;
  lf_unlock(&f->mu);
  return s;
}

int lf_future_done(lf_future *f) {
  lf_fstate s = lf_future_state(f);
  return s == LF_CANCELLED || s == LF_FINISHED;
}

/* Each thread's waits are one spin site: whether spinning for a result
** paid lately is a property of what this thread waits for. */
static _Thread_local lf_spin_site waits;
static _Thread_local int waits_ready;

int lf_future_spin(lf_future *f, double timeout) {
  if (atomic_load_explicit(&f->done, memory_order_acquire)) return 1;
  if (!waits_ready) {
    lf_spin_site_init(&waits, LF_SPIN_WAITER_NS);
    waits_ready = 1;
  }
  /* A result computed by a thread worker of this process: that worker is
  ** counted busy. Anything else (a process worker, another state's
  ** set_result) needs a core that is not counted. */
  lf_spinning sp;
  if (timeout == 0 ||
      !lf_spin_begin(&waits, f->dec_in_process ? LF_SPIN_FOR_WORKER
                                               : LF_SPIN_FOR_OTHER, &sp))
    return 0;
  if (timeout > 0 && sp.last + timeout < sp.until) sp.until = sp.last + timeout;
  int paid = 0;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(&f->done, memory_order_acquire)) { paid = 1; break; }
    if ((i & 31) == 0 && !lf_spin_go_on(&sp)) break;
    lf_cpu_relax();
  }
  lf_spin_end(&waits, &sp, paid);
  return paid;
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
      inbox_signal_locked(ib);
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

int lf_future_swap_call(lf_future *f, lf_buf *b) {
  lf_lock(&f->mu);
  int pending = f->state == LF_PENDING;
  if (pending) {
    lf_buf t = f->call;
    f->call = *b;
    *b = t;
  }
  lf_unlock(&f->mu);
  return pending;
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
  f->runner = NULL;
  if (atomic_load_explicit(&f->stop, memory_order_relaxed) == LF_STOP_CANCEL) {
    f->state = LF_CANCELLED;   /* interrupted: what it returned is dropped */
    lf_buf_free(res);
  } else {
    f->result = *res;
    memset(res, 0, sizeof *res);
    f->failed = failed;
    f->state = LF_FINISHED;
  }
  lf_buf_free(&f->call);
  notify_locked(f);
  lf_unlock(&f->mu);
  return 0;
}

void lf_future_run_by(lf_future *f, lf_runner *r) {
  lf_lock(&f->mu);
  if (f->state == LF_RUNNING) {
    f->runner = r;
    /* Interrupted between RUNNING and now: stop it at once. */
    if (r != NULL &&
        atomic_load_explicit(&f->stop, memory_order_relaxed) != LF_STOP_NONE)
      r->stop(r, f);
  }
  lf_unlock(&f->mu);
}

int lf_future_interrupt(lf_future *f, int why) {
  int ok;
  lf_lock(&f->mu);
  switch (f->state) {
    case LF_PENDING:
      if (why != LF_STOP_CANCEL) { ok = 0; break; }
      f->state = LF_CANCELLED;
      lf_buf_free(&f->call);
      notify_locked(f);
      ok = 1;
      break;
    case LF_RUNNING: {
      /* A compare-and-set: the task's own hook may set LF_STOP_TIMEOUT
      ** without the lock when its run limit passes. */
      int was = LF_STOP_NONE;
      if (!atomic_compare_exchange_strong(&f->stop, &was, why)) {
        ok = was == why;
        break;
      }
      if (f->runner != NULL) f->runner->stop(f->runner, f);
      ok = 1;
      break;
    }
    case LF_CANCELLED: ok = why == LF_STOP_CANCEL; break;
    default: ok = 0; break;
  }
  lf_unlock(&f->mu);
  return ok;
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
  ib->fd = ib->wfd = -1;
  return ib;
}

/* Something was queued: make the descriptor readable. At most one wake-up
** is ever in it (signalled), so the non-blocking write finds room: an
** eventfd's counter or a pipe's buffer is far from full. */
static void inbox_signal_locked(lf_inbox *ib) {
  if (ib->wfd < 0 || ib->signalled) return;
  ib->signalled = 1;
  uint64_t one = 1;   /* an eventfd takes 8 bytes; a pipe takes the first */
  size_t len = ib->wfd == ib->fd ? sizeof one : 1;
  while (write(ib->wfd, &one, len) < 0 && errno == EINTR) {}
}

/* The queue is empty: take the wake-up out of the descriptor. */
static void inbox_drain_locked(lf_inbox *ib) {
  if (!ib->signalled || ib->head != NULL) return;
  ib->signalled = 0;
  uint64_t buf[8];
  ssize_t r;
  do r = read(ib->fd, buf, ib->wfd == ib->fd ? sizeof buf[0] : sizeof buf);
  while (r < 0 && errno == EINTR);
}

/* A non-blocking, close-on-exec pair of descriptors: an eventfd (both ends
** in one) where there is one, else a pipe (-DLF_POLLFD_PIPE forces the
** pipe, to test that path). 0, or -1 with errno. */
static int make_wakeup(int *rfd, int *wfd) {
#if defined(LF_HAVE_EVENTFD)
  int e = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (e >= 0) { *rfd = *wfd = e; return 0; }
  /* No eventfd (an old kernel, a sandbox that forbids it): a pipe. */
#endif
  int p[2];
  if (pipe(p) != 0) return -1;
  for (int i = 0; i < 2; i++) {
    if (fcntl(p[i], F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(p[i], F_SETFL, fcntl(p[i], F_GETFL) | O_NONBLOCK) != 0) {
      int err = errno;
      close(p[0]);
      close(p[1]);
      errno = err;
      return -1;
    }
  }
  *rfd = p[0];
  *wfd = p[1];
  return 0;
}

void lf_inbox_drain(lf_inbox *ib) {
  lf_lock(&ib->mu);
  inbox_drain_locked(ib);
  lf_unlock(&ib->mu);
}

int lf_inbox_pollfd(lf_inbox *ib) {
  /* Only this state's thread makes the descriptor: no second one can
  ** appear between this check and the publication below. */
  lf_lock(&ib->mu);
  int fd = ib->fd;
  lf_unlock(&ib->mu);
  if (fd >= 0) return fd;
  int rfd, wfd;
  if (make_wakeup(&rfd, &wfd) != 0) return -1;
  lf_lock(&ib->mu);
  ib->fd = rfd;
  ib->wfd = wfd;
  /* Completions that came before: readable now, as level semantics say. */
  if (ib->head != NULL) inbox_signal_locked(ib);
  lf_unlock(&ib->mu);
  return rfd;
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
  /* Taken out under the lock: no completion writes to them afterwards. */
  int fd = ib->fd, wfd = ib->wfd;
  ib->fd = ib->wfd = -1;
  ib->signalled = 0;
  lf_unlock(&ib->mu);
  if (fd >= 0) close(fd);
  if (wfd >= 0 && wfd != fd) close(wfd);
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

void lf_inbox_unwatch(lf_inbox *ib, lf_future *f) {
  lf_inboxnode *found = NULL;
  lf_lock(&f->mu);
  for (lf_inboxnode **p = &f->inboxes; *p != NULL; p = &(*p)->next) {
    if ((*p)->inbox == ib) {
      found = *p;
      *p = found->next;
      break;
    }
  }
  lf_unlock(&f->mu);
  if (found == NULL) return;
  free(found);
  lf_inbox_release(ib);   /* the registration's; the state holds one */
}

lf_future *lf_inbox_pop(lf_inbox *ib) {
  /* Empty is read without the lock: a push that this misses has left the
  ** descriptor readable, so a loop comes back for it. */
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
