/*
** lf_api.c — the table of lf_api.h, filled with the core's functions.
**
** Threads: constant data.
** Ownership: static.
*/
#include "lauxlib.h"

#include "lf_api.h"
#include "lf_bind.h"
#include "lf_common.h"
#include "lf_error.h"
#include "lf_executor_lua.h"
#include "lf_interp.h"
#include "lf_process_pool.h"
#include "lf_state.h"

static const lf_api api = {
  LF_API_VERSION, sizeof(lf_api), LF_VERSION,
  &lf_codec_defaults, lf_encode, lf_decode, lf_codec_reseal, lf_serialize_from,
  lf_buf_free, lf_buf_detach,
  lf_kind_register,
  lf_new_state, lf_close_state,
  lf_future_new, lf_future_retain, lf_future_release, lf_future_set_running,
  lf_future_finish, lf_future_decode_with, lf_future_fail,
  lf_future_run_by, lf_future_swap_call, lf_future_cancel,
  lf_future_interrupt,
  lf_inbox_new, lf_inbox_close, lf_inbox_watch,
  lf_inbox_pop, lf_inbox_pollfd, lf_inbox_drain,
  lf_executor_init, lf_executor_retain, lf_executor_release,
  lf_executor_mark_broken, lf_executor_free_broken, lf_process_pool_new,
  lf_interp_find,
  lf_executor_newud, lf_executor_adopt, lf_raise_error, lf_encode_initializer,
  lf_push_pool_paths,
};

void lf_api_publish(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&api);
  lua_setfield(L, LUA_REGISTRYINDEX, LF_API_KEY);
}
