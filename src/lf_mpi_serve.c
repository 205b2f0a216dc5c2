/*
** lf_mpi_serve.c — a serving rank (every rank but 0 of an MPI world, or a
** rank spawned by rank 0): for each pool of rank 0 that sends it work, a
** local process pool of one worker process (made through the core's API
** table), which gives crash isolation, a new worker after a crash,
** max_tasks_per_child, the initializer and run limits. A TASK's encoded
** call becomes a local future's call as it is, and the future's encoded
** outcome goes back in the RESULT as it is: this rank decodes nothing but
** the failures its local pools make themselves, which it rewrites to name
** the rank and its host (a worker killed by a signal, say). It runs one
** task at a time; the tasks that come meanwhile wait, in order. A task of
** the pool whose task runs waits in that local pool's own queue, so that
** its worker takes it the moment it is done, without waiting for this
** loop; a copy of its call is kept in case rank 0 takes it back (a
** reclaim). The RESULT of a task names the one that started next, which
** rank 0 thinks waiting.
**
** Threads: the MPI thread runs all of this (lf_mpi_serve); the local pools
** have their reader threads, which complete the local futures; completions
** reach the MPI thread through an inbox (lf_future.h), whose descriptor
** ends its sleeps at once, so a finished task is answered without waiting
** for the next poll of MPI.
**
** Ownership: the server owns its local pools (the owner's reference of
** each, dropped once the pool is joined), the waiting tasks and their
** calls (or copies), one reference to each local future it submitted, the
** running task's and those waiting in a local pool (the inbox hands over
** another when a future completes; both are dropped once the RESULT is
** sent), and its scratch state. A RESULT takes the future's outcome bytes.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_mpi.h"

#define api lf_mpi_api

typedef struct lpool {
  uint32_t id;
  lf_executor *ex;          /* the local pool (owner's reference), or NULL */
  char *why;                /* why there is none */
  int closing;              /* CLOSE came: joined, then CLOSED */
  struct lpool *next;
} lpool;

typedef struct ltask {
  uint64_t id;
  uint32_t pool;
  lpool *p;
  unsigned kind;            /* lf_taskkind */
  int wait;                 /* rank 0 sent it to wait (LF_MPI_WAIT) */
  double limit;             /* its run limit, 0: none */
  lf_buf call;              /* waiting: its encoded call */
  lf_buf copy;              /* waiting in its local pool: a copy of it */
  lf_future *f;             /* its local future (one reference), once
                               submitted: running, or waiting in the pool */
  char *broken;             /* refused by its pool: why */
  struct ltask *next;       /* in the waiting list */
} ltask;

static struct server {
  lf_mpi_link link;
  int rank;
  char host[256];
  lf_inbox *inbox;
  int fd;                   /* the inbox's descriptor */
  lpool *pools;
  ltask *running;           /* the task that runs, or NULL */
  ltask *waiting, *wtail;   /* the others, in order */
  int end;
  lua_State *S;             /* decodes failures, builds error objects */
} srv;

static lf_mpi_head head(unsigned type, unsigned flag, uint32_t pool,
                        uint64_t task) {
  lf_mpi_head h;
  memset(&h, 0, sizeof h);
  h.type = (uint8_t)type;
  h.flag = (uint8_t)flag;
  h.pool = pool;
  h.task = task;
  return h;
}

static lpool *find_pool(uint32_t id) {
  for (lpool *p = srv.pools; p != NULL; p = p->next)
    if (p->id == id) return p;
  return NULL;
}

/* Read a u32-prefixed string of OPEN (NULL when absent). Returns 0, or -1
** when the payload is short or memory is. */
static int take_string(const unsigned char **p, const unsigned char *end,
                       char **s) {
  uint32_t n;
  *s = NULL;
  if (end - *p < 4) return -1;
  memcpy(&n, *p, 4);
  *p += 4;
  if (n == LF_MPI_NOSTR) return 0;
  if ((size_t)(end - *p) < n || (*s = malloc((size_t)n + 1)) == NULL)
    return -1;
  memcpy(*s, *p, n);
  (*s)[n] = '\0';
  *p += n;
  return 0;
}

