-- futures: Python's concurrent.futures for Lua 5.4, on native threads and
-- worker processes. This file is the public module; the C core is
-- futures.core. See docs/API.md.
local core = require "futures.core"

local futures = {}

futures._VERSION = core._VERSION
futures.cpu_count = core.cpu_count
futures.sleep = core.sleep
futures.monotonic = core.monotonic

return futures
