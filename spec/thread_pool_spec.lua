-- ThreadPoolExecutor: native threads, each with its own lua_State.
local futures = require "futures"
local helpers = require "support.helpers"

require("support.executor_contract")("ThreadPoolExecutor", futures.ThreadPoolExecutor, _ENV)

describe("ThreadPoolExecutor", function()
  local base_threads
  setup(function() base_threads = helpers.thread_count() end)

  it("takes a number as max_workers", function()
    local ex <close> = futures.ThreadPoolExecutor(3)
    assert.matches("/3 workers", tostring(ex))
  end)

  it("defaults max_workers to min(32, cpu_count + 4)", function()
    local ex <close> = futures.ThreadPoolExecutor()
    local n = math.min(32, futures.cpu_count() + 4)
    assert.matches("/" .. n .. " workers", tostring(ex))
  end)

  it("rejects bad options with a clear error", function()
    assert.has_error(function() futures.ThreadPoolExecutor(0) end)
    assert.has_error(function() futures.ThreadPoolExecutor { max_workers = -1 } end)
    assert.has_error(function() futures.ThreadPoolExecutor { max_workers = 2.5 } end)
    assert.has_error(function() futures.ThreadPoolExecutor { workers = 2 } end)
    assert.has_error(function() futures.ThreadPoolExecutor "x" end)
  end)

  it("starts workers on demand, not at creation", function()
    local ex <close> = futures.ThreadPoolExecutor(4)
    assert.matches("^ThreadPoolExecutor: 0x%x+ %(0/4 workers", tostring(ex))
    ex:submit(function() end):result(10)
    assert.matches("%(1/4 workers", tostring(ex))
  end)

  it("reuses an idle worker before starting a new one", function()
    local ex <close> = futures.ThreadPoolExecutor(4)
    for _ = 1, 5 do ex:submit(function() end):result(10) end
    assert.matches("%(1/4 workers", tostring(ex))
  end)

  it("passes a future to a task as the same object", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local gate = futures.Future()
    local f = ex:submit(function(g) return g:result(10) * 2 end, gate)
    futures.sleep(0.05)
    gate:set_result(21)
    assert.equals(42, f:result(10))
  end)

  it("lets a task submit more work to its own pool", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local f = ex:submit(function(pool)
      return pool:submit(function(x) return x + 1 end, 41):result(10)
    end, ex)
    assert.equals(42, f:result(10))
  end)

  it("raises a task's shutdown of its own pool at the task's line", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local err = ex:submit(function(pool)
      require "futures"   -- the executor methods written in Lua
      local ok, e = pcall(function() pool:shutdown() end)
      return not ok and e
    end, ex):result(10)
    assert.matches("^[^:]*thread_pool_spec%.lua:%d+: a worker cannot wait for the shutdown", err)
  end)

  it("breaks the pool when the initializer fails", function()
    local ex <close> = futures.ThreadPoolExecutor { max_workers = 1,
      initializer = function() error("no database") end }
    local f = ex:submit(function() return 1 end)
    local err = helpers.error_of(f.result, f, 10)
    assert.equals("BrokenThreadPool", err.type)
    assert.matches("no database", err.message)
    assert.is_true(futures.iserror(err, futures.BrokenExecutor))
    local later = helpers.error_of(ex.submit, ex, function() end)
    assert.equals("BrokenThreadPool", later.type)
  end)

  it("names its threads after the name option", function()
    local ex <close> = futures.ThreadPoolExecutor { max_workers = 1, name = "cruncher" }
    ex:submit(function() end):result(10)
    local p = io.popen("cat /proc/" .. io.open("/proc/self/stat"):read("n") .. "/task/*/comm 2>/dev/null")
    local names = p:read("a")
    p:close()
    assert.matches("cruncher", names)
  end)

  it("finishes queued work of a dropped executor and frees its threads", function()
    local before = helpers.thread_count()
    local f
    do
      local ex = futures.ThreadPoolExecutor(2)
      f = ex:submit(function() return "still ran" end)
      ex = nil
    end
    collectgarbage(); collectgarbage()
    assert.equals("still ran", f:result(10))
    -- a later executor creation reaps the dropped one's threads
    local ex2 <close> = futures.ThreadPoolExecutor(1)
    assert.is_true(helpers.threads_back_to(before, 5))
  end)

  it("leaves no thread behind after shutdown", function()
    local ex = futures.ThreadPoolExecutor(3)
    local fs = {}
    for i = 1, 6 do fs[i] = ex:submit(function() return i end) end
    ex:shutdown()
    assert.is_true(helpers.threads_back_to(base_threads, 5))
  end)

  it("describes itself with its state", function()
    local ex = futures.ThreadPoolExecutor(1)
    ex:shutdown()
    assert.matches("shut down", tostring(ex))
  end)

  it("runs a callback added inside a task on a shared future, with no later task", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local shared, seen = futures.Future(), futures.Future()
    ex:submit(function(f, out)
      f:add_done_callback(function(g) out:set_result("callback saw " .. g:result()) end)
    end, shared, seen):result(10)
    shared:set_result("it")
    assert.equals("callback saw it", seen:result(10))
  end)

  it("lets tasks that shell out run at the same time", function()
    local ex <close> = futures.ThreadPoolExecutor(3)
    local t0 = futures.monotonic()
    local fs = {}
    for i = 1, 3 do
      fs[i] = ex:submit(function(k)
        local p = io.popen("sleep 0.4; echo " .. k)
        local out = p:read("l")
        p:close()
        return out
      end, i)
    end
    for i = 1, 3 do assert.equals(tostring(i), fs[i]:result(20)) end
    -- one after the other would take 1.2 s
    assert.is_true(futures.monotonic() - t0 < 1.0, "the commands ran one at a time")
  end)
end)
