/*
** lf_context.c — the per-state context (lf_context.h): callbacks inbox,
** callbacks waiting by future, executors to join at lua_close.
**
** Threads: only the thread that owns the state.
** Ownership: see lf_context.h. The callbacks waiting in a state are a Lua
** table (the context's user value 1): future pointer (light userdata) ->
** { future userdata, fn, fn... }; it keeps the userdata and the functions
** alive until the callbacks ran. ctx->npending counts its entries; under
** the key &LATER_KEY it also holds the callbacks deferred while others ran
** ({ fn, future userdata, fn, future userdata... }, ctx->nlater pairs).
** User value 2 is the pending hook (lf_set_pending_hook), or nil.
*/
#include <stdio.h>
#include <stdlib.h>

#include "lauxlib.h"

#include "lf_common.h"
#include "lf_context.h"
#include "lf_lend.h"
#include "lf_state.h"

static const char CTX_KEY = 'c';       /* registry: the lf_ctx userdata */
static const char LATER_KEY = 'l';     /* pending table: deferred callbacks */
#define CTX_MT "futures.context"

/* Pushes the table of callbacks waiting in this state. [-0,+1,-] */
static void push_pending(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
}

static int report_callback_error(lua_State *L) {
  fprintf(stderr, "lua-futures: exception calling a done callback: %s\n",
          luaL_tolstring(L, 1, NULL));
  fflush(stderr);
  return 0;
}

static int report_hook_error(lua_State *L) {
  fprintf(stderr, "lua-futures: error in the pending hook: %s\n",
          luaL_tolstring(L, 1, NULL));
  fflush(stderr);
  return 0;
}

/* Tell the hook whether callbacks wait here, if that changed since it was
** last told. Not while callbacks run (their end tells), nor at close. */
static void tell_hook(lua_State *L, lf_ctx *ctx) {
  if (!ctx->hooked || ctx->closing || ctx->draining) return;
  int busy = ctx->npending > 0;
  if (busy == ctx->told) return;
  ctx->told = busy;
  luaL_checkstack(L, 4, NULL);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
  lua_getiuservalue(L, -1, 2);
  lua_remove(L, -2);
  lua_pushboolean(L, busy);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) return;
  lua_pushcfunction(L, report_hook_error);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
}

/* Defer the callback fn (at -2) of the future userdata at -1 until the
** running callback returns; pops both. [-2,+0,m] */
static void defer_callback(lua_State *L, lf_ctx *ctx) {
  push_pending(L);
  if (lua_rawgetp(L, -1, &LATER_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, -3, &LATER_KEY);
  }
  lua_Integer n = 2 * (lua_Integer)ctx->nlater;
  lua_pushvalue(L, -4);
  lua_rawseti(L, -2, n + 1);
  lua_pushvalue(L, -3);
  lua_rawseti(L, -2, n + 2);
  ctx->nlater++;
  lua_pop(L, 4);
}

/* Run the deferred callbacks, oldest first, and those they defer in turn:
** a loop, however long the chain. Returns how many ran. [-0,+0,-] */
static int run_later(lua_State *L, lf_ctx *ctx) {
  int ran = 0;
  while (ctx->nlater > 0) {
    int n = ctx->nlater;
    ctx->nlater = 0;
    push_pending(L);
    lua_rawgetp(L, -1, &LATER_KEY);
    lua_pushnil(L);
    lua_rawsetp(L, -3, &LATER_KEY);   /* this batch is taken */
    for (int i = 0; i < n; i++) {
      lua_rawgeti(L, -1, 2 * i + 1);
      lua_rawgeti(L, -2, 2 * i + 2);
      lf_call_callback(L);
      ran++;
    }
    lua_pop(L, 2);
  }
  return ran;
}

/* A callback added to a future that is done already runs at once — but one
** added by a running callback waits until that one returns: a chain of
** callbacks that each add one to a finished future would otherwise nest
** until the C stack overflows. */
void lf_call_callback_now(lua_State *L) {
  lf_ctx *ctx = lf_testctx(L);
  if (ctx == NULL) {
    lf_call_callback(L);
    return;
  }
  if (ctx->draining) {
    defer_callback(L, ctx);
    return;
  }
  ctx->draining = 1;
  lf_call_callback(L);
  run_later(L, ctx);
  ctx->draining = 0;
  /* What the callbacks registered was not told while they ran: an event
  ** loop must hear that callbacks wait now, or it may stop watching. */
  tell_hook(L, ctx);
}

void lf_call_callback(lua_State *L) {
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) return;
  lua_pushcfunction(L, report_callback_error);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    fputs("lua-futures: exception calling a done callback "
          "(its error value could not be printed)\n", stderr);
    lua_pop(L, 1);
  }
}

