-- futures.luv: lua-futures inside a luv (libuv) event loop. Requiring it
-- watches futures.pollfd() with a uv_poll handle on luv's loop, so done
-- callbacks run inside uv.run() as the futures complete, with no timer; the
-- handle keeps the loop alive only while this state waits for futures.
-- fl.await, fl.await_all and fl.await_any suspend the running coroutine
-- until futures are done. docs/API.md, "Event loops", is the reference.
--
--   local fl = require "futures.luv"
--   coroutine.wrap(function() print(fl.await(ex:submit(work))) end)()
--   uv.run()   -- returns once the work is done and printed
local futures = require "futures"
local core = require "futures.core"

local shared = require "futures._await"
local uv = shared.require_loop("luv", "futures.luv",
  "luv, the Lua binding of libuv: install the Debian package lua-luv")

local fl = {}

---------------------------------------------------------------- arguments

-- The running coroutine, or an error at the caller's caller: there is
-- nothing to suspend in the main coroutine (a script's main chunk, a thread
-- task, a C boundary).
local function need_coroutine(fname)
  local co, main = coroutine.running()
  if main or not coroutine.isyieldable() then
    error(("futures.luv.%s called outside a coroutine: it suspends the running "
      .. "coroutine while uv.run() goes on; outside one (a main chunk, a thread "
      .. "task) block with f:result() or futures.wait instead"):format(fname), 3)
  end
  return co
end

---------------------------------------------------------------- the loop side

-- Completions reach the loop through the state's descriptor, readable while
-- callbacks are due; handle's callback delivers them (futures.poll), which
-- drains it. The handle is referenced only while callbacks wait for futures
-- (the core tells, see _watch_pending), so uv.run() returns when nothing is
-- awaited any more. Coroutines whose wait is over are resumed after the
-- delivery, outside the callbacks: `ready` holds them, in wake-up order.
local handle = assert(uv.new_poll(futures.pollfd()))
local idle = assert(uv.new_idle())
-- Before the loop sleeps while callbacks wait, it watches for a completion
-- for as long as f:result() does before it blocks (20 µs): the result of a
-- short task is then delivered without the sleep and the wake-up through
-- the descriptor, which cost more than the task. It never keeps the loop
-- alive, and runs only while callbacks wait.
local prepare = assert(uv.new_prepare())
prepare:unref()
local SPIN = 20e-6
local ready = {}
local delivering = false

-- At lua_close, finalizers run newest first: this one, made after the
-- handles, marks the loop gone before luv closes them, so that the
-- callbacks the core still delivers then (lf_context.h) leave it alone.
local alive = setmetatable({ yes = true }, { __gc = function(t) t.yes = false end })

local on_idle

-- Resumes the coroutines that are ready. An error in one is an uncaught
-- error of the loop, as in any luv callback (luv reports it and exits);
-- those not yet resumed stay queued for the next turn of the loop.
local function dispatch()
  while ready[1] ~= nil do
    local batch = ready
    ready = {}
    for i = 1, #batch do
      local w = batch[i]
      w.queued = false
      if w.parked and coroutine.status(w.co) == "suspended" then
        local ok, err = coroutine.resume(w.co)
        if not ok then
          table.move(ready, 1, #ready, #batch - i + 1)
          table.move(batch, i + 1, #batch, 1, ready)
          if ready[1] ~= nil then idle:start(on_idle) end
          if type(err) == "string" then err = debug.traceback(w.co, err) end
          error(err, 0)
        end
      end
    end
  end
end

on_idle = function()
  idle:stop()
  dispatch()
end

local function on_readable(err)
  if err then error("futures.luv: polling futures.pollfd() failed: " .. tostring(err), 0) end
  delivering = true
  local ok, perr = pcall(futures.poll)
  delivering = false
  if not ok then error(perr, 0) end
  dispatch()
end

-- Queue w's coroutine to be resumed. Woken by a delivery this module made,
-- it is resumed right after it; woken elsewhere (a result() call elsewhere
-- delivered the callbacks), the idle handle brings the loop round to it.
local function schedule(w)
  if w.queued or not alive.yes then return end
  w.queued = true
  ready[#ready + 1] = w
  if not delivering then idle:start(on_idle) end
end

local function on_prepare()
  if uv.backend_timeout() ~= 0 and core._spin(SPIN) then on_readable() end
end

handle:start("r", on_readable)
core._watch_pending(function(busy)
  if not alive.yes then return end
  if busy then
    handle:ref()
    prepare:start(on_prepare)
  else
    handle:unref()
    prepare:stop()
  end
end)

---------------------------------------------------------------- waiting

local function closer(fn) return setmetatable({}, { __close = fn }) end

-- The one way this module waits: suspends the running coroutine `co` until
-- is_ready() is true or `timeout` seconds pass (nil: no limit), and returns
-- is_ready(). subscribe(wake) arranges for wake() to be called on this
-- state whenever is_ready() may have become true — a done callback, or any
-- other notice delivered by futures.poll() — and returns a function that
-- undoes it; a notice that keeps the loop alive must count in the core's
-- pending callbacks (_watch_pending).
local function suspend_until(co, is_ready, subscribe, timeout)
  if is_ready() then return true end
  local w = { co = co, parked = false, queued = false }
  local expired = false
  local function wake() if w.parked then schedule(w) end end
  local unsubscribe = subscribe(wake)
  local timer
  -- Undone however the wait ends: ready, timed out, an error raised into
  -- it, or coroutine.close() of the suspended coroutine.
  local _ <close> = closer(function()
    unsubscribe()
    if timer then timer:close() end
  end)
  if timeout and not is_ready() then
    timer = uv.new_timer()
    timer:start(math.ceil(timeout * 1000), 0, function()
      expired = true
      wake()
    end)
  end
  while not is_ready() and not expired do
    w.parked = true
    coroutine.yield()
    w.parked = false
  end
  return is_ready()
end

-- fl.await, fl.await_all, fl.await_any and fl.await_get (futures._await
-- has their documentation), suspending coroutines of uv.run().
local awaits = shared.awaits(need_coroutine, suspend_until)
fl.await, fl.await_all = awaits.await, awaits.await_all
fl.await_any, fl.await_get = awaits.await_any, awaits.await_get

return fl
