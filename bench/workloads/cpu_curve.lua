-- The speedup curve: `tasks` equal CPU-bound tasks (an integer loop of `n`
-- steps each), sequentially in the main state, then on a thread pool and a
-- process pool of w workers for each w in `workers`. Pools are started and
-- warmed first (spawn cost is measured in overhead.lua), so the figure is the
-- parallel speedup itself: sequential time / pool time.
-- params: n, tasks, workers ("1,2,..."), pools ("thread,process")
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local n, ntasks = p.n or 500000, p.tasks or 16
local counts = B.intlist(p.workers or "1,2")
local pools = tostring(p.pools or "thread,process")

local function work(steps)
  local s = 0
  for i = 1, steps do s = (s + i * i) % 1000003 end
  return s
end

local t0 = B.now()
local expected
for _ = 1, ntasks do expected = work(n) end
local seq = B.now() - t0
B.emit("cpu.seq_ms", seq * 1e3)

for kind in pools:gmatch("%a+") do
  local skipped
  for _, w in ipairs(counts) do
    local id = ("cpu.%s.w%d"):format(kind, w)
    local ex, why = B.pool(kind, w)
    if not ex then
      if not skipped then print(kind .. " pool: " .. why); skipped = true end
      B.emit(id, nil)
    else
      B.start_workers(ex, w, 0.02)
      local start = B.now()
      local fs = {}
      for i = 1, ntasks do fs[i] = ex:submit(work, n) end
      for i = 1, ntasks do assert(fs[i]:result() == expected) end
      local t = B.now() - start
      ex:shutdown()
      B.emit(id, seq / t)
    end
  end
end
