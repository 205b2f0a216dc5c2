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

local found, uv = pcall(require, "luv")
if not found then
  -- Raised at the line that required this module (require, and in
  -- bin/lua-futures the embedded modules' loader, are C frames).
  local level = 2
  while debug.getinfo(level, "S") and debug.getinfo(level, "S").what == "C" do
    level = level + 1
  end
  error("module 'futures.luv' needs luv, the Lua binding of libuv: install "
    .. "the Debian package lua-luv (or `luarocks install luv`)\n"
    .. tostring(uv):match("[^\n]*"), debug.getinfo(level, "S") and level or 0)
end

local fl = {}

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
-- pending callbacks (_watch_pending). A future queue would await with
--   suspend_until(co, function() return q:qsize() > 0 end,
--                 function(wake) <q's put notice calls wake> end)
-- and then take its item without blocking.
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

---Suspends the running coroutine until `f` is done, letting uv.run() go
---on, then returns what `f:result()` returns or raises its error. With
---`timeout` (seconds), raises a TimeoutError if f is not done by then.
---Outside a coroutine it raises an error: block with f:result() there.
---@param f futures.Future
---@param timeout? number
---@return any ...
function fl.await(f, timeout)
  check_future(f, "await")
  check_timeout(timeout, "await")
  local co = need_coroutine("await")
  if not suspend_until(co, function() return f:done() end, on_each({ f }, function() end),
      timeout) then
    error(setmetatable({ type = "TimeoutError",
      message = ("await: future not done after %g seconds"):format(timeout) },
      futures.TimeoutError), 2)
  end
  return f:result()
end

---Suspends the running coroutine until every future of `fs` is done (or
---`timeout` seconds pass), then returns `done, not_done` as futures.wait
---does: the distinct futures, each sequence in the order given. It does
---not raise for a failed future or a timeout: check `not_done`.
---@param fs futures.Future[]
---@param timeout? number
---@return futures.Future[] done
---@return futures.Future[] not_done
function fl.await_all(fs, timeout)
  local list = distinct(fs, "await_all")
  check_timeout(timeout, "await_all")
  local co = need_coroutine("await_all")
  local pending = {}
  for _, f in ipairs(list) do
    if not f:done() then pending[#pending + 1] = f end
  end
  local left = #pending
  suspend_until(co, function() return left == 0 end,
    on_each(pending, function() left = left - 1 end), timeout)
  return split(list)
end

---Suspends the running coroutine until at least one future of `fs` is
---done (or `timeout` seconds pass), then returns `done, not_done` as
---futures.wait with FIRST_COMPLETED does. An empty `fs` returns at once.
---@param fs futures.Future[]
---@param timeout? number
---@return futures.Future[] done
---@return futures.Future[] not_done
function fl.await_any(fs, timeout)
  local list = distinct(fs, "await_any")
  check_timeout(timeout, "await_any")
  local co = need_coroutine("await_any")
  local any = #list == 0
  for _, f in ipairs(list) do
    if f:done() then any = true end
  end
  if not any then
    suspend_until(co, function() return any end, on_each(list, function() any = true end), timeout)
  end
  return split(list)
end


---Suspends the running coroutine, letting uv.run() go on, until `q` has an item for it, then
---returns the item, as q:get() does without blocking the loop. It raises
---futures.Closed once the queue is closed and empty, and with `timeout`
---(seconds) futures.Empty when no item came by then. Items go to waiting
---getters in the order they asked, blocked threads and awaiting coroutines
---alike. A coroutine that is closed, or dropped, while it waits gives its
---place up: no item is taken for it.
---@param q futures.Queue
---@param timeout? number
---@return any item
function fl.await_get(q, timeout)
  if getmetatable(q) ~= QUEUE_MT then
    error(("bad argument #1 to 'await_get' (futures.Queue expected, got %s)"):format(type(q)), 2)
  end
  check_timeout(timeout, "await_get")
  local waiter = need_coroutine("await_get")
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

return fl
