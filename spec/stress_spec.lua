-- Stress: many tasks, races between cancel and start, shutdown under load,
-- executors dropped in bulk, callbacks that raise, waiters over several
-- executors, worker processes killed during a map. Every count goes through
-- n(), so LUA_FUTURES_STRESS=<factor> scales the run up (or down: the
-- sanitizer builds run a fraction); the default keeps `make test` quick.
local futures = require "futures"
local helpers = require "support.helpers"
local shell = require "support.shell"

local SCALE = tonumber(os.getenv("LUA_FUTURES_STRESS")) or 1
local function n(count) return math.max(1, math.floor(count * SCALE)) end

-- The pid of this process, and the live or zombie child processes named
-- lua-futures (process-pool workers) of a given pid.
local function getpid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = f:read("n")
  f:close()
  return pid
end

local function proc_exists(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

-- Task functions name no global (busted runs spec files in an environment
-- of its own, which does not travel): what they need comes as upvalues or
-- through require inside the task.
local function double(x) return x * 2 end
local function identity(x) return x end

local POOLS = { { "ThreadPoolExecutor", futures.ThreadPoolExecutor } }
if futures.ProcessPoolExecutor then
  POOLS[2] = { "ProcessPoolExecutor", futures.ProcessPoolExecutor }
end

for _, pool in ipairs(POOLS) do
  local name, make = pool[1], pool[2]
  local TASKS = n(100000)

  describe(name .. " under stress", function()
    it(("returns the right result for each of %d tiny submits"):format(TASKS), function()
      local ex <close> = make(2)
      local fs = {}
      for i = 1, TASKS do fs[i] = ex:submit(double, i) end
      local wrong = 0
      for i = 1, TASKS do if fs[i]:result(60) ~= i * 2 then wrong = wrong + 1 end end
      assert.equals(0, wrong)
    end)

    it(("maps %d items in chunks with every result checked"):format(TASKS), function()
      local ex <close> = make(2)
      local items = {}
      for i = 1, TASKS do items[i] = i end
      local count, wrong = 0, 0
      for i, v in ex:map(function(x) return x + 1 end, items, { chunksize = 256, timeout = 120 }) do
        if v ~= i + 1 then wrong = wrong + 1 end
        count = count + 1
      end
      assert.equals(0, wrong)
      assert.equals(TASKS, count)
    end)

    it(("maps %d items one by one with every result checked"):format(n(5000)), function()
      local ex <close> = make(2)
      local items = {}
      for i = 1, n(5000) do items[i] = i end
      local count, wrong = 0, 0
      for i, v in ex:map(double, items, { timeout = 120 }) do
        if v ~= i * 2 then wrong = wrong + 1 end
        count = count + 1
      end
      assert.equals(0, wrong)
      assert.equals(#items, count)
    end)

    it("ends every future either cancelled or finished when cancel races start", function()
      local ex <close> = make(2)
      local fs, won = {}, {}
      local N = n(5000)
      -- Cancel each future right after submitting it, while idle workers
      -- are taking it: either side may win, never both, never neither.
      for i = 1, N do
        fs[i] = ex:submit(identity, i)
        if i % 2 == 0 then won[i] = fs[i]:cancel() end
      end
      for i = N, 1, -1 do if i % 2 == 1 then won[i] = fs[i]:cancel() end end
      local done, not_done = futures.wait(fs, 60)
      assert.equals(N, #done)
      assert.equals(0, #not_done)
      local finished, cancelled = 0, 0
      for i = 1, N do
        assert.equals(won[i], fs[i]:cancelled())
        if won[i] then
          cancelled = cancelled + 1
          assert.equals("CancelledError", helpers.error_of(fs[i].result, fs[i], 0).type)
          assert.is_false(fs[i]:running())
        else
          finished = finished + 1
          assert.equals(i, fs[i]:result(0))
        end
        assert.is_true(fs[i]:done())
      end
      assert.equals(N, finished + cancelled)
    end)

    it("cancels the queued tasks and finishes the running ones on shutdown{ wait = false, cancel_futures = true }", function()
      local ex = make(2)
      local fs = {}
      local sleep = futures.sleep
      for i = 1, n(2000) do
        fs[i] = ex:submit(function(x) if x <= 4 then sleep(0.05) end return x end, i)
      end
      assert.is_true(helpers.eventually(function() return fs[1]:running() or fs[1]:done() end, 10))
      local t0 = futures.monotonic()
      ex:shutdown { wait = false, cancel_futures = true }
      assert.is_true(futures.monotonic() - t0 < 0.5, "shutdown{ wait = false } waited")
      assert.matches("after shutdown", helpers.error_of(ex.submit, ex, identity, 1))
      local done = futures.wait(fs, 60)
      assert.equals(#fs, #done)
      local cancelled = 0
      for i, f in ipairs(fs) do
        if f:cancelled() then cancelled = cancelled + 1 else assert.equals(i, f:result(0)) end
      end
      assert.is_false(fs[1]:cancelled())
      assert.is_true(cancelled > 0)
      ex:shutdown()   -- returns once the workers are gone
    end)

    it("runs every callback exactly once even when some raise", function()
      -- In a child process: each raising callback is reported on stderr,
      -- which the spec reads and checks line by line.
      local count = n(500)
      local r = shell.run_lua([[
        local futures = require "futures"
        local helpers = require "support.helpers"
        local name, count = ...
        local function identity(x) return x end
        local ex <close> = futures[name](2)
        local first, second = 0, 0
        local fs = {}
        for i = 1, tonumber(count) do
          local f = ex:submit(identity, i)
          f:add_done_callback(function(g)
            first = first + 1
            if g:result() % 3 == 0 then error("callback failure is reported, not fatal") end
          end)
          f:add_done_callback(function(g)
            second = second + 1
            if g:result() % 5 == 0 then error({ "a table error value" }) end
          end)
          fs[i] = f
        end
        futures.wait(fs, 60)
        assert(helpers.eventually(function()
          futures.poll()
          return first == #fs and second == #fs
        end, 10), "callbacks missing")
        futures.sleep(0.05)   -- and no second run of any of them
        print(first, second, ex:submit(identity, 7):result(10))
      ]], { name, count }, 120)
      assert.equals(0, r.status, r.err)
      assert.equals(("%d\t%d\t7\n"):format(count, count), r.out)
      local strings, tables = 0, 0
      for line in r.err:gmatch("[^\n]+") do
        local what = line:match("^lua%-futures: exception calling a done callback: (.*)$")
        assert.is_not_nil(what, line)
        if what:match(":%d+: callback failure is reported, not fatal$") then
          strings = strings + 1
        else
          assert.matches("^table: 0x%x+$", what)
          tables = tables + 1
        end
      end
      assert.equals(count // 3, strings)
      assert.equals(count // 5, tables)
    end)
  end)
end

describe("waiters on the futures of several executors", function()
  it("see every future complete, whichever executor runs it", function()
    local a <close> = futures.ThreadPoolExecutor(2)
    local b <close> = futures.ThreadPoolExecutor(1)
    local p <close> = futures.ProcessPoolExecutor(1)
    local sleep = futures.sleep
    local rounds = n(100)
    for r = 1, rounds do
      local bare = futures.Future()
      local fs = {
        a:submit(function(x) sleep(0.001 * (x % 3)) return x end, r),
        b:submit(function(x) return x + 1 end, r),
        p:submit(function(x) return x + 2 end, r),
        bare,
        -- a task of one pool completes a future nobody's executor owns
        a:submit(function(f, x) f:set_running_or_notify_cancel(); f:set_result(x + 3) end, bare, r),
      }
      local first = futures.wait(fs, { timeout = 30, return_when = futures.FIRST_COMPLETED })
      assert.is_true(#first >= 1)
      local seen = 0
      for f in futures.as_completed(fs, 30) do
        assert.is_true(f:done())
        seen = seen + 1
      end
      assert.equals(#fs, seen)
      local done, not_done = futures.wait(fs, 30)
      assert.equals(#fs, #done)
      assert.equals(0, #not_done)
      assert.equals(r, fs[1]:result(0))
      assert.equals(r + 1, fs[2]:result(0))
      assert.equals(r + 2, fs[3]:result(0))
      assert.equals(r + 3, bare:result(0))
    end
  end)

  it("lets thread tasks wait on futures of other executors while the host waits too", function()
    local a <close> = futures.ThreadPoolExecutor(2)
    local b <close> = futures.ThreadPoolExecutor(2)
    local waiters <close> = futures.ThreadPoolExecutor(4)
    local p <close> = futures.ProcessPoolExecutor(2)
    local sleep = futures.sleep
    local fs, sums = {}, {}
    for i = 1, n(200) do
      fs[#fs + 1] = a:submit(function(x) sleep(0.0005) return x end, i)
      fs[#fs + 1] = b:submit(function(x) return 2 * x end, i)
      fs[#fs + 1] = p:submit(function(x) return 3 * x end, i)
    end
    -- Each waiter task blocks on a slice of the futures of all three.
    for w = 1, 8 do
      local slice = {}
      for k = w, #fs, 8 do slice[#slice + 1] = fs[k] end
      sums[w] = waiters:submit(function(list)
        local fut = require "futures"
        local done = fut.wait(list, 30)
        local sum = 0
        for _, f in ipairs(done) do sum = sum + f:result(0) end
        for f in fut.as_completed(list, 30) do sum = sum - f:result(0) end
        return #done, sum
      end, slice)
    end
    local done = futures.wait(fs, 60)
    assert.equals(#fs, #done)
    local total = 0
    for w = 1, 8 do
      local count, sum = sums[w]:result(60)
      assert.equals(0, sum)
      total = total + count
    end
    assert.equals(#fs, total)
  end)
end)

describe("executors dropped without shutdown", function()
  it(("leave no thread behind once %d thread pools are collected"):format(n(200)), function()
    local before = helpers.thread_count()
    local fs = {}
    for i = 1, n(200) do
      local ex = futures.ThreadPoolExecutor(2)
      fs[i] = ex:submit(identity, i)
    end
    for i = 1, #fs do assert.equals(i, fs[i]:result(30)) end
    collectgarbage(); collectgarbage()
    futures.ThreadPoolExecutor(1):shutdown()   -- a reaping point
    assert.is_true(helpers.threads_back_to(before, 10))
  end)

  it(("leave no thread or process behind once %d process pools are collected"):format(n(200)), function()
    local before = helpers.thread_count()
    local pids = {}
    local function worker_pid()
      local f = io.open("/proc/self/stat")
      local pid = f:read("n")
      f:close()
      return pid
    end
    for i = 1, n(200) do
      local ex = futures.ProcessPoolExecutor(1)
      pids[i] = ex:submit(worker_pid):result(30)
    end
    collectgarbage(); collectgarbage()
    futures.ThreadPoolExecutor(1):shutdown()   -- a reaping point
    assert.is_true(helpers.threads_back_to(before, 20))
    assert.is_true(helpers.eventually(function()
      for _, pid in ipairs(pids) do if proc_exists(pid) then return false end end
      return true
    end, 20), "a worker process (or its zombie) is left")
  end)
end)

describe("ProcessPoolExecutor with workers killed at random moments", function()
  it("fails only the items whose worker died, with BrokenProcessPool, and never hangs", function()
    local px <close> = futures.ProcessPoolExecutor(2)
    local killer <close> = futures.ThreadPoolExecutor(1)
    local stop = futures.Future()
    local kills = killer:submit(function(stop_, host, seed)
      local fut = require "futures"
      math.randomseed(seed)
      local count = 0
      while not stop_:done() do
        fut.sleep(0.005 + math.random() * 0.03)
        local p = io.popen(("awk '$4 == %d && $2 == \"(lua-futures)\" { print $1 }' "
          .. "/proc/[0-9]*/stat 2>/dev/null"):format(host))
        local pids = {}
        for line in p:lines() do pids[#pids + 1] = line end
        p:close()
        if #pids > 0 then
          os.execute("kill -9 " .. pids[math.random(#pids)] .. " 2>/dev/null")
          count = count + 1
        end
      end
      return count
    end, stop, getpid(), os.time())

    local N = n(300)
    local items = {}
    for i = 1, N do items[i] = i end
    local outcome = {}   -- item -> "ok" or "broken"
    local sleep = futures.sleep
    local function work(x) sleep(0.002) return x * 3 end
    -- Map the items not yet decided; a failed item ends that map (the loop
    -- raises), is recorded, and the map goes on from the next item.
    local start, maps = 1, 0
    local deadline = futures.monotonic() + 120
    while start <= N do
      assert.is_true(futures.monotonic() < deadline, "the map made no progress")
      maps = maps + 1
      local last = 0
      local ok, err = pcall(function()
        for i, v in px:map(work, table.move(items, start, N, 1, {}), { timeout = 60, chunksize = 2 }) do
          assert.equals(items[start + i - 1] * 3, v)
          outcome[start + i - 1] = "ok"
          last = i
        end
      end)
      if ok then break end
      assert.is_true(futures.iserror(err, futures.BrokenProcessPool), tostring(err))
      assert.matches("killed by signal 9", err.message)
      outcome[start + last] = "broken"
      start = start + last + 1
    end
    stop:set_running_or_notify_cancel()
    stop:set_result(true)
    local killed = kills:result(30)
    local good, broken = 0, 0
    for i = 1, N do
      if outcome[i] == "ok" then good = good + 1 else
        assert.equals("broken", outcome[i], "item " .. i .. " was never decided")
        broken = broken + 1
      end
    end
    assert.equals(N, good + broken)
    if os.getenv("LUA_FUTURES_STRESS_VERBOSE") then
      print(("\n%d items: %d ok, %d BrokenProcessPool; %d kills, %d maps")
        :format(N, good, broken, killed, maps))
    end
    assert.is_true(killed > 0)
    assert.is_true(good > 0)
    -- The pool is not broken: it still runs work (the killer's last kill
    -- may land on the worker that takes the first of these).
    local answers = {}
    for k = 1, 3 do
      local ok, v = pcall(function() return px:submit(identity, 42):result(30) end)
      answers[k] = ok and v or tostring(v)
      if ok then break end
      assert.is_true(futures.iserror(v, futures.BrokenProcessPool), tostring(v))
    end
    assert.equals(42, answers[#answers], table.concat(answers, "; "))
  end)
end)

-- Spinning before blocking is where lost wake-ups hide: with many more
-- workers than cores and another program taking a core, every hand-off
-- (submit to a sleeping or spinning worker, result to a sleeping or
-- spinning waiter, a waiter running the task itself) happens in every
-- order. Each must still complete.
describe("a thread pool with many more workers than cores, next to a busy process", function()
  local hog, hog_pid
  setup(function()
    -- an endless Lua loop in another process, killed in teardown
    hog = io.popen("exec sh -c 'echo $$; exec lua5.4 -e \"while true do end\"'")
    hog_pid = hog:read("l")
  end)
  teardown(function()
    os.execute("kill " .. hog_pid .. " 2>/dev/null")
    hog:close()
  end)

  it("finishes every submit/result round trip", function()
    local ex <close> = futures.ThreadPoolExecutor(16)
    local count = n(20000)
    for i = 1, count do
      if ex:submit(double, i):result(60) ~= i * 2 then error("wrong result at " .. i) end
    end
  end)

  it("finishes maps and waits fed from several submitting tasks at once", function()
    local ex <close> = futures.ThreadPoolExecutor(16)
    local per = n(2000)
    local feeders = {}
    for k = 1, 6 do
      feeders[k] = ex:submit(function(pool, count, base)
        -- a task of the pool submits to it and waits, as nested work does
        local sum = 0
        for i = 1, count do sum = sum + pool:submit(function(x) return x end, base + i):result(60) end
        return sum
      end, ex, per, k * per)
    end
    local items = {}
    for i = 1, n(20000) do items[i] = i end
    local mapped = 0
    for i, v in ex:map(double, items, { timeout = 120 }) do
      assert.equals(i * 2, v)
      mapped = mapped + 1
    end
    assert.equals(#items, mapped)
    for k = 1, 6 do
      local base = k * per
      assert.equals(per * base + per * (per + 1) // 2, feeders[k]:result(120))
    end
  end)
end)
