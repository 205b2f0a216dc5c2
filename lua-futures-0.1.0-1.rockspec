-- LuaRocks package of lua-futures: `luarocks make` in a checkout, or
-- `luarocks install lua-futures` once published. The Makefile builds the C
-- core and the bundled interpreter (`make compile`) and installs them into
-- the tree: futures/core.so under the tree's lib/lua/5.4, the Lua side under
-- share/lua/5.4 and lua-futures in its bin/, so that process pools find
-- their worker interpreter beside the module, as after `make install`.
rockspec_format = "3.0"
package = "lua-futures"
version = "0.1.0-1"

source = {
  -- Where the release is published: set url and tag before uploading.
  url = "git+https://github.com/lua-futures/lua-futures.git",
  tag = "v0.1.0",
}

description = {
  summary = "Python's concurrent.futures for Lua 5.4: thread and process pools with no global lock",
  detailed = [[
Executors run Lua functions on native threads (ThreadPoolExecutor) or in
worker processes (ProcessPoolExecutor) and hand back futures; wait and
as_completed synchronise on them, map runs a function over many items in
chunks. Every worker owns its own lua_State, so CPU-bound Lua runs on every
core. Includes lua-futures, a Lua 5.4 interpreter with the module built in.
]],
  homepage = "https://github.com/lua-futures/lua-futures",
  license = "MIT",   -- as Lua itself; confirm before publishing
  labels = { "concurrency", "threads", "multiprocessing", "futures" },
}

supported_platforms = { "linux" }

dependencies = {
  "lua >= 5.4, < 5.5",
}

build = {
  type = "make",
  build_target = "compile",
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LUA_CFLAGS = "-I$(LUA_INCDIR)",
    LUA = "$(LUA)",
  },
  install_target = "install",
  install_variables = {
    PREFIX = "$(PREFIX)",
    INSTALL_BIN = "$(BINDIR)",
    INSTALL_CMOD = "$(LIBDIR)",
    INSTALL_LMOD = "$(LUADIR)",
    INSTALL_MAN = "$(PREFIX)/doc/man1",
    -- kept in the rock's own directory: LuaRocks would deploy anything under
    -- lib/ into the tree's lib/lua/5.4
    INSTALL_PC = "$(PREFIX)/pkgconfig",
  },
  copy_directories = { "docs", "examples" },
}
