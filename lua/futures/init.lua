-- futures: Python's concurrent.futures for Lua 5.4, on native threads and
-- worker processes. This file is the public module: option tables, the map
-- and as_completed iterators, error classes. The C core is futures.core;
-- docs/API.md is the reference.
local core = require "futures.core"

local futures = {}

futures._VERSION = core._VERSION
futures.cpu_count = core.cpu_count
futures.sleep = core.sleep
futures.monotonic = core.monotonic
futures.poll = core.poll
futures.pollfd = core.pollfd
futures.Future = core.Future
futures.serialize = core.serialize
futures.serialize_with = core.serialize_with
futures.deserialize = core.deserialize

---------------------------------------------------------------- errors

for name, class in pairs(core.errors) do futures[name] = class end

local BASES = { BrokenThreadPool = "BrokenExecutor", BrokenProcessPool = "BrokenExecutor",
  BrokenMPIPool = "BrokenExecutor" }

--- Is `err` a runtime error of `class` (a class such as futures.TimeoutError,
-- or its name)? BrokenThreadPool, BrokenProcessPool and BrokenMPIPool are
-- BrokenExecutors.
function futures.iserror(err, class)
  if rawequal(err, futures) then
    error("bad argument #1 to 'iserror' (got the futures module; call it with '.': "
      .. "futures.iserror(...))", 2)
  end
  local want = type(class) == "table" and class.type or class
  local t = type(err) == "table" and rawget(err, "type")
  while t do
    if t == want then return true end
    t = BASES[t]
  end
  return false
end

local function raise(class, fmt, ...)
  error(setmetatable({ type = class.type, message = fmt:format(...) }, class), 2)
end

---------------------------------------------------------------- helpers

-- How a value shows in an error message: numbers and booleans as
-- themselves, strings quoted after their type (so that "4" does not read as
-- 4), anything else as its type, or its class name (futures.Future).
local function show(v)
  local t = type(v)
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  if t == "string" then
    if #v > 40 then v = v:sub(1, 37) .. "..." end
    return (("string %q"):format(v):gsub("\\\n", "\\n"))
  end
  local mt = getmetatable(v)
  local name = type(mt) == "table" and rawget(mt, "__name")
  return type(name) == "string" and name or t
end

-- An option name as an error message shows it: 'name', or [1] for a key
-- that is not a string.
local function show_key(k)
  if type(k) == "string" then return "'" .. k .. "'" end
  return "[" .. show(k) .. "]"
end

local function check_options(opts, allowed, fname)
  for k in pairs(opts) do
    if not allowed[k] then
      error(("bad argument to '%s' (unknown option %s)"):format(fname, show_key(k)), 3)
    end
  end
end

local function check_timeout(t, fname, what)
  if t == nil then return nil end
  if type(t) ~= "number" or t ~= t or t < 0 then
    error(("bad argument to '%s' (%s must be a non-negative number, got %s)")
      :format(fname, what or "timeout", show(t)), 3)
  end
  return t
end

local function check_count(v, fname, what, default, max)
  if v == nil then return default end
  if math.type(v) ~= "integer" or v < 1 or (max and v > max) then
    error(("bad argument to '%s' (%s must be a positive integer%s, got %s)")
      :format(fname, what, max and " up to " .. max or "", show(v)), 3)
  end
  return v
end

local FUTURE_MT = getmetatable(core.Future())

-- Raises at the caller's caller when an item of `fs` is not a future.
local function check_futures(fs, fname)
  for i = 1, #fs do
    if getmetatable(fs[i]) ~= FUTURE_MT then
      error(("bad argument #1 to '%s' (item %d is not a future: %s)")
        :format(fname, i, type(fs[i])), 3)
    end
  end
end

local function callable(v)
  return type(v) == "function" or type((getmetatable(v) or {}).__call) == "function"
end

