-- Every example in examples/ is run here with bin/lua-futures, as a separate
-- process under `timeout`, and its exit status and key output are checked,
-- so the examples never rot. An example with no test of its own below is
-- still run and must exit with status 0.
local shell = require "support.shell"

local function example(name, args, seconds)
  local argv = { "examples/" .. name }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return shell.lua_futures(argv, seconds or 120)
end

local function ran(r)
  assert.equals(0, r.status, "exit status " .. tostring(r.status) .. "\nstderr: " .. r.err)
end

-- The examples tested one by one below; the others get the generic test.
local TESTED = {
  ["power.lua"] = true, ["fetch.lua"] = true, ["primes.lua"] = true,
  ["hash_files.lua"] = true, ["wordcount.lua"] = true, ["montecarlo.lua"] = true,
  ["crash_isolation.lua"] = true, ["luv_server.lua"] = true, ["cqueues_fanout.lua"] = true,
  ["pipeline.lua"] = true, ["mandelbrot.lua"] = true,
}

-- The event loop examples run under both interpreters: bin/lua-futures, and
-- plain lua5.4 finding the module in the tree as an installed one would be.
local INTERPRETERS = {
  { name = "bin/lua-futures", cmd = "bin/lua-futures" },
  { name = "lua5.4", cmd = "env -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 "
      .. "LUA_PATH='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH='./build/?.so;;' lua5.4" },
}

local function installed(module)
  local ok = pcall(require, module)
  return ok
end

-- A luv client of examples/luv_server.lua, run as a process of its own: it
-- starts the server with the command given, sends a slow count on one
-- connection, then a ping and a quick count on a second one, then quit on a
-- third, and prints the replies in the order they came.
local LUV_CLIENT = [[
local uv = require "luv"
local server = assert(io.popen(... .. " examples/luv_server.lua 0"))
local banner = server:read("l") or ""
local port = tonumber(banner:match("^listening on 127%.0%.0%.1:(%d+)$"))
if not port then print("no banner: " .. banner) os.exit(1) end

local function client(name, requests, expect, on_done)
  local c, got, buffered = uv.new_tcp(), 0, ""
  c:connect("127.0.0.1", port, function(err)
    assert(not err, err)
    c:read_start(function(rerr, data)
      assert(not rerr, rerr)
      if not data then c:close() return end
      buffered = buffered .. data
      for line in buffered:gmatch("([^\n]*)\n") do
        got = got + 1
        print(name .. " " .. line)
      end
      buffered = buffered:match("[^\n]*$")
      if got == expect then
        c:close()
        if on_done then on_done() end
      end
    end)
    for _, r in ipairs(requests) do c:write(r .. "\n") end
  end)
end

client("slow", { "primes 1 1000000" }, 1)
local pause = uv.new_timer()
pause:start(50, 0, function()
  pause:close()
  client("fast", { "ping", "what", "primes 1 1000" }, 3, function()
    client("quit", { "quit" }, 1)
  end)
end)
local watchdog = uv.new_timer()
watchdog:start(90000, 0, function() print("watchdog") uv.stop() end)
watchdog:unref()
uv.run()
print("server", server:close())
]]

-- A cqueues client of examples/cqueues_fanout.lua, run as a process of its
-- own: it starts the server with the command given, sends a slow count on
-- one connection, then a ping, an unknown request and a quick count on a
-- second one, then quit on a third, and prints the replies in the order
-- they came. The server runs under `timeout`, so that a hang ends it too.
local CQUEUES_CLIENT = [[
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local server = assert(io.popen("timeout 60 " .. ... .. " examples/cqueues_fanout.lua 0"))
local banner = server:read("l") or ""
local port = tonumber(banner:match("^listening on 127%.0%.0%.1:(%d+)$"))
if not port then print("no banner: " .. banner) os.exit(1) end

local function client(name, requests)
  local conn = socket.connect("127.0.0.1", port)
  conn:setmode("b", "bf")
  for _, r in ipairs(requests) do conn:write(r, "\n") end
  conn:flush()
  for _ = 1, #requests do print(name .. " " .. (conn:read("*l") or "(closed)")) end
  conn:close()
end

local cq = cqueues.new()
cq:wrap(client, "slow", { "collatz 1 400000 4" })
cq:wrap(function()
  cqueues.sleep(0.05)
  client("fast", { "ping", "what", "collatz 1 20000 2" })
  client("quit", { "quit" })
end)
local ok, err = cq:loop(30)
if not ok then print("client: " .. tostring(err)) elseif not cq:empty() then print("watchdog") end
print("server", server:close())
]]

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

