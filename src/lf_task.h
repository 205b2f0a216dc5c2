/*
** lf_task.h — running a task inside a worker's own lua_State: decode the
** call, run it under lua_pcall with a traceback, encode what it returned or
** raised. Thread workers and process workers both use it.
**
** Threads: called by the thread that owns L (a worker thread, or a worker
** process's main thread).
** Ownership: the caller owns `out` (an empty lf_buf on entry) and frees it.
*/
#ifndef LF_TASK_H
#define LF_TASK_H

#include "lua.h"
#include "lf_codec.h"
#include "lf_future.h"

/* Encoded layouts.
**   LF_TASK_CALL  call: fn, args...      result: values... (or err, traceback)
**   LF_TASK_CHUNK call: fn, m, a1..am, b1..bm, ...   (k items of m args)
**                 result: one table: for each item: ok, n, v1..vn
**                 (a failed item is false, 2, err, traceback)
*/

/* Runs one task. Returns 0 when it succeeded, 1 when it failed (then *out
** holds the error value and the traceback). Never raises; L's stack is left
** as it was. */
int lf_task_run(lua_State *L, lf_taskkind kind, const unsigned char *call,
                  size_t len, lf_buf *out, const lf_codec_opts *opts);

/* What a worker's state held around its last task, so that the garbage of
** a task that failed or grew the heap a lot does not stay in an idle
** worker (and in the C allocator's arenas, where the host could not use
** it). */
typedef struct lf_task_heap {
  size_t before;     /* heap at the start of the task */
  int trim;          /* pages to give back once idle */
} lf_task_heap;

#define LF_TASK_GROWTH ((size_t)16 << 20)   /* collect after this much */
#define LF_TASK_TRIM ((size_t)64 << 20)     /* trim after freeing this */

/* Around each task: lf_task_begin before it, lf_task_end after it
** (collects the state when the task failed or grew the heap by more than
** LF_TASK_GROWTH), lf_task_idle when the worker is about to wait for
** work (gives freed pages back to the system). */
void lf_task_begin(lua_State *L, lf_task_heap *h);
void lf_task_end(lua_State *L, lf_task_heap *h, int failed);
void lf_task_idle(lf_task_heap *h);

/* After lf_task_run (which returned `failed`): the outcome of a task that
** was stopped for its run limit (why == LF_STOP_TIMEOUT) becomes a
** TimeoutError naming the limit, and that of a task that failed on its
** state's heap limit says so ("not enough memory: the task went over its
** worker's limit of N bytes (max_memory)"), after a collection. Returns
** whether the task failed. */
int lf_task_settle(lua_State *L, int failed, int why, double limit,
                   lf_buf *out, const lf_codec_opts *opts);

/* Runs an encoded initializer (fn, args...). Returns 0, or -1 with an error
** message pushed on L. */
int lf_task_init(lua_State *L, const unsigned char *call, size_t len,
                   const lf_codec_opts *opts);


#endif
