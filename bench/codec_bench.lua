-- The codec's speed, with pickle measured in the same run
-- when python3 is present (bench/codec_bench.py).
-- usage: bin/lua-futures bench/codec_bench.lua
--
-- Each case prints the median encode and decode time of:
--   * "C API": lf_encode + lf_decode as an executor calls them, timed in C
--     (T.codec_time): what a task's transfer costs;
--   * "Lua": futures.serialize + futures.deserialize, which add the Lua call
--     and a copy of the encoded bytes into a Lua string.
-- Medians of rounds that each start after a full garbage collection.
local futures = require "futures"
local core = require "futures.core"
package.cpath = "./build/?.so;" .. package.cpath   -- futures._test
local T = require "futures._test"

-- Each round starts after a full collection (outside the timing), so that it
-- does not pay for the garbage of the rounds before it; pickle likewise.
local function median(fn, rounds)
  local ts = {}
  for i = 1, rounds do
    collectgarbage()
    local t0 = futures.monotonic()
    fn()
    ts[i] = futures.monotonic() - t0
  end
  table.sort(ts)
  return ts[(rounds + 1) // 2]
end

local function lua_surface(value, rounds, reps)
  reps = reps or 1
  local s = futures.serialize(value)
  local enc = median(function() for _ = 1, reps do futures.serialize(value) end end, rounds) / reps
  local dec = median(function() for _ = 1, reps do futures.deserialize(s) end end, rounds) / reps
  return enc, dec
end

local ints = {}
for i = 1, 1000000 do ints[i] = i end
local big = string.rep("x", 10 * 1024 * 1024)
local function f(a, b, c) return a + b + c end
T.codec_call(f, 1, 2.5, 3)         -- the receiver has the function cached

local pickle = {}
local py = io.popen("python3 bench/codec_bench.py 2>/dev/null")
if py then
  for line in py:lines() do
    local name, e, d = line:match("^(%S+) (%S+) (%S+)$")
    if name then pickle[name] = { tonumber(e) / 1e3, tonumber(d) / 1e3 } end
  end
  py:close()
end

local function fmt(t)
  if t >= 1e-3 then return ("%8.2f ms"):format(t * 1e3) end
  return ("%8.0f ns"):format(t * 1e9)
end

local function row(label, enc, dec)
  print(("  %-22s encode %s  decode %s  total %s"):format(label, fmt(enc), fmt(dec), fmt(enc + dec)))
end

local function report(title, name, c_enc, c_dec, l_enc, l_dec, target)
  print(title .. "  (target: " .. target .. ")")
  row("C API (lf_encode/decode)", c_enc, c_dec)
  if l_enc then row("Lua (serialize)", l_enc, l_dec) end
  local p = pickle[name]
  if p then
    row("pickle (python3)", p[1], p[2])
    print(("  pickle / ours (C API): %.2fx"):format((p[1] + p[2]) / (c_enc + c_dec)))
  else
    print("  pickle: python3 not available")
  end
end

local ce, cd = T.codec_time(9, 1, ints)
local le, ld = lua_surface(ints, 9)
report("1 000 000-integer array", "ints_1m", ce / 1e9, cd / 1e9, le, ld, "well under 60 ms, 2x faster than pickle")

ce, cd = T.codec_time(9, 1, big)
le, ld = lua_surface(big, 9)
report("10 MB string", "string_10mb", ce / 1e9, cd / 1e9, le, ld, "< 10 ms")

-- A worker trusts its host: functions load (deserialize refuses them by
-- default).
local trusted = { functions = true }
ce, cd = T.codec_time(21, 20000, f, 1, 2.5, 3)
local s = futures.serialize(f, 1, 2.5, 3)
local l1 = median(function() for _ = 1, 20000 do futures.serialize(f, 1, 2.5, 3) end end, 21) / 20000
local l2 = median(function() for _ = 1, 20000 do futures.deserialize(s, trusted) end end, 21) / 20000
report("small call: cached function + 3 numbers", "small_call", ce / 1e9, cd / 1e9, l1, l2, "< 1 us")

-- Not a target, for the record: a closure with an upvalue other than _ENV is
-- loaded (lua_load of the cached bytecode) on every decode.
local k = 7
local function g(a) return a + k end
T.codec_call(g, 1)
ce, cd = T.codec_time(21, 2000, g, 1)
print("closure with a local upvalue  (lua_load on every decode)")
row("C API (lf_encode/decode)", ce / 1e9, cd / 1e9)
