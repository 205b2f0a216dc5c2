/*
** lf_codec.h — the transfer codec: Lua values to a self-contained byte
** buffer and back, for every crossing between two lua_States (a thread
** hand-off, a process pipe, futures.serialize).
**
** Threads: every function works on the lua_State it is given and must be
** called by the thread that owns that state. An encoded lf_buf is plain
** memory and may be handed to any thread. The handle-kind table is written
** only by lf_codec_register_kind, which runs from luaopen before any worker
** thread exists, and is read-only afterwards.
**
** Ownership: an lf_buf owns its bytes and one reference to every shared
** handle encoded in it; lf_buf_free releases both. Decoding never consumes
** the buffer: each decoded handle userdata takes a reference of its own, so
** a buffer may be decoded any number of times, in any number of states.
*/
#ifndef LF_CODEC_H
#define LF_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

/* A runtime object (future, executor, queue) that travels between the
** states of one process as a pointer to the same reference-counted C object.
** The userdata of such an object holds exactly one `void *` to it. */
typedef struct lf_handle_kind {
  const char *tname;                    /* its metatable name */
  void (*retain)(void *obj);            /* +1 reference; any thread */
  void (*release)(void *obj);           /* -1 reference; any thread */
  void (*push)(lua_State *L, void *obj);/* push a new userdata for obj that
                                           owns a new reference [-0,+1,m] */
} lf_handle_kind;

#define LF_CODEC_MAX_KINDS 8

/* Register a kind (idempotent for the same pointer). Call from luaopen only.
** Returns 0, or -1 when the table is full. */
int lf_codec_register_kind(const lf_handle_kind *kind);

typedef struct lf_buf_handle {
  const lf_handle_kind *kind;
  void *obj;
} lf_buf_handle;

typedef struct lf_buf {
  unsigned char *data;
  size_t len, cap;
  lf_buf_handle *handles;   /* references owned by this buffer */
  size_t nhandles, hcap;
} lf_buf;

#define LF_BUF_INIT { NULL, 0, 0, NULL, 0, 0 }

/* Free the bytes and release every handle reference; leaves *b empty and
** reusable. Safe on an empty buffer and safe to call twice. Any thread. */
void lf_buf_free(lf_buf *b);

typedef struct lf_codec_opts {
  int max_depth;      /* nesting limit for tables and functions (200) */
  size_t max_size;    /* encoded-size limit in bytes, 0 for none */
  int in_process;     /* encode: shared handles allowed (1) or an error (0);
                         decode: 1 only for a buffer made in this process
                         (a handle is a pointer): with 0 one is an error */
  int functions;      /* decode: Lua and C functions allowed (1) or refused */
} lf_codec_opts;

#define LF_CODEC_DEFAULT_DEPTH 200
#define LF_CODEC_MAX_DEPTH 1000   /* the most max_depth may ask: C stack */
extern const lf_codec_opts lf_codec_defaults;  /* {200, 0, 1, 1} */

/* Encode the n values at stack indices first .. first+n-1 of L into *out
** (which must be empty), with the header. `what` and `base` name the values
** in error messages: value i is "<what> #<base+i>", e.g. "argument #2".
** Returns 0. On failure returns -1 with *out left empty and an error message
** string pushed on L, e.g.
**   cannot transfer argument #2 (field 'conn'.[3]): userdata
** L's stack is otherwise as it was; nothing is leaked. Never raises.
** [-0, +(0|1), -] */
int lf_encode(lua_State *L, int first, int n, const char *what, int base,
              lf_buf *out, const lf_codec_opts *opts);

/* Decode a buffer produced by lf_encode (possibly in another process),
** treating it as untrusted. Pushes the values and returns their count; on
** malformed input returns -1 with an error message pushed. Never raises.
** [-0, +(n|1), -] */
int lf_decode(lua_State *L, const unsigned char *data, size_t len,
              const lf_codec_opts *opts);

/* For tests and the fuzzer: rewrite the length and checksum fields of the
** header of data[0 .. len) so that a modified payload passes the integrity
** checks and reaches the value decoder. Returns 0, or -1 when len is
** shorter than a header. Any thread. */
int lf_codec_reseal(unsigned char *data, size_t len);

#endif
