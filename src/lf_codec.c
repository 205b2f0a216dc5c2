/* lf_codec.c — placeholder until the codec lands. */
#include "lauxlib.h"
#include "lf_codec.h"
const lf_codec_opts lf_codec_defaults = { LF_CODEC_DEFAULT_DEPTH, 0, 1, 1 };
int lf_codec_register_kind(const lf_handle_kind *kind) { (void)kind; return 0; }
void lf_buf_free(lf_buf *b) { (void)b; }
int lf_encode(lua_State *L, int first, int n, const char *what, int base,
              lf_buf *out, const lf_codec_opts *opts) {
  (void)first; (void)n; (void)what; (void)base; (void)out; (void)opts;
  lua_pushliteral(L, "codec not built yet");
  return -1;
}
int lf_decode(lua_State *L, const unsigned char *data, size_t len,
              const lf_codec_opts *opts) {
  (void)data; (void)len; (void)opts;
  lua_pushliteral(L, "codec not built yet");
  return -1;
}
