/*
** lf_process_worker.c — `lua-futures --lf-worker`: a worker process of a
** ProcessPoolExecutor. It reads an INIT frame (package.path and cpath, the
** initializer), builds its lua_State, then runs TASK frames one at a time
** and answers each with a RESULT frame, until end-of-file on its socket.
** The frames are described in lf_proto.h. Interpreter-only: the
** module's core.so never contains it.
**
** Threads: the main thread does all of the above and owns the lua_State. A
** watchdog thread only waits for the host to hang up (POLLRDHUP on the
** socket): if a task or the initializer is running then, it ends the
** process at once, because the main thread is busy in Lua and would notice
** only at its next read, maybe hours later. `busy` and `host_gone` are the
** two flags they share (sequentially consistent atomics: whichever of the
** two threads acts second sees the other's flag). Between tasks the main
** thread may watch the socket for a few microseconds before it blocks
** (spin_for_input), only while that pays (lf_spin.h).
**
** Shared objects and queues (lf_proto.h): the main thread also receives
** the descriptors of SHARE frames (they come as SCM_RIGHTS with the bytes,
** kept in arrival order until a SHARE entry takes one), maps the arrays
** (lf_sarray_import), and carries the operations on the host's queues:
** it is the transport of queue proxies (lf_squeue.h), which writes one
** QUEUE request and reads frames until its QREPLY, handling control frames
** (SHARE, FORGET) that come first. Only the main thread may use it: a
** thread task of the worker's own thread pool gets an error. After
** IDLE_SWEEP seconds without a task, a worker that holds shared objects
** collects its garbage and tells the host what nothing uses (UNUSED).
**
** Big payloads (lf_proto.h): the main thread maps the host's task region
** read-only (kept while the same file comes, for warm pages), and sends a
** big outcome in a sealed memfd of its own, made ahead between tasks (the
** spare). Both go after LF_STATE_HOLD idle.
**
** Ownership: the read buffer, the state and each task's encoded outcome
** belong to the main thread; the outcome is freed once it is written.
** A received region descriptor is closed as soon as it is mapped; a
** result's memfd once sent (the host has its own descriptor then).
** Received descriptors belong to the FIFO until a SHARE entry takes one
** (lf_sarray_import closes it); imported arrays and queue proxies belong
** to their tables (lf_sarray.c, lf_squeue.c) until the host's FORGET.
*/
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lua.h"
#include "lauxlib.h"

#include "lf_common.h"
#include "lf_process_worker.h"
#include "lf_proto.h"
#include "lf_spin.h"
#include "lf_sarray.h"
#include "lf_squeue.h"
#include "lf_state.h"
#include "lf_task.h"

#define EXIT_PROTOCOL 3   /* the host sent what we do not understand, or
                             we had no memory to read its next frame */
#define IDLE_SWEEP 0.1    /* seconds idle before reporting unused objects */

static atomic_int busy;        /* a task or the initializer is running */
static atomic_int host_gone;   /* the watchdog saw the host hang up */

/* Stopping the task that runs (lf_proto.h, LF_STOP_SIGNAL): the handler
** runs on the main thread (the watchdog blocks every signal) and only sets
** the stop request and Lua's hook, which lua_sethook allows from a signal
** handler (lua.c does the same for Ctrl-C). */
static lua_State *task_state;      /* the worker's state, once it has one */
static atomic_uint running_id;     /* the id of the task that runs, 0: none */
static atomic_uint asked_id;       /* the id the last stop signal named */
static atomic_int task_stop;       /* LF_STOP_*, for lf_stop_enter */

/* Stop the task that runs if it is task `id`. */
static void stop_if_running(unsigned id) {
  if (id == 0 || id != atomic_load(&running_id) || task_state == NULL) return;
  atomic_store(&task_stop, LF_STOP_CANCEL);
  lf_stop_now(task_state);
}

/* A signal may come before its task starts (it is sent once the task is on
** its way): the id is kept, and looked at again when a task starts. */
static void on_stop_signal(int sig, siginfo_t *info, void *ctx) {
  (void)sig;
  (void)ctx;
  unsigned id = (unsigned)info->si_value.sival_int;
  atomic_store(&asked_id, id);
  stop_if_running(id);
}

/* The pool starts us with the stop signal blocked: unblocked once handled. */
static void catch_stop_signal(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_stop_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(LF_STOP_SIGNAL, &sa, NULL);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, LF_STOP_SIGNAL);
  pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
}

