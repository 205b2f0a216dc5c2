-- Starting MPI jobs (docs/mpi.md "Running"): each `it` runs a script as a
-- job of its own through LUA_FUTURES_MPIEXEC (the mpiexec command with the
-- environment a root container needs; make test sets it), or with no
-- launcher at all, and checks what the job printed and how it ended. This
-- file runs as a plain busted run, not under mpiexec.
local shell = require "support.shell"

local MPIEXEC = os.getenv("LUA_FUTURES_MPIEXEC")
if not MPIEXEC then
  describe("running under MPI", function()
    pending("needs LUA_FUTURES_MPIEXEC, the mpiexec command (make test sets it)")
  end)
  return
end

local q, ROOT, EXE = shell.q, shell.ROOT, shell.EXE
-- Plain lua5.4 finds the build tree's modules through these.
local LUA_ENV = ("LUA_PATH_5_4=%s LUA_CPATH_5_4=%s"):format(
  q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;"), q(ROOT .. "/build/?.so;;"))

local function script(code)
  return shell.write_file(os.tmpname() .. ".lua", code)
end

-- Runs `cmd` from the repository root, with no LUA_INIT.
local function run(cmd, seconds)
  return shell.run(("cd %s && env -u LUA_INIT -u LUA_INIT_5_4 %s"):format(q(ROOT), cmd), seconds or 60)
end

local function mpiexec(n, rest) return ("%s -n %d %s"):format(MPIEXEC, n, rest) end

-- A script that uses the pool as any executor, printing its arguments too.
local SQUARES = script [[
local futures = require "futures"
local ex <close> = futures.MPIPoolExecutor()
local fs = {}
for i = 1, 6 do fs[i] = ex:submit(function(x) return x * x end, i) end
local sum = 0
for f in futures.as_completed(fs, 30) do sum = sum + f:result() end
print("sum", sum, ...)
]]

describe("running under MPI", function()
  it("runs a script unchanged under mpiexec -n 3 lua-futures --mpi: rank 0 alone runs it, MPI says nothing", function()
    local r = run(mpiexec(3, ("%s --mpi %s one two"):format(q(EXE), q(SQUARES))))
    assert.equals("", r.err)
    assert.equals("sum\t91\tone\ttwo\n", r.out)
    assert.equals(0, r.status)
  end)

  it("runs the same script under mpiexec -n 3 lua5.4 -l futures.mpi", function()
    local r = run(("%s %s"):format(LUA_ENV, mpiexec(3, ("lua5.4 -l futures.mpi %s x"):format(q(SQUARES)))))
    assert.equals("", r.err)
    assert.equals("sum\t91\tx\n", r.out)
    assert.equals(0, r.status)
  end)

  it("serves from a require inside an app: what comes before it runs on every rank", function()
    local app = script [[
print("starting")
io.stdout:flush()
local futures = require "futures"
local ex <close> = futures.MPIPoolExecutor()   -- ranks 1 and 2 serve from here on
print("result", ex:submit(function() return 42 end):result(30))
]]
    local r = run(mpiexec(3, ("%s %s"):format(q(EXE), q(app))))
    os.remove(app)
    assert.equals("", r.err)
    local _, starts = r.out:gsub("starting\n", "")
    assert.equals(3, starts)
    assert.matches("result\t42\n", r.out)
    assert.equals(0, r.status)
  end)

  it("ends the job with a failure status when the script fails", function()
    local bad = script [[
local futures = require "futures"
local ex <close> = futures.MPIPoolExecutor()
ex:submit(function() return 1 end):result(30)
error("the script's own error")
]]
    local r = run(mpiexec(3, ("%s --mpi %s"):format(q(EXE), q(bad))))
    os.remove(bad)
    assert.are_not.equal(0, r.status)
    assert.matches("the script's own error", r.err)
  end)

  it("runs a script without a launcher as a world of one rank, and says so once", function()
    local twice = script [[
local futures = require "futures"
local a <close> = futures.MPIPoolExecutor(2)
local b <close> = futures.MPIPoolExecutor(1)
print(require("futures.mpi").world().mode, a:submit(function() return 1 end):result(30),
  b:submit(function() return 2 end):result(30))
]]
    local r = run(("%s --mpi %s"):format(q(EXE), q(twice)))
    os.remove(twice)
    assert.equals("alone\t1\t2\n", r.out)
    assert.equals("lua-futures --mpi: no MPI launcher started this process: it is a world of one "
      .. "rank, and MPIPoolExecutor runs its tasks in local worker processes (start it with "
      .. "mpiexec -n N)\n", r.err)
    assert.equals(0, r.status)
  end)

  it("runs the tasks of a world of one rank (mpiexec -n 1) in local worker processes", function()
    local r = run(mpiexec(1, ("%s %s z"):format(q(EXE), q(SQUARES))))
    assert.equals("sum\t91\tz\n", r.out)
    assert.matches("^MPIPoolExecutor: the MPI world has one rank", r.err)
    assert.equals(0, r.status)
  end)

  it("finds futures/mpi.so beside bin/lua-futures, with no LUA_CPATH", function()
    local r = shell.run(("cd /tmp && env -u LUA_CPATH -u LUA_CPATH_5_4 %s --mpi -e %s"):format(
      q(EXE), q("print(require('futures.mpi').world().mode)")))
    assert.equals("alone\n", r.out)
    assert.equals(0, r.status)
  end)

  it("fails the futures waiting on a job whose serving rank dies, then the job ends", function()
    local die = script [[
local futures = require "futures"
local ex = futures.MPIPoolExecutor()
local slow = ex:submit(futures.sleep, 20)
ex:submit(function()   -- kills the rank that runs it (its worker's parent)
  local s = io.open("/proc/self/stat"):read("a")
  os.execute("kill -KILL " .. s:match("^%d+ %(.-%) %a (%d+)"))
  require("futures").sleep(20)
end)
local ok, err = pcall(slow.result, slow, 30)
print(ok, futures.iserror(err, futures.BrokenMPIPool), err.message)
io.stdout:flush()
]]
    local t0 = os.time()
    -- Open MPI waits odls_base_sigkill_timeout seconds (1) after its
    -- SIGCONT before the SIGTERM, and as long again before the SIGKILL; on a
    -- loaded machine MPI may hold rank 0 longer than that after a death
    -- (docs/mpi.md), so the job gets the 3 seconds a user would give it.
    local r = run("env OMPI_MCA_odls_base_sigkill_timeout=3 " ..
                  mpiexec(3, ("%s --mpi %s"):format(q(EXE), q(die))), 60)
    os.remove(die)
    assert.matches("^false\ttrue\tan MPI rank ended, or the MPI job is being stopped", r.out)
    assert.are_not.equal(0, r.status)
    assert.is_true(os.time() - t0 < 15)
  end)

  it("spawns serving ranks for a script that no launcher started", function()
    local spawn = script [[
local futures = require "futures"
local ex <close> = futures.MPIPoolExecutor { spawn = 2 }
local world = require("futures.mpi").world()
local fs = {}
for i = 1, 4 do fs[i] = ex:submit(function(x) return x + 1 end, i) end
local sum = 0
for i = 1, 4 do sum = sum + fs[i]:result(30) end
print(world.mode, world.size, sum)
]]
    local r = run(("%s %s"):format(q(EXE), q(spawn)), 60)
    os.remove(spawn)
    assert.equals("spawn\t3\t14\n", r.out)
    assert.equals(0, r.status)
  end)

  it("refuses spawn in a job of several ranks, which the pool uses as they are", function()
    local s = script [[
local futures = require "futures"
local ok, err = pcall(futures.MPIPoolExecutor, { spawn = 2 })
print(ok, err)
]]
    local r = run(mpiexec(3, ("%s --mpi %s"):format(q(EXE), q(s))))
    os.remove(s)
    assert.matches("^false\t.*MPIPoolExecutor: spawn is for a process that no MPI launcher started", r.out)
    assert.equals(0, r.status)
  end)

  it("gives up a spawn that does not finish within spawn_timeout, saying why, instead of hanging", function()
    local s = script [[
local futures = require "futures"
local t0 = futures.monotonic()
local ok, err = pcall(futures.MPIPoolExecutor, { spawn = 2, worker = "/bin/true", spawn_timeout = 1.5 })
print(ok, futures.monotonic() - t0 < 10, err)
]]
    local r = run(("%s %s"):format(q(EXE), q(s)), 60)
    os.remove(s)
    assert.matches("^false\ttrue\t.*MPI_Comm_spawn of 2 ranks %(.*true%) did not finish within 1.5 seconds", r.out)
    assert.equals(0, r.status)
  end)
end)
