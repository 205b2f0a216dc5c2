-- The behaviour every executor shares (ThreadPoolExecutor and
-- ProcessPoolExecutor): written once, run against each by their specs.
-- usage: require("support.executor_contract")("ThreadPoolExecutor", make, _ENV)
-- where make(opts) returns a new executor, and _ENV is the spec file's
-- environment (busted's describe, it and assert live there).
local futures = require "futures"
local helpers = require "support.helpers"

return function(name, make, env)
  local describe, it, assert = env.describe, env.it, env.assert
  describe(name .. " (common executor behaviour)", function()
    it("runs a submitted function and returns all its values", function()
      local ex <close> = make(2)
      local f = ex:submit(function(a, b) return a + b, nil, a * b end, 3, 4)
      local x, y, z = f:result(10)
      assert.equals(7, x); assert.is_nil(y); assert.equals(12, z)
      assert.equals(3, select("#", f:result()))
    end)

    it("carries upvalues to the worker by copy", function()
      local base = { 10, 20 }
      local function add(i) return base[i] + 1 end
      local ex <close> = make(2)
      assert.equals(21, ex:submit(function(i) return add(i) end, 2):result(10))
    end)

    it("gives the worker its own globals", function()
      marker_global_for_spec = 1
      local ex <close> = make(1)
      assert.is_nil(ex:submit(function() return marker_global_for_spec end):result(10))
      marker_global_for_spec = nil
    end)

    it("re-raises a task's string error with the worker's file:line", function()
      local ex <close> = make(1)
      local f = ex:submit(function() error("bad thing") end)
      local err = helpers.error_of(f.result, f, 10)
      assert.equals("string", type(err))
      assert.matches("executor_contract%.lua:%d+: bad thing$", err)
      assert.matches("bad thing", err)
    end)

    it("re-raises a task's table error as a table", function()
      local ex <close> = make(1)
      local f = ex:submit(function() error({ code = 7 }) end)
      local err = helpers.error_of(f.result, f, 10)
      assert.equals(7, err.code)
      local e, tb = f:exception(10)
      assert.equals(7, e.code)
      assert.matches("traceback", tb)
    end)

    it("refuses a value that cannot travel, naming where it sits", function()
      local ex <close> = make(1)
      local co = coroutine.create(function() end)
      local err = helpers.error_of(ex.submit, ex, function() end, 1, { inner = co })
      assert.matches("argument #3", err)
      assert.matches("inner", err)
    end)

    it("refuses something that is not callable", function()
      local ex <close> = make(1)
      local err = helpers.error_of(ex.submit, ex, 42)
      assert.matches("function expected", err)
    end)

    it("maps in input order, yielding the index first", function()
      local ex <close> = make(2)
      local got = {}
      for i, v in ex:map(function(x) return x * x end, { 1, 2, 3, 4, 5 }, { timeout = 10 }) do
        got[i] = v
      end
      assert.same({ 1, 4, 9, 16, 25 }, got)
    end)

    it("maps items that return nil without ending the loop", function()
      local ex <close> = make(2)
      local n = 0
      for i, v in ex:map(function() return nil end, { 1, 2, 3 }, { timeout = 10 }) do
        n = i
        assert.is_nil(v)
      end
      assert.equals(3, n)
    end)

    it("zips several iterables and stops at the shortest", function()
      local ex <close> = make(2)
      local got = {}
      for i, v in ex:map(function(a, b) return a .. b end, { "a", "b", "c" }, { "x", "y" }, { timeout = 10 }) do
        got[i] = v
      end
      assert.same({ "ax", "by" }, got)
    end)

    it("maps over an iterator function", function()
      local ex <close> = make(2)
      local k = 0
      local function gen() k = k + 1; if k <= 4 then return k end end
      local sum = 0
      for _, v in ex:map(function(x) return x * 10 end, gen, { timeout = 10 }) do sum = sum + v end
      assert.equals(100, sum)
    end)

    it("maps in chunks with the same results", function()
      local ex <close> = make(2)
      local items = {}
      for i = 1, 250 do items[i] = i end
      local got = {}
      for i, v, w in ex:map(function(x) return x + 1, -x end, items, { chunksize = 16, timeout = 10 }) do
        got[i] = v + w
      end
      assert.equals(250, #got)
      for i = 1, 250 do assert.equals(1, got[i]) end
    end)

    it("raises a failed item's error when the iteration reaches it", function()
      local ex <close> = make(2)
      for _, cs in ipairs { 1, 3 } do
        local seen = 0
        local ok, err = pcall(function()
          for i in ex:map(function(x) if x == 3 then error("item three") end return x end,
              { 1, 2, 3, 4 }, { chunksize = cs, timeout = 10 }) do
            seen = i
          end
        end)
        assert.is_false(ok)
        assert.matches("item three", err)
        assert.equals(2, seen)
      end
    end)

    it("keeps at most buffersize items in flight", function()
      local ex <close> = make(2)
      local produced = 0
      local function gen() produced = produced + 1; return produced end  -- endless
      local last
      for i, v in ex:map(function(x) return x end, gen, { buffersize = 4 }) do
        assert.equals(i, v)
        assert.is_true(produced <= i + 5, "produced " .. produced .. " at " .. i)
        last = i
        if i == 50 then break end
      end
      assert.equals(50, last)
    end)

    describe("unordered map", function()
      it("yields every item once, each with its index, as they complete", function()
        local ex <close> = make(2)
        for _, cs in ipairs { 1, 7 } do
          local items = {}
          for i = 1, 60 do items[i] = i end
          local seen, count = {}, 0
          for i, v, w in ex:map(function(x) return x * 2, -x end, items,
              { ordered = false, chunksize = cs, timeout = 10 }) do
            assert.is_nil(seen[i])
            seen[i] = true
            assert.equals(i * 2, v)
            assert.equals(-i, w)
            count = count + 1
          end
          assert.equals(60, count)
        end
      end)

      it("yields a quick item before a slow one submitted earlier", function()
        local ex <close> = make(2)
        local order = {}
        for i in ex:map(function(x) futures.sleep(x) return x end, { 0.5, 0 },
            { ordered = false, timeout = 10 }) do
          order[#order + 1] = i
        end
        assert.same({ 2, 1 }, order)
      end)

      it("keeps at most buffersize items in flight", function()
        local ex <close> = make(2)
        local produced = 0
        local function gen() produced = produced + 1; return produced end  -- endless
        local count = 0
        for i, v in ex:map(function(x) return x end, gen, { buffersize = 4, ordered = false }) do
          assert.equals(i, v)
          count = count + 1
          assert.is_true(produced <= count + 5, "produced " .. produced .. " after " .. count)
          if count == 40 then break end
        end
        assert.equals(40, count)
      end)

      it("raises a failed item's error and a timeout as the ordered map does", function()
        local ex <close> = make(2)
        local err = helpers.error_of(function()
          for _ in ex:map(function(x) if x == 3 then error("item three") end return x end,
              { 1, 2, 3, 4 }, { ordered = false, timeout = 10 }) do end
        end)
        assert.matches("item three", err)
        err = helpers.error_of(function()
          for _ in ex:map(function() futures.sleep(5) end, { 1, 2 },
              { ordered = false, timeout = 0.1 }) do end
        end)
        assert.is_true(futures.iserror(err, futures.TimeoutError))
        assert.matches("map: 2 items not done after 0.1 seconds", tostring(err))
      end)

      it("rejects an ordered option that is not a boolean", function()
        local ex <close> = make(1)
        local err = helpers.error_of(ex.map, ex, print, { 1 }, { ordered = "no" })
        assert.matches("ordered must be a boolean", err)
      end)
    end)

    describe("map over generic-for iterators", function()
      -- Runs the map and returns { [i] = { results... } }.
      local function collect(...)
        local got = {}
        for i, a, b, c in ... do got[i] = { a, b, c } end
        return got
      end

      it("takes pairs(t) as one iterable, each key and value the arguments of fn", function()
        local ex <close> = make(2)
        local seen = {}
        for _, kv in ex:map(function(k, v) return k .. "=" .. v end, pairs { a = 1, b = 2, c = 3 }) do
          seen[#seen + 1] = kv
        end
        table.sort(seen)
        assert.same({ "a=1", "b=2", "c=3" }, seen)
      end)

      it("takes ipairs(t) as one iterable, in chunks too", function()
        local ex <close> = make(2)
        assert.same({ { 10 }, { 40 }, { 90 } },
          collect(ex:map(function(i, v) return i * v end, ipairs { 10, 20, 30 })))
        for _, cs in ipairs { 1, 2, 5 } do
          -- options after an iterator: its values written out, then the table
          local f, s, c = ipairs { 10, 20, 30 }
          assert.same({ { 10 }, { 40 }, { 90 } },
            collect(ex:map(function(i, v) return i * v end, f, s, c, { chunksize = cs, timeout = 10 })))
        end
      end)

      it("takes io.lines(path) as one iterable", function()
        local path = os.tmpname()
        local out = assert(io.open(path, "w"))
        out:write("alpha\nbeta\ngamma\n")
        out:close()
        local ex <close> = make(2)
        local got = collect(ex:map(string.upper, io.lines(path)))
        os.remove(path)
        assert.same({ { "ALPHA" }, { "BETA" }, { "GAMMA" } }, got)
      end)

      it("zips a sequence or a function with a generic-for iterator, to the shortest", function()
        local ex <close> = make(2)
        assert.same({ { "a1x" }, { "b2y" } },
          collect(ex:map(function(s, i, v) return s .. i .. v end, { "a", "b" }, ipairs { "x", "y", "z" })))
        local n = 0
        local function hundreds() n = n + 1; if n <= 3 then return n * 100 end end
        assert.same({ { 102 }, { 204 } },
          collect(ex:map(function(h, i, v) return h + i + v end, hundreds, ipairs { 1, 2 })))
      end)

      it("passes every value of a last iterator function's step to fn", function()
        local ex <close> = make(2)
        local k = 0
        local function pairs_of() k = k + 1; if k <= 2 then return k, -k end end
        assert.same({ { 2, 0 }, { 2, 0 } },
          collect(ex:map(function(...) return select("#", ...), (...) + select(2, ...) end, pairs_of)))
      end)

      -- A generic-for quadruple whose closing value counts its closes.
      local function counted(limit)
        local closes = 0
        local closing = setmetatable({}, { __close = function() closes = closes + 1 end })
        local function step(_, i) i = i + 1; if not limit or i <= limit then return i end end
        return function() return closes end, step, nil, 0, closing
      end

      it("closes the closing value once when the iterator runs out", function()
        local ex <close> = make(2)
        local closes, step, s, c, closing = counted(3)
        local got = collect(ex:map(function(x) return x * 2 end, step, s, c, closing))
        assert.same({ { 2 }, { 4 }, { 6 } }, got)
        assert.equals(1, closes())
      end)

      it("closes the closing value when the loop breaks or raises", function()
        local ex <close> = make(2)
        local closes, step, s, c, closing = counted(nil)   -- endless
        for i in ex:map(function(x) return x end, step, s, c, closing, { buffersize = 2 }) do
          if i == 5 then break end
        end
        assert.equals(1, closes())
        closes, step, s, c, closing = counted(nil)
        local ok = pcall(function()
          for i in ex:map(function(x) return x end, step, s, c, closing, { buffersize = 2 }) do
            if i == 3 then error("in the loop") end
          end
        end)
        assert.is_false(ok)
        assert.equals(1, closes())
      end)

      it("refuses a closing value that cannot be closed", function()
        local ex <close> = make(1)
        local function step(_, i) if i < 2 then return i + 1 end end
        local err = helpers.error_of(ex.map, ex, print, step, nil, 0, 42)
        assert.matches("bad argument #5 to 'map'", err, 1, true)
        assert.matches("closing value", err, 1, true)
      end)
    end)

    it("takes a trailing empty table for an empty iterable, not for options", function()
      local ex <close> = make(2)
      local n = 0
      for _ in ex:map(function(x) return x end, { 1, 2, 3 }, {}) do n = n + 1 end
      assert.equals(0, n)
      for _ in ex:map(function(x) return x end, { 1, 2, 3 }, {}, { timeout = 10 }) do n = n + 1 end
      assert.equals(0, n)
      for _ in ex:map(function(x) return x end, { 1, 2, 3 }, { timeout = 10 }) do n = n + 1 end
      assert.equals(3, n)
    end)

    it("ends the iteration at an error: the rest is cancelled, later calls return nil", function()
      local ex <close> = make(1)
      local log = os.tmpname()
      local function task(x)
        local f = io.open(log, "a"); f:write(x, "\n"); f:close()
        if x == 3 then error("item three") end
        if x == 4 then require("futures").sleep(0.5) end
        return x
      end
      local it, _, _, closer = ex:map(task, { 1, 2, 3, 4, 5, 6, 7, 8 })
      assert.same({ 1, 1 }, { it() })
      assert.same({ 2, 2 }, { it() })
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert.matches("item three", err)
      assert.is_nil(it())
      assert.is_nil(it())
      getmetatable(closer).__close(closer)   -- still fine
      ex:shutdown()
      local ran = {}
      for line in io.lines(log) do ran[#ran + 1] = tonumber(line) end
      os.remove(log)
      table.sort(ran)
      -- 4 may have started before the error was seen; 5 to 8 never do
      if #ran == 3 then ran[4] = 4 end
      assert.same({ 1, 2, 3, 4 }, ran)
    end)

    it("raises a TimeoutError naming the item and the caller's timeout, once", function()
      local ex <close> = make(1)
      local function nap(s) require("futures").sleep(s) return s end
      local it = ex:map(nap, { 0, 1.0, 0 }, { timeout = 0.5 })
      assert.same({ 1, 0 }, { it() })
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert.is_true(futures.iserror(err, futures.TimeoutError))
      assert.equals("map: item 2 not done after 0.5 seconds", err.message)
      assert.is_nil(it())
    end)

    it("cancels the item that timed out when it has not started", function()
      local ex <close> = make(1)
      local log = os.tmpname()
      local function task(x) local f = io.open(log, "a"); f:write(x, "\n"); f:close(); return x end
      local blocker = ex:submit(function() require("futures").sleep(0.5) end)
      local it = ex:map(task, { 1, 2 }, { timeout = 0.1 })
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert.equals("map: item 1 not done after 0.1 seconds", err.message)
      blocker:result(10)
      ex:shutdown()
      local ran = io.open(log):read("a")
      os.remove(log)
      assert.equals("", ran)
    end)

    it("rejects unknown map options", function()
      local ex <close> = make(1)
      assert.has_error(function() ex:map(print, { 1 }, { chunk = 2 }) end)
      assert.has_error(function() ex:map(print, { 1 }, { chunksize = 0 }) end)
    end)

    it("carries long strings both ways with every byte, one used twice", function()
      local t = {}
      for i = 0, 255 do t[#t + 1] = string.char(i) end
      local s = table.concat(t):rep(1000)            -- 256 000 bytes
      local u = s:sub(2) .. "!"
      local ex <close> = make(1)
      local r = ex:submit(function(v, w)
        assert(v.a == v.b and #v.a == 256000 and #w == 256000)
        return { a = v.a, b = v.b, w = w, n = #v.a }, w, v.a:byte(256000)
      end, { a = s, b = s }, u):result(10)
      local r1, r2 = ex:submit(function(...) return ... end, r, u):result(10)
      assert.equals(s, r1.a)
      assert.equals(s, r1.b)
      assert.equals(u, r1.w)
      assert.equals(u, r2)
      assert.equals(256000, r.n)
      assert.equals(255, ex:submit(function(v) return v:byte(-1) end, s):result(10))
    end)

    it("keeps a long argument whose caller dropped it before the task ran", function()
      local ex <close> = make(1)
      local busy = ex:submit(futures.sleep, 0.2)
      local f = ex:submit(function(v) return #v, v:sub(1, 3), v:sub(-3) end,
        ("abc"):rep(100000) .. "xyz")
      collectgarbage(); collectgarbage()
      local n, head, tail = f:result(10)
      assert.equals(300003, n)
      assert.equals("abc", head)
      assert.equals("xyz", tail)
      assert.is_true(busy:done())
    end)

    it("refuses submit after shutdown with a RuntimeError", function()
      local ex = make(1)
      ex:shutdown()
      local err = helpers.error_of(ex.submit, ex, function() end)
      assert.is_true(futures.iserror(err, futures.RuntimeError))
      assert.equals("cannot schedule new futures after shutdown", err.message)
    end)

    it("shuts down at the end of a <close> scope after the work is done", function()
      local f
      do
        local ex <close> = make(1)
        f = ex:submit(function() return "done" end)
      end
      assert.is_true(f:done())
      assert.equals("done", f:result(0))
    end)

    it("cancels queued work on shutdown with cancel_futures", function()
      local ex = make(1)
      local slow = ex:submit(futures.sleep, 0.3)
      local queued = {}
      for i = 1, 5 do queued[i] = ex:submit(function() return i end) end
      ex:shutdown { wait = true, cancel_futures = true }
      assert.is_true(slow:done())
      for i = 1, 5 do assert.is_true(queued[i]:cancelled(), tostring(queued[i]) .. " " .. tostring(slow)) end
    end)

    it("runs the initializer once per worker, before its tasks", function()
      local ex <close> = make { max_workers = 1,
        initializer = function(v) _G.init_value = v end, initargs = { "ready" } }
      assert.equals("ready", ex:submit(function() return _G.init_value end):result(10))
    end)

    it("gives a task the worker's own module, not the caller's table", function()
      local tunable = require "support.tunable"
      local ex <close> = make(1)
      tunable.factor = 10
      local by_upvalue = ex:submit(function(x) return x * tunable.factor end, 2)
      local by_require = ex:submit(function(x) return x * require("support.tunable").factor end, 2)
      local as_argument = ex:submit(function(x, k) return x * k end, 2, tunable.factor)
      local ok, a, b, c = pcall(function()
        return by_upvalue:result(10), by_require:result(10), as_argument:result(10)
      end)
      tunable.factor = 1
      assert.is_true(ok, tostring(a))
      assert.same({ 2, 2, 20 }, { a, b, c })
    end)

    it("gives workers package.path as it was when the pool was created", function()
      local ex <close> = make(1)
      local saved = package.path
      package.path = package.path .. ";/nonexistent/set-later/?.lua"
      local ok, seen = pcall(function()
        return ex:submit(function() return package.path end):result(10)
      end)
      package.path = saved
      assert.is_true(ok, tostring(seen))
      assert.is_nil(seen:find("/nonexistent/set-later", 1, true))
    end)

    it("gives back an object of a class module with the class itself, loaded after earlier transfers", function()
      local ex <close> = make(1)
      -- Earlier transfers of objects with metatables, both ways, before the
      -- module is loaded on either side.
      ex:submit(function(t) return setmetatable({}, getmetatable(t)) end,
        setmetatable({}, { kind = "plain" })):result(10)
      package.loaded["support.point"] = nil
      local Point = require "support.point"
      local back, in_worker = ex:submit(function(p)
        return p, getmetatable(p) == require("support.point") and p:get()
      end, Point.new(7)):result(10)
      package.loaded["support.point"] = nil
      assert.equals(7, in_worker)
      assert.equals(Point, getmetatable(back))
      assert.equals(7, back:get())
    end)

    it("takes max_depth for values nested deeper than 200 levels, both ways", function()
      local function list(n)
        local head
        for i = n, 1, -1 do head = { value = i, next = head } end
        return head
      end
      local function length(l) local n = 0 while l do n = n + 1; l = l.next end return n end
      local deep = list(300)
      local ex1 <close> = make(1)
      assert.matches("nesting deeper than 200 levels",
        tostring(helpers.error_of(ex1.submit, ex1, function(l) return l end, deep)))
      local ex <close> = make{ max_workers = 1, max_depth = 400 }
      local back = ex:submit(function(l)
        local n = 0
        local p = l
        while p do n = n + 1; p = p.next end
        return l, n
      end, deep):result(10)
      assert.equals(300, length(back))
      assert.equals(300, select(2, ex:submit(function(l)
        local n, p = 0, l
        while p do n = n + 1; p = p.next end
        return l, n
      end, deep):result(10)))
    end)

    it("overlaps two sleeps on two workers", function()
      local ex <close> = make(2)
      local a0 = ex:submit(futures.sleep, 0.01)   -- both workers started first
      local b0 = ex:submit(futures.sleep, 0.01)
      a0:result(10); b0:result(10)
      local t0 = futures.monotonic()
      local a = ex:submit(futures.sleep, 0.3)
      local b = ex:submit(futures.sleep, 0.3)
      a:result(10); b:result(10)
      assert.is_true(futures.monotonic() - t0 < 0.55)
    end)

    it("reports running once a worker has the task, and cancel() then fails", function()
      local ex <close> = make(1)
      local f = ex:submit(futures.sleep, 0.3)
      assert.is_true(helpers.eventually(function() return f:running() end, 5))
      assert.is_false(f:cancel())
      f:result(10)
      assert.is_false(f:cancelled())
    end)

    it("cancels a queued future, which then never runs", function()
      local ex <close> = make(1)
      local blocker = ex:submit(futures.sleep, 0.2)
      local f = ex:submit(function() return "ran" end)
      assert.is_true(f:cancel())
      blocker:result(10)
      assert.is_true(f:cancelled())
      assert.equals("CancelledError", helpers.error_of(f.result, f).type)
    end)

    it("runs done callbacks on the submitting state, not on the worker", function()
      local ex <close> = make(1)
      local here = {}
      local got
      local f = ex:submit(function() return 5 end)
      f:add_done_callback(function(g) got = { here, g:result() } end)
      f:result(10)
      assert.equals(here, got[1])
      assert.equals(5, got[2])
    end)

    it("lets C functions travel by name", function()
      local ex <close> = make(1)
      assert.equals("x=5", ex:submit(string.format, "x=%d", 5):result(10))
    end)

    -- CPU-bound tasks really run at the same time (no global lock). How
    -- much faster that is belongs to `make bench` (16 CPU tasks on 2
    -- workers): a spec asserts only the gross behaviour, which a busy
    -- machine cannot break.
    it("runs two CPU-bound Lua tasks at the same time", function()
      if futures.cpu_count() < 2 then return end
      local function timed(n)
        local clock = require("futures").monotonic
        local t0, x = clock(), 0
        for i = 1, n do x = x + i % 7 end
        return t0, clock()
      end
      local ex <close> = make(2)
      local w1, w2 = ex:submit(timed, 10), ex:submit(timed, 10)   -- start both
      w1:result(10); w2:result(10)
      local a, b = ex:submit(timed, 3000000), ex:submit(timed, 3000000)
      local a0, a1 = a:result(60)
      local b0, b1 = b:result(60)
      local overlap = math.min(a1, b1) - math.max(a0, b0)
      assert.is_true(overlap > 0.5 * math.min(a1 - a0, b1 - b0),
        ("intervals %.3f-%.3f and %.3f-%.3f"):format(a0, a1, b0, b1))
    end)

    it("as_completed yields every future once", function()
      local ex <close> = make(2)
      local fs = {}
      for i = 1, 10 do fs[i] = ex:submit(function() return i end) end
      fs[11] = fs[1]
      local seen, n = {}, 0
      for f in futures.as_completed(fs, 10) do
        assert.is_nil(seen[f:result()])
        seen[f:result()] = true
        n = n + 1
      end
      assert.equals(10, n)
    end)

    it("waits for all futures", function()
      local ex <close> = make(2)
      local fs = {}
      for i = 1, 6 do fs[i] = ex:submit(function() return i end) end
      local done, not_done = futures.wait(fs, { timeout = 10 })
      assert.equals(6, #done)
      assert.equals(0, #not_done)
    end)
  end)
end
