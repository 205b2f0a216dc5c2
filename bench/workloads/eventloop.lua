-- Futures in a luv event loop (futures.luv), on a thread pool of `workers`:
--   loop.cb_p50_us     completion → done callback inside uv.run(): the task
--                      returns futures.monotonic() as it ends, its callback
--                      (run by the loop) takes the difference; median of `lat`
--                      sequential samples, each submitted by the callback before
--   loop.await_us      a coroutine's fl.await(ex:submit(ident, i)), `rt` times
--                      in a row inside uv.run(), µs each
--   loop.blocking_us   ex:submit(ident, i):result(), `rt` times, µs each; in
--                      rounds alternating with the awaits, for the ratio
--   loop.await_ratio   await_us / blocking_us
--   loop.cb_us         submit `n` tasks with a done callback each, uv.run()
--                      until every callback ran; µs per future
--   loop.asc_us        submit `n` tasks, as_completed with result() on each;
--                      µs per future (rounds of n/5 alternating with cb_us's)
--   loop.cb_ratio      cb_us / asc_us
-- params: workers, lat, rt, n
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local futures = B.futures
local p = B.params()
local workers = p.workers or futures.cpu_count()
local lat_n, rt_n, n = p.lat or 2000, p.rt or 2000, p.n or 10000

local found, uv = pcall(require, "luv")
if not found then B.skip("luv is not installed (Debian: lua-luv)") os.exit(0) end
local fl = require "futures.luv"

local ex = B.pool_or_skip("thread", workers)
B.start_workers(ex, workers, 0.02)

local function stamp() return require("futures").monotonic() end

-- (a) completion → callback latency, each sample started by the last one's
-- callback; the first tenth warms up and is dropped.
do
  local lat, count = {}, 0
  local warm = lat_n // 10
  local function next_sample()
    local f = ex:submit(stamp)
    f:add_done_callback(function(done)
      local now = futures.monotonic()
      count = count + 1
      if count > warm then lat[#lat + 1] = (now - done:result()) * 1e6 end
      if count < lat_n + warm then next_sample() end
    end)
  end
  next_sample()
  uv.run()
  assert(#lat == lat_n)
  B.emit("loop.cb_p50_us", B.median(lat))
end

-- (b) sequential round trips, awaited in a coroutine and blocking, in
-- alternating rounds so that both see the same machine (a shared one's
-- load changes within seconds).
local ROUNDS = 10
do
  local function awaits(k)
    for i = 1, k do assert(fl.await(ex:submit(B.ident, i)) == i) end
  end
  local function blocking(k)
    for i = 1, k do assert(ex:submit(B.ident, i):result() == i) end
  end
  local per = math.max(1, rt_n // ROUNDS)
  coroutine.wrap(awaits)(per)   -- warm-up
  uv.run()
  blocking(per)
  local t_await, t_block = 0, 0
  for _ = 1, ROUNDS do
    local t0 = B.now()
    coroutine.wrap(awaits)(per)
    uv.run()
    t_await = t_await + (B.now() - t0)
    t0 = B.now()
    blocking(per)
    t_block = t_block + (B.now() - t0)
  end
  local await_us = t_await / (per * ROUNDS) * 1e6
  local blocking_us = t_block / (per * ROUNDS) * 1e6
  B.emit("loop.await_us", await_us)
  B.emit("loop.blocking_us", blocking_us)
  B.emit("loop.await_ratio", await_us / blocking_us)
end

-- (c) n futures delivered by the loop, against as_completed, alternating
-- in rounds of n / 5.
do
  local per = math.max(1, n // 5)
  local t_cb, t_asc = 0, 0
  for _ = 1, 5 do
    B.full_gc()
    local t0 = B.now()
    local ran, sum = 0, 0
    -- f:result() first: it may run other callbacks (those of futures done
    -- at add_done_callback run at once, outside the loop's delivery).
    local function count(f)
      local v = f:result()
      ran, sum = ran + 1, sum + v
    end
    for i = 1, per do ex:submit(B.ident, i):add_done_callback(count) end
    uv.run()
    t_cb = t_cb + (B.now() - t0)
    assert(ran == per and sum == per * (per + 1) // 2)

    B.full_gc()
    t0 = B.now()
    local fs = {}
    for i = 1, per do fs[i] = ex:submit(B.ident, i) end
    sum = 0
    for f in futures.as_completed(fs) do sum = sum + f:result() end
    t_asc = t_asc + (B.now() - t0)
    assert(sum == per * (per + 1) // 2)
  end
  local cb_us = t_cb / (per * 5) * 1e6
  local asc_us = t_asc / (per * 5) * 1e6
  B.emit("loop.cb_us", cb_us)
  B.emit("loop.asc_us", asc_us)
  B.emit("loop.cb_ratio", cb_us / asc_us)
end

ex:shutdown()
