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

local has_luv, uv = pcall(require, "luv")
local has_cqueues, cqueues = pcall(require, "cqueues")

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

  it("is drained by the next poll() when another entry point delivered the callbacks", function()
    local fd = futures.pollfd()
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    local ran = 0
    f:add_done_callback(function() ran = ran + 1 end)
    open_gates(gate, 1)
    assert.is_true(T.readable(fd, 10))
    f:result(20)   -- an entry point: it runs the callback
    assert.equals(1, ran)
    assert.equals(0, futures.poll())
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
    -- Descriptors are numbered lowest first: had the completions before
    -- made one, pollfd() would return a number that was open already.
    local r = run_lua([[
      local futures = require "futures"
      local function open_fds()   -- the probe's own descriptor is not there yet
        local set = {}
        for n = 0, 255 do
          local probe = io.open("/proc/self/fdinfo/" .. n)
          if probe then set[n] = true; probe:close() end
        end
        return set
      end
      local ex <close> = futures.ThreadPoolExecutor(1)
      local f, bare = ex:submit(function() return 1 end), futures.Future()
      f:add_done_callback(function() end)
      bare:add_done_callback(function() end)
      bare:set_result(1)
      futures.wait({ f }, 20)
      futures.poll()
      local before = open_fds()
      local fd = futures.pollfd()
      print(before[fd] == nil, open_fds()[fd] == true)
    ]])
    assert.equals(0, r.status, r.err)
    assert.equals("true\ttrue\n", r.out)
  end)
end)

-- Runs uv.run() with a watchdog: fails if it does not return by itself
-- within `seconds`.
local function run_loop(seconds)
  local watchdog = uv.new_timer()
  local expired = false
  watchdog:start(math.floor(seconds * 1000), 0, function()
    expired = true
    uv.stop()
  end)
  watchdog:unref()
  uv.run()
  watchdog:close()
  uv.run("nowait")
  assert.is_false(expired, "uv.run() did not return within " .. seconds .. " s")
end

-- Calls fn after `ms` milliseconds, from inside the loop.
local function later(ms, fn)
  local t = uv.new_timer()
  t:start(ms, 0, function() t:close(); fn() end)
end

