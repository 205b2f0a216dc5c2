-- A TCP server on cqueues that fans CPU-heavy requests out to a thread pool
-- and keeps answering other connections while they compute: each connection
-- is served by a cqueues coroutine of its own, which awaits its tasks with
-- futures.cqueues, so the loop never blocks.
--
--   bin/lua-futures examples/cqueues_fanout.lua [port]      (0, the default: any free port)
--
-- It prints "listening on 127.0.0.1:PORT", then answers one request per line,
-- in order on each connection:
--   collatz FIRST LAST JOBS   the start in FIRST..LAST of the longest Collatz
--                             chain and its length in steps, the range split
--                             into JOBS tasks on the pool
--   ping                      "pong", at once, on the loop
--   quit                      "bye"; the server stops listening, and exits
--                             once its clients are gone
-- A slow count on one connection does not hold up a ping, or a quick count,
-- on another. Try it with: nc 127.0.0.1 PORT
--
-- Needs cqueues (Debian: lua-cqueues). With plain lua5.4, set LUA_PATH and
-- LUA_CPATH to an installed lua-futures (docs/API.md, "Running scripts and
-- installing").
local futures = require "futures"
local fc = require "futures.cqueues"
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local condition = require "cqueues.condition"

local port = tonumber(arg[1] or "0")

-- Runs on a worker thread, in its own lua_State: only its arguments travel.
-- The start in [first, last] with the longest chain, and its steps.
local function longest_chain(first, last)
  local best, best_steps = first, -1
  for n = first, last do
    local steps, x = 0, n
    while x ~= 1 do
      if x % 2 == 0 then x = x // 2 else x = 3 * x + 1 end
      steps = steps + 1
    end
    if steps > best_steps then best, best_steps = n, steps end
  end
  return best, best_steps
end

-- The default pool has cpu_count() + 4 threads (at most 32): the jobs of
-- one request leave some free for the next request's, which would
-- otherwise queue behind them.
local ex <close> = futures.ThreadPoolExecutor()
local cq = cqueues.new()
local listener = socket.listen("127.0.0.1", port)
local stop = condition.new()   -- signalled by quit
local quitting = false

-- The reply to `collatz first last jobs`, computed on the pool while this
-- connection's coroutine waits and the others go on.
local function collatz(first, last, jobs)
  local fs, count = {}, last - first + 1
  for j = 1, jobs do
    fs[j] = ex:submit(longest_chain, first + (j - 1) * count // jobs, first + j * count // jobs - 1)
  end
  fc.await_all(fs)
  -- The chunks in order, and only a longer chain wins: the smallest start
  -- of the longest chain, as one task over the whole range would find.
  local best, best_steps = first, -1
  for _, f in ipairs(fs) do
    local ok, n, steps = pcall(f.result, f)
    if not ok then return ("collatz %d..%d failed: %s"):format(first, last, tostring(n)) end
    if steps > best_steps then best, best_steps = n, steps end
  end
  return ("collatz %d..%d: longest chain starts at %d (%d steps)"):format(first, last, best, best_steps)
end

-- The answer to one request line.
local function answer(line)
  local first, last, jobs = line:match("^collatz (%d+) (%d+) (%d+)$")
  if first then
    first, last, jobs = math.tointeger(tonumber(first)), math.tointeger(tonumber(last)),
      math.tointeger(tonumber(jobs))
    if not (first and last and jobs and first >= 1 and first <= last
        and jobs >= 1 and jobs <= last - first + 1) then
      return ("error: %s: needs 1 <= FIRST <= LAST and 1 <= JOBS <= LAST - FIRST + 1"):format(line)
    end
    return collatz(first, last, jobs)
  elseif line == "ping" then
    return "pong"
  elseif line == "quit" then
    -- No new connections; cq:loop() returns once those open have closed.
    quitting = true
    stop:signal()
    return "bye"
  end
  return ("error: unknown request %q"):format(line)
end

local function serve(conn)
  -- A client that resets its connection ends it, not the server: I/O
  -- errors come back as values instead of being raised.
  conn:onerror(function(_, _, why) return why end)
  -- Binary both ways (text mode would end each reply with "\r\n"), each
  -- reply flushed as soon as it is written.
  conn:setmode("b", "bf")
  for line in conn:lines("*l") do
    conn:write(answer((line:gsub("\r$", ""))), "\n")
    conn:flush()
  end
  conn:close()
end

assert(listener:listen())
local _, ip, bound = listener:localname()
print(("listening on %s:%d"):format(ip, bound))
io.stdout:flush()

-- Accepts connections until quit, each served in a coroutine of its own.
-- It waits for the listener's descriptor to be readable, or for quit.
cq:wrap(function()
  local readable = { pollfd = listener:pollfd(), events = "r" }
  while not quitting do
    if cqueues.poll(readable, stop) == readable and not quitting then
      local conn = listener:accept(0)   -- nil if the client has gone already
      if conn then cq:wrap(serve, conn) end
    end
  end
  listener:close()
end)

assert(cq:loop())   -- returns once the listener is closed and every client gone
