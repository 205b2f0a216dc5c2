/*
** lf_region.h — memfd-backed bytes for the big calls of process pools. A
** call whose encoding grows past LF_REGION_MIN bytes moves into a
** *region*, a memfd mapped read-write in this process, so that the pool
** can hand the region's descriptor to a worker instead of copying the
** call into a socket (lf_proto.h, "Big payloads"). Regions are reused: a
** freed one waits in a small cache, its pages still allocated and mapped,
** for the next big call (fresh pages cost a page fault per 4 KiB, several
** times the price of writing them on a virtual machine), and goes back to
** the system once unused for a while (lf_region_trim).
**
** A region is sealed against shrinking and against any writer but the
** mapping made here (F_SEAL_SHRINK | F_SEAL_FUTURE_WRITE): the workers that
** get its descriptor can neither fault our writes nor change a call.
**
** Threads: any. The cache is guarded by `region_mu`, a leaf lock (taken
** by whoever frees a buffer, possibly under a pool's or a future's mutex;
** it takes nothing else).
**
** Ownership: a buffer whose mem is &lf_region_mem owns its bytes: malloc'd
** while small (mem_ctx NULL), else one region (mem_ctx), which lf_buf_free
** returns to the cache. The cache owns the regions in it. A region's
** descriptor stays the region's: whoever sends it sends a duplicate.
*/
#ifndef LF_REGION_H
#define LF_REGION_H

#include "lf_buf.h"

#define LF_REGION_MIN ((size_t)1 << 20)   /* smaller bytes stay malloc'd */

/* Set as lf_codec_opts.mem: an encoding grows in malloc'd memory up to
** LF_REGION_MIN, then in a region. When no region can be had (no memory or
** descriptor left) it goes on in malloc'd memory: nothing fails for it. */
extern const lf_bufmem lf_region_mem;

/* The descriptor of b's region, or -1 when b's bytes are not in one. */
int lf_region_fd(const lf_buf *b);

/* Give back the cached regions unused for `hold` seconds or more (0: all).
** Returns the seconds until the next one is due, or -1 when none waits. */
double lf_region_trim(double hold);

#endif
