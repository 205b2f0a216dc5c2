---@meta futures
-- Type annotations of the futures module for the Lua language server
-- (LuaLS / lua-language-server), so that editors complete and type-check
-- `require "futures"`. Nothing here runs: the functions are bodiless
-- declarations; the real module is futures/init.lua with futures.core. Add this directory
-- (or the installed share/lua/5.4/futures/) to `workspace.library`.
-- docs/API.md is the reference; keep the two in step (spec/docs_spec.lua
-- checks that every exported name and method appears in both).
--
-- Required as a module (`require "futures.meta"`) it returns the table of
-- those declarations; the language server reads that return value as the
-- type of `require "futures"`.

---------------------------------------------------------------- errors

---An error raised by the runtime: a table with `type` and `message`, whose
---metatable is one of the error classes (`futures.TimeoutError`...). It
---prints as `TimeoutError: <message>`. Test it with `futures.iserror`.
---@class futures.Error
---@field type futures.ErrorType
---@field message string

---@alias futures.ErrorType
---| "CancelledError"     # the future was cancelled
---| "TimeoutError"       # a timeout passed before the future was done
---| "BrokenExecutor"     # the executor cannot run tasks any more
---| "BrokenThreadPool"   # a thread pool's initializer failed (a BrokenExecutor)
---| "BrokenProcessPool"  # a process pool's initializer failed or a worker died (a BrokenExecutor)
---| "InvalidStateError"  # set_result/set_exception/set_running_or_notify_cancel on a future in the wrong state
---| "RuntimeError"       # submit after shutdown, or no worker could be started

---An error class: the metatable of the errors of one type, with that
---`type`; give it to `futures.iserror`.
---@class futures.ErrorClass
---@field type futures.ErrorType
---@field __name string
---@field __tostring fun(e: futures.Error): string

---------------------------------------------------------------- options

---Options of `futures.ThreadPoolExecutor`. A number `n` stands for
---`{ max_workers = n }`.
---@class futures.ThreadPoolOptions
---@field max_workers? integer  # default min(32, cpu_count() + 4); workers start on demand
---@field initializer? function # run once in each new worker state, before its first task
---@field initargs? any[]       # arguments of initializer (copied to each worker)
---@field name? string          # thread name prefix (shown by ps/top/gdb)
---@field max_depth? integer    # deepest nesting of arguments and results (1-1000, default 200)
---@field task_timeout? number  # seconds each task may run; then TimeoutError
---@field max_memory? integer   # bytes of Lua heap per worker state (at least 1 MiB)

---Options of `futures.ProcessPoolExecutor`. A number `n` stands for
---`{ max_workers = n }`.
---@class futures.ProcessPoolOptions
---@field max_workers? integer         # default cpu_count()
---@field initializer? function        # run once in each new worker process
---@field initargs? any[]              # arguments of initializer
---@field max_tasks_per_child? integer # replace a worker after this many tasks
---@field max_depth? integer # deepest nesting of arguments and results (1-1000, default 200)
---@field return_functions? boolean # results from workers may carry Lua functions (default false)
---@field task_timeout? number     # seconds each task may run; then TimeoutError
---@field max_memory? integer      # bytes of Lua heap per worker process (at least 1 MiB)
---@field grace? number            # seconds a worker has to stop a task before it is killed (default 1)
---@field worker? string               # path of the worker interpreter (default: found next to the module, or LUA_FUTURES_WORKER)

---Options of `ex:map`, given as its last argument.
---@class futures.MapOptions
---@field timeout? number    # seconds, counted from the call to map; then TimeoutError
---@field chunksize? integer # items sent to a worker per transfer (default 1)
---@field buffersize? integer # at most this many items in flight (default: all submitted at the call)

---Options of `ex:shutdown`.
---@class futures.ShutdownOptions
---@field wait? boolean           # default true: return once every worker has exited
---@field cancel_futures? boolean # default false: cancel the futures not yet started
---@field interrupt? boolean      # default false: also stop the running tasks (implies cancel_futures)

---Options of `ex:submit_with`.
---@class futures.SubmitOptions
---@field timeout? number # seconds the task may run; then it is stopped and fails with TimeoutError

---Options of `futures.wait`.
---@class futures.WaitOptions
---@field timeout? number
---@field return_when? futures.ReturnWhen # default ALL_COMPLETED

---@alias futures.ReturnWhen "FIRST_COMPLETED"|"FIRST_EXCEPTION"|"ALL_COMPLETED"

