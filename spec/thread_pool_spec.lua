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

  -- Long strings are lent between the states of the process: the encoded
  -- value points at the source string (docs/codec.md, "Long strings").
  it("keeps a long result whose worker state closed before it was read", function()
    local ex = futures.ThreadPoolExecutor(1)
    local f = ex:submit(function()
      require("futures").sleep(0.05)
      return ("0123456789"):rep(20000) .. "end"
    end)
    assert.is_true(helpers.eventually(function() return f:running() or f:done() end, 10))
    futures.wait({ f }, 10)       -- the worker ran it, not this thread
    ex:shutdown()                 -- the worker's state closes
    collectgarbage(); collectgarbage()
    local r = f:result(0)
    assert.equals(200003, #r)
    assert.equals("end", r:sub(-3))
    assert.equals("0123456789", r:sub(1, 10))
  end)

  it("keeps a long argument whose sender's state closed before the task ran", function()
    local gate = futures.Future()
    local b <close> = futures.ThreadPoolExecutor(1)
    local a = futures.ThreadPoolExecutor(1)
    -- a task of pool a makes the string in a's worker state and sends it
    -- to pool b, where it waits behind the gate
    local fb = a:submit(function(pool, g)
      return pool:submit(function(gate_, s)
        gate_:result()
        return #s, s:sub(1, 5), s:sub(-5)
      end, g, ("abcde"):rep(30000))
    end, b, gate):result(10)
    a:shutdown()                  -- a's worker state closes
    collectgarbage(); collectgarbage()
    gate:set_result(true)
    local n, head, tail = fb:result(10)
    assert.equals(150000, n)
    assert.equals("abcde", head)
    assert.equals("abcde", tail)
  end)

  it("keeps the bytes of a long result for a second reader, in another state", function()
    local ex <close> = futures.ThreadPoolExecutor(1)
    local f = ex:submit(function() return ("z"):rep(100000) end)
    assert.equals(100000, #f:result(10))
    -- a task decodes the same outcome in another state, after this one
    local g = ex:submit(function(other) return #other:result() end, f)
    assert.equals(100000, g:result(10))
    assert.equals(100000, #f:result(0))
  end)

  it("gives back the big blocks a worker kept, once it has been idle a moment", function()
    local function rss_kb()
      local h = io.open("/proc/self/status")
      if not h then return nil end
      local kb = tonumber(h:read("a"):match("VmRSS:%s*(%d+)"))
      h:close()
      return kb
    end
    -- Linux only, and not under valgrind (its preload library is in
    -- LD_PRELOAD), whose shadow of what a block held stays when the block
    -- is unmapped
    if not rss_kb() or (os.getenv("LD_PRELOAD") or ""):match("vgpreload") then return end
    local ex <close> = futures.ThreadPoolExecutor(1)
    ex:submit(function() end):result(10)
    collectgarbage(); collectgarbage()
    local before = rss_kb()
    -- 40 MB made and dropped in the worker: its blocks are kept for the
    -- next task, then given back
    local f = ex:submit(function()
      require("futures").sleep(0.05)
      return #("x"):rep(20 * 2 ^ 20)
    end)
    assert.is_true(helpers.eventually(function() return f:running() or f:done() end, 10))
    assert.equals(20 * 2 ^ 20, f:result(10))   -- the worker ran it, not this thread
    assert.is_true(helpers.eventually(function() return rss_kb() < before + 8192 end, 10),
      ("RSS %d KB, %d KB before"):format(rss_kb(), before))
  end)

  it("does not keep the long strings of results that were read", function()
    local ex <close> = futures.ThreadPoolExecutor(1)
    local s = ("x"):rep(2000000)
    for _ = 1, 30 do assert.equals(2000000, #ex:submit(function(v) return v end, s):result(10)) end
    -- A result's string stays lent while its future lives (result() may be
    -- called again); once the futures are collected, the worker lets go.
    collectgarbage(); collectgarbage()
    local kb = ex:submit(function()
      collectgarbage(); collectgarbage()
      return collectgarbage("count")
    end):result(10)
    assert.is_true(kb < 20000, ("the worker holds %.0f KB"):format(kb))
  end)
end)
