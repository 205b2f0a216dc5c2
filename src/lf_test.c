/*
** lf_test.c — futures._test, the test hooks of the specs, kept out of the
** product as Lua keeps ltests.c out of its release build: a module of its
** own (build/futures/_test.so, never installed) that reaches the core
** through its API table (lf_api.h). It gives the specs what only the
** executors do otherwise — shared handles, decoding in another lua_State —
** and times the codec's C API for the benchmark:
**   codec_handle()           a new test handle (refs 1): h:refs(), h:id()
**   codec_local(...)         encode in-process and decode in the same state
**   codec_call(f, ...)       f(...) in a peer state, both ways by the codec
**                            (both as a thread pool does: long strings lent)
**   codec_encode(inproc, ...) serialize, shared handles allowed if inproc
**                            (and long strings lent if it is "lend")
**   codec_reseal(s)          s with its header's length and checksum redone
**   codec_time(rounds, reps, ...)  median encode and decode ns
**   write_fd(fd, bytes)      write raw bytes to a descriptor (a worker's
**                            socket: what a buggy C module could do)
**   send_fd(fd, bytes, fd...)  write bytes to a socket with descriptors
**                            (SCM_RIGHTS): what a hostile worker could send
**   memfd(bytes [, sealed])  a memfd holding bytes, sealed against every
**                            change when `sealed`; its descriptor
**   pipe()                   a pipe's two descriptors
**   close_fd(fd)             close a descriptor
**   fd_count()               descriptors this process has open
**   big_frame                a process pool's payloads of more than this
**                            many bytes travel in a memfd (LF_BIG_FRAME)
**   malloc_trim()            give free memory back to the system, so that
**                            the resident size measures what is in use
**   readable(fd [, seconds])  whether fd is readable, waiting at most that
**                            long (poll(2)): futures.pollfd's level
**                            semantics, seen from outside any loop
** docs/codec.md documents the codec ones.
**
** Threads: every function runs on the thread that owns the calling state.
** The test handle's reference count is atomic, since a real handle's
** retain/release may run on any thread; the peer state belongs to the
** calling state and is only touched from its thread.
**
** Ownership: an lf_buf lives only inside one call and is freed before any
** error is raised. A test handle object is malloc'd with one reference per
** userdata and per encoded buffer; the last release frees it. The peer
** state is owned by a userdata in the calling state's registry; its __gc
** closes it.
*/
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"

#include "lf_api.h"
#include "lf_proto.h"

static const lf_api *api;

/* The options of a thread pool's transfers: in-process, long strings lent
** (the buffer outlives each decode here). */
static lf_codec_opts lend_opts(void) {
  lf_codec_opts o = *api->codec_defaults;
  o.in_process = LF_CODEC_LEND;
  return o;
}

#define TESTHANDLE_MT "futures.TestHandle"

typedef struct testhandle { atomic_int refs; } testhandle;

static void th_retain(void *obj) {
  atomic_fetch_add_explicit(&((testhandle *)obj)->refs, 1, memory_order_relaxed);
}

static void th_release(void *obj) {
  testhandle *h = obj;
  if (atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel) == 1) free(h);
}

static void th_setmt(lua_State *L);

/* [-0, +1, m] the new userdata owns one reference; a peer state that never
** loaded this module gets the metatable too. */
static void th_push(lua_State *L, void *obj) {
  void **ud = lua_newuserdatauv(L, sizeof(void *), 0);
  *ud = NULL;
  th_setmt(L);
  th_retain(obj);
  *ud = obj;
}

static const lf_handle_kind testhandle_kind = {
  TESTHANDLE_MT, th_retain, th_release, th_push
};

static int th_gc(lua_State *L) {
  void **ud = luaL_checkudata(L, 1, TESTHANDLE_MT);
  if (*ud) { th_release(*ud); *ud = NULL; }
  return 0;
}

