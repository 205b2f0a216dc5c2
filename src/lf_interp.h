/*
** lf_interp.h — finding the interpreter that process-pool workers run
** (bin/lua-futures, in its --lf-worker mode): the worker option, then
** LUA_FUTURES_WORKER, then this very executable when it is the bundled
** interpreter, then the bin/ beside the lib/lua/5.4/futures/ (or build
** tree) that holds futures.core.
**
** Threads: any thread.
** Ownership: the caller's buffers.
*/
#ifndef LF_INTERP_H
#define LF_INTERP_H

#include <limits.h>
#include <stddef.h>

/* `opt` is the worker option or NULL. On success fills exe (an absolute
** path, for argv[0] and messages) and spawn (what to execute; it may be
** /proc/self/exe) and returns 0. Otherwise writes where it looked into
** err and returns -1. */
int lf_interp_find(const char *opt, char exe[PATH_MAX], char spawn[PATH_MAX],
                   char *err, size_t errsize);

#endif
