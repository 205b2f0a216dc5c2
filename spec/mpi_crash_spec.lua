-- MPIPoolExecutor when a task's worker process dies: a serving rank runs
-- its tasks in a local worker process, so a crash, an exit or a kill fails
-- that task alone, with an error naming how it died, the rank and its host,
-- and the rank starts a new worker. Rank 0 of `mpiexec -n 3` runs this
-- file (make test); the job must survive every case.
local futures = require "futures"
local helpers = require "support.helpers"
local M = require "support.mpi"

if not M.ready(3) then
  describe("MPIPoolExecutor crash isolation", function() pending(M.why) end)
  return
end

-- Tasks that end their own worker process.
local function segfault()
  local f = io.open("/proc/self/stat")
  local pid = f:read("n")
  f:close()
  os.execute("kill -SEGV " .. pid)
  require("futures").sleep(10)
end

local function exit3() os.exit(3) end

local HOST = require("futures.mpi").world().host

describe("MPIPoolExecutor, when a task's worker process dies", function()
  it("fails that task with BrokenMPIPool naming the signal, the rank and its host", function()
    local ex <close> = futures.MPIPoolExecutor()
    local f = ex:submit(segfault)
    local err = helpers.error_of(f.result, f, 20)
    assert.is_true(futures.iserror(err, futures.BrokenMPIPool))
    assert.is_true(futures.iserror(err, futures.BrokenExecutor))
    assert.matches("^worker process %d+ died: killed by signal 11 %(SIGSEGV%), on MPI rank [12] %(host "
      .. HOST:gsub("%p", "%%%0") .. "%)$", err.message)
  end)

  it("names the exit status of a task that calls os.exit", function()
    local ex <close> = futures.MPIPoolExecutor()
    local f = ex:submit(exit3)
    assert.matches("died: exited with status 3, on MPI rank", helpers.error_of(f.result, f, 20).message)
  end)

  it("keeps the pool and the rank: the next task on that rank runs in a new worker", function()
    local ex <close> = futures.MPIPoolExecutor { max_workers = 1 }
    local rank, first = ex:submit(M.where):result(20)
    local f = ex:submit(segfault)
    helpers.error_of(f.result, f, 20)
    local again, second = ex:submit(M.where):result(20)
    assert.equals(rank, again)
    assert.are_not.equal(first, second)
    assert.equals("fine", ex:submit(function() return "fine" end):result(20))
  end)

  it("lets the tasks on the other ranks finish", function()
    local ex <close> = futures.MPIPoolExecutor()
    local long = ex:submit(function() require("futures").sleep(0.5) return "done" end)
    assert.is_true(helpers.eventually(function() return long:running() end, 5))
    local f = ex:submit(exit3)
    helpers.error_of(f.result, f, 20)
    assert.equals("done", long:result(20))
  end)

  it("breaks the pool when its initializer fails, saying where", function()
    local ex <close> = futures.MPIPoolExecutor {
      initializer = function() error("no database here") end }
    local f = ex:submit(function() return 1 end)
    local err = helpers.error_of(f.result, f, 20)
    assert.is_true(futures.iserror(err, futures.BrokenMPIPool))
    assert.matches("^initializer failed: .*no database here %(on MPI rank [12], host ", err.message)
    err = helpers.error_of(ex.submit, ex, function() end)
    assert.is_true(futures.iserror(err, futures.BrokenMPIPool))
  end)

  it("fails what runs with kill_workers' signal, and what waits too, and breaks the pool", function()
    for _, how in ipairs { { "kill_workers", 9, "SIGKILL" }, { "terminate_workers", 15, "SIGTERM" } } do
      local ex <close> = futures.MPIPoolExecutor()
      local fs = {}
      for i = 1, 6 do fs[i] = ex:submit(futures.sleep, 10) end   -- 2 run, some wait on the ranks
      assert.is_true(helpers.eventually(function() return fs[1]:running() and fs[2]:running() end, 5))
      futures.sleep(0.1)
      ex[how[1]](ex)
      local err = helpers.error_of(fs[1].result, fs[1], 20)
      assert.is_true(futures.iserror(err, futures.BrokenMPIPool))
      assert.matches(("signal %d %%(%s%%)"):format(how[2], how[3]), err.message)
      for i = 2, 6 do
        assert.is_true(futures.iserror(helpers.error_of(fs[i].result, fs[i], 20), futures.BrokenMPIPool))
      end
      err = helpers.error_of(ex.submit, ex, function() end)
      assert.matches("the pool's workers were sent signal", err.message)
    end
  end)

  it("replaces a worker after max_tasks_per_child tasks", function()
    local ex <close> = futures.MPIPoolExecutor { max_workers = 1, max_tasks_per_child = 2 }
    local pids = {}
    for i = 1, 4 do pids[i] = select(2, ex:submit(M.where):result(20)) end
    assert.equals(pids[1], pids[2])
    assert.equals(pids[3], pids[4])
    assert.are_not.equal(pids[1], pids[3])
  end)

  it("never lets a rank's worker process start MPI, even when a task loads futures.mpi", function()
    local ex <close> = futures.MPIPoolExecutor()
    local mode, size = ex:submit(function()
      local w = require("futures.mpi").world()
      return w.mode, w.size
    end):result(20)
    assert.same({ "alone", 1 }, { mode, size })
  end)
end)
