/*
** lf_mpi_pool.c — rank 0 of an MPI world: the MPIPoolExecutor back-end
** (lf_executor_ops, created through the core's API table) and the engine
** that runs every such pool of the process from the MPI thread. A serving
** rank runs one task at a time, whatever pool it comes from. A task goes to
** the least-loaded rank: one that runs nothing (the one that went idle last
** first, since its loop is still awake), else, to wait there, the one with
** the fewest waiting (LF_MPI_DEPTH at most) among those that run a task of
** the same pool: it starts there as soon as the one before ends, without a
** round trip. A waiting task is still PENDING (cancel works) and goes back
** to the pool's queue when another rank becomes free first while the pool
** has nothing queued (a reclaim), so a slow task holds up nothing for long.
** A task travels as one TASK frame with the encoded call; the rank answers
** with one RESULT frame whose bytes become the future's result as they
** are, decoded later under the pool's trust rules.
**
** Threads: submit, shutdown, kill_workers and describe run on any thread,
** join on the owner's; they touch the pools under the engine's mutex
** (`eng.mu`) and wake the MPI thread through an eventfd when it sleeps.
** Only the MPI thread sends and receives (lf_mpi_engine_run). A future's
** runner (stop_task) runs under the future's mutex on the thread that calls
** f:interrupt(): it only flags the task and wakes the MPI thread. Lock
** order: eng.mu, then a future's mutex (futures are started, completed and
** failed under eng.mu); nobody takes eng.mu while holding a future's.
**
** Ownership: a pool's queue holds one reference to each queued future; a
** task record (mtask) takes it over when the task is sent, and drops it
** once the future is complete (after which the runner, which points to the
** record, can no longer be called), or gives it back to the queue with a
** reclaimed task. The encoded call leaves the future with its TASK frame
** (the link owns the bytes until MPI has sent them); a reclaimed task's
** call comes back in its answer and returns to the future.
** A pool is in the engine's list from its creation until it is joined:
** every task done, and every rank it opened has answered CLOSE, or the
** world broke; the owner then destroys it through the core's reference
** counting. The engine itself lives as long as the process.
*/
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_mpi.h"

#define BROKEN_TYPE "BrokenMPIPool"
#define LF_MPI_DEPTH 2     /* tasks that may wait on a rank */
#define DYING_GRACE 0.8    /* seconds between SIGTERM and the end */
#define LIVENESS 1.0       /* seconds between looks at spawned ranks */

typedef struct mpool mpool;

typedef struct mtask {
  lf_future *f;              /* one reference (the queue's, moved) */
  mpool *p;
  uint64_t id;
  int rank;
  int started;               /* RUNNING; else PENDING, waiting on its rank */
  atomic_int stop;           /* f:interrupt() asked to stop it */
  int stop_sent, reclaiming;
  lf_runner runner;          /* the future's while it runs (stop_task) */
} mtask;

typedef struct mrank {
  mtask *run;                /* the task it runs, or NULL */
  mtask *wait[LF_MPI_DEPTH]; /* the tasks waiting there, next first */
  int nwait;
  double idle_at;            /* when it last finished one */
  int hello;
  int64_t pid;
  char host[64];
} mrank;

struct mpool {
  lf_executor base;
  uint32_t id;
  mpool *next;               /* in eng.pools, until joined */
  lf_future *qhead, *qtail;  /* submitted, not sent; one reference each */
  size_t nqueued;
  int max_workers;
  int running, waiting;      /* its tasks on ranks, started or not */
  int shutdown, closing, acks, joined, detached;
  int kill_sig;              /* kill_workers: a signal to forward */
  int size;
  unsigned char *opened;     /* [size]: OPEN went to that rank */
  unsigned char *open_msg;   /* OPEN's payload */
  size_t open_len;
  pthread_cond_t joined_cv;
};

static struct engine {
  pthread_mutex_t mu;        /* guards what follows, but the atomics */
  pthread_cond_t ready_cv;   /* every HELLO came, or the world broke */
  int inited;
  mpool *pools;
  mrank *ranks;              /* [size] */
  int size, nhello;
  int running;               /* lf_mpi_engine_run has started */
  int stop;
  char *broken;              /* the world cannot run tasks: why */
  uint64_t next_task;
  uint32_t next_pool;
  int efd;
  atomic_int sleeping;       /* the MPI thread is in ppoll */
  atomic_int stops;          /* stop requests to look at */
  volatile sig_atomic_t dying;
  int died;                  /* dying was handled at died_at */
  double died_at;
  lf_mpi_host *host;         /* the MPI thread's */
  lua_State *scratch;        /* the MPI thread's: builds error objects */
} eng = { .mu = PTHREAD_MUTEX_INITIALIZER, .efd = -1 };

#define api lf_mpi_api

static void wake(void) {
  uint64_t one = 1;
  ssize_t n = write(eng.efd, &one, sizeof one);
  (void)n;   /* EAGAIN: the counter is non-zero already */
}

static void wake_if_asleep(void) {
  if (atomic_load(&eng.sleeping)) wake();
}

