/*
** lf_buf.c — byte buffers and the shared-handle kind table (lf_buf.h).
**
** Threads: see lf_buf.h; `kinds_lock` is the only mutex here (it guards
** both tables' appends) and is never held with another.
** Ownership: see lf_buf.h.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "lf_buf.h"

static const lf_handle_kind *kinds[LF_MAX_KINDS];
static atomic_int nkinds;
static const lf_export_kind *exports[LF_MAX_KINDS];
static atomic_int nexports;
static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER;

int lf_kind_count(void) {
  return atomic_load_explicit(&nkinds, memory_order_acquire);
}

const lf_handle_kind *lf_kind_at(int i) { return kinds[i]; }

int lf_kind_register(const lf_handle_kind *kind) {
  int rc = 0;
  if (pthread_mutex_lock(&kinds_lock) != 0) abort();
  int n = atomic_load_explicit(&nkinds, memory_order_relaxed);
  int i = 0;
  while (i < n && kinds[i] != kind) i++;
  if (i == n) {
    if (n == LF_MAX_KINDS) {
      rc = -1;
    } else {
      kinds[n] = kind;
      atomic_store_explicit(&nkinds, n + 1, memory_order_release);
    }
  }
  if (pthread_mutex_unlock(&kinds_lock) != 0) abort();
  return rc;
}

int lf_export_register(const lf_export_kind *ek) {
  if (ek->wire == 0 || lf_kind_register(ek->kind) != 0) return -1;
  int rc = 0;
  if (pthread_mutex_lock(&kinds_lock) != 0) abort();
  int n = atomic_load_explicit(&nexports, memory_order_relaxed);
  int i = 0;
  while (i < n && exports[i] != ek) i++;
  if (i == n) {
    if (n == LF_MAX_KINDS) {
      rc = -1;
    } else {
      exports[n] = ek;
      atomic_store_explicit(&nexports, n + 1, memory_order_release);
    }
  }
  if (pthread_mutex_unlock(&kinds_lock) != 0) abort();
  return rc;
}

const lf_export_kind *lf_export_of(const lf_handle_kind *kind) {
  int n = atomic_load_explicit(&nexports, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (exports[i]->kind == kind) return exports[i];
  return NULL;
}

const lf_export_kind *lf_export_by_wire(unsigned wire) {
  int n = atomic_load_explicit(&nexports, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (exports[i]->wire == wire) return exports[i];
  return NULL;
}

/* splitmix64's finalizer: a bijection of 64-bit integers, so that distinct
** counters give distinct ids. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static _Atomic uint64_t id_next;   /* 0: not seeded yet */

uint64_t lf_share_new_id(void) {
  uint64_t n = atomic_load_explicit(&id_next, memory_order_relaxed);
  if (n == 0) {
    /* Seed once per process; two racing seeders agree on whoever wins. */
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
             ((uint64_t)getpid() << 40);
    }
    seed |= 1;
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&id_next, &zero, seed);
  }
  for (;;) {
    uint64_t id = mix64(atomic_fetch_add_explicit(&id_next, 1,
                                                  memory_order_relaxed));
    if (id != 0) return id;
  }
}

static void unmap_bytes(lf_buf *b) {
  munmap(b->mem_ctx, b->cap);
}

const lf_bufmem lf_bufmem_mapped = { NULL, unmap_bytes };

void lf_buf_free(lf_buf *b) {
  for (size_t i = 0; i < b->nhandles; i++)
    if (b->handles[i].kind != NULL)   /* NULL: weakened */
      b->handles[i].kind->release(b->handles[i].obj);
  free(b->handles);
  if (b->mem != NULL && b->mem_ctx != NULL) b->mem->free(b);
  else free(b->data);
  b->mem = NULL;
  b->mem_ctx = NULL;
  b->data = NULL;
  b->len = b->cap = 0;
  b->handles = NULL;
  b->nhandles = b->hcap = 0;
}

int lf_buf_add_handle(lf_buf *b, const lf_handle_kind *kind, void *obj) {
  if (b->nhandles == b->hcap) {
    size_t ncap = b->hcap ? b->hcap * 2 : 4;
    lf_buf_handle *nh = realloc(b->handles, ncap * sizeof *nh);
    if (nh == NULL) return -1;
    b->handles = nh;
    b->hcap = ncap;
  }
  b->handles[b->nhandles].kind = kind;
  b->handles[b->nhandles].obj = obj;
  b->nhandles++;
  return 0;
}

size_t lf_buf_weaken(lf_buf *b, const void *obj) {
  size_t n = 0;
  for (size_t i = 0; i < b->nhandles; i++) {
    if (b->handles[i].obj != obj || b->handles[i].kind == NULL) continue;
    b->handles[i].kind->release(b->handles[i].obj);
    b->handles[i].kind = NULL;
    n++;
  }
  return n;
}

int lf_buf_detach(lf_buf *b, unsigned char **data, size_t *len) {
  unsigned char *d = NULL;
  if (b->mem_ctx == NULL) {   /* malloc'd: the bytes themselves */
    d = b->data;
    b->data = NULL;
  } else if (b->len > 0) {
    d = malloc(b->len);
    if (d == NULL) return -1;
    memcpy(d, b->data, b->len);
  }
  *data = d;
  *len = d != NULL ? b->len : 0;
  lf_buf_free(b);
  return 0;
}

void lf_buf_shrink(lf_buf *b) {
  if (b->cap - b->len <= 64 || b->len == 0 || b->mem_ctx != NULL) return;
  unsigned char *d = realloc(b->data, b->len);
  if (d != NULL) { b->data = d; b->cap = b->len; }
}
