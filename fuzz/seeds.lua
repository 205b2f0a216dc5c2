-- Writes valid encodings of varied values, one per file, into the directory
-- given as arg[1]: the fuzzer's starting corpus, covering every wire tag.
-- usage: bin/lua-futures fuzz/seeds.lua DIR
local futures = require "futures"
local core = require "futures.core"
local dir = assert(arg[1], "usage: seeds.lua DIR")

local up, shared = 3, { "shared" }
local function add(x) return x + up end
local n = 0
local function inc() n = n + 1; return n end
local function get() return n end
local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
local mt = { __index = function(_, k) return k end }
local cyc = { name = "cycle" }
cyc.self = cyc
local ints = {}
for i = 1, 300 do ints[i] = i * (i % 2 == 0 and 1 or -1000) end
local mixed = { 1, 2.5, "s", true, { 1 }, 3, 4, 5.5, 6.5, 2 ^ 40 | 0, math.mininteger }
local h = core._codec_handle()

local seeds = {
  nil_bool = { nil, true, false },
  numbers = { 0, -1, 127, 128, 40000, 2 ^ 33 | 0, math.maxinteger, 0.5, -0.0, 1 / 0, 0 / 0 },
  strings = { "", "a\0b", ("x"):rep(200) },
  array_ints = { ints },
  array_mixed = { mixed },
  hash = { { a = 1, b = { c = { d = "deep" } }, [2.5] = true, [false] = "f" } },
  cycle = { cyc, { shared, shared } },
  metatables = { setmetatable({ 1 }, mt), setmetatable({ 2 }, mt) },
  lfunc = { add },
  shared_upvalue = { inc, get },
  recursive = { fact },
  cfuncs = { string.format, print, math.floor },
  modules = { string, futures },
  globals = { _G },
}
local function write(name, s)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(s)
  f:close()
end
for name, values in pairs(seeds) do
  write("seed-" .. name, futures.serialize(table.unpack(values, 1, 12)))
end
write("seed-handle", core._codec_encode(true, h, { h }))
