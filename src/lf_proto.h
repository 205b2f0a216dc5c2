/*
** lf_proto.h — the wire protocol between a ProcessPoolExecutor
** (lf_process_pool.c, in futures.core) and its worker processes
** (lf_process_worker.c, in bin/lua-futures --lf-worker).
**
** A worker is started with one end of an AF_UNIX stream socketpair as file
** descriptor LF_PROC_FD, stdin on /dev/null, stdout and stderr shared with
** the host, and no other descriptor. Both sides then exchange frames: a
** 16-byte header followed by `len` payload bytes.
**
**   offset 0  'L' 'F'     magic
**          2  type        LF_FRAME_*
**          3  flag        TASK: the lf_taskkind; RESULT: 1 if the task failed
**          4  id          u32, native order: the task's number on this worker
**          8  len         u64, native order: payload bytes that follow
**
** Host to worker: INIT first (once), then TASK frames, one at a time: the
** host sends the next task only after the previous one's RESULT arrived (so
** that a queued future stays cancellable until a worker really takes it).
** Worker to host: READY or INIT_FAILED once, then one RESULT per TASK with
** the same id. The host shuts down its writing side to ask an idle worker
** to exit (pool shut down, broken, or max_tasks_per_child reached); a
** worker exits when it reads end-of-file.
**
** INIT payload: u32 LF_PROC_PROTO, then three strings each as u32 length +
** bytes (length LF_PROC_NOSTR for "absent"): the host's LF_VERSION,
** package.path, package.cpath; then u32 n and n u64 settings (LF_INIT_*:
** a worker takes those it knows, in order); the rest is the encoded
** initializer call (fn, args...) or nothing. TASK payload: the encoded call (lf_task.h
** layouts). RESULT payload: the encoded outcome. INIT_FAILED payload: the
** error message as text. READY: empty.
**
** Both sides run on one machine and binary, so numbers are in native byte
** order. The host treats everything a worker sends as untrusted: headers are
** checked, a payload's memory is allocated as its bytes arrive (at most
** LF_PROC_BIGCHUNK ahead of them), and a frame over LF_PROC_FRAME_MAX
** is a protocol error that kills the worker.
**
** Threads: the helpers below touch only their arguments.
** Ownership: nothing here allocates.
*/
#ifndef LF_PROTO_H
#define LF_PROTO_H

#include <signal.h>
#include <stdint.h>
#include <string.h>

#define LF_PROC_FD 3                 /* the worker's end of the socketpair */
#define LF_WORKER_FLAG "--lf-worker" /* argv[1] of a worker process */
#define LF_PROC_PROTO 2u             /* bumped when the frames change */
#define LF_PROC_NOSTR 0xFFFFFFFFu    /* an absent string in INIT */
#define LF_PROC_HDR 16
#define LF_PROC_FRAME_MAX ((uint64_t)1 << 36)   /* 64 GiB */
#define LF_PROC_BIGCHUNK ((size_t)64 << 20)     /* allocate ahead at most */

/* A running task is stopped (f:interrupt(), its run limit) with this
** signal, sent with sigqueue: its value is the task's id, and a worker that
** runs another task by then ignores it. A worker that has not answered
** the task within the pool's grace period is killed. */
#define LF_STOP_SIGNAL SIGUSR1
#define LF_DEFAULT_GRACE 1.0    /* seconds */

/* The settings of INIT, by position. */
enum {
  LF_INIT_MAX_DEPTH,     /* the codec's nesting limit, both ways */
  LF_INIT_MAX_MEMORY,    /* bytes of Lua heap for the worker state, 0: none */
  LF_INIT_NSETTINGS
};

enum {
  LF_FRAME_INIT = 1,     /* host -> worker */
  LF_FRAME_TASK = 2,     /* host -> worker */
  LF_FRAME_READY = 3,    /* worker -> host */
  LF_FRAME_INIT_FAILED = 4,
  LF_FRAME_RESULT = 5
};

typedef struct lf_frame {
  unsigned type, flag;
  uint32_t id;
  uint64_t len;
} lf_frame;

static inline void lf_frame_pack(unsigned char h[LF_PROC_HDR], unsigned type,
                                 unsigned flag, uint32_t id, uint64_t len) {
  h[0] = 'L';
  h[1] = 'F';
  h[2] = (unsigned char)type;
  h[3] = (unsigned char)flag;
  memcpy(h + 4, &id, 4);
  memcpy(h + 8, &len, 8);
}

/* Returns 0, or -1 when the header is not one of ours. */
static inline int lf_frame_unpack(const unsigned char h[LF_PROC_HDR],
                                  lf_frame *fr) {
  if (h[0] != 'L' || h[1] != 'F') return -1;
  fr->type = h[2];
  fr->flag = h[3];
  memcpy(&fr->id, h + 4, 4);
  memcpy(&fr->len, h + 8, 8);
  if (fr->type < LF_FRAME_INIT || fr->type > LF_FRAME_RESULT) return -1;
  if (fr->len > LF_PROC_FRAME_MAX) return -1;
  return 0;
}

#endif
