-- Writes valid encodings of varied values, one per file, into the directory
-- given as arg[1]: the fuzzer's starting corpus, covering every wire tag.
-- usage: bin/lua-futures fuzz/seeds.lua DIR
local futures = require "futures"
local core = require "futures.core"
package.cpath = "./build/?.so;" .. package.cpath   -- futures._test
local T = require "futures._test"
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
local h = T.codec_handle()
local selfmt = {}
setmetatable(selfmt, selfmt)
local cfg, fmt = { scale = 2 }, string.format
local function closures(x)
  return fmt("%d", (tonumber(x) or 0) * cfg.scale), string.rep, add(1), closures
end
local sandboxed = load("return x", "=sandboxed", "t", { x = 1 })
local deep = {}
for _ = 1, 150 do deep = { deep } end

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
  -- packed runs of each width, float runs, holes, a run broken by a table
  runs = { { 1, 2, 3, 4 }, { 1, 300, 2 }, { 1, 70000, 2 }, { 1, 2 ^ 40 | 0, 2 },
    { 1.5, 2.5, 3.5 }, { 1, nil, 3, 4 }, { 1, 2, { 3 }, 4, 5 } },
  -- varint lengths at their boundaries
  lengths = { ("a"):rep(127), ("b"):rep(128), ("c"):rep(16383), ("d"):rep(16384) },
  -- a table as a key, a table as its own metatable, a shared metatable
  keys = { { [shared] = shared, [cyc] = 1 }, selfmt, setmetatable({}, mt) },
  -- closures with every kind of upvalue: a table, a module, a C function,
  -- another closure, a shared cell, themselves
  closures = { closures, { inc = inc, get = get, both = function() return inc(), get() end } },
  sandboxed = { sandboxed },
  deep = { deep },
}
local function write(name, s)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(s)
  f:close()
end
for name, values in pairs(seeds) do
  write("seed-" .. name, futures.serialize(table.unpack(values, 1, 12)))
end
write("seed-handle", T.codec_encode(true, h, { h }))
