/*
** lf_sarray.c — shared arrays (lf_sarray.h): memfd-backed memory shared by
** every state of the process and, by descriptor, with worker processes.
**
** Threads: any thread. `imports_mu` guards the imports table of a worker
** process (the arrays its host shared with it) and is never held with
** another lock; an array itself has no lock (see lf_sarray.h).
**
** Ownership: see lf_sarray.h. The memfd is sealed against growing and
** shrinking before anyone else sees it, so that no worker process can
** truncate it under the host's mapping (an access past the end of a file
** mapping is a SIGBUS in whoever touches it).
*/
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lf_buf.h"
#include "lf_common.h"
#include "lf_sarray.h"

static const char *const NAMES[LF_SA_NKINDS] = {
  "f64", "f32", "i64", "i32", "u8"
};
static const size_t SIZES[LF_SA_NKINDS] = { 8, 4, 8, 4, 1 };

size_t lf_sakind_size(lf_sakind kind) { return SIZES[kind]; }
const char *lf_sakind_name(lf_sakind kind) { return NAMES[kind]; }

int lf_sakind_parse(const char *name) {
  for (int k = 0; k < LF_SA_NKINDS; k++)
    if (strcmp(name, NAMES[k]) == 0) return k;
  return -1;
}

/* An empty array of kind and n elements, with no memory yet. */
static lf_sarray *sarray_alloc(lf_sakind kind, size_t n) {
  if (n > SIZE_MAX / 8) { errno = ENOMEM; return NULL; }
  lf_sarray *a = calloc(1, sizeof *a);
  if (a == NULL) return NULL;
  atomic_init(&a->refs, 1);
  a->kind = kind;
  a->n = n;
  a->nbytes = n * SIZES[kind];
  a->fd = -1;
  atomic_init(&a->imported, LF_SA_LOCAL);
  return a;
}

/* A memfd of `size` bytes that nobody can resize, or -1. */
static int sealed_memfd(size_t size) {
  int fd = memfd_create("lua-futures-array", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (ftruncate(fd, (off_t)size) != 0 ||
      fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

lf_sarray *lf_sarray_new(lf_sakind kind, size_t n) {
  lf_sarray *a = sarray_alloc(kind, n);
  if (a == NULL) return NULL;
  a->id = lf_share_new_id();
  /* Without a memfd (none left, or a sandbox that forbids it) the array
  ** still works between threads; only a process pool cannot take it. */
  a->fd = sealed_memfd(a->nbytes);
  if (a->nbytes > 0) {
    void *p = a->fd >= 0
      ? mmap(NULL, a->nbytes, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0)
      : mmap(NULL, a->nbytes, PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      if (a->fd >= 0) close(a->fd);
      free(a);
      errno = e;
      return NULL;
    }
    a->base = p;
    a->maplen = a->nbytes;
  }
  return a;
}

void lf_sarray_retain(lf_sarray *a) {
  atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
}

void lf_sarray_release(lf_sarray *a) {
  if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (a->base != NULL) munmap(a->base, a->maplen);
  if (a->fd >= 0) close(a->fd);
  free(a);
}

/* ---- a worker's imports ---- */

static pthread_mutex_t imports_mu = PTHREAD_MUTEX_INITIALIZER;
static lf_sarray **imports;     /* each holds one reference */
static size_t nimports, capimports;

static size_t find_locked(uint64_t id) {
  size_t i = 0;
  while (i < nimports && imports[i]->id != id) i++;
  return i;
}

int lf_sarray_import(uint64_t id, lf_sakind kind, size_t n, int fd) {
  lf_lock(&imports_mu);
  int known = find_locked(id) < nimports;
  lf_unlock(&imports_mu);
  if (known) { close(fd); return 0; }
  lf_sarray *a = (unsigned)kind < LF_SA_NKINDS ? sarray_alloc(kind, n) : NULL;
  struct stat st;
  if (a == NULL || fstat(fd, &st) != 0 || (uint64_t)st.st_size < a->nbytes) {
    /* A descriptor shorter than the array would fault on access. */
    int e = a == NULL ? errno : EINVAL;
    free(a);
    close(fd);
    errno = e;
    return -1;
  }
  a->id = id;
  atomic_store(&a->imported, LF_SA_IMPORTED);
  if (a->nbytes > 0) {
    void *p = mmap(NULL, a->nbytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      free(a);
      close(fd);
      errno = e;
      return -1;
    }
    a->base = p;
    a->maplen = a->nbytes;
  }
  close(fd);   /* the mapping keeps the memory; the host has the memfd */
  lf_lock(&imports_mu);
  if (nimports == capimports) {
    size_t cap = capimports ? 2 * capimports : 8;
    lf_sarray **t = realloc(imports, cap * sizeof *t);
    if (t == NULL) {
      lf_unlock(&imports_mu);
      lf_sarray_release(a);
      errno = ENOMEM;
      return -1;
    }
    imports = t;
    capimports = cap;
  }
  imports[nimports++] = a;
  lf_unlock(&imports_mu);
  return 0;
}

lf_sarray *lf_sarray_find_import(uint64_t id) {
  lf_sarray *a = NULL;
  lf_lock(&imports_mu);
  size_t i = find_locked(id);
  if (i < nimports) {
    a = imports[i];
    lf_sarray_retain(a);
  }
  lf_unlock(&imports_mu);
  return a;
}

size_t lf_sarray_unused(uint64_t *ids, size_t max) {
  size_t k = 0;
  lf_lock(&imports_mu);
  for (size_t i = 0; i < nimports && k < max; i++)
    if (atomic_load_explicit(&imports[i]->refs, memory_order_acquire) == 1)
      ids[k++] = imports[i]->id;
  lf_unlock(&imports_mu);
  return k;
}

void lf_sarray_forget(uint64_t id) {
  lf_sarray *a = NULL;
  lf_lock(&imports_mu);
  size_t i = find_locked(id);
  if (i < nimports) {
    a = imports[i];
    imports[i] = imports[--nimports];
    atomic_store(&a->imported, LF_SA_FORGOTTEN);
  }
  lf_unlock(&imports_mu);
  if (a != NULL) lf_sarray_release(a);
}

size_t lf_sarray_nimports(void) {
  lf_lock(&imports_mu);
  size_t n = nimports;
  lf_unlock(&imports_mu);
  return n;
}