-- Raises at the caller's caller when `v` is not the executor a method needs.
local function check_self(v, fname)
  if type(v) ~= "userdata" or (getmetatable(v) or {}).__index ~= core.executor_methods then
    error(("bad argument #1 to '%s' (executor expected, got %s; call it with ':')")
      :format(fname, type(v)), 3)
  end
end

-- Raises at the caller's caller when a module function was called with ':'
-- (its first argument is then the module itself).
local function check_dot(first, fname)
  if rawequal(first, futures) then
    error(("bad argument #1 to '%s' (got the futures module; call it with '.': futures.%s(...))")
      :format(fname, fname), 3)
  end
end

-- Errors of the C core that pass through this file. A C function raises
-- with the position of its caller, which is this file; the user must see
-- their own line instead. HERE matches the position prefix of this file.
local HERE = (function()
  local _, where = pcall(error, "", 2)   -- "<this file>:<line>: "
  if type(where) ~= "string" or where == "" then return nil end
  return "^" .. where:gsub("%d+: $", ""):gsub("%p", "%%%0") .. "%d+: "
end)()

-- Raises `err` again at `level` (as error's level, counted from the caller
-- of reraise). A string that carries this file's position gets the
-- caller's instead; with `core` true (an error of a core function called
-- here), a string without a position gets the caller's too. Other values
-- (error tables, a task's own error) are raised unchanged.
local function reraise(err, level, core_error)
  if type(err) == "string" then
    local n = 0
    if HERE then err, n = err:gsub(HERE, "", 1) end
    if n > 0 or core_error then error(err, level + 1) end
  end
  error(err, 0)
end

---------------------------------------------------------------- executors

local methods = core.executor_methods

--- ex:shutdown{ wait = true, cancel_futures = false, interrupt = false }
--- (or ex:shutdown(wait)); interrupt stops the running tasks and cancels
--- the queued ones.
function methods:shutdown(opts)
  check_self(self, "shutdown")
  local wait, cancel, interrupt = true, false, false
  if type(opts) ~= "table" and type(opts) ~= "boolean" and opts ~= nil then
    error(("bad argument #1 to 'shutdown' (table or boolean expected, got %s)"):format(type(opts)), 2)
  elseif type(opts) == "table" then
    check_options(opts, { wait = true, cancel_futures = true, interrupt = true }, "shutdown")
    wait = opts.wait == nil or not not opts.wait
    cancel = not not opts.cancel_futures
    interrupt = not not opts.interrupt
  elseif opts ~= nil then
    wait = not not opts
  end
  local ok, err = pcall(self._shutdown, self, wait, cancel or interrupt, interrupt)
  if not ok then reraise(err, 2, true) end
end

local SUBMIT_WITH_OPTIONS = { timeout = true }

--- ex:submit_with({ timeout = seconds }, fn, ...) -> future: submit, the
--- task interrupted with a TimeoutError once it has run that long.
function methods:submit_with(opts, fn, ...)
  check_self(self, "submit_with")
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'submit_with' (table of options expected, got %s)")
      :format(type(opts)), 2)
  end
  check_options(opts, SUBMIT_WITH_OPTIONS, "submit_with")
  local timeout = opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout or timeout <= 0) then
    error(("bad argument to 'submit_with' (timeout must be a positive number of seconds, got %s)")
      :format(show(timeout)), 2)
  end
  if not callable(fn) then
    error(("bad argument #2 to 'submit_with' (function expected, got %s)"):format(type(fn)), 2)
  end
  local ok, f, msg = pcall(self._submit_with, self, timeout or 0, fn, ...)
  if not ok then reraise(f, 2, true) end
  if f == nil then error(msg, 2) end
  return f
end

-- The options of the pool constructors. Each check takes the value and
-- the constructor's name and returns what goes to the core, or raises at
-- the user's line (level 5: bad_option, the check, pool_options, the
-- constructor, the user).
local function bad_option(fname, fmt, ...)
  error(("bad argument to '%s' (" .. fmt .. ")"):format(fname, ...), 5)
end