static void *watchdog_main(void *arg) {
  (void)arg;
  struct pollfd pfd = { LF_PROC_FD, POLLRDHUP, 0 };
  for (;;) {
    if (poll(&pfd, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    if (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) break;
  }
  atomic_store(&host_gone, 1);
  if (atomic_load(&busy)) _exit(1);
  return NULL;   /* idle: the main thread reads end-of-file and exits */
}

/* Mark the worker busy; if the host is already gone, stop here. */
static void begin_busy(void) {
  atomic_store(&busy, 1);
  if (atomic_load(&host_gone)) _exit(1);
}

static void start_watchdog(void) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);   /* inherited by the watchdog */
  pthread_attr_t attr;
  pthread_t t;
  LF_CHECK(pthread_attr_init(&attr));
  pthread_attr_setstacksize(&attr, (size_t)64 << 10);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, watchdog_main, NULL);
  LF_CHECK(pthread_attr_destroy(&attr));
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  /* Without a watchdog the worker still exits at its next read once the
  ** host is gone; only a long task would outlive the host. */
  (void)rc;
}

/* ---- frames ---- */

typedef struct rbuf {
  unsigned char *data;
  size_t cap, start, end;   /* unread bytes are data[start..end) */
  size_t consumed;          /* bytes of the frame returned last time */
  size_t consumed_last;     /* ... and the time before */
  int idle_big;             /* frames in a row that fitted a small buffer */
} rbuf;

#define RBUF_SMALL ((size_t)64 << 10)

/* Descriptors received with SHARE frames, oldest first, not yet taken.
** Room for FDQ_START is made at start-up (fdq_reserve): a descriptor that
** finds no room is closed, and the frame that needed it breaks the
** protocol, so the usual few must never wait for an allocation. */
static int *fdq;
static size_t fdq_head, fdq_n, fdq_cap;
#define FDQ_START 64

static int fdq_reserve(void) {
  fdq = malloc(FDQ_START * sizeof *fdq);
  if (fdq == NULL) return -1;
  fdq_cap = FDQ_START;
  return 0;
}

static int fdq_push(int fd) {
  if (fdq_head + fdq_n == fdq_cap) {
    if (fdq_head > 0) {
      memmove(fdq, fdq + fdq_head, fdq_n * sizeof *fdq);
      fdq_head = 0;
    } else {
      size_t cap = fdq_cap ? 2 * fdq_cap : FDQ_START;
      int *q = realloc(fdq, cap * sizeof *q);
      if (q == NULL) return -1;
      fdq = q;
      fdq_cap = cap;
    }
  }
  fdq[fdq_head + fdq_n++] = fd;
  return 0;
}

static int fdq_pop(void) {
  if (fdq_n == 0) return -1;
  fdq_n--;
  return fdq[fdq_head++];
}

/* read() that also keeps the descriptors that come along. A message whose
** descriptors did not all fit is a protocol error (a SHARE would lack
** some). */
static ssize_t recv_fds(void *buf, size_t len) {
  struct iovec iov = { buf, len };
  union {
    char buf[CMSG_SPACE(sizeof(int) * LF_SHARE_MAXFDS)];
    struct cmsghdr align;
  } cm;
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cm.buf;
  msg.msg_controllen = sizeof cm.buf;
  ssize_t n = recvmsg(LF_PROC_FD, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return n;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL;
       c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (fdq_push(fd) != 0) close(fd);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) _exit(EXIT_PROTOCOL);
  return n;
}

/* Make at least `need` unread bytes available. Returns 1, 0 at end-of-file
** before any byte of them, -1 on a short read or an error. */
static int rbuf_fill(rbuf *rb, size_t need) {
  while (rb->end - rb->start < need) {
    if (rb->cap - rb->start < need) {
      memmove(rb->data, rb->data + rb->start, rb->end - rb->start);
      rb->end -= rb->start;
      rb->start = 0;
      if (rb->cap < need) {
        unsigned char *d = realloc(rb->data, need);
        if (d == NULL) return -1;
        rb->data = d;
        rb->cap = need;
      }
    }
    ssize_t n = recv_fds(rb->data + rb->end, rb->cap - rb->end);
    if (n == 0) return rb->end == rb->start ? 0 : -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    rb->end += (size_t)n;
  }
  return 1;
}

/* Watch the socket a moment before blocking in read, when that pays
** (lf_spin.h): in a busy pool the next task arrives within microseconds of
** the last result, and is then taken without the cost of a sleep and a
** wake-up; when tasks do not come that fast, or the machine has no core to
** spare (the host is the bottleneck of a chunked map), the spins stop. */
static lf_spin_site input_spin;
static int spun_before;       /* no spin before the first result */

