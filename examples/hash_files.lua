-- Batch work with a progress line: checksum every file under a directory on
-- a thread pool, with a pure-Lua 64-bit FNV-1a hash, and print the results in
-- path order (like sha256sum, but for demonstration, not security).
-- futures.progress draws count, rate and ETA on stderr while ex:map runs.
-- usage: bin/lua-futures examples/hash_files.lua [directory] [workers]
local futures = require "futures"

local dir = arg and arg[1] or "."
local workers = math.tointeger(tonumber(arg and arg[2])) or futures.cpu_count()

local function quote(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

-- The file list, sorted so that the output is the same on every run.
local paths = {}
local list = assert(io.popen(("find %s -type f -print | LC_ALL=C sort"):format(quote(dir))))
for path in list:lines() do paths[#paths + 1] = path end
list:close()

-- FNV-1a, 64 bits: Lua integers are 64-bit and wrap on overflow, which is
-- exactly the arithmetic modulo 2^64 the hash needs. Runs on a worker: the
-- function travels as bytecode, and io.open is the worker's own.
local function hash_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local h, size = 0xcbf29ce484222325, 0
  while true do
    local block = f:read(65536)
    if not block then break end
    size = size + #block
    for i = 1, #block, 4096 do
      local bytes = { block:byte(i, i + 4095) }
      for k = 1, #bytes do h = (h ~ bytes[k]) * 0x100000001b3 end
    end
  end
  f:close()
  return ("%016x"):format(h), size
end

local ex <close> = futures.ThreadPoolExecutor(workers)
local start = futures.monotonic()
local bytes, failed = 0, 0
for i, hash, size in futures.progress(ex:map(hash_file, paths, { chunksize = 4 }),
                                      { total = #paths, label = "hashing" }) do
  if hash then
    print(hash .. "  " .. paths[i])
    bytes = bytes + size
  else
    failed = failed + 1
    print(("%-16s  %s (%s)"):format("unreadable", paths[i], size))
  end
end
local elapsed = futures.monotonic() - start
print(("hashed %d files (%d unreadable), %d bytes in %.2f s on %d workers")
  :format(#paths - failed, failed, bytes, elapsed, workers))
