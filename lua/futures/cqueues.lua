-- futures.cqueues: lua-futures in a cqueues event loop. fc.await,
-- fc.await_all and fc.await_any suspend the running cqueues coroutine until
-- futures are done; fc.pollable(f) is a future as a cqueues pollable, for
-- cqueues.poll among sockets, conditions and timeouts. docs/API.md, "Event
-- loops", is the reference.
--
--   local fc = require "futures.cqueues"
--   cq:wrap(function() print(fc.await(ex:submit(work))) end)
--   assert(cq:loop())
--
-- How it waits: each waiting coroutine polls a condition variable of its
-- own, signalled by a done callback; one pump coroutine per controller, which
-- exists only while coroutines of that controller wait, polls the state's
-- futures.pollfd() and delivers the callbacks (futures.poll). So a
-- completion wakes the pump and the one coroutine it concerns, and a
-- callback delivered elsewhere (a result() call in another coroutine)
-- still wakes its coroutine.
local futures = require "futures"

local found, cqueues = pcall(require, "cqueues")
if not found then
  -- Raised at the line that required this module (require, and in
  -- bin/lua-futures the embedded modules' loader, are C frames).
  local level = 2
  while debug.getinfo(level, "S") and debug.getinfo(level, "S").what == "C" do
    level = level + 1
  end
  error("module 'futures.cqueues' needs cqueues: install the Debian package "
    .. "lua-cqueues (or `luarocks install cqueues`)\n"
    .. tostring(cqueues):match("[^\n]*"), debug.getinfo(level, "S") and level or 0)
end
local condition = require "cqueues.condition"

local fc = {}

---------------------------------------------------------------- arguments

local FUTURE_MT = getmetatable(futures.Future())
local QUEUE_MT = getmetatable(futures.Queue())

local function check_future(f, fname)
  if getmetatable(f) ~= FUTURE_MT then
    error(("bad argument #1 to '%s' (future expected, got %s)"):format(fname, type(f)), 3)
  end
end

-- The distinct futures of the sequence fs, in order.
local function distinct(fs, fname)
  if type(fs) ~= "table" then
    error(("bad argument #1 to '%s' (table of futures expected, got %s)")
      :format(fname, type(fs)), 3)
  end
  local list, seen = {}, {}
  for i = 1, #fs do
    local f = fs[i]
    if getmetatable(f) ~= FUTURE_MT then
      error(("bad argument #1 to '%s' (item %d is not a future: %s)"):format(fname, i, type(f)), 3)
    end
    if not seen[f] then
      seen[f] = true
      list[#list + 1] = f
    end
  end
  return list
end

local function check_timeout(t, fname)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(("bad argument #2 to '%s' (timeout must be a non-negative number, got %s)")
      :format(fname, type(t) == "number" and tostring(t) or type(t)), 3)
  end
end

-- The controller running the calling coroutine, or an error at the
-- caller's caller.
local function need_controller(fname)
  local cq, inside = cqueues.running()
  if not inside or not coroutine.isyieldable() then
    error(("futures.cqueues.%s called outside a cqueues coroutine (start one with "
      .. "cq:wrap): it suspends the coroutine while the loop goes on; outside one (a "
      .. "main chunk, a thread task) block with f:result() or futures.wait instead")
      :format(fname), 3)
  end
  return cq
end

---------------------------------------------------------------- the pumps

-- cqueues' polling protocol as fields: the state's descriptor, readable
-- while callbacks are due.
local DESCRIPTOR = { pollfd = futures.pollfd(), events = "r" }

local pumps = setmetatable({}, { __mode = "k" })   -- controller -> pump

local function closer(fn) return setmetatable({}, { __close = fn }) end

local function pump_loop(p)
  -- However it ends (an error raised in it: interrupted!), a later wait
  -- starts a new one.
  local _ <close> = closer(function() p.running = false end)
  while p.waiting > 0 do
    cqueues.poll(DESCRIPTOR, p.stop)
    futures.poll()
  end
end

-- One more wait in controller cq; starts its pump if none runs.
local function enlist(cq)
  local p = pumps[cq]
  if p == nil then
    p = { waiting = 0, running = false, stop = condition.new() }
    pumps[cq] = p
  end
  p.waiting = p.waiting + 1
  if not p.running then
    p.running = true
    cq:wrap(pump_loop, p)
  end
  return p
end

-- One wait fewer: the last one lets the pump end, so that cq:loop()
-- returns once nothing else runs.
local function discharge(p)
  p.waiting = p.waiting - 1
  if p.waiting == 0 then p.stop:signal() end
end

---------------------------------------------------------------- waiting

-- The one way this module waits: suspends the calling coroutine (of
-- controller cq) until is_ready() is true or `timeout` seconds pass (nil:
-- no limit), and returns is_ready(). subscribe(wake) arranges for wake()
-- to be called on this state whenever is_ready() may have become true — a
-- done callback, or any other notice futures.poll() delivers — and returns
-- a function that undoes it. A future queue would await with
--   suspend_until(cq, function() return q:qsize() > 0 end,
--                 function(wake) <q's put notice calls wake> end)
-- and then take its item without blocking.
local function suspend_until(cq, is_ready, subscribe, timeout)
  if is_ready() then return true end
  local cond = condition.new()
  local unsubscribe = subscribe(function() cond:signal() end)
  local p
  local _ <close> = closer(function()
    unsubscribe()
    if p then discharge(p) end
  end)
  if is_ready() then return true end
  p = enlist(cq)
  local deadline = timeout and cqueues.monotime() + timeout
  while not is_ready() do
    if deadline then
      local left = deadline - cqueues.monotime()
      if left <= 0 then break end
      cqueues.poll(cond, left)
    else
      cqueues.poll(cond)
    end
  end
  return is_ready()
end

-- A subscription to the completion of each future of `list`, calling
-- on_done(f) once per future as it is delivered.
local function on_each(list, on_done)
  return function(wake)
    local cbs = {}
    for i, f in ipairs(list) do
      cbs[i] = function(done) on_done(done); wake() end
      f:add_done_callback(cbs[i])
    end
    return function()
      for i, f in ipairs(list) do f:_remove_done_callback(cbs[i]) end
    end
  end
end

local function split(list)
  local done, not_done = {}, {}
  for _, f in ipairs(list) do
    if f:done() then done[#done + 1] = f else not_done[#not_done + 1] = f end
  end
  return done, not_done
end

---Suspends the running cqueues coroutine until `f` is done, then returns
---what `f:result()` returns or raises its error. With `timeout` (seconds),
---raises a TimeoutError if f is not done by then. Outside a cqueues
---coroutine it raises an error: block with f:result() there.
---@param f futures.Future
---@param timeout? number
---@return any ...
function fc.await(f, timeout)
  check_future(f, "await")
  check_timeout(timeout, "await")
  local cq = need_controller("await")
  if not suspend_until(cq, function() return f:done() end, on_each({ f }, function() end),
      timeout) then
    error(setmetatable({ type = "TimeoutError",
      message = ("await: future not done after %g seconds"):format(timeout) },
      futures.TimeoutError), 2)
  end
  return f:result()
end

---Suspends the running cqueues coroutine until every future of `fs` is
---done (or `timeout` seconds pass), then returns `done, not_done` as
---futures.wait does. It does not raise for a failed future or a timeout.
---@param fs futures.Future[]
---@param timeout? number
---@return futures.Future[] done
---@return futures.Future[] not_done
function fc.await_all(fs, timeout)
  local list = distinct(fs, "await_all")
  check_timeout(timeout, "await_all")
  local cq = need_controller("await_all")
  local pending = {}
  for _, f in ipairs(list) do
    if not f:done() then pending[#pending + 1] = f end
  end
  local left = #pending
  suspend_until(cq, function() return left == 0 end,
    on_each(pending, function() left = left - 1 end), timeout)
  return split(list)
end

---Suspends the running cqueues coroutine until at least one future of `fs`
---is done (or `timeout` seconds pass), then returns `done, not_done` as
---futures.wait with FIRST_COMPLETED does. An empty `fs` returns at once.
---@param fs futures.Future[]
---@param timeout? number
---@return futures.Future[] done
---@return futures.Future[] not_done
function fc.await_any(fs, timeout)
  local list = distinct(fs, "await_any")
  check_timeout(timeout, "await_any")
  local cq = need_controller("await_any")
  local any = #list == 0
  for _, f in ipairs(list) do
    if f:done() then any = true end
  end
  if not any then
    suspend_until(cq, function() return any end, on_each(list, function() any = true end), timeout)
  end
  return split(list)
end

---------------------------------------------------------------- pollable

local Pollable = {}
Pollable.__index = Pollable
Pollable.__name = "futures.cqueues.pollable"

---cqueues' polling protocol: a condition variable, signalled when the
---future's completion is delivered.
function Pollable:pollfd() return self.cond end

function Pollable:events() return "r" end

---0 (ready now) once the future is done, so that a poll never waits for a
---signal that came before it; nil (no timeout) until then.
function Pollable:timeout()
  if self.delivered or self.future:done() then return 0 end
  return nil
end

---A future as a cqueues pollable: `cqueues.poll(p, sock, 5)` returns `p`
---among the ready objects once `f` is done. Made inside a cqueues
---coroutine, whose controller then delivers completions until f is done.
---@param f futures.Future
---@return { future: futures.Future, pollfd: fun(self): any, events: fun(self): string, timeout: fun(self): number? }
function fc.pollable(f)
  check_future(f, "pollable")
  local cq = need_controller("pollable")
  local p = setmetatable({ future = f, cond = condition.new(), delivered = false }, Pollable)
  local pump
  f:add_done_callback(function()
    p.delivered = true
    p.cond:signal()
    if pump then discharge(pump); pump = nil end
  end)
  if not p.delivered then pump = enlist(cq) end
  return p
end


---Suspends the running cqueues coroutine until `q` has an item for it, then
---returns the item, as q:get() does without blocking the loop. It raises
---futures.Closed once the queue is closed and empty, and with `timeout`
---(seconds) futures.Empty when no item came by then. Items go to waiting
---getters in the order they asked, blocked threads and awaiting coroutines
---alike. A coroutine that is closed, or dropped, while it waits gives its
---place up: no item is taken for it.
---@param q futures.Queue
---@param timeout? number
---@return any item
function fc.await_get(q, timeout)
  if getmetatable(q) ~= QUEUE_MT then
    error(("bad argument #1 to 'await_get' (futures.Queue expected, got %s)"):format(type(q)), 2)
  end
  check_timeout(timeout, "await_get")
  local waiter = need_controller("await_get")
  local f = q:_get_future()
  -- Until f is done the queue keeps a place for it: give the place up if
  -- this coroutine ends (closed: __close; dropped: __gc) before then.
  local place <close> = setmetatable({}, {
    __close = function() if not f:done() then f:cancel() end end,
    __gc = function() if not f:done() then f:cancel() end end,
  })
  if not suspend_until(waiter, function() return f:done() end,
      on_each({ f }, function() end), timeout) and f:cancel() then
    error(setmetatable({ type = "Empty",
      message = ("await_get: no item after %g seconds"):format(timeout) },
      futures.Empty), 2)
  end
  return f:result()   -- the item; Closed when the queue closed empty
end

return fc
