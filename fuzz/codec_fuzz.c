/*
** fuzz/codec_fuzz.c — the fuzz target of the codec's decoder (lf_decode,
** the one function of lua-futures that reads bytes from outside). Built
** with libFuzzer (clang -fsanitize=fuzzer) or linked with fuzz/fuzz_main.c,
** always under ASan/UBSan, against the core objects built the same way:
** `make fuzz` (FUZZ_SECONDS=60). docs/codec.md, "Fuzzing", says more.
**
** Each input is decoded four ways:
**   1. as given, functions = false: the header checks and the checksum;
**   2. as given, functions = true: only an input whose checksum holds gets
**      past the header, so bytecode reaches lua_load only if it also
**      matches its per-function hash, as with real transfer data;
**   3. resealed (valid magic, version, flags, length and checksum over the
**      mutated payload), functions = false: nearly every mutation fails the
**      checksum, so without this the value decoder would never be fuzzed;
**   4. resealed, functions = true, with lua_load guarded. Lua does not
**      verify bytecode (crafted bytecode can crash it, a known limit), and
**      comparison-guided mutation can forge a 64-bit per-function hash in
**      a resealed input. So the codec's lua_load is routed here (`make
**      fuzz` compiles lf_decode.c with -Dlua_load=lf_fuzz_lua_load), and
**      only bytecode that a seed holds is loaded: the passes after
**      lua_load (upvalues, joins, the function cache) are fuzzed, Lua's
**      undump is not.
** Whatever decodes is encoded again, which must succeed, and that decoded
** again, which must succeed too: decoded values can always travel.
**
** The state is luaL_openlibs plus futures.core, minus what a decoded __gc
** resolved by name could harm the run with (io, os, debug, package,
** dofile, loadfile, print), with require confined to what is loaded: a
** mutated module name must not run a file of the current directory.
**
** Threads: one; the fuzzer calls the target serially.
** Ownership: one lua_State lives for the whole run, so the decoder's
** function cache and the GC see long histories; each input's copy and
** buffers are freed before the target returns.
*/
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_codec.h"
#include "lf_preload.h"   /* luaopen_futures_core */

#define HDR 24      /* docs/codec.md: magic, version, flags, length, checksum */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int lf_fuzz_lua_load(lua_State *L, lua_Reader reader, void *ud,
                     const char *chunkname, const char *mode);

static lua_State *L;
static unsigned long runs;
static unsigned char good[8];     /* magic, version, flags "functions" */
static int guarded;               /* 0 while the seeds are recorded */
static int recorded;              /* bytecode strings of the seeds */
static const char ALLOW_KEY = 'a';

/* ---- the guarded lua_load ---------------------------------------------- */

typedef struct chunk { char *p; size_t n, cap; } chunk;

static const char *replay(lua_State *L1, void *ud, size_t *size) {
  chunk *c = ud;
  (void)L1;
  *size = c->n;
  c->n = 0;
  return c->p;
}

/* Reads the whole chunk; while the seeds are decoded, records it, and
** afterwards loads only a recorded one. A refusal is a load error. */
int lf_fuzz_lua_load(lua_State *L1, lua_Reader reader, void *ud,
                     const char *chunkname, const char *mode) {
  chunk c = { NULL, 0, 0 };
  const char *piece;
  size_t sz;
  while ((piece = reader(L1, ud, &sz)) != NULL && sz > 0) {
    if (c.cap - c.n < sz) {
      size_t ncap = (c.cap ? 2 * c.cap : 256) + sz;
      char *np = realloc(c.p, ncap);
      if (np == NULL) {
        free(c.p);
        lua_pushliteral(L1, "fuzz: out of memory");
        return LUA_ERRMEM;
      }
      c.p = np;
      c.cap = ncap;
    }
    memcpy(c.p + c.n, piece, sz);
    c.n += sz;
  }
  lua_rawgetp(L1, LUA_REGISTRYINDEX, &ALLOW_KEY);
  lua_pushlstring(L1, c.p ? c.p : "", c.n);
  if (!guarded) {
    lua_pushboolean(L1, 1);
    lua_rawset(L1, -3);
    recorded++;
  } else if (lua_rawget(L1, -2) == LUA_TNIL) {
    lua_pop(L1, 2);
    free(c.p);
    lua_pushliteral(L1, "fuzz: bytecode that no seed holds is not loaded");
    return LUA_ERRSYNTAX;
  } else {
    lua_pop(L1, 1);
  }
  lua_pop(L1, 1);
  int rc = lua_load(L1, replay, &c, chunkname, mode);
  free(c.p);
  return rc;
}

