/*
** lf_squeue_lua.c — the Lua face of shared queues (lf_squeue.h): the
** Queue userdata (put, get, put_nowait, get_nowait, qsize, close, iter,
** and _get_future for event loops), core.Queue, and the handle kind
** through which a queue travels to thread tasks (the same object) and to
** process tasks (by id: there it is a proxy whose operations the worker's
** transport carries to the host, which holds the queue).
**
** Threads: every function runs on the thread that owns the calling state;
** the kind's hooks on any thread, and the hooks of a future's waiter under
** the queue's mutex on whatever thread completes it. A blocking put or get
** parks a waiter on its own stack and waits in slices of LF_WAIT_SLICE,
** checking for Ctrl-C between them; the waiter is always withdrawn (or
** has completed) before the C frame that owns it is left, also when it
** raises.
**
** Ownership: a Queue userdata holds one reference to its lf_squeue (or to
** a proxy), dropped by __gc. An item is encoded by put into an lf_sqitem
** that the queue then owns; get decodes the item it took and frees it
** before returning or raising. The waiter of _get_future is malloc'd,
** owned by the queue while parked, and holds a reference to its future
** and the encoded Closed error it fails the future with if the queue
** closes first.
*/
#include <string.h>

#include "lauxlib.h"

#include "lf_bind.h"
#include "lf_common.h"
#include "lf_context.h"
#include "lf_error.h"
#include "lf_future_lua.h"
#include "lf_squeue.h"
#include "lf_state.h"

/* ---- the handle kind ---- */

static lf_squeue **new_queue_ud(lua_State *L);

static void kind_retain(void *obj) { lf_squeue_retain(obj); }
static void kind_release(void *obj) { lf_squeue_release(obj); }
static void kind_push(lua_State *L, void *obj) {
  lf_squeue **ud = new_queue_ud(L);   /* may raise: before the reference */
  lf_squeue_retain(obj);
  *ud = obj;
}

static const lf_handle_kind squeue_kind = {
  LF_SQUEUE_MT, kind_retain, kind_release, kind_push
};

/* A queue of this process goes down to a process pool's workers; a proxy
** goes back up to the host that shared it, and nowhere else (a worker's
** own pool would have to serve it through the worker). */
static uint64_t kind_export_id(void *obj, int dir) {
  lf_squeue *q = obj;
  if (q->remote != 0) {
    if (dir == LF_SHARE_DOWN) return 0;
    if (dir == LF_SHARE_UP && atomic_load(&q->forgotten)) return 0;
    return q->id;
  }
  return dir == LF_SHARE_UP ? 0 : q->id;
}

static int kind_import(lua_State *L, uint64_t id) {
  /* Only a worker process has a host whose queues an id can name: anywhere
  ** else the id comes from bytes nobody checked. */
  if (lf_squeue_transport_of() == NULL) return -1;
  lf_squeue **ud = new_queue_ud(L);
  *ud = lf_squeue_proxy(id);
  if (*ud == NULL) { lua_pop(L, 1); return -1; }
  return 0;
}

static const lf_export_kind squeue_export = {
  &squeue_kind, LF_SQUEUE_WIRE, kind_export_id, kind_import
};

/* ---- userdata ---- */

static void push_queue_mt(lua_State *L);

/* Pushes a Queue userdata that holds nothing yet (NULL): the caller
** stores a reference in it once nothing can raise any more. [-0,+1,m] */
static lf_squeue **new_queue_ud(lua_State *L) {
  lf_squeue **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = NULL;
  push_queue_mt(L);
  lua_setmetatable(L, -2);
  return ud;
}

/* The queue at idx, whose metatable is expected at index mt (each method
** has it as upvalue 1): a cheaper test than luaL_testudata's registry
** lookup, for the calls of a stream. Falls back to check_queue. */
static lf_squeue *check_queue(lua_State *L, int idx);

static lf_squeue *fast_queue(lua_State *L, int idx, int mt) {
  lf_squeue **ud = lua_touserdata(L, idx);
  if (ud != NULL && lua_getmetatable(L, idx)) {
    int same = lua_rawequal(L, -1, mt);
    lua_pop(L, 1);
    if (same && *ud != NULL) return *ud;
  }
  return check_queue(L, idx);
}

