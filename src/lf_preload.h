/*
** lf_preload.h — what the bundled interpreter adds to a fresh lua_State:
** futures.core linked in, and the lua/futures/ sources embedded at build time.
**
** Threads: lf_preload_open touches only the state it is given.
** Ownership: the embedded sources are static data.
*/
#ifndef LF_PRELOAD_H
#define LF_PRELOAD_H

#include <stddef.h>

#include "lua.h"

int luaopen_futures_core(lua_State *L);   /* lf_module.c */

typedef struct lf_embedded_module {
  const char *name;       /* module name for require: "futures", "futures.x" */
  const char *chunkname;  /* "@futures/x.lua", for tracebacks */
  const char *source;
  size_t size;
} lf_embedded_module;

extern const lf_embedded_module lf_embedded_modules[];  /* ends with NULL */

/* Register futures.core and every embedded module in package.preload.
** [-0, +0, e] */
void lf_preload_open(lua_State *L);

#endif