static void spin_for_input(void) {
  lf_spinning sp;
  if (!spun_before || !lf_spin_begin(&input_spin, LF_SPIN_FOR_OTHER, &sp))
    return;
  int paid = 0;
  for (unsigned i = 1;; i++) {
    char c;
    ssize_t n = recv(LF_PROC_FD, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      paid = 1;   /* data, end-of-file or an error: read() sees it now */
      break;
    }
    if ((i & 7) == 0 && !lf_spin_go_on(&sp)) break;
    lf_cpu_relax();
  }
  lf_spin_end(&input_spin, &sp, paid);
}

/* Read the next frame; its payload stays valid until the next call.
** Returns 1, 0 at end-of-file, -1 on error. */
static int read_frame(rbuf *rb, lf_frame *fr, unsigned char **payload) {
  rb->start += rb->consumed;
  rb->consumed_last = rb->consumed;
  rb->consumed = 0;
  if (rb->start == rb->end) {
    rb->start = rb->end = 0;
    /* A big buffer is kept while big frames keep coming (fresh memory costs
    ** a page fault per 4 KiB, more than copying into it), and given back
    ** after 8 frames in a row that a small one would have held. */
    if (rb->cap > 4 * RBUF_SMALL) {
      if (rb->consumed_last > RBUF_SMALL) {
        rb->idle_big = 0;
      } else if (++rb->idle_big >= 8) {
        free(rb->data);
        rb->data = NULL;
        rb->cap = 0;
        rb->idle_big = 0;
      }
    }
    spin_for_input();
  }
  if (rb->data == NULL) {
    rb->data = malloc(RBUF_SMALL);
    if (rb->data == NULL) return -1;
    rb->cap = RBUF_SMALL;
  }
  int rc = rbuf_fill(rb, LF_PROC_HDR);
  if (rc <= 0) return rc;
  if (lf_frame_unpack(rb->data + rb->start, fr) != 0) return -1;
  if ((uint64_t)SIZE_MAX - LF_PROC_HDR < fr->len) return -1;
  size_t total = LF_PROC_HDR + (size_t)fr->len;
  if (rbuf_fill(rb, total) != 1) return -1;
  *payload = rb->data + rb->start + LF_PROC_HDR;
  rb->consumed = total;
  return 1;
}

/* Write all of p. A host that went away ends the worker. */
static void send_raw(const void *p, size_t len) {
  while (len > 0) {
    ssize_t n = send(LF_PROC_FD, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(0);
    }
    p = (const char *)p + n;
    len -= (size_t)n;
  }
}

/* Write a whole frame whose payload is a then b. A host that went away
** ends the worker. */
static void send_frame2(unsigned type, unsigned flag, uint32_t id,
                        const void *a, size_t alen, const void *b,
                        size_t blen) {
  unsigned char h[LF_PROC_HDR];
  lf_frame_pack(h, type, flag, id, alen + blen);
  struct iovec iov[3] = { { h, LF_PROC_HDR }, { (void *)a, alen },
                          { (void *)b, blen } };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = 3;
  while (msg.msg_iovlen > 0) {
    ssize_t n = sendmsg(LF_PROC_FD, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(0);   /* nobody is listening any more */
    }
    size_t left = (size_t)n;
    while (msg.msg_iovlen > 0 && left >= msg.msg_iov->iov_len) {
      left -= msg.msg_iov->iov_len;
      msg.msg_iov++;
      msg.msg_iovlen--;
    }
    if (msg.msg_iovlen > 0) {
      msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + left;
      msg.msg_iov->iov_len -= left;
    }
  }
}

static void send_frame(unsigned type, unsigned flag, uint32_t id,
                       const void *data, size_t len) {
  send_frame2(type, flag, id, data, len, NULL, 0);
}

/* ---- big payloads (lf_proto.h, "Big payloads") ---- */

/* The host's task region, mapped read-only and kept from task to task
** while the same file comes, large enough: its pages stay mapped here, so
** a big task costs no page fault per 4 KiB. Unmapped after a while idle,
** or when another file comes. */
static struct {
  unsigned char *p;
  size_t len;
  dev_t dev;
  ino_t ino;
} region;

static void region_unmap(void) {
  if (region.p != NULL) munmap(region.p, region.len);
  region.p = NULL;
  region.len = 0;
}

