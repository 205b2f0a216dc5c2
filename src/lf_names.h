/*
** lf_names.h — the name index of package.loaded (lf_names.c): which C
** functions and module tables of a state travel by name, and under which.
** Used by the encoder; the decoder resolves names itself.
**
** Threads: only the thread that owns the state.
** Ownership: the index lives in the state's registry.
*/
#ifndef LF_NAMES_H
#define LF_NAMES_H

#include "lua.h"

/* What one encode knows of the index: the stack slot (reserved by the
** caller, nil before the first lookup) that holds it, and whether its
** freshness was checked during this encode. */
typedef struct lf_names {
  int slot;
  int checked;
} lf_names;

/* Pushes the name under which package.loaded holds the value at idx (a
** module table "mod", or a C function "mod.field") and returns 1, or
** returns 0 and pushes nothing. Never answers from a stale index: it is
** rebuilt when a module was loaded since, and a hit is checked against
** package.loaded. [-0, +(0|1), m] */
int lf_names_find(lua_State *L, lf_names *n, int idx);

#endif
