/*
** lf_buf.h — the byte buffer every crossing between two lua_States uses,
** and the registry of shared-handle kinds: the runtime's own objects
** (futures, executors, queues, shared arrays) that travel between the
** states of one process as a pointer to the same reference-counted C object,
** and the export table of the kinds whose objects may also cross to another
** process of this program by id (queues and shared arrays, to the workers
** of a process pool and back).
**
** Threads: an lf_buf is plain memory: it may be handed to any thread, and
** lf_buf_free may run on any thread (a handle's release is thread-safe by
** contract). The kind table only grows: lf_kind_register appends under a
** private mutex (luaopen may run in several states, on several threads) and
** publishes the new count with a release store; readers load the count
** with acquire and read the entries below it without a lock. The export
** table works the same way under the same mutex. lf_share_new_id is
** lock-free.
**
** Ownership: an lf_buf owns its bytes and one reference to every handle
** recorded in it; lf_buf_free releases both. A registered kind must outlive
** every buffer and state of the process (kinds are static structs).
*/
#ifndef LF_BUF_H
#define LF_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "lua.h"

/* A kind of shared handle. The userdata of such an object holds exactly
** one `void *` to it. */
typedef struct lf_handle_kind {
  const char *tname;                    /* its metatable name */
  void (*retain)(void *obj);            /* +1 reference; any thread */
  void (*release)(void *obj);           /* -1 reference; any thread */
  void (*push)(lua_State *L, void *obj);/* push a new userdata for obj that
                                           owns a new reference [-0,+1,m] */
} lf_handle_kind;

#define LF_MAX_KINDS 8

/* Register a kind (idempotent for the same pointer); call from luaopen.
** Returns 0, or -1 when the table is full. Any thread. */
int lf_kind_register(const lf_handle_kind *kind);
int lf_kind_count(void);                       /* kinds registered so far */
const lf_handle_kind *lf_kind_at(int i);       /* 0 <= i < lf_kind_count() */

/* A kind whose objects may cross to another process of this program: the
** workers of a process pool (down) and, for what a worker was given, back
** to its host (up). Such an object always travels by id, in-process too:
** the codec writes T_REMOTE (the kind's wire code and the id) and records
** the object in the buffer's handle references (its pins), through which
** a decoder of this process finds it again. A worker process finds the
** objects its host shared with it through `import`. */
typedef struct lf_export_kind {
  const lf_handle_kind *kind;
  unsigned char wire;               /* its code in T_REMOTE, nonzero */
  /* The id of obj for a transfer in direction dir (LF_SHARE_*: NONE for
  ** one inside this process, which always has an id), or 0 when obj may
  ** not go that way (a worker's own queue going up to its host). Any
  ** thread. */
  uint64_t (*export_id)(void *obj, int dir);
  /* Push a userdata for the object that this process's host shared with
  ** it under id, owning a new reference. Returns 0, or -1 (nothing pushed)
  ** when there is none. [-0,+(1|0),m] */
  int (*import)(lua_State *L, uint64_t id);
} lf_export_kind;

/* Directions of a transfer between processes (lf_codec_opts.share). */
enum { LF_SHARE_NONE = 0, LF_SHARE_DOWN = 1, LF_SHARE_UP = 2 };

/* Register an export kind (its handle kind registered too); idempotent.
** Returns 0, or -1 when the table is full. Any thread. */
int lf_export_register(const lf_export_kind *ek);
/* The export kind of a handle kind, or of a wire code; NULL if none. */
const lf_export_kind *lf_export_of(const lf_handle_kind *kind);
const lf_export_kind *lf_export_by_wire(unsigned wire);

/* A new id for a shared object: unique in this process and, being drawn
** from a random start through a 64-bit permutation, different from the
** ids of every other process but with negligible odds. Never 0. Any
** thread. */
uint64_t lf_share_new_id(void);

struct lf_buf;

/* Where a buffer's bytes live when they are not plain malloc'd memory
** (lf_buf.mem): a buffer whose bytes are a mapping, or come from a pool of
** mappings (lf_region.h). Any thread. */
typedef struct lf_bufmem {
  /* Make room for at least n bytes, keeping the first len (data may
  ** move). Returns 0, or -1 when out of memory (b unchanged). NULL for
  ** bytes that never grow. */
  int (*grow)(struct lf_buf *b, size_t n);
  /* Give back the bytes that mem_ctx names (b's fields are cleared by
  ** the caller). */
  void (*free)(struct lf_buf *b);
} lf_bufmem;

/* The bytes are a read-only mapping of cap bytes (a sealed memfd that a
** worker process sent: lf_process_pool.c), unmapped when freed. */
extern const lf_bufmem lf_bufmem_mapped;

typedef struct lf_buf_handle {
  const lf_handle_kind *kind;
  void *obj;
} lf_buf_handle;

typedef struct lf_buf {
  unsigned char *data;
  size_t len, cap;
  lf_buf_handle *handles;   /* references owned by this buffer */
  uint32_t nhandles, hcap;   /* 32 bits: a buffer is embedded twice in
                               every future */
  const lf_bufmem *mem;      /* NULL: data is malloc'd, and grows so */
  void *mem_ctx;            /* mem's record of the bytes; NULL while they
                               are malloc'd (mem set: it decides when they
                               move elsewhere) */
} lf_buf;

#define LF_BUF_INIT { NULL, 0, 0, NULL, 0, 0, NULL, NULL }

/* Free the bytes (through b->mem when set) and release every handle
** reference; leaves *b empty, plain and reusable. Safe on an empty buffer
** and safe to call twice. */
void lf_buf_free(lf_buf *b);

/* Record one more handle reference in b (the caller has taken it).
** Returns 0, or -1 when out of memory (the reference is then the
** caller's to drop). */
int lf_buf_add_handle(lf_buf *b, const lf_handle_kind *kind, void *obj);

/* Turn b's references to obj into weak ones: release them now and never
** again. For an object whose own buffer mentions it (a future whose result
** holds the future): anyone who decodes the buffer holds the object
** already, and a strong reference would keep it alive forever. Returns how
** many there were. */
size_t lf_buf_weaken(lf_buf *b, const void *obj);

/* Hand b's bytes over as plain malloc'd memory (*data, *len; NULL and 0
** for an empty buffer): b's own when they are malloc'd, else a copy (a
** mapping or a region stays with b's owner of it). b is freed and left
** empty, its handle references released. Returns 0, or -1 when no memory is
** left for the copy (b untouched). */
int lf_buf_detach(lf_buf *b, unsigned char **data, size_t *len);

/* Give back slack beyond len (a buffer that will wait long in a queue).
** Keeps the buffer as it is when realloc fails, or when its bytes are not
** malloc'd (b->mem_ctx). */
void lf_buf_shrink(lf_buf *b);

#endif