/* The payload of a big TASK frame whose own payload is desc: the next
** descriptor received, mapped (the host is trusted: the task decodes in
** place). NULL when it cannot be mapped (no memory); a frame without its
** descriptor, or one shorter than announced, breaks the protocol. */
static const unsigned char *take_region(const unsigned char *desc,
                                        size_t desc_len, size_t *len) {
  uint64_t n;
  int fd = fdq_pop();
  struct stat st;
  if (desc_len != LF_MEMFD_DESC || fd < 0) _exit(EXIT_PROTOCOL);
  memcpy(&n, desc, 8);
  if (fstat(fd, &st) != 0 || st.st_size < 0 || (uint64_t)st.st_size < n ||
      n > SIZE_MAX)
    _exit(EXIT_PROTOCOL);
  if (region.p == NULL || region.dev != st.st_dev ||
      region.ino != st.st_ino || region.len < n) {
    region_unmap();
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { close(fd); return NULL; }
    region.p = m;
    region.len = (size_t)st.st_size;
    region.dev = st.st_dev;
    region.ino = st.st_ino;
  }
  close(fd);   /* the mapping is all we keep of the host's */
  *len = (size_t)n;
  return region.p;
}

/* A sealed memfd can never be written again, so each big result needs a
** new one, whose fresh pages cost a page fault each when first written
** (on a virtual machine, about as much as copying them several times).
** After a big result the worker prepares the next one while it waits for
** its next task, with every page allocated and mapped: the spare, as big
** as the last result, given back after a while idle like the blocks its
** state keeps (lf_state_keep_blocks). */
static struct {
  int fd;                    /* -1: none */
  unsigned char *p;          /* mapped read-write */
  size_t cap;
} spare = { -1, NULL, 0 };

static void spare_drop(void) {
  if (spare.p != NULL) munmap(spare.p, spare.cap);
  if (spare.fd >= 0) close(spare.fd);
  spare.fd = -1;
  spare.p = NULL;
  spare.cap = 0;
}

/* A new memfd of cap bytes, mapped read-write with its pages in place.
** Returns 0, or -1 with nothing made. */
static int memfd_make(size_t cap, int *fd, unsigned char **p) {
  *fd = memfd_create("lf-result", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (*fd < 0) return -1;
  void *m = MAP_FAILED;
  if (ftruncate(*fd, (off_t)cap) == 0)
    m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
             *fd, 0);
  if (m == MAP_FAILED) { close(*fd); *fd = -1; return -1; }
  *p = m;
  return 0;
}

/* Between tasks, after a big result of len bytes. */
static void spare_prepare(size_t len) {
  if (spare.fd >= 0 && spare.cap >= len) return;
  spare_drop();
  if (memfd_make(len, &spare.fd, &spare.p) == 0) spare.cap = len;
}

/* Send a RESULT whose payload is out's in a memfd of its own (the spare,
** or a new one), written and unmapped, then cut to its length and sealed
** against any change: the host decodes it in place, and must not trust us
** not to change it meanwhile. Returns 0, or -1 when no memfd could be
** made: then the payload goes in the socket. */
static int send_big_result(unsigned flag, uint32_t id, const lf_buf *out) {
  int fd;
  unsigned char *m;
  size_t cap;
  if (spare.fd >= 0 && spare.cap >= out->len) {
    fd = spare.fd;
    m = spare.p;
    cap = spare.cap;
    spare.fd = -1;
    spare.p = NULL;
    spare.cap = 0;
  } else {
    if (memfd_make(out->len, &fd, &m) != 0) return -1;
    cap = out->len;
  }
  memcpy(m, out->data, out->len);
  munmap(m, cap);
  if ((cap > out->len && ftruncate(fd, (off_t)out->len) != 0) ||
      fcntl(fd, F_ADD_SEALS, LF_MEMFD_SEALS) != 0) {
    close(fd);
    return -1;
  }
  unsigned char h[LF_PROC_HDR + LF_MEMFD_DESC];
  uint64_t len = out->len;
  lf_frame_pack(h, LF_FRAME_RESULT, flag | LF_FLAG_MEMFD, id, LF_MEMFD_DESC);
  memcpy(h + LF_PROC_HDR, &len, 8);
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } cm;
  memset(&cm, 0, sizeof cm);
  struct iovec iov = { h, sizeof h };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cm.buf;
  msg.msg_controllen = sizeof cm.buf;
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ssize_t n;
  do n = sendmsg(LF_PROC_FD, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  close(fd);   /* the host has its own now */
  if (n < 0) _exit(0);   /* nobody is listening any more */
  if ((size_t)n < sizeof h)   /* the descriptor went with the first byte */
    send_raw(h + n, sizeof h - (size_t)n);
  return 0;
}

static void init_failed(const char *msg) {
  send_frame(LF_FRAME_INIT_FAILED, 0, 0, msg, strlen(msg));
  exit(EXIT_PROTOCOL);
}

/* ---- shared objects and the host's queues ---- */

