/*
** lf_thread_pool.h — the ThreadPoolExecutor engine (lf_thread_pool.c).
**
** Threads: lf_thread_pool_new may be called from any thread.
** Ownership: returns an executor with one reference (the owner's), or NULL
** when out of memory; cfg->init is moved into the pool (left empty) on
** success.
*/
#ifndef LF_THREAD_POOL_H
#define LF_THREAD_POOL_H

#include "lf_executor.h"

lf_executor *lf_thread_pool_new(const lf_pool_config *cfg);

#endif
