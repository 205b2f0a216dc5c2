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

local shared = require "futures._await"
local cqueues = shared.require_loop("cqueues", "futures.cqueues",
  "cqueues: install the Debian package lua-cqueues")
local condition = require "cqueues.condition"

local fc = {}

---------------------------------------------------------------- arguments

local check_future = shared.check_future

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
-- a function that undoes it.
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

-- fc.await, fc.await_all, fc.await_any and fc.await_get (futures._await
-- has their documentation), suspending coroutines of a cqueues controller.
local awaits = shared.awaits(need_controller, suspend_until)
fc.await, fc.await_all = awaits.await, awaits.await_all
fc.await_any, fc.await_get = awaits.await_any, awaits.await_get

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

return fc
