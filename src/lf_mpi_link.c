/*
** lf_mpi_link.c — frames over an MPI communicator (lf_mpi.h): every frame
** one message when it fits LF_MPI_SMALL, else a head (LF_MPI_TAG) and a
** body (LF_MPI_TAG_BODY) received straight into a buffer of its size. One
** receive of LF_MPI_TAG from any peer is always posted, so that a message
** is taken as soon as MPI_Test runs (ob1's MPI_Iprobe reports a message
** only at the call after the one that received it); bodies get receives of
** their own, from their peer. A peer's frames are delivered in the order
** they were sent: while a body of that peer arrives, its later frames wait
** in the peer's queue.
**
** Threads: the MPI thread only (every MPI call of the process is its).
** Ownership: the link owns its receive buffer, the buffers of sends in
** flight (freed when MPI says they are done) and the frames waiting in the
** peers' queues; a delivered frame's `data` is the handler's to take
** (set it NULL), else freed after the handler returns.
*/
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lf_common.h"
#include "lf_mpi.h"

_Static_assert(sizeof(lf_mpi_head) == 40, "lf_mpi_head is 40 bytes");

typedef struct inq_item {
  lf_mpi_msg m;
  MPI_Request req;            /* the body arriving, or MPI_REQUEST_NULL */
  struct inq_item *next;
} inq_item;

struct lf_mpi_inq { inq_item *head, *tail; };

void lf_mpi_link_fail(lf_mpi_link *k, const char *what, int rc) {
  if (k->error[0] != '\0') return;   /* the first error is the cause */
  char text[MPI_MAX_ERROR_STRING] = "";
  int n = 0;
  if (rc != MPI_SUCCESS) MPI_Error_string(rc, text, &n);
  snprintf(k->error, sizeof k->error, "%s%s%s", what, n > 0 ? ": " : "",
           text);
}

static int post_receive(lf_mpi_link *k) {
  int rc = MPI_Irecv(k->rbuf, (int)LF_MPI_SMALL, MPI_BYTE, MPI_ANY_SOURCE,
                     LF_MPI_TAG, k->comm, &k->rreq);
  if (rc != MPI_SUCCESS) {
    lf_mpi_link_fail(k, "MPI_Irecv failed", rc);
    return -1;
  }
  return 0;
}

int lf_mpi_link_open(lf_mpi_link *k, MPI_Comm comm) {
  memset(k, 0, sizeof *k);
  k->comm = comm;
  k->rreq = MPI_REQUEST_NULL;
  MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  MPI_Comm_size(comm, &k->size);
  k->rbuf = malloc(LF_MPI_SMALL);
  k->inq = calloc((size_t)k->size, sizeof *k->inq);
  if (k->rbuf == NULL || k->inq == NULL) {
    snprintf(k->error, sizeof k->error, "not enough memory");
    free(k->rbuf);
    free(k->inq);
    k->rbuf = NULL;
    k->inq = NULL;
    return -1;
  }
  return post_receive(k);
}

/* One message of `n` bytes from buf (taken: freed when sent, or now). */
static int post_send(lf_mpi_link *k, int dest, int tag, unsigned char *buf,
                     size_t n) {
  if (k->nsend == k->capsend) {
    int cap = k->capsend ? 2 * k->capsend : 16;
    MPI_Request *r = realloc(k->sreq, (size_t)cap * sizeof *r);
    if (r != NULL) k->sreq = r;
    unsigned char **b = realloc(k->sbuf, (size_t)cap * sizeof *b);
    if (b != NULL) k->sbuf = b;
    int *d = realloc(k->sdone, (size_t)cap * sizeof *d);
    if (d != NULL) k->sdone = d;
    if (r == NULL || b == NULL || d == NULL) { free(buf); return -1; }
    k->capsend = cap;
  }
  int rc = MPI_Isend(buf, (int)n, MPI_BYTE, dest, tag, k->comm,
                     &k->sreq[k->nsend]);
  if (rc != MPI_SUCCESS) {
    free(buf);
    lf_mpi_link_fail(k, "MPI_Isend failed", rc);
    return -1;
  }
  k->sbuf[k->nsend++] = buf;
  return 0;
}

int lf_mpi_link_send(lf_mpi_link *k, int dest, const lf_mpi_head *head,
                     unsigned char *body, size_t len) {
  lf_mpi_head h = *head;
  h.magic = LF_MPI_MAGIC;
  h.proto = LF_MPI_PROTO;
  h.big = 0;
  h.len = 0;
  if (len <= LF_MPI_SMALL - LF_MPI_HEAD) {   /* one message: body, head */
    unsigned char *b = realloc(body, len + LF_MPI_HEAD);
    if (b == NULL) { free(body); return -1; }
    memcpy(b + len, &h, LF_MPI_HEAD);
    return post_send(k, dest, LF_MPI_TAG, b, len + LF_MPI_HEAD);
  }
  if (len > INT_MAX) { free(body); return -1; }   /* callers check first */
  h.big = 1;
  h.len = len;
  unsigned char *hb = malloc(LF_MPI_HEAD);
  if (hb == NULL) { free(body); return -1; }
  memcpy(hb, &h, LF_MPI_HEAD);
  if (post_send(k, dest, LF_MPI_TAG, hb, LF_MPI_HEAD) != 0) {
    free(body);
    return -1;
  }
  return post_send(k, dest, LF_MPI_TAG_BODY, body, len);
}

