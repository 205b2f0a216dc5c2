/*
** lf_thread_pool.c — the ThreadPoolExecutor engine: a queue of futures and
** up to max_workers native threads, each running tasks in a lua_State of
** its own.
**
** Threads: submit and shutdown run on any thread (the submitter may be a
** task of this very pool); each worker thread runs worker_main; join runs on
** the owner's thread; run_here runs on a thread that waits for one of the
** pool's futures. pool->mu guards every field below it in lf_pool (`running`
** is written under it and read without it as a hint). Lock order: pool->mu,
** then a future's mutex (a worker completes its task under pool->mu, see
** next_task); nobody takes pool->mu while holding a future's. Workers never
** hold pool->mu while they run a task.
**
** Wake-ups: a worker that finds the queue empty first spins, when that
** pays (lf_spin.h: never more spinners than free cores, and only while
** spins at this pool see work arrive), watching the queue's count (counted
** in `spinning`), then blocks on work_cv (counted in `idle`). submit gives
** a task to a spinning worker without a signal (`spin_claims`), else
** signals only when an idle worker has no wake-up on its way (`wakeups`),
** else starts a thread; so a busy pool takes queued tasks with no system
** call at all. A worker re-checks the queue under the mutex before it
** sleeps, so no task is ever stranded. An idle worker leaves the lock for
** its chores first (pages to give back after a big task; its own state's
** callbacks, which it delivers every CALLBACK_POLL while futures it watches
** are unfinished). A thread that waits for a task nobody has started may
** run it itself, in place of an idle worker (run_here, below).
**
** Ownership: the queue holds one reference to each queued future; the worker
** (or waiting thread) that dequeues it takes that reference over and drops
** it when done. Workers do not hold references to the pool: the owner joins
** them before the pool can be destroyed (see lf_executor.h). Each worker's
** lua_State is created and closed by its own thread; a waiting thread's
** helper state belongs to the waiting state (a userdata in its registry).
*/
#include <sched.h>
#include <signal.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_context.h"
#include "lf_lend.h"
#include "lf_spin.h"
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
  atomic_int running;         /* tasks being run, by workers or by waiting
                                 threads (run_here): at most max_workers;
                                 changed under mu, read as a hint without */
  int spinning, spin_claims;  /* workers watching the queue; tasks queued
                                 for them (no signal needed) */
  lf_spin_site spin;          /* whether spinning pays for its workers */
  lf_future *active;          /* tasks being run (see active_add) */
  int shutdown;
  pthread_t *threads;         /* [max_workers] */
  /* Read-only once the pool exists: */
  lf_buf init;                /* encoded initializer and initargs, or empty */
  char *path, *cpath;         /* package.path/cpath for worker states */
  size_t max_memory;          /* heap limit of each worker state, 0: none */
  char name[16];
} lf_pool;

/* The futures being run now (`active`, linked through next_queued, which
** a running future does not use): shutdown{ interrupt } stops them. */
static void active_add(lf_pool *p, lf_future *f) {
  f->next_queued = p->active;
  p->active = f;
}

static void active_remove(lf_pool *p, lf_future *f) {
  for (lf_future **at = &p->active; *at != NULL; at = &(*at)->next_queued)
    if (*at == f) { *at = f->next_queued; f->next_queued = NULL; return; }
}

/* Mark the pool broken (once) and fail what is queued. */
static void break_pool(lf_pool *p, const char *why) {
  lf_lock(&p->mu);
  lf_future *q = NULL;
  if (lf_executor_mark_broken(&p->base, why)) q = lf_queue_take(&p->queue);
  lf_broadcast(&p->work_cv);
  lf_unlock(&p->mu);
  lf_fail_queue(q, "BrokenThreadPool", p->base.broken, &p->base.opts, NULL);
}

/* What an idle worker may have to do outside the pool's lock before it
** sleeps: give pages back to the system once, deliver its own state's
** callbacks of futures that complete while it waits for work, and give
** back the big blocks its state keeps (lf_state_keep_blocks) once it has
** had no task for BLOCKS_HOLD: a pool that moves big values keeps warm
** pages between its tasks, an idle one gives them back. */
enum { CHORE_TRIM = 1, CHORE_CALLBACKS = 2, CHORE_BLOCKS = 4 };
#define CALLBACK_POLL 0.01   /* seconds between two deliveries when idle */
#define BLOCKS_HOLD LF_STATE_HOLD   /* seconds an idle worker keeps its blocks */
#define LEND_GC_MIN ((size_t)1 << 20)   /* see run_task */

