/*
** lf_codec.h — the transfer codec: Lua values to a self-contained byte
** buffer and back, for every crossing between two lua_States (a thread
** hand-off, a process socket, futures.serialize). The encoder is
** lf_encode.c, the decoder lf_decode.c, the format they share lf_wire.h,
** and the name index of package.loaded lf_names.c.
**
** Threads: lf_encode and lf_decode work on the lua_State they are given and
** must be called by the thread that owns that state. An encoded lf_buf is
** plain memory and may be handed to any thread.
**
** Ownership: lf_encode writes into the caller's lf_buf, which then owns the
** bytes and one reference per shared handle encoded in it, and per string
** lent (LF_CODEC_LEND). Decoding never consumes the buffer: each decoded
** handle userdata takes a reference of its own and each lent string is
** copied, so a buffer may be decoded any number of times, in any number of
** states, as long as it exists: a buffer with handles or loans must not be
** freed before its last decode ends.
*/
#ifndef LF_CODEC_H
#define LF_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"
#include "lf_buf.h"

typedef struct lf_codec_opts {
  int max_depth;      /* nesting limit for tables and functions (200) */
  size_t max_size;    /* encoded-size limit in bytes, 0 for none */
  int in_process;     /* encode: shared handles allowed (1) or an error (0);
                         LF_CODEC_LEND: as 1, and strings of LF_LEND_MIN
                         bytes or more lent by reference (lf_lend.h);
                         decode: non-zero only for a buffer made in this
                         process (a handle or a loan is a pointer): with 0
                         one is an error */
  int functions;      /* decode: Lua functions (bytecode) allowed, and
                         names of modules not yet loaded required (1); or
                         Lua functions refused and names resolved only
                         among the modules already loaded (0) */
  int share;          /* encode with in_process 0: objects of export kinds
                         travel by id toward a process pool's workers
                         (LF_SHARE_DOWN) or back to the host (LF_SHARE_UP);
                         LF_SHARE_NONE: an error like any shared handle */
  const lf_buf *pins; /* decode: the buffer whose handle references are the
                         objects its T_REMOTE ids name (one made in this
                         process, or whose ids the pool checked); NULL: ids
                         name what the host shared with this process */
  const lf_bufmem *mem;  /* encode: where the output's bytes come from as
                         it grows (out->mem); NULL: malloc */
} lf_codec_opts;

/* in_process for a buffer that is decoded only while it exists, in this
** process: a thread pool's calls and outcomes. */
#define LF_CODEC_LEND 2

#define LF_CODEC_DEFAULT_DEPTH 200
#define LF_CODEC_MAX_DEPTH 1000   /* the most max_depth may ask: C stack */
#define LF_CODEC_MAX_VALUES 100000  /* values in one buffer, both ways */
extern const lf_codec_opts lf_codec_defaults;  /* {200, 0, 1, 1, 0, NULL, NULL} */

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

/* The fast path of one plain value (nil, a boolean, a number, a string),
** the most common queue item: encodes the value at idx into *out (which
** must be empty) exactly as lf_encode would, without entering Lua, and
** returns 0; returns 1 for any other value (then call lf_encode), -1 when
** out of memory. [-0, +0, -] */
int lf_encode_plain(lua_State *L, int idx, lf_buf *out);

/* The same from C: the plain value of Lua type `type` (LUA_TNIL,
** LUA_TBOOLEAN with i 0 or 1, LUA_TNUMBER as integer i when isint, else
** float f, LUA_TSTRING as s[0 .. len)). Returns 0, or -1 when out of
** memory. Any thread. */
int lf_encode_scalar(int type, int isint, lua_Integer i, lua_Number f,
                     const char *s, size_t len, lf_buf *out);

/* Its counterpart: when data holds exactly one plain value (and passes the
** same checks as lf_decode's), pushes it and returns 1; returns 0 for
** anything else (then call lf_decode, which also reports what is wrong).
** [-0, +(1|0), m] */
int lf_decode_plain(lua_State *L, const unsigned char *data, size_t len);

/* Decode a buffer produced by lf_encode (possibly in another process),
** treating it as untrusted. Pushes the values and returns their count; on
** malformed input returns -1 with an error message pushed. With
** opts->functions 0, a Lua function in the data returns -2 with where it
** sits pushed instead, "#2 (field 'x')" (the value's number, the path), so
** that the caller can say who sent it. Never raises. [-0, +(n|1), -] */
int lf_decode(lua_State *L, const unsigned char *data, size_t len,
              const lf_codec_opts *opts);

/* lf_decode of the buffer b, which no other thread reads meanwhile, that
** also hands the strings b lends over to L: each lent string is lent from
** then on by the copy this decode made in L (anchored in L), and b's
** reference to the old loan is dropped, so that the state that lent it
** can collect its string now rather than when b is freed. b stays valid
** for any number of later decodes. For an outcome decoded by the only
** holder of its future. [-0, +(n|1), -] */
int lf_decode_relend(lua_State *L, lf_buf *b, const lf_codec_opts *opts);

/* For tests and the fuzzer: rewrite the length and checksum fields of the
** header of data[0 .. len) so that a modified payload passes the integrity
** checks and reaches the value decoder. Returns 0, or -1 when len is
** shorter than a header. Any thread. */
int lf_codec_reseal(unsigned char *data, size_t len);

#endif
