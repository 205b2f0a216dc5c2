/*
** lf_state.h — the lua_States the runtime creates for its workers, and
** what the program around the core tells it about states: how to open
** futures.core in one, and whether this executable is the bundled
** interpreter (which preloads the embedded Lua modules and is itself the
** worker of process pools). Also: how a blocking call notices Ctrl-C.
**
** Threads: lf_state_set_* are called once, before any worker starts (the
** module entry at luaopen; main() of bin/lua-futures); the pointers are
** atomics all the same, because luaopen may run in several states. The
** other functions run on the thread that owns the state given; a new
** state belongs to the thread that asked for it.
**
** Ownership: lf_new_state returns a state the caller closes with
** lf_close_state, which also frees its heap record.
*/
#ifndef LF_STATE_H
#define LF_STATE_H

#include <stdatomic.h>
#include <stddef.h>

#include "lua.h"

/* The module entry registers its luaopen, so that worker states can
** preload futures.core without the lower layers calling back into it. */
void lf_state_set_opener(lua_CFunction open_core);
/* bin/lua-futures registers how to preload its embedded modules: every
** state made from then on gets them, and process pools run this very
** executable as their worker. */
void lf_state_set_interpreter(void (*preload)(lua_State *L));
int lf_state_is_interpreter(void);

/* A fresh state with the standard libraries, futures.core (and, in the
** interpreter, the embedded modules) preloaded, and package.path/cpath
** set from path/cpath (NULL keeps the defaults). Its allocator counts the
** bytes of its heap. Returns NULL when out of memory. */
lua_State *lf_new_state(const char *path, const char *cpath);
void lf_close_state(lua_State *L);

/* Bytes in use by a state made by lf_new_state (0 for another state). */
size_t lf_state_heap(lua_State *L);
/* Limit a state's heap to `bytes` (0: no limit): an allocation past it
** fails as out of memory. Returns 0, or -1 for a state not made here. */
int lf_state_set_limit(lua_State *L, size_t bytes);
/* The limit set with lf_state_set_limit (0: none). */
size_t lf_state_limit(lua_State *L);
/* Did an allocation fail because of the limit since the last call? Clears
** the flag. */
int lf_state_hit_limit(lua_State *L);

/* Big blocks (mappings of their own, see lf_state.c) that a state frees
** are given back to the system at once, unless the state keeps them:
** then up to LF_STATE_KEEP bytes of them wait for the state's next big
** allocations, whose pages are then warm (a fresh mapping costs a page
** fault per page written, which for a 10 MB string takes longer than
** copying it). lf_state_keep_blocks turns keeping on or off (off drops
** what is kept); lf_state_kept tells how many bytes are kept;
** lf_state_drop_blocks gives them back, lf_state_drop_idle_blocks only
** when none was kept or taken for `idle` seconds. A thread pool's workers
** keep blocks while they are busy and drop them when idle; a helper state
** (lf_thread_pool.c) drops them at its waiting state's next entry into the
** runtime after LF_STATE_HOLD seconds without use. */
#define LF_STATE_KEEP ((size_t)64 << 20)
#define LF_STATE_HOLD 0.5
void lf_state_keep_blocks(lua_State *L, int keep);
size_t lf_state_kept(lua_State *L);
void lf_state_drop_blocks(lua_State *L);
void lf_state_drop_idle_blocks(lua_State *L, double idle);

/* Open futures.core in L if it was not (its metatables are then
** registered), as require would. [-0,+0,e] */
void lf_open_core(lua_State *L);

/* Blocking calls wait in short slices, and between two slices ask whether
** Ctrl-C arrived. The interpreters (lua5.4 and ours) answer SIGINT by
** installing a hook on the main state, so a change of hook is the signal.
** lf_intr_begin records the hook when the wait starts; lf_intr_pending
** tells whether it changed; lf_intr_raise restores the recorded hook and
** raises "interrupted!" (release what you hold first). */
typedef struct lf_intr { lua_Hook hook; int mask, count; } lf_intr;
void lf_intr_begin(lua_State *L, lf_intr *st);
int lf_intr_pending(lua_State *L, const lf_intr *st);
int lf_intr_raise(lua_State *L, const lf_intr *st);   /* [-0,+0,v] */

/* A state that runs a task on the thread of another one, which waits for
** it (a thread pool's helper state), must stop when Ctrl-C reaches the
** waiting one: between lf_intr_watch and lf_intr_unwatch, lf_intr_pending
** on this thread also answers for `outer`, and lf_intr_outer tells whether
** Ctrl-C reached it. */
void lf_intr_watch(lua_State *outer);
void lf_intr_unwatch(void);
int lf_intr_outer(void);
#define LF_WAIT_SLICE 0.01   /* seconds between two interrupt checks */

/* Stopping the task that runs in a state. The thread that runs a task
** brackets it with lf_stop_enter / lf_stop_leave: `why` is where a stop
** request will appear (a future's LF_STOP_* field, or a worker process's
** own), `limit` the seconds the task may run (0: no limit; then no hook
** at all until a stop is asked for). lf_stop_now (any thread, while the
** task runs: the caller makes sure it does) sets a hook that stops it at
** once. The hook raises, inside the task, a CancelledError "the task was
** interrupted" or a TimeoutError "the task ran longer than its limit of N
** seconds", and again at every later hook until the task ends, so that
** its <close> variables and pcall handlers run but it cannot go on. The
** runtime's own waits inside the task (lf_intr_pending, lf_intr_raise)
** stop the same way. A task blocked in another C call stops when it
** returns. */
void lf_stop_enter(lua_State *L, atomic_int *why, double limit);
void lf_stop_leave(lua_State *L);
void lf_stop_now(lua_State *L);

#endif
