/*
** lf_process_worker.h — `lua-futures --lf-worker` (lf_process_worker.c):
** the worker process of a ProcessPoolExecutor, part of the interpreter
** only. It reads tasks as frames (lf_proto.h) and writes results back.
**
** Threads: called once, from main, before any other thread exists.
*/
#ifndef LF_PROCESS_WORKER_H
#define LF_PROCESS_WORKER_H

#include "lf_proto.h"   /* LF_WORKER_FLAG */

/* Runs the worker loop; returns the process exit status. */
int lf_process_worker_main(int argc, char **argv);

#endif
