-- futures.progress: a progress line for long batch work. It wraps a table of
-- futures (and yields them as they complete, through futures.as_completed)
-- or an iterator such as ex:map's (and passes every value through), and
-- shows the count, the rate and the time left: a bar redrawn in place when
-- the stream is a terminal, plain lines now and then otherwise.
--
--   for f in futures.progress(fs, { label = "fetching" }) do ... end
--   for i, v in futures.progress(ex:map(fn, items), { total = #items }) do ... end
--
-- Options: total, label, stream, tty, interval, width, timeout, clock (see
-- docs/API.md). The module is the function itself. It requires "futures"
-- only when called, because futures/init.lua loads this file while it is
-- itself being loaded.

local OPTIONS = {
  total = true, label = true, stream = true, tty = true, interval = true,
  width = true, timeout = true, clock = true,
}

local TERMINAL_REDRAW = 0.1   -- seconds between redraws of a bar: 10 per second
local PLAIN_INTERVAL = 2      -- seconds between plain lines

-- Whether file descriptor 1 or 2 is a terminal, asked once per process of
-- the shell (plain Lua has no isatty). TERM=dumb counts as no terminal.
local terminal_cache = {}
local function is_terminal(stream)
  local fd = (stream == io.stderr and 2) or (stream == io.stdout and 1) or nil
  if not fd then return false end
  if terminal_cache[fd] == nil then
    local ok, yes = pcall(os.execute, ("test -t %d"):format(fd))
    terminal_cache[fd] = ok and yes == true and os.getenv("TERM") ~= "dumb"
  end
  return terminal_cache[fd]
end

local function duration(s)
  if s < 10 then return ("%.1fs"):format(s) end
  s = math.floor(s + 0.5)
  if s < 60 then return ("%ds"):format(s) end
  if s >= 3600 then
    return ("%d:%02d:%02d"):format(s // 3600, s % 3600 // 60, s % 60)
  end
  return ("%d:%02d"):format(s // 60, s % 60)
end

local function rate_text(rate)
  if rate <= 0 then return "--/s" end
  if rate >= 100 then return ("%.0f/s"):format(rate) end
  if rate >= 10 then return ("%.1f/s"):format(rate) end
  return ("%.2f/s"):format(rate)
end

---------------------------------------------------------------- the line

local Line = {}
Line.__index = Line

local function new_line(opts, total, clock)
  local stream = opts.stream or io.stderr
  local tty = opts.tty
  if tty == nil then tty = is_terminal(stream) end
  local self = setmetatable({
    total = total, label = opts.label or "progress", stream = stream,
    tty = tty, width = opts.width or 24, clock = clock,
    interval = opts.interval or (tty and TERMINAL_REDRAW or PLAIN_INTERVAL),
    count = 0, finished = false,
  }, Line)
  self.start = clock()
  self.last = self.start
  if tty then self:draw(self.start) end
  return self
end

-- The text of the line at time `now`; `final` once the work is over.
function Line:text(now, final)
  local elapsed = now - self.start
  local rate = elapsed > 0 and self.count / elapsed or 0
  local total, count = self.total, self.count
  local when
  if final then
    when = "in " .. duration(elapsed)
  elseif total and rate > 0 then
    when = "ETA " .. duration(math.max(total - count, 0) / rate)
  elseif total then
    when = "ETA --"
  else
    when = duration(elapsed) .. " elapsed"
  end
  if self.tty then
    if total then
      local frac = total > 0 and math.min(count / total, 1) or 1
      local full = math.floor(frac * self.width + 0.5)
      return ("%s [%s%s] %d/%d %3d%%  %s  %s"):format(self.label,
        ("#"):rep(full), ("-"):rep(self.width - full), count, total,
        math.floor(frac * 100), rate_text(rate), when)
    end
    return ("%s  %d done  %s  %s"):format(self.label, count, rate_text(rate), when)
  end
  if total then
    local pct = total > 0 and math.floor(math.min(count / total, 1) * 100) or 100
    return ("%s: %d/%d (%d%%), %s, %s"):format(self.label, count, total, pct,
      rate_text(rate), when)
  end
  return ("%s: %d done, %s, %s"):format(self.label, count, rate_text(rate), when)
end

function Line:draw(now, final)
  local s = self.stream
  if self.tty then
    -- \r back to the start of the line, ESC[K clears what a longer line left.
    s:write("\r", self:text(now, final), "\27[K", final and "\n" or "")
  else
    s:write(self:text(now, final), "\n")
  end
  if s.flush then s:flush() end
  self.last = now
end

function Line:tick()
  self.count = self.count + 1
  local now = self.clock()
  if now - self.last >= self.interval then self:draw(now) end
end

-- Draws the last line once; safe to call again.
function Line:finish()
  if self.finished then return end
  self.finished = true
  self:draw(self.clock(), true)
end

---------------------------------------------------------------- the wrapper

local function check(opts)
  for k in pairs(opts) do
    if not OPTIONS[k] then
      error(("bad argument #2 to 'progress' (unknown option '%s')"):format(tostring(k)), 3)
    end
  end
  local function bad(what)
    error(("bad argument #2 to 'progress' (%s)"):format(what), 3)
  end
  if opts.total ~= nil and (math.type(opts.total) ~= "integer" or opts.total < 0) then
    bad("total must be a non-negative integer")
  end
  if opts.label ~= nil and type(opts.label) ~= "string" then bad("label must be a string") end
  if opts.stream ~= nil and not (type(opts.stream) == "userdata" or type(opts.stream) == "table") then
    bad("stream must be a file or an object with a write method")
  end
  if opts.tty ~= nil and type(opts.tty) ~= "boolean" then bad("tty must be a boolean") end
  if opts.interval ~= nil and (type(opts.interval) ~= "number" or not (opts.interval >= 0)) then
    bad("interval must be a non-negative number")
  end
  if opts.width ~= nil and (math.type(opts.width) ~= "integer" or opts.width < 1) then
    bad("width must be a positive integer")
  end
  if opts.clock ~= nil and type(opts.clock) ~= "function" then bad("clock must be a function") end
end

-- A to-be-closed value for the generic for: on break (or an error in the
-- loop body) it draws the last line, then closes what the wrapped iterator
-- gave to close (as_completed's waiter).
local function closer(line, inner)
  return setmetatable({}, { __close = function(_, err)
    line:finish()
    local mt = inner ~= nil and getmetatable(inner)
    if type(mt) == "table" and mt.__close then mt.__close(inner, err) end
  end })
end

--- futures.progress(fs_or_iterator, { total, label, stream, tty, interval,
--- width, timeout, clock }) -> an iterator for a generic for
local function progress(source, opts)
  if rawequal(source, package.loaded.futures) then
    error("bad argument #1 to 'progress' (got the futures module; call it with '.': "
      .. "futures.progress(...))", 2)
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(("bad argument #2 to 'progress' (table expected, got %s)"):format(type(opts)), 2)
  end
  check(opts)
  local futures = require "futures"
  local clock = opts.clock or futures.monotonic

  if type(source) == "table" then
    local total = opts.total
    if total == nil then
      -- as_completed yields each distinct future once: count those.
      local seen, n = {}, 0
      for i = 1, #source do
        local f = source[i]
        if not seen[f] then seen[f] = true; n = n + 1 end
      end
      total = n
    end
    local next_done, _, _, waiter = futures.as_completed(source, opts.timeout)
    local line = new_line(opts, total, clock)
    local function step()
      local ok, f = pcall(next_done)
      if not ok then line:finish(); error(f, 0) end
      if f == nil then line:finish(); return nil end
      line:tick()
      return f
    end
    return step, nil, nil, closer(line, waiter)
  elseif type(source) == "function" then
    if opts.timeout ~= nil then
      error("bad argument #2 to 'progress' (timeout is for a table of futures; "
        .. "give map its own timeout)", 2)
    end
    local line = new_line(opts, opts.total, clock)
    local function pass(ok, ...)
      if not ok then line:finish(); error((...), 0) end
      if (...) == nil then line:finish(); return nil end
      line:tick()
      return ...
    end
    local function step(_, control)
      return pass(pcall(source, nil, control))
    end
    return step, nil, nil, closer(line, nil)
  end
  error(("bad argument #1 to 'progress' (table of futures or iterator function "
    .. "expected, got %s)"):format(type(source)), 2)
end

return progress