local function of_type(want)
  return function(v, fname, key)
    if type(v) ~= want then bad_option(fname, "%s must be a %s, got %s", key, want, type(v)) end
    return v
  end
end

local function positive_integer(max)
  return function(v, fname, key)
    if math.type(v) ~= "integer" or v < 1 or (max and v > max) then
      bad_option(fname, "%s must be a positive integer%s, got %s", key,
        max and " up to " .. max or "", show(v))
    end
    return v
  end
end

local function positive_number(v, fname, key)
  if type(v) ~= "number" or v ~= v or v <= 0 then
    bad_option(fname, "%s must be a positive number of seconds, got %s", key, show(v))
  end
  return v
end

local POOL_OPTIONS = {
  max_workers = positive_integer(4096),
  task_timeout = positive_number,
  max_memory = function(v, fname, key)
    if math.type(v) ~= "integer" or v < 1 << 20 then
      bad_option(fname, "%s must be an integer number of bytes, at least 1 MiB (1 << 20), got %s",
        key, show(v))
    end
    return v
  end,
  initializer = function(v, fname)
    if not callable(v) then bad_option(fname, "initializer must be a function, got %s", type(v)) end
    return v
  end,
  initargs = of_type("table"),
  name = of_type("string"),
  max_depth = positive_integer(1000),
  -- process pools only:
  max_tasks_per_child = positive_integer(),
  worker = of_type("string"),
  return_functions = of_type("boolean"),
  grace = positive_number,
  -- MPI pools only:
  spawn = positive_integer(4096),
  spawn_timeout = positive_number,
}

local THREAD_OPTIONS = { max_workers = true, initializer = true, initargs = true, name = true,
  max_depth = true, task_timeout = true, max_memory = true }
local PROCESS_OPTIONS = { max_workers = true, initializer = true, initargs = true,
  max_tasks_per_child = true, worker = true, max_depth = true, return_functions = true,
  task_timeout = true, max_memory = true, grace = true }

-- Checks a constructor's argument (a table, a number for max_workers, or
-- nil) and returns the table of options for the core.
local function pool_options(opts, fname, allowed, workers)
  if opts == nil then opts = {} end
  if type(opts) == "number" then opts = { max_workers = opts } end
  if type(opts) ~= "table" then
    error(("bad argument #1 to '%s' (table or number expected, got %s)"):format(fname, type(opts)), 3)
  end
  local out = {}
  for k, v in pairs(opts) do
    if not allowed[k] then
      error(("bad argument to '%s' (unknown option %s)"):format(fname, show_key(k)), 3)
    end
    out[k] = POOL_OPTIONS[k](v, fname, k)
  end
  out.max_workers = out.max_workers or workers
  return out
end

function futures.ThreadPoolExecutor(opts)
  check_dot(opts, "ThreadPoolExecutor")
  local o = pool_options(opts, "ThreadPoolExecutor", THREAD_OPTIONS,
    math.min(32, core.cpu_count() + 4))
  local ok, ex = pcall(core.thread_pool, o)
  if not ok then reraise(ex, 2, true) end
  return ex
end

--- ProcessPoolExecutor{ max_workers, initializer, initargs, max_tasks_per_child,
--- worker, max_depth, return_functions } (docs/process_pool.md); a number is
--- max_workers.
function futures.ProcessPoolExecutor(opts)
  check_dot(opts, "ProcessPoolExecutor")
  local o = pool_options(opts, "ProcessPoolExecutor", PROCESS_OPTIONS, core.cpu_count())
  local ok, ex = pcall(core.process_pool, o)
  if not ok then reraise(ex, 2, true) end
  return ex
end

