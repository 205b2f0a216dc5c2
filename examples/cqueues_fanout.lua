-- A fan-out in cqueues: one coroutine per job, each awaiting its own task
-- on a thread pool with futures.cqueues, while another coroutine of the same
-- loop keeps ticking — the CPU-bound work never blocks the loop. Each job
-- finds the number with the longest Collatz chain in a range of its own.
--
--   bin/lua-futures examples/cqueues_fanout.lua [jobs] [range]      (6, 100000)
--
-- Needs cqueues (Debian: lua-cqueues). With plain lua5.4, set LUA_PATH and
-- LUA_CPATH to an installed lua-futures (docs/API.md, "Running scripts and
-- installing").
local futures = require "futures"
local fc = require "futures.cqueues"
local cqueues = require "cqueues"

local jobs = tonumber(arg[1] or "6")
local range = tonumber(arg[2] or "100000")

-- Runs on a worker thread: the start in [first, last] with the longest
-- chain, and its length.
local function longest_chain(first, last)
  local best, best_len = first, 0
  for n = first, last do
    local len, x = 1, n
    while x ~= 1 do
      if x % 2 == 0 then x = x // 2 else x = 3 * x + 1 end
      len = len + 1
    end
    if len > best_len then best, best_len = n, len end
  end
  return best, best_len
end

local pool <close> = futures.ThreadPoolExecutor(futures.cpu_count())
local cq = cqueues.new()
local t0 = futures.monotonic()
local results, finished, ticks = {}, 0, 0

for j = 1, jobs do
  cq:wrap(function()
    local first = (j - 1) * range + 1
    local start, len = fc.await(pool:submit(longest_chain, first, first + range - 1))
    results[j] = { start, len }
    finished = finished + 1
    print(("job %d: %d..%d longest chain starts at %d (%d steps), done after %.2f s")
      :format(j, first, first + range - 1, start, len, futures.monotonic() - t0))
  end)
end

-- The loop stays free: this coroutine ticks while the pool works.
cq:wrap(function()
  while finished < jobs do
    cqueues.sleep(0.01)
    ticks = ticks + 1
  end
end)

-- await_any and await_all, for the shapes futures.wait has: the first of
-- three quick tasks, then the rest.
cq:wrap(function()
  local fs = {}
  for k = 1, 3 do fs[k] = pool:submit(longest_chain, k, k * 1000) end
  local done = fc.await_any(fs)
  local all = fc.await_all(fs)
  print(("await_any: back with %d of 3 done; await_all: back with %d of 3 done"):format(#done, #all))
end)

assert(cq:loop())

-- The same answers, one after another here, to check the pool's.
local same = true
for j = 1, jobs do
  local first = (j - 1) * range + 1
  local start, len = longest_chain(first, first + range - 1)
  same = same and results[j][1] == start and results[j][2] == len
end
print(("%d jobs on %d workers; the loop ticked %d times meanwhile; "
  .. "all match a sequential run: %s"):format(jobs, futures.cpu_count(), ticks, same and "yes" or "NO"))
