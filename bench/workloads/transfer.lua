-- Moving data through a pool (`pool` = thread or process): a sequence of
-- `items` integers and a string of `bytes` bytes, each sent to a worker and
-- returned by it (submit(ident, v):result()), after one warm-up; the figure
-- is the mean of `k` round trips, in ms.
-- params: pool, items, bytes, k
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local kind = p.pool or "thread"
local items, bytes, k = p.items or 1000000, p.bytes or 10000000, p.k or 3

local ex = B.pool_or_skip(kind, 1)

local function round_trips(v, check)
  check(ex:submit(B.ident, v):result())
  B.full_gc()
  local start = B.now()
  for _ = 1, k do check(ex:submit(B.ident, v):result()) end
  return (B.now() - start) / k * 1e3
end

local t = {}
for i = 1, items do t[i] = i * 7 end
B.emit(kind .. ".xfer_table_ms", round_trips(t, function(r)
  assert(#r == items and r[items] == items * 7)
end))
t = nil
B.full_gc()

local s = ("0123456789abcdef"):rep(bytes // 16)
B.emit(kind .. ".xfer_string_ms", round_trips(s, function(r)
  assert(#r == #s)
end))
ex:shutdown()
