/*
** main.c — bin/lua-futures, the bundled interpreter: a stand-alone Lua 5.4
** interpreter with the command line of lua5.4 (a script and its arguments,
** -e, -l, -i, -v, -E, -W, -, --, LUA_INIT, the interactive prompt) in which
** futures.core is linked in and the lua/futures/ modules are preloaded, so
** that `require "futures"` works with no LUA_PATH or LUA_CPATH. Started as
** `lua-futures --lf-worker ...` it is a process-pool worker instead. One
** option of its own, `--mpi`, loads futures.mpi (build/futures/mpi.so, at
** run time: this program does not link MPI) before anything else, so that
** under mpiexec rank 0 runs the script and the other ranks serve tasks.
**
** Threads: everything here runs on the main thread, which owns the one
** lua_State, except the SIGINT handler. The kernel may run that handler on
** any thread of the process (a pool's worker threads included); it only
** resets SIGINT to its default action and calls lua_sethook on the main
** state, which Lua makes safe to do asynchronously (lua.c relies on the same).
** The handler is installed only while user code runs (call_user), so Ctrl-C
** at the prompt or during start-up ends the process at once, as in lua5.4.
** A blocking call of the core sees the hook appear (lf_intr_pending) and
** raises "interrupted!" itself.
**
** Ownership: main creates the state and closes it before returning; closing
** it also joins every worker the futures module started. Text from the
** command line, the environment and stdin is copied into the state; nothing
** else is allocated outside it.
*/
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#include "lf_common.h"
#include "lf_future_lua.h"
#include "lf_preload.h"
#include "lf_process_worker.h"
#include "lf_state.h"

#define PROGNAME "lua-futures"

/* Prefix of error messages; NULL in the interactive loop, where the user
** knows who is talking (as in lua5.4). */
static const char *progname = PROGNAME;


/* {======================================================================
** Messages
** ======================================================================= */

static void print_message(const char *msg) {
  if (progname != NULL) fprintf(stderr, "%s: ", progname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* When status is an error, prints the error value on top of the stack and
** pops it. Returns status. Does not allocate, so it is safe outside a
** protected call. [-(0|1),+0,-] */
static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      print_message(lua_tostring(L, -1));
    } else {  /* only errors raised outside call_user get here unconverted */
      char buf[64];
      snprintf(buf, sizeof buf, "(error object is a %s value)",
               luaL_typename(L, -1));
      print_message(buf);
    }
    lua_pop(L, 1);
  }
  return status;
}

static void print_version(void) {
  fputs(LUA_COPYRIGHT "\n" PROGNAME " " LF_VERSION "\n", stdout);
  fflush(stdout);
}

static void print_usage(const char *badoption) {
  if (badoption[1] == 'e' || badoption[1] == 'l')
    fprintf(stderr, "%s: '%s' needs argument\n", PROGNAME, badoption);
  else
    fprintf(stderr, "%s: unrecognized option '%s'\n", PROGNAME, badoption);
  fputs("usage: " PROGNAME " [options] [script [args]]\n"
        "Available options are:\n"
        "  -e stat   execute string 'stat'\n"
        "  -i        enter interactive mode after executing 'script'\n"
        "  -l mod    require library 'mod' into global 'mod'\n"
        "  -l g=mod  require library 'mod' into global 'g'\n"
        "  -v        show version information\n"
        "  -E        ignore environment variables\n"
        "  -W        turn warnings on\n"
        "  --mpi     load futures.mpi first: under mpiexec, rank 0 runs the\n"
        "            script and the other ranks serve its MPIPoolExecutor\n"
        "  --        stop handling options\n"
        "  -         stop handling options and execute stdin\n",
        stderr);
  fflush(stderr);
}

/* }====================================================================== */


/* {======================================================================
** Running user code: Ctrl-C and tracebacks
** ======================================================================= */

/* The state that a Ctrl-C interrupts: set before the handler is installed. */
static lua_State *volatile intr_state = NULL;
/* A Ctrl-C arrived during the last run of user code. */
static volatile sig_atomic_t got_sigint = 0;