static lf_squeue *check_queue(lua_State *L, int idx) {
  lf_squeue **ud = luaL_testudata(L, idx, LF_SQUEUE_MT);
  if (ud == NULL) {
    const char *got = luaL_getmetafield(L, idx, "__name") == LUA_TSTRING
                    ? lua_tostring(L, -1) : luaL_typename(L, idx);
    luaL_argerror(L, idx, lua_pushfstring(L, LF_SQUEUE_MT " expected, got %s; "
                                          "call it with ':'", got));
  }
  if (*ud == NULL) luaL_argerror(L, idx, "queue is released");
  return *ud;
}

static int queue_gc(lua_State *L) {
  lf_squeue **ud = luaL_checkudata(L, 1, LF_SQUEUE_MT);
  if (*ud) { lf_squeue_release(*ud); *ud = NULL; }
  return 0;
}

static int queue_eq(lua_State *L) {
  lf_squeue **a = luaL_testudata(L, 1, LF_SQUEUE_MT);
  lf_squeue **b = luaL_testudata(L, 2, LF_SQUEUE_MT);
  lua_pushboolean(L, a != NULL && b != NULL && *a != NULL && *a == *b);
  return 1;
}

static int queue_tostring(lua_State *L) {
  lf_squeue **ud = luaL_checkudata(L, 1, LF_SQUEUE_MT);
  lf_squeue *q = *ud;
  if (q == NULL) {
    lua_pushfstring(L, "Queue: %p (released)", (void *)ud);
  } else if (q->remote != 0) {
    lua_pushfstring(L, "Queue: %p (the host's)", (void *)q);
  } else {
    size_t n = lf_squeue_size(q);
    if (q->maxsize > 0)
      lua_pushfstring(L, "Queue: %p (%I item%s, maxsize %I%s)", (void *)q,
                      (lua_Integer)n, n == 1 ? "" : "s",
                      (lua_Integer)q->maxsize,
                      lf_squeue_closed(q) ? ", closed" : "");
    else
      lua_pushfstring(L, "Queue: %p (%I item%s%s)", (void *)q, (lua_Integer)n,
                      n == 1 ? "" : "s", lf_squeue_closed(q) ? ", closed" : "");
  }
  return 1;
}

/* ---- the proxy's transport ---- */

static const lf_squeue_transport *need_transport(lua_State *L) {
  const lf_squeue_transport *t = lf_squeue_transport_of();
  if (t == NULL) luaL_error(L, "a queue proxy outside a worker process");
  return t;
}

/* Raises what a transport said went wrong. [-0,+0,v] */
static int transport_error(lua_State *L, const char *err) {
  return luaL_error(L, "%s", err);
}

/* ---- put and get ---- */

/* Encodes the value at idx into *it for q. Raises at the caller's line
** when it cannot travel. [-0,+0,v] */
static void encode_item(lua_State *L, lf_squeue *q, int idx, lf_sqitem *it) {
  if (lua_isnoneornil(L, idx))
    luaL_argerror(L, idx, "a queue cannot hold nil (get and iter could not "
                  "tell it from no item)");
  if (q->remote == 0) {   /* a plain value stays as it is */
    switch (lua_type(L, idx)) {
      case LUA_TBOOLEAN:
        it->plain = LUA_TBOOLEAN;
        it->v.i = lua_toboolean(L, idx);
        return;
      case LUA_TNUMBER:
        it->plain = LUA_TNUMBER;
        it->isint = (unsigned char)lua_isinteger(L, idx);
        if (it->isint) it->v.i = lua_tointeger(L, idx);
        else it->v.f = lua_tonumber(L, idx);
        return;
      case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len > LF_SQ_INLINE) break;
        it->plain = LUA_TSTRING;
        it->slen = (unsigned char)len;
        memcpy(it->v.s, s, len);
        return;
      }
      default:
        break;
    }
  }
  int rc = lf_encode_plain(L, idx, &it->buf);   /* no Lua either */
  if (rc == 0) return;
  if (rc < 0) luaL_error(L, "not enough memory");
  lf_codec_opts opts = lf_codec_defaults;
  if (q->remote != 0) {   /* to the host, which trusts nothing from us */
    opts.in_process = 0;
    opts.share = LF_SHARE_UP;
  }
  if (lf_encode(L, idx, 1, "item", 1, &it->buf, &opts) != 0) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
    lua_error(L);
  }
}

