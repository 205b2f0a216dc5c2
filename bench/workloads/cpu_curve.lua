-- The speedup curve: `tasks` equal CPU-bound tasks (an integer loop of `n`
-- steps each), sequentially in the main state, then on a thread pool and a
-- process pool of w workers for each w in `workers`. Pools are started and
-- warmed first (spawn cost is measured in overhead.lua), so the figure is the
-- parallel speedup itself: sequential time / pool time.
-- A round times the sequential run and then every pool, one after the
-- other, and a speedup is that round's sequential time over that pool's;
-- the figure is the median over `inner` rounds. Measured side by side like
-- this, a slow spell of the machine (a busy neighbour) hits both terms of a
-- ratio instead of deciding it.
-- params: n, tasks, workers ("1,2,..."), pools ("thread,process", or
-- "mpi" as rank 0 of an MPI job), inner, seq_id (the sequential figure's
-- id: cpu.seq_ms)
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local n, ntasks = p.n or 500000, p.tasks or 16
local counts = B.intlist(p.workers or "1,2")
local inner = p.inner or 3

local function work(steps)
  local s = 0
  for i = 1, steps do s = (s + i * i) % 1000003 end
  return s
end

local configs = {}   -- { id, pool } in the order of the table
for kind in tostring(p.pools or "thread,process"):gmatch("%a+") do
  for _, w in ipairs(counts) do
    local id = ("cpu.%s.w%d"):format(kind, w)
    local ex, why = B.pool(kind, w)
    if ex then
      B.start_workers(ex, w, 0.02)
    else
      print(kind .. " pool: " .. why)
    end
    configs[#configs + 1] = { id = id, ex = ex, speedups = {} }
  end
end

local expected = work(n)
local seqs = {}
for r = 1, inner do
  local t0 = B.now()
  for _ = 1, ntasks do assert(work(n) == expected) end
  seqs[r] = B.now() - t0
  for _, c in ipairs(configs) do
    if c.ex then
      local start = B.now()
      local fs = {}
      for i = 1, ntasks do fs[i] = c.ex:submit(work, n) end
      for i = 1, ntasks do assert(fs[i]:result() == expected) end
      c.speedups[r] = seqs[r] / (B.now() - start)
    end
  end
end

B.emit(p.seq_id or "cpu.seq_ms", B.median(seqs) * 1e3)
for _, c in ipairs(configs) do
  if c.ex then
    c.ex:shutdown()
    B.emit(c.id, B.median(c.speedups))
  else
    B.emit(c.id, nil)
  end
end
