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

/* Runs an encoded initializer (fn, args...). Returns 0, or -1 with an error
** message pushed on L. */
int lf_task_init(lua_State *L, const unsigned char *call, size_t len,
                   const lf_codec_opts *opts);


#endif
