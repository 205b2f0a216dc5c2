/*
** lf_spin.h — spinning before blocking, only while it pays.
**
** A thread that waits for something another thread does in microseconds
** (an idle worker for the next task, a caller for a result) saves a futex
** sleep and wake-up, several microseconds each, by watching for it a moment
** first. But a spinner holds a core: when spinners outnumber the cores not
** running tasks (a pool with more workers than cores, another program
** busy on the machine), the thread that has the work to do waits behind
** them, and a round trip costs tens of microseconds instead of a few. So a
** spin is allowed only when
**   - the process has a core to spare for it: spinners, counted across the
**     process, stay below the cores not running tasks (workers say when
**     they run one, lf_spin_busy), keeping one more core for the thread
**     being waited for when that thread is not a worker; and
**   - spinning paid at this site lately: each site (a pool's workers, a
**     thread's waits) keeps a budget, doubled after a spin that saw its
**     event and halved after one that did not or that the scheduler cut
**     short (a gap in the clock: the spinner was descheduled, so a core was
**     wanted elsewhere). A budget that falls to nothing stays there for
**     LF_SPIN_PROBE waits, then is tried again, small, so that a machine
**     that became quiet is noticed.
** Otherwise the caller blocks at once: the cost of one wake-up, never more.
**
** Threads: any thread. The process-wide counters are atomics; a site's
** budget is an atomic too, since a pool's workers share one.
** Ownership: a site is a plain struct inside its owner (a pool, a thread's
** storage); nothing here allocates.
*/
#ifndef LF_SPIN_H
#define LF_SPIN_H

#include <stdatomic.h>

typedef struct lf_spin_site {
  atomic_int budget_ns;     /* how long the next spin may last */
  atomic_int skipped;       /* waits that did not spin since the budget
                               fell to zero */
  int max_ns;
} lf_spin_site;

#define LF_SPIN_PROBE 64           /* waits between two probes at budget 0 */
#define LF_SPIN_MIN_NS 1000        /* a probe's budget; less is no spin */

/* A site whose spins may last up to max_ns. */
void lf_spin_site_init(lf_spin_site *s, int max_ns);

/* Who is waited for: a worker running a task (counted as busy), or any
** other thread (a submitter: one more core must stay free for it). */
enum { LF_SPIN_FOR_WORKER, LF_SPIN_FOR_OTHER };

/* One spin, on the caller's stack. */
typedef struct lf_spinning {
  double until;             /* deadline, lf_now() seconds */
  double last;              /* when the clock was read last */
  int cut;                  /* the scheduler cut it short */
} lf_spinning;

/* May the caller spin now? Returns 1 and fills sp, counting the caller as
** a spinner until lf_spin_end; or 0: block at once. */
int lf_spin_begin(lf_spin_site *s, int waits_for, lf_spinning *sp);

/* The caller's spin loop asks this every few dozen iterations: 1 to go on,
** 0 to stop (the deadline passed, or the clock jumped: descheduled). */
int lf_spin_go_on(lf_spinning *sp);

/* The spin ended; `paid`: the event came while spinning. */
void lf_spin_end(lf_spin_site *s, lf_spinning *sp, int paid);

/* A worker starts (+1) or ends (-1) running a task. */
void lf_spin_busy(int delta);

#endif
