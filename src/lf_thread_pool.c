/*
** lf_thread_pool.c — ThreadPoolExecutor: a queue of futures and up to
** max_workers native threads, each running tasks in a lua_State of its own.
**
** Threads: submit and shutdown run on any thread (the submitter may be a
** task of this very pool); each worker thread runs worker_main; join runs on
** the owner's thread. pool->mu guards every field below it in lf_pool.
** Lock order: pool->mu, then a future's mutex (a worker completes its task
** under pool->mu, see next_task); nobody takes pool->mu while holding a
** future's. Workers never hold pool->mu while they run a task.
**
** Wake-ups: a worker that finds the queue empty first spins for
** LF_SPIN_WORKER watching `queued` (counted in `spinning`), then blocks on
** work_cv (counted in `idle`). submit gives a task to a spinning worker
** without a signal (`spin_claims`), else signals only when an idle worker
** has no wake-up on its way (`wakeups`), else starts a thread; so a busy
** pool takes queued tasks with no system call at all. A worker re-checks the
** queue under the mutex before it sleeps, so no task is ever stranded. An
** idle worker leaves the lock for its chores first (pages to give back
** after a big task; its own state's callbacks, which it delivers every
** CALLBACK_POLL while futures it watches are unfinished).
**
** Ownership: the queue holds one reference to each queued future; the worker
** that dequeues it takes that reference over and drops it when done. Workers
** do not hold references to the pool: the owner joins them before the pool
** can be destroyed (see lf_executor.h). Each worker's lua_State is created
** and closed by its own thread.
*/
#include <sched.h>
#include <signal.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_context.h"
#include "lf_state.h"
#include "lf_task.h"
#include "lf_thread_pool.h"

typedef struct lf_pool {
  lf_executor base;
  pthread_mutex_t mu;
  pthread_cond_t work_cv;     /* idle workers wait here */
  pthread_cond_t exit_cv;     /* join waits here for nlive == 0 */
  lf_queue queue;             /* its count is read, without the lock, by
                                 spinners */
  int max_workers;
  int nthreads;               /* started (and not yet joined) */
  int nlive;                  /* started and not yet exited */
  int idle, wakeups;
  int spinning, spin_claims;  /* workers watching the queue; tasks queued
                                 for them (no signal needed) */
  int shutdown;
  pthread_t *threads;         /* [max_workers] */
  /* Read-only once the pool exists: */
  lf_buf init;                /* encoded initializer and initargs, or empty */
  char *path, *cpath;         /* package.path/cpath for worker states */
  char name[16];
} lf_pool;

/* Mark the pool broken (once) and fail what is queued. */
static void break_pool(lf_pool *p, const char *why) {
  lf_lock(&p->mu);
  lf_future *q = NULL;
  if (lf_executor_mark_broken(&p->base, why)) q = lf_queue_take(&p->queue);
  lf_broadcast(&p->work_cv);
  lf_unlock(&p->mu);
  lf_fail_queue(q, "BrokenThreadPool", p->base.broken, &p->base.opts);
}

/* What an idle worker may have to do outside the pool's lock before it
** sleeps: give pages back to the system once, and deliver its own state's
** callbacks of futures that complete while it waits for work. */
enum { CHORE_TRIM = 1, CHORE_CALLBACKS = 2 };
#define CALLBACK_POLL 0.01   /* seconds between two deliveries when idle */

/* next_task's answer when the worker has chores to do first. Compared,
** never dereferenced. */
static char chores_tag;
#define CHORES ((lf_future *)(void *)&chores_tag)

