-- map over the lines of a file: the length of the longest word on each line,
-- computed on a thread pool, lazily read with io.lines.
-- usage: bin/lua-futures examples/lines.lua [file]
local futures = require "futures"

local path = arg and arg[1]
if not path then
  path = os.tmpname()
  local f = assert(io.open(path, "w"))
  for i = 1, 2000 do
    f:write(("line %d has a word of length %s\n"):format(i, ("x"):rep(i % 17 + 1)))
  end
  f:close()
end

local function longest_word(line)
  local best = 0
  for word in line:gmatch("%S+") do
    if #word > best then best = #word end
  end
  return best
end

local ex <close> = futures.ThreadPoolExecutor(4)
local lines, total, longest = 0, 0, 0
for _, n in ex:map(longest_word, io.lines(path), { chunksize = 64 }) do
  lines = lines + 1
  total = total + n
  if n > longest then longest = n end
end
print(("%d lines, longest word %d characters, average %.1f"):format(lines, longest, total / lines))
if not (arg and arg[1]) then os.remove(path) end