---@alias futures.FutureState "pending"|"running"|"cancelled"|"finished"

---Options of `futures.progress`.
---@class futures.ProgressOptions
---@field total? integer      # number of items (default: the number of futures in the table; unknown for an iterator)
---@field label? string       # text in front of the line (default "progress")
---@field stream? file*|{ write: fun(self: any, ...: string): any } # default io.stderr
---@field tty? boolean        # draw a bar in place (true) or plain lines (false); default: whether stream is a terminal
---@field interval? number    # seconds between updates (default 0.1 for a bar, 2 for plain lines)
---@field width? integer      # characters of the bar (default 24)
---@field timeout? number     # for a table of futures: as_completed's timeout
---@field clock? fun(): number # time source in seconds (default futures.monotonic)

---------------------------------------------------------------- Future

---The eventual outcome of a call: its values, its error, or its
---cancellation. Returned by `ex:submit`, or made by `futures.Future()`.
---@class futures.Future
local Future = {}

---Every value the call returned. Blocks at most `timeout` seconds (nil:
---forever), then raises a `TimeoutError`; never returns nil for "not ready".
---A failed call raises its error again, as the original value; a cancelled
---future raises `CancelledError`.
---@param timeout? number
---@return any ...
function Future:result(timeout) end

---nil when the call succeeded; otherwise its error value and the worker's
---traceback. Waits and raises like `result` (TimeoutError, CancelledError).
---@param timeout? number
---@return any err
---@return string? traceback
function Future:exception(timeout) end

---Cancels the future if it has not started running; true when it did.
---@return boolean
function Future:cancel() end

---Stops the task: a pending future is cancelled, a running task is stopped
---and its future ends cancelled. True when the future will end cancelled.
---@return boolean
function Future:interrupt() end

---@return boolean
function Future:cancelled() end

---@return boolean
function Future:running() end

---True when finished (with values or an error) or cancelled.
---@return boolean
function Future:done() end

---@return futures.FutureState
function Future:state() end

---Calls `fn(future)` on this Lua state when the future is done: at once if
---it already is, otherwise at the next entry into the runtime (result,
---wait, as_completed, map's iterator, submit, shutdown, futures.sleep,
---futures.poll). An error in fn is reported on stderr.
---@param fn fun(f: futures.Future)
function Future:add_done_callback(fn) end

---For code that completes a `futures.Future()` itself: marks it running and
---returns true, or returns false if it was cancelled. Raises
---InvalidStateError if it is neither pending nor cancelled.
---@return boolean
function Future:set_running_or_notify_cancel() end

---Finishes the future with these values. Raises InvalidStateError if done.
---@param ... any
function Future:set_result(...) end

---Finishes the future with an error value. Raises InvalidStateError if done.
---@param err any
function Future:set_exception(err) end

---------------------------------------------------------------- Executor

---A pool of workers. Close it with `<close>`, or call `shutdown`.
---@class futures.Executor
local Executor = {}

---Schedules `fn(...)` on a worker and returns its future. The function, its
---upvalues and the arguments are copied to the worker. Raises after
---shutdown, a `BrokenThreadPool`/`BrokenProcessPool` error when the pool is
---broken, and a transfer error for a value that cannot travel.
---@param fn function
---@param ... any
---@return futures.Future
function Executor:submit(fn, ...) end

---Calls `fn` on the items of one or more iterables and yields
---`i, ...results` in input order. An iterable is a sequence, an iterator
---function, or — last — a whole generic-for iterator such as `pairs(t)`,
---`ipairs(t)` or `io.lines(path)` (its closing value is closed when the map
---ends); several are zipped, the shortest ends. The last iterable, when a
---function, passes every value of its step (`fn(k, v)` for `pairs`). A last
---argument with keys but no `[1]` is `futures.MapOptions`; `{}` is an empty
---sequence. A failed call or a timeout raises when the loop reaches it, and
---then the iteration is over: the rest is cancelled, later calls give nil.
---@param fn function
---@param ... any iterables, then optionally futures.MapOptions
---@return fun(): integer?, any
---@return nil
---@return nil
---@return any closer # to-be-closed: cancels what is left
function Executor:map(fn, ...) end

---Stops new submissions. With `wait` (default true) returns once every
---worker has exited; with `cancel_futures` cancels the futures not yet
---started. `ex:shutdown(false)` is `ex:shutdown{ wait = false }`.
---@param opts? futures.ShutdownOptions|boolean
function Executor:shutdown(opts) end