int lf_mpi_engine_init(void) {
  lf_lock(&eng.mu);
  if (!eng.inited) {
    eng.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    lf_cond_init(&eng.ready_cv);
    eng.inited = eng.efd >= 0;
  }
  int ok = eng.inited;
  lf_unlock(&eng.mu);
  return ok ? 0 : -1;
}

/* ---- failing futures ---- */

/* Fail f (PENDING or RUNNING) with a BrokenMPIPool error. S: a scratch
** state pointer (the caller closes it). */
static void fail(mpool *p, lf_future *f, const char *msg, lua_State **S) {
  api->future_fail(f, BROKEN_TYPE, msg, &p->base.opts, S);
}

/* Take p's queue (a list linked by next_queued). eng.mu held. */
static lf_future *take_queue_locked(mpool *p) {
  lf_future *q = p->qhead;
  p->qhead = p->qtail = NULL;
  p->nqueued = 0;
  return q;
}

static void fail_list(mpool *p, lf_future *q, const char *msg, lua_State **S) {
  while (q != NULL) {
    lf_future *next = q->next_queued;
    fail(p, q, msg, S);
    api->future_release(q);
    q = next;
  }
}

/* Break p with `why` and fail what it has queued. eng.mu held. */
static void break_pool_locked(mpool *p, const char *why, lua_State **S) {
  if (!api->executor_mark_broken(&p->base, why)) return;
  fail_list(p, take_queue_locked(p), p->base.broken, S);
}

/* ---- the executor interface ---- */

static void pool_joined_locked(mpool *p) {
  p->joined = 1;
  LF_CHECK(pthread_cond_broadcast(&p->joined_cv));
}

/* Take p out of the engine's list: the engine is done with it. */
static void detach_locked(mpool *p) {
  for (mpool **pp = &eng.pools; *pp != NULL; pp = &(*pp)->next)
    if (*pp == p) { *pp = p->next; break; }
  p->next = NULL;
  p->detached = 1;
  if (p->shutdown) pool_joined_locked(p);
}

static int mp_submit(lf_executor *ex, lf_future *f) {
  mpool *p = (mpool *)ex;
  lf_lock(&eng.mu);
  if (p->base.broken) { lf_unlock(&eng.mu); return LF_SUBMIT_BROKEN; }
  if (p->shutdown) { lf_unlock(&eng.mu); return LF_SUBMIT_SHUTDOWN; }
  api->future_retain(f);
  f->next_queued = NULL;
  if (p->qtail) p->qtail->next_queued = f; else p->qhead = f;
  p->qtail = f;
  p->nqueued++;
  lf_unlock(&eng.mu);
  wake_if_asleep();
  return LF_SUBMIT_OK;
}

static void mp_shutdown(lf_executor *ex, int how) {
  mpool *p = (mpool *)ex;
  lf_future *q = NULL;
  lf_lock(&eng.mu);
  p->shutdown = 1;
  if (how & (LF_SHUTDOWN_CANCEL | LF_SHUTDOWN_INTERRUPT))
    q = take_queue_locked(p);
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    mtask *t = k->run;
    /* A waiting task has not started: cancelled with the queue. */
    for (int i = 0; i < k->nwait; i++)
      if (k->wait[i]->p == p && (how & (LF_SHUTDOWN_CANCEL |
                                        LF_SHUTDOWN_INTERRUPT)))
        api->future_interrupt(k->wait[i]->f, LF_STOP_CANCEL);
    if (t != NULL && t->p == p && (how & LF_SHUTDOWN_INTERRUPT))
      api->future_interrupt(t->f, LF_STOP_CANCEL);
  }
  if (p->detached && !p->joined) pool_joined_locked(p);
  lf_unlock(&eng.mu);
  while (q != NULL) {   /* PENDING: interrupt cancels them */
    lf_future *next = q->next_queued;
    api->future_interrupt(q, LF_STOP_CANCEL);
    api->future_release(q);
    q = next;
  }
  wake();
}

