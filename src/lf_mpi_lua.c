/*
** lf_mpi_lua.c — luaopen_futures_mpi, the entry of futures.mpi, and its
** functions:
**   pool(opts)        an MPIPoolExecutor (futures.MPIPoolExecutor checks
**                     the options first); in a world of one rank, a
**                     ProcessPoolExecutor with the same options
**   world()           { mode = "world" | "spawn" | "single" | "alone",
**                       size = ranks, rank = 0, host = name }
**   _announce(who)    say once on stderr that the world has one rank
**                     (what `lua-futures --mpi` does without a launcher)
** Loading the module starts the process's MPI (lf_mpi_world.c): on a rank
** other than 0 of an MPI job, require serves tasks and ends the process
** instead of returning.
**
** Threads: the Lua thread that calls; pool may wait for spawned ranks.
** Ownership: an executor made here is owned as the core's pools are: its
** userdata first, then lf_api's executor_adopt (the creating state's owner
** reference). The module itself stays mapped for the life of the process
** (RTLD_NODELETE), since its MPI thread and atexit handler outlive any
** lua_close; libmpi is made global in case a build of MPI loads plugins
** that expect its symbols there.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"

#include "lf_mpi.h"

const lf_api *lf_mpi_api;

#define api lf_mpi_api
#define SPAWN_TIMEOUT 30.0   /* seconds, by default */

static const char *mode_name(int mode) {
  switch (mode) {
    case LF_MPI_WORLD: return "world";
    case LF_MPI_SPAWN: return "spawn";
    case LF_MPI_SINGLE: return "single";
    default: return "alone";
  }
}

/* The one line that says a world has one rank, once per process. */
static void note_once(const char *who) {
  static int said;
  if (said) return;
  said = 1;
  if (lf_mpi_world_mode() == LF_MPI_SINGLE)
    fprintf(stderr, "%s: the MPI world has one rank: MPIPoolExecutor runs "
            "its tasks in local worker processes (start more ranks with "
            "mpiexec -n N)\n", who);
  else
    fprintf(stderr, "%s: no MPI launcher started this process: it is a "
            "world of one rank, and MPIPoolExecutor runs its tasks in local "
            "worker processes (start it with mpiexec -n N)\n", who);
  fflush(stderr);
}

static int mpi_announce(lua_State *L) {
  const char *who = luaL_optstring(L, 1, "futures.mpi");
  int mode = lf_mpi_world_mode();
  if (mode == LF_MPI_ALONE || mode == LF_MPI_SINGLE) note_once(who);
  return 0;
}

static int mpi_world(lua_State *L) {
  int mode = lf_mpi_world_mode();
  lua_createtable(L, 0, 4);
  lua_pushstring(L, mode_name(mode));
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, lf_mpi_world_size());
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, 0);
  lua_setfield(L, -2, "rank");
  lua_pushstring(L, lf_mpi_world_host());
  lua_setfield(L, -2, "host");
  return 1;
}

/* ---- pool ---- */

static lua_Integer opt_integer(lua_State *L, const char *key,
                               lua_Integer dflt) {
  lua_getfield(L, 1, key);
  lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static lua_Number opt_number(lua_State *L, const char *key, lua_Number dflt) {
  lua_getfield(L, 1, key);
  lua_Number v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

static int cpu_count(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "futures.core");
  lua_getfield(L, -1, "cpu_count");
  lua_call(L, 0, 1);
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 3);
  return n > 0 ? n : 1;
}