static rbuf *input;               /* the main thread's read buffer */
static pthread_t main_thread;
static uint32_t request_seq;      /* the id of the last QUEUE request */

/* A SHARE frame: map each array with the next descriptor received. */
static void take_shares(const unsigned char *p, size_t len) {
  if (len % LF_SHARE_ENTRY != 0) _exit(EXIT_PROTOCOL);
  for (size_t off = 0; off < len; off += LF_SHARE_ENTRY) {
    const unsigned char *e = p + off;
    uint64_t id, n;
    memcpy(&id, e + 8, 8);
    memcpy(&n, e + 16, 8);
    int fd = fdq_pop();
    if (e[0] != LF_SARRAY_WIRE || fd < 0 || n > SIZE_MAX / 8)
      _exit(EXIT_PROTOCOL);
    if (lf_sarray_import(id, (lf_sakind)e[1], (size_t)n, fd) != 0) {
      /* Not mapped (no memory): the task that names it fails to decode
      ** it, with an error saying so. */
    }
  }
}

/* A FORGET frame: drop what the host no longer shares with us. */
static void take_forgets(const unsigned char *p, size_t len) {
  if (len % LF_ID_ENTRY != 0) _exit(EXIT_PROTOCOL);
  for (size_t off = 0; off < len; off += LF_ID_ENTRY) {
    unsigned wire;
    uint64_t id;
    lf_id_entry_unpack(p + off, &wire, &id);
    if (wire == LF_SARRAY_WIRE) lf_sarray_forget(id);
    else if (wire == LF_SQUEUE_WIRE) lf_squeue_forget(id);
  }
}

/* The host's frames that may come at any time, in a task too (lf_proto.h,
** "Frames inside a task"): handled here; returns 1, or 0 for any other. */
static int control_frame(const lf_frame *fr, const unsigned char *payload) {
  switch (fr->type) {
    case LF_FRAME_SHARE: take_shares(payload, (size_t)fr->len); return 1;
    case LF_FRAME_FORGET: take_forgets(payload, (size_t)fr->len); return 1;
    default: return 0;
  }
}

/* Send PINS for the shared objects that b names, before the frame that
** carries b. */
static void send_pins(const lf_buf *b) {
  if (b->nhandles == 0) return;
  size_t len = b->nhandles * LF_ID_ENTRY, k = 0;
  unsigned char *p = malloc(len);
  if (p == NULL) _exit(EXIT_PROTOCOL);   /* cannot keep the protocol */
  for (size_t i = 0; i < b->nhandles; i++) {
    const lf_buf_handle *h = &b->handles[i];
    const lf_export_kind *ek = h->kind ? lf_export_of(h->kind) : NULL;
    if (ek == NULL) continue;
    lf_id_entry_pack(p + k, ek->wire, ek->export_id(h->obj, LF_SHARE_UP));
    k += LF_ID_ENTRY;
  }
  send_frame(LF_FRAME_PINS, 0, 0, p, k);
  free(p);
}

/* One QUEUE request and its QREPLY, whose frame and payload (valid until
** the next read) it fills in. Returns 0, or -1 with why in err. */
static int request(unsigned op, uint64_t qid, double timeout,
                   const lf_sqitem *item, lf_frame *reply,
                   unsigned char **payload, char *err, size_t errlen) {
  if (input == NULL || !pthread_equal(pthread_self(), main_thread)) {
    snprintf(err, errlen, "a queue of the host can only be used by the "
             "worker process's task itself, not by a thread task inside it");
    return -1;
  }
  unsigned char head[16];
  memcpy(head, &qid, 8);
  memcpy(head + 8, &timeout, 8);
  uint32_t req = ++request_seq;
  if (item != NULL) send_pins(&item->buf);
  send_frame2(LF_FRAME_QUEUE, op, req, head, sizeof head,
              item ? item->buf.data : NULL, item ? item->buf.len : 0);
  for (;;) {
    int rc = read_frame(input, reply, payload);
    if (rc <= 0) _exit(1);   /* the host is gone */
    if (control_frame(reply, *payload)) continue;
    if (reply->type == LF_FRAME_QREPLY && reply->id == req) break;
    _exit(EXIT_PROTOCOL);
  }
  if (reply->flag == LF_QR_ERROR) {
    int n = (int)(reply->len < 1000 ? reply->len : 1000);
    snprintf(err, errlen, "%.*s", n, (const char *)*payload);
    return -1;
  }
  if (reply->flag > LF_QR_CLOSED) _exit(EXIT_PROTOCOL);
  return 0;
}

