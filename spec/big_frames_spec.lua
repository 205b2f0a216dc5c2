-- Big values through a process pool: a task's call or outcome of more than
-- T.big_frame bytes travels in a memfd rather than through the socket
-- (docs/process_pool.md, "Frames"). Users see nothing of it: the same
-- values and the same errors on both sides of the threshold, no
-- descriptor left behind, and a worker that sends a bad memfd is killed
-- alone.
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

local T = require "futures._test"
local BIG = T.big_frame

local function process_pool(opts)
  local problem = shell.process_pool_problem()
  if problem then pending(problem) return nil end
  return futures.ProcessPoolExecutor(opts or 1)
end

local function ident(...) return ... end

-- A string of n bytes that is not one byte repeated.
local function text(n)
  local unit = "0123456789abcdefghijklmnopqrstuvwxyz"
  return (unit:rep(n // #unit + 1)):sub(1, n)
end

-- Descriptors open once the pools' regions and workers are gone.
local function fds_settled(expected)
  return helpers.eventually(function()
    collectgarbage(); collectgarbage()
    return T.fd_count() <= expected
  end, 10)
end

describe("a process pool moving big values", function()
  it("returns big strings unchanged, just below and just above the threshold", function()
    local px <close> = process_pool()
    if not px then return end
    -- The encoded frame is the string plus a few bytes of header: these
    -- sizes put frames on both sides of the threshold.
    for n = BIG - 48, BIG + 16, 4 do
      local s = text(n)
      local r = px:submit(ident, s):result(20)
      assert.equals(n, #r)
      assert.is_true(r == s, "string of " .. n .. " bytes changed")
    end
  end)

  it("returns a big string made by the task, and takes one it only measures", function()
    local px <close> = process_pool()
    if not px then return end
    local r = px:submit(function(n) return ("xy"):rep(n) end, 3 * BIG):result(20)
    assert.equals(6 * BIG, #r)
    assert.equals(("xy"):rep(3 * BIG), r)
    assert.equals(5 * BIG, px:submit(function(s) return #s end, text(5 * BIG)):result(20))
  end)

  it("returns big tables unchanged, nested values and all", function()
    local px <close> = process_pool()
    if not px then return end
    local t = { name = "big", list = {}, nested = { deep = { text(2 * BIG) } } }
    for i = 1, 300000 do t.list[i] = i * 7 end
    t.list[300001] = 0.5
    t.self = t
    local r = px:submit(ident, t):result(20)
    assert.equals("big", r.name)
    assert.equals(300001, #r.list)
    assert.equals(2100000, r.list[300000])
    assert.equals(0.5, r.list[300001])
    assert.equals(t.nested.deep[1], r.nested.deep[1])
    assert.equals(r, r.self)
  end)

  it("raises a big error value unchanged, with its traceback", function()
    local px <close> = process_pool()
    if not px then return end
    local s = text(2 * BIG)
    local f = px:submit(function(v) error({ payload = v }) end, s)
    local err = f:exception(20)
    assert.equals(s, err.payload)
    assert.has_error(function() f:result() end)
  end)

  it("carries big arguments and results of map chunks", function()
    local px <close> = process_pool(2)
    if not px then return end
    local items = {}
    for i = 1, 6 do items[i] = text(BIG // 2 + i) end
    local n = 0
    for i, v in px:map(function(s) return s .. "!" end, items, { chunksize = 3, timeout = 30 }) do
      assert.equals(items[i] .. "!", v)
      n = n + 1
    end
    assert.equals(6, n)
  end)

  it("leaves no descriptor behind after many big round trips", function()
    local before = T.fd_count()
    do
      local px <close> = process_pool()
      if not px then return end
      local s = text(3 * BIG)
      assert.equals(s, px:submit(ident, s):result(20))
      local warm = T.fd_count()
      for _ = 1, 40 do
        assert.equals(#s, #px:submit(ident, s):result(20))
      end
      collectgarbage(); collectgarbage()
      -- (fewer, when regions that earlier pools cached were given back)
      assert.is_true(T.fd_count() <= warm, "descriptors grew: " .. T.fd_count() - warm)
    end
    assert.is_true(fds_settled(before), "descriptors left: " .. T.fd_count() - before)
  end)

  it("gives its task region back once the worker is idle", function()
    local px <close> = process_pool()
    if not px then return end
    px:submit(ident, 1):result(20)
    futures.sleep(0.7)   -- regions that earlier pools cached are given back
    collectgarbage(); collectgarbage()
    local idle = T.fd_count()
    local start = futures.monotonic()
    px:submit(ident, text(2 * BIG)):result(20)
    if futures.monotonic() - start < 0.3 then   -- not on a slowed-down build
      assert.equals(idle + 1, T.fd_count())       -- the region, kept a while
    end
    assert.is_true(fds_settled(idle), "the region is still open")
  end)

  it("keeps a worker from shrinking or writing the memfd its big call came in", function()
    local px <close> = process_pool()
    if not px then return end
    -- The task reopens the region it was sent through /proc (which needs
    -- CAP_SYS_ADMIN) and tries to cut it to nothing and to write into it:
    -- unsealed, the host's next big call would fault writing its pages.
    local function tamper(s)
      local maps = assert(io.open("/proc/self/maps"))
      local range
      for line in maps:lines() do
        range = range or line:match("^(%x+%-%x+) .*memfd:lf%-call")
      end
      maps:close()
      if not range then return "no region mapped", #s end
      local path = "/proc/self/map_files/" .. range
      local probe = io.open(path, "r")
      if not probe then return "cannot reopen", #s end
      probe:close()
      local cut = io.open(path, "w")   -- O_TRUNC
      if cut then cut:close() return "shrunk", #s end
      local f = io.open(path, "r+")
      local wrote = f and f:write("x") and f:flush()
      if f then f:close() end
      if wrote then return "written", #s end
      return "refused", #s
    end
    local s = text(3 * BIG)
    local outcome, n = px:submit(tamper, s):result(20)
    if outcome == "cannot reopen" then
      pending("/proc/self/map_files needs CAP_SYS_ADMIN")
      return
    end
    assert.equals("refused", outcome)
    assert.equals(#s, n)
    for _ = 1, 3 do   -- the same region serves the next big calls
      assert.is_true(px:submit(ident, s):result(20) == s)
    end
  end)

  it("stops a task interrupted with a big frame in flight, and goes on", function()
    local px <close> = process_pool()
    if not px then return end
    local s = text(4 * BIG)
    local f = px:submit(function(v) while true do end return v end, s)
    f:interrupt()
    local ok, err = pcall(f.result, f, 20)
    assert.is_false(ok)
    assert.is_true(futures.iserror(err, futures.CancelledError))
    assert.equals(s, px:submit(ident, s):result(20))
  end)

  it("cancels a queued task with a big argument and runs the next", function()
    local px <close> = process_pool()
    if not px then return end
    local gate = px:submit(function() futures.sleep(0.2) end)
    local f = px:submit(ident, text(2 * BIG))
    assert.is_true(f:cancel())
    gate:result(20)
    local s = text(2 * BIG + 1)
    assert.equals(s, px:submit(ident, s):result(20))
  end)

  it("fails only the task of a worker that exits while it holds a big frame", function()
    local px <close> = process_pool()
    if not px then return end
    local f = px:submit(function(v) local _ = #v; os.exit(3) end, text(2 * BIG))
    assert.matches("died: exited with status 3", tostring(helpers.error_of(f.result, f, 20)))
    local s = text(2 * BIG)
    assert.equals(s, px:submit(ident, s):result(20))
  end)

  it("fails only the task of a worker killed while it sends a big result", function()
    local px <close> = process_pool()
    if not px then return end
    local f = px:submit(function(n)
      local pid = io.open("/proc/self/stat"):read("n")
      os.execute(("(sleep 0.05; kill -9 %d) &"):format(pid))
      local parts = {}
      for i = 1, 4000 do parts[i] = ("z"):rep(n) end   -- until the kill comes
      local out = {}
      for i = 1, 1000 do out[i] = table.concat(parts) end
      return out
    end, 1000)
    assert.matches("died: killed by signal 9", tostring(helpers.error_of(f.result, f, 30)))
    local s = text(2 * BIG)
    assert.equals(s, px:submit(ident, s):result(20))
  end)

  it("fails its running big task when the pool's workers are terminated", function()
    local before = T.fd_count()
    do
      local px <close> = process_pool(2)
      if not px then return end
      local s = text(2 * BIG)
      local f = px:submit(function(v) while true do end return v end, s)
      assert.is_true(helpers.eventually(function() return f:running() end, 10))
      futures.sleep(0.1)
      px:terminate_workers()
      assert.is_truthy(f:exception(20))
    end
    assert.is_true(fds_settled(before), "descriptors left: " .. T.fd_count() - before)
  end)

  it("gives the same values to a thread pool and futures.serialize, which do not use it", function()
    local s = text(2 * BIG)
    local ex <close> = futures.ThreadPoolExecutor(1)
    assert.equals(s, ex:submit(ident, s):result(20))
    assert.equals(s, futures.deserialize(futures.serialize(s)))
  end)
end)

-- A hostile worker: the task itself writes a big RESULT frame for its own
-- task (id 1 of a new worker) with whatever descriptor it likes, then
-- waits to be killed.
describe("a worker that sends a bad big frame", function()
  local HEADER = "=c2BBI4I8"

  -- Runs `send` in the only worker of a new pool and returns the error of
  -- its task, after checking that the pool goes on.
  local function hostile(send)
    local px <close> = process_pool()
    if not px then return nil end
    local f = px:submit(function(sender)
      local t = require "futures._test"
      local payload = require("futures").serialize(("q"):rep(2 * t.big_frame))
      sender(t, payload)
      require("futures").sleep(10)
      return "the real result, which must not count"
    end, send)
    local err = helpers.error_of(f.result, f, 30)
    assert.is_true(futures.iserror(err, futures.BrokenProcessPool))
    local s = text(2 * BIG)
    assert.equals(s, px:submit(ident, s):result(20))
    return err.message
  end

  it("unsealed is killed alone", function()
    local err = hostile(function(t, payload)
      local fd = t.memfd(payload, false)
      t.send_fd(3, string.pack("=c2BBI4I8I8", "LF", 5, 0x80, 1, 8, #payload), fd)
    end)
    if err then
      assert.matches("^worker process %d+ was killed because it sent a memfd that is not sealed", err)
    end
  end)

  it("sealed with a size other than its frame's is killed alone", function()
    local err = hostile(function(t, payload)
      local fd = t.memfd(payload, true)
      t.send_fd(3, string.pack("=c2BBI4I8I8", "LF", 5, 0x80, 1, 8, #payload + 4096), fd)
    end)
    if err then
      assert.matches("killed because it sent a memfd whose size is not its big frame's", err)
    end
  end)

  it("with a pipe for its memfd is killed alone", function()
    local err = hostile(function(t, payload)
      local r, w = t.pipe()
      t.send_fd(3, string.pack("=c2BBI4I8I8", "LF", 5, 0x80, 1, 8, #payload), r)
      t.close_fd(w)
    end)
    if err then
      assert.matches("killed because it sent a descriptor that is not a memfd", err)
    end
  end)

  it("without any descriptor is killed alone", function()
    local err = hostile(function(t, payload)
      t.write_fd(3, string.pack("=c2BBI4I8I8", "LF", 5, 0x80, 1, 8, #payload))
    end)
    if err then
      assert.matches("killed because it sent a big frame without its memfd", err)
    end
  end)

  it("with more descriptors than a frame takes is killed alone", function()
    local err = hostile(function(t, payload)
      local fds = {}
      for i = 1, 6 do fds[i] = t.memfd(payload, true) end
      t.send_fd(3, string.pack("=c2BBI4I8I8", "LF", 5, 0x80, 1, 8, #payload), table.unpack(fds))
    end)
    if err then
      assert.matches("killed because it sent more descriptors than its frames take", err)
    end
  end)

  it("with a descriptor on a frame that takes none is killed alone", function()
    local err = hostile(function(t, payload)
      local fd = t.memfd(payload, true)
      t.send_fd(3, string.pack(HEADER, "LF", 11, 0, 0, 0), fd)   -- UNUSED, empty
    end)
    if err then
      assert.matches("killed because it sent a descriptor with a frame that takes none", err)
    end
  end)

  it("with a big flag on a frame that has no memfd is killed alone", function()
    local err = hostile(function(t)
      local body = ("\0"):rep(16)
      t.write_fd(3, string.pack(HEADER, "LF", 9, 0x80 | 4, 1, #body) .. body)
    end)
    if err then
      assert.matches("killed because it sent a malformed big frame", err)
    end
  end)

  it("leaves no descriptor of its own in the host", function()
    local before = T.fd_count()
    hostile(function(t, payload)
      local fd = t.memfd(payload, false)
      t.send_fd(3, string.pack("=c2BBI4I8I8", "LF", 5, 0x80, 1, 8, #payload), fd)
    end)
    assert.is_true(fds_settled(before), "descriptors left: " .. T.fd_count() - before)
  end)
end)
