/*
** lf_process_pool.c — the ProcessPoolExecutor engine: a queue of futures
** and up to max_workers worker processes (bin/lua-futures --lf-worker, each
** with its own lua_State), spoken to over one socketpair each with the
** frames of lf_proto.h. lf_interp.c finds the interpreter they run.
**
** Threads: submit and shutdown run on any thread. A reader thread per pool,
** started by the first submit, spawns the workers, waits in poll on every
** worker's socket and pidfd, reads results, completes futures, sends queued
** tasks to workers that became idle, and reaps workers that exit. join runs
** on the owner's thread. pool->mu guards the queue and the list of tasks to
** send again, the counters and, in each worker slot, the state, the running
** task and the pending output. A slot's input buffers belong to the reader
** alone, and only the reader opens and closes a slot's descriptors and
** signals or reaps its process, so a socket that another thread writes to
** under pool->mu is never closed under it, and no pid is signalled after it
** was reaped. The worker processes' spin and watchdog are described in
** lf_process_worker.c. Lock order: pool->mu, then a future's mutex (tasks
** are started, completed and failed under pool->mu); nobody takes pool->mu
** while holding a future's.
**
** Sharing and queues (lf_proto.h, "Shared objects" and "Queues"): each
** slot records what the host shared with its worker (its holdings,
** lf_pshare.c), which whoever sends it a frame brings up to date first. The
** reader serves a worker's queue requests under pool->mu, without any Lua
** state; a request that must wait is parked in the queue as a waiter
** (struct park, one per worker at most) whose completion, on whatever
** thread puts or gets, only moves it to the pool's done list under
** `done_mu` and wakes the reader, which answers. Lock order: pool->mu, then
** a queue's mutex, then done_mu (taken under a queue's mutex by a
** completion); done_mu is never held while taking another lock.
**
** Big payloads (lf_proto.h): the pool's calls are encoded with
** lf_region_mem, so a big one lives in a memfd region (lf_region.h) whose
** descriptor goes to the worker; the reader gives cached regions back
** after REGION_HOLD unused. Descriptors a worker sends come in with its bytes
** (recv_worker) and wait in the slot (the reader's alone) for the big
** RESULT that takes them; a sealed memfd that passes the checks becomes
** the future's result as a read-only mapping (lf_bufmem_mapped).
**
** Wake-ups: a submit that finds an idle worker writes the task to its
** socket at once (one sendmsg, no thread hand-off); one that finds every
** worker busy and the pool at max_workers only queues, with no system
** call: the reader sends the next task when a result comes in. Threads
** that need the reader (a worker to start, output that did not fit in a
** socket, shutdown) write to its eventfd, once per poll (`woken`).
**
** Ownership: the queue holds one reference to each queued future; a worker
** slot takes it over with the task and drops it when the future completes.
** The encoded call stays in the future (which frees it on completion) while
** the slot's output queue points into it. A task whose worker died before
** it could run it goes back, with its reference, to the pool's list of
** tasks to send again. A parked request holds a reference to its queue;
** once completed it belongs to the done list until the reader answers it.
** A worker that dies while parked loses nothing: an item already handed to
** its request goes back to the front of the queue. The reader does not
** reference the pool: the owner joins it (and it returns only once every
** worker process is reaped) before the pool is destroyed. Workers are
** reaped by pid only, so the host's other children are left alone.
*/
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_process_pool.h"
#include "lf_proto.h"
#include "lf_pshare.h"
#include "lf_region.h"
#include "lf_squeue.h"
#include "lf_state.h"

extern char **environ;

#define STAGE_SIZE ((size_t)64 << 10)   /* a worker's small-frame buffer */
#define SOCKET_BUFFER (1 << 20)         /* SO_SNDBUF asked for, both ends */
#define REAP_GRACE 2.0                  /* seconds from EOF to SIGKILL */
#define STARTUP_TRIES 3                 /* deaths before READY that break */
#define REGION_HOLD 0.5                 /* seconds a call region is kept for
                                           the next big call */

enum { W_FREE, W_SPAWNING, W_IDLE, W_BUSY, W_CLOSING };
enum { R_NONE, R_RUNNING, R_EXITED, R_JOINED };

typedef struct lf_proc {
  /* Guarded by pool->mu. pid, fd and pidfd are written only by the reader
  ** (while the slot is SPAWNING, or when it frees it under pool->mu), so
  ** the reader reads them without the lock and other threads under it. */
  int state;                 /* W_* */
  pid_t pid;
  int fd;                    /* the host's end of the socketpair, or -1 */
  int pidfd;                 /* -1 when the kernel has no pidfd_open */
  int ready;                 /* READY arrived */
  lf_future *task;           /* the running task (one reference) or NULL */
  uint32_t seq;              /* id of the last task sent */
  long ntasks;               /* tasks completed */
  lf_outq out;               /* output not written yet; the TASK frame's
                                segments are tagged */
  unsigned char hinit[LF_PROC_HDR], htask[LF_PROC_HDR + LF_MEMFD_DESC];
  lf_holdings held;          /* what the host shared with it */
  lf_buf pins;               /* named by its PINS frame, for the next frame */
  struct park *parked;       /* its queue request waiting, or NULL */
  const char *why;           /* why the host killed it, or NULL */
  int dead_socket;           /* a write failed: it is to be killed */
  double deadline;           /* the task's run limit ends (0: none) */
  double kill_at;            /* stopped, it must be done by then (0: not) */
  struct lf_ppool *pool;     /* the slot's pool (for the runner) */
  lf_runner runner;          /* its task's while it runs (stop_in_process) */
  /* Set by any thread under the task's mutex (see stop_in_process): */
  _Atomic(lf_future *) stop_task;
  int doomed;                /* a frame for it was lost: the reader kills it */
  /* The reader's alone: */
  int eof, killed;
  double eof_at;
  unsigned char *stage;      /* STAGE_SIZE bytes; stage[0..have) unread */
  size_t have;
  int inbig;                 /* a payload too big for stage is arriving */
  lf_frame big_fr;
  lf_buf big;                /* ... into big.data[0..got) */
  size_t got;
  int rfds[LF_MEMFD_MAXFDS]; /* descriptors it sent, for its big frames */
  int nrfds;
} lf_proc;

typedef struct park park;

typedef struct lf_ppool {
  lf_executor base;
  pthread_mutex_t mu;
  pthread_mutex_t done_mu;   /* guards `done` */
  park *done;                /* completed parked requests, to answer */
  pthread_cond_t exit_cv;    /* join waits here for the reader to exit */
  lf_queue queue;
  lf_queue retry;            /* RUNNING tasks to send again (their worker
                                died before it had the whole frame) */
  int nprocs;                /* slots not FREE */
  int nidle;                 /* slots IDLE */
  int shutdown;
  int spawn_blocked;         /* a start failed: retry once a worker exits */
  int kill_sig;              /* kill_workers: the signal to send, or 0 */
  char *pending_break;       /* kill_workers: why the reader breaks it */
  int startup_failures;      /* workers in a row that died before READY */
  int reader;                /* R_* */
  int woken;                 /* a wake-up is in efd, not yet read */
  int efd;                   /* eventfd that wakes the reader; the reader
                                closes it when it exits (-1 then) */
  pthread_t thread;
  /* Read-only once the pool exists: */
  int max_workers;
  long max_tasks;            /* per child; 0 for no limit */
  double grace;              /* seconds a stopped task has before a kill */
  lf_proc *procs;            /* [max_workers] */
  char *exe;                 /* the interpreter, for argv[0] and messages */
  char *spawn_path;          /* what is executed (/proc/self/exe or exe) */
  unsigned char *init;       /* the INIT payload */
  size_t init_len;
  lf_buf init_pins;          /* the shared objects the initializer names */
  /* The reader's alone: */
  lua_State *scratch;        /* builds BrokenProcessPool errors */
  struct pollfd *pfds;       /* [1 + 2 * max_workers] */
  lf_proc **pfd_proc;
} lf_ppool;

/* ---- futures ---- */

/* Complete f (RUNNING) with a BrokenProcessPool error. Reader only. */
static void fail_future(lf_ppool *p, lf_future *f, const char *msg) {
  lf_future_fail(f, "BrokenProcessPool", msg, &p->base.opts, &p->scratch);
}