/* Complete `done` (the task just run, if any) and take the next task; or
** CHORES, when there is none and the worker has `chores`; or NULL when the
** worker should exit. The completion happens under the pool's lock, so
** that whoever sees the result and submits again finds this worker idle
** (or busy with a queued task) rather than starting another thread. */
static lf_future *next_task(lf_pool *p, lf_future *done, lf_buf *out,
                            int failed, int chores) {
  int spun = 0;
  lf_lock(&p->mu);
  if (done != NULL) {
    lf_future_finish(done, out, failed);
    lf_future_release(done);
  }
  for (;;) {
    if (p->queue.head != NULL && p->base.broken == NULL) {
      lf_future *f = lf_queue_pop(&p->queue);
      lf_unlock(&p->mu);
      return f;
    }
    if (p->shutdown || p->base.broken != NULL) break;
    if (!spun) {
      /* Watch the queue a little before sleeping: a task that arrives now
      ** is taken without a futex wake on either side. */
      spun = 1;
      p->spinning++;
      lf_unlock(&p->mu);
      double until = lf_now() + LF_SPIN_WORKER;
      for (unsigned i = 1;; i++) {
        if (lf_queue_count(&p->queue) > 0) break;
        if ((i & 63) == 0) {
          if (lf_now() >= until) break;
          sched_yield();   /* on a full machine, the submitter runs first */
        }
        lf_cpu_relax();
      }
      lf_lock(&p->mu);
      p->spinning--;
      if (p->spin_claims > p->spinning) p->spin_claims = p->spinning;
      continue;
    }
    if (chores & CHORE_TRIM) {
      lf_unlock(&p->mu);
      return CHORES;
    }
    p->idle++;
    int rc = lf_cond_wait_until(&p->work_cv, &p->mu, (chores & CHORE_CALLBACKS)
                                ? lf_now() + CALLBACK_POLL : -1);
    p->idle--;
    if (p->wakeups > 0) p->wakeups--;
    if (rc == ETIMEDOUT && p->queue.head == NULL) {
      lf_unlock(&p->mu);
      return CHORES;
    }
  }
  lf_unlock(&p->mu);
  return NULL;
}

static void *worker_main(void *arg) {
  lf_pool *p = arg;
  lf_current_executor = &p->base;
  /* Signals go to the main thread: Ctrl-C must reach the interpreter. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  if (p->name[0]) pthread_setname_np(pthread_self(), p->name);

  lua_State *L = lf_new_state(p->path, p->cpath);
  lf_codec_opts init_opts = p->base.opts;
  init_opts.pins = &p->init;
  if (L == NULL) {
    break_pool(p, "not enough memory to start a worker");
  } else if (p->init.len > 0 &&
             lf_task_init(L, p->init.data, p->init.len, &init_opts) != 0) {
    char why[512];
    snprintf(why, sizeof why, "initializer failed: %s", lua_tostring(L, -1));
    break_pool(p, why);
  } else {
    lf_future *f = NULL;
    lf_buf out = LF_BUF_INIT;
    lf_task_heap heap = { 0, 0 };
    int failed = 0;
    for (;;) {
      int chores = (heap.trim ? CHORE_TRIM : 0) |
                   (lf_has_pending_callbacks(L) ? CHORE_CALLBACKS : 0);
      f = next_task(p, f, &out, failed, chores);
      lf_buf_free(&out);   /* left over only if the future was done already */
      failed = 0;
      if (f == NULL) break;
      if (f == CHORES) {
        lf_task_idle(&heap);
        lf_run_callbacks(L);
        f = NULL;
        continue;
      }
      if (lf_future_set_running(f) == 1) {
        lf_codec_opts opts = p->base.opts;
        opts.pins = &f->call;   /* the queues and arrays it names */
        lf_task_begin(L, &heap);
        failed = lf_task_run(L, f->kind, f->call.data, f->call.len, &out,
                             &opts);
        lf_task_end(L, &heap, failed);
      }
      lf_run_callbacks(L);   /* what the task's own callbacks have due */
    }
  }
  if (L != NULL) lf_close_state(L);
  lf_lock(&p->mu);
  p->nlive--;
  if (p->nlive == 0) lf_broadcast(&p->exit_cv);
  lf_unlock(&p->mu);
  return NULL;
}