/* terminate_workers / kill_workers: the pool is broken and shut down; the
** ranks send the signal to its local workers. */
static void mp_kill_workers(lf_executor *ex, int sig) {
  mpool *p = (mpool *)ex;
  char why[96];
  snprintf(why, sizeof why, "the pool's workers were sent signal %d (SIG%s)",
           sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
  lua_State *S = NULL;
  lf_lock(&eng.mu);
  p->shutdown = 1;
  break_pool_locked(p, why, &S);
  if (!p->detached) p->kill_sig = sig;
  else if (!p->joined) pool_joined_locked(p);
  lf_unlock(&eng.mu);
  if (S != NULL) lua_close(S);
  wake();
}

static int mp_join(lf_executor *ex, double until) {
  mpool *p = (mpool *)ex;
  lf_lock(&eng.mu);
  while (!p->joined)
    if (lf_cond_wait_until(&p->joined_cv, &eng.mu, until) == ETIMEDOUT) break;
  int done = p->joined;
  lf_unlock(&eng.mu);
  return done;
}

static void mp_describe(lf_executor *ex, char *buf, size_t size) {
  mpool *p = (mpool *)ex;
  lf_lock(&eng.mu);
  snprintf(buf, size, "%d/%d ranks busy, %zu queued%s", p->running,
           p->max_workers, p->nqueued + (size_t)p->waiting,
           p->base.broken ? ", broken" : p->shutdown ? ", shut down" : "");
  lf_unlock(&eng.mu);
}

static void mp_destroy(lf_executor *ex) {
  mpool *p = (mpool *)ex;
  api->executor_free_broken(&p->base);
  LF_CHECK(pthread_cond_destroy(&p->joined_cv));
  free(p->opened);
  free(p->open_msg);
  free(p);
}

static const lf_executor_ops mp_ops = {
  "MPIPoolExecutor", BROKEN_TYPE, 0,
  mp_submit, mp_shutdown, mp_join, NULL, mp_kill_workers, mp_describe,
  mp_destroy,
};

/* OPEN's payload (lf_mpi.h). Returns 0 or -1. */
static int make_open(mpool *p, const lf_pool_config *cfg, const lf_buf *init,
                     const char *worker) {
  lf_mpi_pool_msg m;
  memset(&m, 0, sizeof m);
  m.max_depth = (uint32_t)(cfg->max_depth > 0 ? cfg->max_depth : 0);
  m.return_functions = (uint32_t)cfg->return_functions;
  m.max_memory = (uint64_t)cfg->max_memory;
  m.max_tasks_per_child = (int64_t)cfg->max_tasks_per_child;
  m.grace = cfg->grace;
  lf_mpi_out b = { NULL, 0, 0 };
  if (lf_mpi_out_add(&b, &m, sizeof m) != 0 ||
      lf_mpi_out_str(&b, cfg->path) != 0 ||
      lf_mpi_out_str(&b, cfg->cpath) != 0 ||
      lf_mpi_out_str(&b, worker) != 0 ||
      lf_mpi_out_add(&b, init ? init->data : NULL, init ? init->len : 0) != 0)
    return -1;
  p->open_msg = b.data;
  p->open_len = b.len;
  return 0;
}

lf_executor *lf_mpi_pool_new(const lf_pool_config *cfg, const lf_buf *init,
                             const char *worker) {
  mpool *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  lf_lock(&eng.mu);
  p->size = eng.size;
  lf_unlock(&eng.mu);
  p->opened = calloc((size_t)p->size, 1);
  if (p->opened == NULL || make_open(p, cfg, init, worker) != 0) {
    free(p->opened);
    free(p);
    return NULL;
  }
  api->executor_init(&p->base, &mp_ops, cfg);
  /* Queues and shared arrays live in one process: they are refused at
  ** submit, like any other handle that cannot leave it. */
  p->base.opts.share = LF_SHARE_NONE;
  p->max_workers = cfg->max_workers;
  lf_cond_init(&p->joined_cv);
  lua_State *S = NULL;
  lf_lock(&eng.mu);
  p->id = ++eng.next_pool;
  if (eng.broken != NULL) {
    api->executor_mark_broken(&p->base, eng.broken);
    p->detached = 1;
  } else {
    p->next = eng.pools;
    eng.pools = p;
  }
  lf_unlock(&eng.mu);
  if (S != NULL) lua_close(S);
  return &p->base;
}

/* ---- the world ---- */

int lf_mpi_engine_ranks(void) {
  lf_lock(&eng.mu);
  int n = eng.size > 0 ? eng.size - 1 : 0;
  lf_unlock(&eng.mu);
  return n;
}

/* The world broke (MPI failed, a rank died, a rank is another build):
** every pool breaks, what is queued or on a rank fails, and the engine
** lets go of every pool. eng.mu held; MPI thread, or a Lua thread before
** the loop runs. */
static void break_world_locked(const char *why, lua_State **S) {
  if (eng.broken != NULL) return;
  eng.broken = strdup(why);
  if (eng.broken == NULL) eng.broken = "the MPI world broke (no memory to say why)";
  for (mpool *p = eng.pools; p != NULL; p = p->next)
    break_pool_locked(p, why, S);
  for (int r = 0; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    mtask *ts[1 + LF_MPI_DEPTH] = { k->run };
    for (int i = 0; i < k->nwait; i++) ts[1 + i] = k->wait[i];
    k->run = NULL;
    k->nwait = 0;
    for (int i = 0; i < 1 + LF_MPI_DEPTH; i++) {
      mtask *t = ts[i];
      if (t == NULL) continue;
      if (t->started) t->p->running--; else t->p->waiting--;
      fail(t->p, t->f, why, S);
      api->future_release(t->f);
      free(t);
    }
  }
  while (eng.pools != NULL) detach_locked(eng.pools);
  LF_CHECK(pthread_cond_broadcast(&eng.ready_cv));
}

void lf_mpi_engine_break(const char *why) {
  lua_State *S = NULL;
  lf_lock(&eng.mu);
  break_world_locked(why, &S);
  lf_unlock(&eng.mu);
  if (S != NULL) lua_close(S);
}

int lf_mpi_engine_wait_ready(double until, char *why, size_t size) {
  lf_lock(&eng.mu);
  while (eng.broken == NULL && (!eng.running || eng.nhello < eng.size - 1))
    if (lf_cond_wait_until(&eng.ready_cv, &eng.mu, until) == ETIMEDOUT) break;
  int rc = eng.broken != NULL ? -1 : eng.running && eng.nhello >= eng.size - 1;
  if (rc < 0) snprintf(why, size, "%s", eng.broken);
  lf_unlock(&eng.mu);
  return rc;
}

void lf_mpi_engine_stop(void) {
  lf_lock(&eng.mu);
  eng.stop = 1;
  lf_unlock(&eng.mu);
  wake();
}

void lf_mpi_engine_dying(void) {
  eng.dying = 1;
  wake();   /* write(2) is async-signal-safe */
}

/* ---- the MPI thread: sending ---- */

static lf_mpi_head head(unsigned type, unsigned flag, uint32_t pool,
                        uint64_t task, uint64_t aux) {
  lf_mpi_head h;
  memset(&h, 0, sizeof h);
  h.type = (uint8_t)type;
  h.flag = (uint8_t)flag;
  h.pool = pool;
  h.task = task;
  h.aux = aux;
  return h;
}

/* Send a frame with a copy of data[0..len). Returns 0 or -1. */
static int send_copy(int rank, lf_mpi_head h, const void *data, size_t len) {
  unsigned char *b = NULL;
  if (len > 0) {
    b = malloc(len);
    if (b == NULL) return -1;
    memcpy(b, data, len);
  }
  return lf_mpi_link_send(&eng.host->link, rank, &h, b, len);
}

/* The runner of a task on a rank: flag it for the MPI thread, which sends
** STOP (called under the future's mutex: no other lock here). */
static void stop_task(lf_runner *self, lf_future *f) {
  (void)f;
  mtask *t = (mtask *)(void *)((char *)self - offsetof(mtask, runner));
  atomic_store(&t->stop, 1);
  atomic_fetch_add(&eng.stops, 1);
  wake();
}

static int idle(const mrank *k) {
  return k->hello && k->run == NULL && k->nwait == 0;
}

/* Take t out of its rank's waiting tasks; returns 1 if it was there. */
static int unwait(mrank *k, const mtask *t) {
  for (int i = 0; i < k->nwait; i++) {
    if (k->wait[i] != t) continue;
    memmove(&k->wait[i], &k->wait[i + 1],
            (size_t)(k->nwait - i - 1) * sizeof k->wait[0]);
    k->nwait--;
    return 1;
  }
  return 0;
}

static mtask *find_wait(mrank *k, uint64_t id) {
  for (int i = 0; i < k->nwait; i++)
    if (k->wait[i]->id == id) return k->wait[i];
  return NULL;
}

/* The free rank that went idle last (its loop still polls fast), or -1. */
static int idle_rank_locked(void) {
  int best = -1;
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    if (idle(k) && (best < 0 || k->idle_at > eng.ranks[best].idle_at))
      best = r;
  }
  return best;
}

