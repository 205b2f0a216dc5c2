/*
** lf_pshare.c — a process pool's per-worker output queue and holdings
** (lf_pshare.h).
**
** Threads: the caller's lock (a pool's mutex) covers everything here.
**
** Ownership: see lf_pshare.h. The descriptors of a SHARE frame are
** duplicates of the arrays' memfds, made when the frame is queued and
** closed once sent, so that a frame waiting for room in the socket never
** depends on an array staying alive.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lf_proto.h"
#include "lf_pshare.h"
#include "lf_sarray.h"

/* ---- output ---- */

static void seg_drop(lf_outq *q, lf_oseg *s) {
  free(s->own);
  for (int i = 0; i < s->nfds; i++) close(s->fds[i]);
  free(s->fds);
  if (s->tag) q->ntagged--;
  memset(s, 0, sizeof *s);
}

/* Room for k more segments. */
static int reserve(lf_outq *q, size_t k) {
  if (q->first > 0 && q->n + k > q->cap) {   /* compact first */
    memmove(q->seg, q->seg + q->first, (q->n - q->first) * sizeof *q->seg);
    q->n -= q->first;
    q->first = 0;
  }
  if (q->n + k <= q->cap) return 0;
  size_t cap = q->cap ? q->cap : 8;
  while (cap < q->n + k) cap *= 2;
  lf_oseg *s = realloc(q->seg, cap * sizeof *s);
  if (s == NULL) return -1;
  q->seg = s;
  q->cap = cap;
  return 0;
}

int lf_outq_push(lf_outq *q, const void *p, size_t len, void *own, int *fds,
                 int nfds, int tag) {
  lf_oseg s = { p, len, own, fds, nfds, tag };
  if (len == 0) {   /* nothing to write, and descriptors need a byte */
    seg_drop(q, &s);
    return 0;
  }
  if (reserve(q, 1) != 0) {
    s.tag = 0;
    seg_drop(q, &s);
    return -1;
  }
  q->seg[q->n++] = s;
  if (tag) q->ntagged++;
  return 0;
}

int lf_outq_frame(lf_outq *q, unsigned type, unsigned flag, uint32_t id,
                  const void *payload, size_t len) {
  unsigned char *b = malloc(LF_PROC_HDR + len);
  if (b == NULL) return -1;
  lf_frame_pack(b, type, flag, id, len);
  if (len > 0) memcpy(b + LF_PROC_HDR, payload, len);
  return lf_outq_push(q, b, LF_PROC_HDR + len, b, NULL, 0, 0);
}

#define FLUSH_IOV 16

int lf_outq_flush(lf_outq *q, int fd) {
  while (q->first < q->n) {
    struct iovec iov[FLUSH_IOV];
    int k = 0;
    lf_oseg *s0 = &q->seg[q->first];
    /* Descriptors go with a sendmsg's first byte: a segment that carries
    ** some starts a sendmsg of its own. */
    for (size_t i = q->first; i < q->n && k < FLUSH_IOV; i++) {
      if (i > q->first && q->seg[i].nfds > 0) break;
      iov[k].iov_base = (void *)q->seg[i].p;
      iov[k].iov_len = q->seg[i].len;
      k++;
    }
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = (size_t)k;
    union {
      char buf[CMSG_SPACE(sizeof(int) * LF_SHARE_MAXFDS)];
      struct cmsghdr align;
    } cm;
    if (s0->nfds > 0) {
      memset(&cm, 0, sizeof cm);
      msg.msg_control = cm.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)s0->nfds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)s0->nfds);
      memcpy(CMSG_DATA(c), s0->fds, sizeof(int) * (size_t)s0->nfds);
    }
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
      return -1;
    }
    if (s0->nfds > 0) {   /* they went with the first byte */
      for (int i = 0; i < s0->nfds; i++) close(s0->fds[i]);
      free(s0->fds);
      s0->fds = NULL;
      s0->nfds = 0;
    }
    size_t left = (size_t)n;
    while (q->first < q->n && left >= q->seg[q->first].len) {
      left -= q->seg[q->first].len;
      seg_drop(q, &q->seg[q->first]);
      q->first++;
    }
    if (q->first < q->n) {
      q->seg[q->first].p += left;
      q->seg[q->first].len -= left;
    }
  }
  q->first = q->n = 0;
  return 0;
}

