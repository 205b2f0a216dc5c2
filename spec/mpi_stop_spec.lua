-- MPIPoolExecutor, stopping work (docs/API.md "Stopping work"): cancel,
-- f:interrupt(), run limits and shutdown reach the task on its rank, whose
-- local pool stops it as a ProcessPoolExecutor does. Rank 0 of
-- `mpiexec -n 3` runs this file (make test).
local futures = require "futures"
local helpers = require "support.helpers"
local M = require "support.mpi"

if not M.ready(3) then
  describe("MPIPoolExecutor, stopping work", function() pending(M.why) end)
  return
end

local function spin_forever() while true do end end

describe("MPIPoolExecutor, stopping work", function()
  it("cancels a task still queued on rank 0, which then never runs", function()
    local ex <close> = futures.MPIPoolExecutor { max_workers = 1 }
    local log = os.tmpname()
    local blocker = ex:submit(futures.sleep, 0.3)
    local f = ex:submit(function(path) local h = io.open(path, "w"); h:write("ran"); h:close() end, log)
    assert.is_true(f:cancel())
    blocker:result(10)
    ex:shutdown()
    assert.equals("", io.open(log):read("a"))
    os.remove(log)
    assert.is_true(f:cancelled())
  end)

  it("stops a running task with f:interrupt(): its future ends cancelled", function()
    local ex <close> = futures.MPIPoolExecutor()
    local f = ex:submit(spin_forever)
    assert.is_true(helpers.eventually(function() return f:running() end, 5))
    assert.is_true(f:interrupt())
    assert.equals("CancelledError", helpers.error_of(f.result, f, 10).type)
    assert.is_true(f:cancelled())
    assert.equals(2, ex:submit(function() return 2 end):result(10))
  end)

  it("stops a task at its submit_with timeout with a TimeoutError", function()
    local ex <close> = futures.MPIPoolExecutor()
    local t0 = futures.monotonic()
    local f = ex:submit_with({ timeout = 0.3 }, spin_forever)
    local err = helpers.error_of(f.result, f, 10)
    assert.is_true(futures.iserror(err, futures.TimeoutError))
    assert.equals("the task ran longer than its limit of 0.3 seconds", err.message)
    assert.is_true(futures.monotonic() - t0 < 2)
  end)

  it("stops every task at the pool's task_timeout", function()
    local ex <close> = futures.MPIPoolExecutor { task_timeout = 0.2 }
    local f = ex:submit(spin_forever)
    assert.is_true(futures.iserror(helpers.error_of(f.result, f, 10), futures.TimeoutError))
    assert.equals(1, ex:submit(function() return 1 end):result(10))
  end)

  it("kills a worker that does not stop within the grace period", function()
    local ex <close> = futures.MPIPoolExecutor { grace = 0.2 }
    -- in C (no hook runs there), and not holding the job's output open
    local f = ex:submit(function() os.execute("exec sleep 3 </dev/null >/dev/null 2>&1") end)
    assert.is_true(helpers.eventually(function() return f:running() end, 5))
    local t0 = futures.monotonic()
    f:interrupt()
    assert.equals("CancelledError", helpers.error_of(f.result, f, 10).type)
    assert.is_true(futures.monotonic() - t0 < 3)
  end)

  it("shuts down with interrupt: running tasks stop, queued ones are cancelled", function()
    local ex = futures.MPIPoolExecutor()
    local running = { ex:submit(spin_forever), ex:submit(spin_forever) }
    local queued = ex:submit(function() return 1 end)
    assert.is_true(helpers.eventually(function() return running[1]:running() and running[2]:running() end, 5))
    local t0 = futures.monotonic()
    ex:shutdown { interrupt = true }
    assert.is_true(futures.monotonic() - t0 < 5)
    assert.is_true(running[1]:cancelled() and running[2]:cancelled())
    assert.is_true(queued:cancelled())
  end)

  it("shuts down with cancel_futures: queued tasks are cancelled, running ones finish", function()
    local ex = futures.MPIPoolExecutor { max_workers = 1 }
    local running = ex:submit(function() require("futures").sleep(0.3) return "finished" end)
    local queued = ex:submit(function() return 1 end)
    assert.is_true(helpers.eventually(function() return running:running() end, 5))
    ex:shutdown { cancel_futures = true }
    assert.equals("finished", running:result(0))
    assert.is_true(queued:cancelled())
  end)

  it("limits each worker's Lua heap with max_memory", function()
    local ex <close> = futures.MPIPoolExecutor { max_memory = 8 << 20 }
    local f = ex:submit(function() local t = {} for i = 1, 1e7 do t[i] = i end return #t end)
    assert.matches("not enough memory: the task went over its worker's limit of 8388608 bytes",
      tostring(helpers.error_of(f.result, f, 20)))
    assert.equals(3, ex:submit(function() return 3 end):result(10))
  end)
end)