/* The local pool of an OPEN (payload m->data), or NULL with why. */
static lf_executor *make_pool(lf_mpi_msg *m, char *why, size_t size) {
  lf_mpi_pool_msg s;
  const unsigned char *q = m->data, *end = m->data + m->len;
  char *path = NULL, *cpath = NULL, *worker = NULL;
  lf_executor *ex = NULL;
  if (m->len >= sizeof s) {
    memcpy(&s, q, sizeof s);
    q += sizeof s;
  }
  if (m->len < sizeof s || take_string(&q, end, &path) != 0 ||
      take_string(&q, end, &cpath) != 0 || take_string(&q, end, &worker) != 0) {
    snprintf(why, size, "MPI rank %d (host %s): a malformed OPEN frame, or "
             "not enough memory", srv.rank, srv.host);
    goto out;
  }
  char exe[PATH_MAX], spawn[PATH_MAX], err[PATH_MAX * 3];
  if (api->interp_find(worker, exe, spawn, err, sizeof err) != 0) {
    snprintf(why, size, "MPI rank %d (host %s): %s", srv.rank, srv.host, err);
    goto out;
  }
  lf_buf init = LF_BUF_INIT;   /* the pool takes it: a copy of its own */
  if (q < end) {
    init.data = malloc((size_t)(end - q));
    if (init.data != NULL) {
      memcpy(init.data, q, (size_t)(end - q));
      init.len = init.cap = (size_t)(end - q);
    }
  }
  lf_pool_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.max_workers = 1;
  cfg.init = &init;
  cfg.path = path;
  cfg.cpath = cpath;
  cfg.max_depth = (int)s.max_depth;
  cfg.grace = s.grace;
  cfg.return_functions = (int)s.return_functions;
  cfg.max_memory = (size_t)s.max_memory;
  cfg.max_tasks_per_child = (long)s.max_tasks_per_child;
  cfg.exe = exe;
  cfg.spawn_path = spawn;
  if (q == end || init.data != NULL) ex = api->process_pool_new(&cfg);
  api->buf_free(&init);
  if (ex == NULL)
    snprintf(why, size, "MPI rank %d (host %s): not enough memory for a "
             "pool", srv.rank, srv.host);
out:
  free(path);
  free(cpath);
  free(worker);
  return ex;
}

/* OPEN: a local process pool with the settings of rank 0's pool. */
static void on_open(lf_mpi_msg *m) {
  lpool *p = calloc(1, sizeof *p);
  if (p == NULL) return;   /* its tasks will find no pool: BROKEN */
  char why[PATH_MAX * 4];
  p->id = m->h.pool;
  p->ex = make_pool(m, why, sizeof why);
  if (p->ex == NULL) p->why = strdup(why);
  p->next = srv.pools;
  srv.pools = p;
}

static void free_task(ltask *t) {
  api->buf_free(&t->call);
  api->buf_free(&t->copy);
  if (t->f != NULL) api->future_release(t->f);
  free(t->broken);
  free(t);
}

/* A RESULT that says the pool cannot run t here; t is freed. */
static void answer_broken(ltask *t, const char *why) {
  size_t n = strlen(why);
  unsigned char *b = malloc(n > 0 ? n : 1);
  if (b != NULL) memcpy(b, why, n);
  lf_mpi_head h = head(LF_MPI_RESULT, LF_MPI_R_BROKEN, t->pool, t->id);
  lf_mpi_link_send(&srv.link, 0, &h, b, b ? n : 0);
  free_task(t);
}