/* Pushes the value of *it (freed here, also when decoding fails) and
** returns 1, or raises. [-0,+1,v] */
static int push_item(lua_State *L, lf_squeue *q, lf_sqitem *it) {
  switch (it->plain) {
    case LUA_TBOOLEAN: lua_pushboolean(L, (int)it->v.i); return 1;
    case LUA_TNUMBER:
      if (it->isint) lua_pushinteger(L, (lua_Integer)it->v.i);
      else lua_pushnumber(L, (lua_Number)it->v.f);
      return 1;
    case LUA_TSTRING: lua_pushlstring(L, it->v.s, it->slen); return 1;
    default: break;
  }
  lf_codec_opts opts;
  if (q->remote != 0) {
    /* From the host, which says whether the item may carry Lua functions
    ** (not when a worker of a pool that refuses them put it); the shared
    ** objects it names are the host's shares. */
    opts = lf_codec_defaults;
    opts.in_process = 0;
    opts.functions = it->functions;
    if (it->depth > 0) opts.max_depth = it->depth;
  } else {
    opts = lf_sqitem_opts(it);
  }
  if (lf_decode_plain(L, it->buf.data, it->buf.len)) {
    lf_sqitem_free(it);
    return 1;
  }
  int top = lua_gettop(L);
  int n = lf_decode(L, it->buf.data, it->buf.len, &opts);
  lf_sqitem_free(it);
  if (n == 1) return 1;
  if (n == -2)
    return luaL_error(L, "a worker process put a Lua function in the queue "
                      "(item %s); pass return_functions = true to its pool "
                      "to allow it", lua_tostring(L, -1));
  if (n >= 0) {
    lua_settop(L, top);
    return luaL_error(L, "malformed queue item");
  }
  return lua_error(L);
}

/* Blocks in a put (*it is the item) or a get (*it receives it) until it
** is done, `timeout` seconds passed (negative: no limit) or the queue
** closes; returns the outcome. Interruptible: an item already taken is
** given back first, a put's item freed. [-0,+0,v] */
static int block(lua_State *L, lf_squeue *q, int put, lf_sqitem *it,
                 double timeout) {
  lf_run_callbacks(L);   /* what is due, before the wait */
  lf_intr intr;
  lf_intr_begin(L, &intr);
  lf_sqwait w;
  memset(&w, 0, sizeof w);
  w.put = put;
  if (put) { w.item = *it; memset(it, 0, sizeof *it); }
  lf_cond_init(&w.cv);
  int rc = lf_squeue_park(q, &w), interrupted = 0;
  double deadline = timeout < 0 ? -1 : lf_now() + timeout;
  while (rc == LF_SQ_PENDING) {
    double until = lf_now() + LF_WAIT_SLICE;
    if (deadline >= 0 && deadline < until) until = deadline;
    rc = lf_squeue_wait(q, &w, until);
    if (rc != LF_SQ_PENDING) break;
    int late = deadline >= 0 && lf_now() >= deadline;
    if (late || lf_intr_pending(L, &intr)) {
      if (lf_squeue_unpark(q, &w)) {
        rc = put ? LF_SQ_FULL : LF_SQ_EMPTY;
        interrupted = !late;
      } else {
        rc = w.status;   /* it completed meanwhile: take that */
      }
      break;
    }
  }
  LF_CHECK(pthread_cond_destroy(&w.cv));
  *it = w.item;   /* a get's item, or a put's if it did not go in */
  if (interrupted) {
    lf_sqitem_free(it);
    lf_intr_raise(L, &intr);
  }
  return rc;
}

static int raise_outcome(lua_State *L, const char *fname, int rc,
                         double timeout, lf_squeue *q) {
  switch (rc) {
    case LF_SQ_EMPTY:
      if (timeout > 0)
        return lf_raise_error(L, "Empty", "%s: no item after %f seconds",
                              fname, timeout);
      return lf_raise_error(L, "Empty", "%s: the queue is empty", fname);
    case LF_SQ_FULL:
      if (timeout > 0)
        return lf_raise_error(L, "Full", "%s: the queue is still full after "
                              "%f seconds", fname, timeout);
      if (q->remote == 0)
        return lf_raise_error(L, "Full", "%s: the queue is full (maxsize %I)",
                              fname, (lua_Integer)q->maxsize);
      return lf_raise_error(L, "Full", "%s: the queue is full", fname);
    case LF_SQ_CLOSED: {
      int put = strncmp(fname, "put", 3) == 0;
      return lf_raise_error(L, "Closed", "%s: the queue is closed%s", fname,
                            put ? "" : " and empty");
    }
    default:
      return luaL_error(L, "not enough memory");
  }
}

