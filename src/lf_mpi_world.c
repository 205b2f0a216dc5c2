/*
** lf_mpi_world.c — the MPI of this process: whether an MPI launcher started
** it (mpiexec, srun: their environment says so), the MPI thread that calls
** MPI_Init_thread, then either serves (a rank other than 0, or a rank that
** rank 0 spawned) or runs rank 0's engine, and finally MPI_Finalize; spawn
** mode (MPI_Comm_spawn of serving ranks by a process that no launcher
** started, behind a timeout); the end of the process on rank 0 (an atexit
** handler that ends the serving ranks and finalizes), and SIGTERM, which
** the launcher sends to rank 0 when another rank died.
**
** Threads: lf_mpi_world_start and lf_mpi_world_spawn run on Lua threads;
** the MPI thread is created here with every signal blocked (so that Ctrl-C
** and SIGTERM reach the Lua threads) and makes every MPI call of the
** process. `W.mu` guards the world's phase, requests to the MPI thread
** (spawn, stop) and what they report; it is never held while calling the
** engine. On a serving rank the thread that started the world waits for
** the MPI thread and ends the process with its status: require never
** returns there.
**
** Ownership: the world and the MPI thread live as long as the process
** (the module is kept loaded: luaopen makes it RTLD_NODELETE); the atexit
** handler waits for the thread at most EXIT_WAIT seconds, since a rank
** that cannot be reached could make MPI_Finalize hang.
*/
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lf_common.h"
#include "lf_mpi.h"

#define EXIT_WAIT 10.0    /* seconds the end of the process waits for MPI */

enum {
  P_NONE,       /* no MPI thread */
  P_INIT,       /* MPI_Init_thread runs */
  P_SERVE,      /* this rank serves */
  P_HOST,       /* rank 0 with serving ranks: the engine runs */
  P_ALONE,      /* rank 0 alone: waiting for a spawn request or the end */
  P_SPAWNING,   /* MPI_Comm_spawn runs */
  P_FAILED,     /* MPI could not start, or spawn failed: why */
  P_DONE        /* the MPI thread has finished */
};

static struct world {
  pthread_mutex_t mu;
  pthread_cond_t cv;          /* the phase changed, or a request came */
  int started;
  int mode;                   /* LF_MPI_* */
  int phase;
  int exit_status;            /* of a serving rank */
  int thread_made, stuck;
  pthread_t thread;
  int size;                   /* ranks, 0 included */
  int spawn_req;              /* ranks to spawn, asked for */
  int stop_req;
  int spawned;                /* ranks spawned */
  char *spawn_exe, *spawn_code;
  char why[600];
  char hostname[256];
  lf_mpi_host host;           /* rank 0's (the MPI thread's) */
} W = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void set_phase(int phase) {
  lf_lock(&W.mu);
  W.phase = phase;
  LF_CHECK(pthread_cond_broadcast(&W.cv));
  lf_unlock(&W.mu);
}

static void set_failed(const char *what, int rc) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int n = 0;
  if (rc != MPI_SUCCESS) MPI_Error_string(rc, text, &n);
  lf_lock(&W.mu);
  snprintf(W.why, sizeof W.why, "%s%s%s", what, n > 0 ? ": " : "", text);
  W.phase = P_FAILED;
  LF_CHECK(pthread_cond_broadcast(&W.cv));
  lf_unlock(&W.mu);
}

/* ---- the MPI thread ---- */

/* Serve over comm until END; finalize unless MPI failed. */
static void serve(MPI_Comm comm, MPI_Comm parent) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  set_phase(P_SERVE);
  int rc = lf_mpi_serve(comm, rank);
  if (rc == 0) {
    MPI_Comm_free(&comm);
    if (parent != MPI_COMM_NULL) MPI_Comm_disconnect(&parent);
    MPI_Finalize();
  }
  lf_lock(&W.mu);
  W.exit_status = rc == 0 ? 0 : 1;
  W.phase = P_DONE;
  LF_CHECK(pthread_cond_broadcast(&W.cv));
  lf_unlock(&W.mu);
}

