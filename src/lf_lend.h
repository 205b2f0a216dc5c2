/*
** lf_lend.h — long strings lent by reference between the lua_States of one
** process. A thread pool's transfer of a long string would otherwise copy
** its bytes into the encoded buffer and again out of it into the target
** state; lent, the buffer holds a pointer to the source string's own bytes
** and the target copies them once, straight into its new string. The Lua
** 5.4 API makes every string by copying (lua_pushlstring), so one copy per
** crossing is the least there is.
**
** Threads: lf_lend, lf_lend_collect and the lender's finalizer run on the
** thread that owns the lending state; a loan's references are dropped
** (lf_buf_free) and its bytes read (lf_loan_pin) on any thread. lend_mu
** (lf_lend.c) guards every lender's lists and every loan's owner; it is
** never held while a Lua function or another lock is called.
**
** Ownership: a lender belongs to its state (a userdata in the registry,
** created on the first loan; its user value is the anchor table, loan ->
** string, which keeps each lent string alive). A loan is counted: one
** reference per lf_buf that records it (a buffer handle of a private kind,
** so that lf_buf_free releases it on whatever thread frees the buffer).
** When the last reference goes, the loan moves to its lender's released
** list; the owning thread unanchors and frees it at its next encode or
** decode (lf_lend_collect). When the owning state closes first, the
** lender's finalizer copies the bytes of every loan still referenced into
** memory of the loan's own (waiting for decoders that are copying from the
** string at that moment), so a loan outlives its state; the last release
** then frees that copy.
*/
#ifndef LF_LEND_H
#define LF_LEND_H

#include <stdatomic.h>
#include <stddef.h>

#include "lua.h"
#include "lf_buf.h"

/* Strings at least this long are lent (when the caller allows lending):
** below it a copy costs less than a loan. */
#define LF_LEND_MIN ((size_t)64 << 10)

typedef struct lf_loan lf_loan;

/* Lends the string at idx of L (lua_type LUA_TSTRING) to whoever decodes
** b: anchors it in L and records one reference in b. Returns the loan, or
** NULL when L's lender has closed (L is being closed: copy the bytes
** instead). Raises on out of memory, leaving b as it was or with a
** reference that lf_buf_free releases. [-0, +0, m] */
lf_loan *lf_lend(lua_State *L, int idx, lf_buf *b);

/* The bytes of a loan, for a decoder to copy: pin before reading them and
** unpin after (also when the copy raised), so that the owning state's
** closing waits for the copy before it frees the string. Returns NULL when
** the bytes were lost (the owning state closed while out of memory).
** Any thread. */
const char *lf_loan_pin(lf_loan *loan, size_t *len);
void lf_loan_unpin(lf_loan *loan);

/* Unanchors the loans of L that no buffer holds any more, and returns the
** bytes of the strings they lent (garbage now, unless L holds them some
** other way). Cheap (one atomic load) when no state has any. On L's
** thread; never raises. A state does it at the end of each collection
** cycle in which it had strings lent (a sentinel's finalizer), at the
** runtime's entry points (lf_run_callbacks), and a thread pool's worker
** before each task, so that it can collect them at once. [-0, +0, -] */
size_t lf_lend_collect(lua_State *L);

/* lf_lend_collect when some state has loans to unanchor (one atomic load
** otherwise): for the runtime's entry points, so that a state that goes on
** using futures lets go of what it lent at once. */
extern atomic_size_t lf_lend_released;
static inline void lf_lend_collect_if(lua_State *L) {
  if (atomic_load_explicit(&lf_lend_released, memory_order_relaxed) != 0)
    lf_lend_collect(L);
}

#endif
