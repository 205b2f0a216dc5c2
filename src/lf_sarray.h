/*
** lf_sarray.h — shared arrays: fixed-size arrays of numbers (f64, f32, i64,
** i32, u8) in memory outside every Lua heap. The memory is a mapping of a
** memfd, so the same bytes are in every state of this process that holds
** the array and, mapped again from the descriptor, in every worker process
** it is passed to (lf_process_pool.c sends the descriptor with SCM_RIGHTS;
** the worker registers the mapping here with lf_sarray_import).
**
** Threads: every function may be called from any thread. An array's
** fields are immutable once made, apart from its reference count (atomic)
** and its elements, which are the user's to synchronise (the Lua face
** reads and writes them with relaxed atomics, add is an atomic
** read-modify-write). The imports table of a worker process is guarded by
** its own mutex, `imports_mu`, never held with another lock.
**
** Ownership: lf_sarray_new returns an array with one reference. Every Lua
** userdata, every encoded buffer that names it (its pins), a process pool
** for each worker it was shared with, and a worker's imports table hold
** one reference each; the last release unmaps the memory and closes the
** descriptor. A worker's imported arrays are released when the host says
** it needs them no more (lf_sarray_forget) or when the process exits.
*/
#ifndef LF_SARRAY_H
#define LF_SARRAY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef enum lf_sakind {
  LF_SA_F64, LF_SA_F32, LF_SA_I64, LF_SA_I32, LF_SA_U8, LF_SA_NKINDS
} lf_sakind;

enum { LF_SA_LOCAL, LF_SA_IMPORTED, LF_SA_FORGOTTEN };

#define LF_SARRAY_WIRE 'A'     /* its code in T_REMOTE */
#define LF_SARRAY_MT "futures.SharedArray"

typedef struct lf_sarray {
  atomic_int refs;
  lf_sakind kind;
  size_t n;                  /* elements */
  size_t nbytes;             /* n * element size */
  unsigned char *base;       /* the mapping (NULL when n == 0) */
  size_t maplen;             /* bytes mapped */
  int fd;                    /* the sealed memfd, or -1: an anonymous
                                mapping (memfd_create failed) or an
                                imported array, which needs none */
  atomic_int imported;       /* LF_SA_LOCAL, or shared with this worker
                                process by its host (LF_SA_IMPORTED), until
                                the host said it needs it no more
                                (LF_SA_FORGOTTEN: it may not go back up) */
  uint64_t id;               /* lf_share_new_id, or the host's id */
} lf_sarray;

/* Element size in bytes, name ("f64"), and the kind of a name (-1 if
** none). */
size_t lf_sakind_size(lf_sakind kind);
const char *lf_sakind_name(lf_sakind kind);
int lf_sakind_parse(const char *name);

/* A zero-filled array of n elements. Returns NULL with errno set (ENOMEM,
** EMFILE...) when it cannot be made. */
lf_sarray *lf_sarray_new(lf_sakind kind, size_t n);
void lf_sarray_retain(lf_sarray *a);
void lf_sarray_release(lf_sarray *a);

/* Worker side. lf_sarray_import maps the descriptor fd (taken: closed here
** in every case) as the array `id` of n elements of kind that the host
** shared with this process; an id already imported keeps its mapping.
** Returns 0, or -1 with errno set. lf_sarray_find_import returns the
** imported array (a new reference) or NULL. lf_sarray_unused lists up to
** max ids of imports that nothing but the table holds; lf_sarray_forget
** drops the table's reference to one. */
int lf_sarray_import(uint64_t id, lf_sakind kind, size_t n, int fd);
lf_sarray *lf_sarray_find_import(uint64_t id);
size_t lf_sarray_unused(uint64_t *ids, size_t max);
void lf_sarray_forget(uint64_t id);
size_t lf_sarray_nimports(void);

#endif
