/*
** lf_core.h — the futures.core module entry point and the helpers its
** binding files share: interruptible waits and new worker states.
**
** Threads: lf_wait_* are called by the thread that owns L (the caller of a
** blocking function); lf_new_state may be called from any thread, and the
** state it returns belongs to the caller.
** Ownership: see each function.
*/
#ifndef LF_CORE_H
#define LF_CORE_H

#include "lua.h"

int luaopen_futures_core(lua_State *L);

/* The bundled interpreter sets this to lf_preload_open so that worker states
** get the embedded Lua modules too; a plain host leaves it NULL. Set once,
** before the first executor starts. */
extern void (*lf_state_setup)(lua_State *L);

/* A fresh state with the standard libraries, futures.core preloaded, and
** package.path/cpath copied from `paths` ("path\0cpath"; NULL keeps the
** defaults). Returns NULL when out of memory. Caller owns it: lua_close. */
lua_State *lf_new_state(const char *path, const char *cpath);

/* Blocking calls wait in short slices, and between two slices ask whether
** Ctrl-C arrived. The interpreters (lua5.4 and ours) answer SIGINT by
** installing a hook on the main state, so a change of hook is the signal.
** Record the hook when the wait starts ... */
typedef struct lf_intr { lua_Hook hook; int mask, count; } lf_intr;
void lf_intr_begin(lua_State *L, lf_intr *st);
/* ... and check it between slices: raises "interrupted!" (restoring the
** hook found at the start) when a new hook was installed. [-0,+0,v] */
void lf_intr_check(lua_State *L, const lf_intr *st);
#define LF_WAIT_SLICE 0.05   /* seconds between two interrupt checks */

#endif
