/*
** lf_mpi.h — futures.mpi (build/futures/mpi.so), the MPIPoolExecutor: what
** its files share. It is a companion module of futures.core, built only
** where mpicc is: it reaches the core through the API table alone (lf_api.h;
** `lf_mpi_api`, fetched once by luaopen), and it is the only part of
** lua-futures that links libmpi. docs/mpi.md is the user's view.
**
**   lf_mpi_link.c   frames over an MPI communicator: sends that own their
**                   bytes, one pre-posted receive, big frames in two
**                   messages, in-order delivery per peer
**   lf_mpi_pool.c   rank 0: the executor back-end, which hands tasks to
**                   the least-loaded rank, and the loop of the MPI thread
**   lf_mpi_serve.c  every other rank: a local process pool per pool of
**                   rank 0, whose workers run the tasks
**   lf_mpi_world.c  the process's MPI: how it was started (an MPI
**                   launcher, spawned, or alone), MPI_Init and
**                   MPI_Finalize, spawning ranks, the MPI thread
**   lf_mpi_lua.c    luaopen_futures_mpi and the module's functions
** Each file uses only those listed before it (and this header).
**
** Threads: one thread per process, "the MPI thread" (lf-mpi), makes every
** MPI call, MPI_Init_thread (FUNNELED) and MPI_Finalize included; nothing
** else ever calls MPI, so the library needs no thread support of its own
** and never blocks a Lua thread. On rank 0 it runs the pools (lf_mpi_pool.c);
** on the other ranks it serves (lf_mpi_serve.c) while the main thread
** waits to end the process. Lua threads reach it through the engine's
** mutex and its eventfd.
**
** Ownership: a frame's bytes are malloc'd and belong to whoever holds the
** frame: the link from lf_mpi_link_send until the send completes, the
** receiver's handler once delivered (it may take `data` and set it NULL).
*/
#ifndef LF_MPI_H
#define LF_MPI_H

#include <limits.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "lf_api.h"

extern const lf_api *lf_mpi_api;

/* ---- frames (lf_mpi_link.c) ---- */

#define LF_MPI_TAG 0x4c46        /* a frame, or the head of a big one */
#define LF_MPI_TAG_BODY 0x4c47   /* the body of a big frame */
#define LF_MPI_SMALL ((size_t)64 << 10)   /* largest one-message frame */
#define LF_MPI_MAGIC 0x504d464cu          /* "LFMP" */
#define LF_MPI_PROTO 1                    /* bumped when frames change */

/* Frame types. Rank 0 to a serving rank: OPEN, TASK, STOP, CLOSE, KILL,
** END; back: HELLO (once, first), RESULT (one per TASK), STARTED, CLOSED
** (one per CLOSE). Frames between two ranks arrive in the order they were
** sent. A serving rank runs one task at a time, of whichever pool, and
** keeps the others it is sent waiting, in order; rank 0 sends it at most
** one task to wait (LF_MPI_WAIT), so that a worker never waits for a
** round trip between two tasks, and only that one may sit behind a slow
** task. */
enum {
  LF_MPI_HELLO = 1,  /* payload: struct lf_mpi_hello, then the host name */
  LF_MPI_OPEN,       /* pool: make a local pool; payload: lf_mpi_pool_msg */
  LF_MPI_TASK,       /* pool, task; flag: the lf_taskkind, | LF_MPI_WAIT
                        when rank 0 expects it to wait; aux: the run limit
                        (a double, 0: none); payload: the encoded call */
  LF_MPI_RESULT,     /* pool, task; flag: LF_MPI_R_*; aux: the task this
                        rank started next, if rank 0 sent it to wait (0:
                        none); payload: the outcome */
  LF_MPI_STARTED,    /* pool, task: a task sent to wait started at once
                        (the one before was done when it came) */
  LF_MPI_STOP,       /* pool, task; flag: LF_MPI_STOP_*. A waiting task is
                        answered at once: RESULT, CANCELLED, aux 1 */
  LF_MPI_CLOSE,      /* pool: shut the local pool down once idle */
  LF_MPI_CLOSED,     /* pool: its workers have exited */
  LF_MPI_KILL,       /* pool; aux: a signal for its workers */
  LF_MPI_END,        /* the job is over: finalize and exit */
  LF_MPI_LAST = LF_MPI_END
};

#define LF_MPI_WAIT 0x80      /* TASK flag: sent to wait behind another */

/* STOP flags: a task whose future was interrupted or cancelled (running:
** stop it; waiting: drop it), or one that rank 0 takes back for a rank that
** became free (waiting: give its call back; running: nothing). */
enum { LF_MPI_STOP_TASK = 0, LF_MPI_STOP_RECLAIM = 1 };

