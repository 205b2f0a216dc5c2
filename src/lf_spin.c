/*
** lf_spin.c — the spin policy of lf_spin.h.
**
** Threads: any thread; `spinners` and `busy` are the process's, shared by
** every pool and waiter (only their sum against the core count matters,
** so relaxed-enough ordering: a spin decided on a stale count costs at
** most one spin of bounded length).
** Ownership: nothing allocated.
*/
#include <pthread.h>
#include <unistd.h>

#include "lf_common.h"
#include "lf_spin.h"

static atomic_int spinners;   /* threads spinning now */
static atomic_int busy;       /* workers running a task now */
static int ncpu;              /* cores online, read once */
static pthread_once_t ncpu_once = PTHREAD_ONCE_INIT;

static void read_ncpu(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  ncpu = n < 1 ? 1 : (int)n;
}

void lf_spin_site_init(lf_spin_site *s, int max_ns) {
  atomic_init(&s->budget_ns, max_ns);
  atomic_init(&s->skipped, 0);
  s->max_ns = max_ns;
}

void lf_spin_busy(int delta) {
  atomic_fetch_add_explicit(&busy, delta, memory_order_relaxed);
}

int lf_spin_begin(lf_spin_site *s, int waits_for, lf_spinning *sp) {
  int budget = atomic_load_explicit(&s->budget_ns, memory_order_relaxed);
  if (budget == 0) {
    if (atomic_fetch_add_explicit(&s->skipped, 1, memory_order_relaxed) + 1 <
        LF_SPIN_PROBE)
      return 0;
    atomic_store_explicit(&s->skipped, 0, memory_order_relaxed);
    budget = LF_SPIN_MIN_NS;   /* probe: has the machine become quiet? */
  }
  pthread_once(&ncpu_once, read_ncpu);
  int free_cores = ncpu - atomic_load_explicit(&busy, memory_order_relaxed)
                 - (waits_for == LF_SPIN_FOR_OTHER);
  int n = atomic_load_explicit(&spinners, memory_order_relaxed);
  do {
    if (n >= free_cores) return 0;
  } while (!atomic_compare_exchange_weak_explicit(
               &spinners, &n, n + 1, memory_order_relaxed,
               memory_order_relaxed));
  sp->last = lf_now();
  sp->until = sp->last + budget * 1e-9;
  sp->cut = 0;
  return 1;
}

/* A gap this long between two looks at the clock means the spinner did not
** run in between: the scheduler gave its core to someone else. */
#define DESCHEDULED 20e-6

int lf_spin_go_on(lf_spinning *sp) {
  double now = lf_now();
  if (now - sp->last > DESCHEDULED) sp->cut = 1;
  sp->last = now;
  return !sp->cut && now < sp->until;
}

void lf_spin_end(lf_spin_site *s, lf_spinning *sp, int paid) {
  atomic_fetch_sub_explicit(&spinners, 1, memory_order_relaxed);
  int budget = atomic_load_explicit(&s->budget_ns, memory_order_relaxed);
  if (paid && !sp->cut) {
    budget = budget < LF_SPIN_MIN_NS ? LF_SPIN_MIN_NS : budget * 2;
    if (budget > s->max_ns) budget = s->max_ns;
  } else {
    budget /= 2;
    if (budget < LF_SPIN_MIN_NS) budget = 0;
  }
  atomic_store_explicit(&s->budget_ns, budget, memory_order_relaxed);
}