/* The rank with the fewest tasks waiting behind a task of p, and room for
** one more, or -1: p's tasks may wait there without raising p's share of
** the ranks. */
static int wait_rank_locked(mpool *p) {
  int best = -1;
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    if (k->run == NULL || k->run->p != p || k->nwait == LF_MPI_DEPTH) continue;
    if (best < 0 || k->nwait < eng.ranks[best].nwait) best = r;
  }
  return best;
}

/* The task starts: RUNNING, with its runner. Returns 0, or -1 when it was
** cancelled while it waited (the caller stops it). eng.mu held. */
static int started_locked(mtask *t) {
  t->started = 1;
  t->reclaiming = 0;
  t->p->waiting--;
  t->p->running++;
  if (api->future_set_running(t->f) != 1) return -1;
  api->future_run_by(t->f, &t->runner);
  return 0;
}

/* The ranks p's tasks hold: those they run, and those where one of p's
** waits with nothing before it. That one starts as soon as its TASK frame
** arrives (the task before it may have ended before that), so until the
** rank says which it started, it counts as running: otherwise a quick
** task's end would let a second rank start a task of a pool that may run
** one at a time. eng.mu held. */
static int busy_ranks_locked(const mpool *p) {
  int n = p->running;
  for (int r = 1; r < eng.size; r++) {
    const mrank *k = &eng.ranks[r];
    n += k->run == NULL && k->nwait > 0 && k->wait[0]->p == p;
  }
  return n;
}

