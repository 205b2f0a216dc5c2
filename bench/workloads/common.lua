-- bench/workloads/common.lua — what every Lua workload shares: its k=v
-- parameters, the one-line-per-figure output the driver reads, RSS, the file
-- gate that keeps a worker busy, and starting pools that may not exist yet.
--
-- Output protocol (the Python twins in bench/py/ print the same):
--   M <metric-id> <number>     one figure
--   M <metric-id> n/a          a figure this run could not produce
--   SKIP <reason>              the workload cannot run here (no process pool)
-- Anything else on stdout is ignored by the driver (shown with --verbose).
local futures = require "futures"

local M = {}

M.now = futures.monotonic

--- The k=v command-line arguments as a table (numbers converted).
function M.params()
  local p = {}
  for _, a in ipairs(arg) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if not k then error("bad workload argument: " .. a) end
    p[k] = math.tointeger(tonumber(v)) or tonumber(v) or v
  end
  return p
end

--- A comma-separated list of integers ("1,2,4") as a sequence.
function M.intlist(s)
  local t = {}
  for x in tostring(s):gmatch("%d+") do t[#t + 1] = tonumber(x) end
  return t
end

function M.emit(id, value)
  if value == nil or value ~= value then
    print(("M %s n/a"):format(id))
  else
    print(("M %s %.9g"):format(id, value))
  end
  io.stdout:flush()
end

function M.skip(reason)
  print("SKIP " .. tostring(reason):gsub("%s+", " "))
  io.stdout:flush()
end

--- Resident set size of this process in KB (Linux /proc), or nil.
function M.rss_kb()
  local h = io.open("/proc/self/status")
  if not h then return nil end
  local s = h:read("a")
  h:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

function M.full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Tasks. Each is self-contained (no upvalues but what it names), so it travels
-- to a thread or a process worker alike.

function M.ident(x) return x end

--- Wait until the file `path` exists (polling every millisecond, so a
-- blocked worker costs no CPU). The gate that keeps a worker busy while the
-- submitting side is measured; a file, because it works across processes and
-- in Python too.
function M.gated(path)
  local sleep = require("futures").sleep
  local give_up = os.time() + 300
  while true do
    local h = io.open(path)
    if h then h:close(); return true end
    if os.time() > give_up then error("bench gate never opened: " .. path) end
    sleep(0.001)
  end
end

--- Sleep, then say which worker ran this (a per-state id) and its RSS.
function M.sleeper(seconds)
  local sleep = require("futures").sleep
  sleep(seconds)
  if not _G.BENCH_WORKER_ID then
    -- A table's address tells thread workers apart; the pid, processes.
    local pid = ""
    local st = io.open("/proc/self/stat")
    if st then pid = st:read("l"):match("^%d+") or ""; st:close() end
    _G.BENCH_WORKER_ID = pid .. ":" .. tostring({})
  end
  local rss
  local h = io.open("/proc/self/status")
  if h then rss = tonumber(h:read("a"):match("VmRSS:%s*(%d+)")); h:close() end
  return _G.BENCH_WORKER_ID, rss
end

-- Gates.

function M.gate_path()
  local path = os.tmpname()
  os.remove(path)
  return path
end

function M.open_gate(path)
  local h = assert(io.open(path, "w"))
  h:close()
end

function M.remove_gate(path) os.remove(path) end

--- Poll until future f is running (or done): a submitted blocker really
-- occupies its worker before the measurement starts.
function M.wait_running(f, timeout)
  local deadline = M.now() + (timeout or 30)
  while not (f:running() or f:done()) do
    if M.now() > deadline then error("task never started") end
    futures.sleep(0.0005)
  end
end

--- Start `n` workers in pool `ex`: each sleeper is submitted once the one
-- before runs, so no worker is idle and the pool must start another. Returns
-- the number of distinct workers that ran them and their RSS figures (KB).
function M.start_workers(ex, n, seconds)
  local fs = {}
  for i = 1, n do
    fs[i] = ex:submit(M.sleeper, seconds or 0.05)
    M.wait_running(fs[i])
  end
  local seen, count, rss = {}, 0, {}
  for i = 1, n do
    local id, kb = fs[i]:result(60)
    if not seen[id] then seen[id] = true; count = count + 1; rss[#rss + 1] = kb end
  end
  return count, rss
end

function M.median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

--- Make a pool of `kind` ("thread", "process" or "mpi") with n workers. For
-- the process pool, returns nil and why when it is missing or fails to start
-- (the bench then reports n/a instead of failing). An MPI pool needs the
-- script to be rank 0 of an MPI job with serving ranks (bench/run.lua
-- starts it so); its n workers are n serving ranks.
function M.pool(kind, n)
  if kind == "thread" then return futures.ThreadPoolExecutor{ max_workers = n } end
  if kind == "mpi" then
    local found, mpi = pcall(require, "futures.mpi")
    if not found then return nil, "futures.mpi is not available: " .. tostring(mpi) end
    local world = mpi.world()
    if world.mode ~= "world" or world.size <= n then
      return nil, ("not rank 0 of an MPI job with %d serving ranks (mode %s, %d ranks)")
        :format(n, world.mode, world.size)
    end
    local ex = futures.MPIPoolExecutor{ max_workers = n }
    assert(ex:submit(M.ident, 1):result(30) == 1)   -- as for a process pool
    return ex
  end
  if not futures.ProcessPoolExecutor then
    return nil, "futures.ProcessPoolExecutor is not available in this build"
  end
  local ok, px = pcall(futures.ProcessPoolExecutor, { max_workers = n })
  if not ok then return nil, "ProcessPoolExecutor failed to start: " .. tostring(px) end
  local ok2, err = pcall(function() return px:submit(M.ident, 1):result(30) end)
  if not ok2 then
    pcall(px.shutdown, px, { wait = false, cancel_futures = true })
    return nil, "ProcessPoolExecutor failed to run a task: " .. tostring(err)
  end
  return px
end

--- The pool kind given as parameter `pool`, or a skip when it cannot run.
function M.pool_or_skip(kind, n)
  local ex, why = M.pool(kind, n)
  if not ex then M.skip(why); os.exit(0) end
  return ex
end

M.futures = futures
return M
