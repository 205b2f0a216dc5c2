-- The trust boundary and the results that must never be lost: what a
-- worker process sends is untrusted, a result is never lost to a limit
-- found after the work ran, a worker that breaks the protocol or runs out
-- of memory harms nothing but itself, and no worker outlives its host.
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

local T = require "futures._test"

local SANITIZED = os.getenv("ASAN_OPTIONS") or os.getenv("TSAN_OPTIONS")

-- Bytes of resident memory of this process, once free memory went back to
-- the system (where it went depends on the allocator's thresholds).
local function rss()
  T.malloc_trim()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("n", "n")
  f:close()
  return resident * 4096
end

local function process_pool(opts)
  local problem = shell.process_pool_problem()
  if problem then pending(problem) return nil end
  return futures.ProcessPoolExecutor(opts or 1)
end

describe("results from a worker process", function()
  it("refuse a metatable with a Lua __gc, which never runs in the host", function()
    local px <close> = process_pool()
    if not px then return end
    local f = px:submit(function()
      return setmetatable({}, { __gc = function() PWNED = true end })
    end)
    local err = helpers.error_of(f.result, f, 20)
    assert.equals("a worker process returned a Lua function (result #1 (metatable, "
      .. "field '__gc')); pass return_functions = true to the pool to allow it", err)
    assert.equals(err, f:exception())
    collectgarbage(); collectgarbage()
    assert.is_nil(PWNED)
  end)

  it("refuse a forged function without loading it: the host goes on", function()
    local px <close> = process_pool()
    if not px then return end
    -- A function whose bytecode is garbage, resealed so that every checksum
    -- holds: loading it could crash the process that does.
    local s = futures.serialize(setmetatable({}, { __gc = function() return 1 end }))
    local at = s:find("\27Lua", 1, true)
    local forged = T.codec_reseal(s:sub(1, at + 20) .. ("\255"):rep(24) .. s:sub(at + 45))
    local f = px:submit(function(bytes)
      local t = require "futures._test"
      -- a RESULT frame (type 5) for the worker's first task (id 1)
      t.write_fd(3, string.pack("=c2BBI4I8", "LF", 5, 0, 1, #bytes) .. bytes)
      return "the real result, which comes too late"
    end, forged)
    assert.matches("a worker process returned a Lua function", helpers.error_of(f.result, f, 20))
    -- The worker that sent it is killed when its real result comes (a
    -- result nobody asked for), maybe with a task of ours: then a new one.
    assert.is_true(helpers.eventually(function()
      local ok, v = pcall(function() return px:submit(function() return "still here" end):result(20) end)
      return ok and v == "still here"
    end, 20))
  end)

  it("refuse an error that holds a Lua function, failing that future only", function()
    local px <close> = process_pool()
    if not px then return end
    local f = px:submit(function()
      error(setmetatable({}, { __tostring = function() return "mine" end }))
    end)
    assert.matches("^a worker process raised an error holding a Lua function %(error value #1 "
      .. "%(metatable, field '__tostring'%)%)", helpers.error_of(f.result, f, 20))
    assert.equals(3, px:submit(function() return 3 end):result(20))
  end)

  it("carry Lua functions when the pool has return_functions = true", function()
    local px <close> = process_pool({ max_workers = 1, return_functions = true })
    if not px then return end
    local add = px:submit(function() return function(a, b) return a + b end end):result(20)
    assert.equals(5, add(2, 3))
  end)

  it("carry C functions and modules the host has loaded, by name", function()
    local px <close> = process_pool()
    if not px then return end
    local fmt, str = px:submit(function() return string.format, string end):result(20)
    assert.equals(string.format, fmt)
    assert.equals(string, str)
    local err = px:submit(function() error(setmetatable({}, string)) end):exception(20)
    assert.equals(string, getmetatable(err))
  end)

  it("keep the runtime's error classes, which travel by name", function()
    local px <close> = process_pool()
    if not px then return end
    local err = px:submit(function()
      local fs = require "futures"
      local g = fs.Future()
      return g:result(0)
    end):exception(20)
    assert.is_true(futures.iserror(err, futures.TimeoutError))
    assert.equals(futures.TimeoutError, getmetatable(err))
  end)
end)

describe("the codec's limit on the number of values", function()
  local many = {}
  for i = 1, 150000 do many[i] = i end

  it("is checked when encoding, before any work is lost", function()
    local err = helpers.error_of(futures.serialize, table.unpack(many))
    assert.equals("cannot transfer 150000 values: more than 100000 values", err)
  end)

  local function pools()
    local list = { { "thread pool", futures.ThreadPoolExecutor(1) } }
    local px = process_pool()
    if px then list[2] = { "process pool", px } end
    return list
  end

  it("fails a task that returns too many values with a clear error, returned by exception()", function()
    for _, p in ipairs(pools()) do
      local ex <close> = p[2]
      local f = ex:submit(function(n) return table.unpack({}, 1, n) end, 150000)
      local err = f:exception(30)
      assert.equals("cannot transfer 150000 results: more than 100000 values", err, p[1])
      assert.equals(err, helpers.error_of(f.result, f, 30))
    end
  end)

  it("is never met by map's chunks, however many values their items return", function()
    for _, p in ipairs(pools()) do
      local ex <close> = p[2]
      local xs = {}
      for i = 1, 68000 do xs[i] = i end
      local count, last = 0, nil
      for i, a, b, c in ex:map(function(x) return x, x * 2, x * 3 end, xs,
                               { chunksize = 34000, timeout = 60 }) do
        count = count + 1
        last = { i, a, b, c }
      end
      assert.equals(68000, count, p[1])
      assert.same({ 68000, 68000, 136000, 204000 }, last, p[1])
    end
  end)
end)

describe("a worker process that breaks the protocol", function()
  it("with INIT_FAILED after READY, is killed alone: the pool goes on", function()
    local px <close> = process_pool({ max_workers = 2 })
    if not px then return end
    local f = px:submit(function()
      local t = require "futures._test"
      local text = "what a stray C module might write"
      t.write_fd(3, string.pack("=c2BBI4I8", "LF", 4, 0, 0, #text) .. text)
      require("futures").sleep(5)
    end)
    local err = helpers.error_of(f.result, f, 20)
    assert.is_true(futures.iserror(err, futures.BrokenProcessPool))
    assert.matches("killed because it sent INIT_FAILED after READY", err.message)
    local fs = {}
    for i = 1, 6 do fs[i] = px:submit(function(x) return x * 2 end, i) end
    for i = 1, 6 do assert.equals(2 * i, fs[i]:result(20)) end
  end)
end)

describe("a future whose result holds the future itself", function()
  it("is freed with its result", function()
    if SANITIZED then pending("memory use is the sanitizer's to judge here (leak checks)") return end
    collectgarbage(); collectgarbage()
    local before = rss()
    for _ = 1, 300 do
      local f = futures.Future()
      f:set_result(f, string.rep("x", 1 << 20))
    end
    collectgarbage(); collectgarbage()
    local grew = rss() - before
    assert.is_true(grew < 100e6, ("RSS grew by %.0f MB"):format(grew / 1e6))
  end)

  it("is freed when a thread task sets it so", function()
    if SANITIZED then pending("memory use is the sanitizer's to judge here (leak checks)") return end
    local ex <close> = futures.ThreadPoolExecutor(1)
    collectgarbage(); collectgarbage()
    local before = rss()
    for _ = 1, 200 do
      local g = futures.Future()
      ex:submit(function(h) h:set_result(h, string.rep("y", 1 << 20)) end, g):result(20)
    end
    collectgarbage(); collectgarbage()
    local grew = rss() - before
    assert.is_true(grew < 100e6, ("RSS grew by %.0f MB"):format(grew / 1e6))
  end)
end)

describe("an idle thread worker", function()
  it("gives back what a big task left behind", function()
    if SANITIZED then pending("the sanitizer's allocator keeps freed memory") return end
    local ex <close> = futures.ThreadPoolExecutor(1)
    ex:submit(function() end):result(20)   -- the worker exists
    collectgarbage(); collectgarbage()
    local before = rss()
    ex:submit(function()
      local t = {}
      for i = 1, 300 do t[i] = string.rep(string.char(i % 256), 1 << 20) .. i end
      return #t
    end):result(60)
    assert.is_true(helpers.eventually(function() return rss() - before < 80e6 end, 5),
      ("RSS still %.0f MB above"):format((rss() - before) / 1e6))
  end)

  it("that ran out of memory leaves the host room to allocate", function()
    if SANITIZED then pending("address-space limits and sanitizers do not mix") return end
    local interp = os.getenv("LUA_FUTURES_SPEC_INTERP") or "lua5.4"
    local script = shell.write_file(os.tmpname(), [[
      local futures = require "futures"
      local ex <close> = futures.ThreadPoolExecutor(1)
      local err = ex:submit(function()
        local t = {}
        while true do t[#t + 1] = string.rep("x", 1 << 20) .. #t end
      end):exception(120)
      io.write(tostring(err):match("not enough memory") and "oom " or tostring(err) .. " ")
      futures.sleep(0.2)
      local big = string.rep("y", 100 << 20)
      io.write(#big == 100 << 20 and "host ok" or "host short")
    ]])
    local r = shell.run(("cd %s && ulimit -v 1000000 && LUA_PATH_5_4=%s LUA_CPATH_5_4=%s %s %s")
      :format(shell.q(shell.ROOT), shell.q(package.path), shell.q(package.cpath),
        shell.q(interp), shell.q(script)), 120)
    os.remove(script)
    assert.equals("oom host ok", r.out, r.err)
  end)
end)

describe("worker processes", function()
  it("die with their host, even when stopped", function()
    if shell.process_pool_problem() then pending(shell.process_pool_problem()) return end
    local dir = shell.tmpdir()
    local script = shell.write_file(dir .. "/host.lua", [[
      local futures = require "futures"
      local px = futures.ProcessPoolExecutor(1)
      local wpid = px:submit(function()
        local f = io.open("/proc/self/stat"); local pid = f:read("n"); f:close(); return pid
      end):result(20)
      local f = io.open("/proc/self/stat"); local hpid = f:read("n"); f:close()
      px:submit(function() while true do end end)
      local out = io.open(arg[1], "w"); out:write(hpid, " ", wpid, "\n"); out:close()
      futures.sleep(60)
    ]])
    local pids = dir .. "/pids"
    os.execute(("cd %s && setsid %s %s %s >/dev/null 2>&1 &"):format(shell.q(shell.ROOT),
      shell.q(shell.EXE), shell.q(script), shell.q(pids)))
    local host, worker
    helpers.eventually(function()
      local f = io.open(pids)
      if f then host, worker = f:read("n", "n"); f:close() end
      return worker ~= nil
    end, 20)
    assert.is_not_nil(worker, "the host never said its worker's pid")
    os.execute("kill -STOP " .. worker .. "; kill -9 " .. host)
    local gone = helpers.eventually(function()
      return not os.execute("kill -0 " .. worker .. " 2>/dev/null")
    end, 5)
    os.execute("kill -9 " .. worker .. " 2>/dev/null")
    shell.rmdir(dir)
    assert.is_true(gone, "the stopped worker outlived its host")
  end)
end)

describe("an executor handle in a thread task", function()
  it("has the whole API: map and shutdown", function()
    local ex = futures.ThreadPoolExecutor(2)
    local sum = ex:submit(function(e)
      local s = 0
      for _, v in e:map(function(x) return x * x end, { 1, 2, 3 }, { timeout = 10 }) do s = s + v end
      return s
    end, ex):result(20)
    assert.equals(14, sum)
    ex:submit(function(e) e:shutdown{ wait = false } end, ex):result(20)
    local err = helpers.error_of(ex.submit, ex, function() end)
    assert.is_true(futures.iserror(err, futures.RuntimeError))
  end)
end)