describe("examples", function()
  it("power.lua prints powers computed on a thread pool", function()
    local r = example("power.lua")
    ran(r)
    assert.matches("2%^10 = 1024\n", r.out)
    assert.matches("2%^62 = 4611686018427387904\n", r.out)
    assert.matches("2%^3 %+ 2%^4 %+ 2%^5 = 56\n", r.out)
  end)

  it("power.lua reports a power too large for an integer as that task's error", function()
    local r = example("power.lua", { "3" })
    ran(r)
    assert.matches("3%^32 = 1853020188851841\n", r.out)
    assert.matches("3%^62: [^\n]*does not fit in a 64%-bit integer", r.out)
  end)

  it("fetch.lua overlaps slow commands and handles each reply as it comes", function()
    local r = example("fetch.lua")
    ran(r)
    for i = 1, 8 do assert.matches("hello from server " .. i .. "\n", r.out, 1, true) end
    local elapsed = tonumber(r.out:match("8 fetches %(0 failed%) in ([%d.]+) s"))
    assert.is_not_nil(elapsed, r.out)
    -- One after another the commands sleep 1.7 s in all; overlapped, about
    -- as long as the slowest one (0.3 s).
    assert.is_true(elapsed < 1.2, "took " .. elapsed .. " s")
    -- as_completed yields the quick replies first.
    assert.is_true(r.out:find("server 3", 1, true) < r.out:find("server 2", 1, true), r.out)
  end)

  it("fetch.lua reads local files and reports one that is missing", function()
    local r = example("fetch.lua", { "README.md", "no/such/file" })
    ran(r)
    assert.matches("README%.md%s+%d+ bytes", r.out)
    assert.matches("no/such/file%s+failed:", r.out)
    assert.matches("2 fetches %(1 failed%)", r.out)
  end)

  it("primes.lua says which numbers are prime", function()
    local r = example("primes.lua")
    ran(r)
    assert.matches("112272535095293 is prime: true", r.out, 1, true)
    assert.matches("1099726899285419 is prime: false", r.out, 1, true)
  end)

  it("hash_files.lua checksums every file under a directory, in path order", function()
    local dir = shell.tmpdir()
    shell.write_file(dir .. "/a", "a")
    shell.write_file(dir .. "/b c", "foobar")
    os.execute("mkdir " .. shell.q(dir .. "/sub"))
    shell.write_file(dir .. "/sub/empty", "")
    local r = example("hash_files.lua", { dir, "2" })
    shell.rmdir(dir)
    ran(r)
    -- Known FNV-1a 64 values of "a", "foobar" and "".
    local expected = ("af63dc4c8601ec8c  %s/a\n85944171f73967e8  %s/b c\n"
      .. "cbf29ce484222325  %s/sub/empty\n"):format(dir, dir, dir)
    assert.is_truthy(r.out:find(expected, 1, true), r.out)
    assert.matches("hashed 3 files %(0 unreadable%), 7 bytes", r.out)
  end)

  it("hash_files.lua shows its progress on stderr", function()
    local dir = shell.tmpdir()
    for i = 1, 5 do shell.write_file(dir .. "/f" .. i, ("x"):rep(i)) end
    local r = example("hash_files.lua", { dir })
    shell.rmdir(dir)
    ran(r)
    -- stderr is a file here, not a terminal: plain lines, the last one complete.
    assert.matches("hashing: 5/5 %(100%%%)", r.err)
    assert.not_matches("\r", r.err, 1, true)
  end)

  it("wordcount.lua counts a made-up text in parallel and agrees with a sequential count", function()
    local r = example("wordcount.lua")
    ran(r)
    assert.matches("most frequent words:", r.out, 1, true)
    assert.matches("%d+ words, 500 distinct", r.out)
    assert.matches("matches the sequential count: yes", r.out, 1, true)
  end)

  it("wordcount.lua counts the words of a given file", function()
    local path = os.tmpname()
    local lines = {}
    for i = 1, 2500 do lines[i] = (i % 2 == 0) and "The cat and the dog." or "the end" end
    shell.write_file(path, table.concat(lines, "\n") .. "\n")
    local r = example("wordcount.lua", { path, "3" })
    os.remove(path)
    ran(r)
    -- "the": 2 per even line, 1 per odd line: 1250 * 2 + 1250 = 3750.
    assert.matches("  the%s+3750\n", r.out)
    assert.matches("  end%s+1250\n", r.out)
    assert.matches("8750 words, 5 distinct", r.out, 1, true)
    assert.matches("matches the sequential count: yes", r.out, 1, true)
  end)

  it("montecarlo.lua estimates pi on a thread pool seeded per worker", function()
    local r = example("montecarlo.lua", { "1000000", "2" })
    ran(r)
    local pi = tonumber(r.out:match("pi is about ([%d.]+)"))
    assert.is_not_nil(pi, r.out)
    assert.is_true(math.abs(pi - math.pi) < 0.02, "estimated " .. pi)
    assert.matches("8 tasks on 2 thread workers", r.out, 1, true)
  end)

  it("montecarlo.lua runs on a process pool too", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local r = example("montecarlo.lua", { "400000", "2", "process" })
    ran(r)
    local pi = tonumber(r.out:match("pi is about ([%d.]+)"))
    assert.is_not_nil(pi, r.out)
    assert.is_true(math.abs(pi - math.pi) < 0.03, "estimated " .. pi)
    assert.matches("on 2 process workers", r.out, 1, true)
  end)

  it("pipeline.lua streams through two queues to the host, with progress", function()
    local r = example("pipeline.lua")
    ran(r)
    assert.matches("10000 answers from 2 thread transformers", r.out)
    -- the record below 10 000 (OEIS A006877)
    assert.matches("the longest sequence up to 10000 starts at 6171: 261 steps", r.out)
    assert.matches("collatz: 10000/10000 %(100%%%)", r.err)
  end)

  it("pipeline.lua runs its stages as process tasks too", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local r = example("pipeline.lua", { "1000", "process" })
    ran(r)
    assert.matches("1000 answers from 2 process transformers", r.out)
    assert.matches("starts at 871: 178 steps", r.out)
  end)

  -- The PGM header of a width x height image, and the file's size.
  local function pgm(path, width, height)
    local data = shell.read_file(path)
    os.remove(path)
    local header = ("P5\n%d %d\n255\n"):format(width, height)
    return data:sub(1, #header) == header, #data - #header, data:sub(#header + 1)
  end

  it("mandelbrot.lua fills a shared image in place and writes a PGM file", function()
    local path = os.tmpname()
    local r = example("mandelbrot.lua", { path, "160", "120", "thread", "2" })
    ran(r)
    assert.matches("160x120 pixels, 15 bands on 2 thread workers", r.out)
    local header_ok, size, pixels = pgm(path, 160, 120)
    assert.is_true(header_ok)
    assert.equals(160 * 120, size)
    -- the middle of the view, (-0.75, 0), is in the set: black
    assert.equals(0, pixels:byte(60 * 160 + 81))
    assert.is_true(pixels:byte(1) > 0)   -- a corner is not
  end)

  it("mandelbrot.lua gives the same image on a process pool", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local a, b = os.tmpname(), os.tmpname()
    ran(example("mandelbrot.lua", { a, "96", "64", "thread", "2" }))
    ran(example("mandelbrot.lua", { b, "96", "64", "process", "2" }))
    local ok1, size1, pixels1 = pgm(a, 96, 64)
    local ok2, size2, pixels2 = pgm(b, 96, 64)
    assert.is_true(ok1 and ok2)
    assert.equals(96 * 64, size1)
    assert.equals(size1, size2)
    assert.is_true(pixels1 == pixels2)
  end)

  if exists(shell.ROOT .. "/examples/crash_isolation.lua") then
    it("crash_isolation.lua survives its crashing tasks", function()
      local problem = shell.process_pool_problem()
      if problem then pending(problem) return end
      ran(example("crash_isolation.lua"))
    end)
  end

  for _, interp in ipairs(INTERPRETERS) do
    it("luv_server.lua answers other connections while a count computes, under "
        .. interp.name, function()
      if not installed("luv") then pending("luv is not installed (Debian: lua-luv)") return end
      local r = shell.run_lua(LUV_CLIENT, { interp.cmd }, 120)
      assert.equals(0, r.status, r.out .. r.err)
      local lines = {}
      for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      assert.same({
        "fast pong",
        'fast error: unknown request "what"',
        "fast primes 1 1000: 168",
        "quit bye",
        "slow primes 1 1000000: 78498",
        "server\ttrue\texit\t0",
      }, lines)
    end)

    it("cqueues_fanout.lua answers other connections while a count computes, under "
        .. interp.name, function()
      if not installed("cqueues") then pending("cqueues is not installed (Debian: lua-cqueues)") return end
      local r = shell.run_lua(CQUEUES_CLIENT, { interp.cmd }, 120)
      assert.equals(0, r.status, r.out .. r.err)
      local lines = {}
      for line in r.out:gmatch("[^\n]+") do lines[#lines + 1] = line end
      -- The longest chains below 20 000 and 400 000 (OEIS A006877).
      assert.same({
        "fast pong",
        'fast error: unknown request "what"',
        "fast collatz 1..20000: longest chain starts at 17647 (278 steps)",
        "quit bye",
        "slow collatz 1..400000: longest chain starts at 230631 (442 steps)",
        "server\ttrue\texit\t0",
      }, lines)
    end)
  end

  -- Examples added later without a test of their own: they must at least run.
  local list = io.popen("ls " .. shell.q(shell.ROOT .. "/examples"))
  for name in list:lines() do
    if name:match("%.lua$") and not TESTED[name] then
      it(name .. " runs to the end without an error", function()
        ran(example(name))
      end)
    end
  end
  list:close()
end)