/* h:refs() -> current reference count; h:id() -> the object's address */
static int th_refs(lua_State *L) {
  void **ud = luaL_checkudata(L, 1, TESTHANDLE_MT);
  luaL_argcheck(L, *ud != NULL, 1, "closed handle");
  lua_pushinteger(L, atomic_load(&((testhandle *)*ud)->refs));
  return 1;
}

static int th_id(lua_State *L) {
  void **ud = luaL_checkudata(L, 1, TESTHANDLE_MT);
  lua_pushfstring(L, "%p", *ud);
  return 1;
}

/* codec_handle() -> a new test handle (refs 1) */
static int codec_handle(lua_State *L) {
  void **ud = lua_newuserdatauv(L, sizeof(void *), 0);   /* empty first */
  *ud = NULL;
  th_setmt(L);
  testhandle *h = malloc(sizeof *h);
  if (h == NULL) return luaL_error(L, "not enough memory");
  atomic_init(&h->refs, 1);
  *ud = h;
  return 1;
}

/* codec_local(...) -> ...: encode in-process (handles allowed, long
** strings lent) and decode in the same state. */
static int codec_local(lua_State *L) {
  lf_buf b = LF_BUF_INIT;
  lf_codec_opts o = lend_opts();
  int top = lua_gettop(L);
  if (api->encode(L, 1, top, "argument", 1, &b, &o) != 0)
    return lua_error(L);
  int n = api->decode(L, b.data, b.len, &o);
  api->buf_free(&b);
  if (n < 0) return lua_error(L);
  return n;
}

/* codec_encode(in_process, ...) -> string: serialize, with shared
** handles allowed when in_process is true, and long strings lent too when
** it is "lend". The string does not own the handles' references nor the
** loans: specs keep the handles alive while they use it, and decode a
** string with loans only as data from outside (which refuses them). */
static int codec_encode(lua_State *L) {
  lf_codec_opts o = *api->codec_defaults;
  o.in_process = lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "lend") == 0
               ? LF_CODEC_LEND : lua_toboolean(L, 1);
  return api->serialize(L, 2, &o);
}

/* codec_reseal(s) -> s with the header's length and checksum made
** right for its payload, so that specs can alter a payload. */
static int codec_reseal(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_Buffer B;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &B, len);
  memcpy(p, s, len);
  luaL_argcheck(L, api->reseal(p, len) == 0, 1, "shorter than a header");
  luaL_pushresultsize(&B, len);
  return 1;
}

/* The peer state of _codec_call, created on first use. */
typedef struct peer { lua_State *P; } peer;
#define PEER_MT "futures.codec_peer"
static const char PEER_KEY = 'p';      /* registry: the peer userdata */

static int peer_gc(lua_State *L) {
  peer *p = luaL_checkudata(L, 1, PEER_MT);
  if (p->P) { api->close_state(p->P); p->P = NULL; }
  return 0;
}

static lua_State *get_peer(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &PEER_KEY) == LUA_TUSERDATA) {
    peer *p = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return p->P;
  }
  lua_pop(L, 1);
  peer *p = lua_newuserdatauv(L, sizeof *p, 0);
  p->P = NULL;
  if (luaL_newmetatable(L, PEER_MT)) {
    lua_pushcfunction(L, peer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_getfield(L, -2, "cpath");
  p->P = api->new_state(lua_tostring(L, -2), lua_tostring(L, -1));
  lua_pop(L, 3);
  if (p->P == NULL) luaL_error(L, "cannot create a peer state");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &PEER_KEY);
  return p->P;
}

/* Moves the error message at the top of P to L and raises it there; P's
** stack is reset to ptop. */
static int peer_error(lua_State *L, lua_State *P, int ptop) {
  lua_pushstring(L, lua_tostring(P, -1));
  lua_settop(P, ptop);
  return lua_error(L);
}