static int remote_put(uint64_t id, const lf_sqitem *item, double timeout,
                      char *err, size_t errlen) {
  lf_frame fr;
  unsigned char *p;
  if (request(LF_QOP_PUT, id, timeout, item, &fr, &p, err, errlen) != 0)
    return -1;
  return (int)fr.flag;   /* LF_QR_* are the LF_SQ_* outcomes */
}

static int remote_get(uint64_t id, double timeout, lf_sqitem *out, char *err,
                      size_t errlen) {
  lf_frame fr;
  unsigned char *p;
  if (request(LF_QOP_GET, id, timeout, NULL, &fr, &p, err, errlen) != 0)
    return -1;
  if (fr.flag != LF_QR_OK) return (int)fr.flag;
  if (fr.len < LF_QITEM_PREFIX) _exit(EXIT_PROTOCOL);
  size_t len = (size_t)fr.len - LF_QITEM_PREFIX;
  out->buf.data = malloc(len > 0 ? len : 1);
  if (out->buf.data == NULL) {
    snprintf(err, errlen, "not enough memory for a queue item of %zu bytes",
             len);
    return -1;
  }
  memcpy(out->buf.data, p + LF_QITEM_PREFIX, len);
  out->buf.len = out->buf.cap = len;
  out->untrusted = 1;
  out->functions = p[0] != 0;
  memcpy(&out->depth, p + 2, 2);
  return LF_SQ_OK;
}

static int remote_close(uint64_t id, char *err, size_t errlen) {
  lf_frame fr;
  unsigned char *p;
  return request(LF_QOP_CLOSE, id, 0, NULL, &fr, &p, err, errlen);
}

static int remote_size(uint64_t id, size_t *n, char *err, size_t errlen) {
  lf_frame fr;
  unsigned char *p;
  if (request(LF_QOP_SIZE, id, 0, NULL, &fr, &p, err, errlen) != 0) return -1;
  uint64_t v;
  if (fr.len != 8) _exit(EXIT_PROTOCOL);
  memcpy(&v, p, 8);
  *n = (size_t)v;
  return 0;
}

static const lf_squeue_transport transport = {
  remote_put, remote_get, remote_close, remote_size
};

/* Idle for IDLE_SWEEP with shared objects: collect, and tell the host
** what nothing uses, so that it lets go of them (it answers FORGET). */
static void sweep_unused(lua_State *L) {
  size_t na = lf_sarray_nimports(), nq = lf_squeue_nimports();
  if (na + nq == 0) return;
  lua_gc(L, LUA_GCCOLLECT);
  uint64_t *ids = malloc((na + nq) * sizeof *ids);
  unsigned char *p = malloc((na + nq) * LF_ID_ENTRY);
  if (ids != NULL && p != NULL) {
    size_t ka = lf_sarray_unused(ids, na);
    size_t kq = lf_squeue_unused(ids + ka, nq);
    for (size_t i = 0; i < ka + kq; i++)
      lf_id_entry_pack(p + i * LF_ID_ENTRY,
                       i < ka ? LF_SARRAY_WIRE : LF_SQUEUE_WIRE, ids[i]);
    if (ka + kq > 0)
      send_frame(LF_FRAME_UNUSED, 0, 0, p, (ka + kq) * LF_ID_ENTRY);
  }
  free(ids);
  free(p);
}

/* Before blocking for the next task: once per idle spell, after
** IDLE_SWEEP seconds with nothing to read, sweep. */
/* Wait up to `seconds` for the host's next frame; 1 if none came. */
static int quiet_for(double seconds) {
  struct pollfd pfd = { LF_PROC_FD, POLLIN, 0 };
  int rc;
  do rc = poll(&pfd, 1, (int)(seconds * 1000));
  while (rc < 0 && errno == EINTR);
  return rc == 0;
}

static void idle_wait(lua_State *L, rbuf *rb, int *swept) {
  if (rb->end - rb->start > rb->consumed) return;   /* a frame is here */
  int sweep = !*swept && lf_sarray_nimports() + lf_squeue_nimports() > 0;
  int drop = lf_state_kept(L) > 0 || region.p != NULL || spare.fd >= 0;
  double waited = 0;
  if (sweep) {
    if (!quiet_for(IDLE_SWEEP)) return;
    sweep_unused(L);
    *swept = 1;
    waited = IDLE_SWEEP;
  }
  /* The big blocks kept warm for the next task go back once the worker
  ** has been idle a while (lf_state_keep_blocks). */
  if (drop && quiet_for(LF_STATE_HOLD - waited)) {
    lf_state_drop_blocks(L);
    region_unmap();
    spare_drop();
    malloc_trim(0);
  }
}