--- MPIPoolExecutor{ max_workers, initializer, initargs, max_tasks_per_child,
--- worker, max_depth, return_functions, task_timeout, max_memory, grace,
--- spawn, spawn_timeout } (docs/mpi.md); a number is max_workers. Loads
--- futures.mpi, which on the ranks other than 0 of an MPI job serves tasks
--- and ends the process instead of returning.
local MPI_OPTIONS = { max_workers = true, initializer = true, initargs = true,
  max_tasks_per_child = true, worker = true, max_depth = true, return_functions = true,
  task_timeout = true, max_memory = true, grace = true, spawn = true, spawn_timeout = true }

function futures.MPIPoolExecutor(opts)
  check_dot(opts, "MPIPoolExecutor")
  local o = pool_options(opts, "MPIPoolExecutor", MPI_OPTIONS, nil)
  local found, mpi = pcall(require, "futures.mpi")
  if not found then
    error("MPIPoolExecutor: futures.mpi cannot be loaded (lua-futures was built without "
      .. "MPI, or the module is not on package.cpath): " .. tostring(mpi), 2)
  end
  local ok, ex = pcall(mpi.pool, o)
  if not ok then reraise(ex, 2, true) end
  return ex
end

---------------------------------------------------------------- map

local MAP_OPTIONS = { timeout = true, chunksize = true, buffersize = true, ordered = true }

-- The last argument of map is its options table when it is a plain table
-- (no metatable) that has keys but no [1]. An empty table is an (empty)
-- sequence, so map(fn, t, {}) maps nothing, as zip would; a table with a
-- misspelt option is still the options table, and an error.
local function is_options(v)
  return type(v) == "table" and getmetatable(v) == nil and rawget(v, 1) == nil
    and next(v) ~= nil
end

local function is_iterable(v)
  local t = type(v)
  return t == "table" or t == "function"
end

-- Lua passes several values only from the last expression of an argument
-- list, so a generic-for iterator (function, state, control and maybe a
-- closing value, as pairs, ipairs and io.lines return them) can only be the
-- last iterable. Returns the position in args[1..n] of its function and its
-- number of values (3 or 4), or nil: the last three values are one when the
-- first is a function and the third (the control) is not an iterable; else
-- the last four, tested the same way.
local function find_for_iterator(args, n)
  if n >= 3 and type(args[n - 2]) == "function" and not is_iterable(args[n]) then
    return n - 2, 3
  end
  if n >= 4 and type(args[n - 3]) == "function" and not is_iterable(args[n - 1]) then
    return n - 3, 4
  end
end

local function closable(v)
  if v == nil or v == false then return true end
  local getmt = debug and debug.getmetatable or getmetatable
  local mt = getmt(v)
  return type(mt) == "table" and mt.__close ~= nil
end

-- A source yields the values of the next step of an iterable, nil first at
-- its end. A sequence gives t[i]; a function is called as the generic for
-- calls it, f(state, control), the control being the step's first value.
local function sequence(t)
  local i = 0
  return function() i = i + 1; return t[i] end
end

local function stepper(iterator, state, control)
  local function advance(...)
    control = ...
    return ...
  end
  return function() return advance(iterator(state, control)) end
end

-- The core names a value that cannot travel by its place in the call it
-- encoded: "cannot transfer argument #5 (field 'x'): userdata". For a chunk
-- that call is (fn, w, item 1's w values, item 2's...), for one item (fn,
-- its values). Say which item and which of its values instead.
local function transfer_error(msg, first_item, w, chunked)
  local v, path, reason = msg:match("^cannot transfer argument #(%d+)(.-): (.*)$")
  if not v then return "map: " .. msg end
  v = tonumber(v)
  local base = chunked and 3 or 2   -- the place of the first item's first value
  if v < base then return "map: cannot transfer the function" .. path .. ": " .. reason end
  local inner = path:match("^ %((.*)%)$")
  return ("map: cannot transfer item %d (value #%d%s): %s"):format(first_item + (v - base) // w,
    (v - base) % w + 1, inner and ", " .. inner or "", reason)
end