/* Rank 0 with serving ranks over comm: the engine, until the end. */
static void host(MPI_Comm comm, MPI_Comm inter, int spawned) {
  lf_mpi_host *h = &W.host;
  MPI_Comm_size(comm, &h->size);
  h->spawned = spawned;
  snprintf(h->host, sizeof h->host, "%s", W.hostname);
  if (lf_mpi_link_open(&h->link, comm) != 0 || lf_mpi_engine_attach(h) != 0) {
    set_failed(h->link.error[0] ? h->link.error : "not enough memory",
               MPI_SUCCESS);
    return;
  }
  lf_lock(&W.mu);
  W.size = h->size;
  W.spawned = spawned ? h->size - 1 : 0;
  W.phase = P_HOST;
  LF_CHECK(pthread_cond_broadcast(&W.cv));
  lf_unlock(&W.mu);
  if (lf_mpi_engine_run(h) == 0) {
    MPI_Comm_free(&comm);
    if (inter != MPI_COMM_NULL) MPI_Comm_disconnect(&inter);
    MPI_Finalize();
  }
  set_phase(P_DONE);
}

/* Rank 0 alone: spawn the ranks asked for, with this interpreter. */
static void spawn(int n) {
  set_phase(P_SPAWNING);
  char *argv[] = { (char *)"-e", W.spawn_code, NULL };
  MPI_Info info;
  MPI_Info_create(&info);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) != NULL) MPI_Info_set(info, "wdir", cwd);
  int *errs = calloc((size_t)n, sizeof *errs);
  MPI_Comm inter = MPI_COMM_NULL, comm = MPI_COMM_NULL;
  int rc = errs ? MPI_Comm_spawn(W.spawn_exe, argv, n, info, 0,
                                 MPI_COMM_SELF, &inter, errs)
                : MPI_ERR_NO_MEM;
  MPI_Info_free(&info);
  free(errs);
  if (rc == MPI_SUCCESS) rc = MPI_Intercomm_merge(inter, 0, &comm);
  if (rc != MPI_SUCCESS) {
    set_failed("MPI_Comm_spawn failed", rc);
    return;
  }
  host(comm, inter, 1);
}

static void *mpi_main(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "lf-mpi");
  int provided = 0;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) {
    set_failed("MPI_Init_thread failed", rc);
    return NULL;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  MPI_Comm parent = MPI_COMM_NULL, comm = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL) {   /* spawned by rank 0 of another job */
    rc = MPI_Intercomm_merge(parent, 1, &comm);
    if (rc != MPI_SUCCESS) set_failed("MPI_Intercomm_merge failed", rc);
    else serve(comm, parent);
    return NULL;
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  /* A communicator of our own: frames never meet the program's messages. */
  rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  if (rc != MPI_SUCCESS) {
    set_failed("MPI_Comm_dup failed", rc);
    return NULL;
  }
  if (rank != 0) {
    serve(comm, MPI_COMM_NULL);
    return NULL;
  }
  if (size > 1) {
    host(comm, MPI_COMM_NULL, 0);
    return NULL;
  }
  MPI_Comm_free(&comm);
  lf_lock(&W.mu);
  W.size = 1;
  W.phase = P_ALONE;
  LF_CHECK(pthread_cond_broadcast(&W.cv));
  while (W.spawn_req == 0 && !W.stop_req)
    LF_CHECK(pthread_cond_wait(&W.cv, &W.mu));
  int n = W.stop_req ? 0 : W.spawn_req;
  lf_unlock(&W.mu);
  if (n > 0) {
    spawn(n);
  } else {
    MPI_Finalize();
    set_phase(P_DONE);
  }
  return NULL;
}

/* Start the MPI thread with every signal blocked. W.mu held. */
static int start_thread_locked(void) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int rc = pthread_create(&W.thread, NULL, mpi_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    snprintf(W.why, sizeof W.why, "cannot start the MPI thread: %s",
             strerror(rc));
    return -1;
  }
  W.thread_made = 1;
  W.phase = P_INIT;
  return 0;
}

/* Wait until the phase is none of `a`, `b`, at most until `until`
** (negative: no limit). Returns the phase. W.mu held. */
static int wait_phase_locked(int a, int b, double until) {
  while (W.phase == a || W.phase == b)
    if (lf_cond_wait_until(&W.cv, &W.mu, until) == ETIMEDOUT) break;
  return W.phase;
}

/* ---- the end of rank 0 ---- */

