/*
** lf_region.c — memfd regions for the big calls of process pools, and
** their cache (lf_region.h).
**
** Threads: any; `region_mu` guards the cache and is never held while
** taking another lock or making a system call that may block for long
** (regions are made, grown and destroyed outside it).
**
** Ownership: see lf_region.h. A region in use belongs to exactly one
** buffer; a cached one to the cache.
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lf_common.h"
#include "lf_region.h"

#define REGION_STEP ((size_t)1 << 20)   /* sizes are multiples of this */
#define REGION_KEEP 4                   /* cached regions at most */

typedef struct region {
  int fd;
  unsigned char *p;          /* mapped read-write, cap bytes */
  size_t cap;
  double freed_at;           /* when it entered the cache */
  struct region *next;       /* in the cache */
} region;

static pthread_mutex_t region_mu = PTHREAD_MUTEX_INITIALIZER;
static region *cache;        /* most recently freed first */
static int ncached;

static void region_destroy(region *r) {
  munmap(r->p, r->cap);
  close(r->fd);
  free(r);
}

/* Make r hold at least n bytes: the file grows, and the mapping with it
** (mremap keeps the pages and their mapping that are there). */
static int region_resize(region *r, size_t n) {
  if (n <= r->cap) return 0;
  if (n > SIZE_MAX - REGION_STEP) return -1;
  size_t cap = (n + REGION_STEP - 1) & ~(REGION_STEP - 1);
  if (ftruncate(r->fd, (off_t)cap) != 0) return -1;
  void *m = mremap(r->p, r->cap, cap, MREMAP_MAYMOVE);
  if (m == MAP_FAILED) return -1;
  r->p = m;
  r->cap = cap;
  return 0;
}

static region *region_new(size_t n) {
  if (n > SIZE_MAX - REGION_STEP) return NULL;
  size_t cap = (n + REGION_STEP - 1) & ~(REGION_STEP - 1);
  region *r = malloc(sizeof *r);
  if (r == NULL) return NULL;
  r->fd = memfd_create("lf-call", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (r->fd < 0) { free(r); return NULL; }
  void *m = MAP_FAILED;
  if (ftruncate(r->fd, (off_t)cap) == 0)
    m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
  /* Workers get this file's descriptor, and a hostile one could shrink
  ** the file under our mapping (our next write into it: SIGBUS) or write
  ** into a call meant for another worker. Sealed, only the mapping made
  ** above can write, and nobody can shrink it; we still grow it. A kernel
  ** without these seals (before Linux 5.1) gets no regions: big calls go
  ** in the socket. */
  if (m != MAP_FAILED &&
      fcntl(r->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE) != 0) {
    munmap(m, cap);
    m = MAP_FAILED;
  }
  if (m == MAP_FAILED) {
    close(r->fd);
    free(r);
    return NULL;
  }
  r->p = m;
  r->cap = cap;
  r->next = NULL;
  return r;
}

/* A region of at least n bytes: the smallest cached one that is large
** enough, else the largest cached one grown, else a new one. NULL when
** none can be had. */
static region *region_take(size_t n) {
  lf_lock(&region_mu);
  region **best = NULL, **big = NULL;
  for (region **pr = &cache; *pr != NULL; pr = &(*pr)->next) {
    if ((*pr)->cap >= n && (best == NULL || (*pr)->cap < (*best)->cap))
      best = pr;
    if (big == NULL || (*pr)->cap > (*big)->cap) big = pr;
  }
  region **pick = best != NULL ? best : big;
  region *r = NULL;
  if (pick != NULL) {
    r = *pick;
    *pick = r->next;
    ncached--;
  }
  lf_unlock(&region_mu);
  if (r != NULL && region_resize(r, n) != 0) {
    region_destroy(r);
    r = NULL;
  }
  return r != NULL ? r : region_new(n);
}

static void region_put(region *r) {
  region *drop = NULL;
  r->freed_at = lf_now();
  lf_lock(&region_mu);
  if (ncached < REGION_KEEP) {
    r->next = cache;
    cache = r;
    ncached++;
  } else {
    drop = r;
  }
  lf_unlock(&region_mu);
  if (drop != NULL) region_destroy(drop);
}

static int region_grow(lf_buf *b, size_t n) {
  region *r = b->mem_ctx;
  if (r == NULL && n <= LF_REGION_MIN) {   /* small: plain memory */
    unsigned char *d = realloc(b->data, n);
    if (d == NULL) return -1;
    b->data = d;
    b->cap = n;
    return 0;
  }
  if (r == NULL) {
    r = region_take(n);
    if (r == NULL) {   /* go on in plain memory: b stays ordinary */
      unsigned char *d = realloc(b->data, n);
      if (d == NULL) return -1;
      b->data = d;
      b->cap = n;
      b->mem = NULL;
      return 0;
    }
    if (b->len > 0) memcpy(r->p, b->data, b->len);
    free(b->data);
    b->mem_ctx = r;
    b->data = r->p;
    b->cap = r->cap;
    return 0;
  }
  if (region_resize(r, n) == 0) {
    b->data = r->p;
    b->cap = r->cap;
    return 0;
  }
  unsigned char *d = malloc(n);   /* the region cannot grow: leave it */
  if (d == NULL) return -1;
  memcpy(d, r->p, b->len);
  region_put(r);
  b->data = d;
  b->cap = n;
  b->mem = NULL;
  b->mem_ctx = NULL;
  return 0;
}

static void region_free(lf_buf *b) { region_put(b->mem_ctx); }

const lf_bufmem lf_region_mem = { region_grow, region_free };

int lf_region_fd(const lf_buf *b) {
  if (b->mem != &lf_region_mem || b->mem_ctx == NULL) return -1;
  return ((const region *)b->mem_ctx)->fd;
}

double lf_region_trim(double hold) {
  double now = lf_now(), next = -1;
  region *gone = NULL;
  lf_lock(&region_mu);
  for (region **pr = &cache; *pr != NULL;) {
    region *r = *pr;
    if (hold <= 0 || now - r->freed_at >= hold) {
      *pr = r->next;
      ncached--;
      r->next = gone;
      gone = r;
    } else {
      double due = r->freed_at + hold - now;
      if (next < 0 || due < next) next = due;
      pr = &r->next;
    }
  }
  lf_unlock(&region_mu);
  while (gone != NULL) {
    region *r = gone;
    gone = r->next;
    region_destroy(r);
  }
  return next;
}
