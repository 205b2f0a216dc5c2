/*
** lf_interp.c — finding the worker interpreter of process pools
** (lf_interp.h).
**
** Threads: any thread; the directory of futures.core is looked up once
** (pthread_once) and read-only afterwards.
** Ownership: nothing is kept but that directory, a static buffer.
*/
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lua.h"

#include "lf_interp.h"
#include "lf_state.h"

static pthread_once_t module_dir_once = PTHREAD_ONCE_INIT;
static char module_dir[PATH_MAX];   /* where core.so is, or "" */

static void find_module_dir(void) {
  Dl_info info;
  if (dladdr((void *)find_module_dir, &info) == 0 || info.dli_fname == NULL)
    return;
  char *real = realpath(info.dli_fname, NULL);
  if (real == NULL) return;
  char *slash = strrchr(real, '/');
  if (slash != NULL) {
    *slash = '\0';
    snprintf(module_dir, sizeof module_dir, "%s", real);
  }
  free(real);
}

static int is_executable(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
         access(path, X_OK) == 0;
}

/* Does dir end with the directories `tail` ("/lib/lua/5.4/futures")? */
static int ends_with(const char *dir, const char *tail) {
  size_t a = strlen(dir), b = strlen(tail);
  return a >= b && strcmp(dir + a - b, tail) == 0;
}

/* Appends to err (which holds a C string of at most errsize - 1 bytes). */
static void add(char *err, size_t errsize, const char *text) {
  size_t n = strlen(err);
  if (n + 1 < errsize) snprintf(err + n, errsize - n, "%s", text);
}

int lf_interp_find(const char *opt, char exe[PATH_MAX], char spawn[PATH_MAX],
                   char *err, size_t errsize) {
  const char *how = "the worker option";
  const char *given = opt;
  err[0] = '\0';
  if (given == NULL) {
    given = getenv("LUA_FUTURES_WORKER");
    how = "LUA_FUTURES_WORKER";
    if (given != NULL && given[0] == '\0') given = NULL;
  }
  if (given != NULL) {   /* an explicit choice is used or refused */
    if (!is_executable(given) || realpath(given, exe) == NULL) {
      snprintf(err, errsize, "the worker interpreter '%s' (from %s) is not "
               "an executable file", given, how);
      return -1;
    }
    strcpy(spawn, exe);
    return 0;
  }
  if (lf_state_is_interpreter()) {   /* we are bin/lua-futures */
    /* Its path, so that workers show as lua-futures in ps; or, if that
    ** file is no longer the one running (rebuilt, moved), /proc/self/exe,
    ** which still is. */
    struct stat self, there;
    ssize_t n = readlink("/proc/self/exe", exe, PATH_MAX - 1);
    exe[n < 0 ? 0 : n] = '\0';
    if (n > 0 && stat("/proc/self/exe", &self) == 0 &&
        stat(exe, &there) == 0 && self.st_dev == there.st_dev &&
        self.st_ino == there.st_ino && access(exe, X_OK) == 0) {
      strcpy(spawn, exe);
    } else {
      strcpy(spawn, "/proc/self/exe");
      if (n <= 0) strcpy(exe, spawn);
    }
    return 0;
  }
  pthread_once(&module_dir_once, find_module_dir);
  add(err, errsize, "cannot find the lua-futures interpreter that runs "
      "worker processes; looked at: the worker option (not given), "
      "LUA_FUTURES_WORKER (not set)");
  if (module_dir[0] != '\0') {
    char cand[2][PATH_MAX + 64];
    int nc = 0;
    if (ends_with(module_dir, "/lib/lua/" LUA_VERSION_MAJOR "."
                  LUA_VERSION_MINOR "/futures"))   /* an install */
      snprintf(cand[nc++], sizeof cand[0], "%s/../../../../bin/lua-futures",
               module_dir);
    snprintf(cand[nc++], sizeof cand[0], "%s/../../bin/lua-futures",
             module_dir);   /* the build tree: build/futures/core.so */
    for (int i = 0; i < nc; i++) {
      char real[PATH_MAX];
      if (is_executable(cand[i]) && realpath(cand[i], real) != NULL) {
        strcpy(exe, real);
        strcpy(spawn, real);
        err[0] = '\0';
        return 0;
      }
      add(err, errsize, ", ");
      add(err, errsize, cand[i]);
      add(err, errsize, " (not found)");
    }
  } else {
    add(err, errsize, ", beside futures.core (its path is unknown)");
  }
  add(err, errsize, ". Install lua-futures with `make install`, or set "
      "LUA_FUTURES_WORKER or the worker option.");
  return -1;
}
