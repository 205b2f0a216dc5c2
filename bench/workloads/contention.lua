-- Thread pool waits when cores are scarce: the pool a user gets by default,
-- pools with more workers than cores, and (with busy=1, while the driver
-- keeps one other CPU-bound process running) the same under load.
--   default.map1_us    ThreadPoolExecutor() (default size), map chunksize 1,
--                      µs per item
--   default.rt_us      the same pool, submit -> result round trip, µs
--   rt.w<N>.p50_us     round trip on a fresh pool of N workers: each of
--   rt.w<N>.worst_us   `runs` runs makes a new pool, warms it and times `rt`
--                      round trips; the median and the worst run's mean
--   rt.w<N>_over_w2    the p50 of N workers over the p50 of 2 (x)
-- With busy=1 every id starts with "busy.".
-- params: rt, runs, map1, workers (comma list, 2 first), busy
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local futures = B.futures
local p = B.params()
local prefix = p.busy == 1 and "busy." or ""
local ident = B.ident

local function round_trips(ex, n)
  B.full_gc()
  local t0 = B.now()
  for i = 1, n do
    if ex:submit(ident, i):result() ~= i then error("wrong result") end
  end
  return (B.now() - t0) / n * 1e6
end

local function map1(ex, count)
  local items = {}
  for i = 1, count do items[i] = i end
  B.full_gc()
  local t0 = B.now()
  local seen = 0
  for i, v in ex:map(ident, items) do
    seen = seen + 1
    if v ~= i then error("wrong result") end
  end
  assert(seen == count)
  return (B.now() - t0) / count * 1e6
end

-- The default pool, as `ThreadPoolExecutor()` makes it.
do
  local ex = futures.ThreadPoolExecutor()
  map1(ex, 1000)
  B.emit(prefix .. "default.map1_us", map1(ex, p.map1 or 20000))
  round_trips(ex, 200)
  B.emit(prefix .. "default.rt_us", round_trips(ex, p.rt or 2000))
  ex:shutdown()
end

local p50 = {}
for _, w in ipairs(B.intlist(p.workers or "2,4,16")) do
  local means = {}
  for r = 1, p.runs or 15 do
    local ex = futures.ThreadPoolExecutor{ max_workers = w }
    round_trips(ex, 200)
    means[r] = round_trips(ex, p.rt or 2000)
    ex:shutdown()
  end
  table.sort(means)
  p50[w] = B.median(means)
  B.emit(("%srt.w%d.p50_us"):format(prefix, w), p50[w])
  B.emit(("%srt.w%d.worst_us"):format(prefix, w), means[#means])
  if w ~= 2 and p50[2] then
    B.emit(("%srt.w%d_over_w2"):format(prefix, w), p50[w] / p50[2])
  end
end
