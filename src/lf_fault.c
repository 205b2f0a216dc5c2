/*
** lf_fault.c — fault injection, for `make faults` only: compiled to
** nothing unless LF_FAULT_INJECTION is defined. That build links our own
** objects with -Wl,--wrap for malloc, calloc, realloc, strdup,
** pthread_create, socketpair, pipe, pipe2, eventfd, posix_spawn,
** memfd_create, mmap and mremap, so that
** each call made by lua-futures' C code (never by liblua or libc itself) is
** a numbered fault point; the growing calls of worker states' allocator
** are fault points too (lf_state.c). A fault
** point that fails behaves as the real call does when the system is out of
** memory or descriptors: NULL with ENOMEM, -1 with EMFILE, EAGAIN.
**
** From Lua (futures.core, in this build only; the interpreter's
** luaopen_futures_core is wrapped to add it):
**   core._fault_after(n, class [, sticky]) -> calls, fired
**     arms `class` ("alloc", "state", "thread", "socket", "spawn", "map":
**     memfd_create, mmap, mremap): its
**     n-th call from now fails (n = 0 disarms); with `sticky`, that call and
**     every later one fail. Returns what the previous arming saw: how many
**     calls of the class were made since, and whether the fault fired.
**
** Threads: any thread may hit a fault point; each class's counters are
** atomics, so with several threads "the n-th call" is the n-th to reach the
** counter.
** Ownership: nothing is allocated here besides what the wrapped calls
** return to their callers.
*/
#ifdef LF_FAULT_INJECTION

#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lauxlib.h"

#include "lf_fault.h"

enum { F_ALLOC, F_STATE, F_THREAD, F_SOCKET, F_SPAWN, F_MAP, F_NCLASSES };
static const char *const CLASSES[] = {
  "alloc", "state", "thread", "socket", "spawn", "map", NULL
};

typedef struct fclass {
  atomic_long calls;    /* calls since armed */
  atomic_long at;       /* the call that fails (1-based), 0: disarmed */
  atomic_int sticky;    /* every call from `at` on fails */
  atomic_int fired;
} fclass;

static fclass classes[F_NCLASSES];

/* Count a call of class c; 1 when it must fail. */
static int hit(int c) {
  fclass *k = &classes[c];
  long n = atomic_fetch_add(&k->calls, 1) + 1;
  long at = atomic_load(&k->at);
  if (at == 0 || n < at) return 0;
  if (n > at && !atomic_load(&k->sticky)) return 0;
  atomic_store(&k->fired, 1);
  return 1;
}

/* ---- the wrapped calls (the linker sends our objects' calls here) ---- */

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
int __real_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg);
int __real_socketpair(int domain, int type, int protocol, int sv[2]);
int __real_pipe(int fds[2]);
int __real_pipe2(int fds[2], int flags);
int __real_eventfd(unsigned int initval, int flags);
int __real_posix_spawn(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]);
int __real_luaopen_futures_core(lua_State *L);
int __real_memfd_create(const char *name, unsigned flags);
void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off);
void *__real_mremap(void *old, size_t olen, size_t nlen, int flags, ...);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
char *__wrap_strdup(const char *s);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg);
int __wrap_socketpair(int domain, int type, int protocol, int sv[2]);
int __wrap_pipe(int fds[2]);
int __wrap_pipe2(int fds[2], int flags);
int __wrap_eventfd(unsigned int initval, int flags);
int __wrap_posix_spawn(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]);
int __wrap_luaopen_futures_core(lua_State *L);
int __wrap_memfd_create(const char *name, unsigned flags);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off);
void *__wrap_mremap(void *old, size_t olen, size_t nlen, int flags, ...);

void *__wrap_malloc(size_t size) {
  if (hit(F_ALLOC)) { errno = ENOMEM; return NULL; }
  return __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size) {
  if (hit(F_ALLOC)) { errno = ENOMEM; return NULL; }
  return __real_calloc(n, size);
}

/* realloc(p, 0) frees in glibc: a free is not a fault point. */
void *__wrap_realloc(void *p, size_t size) {
  if (size > 0 && hit(F_ALLOC)) { errno = ENOMEM; return NULL; }
  return __real_realloc(p, size);
}

char *__wrap_strdup(const char *s) {
  if (hit(F_ALLOC)) { errno = ENOMEM; return NULL; }
  return __real_strdup(s);
}

int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a,
                          void *(*fn)(void *), void *arg) {
  if (hit(F_THREAD)) return EAGAIN;
  return __real_pthread_create(t, a, fn, arg);
}

int __wrap_socketpair(int domain, int type, int protocol, int sv[2]) {
  if (hit(F_SOCKET)) { errno = EMFILE; return -1; }
  return __real_socketpair(domain, type, protocol, sv);
}

int __wrap_pipe(int fds[2]) {
  if (hit(F_SOCKET)) { errno = EMFILE; return -1; }
  return __real_pipe(fds);
}

int __wrap_pipe2(int fds[2], int flags) {
  if (hit(F_SOCKET)) { errno = EMFILE; return -1; }
  return __real_pipe2(fds, flags);
}

int __wrap_eventfd(unsigned int initval, int flags) {
  if (hit(F_SOCKET)) { errno = EMFILE; return -1; }
  return __real_eventfd(initval, flags);
}

int __wrap_posix_spawn(pid_t *pid, const char *path,
                       const posix_spawn_file_actions_t *fa,
                       const posix_spawnattr_t *attr, char *const argv[],
                       char *const envp[]) {
  if (hit(F_SPAWN)) return EAGAIN;
  return __real_posix_spawn(pid, path, fa, attr, argv, envp);
}

int __wrap_memfd_create(const char *name, unsigned flags) {
  if (hit(F_MAP)) { errno = EMFILE; return -1; }
  return __real_memfd_create(name, flags);
}

void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd,
                  off_t off) {
  if (hit(F_MAP)) { errno = ENOMEM; return MAP_FAILED; }
  return __real_mmap(addr, len, prot, flags, fd, off);
}

/* Our code never passes MREMAP_FIXED: no fifth argument. */
void *__wrap_mremap(void *old, size_t olen, size_t nlen, int flags, ...) {
  if (hit(F_MAP)) { errno = ENOMEM; return MAP_FAILED; }
  return __real_mremap(old, olen, nlen, flags);
}

/* ---- worker states ---- */

int lf_fault_state_alloc(void) { return hit(F_STATE); }

/* ---- futures.core._fault_after ---- */

static int fault_after(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  int c = luaL_checkoption(L, 2, NULL, CLASSES);
  luaL_argcheck(L, n >= 0, 1, "must be >= 0");
  fclass *k = &classes[c];
  atomic_store(&k->at, 0);   /* disarm while the counters are reset */
  long calls = atomic_exchange(&k->calls, 0);
  int fired = atomic_exchange(&k->fired, 0);
  atomic_store(&k->sticky, lua_toboolean(L, 3));
  atomic_store(&k->at, (long)n);
  lua_pushinteger(L, calls);
  lua_pushboolean(L, fired);
  return 2;
}

int __wrap_luaopen_futures_core(lua_State *L) {
  __real_luaopen_futures_core(L);
  lua_pushcfunction(L, fault_after);
  lua_setfield(L, -2, "_fault_after");
  return 1;
}

#else
/* Not the fault-injection build: nothing here (ISO C wants a declaration). */
typedef int lf_fault_unused;
#endif
