-- Moving data through a pool (`pool` = thread or process): a sequence of
-- `items` integers and a string of `bytes` bytes, each sent to a worker and
-- returned by it (submit(ident, v):result()), after one warm-up; the figure
-- is the mean of `k` round trips, in ms. Next to each, in the same run and
-- timed the same way, one plain copy of the same value in this state
-- (`table.move(t, 1, #t, 1, {})`, `s:sub(1)`), and the ratio of the two:
-- the machine's speed cancels out of the ratio.
-- params: pool, items, bytes, k
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local kind = p.pool or "thread"
local items, bytes, k = p.items or 1000000, p.bytes or 10000000, p.k or 3

local ex = B.pool_or_skip(kind, 1)

-- The mean ms of k calls of fn(v), after one warm-up and a full collection.
local function mean_of(fn, v, check)
  check(fn(v))
  B.full_gc()
  local start = B.now()
  for _ = 1, k do check(fn(v)) end
  return (B.now() - start) / k * 1e3
end

local function there_and_back(v) return ex:submit(B.ident, v):result() end
local function move_copy(t) return table.move(t, 1, #t, 1, {}) end
local function sub_copy(s) return s:sub(1) end

-- The transfer, the plain copy, and transfer / copy.
local function side_by_side(name, v, copy, check)
  local xfer = mean_of(there_and_back, v, check)
  local plain = mean_of(copy, v, check)
  B.emit(kind .. ".xfer_" .. name .. "_ms", xfer)
  B.emit(kind .. ".copy_" .. name .. "_ms", plain)
  B.emit(kind .. ".xfer_" .. name .. "_x", xfer / plain)
end

local t = {}
for i = 1, items do t[i] = i * 7 end
side_by_side("table", t, move_copy, function(r)
  assert(#r == items and r[items] == items * 7)
end)
t = nil
B.full_gc()

local s = ("0123456789abcdef"):rep(bytes // 16)
side_by_side("string", s, sub_copy, function(r)
  assert(#r == #s)
end)
ex:shutdown()
