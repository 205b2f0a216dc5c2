-- Sharing data with one pool kind (`pool` = thread or process):
--   queue_us      the host puts `items` small values into a futures.Queue
--                 that one task drains (q:iter); µs per item, from the
--                 submit to the task's result
--   array64_ms    a SharedArray of `mb` MB sent to a task and returned
--                 (submit(ident, a):result()), mean of `k` round trips
-- and, for pool = thread (it needs no pool), in the host:
--   array.*_ns    a[i] read (s = s + a[i]) and write (a[i] = i) over an
--                 f64 SharedArray of `access` elements, ns per element,
--   table.*_ns    the same loops over a Lua table, in the same run,
--   array.*_ratio the two side by side; the best of 3 each.
-- params: pool, items, mb, k, access
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local futures = B.futures
local p = B.params()
local kind = p.pool or "thread"
local items, mb, k = p.items or 200000, p.mb or 64, p.k or 20

local ex = B.pool_or_skip(kind, 1)

-- Streaming through a queue.
local function drain(q)
  local sum = 0
  for v in q:iter() do sum = sum + v end
  return sum
end

local function stream(n)
  local q = futures.Queue()
  local f = ex:submit(drain, q)
  for i = 1, n do q:put(i) end
  q:close()
  assert(f:result(600) == n * (n + 1) // 2)
end

stream(1000)   -- warm-up: the worker is up, the function cached
B.full_gc()
local start = B.now()
stream(items)
B.emit(kind .. ".queue_us", (B.now() - start) / items * 1e6)

-- A big array there and back.
local a = futures.SharedArray("u8", mb * 1024 * 1024)
assert(ex:submit(B.ident, a):result() == a)   -- mapped once, in a process
B.full_gc()
start = B.now()
for _ = 1, k do assert(ex:submit(B.ident, a):result() == a) end
B.emit(kind .. ".array64_ms", (B.now() - start) / k * 1e3)
a = nil
ex:shutdown()

if kind == "thread" then
  local n = p.access or 2000000
  local t, arr = {}, futures.SharedArray("f64", n)
  for i = 1, n do t[i] = 0.0 end
  local function read(x)
    local s = 0
    for i = 1, n do s = s + x[i] end
    return s
  end
  local function write(x)
    for i = 1, n do x[i] = i end
  end
  local function best(fn, x)
    local b = math.huge
    for _ = 1, 3 do
      local t0 = B.now()
      fn(x)
      b = math.min(b, B.now() - t0)
    end
    return b / n * 1e9
  end
  local tr, ar = best(read, t), best(read, arr)
  local tw, aw = best(write, t), best(write, arr)
  B.emit("table.read_ns", tr)
  B.emit("array.read_ns", ar)
  B.emit("table.write_ns", tw)
  B.emit("array.write_ns", aw)
  B.emit("array.read_ratio", ar / tr)
  B.emit("array.write_ratio", aw / tw)
end