/* ---- the passes --------------------------------------------------------- */

static void decode(const unsigned char *data, size_t size, int functions) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;          /* a handle in untrusted bytes is a pointer */
  o.functions = functions;
  /* Decoding with no pins, as a worker process does, a shared object's id
  ** names what the host shared: such an object goes back up as a worker's
  ** result would. */
  o.share = LF_SHARE_UP;
  int top = lua_gettop(L);
  int n = lf_decode(L, data, size, &o);
  if (n >= 0) {
    lf_buf b = LF_BUF_INIT;
    if (lf_encode(L, top + 1, n, "value", 1, &b, &o) != 0) {
      fprintf(stderr, "codec_fuzz: decoded values do not encode: %s\n",
              lua_tostring(L, -1));
      abort();
    }
    int m = lf_decode(L, b.data, b.len, &o);
    if (m != n) {
      fprintf(stderr, "codec_fuzz: a re-encoding does not decode: %s\n",
              m < 0 ? lua_tostring(L, -1) : "value count differs");
      abort();
    }
    lf_buf_free(&b);
  }
  lua_settop(L, top);
}

/* Decodes every file of dir with functions = true, so that the bytecode
** the seeds hold is recorded as loadable. */
static void record_seeds(const char *dir) {
  DIR *dp = opendir(dir);
  if (dp == NULL) return;
  struct dirent *de;
  while ((de = readdir(dp)) != NULL) {
    if (de->d_name[0] == '.') continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) continue;
    static unsigned char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    lf_codec_opts o = lf_codec_defaults;
    o.in_process = 0;
    int top = lua_gettop(L);
    lf_decode(L, buf, n, &o);
    lua_settop(L, top);
  }
  closedir(dp);
}

static void open_state(void) {
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  luaL_requiref(L, "futures.core", luaopen_futures_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  static const char *const unsafe[] = { "io", "os", "debug", "package", NULL };
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (int i = 0; unsafe[i]; i++) {
    lua_pushnil(L);
    lua_setfield(L, -2, unsafe[i]);
  }
  lua_pop(L, 1);
  static const char *const globals[] = { "io", "os", "debug", "dofile", "loadfile", "print", NULL };
  for (int i = 0; globals[i]; i++) {
    lua_pushnil(L);
    lua_setglobal(L, globals[i]);
  }
  lua_newtable(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ALLOW_KEY);
  /* a valid header with the "functions" flag, from the encoder itself */
  lf_buf b = LF_BUF_INIT;
  lua_getglobal(L, "type");
  if (lf_encode(L, -1, 1, "value", 1, &b, &lf_codec_defaults) != 0) abort();
  memcpy(good, b.data, sizeof good);
  lf_buf_free(&b);
  lua_settop(L, 0);
  const char *seeds = getenv("LF_FUZZ_SEEDS");
  if (seeds != NULL) record_seeds(seeds);
  guarded = 1;
  fprintf(stderr, "codec_fuzz: %d seed function(s) loadable with functions = true\n",
          recorded);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) open_state();
  decode(data, size, 0);
  decode(data, size, 1);
  if (size >= HDR && size <= (1u << 20)) {
    unsigned char *copy = malloc(size);
    if (copy == NULL) return 0;
    memcpy(copy, data, size);
    memcpy(copy, good, 4);                  /* magic and version */
    memset(copy + 4, 0, 4);                 /* flags: none */
    lf_codec_reseal(copy, size);
    decode(copy, size, 0);
    if (recorded > 0) {
      memcpy(copy + 4, good + 4, 4);        /* flags: functions */
      lf_codec_reseal(copy, size);
      decode(copy, size, 1);
    }
    free(copy);
  }
  /* the finalizers of decoded tables run now and then, not at exit only */
  if (++runs % 2048 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
