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
---| "Empty"              # Queue get timed out, or get_nowait on an empty queue
---| "Full"               # Queue put timed out, or put_nowait on a full queue
---| "Closed"             # put on a closed Queue, or get on a closed and empty one
---| "BrokenMPIPool"      # an MPI pool's initializer failed, a rank's worker died, or a rank died (a BrokenExecutor)

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

---Options of `futures.MPIPoolExecutor` (docs/mpi.md). A number `n` stands
---for `{ max_workers = n }`.
---@class futures.MPIPoolOptions
---@field max_workers? integer         # default: every serving rank
---@field initializer? function        # run once in each worker process of each rank
---@field initargs? any[]              # arguments of initializer
---@field max_tasks_per_child? integer # replace a rank's worker after this many tasks
---@field worker? string               # path of the interpreter that runs tasks, on every machine
---@field max_depth? integer           # deepest nesting of arguments and results (1-1000, default 200)
---@field return_functions? boolean    # results may carry Lua functions (default false)
---@field task_timeout? number         # seconds each task may run; then TimeoutError
---@field max_memory? integer          # bytes of Lua heap per worker process (at least 1 MiB)
---@field grace? number                # seconds a worker has to stop a task before it is killed (default 1)
---@field spawn? integer               # no MPI launcher: spawn this many serving ranks
---@field spawn_timeout? number        # seconds a spawn may take before it is an error (default 30)

---Options of `ex:map`, given as its last argument.
---@class futures.MapOptions
---@field timeout? number    # seconds, counted from the call to map; then TimeoutError
---@field chunksize? integer # items sent to a worker per transfer (default 1)
---@field buffersize? integer # at most this many items in flight (default: all submitted at the call)
---@field ordered? boolean    # false: yield items as they complete, each with its index (default true)

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

---Options of `futures.Queue`. A number `n` stands for `{ maxsize = n }`.
---@class futures.QueueOptions
---@field maxsize? integer # most items it holds (default 0: no limit); put waits beyond it

---@alias futures.ArrayKind "f64"|"f32"|"i64"|"i32"|"u8"

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
---shutdown, a `BrokenThreadPool`/`BrokenProcessPool`/`BrokenMPIPool` error when the pool is
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

---------------------------------------------------------------- Queue

---A first-in, first-out queue of copied values, shared by the host and every
---task (thread or process) it is passed to. Blocking calls take a timeout,
---are interrupted by Ctrl-C and wake when the queue is closed.
---@class futures.Queue
local Queue = {}

---Adds `v` (not nil; copied as a task argument is) at the end. On a full
---bounded queue waits at most `timeout` seconds, then raises Full; raises
---Closed on a closed queue.
---@param v any
---@param timeout? number
function Queue:put(v, timeout) end

---Takes the first item. On an empty queue waits at most `timeout` seconds,
---then raises Empty; raises Closed once the queue is closed and empty.
---@param timeout? number
---@return any
function Queue:get(timeout) end

---`put` that never waits: raises Full at once.
---@param v any
function Queue:put_nowait(v) end

---`get` that never waits: raises Empty (or Closed) at once.
---@return any
function Queue:get_nowait() end

---The number of items in the queue now.
---@return integer
function Queue:qsize() end

---No more puts; blocked puts and gets wake with Closed; what is queued can
---still be taken.
function Queue:close() end

---For a generic for: takes items until the queue is closed and drained.
---With `timeout`, a step that waits longer raises Empty.
---@param timeout? number
---@return fun(): any
function Queue:iter(timeout) end

---------------------------------------------------------------- SharedArray

---A fixed-size array of numbers outside every Lua heap: the same memory in
---the host and in every task it is passed to. `a[i]` (1-based) reads and
---writes an element, `#a` is its length.
---@class futures.SharedArray
---@field [integer] number
---@operator len: integer
local SharedArray = {}

---Sets elements i to j (default: all) to v; returns the array.
---@param v number
---@param i? integer
---@param j? integer
---@return futures.SharedArray
function SharedArray:fill(v, i, j) end

---A new table of elements i to j (default: all).
---@param i? integer
---@param j? integer
---@return number[]
function SharedArray:totable(i, j) end

---The bytes of elements i to j of a u8 array.
---@param i? integer
---@param j? integer
---@return string
function SharedArray:tostring(i, j) end

---Atomically adds v to element i of an i64 or i32 array; returns the new value.
---@param i integer
---@param v integer
---@return integer
function SharedArray:add(i, v) end

---@return futures.ArrayKind
function SharedArray:kind() end

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
---@field Empty futures.ErrorClass
---@field Full futures.ErrorClass
---@field Closed futures.ErrorClass
---@field BrokenMPIPool futures.ErrorClass
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

---An executor whose workers are the ranks of an MPI job (mpiexec -n N
---lua-futures --mpi script.lua): each task runs in a worker process of a
---serving rank, and one that dies fails only its task. Loading it makes the
---ranks other than 0 serve (the call never returns there); without a
---launcher it is a ProcessPoolExecutor with the same options.
---@param opts? futures.MPIPoolOptions|integer
---@return futures.Executor
function futures.MPIPoolExecutor(opts) end

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

---A queue shared by the host and every task it is passed to; a number is
---maxsize.
---@param opts? futures.QueueOptions|integer
---@return futures.Queue
function futures.Queue(opts) end

---A zero-filled array of n numbers of kind, shared without copies by the
---host and every task it is passed to.
---@param kind futures.ArrayKind
---@param n integer
---@return futures.SharedArray
function futures.SharedArray(kind, n) end

---Whether `err` is a runtime error of `class` (a class such as
---`futures.TimeoutError`, or its name). BrokenThreadPool,
---BrokenProcessPool and BrokenMPIPool errors are BrokenExecutor errors too.
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
---@field functions? boolean deserialize only: load Lua functions (bytecode) too (default false)

---Like futures.serialize, with limits.
---@param opts futures.CodecOptions
---@param ... any
---@return string
function futures.serialize_with(opts, ...) end

---Decodes a string made by futures.serialize, treating it as untrusted;
---returns the values. Lua functions in it are refused unless `opts` has
---`functions = true`: loading bytecode runs code, so allow it only for
---strings this program made.
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