/* Fail the tasks to send again (RUNNING) of a broken pool. Reader only,
** with pool->mu held. */
static void fail_retries_locked(lf_ppool *p) {
  lf_fail_queue(lf_queue_take(&p->retry), "BrokenProcessPool", p->base.broken,
                &p->base.opts, &p->scratch);
}

/* Mark the pool broken (once) and fail what is queued. Reader only, with
** pool->mu held. */
static void break_locked(lf_ppool *p, const char *why) {
  if (!lf_executor_mark_broken(&p->base, why)) return;
  lf_fail_queue(lf_queue_take(&p->queue), "BrokenProcessPool", p->base.broken,
                &p->base.opts, &p->scratch);
  fail_retries_locked(p);
}

/* Is there work for a worker (queued, or to send again)? */
static int has_work_locked(lf_ppool *p) {
  return p->queue.head != NULL || p->retry.head != NULL;
}

/* ---- writing to workers (pool->mu held) ---- */

static void wake_locked(lf_ppool *p) {
  if (p->woken || p->reader != R_RUNNING) return;
  p->woken = 1;
  uint64_t one = 1;
  ssize_t n = write(p->efd, &one, sizeof one);
  (void)n;   /* EAGAIN: the counter is already non-zero, the reader wakes */
}

/* Is part of w's TASK frame still unwritten? */
static int task_unsent(const lf_proc *w) { return w->out.ntagged > 0; }

/* The task of w never ran (its worker died before it had the whole frame,
** or before it was ready): it goes back to the pool, to be sent first to
** another worker. It stays RUNNING: cancel() already failed for it. What
** was still to be written to w is dropped. */
static void take_back_task_locked(lf_ppool *p, lf_proc *w) {
  lf_future *f = w->task;
  lf_outq_clear(&w->out);
  if (f == NULL) return;
  w->task = NULL;
  /* w's slot may be reused before f is sent again: an interrupt meanwhile
  ** only flags f, and the next worker's run_by stops it at once. */
  lf_future_run_by(f, NULL);
  lf_queue_push(&p->retry, f);   /* its call is still in f->call */
}

/* The socket of w is dead (EPIPE, ECONNRESET): its process has exited or
** closed it. The task frame, always the last thing written, did not get
** through whole, so the worker never ran it. w takes no more work; the
** reader, which sees its end-of-file, makes sure it exits (only the reaper
** may signal a pid). */
static void socket_dead_locked(lf_ppool *p, lf_proc *w) {
  if (task_unsent(w)) take_back_task_locked(p, w);
  else lf_outq_clear(&w->out);
  if (w->state == W_IDLE) p->nidle--;
  w->state = W_CLOSING;
  w->dead_socket = 1;
  wake_locked(p);
}

/* Write what is pending. Returns 0 when all is written, 1 when the socket
** is full (the reader continues on POLLOUT), -1 when the worker is gone. */
static int flush_locked(lf_ppool *p, lf_proc *w) {
  int rc = lf_outq_flush(&w->out, w->fd);
  if (rc < 0) socket_dead_locked(p, w);
  return rc;
}

/* A frame for w could not be queued (no memory): w would wait for it for
** ever, so it goes; its unsent task, if any, goes to another worker. The
** reader kills it (only the reaper signals a pid). */
static void lost_output_locked(lf_ppool *p, lf_proc *w) {
  if (task_unsent(w)) take_back_task_locked(p, w);
  else lf_outq_clear(&w->out);
  if (w->why == NULL)
    w->why = "the host had not enough memory for what it had to send it";
  if (w->state == W_IDLE) p->nidle--;
  w->state = W_CLOSING;
  w->doomed = 1;
  wake_locked(p);
}

/* Queue a control frame for w and write it (or ask the reader to). */
static void send_frame_locked(lf_ppool *p, lf_proc *w, unsigned type,
                              unsigned flag, uint32_t id, const void *payload,
                              size_t len) {
  if (w->state == W_CLOSING && (w->dead_socket || w->doomed)) return;
  if (lf_outq_frame(&w->out, type, flag, id, payload, len) != 0) {
    lost_output_locked(p, w);
    return;
  }
  if (flush_locked(p, w) == 1) wake_locked(p);
}

/* Fail f (RUNNING, not sent) from any thread: what it names could not be
** shared with the worker. Drops the queue's reference. */
static void fail_unsendable(lf_ppool *p, lf_future *f, const char *why) {
  lua_State *S = NULL;
  char msg[400];
  snprintf(msg, sizeof msg, "cannot send the task to a worker process: %s",
           why);
  lf_future_fail(f, "RuntimeError", msg, &p->base.opts, &S);
  if (S != NULL) lua_close(S);
  lf_future_release(f);
}

/* The runner of a task sent to a worker process: the reader signals the
** worker (only the reader signals pids, see the file head), so this only
** names the task and wakes the reader. Called under the task's mutex. */
static void stop_in_process(lf_runner *self, lf_future *f) {
  lf_proc *w = (lf_proc *)(void *)((char *)self - offsetof(lf_proc, runner));
  atomic_store(&w->stop_task, f);
  uint64_t one = 1;
  ssize_t n = write(w->pool->efd, &one, sizeof one);
  (void)n;   /* EAGAIN: the counter is non-zero already, the reader wakes */
}

/* Queue the TASK frame of f for w with its payload in the memfd region
** that f's call was encoded into (lf_region.h): a duplicate of the
** region's descriptor goes with the frame's first byte, and not one byte
** of the call is copied. Returns 0, or -1 when the call is not in a
** region or no descriptor is left (nothing queued: send the call in the
** socket). */
static int queue_big_task_locked(lf_proc *w, lf_future *f) {
  int rfd = lf_region_fd(&f->call);
  if (rfd < 0) return -1;
  int *fds = malloc(sizeof *fds);
  if (fds == NULL) return -1;
  fds[0] = fcntl(rfd, F_DUPFD_CLOEXEC, 3);
  if (fds[0] < 0) { free(fds); return -1; }
  uint64_t len = f->call.len;
  lf_frame_pack(w->htask, LF_FRAME_TASK, (unsigned)f->kind | LF_FLAG_MEMFD,
                w->seq + 1, LF_MEMFD_DESC);
  memcpy(w->htask + LF_PROC_HDR, &len, 8);
  if (lf_outq_push(&w->out, w->htask, LF_PROC_HDR + LF_MEMFD_DESC, NULL, fds,
                   1, 1) != 0)
    return -1;   /* the descriptor is closed */
  w->seq++;
  return 0;
}

/* The cached call regions unused for REGION_HOLD go back to the system;
** lowers *timeout (ms, -1: none) to when the next one would. */
static void tend_regions(int *timeout) {
  double next = lf_region_trim(REGION_HOLD);
  if (next >= 0) {
    int ms = (int)(next * 1000) + 1;
    if (*timeout < 0 || ms < *timeout) *timeout = ms;
  }
}

/* Send f (RUNNING) to the idle worker w, after what it must share. The
** call's segments point into f->call, which stays there until f completes:
** f completes only once the whole frame is written (a result that comes
** earlier is a protocol error), or goes back to the pool when its worker
** dies, to be written again. Returns 0, or -1 when f could not be sent
** (then failed, and w is still idle). */
static int send_task_locked(lf_ppool *p, lf_proc *w, lf_future *f) {
  char why[300];
  if (f->call.nhandles > 0 &&
      lf_holdings_share(&w->held, &f->call, &w->out, why, sizeof why) != 0) {
    fail_unsendable(p, f, why);
    return -1;
  }
  if (f->call.len <= LF_BIG_FRAME || queue_big_task_locked(w, f) != 0) {
    lf_frame_pack(w->htask, LF_FRAME_TASK, (unsigned)f->kind, ++w->seq,
                  f->call.len);
    if (lf_outq_push(&w->out, w->htask, LF_PROC_HDR, NULL, NULL, 0, 1) != 0 ||
        lf_outq_push(&w->out, f->call.data, f->call.len, NULL, NULL, 0, 1)
            != 0) {
      fail_unsendable(p, f, "not enough memory");
      lost_output_locked(p, w);   /* its output lost a frame: it cannot go on */
      return -1;
    }
  }
  w->task = f;   /* the queue's reference moves here */
  w->state = W_BUSY;
  p->nidle--;
  w->deadline = f->run_limit > 0 ? lf_now() + f->run_limit : 0;
  w->kill_at = 0;
  if (w->deadline > 0) wake_locked(p);   /* the reader's poll must end then */
  lf_future_run_by(f, &w->runner);
  if (flush_locked(p, w) == 1) wake_locked(p);
  return 0;
}