/* RESULT outcomes (flag). */
enum {
  LF_MPI_R_OK = 0,       /* the encoded values */
  LF_MPI_R_FAILED,       /* the encoded error and traceback */
  LF_MPI_R_CANCELLED,    /* stopped by STOP: nothing; or, aux 1, dropped
                            before it started: its call (for a reclaim) */
  LF_MPI_R_BROKEN        /* the pool cannot run tasks on that rank: the
                            reason as text; the pool breaks */
};

/* The end of every frame (so that a small frame's payload starts at the
** start of its buffer); a big frame's head is this alone, with `big` set
** and `len` its body's length, and the body follows as its own message. */
typedef struct lf_mpi_head {
  uint32_t magic;
  uint8_t type, flag, big, proto;
  uint32_t pool;
  uint32_t spare;
  uint64_t task;
  uint64_t aux;
  uint64_t len;
} lf_mpi_head;

#define LF_MPI_HEAD ((size_t)sizeof(lf_mpi_head))   /* 40 */

/* What HELLO says; a rank whose build differs breaks the world. */
typedef struct lf_mpi_hello {
  char version[16];     /* LF_VERSION */
  uint32_t lua_num;     /* LUA_VERSION_NUM */
  uint32_t order;       /* 0x01020304 in native order */
  uint32_t int_size, num_size;   /* sizeof(lua_Integer), sizeof(lua_Number) */
  int64_t pid;
} lf_mpi_hello;

/* OPEN's payload: the settings of the local pools, three strings (u32
** length + bytes, LF_MPI_NOSTR for none: package.path, package.cpath, the
** worker option), then the encoded initializer (or nothing). */
typedef struct lf_mpi_pool_msg {
  uint32_t max_depth;
  uint32_t return_functions;
  uint64_t max_memory;
  int64_t max_tasks_per_child;
  double grace;
} lf_mpi_pool_msg;

#define LF_MPI_NOSTR 0xFFFFFFFFu

typedef struct lf_mpi_msg {
  lf_mpi_head h;
  int src;
  unsigned char *data;   /* the payload (malloc'd), or NULL when empty */
  size_t len;
} lf_mpi_msg;

typedef void (*lf_mpi_deliver)(void *ud, lf_mpi_msg *m);

typedef struct lf_mpi_inq lf_mpi_inq;   /* a peer's frames not delivered */

typedef struct lf_mpi_link {
  MPI_Comm comm;
  int size;
  unsigned char *rbuf;        /* LF_MPI_SMALL bytes */
  MPI_Request rreq;           /* the pre-posted receive */
  MPI_Request *sreq;          /* sends in flight, and their buffers */
  unsigned char **sbuf;
  int nsend, capsend;
  int *sdone;                 /* room for MPI_Testsome */
  lf_mpi_inq **inq;           /* [size]: per peer, while a body arrives */
  int nbodies;                /* bodies arriving */
  char error[320];            /* the first MPI error, or "" */
} lf_mpi_link;

/* Set up k over comm and post the receive. Returns 0, or -1 with
** k->error set. MPI thread only, as everything else here. */
int lf_mpi_link_open(lf_mpi_link *k, MPI_Comm comm);
/* Cancel the receive, wait at most `seconds` for the sends, free. */
void lf_mpi_link_close(lf_mpi_link *k, double seconds);
/* Send a frame to dest: h (type, flag, pool, task, aux filled in) and the
** payload body[0..len), which must be malloc'd (or NULL with len 0) and
** is taken in every case. Returns 0, or -1 (no memory, or an MPI error in
** k->error). */
int lf_mpi_link_send(lf_mpi_link *k, int dest, const lf_mpi_head *h,
                     unsigned char *body, size_t len);
/* Make progress: deliver every frame that is whole, in order per peer,
** and reap finished sends. Returns how many things happened (0: idle),
** or -1 after an MPI error or a malformed frame (k->error). */
int lf_mpi_link_poll(lf_mpi_link *k, lf_mpi_deliver fn, void *ud);
/* Sends still in flight. */
static inline int lf_mpi_link_sending(const lf_mpi_link *k) {
  return k->nsend;
}

/* Say what an MPI error code means, into k->error (once). */
void lf_mpi_link_fail(lf_mpi_link *k, const char *what, int rc);

/* Appending a payload: a growing malloc'd buffer. Returns -1 when out of
** memory (then *b is freed). */
typedef struct lf_mpi_out { unsigned char *data; size_t len, cap; } lf_mpi_out;
int lf_mpi_out_add(lf_mpi_out *b, const void *p, size_t n);
int lf_mpi_out_str(lf_mpi_out *b, const char *s);   /* u32 length + bytes */

