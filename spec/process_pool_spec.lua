-- ProcessPoolExecutor: worker processes (bin/lua-futures --lf-worker), each
-- with its own lua_State, spoken to over a socketpair.
local futures = require "futures"
local helpers = require "support.helpers"

require("support.executor_contract")("ProcessPoolExecutor", futures.ProcessPoolExecutor, _ENV)

local function q(s)  -- quote one word for sh
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

-- A sanitizer's own SIGSEGV handler turns the crash into an exit status.
local SANITIZED = (os.getenv("LUA_FUTURES_SPEC_INTERP") or ""):match("san") ~= nil

local ROOT = (function()
  local p = assert(io.popen("pwd"))
  local dir = p:read("l")
  p:close()
  return dir
end)()

-- The pid of the process that runs this code (host or worker).
local function getpid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

-- A task's view of its own process.
local function worker_pid()
  local f = io.open("/proc/self/stat")
  local pid = f:read("n")
  f:close()
  return pid
end

-- "R", "S", "Z"... for a live or zombie process; nil when it is gone.
local function proc_state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a") or ""
  f:close()
  return s:match("^%d+ %(.*%) (%a)")
end

local function is_running(pid)
  local s = proc_state(pid)
  return s ~= nil and s ~= "Z" and s ~= "X"
end

