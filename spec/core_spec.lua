local futures = require "futures"

describe("futures module", function()
  it("reports a version", function()
    assert.matches("^lua%-futures %d+%.%d+%.%d+$", futures._VERSION)
  end)

  it("counts at least one CPU", function()
    local n = futures.cpu_count()
    assert.equals("integer", math.type(n))
    assert.is_true(n >= 1)
  end)

  it("has a monotonic clock that never goes back", function()
    local a = futures.monotonic()
    local b = futures.monotonic()
    assert.equals("float", math.type(a))
    assert.is_true(b >= a)
  end)

  it("sleeps at least the time asked, fractions included", function()
    local t0 = futures.monotonic()
    futures.sleep(0.05)
    local dt = futures.monotonic() - t0
    assert.is_true(dt >= 0.05, "slept " .. dt)
    assert.is_true(dt < 1.0, "slept " .. dt)
  end)

  it("rejects a negative or non-number sleep", function()
    assert.has_error(function() futures.sleep(-1) end)
    assert.has_error(function() futures.sleep("x") end)
  end)
end)