void lf_outq_clear(lf_outq *q) {
  for (size_t i = q->first; i < q->n; i++) seg_drop(q, &q->seg[i]);
  q->first = q->n = 0;
  q->ntagged = 0;
}

void lf_outq_free(lf_outq *q) {
  lf_outq_clear(q);
  free(q->seg);
  memset(q, 0, sizeof *q);
}

/* ---- holdings ---- */

lf_held *lf_holdings_find(lf_holdings *h, unsigned wire, uint64_t id) {
  for (size_t i = 0; i < h->n; i++)
    if (h->v[i].id == id && h->v[i].ek->wire == wire) return &h->v[i];
  return NULL;
}

static int hold(lf_holdings *h, const lf_export_kind *ek, void *obj,
                uint64_t id) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? 2 * h->cap : 8;
    lf_held *v = realloc(h->v, cap * sizeof *v);
    if (v == NULL) return -1;
    h->v = v;
    h->cap = cap;
  }
  ek->kind->retain(obj);
  h->v[h->n].ek = ek;
  h->v[h->n].obj = obj;
  h->v[h->n].id = id;
  h->n++;
  return 0;
}

/* Drop the entries from n0 on (what a failed call added). */
static void unhold_from(lf_holdings *h, size_t n0) {
  while (h->n > n0) {
    h->n--;
    h->v[h->n].ek->kind->release(h->v[h->n].obj);
  }
}

/* A kind's name as errors show it: the last part of its metatable name. */
static const char *kind_name(const lf_handle_kind *kind) {
  const char *s = strrchr(kind->tname, '.');
  return s ? s + 1 : kind->tname;
}

typedef struct share_frame {
  unsigned char *buf;        /* header and entries */
  int *fds;
  int n;
} share_frame;

int lf_holdings_share(lf_holdings *h, const lf_buf *pins, lf_outq *out,
                      char *err, size_t errlen) {
  size_t n0 = h->n, narrays = 0;
  for (size_t i = 0; i < pins->nhandles; i++) {
    const lf_buf_handle *b = &pins->handles[i];
    if (b->kind == NULL) continue;   /* weakened */
    const lf_export_kind *ek = lf_export_of(b->kind);
    if (ek == NULL) {
      snprintf(err, errlen, "it holds a %s, which cannot leave the process",
               kind_name(b->kind));
      goto fail;
    }
    uint64_t id = ek->export_id(b->obj, LF_SHARE_DOWN);
    if (id == 0) {
      snprintf(err, errlen, ek->wire == LF_SARRAY_WIRE
               ? "it holds a SharedArray made without a memfd, which cannot "
                 "be shared with another process"
               : "it holds a %s that cannot be shared with another process",
               kind_name(b->kind));
      goto fail;
    }
    if (lf_holdings_find(h, ek->wire, id) != NULL) continue;
    if (hold(h, ek, b->obj, id) != 0) goto nomem;
    if (ek->wire == LF_SARRAY_WIRE) narrays++;
  }
  if (narrays == 0) return 0;
  /* The arrays among the new holdings, LF_SHARE_MAXFDS to a frame. */
  size_t nframes = (narrays + LF_SHARE_MAXFDS - 1) / LF_SHARE_MAXFDS;
  share_frame *fr = calloc(nframes, sizeof *fr);
  if (fr == NULL || reserve(out, nframes) != 0) { free(fr); goto nomem; }
  size_t k = 0;
  for (size_t i = n0; i < h->n; i++) {
    if (h->v[i].ek->wire != LF_SARRAY_WIRE) continue;
    share_frame *f = &fr[k / LF_SHARE_MAXFDS];
    if (f->buf == NULL) {
      size_t cnt = narrays - k < LF_SHARE_MAXFDS ? narrays - k
                                                 : LF_SHARE_MAXFDS;
      f->buf = malloc(LF_PROC_HDR + cnt * LF_SHARE_ENTRY);
      f->fds = malloc(cnt * sizeof *f->fds);
      if (f->buf == NULL || f->fds == NULL) goto nomem_frames;
      lf_frame_pack(f->buf, LF_FRAME_SHARE, 0, 0, cnt * LF_SHARE_ENTRY);
    }
    lf_sarray *a = h->v[i].obj;
    int d = fcntl(a->fd, F_DUPFD_CLOEXEC, 3);
    if (d < 0) {
      snprintf(err, errlen, "cannot pass a SharedArray's memfd to a worker "
               "process: %s", strerror(errno));
      goto fail_frames;
    }
    unsigned char *e = f->buf + LF_PROC_HDR + (size_t)f->n * LF_SHARE_ENTRY;
    uint64_t count = a->n;
    memset(e, 0, LF_SHARE_ENTRY);
    e[0] = LF_SARRAY_WIRE;
    e[1] = (unsigned char)a->kind;
    memcpy(e + 8, &h->v[i].id, 8);
    memcpy(e + 16, &count, 8);
    f->fds[f->n++] = d;
    k++;
  }
  for (size_t j = 0; j < nframes; j++)   /* cannot fail: room reserved */
    lf_outq_push(out, fr[j].buf, LF_PROC_HDR + (size_t)fr[j].n * LF_SHARE_ENTRY,
                 fr[j].buf, fr[j].fds, fr[j].n, 0);
  free(fr);
  return 0;

nomem_frames:
  snprintf(err, errlen, "not enough memory");
fail_frames:
  for (size_t j = 0; j < nframes; j++) {
    for (int m = 0; m < fr[j].n; m++) close(fr[j].fds[m]);
    free(fr[j].fds);
    free(fr[j].buf);
  }
  free(fr);
  goto fail;
nomem:
  snprintf(err, errlen, "not enough memory");
fail:
  unhold_from(h, n0);
  return -1;
}