static void set_sigint(void (*handler)(int)) {
  struct sigaction sa;
  sa.sa_handler = handler;
  sa.sa_flags = 0;  /* no SA_RESTART: a wait in progress sees EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

/* Runs at the next call, return or instruction after a Ctrl-C: removes
** itself, so that one Ctrl-C raises one error, and raises it. */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* SIGINT handler. A second Ctrl-C before the hook runs (code stuck in C)
** gets the default action and ends the process. */
static void on_sigint(int sig) {
  got_sigint = 1;
  set_sigint(SIG_DFL);
  lua_sethook(intr_state, interrupt_hook,
              LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  (void)sig;
}

/* Message handler of user code: the error value as a string (through
** __tostring when it has one) followed by a traceback. Unlike lua5.4, an
** object with __tostring gets the traceback too: the runtime's errors
** (TimeoutError and the others) are such tables, and where a result() was
** waited on is what the user needs to know. [-0,+1,m] */
static int add_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  /* A task's error raised again by result(): the worker's traceback, which
  ** the runtime kept, says where it really came from. */
  int top = lua_gettop(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LF_TASK_ERROR_KEY) == LUA_TTABLE &&
      lua_rawgeti(L, -1, 1) != LUA_TNIL && lua_rawequal(L, -1, 1) &&
      lua_rawgeti(L, -2, 2) == LUA_TSTRING && lua_rawlen(L, -1) > 0) {
    /* Its first line is the message again: from "stack traceback:" on. */
    const char *tb = lua_tostring(L, -1);
    const char *from = strstr(tb, "stack traceback:");
    lua_pushfstring(L, "\nin the worker that ran the task, %s",
                    from ? from : tb);
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    lua_concat(L, 2);
    return 1;
  }
  lua_settop(L, top);
  return 1;
}

/* Calls the function below the narg arguments on top of the stack, with
** add_traceback as message handler and Ctrl-C turned into an
** "interrupted!" error. Returns the lua_pcall status, leaving nres results
** or the error message. [-(narg+1),+(nres|1),-] */
static int call_user(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  int status;
  lua_pushcfunction(L, add_traceback);
  lua_insert(L, base);
  intr_state = L;
  got_sigint = 0;
  set_sigint(on_sigint);
  status = lua_pcall(L, narg, nres, base);
  set_sigint(SIG_DFL);
  lua_remove(L, base);
  return status;
}

/* Runs a string of code; prints its error. [-0,+0,m] */
static int run_string(lua_State *L, const char *code, const char *chunkname) {
  int status = luaL_loadbuffer(L, code, strlen(code), chunkname);
  if (status == LUA_OK) status = call_user(L, 0, 0);
  return report(L, status);
}

/* Runs a file, or stdin when path is NULL; prints its error. [-0,+0,m] */
static int run_file(lua_State *L, const char *path) {
  int status = luaL_loadfile(L, path);
  if (status == LUA_OK) status = call_user(L, 0, 0);
  return report(L, status);
}

/* -l: `mod` sets global mod = require "mod"; `g=mod` sets global g (Lua
** 5.4.4 semantics: a dotted name is not shortened). [-0,+0,e] */
static int run_library(lua_State *L, const char *spec) {
  const char *eq = strchr(spec, '=');
  int status;
  lua_getglobal(L, "require");
  lua_pushstring(L, eq != NULL ? eq + 1 : spec);
  status = call_user(L, 1, 1);
  if (status == LUA_OK) {
    lua_pushglobaltable(L);
    lua_pushlstring(L, spec, eq != NULL ? (size_t)(eq - spec) : strlen(spec));
    lua_pushvalue(L, -3);
    lua_settable(L, -3);  /* like lua_setglobal: honours a __newindex */
    lua_pop(L, 2);        /* globals and the module */
  }
  return report(L, status);
}

