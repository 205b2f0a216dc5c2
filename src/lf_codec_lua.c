/* lf_codec_lua.c — placeholder until the codec bindings land. */
#include "lf_bind.h"
void lf_bind_codec(lua_State *L) { (void)L; }