int lf_holdings_pin(lf_holdings *h, const unsigned char *p, size_t len,
                    lf_buf *pins) {
  if (len % LF_ID_ENTRY != 0) return -1;
  size_t n0 = pins->nhandles;
  for (size_t off = 0; off < len; off += LF_ID_ENTRY) {
    unsigned wire;
    uint64_t id;
    lf_id_entry_unpack(p + off, &wire, &id);
    lf_held *e = lf_holdings_find(h, wire, id);
    if (e == NULL) goto fail;
    e->ek->kind->retain(e->obj);
    if (lf_buf_add_handle(pins, e->ek->kind, e->obj) != 0) {
      e->ek->kind->release(e->obj);
      goto fail;
    }
  }
  return 0;
fail:
  while (pins->nhandles > n0) {
    pins->nhandles--;
    lf_buf_handle *b = &pins->handles[pins->nhandles];
    b->kind->release(b->obj);
  }
  return -1;
}

int lf_holdings_forget(lf_holdings *h, const unsigned char *p, size_t len,
                       lf_outq *out) {
  if (len % LF_ID_ENTRY != 0) return -1;
  unsigned char *fb = malloc(len > 0 ? len : 1);
  if (fb == NULL) return 0;   /* the worker keeps them: it asks again */
  size_t nf = 0;
  for (size_t off = 0; off < len; off += LF_ID_ENTRY) {
    unsigned wire;
    uint64_t id;
    lf_id_entry_unpack(p + off, &wire, &id);
    lf_held *e = lf_holdings_find(h, wire, id);
    if (e == NULL) continue;   /* an id it was never given: nothing to do */
    lf_held gone = *e;
    *e = h->v[--h->n];
    memcpy(fb + nf, p + off, LF_ID_ENTRY);
    nf += LF_ID_ENTRY;
    gone.ek->kind->release(gone.obj);
  }
  int rc = 0;
  if (nf > 0 && lf_outq_frame(out, LF_FRAME_FORGET, 0, 0, fb, nf) != 0)
    rc = -1;   /* the worker would go on believing it holds them */
  free(fb);
  return rc;
}

void lf_holdings_clear(lf_holdings *h) {
  unhold_from(h, 0);
  free(h->v);
  memset(h, 0, sizeof *h);
}