/* Runs the callbacks of the completed future f (one reference, which this
** drops). At lua_close the future's userdata may have been finalized
** before the context: the callbacks then get a new userdata, released
** here because no finalizer runs for objects made while a state closes.
** [-0,+0,-] */
static int run_for(lua_State *L, lf_ctx *ctx, lf_future *f) {
  int ran = 0;
  push_pending(L);
  if (lua_rawgetp(L, -1, f) == LUA_TTABLE) {
    int t = lua_gettop(L);
    lua_pushnil(L);
    lua_rawsetp(L, -3, f);
    ctx->npending--;
    lua_rawgeti(L, t, 1);
    lf_future **ud = lua_touserdata(L, -1);
    lf_future **fresh = NULL;
    if (ud == NULL || *ud == NULL) {
      lua_pop(L, 1);
      /* lf_push_future is a Lua face, a layer above this one; the
      ** metatable exists, since a future userdata added the callback. */
      fresh = lua_newuserdatauv(L, sizeof *fresh, 1);
      *fresh = NULL;
      luaL_setmetatable(L, LF_FUTURE_MT);
      lf_future_retain(f);
      *fresh = f;
    }
    int ud_idx = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t);
    for (lua_Integer i = 2; i <= n; i++) {
      lua_rawgeti(L, t, i);
      lua_pushvalue(L, ud_idx);
      lf_call_callback(L);
      ran++;
      ran += run_later(L, ctx);
    }
    if (fresh != NULL && *fresh != NULL) {
      lf_future_release(*fresh);
      *fresh = NULL;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  lf_future_release(f);
  return ran;
}

int lf_run_callbacks(lua_State *L) {
  lf_lend_collect_if(L);   /* strings this state lent that are free now */
  lf_ctx *ctx = lf_testctx(L);
  /* A callback that calls result() enters here again: the outer call runs
  ** everything, so the inner one returns at once (no deep recursion). */
  if (ctx == NULL || ctx->draining) return 0;
  /* The common case, on every submit and result: nothing registered, so
  ** nothing can be due (the inbox only ever gets futures counted here). */
  if (ctx->npending == 0 && ctx->helper == NULL && !ctx->told) return 0;
  ctx->draining = 1;
  int ran = 0;
  if (ctx->helper != NULL) {
    ran = lf_run_callbacks(ctx->helper);
    /* the helper's kept blocks, unused a while: this state is not running
    ** tasks itself any more */
    lf_state_drop_idle_blocks(ctx->helper, LF_STATE_HOLD);
  }
  lf_future *f;
  if (ctx->inbox != NULL)
    while ((f = lf_inbox_pop(ctx->inbox)) != NULL) ran += run_for(L, ctx, f);
  ctx->draining = 0;
  tell_hook(L, ctx);
  return ran;
}

int lf_poll(lua_State *L) {
  int ran = lf_run_callbacks(L);
  lf_ctx *ctx = lf_testctx(L);
  if (ctx != NULL && ctx->inbox != NULL) lf_inbox_drain(ctx->inbox);
  return ran;
}

void lf_ctx_set_helper(lua_State *L, lua_State *H) {
  lf_ctx *ctx = H != NULL ? lf_getctx(L) : lf_testctx(L);
  if (ctx != NULL) ctx->helper = H;
}

int lf_has_pending_callbacks(lua_State *L) {
  lf_ctx *ctx = lf_testctx(L);
  return ctx != NULL && ctx->npending > 0;
}

int lf_remove_callback(lua_State *L, lf_future *f, int fidx) {
  lf_ctx *ctx = lf_testctx(L);
  if (ctx == NULL) return 0;
  fidx = lua_absindex(L, fidx);
  push_pending(L);
  int removed = 0;
  if (lua_rawgetp(L, -1, f) == LUA_TTABLE) {
    int t = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, t), keep = 1;
    for (lua_Integer i = 2; i <= n; i++) {   /* [1] is the future userdata */
      lua_rawgeti(L, t, i);
      if (lua_rawequal(L, -1, fidx)) { lua_pop(L, 1); removed++; }
      else lua_rawseti(L, t, ++keep);
    }
    for (lua_Integer i = keep + 1; i <= n; i++) {
      lua_pushnil(L);
      lua_rawseti(L, t, i);
    }
    if (keep == 1 && removed > 0) {   /* no callback left: not pending */
      lua_pushnil(L);
      lua_rawsetp(L, t - 1, f);
      ctx->npending--;
      if (ctx->inbox != NULL) lf_inbox_unwatch(ctx->inbox, f);
    }
  }
  lua_pop(L, 2);
  if (removed > 0) tell_hook(L, ctx);
  return removed;
}

