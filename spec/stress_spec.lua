-- Stress: many tasks, races between cancel and start, shutdown under load,
-- executors dropped in bulk. LUA_FUTURES_STRESS=<factor> scales the counts
-- up for a longer run (the default keeps `make test` quick).
local futures = require "futures"
local helpers = require "support.helpers"

local SCALE = tonumber(os.getenv("LUA_FUTURES_STRESS")) or 1
local function n(count) return math.floor(count * SCALE) end

local POOLS = { { "ThreadPoolExecutor", futures.ThreadPoolExecutor } }
if futures.ProcessPoolExecutor then
  POOLS[2] = { "ProcessPoolExecutor", futures.ProcessPoolExecutor }
end

for _, pool in ipairs(POOLS) do
  local name, make = pool[1], pool[2]
  local TASKS = name == "ThreadPoolExecutor" and n(100000) or n(20000)

  describe(name .. " under stress", function()
    it(("returns the right result for each of %d tiny submits"):format(TASKS), function()
      local ex <close> = make(2)
      local fs = {}
      for i = 1, TASKS do fs[i] = ex:submit(function(x) return x * 2 end, i) end
      for i = 1, TASKS do assert.equals(i * 2, fs[i]:result(60)) end
    end)

    it(("maps %d items in chunks with every result checked"):format(TASKS), function()
      local ex <close> = make(2)
      local items = {}
      for i = 1, TASKS do items[i] = i end
      local count = 0
      for i, v in ex:map(function(x) return x + 1 end, items, { chunksize = 256, timeout = 120 }) do
        assert.equals(i + 1, v)
        count = count + 1
      end
      assert.equals(TASKS, count)
    end)

    it("ends every future either cancelled or finished when cancel races start", function()
      local ex <close> = make(2)
      local fs = {}
      local N = n(5000)
      for i = 1, N do fs[i] = ex:submit(function(x) return x end, i) end
      local cancelled = 0
      for i = N, 1, -1 do if fs[i]:cancel() then cancelled = cancelled + 1 end end
      local done = futures.wait(fs, 60)
      assert.equals(N, #done)
      local finished = 0
      for i = 1, N do
        if fs[i]:cancelled() then
          assert.equals("CancelledError", helpers.error_of(fs[i].result, fs[i]).type)
        else
          assert.equals(i, fs[i]:result(0))
          finished = finished + 1
        end
      end
      assert.equals(N, finished + cancelled)
    end)

    it("shuts down without waiting while tasks are queued and running", function()
      local ex = make(2)
      local fs = {}
      for i = 1, n(2000) do fs[i] = ex:submit(function(x) return x end, i) end
      ex:shutdown { wait = false, cancel_futures = true }
      local done = futures.wait(fs, 60)
      assert.equals(#fs, #done)
      for _, f in ipairs(fs) do assert.is_true(f:cancelled() or f:result(0) ~= nil) end
    end)

    it("runs every callback even when some raise", function()
      local ex <close> = make(2)
      local ran = 0
      local fs = {}
      for i = 1, n(500) do
        local f = ex:submit(function(x) return x end, i)
        f:add_done_callback(function(g)
          ran = ran + 1
          if g:result() % 3 == 0 then error("callback failure is reported, not fatal") end
        end)
        fs[i] = f
      end
      futures.wait(fs, 60)
      futures.poll()
      assert.equals(#fs, ran)
    end)
  end)
end

describe("executors dropped without shutdown", function()
  it("leave no thread behind once collected", function()
    local before = helpers.thread_count()
    local fs = {}
    for i = 1, n(200) do
      local ex = futures.ThreadPoolExecutor(2)
      fs[i] = ex:submit(function(x) return x end, i)
    end
    for i = 1, #fs do assert.equals(i, fs[i]:result(30)) end
    collectgarbage(); collectgarbage()
    futures.ThreadPoolExecutor(1):shutdown()   -- a reaping point
    assert.is_true(helpers.threads_back_to(before, 10))
  end)
end)
