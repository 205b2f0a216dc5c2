-- Bad input to every public function: wrong types, negative or NaN
-- timeouts, max_workers of 0 or too many, things that cannot be called,
-- iterables that raise midway. Each is a clear error that names the
-- function and the argument or option, and the runtime goes on working
-- afterwards (checked after every case).
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

local function identity(...) return ... end

-- One pool shared by the whole file: bad calls must not hurt it.
local shared
local function pool()
  shared = shared or futures.ThreadPoolExecutor(2)
  return shared
end

-- The error of fn(...) as a string (a runtime error object gives its
-- __tostring), failing when fn did not raise.
local function message(fn, ...)
  return tostring(helpers.error_of(fn, ...))
end

-- Cases { what the user does, function, patterns the error must match }
-- become one `it` each.
local function refuses(cases)
  for _, case in ipairs(cases) do
    local what, fn, patterns = case[1], case[2], case[3]
    it(what, function()
      local err = message(fn)
      for _, p in ipairs(patterns) do assert.matches(p, err, 1, true) end
    end)
  end
end

local NAN = 0 / 0

describe("bad input", function()
  after_each(function()
    assert.equals(7, pool():submit(identity, 7):result(10))
    local f = futures.Future()
    f:set_running_or_notify_cancel()
    f:set_result("fine")
    assert.equals("fine", f:result(0))
  end)

  teardown(function()
    if shared then shared:shutdown() end
  end)

  describe("futures.ThreadPoolExecutor", function()
    local TPE = futures.ThreadPoolExecutor
    refuses {
      { "refuses a string instead of options", function() return TPE("4") end,
        { "bad argument #1 to 'ThreadPoolExecutor'", "table or number expected, got string" } },
      { "refuses max_workers = 0", function() return TPE(0) end,
        { "'ThreadPoolExecutor'", "max_workers must be a positive integer" } },
      { "refuses a negative max_workers", function() return TPE { max_workers = -3 } end,
        { "'ThreadPoolExecutor'", "max_workers", "got -3" } },
      { "refuses a fractional max_workers", function() return TPE(1.5) end,
        { "'ThreadPoolExecutor'", "max_workers", "got 1.5" } },
      { "refuses a NaN max_workers", function() return TPE(NAN) end,
        { "'ThreadPoolExecutor'", "max_workers" } },
      { "refuses a huge max_workers", function() return TPE(1 << 40) end,
        { "'ThreadPoolExecutor'", "max_workers must be a positive integer up to 4096" } },
      { "refuses an infinite max_workers", function() return TPE(math.huge) end,
        { "'ThreadPoolExecutor'", "max_workers" } },
      { "refuses max_workers given as a string", function() return TPE { max_workers = "2" } end,
        { "'ThreadPoolExecutor'", "max_workers" } },
      { "refuses an initializer that cannot be called", function() return TPE { initializer = 42 } end,
        { "'ThreadPoolExecutor'", "initializer must be a function, got number" } },
      { "refuses initargs that are not a table", function()
          return TPE { initializer = identity, initargs = 1 } end,
        { "'ThreadPoolExecutor'", "initargs must be a table" } },
      { "refuses initargs that cannot travel", function()
          return TPE { initializer = identity, initargs = { coroutine.create(identity) } } end,
        { "cannot transfer", "initializer argument" } },
      { "refuses a name that is not a string", function() return TPE { name = {} } end,
        { "'ThreadPoolExecutor'", "name must be a string" } },
      { "refuses an unknown option", function() return TPE { max_worker = 2 } end,
        { "'ThreadPoolExecutor'", "unknown option 'max_worker'" } },
    }
  end)

  describe("futures.ProcessPoolExecutor", function()
    local PPE = futures.ProcessPoolExecutor
    refuses {
      { "refuses a boolean instead of options", function() return PPE(true) end,
        { "bad argument #1 to 'ProcessPoolExecutor'", "table or number expected, got boolean" } },
      { "refuses max_workers = 0", function() return PPE(0) end,
        { "'ProcessPoolExecutor'", "max_workers must be a positive integer" } },
      { "refuses a huge max_workers", function() return PPE { max_workers = 100000 } end,
        { "'ProcessPoolExecutor'", "max_workers must be a positive integer up to 4096" } },
      { "refuses a NaN max_workers", function() return PPE(NAN) end,
        { "'ProcessPoolExecutor'", "max_workers" } },
      { "refuses max_tasks_per_child = 0", function() return PPE { max_tasks_per_child = 0 } end,
        { "'ProcessPoolExecutor'", "max_tasks_per_child must be a positive integer" } },
      { "refuses a negative max_tasks_per_child", function() return PPE { max_tasks_per_child = -1 } end,
        { "'ProcessPoolExecutor'", "max_tasks_per_child" } },
      { "refuses an initializer that cannot be called", function() return PPE { initializer = "init" } end,
        { "'ProcessPoolExecutor'", "initializer must be a function, got string" } },
      { "refuses initargs that are not a table", function()
          return PPE { initializer = identity, initargs = "x" } end,
        { "'ProcessPoolExecutor'", "initargs must be a table" } },
      { "refuses a worker that is not a string", function() return PPE { worker = 5 } end,
        { "'ProcessPoolExecutor'", "worker must be a string" } },
      { "refuses a worker interpreter that does not exist", function()
          return PPE { worker = "/nonexistent/lua-futures" } end,
        { "/nonexistent/lua-futures", "worker" } },
      { "refuses an unknown option", function() return PPE { name = "x" } end,
        { "'ProcessPoolExecutor'", "unknown option 'name'" } },
    }

    it("still runs work after all of the above", function()
      local px <close> = PPE(1)
      assert.equals(9, px:submit(identity, 9):result(20))
    end)
  end)

  describe("Executor:submit", function()
    refuses {
      { "refuses a number as the task", function() return pool():submit(42) end,
        { "bad argument #1 to 'submit'", "function expected, got number" } },
      { "refuses a missing task", function() return pool():submit() end,
        { "bad argument #1 to 'submit'", "function expected, got no value" } },
      { "refuses a table that cannot be called", function() return pool():submit({}) end,
        { "bad argument #1 to 'submit'", "function expected, got table" } },
      { "refuses to be called with '.' instead of ':'", function() return pool().submit(identity) end,
        { "'submit'", "futures.Executor expected", "call it with ':'" } },
      { "refuses to be called on a future", function()
          return pool().submit(futures.Future(), identity) end,
        { "'submit'", "futures.Executor expected, got futures.Future" } },
      { "refuses an argument that cannot travel, naming it", function()
          return pool():submit(identity, 1, { conn = io.stdout }) end,
        { "cannot transfer argument #3", "conn" } },
    }

    it("reports an argument that cannot travel at the caller's line", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local ok, err = pcall(function() return pool():submit(identity, io.stdout) end)
      assert.is_false(ok)
      assert.matches("bad_input_spec.lua:" .. line .. ": cannot transfer argument #2: userdata (FILE*)",
        err, 1, true)
    end)

    it("accepts a table with a __call metamethod as the task", function()
      local task = setmetatable({}, { __call = function(_, x) return x + 1 end })
      local ok, err = pcall(pool().submit, pool(), task, 1)
      -- the table's metatable travels with it, so the task runs
      assert.is_true(ok, tostring(err))
      assert.equals(2, err:result(10))
    end)

    it("refuses work after shutdown with a clear error", function()
      local ex = futures.ThreadPoolExecutor(1)
      ex:shutdown()
      assert.matches("cannot schedule new futures after shutdown", message(ex.submit, ex, identity))
    end)
  end)

  describe("Executor:map", function()
    refuses {
      { "refuses a number as the function", function() return pool():map(42, { 1 }) end,
        { "bad argument #1 to 'map'", "function expected, got number" } },
      { "refuses a call with no iterable", function() return pool():map(identity) end,
        { "bad argument #2 to 'map'", "an iterable expected" } },
      { "refuses a number as the iterable", function() return pool():map(identity, 5) end,
        { "bad argument #2 to 'map'", "table or iterator function expected, got number" } },
      { "names the position of a bad second iterable", function()
          return pool():map(identity, { 1 }, true) end,
        { "bad argument #3 to 'map'", "got boolean" } },
      { "refuses a negative timeout", function() return pool():map(identity, { 1 }, { timeout = -1 }) end,
        { "'map'", "timeout must be a non-negative number" } },
      { "refuses a NaN timeout", function() return pool():map(identity, { 1 }, { timeout = NAN }) end,
        { "'map'", "timeout must be a non-negative number" } },
      { "refuses a string timeout", function() return pool():map(identity, { 1 }, { timeout = "5" }) end,
        { "'map'", "timeout must be a non-negative number, got string \"5\"" } },
      { "refuses chunksize = 0", function() return pool():map(identity, { 1 }, { chunksize = 0 }) end,
        { "'map'", "chunksize must be a positive integer" } },
      { "refuses a fractional chunksize", function() return pool():map(identity, { 1 }, { chunksize = 2.5 }) end,
        { "'map'", "chunksize must be a positive integer, got 2.5" } },
      { "refuses a negative buffersize", function() return pool():map(identity, { 1 }, { buffersize = -1 }) end,
        { "'map'", "buffersize must be a positive integer" } },
      { "refuses an unknown option", function() return pool():map(identity, { 1 }, { chunk = 2 }) end,
        { "'map'", "unknown option 'chunk'" } },
      { "refuses to be called with '.' instead of ':'", function() return pool().map(identity, { 1 }) end,
        { "bad argument #1 to 'map'", "executor expected" } },
    }

    it("raises the error of an iterator that fails midway, and the items before it still complete", function()
      local ex <close> = futures.ThreadPoolExecutor(2)
      local k = 0
      local function gen()
        k = k + 1
        if k == 4 then error("the source broke", 0) end
        return k
      end
      assert.equals("the source broke", message(ex.map, ex, identity, gen, { timeout = 10 }))
      assert.equals(5, ex:submit(identity, 5):result(10))
    end)

    it("raises the error of an iterator that fails midway during a buffered iteration", function()
      local ex <close> = futures.ThreadPoolExecutor(2)
      local k = 0
      local function gen()
        k = k + 1
        if k == 20 then error({ code = "EIO" }) end
        return k
      end
      local seen = 0
      local ok, err = pcall(function()
        for i in ex:map(identity, gen, { timeout = 10, buffersize = 4 }) do seen = i end
      end)
      assert.is_false(ok)
      assert.equals("EIO", err.code)
      assert.is_true(seen >= 10 and seen < 20, "seen " .. seen)
    end)

    it("raises the error of a table whose __index fails midway", function()
      local ex <close> = futures.ThreadPoolExecutor(2)
      local items = setmetatable({ 1, 2 }, { __index = function(_, i) error("no item " .. i, 0) end })
      assert.equals("no item 3", message(ex.map, ex, identity, items, { timeout = 10 }))
    end)

    it("raises a refused argument of one item as an error naming it", function()
      local ex <close> = futures.ThreadPoolExecutor(2)
      local err = message(ex.map, ex, identity, { 1, 2, coroutine.create(identity) }, { timeout = 10 })
      assert.matches("map: cannot transfer item 3 (value #1): thread (coroutine)", err, 1, true)
    end)

    it("names the item and the iterable's value that cannot travel in a chunk", function()
      local ex <close> = futures.ThreadPoolExecutor(2)
      local err = message(ex.map, ex, function(a, b) return a, b end, { 1, 2, 3 },
        { 4, 5, { conn = io.stdout } }, { chunksize = 2, timeout = 10 })
      assert.matches("map: cannot transfer item 3 (value #2, field 'conn'): userdata (FILE*)",
        err, 1, true)
    end)
  end)

  describe("Executor:shutdown", function()
    refuses {
      { "refuses a string instead of options", function() return pool():shutdown("yes") end,
        { "bad argument #1 to 'shutdown'", "table or boolean expected, got string" } },
      { "refuses an unknown option", function() return pool():shutdown { cancel = true } end,
        { "'shutdown'", "unknown option 'cancel'" } },
      { "refuses to be called with '.' instead of ':'", function() return pool().shutdown() end,
        { "bad argument #1 to 'shutdown'", "executor expected, got nil" } },
    }

    it("can be called again on a pool that is already shut down", function()
      local ex = futures.ThreadPoolExecutor(1)
      ex:shutdown()
      ex:shutdown { wait = false, cancel_futures = true }
      ex:shutdown(true)
    end)
  end)

  describe("Future:result", function()
    local done = futures.Future()
    done:set_running_or_notify_cancel()
    done:set_result(1)
    refuses {
      { "refuses a negative timeout", function() return done:result(-1) end,
        { "bad argument #1 to 'result'", "timeout must not be negative" } },
      { "refuses a NaN timeout", function() return done:result(NAN) end,
        { "bad argument #1 to 'result'", "timeout is NaN" } },
      { "refuses a timeout that is not a number", function() return done:result("soon") end,
        { "bad argument #1 to 'result'", "number expected, got string" } },
      { "refuses to be called with '.' instead of ':'", function() return done.result() end,
        { "'result'", "futures.Future expected, got no value; call it with ':'" } },
      { "refuses to be called with '.' and a number", function() return done.result(5) end,
        { "'result'", "futures.Future expected, got number; call it with ':'" } },
      { "refuses to be called on an executor", function() return done.result(pool()) end,
        { "'result'", "futures.Future expected, got futures.Executor" } },
    }

    it("accepts an infinite timeout", function()
      assert.equals(1, done:result(math.huge))
    end)

    it("raises TimeoutError for a zero timeout on a pending future", function()
      local err = helpers.error_of(futures.Future().result, futures.Future(), 0)
      assert.equals("TimeoutError", err.type)
    end)
  end)

  describe("Future:exception", function()
    local f = futures.Future()
    refuses {
      { "refuses a negative timeout", function() return f:exception(-0.5) end,
        { "bad argument #1 to 'exception'", "timeout must not be negative" } },
      { "refuses a NaN timeout", function() return f:exception(NAN) end,
        { "bad argument #1 to 'exception'", "timeout is NaN" } },
      { "refuses a table as the timeout", function() return f:exception({}) end,
        { "bad argument #1 to 'exception'", "number expected, got table" } },
    }
  end)

  describe("Future:cancel, cancelled, running, done", function()
    local f = futures.Future()
    refuses {
      { "cancel refuses to be called with '.' instead of ':'", function() return f.cancel() end,
        { "bad argument #1 to 'cancel'", "futures.Future expected, got no value" } },
      { "cancelled refuses a string as the future", function() return f.cancelled("f") end,
        { "bad argument #1 to 'cancelled'", "futures.Future expected, got string" } },
      { "running refuses an executor as the future", function() return f.running(pool()) end,
        { "bad argument #1 to 'running'", "futures.Future expected, got futures.Executor" } },
      { "done refuses a number as the future", function() return f.done(1) end,
        { "bad argument #1 to 'done'", "futures.Future expected, got number" } },
    }
  end)

  describe("Future:add_done_callback", function()
    refuses {
      { "refuses a number as the callback", function() return futures.Future():add_done_callback(5) end,
        { "bad argument #1 to 'add_done_callback'", "function expected, got number" } },
      { "refuses a missing callback", function() return futures.Future():add_done_callback() end,
        { "bad argument #1 to 'add_done_callback'", "function expected, got no value" } },
    }

    it("reports a callback that raises on stderr and still runs the next one", function()
      -- in a child process, whose stderr the spec reads
      local r = shell.run_lua([[
        local futures = require "futures"
        local f = futures.Future()
        local ran = false
        f:add_done_callback(function() error("first one fails") end)
        f:add_done_callback(function() ran = true end)
        f:set_running_or_notify_cancel()
        f:set_result(1)
        futures.poll()
        print(ran)
      ]], nil, 30)
      assert.equals(0, r.status, r.err)
      assert.equals("true\n", r.out)
      assert.matches("^lua%-futures: exception calling a done callback: [^\n]*:%d+: first one fails\n$", r.err)
    end)
  end)

  describe("Future:set_running_or_notify_cancel, set_result, set_exception", function()
    it("set_result raises InvalidStateError on a future that is already finished", function()
      local f = pool():submit(identity, 1)
      f:result(10)
      local err = helpers.error_of(f.set_result, f, 2)
      assert.equals("InvalidStateError", err.type)
      assert.equals(1, f:result(0))
    end)

    it("set_running_or_notify_cancel raises InvalidStateError when called twice", function()
      local f = futures.Future()
      f:set_running_or_notify_cancel()
      local err = helpers.error_of(f.set_running_or_notify_cancel, f)
      assert.equals("InvalidStateError", err.type)
    end)

    it("set_exception refuses a missing error value", function()
      local f = futures.Future()
      assert.matches("bad argument #1 to 'set_exception' (value expected)",
        message(function() return f:set_exception() end), 1, true)
    end)

    it("set_result refuses a value that cannot travel, and the future stays pending", function()
      local f = futures.Future()
      f:set_running_or_notify_cancel()
      assert.matches("cannot transfer result #1", message(f.set_result, f, coroutine.create(identity)), 1, true)
      assert.is_false(f:done())
      f:set_result("later")
      assert.equals("later", f:result(0))
    end)
  end)

  describe("futures.wait", function()
    local f = futures.Future()
    refuses {
      { "refuses a future instead of a table of futures", function() return futures.wait(f) end,
        { "bad argument #1 to 'wait'", "table of futures expected, got userdata" } },
      { "refuses an item that is not a future, naming it", function() return futures.wait({ f, 5 }) end,
        { "bad argument #1 to 'wait'", "item 2 is not a future: number" } },
      { "refuses a negative timeout", function() return futures.wait({ f }, -1) end,
        { "'wait'", "timeout must be a non-negative number, got -1" } },
      { "refuses a NaN timeout", function() return futures.wait({ f }, NAN) end,
        { "'wait'", "timeout must be a non-negative number" } },
      { "refuses a NaN timeout in the options", function() return futures.wait({ f }, { timeout = NAN }) end,
        { "'wait'", "timeout must be a non-negative number" } },
      { "refuses an unknown return_when", function() return futures.wait({ f }, 1, "FIRST") end,
        { "'wait'", "return_when must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED, got string \"FIRST\"" } },
      { "refuses an unknown option", function() return futures.wait({ f }, { time = 1 }) end,
        { "'wait'", "unknown option 'time'" } },
    }

    it("returns at once for an empty table", function()
      local done, not_done = futures.wait({}, 0)
      assert.same({}, done)
      assert.same({}, not_done)
    end)
  end)

  describe("futures.as_completed", function()
    local f = futures.Future()
    refuses {
      { "refuses a string instead of a table of futures", function() return futures.as_completed("fs") end,
        { "bad argument #1 to 'as_completed'", "table of futures expected, got string" } },
      { "refuses an item that is not a future, naming it", function()
          return futures.as_completed({ f, f, {} }) end,
        { "bad argument #1 to 'as_completed'", "item 3 is not a future: table" } },
      { "refuses a negative timeout", function() return futures.as_completed({ f }, -2) end,
        { "'as_completed'", "timeout must be a non-negative number" } },
      { "refuses a NaN timeout", function() return futures.as_completed({ f }, NAN) end,
        { "'as_completed'", "timeout must be a non-negative number" } },
    }
  end)

  describe("futures.sleep", function()
    refuses {
      { "refuses a negative time", function() return futures.sleep(-1) end,
        { "bad argument #1 to 'sleep'", "non-negative" } },
      { "refuses a NaN time", function() return futures.sleep(NAN) end,
        { "bad argument #1 to 'sleep'", "non-negative" } },
      { "refuses a missing time", function() return futures.sleep() end,
        { "bad argument #1 to 'sleep'", "number expected, got no value" } },
      { "refuses a table as the time", function() return futures.sleep({}) end,
        { "bad argument #1 to 'sleep'", "number expected, got table" } },
    }
  end)

  describe("futures.serialize and serialize_with", function()
    refuses {
      { "serialize refuses a coroutine, naming the value", function()
          return futures.serialize(1, coroutine.create(identity)) end,
        { "cannot transfer", "#2", "thread" } },
      { "serialize refuses a file handle inside a table, naming the field", function()
          return futures.serialize({ out = io.stdout }) end,
        { "cannot transfer", "out", "userdata" } },
      { "serialize refuses a future (it cannot leave the process)", function()
          return futures.serialize(futures.Future()) end,
        { "cannot transfer" } },
      { "serialize_with refuses options that are not a table", function()
          return futures.serialize_with(5, 1) end,
        { "bad argument #1 to 'serialize_with'", "table expected, got number" } },
      { "serialize_with refuses max_depth = 0", function()
          return futures.serialize_with({ max_depth = 0 }, 1) end,
        { "'serialize_with'", "max_depth" } },
      { "serialize_with refuses a NaN max_depth", function()
          return futures.serialize_with({ max_depth = NAN }, 1) end,
        { "'serialize_with'" } },
      { "serialize_with refuses a negative max_size", function()
          return futures.serialize_with({ max_size = -1 }, 1) end,
        { "'serialize_with'", "max_size" } },
      { "serialize_with refuses an unknown option", function()
          return futures.serialize_with({ depth = 3 }, 1) end,
        { "'serialize_with'", "unknown option 'depth'" } },
    }
  end)

  describe("futures.deserialize", function()
    local good = futures.serialize({ 1, 2, 3 })
    refuses {
      { "refuses a table instead of a string", function() return futures.deserialize({}) end,
        { "bad argument #1 to 'deserialize'", "string expected, got table" } },
      { "refuses bytes that are not transfer data", function() return futures.deserialize("junk") end,
        { "cannot decode transfer data" } },
      { "refuses truncated data", function() return futures.deserialize(good:sub(1, -2)) end,
        { "cannot decode transfer data" } },
      { "refuses options that are not a table", function() return futures.deserialize(good, 5) end,
        { "bad argument #2 to 'deserialize'", "table expected, got number" } },
      { "refuses an unknown option", function() return futures.deserialize(good, { fns = true }) end,
        { "'deserialize'", "unknown option 'fns'" } },
    }

    it("still decodes good data after all of the above", function()
      assert.same({ 1, 2, 3 }, futures.deserialize(good))
    end)
  end)

  describe("module functions called with ':'", function()
    local TPE_ERR = "call it with '.': futures.ThreadPoolExecutor(...)"
    refuses {
      { "ThreadPoolExecutor says to call it with '.'", function() return futures:ThreadPoolExecutor(2) end,
        { "bad argument #1 to 'ThreadPoolExecutor'", TPE_ERR } },
      { "ProcessPoolExecutor says to call it with '.'", function() return futures:ProcessPoolExecutor(1) end,
        { "bad argument #1 to 'ProcessPoolExecutor'", "call it with '.': futures.ProcessPoolExecutor(...)" } },
      { "wait says to call it with '.'", function() return futures:wait({ futures.Future() }) end,
        { "bad argument #1 to 'wait'", "call it with '.': futures.wait(...)" } },
      { "as_completed says to call it with '.'", function() return futures:as_completed({}) end,
        { "bad argument #1 to 'as_completed'", "call it with '.': futures.as_completed(...)" } },
      { "iserror says to call it with '.'", function() return futures:iserror(futures.TimeoutError) end,
        { "bad argument #1 to 'iserror'", "call it with '.': futures.iserror(...)" } },
      { "progress says to call it with '.'", function() return futures:progress({}) end,
        { "bad argument #1 to 'progress'", "call it with '.': futures.progress(...)" } },
      { "map says to call it with ':'", function() return pool().map(identity, { 1 }) end,
        { "bad argument #1 to 'map'", "call it with ':'" } },
      { "shutdown says to call it with ':'", function() return pool().shutdown(true) end,
        { "bad argument #1 to 'shutdown'", "call it with ':'" } },
    }
  end)

  describe("values in error messages", function()
    refuses {
      { "say that max_workers was a string", function()
          return futures.ThreadPoolExecutor { max_workers = "4" } end,
        { "max_workers must be a positive integer up to 4096, got string \"4\"" } },
      { "say that max_tasks_per_child was a string", function()
          return futures.ProcessPoolExecutor { max_tasks_per_child = "10" } end,
        { "max_tasks_per_child must be a positive integer, got string \"10\"" } },
      { "say that a map chunksize was a string", function()
          return pool():map(identity, { 1 }, { chunksize = "8" }) end,
        { "chunksize must be a positive integer, got string \"8\"" } },
      { "say that a wait timeout was a string", function()
          return futures.wait({ futures.Future() }, "1") end,
        { "timeout must be a non-negative number, got string \"1\"" } },
      { "say that return_when was not one of the names", function()
          return futures.wait({ futures.Future() }, 1, 2) end,
        { "ALL_COMPLETED, got 2)" } },
      { "show a key that is not a string as a key", function()
          return futures.wait({ futures.Future() }, { 1 }) end,
        { "unknown option [1]" } },
    }
  end)

  -- Errors raised for the caller, by the Lua side or by the core functions
  -- it calls, carry the caller's file:line, not the module's.
  describe("error positions", function()
    local HERE = "^[^:]*bad_input_spec%.lua:%d+: "
    local function at_caller(fn, pattern)
      local err = message(fn)
      assert.matches(HERE, err)
      assert.matches(pattern, err, 1, true)
    end

    it("for a worker interpreter that is not there", function()
      at_caller(function() futures.ProcessPoolExecutor { worker = "/nonexistent/lua-futures" } end,
        "ProcessPoolExecutor: the worker interpreter '/nonexistent/lua-futures'")
    end)

    it("for initargs that cannot travel", function()
      at_caller(function()
        futures.ThreadPoolExecutor { initializer = identity, initargs = { coroutine.create(identity) } }
      end, "cannot transfer initializer argument #1")
    end)

    it("for map after shutdown, a RuntimeError", function()
      local ex = futures.ThreadPoolExecutor(1)
      ex:shutdown()
      local err = helpers.error_of(function() for _ in ex:map(identity, { 1 }) do end end)
      assert.is_true(futures.iserror(err, futures.RuntimeError))
      assert.equals("cannot schedule new futures after shutdown", err.message)
    end)

    it("for map with an item that cannot travel, during the call and the iteration", function()
      local ex <close> = futures.ThreadPoolExecutor(1)
      at_caller(function() ex:map(identity, { 1, coroutine.create(identity) }) end,
        "map: cannot transfer item 2 (value #1)")
      local items = { 1, 2, 3, coroutine.create(identity) }
      at_caller(function()
        for _ in ex:map(identity, items, { buffersize = 1, timeout = 10 }) do end
      end, "map: cannot transfer item 4 (value #1)")
    end)

    it("for a C iterator function that map calls", function()
      local ex <close> = futures.ThreadPoolExecutor(1)
      at_caller(function() ex:map(identity, next) end, "table expected, got nil")
    end)

    it("but keeps an iterator's own error as it is", function()
      local ex <close> = futures.ThreadPoolExecutor(1)
      local function gen() error("gen broke") end
      assert.matches("^[^:]*bad_input_spec%.lua:%d+: gen broke$",
        message(function() ex:map(identity, gen) end))
      local function gen0() error("gen broke", 0) end
      assert.equals("gen broke", message(function() ex:map(identity, gen0) end))
    end)
  end)

  describe("futures.iserror", function()
    it("answers false for values that are not runtime errors", function()
      assert.is_false(futures.iserror(nil))
      assert.is_false(futures.iserror("TimeoutError: x", futures.TimeoutError))
      assert.is_false(futures.iserror({}, "TimeoutError"))
      assert.is_false(futures.iserror(42))
    end)
  end)
end)