/* Send the next task of p's queue to rank r, to start at once or to wait
** behind r's task. Returns 1 when a task left the queue. eng.mu held. */
static int send_task_locked(mpool *p, int r, int wait) {
  char why[400];
  lf_future *f = p->qhead;
  p->qhead = f->next_queued;
  if (p->qhead == NULL) p->qtail = NULL;
  f->next_queued = NULL;
  p->nqueued--;
  lf_buf call = LF_BUF_INIT;
  /* To start, it is RUNNING now and the frame takes its call; to wait, it
  ** stays PENDING and the frame takes the call from it all the same
  ** (under its mutex: a cancel may come at any time). */
  int ok = wait ? api->future_swap_call(f, &call)
                : api->future_set_running(f) == 1;
  if (!ok) {   /* cancelled while queued */
    api->future_release(f);
    return 1;
  }
  if (!wait) {
    call = f->call;
    memset(&f->call, 0, sizeof f->call);
  }
  mtask *t = calloc(1, sizeof *t);
  if (t != NULL) t->runner.stop = stop_task;
  int rc = -1;
  if (call.len > INT_MAX) {
    snprintf(why, sizeof why, "cannot send the task to an MPI rank: its call "
             "is %zu bytes, more than an MPI message holds (2 GiB)", call.len);
  } else if (t == NULL ||
             (!p->opened[r] &&
              send_copy(r, head(LF_MPI_OPEN, 0, p->id, 0, 0), p->open_msg,
                        p->open_len) != 0)) {
    snprintf(why, sizeof why, "cannot send the task to MPI rank %d: %s", r,
             eng.host->link.error[0] ? eng.host->link.error
                                     : "not enough memory");
  } else {
    p->opened[r] = 1;
    uint64_t limit;
    memcpy(&limit, &f->run_limit, sizeof limit);
    t->id = ++eng.next_task;
    lf_mpi_head h = head(LF_MPI_TASK, (unsigned)f->kind |
                         (wait ? LF_MPI_WAIT : 0), p->id, t->id, limit);
    unsigned char *bytes;
    size_t nbytes;
    rc = api->buf_detach(&call, &bytes, &nbytes);
    if (rc == 0)   /* the link has the bytes, in every case, and frees them */
      rc = lf_mpi_link_send(&eng.host->link, r, &h, bytes, nbytes);
    if (rc != 0)
      snprintf(why, sizeof why, "cannot send the task to MPI rank %d: %s", r,
               eng.host->link.error[0] ? eng.host->link.error
                                       : "not enough memory");
  }
  if (rc != 0) {
    api->buf_free(&call);
    api->future_fail(f, "RuntimeError", why, &p->base.opts, &eng.scratch);
    api->future_release(f);
    free(t);
    return 1;
  }
  api->buf_free(&call);   /* its handle references: none can travel */
  t->f = f;
  t->p = p;
  t->rank = r;
  if (wait) {
    eng.ranks[r].wait[eng.ranks[r].nwait++] = t;
    p->waiting++;
  } else {
    eng.ranks[r].run = t;
    t->started = 1;
    p->running++;
    api->future_run_by(f, &t->runner);
  }
  return 1;
}

/* Send queued tasks: to free ranks while a pool's share allows, then one
** to wait behind each rank that runs a task of the same pool. Returns how
** many left the queues. */
static int dispatch_locked(void) {
  int sent = 0, more = 1;
  while (more) {
    more = 0;
    for (mpool *p = eng.pools; p != NULL; p = p->next) {
      if (p->qhead == NULL || p->base.broken != NULL) continue;
      int r = busy_ranks_locked(p) < p->max_workers ? idle_rank_locked() : -1;
      int wait = r < 0;
      if (wait) r = wait_rank_locked(p);
      if (r < 0) continue;
      sent += send_task_locked(p, r, wait);
      more = 1;
    }
  }
  return sent;
}

/* Free ranks that no reclaim on its way is for. */
static int spare_ranks_locked(void) {
  int n = 0;
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    n += idle(k);
    for (int i = 0; i < k->nwait; i++) n -= k->wait[i]->reclaiming;
  }
  return n;
}

/* May w (the last task waiting on rank k, or NULL) start on a free rank
** instead? Not when nothing runs before it: then it is starting there. */
static int reclaimable_locked(const mrank *k, const mtask *w) {
  return w != NULL && k->run != NULL && !w->stop_sent && !w->reclaiming &&
         w->p->qhead == NULL && busy_ranks_locked(w->p) < w->p->max_workers;
}

/* STOP for the tasks whose futures were interrupted, and for waiting tasks
** cancelled in the meantime; a reclaim of a waiting task for each rank
** that is free while its pool has nothing queued. */
static int tend_stops_locked(void) {
  int n = 0;
  int asked = atomic_exchange(&eng.stops, 0) > 0;
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    mtask *t = k->run;
    if (asked && t != NULL && !t->stop_sent && atomic_load(&t->stop)) {
      t->stop_sent = 1;
      send_copy(r, head(LF_MPI_STOP, LF_MPI_STOP_TASK, t->p->id, t->id, 0),
                NULL, 0);
      n++;
    }
    /* Last first: the rank's local pool starts its next waiting task as
    ** soon as a worker is free, so a STOP for an earlier one (which frees
    ** the worker) must not come before the STOPs for those behind it. */
    for (int i = k->nwait - 1; i >= 0; i--) {
      mtask *w = k->wait[i];
      if (w->stop_sent || !atomic_load(&w->f->done)) continue;
      w->stop_sent = 1;   /* cancelled while it waited */
      send_copy(r, head(LF_MPI_STOP, LF_MPI_STOP_TASK, w->p->id, w->id, 0),
                NULL, 0);
      n++;
    }
  }
  /* The last waiting task of a rank is the one to move. */
  int free_ranks = spare_ranks_locked();
  for (int r = 1; r < eng.size && free_ranks > 0; r++) {
    mrank *k = &eng.ranks[r];
    mtask *w = k->nwait > 0 ? k->wait[k->nwait - 1] : NULL;
    if (!reclaimable_locked(k, w)) continue;
    w->reclaiming = 1;
    send_copy(r, head(LF_MPI_STOP, LF_MPI_STOP_RECLAIM, w->p->id, w->id, 0),
              NULL, 0);
    free_ranks--;
    n++;
  }
  return n;
}