static void queue_item(lf_mpi_link *k, int src, inq_item *it) {
  lf_mpi_inq *q = k->inq[src];
  it->next = NULL;
  if (q->tail) q->tail->next = it; else q->head = it;
  q->tail = it;
}

static void deliver(lf_mpi_msg *m, lf_mpi_deliver fn, void *ud) {
  fn(ud, m);
  free(m->data);
  m->data = NULL;
}

/* The frame that just arrived in rbuf (count bytes from src): deliver it,
** queue it behind its peer's earlier frames, or start receiving its body.
** Returns 0 or -1. */
static int take_frame(lf_mpi_link *k, int src, int count, lf_mpi_deliver fn,
                      void *ud) {
  lf_mpi_head h;
  if (count < (int)LF_MPI_HEAD || src < 0 || src >= k->size) {
    snprintf(k->error, sizeof k->error, "a malformed frame from rank %d "
             "(%d bytes)", src, count);
    return -1;
  }
  memcpy(&h, k->rbuf + count - LF_MPI_HEAD, LF_MPI_HEAD);
  if (h.magic != LF_MPI_MAGIC || h.proto != LF_MPI_PROTO ||
      h.type < LF_MPI_HELLO || h.type > LF_MPI_LAST ||
      (h.big && (count != (int)LF_MPI_HEAD || h.len > INT_MAX))) {
    snprintf(k->error, sizeof k->error, "a malformed frame from rank %d "
             "(not lua-futures %d of this build)", src, LF_MPI_PROTO);
    return -1;
  }
  lf_mpi_msg m = { h, src, NULL, 0 };
  if (!h.big) {
    m.len = (size_t)count - LF_MPI_HEAD;
    if (m.len > 0) {
      m.data = malloc(m.len);
      if (m.data == NULL) goto nomem;
      memcpy(m.data, k->rbuf, m.len);
    }
    if (k->inq[src] == NULL || k->inq[src]->head == NULL) {
      deliver(&m, fn, ud);
      return 0;
    }
  } else {
    m.len = (size_t)h.len;
    m.data = malloc(m.len > 0 ? m.len : 1);
    if (m.data == NULL) goto nomem;
  }
  if (k->inq[src] == NULL && (k->inq[src] = calloc(1, sizeof(lf_mpi_inq))) == NULL) {
    free(m.data);
    goto nomem;
  }
  inq_item *it = malloc(sizeof *it);
  if (it == NULL) { free(m.data); goto nomem; }
  it->m = m;
  it->req = MPI_REQUEST_NULL;
  if (h.big) {
    int rc = MPI_Irecv(m.data, (int)m.len, MPI_BYTE, src, LF_MPI_TAG_BODY,
                       k->comm, &it->req);
    if (rc != MPI_SUCCESS) {
      free(m.data);
      free(it);
      lf_mpi_link_fail(k, "MPI_Irecv failed", rc);
      return -1;
    }
    k->nbodies++;
  }
  queue_item(k, src, it);
  return 0;
nomem:
  snprintf(k->error, sizeof k->error, "not enough memory for a frame of %zu "
           "bytes from rank %d", (size_t)(h.big ? h.len : (uint64_t)count),
           src);
  return -1;
}

/* Deliver the frames at the head of src's queue that are whole. */
static int drain_peer(lf_mpi_link *k, int src, lf_mpi_deliver fn, void *ud) {
  lf_mpi_inq *q = k->inq[src];
  int n = 0;
  while (q->head != NULL) {
    inq_item *it = q->head;
    if (it->req != MPI_REQUEST_NULL) {
      int flag = 0;
      int rc = MPI_Test(&it->req, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        lf_mpi_link_fail(k, "MPI_Test failed", rc);
        return -1;
      }
      if (!flag) break;
      k->nbodies--;
    }
    q->head = it->next;
    if (q->head == NULL) q->tail = NULL;
    deliver(&it->m, fn, ud);
    free(it);
    n++;
  }
  return n;
}

