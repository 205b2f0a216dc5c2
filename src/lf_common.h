/*
** lf_common.h — small helpers every C file of the core shares: the version,
** checked pthread calls, and CLOCK_MONOTONIC deadlines.
**
** Threads: everything here is safe from any thread.
** Ownership: nothing here allocates.
*/
#ifndef LF_COMMON_H
#define LF_COMMON_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LF_VERSION "0.1.0"

/* A pthread call that cannot fail in a correct program: abort loudly. */
#define LF_CHECK(call)                                                       \
  do {                                                                       \
    int lf_rc_ = (call);                                                     \
    if (lf_rc_ != 0) {                                                       \
      fprintf(stderr, "lua-futures: %s failed at %s:%d: %s\n", #call,        \
              __FILE__, __LINE__, strerror(lf_rc_));                         \
      abort();                                                               \
    }                                                                        \
  } while (0)

/* A mutex that many threads take for a few dozen instructions at a time (a
** pool's queue): contended, it spins a moment before sleeping, since the
** holder is about to let go; a futex sleep and wake-up would cost more than
** the critical section. glibc's adaptive kind; others get the default. */
static inline void lf_mutex_init_hot(pthread_mutex_t *m) {
  pthread_mutexattr_t attr;
  LF_CHECK(pthread_mutexattr_init(&attr));
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
  LF_CHECK(pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP));
#endif
  LF_CHECK(pthread_mutex_init(m, &attr));
  LF_CHECK(pthread_mutexattr_destroy(&attr));
}

#define lf_lock(m)   LF_CHECK(pthread_mutex_lock(m))
#define lf_unlock(m) LF_CHECK(pthread_mutex_unlock(m))
#define lf_signal(c) LF_CHECK(pthread_cond_signal(c))
#define lf_broadcast(c) LF_CHECK(pthread_cond_broadcast(c))

static inline double lf_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline struct timespec lf_timespec(double t) {
  struct timespec ts;
  double s = floor(t);
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((t - s) * 1e9);
  if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
  return ts;
}

/* Busy-wait hint for short spins before blocking (lf_spin.h): a futex
** sleep and wake costs more than the few microseconds a task hand-off
** usually takes. */
static inline void lf_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* The longest spins (lf_spin.h adapts them to the machine): */
#define LF_SPIN_WORKER_NS 50000   /* an idle worker watching the queue */
#define LF_SPIN_WAITER_NS 20000   /* result() watching the future */

/* A condition variable that measures its timeouts on CLOCK_MONOTONIC. */
static inline void lf_cond_init(pthread_cond_t *c) {
  pthread_condattr_t a;
  LF_CHECK(pthread_condattr_init(&a));
  LF_CHECK(pthread_condattr_setclock(&a, CLOCK_MONOTONIC));
  LF_CHECK(pthread_cond_init(c, &a));
  LF_CHECK(pthread_condattr_destroy(&a));
}

/* Wait on c until signalled or the absolute monotonic time `until`
** (a negative `until` waits without limit). Returns 0 or ETIMEDOUT. The
** caller re-checks its predicate in a loop. */
static inline int lf_cond_wait_until(pthread_cond_t *c, pthread_mutex_t *m,
                                     double until) {
  if (until < 0) { LF_CHECK(pthread_cond_wait(c, m)); return 0; }
  struct timespec ts = lf_timespec(until);
  int rc = pthread_cond_timedwait(c, m, &ts);
  if (rc != 0 && rc != ETIMEDOUT) LF_CHECK(rc);
  return rc;
}

#endif
