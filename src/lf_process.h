/*
** lf_process.h — the process pool's entry point inside bin/lua-futures:
** `lua-futures --lf-worker ...` runs a worker process that reads tasks as
** codec frames and writes results back (see lf_process_pool.c).
**
** Threads: called once, from main, before any other thread exists.
*/
#ifndef LF_PROCESS_H
#define LF_PROCESS_H

#define LF_WORKER_FLAG "--lf-worker"

/* Runs the worker loop; returns the process exit status. */
int lf_process_worker_main(int argc, char **argv);

#endif
