-- Fault injection driver for `make faults` (see src/lf_fault.c).
--
--   lua5.4 spec/fault_driver.lua EXE [--quick] [--ops=a,b] [--classes=c,d]
--
-- EXE is the fault-injection interpreter (build/fault/lua-futures). For each
-- operation and each class of fault point ("alloc": malloc, calloc, realloc
-- and strdup in our C code; "state": the worker states' allocator;
-- "thread": pthread_create; "socket": socketpair, pipe, eventfd; "spawn":
-- posix_spawn; "map": memfd_create, mmap, mremap), the driver first counts the class's calls during one clean
-- run of the operation, then runs it once for each fault point N = 1, 2,
-- 3, ... (all of the first 150, then a sample of every 12th or so), once
-- with only the N-th call failing and, for the allocators, once with every
-- call from the N-th on failing. Each run is a process of its own,
--   EXE spec/fault_driver.lua --run OP CLASS N STICKY
-- under `timeout`, with AddressSanitizer's reports sent to a file. A run
-- passes when the operation either succeeds with the right results or
-- raises a clean error (not enough memory, a worker that cannot start, a
-- broken pool), the runtime works afterwards, the process exits by itself
-- in time, and ASan reported nothing: no crash, no invalid access, no leak.
-- The driver prints one line per failed run and a summary with the number
-- of fault points tried, and exits 1 if any run failed.

---------------------------------------------------------------- child

