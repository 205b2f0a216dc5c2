-- Crash isolation: tasks that kill their worker process fail alone. The
-- process pool reports how each worker died, starts a replacement, and every
-- other task completes — the reason to choose a process pool for code that
-- may crash (a buggy C module, os.exit, the out-of-memory killer).
-- usage: bin/lua-futures examples/crash_isolation.lua [tasks]
local futures = require "futures"

local TASKS = tonumber(arg and arg[1]) or 12

-- Some honest work, except that task 4 calls os.exit (as a C library that
-- calls exit() would) and task 9 crashes its process with SIGSEGV.
local function work(i)
  local acc = 0
  for k = 1, 300000 do acc = (acc + k * i) % 1000003 end
  if i == 4 then os.exit(42) end
  if i == 9 then
    local f = io.open("/proc/self/stat")
    local pid = f:read("n")
    f:close()
    os.execute("kill -SEGV " .. pid)
    futures.sleep(10)   -- not reached: the signal ends the process
  end
  return acc
end

local px <close> = futures.ProcessPoolExecutor(2)
local fs = {}
for i = 1, TASKS do fs[i] = px:submit(work, i) end

local ok, failed = 0, 0
for i, f in ipairs(fs) do
  local err = f:exception(60)
  if err == nil then
    ok = ok + 1
    print(("task %2d: %d"):format(i, f:result()))
  else
    failed = failed + 1
    print(("task %2d: %s"):format(i, tostring(err)))
    assert(futures.iserror(err, futures.BrokenProcessPool))
  end
end

-- The pool is still whole: a task submitted now runs on a fresh worker.
print(("%d tasks completed, %d failed; afterwards: %s"):format(ok, failed,
  px:submit(function() return "the pool still works" end):result(10)))