/* Send queued tasks to idle workers, the lowest slot first (so that the
** same few processes stay warm). */
static void dispatch_locked(lf_ppool *p) {
  for (int i = 0; has_work_locked(p) && p->nidle > 0 && i < p->max_workers;
       i++) {
    lf_proc *w = &p->procs[i];
    if (w->state != W_IDLE) continue;
    if (p->retry.head != NULL) {   /* sent before, to a worker that died */
      if (send_task_locked(p, w, lf_queue_pop(&p->retry)) != 0) i--;
      continue;
    }
    while (p->queue.head != NULL && p->base.broken == NULL) {
      lf_future *f = lf_queue_pop(&p->queue);
      if (lf_future_set_running(f) == 1) {
        if (send_task_locked(p, w, f) == 0) break;
        if (w->state != W_IDLE) break;
        continue;   /* failed: the next one, to the same worker */
      }
      lf_future_release(f);   /* cancelled while queued */
    }
  }
}

/* Ask idle workers to exit when no work can reach them any more. */
static void wind_down_locked(lf_ppool *p) {
  if ((!p->shutdown && p->base.broken == NULL) || has_work_locked(p)) return;
  for (int i = 0; i < p->max_workers; i++) {
    lf_proc *w = &p->procs[i];
    if (w->state != W_IDLE || lf_outq_pending(&w->out)) continue;
    shutdown(w->fd, SHUT_WR);
    w->state = W_CLOSING;
    p->nidle--;
  }
}

/* ---- the executor interface ---- */

static void *reader_main(void *arg);

static int pp_submit(lf_executor *ex, lf_future *f) {
  lf_ppool *p = (lf_ppool *)ex;
  lf_lock(&p->mu);
  if (p->base.broken) { lf_unlock(&p->mu); return LF_SUBMIT_BROKEN; }
  if (p->shutdown) { lf_unlock(&p->mu); return LF_SUBMIT_SHUTDOWN; }
  if (p->reader == R_NONE) {
    /* Signals go to the Lua threads, never to the reader; its children
    ** get a clean mask back (see spawn_worker). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_t attr;
    LF_CHECK(pthread_attr_init(&attr));
    pthread_attr_setstacksize(&attr, (size_t)512 << 10);
    int rc = pthread_create(&p->thread, &attr, reader_main, p);
    LF_CHECK(pthread_attr_destroy(&attr));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) { lf_unlock(&p->mu); return LF_SUBMIT_NOMEM; }
    p->reader = R_RUNNING;
  }
  lf_future_retain(f);
  lf_queue_push(&p->queue, f);
  if (p->nidle > 0)
    dispatch_locked(p);
  else if (p->nprocs < p->max_workers && !p->spawn_blocked)
    wake_locked(p);
  lf_unlock(&p->mu);
  return LF_SUBMIT_OK;
}

static void pp_shutdown(lf_executor *ex, int how) {
  lf_ppool *p = (lf_ppool *)ex;
  lf_future *q = NULL;
  lf_lock(&p->mu);
  p->shutdown = 1;
  if (how & (LF_SHUTDOWN_CANCEL | LF_SHUTDOWN_INTERRUPT))
    q = lf_queue_take(&p->queue);
  if (how & LF_SHUTDOWN_INTERRUPT)
    for (int i = 0; i < p->max_workers; i++)
      if (p->procs[i].task != NULL)
        lf_future_interrupt(p->procs[i].task, LF_STOP_CANCEL);
  wake_locked(p);
  lf_unlock(&p->mu);
  lf_future_cancel_queue(q);
}

/* terminate_workers / kill_workers: the pool is broken (queued tasks fail)
** and shut down; the reader sends `sig` to every worker. */
static void pp_kill_workers(lf_executor *ex, int sig) {
  lf_ppool *p = (lf_ppool *)ex;
  lf_lock(&p->mu);
  p->shutdown = 1;
  p->kill_sig = sig;
  if (p->reader == R_RUNNING) {
    char why[96];
    snprintf(why, sizeof why, "the pool's workers were sent signal %d (SIG%s)",
             sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
    p->pending_break = strdup(why);   /* the reader breaks the pool */
    wake_locked(p);
  }
  lf_unlock(&p->mu);
}

static int pp_join(lf_executor *ex, double until) {
  lf_ppool *p = (lf_ppool *)ex;
  lf_lock(&p->mu);
  while (p->reader == R_RUNNING) {
    if (lf_cond_wait_until(&p->exit_cv, &p->mu, until) == ETIMEDOUT) break;
  }
  int done = p->reader != R_RUNNING;
  if (p->reader == R_EXITED) {
    /* Under the lock, so that two joiners never join the thread twice. */
    LF_CHECK(pthread_join(p->thread, NULL));
    p->reader = R_JOINED;
  }
  lf_unlock(&p->mu);
  return done;
}

static void pp_describe(lf_executor *ex, char *buf, size_t size) {
  lf_ppool *p = (lf_ppool *)ex;
  lf_lock(&p->mu);
  snprintf(buf, size, "%d/%d workers, %zu queued%s", p->nprocs,
           p->max_workers, lf_queue_count(&p->queue) +
           lf_queue_count(&p->retry), p->base.broken ? ", broken"
                                      : p->shutdown ? ", shut down" : "");
  lf_unlock(&p->mu);
}

static void pp_destroy(lf_executor *ex) {
  lf_ppool *p = (lf_ppool *)ex;
  lf_future_cancel_queue(lf_queue_take(&p->queue));
  free(p->procs);   /* every slot is FREE: the reader reaped them all */
  free(p->pfds);
  free(p->pfd_proc);
  free(p->init);
  lf_buf_free(&p->init_pins);
  free(p->exe);
  free(p->spawn_path);
  lf_executor_free_broken(&p->base);
  free(p->pending_break);
  if (p->efd >= 0) close(p->efd);
  lf_region_trim(0);   /* a pool that goes leaves no cached region behind */
  LF_CHECK(pthread_mutex_destroy(&p->mu));
  LF_CHECK(pthread_mutex_destroy(&p->done_mu));
  LF_CHECK(pthread_cond_destroy(&p->exit_cv));
  free(p);
}

static const lf_executor_ops pp_ops = {
  "ProcessPoolExecutor", "BrokenProcessPool", 0,
  pp_submit, pp_shutdown, pp_join, NULL, pp_kill_workers, pp_describe,
  pp_destroy,
};

/* ---- the reader: starting workers ---- */

/* Start a worker process in slot w (SPAWNING, so no other thread looks at
** it). Runs without pool->mu. Returns 0 or an errno value. */
static int spawn_worker(lf_ppool *p, lf_proc *w) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return errno;
  if (sv[1] == LF_PROC_FD) {   /* dup2 onto itself would keep CLOEXEC */
    int d = fcntl(sv[1], F_DUPFD_CLOEXEC, LF_PROC_FD + 1);
    int e = errno;
    close(sv[1]);
    if (d < 0) { close(sv[0]); return e; }
    sv[1] = d;
  }
  unsigned char *stage = malloc(STAGE_SIZE);
  if (stage == NULL) { close(sv[0]); close(sv[1]); return ENOMEM; }

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  /* The worker gets its socket as fd 3, no stdin (it would compete with
  ** the host for the terminal), the host's stdout and stderr, and nothing
  ** else. */
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, sv[1], LF_PROC_FD);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
  posix_spawn_file_actions_addclosefrom_np(&fa, LF_PROC_FD + 1);
#endif
  /* The reader blocks every signal; the worker starts with default actions
  ** (a host that ignores SIGINT or SIGPIPE does not pass that on) and only
  ** the stop signal blocked, until it has a handler for it: its default
  ** action would end the process. */
  sigset_t stop_only, all;
  sigemptyset(&stop_only);
  sigaddset(&stop_only, LF_STOP_SIGNAL);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &stop_only);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                  POSIX_SPAWN_SETSIGDEF);
  char host[24];   /* the worker checks that its parent is still us */
  snprintf(host, sizeof host, "%ld", (long)getpid());
  char *argv[] = { p->exe, (char *)LF_WORKER_FLAG, host, NULL };
  pid_t pid;
  int rc = posix_spawn(&pid, p->spawn_path, &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    free(stage);
    return rc;
  }
  int size = SOCKET_BUFFER;   /* fewer wake-ups for big frames; capped by
                                 net.core.wmem_max */
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  w->pid = pid;
  w->fd = sv[0];