/* codec_call(f, ...) -> results of f(...) run in a peer lua_State
** (one per calling state, kept between calls, as a worker keeps its
** state): arguments and results cross both ways through the codec as in a
** thread pool (in-process, long strings lent). An error of f is
** transferred back and raised. */
static int codec_call(lua_State *L) {
  luaL_checkany(L, 1);
  lua_State *P = get_peer(L);
  lf_buf b = LF_BUF_INIT;
  lf_codec_opts o = lend_opts();
  int ptop = lua_gettop(P);
  if (api->encode(L, 1, lua_gettop(L), "argument", 1, &b, &o) != 0)
    return lua_error(L);
  int n = api->decode(P, b.data, b.len, &o);
  api->buf_free(&b);
  if (n < 0) return peer_error(L, P, ptop);
  int status = lua_pcall(P, n - 1, LUA_MULTRET, 0);
  int nres = lua_gettop(P) - ptop;
  int rc = api->encode(P, ptop + 1, nres, status == LUA_OK ? "result" : "error",
                     1, &b, &o);
  if (rc != 0) return peer_error(L, P, ptop);
  lua_settop(P, ptop);
  int top = lua_gettop(L);
  n = api->decode(L, b.data, b.len, &o);
  api->buf_free(&b);
  if (n < 0) return lua_error(L);
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - top;
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* codec_time(rounds, reps, ...) -> encode ns, decode ns: lf_encode
** and lf_decode of the values as a thread pool calls them (in-process,
** long strings lent; the decoded values dropped), without the Lua call and the string copies of
** serialize/deserialize. A round times `reps` encodes (each into a fresh
** buffer, freed), then `reps` decodes of one buffer; the result is the
** median round, per operation. */
static int codec_time(lua_State *L) {
  int rounds = (int)luaL_checkinteger(L, 1);
  int reps = (int)luaL_checkinteger(L, 2);
  luaL_argcheck(L, rounds >= 1 && rounds <= 1000, 1, "1 .. 1000");
  luaL_argcheck(L, reps >= 1, 2, "at least 1");
  int n = lua_gettop(L) - 2;
  double *te = lua_newuserdatauv(L, 2 * sizeof(double) * (size_t)rounds, 0);
  double *td = te + rounds;
  int top = lua_gettop(L);
  lf_codec_opts o = lend_opts();
  for (int r = 0; r < rounds; r++) {
    lf_buf b = LF_BUF_INIT;
    lua_gc(L, LUA_GCCOLLECT);   /* each round starts without the last's garbage */
    double t0 = now_ns();
    for (int i = 0; i < reps; i++) {
      api->buf_free(&b);
      if (api->encode(L, 3, n, "value", 1, &b, &o) != 0)
        return lua_error(L);
    }
    double t1 = now_ns();
    for (int i = 0; i < reps; i++) {
      if (api->decode(L, b.data, b.len, &o) < 0) {
        api->buf_free(&b);
        return lua_error(L);
      }
      lua_settop(L, top);
    }
    double t2 = now_ns();
    api->buf_free(&b);
    te[r] = (t1 - t0) / reps;
    td[r] = (t2 - t1) / reps;
  }
  qsort(te, (size_t)rounds, sizeof *te, cmp_double);
  qsort(td, (size_t)rounds, sizeof *td, cmp_double);
  lua_pushnumber(L, te[rounds / 2]);
  lua_pushnumber(L, td[rounds / 2]);
  return 2;
}

/* write_fd(fd, s) -> bytes written */
static int write_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  ssize_t n = write(fd, s, len);
  if (n < 0) return luaL_error(L, "write failed");
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* send_fd(fd, s, d1, d2, ...) -> bytes written; the descriptors go with
** the first byte. */
static int send_fd(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  int n = lua_gettop(L) - 2;
  luaL_argcheck(L, n >= 1 && n <= 16, 3, "1 to 16 descriptors");
  union {
    char buf[CMSG_SPACE(sizeof(int) * 16)];
    struct cmsghdr align;
  } cm;
  memset(&cm, 0, sizeof cm);
  struct iovec iov = { (void *)s, len };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cm.buf;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
  for (int i = 0; i < n; i++) {
    int d = (int)luaL_checkinteger(L, 3 + i);
    memcpy(CMSG_DATA(c) + (size_t)i * sizeof(int), &d, sizeof d);
  }
  ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
  if (w < 0) return luaL_error(L, "sendmsg: %s", strerror(errno));
  lua_pushinteger(L, (lua_Integer)w);
  return 1;
}

/* memfd(s [, sealed]) -> descriptor */
static int memfd(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int sealed = lua_toboolean(L, 2);
  int fd = memfd_create("lf-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return luaL_error(L, "memfd_create: %s", strerror(errno));
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, s + off, len - off);
    if (w < 0) {
      close(fd);
      return luaL_error(L, "write: %s", strerror(errno));
    }
    off += (size_t)w;
  }
  if (sealed && fcntl(fd, F_ADD_SEALS, LF_MEMFD_SEALS) != 0) {
    close(fd);
    return luaL_error(L, "F_ADD_SEALS: %s", strerror(errno));
  }
  lua_pushinteger(L, fd);
  return 1;
}