/* Waiting between polls (both loops). MPI cannot wake a thread that
** sleeps, so after activity a loop spins (polls without sleeping) for as
** long as the next event has lately taken to come, within SPIN_MIN and
** SPIN_MAX: a quick exchange (a round trip, the next task of a map) then
** costs no sleep and no wake-up, and a long task no CPU; then it sleeps in
** ppoll on its descriptor (which a Lua thread or a local pool writes) for a
** time that grows with the quiet, up to NAP_MAX while a message may come,
** for ever (negative) when none can. */
#define LF_MPI_SPIN_MIN 20e-6
#define LF_MPI_SPIN_MAX 500e-6
#define LF_MPI_NAP_MIN 50e-6     /* the shortest sleep */
#define LF_MPI_NAP_MAX 1e-3      /* the longest while a message may come */

typedef struct lf_mpi_spin { double budget; } lf_mpi_spin;
#define LF_MPI_SPIN_INIT { 100e-6 }
/* An event came `gap` seconds after the one before: the spin budget
** follows such gaps (one and a half of the last short one), and halves
** after long ones. */
void lf_mpi_spin_saw(lf_mpi_spin *s, double gap);
/* Spin once more (a short pause); returns 0 when the budget is spent. */
int lf_mpi_spin_on(const lf_mpi_spin *s, double quiet);
double lf_mpi_nap(double quiet);        /* seconds to sleep after `quiet` */
void lf_mpi_sleep(int fd, double seconds);   /* ppoll; negative: no limit */

/* ---- rank 0 (lf_mpi_pool.c) ---- */

/* The MPI world as rank 0 sees it, for the pools. */
typedef struct lf_mpi_host {
  lf_mpi_link link;
  int size;                   /* ranks, 0 included */
  int spawned;                /* the ranks were spawned by this process */
  char host[256];             /* this host's name */
} lf_mpi_host;

/* Start the engine (its mutex, eventfd) before the MPI thread runs. Any
** thread, once. Returns 0 or -1. */
int lf_mpi_engine_init(void);
/* The MPI thread has a world of h->size ranks: pools may be made. Returns
** 0, or -1 when out of memory. */
int lf_mpi_engine_attach(lf_mpi_host *h);
/* The loop of the MPI thread on rank 0: runs the pools until the end of
** the process asks it to stop (lf_mpi_engine_stop), then sends END to
** every rank. Returns 0, or -1 when MPI failed (the world is broken:
** do not finalize). */
int lf_mpi_engine_run(lf_mpi_host *h);
/* Wait until the engine knows every rank (HELLO), at most until the
** monotonic time `until`; returns 1 when it does, 0 on timeout, -1 when
** the world broke (why in `why`). Any thread. */
int lf_mpi_engine_wait_ready(double until, char *why, size_t size);
/* Ask the loop to end (the process exits). Any thread. */
void lf_mpi_engine_stop(void);
/* The world ends: an MPI launcher sent SIGTERM (a rank died, or the job is
** being stopped). Async-signal-safe: it only flags and wakes; the MPI
** thread breaks every pool. */
void lf_mpi_engine_dying(void);
/* The world cannot be used (spawn failed, say): pools made later fail. */
void lf_mpi_engine_break(const char *why);
/* Ranks that serve (size - 1 once running; 0 before). */
int lf_mpi_engine_ranks(void);

/* A new MPIPoolExecutor on the running engine; cfg as the Lua face built
** it, init its encoded initializer (copied). NULL when out of memory. */
lf_executor *lf_mpi_pool_new(const lf_pool_config *cfg, const lf_buf *init,
                             const char *worker);

/* ---- the other ranks (lf_mpi_serve.c) ---- */

/* Serve rank 0 over comm (this process's `rank`) until END. Returns 0, or
** -1 when MPI failed (do not finalize then). */
int lf_mpi_serve(MPI_Comm comm, int rank);

/* ---- the process (lf_mpi_world.c) ---- */

enum {
  LF_MPI_ALONE = 0,   /* no launcher: a world of one rank */
  LF_MPI_WORLD,       /* started by a launcher: this is rank 0 of several */
  LF_MPI_SINGLE,      /* started by a launcher, but the world has one rank */
  LF_MPI_SPAWN        /* this process spawned its serving ranks */
};

/* Set up MPI for this process, once (luaopen): under a launcher, MPI_Init
** in the MPI thread; on a rank other than 0 this serves and ends the
** process (never returns). Returns the mode (LF_MPI_*), or -1 with why. */
int lf_mpi_world_start(char *why, size_t size);
/* Spawn `n` serving ranks (spawn mode), waiting at most `timeout` seconds.
** Returns 0, or -1 with why. Lua thread. */
int lf_mpi_world_spawn(int n, const char *exe, const char *path,
                       const char *cpath, double timeout, char *why,
                       size_t size);
int lf_mpi_world_mode(void);
int lf_mpi_world_size(void);          /* ranks, 0 included */
const char *lf_mpi_world_host(void);  /* this host's name */

#endif