#ifdef SYS_pidfd_open
  w->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);   /* O_CLOEXEC */
#else
  w->pidfd = -1;
#endif
  w->stage = stage;
  return 0;
}

/* Start up to `n` workers; called with pool->mu held, which it releases
** while the processes start. */
static void spawn_locked(lf_ppool *p, int n) {
  lf_proc *slots[64];
  if (n > 64) n = 64;
  int k = 0;
  for (int i = 0; i < p->max_workers && k < n; i++) {
    if (p->procs[i].state != W_FREE) continue;
    lf_proc *w = &p->procs[i];
    memset(w, 0, sizeof *w);
    w->state = W_SPAWNING;
    w->fd = w->pidfd = -1;
    w->pool = p;
    w->runner.stop = stop_in_process;
    p->nprocs++;
    slots[k++] = w;
  }
  lf_unlock(&p->mu);
  int err[64];
  for (int i = 0; i < k; i++) err[i] = spawn_worker(p, slots[i]);
  lf_lock(&p->mu);
  for (int i = 0; i < k; i++) {
    lf_proc *w = slots[i];
    if (err[i] != 0) {
      w->state = W_FREE;
      p->nprocs--;
      if (p->nprocs > 0) {
        p->spawn_blocked = 1;   /* go on with the workers there are */
      } else {
        char why[PATH_MAX + 128];
        snprintf(why, sizeof why, "cannot start a worker process (%s): %s",
                 p->exe, strerror(err[i]));
        break_locked(p, why);
      }
      continue;
    }
    w->state = W_IDLE;
    p->nidle++;
    char why[300];
    if (p->init_pins.nhandles > 0 &&
        lf_holdings_share(&w->held, &p->init_pins, &w->out, why,
                          sizeof why) != 0) {
      char msg[400];
      snprintf(msg, sizeof msg, "cannot pass the initializer's arguments to "
               "a worker process: %s", why);
      break_locked(p, msg);
      shutdown(w->fd, SHUT_WR);   /* it gets no INIT: it exits */
      w->state = W_CLOSING;
      p->nidle--;
      continue;
    }
    lf_frame_pack(w->hinit, LF_FRAME_INIT, 0, 0, p->init_len);
    if (lf_outq_push(&w->out, w->hinit, LF_PROC_HDR, NULL, NULL, 0, 0) != 0 ||
        lf_outq_push(&w->out, p->init, p->init_len, NULL, NULL, 0, 0) != 0) {
      break_locked(p, "not enough memory to start a worker");
      lf_outq_clear(&w->out);
      shutdown(w->fd, SHUT_WR);
      w->state = W_CLOSING;
      p->nidle--;
      continue;
    }
    /* The first task goes out with INIT, in the same sendmsg. */
    dispatch_locked(p);
    if (w->state == W_IDLE) flush_locked(p, w);
  }
}

/* ---- the reader: what workers send ---- */

static void kill_worker(lf_proc *w, const char *why) {
  if (why != NULL && w->why == NULL) w->why = why;
  if (!w->killed) {
    w->killed = 1;
    kill(w->pid, SIGKILL);   /* not reaped yet: the pid is still ours */
  }
}

/* Complete the task f of a worker with its outcome; a task stopped for its
** run limit ends as a TimeoutError naming it, whatever the worker sent
** (lf_future_finish makes an interrupted one CANCELLED). */
static void finish_task(lf_ppool *p, lf_future *f, lf_buf *outcome,
                        int failed) {
  if (atomic_load(&f->stop) == LF_STOP_TIMEOUT) {
    char msg[96];
    snprintf(msg, sizeof msg, "the task ran longer than its limit of %.14g "
             "seconds", f->run_limit);
    lf_future_fail(f, "TimeoutError", msg, &p->base.opts, &p->scratch);
    return;
  }
  lf_future_finish(f, outcome, failed);
}

/* ---- the reader: queue requests of workers ---- */

/* A worker's queue request that waits in its queue (lf_sqwait first: the
** queue sees only that). */
struct park {
  lf_sqwait w;
  lf_ppool *p;
  lf_proc *proc;             /* the worker that asked */
  lf_squeue *q;              /* one reference */
  uint32_t req;              /* the request's id, repeated in the reply */
  double deadline;           /* monotonic; negative: none */
  park *next_done;
};

/* The queue completed a parked request (any thread; the queue's mutex
** held): the reader answers it. */
static void park_done(lf_sqwait *sw) {
  park *k = (park *)sw;
  lf_ppool *p = k->p;
  lf_lock(&p->done_mu);
  if (p->done == NULL) {   /* parks exist only while the reader runs */
    uint64_t one = 1;
    ssize_t r = write(p->efd, &one, sizeof one);
    (void)r;   /* EAGAIN: the reader wakes anyway */
  }
  k->next_done = p->done;
  p->done = k;
  lf_unlock(&p->done_mu);
}

static void reply_locked(lf_ppool *p, lf_proc *w, uint32_t req,
                         unsigned outcome, const void *payload, size_t len) {
  send_frame_locked(p, w, LF_FRAME_QREPLY, outcome, req, payload, len);
}

static void reply_error_locked(lf_ppool *p, lf_proc *w, uint32_t req,
                               const char *msg) {
  reply_locked(p, w, req, LF_QR_ERROR, msg, strlen(msg));
}

/* The reply to a get: the item, after sharing what it names with w. An
** item that cannot go to w (it holds a future, say) goes back to the
** front of q, and w's get raises why. Takes *it. */
static void reply_item_locked(lf_ppool *p, lf_proc *w, uint32_t req,
                              lf_squeue *q, lf_sqitem *it) {
  char why[300];
  if (lf_sqitem_encode(it) != 0) {   /* a plain item: its bytes now */
    lf_squeue_unget(q, it);
    reply_error_locked(p, w, req, "not enough memory");
    return;
  }
  if (it->buf.nhandles > 0 &&
      lf_holdings_share(&w->held, &it->buf, &w->out, why, sizeof why) != 0) {
    lf_squeue_unget(q, it);
    char msg[400];
    snprintf(msg, sizeof msg, "a worker process cannot take this item: %s",
             why);
    reply_error_locked(p, w, req, msg);
    return;
  }
  /* Header and how to decode it, then the item's bytes as they are. */
  unsigned char *h = calloc(1, LF_PROC_HDR + LF_QITEM_PREFIX);
  if (h == NULL) {
    lf_squeue_unget(q, it);
    reply_error_locked(p, w, req, "not enough memory");
    return;
  }
  lf_frame_pack(h, LF_FRAME_QREPLY, LF_QR_OK, req,
                LF_QITEM_PREFIX + it->buf.len);
  h[LF_PROC_HDR] = (unsigned char)(!it->untrusted || it->functions);
  uint16_t depth = it->untrusted ? it->depth : 0;
  memcpy(h + LF_PROC_HDR + 2, &depth, 2);
  unsigned char *data = it->buf.data;
  size_t len = it->buf.len;
  it->buf.data = NULL;
  lf_buf_free(&it->buf);   /* its pins: w's holdings have their own */
  if (lf_outq_push(&w->out, h, LF_PROC_HDR + LF_QITEM_PREFIX, h, NULL, 0, 0)
      != 0) {
    free(data);
    lost_output_locked(p, w);   /* a lost frame: w cannot go on */
    return;
  }
  if (lf_outq_push(&w->out, data, len, data, NULL, 0, 0) != 0) {
    lost_output_locked(p, w);
    return;
  }
  if (flush_locked(p, w) == 1) wake_locked(p);
}

