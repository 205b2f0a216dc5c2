-- Event loops: futures.pollfd (its level semantics with both pools and
-- with futures set from another thread), and the luv and cqueues adapters
-- (callbacks inside the loop, await in coroutines, the loop kept alive only
-- while something is awaited). Tasks wait on a gate (a futures.Future the
-- spec sets) rather than sleeping, so completions come when the spec says.
local futures = require "futures"
local core = require "futures.core"
local T = require "futures._test"
local helpers = require "support.helpers"
local shell = require "support.shell"

-- A task that returns its gate's values once the spec sets them.
local function gated(gate, ...) return gate:result(20), ... end

local function run_lua(code, seconds)
  return shell.run_lua(code, nil, seconds or 60)
end

describe("futures.pollfd", function()
  local ex, setter
  setup(function()
    ex = futures.ThreadPoolExecutor(2)
    setter = futures.ThreadPoolExecutor(1)
  end)
  teardown(function()
    ex:shutdown()
    setter:shutdown()
  end)

  -- Sets gates from a thread: set_result here would be an entry point that
  -- delivers the callbacks of a task that was quick to see it.
  local function open_gates(...)
    setter:submit(function(...)
      for i = 1, select("#", ...), 2 do
        local gate, value = select(i, ...)
        gate:set_result(value)
      end
    end, ...)
  end

  it("returns the same descriptor on every call", function()
    local fd = futures.pollfd()
    assert.equals("integer", math.type(fd))
    assert.is_true(fd >= 0)
    assert.equals(fd, futures.pollfd())
  end)

  it("is not readable while nothing is due", function()
    futures.poll()
    assert.is_false(T.readable(futures.pollfd(), 0))
  end)

  it("becomes readable when a thread task with a callback finishes, and poll() drains it", function()
    local fd = futures.pollfd()
    local gate = futures.Future()
    local f = ex:submit(gated, gate, "x")
    local got
    f:add_done_callback(function(d) got = { d:result() } end)
    assert.is_false(T.readable(fd, 0.05))
    open_gates(gate, 7)
    assert.is_true(T.readable(fd, 10))
    assert.is_nil(got)
    assert.equals(1, futures.poll())
    assert.same({ 7, "x" }, got)
    assert.is_false(T.readable(fd, 0))
  end)

  it("is readable again after poll() only when more is due", function()
    local fd = futures.pollfd()
    local gates, fs, ran = {}, {}, 0
    for i = 1, 3 do
      gates[i] = futures.Future()
      fs[i] = ex:submit(gated, gates[i])
      fs[i]:add_done_callback(function() ran = ran + 1 end)
    end
    open_gates(gates[1], 1)
    assert.is_true(T.readable(fd, 10))
    assert.equals(1, futures.poll())
    assert.is_false(T.readable(fd, 0))
    open_gates(gates[2], 2, gates[3], 3)
    -- done() is no entry point: it leaves the callbacks where they are.
    local deadline = futures.monotonic() + 10
    while not (fs[2]:done() and fs[3]:done()) and futures.monotonic() < deadline do
      T.readable(fd, 0.01)
    end
    assert.is_true(T.readable(fd, 0))
    assert.equals(2, futures.poll())
    assert.equals(3, ran)
    assert.is_false(T.readable(fd, 0))
  end)

  it("delivers in one poll() the completions that arrive while its callbacks run", function()
    local fd = futures.pollfd()
    local gate1, gate2 = futures.Future(), futures.Future()
    local f1, f2 = ex:submit(gated, gate1), ex:submit(gated, gate2)
    local order = {}
    f1:add_done_callback(function()
      order[#order + 1] = "f1"
      gate2:set_result(2)
      f2:exception(10)   -- f2 completes during this callback
    end)
    f2:add_done_callback(function() order[#order + 1] = "f2" end)
    open_gates(gate1, 1)
    assert.is_true(T.readable(fd, 10))
    assert.equals(2, futures.poll())
    assert.same({ "f1", "f2" }, order)
    assert.is_false(T.readable(fd, 0))
  end)

  it("is readable for a futures.Future() set by a thread task", function()
    local fd = futures.pollfd()
    local f = futures.Future()
    local got
    f:add_done_callback(function(d) got = d:result() end)
    ex:submit(function(target) target:set_result(42) end, f)
    assert.is_true(T.readable(fd, 10))
    futures.poll()
    assert.equals(42, got)
    assert.is_false(T.readable(fd, 0))
  end)

  it("is readable when a thread task cancels a future that has a callback", function()
    local fd = futures.pollfd()
    local f = futures.Future()
    local seen
    f:add_done_callback(function(d) seen = d:cancelled() end)
    ex:submit(function(target) return target:cancel() end, f)
    assert.is_true(T.readable(fd, 10))
    assert.equals(1, futures.poll())
    assert.is_true(seen)
    assert.is_false(T.readable(fd, 0))
  end)

  it("works for the futures of a process pool", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local fd = futures.pollfd()
    local px <close> = futures.ProcessPoolExecutor(1)
    local f = px:submit(function(x) return x * 3 end, 14)
    local got
    f:add_done_callback(function(d) got = d:result() end)
    assert.is_true(T.readable(fd, 20))
    assert.equals(1, futures.poll())
    assert.equals(42, got)
    assert.is_false(T.readable(fd, 0))
  end)

  it("is readable at once for completions that came before it was first asked for", function()
    local r = run_lua([[
      local futures = require "futures"
      local T = require "futures._test"
      local ex <close> = futures.ThreadPoolExecutor(1)
      local f = ex:submit(function() return 5 end)
      local got
      f:add_done_callback(function(d) got = d:result() end)
      while not f:done() do end
      local fd = futures.pollfd()
      print(T.readable(fd, 0), futures.poll(), got, T.readable(fd, 0))
    ]])
    assert.equals(0, r.status, r.err)
    assert.equals("true\t1\t5\tfalse\n", r.out)
  end)

  it("belongs to its state: a thread task gets its own, closed with the worker's state", function()
    local proc = shell.read_file("/proc/self/stat"):match("^%d+")
    local wex = futures.ThreadPoolExecutor(1)
    local theirs = wex:submit(function() return require("futures").pollfd() end):result(20)
    assert.are_not.equal(futures.pollfd(), theirs)
    local function target(fd)   -- anon_inode:[eventfd], or pipe:[inode]
      local p = io.popen(("readlink /proc/%s/fd/%d 2>/dev/null"):format(proc, fd))
      local link = p:read("a")
      p:close()
      return link
    end
    local open = target(theirs)
    assert.is_truthy(open:match("eventfd") or open:match("pipe"), open)
    wex:shutdown()
    assert.are_not.equal(open, target(theirs))
  end)

  it("costs no descriptor until it is asked for", function()
    local r = run_lua([[
      local futures = require "futures"
      local stat = io.open("/proc/self/stat")
      local pid = stat:read("n")
      stat:close()
      local function count()   -- eventfds and pipe ends
        local p = io.popen("ls -l /proc/" .. pid .. "/fd")
        local n = 0
        for line in p:lines() do
          if line:match("%-> anon_inode:%[eventfd%]") or line:match("%-> pipe:") then n = n + 1 end
        end
        p:close()
        return n
      end
      local before = count()
      local f = futures.Future()
      f:add_done_callback(function() end)
      f:set_result(1)
      local middle = count()
      futures.pollfd()
      print(before == middle, count() - middle)   -- an eventfd, or a pipe's two ends
    ]])
    assert.equals(0, r.status, r.err)
    assert.matches("^true\t[12]\n$", r.out)
  end)
end)