-- The worker processes that are children of this host, live or zombie.
local function worker_children()
  local me = getpid()
  local p = assert(io.popen("ls /proc"))
  local found = {}
  for name in p:lines() do
    if name:match("^%d+$") then
      local f = io.open("/proc/" .. name .. "/stat")
      if f then
        local s = f:read("a") or ""
        f:close()
        local comm, state, ppid = s:match("^%d+ %((.*)%) (%a) (%d+)")
        if tonumber(ppid) == me and (comm == "lua-futures" or comm == "exe") then
          found[#found + 1] = { pid = tonumber(name), state = state }
        end
      end
    end
  end
  p:close()
  return found
end

local function fd_count()
  local p = assert(io.popen("ls /proc/" .. getpid() .. "/fd | wc -l"))
  local n = p:read("n")
  p:close()
  return n
end

-- Runs a shell command; returns its exit status and what it printed.
local function sh(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1"))
  local out = p:read("a")
  local _, _, status = p:close()
  return status, out
end

describe("ProcessPoolExecutor", function()
  it("takes a number as max_workers", function()
    local ex <close> = futures.ProcessPoolExecutor(3)
    assert.matches("^ProcessPoolExecutor: 0x%x+ %(0/3 workers", tostring(ex))
  end)

  it("defaults max_workers to cpu_count()", function()
    local ex <close> = futures.ProcessPoolExecutor()
    assert.matches("/" .. futures.cpu_count() .. " workers", tostring(ex))
  end)

  it("rejects bad options with a clear error", function()
    local P = futures.ProcessPoolExecutor
    assert.has_error(function() P(0) end)
    assert.has_error(function() P { max_workers = -1 } end)
    assert.has_error(function() P { max_workers = 2.5 } end)
    assert.has_error(function() P { workers = 2 } end)
    assert.has_error(function() P { max_tasks_per_child = 0 } end)
    assert.has_error(function() P { worker = 42 } end)
    assert.has_error(function() P { initargs = 1 } end)
    assert.has_error(function() P "x" end)
    assert.matches("unknown option 'name'", helpers.error_of(P, { name = "x" }))
  end)

  it("starts worker processes on demand and reuses an idle one", function()
    local ex <close> = futures.ProcessPoolExecutor(4)
    assert.matches("%(0/4 workers", tostring(ex))
    for _ = 1, 5 do ex:submit(function() end):result(10) end
    assert.matches("%(1/4 workers", tostring(ex))
  end)

  it("runs tasks in other processes than the host", function()
    local ex <close> = futures.ProcessPoolExecutor(2)
    local pid = ex:submit(worker_pid):result(10)
    assert.equals("integer", math.type(pid))
    assert.are_not.equals(getpid(), pid)
    assert.is_true(is_running(pid))
  end)

  it("carries big values there and back", function()
    local ex <close> = futures.ProcessPoolExecutor(1)
    local s = string.rep("0123456789abcdef", 1 << 20)   -- 16 MB
    local r = ex:submit(function(x) return x .. "!", #x end, s):result(30)
    assert.equals(#s + 1, #r)
    assert.equals(s, r:sub(1, -2))
    local t = {}
    for i = 1, 200000 do t[i] = i end
    local back = ex:submit(function(u) u[#u + 1] = "end"; return u end, t):result(30)
    assert.equals(200001, #back)
    assert.equals(123456, back[123456])
    assert.equals("end", back[200001])
  end)

  it("takes submits from thread-pool tasks", function()
    local px <close> = futures.ProcessPoolExecutor(2)
    local tp <close> = futures.ThreadPoolExecutor(4)
    local fs = {}
    for i = 1, 8 do
      fs[i] = tp:submit(function(pool, x)
        return pool:submit(function(y) return y * y end, x):result(20)
      end, px, i)
    end
    for i = 1, 8 do assert.equals(i * i, fs[i]:result(30)) end
  end)

  it("prints a task's output on the host's stdout before its result", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local futures = require "futures"
      local px <close> = futures.ProcessPoolExecutor(1)
      px:submit(function() print("from the worker"); io.write("no newline") end):result(10)
      print(" / after the result")
    ]])
    f:close()
    local status, out = sh("timeout 30 " .. q(ROOT .. "/bin/lua-futures") .. " " .. q(script))
    os.remove(script)
    assert.equals(0, status, out)
    assert.equals("from the worker\nno newline / after the result\n", out)
  end)

  describe("refuses what cannot leave the process", function()
    it("a future argument", function()
      local ex <close> = futures.ProcessPoolExecutor(1)
      local err = helpers.error_of(ex.submit, ex, function() end, futures.Future())
      assert.matches("cannot transfer argument #2", err)
    end)

    it("an executor argument or upvalue", function()
      local ex <close> = futures.ProcessPoolExecutor(1)
      assert.matches("cannot transfer",
        helpers.error_of(ex.submit, ex, function() end, { pool = ex }))
      local tp <close> = futures.ThreadPoolExecutor(1)
      assert.matches("cannot transfer",
        helpers.error_of(ex.submit, ex, function() return tp end))
    end)

    it("a shared handle in initargs", function()
      local err = helpers.error_of(futures.ProcessPoolExecutor,
        { initializer = function() end, initargs = { futures.Future() } })
      assert.matches("cannot transfer", err)
    end)

    it("a shared handle a task returns, as that task's error", function()
      local ex <close> = futures.ProcessPoolExecutor(1)
      local f = ex:submit(function() return require("futures").Future() end)
      local err = helpers.error_of(f.result, f, 10)
      assert.matches("cannot transfer result", tostring(err))
      assert.equals(42, ex:submit(function() return 42 end):result(10))
    end)
  end)

  describe("when a worker dies", function()
    local function check_isolated(crash, pattern)
      local ex <close> = futures.ProcessPoolExecutor(2)
      local fs = {}
      for i = 1, 8 do
        fs[i] = ex:submit(function(x) require("futures").sleep(0.02); return x * 10 end, i)
      end
      local bad = ex:submit(crash)
      for i = 9, 16 do
        fs[i] = ex:submit(function(x) require("futures").sleep(0.02); return x * 10 end, i)
      end
      local err = helpers.error_of(bad.result, bad, 20)
      assert.equals("BrokenProcessPool", err.type)
      assert.matches("^worker process %d+ died: " .. pattern, err.message)
      assert.is_true(futures.iserror(err, futures.BrokenExecutor))
      for i = 1, 16 do assert.equals(i * 10, fs[i]:result(20)) end
      assert.equals("still here", ex:submit(function() return "still here" end):result(10))
    end

    it("fails only its task when it calls os.exit", function()
      check_isolated(function() os.exit(3) end, "exited with status 3$")
    end)

    it("fails only its task when it is killed with SIGKILL", function()
      check_isolated(function()
        local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
        os.execute("kill -9 " .. pid)
        require("futures").sleep(5)
      end, "killed by signal 9 %(SIGKILL%)$")
    end)

    it("fails only its task when it crashes with SIGSEGV", function()
      check_isolated(function()
        local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
        os.execute("kill -SEGV " .. pid)
        require("futures").sleep(5)
      end, SANITIZED and "" or "killed by signal 11 %(SIGSEGV%)")
    end)

    it("starts a replacement with a new pid", function()
      local ex <close> = futures.ProcessPoolExecutor(1)
      local first = ex:submit(worker_pid):result(10)
      local f = ex:submit(function() os.exit(1) end)
      assert.has_error(function() f:result(10) end)
      local second = ex:submit(worker_pid):result(10)
      assert.are_not.equals(first, second)
      assert.is_false(is_running(first))
    end)

    it("fails a big task written whole to a worker killed before it read it, and goes on", function()
      local ex <close> = futures.ProcessPoolExecutor(1)
      -- The worker stops itself (so that it cannot read); the host writes
      -- it a 16 MB task, which travels in a memfd: the frame is whole at
      -- once, so once the worker is killed the task counts as the one it
      -- ran.
      local first = ex:submit(function()
        local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
        os.execute(("(sleep 0.1; kill -STOP %d) >/dev/null 2>&1 &"):format(pid))
        return pid
      end):result(10)
      assert.is_true(helpers.eventually(function() return proc_state(first) == "T" end, 10))
      local big = string.rep("y", 16 << 20)
      local function measure(s)
        local p = io.open("/proc/self/stat"); local pid = p:read("n"); p:close()
        return #s, pid
      end
      local f = ex:submit(measure, big)
      assert.is_true(f:running())
      os.execute(("kill -9 %d"):format(first))
      assert.matches("worker process " .. first .. " died: killed by signal 9",
        tostring(helpers.error_of(f.result, f, 20)))
      local n, pid = ex:submit(measure, big):result(20)
      assert.equals(#big, n)
      assert.are_not.equals(first, pid)
    end)

    it("lets a task be interrupted while it waits to go again after its worker died before it was ready", function()
      -- The worker has the task before it is ready (its initializer naps):
      -- killed then, it never ran the task, which goes to the next worker.
      local ex <close> = futures.ProcessPoolExecutor { max_workers = 1,
        initializer = function() require("futures").sleep(0.4) end }
      local f = ex:submit(futures.sleep, 30)
      assert.is_true(helpers.eventually(function() return #worker_children() == 1 end, 10))
      local first = worker_children()[1].pid
      os.execute(("kill -9 %d"):format(first))
      assert.is_true(helpers.eventually(function()
        local kids = worker_children()
        return #kids == 1 and kids[1].pid ~= first
      end, 10))
      assert.is_true(f:interrupt())   -- it waits for the new worker to be ready
      assert.is_true(futures.iserror(helpers.error_of(f.result, f, 10), futures.CancelledError))
      assert.equals(1, ex:submit(function() return 1 end):result(10))
    end)

    it("does not take the host down with SIGPIPE while the host writes to it", function()
      -- The initializer exits before the worker reads its first task, so
      -- the host writes (INIT, then the task's memfd frame) to a socket
      -- nobody reads.
      local ex <close> = futures.ProcessPoolExecutor { max_workers = 1,
        initializer = function() os.exit(7) end }
      local f = ex:submit(function(s) return #s end, string.rep("x", 32 << 20))
      local err = helpers.error_of(f.result, f, 20)
      assert.equals("BrokenProcessPool", err.type)
      assert.matches("exited with status 7", err.message)
    end)
  end)

  describe("initializer", function()
    it("runs once in each worker, before its tasks", function()
      local ex <close> = futures.ProcessPoolExecutor { max_workers = 1,
        initializer = function(base) _G.counter = base end, initargs = { 100 } }
      for i = 1, 3 do
        assert.equals(100 + i, ex:submit(function()
          _G.counter = _G.counter + 1
          return _G.counter
        end):result(10))
      end
    end)

    it("breaks the pool when it fails", function()
      local ex <close> = futures.ProcessPoolExecutor { max_workers = 2,
        initializer = function() error("no database") end }
      local f = ex:submit(function() return 1 end)
      local g = ex:submit(function() return 2 end)
      local err = helpers.error_of(f.result, f, 10)
      assert.equals("BrokenProcessPool", err.type)
      assert.matches("initializer failed: .*no database", err.message)
      assert.equals("BrokenProcessPool", helpers.error_of(g.result, g, 10).type)
      local later = helpers.error_of(ex.submit, ex, function() end)
      assert.equals("BrokenProcessPool", later.type)
      assert.matches("broken", tostring(ex))
    end)
  end)

  it("replaces a worker after max_tasks_per_child tasks", function()
    local ex <close> = futures.ProcessPoolExecutor { max_workers = 1, max_tasks_per_child = 2 }
    local pids = {}
    for i = 1, 6 do pids[i] = ex:submit(worker_pid):result(10) end
    assert.equals(pids[1], pids[2])
    assert.equals(pids[3], pids[4])
    assert.equals(pids[5], pids[6])
    assert.are_not.equals(pids[1], pids[3])
    assert.are_not.equals(pids[3], pids[5])
    -- chunks of a map count as one task each
    local seen = {}
    for _, pid in ex:map(worker_pid, { 1, 2, 3, 4, 5, 6, 7, 8 }, { chunksize = 2, timeout = 20 }) do
      seen[pid] = (seen[pid] or 0) + 1
    end
    for _, n in pairs(seen) do assert.equals(4, n) end
  end)

  it("leaves no zombie after shutdown", function()
    local ex = futures.ProcessPoolExecutor { max_workers = 3, max_tasks_per_child = 2 }
    local fs = {}
    for i = 1, 12 do fs[i] = ex:submit(worker_pid) end
    local pids = {}
    for i = 1, 12 do pids[fs[i]:result(10)] = true end
    local crash = ex:submit(function() os.exit(1) end)
    pcall(crash.result, crash, 10)
    ex:shutdown()
    assert.matches("%(0/3 workers", tostring(ex))
    for pid in pairs(pids) do assert.is_nil(proc_state(pid)) end
    assert.same({}, worker_children())
  end)

  it("keeps its descriptor count stable over 1000 tasks", function()
    local ex <close> = futures.ProcessPoolExecutor(2)
    local a, b = ex:submit(futures.sleep, 0.05), ex:submit(futures.sleep, 0.05)
    a:result(10); b:result(10)   -- both workers started
    collectgarbage(); collectgarbage()   -- files earlier tests left open
    local before = fd_count()
    local fs = {}
    for i = 1, 1000 do fs[i] = ex:submit(function(x) return x end, i) end
    for i = 1, 1000 do assert.equals(i, fs[i]:result(30)) end
    -- and across 20 replacements of workers
    local px <close> = futures.ProcessPoolExecutor { max_workers = 2, max_tasks_per_child = 10 }
    for i = 1, 200 do fs[i] = px:submit(function(x) return x end, i) end
    for i = 1, 200 do assert.equals(i, fs[i]:result(30)) end
    px:shutdown()
    collectgarbage(); collectgarbage()
    local after = fd_count()
    -- One descriptor of slack: busted or a pending finalizer may hold one
    -- more for a moment; a leak here would be one per task or per worker.
    assert.is_true(after <= before + 1, ("%d descriptors before, %d after"):format(before, after))
  end)

  it("gives workers no descriptor but their socket and stdio", function()
    local ex <close> = futures.ProcessPoolExecutor(1)
    local listing = os.tmpname()
    local fds = ex:submit(function(path)
      local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close()
      os.execute("ls /proc/" .. pid .. "/fd > " .. path)   -- no pipe of ours
      local list = {}
      for l in io.lines(path) do list[#list + 1] = tonumber(l) end
      table.sort(list)
      return list
    end, listing):result(10)
    os.remove(listing)
    assert.same({ 0, 1, 2, 3 }, fds)
  end)

  it("returns from shutdown{ wait = false } at once; the task still completes", function()
    local ex = futures.ProcessPoolExecutor(1)
    local f = ex:submit(function() require("futures").sleep(0.3); return "late" end)
    assert.is_true(helpers.eventually(function() return f:running() end, 5))
    local t0 = futures.monotonic()
    ex:shutdown { wait = false }
    assert.is_true(futures.monotonic() - t0 < 0.1)
    assert.equals("late", f:result(10))
    ex:shutdown()
    assert.same({}, worker_children())
  end)

  it("finishes the queued work of a dropped executor, then reaps its workers", function()
    local f
    do
      local ex = futures.ProcessPoolExecutor(2)
      f = ex:submit(function() return "still ran" end)
      ex = nil
    end
    collectgarbage(); collectgarbage()
    assert.equals("still ran", f:result(10))
    local ex2 <close> = futures.ProcessPoolExecutor(1)   -- a reaping point
    assert.is_true(helpers.eventually(function()
      collectgarbage(); collectgarbage()
      futures.ProcessPoolExecutor(1):shutdown()
      return #worker_children() == 0
    end, 5))
  end)

  describe("workers of a host that died", function()
    local EXE = ROOT .. "/bin/lua-futures"
    local function host_script(body)
      local path = os.tmpname()
      local f = assert(io.open(path, "w"))
      f:write([[
        local futures = require "futures"
        local ex = futures.ProcessPoolExecutor(1)
        local f = ex:submit(function()
          local s = io.open("/proc/self/stat"); local pid = s:read("n"); s:close()
          io.stdout:write(pid, "\n"); io.stdout:flush()
          require("futures").sleep(20)
        end)
      ]] .. body)
      f:close()
      return path
    end

    local function check_worker_ends(body)
      local script = host_script(body)
      local p = assert(io.popen("exec timeout 30 " .. q(EXE) .. " " .. q(script)))
      local pid = tonumber(p:read("l"))
      assert.is_number(pid)
      local gone = helpers.eventually(function() return not is_running(pid) end, 5)
      p:close()
      os.remove(script)
      assert.is_true(gone, "worker " .. pid .. " outlived its host")
    end

    it("exit when the host is killed with SIGKILL", function()
      check_worker_ends([[
        futures.sleep(0.2)
        local s = io.open("/proc/self/stat"); local me = s:read("n"); s:close()
        os.execute("kill -9 " .. me)
      ]])
    end)

    it("exit when the host exits after shutdown{ wait = false }", function()
      check_worker_ends([[
        futures.sleep(0.2)
        ex:shutdown { wait = false }
        os.exit(0)
      ]])
    end)
  end)

  describe("finds its worker interpreter", function()
    local LUA = "lua5.4"
    local function run_lua(env, cpath, code)
      return sh(("%s LUA_PATH=%s LUA_CPATH=%s timeout 30 %s -e %s"):format(
        env, q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua"), q(cpath), LUA, q(code)))
    end
    local USE = [[
      local futures = require "futures"
      local ex <close> = futures.ProcessPoolExecutor(1)
      print(ex:submit(function(a) return a * 2 end, 21):result(10))
    ]]

    it("beside the build tree's futures/core.so, from plain lua5.4", function()
      local status, out = run_lua("", ROOT .. "/build/?.so", USE)
      assert.equals(0, status, out)
      assert.equals("42\n", out)
    end)

    it("in an installed layout: PREFIX/bin beside PREFIX/lib/lua/5.4", function()
      local prefix = os.tmpname()
      os.remove(prefix)
      assert.equals(0, (sh(("mkdir -p %s/bin %s/lib/lua/5.4/futures && cp %s %s/bin/ && cp %s %s/lib/lua/5.4/futures/"):format(
        q(prefix), q(prefix), q(ROOT .. "/bin/lua-futures"), q(prefix),
        q(ROOT .. "/build/futures/core.so"), q(prefix)))))
      local status, out = run_lua("", prefix .. "/lib/lua/5.4/?.so", USE)
      sh("rm -rf " .. q(prefix))
      assert.equals(0, status, out)
      assert.equals("42\n", out)
    end)

    it("and says where it looked when there is none", function()
      local dir = os.tmpname()
      os.remove(dir)
      sh(("mkdir -p %s/futures && cp %s %s/futures/"):format(q(dir),
        q(ROOT .. "/build/futures/core.so"), q(dir)))
      local status, out = run_lua("", dir .. "/?.so", USE)
      sh("rm -rf " .. q(dir))
      assert.are_not.equals(0, status)
      assert.matches("cannot find the lua%-futures interpreter", out)
      assert.matches("LUA_FUTURES_WORKER", out)
      assert.matches(dir .. "/futures/../../bin/lua-futures", out, 1, true)
    end)

    it("from LUA_FUTURES_WORKER, and the worker option wins over it", function()
      local status, out = run_lua("LUA_FUTURES_WORKER=/nonexistent/lua-futures",
        ROOT .. "/build/?.so", USE)
      assert.are_not.equals(0, status)
      assert.matches("/nonexistent/lua%-futures", out)
      assert.matches("LUA_FUTURES_WORKER", out)
      status, out = run_lua("LUA_FUTURES_WORKER=/nonexistent/lua-futures",
        ROOT .. "/build/?.so", USE:gsub("ProcessPoolExecutor%(1%)",
          "ProcessPoolExecutor{ max_workers = 1, worker = " .. ("%q"):format(ROOT .. "/bin/lua-futures") .. " }"))
      assert.equals(0, status, out)
      assert.equals("42\n", out)
    end)

    it("from the worker option, refusing a file that is not executable", function()
      local err = helpers.error_of(futures.ProcessPoolExecutor,
        { worker = "/nonexistent/lua-futures" })
      assert.matches("/nonexistent/lua%-futures", err)
      assert.matches("worker option", err)
    end)
  end)

  it("leaves no worker process behind", function()
    collectgarbage(); collectgarbage()
    futures.ProcessPoolExecutor(1):shutdown()   -- a reaping point
    assert.is_true(helpers.eventually(function()
      collectgarbage(); collectgarbage()
      futures.ProcessPoolExecutor(1):shutdown()
      return #worker_children() == 0
    end, 5))
  end)
end)