describe("futures.luv", function()
  if not has_luv then
    it("needs luv", function() pending("luv is not installed (Debian: lua-luv)") end)
    return
  end
  local fl, ex
  setup(function()
    fl = require "futures.luv"
    ex = futures.ThreadPoolExecutor(2)
  end)
  teardown(function() ex:shutdown() end)

  it("runs done callbacks inside uv.run(), which returns once they ran", function()
    local gate = futures.Future()
    local f = ex:submit(gated, gate, "two")
    local inside, got = false, nil
    f:add_done_callback(function(d) got = { inside, d:result() } end)
    later(20, function() gate:set_result(1) end)
    inside = true
    run_loop(20)
    inside = false
    assert.same({ true, 1, "two" }, got)
  end)

  it("keeps the loop alive only while a callback waits", function()
    futures.poll()
    assert.is_false(uv.loop_alive())
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    assert.is_false(uv.loop_alive())   -- nobody waits for f
    f:add_done_callback(function() end)
    assert.is_true(uv.loop_alive())
    gate:set_result(1)
    run_loop(20)
    assert.is_false(uv.loop_alive())
  end)

  it("returns from await what the task returned, in a coroutine", function()
    local got
    coroutine.wrap(function()
      got = table.pack(fl.await(ex:submit(function(a, b) return a + b, nil, "c" end, 1, 2)))
    end)()
    run_loop(20)
    assert.same({ n = 3, 3, nil, "c" }, got)
  end)

  it("raises from await the task's error, unchanged", function()
    local err
    coroutine.wrap(function()
      local ok, e = pcall(fl.await, ex:submit(function() error({ code = 7 }) end))
      err = not ok and e
    end)()
    run_loop(20)
    assert.same({ code = 7 }, err)
  end)

  it("lets other coroutines and timers run while one awaits", function()
    local gate = futures.Future()
    local events = {}
    coroutine.wrap(function()
      local v = fl.await(ex:submit(gated, gate))
      events[#events + 1] = "await " .. v
    end)()
    coroutine.wrap(function()
      local v = fl.await(ex:submit(function() return 1 end))
      events[#events + 1] = "quick " .. v
    end)()
    later(50, function()
      events[#events + 1] = "timer"
      gate:set_result(2)
    end)
    run_loop(20)
    assert.same({ "quick 1", "timer", "await 2" }, events)
  end)

  it("resumes an awaiting coroutine whose callback was delivered outside the loop", function()
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    local got
    coroutine.wrap(function() got = fl.await(f) end)()
    gate:set_result("v")
    f:result(20)   -- an entry point: it delivers the coroutine's wake-up
    assert.is_nil(got)
    run_loop(20)
    assert.equals("v", got)
  end)

  it("awaits a futures.Future() set by a thread task", function()
    local f = futures.Future()
    local got
    coroutine.wrap(function() got = fl.await(f) end)()
    ex:submit(function(target) target:set_result("from a thread") end, f)
    run_loop(20)
    assert.equals("from a thread", got)
  end)

  it("awaits the futures of a process pool", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local px <close> = futures.ProcessPoolExecutor(1)
    local got
    coroutine.wrap(function() got = fl.await(px:submit(function(x) return x * 2 end, 21)) end)()
    run_loop(30)
    assert.equals(42, got)
  end)

  it("raises a TimeoutError from await(f, timeout), after which f no longer holds the loop", function()
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    local err
    coroutine.wrap(function()
      local ok, e = pcall(fl.await, f, 0.05)
      err = not ok and e
    end)()
    run_loop(20)
    assert.is_true(futures.iserror(err, futures.TimeoutError), tostring(err))
    assert.is_false(core._pending())
    gate:set_result(1)
    f:result(20)
  end)

  it("resumes a coroutine awaiting a future that gets cancelled with CancelledError", function()
    local f = futures.Future()
    local err
    coroutine.wrap(function()
      local ok, e = pcall(fl.await, f)
      err = not ok and e
    end)()
    later(10, function() f:cancel() end)
    run_loop(20)
    assert.is_true(futures.iserror(err, futures.CancelledError), tostring(err))
  end)

  it("keeps the loop alive for a callback that a callback run at once added", function()
    local done = futures.Future()
    done:set_result(true)
    local gate = futures.Future()
    local got
    -- done is done already: its callback runs now, outside the loop, and
    -- registers one on a task that waits for the gate
    done:add_done_callback(function()
      ex:submit(gated, gate, "late"):add_done_callback(function(f) got = select(2, f:result()) end)
    end)
    assert.is_true(uv.loop_alive())
    later(20, function() gate:set_result(1) end)
    run_loop(20)
    assert.equals("late", got)
  end)

  it("loses nothing when the loop is stopped: the awaiting coroutine resumes when it runs again", function()
    local gate = futures.Future()
    local got
    coroutine.wrap(function() got = fl.await(ex:submit(gated, gate, "later")) end)()
    later(10, function() uv.stop() end)
    uv.run()   -- returns at the stop: the task is still held by its gate
    assert.is_nil(got)
    assert.is_true(uv.loop_alive())
    gate:set_result(1)
    run_loop(20)
    assert.equals(1, got)
  end)

  it("lets a suspended awaiting coroutine be closed, after which its future holds no loop", function()
    local f = futures.Future()
    local co = coroutine.create(function() return fl.await(f) end)
    assert.is_true(coroutine.resume(co))
    assert.is_true(uv.loop_alive())
    assert.is_true(coroutine.close(co))
    assert.is_false(core._pending())
    assert.is_false(uv.loop_alive())
  end)

  it("takes from await_get the item a thread task puts on a queue, the loop running", function()
    local q = futures.Queue()
    local got, ticks = {}, 0
    local timer = uv.new_timer()
    timer:start(1, 1, function() ticks = ticks + 1 end)
    coroutine.wrap(function()
      for _ = 1, 3 do got[#got + 1] = fl.await_get(q) end
      timer:stop(); timer:close()
    end)()
    local f = ex:submit(function(queue)
      for i = 1, 3 do require("futures").sleep(0.01); queue:put({ i = i }) end
    end, q)
    run_loop(20)
    assert.is_true(f:done())
    assert.same({ { i = 1 }, { i = 2 }, { i = 3 } }, got)
    assert.is_true(ticks > 0)   -- the loop ran while the coroutine waited
  end)

  it("raises Empty from await_get(q, timeout) and Closed from a closed empty queue", function()
    local q = futures.Queue()
    local errs = {}
    coroutine.wrap(function()
      errs[1] = select(2, pcall(fl.await_get, q, 0.02))
      q:close()
      errs[2] = select(2, pcall(fl.await_get, q))
    end)()
    run_loop(20)
    assert.is_true(futures.iserror(errs[1], futures.Empty))
    assert.matches("await_get: no item after 0.02 seconds", errs[1].message, 1, true)
    assert.is_true(futures.iserror(errs[2], futures.Closed))
    assert.equals(0, q:qsize())
  end)

  it("gives up the place of a coroutine closed in await_get: the next item stays queued", function()
    local q = futures.Queue()
    local co = coroutine.create(function() return fl.await_get(q) end)
    assert.is_true(coroutine.resume(co))
    assert.is_true(coroutine.close(co))
    q:put("kept")
    assert.equals(1, q:qsize())
    assert.equals("kept", q:get_nowait())
    assert.is_false(uv.loop_alive())
  end)

  it("checks the arguments of await_get", function()
    local ok, err = pcall(fl.await_get, {})
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'await_get' (futures.Queue expected, got table)", err, 1, true)
  end)

  it("returns done, not_done from await_all once every future is done", function()
    local gates, fs = {}, {}
    for i = 1, 3 do
      gates[i] = futures.Future()
      fs[i] = ex:submit(gated, gates[i])
    end
    fs[4] = fs[2]   -- a future listed twice counts once
    local done, not_done
    coroutine.wrap(function() done, not_done = fl.await_all(fs) end)()
    for i = 3, 1, -1 do later(10 * (4 - i), function() gates[i]:set_result(i) end) end
    run_loop(20)
    assert.equals(3, #done)
    assert.same({}, not_done)
    for i = 1, 3 do assert.equals(fs[i], done[i]) end
  end)

  it("returns from await_any as soon as one future is done, the rest not done", function()
    local gates, fs = {}, {}
    for i = 1, 3 do
      gates[i] = futures.Future()
      fs[i] = ex:submit(gated, gates[i])
    end
    local done, not_done
    coroutine.wrap(function() done, not_done = fl.await_any(fs) end)()
    later(10, function() gates[2]:set_result(2) end)
    run_loop(20)
    assert.same({ fs[2] }, done)
    assert.same({ fs[1], fs[3] }, not_done)
    assert.is_false(core._pending())   -- the others no longer keep the loop alive
    gates[1]:set_result(1)
    gates[3]:set_result(3)
    futures.wait(fs, 20)
  end)

  it("returns from await_all with a timeout the futures not done", function()
    local gate = futures.Future()
    local fs = { ex:submit(function() return 1 end), ex:submit(gated, gate) }
    local done, not_done
    coroutine.wrap(function() done, not_done = fl.await_all(fs, 0.05) end)()
    run_loop(20)
    assert.same({ fs[1] }, done)
    assert.same({ fs[2] }, not_done)
    gate:set_result(1)
    fs[2]:result(20)
  end)

  it("raises a clear error from await outside a coroutine", function()
    local f = ex:submit(function() return 1 end)
    local ok, err = pcall(function() local v = fl.await(f); return v end)
    assert.is_false(ok)
    assert.matches("eventloop_spec.lua:%d+: futures.luv.await called outside a coroutine", err)
    assert.matches("f:result()", err, 1, true)
    f:result(20)
  end)

  it("raises the same error from await inside a thread task", function()
    local err = ex:submit(function()
      local lfl = require "futures.luv"
      local futures_ = require "futures"
      local g = futures_.Future()
      g:set_result(1)
      return select(2, pcall(lfl.await, g))
    end):result(20)
    assert.matches("called outside a coroutine", err)
  end)

  it("checks its arguments", function()
    assert.matches("future expected, got nil", helpers.error_of(fl.await))
    assert.matches("item 2 is not a future: number", helpers.error_of(fl.await_all, { futures.Future(), 2 }))
    assert.matches("timeout must be a non%-negative number", helpers.error_of(fl.await_any, {}, -1))
  end)

  it("makes an error in a resumed coroutine the loop's uncaught error", function()
    local r = run_lua([[
      local futures = require "futures"
      local fl = require "futures.luv"
      local uv = require "luv"
      local ex <close> = futures.ThreadPoolExecutor(1)
      coroutine.wrap(function()
        fl.await(ex:submit(function() return 1 end))
        error("after the await")
      end)()
      uv.run()
      print("not reached")
    ]])
    assert.are_not.equal(0, r.status)
    assert.matches("after the await", r.err)
    assert.equals("", r.out)
  end)

  it("names the Debian package when luv is missing", function()
    local r = run_lua([[
      require "futures"
      package.loaded.luv, package.preload.luv, package.cpath = nil, nil, ""
      local ok, err = pcall(require, "futures.luv")
      print(ok, err)
    ]])
    assert.equals(0, r.status, r.err)
    assert.matches("lua%-luv", r.out)
  end)
end)

-- Runs the controller's loop with a deadline; fails if it errs or is late.
local function cq_loop(cq, seconds)
  local ok, err = cq:loop(seconds)
  assert.is_true(ok, tostring(err))
  assert.is_true(cq:empty(), "the cqueues loop did not end within " .. seconds .. " s")
end

describe("futures.cqueues", function()
  if not has_cqueues then
    it("needs cqueues", function() pending("cqueues is not installed (Debian: lua-cqueues)") end)
    return
  end
  local fc, ex
  setup(function()
    fc = require "futures.cqueues"
    ex = futures.ThreadPoolExecutor(2)
  end)
  teardown(function() ex:shutdown() end)

  it("returns from await what the task returned, in a cqueues coroutine", function()
    local cq = cqueues.new()
    local got
    cq:wrap(function()
      got = table.pack(fc.await(ex:submit(function(a) return a, nil, a * 2 end, 4)))
    end)
    cq_loop(cq, 20)
    assert.same({ n = 3, 4, nil, 8 }, got)
  end)

  it("raises from await the task's error, unchanged", function()
    local cq = cqueues.new()
    local err
    cq:wrap(function()
      local ok, e = pcall(fc.await, ex:submit(function() error({ code = 9 }) end))
      err = not ok and e
    end)
    cq_loop(cq, 20)
    assert.same({ code = 9 }, err)
  end)

  it("awaits in many coroutines at once, each woken by its own future", function()
    local cq = cqueues.new()
    local four <close> = futures.ThreadPoolExecutor(4)   -- every task runs at once
    local gates, order = {}, {}
    for i = 1, 4 do
      gates[i] = futures.Future()
      cq:wrap(function()
        local v = fc.await(four:submit(gated, gates[i]))
        order[#order + 1] = v
      end)
    end
    cq:wrap(function()
      for _, i in ipairs { 3, 1, 4, 2 } do
        cqueues.sleep(0.01)
        gates[i]:set_result(i)
      end
    end)
    cq_loop(cq, 20)
    assert.same({ 3, 1, 4, 2 }, order)
  end)

  it("resumes an awaiting coroutine whose callback another coroutine delivered", function()
    local cq = cqueues.new()
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    local got
    cq:wrap(function() got = fc.await(f) end)
    cq:wrap(function()
      cqueues.sleep(0.01)   -- the other waits by now
      gate:set_result("v")
      f:result(20)   -- an entry point: it delivers the other's wake-up
    end)
    cq_loop(cq, 20)
    assert.equals("v", got)
  end)

  it("awaits a futures.Future() set by a thread task", function()
    local cq = cqueues.new()
    local f = futures.Future()
    local got
    cq:wrap(function() got = fc.await(f) end)
    ex:submit(function(target) target:set_result("from a thread") end, f)
    cq_loop(cq, 20)
    assert.equals("from a thread", got)
  end)

  it("awaits the futures of a process pool", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local px <close> = futures.ProcessPoolExecutor(1)
    local cq = cqueues.new()
    local got
    cq:wrap(function() got = fc.await(px:submit(function(x) return x * 2 end, 21)) end)
    cq_loop(cq, 30)
    assert.equals(42, got)
  end)

  it("returns done, not_done from await_all and await_any", function()
    local cq = cqueues.new()
    local gates, fs = {}, {}
    for i = 1, 3 do
      gates[i] = futures.Future()
      fs[i] = ex:submit(gated, gates[i])
    end
    local any_done, any_not, all_done, all_not
    cq:wrap(function()
      any_done, any_not = fc.await_any(fs)
      all_done, all_not = fc.await_all(fs)
    end)
    cq:wrap(function()
      cqueues.sleep(0.01)
      gates[2]:set_result(2)
      cqueues.sleep(0.05)
      gates[1]:set_result(1)
      gates[3]:set_result(3)
    end)
    cq_loop(cq, 20)
    assert.same({ fs[2] }, any_done)
    assert.same({ fs[1], fs[3] }, any_not)
    assert.same(fs, all_done)
    assert.same({}, all_not)
  end)

  it("takes from await_get the items a thread task puts on a queue, in a cqueues coroutine", function()
    local cq = cqueues.new()
    local q = futures.Queue()
    local got = {}
    cq:wrap(function()
      for _ = 1, 3 do got[#got + 1] = fc.await_get(q) end
      local ok, err = pcall(fc.await_get, q, 0.02)
      got.empty = not ok and futures.iserror(err, futures.Empty)
    end)
    ex:submit(function(queue)
      for i = 1, 3 do require("futures").sleep(0.01); queue:put(i * 10) end
    end, q)
    cq_loop(cq, 20)
    assert.same({ 10, 20, 30, empty = true }, got)
  end)

  it("raises a TimeoutError from await(f, timeout), and the loop ends", function()
    local cq = cqueues.new()
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    local err
    cq:wrap(function()
      local ok, e = pcall(fc.await, f, 0.05)
      err = not ok and e
    end)
    cq_loop(cq, 20)
    assert.is_true(futures.iserror(err, futures.TimeoutError), tostring(err))
    gate:set_result(1)
    f:result(20)
  end)

  it("makes a future a pollable that cqueues.poll returns once it is done", function()
    local cq = cqueues.new()
    local gate = futures.Future()
    local f = ex:submit(gated, gate)
    local first, second
    cq:wrap(function()
      local p = fc.pollable(f)
      first = cqueues.poll(p, 0.05) == p   -- not done: times out
      gate:set_result(1)
      second = cqueues.poll(p, 20)
      assert.equals(p, second)
    end)
    cq_loop(cq, 20)
    assert.is_false(first)
    assert.is_true(f:done())
  end)

  it("raises a clear error from await outside a cqueues coroutine", function()
    local f = ex:submit(function() return 1 end)
    local ok, err = pcall(function() local v = fc.await(f); return v end)
    assert.is_false(ok)
    assert.matches("eventloop_spec.lua:%d+: futures.cqueues.await called outside a cqueues coroutine",
      err)
    f:result(20)
  end)

  it("names the Debian package when cqueues is missing", function()
    local r = run_lua([[
      require "futures"
      package.loaded.cqueues, package.preload.cqueues = nil, nil
      package.path, package.cpath = "./lua/?.lua;./lua/?/init.lua", ""
      local ok, err = pcall(require, "futures.cqueues")
      print(ok, err)
    ]])
    assert.equals(0, r.status, r.err)
    assert.matches("lua%-cqueues", r.out)
  end)
end)
