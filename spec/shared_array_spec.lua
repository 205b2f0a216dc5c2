-- futures.SharedArray: fixed-size numeric arrays outside every Lua heap,
-- the same memory in the host and in every task, thread or process.
-- (The behaviour shared with queues in both pools is in
-- support/sharing_contract.lua, run by queue_spec.lua.)
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

local function error_of(fn, ...) return helpers.error_of(fn, ...) end

-- Mappings of shared arrays in this process (Linux: /proc/self/maps).
local function mapped_arrays()
  local f = io.open("/proc/self/maps")
  if not f then return nil end
  local n = 0
  for line in f:lines() do
    if line:find("lua-futures-array", 1, true) then n = n + 1 end
  end
  f:close()
  return n
end

describe("futures.SharedArray", function()
  it("makes zero-filled arrays of each kind, with their length", function()
    for _, kind in ipairs { "f64", "f32", "i64", "i32", "u8" } do
      local a = futures.SharedArray(kind, 5)
      assert.equals(5, #a)
      assert.equals(kind, a:kind())
      for i = 1, 5 do assert.equals(0, a[i]) end
    end
    assert.equals(0, #futures.SharedArray("u8", 0))
  end)

  it("reads back what was written, as numbers of its kind", function()
    local f = futures.SharedArray("f64", 2)
    f[1] = 1.5; f[2] = 3
    assert.equals(1.5, f[1])
    assert.equals("float", math.type(f[2]))
    local i = futures.SharedArray("i64", 2)
    i[1] = math.maxinteger; i[2] = 4.0
    assert.equals(math.maxinteger, i[1])
    assert.equals("integer", math.type(i[2]))
    local s = futures.SharedArray("f32", 1)
    s[1] = 0.1
    assert.is_true(math.abs(s[1] - 0.1) < 1e-7 and s[1] ~= 0.1)
    local w = futures.SharedArray("i32", 1)
    w[1] = -2147483648
    assert.equals(-2147483648, w[1])
    local b = futures.SharedArray("u8", 1)
    b[1] = 255
    assert.equals(255, b[1])
  end)

  it("refuses a value that does not fit its kind, naming the index", function()
    local u = futures.SharedArray("u8", 3)
    assert.matches("shared_array_spec%.lua:%d+: bad value for SharedArray index 2 %(u8 takes "
      .. "integers from 0 to 255, got 256%)", error_of(function() u[2] = 256 end))
    assert.matches("u8 takes integers from 0 to 255, got %-1", error_of(function() u[1] = -1 end))
    local i = futures.SharedArray("i64", 1)
    assert.matches("index 1 %(i64 takes integers, got 1.5%)", error_of(function() i[1] = 1.5 end))
    assert.matches("i64 takes numbers, got string", error_of(function() i[1] = "1" end))
    local w = futures.SharedArray("i32", 1)
    assert.matches("i32 takes integers from %-2147483648 to 2147483647, got 2147483648",
      error_of(function() w[1] = 2147483648 end))
    local f = futures.SharedArray("f64", 1)
    assert.matches("f64 takes numbers, got table", error_of(function() f[1] = {} end))
  end)

  it("raises for an index out of range or not an integer, naming it", function()
    local a = futures.SharedArray("f64", 10)
    assert.matches("shared_array_spec%.lua:%d+: SharedArray index 11 out of range %(1%.%.10%)",
      error_of(function() return a[11] end))
    assert.matches("index 0 out of range", error_of(function() a[0] = 1 end))
    assert.matches("index %-1 out of range", error_of(function() return a[-1] end))
    assert.matches("index 1.5 is not an integer", error_of(function() return a[1.5] end))
    assert.matches("index must be an integer, got boolean", error_of(function() return a[true] end))
    assert.matches("cannot set field 'x' of a SharedArray", error_of(function() a.x = 1 end))
    assert.equals(0, a[2.0])   -- a float with an integer value is that integer
    assert.is_nil(a.nosuchmethod)
    assert.is_nil(a["1"])      -- a string is not an index, as in a table
  end)

  it("fills all of it or a range, and returns itself", function()
    local a = futures.SharedArray("i32", 6)
    assert.equals(a, a:fill(7))
    a:fill(1, 2, 3)
    assert.same({ 7, 1, 1, 7, 7, 7 }, a:totable())
    a:fill(9, 5, 4)   -- an empty range
    assert.same({ 7, 1, 1, 7, 7, 7 }, a:totable())
    assert.matches("bad argument #1 to 'fill' %(u8 takes integers from 0 to 255, got 300%)",
      error_of(function() futures.SharedArray("u8", 1):fill(300) end))
    assert.matches("bad argument #3 to 'fill' %(index 7 out of range %(1%.%.6%)%)",
      error_of(function() a:fill(0, 1, 7) end))
  end)

  it("copies a range into a table", function()
    local a = futures.SharedArray("f64", 4)
    for i = 1, 4 do a[i] = i * 1.5 end
    assert.same({ 1.5, 3.0, 4.5, 6.0 }, a:totable())
    assert.same({ 3.0, 4.5 }, a:totable(2, 3))
    assert.same({ 6.0 }, a:totable(4))
    assert.same({}, a:totable(3, 2))
    assert.matches("bad argument #1 to 'totable' %(index 0 out of range",
      error_of(function() a:totable(0) end))
  end)

  it("gives the bytes of a u8 array as a string", function()
    local a = futures.SharedArray("u8", 5)
    for i = 1, 5 do a[i] = 64 + i end
    assert.equals("ABCDE", a:tostring())
    assert.equals("BC", a:tostring(2, 3))
    assert.matches("tostring needs a u8 array, not f64",
      error_of(function() futures.SharedArray("f64", 1):tostring() end))
  end)

  it("adds atomically to i64 and i32 elements and returns the new value", function()
    local a = futures.SharedArray("i64", 2)
    assert.equals(5, a:add(2, 5))
    assert.equals(2, a:add(2, -3))
    assert.equals(math.mininteger, futures.SharedArray("i64", 1):fill(math.maxinteger):add(1, 1))
    local w = futures.SharedArray("i32", 1)
    assert.equals(-1, w:add(1, -1))
    assert.matches("add needs an i64 or i32 array, not f64",
      error_of(function() futures.SharedArray("f64", 1):add(1, 1) end))
    assert.matches("bad argument #1 to 'add' %(index 3 out of range",
      error_of(function() a:add(3, 1) end))
  end)

  it("refuses a bad kind or size, naming the argument", function()
    assert.matches("bad argument #1 to 'SharedArray' %(kind must be \"f64\", \"f32\", \"i64\", "
      .. "\"i32\" or \"u8\", got \"double\"%)", error_of(futures.SharedArray, "double", 1))
    assert.matches("bad argument #2 to 'SharedArray' %(size must be a non%-negative integer%)",
      error_of(futures.SharedArray, "u8", -1))
    assert.matches("size expected, got no value", error_of(futures.SharedArray, "u8"))
    assert.matches("size must be a non%-negative integer", error_of(futures.SharedArray, "u8", 1.5))
  end)

  it("shows its kind and length in tostring, and compares by identity", function()
    local a = futures.SharedArray("u8", 3)
    assert.matches("^SharedArray: 0x%x+ %(u8, 3 elements%)$", tostring(a))
    local ex <close> = futures.ThreadPoolExecutor(1)
    assert.is_true(ex:submit(function(a) return a end, a):result(10) == a)
    assert.is_false(a == futures.SharedArray("u8", 3))
  end)

  it("cannot leave the process in a string", function()
    assert.matches("shared array %(a shared handle cannot leave the process%)",
      error_of(futures.serialize, futures.SharedArray("u8", 1)))
  end)

  it("outlives the thread state that made it", function()
    local ex = futures.ThreadPoolExecutor(1)
    local a = ex:submit(function()
      local a = require("futures").SharedArray("i64", 3)
      a[3] = 33
      return a
    end):result(10)
    ex:shutdown()
    collectgarbage()
    assert.equals(33, a[3])
  end)

  it("frees its memory when the last holder lets go", function()
    if not mapped_arrays() then pending("no /proc/self/maps") return end
    collectgarbage(); collectgarbage()
    local before = mapped_arrays()
    local a = futures.SharedArray("f64", 1024)
    local ex = futures.ThreadPoolExecutor(1)
    local b = ex:submit(function(a) return a end, a):result(10)
    ex:shutdown()   -- the worker's state (and what it held) is gone
    assert.equals(before + 1, mapped_arrays())
    a = nil
    collectgarbage(); collectgarbage()
    assert.equals(before + 1, mapped_arrays())   -- b holds it
    b = nil
    collectgarbage(); collectgarbage()
    assert.equals(before, mapped_arrays())
  end)
end)

describe("futures.SharedArray in process tasks", function()
  local problem = shell.process_pool_problem()
  if problem then it("(skipped)", function() pending(problem) end) return end

  it("reaches a task as the same memory, 16 MB in far less than a copy takes", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    px:submit(function() end):result(10)   -- the worker is up
    local a = futures.SharedArray("u8", 16 * 1024 * 1024)
    a[#a] = 42
    local t0 = futures.monotonic()
    local last = px:submit(function(a) a[1] = 7 return a[#a] end, a):result(10)
    local took = futures.monotonic() - t0
    assert.equals(42, last)
    assert.equals(7, a[1])
    assert.is_true(took < 0.5, ("took %.3f s"):format(took))   -- gross: no 16 MB copy
  end)

  it("is mapped once per worker and let go once the worker and the host are done", function()
    if not mapped_arrays() then pending("no /proc/self/maps") return end
    local px <close> = futures.ProcessPoolExecutor(1)
    local a = futures.SharedArray("i64", 1000)
    local count = px:submit(function(a, mapped)
      local b = a   -- named twice in one task: one mapping
      return mapped(), b == a
    end, a, mapped_arrays):result(10)
    assert.equals(1, count)
    assert.equals(1, px:submit(function(a, mapped) return mapped() end, a, mapped_arrays):result(10))
    futures.sleep(0.3)   -- idle: the worker lets go of what it no longer uses
    assert.equals(0, px:submit(mapped_arrays):result(10))
    collectgarbage(); collectgarbage()
    local before = mapped_arrays()
    a = nil
    collectgarbage(); collectgarbage()
    assert.equals(before - 1, mapped_arrays())
  end)

  it("refuses an array made in a worker as a result", function()
    local px <close> = futures.ProcessPoolExecutor(1)
    local err = px:submit(function() return require("futures").SharedArray("u8", 1) end):exception(10)
    assert.matches("shared array made in a worker process", tostring(err))
  end)
end)