--- for i, ... in ex:map(fn, iterable, ..., { timeout, chunksize, buffersize, ordered })
function methods:map(fn, ...)
  check_self(self, "map")
  local nargs = select("#", ...)
  local args = { ... }
  local opts = {}
  if nargs >= 2 and is_options(args[nargs]) then
    opts = args[nargs]
    args[nargs] = nil
    nargs = nargs - 1
    check_options(opts, MAP_OPTIONS, "map")
  end
  if nargs == 0 then error("bad argument #2 to 'map' (an iterable expected)", 2) end
  if not callable(fn) then
    error(("bad argument #1 to 'map' (function expected, got %s)"):format(type(fn)), 2)
  end
  local timeout = check_timeout(opts.timeout, "map")
  local chunksize = check_count(opts.chunksize, "map", "chunksize", 1)
  local buffersize = check_count(opts.buffersize, "map", "buffersize", nil)
  local ordered = opts.ordered
  if ordered == nil then
    ordered = true
  elseif type(ordered) ~= "boolean" then
    error(("bad argument to 'map' (ordered must be a boolean, got %s)"):format(show(ordered)), 2)
  end
  local deadline = timeout and core.monotonic() + timeout

  -- The iterables: m sources, the last of which may be a generic-for
  -- iterator with a closing value.
  local last_at, last_n = find_for_iterator(args, nargs)
  local m = last_at or nargs
  local closing = last_n == 4 and args[nargs] or nil
  if not closable(closing) then
    error(("bad argument #%d to 'map' (the iterator's closing value must be nil, false "
      .. "or have a __close metamethod, got %s)"):format(nargs + 1, show(closing)), 2)
  end
  local sources = {}
  for k = 1, m do
    local v = args[k]
    if k == last_at then
      sources[k] = stepper(v, args[k + 1], args[k + 2])
    elseif type(v) == "table" then
      sources[k] = sequence(v)
    elseif type(v) == "function" then
      sources[k] = stepper(v, nil, nil)
    else
      error(("bad argument #%d to 'map' (table or iterator function expected, got %s)")
        :format(k + 1, type(v)), 2)
    end
  end
  -- Every iterable gives one value per item but the last one when it is a
  -- function: all the values of its step go to fn (fn(k, v) for pairs).
  local last_all = type(args[m]) == "function"
  -- The common case, one table: fill reads it directly.
  local single = m == 1 and type(args[1]) == "table" and args[1] or nil
  local next_index = 1

  -- The closing value is closed once, when reading ends (an iterable ran
  -- out) or when the map's iteration ends, whichever comes first.
  local input_closed = closing == nil
  local function close_input()
    if input_closed then return end
    input_closed = true
    local _ <close> = closing
  end

  local exhausted = false
  local function stop_reading()
    exhausted = true
    close_input()
  end

  -- One item of the general case into `item`: returns its number of values,
  -- or nil at the end of an iterable.
  local item = {}
  local function take_last(...)
    local v = ...
    if v == nil then return nil end
    local n = select("#", ...)
    item[m] = v
    if n > 1 then table.move({ ... }, 2, n, m + 1, item) end
    return m - 1 + n
  end
  local function read_item()
    for s = 1, m - 1 do
      local v = sources[s]()
      if v == nil then return nil end
      item[s] = v
    end
    if last_all then return take_last(sources[m]()) end
    local v = sources[m]()
    if v == nil then return nil end
    item[m] = v
    return m
  end

  -- The futures submitted and not yet yielded, head first, with the number
  -- of items each carries (two arrays: no table per item) and, for an
  -- unordered map, the number of its first item.
  local sub_f, sub_k, sub_i = {}, {}, {}
  local head, tail = 1, 0
  local in_flight = 0

  -- Submits k items of w values each (chunk[1 .. k * w]) as one future. A
  -- value that cannot travel is named by its item, not by its place in
  -- the call the core saw.
  local items_sent = 0
  local function submit(chunk, k, w)
    local f, msg
    if chunksize == 1 then
      f, msg = self:_submit_item(fn, table.unpack(chunk, 1, w))
    else
      f, msg = self:_submit_chunk(fn, w, table.unpack(chunk, 1, k * w))
    end
    if f == nil then
      error({ core_error = transfer_error(msg, items_sent + 1, w, chunksize > 1) }, 0)
    end
    tail = tail + 1
    sub_f[tail], sub_k[tail] = f, k
    if not ordered then sub_i[tail] = items_sent + 1 end
    items_sent = items_sent + k
    return k
  end

  -- Reads up to `count` items and submits them in chunks of items with the
  -- same number of values.
  local function fill(count)
    local added = 0
    if single and chunksize == 1 then   -- the common case: one call per item
      local submit_item = self._submit_item
      while added < count do
        local v = single[next_index]
        if v == nil then stop_reading(); break end
        local f, msg = submit_item(self, fn, v)
        if f == nil then
          error({ core_error = transfer_error(msg, items_sent + 1, 1, false) }, 0)
        end
        next_index = next_index + 1
        tail = tail + 1
        sub_f[tail], sub_k[tail] = f, 1
        if not ordered then sub_i[tail] = items_sent + 1 end
        items_sent = items_sent + 1
        added = added + 1
      end
    end
    while not exhausted and added < count do
      local chunk, k, w = {}, 0, nil
      if single then   -- one sequence: read it in place, no call per item
        local want = math.min(chunksize, count - added)
        local v = single[next_index]
        while v ~= nil and k < want do
          k = k + 1
          chunk[k] = v
          next_index = next_index + 1
          v = single[next_index]
        end
        if v == nil then stop_reading() end
        w = 1
      else
        while k < chunksize and added + k < count do
          local width = read_item()
          if width == nil then stop_reading(); break end
          if k > 0 and width ~= w then   -- a new width starts a new chunk
            added = added + submit(chunk, k, w)
            chunk, k = {}, 0
          end
          w = width
          table.move(item, 1, w, k * w + 1, chunk)
          k = k + 1
        end
      end
      if k > 0 then added = added + submit(chunk, k, w) end
    end
    in_flight = in_flight + added
  end

  -- Raises an error of fill at `level` (counted from the caller of
  -- fill_error): a submit's error is the core's, others the iterables' own.
  local function fill_error(err, level)
    if type(err) == "table" and getmetatable(err) == nil and err.core_error ~= nil then
      reraise(err.core_error, level + 1, true)
    end
    reraise(err, level + 1)
  end

  local ok, err = pcall(fill, buffersize or math.huge)
  if not ok then
    close_input()
    fill_error(err, 2)
  end

  local index = 0
  local outcome, pos, left = nil, 0, 0   -- the chunk being walked
  local finished = false

  -- The end of the iteration (the last item, an error, a break): cancels
  -- the items not yet yielded and closes the closing value. Later calls of
  -- the iterator return nil.
  local function finish()
    if finished then return end
    finished = true
    outcome, left = nil, 0
    -- Last first: cancelling an item that waits on a worker (an MPI rank
    -- holds up to two) frees that worker, which would otherwise take the
    -- next item before its own cancel comes.
    for q = tail, head, -1 do
      local f = sub_f[q]
      sub_f[q], sub_k[q], sub_i[q] = nil, nil, nil
      if f then f:cancel() end
    end
    head = tail + 1
    close_input()
  end

  -- The next item of the chunk being walked, as item number `no` and its
  -- values; an item that failed ends the iteration with its error.
  local function walk_chunk(no)
    left = left - 1
    local ok_item, n = outcome[pos], outcome[pos + 1]
    local first = pos + 2
    pos = first + n
    if not ok_item then
      local e, traceback = outcome[first], outcome[first + 1]
      finish()
      core._raise_task_error(e, traceback)
    end
    if n == 1 then return no, outcome[first] end
    return no, table.unpack(outcome, first, first + n - 1)
  end

  local function remaining()
    if not deadline then return nil end
    local r = deadline - core.monotonic()
    return r > 0 and r or 0
  end

  -- The outcome of the future of item `index`: its values table, or the
  -- error raised at the user's loop (the caller of the iterator).
  local function wait_for(f)
    local got, t = pcall(f._outcome, f, remaining())
    if got then return t end
    local done = f:done()
    if not done then f:cancel() end   -- not yielded either (as Python does)
    finish()
    if not done and futures.iserror(t, futures.TimeoutError) then
      raise(futures.TimeoutError, "map: item %d not done after %g seconds", index, timeout)
    end
    if done then error(t, 0) end   -- the task's own error, unchanged
    reraise(t, 3, true)            -- interrupted!
  end

  local function next_item()
    if finished then return nil end
    if left == 0 then
      if head > tail then finish(); return nil end
      local f, k = sub_f[head], sub_k[head]
      sub_f[head], sub_k[head] = nil, nil
      head = head + 1
      in_flight = in_flight - k
      if buffersize then
        local filled, ferr = pcall(fill, buffersize - in_flight)
        if not filled then
          head = head - 1   -- cancelled with the rest
          sub_f[head], sub_k[head] = f, k
          finish()
          fill_error(ferr, 2)
        end
      end
      index = index + 1
      if chunksize == 1 then
        local t = wait_for(f)
        if t.n == 1 then return index, t[1] end
        return index, table.unpack(t, 1, t.n)
      end
      outcome, pos, left = wait_for(f)[1], 1, k
    else
      index = index + 1
    end
    return walk_chunk(index)
  end
  local closer = setmetatable({}, { __close = function() finish() end })
  if ordered then return next_item, nil, nil, closer end

  -- Unordered: items as their futures complete, each with its number. A
  -- waiter watches the futures not yet yielded; futures submitted after
  -- it was made (buffersize) join when it has nothing ready, so that the
  -- waiter is rebuilt at most once per blocking wait.
  local waiter, waiter_tail = nil, 0
  local at_of = {}   -- future -> its place in sub_f
  local function watch_outstanding()
    while head <= tail and sub_f[head] == nil do head = head + 1 end
    local list, n = {}, 0
    for q = head, tail do
      local f = sub_f[q]
      if f then
        n = n + 1
        list[n] = f
        at_of[f] = q
      end
    end
    waiter, waiter_tail = core.waiter(list), tail
    return n
  end

  -- The place in sub_f of the next completed future, or nil at the end.
  local function next_completed()
    while true do
      if waiter then
        local fresh = waiter_tail < tail
        local ok, f, unfinished = pcall(waiter.next, waiter,
          fresh and core.monotonic() or deadline)
        if not ok then
          finish()
          reraise(f, 4, true)   -- interrupted!
        end
        if f then
          local q = at_of[f]
          at_of[f] = nil
          return q
        end
        if not fresh and unfinished then
          finish()
          raise(futures.TimeoutError, "map: %d items not done after %g seconds",
            items_sent - index, timeout)
        end
      end
      if watch_outstanding() == 0 then return nil end
    end
  end

  local first_cur, walked = 0, 0   -- the chunk being walked: its first item
  local function next_unordered()
    if finished then return nil end
    if left == 0 then
      local q = next_completed()
      if q == nil then finish(); return nil end
      local f, k = sub_f[q], sub_k[q]
      first_cur = sub_i[q]
      sub_f[q], sub_k[q], sub_i[q] = nil, nil, nil
      in_flight = in_flight - k
      if buffersize then
        local filled, ferr = pcall(fill, buffersize - in_flight)
        if not filled then
          finish()
          fill_error(ferr, 2)
        end
      end
      index = index + 1
      local got, t = pcall(f._outcome, f, 0)
      if not got then
        finish()
        error(t, 0)   -- the task's own error, unchanged
      end
      if chunksize == 1 then
        if t.n == 1 then return first_cur, t[1] end
        return first_cur, table.unpack(t, 1, t.n)
      end
      outcome, pos, left, walked = t[1], 1, k, 0
    else
      index = index + 1
    end
    walked = walked + 1
    return walk_chunk(first_cur + walked - 1)
  end
  return next_unordered, nil, nil, closer