/* put(v [, timeout]); timeout 0 never blocks (put_nowait). */
static int do_put(lua_State *L, const char *fname, double timeout) {
  lf_squeue *q = fast_queue(L, 1, lua_upvalueindex(1));
  lf_sqitem it = LF_SQITEM_INIT;
  encode_item(L, q, 2, &it);
  int rc;
  if (q->remote != 0) {
    char err[256];
    rc = need_transport(L)->put(q->remote, &it, timeout, err, sizeof err);
    lf_sqitem_free(&it);
    if (rc < 0) return transport_error(L, err);
  } else {
    rc = lf_squeue_put(q, &it);
    if (rc == LF_SQ_FULL && timeout != 0) rc = block(L, q, 1, &it, timeout);
    lf_sqitem_free(&it);   /* what did not go in */
  }
  if (rc == LF_SQ_OK) return 0;
  return raise_outcome(L, fname, rc, timeout, q);
}

/* The value of the next item, or an LF_SQ_* outcome other than OK with
** nothing pushed. [-0,+(1|0),v] */
static int do_get(lua_State *L, lf_squeue *q, double timeout) {
  lf_sqitem it = LF_SQITEM_INIT;
  int rc;
  if (q->remote != 0) {
    char err[256];
    rc = need_transport(L)->get(q->remote, timeout, &it, err, sizeof err);
    if (rc < 0) return transport_error(L, err);
  } else {
    rc = lf_squeue_get(q, &it);
    if (rc == LF_SQ_EMPTY && timeout != 0) {
      if (lf_squeue_spin(q, timeout)) rc = lf_squeue_get(q, &it);
    }
    if (rc == LF_SQ_EMPTY && timeout != 0) rc = block(L, q, 0, &it, timeout);
  }
  if (rc != LF_SQ_OK) {
    lf_sqitem_free(&it);
    return rc;
  }
  push_item(L, q, &it);
  return LF_SQ_OK;
}

static int queue_put(lua_State *L) {
  lua_settop(L, 3);
  return do_put(L, "put", lf_opt_timeout(L, 3));
}

static int queue_put_nowait(lua_State *L) {
  lua_settop(L, 2);
  return do_put(L, "put_nowait", 0);
}

static int queue_get(lua_State *L) {
  lf_squeue *q = fast_queue(L, 1, lua_upvalueindex(1));
  double timeout = lf_opt_timeout(L, 2);
  int rc = do_get(L, q, timeout);
  if (rc == LF_SQ_OK) return 1;
  return raise_outcome(L, "get", rc, timeout, q);
}

static int queue_get_nowait(lua_State *L) {
  lf_squeue *q = fast_queue(L, 1, lua_upvalueindex(1));
  int rc = do_get(L, q, 0);
  if (rc == LF_SQ_OK) return 1;
  return raise_outcome(L, "get_nowait", rc, 0, q);
}