/* Answer a request that left its queue, and free it. */
static void answer_park_locked(lf_ppool *p, park *k) {
  lf_proc *w = k->proc;
  if (w->parked == k) w->parked = NULL;
  int st = k->w.status;
  if (st == LF_SQ_OK && !k->w.put) {
    reply_item_locked(p, w, k->req, k->q, &k->w.item);
  } else {
    lf_sqitem_free(&k->w.item);   /* a put's item that did not go in */
    reply_locked(p, w, k->req, st == LF_SQ_OK ? LF_QR_OK
                 : st == LF_SQ_CLOSED ? LF_QR_CLOSED
                 : st == LF_SQ_FULL ? LF_QR_FULL : LF_QR_EMPTY, NULL, 0);
  }
  lf_squeue_release(k->q);
  free(k);
}

/* Park w's request on q until it can be done or `timeout` passes
** (negative: none). A put brings *it. */
static void park_locked(lf_ppool *p, lf_proc *w, lf_squeue *q, int put,
                        lf_sqitem *it, uint32_t req, double timeout) {
  park *k = calloc(1, sizeof *k);
  if (k == NULL) {
    lf_sqitem_free(it);
    reply_error_locked(p, w, req, "not enough memory");
    return;
  }
  k->w.put = put;
  if (put) { k->w.item = *it; memset(it, 0, sizeof *it); }
  k->w.done = park_done;
  k->p = p;
  k->proc = w;
  k->q = q;
  lf_squeue_retain(q);
  k->req = req;
  k->deadline = timeout < 0 ? -1 : lf_now() + timeout;
  w->parked = k;
  if (lf_squeue_park(q, &k->w) != LF_SQ_PENDING)
    answer_park_locked(p, k);   /* it could be done after all */
}

/* Answer the parked requests that completed. Reader only. */
static void drain_done_locked(lf_ppool *p) {
  lf_lock(&p->done_mu);
  park *k = p->done;
  p->done = NULL;
  lf_unlock(&p->done_mu);
  while (k != NULL) {
    park *next = k->next_done;
    answer_park_locked(p, k);
    k = next;
  }
}

/* Answer the parked requests whose time is up; returns the nearest
** deadline of the others (negative: none). Reader only. */
static double expire_parks_locked(lf_ppool *p) {
  double now = lf_now(), next = -1;
  for (int i = 0; i < p->max_workers; i++) {
    park *k = p->procs[i].parked;
    if (k == NULL || k->deadline < 0) continue;
    if (now >= k->deadline) {
      if (lf_squeue_unpark(k->q, &k->w)) {
        k->w.status = k->w.put ? LF_SQ_FULL : LF_SQ_EMPTY;
        answer_park_locked(p, k);
      }   /* else it completed: on the done list, answered next round */
    } else if (next < 0 || k->deadline < next) {
      next = k->deadline;
    }
  }
  return next;
}

/* The worker of w is gone: its parked request goes, and an item already
** handed to it goes back to the front of its queue. Reader only. */
static void unpark_gone_locked(lf_ppool *p, lf_proc *w) {
  park *k = w->parked;
  if (k == NULL) return;
  w->parked = NULL;
  if (!lf_squeue_unpark(k->q, &k->w)) {
    lf_lock(&p->done_mu);   /* completed: take it off the done list */
    for (park **pk = &p->done; *pk != NULL; pk = &(*pk)->next_done)
      if (*pk == k) { *pk = k->next_done; break; }
    lf_unlock(&p->done_mu);
    if (!k->w.put && k->w.status == LF_SQ_OK) lf_squeue_unget(k->q, &k->w.item);
  }
  lf_sqitem_free(&k->w.item);
  lf_squeue_release(k->q);
  free(k);
}

/* The shared objects of w's PINS frame go to the frame they announce. */
static void take_pins(lf_proc *w, lf_buf *b) {
  b->handles = w->pins.handles;
  b->nhandles = w->pins.nhandles;
  b->hcap = w->pins.hcap;
  w->pins.handles = NULL;
  w->pins.nhandles = w->pins.hcap = 0;
}

/* A QUEUE request of w (payload: u64 queue id, f64 timeout, a put's
** item). */
static void queue_request_locked(lf_ppool *p, lf_proc *w, const lf_frame *fr,
                                 lf_buf *payload) {
  if (!w->ready || w->task == NULL || task_unsent(w) || w->parked != NULL ||
      payload->len < 16) {
    kill_worker(w, "it sent a queue request outside a task");
    return;
  }
  uint64_t qid;
  double timeout;
  memcpy(&qid, payload->data, 8);
  memcpy(&timeout, payload->data + 8, 8);
  if (timeout != timeout) timeout = 0;          /* NaN: do not wait */
  else if (timeout < 0 || timeout > 1e9) timeout = -1;
  lf_held *e = lf_holdings_find(&w->held, LF_SQUEUE_WIRE, qid);
  if (e == NULL) {
    kill_worker(w, "it named a queue it was not given");
    return;
  }
  lf_squeue *q = e->obj;
  uint32_t req = fr->id;
  switch (fr->flag) {
    case LF_QOP_PUT: {
      lf_sqitem it = LF_SQITEM_INIT;
      it.untrusted = 1;
      it.functions = (unsigned char)p->base.opts.functions;
      it.depth = (unsigned short)p->base.opts.max_depth;
      it.buf = *payload;   /* the item is what follows the 16 bytes */
      memset(payload, 0, sizeof *payload);
      it.buf.len -= 16;
      memmove(it.buf.data, it.buf.data + 16, it.buf.len);
      take_pins(w, &it.buf);
      int rc = lf_squeue_put(q, &it);
      if (rc == LF_SQ_FULL && timeout != 0) {
        park_locked(p, w, q, 1, &it, req, timeout);
        return;
      }
      lf_sqitem_free(&it);
      if (rc < 0) reply_error_locked(p, w, req, "not enough memory");
      else reply_locked(p, w, req, (unsigned)rc, NULL, 0);
      return;
    }
    case LF_QOP_GET: {
      lf_sqitem it = LF_SQITEM_INIT;
      int rc = lf_squeue_get(q, &it);
      if (rc == LF_SQ_OK) reply_item_locked(p, w, req, q, &it);
      else if (rc == LF_SQ_EMPTY && timeout != 0)
        park_locked(p, w, q, 0, &it, req, timeout);
      else reply_locked(p, w, req, (unsigned)rc, NULL, 0);
      return;
    }
    case LF_QOP_CLOSE:
      lf_squeue_close(q);
      reply_locked(p, w, req, LF_QR_OK, NULL, 0);
      return;
    case LF_QOP_SIZE: {
      uint64_t n = lf_squeue_size(q);
      reply_locked(p, w, req, LF_QR_OK, &n, sizeof n);
      return;
    }
    default:
      kill_worker(w, "it sent a queue request of an unknown kind");
  }
}

