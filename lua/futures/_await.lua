-- futures._await: what futures.luv and futures.cqueues share — the checks
-- of their arguments and the four awaits (docs/API.md, "Event loops").
-- An adapter gives two functions of its loop and gets the awaits back:
--
--   need(fname)  what suspend_until needs to suspend the running coroutine,
--                or an error at the caller's caller when there is none
--   suspend_until(waiter, is_ready, subscribe, timeout)
--                suspend it until is_ready() (or the timeout passes), with
--                subscribe(wake) registering what wakes it and returning
--                its own undo; true when ready
local futures = require "futures"

local M = {}

-- The event-loop library `lib`, or an error naming what to install, at the
-- line that required `adapter` (require, and in bin/lua-futures the
-- embedded modules' loader, are C frames between).
function M.require_loop(lib, adapter, what)
  local found, mod = pcall(require, lib)
  if found then return mod end
  local level = 3   -- 1: here, 2: the adapter's chunk
  while debug.getinfo(level, "S") and debug.getinfo(level, "S").what == "C" do
    level = level + 1
  end
  error(("module '%s' needs %s (or `luarocks install %s`)\n%s")
    :format(adapter, what, lib, tostring(mod):match("[^\n]*")),
    debug.getinfo(level, "S") and level or 0)
end

local FUTURE_MT = getmetatable(futures.Future())
local QUEUE_MT = getmetatable(futures.Queue())

-- The checks raise at the caller's caller: the user's call of an await.
function M.check_future(f, fname)
  if getmetatable(f) ~= FUTURE_MT then
    error(("bad argument #1 to '%s' (future expected, got %s)"):format(fname, type(f)), 3)
  end
end

-- The distinct futures of the sequence fs, in order.
function M.distinct(fs, fname)
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

function M.check_timeout(t, fname)
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0) then
    error(("bad argument #2 to '%s' (timeout must be a non-negative number, got %s)")
      :format(fname, type(t) == "number" and tostring(t) or type(t)), 3)
  end
end

-- A subscription to the completion of each future of `list`, calling
-- on_done(f) once per future as it is delivered.
function M.on_each(list, on_done)
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

local check_future, distinct, check_timeout, on_each =
  M.check_future, M.distinct, M.check_timeout, M.on_each

local function split(list)
  local done, not_done = {}, {}
  for _, f in ipairs(list) do
    if f:done() then done[#done + 1] = f else not_done[#not_done + 1] = f end
  end
  return done, not_done
end

local function nothing() end

function M.awaits(need, suspend_until)
  local A = {}

  ---Suspends the running coroutine until `f` is done, the loop going on,
  ---then returns what `f:result()` returns or raises its error. With
  ---`timeout` (seconds), raises a TimeoutError if f is not done by then.
  ---Outside a coroutine of the loop it raises an error: block with
  ---f:result() there.
  ---@param f futures.Future
  ---@param timeout? number
  ---@return any ...
  function A.await(f, timeout)
    check_future(f, "await")
    check_timeout(timeout, "await")
    local waiter = need("await")
    if not suspend_until(waiter, function() return f:done() end, on_each({ f }, nothing),
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
  function A.await_all(fs, timeout)
    local list = distinct(fs, "await_all")
    check_timeout(timeout, "await_all")
    local waiter = need("await_all")
    local pending = {}
    for _, f in ipairs(list) do
      if not f:done() then pending[#pending + 1] = f end
    end
    local left = #pending
    suspend_until(waiter, function() return left == 0 end,
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
  function A.await_any(fs, timeout)
    local list = distinct(fs, "await_any")
    check_timeout(timeout, "await_any")
    local waiter = need("await_any")
    local any = #list == 0
    for _, f in ipairs(list) do
      if f:done() then any = true end
    end
    if not any then
      suspend_until(waiter, function() return any end,
        on_each(list, function() any = true end), timeout)
    end
    return split(list)
  end

  ---Suspends the running coroutine until `q` has an item for it, then
  ---returns the item, as q:get() does without blocking the loop. It raises
  ---futures.Closed once the queue is closed and empty, and with `timeout`
  ---(seconds) futures.Empty when no item came by then. Items go to waiting
  ---getters in the order they asked, blocked threads and awaiting coroutines
  ---alike. A coroutine that is closed, or dropped, while it waits gives its
  ---place up: no item is taken for it.
  ---@param q futures.Queue
  ---@param timeout? number
  ---@return any item
  function A.await_get(q, timeout)
    if getmetatable(q) ~= QUEUE_MT then
      error(("bad argument #1 to 'await_get' (futures.Queue expected, got %s)"):format(type(q)), 2)
    end
    check_timeout(timeout, "await_get")
    local waiter = need("await_get")
    local f = q:_get_future()
    -- Until f is done the queue keeps a place for it: give the place up if
    -- this coroutine ends (closed: __close; dropped: __gc) before then.
    local place <close> = setmetatable({}, {
      __close = function() if not f:done() then f:cancel() end end,
      __gc = function() if not f:done() then f:cancel() end end,
    })
    if not suspend_until(waiter, function() return f:done() end,
        on_each({ f }, nothing), timeout) and f:cancel() then
      error(setmetatable({ type = "Empty",
        message = ("await_get: no item after %g seconds"):format(timeout) },
        futures.Empty), 2)
    end
    return f:result()   -- the item; Closed when the queue closed empty
  end

  return A
end

return M