static int queue_qsize(lua_State *L) {
  lf_squeue *q = check_queue(L, 1);
  size_t n;
  if (q->remote != 0) {
    char err[256];
    int rc = need_transport(L)->size(q->remote, &n, err, sizeof err);
    if (rc < 0) return transport_error(L, err);
  } else {
    n = lf_squeue_size(q);
  }
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

static int queue_close(lua_State *L) {
  lf_squeue *q = check_queue(L, 1);
  if (q->remote != 0) {
    char err[256];
    if (need_transport(L)->close(q->remote, err, sizeof err) < 0)
      return transport_error(L, err);
  } else {
    lf_squeue_close(q);
    lf_run_callbacks(L);
  }
  return 0;
}

/* The step of q:iter(): the next item, or nil once the queue is closed
** and drained. Upvalues: the queue, the timeout (or nil), the metatable. */
static int iter_step(lua_State *L) {
  lf_squeue *q = fast_queue(L, lua_upvalueindex(1), lua_upvalueindex(3));
  double timeout = lf_opt_timeout(L, lua_upvalueindex(2));
  int rc = do_get(L, q, timeout);
  if (rc == LF_SQ_OK) return 1;
  if (rc == LF_SQ_CLOSED) return 0;
  return raise_outcome(L, "iter", rc, timeout, q);
}

/* q:iter([timeout]) -> an iterator for a generic for */
static int queue_iter(lua_State *L) {
  check_queue(L, 1);
  lf_opt_timeout(L, 2);
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushcclosure(L, iter_step, 3);
  return 1;
}

/* ---- a future of the next item (for event loops) ---- */

typedef struct future_wait {
  lf_sqwait w;            /* first: the queue's view */
  lf_future *f;           /* one reference */
  lf_buf closed;          /* (Closed error, "") to fail f with */
} future_wait;

static void future_wait_free(future_wait *fw) {
  lf_future_release(fw->f);
  lf_buf_free(&fw->closed);
  lf_sqitem_free(&fw->w.item);
  free(fw);
}

/* Completes f with the item in fw (or the Closed error) and frees fw. */
static void future_wait_finish(future_wait *fw, int status) {
  if (status == LF_SQ_OK && lf_sqitem_encode(&fw->w.item) != 0) {
    lf_sqitem_free(&fw->w.item);   /* no memory for the bytes: a failure */
    lf_buf_free(&fw->closed);
    lf_future_finish(fw->f, &fw->closed, 1);
    future_wait_free(fw);
    return;
  }
  if (status == LF_SQ_OK) {
    lf_codec_opts o = lf_sqitem_opts(&fw->w.item);
    lf_future_decode_with(fw->f, &o);
    if (lf_future_finish(fw->f, &fw->w.item.buf, 0) != 0)
      lf_sqitem_free(&fw->w.item);   /* cancelled: cannot happen once claimed */
  } else {
    lf_future_finish(fw->f, &fw->closed, 1);
  }
  future_wait_free(fw);
}

/* A future cancelled while parked no longer wants an item. */
static int fw_claim(lf_sqwait *w) {
  future_wait *fw = (future_wait *)w;
  if (lf_future_set_running(fw->f) == 1) return 0;
  future_wait_free(fw);
  return -1;
}

static void fw_done(lf_sqwait *w) {
  future_wait_finish((future_wait *)w, w->status);
}

/* q:_get_future() -> a future of the next item: its result is the item,
** or it fails with Closed once the queue is closed and drained. Cancel it
** to withdraw the request (an item it took already is its result). Until
** it is done the queue holds it: whoever stops waiting must cancel it, or
** the next item goes to it all the same. Not for a queue of the host. */
static int queue_get_future(lua_State *L) {
  lf_squeue *q = check_queue(L, 1);
  if (q->remote != 0)
    return luaL_error(L, "a queue of the host has no _get_future in a worker");
  lf_future *f = lf_future_new();
  if (f == NULL) return luaL_error(L, "not enough memory");
  lf_push_future(L, f);                    /* owns f's first reference */
  future_wait *fw = calloc(1, sizeof *fw);
  if (fw == NULL) return luaL_error(L, "not enough memory");
  if (lf_error_encode(L, "Closed", "the queue is closed and empty",
                      &fw->closed, &lf_codec_defaults) != 0) {
    free(fw);
    return luaL_error(L, "not enough memory");
  }
  lf_future_retain(f);
  fw->f = f;
  fw->w.claim = fw_claim;
  fw->w.done = fw_done;
  int rc = lf_squeue_park(q, &fw->w);
  if (rc != LF_SQ_PENDING) {
    if (rc == LF_SQ_OK) lf_future_set_running(f);
    future_wait_finish(fw, rc);
  }
  return 1;
}

/* core.Queue(maxsize) — the Lua side checks the options. */
static int core_queue(lua_State *L) {
  lua_Integer maxsize = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, maxsize >= 0, 1, "maxsize must not be negative");
  lf_squeue **ud = new_queue_ud(L);
  *ud = lf_squeue_new((size_t)maxsize);
  if (*ud == NULL) return luaL_error(L, "not enough memory");
  return 1;
}

static const luaL_Reg queue_methods[] = {
  {"put", queue_put},
  {"get", queue_get},
  {"put_nowait", queue_put_nowait},
  {"get_nowait", queue_get_nowait},
  {"qsize", queue_qsize},
  {"close", queue_close},
  {"iter", queue_iter},
  {"_get_future", queue_get_future},
  {NULL, NULL}
};

/* Pushes the Queue metatable, creating it in this state if needed (a
** worker state decodes queues before it opens futures.core). [-0,+1,m] */
static void push_queue_mt(lua_State *L) {
  if (luaL_newmetatable(L, LF_SQUEUE_MT)) {
    luaL_newlibtable(L, queue_methods);
    lua_pushvalue(L, -2);   /* every method's upvalue: the metatable */
    luaL_setfuncs(L, queue_methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, queue_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, queue_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, queue_eq);
    lua_setfield(L, -2, "__eq");
  }
}

void lf_bind_squeue(lua_State *L) {
  lf_export_register(&squeue_export);
  lua_pushcfunction(L, core_queue);
  lua_setfield(L, -2, "Queue");
  push_queue_mt(L);
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "queue_methods");
  lua_pop(L, 1);
}