/* Handle one whole frame from w; takes *payload when it keeps it. */
static void deliver(lf_ppool *p, lf_proc *w, const lf_frame *fr,
                    lf_buf *payload) {
  lf_lock(&p->mu);
  if (w->pins.nhandles > 0 && fr->type != LF_FRAME_RESULT &&
      !(fr->type == LF_FRAME_QUEUE && fr->flag == LF_QOP_PUT)) {
    kill_worker(w, "it sent PINS before a frame that names nothing");
    lf_unlock(&p->mu);
    return;
  }
  switch (fr->type) {
    case LF_FRAME_READY:
      if (w->ready) kill_worker(w, "it sent READY twice");
      w->ready = 1;
      p->startup_failures = 0;
      break;
    case LF_FRAME_INIT_FAILED: {
      /* After READY this is a protocol violation of one worker (a C module
      ** writing to its socket, say), not a start-up failure of the pool. */
      if (w->ready) {
        kill_worker(w, "it sent INIT_FAILED after READY");
        break;
      }
      /* Its text, bounded: "initializer failed: ..." or a version clash. */
      const char *text = payload->data ? (const char *)payload->data : "";
      int n = (int)(payload->len < 1000 ? payload->len : 1000);
      int known = (n >= 18 && strncmp(text, "initializer failed", 18) == 0) ||
                  (n >= 22 && strncmp(text, "the worker interpreter", 22) == 0);
      char why[1100];
      snprintf(why, sizeof why, "%s%.*s",
               known ? "" : "worker start-up failed: ", n, text);
      break_locked(p, why);
      break;
    }
    case LF_FRAME_RESULT: {
      if (w->task == NULL || fr->id != w->seq || fr->flag > 1 || !w->ready ||
          task_unsent(w) || w->parked != NULL) {
        kill_worker(w, "it sent a result nobody asked for");
        break;
      }
      lf_future *f = w->task;
      w->task = NULL;
      w->ntasks++;
      if (p->max_tasks > 0 && w->ntasks >= p->max_tasks) {
        shutdown(w->fd, SHUT_WR);   /* retire: it exits at end-of-file */
        w->state = W_CLOSING;
      } else {
        w->state = W_IDLE;
        p->nidle++;
        dispatch_locked(p);   /* the next task first: the worker waits */
        wind_down_locked(p);
      }
      take_pins(w, payload);
      finish_task(p, f, payload, (int)fr->flag);
      lf_future_release(f);
      break;
    }
    case LF_FRAME_PINS:
      if (w->pins.nhandles > 0 ||
          lf_holdings_pin(&w->held, payload->data, payload->len, &w->pins) != 0)
        kill_worker(w, "it named a shared object it was not given");
      break;
    case LF_FRAME_QUEUE:
      queue_request_locked(p, w, fr, payload);
      break;
    case LF_FRAME_UNUSED:
      /* Only when nothing was sent since it went idle: a task on its way
      ** may name what it reports. It reports again when next idle. */
      if (w->state != W_IDLE) break;
      if (lf_holdings_forget(&w->held, payload->data, payload->len,
                             &w->out) != 0)
        kill_worker(w, "it sent a malformed UNUSED frame");
      else if (flush_locked(p, w) == 1)
        wake_locked(p);
      break;
    default:
      kill_worker(w, "it sent a frame of the wrong kind");
  }
  lf_unlock(&p->mu);
}

/* No memory for what w sends: it cannot go on. Returns -1. */
static int out_of_memory(lf_proc *w) {
  kill_worker(w, "there was no memory for its result");
  return -1;
}

/* recv() that also takes the descriptors w sends with its big frames,
** in order, into w->rfds. Returns what recv returns, or -2 when w sent
** more than may wait for their frames (then it is killed). */
static ssize_t recv_worker(lf_proc *w, void *dst, size_t room) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * LF_MEMFD_MAXFDS)];
    struct cmsghdr align;
  } cm;
  struct iovec iov = { dst, room };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cm.buf;
  msg.msg_controllen = sizeof cm.buf;
  ssize_t n = recvmsg(w->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  /* Truncated: the kernel closed the descriptors that did not fit. */
  int excess = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (w->nrfds < LF_MEMFD_MAXFDS) w->rfds[w->nrfds++] = fd;
      else { close(fd); excess = 1; }
    }
  }
  if (excess) {
    kill_worker(w, "it sent more descriptors than its frames take");
    return -2;
  }
  return n;
}

static void close_rfds(lf_proc *w) {
  for (int i = 0; i < w->nrfds; i++) close(w->rfds[i]);
  w->nrfds = 0;
}

/* The payload of a big RESULT (lf_proto.h, "Big payloads"): the next
** descriptor w sent, which must be a memfd sealed against every change
** (LF_MEMFD_SEALS: nobody can write it, shrink it or grow it any more,
** nor lift those seals) and exactly as long as announced; then, and only
** then, mapped read-only as *out, which is decoded in place: its bytes
** cannot change under the decoder, and the mapping cannot lose pages
** (SIGBUS). The frame's length and flag become those of the payload.
** Returns 0, or -1 with w killed and the descriptor closed. */
static int take_memfd(lf_proc *w, lf_frame *fr, const unsigned char *desc,
                      lf_buf *out) {
  if (fr->type != LF_FRAME_RESULT || fr->len != LF_MEMFD_DESC) {
    kill_worker(w, "it sent a malformed big frame");
    return -1;
  }
  if (w->nrfds == 0) {
    kill_worker(w, "it sent a big frame without its memfd");
    return -1;
  }
  int fd = w->rfds[0];
  w->nrfds--;
  memmove(w->rfds, w->rfds + 1, (size_t)w->nrfds * sizeof *w->rfds);
  uint64_t len;
  memcpy(&len, desc, 8);
  const char *why = NULL;
  struct stat st;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    why = "it sent a descriptor that is not a memfd for its big frame";
  } else if ((seals & LF_MEMFD_SEALS) != LF_MEMFD_SEALS) {
    why = "it sent a memfd that is not sealed for its big frame";
  } else if (len == 0 || len > LF_PROC_FRAME_MAX || st.st_size < 0 ||
             (uint64_t)st.st_size != len) {
    why = "it sent a memfd whose size is not its big frame's";
  } else {
    void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
      why = "there was no memory for its result";
    } else {
      out->data = m;
      out->len = out->cap = (size_t)len;
      out->mem = &lf_bufmem_mapped;
      out->mem_ctx = m;
    }
  }
  close(fd);
  if (why != NULL) {
    kill_worker(w, why);
    return -1;
  }
  fr->len = len;
  fr->flag &= ~LF_FLAG_MEMFD;
  return 0;
}

/* Read what w sent, without blocking; deliver every whole frame. Returns
** 0, or -1 at end-of-file, on a socket error, or when w was killed. */
static int read_worker(lf_ppool *p, lf_proc *w) {
  for (;;) {
    unsigned char *dst;
    size_t room;
    if (w->inbig) {
      size_t want = (size_t)w->big_fr.len;
      if (w->got == w->big.cap) {   /* allocate as the bytes arrive */
        size_t cap = w->big.cap * 2;
        if (cap > want || cap < w->big.cap) cap = want;
        unsigned char *d = realloc(w->big.data, cap);
        if (d == NULL) return out_of_memory(w);
        w->big.data = d;
        w->big.cap = cap;
      }
      dst = w->big.data + w->got;
      room = w->big.cap - w->got;
    } else {
      dst = w->stage + w->have;
      room = STAGE_SIZE - w->have;
    }
    ssize_t n = recv_worker(w, dst, room);
    if (n == 0 || n == -2) return -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;
    }
    if (w->inbig && w->nrfds > 0) {   /* descriptors come with headers */
      kill_worker(w, "it sent a descriptor inside a payload");
      return -1;
    }
    if (w->inbig) {
      w->got += (size_t)n;
      if (w->got == w->big_fr.len) {
        w->inbig = 0;
        w->big.len = w->got;
        lf_frame fr = w->big_fr;
        deliver(p, w, &fr, &w->big);
        lf_buf_free(&w->big);
      }
    } else {
      w->have += (size_t)n;
      size_t pos = 0;
      while (w->have - pos >= LF_PROC_HDR) {
        lf_frame fr;
        if (lf_frame_unpack(w->stage + pos, &fr) != 0) {
          kill_worker(w, "it sent a malformed frame header");
          return -1;
        }
        size_t body = w->have - pos - LF_PROC_HDR;
        if ((fr.flag & LF_FLAG_MEMFD) && fr.len <= body) {
          lf_buf pl = LF_BUF_INIT;
          if (take_memfd(w, &fr, w->stage + pos + LF_PROC_HDR, &pl) != 0)
            return -1;
          pos += LF_PROC_HDR + LF_MEMFD_DESC;
          deliver(p, w, &fr, &pl);
          lf_buf_free(&pl);
        } else if (fr.flag & LF_FLAG_MEMFD && fr.len > LF_MEMFD_DESC) {
          kill_worker(w, "it sent a malformed big frame");
          return -1;
        } else if (fr.len <= body) {   /* whole: copy the payload out */
          lf_buf pl = LF_BUF_INIT;
          if (fr.len > 0) {
            pl.data = malloc((size_t)fr.len);
            if (pl.data == NULL) return out_of_memory(w);
            memcpy(pl.data, w->stage + pos + LF_PROC_HDR, (size_t)fr.len);
            pl.len = pl.cap = (size_t)fr.len;
          }
          pos += LF_PROC_HDR + (size_t)fr.len;
          deliver(p, w, &fr, &pl);
          lf_buf_free(&pl);
        } else if (LF_PROC_HDR + fr.len > STAGE_SIZE) {
          /* Too big for stage: its own buffer, filled straight from the
          ** socket, which becomes the future's result as it is. */
          size_t cap = fr.len < LF_PROC_BIGCHUNK ? (size_t)fr.len
                                                  : LF_PROC_BIGCHUNK;
          if (cap < body) cap = body;
          w->big.data = malloc(cap);
          if (w->big.data == NULL) return out_of_memory(w);
          w->big.cap = cap;
          memcpy(w->big.data, w->stage + pos + LF_PROC_HDR, body);
          w->got = body;
          w->big_fr = fr;
          w->inbig = 1;
          pos = w->have;
          break;
        } else {
          break;   /* the rest has not arrived yet */
        }
      }
      memmove(w->stage, w->stage + pos, w->have - pos);
      w->have -= pos;
      /* Every byte read was a whole frame, yet a descriptor is left: it
      ** came with the first byte of a frame that does not take one. */
      if (w->have == 0 && !w->inbig && w->nrfds > 0) {
        kill_worker(w, "it sent a descriptor with a frame that takes none");
        return -1;
      }
    }
    if ((size_t)n < room) return 0;   /* drained: poll says when more come */
  }
}

