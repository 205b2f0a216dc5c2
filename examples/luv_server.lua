-- A TCP server on luv (libuv) that hands CPU-heavy requests to a thread pool
-- and keeps answering other connections while they compute: each request
-- runs in a coroutine of its own, which awaits its future with
-- futures.luv, so the loop never blocks.
--
--   bin/lua-futures examples/luv_server.lua [port]      (0, the default: any free port)
--
-- It prints "listening on 127.0.0.1:PORT", then answers one request per line:
--   primes A B    "primes A B: N", the number of primes from A to B, counted on the pool
--   ping          "pong", at once, on the loop
--   quit          "bye"; the server stops listening, and exits once its clients are gone
-- Replies on one connection may come out of order (a ping overtakes a count);
-- each names its request. Try it with: nc 127.0.0.1 PORT
--
-- Needs luv (Debian: lua-luv). With plain lua5.4, set LUA_PATH and LUA_CPATH
-- to an installed lua-futures (docs/API.md, "Running scripts and installing").
local futures = require "futures"
local fl = require "futures.luv"
local uv = require "luv"

local port = tonumber(arg[1] or "0")
local pool = futures.ThreadPoolExecutor(futures.cpu_count())

-- Runs on a worker thread, in its own lua_State: only its arguments travel.
local function count_primes(a, b)
  local n = 0
  for x = math.max(a, 2), b do
    local prime = true
    for d = 2, math.floor(math.sqrt(x)) do
      if x % d == 0 then prime = false; break end
    end
    if prime then n = n + 1 end
  end
  return n
end

local server = uv.new_tcp()

-- The answer to one request line (in the request's own coroutine).
local function answer(line)
  local a, b = line:match("^primes (%d+) (%d+)$")
  if a then
    local ok, n = pcall(fl.await, pool:submit(count_primes, tonumber(a), tonumber(b)))
    return ("%s: %s"):format(line, ok and n or "failed: " .. tostring(n))
  elseif line == "ping" then
    return "pong"
  elseif line == "quit" then
    -- No new connections; uv.run() returns once those open have closed
    -- and every count has been answered.
    if not server:is_closing() then server:close() end
    return "bye"
  end
  return ("error: unknown request %q"):format(line)
end

local function serve(client)
  local buffered = ""
  client:read_start(function(err, data)
    if err or not data then   -- the client is gone
      if not client:is_closing() then client:close() end
      return
    end
    buffered = buffered .. data
    for line in buffered:gmatch("([^\n]*)\n") do
      line = line:gsub("\r$", "")
      coroutine.wrap(function()
        local reply = answer(line)
        if not client:is_closing() then client:write(reply .. "\n") end
      end)()
    end
    buffered = buffered:match("[^\n]*$")
  end)
end

assert(server:bind("127.0.0.1", port))
assert(server:listen(64, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  serve(client)
end))
local addr = server:getsockname()
print(("listening on %s:%d"):format(addr.ip, addr.port))
io.stdout:flush()

uv.run()   -- returns once the server is closed and every request is answered
pool:shutdown()
