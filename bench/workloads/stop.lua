-- Stopping running work: how long f:interrupt() takes to end a task that
-- runs an endless Lua loop (from the call to the future being done), p50
-- and worst of `n`, per pool; and, for the process pool, how long past its
-- grace period a worker stuck in a C call (os.execute of a sleep) takes to
-- be replaced and its future failed. No Python twin: Python's pools cannot
-- stop a running task.
--   <pool>.stop_p50_ms, <pool>.stop_worst_ms
--   process.stuck_over_grace_ms
-- params: pool, n, grace
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local futures = B.futures
local p = B.params()
local kind = p.pool or "thread"
local n = p.n or 50

local function spin() while true do end end

local ex = B.pool_or_skip(kind, 1)
if kind == "process" then
  ex:shutdown()
  ex = futures.ProcessPoolExecutor{ max_workers = 1, grace = p.grace or 0.2 }
end
local lat = {}
for i = 1, n do
  local f = ex:submit(spin)
  while not f:running() do futures.sleep(0.0002) end
  futures.sleep(0.002)   -- well inside the loop
  local t0 = B.now()
  f:interrupt()
  pcall(f.result, f, 30)
  lat[i] = (B.now() - t0) * 1e3
end
table.sort(lat)
B.emit(kind .. ".stop_p50_ms", B.median(lat))
B.emit(kind .. ".stop_worst_ms", lat[#lat])

if kind == "process" then
  local grace = p.grace or 0.2
  local over = {}
  for i = 1, 3 do
    local f = ex:submit(function() os.execute("sleep 2") end)
    while not f:running() do futures.sleep(0.0002) end
    futures.sleep(0.05)   -- inside the C call
    local t0 = B.now()
    f:interrupt()
    pcall(f.result, f, 30)
    over[i] = ((B.now() - t0) - grace) * 1e3
  end
  B.emit("process.stuck_over_grace_ms", B.median(over))
  -- the pool goes on with a new worker
  assert(ex:submit(B.ident, 7):result(30) == 7)
end
ex:shutdown()
