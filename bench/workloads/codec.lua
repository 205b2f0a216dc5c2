-- The codec alone, in this state: futures.serialize / futures.deserialize of
--   table   a sequence of `items` integers: encode, decode, and both (ms)
--   string  a string of `bytes` bytes, encode + decode (ms)
--   small   a small call, a function and three arguments, encode + decode (µs)
-- Each big figure is the best of `k` runs, each after a full collection and
-- holding its result until the clock stops, so that the figure is the
-- codec's work and not the collector's (pickle is timed the same way); small
-- is the mean over `small` calls.
-- params: items, bytes, small, k
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local futures = B.futures
local p = B.params()
local items, bytes, small, k = p.items or 1000000, p.bytes or 10000000,
  p.small or 100000, p.k or 3

local serialize, deserialize = futures.serialize, futures.deserialize
if type(serialize) ~= "function" or type(deserialize) ~= "function" then
  B.skip("futures.serialize/deserialize are not available in this build")
  os.exit(0)
end

local function best_of(fn)
  local best
  for _ = 1, k do
    B.full_gc()
    local t0 = B.now()
    local r = fn()
    local t = B.now() - t0
    r = nil   -- luacheck: ignore (dropped after the clock stopped)
    if not best or t < best then best = t end
  end
  return best
end

local t = {}
for i = 1, items do t[i] = i * 7 end
local enc = serialize(t)
local te = best_of(function() return serialize(t) end)
local td = best_of(function() return deserialize(enc) end)
assert(deserialize(enc)[items] == items * 7)
B.emit("codec.table_enc_ms", te * 1e3)
B.emit("codec.table_dec_ms", td * 1e3)
B.emit("codec.table_ms", (te + td) * 1e3)
t, enc = nil, nil
B.full_gc()

local s = ("0123456789abcdef"):rep(bytes // 16)
local ts = best_of(function() return deserialize(serialize(s)) end)
B.emit("codec.string_ms", ts * 1e3)

-- As submit sends it: the function (bytecode, cached per closure) and its
-- arguments, as serialize's several values; Python pickles the same tuple.
local function small_task(a, b, c) return a, b, c end
-- deserialize refuses Lua functions unless told they come from a trusted
-- source, as a worker's task does.
local trusted = { functions = true }
for _ = 1, 1000 do deserialize(serialize(small_task, 42, 3.5, "key"), trusted) end
local t0 = B.now()
for _ = 1, small do deserialize(serialize(small_task, 42, 3.5, "key"), trusted) end
B.emit("codec.small_us", (B.now() - t0) / small * 1e6)