/* Start t (taken off the waiting list): a local future with its call as it
** came, watched by the inbox, submitted to its pool. A pool that refuses
** it fails the future at once, which the inbox brings back as BROKEN.
** Returns 0, or -1 when t could not start and was answered (freed). */
static int start(ltask *t) {
  lf_future *f = api->future_new();
  if (f == NULL) {
    answer_broken(t, "not enough memory on an MPI rank");
    return -1;
  }
  srv.running = t;
  f->kind = t->kind == LF_TASK_CHUNK ? LF_TASK_CHUNK : LF_TASK_CALL;
  f->call = t->call;   /* the frame's bytes become the call */
  memset(&t->call, 0, sizeof t->call);
  f->run_limit = t->limit;
  t->f = f;
  api->inbox_watch(srv.inbox, f);
  int rc = LF_SUBMIT_BROKEN;
  if (t->p != NULL && t->p->ex != NULL) rc = t->p->ex->ops->submit(t->p->ex, f);
  if (rc == LF_SUBMIT_OK) return 0;
  char why[600];
  if (t->p == NULL)
    snprintf(why, sizeof why, "MPI rank %d (host %s) was sent a task of a "
             "pool it does not know", srv.rank, srv.host);
  else if (t->p->ex == NULL)
    snprintf(why, sizeof why, "%s", t->p->why ? t->p->why : "no pool");
  else if (rc == LF_SUBMIT_BROKEN)
    snprintf(why, sizeof why, "%s (on MPI rank %d, host %s)",
             t->p->ex->broken, srv.rank, srv.host);
  else
    snprintf(why, sizeof why, "MPI rank %d (host %s) could not start a "
             "worker: %s", srv.rank, srv.host, rc == LF_SUBMIT_SHUTDOWN
             ? "its pool was shut down" : "out of resources");
  t->broken = strdup(why);
  api->future_fail(f, "BrokenMPIPool", why, api->codec_defaults, &srv.S);
  return 0;
}

/* Start the first waiting task that can (one in its local pool's queue
** has started already); returns its id (0: none). */
static uint64_t start_next(void) {
  while (srv.waiting != NULL) {
    ltask *t = srv.waiting;
    srv.waiting = t->next;
    if (srv.waiting == NULL) srv.wtail = NULL;
    t->next = NULL;
    if (t->f != NULL) {
      srv.running = t;
      return t->id;
    }
    if (start(t) == 0) return t->id;
  }
  return 0;
}

/* Queue t in its pool behind the running task of the same pool, keeping a
** copy of its call. Returns 0, or -1 (then t is as it was). */
static int queue_locally(ltask *t) {
  lf_executor *ex = t->p != NULL ? t->p->ex : NULL;
  if (ex == NULL || srv.running == NULL || srv.running->p != t->p) return -1;
  lf_future *f = api->future_new();
  unsigned char *copy = t->call.len > 0 ? malloc(t->call.len) : NULL;
  if (f == NULL || (t->call.len > 0 && copy == NULL)) {
    if (f != NULL) api->future_release(f);
    free(copy);
    return -1;
  }
  if (copy != NULL) memcpy(copy, t->call.data, t->call.len);
  f->kind = t->kind == LF_TASK_CHUNK ? LF_TASK_CHUNK : LF_TASK_CALL;
  f->call = t->call;
  f->run_limit = t->limit;
  api->inbox_watch(srv.inbox, f);
  if (ex->ops->submit(ex, f) != LF_SUBMIT_OK) {
    t->call = f->call;   /* not queued: it stays here, as it was */
    memset(&f->call, 0, sizeof f->call);
    api->future_release(f);
    free(copy);
    return -1;
  }
  t->copy.data = copy;
  t->copy.len = t->copy.cap = copy != NULL ? t->call.len : 0;
  memset(&t->call, 0, sizeof t->call);
  t->f = f;
  return 0;
}