local function child(op_name, class, n, sticky)
  local futures = require "futures"
  local core = require "futures.core"
  local function double(x) return x * 2 end

  -- Each operation: setup() outside the fault window returns a context;
  -- run(ctx) is what runs with the fault armed; it raises on any wrong
  -- result. teardown(ctx) runs after, disarmed.
  local ops = {}

  ops.thread_pool = {
    run = function()
      local ex = futures.ThreadPoolExecutor(2)
      local f = ex:submit(double, 21)
      assert(f:result(20) == 42, "wrong result")
      ex:shutdown()
    end,
  }

  ops.submit = {
    setup = function()
      local ex = futures.ThreadPoolExecutor(2)
      ex:submit(double, 1):result(20)
      return ex
    end,
    run = function(ex)
      local fs = {}
      for i = 1, 4 do fs[i] = ex:submit(function(t) return t.v * 2, { t.v } end, { v = i }) end
      for i = 1, 4 do
        local a, b = fs[i]:result(20)
        assert(a == 2 * i and b[1] == i, "wrong result")
      end
    end,
    teardown = function(ex) ex:shutdown() end,
  }

  ops.map = {
    setup = function()
      local ex = futures.ThreadPoolExecutor(2)
      ex:submit(double, 1):result(20)
      return ex
    end,
    run = function(ex)
      local items = {}
      for i = 1, 40 do items[i] = i end
      for _, cs in ipairs { 1, 8 } do
        local count = 0
        for i, v in ex:map(double, items, { chunksize = cs, timeout = 20 }) do
          assert(v == 2 * i, "wrong result")
          count = count + 1
        end
        assert(count == 40, "missing items")
      end
    end,
    teardown = function(ex) ex:shutdown() end,
  }

  ops.wait = {
    setup = function()
      local ex = futures.ThreadPoolExecutor(2)
      ex:submit(double, 1):result(20)
      return ex
    end,
    run = function(ex)
      local fs = {}
      for i = 1, 3 do fs[i] = ex:submit(double, i) end
      local bare = futures.Future()
      fs[4] = bare
      local ran = 0
      bare:add_done_callback(function() ran = ran + 1 end)
      fs[1]:add_done_callback(function() ran = ran + 1 end)
      assert(bare:set_running_or_notify_cancel())
      bare:set_result(8)
      local done = futures.wait(fs, { timeout = 20, return_when = futures.ALL_COMPLETED })
      assert(#done == 4, "wait returned early")
      local seen = 0
      for _ in futures.as_completed(fs, 20) do seen = seen + 1 end
      assert(seen == 4, "as_completed missed a future")
      futures.poll()
      assert(ran == 2, "a callback did not run")
      assert(bare:result(0) == 8 and fs[3]:result(0) == 6, "wrong result")
    end,
    teardown = function(ex) ex:shutdown() end,
  }

  ops.codec = {
    run = function()
      local shared = { 1, 2, 3 }
      local t = { shared = shared, again = shared, name = "x", n = 1.5,
        f = function(k) return shared[k] end }
      t.self = t
      local s = futures.serialize(t, "two", 3)
      local u, two, three = futures.deserialize(s, { functions = true })
      assert(two == "two" and three == 3 and u.self == u and u.shared == u.again, "wrong copy")
      assert(u.f(2) == 2, "wrong function")
      local s2 = futures.serialize_with({ max_depth = 10 }, u)
      assert(futures.deserialize(s2, { functions = true }).n == 1.5, "wrong copy")
    end,
  }

  ops.shutdown = {
    setup = function()
      local ex = futures.ThreadPoolExecutor(1)
      local sleep = futures.sleep
      local fs = { ex:submit(function() sleep(0.05) return 1 end) }
      for i = 2, 6 do fs[i] = ex:submit(double, i) end
      return { ex = ex, fs = fs }
    end,
    run = function(ctx)
      ctx.ex:shutdown { wait = false, cancel_futures = true }
      futures.wait(ctx.fs, 20)
      for _, f in ipairs(ctx.fs) do assert(f:done(), "a future is not done") end
      ctx.ex:shutdown()
      ctx.ex = nil
      -- executors dropped without shutdown, then collected and reaped
      for i = 1, 3 do futures.ThreadPoolExecutor(1):submit(double, i) end
      collectgarbage()
      collectgarbage()
      futures.ThreadPoolExecutor(1):shutdown()
    end,
  }

  ops.process_pool = {
    run = function()
      local px = futures.ProcessPoolExecutor(2)
      assert(px:submit(double, 21):result(30) == 42, "wrong result")
      local count = 0
      for i, v in px:map(double, { 1, 2, 3, 4, 5 }, { chunksize = 2, timeout = 30 }) do
        assert(v == 2 * i, "wrong result")
        count = count + 1
      end
      assert(count == 5, "missing items")
      px:shutdown()
    end,
  }

  -- The descriptor of event loops: an eventfd, a pipe when that fails,
  -- written by a completing worker and drained by poll().
  ops.pollfd = {
    setup = function()
      local ex = futures.ThreadPoolExecutor(1)
      ex:submit(double, 1):result(20)
      return ex
    end,
    run = function(ex)
      local fd = futures.pollfd()
      assert(math.type(fd) == "integer" and fd == futures.pollfd(), "wrong descriptor")
      local ran = 0
      local function count() ran = ran + 1 end   -- allocates nothing
      local fs = {}
      for i = 1, 3 do
        fs[i] = ex:submit(double, i)
        fs[i]:add_done_callback(count)
      end
      local bare = futures.Future()
      bare:add_done_callback(count)
      fs[4] = ex:submit(function(target) target:set_result(8) end, bare)
      futures.wait(fs, 20)
      for i = 1, 4 do
        local err = fs[i]:exception(0)   -- a task that met the fault
        if err then error(err, 0) end
      end
      futures.poll()
      assert(ran == 4, "a callback did not run")
      assert(fs[3]:result(0) == 6 and bare:result(0) == 8, "wrong result")
    end,
    teardown = function(ex) ex:shutdown() end,
  }

  -- A queue and a shared array between the host and a thread task, then
  -- a process task (served by the pool's reader: its faults are the host's).
  ops.sharing = {
    setup = function()
      local ex, px = futures.ThreadPoolExecutor(1), futures.ProcessPoolExecutor(1)
      ex:submit(double, 1):result(20)
      px:submit(double, 1):result(30)
      return { ex = ex, px = px }
    end,
    run = function(ctx)
      for _, ex in ipairs { ctx.ex, ctx.px } do
        -- the task puts, the host gets
        local q, a = futures.Queue(), futures.SharedArray("i64", 1)
        local f = ex:submit(function(q, a)
          for i = 1, 6 do q:put({ i }); a:add(1, i) end
        end, q, a)
        f:result(30)
        q:close()
        local sum = 0
        for v in q:iter(1) do sum = sum + v[1] end
        assert(sum == 21 and a[1] == 21, "wrong result")
        -- the host puts into a bounded queue, the task waits for each item
        local b = futures.Queue(1)
        f = ex:submit(function(b) local s = 0 for v in b:iter(20) do s = s + v end return s end, b)
        for i = 1, 6 do
          local ok, err = pcall(b.put, b, i, 20)
          if not ok then f:result(30); error(err, 0) end   -- the task's error first
        end
        b:close()
        assert(f:result(30) == 21, "wrong result")
      end
    end,
    teardown = function(ctx) ctx.ex:shutdown(); ctx.px:shutdown() end,
  }

  -- Big values through a process pool (memfds: lf_proto.h, "Big payloads").
  local function big_round_trips(px)
    local s = ("0123456789abcdef"):rep((3 << 20) // 16)
    local t = {}
    for i = 1, 200000 do t[i] = i end
    for _ = 1, 2 do
      assert(px:submit(function(v) return v end, s):result(30) == s, "wrong result")
      local r = px:submit(function(v) return v end, t):result(30)
      assert(#r == #t and r[#t] == #t, "wrong result")
    end
  end

  ops.big_frames = {
    setup = function()
      local px = futures.ProcessPoolExecutor(1)
      px:submit(double, 1):result(30)
      return px
    end,
    run = big_round_trips,
    teardown = function(px) px:shutdown() end,
  }

  -- The same with the faults inside the worker process.
  ops.big_worker = {
    setup = ops.big_frames.setup,
    arm = function() end,
    run = function(px)
      px:submit(function(k, c, st) require("futures.core")._fault_after(k, c, st) end,
        n, class, sticky):result(30)
      big_round_trips(px)
    end,
    disarm = function(px)
      local ok, calls, fired = pcall(function()
        return px:submit(function(c) return require("futures.core")._fault_after(0, c) end,
          class):result(30)
      end)
      if ok then return calls, fired end
      return -1, true
    end,
    teardown = ops.big_frames.teardown,
  }

  -- Faults inside a worker process: armed there by a task.
  ops.process_worker = {
    setup = function()
      local px = futures.ProcessPoolExecutor(1)
      px:submit(double, 1):result(30)
      return px
    end,
    arm = function() end,   -- inside run: arming may itself meet the fault
    run = function(px)
      px:submit(function(k, c, st) require("futures.core")._fault_after(k, c, st) end,
        n, class, sticky):result(30)
      assert(px:submit(function(t) return #t end, { 1, 2, 3 }):result(30) == 3, "wrong result")
      local count = 0
      for i, v in px:map(double, { 1, 2, 3, 4 }, { chunksize = 2, timeout = 30 }) do
        assert(v == 2 * i, "wrong result")
        count = count + 1
      end
      assert(count == 4, "missing items")
    end,
    disarm = function(px)
      -- the worker may have died of the fault: then there is nothing to disarm
      local ok, calls, fired = pcall(function()
        return px:submit(function(c) return require("futures.core")._fault_after(0, c) end,
          class):result(30)
      end)
      if ok then return calls, fired end
      return -1, true
    end,
    teardown = function(px) px:shutdown() end,
  }

  local op = assert(ops[op_name], "unknown operation " .. op_name)
  local ctx = op.setup and op.setup()
  if op.arm then op.arm(ctx) else core._fault_after(n, class, sticky) end
  local ok, err = pcall(op.run, ctx)
  local calls, fired
  if op.disarm then
    calls, fired = op.disarm(ctx)   -- counted in the worker
  else
    calls, fired = core._fault_after(0, class)
  end
  local msg = ok and "" or tostring(err):gsub("\n", " ")
  print(("outcome %s %s"):format(ok and "ok" or "error", msg))
  print(("calls %d fired %s"):format(calls, tostring(fired)))
  if op.teardown then pcall(op.teardown, ctx) end
  -- the runtime still works
  local ex = futures.ThreadPoolExecutor(1)
  local after = ex:submit(double, 4):result(20)
  ex:shutdown()
  print(("after %s"):format(after == 8 and "ok" or "wrong"))
  io.stdout:flush()
  os.exit(0, true)   -- close the state: joins the workers, so LSan sees all
end

if arg[1] == "--run" then
  return child(arg[2], arg[3], tonumber(arg[4]), arg[5] == "1")
end

---------------------------------------------------------------- driver

local EXE = assert(arg[1], "usage: fault_driver.lua EXE [--quick] [--ops=a,b] [--classes=c,d]")
local quick, only_ops, only_classes = false, nil, nil
for i = 2, #arg do
  if arg[i] == "--quick" then quick = true
  elseif arg[i]:match("^%-%-ops=") then only_ops = arg[i]:match("=(.*)")
  elseif arg[i]:match("^%-%-classes=") then only_classes = arg[i]:match("=(.*)")
  else error("unknown option " .. arg[i]) end
end

local function listed(list, x)
  return list == nil or ("," .. list .. ","):find("," .. x .. ",", 1, true) ~= nil
end

-- Which classes can fire in each operation.
local PLAN = {
  { "thread_pool", { "alloc", "state", "thread" } },
  { "submit", { "alloc", "state", "thread" } },
  { "map", { "alloc", "state", "thread" } },
  { "wait", { "alloc", "state", "thread" } },
  { "codec", { "alloc" } },
  { "shutdown", { "alloc", "state", "thread" } },
  { "process_pool", { "alloc", "thread", "socket", "spawn" } },
  { "sharing", { "alloc", "state" } },
  { "process_worker", { "alloc", "state" } },
  { "pollfd", { "alloc", "thread", "socket" } },
  { "big_frames", { "alloc", "map" } },
  { "big_worker", { "alloc", "state", "map" } },
}
local STICKY = { alloc = true, state = true }

-- The errors a fault may cleanly end in, by class.
local CLEAN = {
  alloc = { "not enough memory", "cannot start a worker", "CancelledError",
    "no memory for its result",     -- a process pool's host short of memory
    "no memory to say why" },       -- a pool broken by it, its reason lost
  state = { "not enough memory", "cannot start a worker" },
  thread = { "cannot start a worker", "out of resources" },
  -- (a process pool reports a failed eventfd as "not enough memory")
  socket = { "cannot start a worker process", "BrokenProcessPool", "not enough memory",
    "cannot make the descriptor of futures.pollfd" },
  spawn = { "cannot start a worker process", "BrokenProcessPool" },
  -- (a side that cannot make or map a memfd sends in the socket instead)
  map = { "not enough memory", "no memory for its result", "BrokenProcessPool" },
}
-- A fault inside a worker process may kill it: its task then fails so.
local WORKER_CLEAN = { "not enough memory", "BrokenProcessPool" }

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local function read_all(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local TMP = os.tmpname()
os.remove(TMP)
assert(os.execute("mkdir -p " .. q(TMP)))

-- Starts a run; returns a handle to finish it with `finish`.
local seq = 0
local function start(op, class, n, sticky)
  seq = seq + 1
  local dir = ("%s/%d"):format(TMP, seq)
  assert(os.execute("mkdir -p " .. q(dir)))
  local cmd = ("ASAN_OPTIONS=detect_leaks=1:handle_segv=1:log_path=%s/asan "
    .. "timeout -k 5 60 %s spec/fault_driver.lua --run %s %s %d %d >%s/out 2>%s/err; echo $?")
    :format(q(dir), q(EXE), op, class, n, sticky and 1 or 0, q(dir), q(dir))
  return { p = io.popen(cmd), dir = dir, op = op, class = class, n = n, sticky = sticky }
end

-- Waits for a run; returns a table { ok, why, calls, fired, message }.
local function finish(run)
  local status = tonumber(run.p:read("a"):match("%d+"))
  run.p:close()
  local out = read_all(run.dir .. "/out")
  local err = read_all(run.dir .. "/err")
  local reports = {}
  local ls = io.popen("ls " .. q(run.dir))
  for name in ls:lines() do
    if name:match("^asan") then reports[#reports + 1] = read_all(run.dir .. "/" .. name) end
  end
  ls:close()
  os.execute("rm -rf " .. q(run.dir))
  local r = { calls = tonumber(out:match("calls (%-?%d+)")), fired = out:match("fired (%a+)") == "true" }
  local kind, msg = out:match("outcome (%a+) ([^\n]*)")
  r.message = msg
  local function fail(why) r.ok = false; r.why = why; return r end
  if #reports > 0 then return fail("sanitizer report:\n" .. table.concat(reports, "\n")) end
  if status == 124 or status == 137 then return fail("hung (killed by timeout)") end
  if status ~= 0 then return fail(("exit status %d\n%s"):format(status, err)) end
  if not kind then return fail("no outcome printed\n" .. out .. err) end
  if not out:match("after ok") then return fail("the runtime did not work afterwards\n" .. out .. err) end
  if err:match("PANIC") then return fail("a worker state panicked\n" .. err) end
  if kind == "error" then
    local clean = (run.op == "process_worker" or run.op == "big_worker") and WORKER_CLEAN
      or CLEAN[run.class]
    local found = false
    for _, p in ipairs(clean) do if msg:find(p, 1, true) then found = true end end
    if not found then return fail("unclean error: " .. msg) end
    -- A fault inside a worker process may end it (no memory to read the
    -- host's next frame: it cannot keep the protocol), and the count is
    -- then asked of its replacement, which saw no fault.
    local in_worker = run.op == "process_worker" or run.op == "big_worker"
    if not r.fired and not in_worker then return fail("error without a fault: " .. msg) end
  end
  r.ok = true
  return r
end

-- The fault points to try for a class that made `calls` calls.
local function points(calls)
  local list, n = {}, 1
  local all = quick and 40 or 150
  local limit = calls + 2   -- a run may make a call or two more than another
  while n <= limit do
    list[#list + 1] = n
    if n < all then n = n + 1 else n = n + math.max(1, (quick and limit // 20) or limit // 80) end
  end
  return list
end

local tried, failed, outcomes = 0, 0, {}
local t0 = os.time()
for _, entry in ipairs(PLAN) do
  local op, classes = entry[1], entry[2]
  if listed(only_ops, op) then
    for _, class in ipairs(classes) do
      if listed(only_classes, class) then
        -- count the class's calls in a clean run (a fault point far away)
        local calib = finish(start(op, class, 1 << 40, false))
        if not calib.ok or calib.message ~= "" then
          failed = failed + 1
          print(("FAIL %s/%s clean run: %s"):format(op, class, calib.why or calib.message))
        end
        local calls = calib.calls or 0
        local runs = {}
        for _, n in ipairs(points(calls)) do
          runs[#runs + 1] = { n, false }
          if STICKY[class] then runs[#runs + 1] = { n, true } end
        end
        local counts = { ok = 0, error = 0, cancelled = 0 }
        -- two at a time: one per core
        for i = 1, #runs, 2 do
          local a = start(op, class, runs[i][1], runs[i][2])
          local b = runs[i + 1] and start(op, class, runs[i + 1][1], runs[i + 1][2])
          for _, run in ipairs { a, b } do
            if run then
              local r = finish(run)
              tried = tried + 1
              if not r.ok then
                failed = failed + 1
                print(("FAIL %s/%s N=%d%s: %s"):format(op, class, run.n,
                  run.sticky and " sticky" or "", r.why))
              elseif r.message == "" then counts.ok = counts.ok + 1
              elseif r.message:find("CancelledError", 1, true) then counts.cancelled = counts.cancelled + 1
              else counts.error = counts.error + 1 end
            end
          end
        end
        print(("%-15s %-7s %5d calls, %4d runs: %d succeeded, %d clean errors, %d cancelled")
          :format(op, class, calls, #runs, counts.ok, counts.error, counts.cancelled))
        io.stdout:flush()
      end
    end
  end
end
os.execute("rm -rf " .. q(TMP))
print(("faults: %d fault points tried in %d s, %d failed"):format(tried, os.time() - t0, failed))
os.exit(failed == 0 and 0 or 1)
