-- Stopping running work: f:interrupt(), run limits (submit_with, task_timeout),
-- per-worker memory limits, shutdown{ interrupt = true }, and the process
-- pool's terminate_workers / kill_workers. The behaviour both pools share is
-- written once and run against each.
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

-- Under the sanitizers and valgrind the counts are scaled down.
local SCALE = tonumber(os.getenv("LUA_FUTURES_STRESS") or "1")

local function spin_forever() local n = 0 while true do n = n + 1 end end

local function elapsed(fn)
  local t0 = futures.monotonic()
  fn()
  return futures.monotonic() - t0
end

local function contract(name, make)
  describe(name .. " stopping work", function()
    it("interrupts a running Lua loop: the future ends cancelled", function()
      local ex <close> = make(1)
      if not ex then return end
      local f = ex:submit(spin_forever)
      assert.is_true(helpers.eventually(function() return f:running() end, 10))
      local called = 0
      f:add_done_callback(function() called = called + 1 end)
      local took = elapsed(function()
        assert.is_true(f:interrupt())
        assert.equals("CancelledError", helpers.error_of(f.result, f, 10).type)
      end)
      assert.is_true(f:cancelled())
      assert.is_true(took < 2, ("took %.2f s"):format(took))
      futures.poll()
      assert.equals(1, called)
      assert.equals(42, ex:submit(function() return 42 end):result(10))
    end)

    it("interrupts a task waiting in futures.sleep at once", function()
      local ex <close> = make(1)
      if not ex then return end
      local f = ex:submit(function() require("futures").sleep(60) return "slept" end)
      assert.is_true(helpers.eventually(function() return f:running() end, 10))
      futures.sleep(0.05)
      local took = elapsed(function()
        f:interrupt()
        helpers.error_of(f.result, f, 10)
      end)
      assert.is_true(f:cancelled())
      assert.is_true(took < 2, ("took %.2f s"):format(took))
    end)

    it("interrupts a task blocked in result, wait, as_completed or q:get at once", function()
      local ex <close> = make(1)
      if not ex then return end
      local blockers = {
        result = function(fs) fs.Future():result() end,
        wait = function(fs) fs.wait({ fs.Future() }) end,
        as_completed = function(fs) for _ in fs.as_completed({ fs.Future() }) do end end,
        get = function(fs) fs.Queue():get() end,
      }
      for name, block in pairs(blockers) do
        local f = ex:submit(function(b) b(require("futures")) return "returned" end, block)
        assert.is_true(helpers.eventually(function() return f:running() end, 10), name)
        futures.sleep(0.05)
        local took = elapsed(function()
          f:interrupt()
          helpers.error_of(f.result, f, 10)
        end)
        assert.is_true(f:cancelled(), name)
        assert.is_true(took < 2, ("%s: took %.2f s"):format(name, took))
      end
    end)

    it("stops again a task that swallows the stop with pcall, until it ends", function()
      local ex <close> = make(1)
      if not ex then return end
      local f = ex:submit(function()
        while true do pcall(function() while true do end end) end
      end)
      assert.is_true(helpers.eventually(function() return f:running() end, 10))
      f:interrupt()
      assert.equals("CancelledError", helpers.error_of(f.result, f, 10).type)
      assert.equals("still here", ex:submit(function() return "still here" end):result(10))
    end)

    it("cancels a pending future and leaves a finished one alone", function()
      local ex <close> = make(1)
      if not ex then return end
      local blocker = ex:submit(function() require("futures").sleep(0.3) end)
      local queued = ex:submit(function() return "never" end)
      assert.is_true(queued:interrupt())
      assert.is_true(queued:cancelled())
      blocker:result(10)
      local done = ex:submit(function() return 1 end)
      done:result(10)
      assert.is_false(done:interrupt())
      assert.equals(1, done:result())
    end)

    it("fails a task that runs longer than its limit with a TimeoutError naming it", function()
      local ex <close> = make(1)
      if not ex then return end
      local f = ex:submit_with({ timeout = 0.2 }, spin_forever)
      local err = helpers.error_of(f.result, f, 10)
      assert.is_true(futures.iserror(err, futures.TimeoutError))
      assert.equals("the task ran longer than its limit of 0.2 seconds", err.message)
      assert.is_false(f:cancelled())
      -- time spent queued does not count
      local blocker = ex:submit(function() require("futures").sleep(0.4) return "b" end)
      local g = ex:submit_with({ timeout = 0.3 }, function() return "in time" end)
      assert.equals("b", blocker:result(10))
      assert.equals("in time", g:result(10))
    end)

    it("applies the pool's task_timeout to every task and map item", function()
      local ex <close> = make{ max_workers = 2, task_timeout = 0.3 }
      if not ex then return end
      local got = {}
      local ok, err = pcall(function()
        for i, v in ex:map(function(x)
          if x == 3 then while true do end end
          return x * 10
        end, { 1, 2, 3, 4 }) do got[i] = v end
      end)
      assert.is_false(ok)
      assert.is_true(futures.iserror(err, futures.TimeoutError), tostring(err))
      assert.same({ 10, 20 }, got)
      assert.equals(7, ex:submit(function() return 7 end):result(10))
    end)

    it("fails a task that goes over max_memory with a message naming the limit", function()
      local ex <close> = make{ max_workers = 1, max_memory = 16 << 20 }
      if not ex then return end
      local f = ex:submit(function()
        local t = {}
        for i = 1, 1e7 do t[i] = ("x"):rep(64) .. i end
        return #t
      end)
      assert.equals("not enough memory: the task went over its worker's limit of 16777216 "
        .. "bytes (max_memory)", helpers.error_of(f.result, f, 60))
      assert.equals("fine", ex:submit(function() return "fine" end):result(10))
    end)

    it("returns promptly from shutdown{ interrupt = true }, every task stopped", function()
      local ex = make(2)
      if not ex then return end
      local a, b = ex:submit(spin_forever), ex:submit(spin_forever)
      local c = ex:submit(function() return "queued" end)
      assert.is_true(helpers.eventually(function() return a:running() and b:running() end, 10))
      local took = elapsed(function() ex:shutdown{ interrupt = true } end)
      assert.is_true(took < 3, ("took %.2f s"):format(took))
      assert.is_true(a:cancelled() and b:cancelled() and c:cancelled())
    end)

    it("survives a thousand interrupts, leaking nothing", function()
      local ex <close> = make(2)
      if not ex then return end
      local n = math.max(20, math.floor(1000 * SCALE))
      for i = 1, n do
        local f = ex:submit(spin_forever)
        if i % 2 == 0 then helpers.eventually(function() return f:running() end, 10) end
        f:interrupt()
        assert.is_true(f:cancelled() or pcall(f.result, f, 10) == false)
      end
      assert.equals("after", ex:submit(function() return "after" end):result(10))
    end)
  end)