static void answer_unstarted(ltask *t, int give_back) {
  lf_mpi_head h = head(LF_MPI_RESULT, LF_MPI_R_CANCELLED, t->pool, t->id);
  h.aux = 1;
  unsigned char *body = give_back ? t->call.data : NULL;
  size_t len = give_back ? t->call.len : 0;
  if (give_back) t->call.data = NULL;
  lf_mpi_link_send(&srv.link, 0, &h, body, len);
  free_task(t);
}

/* TASK: it waits, or starts at once when nothing runs. */
static void on_task(lf_mpi_msg *m) {
  ltask *t = calloc(1, sizeof *t);
  if (t == NULL) {   /* answered now, as a pool that cannot run it */
    static const char nomem[] = "not enough memory on an MPI rank";
    unsigned char *b = malloc(sizeof nomem - 1);
    if (b != NULL) memcpy(b, nomem, sizeof nomem - 1);
    lf_mpi_head h = head(LF_MPI_RESULT, LF_MPI_R_BROKEN, m->h.pool, m->h.task);
    lf_mpi_link_send(&srv.link, m->src, &h, b, b ? sizeof nomem - 1 : 0);
    return;
  }
  int wait = (m->h.flag & LF_MPI_WAIT) != 0;
  t->id = m->h.task;
  t->pool = m->h.pool;
  t->p = find_pool(m->h.pool);
  t->kind = m->h.flag & ~LF_MPI_WAIT;
  t->wait = (m->h.flag & LF_MPI_WAIT) != 0;
  memcpy(&t->limit, &m->h.aux, sizeof t->limit);
  if (!(t->limit >= 0)) t->limit = 0;
  t->call.data = m->data;
  t->call.len = t->call.cap = m->len;
  m->data = NULL;
  /* Behind tasks that all wait in the same local pool, it may too. */
  int local = srv.running != NULL;
  for (ltask *w = srv.waiting; w != NULL && local; w = w->next) local = w->f != NULL;
  if (local) queue_locally(t);
  if (srv.wtail) srv.wtail->next = t; else srv.waiting = t;
  srv.wtail = t;
  if (srv.running == NULL) {
    uint32_t pool = t->pool;
    uint64_t id = start_next();   /* t, which may be freed by now */
    if (wait && id != 0) {   /* rank 0 thinks it waits: it runs */
      lf_mpi_head h = head(LF_MPI_STARTED, 0, pool, id);
      lf_mpi_link_send(&srv.link, 0, &h, NULL, 0);
    }
  }
}

/* STOP: stop the running task (an interrupt), or drop a waiting one, which
** is answered at once (with its call, for a reclaim). */
static void on_stop(lf_mpi_msg *m) {
  ltask *r = srv.running;
  if (r != NULL && r->id == m->h.task) {
    if (m->h.flag == LF_MPI_STOP_TASK && r->f != NULL)
      api->future_interrupt(r->f, LF_STOP_CANCEL);
    return;
  }
  int reclaim = m->h.flag == LF_MPI_STOP_RECLAIM;
  ltask *prev = NULL;
  for (ltask *t = srv.waiting; t != NULL; prev = t, t = t->next) {
    if (t->id != m->h.task) continue;
    if (t->f != NULL && api->future_cancel(t->f) != 1) {
      /* Its local pool started it this moment: it runs (next in line). */
      if (!reclaim) api->future_interrupt(t->f, LF_STOP_CANCEL);
      return;
    }
    if (prev) prev->next = t->next; else srv.waiting = t->next;
    if (srv.wtail == t) srv.wtail = prev;
    if (t->f != NULL) {   /* its call is the copy now */
      api->buf_free(&t->call);
      t->call = t->copy;
      memset(&t->copy, 0, sizeof t->copy);
    }
    answer_unstarted(t, reclaim);
    return;
  }
}

