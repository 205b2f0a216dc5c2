-- futures.Queue: a FIFO of copied values, bounded or not, closable, shared
-- by the host and every task, thread or process, it is passed to.
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

require("support.sharing_contract")("ThreadPoolExecutor", futures.ThreadPoolExecutor, _ENV)
if not shell.process_pool_problem() then
  require("support.sharing_contract")("ProcessPoolExecutor", futures.ProcessPoolExecutor, _ENV)
end

local function error_of(fn, ...) return helpers.error_of(fn, ...) end

-- The pid of the process that runs it (a task's view of its worker).
local function own_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

describe("futures.Queue", function()
  it("is unbounded by default and takes maxsize as a number or an option", function()
    assert.matches("^Queue: 0x%x+ %(0 items%)$", tostring(futures.Queue()))
    assert.matches("maxsize 3", tostring(futures.Queue(3)))
    assert.matches("maxsize 4", tostring(futures.Queue{ maxsize = 4 }))
    assert.matches("%(0 items%)$", tostring(futures.Queue{ maxsize = 0 }))
  end)

  it("refuses bad options, naming them", function()
    assert.matches("unknown option 'size'", error_of(futures.Queue, { size = 1 }))
    assert.matches("maxsize must be a non%-negative integer, got %-1",
      error_of(futures.Queue, -1))
    assert.matches("maxsize must be a non%-negative integer, got 1.5",
      error_of(futures.Queue, { maxsize = 1.5 }))
    assert.matches("table or number expected, got string", error_of(futures.Queue, "x"))
    assert.matches("call it with '%.'", error_of(futures.Queue, futures))
  end)

  it("gives items back first in, first out", function()
    local q = futures.Queue()
    for i = 1, 100 do q:put(i) end
    assert.equals(100, q:qsize())
    for i = 1, 100 do assert.equals(i, q:get(1)) end
    assert.equals(0, q:qsize())
  end)

  it("copies values at put, as task arguments are copied", function()
    local q = futures.Queue()
    local t = { 1, { 2 }, name = "x" }
    q:put(t)
    t.name = "changed"
    local got = q:get(1)
    assert.are_not.equal(t, got)
    assert.same({ 1, { 2 }, name = "x" }, got)
  end)

  it("carries functions with their upvalues, and futures in the same process", function()
    local q = futures.Queue()
    local k = 10
    q:put(function(x) return x * k end)
    local f = futures.Future()
    q:put({ f = f })
    assert.equals(30, q:get(1)(3))
    local got = q:get(1).f
    f:set_result("done")
    assert.equals("done", got:result(1))
  end)

  it("refuses nil and values that cannot travel, at the caller's line", function()
    local q = futures.Queue()
    assert.matches("cannot hold nil", error_of(q.put, q, nil))
    local err = error_of(function() q:put({ co = coroutine.create(print) }) end)
    assert.matches("queue_spec%.lua:%d+: cannot transfer item #1 %(field 'co'%)", err)
    assert.equals(0, q:qsize())
  end)

  it("raises Empty from get_nowait and from a get that times out", function()
    local q = futures.Queue()
    local err = error_of(q.get_nowait, q)
    assert.is_true(futures.iserror(err, futures.Empty))
    assert.matches("get_nowait: the queue is empty", err.message)
    local t0 = futures.monotonic()
    err = error_of(q.get, q, 0.05)
    assert.is_true(futures.iserror(err, "Empty"))
    assert.matches("get: no item after 0.05 seconds", err.message)
    assert.is_true(futures.monotonic() - t0 >= 0.04)
  end)

  it("raises Full from put_nowait and from a put that times out on a bounded queue", function()
    local q = futures.Queue(2)
    q:put(1)
    q:put_nowait(2)
    local err = error_of(q.put_nowait, q, 3)
    assert.is_true(futures.iserror(err, futures.Full))
    assert.matches("put_nowait: the queue is full %(maxsize 2%)", err.message)
    err = error_of(q.put, q, 3, 0.05)
    assert.is_true(futures.iserror(err, "Full"))
    assert.matches("still full after 0.05 seconds", err.message)
    assert.equals(2, q:qsize())
  end)

  it("refuses a negative or NaN timeout", function()
    local q = futures.Queue()
    assert.matches("timeout must not be negative", error_of(q.get, q, -1))
    assert.matches("timeout is NaN", error_of(q.put, q, 1, 0 / 0))
  end)

  it("after close, refuses puts and drains, then raises Closed", function()
    local q = futures.Queue()
    q:put("a")
    q:close()
    q:close()   -- twice is fine
    assert.matches("closed", tostring(q))
    local err = error_of(q.put, q, "b")
    assert.is_true(futures.iserror(err, futures.Closed))
    assert.matches("put: the queue is closed", err.message)
    assert.equals("a", q:get(1))
    err = error_of(q.get, q, 1)
    assert.is_true(futures.iserror(err, "Closed"))
    assert.matches("closed and empty", err.message)
  end)

  it("iterates until the queue is closed and drained", function()
    local q = futures.Queue()
    for i = 1, 5 do q:put(i) end
    q:put(false)   -- false does not end the loop
    q:close()
    local got = {}
    for v in q:iter(1) do got[#got + 1] = v end
    assert.same({ 1, 2, 3, 4, 5, false }, got)
  end)

  it("raises Empty from iter when an item does not come in time", function()
    local q = futures.Queue()
    local err = error_of(function() for _ in q:iter(0.02) do end end)
    assert.is_true(futures.iserror(err, "Empty"))
  end)

  it("wakes a thread blocked in get or put when it is closed", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local empty, full = futures.Queue(), futures.Queue(1)
    full:put(0)
    local getter = ex:submit(function(q) return pcall(q.get, q, 30) end, empty)
    local putter = ex:submit(function(q) return pcall(q.put, q, 1, 30) end, full)
    futures.sleep(0.05)
    empty:close()
    full:close()
    local ok1, e1 = getter:result(10)
    local ok2, e2 = putter:result(10)
    assert.is_false(ok1)
    assert.is_true(futures.iserror(e1, "Closed"))
    assert.is_false(ok2)
    assert.is_true(futures.iserror(e2, "Closed"))
  end)

  it("hands each item to exactly one of many consumers", function()
    local ex <close> = futures.ThreadPoolExecutor(4)
    local q = futures.Queue(16)
    local consumers = {}
    for c = 1, 3 do
      consumers[c] = ex:submit(function(q)
        local seen = {}
        for v in q:iter(20) do seen[#seen + 1] = v end
        return seen
      end, q)
    end
    for i = 1, 3000 do q:put(i, 20) end
    q:close()
    local count, sum = 0, 0
    for c = 1, 3 do
      for _, v in ipairs(consumers[c]:result(20)) do count = count + 1; sum = sum + v end
    end
    assert.equals(3000, count)
    assert.equals(3000 * 3001 // 2, sum)
  end)

  it("shows its size, bound and state in tostring, and compares by identity", function()
    local q = futures.Queue(5)
    q:put(1)
    assert.matches("^Queue: 0x%x+ %(1 item, maxsize 5%)$", tostring(q))
    local ex <close> = futures.ThreadPoolExecutor(1)
    local back = ex:submit(function(q) return q end, q):result(10)
    assert.is_true(back == q)
    assert.is_false(back == futures.Queue())
  end)

  it("says what is wrong when a method is called with '.'", function()
    local q = futures.Queue()
    assert.matches("futures.Queue expected, got number", error_of(q.put, 1, 2))
  end)

  it("outlives the thread state that made it", function()
    local ex = futures.ThreadPoolExecutor(1)
    local q = ex:submit(function()
      local q = require("futures").Queue()
      q:put("made in a worker")
      return q
    end):result(10)
    ex:shutdown()   -- the worker's state is closed
    collectgarbage()
    assert.equals("made in a worker", q:get(1))
  end)

  it("is freed with the last reference to it", function()
    local q = futures.Queue()
    local f = q:_get_future()
    q = nil
    collectgarbage(); collectgarbage()
    -- the waiting future learns that no item can come any more
    local err = f:exception(5)
    assert.is_true(futures.iserror(err, "Closed"))
  end)

  describe("_get_future (for event loops)", function()
    it("is done with the next item", function()
      local q = futures.Queue()
      q:put("ready")
      assert.equals("ready", q:_get_future():result(1))
      local f = q:_get_future()
      assert.is_false(f:done())
      q:put({ x = 1 })
      assert.equals(1, f:result(1).x)
    end)

    it("fails with Closed when the queue closes first", function()
      local q = futures.Queue()
      local f = q:_get_future()
      q:close()
      assert.is_true(futures.iserror(f:exception(1), futures.Closed))
    end)

    it("gives the item to the next getter once cancelled", function()
      local q = futures.Queue()
      local f = q:_get_future()
      assert.is_true(f:cancel())
      q:put("for the next")
      assert.equals("for the next", q:get(1))
    end)

    it("runs done callbacks in the state that waits", function()
      local q = futures.Queue()
      local got
      q:_get_future():add_done_callback(function(f) got = f:result() end)
      local ex <close> = futures.ThreadPoolExecutor(1)
      ex:submit(function(q) q:put(99) end, q):result(10)
      assert.is_true(helpers.eventually(function() return got ~= nil end, 5))
      assert.equals(99, got)
    end)
  end)
end)

describe("futures.Queue in process tasks", function()
  local problem = shell.process_pool_problem()
  if problem then it("(skipped)", function() pending(problem) end) return end

  it("loses nothing queued when a worker dies blocked in get", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q, pids = futures.Queue(), futures.Queue()
    local f = px:submit(function(q, pids, own_pid)
      pids:put(own_pid())
      return q:get(30)
    end, q, pids, own_pid)
    local pid = pids:get(10)
    futures.sleep(0.05)   -- its get is parked in the host by now
    os.execute("kill -9 " .. pid)
    local err = f:exception(10)
    assert.is_true(futures.iserror(err, "BrokenProcessPool"), tostring(err))
    q:put("kept")
    assert.equals(1, q:qsize())
    assert.equals("kept", px:submit(function(q) return q:get(5) end, q):result(10))
  end)

  it("loses the item a worker took and then crashed with (at most once)", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q = futures.Queue()
    q:put("taken")
    q:put("left")
    local f = px:submit(function(q) q:get(5); os.exit(7) end, q)
    assert.matches("exited with status 7", tostring(f:exception(10)))
    assert.equals(1, q:qsize())
    assert.equals("left", q:get(1))
  end)

  it("keeps the queue whole when a worker dies blocked in put", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q, pids = futures.Queue(1), futures.Queue()
    q:put("first")
    local f = px:submit(function(q, pids, own_pid)
      pids:put(own_pid())
      q:put("never", 30)
    end, q, pids, own_pid)
    local pid = pids:get(10)
    futures.sleep(0.05)
    os.execute("kill -9 " .. pid)
    f:exception(10)
    assert.equals(1, q:qsize())
    assert.equals("first", q:get(1))
    assert.is_true(futures.iserror(select(2, pcall(q.get_nowait, q)), "Empty"))
  end)

  it("lets a pool shut down once the queue its tasks wait on is closed", function()
    local px = futures.ProcessPoolExecutor(2)
    local q = futures.Queue()
    local fs = {}
    for i = 1, 2 do fs[i] = px:submit(function(q) return pcall(q.get, q) end, q) end
    futures.sleep(0.1)
    px:shutdown{ wait = false }
    q:close()
    for i = 1, 2 do
      local ok, err = fs[i]:result(10)
      assert.is_false(ok)
      assert.is_true(futures.iserror(err, "Closed"))
    end
    px:shutdown()
  end)

  it("refuses Lua functions that a worker puts, unless the pool allows them", function()
    local q = futures.Queue()
    local strict <close> = futures.ProcessPoolExecutor(1)
    strict:submit(function(q) q:put(function() return 1 end) end, q):result(10)
    assert.matches("put a Lua function in the queue", error_of(q.get, q, 1))
    local trusting <close> = futures.ProcessPoolExecutor{ max_workers = 1, return_functions = true }
    trusting:submit(function(q) q:put(function() return 2 end) end, q):result(10)
    assert.equals(2, q:get(1)())
  end)

  it("leaves an item holding a future in the queue, and says why", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q = futures.Queue()
    q:put({ f = futures.Future() })
    local err = px:submit(function(q) return q:get(5) end, q):exception(10)
    assert.matches("cannot take this item: it holds a Future", tostring(err))
    assert.equals(1, q:qsize())
  end)

  it("cannot be used from a thread task inside a worker", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q = futures.Queue()
    local err = px:submit(function(q)
      local ex <close> = require("futures").ThreadPoolExecutor(1)
      return ex:submit(function(q) q:put(1) end, q):result(5)
    end, q):exception(10)
    assert.matches("only be used by the worker process's task itself", tostring(err))
  end)

  it("refuses a queue made in a worker as a result", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local err = px:submit(function() return require("futures").Queue() end):exception(10)
    assert.matches("queue made in a worker process", tostring(err))
  end)

  it("works again after an idle worker let go of it", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q = futures.Queue()
    px:submit(function(q) q:put(1) end, q):result(10)
    futures.sleep(0.3)   -- idle: the worker reports it unused and forgets it
    px:submit(function(q) q:put(2) end, q):result(10)
    assert.equals(1, q:get(1))
    assert.equals(2, q:get(1))
  end)

  it("keeps a queue a worker stored in a global across its tasks", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local q = futures.Queue()
    px:submit(function(q) KEPT = q end, q):result(10)
    futures.sleep(0.3)
    px:submit(function() KEPT:put("from a global") end):result(10)
    assert.equals("from a global", q:get(1))
  end)
end)

describe("Ctrl-C in bin/lua-futures", function()
  -- SIGINT after 0.5 s; a process still alive 2 s later is killed (137).
  local function interrupted(code)
    local r = shell.run(("cd %s && timeout --foreground --preserve-status -k 2 -s INT 0.5 "
      .. "%s -e %s"):format(shell.q(shell.ROOT), shell.q(shell.EXE), shell.q(code)), 20)
    return r.status, r.err
  end

  it("interrupts a get on an empty queue", function()
    local status, err = interrupted("require'futures'.Queue():get()")
    assert.equals(1, status, err)
    assert.matches("interrupted!", err)
  end)

  it("interrupts a put on a full queue", function()
    local status, err = interrupted("local q = require'futures'.Queue(1); q:put(1); q:put(2)")
    assert.equals(1, status, err)
    assert.matches("interrupted!", err)
  end)
end)