/* Take one u32-prefixed string of INIT; *s is NULL for an absent one. The
** bytes are copied so that they can be passed on as C strings. Returns 0,
** or -1 when the payload is too short. */
static int take_string(const unsigned char **p, const unsigned char *end,
                       char **s) {
  uint32_t n;
  *s = NULL;
  if (end - *p < 4) return -1;
  memcpy(&n, *p, 4);
  *p += 4;
  if (n == LF_PROC_NOSTR) return 0;
  if ((size_t)(end - *p) < n) return -1;
  *s = malloc((size_t)n + 1);
  if (*s == NULL) return -1;
  memcpy(*s, *p, n);
  (*s)[n] = '\0';
  *p += n;
  return 0;
}

static int open_core(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "futures.core");
  lua_call(L, 1, 0);
  return 0;
}

/* Reads INIT, builds the state and runs the initializer; answers READY or
** INIT_FAILED (and exits). Takes the codec settings of INIT into opts. */
static lua_State *start(rbuf *rb, lf_codec_opts *opts) {
  lf_frame fr;
  unsigned char *payload;
  do {   /* what the initializer names is shared first */
    if (read_frame(rb, &fr, &payload) != 1) exit(EXIT_PROTOCOL);
  } while (control_frame(&fr, payload));
  if (fr.type != LF_FRAME_INIT) exit(EXIT_PROTOCOL);
  const unsigned char *p = payload, *end = payload + fr.len;
  uint32_t proto;
  char *version = NULL, *path = NULL, *cpath = NULL;
  if (end - p < 4) init_failed("malformed INIT frame");
  memcpy(&proto, p, 4);
  p += 4;
  if (proto != LF_PROC_PROTO || take_string(&p, end, &version) != 0 ||
      version == NULL || strcmp(version, LF_VERSION) != 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "the worker interpreter is lua-futures "
             LF_VERSION " (protocol %u) but the pool is %s (protocol %u)",
             LF_PROC_PROTO, version ? version : "?", (unsigned)proto);
    init_failed(msg);
  }
  uint32_t nsettings = 0;
  uint64_t settings[LF_INIT_NSETTINGS] = { 0 };
  if (take_string(&p, end, &path) != 0 || take_string(&p, end, &cpath) != 0 ||
      end - p < 4)
    init_failed("malformed INIT frame");
  memcpy(&nsettings, p, 4);
  p += 4;
  if ((size_t)(end - p) / 8 < nsettings) init_failed("malformed INIT frame");
  for (uint32_t i = 0; i < nsettings; i++, p += 8)
    if (i < LF_INIT_NSETTINGS) memcpy(&settings[i], p, 8);
  if (settings[LF_INIT_MAX_DEPTH] > 0 &&
      settings[LF_INIT_MAX_DEPTH] <= LF_CODEC_MAX_DEPTH)
    opts->max_depth = (int)settings[LF_INIT_MAX_DEPTH];
  lua_State *L = lf_new_state(path, cpath);
  free(version);
  free(path);
  free(cpath);
  if (L == NULL) init_failed("not enough memory to start a worker");
  /* The core registers the kinds of shared objects: it must be open
  ** before anything the host sends is decoded. */
  lua_pushcfunction(L, open_core);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK)
    init_failed("not enough memory to start a worker");
  if (settings[LF_INIT_MAX_MEMORY] > 0)
    lf_state_set_limit(L, (size_t)settings[LF_INIT_MAX_MEMORY]);
  if (p < end) {
    begin_busy();
    if (lf_task_init(L, p, (size_t)(end - p), opts) != 0) {
      const char *why = lua_tostring(L, -1);
      char msg[1024];
      snprintf(msg, sizeof msg, "initializer failed: %s", why ? why : "?");
      init_failed(msg);
    }
    atomic_store(&busy, 0);
  }
  fflush(stdout);
  send_frame(LF_FRAME_READY, 0, 0, NULL, 0);
  return L;
}

/* An outcome too big for a frame is replaced by an error saying so. */
static int check_size(lua_State *L, lf_buf *out, const lf_codec_opts *opts) {
  if ((uint64_t)out->len <= LF_PROC_FRAME_MAX) return -1;
  size_t len = out->len;
  lf_buf_free(out);
  lua_pushfstring(L, "the task's outcome is too large to send (%I bytes)",
                  (lua_Integer)len);
  lua_pushliteral(L, "");
  lf_encode(L, -2, 2, "error", 1, out, opts);
  lua_pop(L, 2);
  return 1;
}

