/*
** lf_process_pool.h — the ProcessPoolExecutor engine (lf_process_pool.c);
** its frames are lf_proto.h, its interpreter search lf_interp.h.
**
** Threads: lf_process_pool_new may be called from any thread.
** Ownership: returns an executor with one reference (the owner's), or NULL
** when out of memory; cfg->init is consumed (left empty) on success.
*/
#ifndef LF_PROCESS_POOL_H
#define LF_PROCESS_POOL_H

#include "lf_executor.h"

lf_executor *lf_process_pool_new(const lf_pool_config *cfg);

#endif