/* Forward kill_workers; close pools that are shut down and idle. */
static int tend_pools_locked(void) {
  int n = 0;
  mpool *next;
  for (mpool *p = eng.pools; p != NULL; p = next) {
    next = p->next;
    if (p->kill_sig != 0) {
      for (int r = 1; r < eng.size; r++)
        if (p->opened[r])
          send_copy(r, head(LF_MPI_KILL, 0, p->id, 0, (uint64_t)p->kill_sig),
                    NULL, 0);
      p->kill_sig = 0;
      n++;
    }
    if (p->shutdown && !p->closing && p->qhead == NULL && p->running == 0 &&
        p->waiting == 0) {
      p->closing = 1;
      for (int r = 1; r < eng.size; r++)
        if (p->opened[r] &&
            send_copy(r, head(LF_MPI_CLOSE, 0, p->id, 0, 0), NULL, 0) == 0)
          p->acks++;
      if (p->acks == 0) detach_locked(p);
      n++;
    }
  }
  return n;
}

/* Is there anything for the MPI thread to do before the next message? */
static int has_work_locked(void) {
  if (eng.stop || (eng.dying && !eng.died) || atomic_load(&eng.stops) > 0)
    return 1;
  int free_rank = idle_rank_locked() >= 0, spare = spare_ranks_locked() > 0;
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    for (int i = 0; i < k->nwait; i++) {
      mtask *w = k->wait[i];
      if (!w->stop_sent && atomic_load(&w->f->done)) return 1;
      if (spare && i == k->nwait - 1 && reclaimable_locked(k, w)) return 1;
    }
  }
  for (mpool *p = eng.pools; p != NULL; p = p->next) {
    if (p->kill_sig != 0) return 1;
    if (p->shutdown && !p->closing && p->qhead == NULL && p->running == 0 &&
        p->waiting == 0)
      return 1;
    if (p->qhead != NULL && p->base.broken == NULL &&
        ((free_rank && busy_ranks_locked(p) < p->max_workers) ||
         wait_rank_locked(p) >= 0))
      return 1;
  }
  return 0;
}

/* Is an answer or a message awaited (then the thread polls MPI)? */
static int expecting_locked(void) {
  if (eng.nhello < eng.size - 1) return 1;
  for (int r = 1; r < eng.size; r++)
    if (eng.ranks[r].run != NULL || eng.ranks[r].nwait > 0) return 1;
  for (mpool *p = eng.pools; p != NULL; p = p->next) if (p->acks > 0) return 1;
  return lf_mpi_link_sending(&eng.host->link) > 0 ||
         eng.host->link.nbodies > 0;
}

/* Is a quick answer worth spinning for? When every rank that runs a task
** has another waiting behind it, work flows without rank 0 (a map), and a
** spinning thread would only take a core from the workers; when a rank is
** about to run dry, or nothing is in flight (a round trip: the next submit
** follows the last result at once), it is. */
static int hungry(void) {
  lf_lock(&eng.mu);
  int busy = 0, dry = 0;
  for (int r = 1; r < eng.size; r++) {
    mrank *k = &eng.ranks[r];
    busy += k->run != NULL;
    dry += k->run != NULL && k->nwait == 0;
  }
  lf_unlock(&eng.mu);
  return dry > 0 || busy == 0;
}

/* ---- the MPI thread: what ranks send ---- */

static mpool *find_pool_locked(uint32_t id) {
  for (mpool *p = eng.pools; p != NULL; p = p->next)
    if (p->id == id) return p;
  return NULL;
}