/* pool(opts) -> executor. opts were checked by futures.MPIPoolExecutor;
** errors carry no position (the Lua side adds the caller's). */
static int mpi_pool(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lf_pool_config cfg;
  memset(&cfg, 0, sizeof cfg);
  lua_Integer max_workers = opt_integer(L, "max_workers", 0);
  cfg.max_depth = (int)opt_integer(L, "max_depth", 0);
  lua_getfield(L, 1, "return_functions");
  cfg.return_functions = lua_toboolean(L, -1);
  lua_pop(L, 1);
  cfg.max_tasks_per_child = (long)opt_integer(L, "max_tasks_per_child", 0);
  cfg.max_memory = (size_t)opt_integer(L, "max_memory", 0);
  cfg.task_timeout = opt_number(L, "task_timeout", 0);
  cfg.grace = opt_number(L, "grace", 0);
  lua_Integer spawn = opt_integer(L, "spawn", 0);
  double spawn_timeout = opt_number(L, "spawn_timeout", SPAWN_TIMEOUT);
  lua_getfield(L, 1, "worker");                              /* 2 */
  const char *worker = lua_tostring(L, 2);
  api->push_pool_paths(L, &cfg);                             /* 3..5 */
  char exe[PATH_MAX], spawn_path[PATH_MAX], err[PATH_MAX * 3 + 700];
  int mode = lf_mpi_world_mode();
  int local = spawn == 0 && mode != LF_MPI_WORLD && mode != LF_MPI_SPAWN;
  if (spawn > 0 || local) {   /* this process starts the interpreter */
    if (api->interp_find(worker, exe, spawn_path, err, sizeof err) != 0)
      return luaL_error(L, "MPIPoolExecutor: %s", err);
    cfg.exe = exe;
    cfg.spawn_path = spawn_path;
  }
  if (spawn > 0 &&
      lf_mpi_world_spawn((int)spawn, exe, cfg.path, cfg.cpath, spawn_timeout,
                         err, sizeof err) != 0)
    return luaL_error(L, "MPIPoolExecutor: %s", err);
  lf_executor **ud = api->executor_newud(L);                 /* 6 */
  lf_codec_opts copts = *api->codec_defaults;
  copts.in_process = 0;
  copts.share = local ? LF_SHARE_DOWN : LF_SHARE_NONE;
  if (cfg.max_depth > 0) copts.max_depth = cfg.max_depth;
  lf_buf init = LF_BUF_INIT;
  api->encode_initializer(L, 1, &init, &copts);
  lf_executor *ex;
  if (local) {
    note_once("MPIPoolExecutor");
    cfg.max_workers = max_workers > 0 ? (int)max_workers : cpu_count(L);
    cfg.init = &init;
    ex = api->process_pool_new(&cfg);
  } else {
    int ranks = spawn > 0 ? (int)spawn : lf_mpi_engine_ranks();
    cfg.max_workers = max_workers > 0 && max_workers < ranks
                          ? (int)max_workers : ranks;
    ex = lf_mpi_pool_new(&cfg, &init, worker);
  }
  api->buf_free(&init);
  if (ex == NULL) return luaL_error(L, "not enough memory");
  api->executor_adopt(L, ud, ex);
  return 1;
}

static const luaL_Reg mpi_funcs[] = {
  {"pool", mpi_pool},
  {"world", mpi_world},
  {"_announce", mpi_announce},
  {NULL, NULL}
};

/* This module holds the MPI thread and an atexit handler: it must stay
** mapped after lua_close unloads it. libmpi goes to the global scope, as
** if the program had linked it, for MPI plugins that expect to find its
** symbols there (Open MPI's find them by luck of load order). */
static void keep_loaded(void) {
  Dl_info info;
  if (dladdr((void *)&lf_mpi_api, &info) != 0 && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
  if (dladdr((void *)&MPI_Init_thread, &info) != 0 && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
}

int luaopen_futures_mpi(lua_State *L);

int luaopen_futures_mpi(lua_State *L) {
  lf_mpi_api = lf_api_get(L);
  keep_loaded();
  char why[700];
  if (lf_mpi_world_start(why, sizeof why) < 0)
    return luaL_error(L, "futures.mpi: %s", why);
  luaL_newlib(L, mpi_funcs);
  return 1;
}
