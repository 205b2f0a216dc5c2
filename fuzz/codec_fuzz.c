/*
** fuzz/codec_fuzz.c — the fuzz target of the codec's decoder: feeds any
** bytes to lf_decode, as received (the checksum must stop them) and resealed
** (a right length and checksum, so that the value decoder itself sees the
** garbage), with functions allowed and refused. What decodes is encoded and
** decoded again, which must succeed. Built with libFuzzer (clang
** -fsanitize=fuzzer) or linked with fuzz/fuzz_main.c, always under
** ASan/UBSan: `make fuzz` (FUZZ_SECONDS=60).
**
** Threads: one; the fuzzer calls the target serially.
**
** Ownership: one lua_State lives for the whole run, so the decoder's
** function cache and the GC see long histories; each input's copy and
** buffers are freed before the target returns.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lualib.h"

#include "lf_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;
static unsigned long runs;

/* A state whose names resolve only to side-effect-free libraries: a decoded
** table may carry a __gc resolved by name, and the fuzzer must not find
** os.exit or io.read that way. require finds nothing new (empty paths). */
static void open_state(void) {
  L = luaL_newstate();
  if (L == NULL) abort();
  luaL_openlibs(L);
  static const char *const unsafe[] = { "io", "os", "debug", "package", NULL };
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (int i = 0; unsafe[i]; i++) {
    lua_pushnil(L);
    lua_setfield(L, -2, unsafe[i]);
  }
  lua_pop(L, 1);
  lua_getglobal(L, "package");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  static const char *const globals[] = { "io", "os", "debug", "dofile", "loadfile", "print", NULL };
  for (int i = 0; globals[i]; i++) {
    lua_pushnil(L);
    lua_setglobal(L, globals[i]);
  }
}

static void decode(const uint8_t *data, size_t size, int functions) {
  lf_codec_opts o = lf_codec_defaults;
  o.in_process = 0;          /* a handle in untrusted bytes is a pointer */
  o.functions = functions;
  int top = lua_gettop(L);
  int n = lf_decode(L, data, size, &o);
  if (n > 0) {
    lf_buf b = LF_BUF_INIT;
    lf_codec_opts eo = lf_codec_defaults;
    eo.in_process = 0;
    if (lf_encode(L, top + 1, n, "value", 1, &b, &eo) == 0) {
      int m = lf_decode(L, b.data, b.len, &o);
      if (m != n) {
        fprintf(stderr, "codec_fuzz: a re-encoding does not decode: %s\n",
                m < 0 ? lua_tostring(L, -1) : "value count differs");
        abort();
      }
    }
    lf_buf_free(&b);
  }
  lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (L == NULL) open_state();
  decode(data, size, 1);
  if (size >= 24 && size <= (1u << 20)) {
    unsigned char *copy = malloc(size);
    if (copy == NULL) return 0;
    memcpy(copy, data, size);
    lf_codec_reseal(copy, size);
    decode(copy, size, 1);
    decode(copy, size, 0);
    free(copy);
  }
  if (++runs % 2048 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