static void on_hello(lf_mpi_msg *m) {
  lf_mpi_hello hello;
  char why[400] = "";
  mrank *k = &eng.ranks[m->src];
  if (m->len < sizeof hello || k->hello) {
    snprintf(why, sizeof why, "MPI rank %d sent a malformed HELLO", m->src);
  } else {
    memcpy(&hello, m->data, sizeof hello);
    size_t hl = m->len - sizeof hello;
    if (hl >= sizeof k->host) hl = sizeof k->host - 1;
    memcpy(k->host, m->data + sizeof hello, hl);
    k->host[hl] = '\0';
    k->pid = hello.pid;
    hello.version[sizeof hello.version - 1] = '\0';
    if (strcmp(hello.version, LF_VERSION) != 0 ||
        hello.lua_num != LUA_VERSION_NUM || hello.order != 0x01020304u ||
        hello.int_size != sizeof(lua_Integer) ||
        hello.num_size != sizeof(lua_Number))
      snprintf(why, sizeof why, "MPI rank %d (host %s) runs lua-futures %s "
               "on Lua %u.%u, not this build (lua-futures " LF_VERSION
               " on Lua " LUA_VERSION_MAJOR "." LUA_VERSION_MINOR ", same "
               "byte order and number sizes): every rank must run the same "
               "build", m->src, k->host, hello.version, hello.lua_num / 100,
               hello.lua_num % 100);
  }
  lf_lock(&eng.mu);
  if (why[0] != '\0') {
    break_world_locked(why, &eng.scratch);
  } else {
    k->hello = 1;
    k->idle_at = -(double)m->src;   /* lower ranks first, at the start */
    if (++eng.nhello == eng.size - 1)
      LF_CHECK(pthread_cond_broadcast(&eng.ready_cv));
  }
  lf_unlock(&eng.mu);
}

/* The rank started the task that waited there (id). eng.mu held. */
static void waiting_started_locked(int rank, uint64_t id) {
  mrank *k = &eng.ranks[rank];
  mtask *w = find_wait(k, id);
  if (w == NULL || k->run != NULL) return;
  unwait(k, w);
  k->run = w;
  if (started_locked(w) != 0 && !w->stop_sent) {   /* cancelled: stop it */
    w->stop_sent = 1;
    send_copy(rank, head(LF_MPI_STOP, LF_MPI_STOP_TASK, w->p->id, w->id, 0),
              NULL, 0);
  }
}

/* A waiting task came back unstarted: to its pool's queue, first, with its
** call, unless it was cancelled (then it is done). eng.mu held. */
static void unstarted_locked(mtask *t, lf_mpi_msg *m) {
  mpool *p = t->p;
  p->waiting--;
  lf_buf call = { .data = m->data, .len = m->len, .cap = m->len };
  m->data = NULL;
  if (m->len > 0 && p->base.broken == NULL &&
      api->future_swap_call(t->f, &call)) {
    t->f->next_queued = p->qhead;   /* the record's reference goes back */
    p->qhead = t->f;
    if (p->qtail == NULL) p->qtail = t->f;
    p->nqueued++;
  } else {
    if (p->base.broken != NULL) fail(p, t->f, p->base.broken, &eng.scratch);
    api->future_release(t->f);
  }
  api->buf_free(&call);
  free(t);
}

/* A RESULT: complete the task's future with the bytes as they came. */
static void on_result(lf_mpi_msg *m) {
  lf_lock(&eng.mu);
  mrank *k = &eng.ranks[m->src];
  mtask *t = NULL;
  if (k->run != NULL && k->run->id == m->h.task) {
    t = k->run;
    k->run = NULL;
  } else if ((t = find_wait(k, m->h.task)) != NULL) {
    unwait(k, t);
  }
  if (t == NULL || t->p->id != m->h.pool) {   /* nothing of ours */
    lf_unlock(&eng.mu);
    return;
  }
  mpool *p = t->p;
  if (!t->started) {   /* dropped where it waited */
    if (m->h.flag == LF_MPI_R_CANCELLED && m->h.aux == 1) {
      unstarted_locked(t, m);
      if (k->run == NULL && k->nwait == 0) k->idle_at = lf_now();
      lf_unlock(&eng.mu);
      return;
    }
    started_locked(t);   /* it ran after all (a protocol slip): finish it */
  }
  p->running--;
  if (m->h.aux != 0) waiting_started_locked(m->src, m->h.aux);
  if (k->run == NULL && k->nwait == 0) k->idle_at = lf_now();
  lf_future *f = t->f;
  lf_buf none = LF_BUF_INIT;
  switch (m->h.flag) {
    case LF_MPI_R_OK:
    case LF_MPI_R_FAILED: {
      lf_buf b = { .data = m->data, .len = m->len, .cap = m->len };
      m->data = NULL;
      if (api->future_finish(f, &b, m->h.flag == LF_MPI_R_FAILED) != 0)
        api->buf_free(&b);
      break;
    }
    case LF_MPI_R_CANCELLED:
      if (atomic_load(&f->stop) != LF_STOP_NONE)
        api->future_finish(f, &none, 1);   /* as asked: CANCELLED */
      else
        fail(p, f, "the task was stopped on its MPI rank", &eng.scratch);
      break;
    default: {   /* BROKEN: the pool cannot run there */
      char why[1100];
      int n = (int)(m->len < 1000 ? m->len : 1000);
      snprintf(why, sizeof why, "%.*s", n, m->data ? (char *)m->data : "");
      break_pool_locked(p, why, &eng.scratch);
      fail(p, f, why, &eng.scratch);
    }
  }
  api->future_release(f);
  free(t);
  lf_unlock(&eng.mu);
}

static void on_started(lf_mpi_msg *m) {
  lf_lock(&eng.mu);
  waiting_started_locked(m->src, m->h.task);
  lf_unlock(&eng.mu);
}

