-- The codec's work in instructions, which the machine's load does not
-- change: run under callgrind by bench/codec_count.sh, one case per run.
-- usage: bin/lua-futures bench/codec_count.lua CASE
--   table   a sequence of 1 000 000 integers (i * 7): 1 encode, 1 decode
--   string  a 10 MB string: 1 encode, 1 decode
--   small   a small call (cached function + 3 numbers): 1 000 of each
-- The encodes and decodes are lf_encode and lf_decode as an executor calls
-- them (futures._test.codec_time), in this state.
package.cpath = "./build/?.so;" .. package.cpath
local T = require "futures._test"

local case = arg[1]
if case == "table" then
  local t = {}
  for i = 1, 1000000 do t[i] = i * 7 end
  T.codec_time(1, 1, t)
elseif case == "string" then
  local s = ("0123456789abcdef"):rep(10000000 // 16)
  T.codec_time(1, 1, s)
elseif case == "small" then
  local function f(a, b, c) return a + b + c end
  T.codec_time(1, 1000, f, 1, 2.5, 3)
else
  error("usage: codec_count.lua table|string|small")
end
