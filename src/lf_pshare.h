/*
** lf_pshare.h — what the host side of a process pool keeps per worker
** process to talk to it and share with it (lf_process_pool.c uses both):
** the output queue of bytes still to be written to its socket, with the
** descriptors that go along (SCM_RIGHTS), and the worker's holdings: the
** queues and shared arrays the host shared with it (lf_proto.h, "Shared
** objects").
**
** Threads: a pool calls these with its mutex held; nothing here locks.
**
** Ownership: an output queue owns the segments it was given to own (freed
** once written or dropped) and the descriptors it carries (closed once
** sent or dropped); it borrows the others, which must outlive their write.
** A holdings set holds one reference to each object in it, dropped when
** the worker forgets it or the set is cleared (the worker exited).
*/
#ifndef LF_PSHARE_H
#define LF_PSHARE_H

#include <stddef.h>
#include <stdint.h>

#include "lf_buf.h"

/* ---- output ---- */

typedef struct lf_oseg {
  const unsigned char *p;    /* next byte to write */
  size_t len;                /* bytes left */
  unsigned char *own;        /* freed once written, or NULL: borrowed */
  int *fds;                  /* sent with this segment's first byte */
  int nfds;
  int tag;                   /* the caller's mark (a task frame's bytes) */
} lf_oseg;

typedef struct lf_outq {
  lf_oseg *seg;              /* seg[first .. n) are still to write */
  size_t first, n, cap;
  size_t ntagged;            /* segments with a nonzero tag among them */
} lf_outq;

/* Append a segment. own and fds (a malloc'd array of descriptors) are
** taken even when it fails (-1: out of memory). */
int lf_outq_push(lf_outq *q, const void *p, size_t len, void *own, int *fds,
                 int nfds, int tag);
/* Append a whole frame (header and a copy of its payload), owned. */
int lf_outq_frame(lf_outq *q, unsigned type, unsigned flag, uint32_t id,
                  const void *payload, size_t len);
/* Write what the socket takes without blocking. Returns 0 once all is
** written, 1 when the socket is full, -1 when it is dead. */
int lf_outq_flush(lf_outq *q, int fd);
static inline int lf_outq_pending(const lf_outq *q) { return q->first < q->n; }
/* Drop what is left, and the queue's memory with lf_outq_free. */
void lf_outq_clear(lf_outq *q);
void lf_outq_free(lf_outq *q);

/* ---- holdings ---- */

typedef struct lf_held {
  const lf_export_kind *ek;
  void *obj;                 /* one reference */
  uint64_t id;
} lf_held;

typedef struct lf_holdings {
  lf_held *v;
  size_t n, cap;
} lf_holdings;

/* Make sure the worker holds every shared object that pins names: new
** ones are recorded, and the shared arrays among them announced in a
** SHARE frame queued on out with their descriptors. All or nothing:
** returns 0, or -1 with why in err (a future or an executor, which cannot
** leave the process; an array without a descriptor; no memory or no
** descriptor left) and nothing recorded or queued. */
int lf_holdings_share(lf_holdings *h, const lf_buf *pins, lf_outq *out,
                      char *err, size_t errlen);
/* The object the worker names (wire, id), or NULL if it holds none. */
lf_held *lf_holdings_find(lf_holdings *h, unsigned wire, uint64_t id);
/* A PINS payload: adds a reference to each object it names to *pins.
** Returns 0, or -1 (malformed, or an object the worker does not hold)
** with nothing added. */
int lf_holdings_pin(lf_holdings *h, const unsigned char *p, size_t len,
                    lf_buf *pins);
/* An UNUSED payload: drops what it names from the holdings and queues
** FORGET for those on out. Returns 0, or -1 when malformed. */
int lf_holdings_forget(lf_holdings *h, const unsigned char *p, size_t len,
                       lf_outq *out);
void lf_holdings_clear(lf_holdings *h);

#endif