static void at_exit(void) {
  lf_lock(&W.mu);
  if (!W.thread_made || W.phase == P_DONE || W.phase == P_FAILED || W.stuck) {
    lf_unlock(&W.mu);
    return;
  }
  int engine = W.phase == P_HOST;
  W.stop_req = 1;
  LF_CHECK(pthread_cond_broadcast(&W.cv));
  lf_unlock(&W.mu);
  if (engine) lf_mpi_engine_stop();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)EXIT_WAIT;
  /* A rank that cannot be reached may hold MPI_Finalize: the process ends
  ** all the same after EXIT_WAIT. */
  pthread_timedjoin_np(W.thread, NULL, &ts);
}

static void on_sigterm(int sig) {
  (void)sig;
  lf_mpi_engine_dying();
}

/* Rank 0 runs the engine: its end and SIGTERM are ours to handle. */
static void host_hooks(void) {
  static int done;
  if (done) return;
  done = 1;
  atexit(at_exit);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigterm;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
}

/* ---- starting ---- */

/* Did an MPI launcher start this process? Its environment says so. A
** process-pool worker inherits that environment from a rank, but is not a
** rank: it must never initialize MPI (the job would hang). */
static int launched(void) {
  static const char *const vars[] = {
    "OMPI_COMM_WORLD_SIZE",   /* Open MPI's mpiexec */
    "PMIX_RANK",              /* PMIx launchers: prterun, srun --mpi=pmix */
    "PMI_RANK", "PMI_SIZE",   /* MPICH's hydra, srun --mpi=pmi2 */
    "MPI_LOCALNRANKS", NULL
  };
  int found = 0;
  for (int i = 0; vars[i] != NULL; i++) found |= getenv(vars[i]) != NULL;
  if (!found) return 0;
  FILE *f = fopen("/proc/self/cmdline", "rb");
  if (f != NULL) {
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    size_t first = strlen(buf) + 1;
    if (first < n && strcmp(buf + first, "--lf-worker") == 0) return 0;
  }
  return 1;
}

int lf_mpi_world_start(char *why, size_t size) {
  lf_lock(&W.mu);
  if (W.started) {
    int mode = W.mode;
    lf_unlock(&W.mu);
    return mode;
  }
  W.started = 1;
  lf_cond_init(&W.cv);   /* waits are timed on CLOCK_MONOTONIC */
  if (gethostname(W.hostname, sizeof W.hostname - 1) != 0)
    snprintf(W.hostname, sizeof W.hostname, "?");
  if (!launched()) {
    W.mode = LF_MPI_ALONE;
    W.size = 1;
    lf_unlock(&W.mu);
    return W.mode;
  }
  if (lf_mpi_engine_init() != 0 || start_thread_locked() != 0) {
    W.mode = -1;
    snprintf(why, size, "%s", W.why[0] ? W.why : "cannot make an eventfd");
    lf_unlock(&W.mu);
    return -1;
  }
  int phase = wait_phase_locked(P_INIT, P_INIT, -1);
  if (phase == P_SERVE || phase == P_DONE) {
    /* A serving rank: the MPI thread serves; this one waits to end the
    ** process with its status. */
    lf_unlock(&W.mu);
    fflush(NULL);
    pthread_join(W.thread, NULL);
    fflush(NULL);
    exit(W.exit_status);
  }
  if (phase == P_FAILED) {
    W.mode = -1;
    snprintf(why, size, "%s", W.why);
    lf_unlock(&W.mu);
    return -1;
  }
  W.mode = phase == P_HOST ? LF_MPI_WORLD : LF_MPI_SINGLE;
  int mode = W.mode;
  lf_unlock(&W.mu);
  host_hooks();
  return mode;
}

/* s as a Lua string literal, into b. Returns 0 or -1. */
static int quote(lf_mpi_out *b, const char *s) {
  if (lf_mpi_out_add(b, "\"", 1) != 0) return -1;
  for (; *s; s++) {
    char esc[8];
    int n;
    if (*s == '"' || *s == '\\') n = snprintf(esc, sizeof esc, "\\%c", *s);
    else if ((unsigned char)*s < 32) n = snprintf(esc, sizeof esc, "\\%03d", *s);
    else { esc[0] = *s; n = 1; }
    if (lf_mpi_out_add(b, esc, (size_t)n) != 0) return -1;
  }
  return lf_mpi_out_add(b, "\"", 1);
}