void lf_set_pending_hook(lua_State *L, int idx) {
  lf_ctx *ctx = lf_getctx(L);
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, -2, 2);
  lua_pop(L, 1);
  ctx->hooked = !lua_isnil(L, idx);
  ctx->told = -1;   /* tell the new hook where things stand */
  tell_hook(L, ctx);
}

int lf_pollfd(lua_State *L) {
  lf_ctx *ctx = lf_getctx(L);
  int fd = ctx->inbox != NULL ? lf_inbox_pollfd(ctx->inbox) : -1;
  if (fd < 0)
    return luaL_error(L, "cannot make the descriptor of futures.pollfd: %s",
                      ctx->inbox != NULL ? strerror(errno) : "the state is closing");
  return fd;
}

int lf_add_callback(lua_State *L, int uidx, lf_future *f, int fidx) {
  lf_ctx *ctx = lf_getctx(L);
  uidx = lua_absindex(L, uidx);
  fidx = lua_absindex(L, fidx);
  push_pending(L);
  int t = lua_gettop(L);
  if (lua_rawgetp(L, t, f) == LUA_TTABLE) {   /* more for a watched future */
    lua_pushvalue(L, fidx);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
    return 1;
  }
  lua_pop(L, 1);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, uidx);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, fidx);
  lua_rawseti(L, -2, 2);
  lua_rawsetp(L, t, f);
  int rc = lf_inbox_watch(ctx->inbox, f);
  if (rc == 1) {
    lua_pop(L, 1);
    ctx->npending++;
    tell_hook(L, ctx);
    return 1;
  }
  lua_pushnil(L);
  lua_rawsetp(L, t, f);
  lua_pop(L, 1);
  if (rc < 0) luaL_error(L, "not enough memory");
  return 0;
}

static int ctx_gc(lua_State *L) {
  lf_ctx *ctx = luaL_checkudata(L, 1, CTX_MT);
  /* The hook belongs to a loop that may be finalized already. */
  ctx->closing = 1;
  /* Shut everything down first, then join: a worker of one pool may be
  ** waiting on a future of another. */
  for (size_t i = 0; i < ctx->nowned; i++)
    ctx->owned[i]->ops->shutdown(ctx->owned[i], 0);
  for (size_t i = 0; i < ctx->nowned; i++)
    ctx->owned[i]->ops->join(ctx->owned[i], -1);
  /* Every task of this state's pools has ended: run what is due, as
  ** Python runs every callback before its interpreter exits. */
  lf_run_callbacks(L);
  for (size_t i = 0; i < ctx->nowned; i++) lf_executor_release(ctx->owned[i]);
  free(ctx->owned);
  ctx->owned = NULL;
  ctx->nowned = ctx->capowned = 0;
  if (ctx->inbox) { lf_inbox_close(ctx->inbox); ctx->inbox = NULL; }
  return 0;
}

void lf_ctx_open(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  lf_ctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 2);
  memset(ctx, 0, sizeof *ctx);
  if (luaL_newmetatable(L, CTX_MT)) {
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  ctx->inbox = lf_inbox_new();
  if (ctx->inbox == NULL) luaL_error(L, "not enough memory");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &CTX_KEY);
}

lf_ctx *lf_testctx(lua_State *L) {
  lf_ctx *ctx = NULL;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &CTX_KEY) == LUA_TUSERDATA)
    ctx = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return ctx;
}

lf_ctx *lf_getctx(lua_State *L) {
  lf_ctx *ctx = lf_testctx(L);
  if (ctx == NULL) {
    lf_ctx_open(L);
    ctx = lf_testctx(L);
  }
  return ctx;
}

void lf_own_executor(lua_State *L, lf_executor *ex) {
  lf_ctx *ctx = lf_getctx(L);
  /* Reap first: join and free the executors nobody can reach any more. */
  size_t keep = 0;
  for (size_t i = 0; i < ctx->nowned; i++) {
    lf_executor *old = ctx->owned[i];
    if (atomic_load(&old->refs) == 1 && old->ops->join(old, 0) == 1)
      lf_executor_release(old);
    else
      ctx->owned[keep++] = old;
  }
  ctx->nowned = keep;
  if (ctx->nowned == ctx->capowned) {
    size_t cap = ctx->capowned ? ctx->capowned * 2 : 8;
    lf_executor **owned = realloc(ctx->owned, cap * sizeof *owned);
    if (owned == NULL) {
      ex->ops->shutdown(ex, 1);
      ex->ops->join(ex, -1);
      lf_executor_release(ex);
      luaL_error(L, "not enough memory");
    }
    ctx->owned = owned;
    ctx->capowned = cap;
  }
  ctx->owned[ctx->nowned++] = ex;
}