/* Say how a process ended: "exited with status 3". */
static void describe_status(int status, int known, char *buf, size_t size) {
  if (!known) {
    snprintf(buf, size, "exited (status unknown)");
  } else if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char *abbrev = sigabbrev_np(sig);
    snprintf(buf, size, "killed by signal %d (SIG%s)%s", sig,
             abbrev ? abbrev : "?", WCOREDUMP(status) ? ", core dumped" : "");
  } else {
    snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
  }
}

/* The process of w has exited (reaped, status known or not): fail what it
** was running, free its slot. */
static void worker_gone(lf_ppool *p, lf_proc *w, int status, int known) {
  char how[128], msg[256];
  describe_status(status, known, how, sizeof how);
  lf_lock(&p->mu);
  /* Its queue request first: once its task fails, whoever waits for that
  ** may use the queue, which must be as if the worker never asked. */
  unpark_gone_locked(p, w);
  if (w->why != NULL)
    snprintf(msg, sizeof msg, "worker process %d was killed because %s",
             (int)w->pid, w->why);
  else
    snprintf(msg, sizeof msg, "worker process %d died: %s", (int)w->pid, how);
  /* A task that it never had whole, or had before it was ready, did not
  ** run: it goes again, unless it was being stopped. */
  if (w->task != NULL && (task_unsent(w) || !w->ready) &&
      atomic_load(&w->task->stop) == LF_STOP_NONE)
    take_back_task_locked(p, w);
  if (!w->ready && p->base.broken == NULL &&
      ++p->startup_failures >= STARTUP_TRIES) {
    /* Workers die before they can run anything: starting more would only
    ** see them die the same way. (One such death may be a stray kill.) */
    char why[300];
    snprintf(why, sizeof why, "worker process %d died during start-up: %s",
             (int)w->pid, how);
    break_locked(p, why);
  }
  if (w->task != NULL) {
    if (atomic_load(&w->task->stop) != LF_STOP_NONE) {
      lf_buf none = LF_BUF_INIT;   /* killed while stopping: as asked */
      finish_task(p, w->task, &none, 1);
    } else {
      fail_future(p, w->task, w->ready || p->base.broken == NULL
                                  ? msg : p->base.broken);
    }
    lf_future_release(w->task);
    w->task = NULL;
  }
  if (w->state == W_IDLE) p->nidle--;
  lf_outq_free(&w->out);
  lf_holdings_clear(&w->held);
  lf_buf_free(&w->pins);
  close(w->fd);
  if (w->pidfd >= 0) close(w->pidfd);
  lf_buf_free(&w->big);
  free(w->stage);
  close_rfds(w);
  memset(w, 0, sizeof *w);
  w->state = W_FREE;
  w->fd = w->pidfd = -1;
  p->nprocs--;
  p->spawn_blocked = 0;
  lf_unlock(&p->mu);
}

/* Its pidfd says w exited: take what it wrote last, reap it. */
static void worker_exited(lf_ppool *p, lf_proc *w) {
  if (!w->eof && read_worker(p, w) < 0) w->eof = 1;
  int status = 0;
  pid_t r;
  do r = waitpid(w->pid, &status, 0); while (r < 0 && errno == EINTR);
  worker_gone(p, w, status, r == w->pid);
}

/* Without pidfd: after end-of-file, poll for the exit, then insist. */
static void try_reap(lf_ppool *p, lf_proc *w) {
  int status = 0;
  pid_t r = waitpid(w->pid, &status, WNOHANG);
  if (r == w->pid || (r < 0 && errno == ECHILD)) {
    worker_gone(p, w, status, r == w->pid);
  } else if (lf_now() - w->eof_at > REAP_GRACE) {
    kill_worker(w, NULL);
  }
}

/* Stopping tasks (reader, pool->mu held): a run limit that passed asks for
** a stop; a stop asked for is a signal to the worker carrying the task's id
** (lf_proto.h: the worker ignores one for another task); a worker that has
** not stopped within the grace period is killed. Lowers *timeout (ms, -1:
** none) to the next of these moments. */
static void tend_stops_locked(lf_ppool *p, int *timeout) {
  double now = lf_now(), next = 0;
  for (int i = 0; i < p->max_workers; i++) {
    lf_proc *w = &p->procs[i];
    lf_future *f = w->state == W_BUSY ? w->task : NULL;
    if (f == NULL) {
      atomic_store(&w->stop_task, NULL);   /* for a task gone already */
      continue;
    }
    if (w->deadline > 0 && now >= w->deadline) {
      w->deadline = 0;
      lf_future_interrupt(f, LF_STOP_TIMEOUT);   /* names f in stop_task */
    }
    if (atomic_exchange(&w->stop_task, NULL) == f && w->kill_at == 0) {
      union sigval v;
      memset(&v, 0, sizeof v);   /* the kernel copies all of it */
      v.sival_int = (int)w->seq;
      sigqueue(w->pid, LF_STOP_SIGNAL, v);   /* not reaped: still ours */
      w->kill_at = now + p->grace;
    }
    if (w->kill_at > 0 && now >= w->kill_at)
      kill_worker(w, "it did not stop its task within the grace period");
    double t = w->deadline;
    if (w->kill_at > now && (t == 0 || w->kill_at < t)) t = w->kill_at;
    if (t > 0 && (next == 0 || t < next)) next = t;
  }
  if (next > 0) {
    int ms = (int)((next - now) * 1000) + 1;
    if (*timeout < 0 || ms < *timeout) *timeout = ms;
  }
}

/* kill_workers (reader, pool->mu held): break the pool, then send the
** signal to every worker. */
static void tend_kill_locked(lf_ppool *p) {
  if (p->pending_break != NULL) {
    break_locked(p, p->pending_break);
    free(p->pending_break);
    p->pending_break = NULL;
  }
  if (p->kill_sig == 0) return;
  for (int i = 0; i < p->max_workers; i++) {
    lf_proc *w = &p->procs[i];
    if (w->state != W_FREE && w->state != W_SPAWNING) kill(w->pid, p->kill_sig);
  }
  p->kill_sig = 0;
}

