/*
** lf_executor.c — the parts every executor back-end shares: reference
** counting, the future queue, marking a pool broken and failing futures
** (lf_executor.h).
**
** Threads: any thread; a queue is guarded by its back-end's mutex.
** Ownership: see lf_executor.h. The reference that takes the count from 2
** to 1 leaves only the owner's: nothing else can reach the executor, so it
** stops accepting work (there is nobody left to submit) and lets its queue
** drain; the owner joins it later. The last reference destroys it. A
** scratch state for error objects belongs to whoever passed its pointer.
*/
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_error.h"
#include "lf_executor.h"

_Thread_local lf_executor *lf_current_executor = NULL;

/* The last origin reference: the executor's own are gone too. */
static void origin_release(lf_origin *o) {
  lf_executor *ex = lf_origin_executor(o);
  ex->ops->destroy(ex);
}

void lf_executor_init(lf_executor *ex, const lf_executor_ops *ops,
                      const lf_pool_config *cfg) {
  ex->ops = ops;
  atomic_init(&ex->refs, 1);
  atomic_init(&ex->origin.refs, 1);   /* held by the references above */
  ex->origin.release = origin_release;
  ex->broken = NULL;
  ex->opts = lf_codec_defaults;
  ex->opts.in_process = ops->in_process;
  ex->opts.share = LF_SHARE_DOWN;   /* queues and shared arrays may go */
  if (cfg->max_depth > 0) ex->opts.max_depth = cfg->max_depth;
  ex->opts.functions = ops->in_process || cfg->return_functions;
  ex->task_timeout = cfg->task_timeout;
}

void lf_executor_retain(lf_executor *ex) {
  atomic_fetch_add_explicit(&ex->refs, 1, memory_order_relaxed);
}

void lf_executor_release(lf_executor *ex) {
  int old = atomic_fetch_sub_explicit(&ex->refs, 1, memory_order_acq_rel);
  if (old == 2) ex->ops->shutdown(ex, 0);
  else if (old == 1) lf_origin_release(&ex->origin);
}

/* The reason of a pool broken while memory was too short to copy the real
** one. Never freed. */
static char broken_no_memory[] = "the pool is broken (not enough memory to say why)";

int lf_executor_mark_broken(lf_executor *ex, const char *why) {
  if (ex->broken != NULL) return 0;
  ex->broken = strdup(why);
  if (ex->broken == NULL) ex->broken = broken_no_memory;
  return 1;
}

void lf_executor_free_broken(lf_executor *ex) {
  if (ex->broken != broken_no_memory) free(ex->broken);
  ex->broken = NULL;
}

/* ---- the queue ---- */

void lf_queue_init(lf_queue *q) {
  q->head = q->tail = NULL;
  atomic_init(&q->count, 0);
}

void lf_queue_push(lf_queue *q, lf_future *f) {
  f->next_queued = NULL;
  if (q->tail) q->tail->next_queued = f; else q->head = f;
  q->tail = f;
  atomic_fetch_add_explicit(&q->count, 1, memory_order_release);
}

void lf_queue_push_front(lf_queue *q, lf_future *f) {
  f->next_queued = q->head;
  q->head = f;
  if (q->tail == NULL) q->tail = f;
  atomic_fetch_add_explicit(&q->count, 1, memory_order_release);
}

lf_future *lf_queue_pop(lf_queue *q) {
  lf_future *f = q->head;
  if (f == NULL) return NULL;
  q->head = f->next_queued;
  if (q->head == NULL) q->tail = NULL;
  f->next_queued = NULL;
  atomic_fetch_sub_explicit(&q->count, 1, memory_order_relaxed);
  return f;
}

int lf_queue_remove(lf_queue *q, lf_future *f, int limit) {
  lf_future *prev = NULL;
  for (lf_future *g = q->head; g != NULL && limit-- > 0;
       prev = g, g = g->next_queued) {
    if (g != f) continue;
    if (prev) prev->next_queued = g->next_queued; else q->head = g->next_queued;
    if (q->tail == g) q->tail = prev;
    g->next_queued = NULL;
    atomic_fetch_sub_explicit(&q->count, 1, memory_order_relaxed);
    return 1;
  }
  return 0;
}

lf_future *lf_queue_take(lf_queue *q) {
  lf_future *f = q->head;
  q->head = q->tail = NULL;
  atomic_store_explicit(&q->count, 0, memory_order_relaxed);
  return f;
}

/* ---- failing futures ---- */

typedef struct text_error {
  const char *type, *msg;
  lf_buf *out;
  const lf_codec_opts *opts;
  int rc;
} text_error;

/* Encodes ("<type>: <msg>", "") under lua_pcall. */
static int encode_text_error(lua_State *L) {
  text_error *t = lua_touserdata(L, 1);
  lua_pushfstring(L, "%s: %s", t->type, t->msg);
  lua_pushliteral(L, "");
  t->rc = lf_encode(L, lua_gettop(L) - 1, 2, "error", 1, t->out, t->opts);
  return 0;
}

void lf_future_fail(lf_future *f, const char *type, const char *msg,
                    const lf_codec_opts *opts, lua_State **S) {
  if (lf_future_set_running(f) == 0) return;   /* cancelled already */
  lf_buf err = LF_BUF_INIT;
  if (*S == NULL) *S = luaL_newstate();
  if (*S != NULL && lf_error_encode(*S, type, msg, &err, opts) != 0) {
    text_error t = { type, msg, &err, opts, -1 };
    int top = lua_gettop(*S);
    lua_pushcfunction(*S, encode_text_error);
    lua_pushlightuserdata(*S, &t);
    if (lua_pcall(*S, 1, 0, 0) != LUA_OK || t.rc != 0) lf_buf_free(&err);
    lua_settop(*S, top);
  }
  /* Not even memory for a string: an empty failure, which result() reports
  ** as "not enough memory". */
  lf_future_finish(f, &err, 1);
  lf_buf_free(&err);
}

void lf_fail_queue(lf_future *q, const char *type, const char *msg,
                   const lf_codec_opts *opts, lua_State **scratch) {
  lua_State *S = NULL;
  lua_State **use = scratch != NULL ? scratch : &S;
  while (q != NULL) {
    lf_future *next = q->next_queued;
    lf_future_fail(q, type, msg, opts, use);
    lf_future_release(q);
    q = next;
  }
  if (S != NULL) lua_close(S);
}