/* LUA_INIT_5_4, else LUA_INIT: "@file" runs the file, anything else is
** code. [-0,+0,m] */
static int run_init(lua_State *L) {
  static const char versioned[] = "=LUA_INIT" LUA_VERSUFFIX;
  static const char plain[] = "=LUA_INIT";
  const char *chunkname = versioned;
  const char *init = getenv(versioned + 1);
  if (init == NULL) {
    chunkname = plain;
    init = getenv(plain + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return run_file(L, init + 1);
  return run_string(L, init, chunkname);
}

/* Pushes arg[1] .. arg[#arg], the main chunk's `...`. Read from the table
** at this point, as lua5.4 does, so -e or LUA_INIT may have changed it.
** Returns how many. [-0,+n,e] */
static int push_script_args(lua_State *L) {
  int t, n;
  lua_Integer len;
  if (lua_getglobal(L, "arg") != LUA_TTABLE)
    luaL_error(L, "'arg' is not a table");
  len = luaL_len(L, -1);
  if (len < 0 || len > INT_MAX - 8)
    luaL_error(L, "too many arguments to script");
  n = (int)len;
  luaL_checkstack(L, n + 3, "too many arguments to script");
  t = lua_gettop(L);
  for (int i = 1; i <= n; i++) lua_rawgeti(L, t, i);
  lua_remove(L, t);
  return n;
}

/* Runs the script argv[script] with its arguments: "-" is stdin unless it
** follows "--". [-0,+0,e] */
static int run_script(lua_State *L, char **argv, int script) {
  const char *path = argv[script];
  int status;
  if (strcmp(path, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
    path = NULL;
  status = luaL_loadfile(L, path);
  if (status == LUA_OK) {
    int n = push_script_args(L);
    status = call_user(L, n, 0);
  }
  return report(L, status);
}

/* }====================================================================== */


/* {======================================================================
** Interactive loop
** ======================================================================= */

/* Pushes the prompt: tostring(_PROMPT) (_PROMPT2 for a continuation line)
** when the global is set, else "> " or ">> ". [-0,+1,e] */
static const char *push_prompt(lua_State *L, int first) {
  const char *p;
  if (lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2") == LUA_TNIL) {
    lua_pop(L, 1);
    return lua_pushstring(L, first ? "> " : ">> ");
  }
  p = luaL_tolstring(L, -1, NULL);
  lua_remove(L, -2);
  return p;
}

/* Shows the prompt and pushes the next line of stdin, of any length,
** without its newline. On the first line of a statement "=expr" reads as
** "return expr" (the Lua 5.1 way to print a value). Returns 0, pushing
** nothing, at the end of input. [-0,+(0|1),e] */
static int read_line(lua_State *L, int first) {
  char chunk[512];
  luaL_Buffer b;
  int got = 0;
  fputs(push_prompt(L, first), stdout);
  fflush(stdout);
  lua_pop(L, 1);
  luaL_buffinit(L, &b);
  while (fgets(chunk, sizeof chunk, stdin) != NULL) {
    size_t len = strlen(chunk);
    got = 1;
    if (len > 0 && chunk[len - 1] == '\n') {
      luaL_addlstring(&b, chunk, len - 1);
      break;
    }
    luaL_addlstring(&b, chunk, len);
  }
  luaL_pushresult(&b);
  if (!got) {
    lua_pop(L, 1);
    return 0;
  }
  if (first && lua_tostring(L, -1)[0] == '=') {
    lua_pushfstring(L, "return %s", lua_tostring(L, -1) + 1);
    lua_remove(L, -2);
  }
  return 1;
}

/* Whether a load status and the message on top of the stack mean that the
** text ended in the middle of a statement. [-0,+0,-] */
static int incomplete(lua_State *L, int status) {
  static const char mark[] = "<eof>";
  size_t len;
  const char *msg;
  if (status != LUA_ERRSYNTAX) return 0;
  msg = lua_tolstring(L, -1, &len);
  return len >= sizeof mark - 1 &&
         strcmp(msg + len - (sizeof mark - 1), mark) == 0;
}

/* Compiles the line on top of the stack: first as an expression whose
** values are printed ("return line;"), else as a statement, reading more
** lines while it is incomplete. Replaces the line with the function or the
** error message; returns the load status. [-1,+1,e] */
static int compile_line(lua_State *L) {
  const char *ret = lua_pushfstring(L, "return %s;", lua_tostring(L, -1));
  if (luaL_loadbuffer(L, ret, strlen(ret), "=stdin") == LUA_OK) {
    lua_remove(L, -2);  /* the "return" text */
    lua_remove(L, -2);  /* the line */
    return LUA_OK;
  }
  lua_pop(L, 2);  /* the message and the "return" text */
  for (;;) {
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    int status = luaL_loadbuffer(L, text, len, "=stdin");
    /* at the end of input an incomplete statement is a syntax error */
    if (!incomplete(L, status) || !read_line(L, 0)) {
      lua_remove(L, -2);  /* the text */
      return status;
    }
    lua_remove(L, -2);  /* the message: stack is text, next line */
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3);
  }
}

/* Prints the values on the stack with the global print. [-n,+0,m] */
static void print_results(lua_State *L) {
  int n = lua_gettop(L);
  if (n == 0) return;
  luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
  lua_getglobal(L, "print");
  lua_insert(L, 1);
  if (lua_pcall(L, n, 0, 0) != LUA_OK)
    print_message(lua_pushfstring(L, "error calling 'print' (%s)",
                                  lua_tostring(L, -1)));
}

/* Reads, runs and prints until the end of stdin. [-0,+0,e] */
static void repl(lua_State *L) {
  const char *saved = progname;
  progname = NULL;
  for (;;) {
    int status;
    lua_settop(L, 0);
    if (!read_line(L, 1)) break;
    status = compile_line(L);
    if (status == LUA_OK) status = call_user(L, 0, LUA_MULTRET);
    if (status == LUA_OK)
      print_results(L);
    else
      report(L, status);
  }
  lua_settop(L, 0);
  fputs("\n", stdout);
  fflush(stdout);
  progname = saved;
}

/* }====================================================================== */


/* {======================================================================
** Command line
** ======================================================================= */

enum {
  OPT_NOENV = 1,  /* -E */
  OPT_REPL = 2,   /* -i */
  OPT_VER = 4,    /* -v, and -i */
  OPT_EXEC = 8,   /* -e */
  OPT_MPI = 16    /* --mpi */
};

typedef struct cmdline {
  unsigned flags;
  int script;  /* argv index of the script ("-": stdin), 0 when none */
  int optend;  /* argv index where the options end: the script's, or argc */
  int bad;     /* argv index of a bad option, 0 when none */
} cmdline;

/* Reads the options before the script, as lua5.4 does. Returns 0, with
** c->bad set, on a usage error. */
static int parse_cmdline(int argc, char **argv, cmdline *c) {
  int i;
  c->flags = 0;
  c->bad = 0;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    int ok = 1;
    if (a[0] != '-' || a[1] == '\0') break;  /* the script, or "-" */
    if (strcmp(a, "--mpi") == 0) {
      c->flags |= OPT_MPI;
      continue;
    }
    switch (a[1]) {
      case '-':  /* "--": the next argument is the script */
        if (a[2] != '\0') ok = 0;
        break;
      case 'E': case 'W': case 'i': case 'v':
        if (a[2] != '\0') ok = 0;
        else if (a[1] == 'E') c->flags |= OPT_NOENV;
        else if (a[1] == 'i') c->flags |= OPT_REPL | OPT_VER;
        else if (a[1] == 'v') c->flags |= OPT_VER;
        break;
      case 'e': case 'l':  /* "-e stat", "-estat" */
        if (a[1] == 'e') c->flags |= OPT_EXEC;
        if (a[2] == '\0') {
          if (i + 1 >= argc || argv[i + 1][0] == '-') ok = 0;
          else i++;
        }
        break;
      default:
        ok = 0;
    }
    if (!ok) {
      c->bad = i;
      return 0;
    }
    if (a[1] == '-') {
      i++;
      break;
    }
  }
  c->script = i < argc ? i : 0;
  c->optend = i < argc ? i : argc;
  return 1;
}

/* The global `arg`: the script at 0, its arguments after it, the
** interpreter and its options at negative indices. With no script, as in
** Lua 5.4.4, the interpreter is at 0 and the options follow. [-0,+0,m] */
static void set_arg_table(lua_State *L, int argc, char **argv, int script) {
  lua_createtable(L, argc > script ? argc - script - 1 : 0, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* Runs -e, -l and -W in command-line order; stops at the first error. */
static int run_options(lua_State *L, char **argv, int optend) {
  for (int i = 1; i < optend; i++) {
    if (strcmp(argv[i], "--mpi") == 0) continue;
    char opt = argv[i][1];
    if (opt == 'e' || opt == 'l') {
      const char *val = argv[i][2] != '\0' ? argv[i] + 2 : argv[++i];
      int status = opt == 'e' ? run_string(L, val, "=(command line)")
                              : run_library(L, val);
      if (status != LUA_OK) return 0;
    } else if (opt == 'W') {
      lua_warning(L, "@on", 0);
    }
  }
  return 1;
}

/* The whole interpreter, in protected mode. Arguments: argc, argv (light
** userdata). Returns true when everything succeeded. */
static int interpreter_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  cmdline c;
  luaL_checkversion(L);
  if (!parse_cmdline(argc, argv, &c)) {
    print_usage(argv[c.bad]);
    return 0;
  }
  if (c.flags & OPT_VER) print_version();
  if (c.flags & OPT_NOENV) {  /* read by luaopen_package: default paths */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  luaL_openlibs(L);
  lf_preload_open(L);  /* before any user code, LUA_INIT included */
  set_arg_table(L, argc, argv, c.script);
  lua_gc(L, LUA_GCRESTART);
  lua_gc(L, LUA_GCGEN, 0, 0);  /* lua5.4's mode, so both interpreters agree */
  /* Before LUA_INIT and -e: on the serving ranks of an MPI job the require
  ** never returns, and no user code runs there. Without a launcher it says
  ** so, once, and the script runs with a world of one rank. */
  if ((c.flags & OPT_MPI) &&
      run_string(L, "require('futures.mpi')._announce('lua-futures --mpi')",
                 "=--mpi") != LUA_OK)
    return 0;
  if (!(c.flags & OPT_NOENV) && run_init(L) != LUA_OK) return 0;
  if (!run_options(L, argv, c.optend)) return 0;
  if (c.script > 0 && run_script(L, argv, c.script) != LUA_OK) return 0;
  if (c.flags & OPT_REPL) {
    repl(L);
  } else if (c.script == 0 && !(c.flags & (OPT_EXEC | OPT_VER))) {
    if (isatty(STDIN_FILENO)) {
      print_version();
      repl(L);
    } else if (run_file(L, NULL) != LUA_OK) {
      return 0;  /* lua5.4 exits 0 here; a failed piped script should not */
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================================== */


int main(int argc, char **argv) {
  lua_State *L;
  int status, ok;
  /* Worker states, in this process or a worker process, get the embedded
  ** modules too, and process pools run this executable as their worker. */
  lf_state_set_interpreter(lf_preload_open);
  if (argc > 1 && strcmp(argv[1], LF_WORKER_FLAG) == 0)
    return lf_process_worker_main(argc, argv);
  L = luaL_newstate();
  if (L == NULL) {
    print_message("cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);  /* no collection while the state is built */
  lua_pushcfunction(L, interpreter_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  status = lua_pcall(L, 2, 1, 0);
  ok = status == LUA_OK && lua_toboolean(L, -1);
  report(L, status);
  /* Ended by Ctrl-C: stop now. lua_close would join the workers, which
  ** wait for the tasks they run; Ctrl-C means the user will not wait. */
  if (!ok && got_sigint) return EXIT_FAILURE;
  lua_close(L);
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