end

---------------------------------------------------------------- wait

futures.FIRST_COMPLETED = "FIRST_COMPLETED"
futures.FIRST_EXCEPTION = "FIRST_EXCEPTION"
futures.ALL_COMPLETED = "ALL_COMPLETED"
local WHEN = { ALL_COMPLETED = 0, FIRST_COMPLETED = 1, FIRST_EXCEPTION = 2 }

--- done, not_done = futures.wait(fs, { timeout, return_when })
--- (or futures.wait(fs, timeout, return_when))
function futures.wait(fs, timeout, return_when)
  check_dot(fs, "wait")
  if type(fs) ~= "table" then
    error(("bad argument #1 to 'wait' (table of futures expected, got %s)"):format(type(fs)), 2)
  end
  check_futures(fs, "wait")
  if type(timeout) == "table" then
    check_options(timeout, { timeout = true, return_when = true }, "wait")
    timeout, return_when = timeout.timeout, timeout.return_when
  end
  check_timeout(timeout, "wait")
  local when = WHEN[return_when or "ALL_COMPLETED"]
  if not when then
    error(("bad argument to 'wait' (return_when must be FIRST_COMPLETED, "
      .. "FIRST_EXCEPTION or ALL_COMPLETED, got %s)"):format(show(return_when)), 2)
  end
  local ok, done, not_done = pcall(core.wait, fs, timeout, when)
  if not ok then reraise(done, 2, true) end
  return done, not_done
