-- futures.wait and futures.as_completed.
local futures = require "futures"
local helpers = require "support.helpers"

describe("futures.wait", function()
  it("returns done and not_done in the order given, without duplicates", function()
    local a, b, c = futures.Future(), futures.Future(), futures.Future()
    b:set_result(1)
    local done, not_done = futures.wait({ a, b, c, b }, 0.01)
    assert.same({ b }, done)
    assert.same({ a, c }, not_done)
  end)

  it("returns at the first completion with FIRST_COMPLETED", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local slow = ex:submit(futures.sleep, 1)
    local fast = ex:submit(function() return 1 end)
    local done, not_done = futures.wait({ slow, fast },
      { timeout = 5, return_when = futures.FIRST_COMPLETED })
    assert.same({ fast }, done)
    assert.same({ slow }, not_done)
  end)

  it("returns at the first error with FIRST_EXCEPTION", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local slow = ex:submit(futures.sleep, 1)
    local bad = ex:submit(function() error("x") end)
    local done, not_done = futures.wait({ slow, bad }, 5, futures.FIRST_EXCEPTION)
    assert.same({ bad }, done)
    assert.same({ slow }, not_done)
  end)

  it("waits for all with FIRST_EXCEPTION when nothing fails", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local fs = { ex:submit(futures.sleep, 0.05), ex:submit(futures.sleep, 0.1) }
    local done = futures.wait(fs, 5, futures.FIRST_EXCEPTION)
    assert.equals(2, #done)
  end)

  it("returns when the timeout passes", function()
    local f = futures.Future()
    local t0 = futures.monotonic()
    local done, not_done = futures.wait({ f }, { timeout = 0.1 })
    local dt = futures.monotonic() - t0
    assert.equals(0, #done); assert.equals(1, #not_done)
    assert.is_true(dt >= 0.1 and dt < 2)
  end)

  it("returns at once for an empty list", function()
    local done, not_done = futures.wait({})
    assert.same({}, done); assert.same({}, not_done)
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() futures.wait(nil) end)
    assert.has_error(function() futures.wait({ 1 }) end)
    assert.has_error(function() futures.wait({}, { return_when = "SOMETIMES" }) end)
    assert.has_error(function() futures.wait({}, -1) end)
    assert.has_error(function() futures.wait({}, { tmeout = 1 }) end)
  end)

  it("waits on futures of several executors at once", function()
    local a <close> = futures.ThreadPoolExecutor(1)
    local b <close> = futures.ThreadPoolExecutor(1)
    local fs = { a:submit(futures.sleep, 0.05), b:submit(futures.sleep, 0.05), futures.Future() }
    fs[3]:set_result(1)
    local done = futures.wait(fs, 5)
    assert.equals(3, #done)
  end)
end)

describe("futures.as_completed", function()
  it("yields the futures already done first", function()
    local a, b = futures.Future(), futures.Future()
    b:set_result(2)
    local it = futures.as_completed({ a, b }, 5)
    assert.equals(b, it())
    a:set_result(1)
    assert.equals(a, it())
    assert.is_nil(it())
  end)

  it("yields in completion order", function()
    -- each task ends when its gate opens; the gates open in the order 2,
    -- 3, 1, the next one once the loop has seen the last task end
    local ex <close> = futures.ThreadPoolExecutor(3)
    local gates, fs = {}, {}
    for i = 1, 3 do
      gates[i] = futures.Future()
      fs[i] = ex:submit(function(gate, n) gate:result(30) return n end, gates[i], i)
    end
    local opening = { 2, 3, 1 }
    gates[opening[1]]:set_result(true)
    local order = {}
    for f in futures.as_completed(fs, 30) do
      order[#order + 1] = f:result()
      local next_gate = opening[#order + 1]
      if next_gate then gates[next_gate]:set_result(true) end
    end
    assert.same({ 2, 3, 1 }, order)
  end)

  it("raises a TimeoutError saying how many are unfinished", function()
    local fs = { futures.Future(), futures.Future(), futures.Future() }
    fs[1]:set_result(1)
    local err = helpers.error_of(function()
      for _ in futures.as_completed(fs, 0.05) do end
    end)
    assert.equals("TimeoutError", err.type)
    assert.matches("2 futures unfinished", err.message)
  end)

  it("handles ten thousand futures", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local fs = {}
    for i = 1, 10000 do fs[i] = ex:submit(function() return i end) end
    local n, sum = 0, 0
    for f in futures.as_completed(fs, 60) do n = n + 1; sum = sum + f:result() end
    assert.equals(10000, n)
    assert.equals(10000 * 10001 // 2, sum)
  end)

  it("can be left early with break", function()
    local fs = { futures.Future(), futures.Future() }
    fs[1]:set_result(1)
    for f in futures.as_completed(fs) do
      assert.equals(fs[1], f)
      break
    end
    fs[2]:set_result(2)
  end)
end)