/* The -e code of a spawned rank: rank 0's paths, then the module, whose
** require serves and never returns. */
static char *spawn_code(const char *path, const char *cpath) {
  lf_mpi_out b = { NULL, 0, 0 };
  if ((path && (lf_mpi_out_add(&b, "package.path=", 13) != 0 ||
                quote(&b, path) != 0 || lf_mpi_out_add(&b, " ", 1) != 0)) ||
      (cpath && (lf_mpi_out_add(&b, "package.cpath=", 14) != 0 ||
                 quote(&b, cpath) != 0 || lf_mpi_out_add(&b, " ", 1) != 0)) ||
      lf_mpi_out_add(&b, "require('futures.mpi')", 23) != 0)
    return NULL;
  return (char *)b.data;
}

int lf_mpi_world_spawn(int n, const char *exe, const char *path,
                       const char *cpath, double timeout, char *why,
                       size_t size) {
  double until = lf_now() + timeout;
  lf_lock(&W.mu);
  if (W.mode == LF_MPI_WORLD) {
    snprintf(why, size, "spawn is for a process that no MPI launcher "
             "started; this one is rank 0 of %d ranks, which the pool uses "
             "without it", W.size);
    goto fail;
  }
  if (W.stuck || W.phase == P_FAILED) {
    snprintf(why, size, "%s", W.why);
    goto fail;
  }
  if (W.spawned > 0 || W.spawn_req > 0) {
    if (n > W.spawned && W.spawned > 0) {
      snprintf(why, size, "this process already spawned %d MPI ranks, which "
               "live as long as it does: a pool may use at most those",
               W.spawned);
      goto fail;
    }
  } else {
    W.spawn_exe = strdup(exe);
    W.spawn_code = spawn_code(path, cpath);
    if (W.spawn_exe == NULL || W.spawn_code == NULL) {
      snprintf(why, size, "not enough memory");
      goto fail;
    }
    if (W.mode == LF_MPI_ALONE) {
      /* A singleton spawns more ranks than it was given slots for (one):
      ** Open MPI allows that only with oversubscription. Set before
      ** MPI_Init reads it, and only if the user did not choose. */
      setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
      if (lf_mpi_engine_init() != 0 || start_thread_locked() != 0) {
        snprintf(why, size, "%s", W.why[0] ? W.why : "cannot make an eventfd");
        goto fail;
      }
    }
    W.spawn_req = n;
    LF_CHECK(pthread_cond_broadcast(&W.cv));
  }
  int phase = wait_phase_locked(P_INIT, P_SPAWNING, until);
  while (phase == P_ALONE && lf_now() < until)   /* not picked up yet */
    phase = wait_phase_locked(P_ALONE, P_SPAWNING, until);
  if (phase == P_FAILED) {
    snprintf(why, size, "%s", W.why);
    goto fail;
  }
  if (phase != P_HOST) {
    W.stuck = 1;
    snprintf(W.why, sizeof W.why, "MPI_Comm_spawn of %d ranks (%s) did not "
             "finish within %g seconds (spawn_timeout). Spawn mode hangs "
             "when the spawned program cannot start or a spawned process "
             "dies early, and on some MPI installations; run the script "
             "under mpiexec instead (docs/mpi.md)", n, exe, timeout);
    snprintf(why, size, "%s", W.why);
    goto fail;
  }
  lf_unlock(&W.mu);
  host_hooks();
  char err[600];
  int rc = lf_mpi_engine_wait_ready(until, err, sizeof err);
  if (rc == 1) return 0;
  lf_lock(&W.mu);
  if (rc == 0)
    snprintf(err, sizeof err, "the %d spawned MPI ranks did not all answer "
             "within %g seconds (spawn_timeout)", n, timeout);
  snprintf(W.why, sizeof W.why, "%s", err);
  lf_unlock(&W.mu);
  lf_mpi_engine_break(err);
  snprintf(why, size, "%s", err);
  return -1;
fail:
  lf_unlock(&W.mu);
  return -1;
}

int lf_mpi_world_mode(void) {
  lf_lock(&W.mu);
  int mode = W.mode;
  if (W.spawned > 0) mode = LF_MPI_SPAWN;
  lf_unlock(&W.mu);
  return mode;
}

int lf_mpi_world_size(void) {
  lf_lock(&W.mu);
  int n = W.size;
  lf_unlock(&W.mu);
  return n;
}

const char *lf_mpi_world_host(void) { return W.hostname; }