static void on_closed(lf_mpi_msg *m) {
  lf_lock(&eng.mu);
  mpool *p = find_pool_locked(m->h.pool);
  if (p != NULL && p->acks > 0 && --p->acks == 0) detach_locked(p);
  lf_unlock(&eng.mu);
}

static void on_frame(void *ud, lf_mpi_msg *m) {
  (void)ud;
  switch (m->h.type) {
    case LF_MPI_HELLO: on_hello(m); break;
    case LF_MPI_RESULT: on_result(m); break;
    case LF_MPI_STARTED: on_started(m); break;
    case LF_MPI_CLOSED: on_closed(m); break;
    default: break;   /* only rank 0 sends the others */
  }
}

/* ---- the MPI thread: the loop ---- */

/* Spawned ranks on this host that are gone (their launcher does not tell
** the parent): the world breaks instead of waiting for ever. */
static void check_spawned_locked(lf_mpi_host *h) {
  for (int r = 1; r < eng.size && eng.broken == NULL; r++) {
    mrank *k = &eng.ranks[r];
    if (!k->hello || strcmp(k->host, h->host) != 0 || k->pid <= 0) continue;
    if (kill((pid_t)k->pid, 0) != 0 && errno == ESRCH) {
      char why[200];
      snprintf(why, sizeof why, "spawned MPI rank %d (process %lld) died",
               r, (long long)k->pid);
      break_world_locked(why, &eng.scratch);
    }
  }
}

int lf_mpi_engine_attach(lf_mpi_host *h) {
  mrank *ranks = calloc((size_t)h->size, sizeof *ranks);
  if (ranks == NULL) return -1;
  lf_lock(&eng.mu);
  eng.host = h;
  eng.ranks = ranks;
  eng.size = h->size;
  eng.running = 1;
  if (h->size == 1) LF_CHECK(pthread_cond_broadcast(&eng.ready_cv));
  lf_unlock(&eng.mu);
  return 0;
}

int lf_mpi_engine_run(lf_mpi_host *h) {
  /* The sleeps of this thread are short: ask for them as they are. */
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  double last = lf_now(), looked = last;
  lf_mpi_spin spin = LF_MPI_SPIN_INIT;
  int failed = 0;
  for (;;) {
    int events = 0;
    lf_lock(&eng.mu);
    double now = lf_now();
    if (h->link.error[0] != '\0' && !failed) {
      failed = 1;
      char why[400];
      snprintf(why, sizeof why, "MPI failed: %s", h->link.error);
      break_world_locked(why, &eng.scratch);
    }
    if (eng.dying && !eng.died) {
      eng.died = 1;
      eng.died_at = now;
      break_world_locked("an MPI rank ended, or the MPI job is being stopped "
                         "(the launcher sent SIGTERM): the job ends",
                         &eng.scratch);
    }
    if (eng.died && now - eng.died_at > DYING_GRACE) {
      /* What SIGTERM would have done, once the futures had time to fail
      ** and the script to say so. */
      signal(SIGTERM, SIG_DFL);
      kill(getpid(), SIGTERM);
    }
    if (h->spawned && now - looked > LIVENESS) {
      looked = now;
      check_spawned_locked(h);
    }
    if (eng.broken == NULL) {
      events += tend_stops_locked();
      events += dispatch_locked();
    }
    events += tend_pools_locked();
    int stop = eng.stop;
    lf_unlock(&eng.mu);
    if (stop) break;
    if (!failed) {
      int n = lf_mpi_link_poll(&h->link, on_frame, NULL);
      if (n < 0) continue;   /* broken at the top of the next round */
      events += n;
    }
    if (events > 0) {
      double t = lf_now();
      lf_mpi_spin_saw(&spin, t - last);
      last = t;
      continue;
    }
    double quiet = lf_now() - last;
    if (!failed && hungry() && lf_mpi_spin_on(&spin, quiet)) continue;
    /* Sleep: announce it first, then look for work once more, so that a
    ** submit either sees `sleeping` and wakes us, or is seen here. */
    atomic_store(&eng.sleeping, 1);
    lf_lock(&eng.mu);
    int work = has_work_locked();
    double nap = failed || eng.died ? 0.1
               : expecting_locked() ? lf_mpi_nap(quiet) : -1;
    lf_unlock(&eng.mu);
    if (!work) lf_mpi_sleep(eng.efd, nap);
    atomic_store(&eng.sleeping, 0);
    uint64_t v;
    ssize_t r = read(eng.efd, &v, sizeof v);
    (void)r;
  }
  /* The process ends: the serving ranks end too. */
  lf_lock(&eng.mu);
  int ok = !failed && !eng.died;
  lf_unlock(&eng.mu);
  if (ok) {
    for (int r = 1; r < h->size; r++)
      send_copy(r, head(LF_MPI_END, 0, 0, 0, 0), NULL, 0);
  }
  lf_mpi_link_close(&h->link, ok ? 5.0 : 0.0);
  if (eng.scratch != NULL) lua_close(eng.scratch);
  eng.scratch = NULL;
  return ok && h->link.error[0] == '\0' ? 0 : -1;
}
