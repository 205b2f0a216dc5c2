/*
** lf_thread_pool.h — creating a ThreadPoolExecutor (lf_thread_pool.c).
**
** Threads: lf_thread_pool_new may be called from any thread.
** Ownership: returns an executor with one reference (the owner's); `init`
** is moved into the pool (left empty) on success.
*/
#ifndef LF_THREAD_POOL_H
#define LF_THREAD_POOL_H

#include "lf_executor.h"

lf_executor *lf_thread_pool_new(int max_workers, const char *name,
                                 lf_buf *init, const char *path,
                                 const char *cpath);

#endif