static int test_pipe(lua_State *L) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return luaL_error(L, "pipe: %s", strerror(errno));
  lua_pushinteger(L, p[0]);
  lua_pushinteger(L, p[1]);
  return 2;
}

static int close_fd(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

static int fd_count(lua_State *L) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) return luaL_error(L, "/proc/self/fd: %s", strerror(errno));
  lua_Integer n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  lua_pushinteger(L, n - 1);   /* the directory's own descriptor */
  return 1;
}

static int trim(lua_State *L) {
  (void)L;
  malloc_trim(0);
  return 0;
}

static int readable(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  lua_Number secs = luaL_optnumber(L, 2, 0);
  struct pollfd p = { .fd = fd, .events = POLLIN, .revents = 0 };
  int rc;
  do rc = poll(&p, 1, (int)(secs * 1000));
  while (rc < 0 && errno == EINTR);
  if (rc < 0) return luaL_error(L, "poll: %s", strerror(errno));
  lua_pushboolean(L, rc > 0 && (p.revents & POLLIN));
  return 1;
}

static const luaL_Reg test_funcs[] = {
  {"malloc_trim", trim},
  {"write_fd", write_fd},
  {"send_fd", send_fd},
  {"memfd", memfd},
  {"pipe", test_pipe},
  {"close_fd", close_fd},
  {"fd_count", fd_count},
  {"readable", readable},
  {"codec_handle", codec_handle},
  {"codec_local", codec_local},
  {"codec_call", codec_call},
  {"codec_time", codec_time},
  {"codec_encode", codec_encode},
  {"codec_reseal", codec_reseal},
  {NULL, NULL}
};

/* Sets the test handle metatable on the value at the top, creating it in
** this state if needed. [-0, +0, m] */
static void th_setmt(lua_State *L) {
  if (luaL_newmetatable(L, TESTHANDLE_MT)) {
    lua_pushcfunction(L, th_gc);
    lua_setfield(L, -2, "__gc");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, th_refs);
    lua_setfield(L, -2, "refs");
    lua_pushcfunction(L, th_id);
    lua_setfield(L, -2, "id");
    lua_setfield(L, -2, "__index");
  }
  lua_setmetatable(L, -2);
}

int luaopen_futures__test(lua_State *L);

int luaopen_futures__test(lua_State *L) {
  api = lf_api_get(L);
  /* The core keeps a pointer to testhandle_kind for the life of the
  ** process: this object must stay mapped after lua_close unloads it. */
  Dl_info info;
  if (dladdr((void *)&testhandle_kind, &info) != 0 && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  lua_newtable(L);
  th_setmt(L);   /* registers the metatable, which the encoder looks up */
  lua_pop(L, 1);
  api->kind_register(&testhandle_kind);
  luaL_newlib(L, test_funcs);
  lua_pushinteger(L, (lua_Integer)LF_BIG_FRAME);
  lua_setfield(L, -2, "big_frame");
  return 1;
}