int lf_mpi_link_poll(lf_mpi_link *k, lf_mpi_deliver fn, void *ud) {
  if (k->error[0] != '\0') return -1;
  int events = 0;
  for (;;) {
    int flag = 0;
    MPI_Status st;
    int rc = MPI_Test(&k->rreq, &flag, &st);
    if (rc != MPI_SUCCESS) {
      lf_mpi_link_fail(k, "MPI_Test failed", rc);
      return -1;
    }
    if (!flag) break;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    if (take_frame(k, st.MPI_SOURCE, count, fn, ud) != 0) return -1;
    if (post_receive(k) != 0) return -1;
    events++;
  }
  for (int src = 0; src < k->size; src++) {
    if (k->inq[src] == NULL || k->inq[src]->head == NULL) continue;
    int n = drain_peer(k, src, fn, ud);
    if (n < 0) return -1;
    events += n;
  }
  if (k->nsend > 0) {
    int done = 0;
    int rc = MPI_Testsome(k->nsend, k->sreq, &done, k->sdone,
                          MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      lf_mpi_link_fail(k, "MPI_Testsome failed", rc);
      return -1;
    }
    if (done > 0 && done != MPI_UNDEFINED) {
      for (int i = 0; i < done; i++) {
        free(k->sbuf[k->sdone[i]]);
        k->sbuf[k->sdone[i]] = NULL;
      }
      int j = 0;
      for (int i = 0; i < k->nsend; i++) {
        if (k->sbuf[i] == NULL) continue;
        k->sreq[j] = k->sreq[i];
        k->sbuf[j++] = k->sbuf[i];
      }
      k->nsend = j;
    }
  }
  return events;
}

static void ignore_frame(void *ud, lf_mpi_msg *m) {
  (void)ud;
  (void)m;
}

void lf_mpi_link_close(lf_mpi_link *k, double seconds) {
  if (k->rbuf == NULL) return;
  double until = MPI_Wtime() + seconds;
  while (k->nsend > 0 && k->error[0] == '\0' && MPI_Wtime() < until) {
    if (lf_mpi_link_poll(k, ignore_frame, NULL) == 0)
      lf_mpi_sleep(-1, LF_MPI_NAP_MIN);
  }
  if (k->error[0] == '\0' && k->rreq != MPI_REQUEST_NULL) {
    MPI_Cancel(&k->rreq);
    MPI_Wait(&k->rreq, MPI_STATUS_IGNORE);
  }
  for (int src = 0; src < k->size; src++) {
    lf_mpi_inq *q = k->inq[src];
    if (q == NULL) continue;
    while (q->head != NULL) {
      inq_item *it = q->head;
      q->head = it->next;
      if (it->req != MPI_REQUEST_NULL && k->error[0] == '\0') {
        MPI_Cancel(&it->req);
        MPI_Wait(&it->req, MPI_STATUS_IGNORE);
      }
      free(it->m.data);
      free(it);
    }
    free(q);
  }
  /* Sends MPI never finished (a peer gone) keep their buffers: MPI may
  ** still read them. */
  free(k->inq);
  free(k->rbuf);
  free(k->sreq);
  free(k->sdone);
  free(k->sbuf);
  k->rbuf = NULL;
}

/* ---- payloads ---- */

int lf_mpi_out_add(lf_mpi_out *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    unsigned char *d = realloc(b->data, cap);
    if (d == NULL) {
      free(b->data);
      memset(b, 0, sizeof *b);
      return -1;
    }
    b->data = d;
    b->cap = cap;
  }
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int lf_mpi_out_str(lf_mpi_out *b, const char *s) {
  uint32_t n = s ? (uint32_t)strlen(s) : LF_MPI_NOSTR;
  if (lf_mpi_out_add(b, &n, 4) != 0) return -1;
  return s ? lf_mpi_out_add(b, s, n) : 0;
}

/* ---- waiting ---- */

void lf_mpi_spin_saw(lf_mpi_spin *s, double gap) {
  if (gap < LF_MPI_SPIN_MIN) return;   /* a burst, not a wait */
  double b = 1.5 * gap;
  if (gap > LF_MPI_SPIN_MAX || b < s->budget / 2) b = s->budget / 2;
  if (b < LF_MPI_SPIN_MIN) b = LF_MPI_SPIN_MIN;
  if (b > LF_MPI_SPIN_MAX) b = LF_MPI_SPIN_MAX;
  s->budget = b;
}

int lf_mpi_spin_on(const lf_mpi_spin *s, double quiet) {
  if (quiet >= s->budget) return 0;
  for (int i = 0; i < 64; i++) lf_cpu_relax();
  return 1;
}

double lf_mpi_nap(double quiet) {
  double t = quiet / 8;
  if (t < LF_MPI_NAP_MIN) t = LF_MPI_NAP_MIN;
  if (t > LF_MPI_NAP_MAX) t = LF_MPI_NAP_MAX;
  return t;
}

void lf_mpi_sleep(int fd, double seconds) {
  struct pollfd p = { fd, POLLIN, 0 };
  struct timespec ts, *tp = NULL;
  if (seconds >= 0) {
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    tp = &ts;
  }
  int rc = ppoll(&p, fd >= 0 ? 1 : 0, tp, NULL);
  (void)rc;   /* EINTR or a wake-up: the loop looks again either way */
}
