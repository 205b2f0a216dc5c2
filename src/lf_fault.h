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

/* Called by worker states' allocator (lf_state.c) for each allocation
** that grows: 1 when this one must fail (a fault point of the class
** "state"). */
int lf_fault_state_alloc(void);

#endif