static void on_frame(void *ud, lf_mpi_msg *m) {
  (void)ud;
  if (m->src != 0) return;   /* only rank 0 gives work */
  switch (m->h.type) {
    case LF_MPI_OPEN:
      if (find_pool(m->h.pool) == NULL) on_open(m);
      break;
    case LF_MPI_TASK:
      on_task(m);
      break;
    case LF_MPI_STOP:
      on_stop(m);
      break;
    case LF_MPI_CLOSE: {
      lpool *p = find_pool(m->h.pool);
      if (p == NULL || p->closing) break;
      p->closing = 1;
      if (p->ex != NULL) p->ex->ops->shutdown(p->ex, 0);
      break;
    }
    case LF_MPI_KILL: {
      lpool *p = find_pool(m->h.pool);
      if (p != NULL && p->ex != NULL && m->h.aux > 0 && m->h.aux < 65)
        p->ex->ops->kill_workers(p->ex, (int)m->h.aux);
      break;
    }
    case LF_MPI_END:
      srv.end = 1;
      break;
    default:
      break;
  }
}

/* ---- answering ---- */

/* A failure its local pool made itself (its worker died, it could not
** start one): (error, "") where error is a BrokenProcessPool object.
** Returns its message (pushed on srv.S), or NULL. */
static const char *pool_failure(lf_future *f) {
  lua_State *S = srv.S;
  lf_codec_opts o = *api->codec_defaults;
  o.in_process = 0;
  o.functions = 0;
  int top = lua_gettop(S);
  if (f->result.len > 4096 ||
      api->decode(S, f->result.data, f->result.len, &o) != 2 ||
      !lua_istable(S, -2) || lua_type(S, -1) != LUA_TSTRING ||
      lua_rawlen(S, -1) != 0) {
    lua_settop(S, top);
    return NULL;
  }
  lua_getfield(S, -2, "type");
  lua_getfield(S, -3, "message");
  const char *type = lua_tostring(S, -2), *msg = lua_tostring(S, -1);
  if (type == NULL || msg == NULL || strcmp(type, "BrokenProcessPool") != 0) {
    lua_settop(S, top);
    return NULL;
  }
  lua_replace(S, top + 1);
  lua_settop(S, top + 1);
  return msg;
}

/* An encoded error of type `type` (lf_error_types) for a RESULT:
** *body is NULL when even that cannot be made, which rank 0 reads as a
** failure it cannot decode. */
static void failure(const char *type, const char *why, unsigned char **body,
                    size_t *len) {
  lf_future *e = api->future_new();
  if (e == NULL) return;
  api->future_fail(e, type, why, api->codec_defaults, &srv.S);
  if (api->buf_detach(&e->result, body, len) != 0) *body = NULL;
  api->future_release(e);
}

/* The outcome of t's completed future, as a RESULT naming the task that
** started next (0: none). */
static void answer(ltask *t, uint64_t next) {
  lf_future *f = t->f;
  unsigned flag;
  unsigned char *body = NULL;
  size_t len = 0;
  char why[1400];
  if (t->broken != NULL) {
    flag = LF_MPI_R_BROKEN;
    len = strlen(t->broken);
    body = (unsigned char *)t->broken;
    t->broken = NULL;
  } else if (f->state == LF_CANCELLED) {
    flag = LF_MPI_R_CANCELLED;
  } else {
    flag = f->failed ? LF_MPI_R_FAILED : LF_MPI_R_OK;
    const char *msg = f->failed && srv.S != NULL ? pool_failure(f) : NULL;
    const char *broken = t->p && t->p->ex ? t->p->ex->broken : NULL;
    if (msg != NULL && broken != NULL && strcmp(msg, broken) == 0) {
      /* The pool cannot run tasks here (its initializer failed): rank 0's
      ** pool breaks, as a process pool does. */
      snprintf(why, sizeof why, "%s (on MPI rank %d, host %s)", msg,
               srv.rank, srv.host);
      flag = LF_MPI_R_BROKEN;
      body = (unsigned char *)strdup(why);
      len = body ? strlen(why) : 0;
    } else if (msg != NULL) {
      /* Its worker died: this task alone fails, naming where. */
      snprintf(why, sizeof why, "%s, on MPI rank %d (host %s)", msg,
               srv.rank, srv.host);
      failure("BrokenMPIPool", why, &body, &len);
    } else if (api->buf_detach(&f->result, &body, &len) != 0) {
      /* The outcome as the worker encoded it, for the link to send and
      ** free: a big one is a mapping of the worker's sealed memfd, copied,
      ** and this copy found no memory. */
      snprintf(why, sizeof why, "not enough memory on MPI rank %d (host "
               "%s) to send the task's result", srv.rank, srv.host);
      flag = LF_MPI_R_FAILED;
      failure("RuntimeError", why, &body, &len);
    }
    if (msg != NULL) lua_pop(srv.S, 1);
    api->buf_free(&f->result);
  }
  lf_mpi_head h = head(LF_MPI_RESULT, flag, t->pool, t->id);
  h.aux = next;
  lf_mpi_link_send(&srv.link, 0, &h, body, len);
}