/* next_task's answer when the worker has chores to do first. Compared,
** never dereferenced. */
static char chores_tag;
#define CHORES ((lf_future *)(void *)&chores_tag)

/* Complete `done` (the task taken last, if any: with *out when it ran
** here) and take the next task; or CHORES, when there is none and the
** worker has `chores` (CHORE_BLOCKS: due at `blocks_due`); or NULL when
** the worker should exit. The completion
** happens under the pool's lock, so that whoever sees the result and
** submits again finds this worker idle (or busy with a queued task) rather
** than starting another thread. */
static lf_future *next_task(lf_pool *p, lf_future *done, int ran,
                            lf_buf *out, int failed, int chores,
                            double blocks_due) {
  int spun = 0;
  lf_lock(&p->mu);
  if (done != NULL) {
    active_remove(p, done);
    if (ran) lf_future_finish(done, out, failed);
    lf_future_release(done);
    atomic_fetch_sub_explicit(&p->running, 1, memory_order_relaxed);
  }
  for (;;) {
    if (p->queue.head != NULL && p->base.broken == NULL) {
      lf_future *f = lf_queue_pop(&p->queue);
      atomic_fetch_add_explicit(&p->running, 1, memory_order_relaxed);
      active_add(p, f);
      lf_unlock(&p->mu);
      return f;
    }
    if (p->shutdown || p->base.broken != NULL) break;
    lf_spinning sp;
    if (!spun && lf_spin_begin(&p->spin, LF_SPIN_FOR_OTHER, &sp)) {
      /* Watch the queue a little before sleeping, when that pays (see
      ** lf_spin.h): a task that arrives now is taken without a futex wake
      ** on either side. */
      spun = 1;
      p->spinning++;
      lf_unlock(&p->mu);
      int paid = 0;
      for (unsigned i = 1;; i++) {
        if (lf_queue_count(&p->queue) > 0) { paid = 1; break; }
        if ((i & 31) == 0 && !lf_spin_go_on(&sp)) break;
        lf_cpu_relax();
      }
      lf_spin_end(&p->spin, &sp, paid);
      lf_lock(&p->mu);
      p->spinning--;
      if (p->spin_claims > p->spinning) p->spin_claims = p->spinning;
      continue;
    }
    spun = 1;
    if (chores & CHORE_TRIM) {
      lf_unlock(&p->mu);
      return CHORES;
    }
    double until = (chores & CHORE_CALLBACKS) ? lf_now() + CALLBACK_POLL : -1;
    if ((chores & CHORE_BLOCKS) && (until < 0 || blocks_due < until))
      until = blocks_due;
    p->idle++;
    int rc = lf_cond_wait_until(&p->work_cv, &p->mu, until);
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

/* Runs the task of f, which the caller set running, in L; returns 1 when
** it failed (*out then holds the error). Counted busy for lf_spin.h. */
/* A thread runs the task: it is stopped with a hook on its state. */
typedef struct thread_runner {
  lf_runner base;
  lua_State *L;
} thread_runner;

static void stop_in_thread(lf_runner *self, lf_future *f) {
  (void)f;
  lf_stop_now(((thread_runner *)(void *)self)->L);
}

static int run_task(lua_State *L, lf_task_heap *heap, lf_future *f,
                    const lf_codec_opts *pool_opts, lf_buf *out) {
  lf_codec_opts opts = *pool_opts;
  opts.pins = &f->call;   /* the queues and arrays it names */
  lf_spin_busy(1);
  /* Strings this state lent to results that are gone now: unanchored,
  ** they are garbage. When they are a good part of the heap, collect them
  ** now, so that their blocks come back warm for this task's values
  ** (lf_state_keep_blocks) rather than the task mapping fresh ones. */
  size_t lent = lf_lend_collect(L);
  if (lent >= LEND_GC_MIN && lent >= lf_state_heap(L) / 4)
    lua_gc(L, LUA_GCCOLLECT);
  lf_task_begin(L, heap);
  thread_runner runner = { { stop_in_thread }, L };   /* f forgets it below */
  lf_future_run_by(f, &runner.base);
  lf_stop_enter(L, &f->stop, f->run_limit);
  int failed = lf_task_run(L, f->kind, f->call.data, f->call.len, out, &opts);
  /* Nobody may set a hook on L once it goes on to another task: forget
  ** the runner first, then take the hook off. */
  lf_future_run_by(f, NULL);
  lf_stop_leave(L);
  failed = lf_task_settle(L, failed, atomic_load(&f->stop), f->run_limit,
                          out, pool_opts);
  lf_spin_busy(-1);
  lf_task_end(L, heap, failed);
  return failed;
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
  if (L != NULL && p->max_memory > 0) lf_state_set_limit(L, p->max_memory);
  if (L != NULL) lf_state_keep_blocks(L, 1);
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
    int failed = 0, ran = 0;
    double blocks_due = 0;   /* 0: not idle since the blocks were kept */
    for (;;) {
      int chores = (heap.trim ? CHORE_TRIM : 0) |
                   (lf_has_pending_callbacks(L) ? CHORE_CALLBACKS : 0);
      if (lf_state_kept(L) > 0) {
        chores |= CHORE_BLOCKS;
        if (blocks_due == 0) blocks_due = lf_now() + BLOCKS_HOLD;
      }
      f = next_task(p, f, ran, &out, failed, chores, blocks_due);
      lf_buf_free(&out);   /* left over only if the future was done already */
      failed = ran = 0;
      if (f == NULL) break;
      if (f == CHORES) {
        if (heap.trim || (blocks_due > 0 && lf_now() >= blocks_due)) {
          lf_state_drop_blocks(L);
          blocks_due = 0;
        }
        lf_task_idle(&heap);
        lf_lend_collect(L);   /* strings lent to results since dropped */
        lf_run_callbacks(L);
        f = NULL;
        continue;
      }
      blocks_due = 0;
      /* Not 1: cancelled while queued. */
      if (lf_future_set_running(f) == 1) {
        ran = 1;
        failed = run_task(L, &heap, f, &p->base.opts, &out);
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

static void pool_shutdown(lf_executor *ex, int how) {
  lf_pool *p = (lf_pool *)ex;
  lf_future *q = NULL;
  lf_lock(&p->mu);
  p->shutdown = 1;
  if (how & (LF_SHUTDOWN_CANCEL | LF_SHUTDOWN_INTERRUPT))
    q = lf_queue_take(&p->queue);
  if (how & LF_SHUTDOWN_INTERRUPT)
    for (lf_future *f = p->active; f != NULL; f = f->next_queued)
      lf_future_interrupt(f, LF_STOP_CANCEL);
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

/* ---- running a task on the thread that waits for it ---- */

/* A thread waiting for a task that no worker has started, while a
** worker's place is free, would otherwise sleep until a worker wakes up
** for it: on a busy machine, or with more workers than cores, that wake-up
** is the cost of a round trip. So the waiting thread runs the task itself,
** in a helper state of its own that stands for a worker (the pool's
** package paths and initializer, its own globals), taking the free place:
** the pool never runs more than max_workers tasks at once. A worker of
** the same pool that waits for a task of it may always do so, in the
** place it holds already (which also saves a pool whose workers all wait
** for queued tasks from deadlock).
**
** The helper state is kept in the waiting state's registry, one at a time
** (a wait for another pool's task replaces it), and closed with that
** state. It holds an origin reference to its pool. */
typedef struct helper {
  lua_State *H;
  lf_pool *pool;          /* whose tasks H runs (origin reference) */
  lf_task_heap heap;
} helper;

#define HELPER_MT "futures.helper"
static const char HELPER_KEY = 'h';   /* registry: the helper userdata */

static void helper_drop(lua_State *L, helper *h) {
  if (h->H != NULL) {
    lf_ctx_set_helper(L, NULL);
    lf_close_state(h->H);
  }
  if (h->pool != NULL) lf_origin_release(&h->pool->base.origin);
  h->H = NULL;
  h->pool = NULL;
}

static int helper_gc(lua_State *L) {
  helper_drop(L, luaL_checkudata(L, 1, HELPER_MT));
  return 0;
}

/* The helper of state L for pool p, made if needed; NULL when the state or
** the initializer cannot be made. [-0,+0,m] */
static helper *get_helper(lua_State *L, lf_pool *p) {
  lf_getctx(L);   /* before the helper exists: it may raise */
  helper *h;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &HELPER_KEY) == LUA_TUSERDATA) {
    h = lua_touserdata(L, -1);
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    if (luaL_newmetatable(L, HELPER_MT)) {
      lua_pushcfunction(L, helper_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &HELPER_KEY);
  }
  if (h->pool == p) return h;
  helper_drop(L, h);
  lf_codec_opts init_opts = p->base.opts;
  init_opts.pins = &p->init;
  lua_State *H = lf_new_state(p->path, p->cpath);
  if (H == NULL) return NULL;
  if (p->max_memory > 0) lf_state_set_limit(H, p->max_memory);
  lf_state_keep_blocks(H, 1);
  if (p->init.len > 0 &&
      lf_task_init(H, p->init.data, p->init.len, &init_opts) != 0) {
    lf_close_state(H);   /* the workers' initializer will say why */
    return NULL;
  }
  h->H = H;
  h->pool = p;
  lf_origin_retain(&p->base.origin);
  lf_ctx_set_helper(L, H);
  return h;
}

static int pool_run_here(lf_executor *ex, lf_future *f, lua_State *L) {
  lf_pool *p = (lf_pool *)ex;
  int mine = lf_current_executor == ex;   /* a worker waiting in its pool */
  if (lf_future_state(f) != LF_PENDING ||
      (!mine && atomic_load_explicit(&p->running, memory_order_relaxed) >=
                    p->max_workers))
    return 0;
  helper *h = get_helper(L, p);
  if (h == NULL) return 0;
  lf_lock(&p->mu);
  int take = p->base.broken == NULL &&
             (mine || atomic_load_explicit(&p->running, memory_order_relaxed)
                          < p->max_workers) &&
             lf_queue_remove(&p->queue, f, 64);
  if (take && !mine)
    atomic_fetch_add_explicit(&p->running, 1, memory_order_relaxed);
  if (take) active_add(p, f);
  /* A worker may have been signalled or claimed for this task: it finds
  ** nothing and goes back to sleep; its claim is void. */
  if (take && p->wakeups > 0) p->wakeups--;
  if (take && p->spin_claims > 0) p->spin_claims--;
  lf_unlock(&p->mu);
  if (!take) return 0;
  if (lf_future_set_running(f) == 1) {   /* else cancelled: done */
    lf_executor *was = lf_current_executor;
    lf_current_executor = ex;
    /* While the waiting thread runs the task, Ctrl-C (a hook set on the
    ** waiting state, see lf_state.h) must still stop it: the helper's stop
    ** hook and the runtime's own waits look at the waiting state too. */
    lf_intr_watch(L);
    lf_buf out = LF_BUF_INIT;
    int failed = run_task(h->H, &h->heap, f, &p->base.opts, &out);
    lf_intr_unwatch();
    lf_future_finish(f, &out, failed);
    lf_buf_free(&out);
    lf_current_executor = was;
    lf_run_callbacks(h->H);
    if (h->heap.trim) lf_state_drop_blocks(h->H);
    lf_task_idle(&h->heap);
  }
  lf_lock(&p->mu);
  active_remove(p, f);
  if (!mine) atomic_fetch_sub_explicit(&p->running, 1, memory_order_relaxed);
  lf_unlock(&p->mu);
  lf_future_release(f);   /* the queue's reference */
  return 1;
}

static const lf_executor_ops pool_ops = {
  "ThreadPoolExecutor", "BrokenThreadPool", LF_CODEC_LEND,
  pool_submit, pool_shutdown, pool_join, pool_run_here, NULL, pool_describe,
  pool_destroy,
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
  lf_mutex_init_hot(&p->mu);
  lf_cond_init(&p->work_cv);
  lf_cond_init(&p->exit_cv);
  lf_queue_init(&p->queue);
  lf_spin_site_init(&p->spin, LF_SPIN_WORKER_NS);
  p->max_workers = cfg->max_workers;
  p->max_memory = cfg->max_memory;
  if (cfg->name) snprintf(p->name, sizeof p->name, "%s", cfg->name);
  if (cfg->init != NULL) {
    p->init = *cfg->init;
    memset(cfg->init, 0, sizeof *cfg->init);
  }
  return &p->base;
}
