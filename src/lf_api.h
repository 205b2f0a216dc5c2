/*
** lf_api.h — the C API that futures.core lends to its companion modules
** (futures._test for the specs, futures.mpi): a table of function pointers
** that the module entry publishes in each state's registry under
** LF_API_KEY. A companion is a separate shared object, and Lua loads C
** modules with RTLD_LOCAL, so it cannot link against the core's symbols;
** it fetches this table once (lf_api_get) and calls through it. Linking a
** second copy of the core into the companion would not do: the registry
** keys, the handle kinds and the per-state context must be the core's own.
**
** Threads: the table is constant; each function keeps the rules of the
** header it comes from.
** Ownership: static data of the core, valid while futures.core is loaded.
*/
#ifndef LF_API_H
#define LF_API_H

#include <limits.h>
#include <stddef.h>

#include "lua.h"
#include "lf_codec.h"
#include "lf_executor.h"
#include "lf_future.h"

#define LF_API_KEY "futures.core.api"
#define LF_API_VERSION 6   /* 2: lf_codec_opts has share and pins; 3: the
                              runner, call, cancel and interrupt of a future,
                              inboxes, finding the worker interpreter; 4:
                              lf_buf's bytes may be a mapping (mem); 5:
                              encode_initializer, push_pool_paths,
                              buf_detach, 32-bit handle counts; 6: a runner
                              is embedded in its record (one pointer in the
                              future) */

typedef struct lf_api {
  int version;                /* LF_API_VERSION */
  size_t size;                /* sizeof(lf_api) */
  const char *core_version;   /* LF_VERSION */
  /* codec */
  const lf_codec_opts *codec_defaults;
  int (*encode)(lua_State *L, int first, int n, const char *what, int base,
                lf_buf *out, const lf_codec_opts *opts);
  int (*decode)(lua_State *L, const unsigned char *data, size_t len,
                const lf_codec_opts *opts);
  int (*reseal)(unsigned char *data, size_t len);
  int (*serialize)(lua_State *L, int first, const lf_codec_opts *opts);
  void (*buf_free)(lf_buf *b);
  int (*buf_detach)(lf_buf *b, unsigned char **data, size_t *len);
  int (*kind_register)(const lf_handle_kind *kind);
  /* states */
  lua_State *(*new_state)(const char *path, const char *cpath);
  void (*close_state)(lua_State *L);
  /* futures */
  lf_future *(*future_new)(void);
  void (*future_retain)(lf_future *f);
  void (*future_release)(lf_future *f);
  int (*future_set_running)(lf_future *f);
  int (*future_finish)(lf_future *f, lf_buf *res, int failed);
  void (*future_decode_with)(lf_future *f, const lf_codec_opts *opts);
  void (*future_fail)(lf_future *f, const char *type, const char *msg,
                      const lf_codec_opts *opts, lua_State **S);
  void (*future_run_by)(lf_future *f, lf_runner *r);
  int (*future_swap_call)(lf_future *f, lf_buf *b);
  int (*future_cancel)(lf_future *f);
  int (*future_interrupt)(lf_future *f, int why);
  /* inboxes: completed futures queued for whoever watches them */
  lf_inbox *(*inbox_new)(void);
  void (*inbox_close)(lf_inbox *ib);   /* drops the creator's reference */
  int (*inbox_watch)(lf_inbox *ib, lf_future *f);
  lf_future *(*inbox_pop)(lf_inbox *ib);
  int (*inbox_pollfd)(lf_inbox *ib);
  void (*inbox_drain)(lf_inbox *ib);
  /* executors */
  void (*executor_init)(lf_executor *ex, const lf_executor_ops *ops,
                        const lf_pool_config *cfg);
  void (*executor_retain)(lf_executor *ex);
  void (*executor_release)(lf_executor *ex);
  int (*executor_mark_broken)(lf_executor *ex, const char *why);
  void (*executor_free_broken)(lf_executor *ex);
  lf_executor *(*process_pool_new)(const lf_pool_config *cfg);
  int (*interp_find)(const char *opt, char exe[PATH_MAX], char spawn[PATH_MAX],
                     char *err, size_t errsize);
  /* the Lua side (lf_executor_lua.h) */
  lf_executor **(*executor_newud)(lua_State *L);
  void (*executor_adopt)(lua_State *L, lf_executor **ud, lf_executor *ex);
  int (*raise_error)(lua_State *L, const char *type, const char *fmt, ...);
  void (*encode_initializer)(lua_State *L, int opts, lf_buf *out,
                             const lf_codec_opts *copts);
  void (*push_pool_paths)(lua_State *L, lf_pool_config *cfg);
} lf_api;

/* For companions: require futures.core in L and return its API, or raise
** an error naming the mismatch. [-0,+0,e] */
static inline const lf_api *lf_api_get(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "futures.core");
  lua_call(L, 1, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, LF_API_KEY);
  const lf_api *api = (const lf_api *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (api == NULL || api->version != LF_API_VERSION ||
      api->size != sizeof(lf_api)) {
    lua_pushliteral(L, "futures.core is not the version this module was "
                       "built with (rebuild both)");
    lua_error(L);
  }
  return api;
}

/* The module entry: publish the table in L's registry. [-0,+0,m] */
void lf_api_publish(lua_State *L);

#endif