static void *reader_main(void *arg) {
  lf_ppool *p = arg;
  pthread_setname_np(pthread_self(), "lf-procpool");
  lf_lock(&p->mu);
  for (;;) {
    tend_kill_locked(p);
    /* Tasks taken back from a worker after the pool broke go nowhere. */
    if (p->base.broken != NULL) fail_retries_locked(p);
    drain_done_locked(p);
    double next_deadline = expire_parks_locked(p);
    dispatch_locked(p);
    wind_down_locked(p);
    if (p->shutdown && !has_work_locked(p) && p->nprocs == 0) break;
    if (has_work_locked(p) && p->nidle == 0 && p->base.broken == NULL &&
        !p->spawn_blocked && p->nprocs < p->max_workers) {
      int want = p->max_workers - p->nprocs;
      size_t work = lf_queue_count(&p->queue) + (p->retry.head != NULL);
      if ((size_t)want > work) want = (int)work;
      spawn_locked(p, want);
      continue;
    }
    for (int i = 0; i < p->max_workers; i++) {   /* lost a frame: it goes */
      lf_proc *w = &p->procs[i];
      if (w->doomed && !w->killed) kill_worker(w, NULL);
    }
    /* Wait for every worker's socket and exit, and for the eventfd. */
    int n = 0, timeout = -1;
    p->pfds[n].fd = p->efd;
    p->pfds[n].events = POLLIN;
    p->pfd_proc[n++] = NULL;
    for (int i = 0; i < p->max_workers; i++) {
      lf_proc *w = &p->procs[i];
      if (w->state == W_FREE || w->state == W_SPAWNING) continue;
      if (!w->eof) {
        p->pfds[n].fd = w->fd;
        p->pfds[n].events = POLLIN | (lf_outq_pending(&w->out) ? POLLOUT : 0);
        p->pfd_proc[n++] = w;
      }
      if (w->pidfd >= 0) {
        p->pfds[n].fd = w->pidfd;
        p->pfds[n].events = POLLIN;
        p->pfd_proc[n++] = w;
      } else if (w->eof) {
        timeout = 10;
      }
    }
    tend_stops_locked(p, &timeout);
    tend_regions(&timeout);
    if (next_deadline >= 0) {   /* a parked queue request's timeout */
      double ms = ceil((next_deadline - lf_now()) * 1e3);
      int t = ms < 0 ? 0 : ms > 1e6 ? 1000000 : (int)ms;
      if (timeout < 0 || t < timeout) timeout = t;
    }
    lf_unlock(&p->mu);
    int rc = poll(p->pfds, (nfds_t)n, timeout);
    if (rc < 0 && errno == ENOMEM) {   /* the kernel's, for a moment */
      struct timespec ms = { 0, 1000000 };
      nanosleep(&ms, NULL);
    } else if (rc < 0 && errno != EINTR) {
      abort();   /* EFAULT, EINVAL: a bug */
    }
    for (int k = 0; rc > 0 && k < n; k++) {
      short ev = p->pfds[k].revents;
      lf_proc *w = p->pfd_proc[k];
      if (ev == 0) continue;
      if (w == NULL) {   /* the eventfd: cleared under the lock, so that a
                            wake-up sent after this is never lost */
        uint64_t v;
        lf_lock(&p->mu);
        ssize_t r = read(p->efd, &v, sizeof v);
        (void)r;
        p->woken = 0;
        lf_unlock(&p->mu);
      } else if (p->pfds[k].fd == w->pidfd) {
        worker_exited(p, w);
      } else {
        if (ev & POLLOUT) {
          lf_lock(&p->mu);
          flush_locked(p, w);
          lf_unlock(&p->mu);
        }
        if ((ev & (POLLIN | POLLHUP | POLLERR)) && read_worker(p, w) < 0) {
          w->eof = 1;
          w->eof_at = lf_now();
          lf_lock(&p->mu);
          if (w->state != W_CLOSING || w->dead_socket)
            kill_worker(w, NULL);   /* it hung up while we need it */
          lf_unlock(&p->mu);
        }
      }
    }
    for (int i = 0; i < p->max_workers; i++) {
      lf_proc *w = &p->procs[i];   /* eof is the reader's: no lock needed */
      if (w->eof && w->pidfd < 0) try_reap(p, w);
    }
    lf_lock(&p->mu);
  }
  p->reader = R_EXITED;   /* from now on nobody writes to efd */
  close(p->efd);
  p->efd = -1;
  lf_broadcast(&p->exit_cv);
  lf_unlock(&p->mu);
  if (p->scratch != NULL) lua_close(p->scratch);
  p->scratch = NULL;
  return NULL;
}

/* ---- construction ---- */

/* The INIT payload (lf_proto.h). NULL when out of memory. */
static unsigned char *make_init(const lf_pool_config *cfg, const lf_buf *init,
                                int max_depth, size_t *len) {
  const char *strs[3] = { LF_VERSION, cfg->path, cfg->cpath };
  uint64_t settings[LF_INIT_NSETTINGS];
  settings[LF_INIT_MAX_DEPTH] = (uint64_t)max_depth;
  settings[LF_INIT_MAX_MEMORY] = (uint64_t)cfg->max_memory;
  uint32_t nsettings = LF_INIT_NSETTINGS;
  size_t n = 4 + 4 + sizeof settings + init->len;
  for (int i = 0; i < 3; i++) n += 4 + (strs[i] ? strlen(strs[i]) : 0);
  unsigned char *b = malloc(n), *q = b;
  if (b == NULL) return NULL;
  uint32_t proto = LF_PROC_PROTO;
  memcpy(q, &proto, 4);
  q += 4;
  for (int i = 0; i < 3; i++) {
    uint32_t sl = strs[i] ? (uint32_t)strlen(strs[i]) : LF_PROC_NOSTR;
    memcpy(q, &sl, 4);
    q += 4;
    if (strs[i]) { memcpy(q, strs[i], sl); q += sl; }
  }
  memcpy(q, &nsettings, 4);
  q += 4;
  memcpy(q, settings, sizeof settings);
  q += sizeof settings;
  if (init->len > 0) memcpy(q, init->data, init->len);
  *len = n;
  return b;
}

lf_executor *lf_process_pool_new(const lf_pool_config *cfg) {
  lf_ppool *p = calloc(1, sizeof *p);
  if (p == NULL) return NULL;
  int max_workers = cfg->max_workers;
  static const lf_buf no_init = LF_BUF_INIT;
  p->efd = -1;
  p->procs = calloc((size_t)max_workers, sizeof *p->procs);
  p->pfds = calloc(1 + 2 * (size_t)max_workers, sizeof *p->pfds);
  p->pfd_proc = calloc(1 + 2 * (size_t)max_workers, sizeof *p->pfd_proc);
  p->exe = strdup(cfg->exe);
  p->spawn_path = strdup(cfg->spawn_path);
  p->init = make_init(cfg, cfg->init ? cfg->init : &no_init,
                      cfg->max_depth > 0 ? cfg->max_depth
                                         : LF_CODEC_DEFAULT_DEPTH,
                      &p->init_len);
  p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!p->procs || !p->pfds || !p->pfd_proc || !p->exe || !p->spawn_path ||
      !p->init || p->efd < 0) {
    if (p->efd >= 0) close(p->efd);
    free(p->procs); free(p->pfds); free(p->pfd_proc); free(p->exe);
    free(p->spawn_path); free(p->init); free(p);
    return NULL;
  }
  /* The initializer travels inside INIT: the pool keeps only its pins, the
  ** queues and arrays it names, to share with each new worker. */
  if (cfg->init != NULL) {
    p->init_pins.handles = cfg->init->handles;
    p->init_pins.nhandles = cfg->init->nhandles;
    p->init_pins.hcap = cfg->init->hcap;
    cfg->init->handles = NULL;
    cfg->init->nhandles = cfg->init->hcap = 0;
    lf_buf_free(cfg->init);
  }
  for (int i = 0; i < max_workers; i++) p->procs[i].fd = p->procs[i].pidfd = -1;
  lf_executor_init(&p->base, &pp_ops, cfg);
  p->base.opts.mem = &lf_region_mem;   /* big calls go to workers in memfds */
  p->grace = cfg->grace > 0 ? cfg->grace : LF_DEFAULT_GRACE;
  LF_CHECK(pthread_mutex_init(&p->mu, NULL));
  LF_CHECK(pthread_mutex_init(&p->done_mu, NULL));
  lf_cond_init(&p->exit_cv);
  lf_queue_init(&p->queue);
  lf_queue_init(&p->retry);
  p->max_workers = max_workers;
  p->max_tasks = cfg->max_tasks_per_child;
  return &p->base;
}
