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
**          3  flag        TASK: the lf_taskkind; RESULT: 1 if the task failed;
**                         either | LF_FLAG_MEMFD: the payload is in a memfd
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
** Shared objects. Queues and shared arrays travel in the codec as T_REMOTE
** ids (lf_codec.h). Before the host sends a frame that names some (INIT,
** TASK, a QREPLY item), it makes sure the worker holds each: the pool
** records what it shared with which worker, and for a shared array the
** host first sends SHARE, whose SCM_RIGHTS ancillary data carries one
** memfd per entry (the descriptors go with the first byte of the sendmsg
** that starts at or before the SHARE frame; the worker keeps what it
** receives in order and each SHARE entry takes the next). A worker names
** shared objects going up (in a RESULT or a QUEUE put) only among those it
** holds, and lists them first in a PINS frame, so that the host, which
** checks the list, can keep them alive with the frame (its decoding may
** come much later). An idle worker lists in UNUSED what it holds that
** nothing uses any more; the host, if it has sent nothing since (the
** worker is idle on its side too), drops them from the worker's holdings
** and answers FORGET, after which the worker drops them too (a later
** frame naming one comes with a new SHARE).
**
** Queues. In a task, an operation on a queue of the host is one QUEUE
** request from the worker (flag: LF_QOP_*; id: the worker's request
** number; payload: u64 queue id, f64 timeout in seconds, negative for
** none, then for a put the encoded item) and one QREPLY from the host
** (same id; flag: an outcome, LF_QR_*; payload: for a get LF_QITEM_PREFIX
** bytes, u8 1 if the item may hold Lua functions (0: it was put by a
** worker of a pool that refuses them), u8 0, u16 its max_depth (0: the
** default), 4 zero bytes, then the encoded item; a size as u64; or an
** error's text). At most one request is outstanding per worker.
** The host's reader thread serves requests without any Lua state; a get
** on an empty queue (a put on a full one) is parked until an item (room)
** comes, its timeout passes or the queue closes, and the reply is sent
** then.
**
** Frames inside a task. While it waits for a QREPLY, a worker reads and
** handles the host's frames itself: SHARE and FORGET may come then (a
** QREPLY's item may need a SHARE first). So every host-to-worker frame
** that may arrive while a task runs must be handled by the worker's
** control-frame handler (control_frame in lf_process_worker.c), which
** both the idle loop and the reply wait call; a new frame of that kind
** (a task interruption, say) is added there, not only to the idle loop.
**
** Big payloads. A TASK or RESULT payload of more than LF_BIG_FRAME bytes
** travels in a memfd instead of the socket: the frame has LF_FLAG_MEMFD in
** its flag (beside the usual bits), its own payload is LF_MEMFD_DESC bytes
** (u64: the length of the encoded payload, which starts at offset 0 of the
** file), and the memfd goes in the SCM_RIGHTS data of the sendmsg that
** starts with the frame's header (one descriptor, nothing else). A TASK's
** memfd is the region the host encoded the call into (lf_region.h), which
** it reuses for another call only once this task is over (its RESULT
** came, or its worker died); the worker maps it read-only and decodes in
** place, and may keep the mapping for the next big task. A RESULT's memfd is
** the worker's, new for each result and sealed (LF_MEMFD_SEALS) before it
** is sent: the host maps it read-only only once it has checked the seals
** and that the file's size is exactly the length announced, so that what
** it decodes cannot change under it; anything else kills the worker. The
** encoded payload keeps its own header and checksum either way. A side
** that cannot make or map a memfd sends the payload in the socket as
** before: the receiver accepts both.
**
** Both sides run on one machine and binary, so numbers are in native byte
** order. The host treats everything a worker sends as untrusted: headers are
** checked, a payload's memory is allocated as its bytes arrive (at most
** LF_PROC_BIGCHUNK ahead of them), and a frame over LF_PROC_FRAME_MAX
** is a protocol error that kills the worker.
**
** Threads: the helpers below touch only their arguments.
** Ownership: nothing here allocates.
**
** (The entry helpers read and write ids in native order too.)
*/
#ifndef LF_PROTO_H
#define LF_PROTO_H

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#define LF_PROC_FD 3                 /* the worker's end of the socketpair */
#define LF_WORKER_FLAG "--lf-worker" /* argv[1] of a worker process */
#define LF_PROC_PROTO 4u             /* bumped when the frames change */
#define LF_PROC_NOSTR 0xFFFFFFFFu    /* an absent string in INIT */
#define LF_PROC_HDR 16
#define LF_PROC_FRAME_MAX ((uint64_t)1 << 36)   /* 64 GiB */
#define LF_PROC_BIGCHUNK ((size_t)64 << 20)     /* allocate ahead at most */

/* Big payloads (see above). */
#define LF_BIG_FRAME ((size_t)1 << 20)   /* more than this: in a memfd */
#define LF_FLAG_MEMFD 0x80u              /* TASK, RESULT: payload in a memfd */
#define LF_MEMFD_DESC 8                  /* the frame's payload then: u64 */
#define LF_MEMFD_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
/* Descriptors the host takes from one worker read, and keeps waiting for
** their frames, at most: a worker sends one with each big frame. */
#define LF_MEMFD_MAXFDS 4

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
  LF_FRAME_RESULT = 5,
  LF_FRAME_SHARE = 6,    /* host -> worker: entries of LF_SHARE_ENTRY bytes:
                            u8 wire, u8 element kind, 6 zero bytes, u64 id,
                            u64 elements; one descriptor each */
  LF_FRAME_FORGET = 7,   /* host -> worker: LF_ID_ENTRY-byte entries: u8
                            wire, 7 zero bytes, u64 id */
  LF_FRAME_QREPLY = 8,   /* host -> worker: the answer to a QUEUE request */
  LF_FRAME_QUEUE = 9,    /* worker -> host: a queue operation */
  LF_FRAME_PINS = 10,    /* worker -> host: LF_ID_ENTRY entries: the shared
                            objects that the next frame (RESULT or a QUEUE
                            put) names */
  LF_FRAME_UNUSED = 11,  /* worker -> host: LF_ID_ENTRY entries */
  LF_FRAME_LAST = LF_FRAME_UNUSED
};

#define LF_QITEM_PREFIX 8
#define LF_SHARE_ENTRY 24
#define LF_ID_ENTRY 16
#define LF_SHARE_MAXFDS 64     /* descriptors in one SHARE frame at most */

/* QUEUE requests (flag) and QREPLY outcomes (flag). */
enum { LF_QOP_PUT = 1, LF_QOP_GET, LF_QOP_CLOSE, LF_QOP_SIZE };
enum { LF_QR_OK = 0, LF_QR_EMPTY, LF_QR_FULL, LF_QR_CLOSED, LF_QR_ERROR };

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
  if (fr->type < LF_FRAME_INIT || fr->type > LF_FRAME_LAST) return -1;
  if (fr->len > LF_PROC_FRAME_MAX) return -1;
  return 0;
}

/* A (wire, id) entry of FORGET, PINS and UNUSED. */
static inline void lf_id_entry_pack(unsigned char e[LF_ID_ENTRY],
                                    unsigned wire, uint64_t id) {
  memset(e, 0, LF_ID_ENTRY);
  e[0] = (unsigned char)wire;
  memcpy(e + 8, &id, 8);
}

static inline void lf_id_entry_unpack(const unsigned char e[LF_ID_ENTRY],
                                      unsigned *wire, uint64_t *id) {
  *wire = e[0];
  memcpy(id, e + 8, 8);
}

#endif
