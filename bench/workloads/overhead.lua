-- Per-task overhead of one pool kind (`pool` = thread or process):
--   spawn_ms   a new 1-worker pool until the first result is back
--   rt_us      submit -> result round trip on an idle 1-worker pool
--   submit_us  one submit call while the only worker is busy (queued)
--   map1_us    map over `map1` items, chunksize 1, µs per item
--   map100_us  map over `map100` items, chunksize 100, µs per item
-- The maps run on a pool of `workers` workers (cpu_count by default).
-- Each timed phase starts after a full collection, so that it does not pay
-- for the garbage of the phases before it (finished futures cost a few
-- tenths of a microsecond each to collect); the Python twin does the same.
-- params: pool, rt, submit, map1, map100, workers
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local kind = p.pool or "thread"
local workers = p.workers or B.futures.cpu_count()
local ident = B.ident

local function id(name) return kind .. "." .. name end

-- Spawn: a cold pool to its first result.
local start = B.now()
local ex = B.pool_or_skip(kind, 1)
if kind == "thread" then assert(ex:submit(ident, 1):result() == 1) end
B.emit(id("spawn_ms"), (B.now() - start) * 1e3)

-- Round trip on the idle pool.
for i = 1, 200 do ex:submit(ident, i):result() end
local n = p.rt or 10000
B.full_gc()
start = B.now()
for i = 1, n do
  if ex:submit(ident, i):result() ~= i then error("wrong result") end
end
B.emit(id("rt_us"), (B.now() - start) / n * 1e6)

-- Queued submits: the worker is held by a gated task.
local gate = B.gate_path()
local blocker = ex:submit(B.gated, gate)
B.wait_running(blocker)
n = p.submit or 100000
local submit = ex.submit
B.full_gc()
start = B.now()
for i = 1, n do submit(ex, ident, i) end
local elapsed = B.now() - start
B.open_gate(gate)
local last = ex:submit(ident, -1)
assert(last:result(300) == -1)
assert(blocker:result() == true)
B.remove_gate(gate)
B.emit(id("submit_us"), elapsed / n * 1e6)
ex:shutdown()

-- map, on a pool of `workers`.
ex = B.pool_or_skip(kind, workers)
B.start_workers(ex, workers, 0.02)
local function map(count, chunksize)
  local items = {}
  for i = 1, count do items[i] = i end
  B.full_gc()
  local t0 = B.now()
  local seen = 0
  for i, v in ex:map(ident, items, { chunksize = chunksize }) do
    seen = seen + 1
    if v ~= i then error("wrong result") end
  end
  local t = B.now() - t0
  assert(seen == count)
  return t / count * 1e6
end
map(1000, 1)
B.emit(id("map1_us"), map(p.map1 or 20000, 1))
B.emit(id("map100_us"), map(p.map100 or 100000, 100))
ex:shutdown()
