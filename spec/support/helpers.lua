-- Helpers shared by the specs.
local futures = require "futures"

local helpers = {}

-- Live threads of this process (Linux: /proc/self/task).
function helpers.thread_count()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  for line in f:lines() do
    local n = line:match("^Threads:%s+(%d+)")
    if n then f:close(); return tonumber(n) end
  end
  f:close()
end

-- A function and a counter: counter() returns fn, count() where count() says how
-- many times fn ran.
function helpers.counter()
  local n = 0
  return function() n = n + 1 end, function() return n end
end

-- Runs fn and returns the error it raised (fails if none).
function helpers.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- Waits until pred() is true, at most `timeout` seconds, running callbacks.
function helpers.eventually(pred, timeout)
  local deadline = futures.monotonic() + (timeout or 5)
  while not pred() do
    if futures.monotonic() > deadline then return false end
    futures.sleep(0.005)
  end
  return true
end

-- Collects garbage until the thread count is back to `base` (or timeout).
function helpers.threads_back_to(base, timeout)
  return helpers.eventually(function()
    collectgarbage(); collectgarbage()
    futures.poll()
    return helpers.thread_count() <= base
  end, timeout or 5)
end

return helpers