/* Answer the running task once its future completed (the next one starts
** first). Returns how many were answered. */
static int answer_done(void) {
  int n = 0;
  lf_future *f;
  while ((f = api->inbox_pop(srv.inbox)) != NULL) {
    ltask *t = srv.running;
    if (t != NULL && t->f == f) {
      srv.running = NULL;
      ltask *next = srv.waiting;
      uint64_t id = start_next();
      /* A task sent to wait is announced in the RESULT; one sent to start
      ** (rank 0 had not heard of this end yet) needs no word. */
      answer(t, next != NULL && next->wait ? id : 0);
      free_task(t);
      n++;
    } else {
      /* One that waited in its local pool ended there without running:
      ** the pool broke (kill_workers) and failed it. Answered as it is. */
      ltask *prev = NULL;
      for (t = srv.waiting; t != NULL && t->f != f; prev = t, t = t->next) {}
      if (t != NULL) {
        if (prev) prev->next = t->next; else srv.waiting = t->next;
        if (srv.wtail == t) srv.wtail = prev;
        answer(t, 0);
        free_task(t);
        n++;
      }
    }
    api->future_release(f);   /* the inbox's reference */
  }
  return n;
}

/* Pools that were closed and whose workers have all exited: CLOSED. */
static int reap_pools(void) {
  int n = 0;
  for (lpool **pp = &srv.pools; *pp != NULL;) {
    lpool *p = *pp;
    int busy = srv.running != NULL && srv.running->p == p;
    for (ltask *t = srv.waiting; t != NULL; t = t->next) busy |= t->p == p;
    if (!p->closing || busy || (p->ex != NULL && !p->ex->ops->join(p->ex, 0))) {
      pp = &p->next;
      continue;
    }
    *pp = p->next;
    lf_mpi_head h = head(LF_MPI_CLOSED, 0, p->id, 0);
    lf_mpi_link_send(&srv.link, 0, &h, NULL, 0);
    if (p->ex != NULL) api->executor_release(p->ex);
    free(p->why);
    free(p);
    n++;
  }
  return n;
}

/* The end (END, or MPI failed): stop what still runs, join every pool. */
static void wind_down(void) {
  for (lpool *p = srv.pools; p != NULL; p = p->next) {
    if (p->ex == NULL) continue;
    if (srv.running != NULL && srv.running->p == p)   /* rank 0 left */
      p->ex->ops->kill_workers(p->ex, SIGKILL);
    p->ex->ops->shutdown(p->ex, LF_SHUTDOWN_CANCEL);
  }
  while (srv.pools != NULL) {
    lpool *p = srv.pools;
    srv.pools = p->next;
    if (p->ex != NULL) {
      p->ex->ops->join(p->ex, -1);
      api->executor_release(p->ex);
    }
    free(p->why);
    free(p);
  }
  if (srv.running != NULL) free_task(srv.running);
  srv.running = NULL;
  while (srv.waiting != NULL) {
    ltask *t = srv.waiting;
    srv.waiting = t->next;
    free_task(t);
  }
}