---Submits fn(...) with options of its own (a run limit).
---@param opts futures.SubmitOptions
---@param fn function
---@return futures.Future
function Executor:submit_with(opts, fn, ...) end

---Process pools: SIGTERM to every worker; the pool is broken and shut down.
function Executor:terminate_workers() end

---Process pools: SIGKILL to every worker; the pool is broken and shut down.
function Executor:kill_workers() end

---------------------------------------------------------------- module

---@class futures
---@field _VERSION string             # "lua-futures x.y.z"
---@field FIRST_COMPLETED "FIRST_COMPLETED"
---@field FIRST_EXCEPTION "FIRST_EXCEPTION"
---@field ALL_COMPLETED "ALL_COMPLETED"
---@field CancelledError futures.ErrorClass
---@field TimeoutError futures.ErrorClass
---@field BrokenExecutor futures.ErrorClass
---@field BrokenThreadPool futures.ErrorClass
---@field BrokenProcessPool futures.ErrorClass
---@field InvalidStateError futures.ErrorClass
---@field RuntimeError futures.ErrorClass
local futures = {}

---An executor whose workers are native threads, each with its own lua_State.
---@param opts? futures.ThreadPoolOptions|integer
---@return futures.Executor
function futures.ThreadPoolExecutor(opts) end

---An executor whose workers are processes running the bundled interpreter.
---A worker that dies fails only the task it was running.
---@param opts? futures.ProcessPoolOptions|integer
---@return futures.Executor
function futures.ProcessPoolExecutor(opts) end

---A future that no executor owns, to be completed with set_result or
---set_exception.
---@return futures.Future
function futures.Future() end

---Waits for the futures; returns the done and the not done ones, each in
---the order given, duplicates once.
---@param fs futures.Future[]
---@param opts? futures.WaitOptions|number options, or the timeout
---@param return_when? futures.ReturnWhen when opts is a timeout
---@return futures.Future[] done
---@return futures.Future[] not_done
function futures.wait(fs, opts, return_when) end

---Yields the futures as they finish (those already done first, duplicates
---once); raises TimeoutError if `timeout` seconds pass first.
---@param fs futures.Future[]
---@param timeout? number
---@return fun(): futures.Future?
function futures.as_completed(fs, timeout) end

---Whether `err` is a runtime error of `class` (a class such as
---`futures.TimeoutError`, or its name). BrokenThreadPool and
---BrokenProcessPool errors are BrokenExecutor errors too.
---@param err any
---@param class futures.ErrorClass|futures.ErrorType
---@return boolean
function futures.iserror(err, class) end

---The number of CPUs online.
---@return integer
function futures.cpu_count() end

---Sleeps `seconds` (fractions allowed), running due callbacks before and
---after; Ctrl-C interrupts it.
---@param seconds number
function futures.sleep(seconds) end

---Seconds on a monotonic clock (for measuring intervals).
---@return number
function futures.monotonic() end

---Runs the done callbacks that are due on this state; returns how many ran.
---@return integer
function futures.poll() end

---A file descriptor of this state for any event loop to watch: readable
---exactly while callbacks are due here (futures completed, callbacks not yet
---run); `futures.poll()` runs them and drains it. The same descriptor each
---call; closed with the state. Never read, write or close it yourself.
---@return integer
function futures.pollfd() end

---Encodes values with the transfer codec into a string (as they would
---travel to a worker).
---@param ... any
---@return string
function futures.serialize(...) end

---@class futures.CodecOptions
---@field max_depth? integer nesting limit, 1 to 1000 (default 200)
---@field max_size? integer encoded size limit in bytes (default 0: none)
---@field functions? boolean deserialize only: accept functions (default true)

---Like futures.serialize, with limits.
---@param opts futures.CodecOptions
---@param ... any
---@return string
function futures.serialize_with(opts, ...) end

---Decodes a string made by futures.serialize, treating it as untrusted;
---returns the values. `{ functions = false }` for data from outside.
---@param s string
---@param opts? futures.CodecOptions
---@return any ...
function futures.deserialize(s, opts) end

---Wraps a table of futures (yielded as they complete) or an iterator such as
---`ex:map`'s (values passed through) and draws count, rate and ETA on stderr.
---@overload fun(fs: futures.Future[], opts?: futures.ProgressOptions): fun(): futures.Future?
---@param iterator function
---@param opts? futures.ProgressOptions
---@return fun(): any, any
function futures.progress(iterator, opts) end

return futures
