/* lf_process_pool.c — placeholder until the process pool lands. */
#include "lf_bind.h"
void lf_bind_process_pool(lua_State *L) { (void)L; }
