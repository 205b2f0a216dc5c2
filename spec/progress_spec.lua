-- futures.progress: a progress line over a table of futures or an iterator.
-- The stream is a fake that records what is written and the clock is a
-- fake that the test moves, so the output is exact and nothing sleeps.
local futures = require "futures"
local shell = require "support.shell"

-- A stream that keeps everything written to it.
local function recorder()
  local parts = {}
  return {
    write = function(self, ...)
      for i = 1, select("#", ...) do parts[#parts + 1] = select(i, ...) end
      return self
    end,
    text = function() return table.concat(parts) end,
  }
end

-- A clock that says what `now` is; advance it by setting clock.now.
local function fake_clock()
  local c = { now = 100 }
  c.fn = function() return c.now end
  return c
end

-- An iterator like map's: yields i, i * 10, "x" for i = 1..n, moving the
-- clock `step` seconds before each item.
local function items(n, clock, step)
  local i = 0
  return function()
    if i == n then return nil end
    i = i + 1
    if clock then clock.now = clock.now + step end
    return i, i * 10, "x"
  end
end

local function lines_of(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

describe("futures.progress", function()
  it("is loaded on its first call, not by every state that requires futures", function()
    local ex <close> = futures.ThreadPoolExecutor { max_workers = 1 }
    local function loaded()
      require "futures"
      return package.loaded["futures.progress"] ~= nil
    end
    assert.is_false(ex:submit(loaded):result(10))
    local function draw()
      local out = { write = function() end, flush = function() end }
      for _ in require("futures").progress({}, { stream = out, tty = false }) do end
    end
    ex:submit(draw):result(10)
    assert.is_true(ex:submit(loaded):result(10))
  end)

  it("passes every value of an iterator through, in order", function()
    local out = recorder()
    local got = {}
    for i, v, s in futures.progress(items(5), { total = 5, stream = out, tty = false }) do
      got[#got + 1] = ("%d:%d:%s"):format(i, v, s)
    end
    assert.same({ "1:10:x", "2:20:x", "3:30:x", "4:40:x", "5:50:x" }, got)
  end)

  it("yields each future of a table once, as it completes", function()
    local a, b, c = futures.Future(), futures.Future(), futures.Future()
    b:set_result("b")
    local out = recorder()
    local seen = {}
    for f in futures.progress({ a, b, c, b }, { stream = out, tty = false, timeout = 10 }) do
      seen[#seen + 1] = f:result()
      if f == b then c:set_result("c") end
      if f == c then a:set_result("a") end
    end
    assert.same({ "b", "c", "a" }, seen)
    assert.matches("progress: 3/3 %(100%%%)", out.text())
  end)

  it("follows the futures of an executor to the end", function()
    local ex <close> = futures.ThreadPoolExecutor(2)
    local fs = {}
    for i = 1, 20 do fs[i] = ex:submit(function(x) return x * 2 end, i) end
    local out, sum = recorder(), 0
    for f in futures.progress(fs, { label = "doubling", stream = out, tty = false, timeout = 20 }) do
      sum = sum + f:result()
    end
    assert.equals(420, sum)
    assert.matches("^doubling: 20/20 %(100%%%)", out.text())
  end)

  it("writes a plain line every interval and a last line when done", function()
    local clock, out = fake_clock(), recorder()
    for _ in futures.progress(items(10, clock, 0.5),
        { total = 10, label = "work", stream = out, tty = false, interval = 2, clock = clock.fn }) do
    end
    assert.same({
      "work: 4/10 (40%), 2.00/s, ETA 3.0s",
      "work: 8/10 (80%), 2.00/s, ETA 1.0s",
      "work: 10/10 (100%), 2.00/s, in 5.0s",
    }, lines_of(out.text()))
  end)

  it("draws a bar redrawn in place on a terminal, ending with a newline", function()
    local clock, out = fake_clock(), recorder()
    for _ in futures.progress(items(4, clock, 1),
        { total = 4, label = "bar", stream = out, tty = true, width = 8, clock = clock.fn }) do
    end
    local text = out.text()
    assert.matches("^\rbar %[%-%-%-%-%-%-%-%-%] 0/4   0%%", text)
    assert.matches("\rbar %[####%-%-%-%-%] 2/4  50%%  1%.00/s  ETA 2%.0s\27%[K", text)
    assert.matches("\rbar %[########%] 4/4 100%%  1%.00/s  in 4%.0s\27%[K\n$", text)
    assert.equals(1, select(2, text:gsub("\n", "")))
  end)

  it("redraws a terminal bar at most ten times a second", function()
    local clock, out = fake_clock(), recorder()
    for _ in futures.progress(items(1000, clock, 0.001),   -- 1000 items in 1 s
        { total = 1000, stream = out, tty = true, clock = clock.fn }) do
    end
    local draws = select(2, out.text():gsub("\r", ""))
    assert.is_true(draws <= 12, draws .. " redraws")   -- start + 10 + end
  end)

  it("shows the count and the rate, without an ETA, when the total is unknown", function()
    local clock, out = fake_clock(), recorder()
    for _ in futures.progress(items(3, clock, 1), { stream = out, tty = false, clock = clock.fn }) do end
    assert.same({
      "progress: 2 done, 1.00/s, 2.0s elapsed",
      "progress: 3 done, 1.00/s, in 3.0s",
    }, lines_of(out.text()))
  end)

  it("writes its last line when the loop is left early", function()
    local clock, out = fake_clock(), recorder()
    for i in futures.progress(items(10, clock, 1),
        { total = 10, stream = out, tty = true, clock = clock.fn }) do
      if i == 3 then break end
    end
    assert.matches("3/10  30%%  1%.00/s  in 3%.0s\27%[K\n$", out.text())
  end)

  it("ends the line and raises the iterator's error as it was", function()
    local out = recorder()
    local boom = { code = 7 }
    local function failing()
      error(boom)
    end
    local ok, err = pcall(function()
      for _ in futures.progress(failing, { stream = out, tty = false }) do end
    end)
    assert.is_false(ok)
    assert.equals(boom, err)
    assert.matches("progress: 0 done", out.text())
  end)

  it("raises a TimeoutError when the futures are not done in time", function()
    local out = recorder()
    local ok, err = pcall(function()
      for _ in futures.progress({ futures.Future() }, { stream = out, tty = false, timeout = 0.05 }) do end
    end)
    assert.is_false(ok)
    assert.is_true(futures.iserror(err, futures.TimeoutError), tostring(err))
  end)

  it("rejects unknown options and bad values", function()
    local function bad(src, opts) return pcall(futures.progress, src, opts) end
    assert.is_false(bad(items(1), { totl = 3 }))
    assert.is_false(bad(items(1), { total = -1 }))
    assert.is_false(bad(items(1), { total = 1.5 }))
    assert.is_false(bad(items(1), { label = 3 }))
    assert.is_false(bad(items(1), { tty = "yes" }))
    assert.is_false(bad(items(1), { interval = -1 }))
    assert.is_false(bad(items(1), { timeout = 1 }))   -- map has its own timeout
    assert.is_false(bad(42))
  end)

  it("draws plain lines when stderr is a file", function()
    local r = shell.lua_futures({ "-e", [[
      local futures = require "futures"
      for _ in futures.progress(function() end, { label = "quiet" }) do end
    ]] }, 30)
    assert.equals(0, r.status, r.err)
    assert.matches("^quiet: 0 done, %-%-/s, in %d", r.err)
    assert.is_nil(r.err:find("\r", 1, true))
  end)

  it("draws a bar when stderr is a terminal", function()
    if shell.run("command -v script", 5).status ~= 0 then
      pending("script(1) is not installed to give the test a terminal")
      return
    end
    -- script(1) runs the command on a pseudo-terminal and copies its output.
    local cmd = ("%s -e %s"):format(shell.q(shell.EXE), shell.q([[
      local futures = require "futures"
      for _ in futures.progress(function() end, { label = "tty" }) do end
    ]]))
    local r = shell.run(("TERM=xterm script -qec %s /dev/null"):format(shell.q(cmd)), 30)
    assert.equals(0, r.status, r.err)
    assert.matches("\rtty  0 done", r.out, 1, true)
  end)
end)
