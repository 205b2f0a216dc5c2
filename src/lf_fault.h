/*
** lf_fault.h — fault injection for `make faults` (lf_fault.c). Only the
** build made with -DLF_FAULT_INJECTION has it; every other build compiles
** lf_fault.c to nothing and never includes this header.
**
** Threads: the counters are atomics; any thread may hit a fault point.
** Ownership: nothing here allocates.
*/
#ifndef LF_FAULT_H
#define LF_FAULT_H

#include "lua.h"

/* A fresh state like luaL_newstate, whose allocator counts its growing
** calls as fault points of the class "state". */
lua_State *lf_fault_newstate(void);

#endif