end

--- for f in futures.as_completed(fs, timeout) do ... end
function futures.as_completed(fs, timeout)
  check_dot(fs, "as_completed")
  if type(fs) ~= "table" then
    error(("bad argument #1 to 'as_completed' (table of futures expected, got %s)")
      :format(type(fs)), 2)
  end
  check_futures(fs, "as_completed")
  check_timeout(timeout, "as_completed")
  local waiter = core.waiter(fs)
  local waiter_next = waiter.next
  local deadline = timeout and core.monotonic() + timeout
  local function next_done()
    -- A future done already comes without a pcall: only a wait can raise.
    local ready = waiter_next(waiter, false)
    if ready ~= false then return ready end
    local ok, f, unfinished = pcall(waiter_next, waiter, deadline)
    if not ok then reraise(f, 2, true) end
    if f == nil and unfinished then
      raise(futures.TimeoutError, "%d futures unfinished after %g seconds", unfinished, timeout)
    end
    return f
  end
  return next_done, nil, nil, waiter
end

---------------------------------------------------------------- sharing

local QUEUE_OPTIONS = { maxsize = true }

--- futures.Queue{ maxsize = n } (or futures.Queue(n), futures.Queue()): a
--- FIFO shared by every task, thread or process, that holds it.
function futures.Queue(opts)
  check_dot(opts, "Queue")
  if opts == nil then opts = {} end
  if type(opts) == "number" then opts = { maxsize = opts } end
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'Queue' (table or number expected, got %s)"):format(type(opts)), 2)
  end
  check_options(opts, QUEUE_OPTIONS, "Queue")
  local maxsize = opts.maxsize
  if maxsize ~= nil and (math.type(maxsize) ~= "integer" or maxsize < 0) then
    error(("bad argument to 'Queue' (maxsize must be a non-negative integer, got %s)")
      :format(show(maxsize)), 2)
  end
  return core.Queue(maxsize or 0)
end

futures.SharedArray = core.SharedArray

--- futures.progress(source, opts): loaded on its first call, so that a
--- worker that loads this module to run a task (futures.sleep, say) does
--- not compile a progress line it never draws. A tail call: its argument
--- errors name the caller's line, as if it were called directly.
function futures.progress(...)
  return require("futures.progress")(...)
end

return futures
