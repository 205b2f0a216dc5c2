-- What queues and shared arrays do with both kinds of pool (thread tasks
-- hold the same objects, process tasks proxies and mappings of them):
-- written once, run against each by queue_spec.lua and
-- shared_array_spec.lua.
-- usage: require("support.sharing_contract")("ThreadPoolExecutor", make, _ENV)
-- where make(opts) returns a new executor.
local futures = require "futures"
local helpers = require "support.helpers"

return function(name, make, env)
  local describe, it, assert = env.describe, env.it, env.assert

  describe(name .. " tasks and queues", function()
    it("get the items the host put, in order", function()
      local ex <close> = make(2)
      local q = futures.Queue()
      for i = 1, 50 do q:put({ n = i }) end
      q:close()
      local f = ex:submit(function(q)
        local got = {}
        for v in q:iter(10) do got[#got + 1] = v.n end
        return got
      end, q)
      local got = f:result(10)
      assert.equals(50, #got)
      for i = 1, 50 do assert.equals(i, got[i]) end
    end)

    it("put items that the host gets", function()
      local ex <close> = make(2)
      local q = futures.Queue()
      ex:submit(function(q)
        for i = 1, 20 do q:put("item " .. i) end
        q:close()
      end, q):result(10)
      local got = {}
      for v in q:iter(10) do got[#got + 1] = v end
      assert.equals(20, #got)
      assert.equals("item 20", got[20])
    end)

    it("carry plain values of every kind unchanged, both ways", function()
      local ex <close> = make(1)
      local values = { true, false, 0, -1, math.maxinteger, math.mininteger, 127, 128, -32769,
        2^31, 0.5, -0.0, 1 / 0, -1 / 0, "", "short", ("x"):rep(24), ("y"):rep(25),
        ("long"):rep(1000), "bin\0ary\255" }
      local there, back = futures.Queue(), futures.Queue()
      for _, v in ipairs(values) do there:put(v) end
      there:put(0 / 0)
      there:close()
      ex:submit(function(there, back)
        for v in there:iter(10) do back:put(v) end
        back:close()
      end, there, back):result(10)
      local got = {}
      for v in back:iter(10) do got[#got + 1] = v end
      assert.equals(#values + 1, #got)
      for i, v in ipairs(values) do
        assert.equals(v, got[i])
        assert.equals(math.type(v), math.type(got[i]))
      end
      assert.is_true(got[#got] ~= got[#got])   -- NaN
      assert.equals("-0.0", tostring(got[12]))
    end)

    it("wake from a blocked get when the host puts an item", function()
      local ex <close> = make(1)
      local q = futures.Queue()
      local f = ex:submit(function(q) return q:get(20) end, q)
      futures.sleep(0.05)
      q:put("late")
      assert.equals("late", f:result(20))
    end)

    it("time out of a get with an Empty error", function()
      local ex <close> = make(1)
      local q = futures.Queue()
      local f = ex:submit(function(q)
        local ok, err = pcall(q.get, q, 0.05)
        return ok, require("futures").iserror(err, "Empty"), tostring(err)
      end, q)
      local ok, empty, msg = f:result(10)
      assert.is_false(ok)
      assert.is_true(empty, msg)
      assert.matches("no item after 0.05 seconds", msg)
    end)

    it("see Closed once the queue is closed and drained, and iter ends", function()
      local ex <close> = make(1)
      local q = futures.Queue()
      q:put(1)
      q:close()
      local f = ex:submit(function(q)
        local first = q:get(5)
        local ok, err = pcall(q.get, q, 5)
        local n = 0
        for _ in q:iter(5) do n = n + 1 end
        return first, ok, require("futures").iserror(err, "Closed"), n
      end, q)
      local first, ok, closed, n = f:result(10)
      assert.equals(1, first)
      assert.is_false(ok)
      assert.is_true(closed)
      assert.equals(0, n)
    end)

    it("wake from a blocked get when the queue is closed", function()
      local ex <close> = make(1)
      local q = futures.Queue()
      local f = ex:submit(function(q)
        local ok, err = pcall(q.get, q, 20)
        return ok, require("futures").iserror(err, "Closed")
      end, q)
      futures.sleep(0.05)
      q:close()
      local ok, closed = f:result(20)
      assert.is_false(ok)
      assert.is_true(closed)
    end)

    it("block in a put on a full queue until there is room, or time out with Full", function()
      local ex <close> = make(1)
      local q = futures.Queue(1)
      local f = ex:submit(function(q)
        q:put("a")
        q:put("b", 20)          -- waits for the host's get
        local ok, err = pcall(q.put, q, "c", 0.05)
        return ok, require("futures").iserror(err, "Full")
      end, q)
      futures.sleep(0.05)
      assert.equals("a", q:get(10))
      local ok, full = f:result(20)
      assert.is_false(ok)
      assert.is_true(full)
      assert.equals("b", q:get(1))
    end)

    it("use put_nowait, get_nowait, qsize and close", function()
      local ex <close> = make(1)
      local q = futures.Queue(2)
      local f = ex:submit(function(q)
        local F = require "futures"
        q:put_nowait(1)
        q:put_nowait(2)
        local full = select(2, pcall(q.put_nowait, q, 3))
        local size = q:qsize()
        local one = q:get_nowait()
        q:close()
        return F.iserror(full, "Full"), size, one
      end, q)
      local full, size, one = f:result(10)
      assert.is_true(full)
      assert.equals(2, size)
      assert.equals(1, one)
      assert.equals(2, q:get_nowait())
      assert.is_true(futures.iserror(select(2, pcall(q.get_nowait, q)), "Closed"))
    end)

    it("pass queues along inside queue items", function()
      local ex <close> = make(1)
      local outer, inner = futures.Queue(), futures.Queue()
      outer:put({ reply_to = inner, n = 21 })
      ex:submit(function(outer)
        local msg = outer:get(5)
        msg.reply_to:put(msg.n * 2)
      end, outer):result(10)
      assert.equals(42, inner:get(5))
    end)

    it("give a queue in initargs to every worker", function()
      local q = futures.Queue()
      local ex <close> = make{ max_workers = 2, initializer = function(q) Q = q end,
        initargs = { q } }
      local fs = {}
      for i = 1, 4 do fs[i] = ex:submit(function(i) Q:put(i) end, i) end
      futures.wait(fs, 10)
      local sum = 0
      for _ = 1, 4 do sum = sum + q:get(5) end
      assert.equals(10, sum)
    end)

    it("stream between a producer task, a transformer task and the host", function()
      local ex <close> = make(2)
      local raw, cooked = futures.Queue(8), futures.Queue(8)
      local producer = ex:submit(function(q)
        for i = 1, 200 do q:put(i, 20) end
        q:close()
      end, raw)
      local transformer = ex:submit(function(inq, outq)
        for v in inq:iter(20) do outq:put(v * v, 20) end
        outq:close()
      end, raw, cooked)
      local sum, n = 0, 0
      for v in cooked:iter(20) do sum = sum + v; n = n + 1 end
      producer:result(20)
      transformer:result(20)
      assert.equals(200, n)
      assert.equals(200 * 201 * 401 // 6, sum)
    end)
  end)

  describe(name .. " tasks and shared arrays", function()
    it("write into the host's array, with no copy back", function()
      local ex <close> = make(2)
      local a = futures.SharedArray("f64", 1000)
      ex:submit(function(a) for i = 1, #a do a[i] = i / 2 end end, a):result(10)
      assert.equals(0.5, a[1])
      assert.equals(500, a[1000])
    end)

    it("see what the host wrote, and give the same array back", function()
      local ex <close> = make(1)
      local a = futures.SharedArray("i64", 3)
      a[2] = 7
      local seen, back = ex:submit(function(a) return a[2], a end, a):result(10)
      assert.equals(7, seen)
      assert.is_true(back == a)
      back[3] = 9
      assert.equals(9, a[3])
    end)

    it("add to one counter from many tasks without losing an increment", function()
      local ex <close> = make(2)
      local c = futures.SharedArray("i64", 1)
      local fs = {}
      for k = 1, 4 do fs[k] = ex:submit(function(c) for _ = 1, 2000 do c:add(1, 1) end end, c) end
      local done = futures.wait(fs, 20)
      assert.equals(4, #done)
      for k = 1, 4 do fs[k]:result() end
      assert.equals(8000, c[1])
    end)

    it("fill rows of a u8 array in place, one task per row", function()
      local ex <close> = make(2)
      local w, h = 16, 8
      local img = futures.SharedArray("u8", w * h)
      local fs = {}
      for y = 1, h do
        fs[y] = ex:submit(function(img, y, w) img:fill(y * 10, (y - 1) * w + 1, y * w) end, img, y, w)
      end
      futures.wait(fs, 20)
      for y = 1, h do fs[y]:result() end
      assert.equals(10, img[1])
      assert.equals(80, img[w * h])
      assert.equals(w * h, #img:tostring())
    end)

    it("keep an array alive while any task holds it, after the host let go", function()
      local ex <close> = make(1)
      local q = futures.Queue()
      do
        local a = futures.SharedArray("i64", 2)
        a[1] = 5
        ex:submit(function(a, q) q:put(a) end, a, q):result(10)
      end
      collectgarbage(); collectgarbage()
      local back = ex:submit(function(q)
        local a = q:get(5)
        a[2] = a[1] + 1
        return a
      end, q):result(10)
      assert.equals(6, back[2])
    end)

    it("give an array in initargs to every worker", function()
      local a = futures.SharedArray("i64", 1)
      local ex <close> = make{ max_workers = 2, initializer = function(a) A = a end,
        initargs = { a } }
      local fs = {}
      for i = 1, 6 do fs[i] = ex:submit(function() A:add(1, 1) end) end
      futures.wait(fs, 10)
      for i = 1, 6 do fs[i]:result() end
      assert.equals(6, a[1])
    end)
  end)

  return helpers
end
