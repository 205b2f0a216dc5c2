/*
** lf_buf.c — byte buffers and the shared-handle kind table (lf_buf.h).
**
** Threads: see lf_buf.h; `kinds_lock` is the only mutex here and is never
** held with another.
** Ownership: see lf_buf.h.
*/
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "lf_buf.h"

static const lf_handle_kind *kinds[LF_MAX_KINDS];
static atomic_int nkinds;
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

void lf_buf_free(lf_buf *b) {
  for (size_t i = 0; i < b->nhandles; i++)
    if (b->handles[i].kind != NULL)   /* NULL: weakened */
      b->handles[i].kind->release(b->handles[i].obj);
  free(b->handles);
  free(b->data);
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

void lf_buf_shrink(lf_buf *b) {
  if (b->cap - b->len <= 64 || b->len == 0) return;
  unsigned char *d = realloc(b->data, b->len);
  if (d != NULL) { b->data = d; b->cap = b->len; }
}
