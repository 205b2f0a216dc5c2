-- MPIPoolExecutor on the serving ranks of an MPI world: the behaviour every
-- executor shares (support/executor_contract.lua, all of it), then what is
-- MPI's own: where tasks run, how they are spread over the ranks, what
-- travels. Rank 0 of `mpiexec -n 3` runs this file (make test, through
-- tools/runspecs.lua); the other two ranks serve.
local futures = require "futures"
local helpers = require "support.helpers"
local M = require "support.mpi"

if not M.ready(3) then
  describe("MPIPoolExecutor", function() pending(M.why) end)
  return
end

require("support.executor_contract")("MPIPoolExecutor", futures.MPIPoolExecutor, _ENV)

describe("MPIPoolExecutor", function()
  it("says where it runs: rank 0 of a world of three ranks on this host", function()
    local world = require("futures.mpi").world()
    assert.equals("world", world.mode)
    assert.equals(3, world.size)
    assert.equals(0, world.rank)
    assert.is_string(world.host)
    local ex <close> = futures.MPIPoolExecutor()
    assert.matches("^MPIPoolExecutor: .*%(0/2 ranks busy, 0 queued%)$", tostring(ex))
  end)

  it("runs each task in a worker process of a serving rank, never on rank 0", function()
    local ex <close> = futures.MPIPoolExecutor()
    local rank, pid, ppid = ex:submit(M.where):result(10)
    assert.is_true(rank == 1 or rank == 2, tostring(rank))
    assert.are_not.equal(M.pid(), pid)
    assert.are_not.equal(M.pid(), ppid)   -- the worker's parent is the rank
  end)

  it("uses every serving rank by default, and only max_workers of them at once", function()
    local function rank_after(s)
      require("futures").sleep(s)
      return (os.getenv("OMPI_COMM_WORLD_RANK"))
    end
    local ex <close> = futures.MPIPoolExecutor()
    local a, b = ex:submit(rank_after, 0.3), ex:submit(rank_after, 0.3)
    local seen = { [a:result(10)] = true, [b:result(10)] = true }
    assert.same({ ["1"] = true, ["2"] = true }, seen)
    local one <close> = futures.MPIPoolExecutor { max_workers = 1 }
    local t0 = futures.monotonic()
    local x, y = one:submit(futures.sleep, 0.2), one:submit(futures.sleep, 0.2)
    assert.is_true(helpers.eventually(function() return x:running() end, 5))
    assert.is_false(y:running())
    x:result(10); y:result(10)
    assert.is_true(futures.monotonic() - t0 >= 0.39)
  end)

  it("never runs more tasks at once than max_workers, even when quick ones end before the next arrives", function()
    -- Three quick tasks, then one that naps: the quick ones end before
    -- the rank has the next task, and the nap makes an overlap visible.
    local log = os.tmpname()
    local function task(nap)
      local h = io.open(log, "a"); h:write("+\n"); h:close()
      if nap > 0 then require("futures").sleep(nap) end
      h = io.open(log, "a"); h:write("-\n"); h:close()
    end
    local most = 0
    for _ = 1, 10 do
      local one <close> = futures.MPIPoolExecutor { max_workers = 1 }
      local fs = {}
      for i = 1, 40 do fs[i] = one:submit(task, i % 4 == 0 and 0.02 or 0) end
      for i = 1, 40 do fs[i]:result(30) end
      local depth = 0
      for line in io.lines(log) do
        depth = depth + (line == "+" and 1 or -1)
        if depth > most then most = depth end
      end
      io.open(log, "w"):close()
    end
    os.remove(log)
    assert.equals(1, most)
  end)

  it("sends tasks to free ranks, so a slow task holds up only its own rank", function()
    local ex <close> = futures.MPIPoolExecutor()
    local slow = ex:submit(futures.sleep, 1.0)
    assert.is_true(helpers.eventually(function() return slow:running() end, 5))
    local t0 = futures.monotonic()
    for i = 1, 20 do assert.equals(i, ex:submit(function(x) return x end, i):result(10)) end
    assert.is_true(futures.monotonic() - t0 < 0.9)
    assert.is_false(slow:done())
    slow:result(10)
  end)

  it("sends a map's chunks across the ranks and gives the items back in order", function()
    local ex <close> = futures.MPIPoolExecutor()
    local items = {}
    for i = 1, 1000 do items[i] = i end
    local ranks, n = {}, 0
    for i, v, rank in ex:map(function(x)
        require("futures").sleep(0.0001)
        return x * 2, os.getenv("OMPI_COMM_WORLD_RANK")
      end, items, { chunksize = 50 }) do
      assert.equals(2 * i, v)
      ranks[rank] = true
      n = n + 1
    end
    assert.equals(1000, n)
    assert.is_true(ranks["1"] and ranks["2"])
  end)

  it("copies values of any size both ways, functions with their upvalues too", function()
    local ex <close> = futures.MPIPoolExecutor()
    local big = ("0123456789"):rep(30000)              -- one frame is 64 KiB
    local t = {}
    for i = 1, 50000 do t[i] = { i, tostring(i) } end
    local suffix = "!"
    local function tag(s) return s .. suffix end
    local s, back = ex:submit(function(x, tt) return tag(x), tt end, big, t):result(30)
    assert.equals(300001, #s)
    assert.equals("!", s:sub(-1))
    assert.equals(50000, #back)
    assert.same({ 50000, "50000" }, back[50000])
  end)

  it("refuses a futures.Queue or a SharedArray at submit: they live in one process", function()
    local ex <close> = futures.MPIPoolExecutor()
    local err = helpers.error_of(ex.submit, ex, function(q) return q end, futures.Queue())
    assert.matches("cannot transfer argument #2: queue %(a shared handle cannot leave the process%)", err)
    err = helpers.error_of(ex.submit, ex, print, 1, { a = futures.SharedArray("f64", 4) })
    assert.matches("argument #3 %(field 'a'%)", err)
    assert.matches("shared handle cannot leave the process", err)
  end)

  it("refuses Lua functions in results unless the pool takes return_functions", function()
    local ex <close> = futures.MPIPoolExecutor()
    local f = ex:submit(function() return function() return 1 end end)
    assert.matches("returned a Lua function %(result #1%); pass return_functions = true",
      helpers.error_of(f.result, f, 10))
    local trusting <close> = futures.MPIPoolExecutor { return_functions = true }
    assert.equals(1, trusting:submit(function() return function() return 1 end end):result(10)())
  end)

  it("gives each pool its own worker processes on a rank, with its own initializer", function()
    local a <close> = futures.MPIPoolExecutor { max_workers = 1,
      initializer = function(v) _G.which = v end, initargs = { "a" } }
    local b <close> = futures.MPIPoolExecutor { max_workers = 1,
      initializer = function(v) _G.which = v end, initargs = { "b" } }
    local function which() return _G.which, select(2, require("support.mpi").where()) end
    local wa, pa = a:submit(which):result(10)
    local wb, pb = b:submit(which):result(10)
    assert.same({ "a", "b" }, { wa, wb })
    assert.are_not.equal(pa, pb)
  end)

  it("keeps a task that waits on a busy rank pending: cancel still works and it never runs", function()
    local ex <close> = futures.MPIPoolExecutor()
    local log = os.tmpname()
    local a, b = ex:submit(futures.sleep, 0.5), ex:submit(futures.sleep, 0.5)
    assert.is_true(helpers.eventually(function() return a:running() and b:running() end, 5))
    local function mark(path) local h = io.open(path, "a"); h:write("ran\n"); h:close() end
    local waiting = { ex:submit(mark, log), ex:submit(mark, log) }
    futures.sleep(0.1)   -- sent to wait behind a and b by now
    for _, f in ipairs(waiting) do
      assert.is_false(f:running())
      assert.is_true(f:cancel())
    end
    a:result(10); b:result(10)
    ex:shutdown()
    assert.equals("", io.open(log):read("a"))
    os.remove(log)
  end)

  it("takes a waiting task back for a rank that becomes free, so a slow task holds up nothing", function()
    local ex <close> = futures.MPIPoolExecutor()
    local t0 = futures.monotonic()
    local long = ex:submit(futures.sleep, 3)
    local short = ex:submit(futures.sleep, 0.1)
    assert.is_true(helpers.eventually(function() return long:running() and short:running() end, 5))
    -- one waits behind each; the one behind `long` moves to the other rank
    local a = ex:submit(function() return "a" end)
    local b = ex:submit(function() return "b" end)
    assert.same({ "a", "b" }, { a:result(10), b:result(10) })
    assert.is_true(futures.monotonic() - t0 < 2, "a waited for the slow task")
    assert.is_false(long:done())
    long:interrupt()
  end)

  it("counts a rank busy with any pool's task as taken", function()
    local a <close> = futures.MPIPoolExecutor()
    local b <close> = futures.MPIPoolExecutor()
    local x = a:submit(futures.sleep, 0.5)
    local y = b:submit(futures.sleep, 0.5)
    assert.is_true(helpers.eventually(function() return x:running() and y:running() end, 5))
    local z = b:submit(function() return 1 end)
    futures.sleep(0.2)
    assert.is_false(z:running() or z:done())   -- both ranks are busy
    assert.equals(1, z:result(10))
  end)
end)
