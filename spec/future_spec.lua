-- Futures on their own: the state machine, results, errors, callbacks.
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

describe("Future", function()
  it("starts pending: not running, not done, not cancelled", function()
    local f = futures.Future()
    assert.is_false(f:running())
    assert.is_false(f:done())
    assert.is_false(f:cancelled())
    assert.matches("^future: 0x%x+ %(pending%)$", tostring(f))
  end)

  it("returns every value given to set_result, nils included", function()
    local f = futures.Future()
    f:set_result(1, nil, "three", nil)
    assert.is_true(f:done())
    local a, b, c, d = f:result(0)
    assert.equals(1, a); assert.is_nil(b); assert.equals("three", c); assert.is_nil(d)
    assert.equals(4, select("#", f:result(0)))
  end)

  it("returns the same table from result() each time", function()
    local f = futures.Future()
    f:set_result({ x = 1 })
    assert.equals(f:result(), f:result())
    assert.same({ x = 1 }, f:result())
  end)

  it("raises a TimeoutError from result(timeout) when not done", function()
    local f = futures.Future()
    local t0 = futures.monotonic()
    local err = helpers.error_of(f.result, f, 0.05)
    assert.is_true(futures.monotonic() - t0 >= 0.05)
    assert.equals("TimeoutError", err.type)
    assert.is_true(futures.iserror(err, futures.TimeoutError))
    assert.matches("^TimeoutError: ", tostring(err))
  end)

  it("re-raises the error given to set_exception, as the same value", function()
    local f = futures.Future()
    local e = { code = 42 }
    f:set_exception(e)
    local err = helpers.error_of(f.result, f)
    assert.equals(e.code, err.code)
    local ex, tb = f:exception()
    assert.equals(42, ex.code)
    assert.equals("string", type(tb))
  end)

  it("returns nil from exception() when the future succeeded", function()
    local f = futures.Future()
    f:set_result(true)
    assert.is_nil(f:exception())
  end)

  it("returns exactly one value from exception() when the future succeeded", function()
    local f = futures.Future()
    f:set_result()
    assert.equals(1, select("#", f:exception()))
    assert.equals("nil", tostring(f:exception()))
  end)

  it("tells a nil or false error from success: it becomes a message", function()
    for _, v in ipairs({ false }) do
      local f = futures.Future()
      f:set_exception(v)
      assert.equals("(error object is a boolean value)", f:exception())
    end
    local g = futures.Future()
    g:set_exception(nil)
    assert.equals("(error object is a nil value)", g:exception())
    assert.equals("(error object is a nil value)", helpers.error_of(g.result, g))
    local ex <close> = futures.ThreadPoolExecutor(1)
    local h = ex:submit(function() error(nil) end)
    assert.equals("(error object is a nil value)", h:exception(10))
    assert.equals("(error object is a boolean value)",
      ex:submit(function() error(false) end):exception(10))
  end)

  it("runs a done callback due at the end of a script, before the state closes", function()
    local r = shell.run_lua([[
      local futures = require "futures"
      local ex = futures.ThreadPoolExecutor(1)
      local f = ex:submit(function() require("futures").sleep(0.2) return 42 end)
      f:add_done_callback(function(g) io.write("callback saw ", g:result(), "\n") end)
      io.write("script ends\n")
    ]], nil, 30)
    assert.equals(0, r.status, r.err)
    assert.equals("script ends\ncallback saw 42\n", r.out)
  end)

  it("refuses a second set_result with an InvalidStateError", function()
    local f = futures.Future()
    f:set_result(1)
    local err = helpers.error_of(f.set_result, f, 2)
    assert.equals("InvalidStateError", err.type)
    err = helpers.error_of(f.set_exception, f, "x")
    assert.equals("InvalidStateError", err.type)
  end)

  it("can be cancelled while pending, and then raises CancelledError", function()
    local f = futures.Future()
    assert.is_true(f:cancel())
    assert.is_true(f:cancelled())
    assert.is_true(f:done())
    assert.is_true(f:cancel())
    local err = helpers.error_of(f.result, f)
    assert.equals("CancelledError", err.type)
    err = helpers.error_of(f.exception, f)
    assert.equals("CancelledError", err.type)
  end)

  it("cannot be cancelled once running or finished", function()
    local f = futures.Future()
    assert.is_true(f:set_running_or_notify_cancel())
    assert.is_true(f:running())
    assert.is_false(f:cancel())
    f:set_result(1)
    assert.is_false(f:cancel())
    assert.is_false(f:cancelled())
  end)

  it("reports a cancelled future from set_running_or_notify_cancel", function()
    local f = futures.Future()
    f:cancel()
    assert.is_false(f:set_running_or_notify_cancel())
  end)

  it("refuses set_running_or_notify_cancel twice", function()
    local f = futures.Future()
    f:set_running_or_notify_cancel()
    local err = helpers.error_of(f.set_running_or_notify_cancel, f)
    assert.equals("InvalidStateError", err.type)
  end)

  it("runs a long chain of callbacks that each add one to a finished future, without nesting", function()
    local count, depth, deepest = 0, 0, 0
    local function add()
      local f = futures.Future()
      f:set_result(true)
      f:add_done_callback(function()
        depth = depth + 1
        deepest = math.max(deepest, depth)
        count = count + 1
        if count < 10000 then add() end
        depth = depth - 1
      end)
    end
    add()
    assert.equals(10000, count)
    assert.equals(1, deepest)
  end)

  it("calls a done callback at once when already done", function()
    local f = futures.Future()
    f:set_result(7)
    local got
    f:add_done_callback(function(g) got = g:result() end)
    assert.equals(7, got)
  end)

  it("calls done callbacks once, with the future, when it completes", function()
    local f = futures.Future()
    local spy, count = helpers.counter()
    local seen
    f:add_done_callback(spy)
    f:add_done_callback(function(g) seen = g end)
    assert.equals(0, count())
    f:set_result(1)
    futures.poll()
    futures.poll()
    assert.equals(1, count())
    assert.equals(f, seen)
  end)

  it("calls done callbacks of a cancelled future", function()
    local f = futures.Future()
    local spy, count = helpers.counter()
    f:add_done_callback(spy)
    f:cancel()
    futures.poll()
    assert.equals(1, count())
  end)

  it("keeps running the other callbacks when one raises, and reports it on stderr", function()
    -- in a child process, whose stderr the spec reads
    local r = shell.run_lua([[
      local futures = require "futures"
      local f = futures.Future()
      local count = 0
      f:add_done_callback(function() error("boom") end)
      f:add_done_callback(function() count = count + 1 end)
      f:set_result(1)
      futures.poll()
      print(count)
    ]], nil, 30)
    assert.equals(0, r.status, r.err)
    assert.equals("1\n", r.out)
    assert.matches("^lua%-futures: exception calling a done callback: [^\n]*:%d+: boom\n$", r.err)
  end)

  it("runs hundreds of callbacks that call result() without deep recursion", function()
    local fs, ran = {}, 0
    for i = 1, 500 do
      local f = futures.Future()
      f:add_done_callback(function(g) ran = ran + g:result() end)
      fs[i] = f
    end
    for i = 1, 500 do fs[i]:set_result(1) end
    futures.poll()
    assert.equals(500, ran)
  end)

  it("rejects a negative or NaN timeout", function()
    local f = futures.Future()
    f:set_result(1)
    assert.has_error(function() f:result(-1) end)
    assert.has_error(function() f:result(0/0) end)
  end)

  it("compares equal to itself only", function()
    local f, g = futures.Future(), futures.Future()
    assert.equals(f, f)
    assert.not_equals(f, g)
  end)
end)

describe("runtime error classes", function()
  it("are exported with their type and a readable tostring", function()
    for _, name in ipairs { "CancelledError", "TimeoutError", "BrokenExecutor",
        "BrokenThreadPool", "BrokenProcessPool", "InvalidStateError" } do
      assert.equals(name, futures[name].type)
    end
  end)

  it("treat BrokenThreadPool as a BrokenExecutor", function()
    local e = setmetatable({ type = "BrokenThreadPool", message = "x" }, futures.BrokenThreadPool)
    assert.is_true(futures.iserror(e, futures.BrokenExecutor))
    assert.is_false(futures.iserror(e, futures.TimeoutError))
    assert.is_false(futures.iserror("a string", futures.TimeoutError))
  end)
end)