int lf_process_worker_main(int argc, char **argv) {
  /* No worker outlives its host, whatever state it is in (a stopped
  ** process cannot run its watchdog): the kernel kills it when the host's
  ** thread that started it ends. If the host died before this line, the
  ** parent is already another process. */
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (argc > 2 && (long)getppid() != strtol(argv[2], NULL, 10)) _exit(1);
  struct stat st;
  if (fstat(LF_PROC_FD, &st) != 0 || !S_ISSOCK(st.st_mode)) {
    fputs("lua-futures: " LF_WORKER_FLAG " is the worker mode of process "
          "pools; a ProcessPoolExecutor starts it, not a user\n", stderr);
    return 2;
  }
  /* Processes that tasks start must not keep the host's socket open. */
  fcntl(LF_PROC_FD, F_SETFD, FD_CLOEXEC);
  /* The same name in ps and /proc whichever path started us (the pool may
  ** run /proc/self/exe, or a copy named otherwise). */
  prctl(PR_SET_NAME, "lua-futures", 0, 0, 0);
  start_watchdog();   /* blocks every signal in its own thread */
  catch_stop_signal();

  lf_spin_site_init(&input_spin, LF_SPIN_WORKER_NS);
  if (fdq_reserve() != 0) return 1;   /* dies before READY: the host says so */
  /* Big buffers (an encoded outcome) stay in the heap once freed, warm
  ** for the next big task, instead of going back to the system at once
  ** and coming back as fresh pages: this process is ours. An idle worker
  ** trims them (idle_wait). */
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  lf_codec_opts opts = lf_codec_defaults;
  opts.in_process = 0;   /* shared handles cannot leave this process ... */
  opts.share = LF_SHARE_UP;   /* ... but what the host shared goes back */
  rbuf rb = { NULL, 0, 0, 0, 0, 0, 0 };
  input = &rb;
  main_thread = pthread_self();
  lf_squeue_set_transport(&transport);
  lua_State *L = start(&rb, &opts);
  lf_state_keep_blocks(L, 1);
  task_state = L;
  lf_task_heap heap = { 0, 0 };
  int status = 0, swept = 0;
  for (;;) {
    lf_frame fr;
    unsigned char *payload;
    idle_wait(L, &rb, &swept);
    int rc = read_frame(&rb, &fr, &payload);
    if (rc == 0) break;   /* the host asks us to exit */
    if (rc > 0 && control_frame(&fr, payload)) continue;
    unsigned kind = fr.flag & ~LF_FLAG_MEMFD;
    if (rc < 0 || fr.type != LF_FRAME_TASK ||
        (kind != LF_TASK_CALL && kind != LF_TASK_CHUNK)) {
      status = EXIT_PROTOCOL;
      break;
    }
    const unsigned char *call = payload;
    size_t call_len = (size_t)fr.len;
    if (fr.flag & LF_FLAG_MEMFD)
      call = take_region(payload, (size_t)fr.len, &call_len);
    begin_busy();
    lf_buf out = LF_BUF_INIT;
    lf_task_begin(L, &heap);
    atomic_store(&task_stop, LF_STOP_NONE);
    lf_stop_enter(L, &task_stop, 0);   /* the host keeps the run limit */
    atomic_store(&running_id, fr.id);
    stop_if_running(atomic_load(&asked_id));
    int failed;
    if (call != NULL) {
      failed = lf_task_run(L, (lf_taskkind)kind, call, call_len, &out, &opts);
    } else {
      lua_pushliteral(L, "not enough memory to map the task's payload");
      lua_pushliteral(L, "");
      lf_encode(L, -2, 2, "error", 1, &out, &opts);
      lua_pop(L, 2);
      failed = 1;
    }
    atomic_store(&running_id, 0);
    lf_stop_leave(L);
    /* A run limit is the host's to enforce; the heap limit is ours. */
    failed = lf_task_settle(L, failed, LF_STOP_NONE, 0, &out, &opts);
    if (check_size(L, &out, &opts) > 0) failed = 1;
    fflush(stdout);   /* what the task printed comes before its result */
    send_pins(&out);
    size_t big = out.len > LF_BIG_FRAME ? out.len : 0;
    if (!big || send_big_result((unsigned)failed, fr.id, &out) != 0)
      send_frame(LF_FRAME_RESULT, (unsigned)failed, fr.id, out.data, out.len);
    spun_before = 1;
    swept = 0;
    lf_buf_free(&out);
    atomic_store(&busy, 0);
    lf_task_end(L, &heap, failed);
    lf_task_idle(&heap);
    if (big) spare_prepare(big);
  }
  spare_drop();
  region_unmap();
  lf_close_state(L);
  input = NULL;
  free(rb.data);
  return status;
}