end

contract("ThreadPoolExecutor", function(opts) return futures.ThreadPoolExecutor(opts) end)
contract("ProcessPoolExecutor", function(opts)
  local problem = shell.process_pool_problem()
  if problem then pending(problem) return nil end
  if type(opts) == "number" then opts = { max_workers = opts } end
  opts.grace = opts.grace or 0.5
  return futures.ProcessPoolExecutor(opts)
end)

describe("ThreadPoolExecutor stopping work", function()
  it("runs a stopped task's <close> variables and pcall handlers", function()
    local ex <close> = futures.ThreadPoolExecutor(1)
    local closed, handled = futures.Future(), futures.Future()
    local f = ex:submit(function(c, h)
      local _ <close> = setmetatable({}, { __close = function() c:set_result("closed") end })
      local ok, err = pcall(function() while true do end end)
      h:set_result(not ok and err.type)
      while true do end
    end, closed, handled)
    assert.is_true(helpers.eventually(function() return f:running() end, 10))
    f:interrupt()
    helpers.error_of(f.result, f, 10)
    assert.equals("closed", closed:result(10))
    assert.equals("CancelledError", handled:result(10))
  end)

  it("stops a task in a C call when the call returns", function()
    local ex <close> = futures.ThreadPoolExecutor(1)
    local f = ex:submit(function() os.execute("sleep 0.3") while true do end end)
    assert.is_true(helpers.eventually(function() return f:running() end, 10))
    f:interrupt()
    assert.equals("CancelledError", helpers.error_of(f.result, f, 10).type)
  end)

  it("stops a task that the waiting thread runs itself, at its run limit", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local f = ex:submit_with({ timeout = 0.2 }, spin_forever)
    local err = helpers.error_of(f.result, f)   -- no timeout: may run it here
    assert.is_true(futures.iserror(err, futures.TimeoutError))
  end)

  it("has no terminate_workers: threads cannot be killed", function()
    local ex <close> = futures.ThreadPoolExecutor(1)
    assert.matches("only a ProcessPoolExecutor has", helpers.error_of(ex.terminate_workers, ex))
  end)
end)

describe("ProcessPoolExecutor stopping work", function()
  local function pool(opts)
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return nil end
    return futures.ProcessPoolExecutor(opts)
  end

  it("kills a worker stuck in a C call after the grace period, and replaces it", function()
    local px <close> = pool{ max_workers = 1, grace = 0.3 }
    if not px then return end
    local f = px:submit(function() os.execute("sleep 30") return "done" end)
    assert.is_true(helpers.eventually(function() return f:running() end, 10))
    futures.sleep(0.1)
    local took = elapsed(function()
      assert.is_true(f:interrupt())
      assert.equals("CancelledError", helpers.error_of(f.result, f, 10).type)
    end)
    assert.is_true(took < 3, ("took %.2f s"):format(took))
    assert.equals("replaced", px:submit(function() return "replaced" end):result(10))
  end)

  it("ends a run limit in a C call as a TimeoutError, after the grace period", function()
    local px <close> = pool{ max_workers = 1, grace = 0.2 }
    if not px then return end
    local f = px:submit_with({ timeout = 0.2 }, function() os.execute("sleep 30") end)
    local err = helpers.error_of(f.result, f, 10)
    assert.is_true(futures.iserror(err, futures.TimeoutError))
    assert.equals(1, px:submit(function() return 1 end):result(10))
  end)

  for _, case in ipairs({ { "terminate_workers", 15, "SIGTERM" }, { "kill_workers", 9, "SIGKILL" } }) do
    local method, sig, name = case[1], case[2], case[3]
    it(method .. " ends every worker: running and queued futures fail, the pool is done", function()
      local px = pool(2)
      if not px then return end
      local a, b = px:submit(spin_forever), px:submit(spin_forever)
      local queued = px:submit(function() return 1 end)
      assert.is_true(helpers.eventually(function() return a:running() and b:running() end, 10))
      px[method](px)
      local err = helpers.error_of(a.result, a, 10)
      assert.is_true(futures.iserror(err, futures.BrokenProcessPool))
      assert.matches("signal " .. sig .. " %(" .. name .. "%)", err.message)
      assert.is_true(futures.iserror(helpers.error_of(queued.result, queued, 10),
        futures.BrokenProcessPool))
      assert.is_true(futures.iserror(helpers.error_of(px.submit, px, function() end),
        futures.BrokenExecutor))
      px:shutdown()
    end)
  end
end)
