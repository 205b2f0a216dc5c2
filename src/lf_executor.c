/*
** lf_executor.c — reference counting shared by every executor back-end.
**
** Threads: any thread.
** Ownership: see lf_executor.h. The reference that takes the count from 2
** to 1 leaves only the owner's: nothing else can reach the executor, so it
** stops accepting work (there is nobody left to submit) and lets its queue
** drain; the owner joins it later. The last reference destroys it.
*/
#include "lf_executor.h"

_Thread_local lf_executor *lf_current_executor = NULL;

void lf_executor_retain(lf_executor *ex) {
  atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
}

void lf_executor_release(lf_executor *ex) {
  int old = atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel);
  if (old == 2) ex->ops->shutdown(ex, 0);
  else if (old == 1) ex->ops->destroy(ex);
}