static int pool_submit(lf_executor *ex, lf_future *f) {
  lf_pool *p = (lf_pool *)ex;
  lf_lock(&p->mu);
  if (p->base.broken) { lf_unlock(&p->mu); return LF_SUBMIT_BROKEN; }
  if (p->shutdown) { lf_unlock(&p->mu); return LF_SUBMIT_SHUTDOWN; }
  int start = 0;
  if (p->spinning > p->spin_claims) {
    p->spin_claims++;   /* a spinning worker will see it: no system call */
  } else if (p->idle > p->wakeups) {
    p->wakeups++;
    lf_signal(&p->work_cv);
  } else if (p->nthreads < p->max_workers) {
    start = 1;
  }
  if (start) {
    /* Started under the lock so that shutdown and join see every thread. */
    pthread_attr_t attr;
    LF_CHECK(pthread_attr_init(&attr));
    /* Lua bounds its C recursion (LUAI_MAXCCALLS = 200 levels); 4 MB of
    ** address space covers that with C modules' own frames. Only touched
    ** pages cost memory. */
    pthread_attr_setstacksize(&attr, (size_t)4 << 20);
    int rc = pthread_create(&p->threads[p->nthreads], &attr, worker_main, p);
    LF_CHECK(pthread_attr_destroy(&attr));
    if (rc == 0) {
      p->nthreads++;
      p->nlive++;
    } else if (p->nthreads == 0) {
      lf_unlock(&p->mu);
      return LF_SUBMIT_NOMEM;   /* no worker at all to run it */
    }
  }
  lf_future_retain(f);
  lf_queue_push(&p->queue, f);
  lf_unlock(&p->mu);
  return LF_SUBMIT_OK;
}

static void pool_shutdown(lf_executor *ex, int cancel) {
  lf_pool *p = (lf_pool *)ex;
  lf_future *q = NULL;
  lf_lock(&p->mu);
  p->shutdown = 1;
  if (cancel) q = lf_queue_take(&p->queue);
  lf_broadcast(&p->work_cv);
  lf_unlock(&p->mu);
  lf_future_cancel_queue(q);
}

static int pool_join(lf_executor *ex, double until) {
  lf_pool *p = (lf_pool *)ex;
  lf_lock(&p->mu);
  while (p->nlive > 0) {
    if (lf_cond_wait_until(&p->exit_cv, &p->mu, until) == ETIMEDOUT) break;
  }
  int all = p->nlive == 0;
  if (all) {
    /* Joined under the lock, so that two joiners never join one thread
    ** twice; exited workers no longer need the lock. */
    for (int i = 0; i < p->nthreads; i++)
      LF_CHECK(pthread_join(p->threads[i], NULL));
    p->nthreads = 0;
  }
  lf_unlock(&p->mu);
  return all;
}

static void pool_describe(lf_executor *ex, char *buf, size_t size) {
  lf_pool *p = (lf_pool *)ex;
  lf_lock(&p->mu);
  snprintf(buf, size, "%d/%d workers, %zu queued%s", p->nlive, p->max_workers,
           lf_queue_count(&p->queue), p->base.broken ? ", broken"
                      : p->shutdown ? ", shut down" : "");
  lf_unlock(&p->mu);
}

static void pool_destroy(lf_executor *ex) {
  lf_pool *p = (lf_pool *)ex;
  lf_future_cancel_queue(lf_queue_take(&p->queue));
  lf_buf_free(&p->init);
  free(p->threads);
  free(p->path);
  free(p->cpath);
  lf_executor_free_broken(&p->base);
  LF_CHECK(pthread_mutex_destroy(&p->mu));
  LF_CHECK(pthread_cond_destroy(&p->work_cv));
  LF_CHECK(pthread_cond_destroy(&p->exit_cv));
  free(p);
}

static const lf_executor_ops pool_ops = {
  "ThreadPoolExecutor", "BrokenThreadPool", 1,
  pool_submit, pool_shutdown, pool_join, pool_describe, pool_destroy,
};

lf_executor *lf_thread_pool_new(const lf_pool_config *cfg) {
  lf_pool *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  p->threads = calloc((size_t)cfg->max_workers, sizeof *p->threads);
  p->path = cfg->path ? strdup(cfg->path) : NULL;
  p->cpath = cfg->cpath ? strdup(cfg->cpath) : NULL;
  if (p->threads == NULL || (cfg->path && !p->path) ||
      (cfg->cpath && !p->cpath)) {
    free(p->threads); free(p->path); free(p->cpath); free(p);
    return NULL;
  }
  lf_executor_init(&p->base, &pool_ops, cfg);
  LF_CHECK(pthread_mutex_init(&p->mu, NULL));
  lf_cond_init(&p->work_cv);
  lf_cond_init(&p->exit_cv);
  lf_queue_init(&p->queue);
  p->max_workers = cfg->max_workers;
  if (cfg->name) snprintf(p->name, sizeof p->name, "%s", cfg->name);
  if (cfg->init != NULL) {
    p->init = *cfg->init;
    memset(cfg->init, 0, sizeof *cfg->init);
  }
  return &p->base;
}
