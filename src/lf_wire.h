/*
** lf_wire.h — the codec's wire format, shared by the encoder (lf_encode.c)
** and the decoder (lf_decode.c) as Lua's ldump.c and lundump.c share
** lundump.h: the header layout, the value tags, little-endian access and
** the 64-bit hash. docs/codec.md describes the format for readers.
**
** Threads: everything here is pure and safe from any thread.
** Ownership: nothing here allocates.
*/
#ifndef LF_WIRE_H
#define LF_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lauxlib.h"

/* Cold paths with buffers of their own stay out of the recursive frames of
** the encoder and decoder, which are what max_depth multiplies. */
#if defined(__GNUC__)
#define LF_COLD __attribute__((noinline, cold))
#define LF_NOINLINE __attribute__((noinline))
#define LF_INLINE inline __attribute__((always_inline))
#else
#define LF_COLD
#define LF_NOINLINE
#define LF_INLINE inline
#endif

#define HDR_SIZE    24          /* magic[4] flags[4] length[8] checksum[8] */
#define MAGIC0      'L'
#define MAGIC1      'F'
#define MAGIC2      'C'
#define FORMAT_VERSION 1

#define FLAG_FUNCTIONS 0x1u     /* payload holds Lua functions (bytecode) */
#define FLAG_HANDLES   0x2u     /* payload holds in-process pointers: handles
                                   or lent strings */
#define FLAG_NAMES     0x4u     /* payload names C functions, modules or the
                                   global table */
#define FLAG_SHARED    0x8u     /* payload names queues or shared arrays by
                                   id (T_REMOTE) */
#define FLAGS_KNOWN    (FLAG_FUNCTIONS | FLAG_HANDLES | FLAG_NAMES | FLAG_SHARED)

/* A value's first byte: the low 7 bits are the tag; bit 7 (T_KEEP) marks an
** object (table, Lua function, handle, shared object, lent string) that a
** later T_REF or T_UPJOIN names, so the decoder records it. References name
** an object by the payload offset of its tag byte. */
enum {
  T_NIL = 0, T_FALSE, T_TRUE,
  T_INT8, T_INT16, T_INT32, T_INT64,   /* little-endian two's complement */
  T_FLOAT,                             /* IEEE-754 binary64 bit pattern */
  T_STR,                               /* varint length, bytes */
  T_TABLE, T_TABLE_MT,                 /* u32 narr, u32 nhash, items [, mt] */
  T_REF,                               /* varint offset of an earlier object */
  T_GLOBALS,                           /* the target's global table */
  T_MODULE,                            /* varint length, name: require(name) */
  T_CFUNC,                             /* varint length, "module.field" */
  T_LFUNC,                             /* u64 hash, varint len, bytecode,
                                          u8 nups, nups upvalue items */
  T_HANDLE,                            /* u8 kind, u64 pointer */
  T_IRUN,                              /* array only: u8 width, u32 n, ints */
  T_FRUN,                              /* array only: u32 n, n floats */
  T_UPJOIN,                            /* upvalue only: varint func, u8 n */
  T_REMOTE,                            /* u8 wire code, u64 id: an object of
                                          an export kind (lf_buf.h) */
  T_LENT,                              /* u64 loan, varint length: a string
                                          lent (in-process only) */
  T_LAST
};
#define T_KEEP 0x80u
#define T_MASK 0x7fu

#define MAX_NAME   256          /* longest C function / module name */
#define RCACHE_MAX 256          /* decoder function cache entries */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define LE64(v) __builtin_bswap64(v)
#define LE32(v) __builtin_bswap32(v)
#define LE16(v) __builtin_bswap16(v)
#else
#define LE64(v) (v)
#define LE32(v) (v)
#define LE16(v) (v)
#endif

static inline uint64_t rd64(const unsigned char *p) {
  uint64_t v; memcpy(&v, p, 8); return LE64(v);
}
static inline uint32_t rd32(const unsigned char *p) {
  uint32_t v; memcpy(&v, p, 4); return LE32(v);
}
static inline uint16_t rd16(const unsigned char *p) {
  uint16_t v; memcpy(&v, p, 2); return LE16(v);
}
static inline void wr64(unsigned char *p, uint64_t v) {
  v = LE64(v); memcpy(p, &v, 8);
}
static inline void wr32(unsigned char *p, uint32_t v) {
  v = LE32(v); memcpy(p, &v, 4);
}
static inline void wr16(unsigned char *p, uint16_t v) {
  v = LE16(v); memcpy(p, &v, 2);
}

#define H_M1 0x9E3779B97F4A7C15ull   /* 2^64 / golden ratio */
#define H_M2 0xBF58476D1CE4E5B9ull   /* odd multipliers with good */
#define H_M3 0x94D049BB133111EBull   /* bit dispersion */

static inline uint64_t rotl64(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

static inline uint64_t hround(uint64_t acc, uint64_t w) {
  return rotl64(acc + w * H_M2, 29) * H_M1;
}

/* A fast non-cryptographic 64-bit hash (lf_wire.c). It detects corruption
** and keys the function caches; it is no defence against a forger (see
** docs/codec.md, "Trust"). */
uint64_t lf_wire_hash(const unsigned char *p, size_t n);

/* The frame checksum of data[0 .. len): the payload's hash mixed with the
** first 16 header bytes (magic, version, flags, length), so that no header
** bit escapes. len >= HDR_SIZE. */
uint64_t lf_wire_sum(const unsigned char *data, size_t len);

/* One step of the path to a value, for error messages: the encoder's and
** the decoder's read the same ("field 'conn'.[3], metatable"). */
enum { P_KEY, P_INDEX, P_KEYITSELF, P_META, P_UPVAL };
typedef struct lf_pathseg {
  int kind;
  int idx;                    /* stack index of the key or the function */
  lua_Integer n;              /* P_INDEX: the index; P_UPVAL: upvalue no. */
} lf_pathseg;
#define PATH_SEGS 32

/* Adds " (field 'conn'.[3], metatable)" for a path of npath steps to B,
** of which segs holds the first `held` (the rest shows as "..."); nothing
** for npath = 0. Keys are read from L's stack without being converted. */
void lf_wire_addpath(luaL_Buffer *B, lua_State *L, const lf_pathseg *segs,
                     int held, int npath);

#endif