static void hello(void) {
  lf_mpi_hello h;
  memset(&h, 0, sizeof h);
  snprintf(h.version, sizeof h.version, "%s", LF_VERSION);
  h.lua_num = LUA_VERSION_NUM;
  h.order = 0x01020304u;
  h.int_size = sizeof(lua_Integer);
  h.num_size = sizeof(lua_Number);
  h.pid = (int64_t)getpid();
  lf_mpi_out b = { NULL, 0, 0 };
  if (lf_mpi_out_add(&b, &h, sizeof h) != 0 ||
      lf_mpi_out_add(&b, srv.host, strlen(srv.host)) != 0)
    return;
  lf_mpi_head hd = head(LF_MPI_HELLO, 0, 0, 0);
  lf_mpi_link_send(&srv.link, 0, &hd, b.data, b.len);
}

int lf_mpi_serve(MPI_Comm comm, int rank) {
  memset(&srv, 0, sizeof srv);
  srv.rank = rank;
  if (gethostname(srv.host, sizeof srv.host - 1) != 0)
    snprintf(srv.host, sizeof srv.host, "?");
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  srv.S = api->new_state(NULL, NULL);
  srv.inbox = api->inbox_new();
  srv.fd = srv.inbox ? api->inbox_pollfd(srv.inbox) : -1;
  if (srv.S != NULL) {   /* the error classes, for decoding failures */
    lua_getglobal(srv.S, "require");
    lua_pushliteral(srv.S, "futures.core");
    if (lua_pcall(srv.S, 1, 0, 0) != LUA_OK) {
      api->close_state(srv.S);
      srv.S = NULL;
    }
  }
  if (srv.inbox == NULL || srv.fd < 0 || lf_mpi_link_open(&srv.link, comm) != 0) {
    fprintf(stderr, "lua-futures: MPI rank %d cannot serve: %s\n", rank,
            srv.link.error[0] ? srv.link.error : "not enough memory");
    if (srv.inbox != NULL) api->inbox_close(srv.inbox);
    if (srv.S != NULL) api->close_state(srv.S);
    return -1;   /* rank 0 never hears from this rank: the job must end */
  }
  hello();
  double last = lf_now();
  lf_mpi_spin spin = LF_MPI_SPIN_INIT;
  int failed = 0;
  while (!srv.end) {
    int n = lf_mpi_link_poll(&srv.link, on_frame, NULL);
    if (n < 0) {   /* MPI failed: rank 0 cannot be reached any more */
      fprintf(stderr, "lua-futures: MPI rank %d: %s\n", rank, srv.link.error);
      failed = 1;
      break;
    }
    n += answer_done();
    if (srv.pools != NULL) n += reap_pools();
    if (n > 0) {
      double t = lf_now();
      lf_mpi_spin_saw(&spin, t - last);
      last = t;
      continue;
    }
    double quiet = lf_now() - last;
    /* With a task waiting in the local pool, the next one starts without
    ** this loop, and a completion wakes it: no spinning then, which would
    ** only take a core from the worker. */
    int queued = srv.waiting != NULL && srv.waiting->f != NULL;
    if (!queued && lf_mpi_spin_on(&spin, quiet)) continue;
    api->inbox_drain(srv.inbox);
    lf_mpi_sleep(srv.fd, lf_mpi_nap(quiet));
  }
  wind_down();
  lf_mpi_link_close(&srv.link, failed ? 0.0 : 5.0);
  api->inbox_close(srv.inbox);   /* and drops it */
  if (srv.S != NULL) api->close_state(srv.S);
  return failed ? -1 : 0;
}
