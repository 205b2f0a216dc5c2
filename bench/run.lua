-- bench/run.lua — the benchmark driver behind `make bench` and
-- `make bench-quick`. Each workload is a script run in a fresh process:
-- bench/workloads/<w>.lua under bin/lua-futures and, when python3 is there,
-- its twin bench/py/<w>.py using concurrent.futures, alternating the two on
-- every repetition (ours first on odd ones, Python first on even ones) so
-- that drift in the machine's speed hits both. The table shows the median of
-- the repetitions and their spread; bench/results.json keeps every figure.
--
-- usage: bin/lua-futures bench/run.lua [options]
--   --quick            small sizes, 3 repetitions, Python only where cheap
--   --reps N           repetitions (default 5; 3 with --quick)
--   --only NAMES       only the workloads whose name contains one of NAMES
--                      (comma-separated: --only codec,overhead-thread)
--   --no-python        do not run the Python twins
--   --python CMD       the Python interpreter (default $PYTHON or python3)
--   --out FILE         results file (default bench/results.json, or
--                      bench/results-quick.json with --quick)
--   --compare OLD      after the run, print the change against OLD (a saved
--                      results.json)
--   --diff OLD NEW     print the change from OLD to NEW; runs nothing
--   --threshold PCT    a change worse than this is flagged (default 10)
--   --verbose          show each workload's stderr and extra output
local futures = require "futures"

local BENCH = arg[0]:match("^(.*)/[^/]*$") or "."
local json = dofile(BENCH .. "/json.lua")
local EXE = arg[-1] or "bin/lua-futures"
local CPUS = futures.cpu_count()

---------------------------------------------------------------- options

local opts = { reps = nil, threshold = 10 }
do
  local i = 1
  local function value(name)
    i = i + 1
    if arg[i] == nil then io.stderr:write("bench: ", name, " needs a value\n"); os.exit(2) end
    return arg[i]
  end
  while arg[i] do
    local a = arg[i]
    if a == "--quick" then opts.quick = true
    elseif a == "--reps" then opts.reps = math.tointeger(tonumber(value(a)))
    elseif a == "--only" then opts.only = value(a)
    elseif a == "--no-python" then opts.no_python = true
    elseif a == "--python" then opts.python = value(a)
    elseif a == "--out" then opts.out = value(a)
    elseif a == "--compare" then opts.compare = value(a)
    elseif a == "--diff" then opts.diff_old = value(a); opts.diff_new = value(a)
    elseif a == "--threshold" then opts.threshold = tonumber(value(a))
    elseif a == "--verbose" then opts.verbose = true
    elseif a == "--help" or a == "-h" then
      for line in io.lines(arg[0]) do
        if not line:match("^%-%-") then break end
        print((line:gsub("^%-%- ?", "")))
      end
      os.exit(0)
    else
      io.stderr:write("bench: unknown option ", a, " (see --help)\n")
      os.exit(2)
    end
    i = i + 1
  end
  if opts.reps ~= nil and opts.reps < 1 then
    io.stderr:write("bench: --reps must be a positive integer\n"); os.exit(2)
  end
  opts.reps = opts.reps or (opts.quick and 3 or 5)
  opts.out = opts.out or (BENCH .. (opts.quick and "/results-quick.json" or "/results.json"))
end

---------------------------------------------------------------- shell helpers

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function capture(cmd)
  local p = io.popen(cmd .. " 2>/dev/null")
  if not p then return nil end
  local out = p:read("a")
  local ok = p:close()
  if not ok then return nil end
  return (out:gsub("%s+$", ""))
end

local function read_file(path)
  local h = io.open(path, "rb")
  if not h then return nil end
  local s = h:read("a")
  h:close()
  return s
end

local function write_file(path, s)
  local h = assert(io.open(path, "wb"))
  h:write(s)
  h:close()
end

local function log(fmt, ...)
  io.stderr:write(fmt:format(...), "\n")
  io.stderr:flush()
end

---------------------------------------------------------------- formatting

local UNIT = { s = "s", ms = "ms", us = "µs", ns = "ns", x = "x", KB = "KB", MB = "MB" }

local function num(v)
  local a = math.abs(v)
  if a >= 1000 then return ("%.0f"):format(v)
  elseif a >= 100 then return ("%.0f"):format(v)
  elseif a >= 10 then return ("%.1f"):format(v)
  elseif a >= 1 then return ("%.2f"):format(v)
  elseif a >= 0.01 then return ("%.3f"):format(v)
  end
  return ("%.2g"):format(v)
end

local function with_unit(v, unit)
  if unit == "x" then return num(v) .. "x" end
  return num(v) .. " " .. UNIT[unit]
end

local function width(s) return utf8.len(s) or #s end

local function pad(s, w, right)
  local fill = (" "):rep(math.max(0, w - width(s)))
  return right and fill .. s or s .. fill
end

--- Print rows (the first is the header) as an aligned Markdown table.
-- `right` says which columns are right-aligned.
local function table_lines(rows, right)
  local w = {}
  for _, row in ipairs(rows) do
    for c, cell in ipairs(row) do w[c] = math.max(w[c] or 3, width(cell)) end
  end
  local lines = {}
  for r, row in ipairs(rows) do
    local cells = {}
    for c = 1, #w do cells[c] = pad(row[c] or "", w[c], right[c]) end
    lines[#lines + 1] = "| " .. table.concat(cells, " | ") .. " |"
    if r == 1 then
      local rule = {}
      for c = 1, #w do
        rule[c] = right[c] and ("-"):rep(w[c] - 1) .. ":" or ("-"):rep(w[c])
      end
      lines[#lines + 1] = "| " .. table.concat(rule, " | ") .. " |"
    end
  end
  return lines
end

---------------------------------------------------------------- statistics

local function stats(samples)
  if not samples or #samples == 0 then return nil end
  local s = {}
  for i, v in ipairs(samples) do s[i] = v end
  table.sort(s)
  local n = #s
  local median = n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
  -- spread: half the range of the repetitions, relative to the median
  local spread = median ~= 0 and (s[n] - s[1]) / 2 / math.abs(median) * 100 or 0
  return { median = median, min = s[1], max = s[n], spread = spread,
           samples = json.array(samples) }
end

---------------------------------------------------------------- what is measured

-- Worker counts of the speedup curve: 1 .. cpu_count (2 at least, where the
-- target is); on a big machine powers of two and cpu_count.
local CURVE = {}
do
  local top = math.max(CPUS, 2)
  if top <= 8 then
    for w = 1, top do CURVE[#CURVE + 1] = w end
  else
    local w = 1
    while w < top do CURVE[#CURVE + 1] = w; w = w * 2 end
    CURVE[#CURVE + 1] = top
  end
end

local TH, PR = "thread", "process"
local POOL_NAME = { thread = "thread pool", process = "process pool" }

-- Every figure the table shows, in order. better: which way is good.
-- targets, from the issues, each { op, value } (our median against value),
-- { op, factor, of = id } (against factor times our median of figure id,
-- in the same run) or { op, factor, ratio = true } (the ratio to Python).
local METRICS = {}
local function metric(id, label, unit, better, ...)
  local targets = { ... }
  METRICS[#METRICS + 1] = { id = id, label = label, unit = unit, better = better,
                            target = targets[1], targets = targets }
end

metric("primes.seq_s", "seed primes: sequential", "s", "lower")
metric("primes.thread_s", ("seed primes: thread pool, %d workers"):format(CPUS), "s", "lower")
metric("primes.process_s", ("seed primes: process pool, %d workers"):format(CPUS), "s", "lower")
metric("primes.thread_speedup", "seed primes: thread pool speedup", "x", "higher")
metric("primes.process_speedup", "seed primes: process pool speedup", "x", "higher")
metric("cpu.seq_ms", "16 CPU tasks: sequential", "ms", "lower")
for _, kind in ipairs { TH, PR } do
  for _, w in ipairs(CURVE) do
    metric(("cpu.%s.w%d"):format(kind, w),
      ("16 CPU tasks: %s, %d worker%s (speedup)"):format(POOL_NAME[kind], w, w > 1 and "s" or ""),
      "x", "higher", w == 2 and { ">=", 1.8 } or nil)
  end
end

local POOL_TARGETS = {
  thread = { submit_us = 2, rt_us = 15, map100_us = 0.3, xfer_table_x = 2,
             xfer_string_x = 2.5 },
  process = { submit_us = 10, rt_us = 40, map100_us = 0.5, xfer_table_ms = 60,
              xfer_string_ms = 15 },
}
for _, kind in ipairs { TH, PR } do
  local name, tg = POOL_NAME[kind], POOL_TARGETS[kind]
  local function le(k) return tg[k] and { "<=", tg[k] } or nil end
  local function lt(k) return tg[k] and { "<", tg[k] } or nil end
  metric(kind .. ".spawn_ms", name .. ": spawn, new pool to first result", "ms", "lower")
  metric(kind .. ".submit_us", name .. ": submit, queued (workers busy)", "us", "lower", le("submit_us"))
  metric(kind .. ".rt_us", name .. ": submit→result round trip, idle", "us", "lower", le("rt_us"))
  metric(kind .. ".map1_us", name .. ": map chunksize 1, per item", "us", "lower")
  metric(kind .. ".map100_us", name .. ": map chunksize 100, per item", "us", "lower", le("map100_us"))
  metric(kind .. ".xfer_table_ms", name .. ": 1M-int table there and back", "ms", "lower", lt("xfer_table_ms"))
  metric(kind .. ".copy_table_ms", "plain Lua: table.move copy of it (" .. name .. " run)", "ms", "lower")
  metric(kind .. ".xfer_table_x", name .. ": 1M-int table there and back / one copy", "x", "lower", le("xfer_table_x"))
  metric(kind .. ".xfer_string_ms", name .. ": 10 MB string there and back", "ms", "lower", lt("xfer_string_ms"))
  metric(kind .. ".copy_string_ms", "plain Lua: string copy of it, s:sub(1) (" .. name .. " run)", "ms", "lower")
  metric(kind .. ".xfer_string_x", name .. ": 10 MB string there and back / one copy", "x", "lower", le("xfer_string_x"))
  metric(kind .. ".asc_total_ms", name .. ": submit 10 000 + as_completed", "ms", "lower")
  metric(kind .. ".asc_done_ms", name .. ": as_completed, 10 000 done", "ms", "lower")
  metric("mem." .. kind .. ".worker_kb", name .. ": idle worker, RSS", "KB", "lower",
    kind == "thread" and { "<", 200 } or nil)
  metric("mem." .. kind .. ".pending_mb", name .. ": 100 000 queued futures, RSS", "MB", "lower",
    kind == "thread" and { "<", 50 } or nil)
end
-- The MPI pool: `mpiexec -n 3` on this machine (rank 0 and two serving
-- ranks); Python's column is its ProcessPoolExecutor, of 2 workers for the
-- maps and the CPU tasks, 1 for the round trip (as in the rows above).
metric("mpi.spawn_ms", "MPI pool, 3 ranks: new pool to first result", "ms", "lower")
metric("mpi.submit_us", "MPI pool, 3 ranks: submit, queued (ranks busy)", "us", "lower")
metric("mpi.rt_us", "MPI pool, 3 ranks: submit→result round trip", "us", "lower",
  { "<=", 2, of = "process.rt_us" }, { ">=", 3, ratio = true })
metric("mpi.map1_us", "MPI pool, 3 ranks: map chunksize 1, per item", "us", "lower",
  { ">=", 3, ratio = true })
metric("mpi.map100_us", "MPI pool, 3 ranks: map chunksize 100, per item", "us", "lower",
  { "<=", 2, of = "process.map100_us" })
metric("cpu.mpi.seq_ms", "16 CPU tasks: sequential, on rank 0 of the job", "ms", "lower")
metric("cpu.mpi.w2", "16 CPU tasks: MPI pool, 2 serving ranks (speedup)", "x", "higher",
  { ">=", 1.7 })
metric("codec.table_enc_ms", "codec: 1M-int table, encode", "ms", "lower")
metric("codec.table_dec_ms", "codec: 1M-int table, decode", "ms", "lower")
metric("codec.table_ms", "codec: 1M-int table, encode+decode", "ms", "lower", { "<", 60 })
metric("codec.string_ms", "codec: 10 MB string, encode+decode", "ms", "lower", { "<", 10 })
metric("codec.small_us", "codec: small call, encode+decode", "us", "lower", { "<", 1 })
metric("loop.cb_p50_us", "luv loop: completion→callback, p50", "us", "lower", { "<=", 50 })
metric("loop.await_us", "luv loop: await(submit()) round trip", "us", "lower")
metric("loop.blocking_us", "luv loop: the same, submit():result()", "us", "lower")
metric("loop.await_ratio", "luv loop: await / blocking round trip", "x", "lower", { "<=", 3 })
metric("loop.cb_us", "luv loop: 10 000 callbacks, per future", "us", "lower")
metric("loop.asc_us", "luv loop: the same, as_completed, per future", "us", "lower")
metric("loop.cb_ratio", "luv loop: callbacks / as_completed", "x", "lower", { "<=", 2 })
metric("thread.queue_us", "queue: host to a thread task, per item streamed", "us", "lower", { "<=", 2 },
  { ">=", 10, ratio = true })
metric("process.queue_us", "queue: host to a process task, per item streamed", "us", "lower",
  { ">=", 5, ratio = true })
metric("thread.array64_ms", "64 MB SharedArray to a thread task and back", "ms", "lower", { "<=", 0.1 })
metric("process.array64_ms", "64 MB SharedArray to a process task and back", "ms", "lower", { "<=", 1 })
metric("array.read_ns", "SharedArray a[i] read, per element", "ns", "lower")
metric("table.read_ns", "table t[i] read, same loop", "ns", "lower")
metric("array.read_ratio", "a[i] read / t[i] read", "x", "lower", { "<=", 3 })
metric("array.write_ns", "SharedArray a[i] = v, per element", "ns", "lower")
metric("table.write_ns", "table t[i] = v, same loop", "ns", "lower")
metric("array.write_ratio", "a[i] write / t[i] write", "x", "lower", { "<=", 3 })

-- Waits when cores are scarce (thread pool): the default pool, more
-- workers than cores, and the same with one other busy process running.
-- Targets with ratio = true are on the ratio to Python.
metric("default.map1_us", "default thread pool: map chunksize 1, per item", "us", "lower",
  { ">=", 5, ratio = true })
metric("default.rt_us", "default thread pool: submit→result round trip", "us", "lower",
  { ">=", 5, ratio = true })
for _, w in ipairs { 2, 4, 16 } do
  local name = ("thread pool, %d workers: round trip"):format(w)
  metric(("rt.w%d.p50_us"):format(w), name .. ", p50 of runs", "us", "lower")
  metric(("rt.w%d.worst_us"):format(w), name .. ", worst run", "us", "lower")
  if w ~= 2 then
    metric(("rt.w%d_over_w2"):format(w), ("thread pool: round trip p50, %d workers / 2"):format(w),
      "x", "lower", { "<=", 2 })
  end
end
metric("thread.stop_p50_ms", "thread pool: interrupt a running loop, p50", "ms", "lower", { "<=", 10 })
metric("thread.stop_worst_ms", "thread pool: interrupt a running loop, worst", "ms", "lower")
metric("process.stop_p50_ms", "process pool: interrupt a running loop, p50", "ms", "lower", { "<=", 20 })
metric("process.stop_worst_ms", "process pool: interrupt a running loop, worst", "ms", "lower")
metric("process.stuck_over_grace_ms", "process pool: worker stuck in C replaced, past grace",
  "ms", "lower", { "<=", 50 })
metric("busy.default.map1_us", "one busy process: default pool, map chunksize 1", "us", "lower")
metric("busy.default.rt_us", "one busy process: default pool, round trip", "us", "lower")
for _, w in ipairs { 2, 4, 16 } do
  local name = ("one busy process: %d workers, round trip"):format(w)
  metric(("busy.rt.w%d.p50_us"):format(w), name .. ", p50 of runs", "us", "lower",
    w == 2 and { ">=", 3, ratio = true } or nil)
  metric(("busy.rt.w%d.worst_us"):format(w), name .. ", worst run", "us", "lower")
end

local BY_ID = {}
for _, m in ipairs(METRICS) do BY_ID[m.id] = m end

-- The workload runs: script, parameters (the same for both languages), and
-- what --quick changes. python = false: the workload has no twin (in
-- `quick`: the twin is skipped in quick mode). busy = true: one other
-- CPU-bound process runs beside every run of it, ours and Python's.
local function curve_arg() return table.concat(CURVE, ",") end
local RUNS = {
  { name = "primes", script = "primes", args = { workers = CPUS },
    quick = { python = false } },
  { name = "cpu_curve", script = "cpu_curve",
    args = { n = 500000, tasks = 16, workers = curve_arg(), inner = 3 },
    quick = { args = { n = 300000 }, python = false } },
  { name = "overhead-thread", script = "overhead",
    args = { pool = TH, rt = 10000, submit = 100000, map1 = 20000, map100 = 50000,
             workers = CPUS },
    quick = { args = { rt = 2000, submit = 20000, map1 = 4000, map100 = 20000 } } },
  { name = "overhead-process", script = "overhead",
    args = { pool = PR, rt = 3000, submit = 20000, map1 = 5000, map100 = 100000,
             workers = CPUS },
    quick = { args = { rt = 500, submit = 5000, map1 = 1000, map100 = 20000 }, python = false } },
  { name = "transfer-thread", script = "transfer",
    args = { pool = TH, items = 1000000, bytes = 10000000, k = 3 },
    quick = { args = { k = 1 }, python = false } },
  { name = "transfer-process", script = "transfer",
    args = { pool = PR, items = 1000000, bytes = 10000000, k = 3 },
    quick = { args = { k = 1 }, python = false } },
  { name = "as_completed-thread", script = "as_completed",
    args = { pool = TH, n = 10000, workers = CPUS }, quick = { python = false } },
  { name = "as_completed-process", script = "as_completed",
    args = { pool = PR, n = 10000, workers = CPUS }, quick = { python = false } },
  { name = "codec", script = "codec",
    args = { items = 1000000, bytes = 10000000, small = 100000, k = 3 },
    quick = { args = { small = 20000, k = 1 } } },
  { name = "sharing-thread", script = "sharing",
    args = { pool = TH, items = 500000, mb = 64, k = 50, access = 2000000 },
    quick = { args = { items = 50000, k = 10, access = 300000 } } },
  { name = "sharing-process", script = "sharing",
    args = { pool = PR, items = 20000, mb = 64, k = 50 },
    quick = { args = { items = 2000, k = 10 }, python = false } },
  { name = "memory-thread", script = "memory",
    args = { pool = TH, workers = 8, pending = 100000 }, quick = { python = false } },
  { name = "memory-process", script = "memory",
    args = { pool = PR, workers = CPUS, pending = 20000 },
    quick = { args = { pending = 5000 }, python = false } },
  { name = "contention", script = "contention",
    args = { rt = 2000, runs = 15, map1 = 20000, workers = "2,4,16" },
    quick = { args = { rt = 500, runs = 5, map1 = 4000 } } },
  { name = "contention-busy", script = "contention", busy = true,
    args = { rt = 2000, runs = 9, map1 = 20000, workers = "2,4,16", busy = 1 },
    quick = { args = { rt = 500, runs = 3, map1 = 4000 } } },
  { name = "stop-thread", script = "stop", python = false,
    args = { pool = TH, n = 50 }, quick = { args = { n = 10 } } },
  { name = "stop-process", script = "stop", python = false,
    args = { pool = PR, n = 50, grace = 0.2 }, quick = { args = { n = 10 } } },
  { name = "eventloop", script = "eventloop",
    args = { workers = CPUS, lat = 2000, rt = 2000, n = 10000 },
    quick = { args = { lat = 500, rt = 500 }, python = false } },
  -- mpi = n: ours runs as rank 0 of `mpiexec -n n lua-futures --mpi`
  { name = "overhead-mpi", script = "overhead", mpi = 3,
    args = { pool = "mpi", rt = 3000, submit = 20000, map1 = 5000, map100 = 100000,
             workers = 2 },
    quick = { args = { rt = 500, submit = 5000, map1 = 1000, map100 = 20000 }, python = false } },
  { name = "cpu_curve-mpi", script = "cpu_curve", mpi = 3,
    args = { n = 500000, tasks = 16, workers = "2", pools = "mpi", inner = 3,
             seq_id = "cpu.mpi.seq_ms" },
    quick = { args = { n = 300000 }, python = false } },
}

---------------------------------------------------------------- the machine

local function machine_info()
  local m = { cpus = CPUS }
  local cpuinfo = read_file("/proc/cpuinfo")
  if cpuinfo then
    m.model = cpuinfo:match("model name%s*:%s*([^\n]+)") or cpuinfo:match("Hardware%s*:%s*([^\n]+)")
      or cpuinfo:match("cpu model%s*:%s*([^\n]+)")
  end
  m.model = m.model or capture("sysctl -n machdep.cpu.brand_string") or "unknown"
  m.kernel = capture("uname -srm") or "unknown"
  local meminfo = read_file("/proc/meminfo")
  m.memory_kb = meminfo and tonumber(meminfo:match("MemTotal:%s*(%d+)"))
  return m
end

local function python_info()
  if opts.no_python then return nil, "--no-python" end
  local py = opts.python or os.getenv("PYTHON") or "python3"
  local out = capture(py .. " -c " .. q("import concurrent.futures, pickle, platform, "
    .. "multiprocessing; print(platform.python_version(), multiprocessing.get_start_method())"))
  if not out or out == "" then return nil, py .. " not found" end
  local version, method = out:match("^(%S+)%s+(%S+)")
  return { cmd = py, version = version, start_method = method }
end

---------------------------------------------------------------- running

local HAS_TIMEOUT = os.execute("command -v timeout >/dev/null 2>&1")

-- How MPI workloads start: LUA_FUTURES_MPIEXEC if set (as for the specs),
-- else mpiexec with what 3 ranks on a small machine, as root, need (see
-- docs/mpi.md). nil, and why, when there is no MPI to run them.
local MPI_LAUNCH, NO_MPI = os.getenv("LUA_FUTURES_MPIEXEC"), nil
if not MPI_LAUNCH then
  local mpiexec = capture("command -v mpiexec")
  if mpiexec and mpiexec ~= "" then
    MPI_LAUNCH = "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      .. "OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_pml=ob1 "
      .. "OMPI_MCA_hwloc_base_binding_policy=none " .. q(mpiexec)
  else
    NO_MPI = "mpiexec not found"
  end
end
if MPI_LAUNCH and not pcall(require, "futures.mpi") then
  MPI_LAUNCH, NO_MPI = nil, "futures.mpi was not built (no mpicc)"
end
local TIME_LIMIT = opts.quick and 120 or 900

--- Run one workload process; returns what it printed, parsed.
local function run_cmd(cmd)
  local errfile = os.tmpname()
  local prefix = HAS_TIMEOUT and ("timeout %d "):format(TIME_LIMIT) or ""
  local t0 = futures.monotonic()
  local p = assert(io.popen(("%s%s 2>%s"):format(prefix, cmd, q(errfile))))
  local r = { metrics = {}, extra = {} }
  for line in p:lines() do
    local id, v = line:match("^M (%S+) (%S+)$")
    if id then
      r.metrics[#r.metrics + 1] = { id, tonumber(v) }
    elseif line:match("^SKIP ") then
      r.skip = line:sub(6)
    else
      r.extra[#r.extra + 1] = line
    end
  end
  local ok, _, code = p:close()
  r.seconds = futures.monotonic() - t0
  r.ok, r.code = ok, code
  r.stderr = read_file(errfile) or ""
  os.remove(errfile)
  if HAS_TIMEOUT and code == 124 then r.timed_out = true end
  return r
end

local function workload_cmd(run, impl, args)
  local keys = {}
  for k in pairs(args) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = q(k .. "=" .. tostring(args[k])) end
  local argstr = table.concat(parts, " ")
  if impl == "ours" and run.mpi then
    return ("%s -n %d %s --mpi %s %s"):format(MPI_LAUNCH, run.mpi, q(EXE),
      q(BENCH .. "/workloads/" .. run.script .. ".lua"), argstr)
  end
  if impl == "ours" then
    return ("%s %s %s"):format(q(EXE), q(BENCH .. "/workloads/" .. run.script .. ".lua"), argstr)
  end
  return ("%s %s %s"):format(opts.python_cmd, q(BENCH .. "/py/" .. run.script .. ".py"), argstr)
end

--- Start one other CPU-bound process (an endless Lua loop) for the runs
-- marked busy; returns a function that stops it.
local function start_busy_process()
  local p = assert(io.popen(("exec sh -c 'echo $$; exec %s -e \"while true do end\"'")
    :format(q(EXE):gsub("'", "'\\''"))))
  local pid = p:read("l")
  return function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    p:close()
  end
end

--- Run every selected workload, opts.reps times, both languages interleaved.
-- Returns samples[id][impl] = { values... }, and per-run records.
local function run_all(python)
  local samples, records, failures = {}, json.array(), {}
  local selected = {}
  for _, run in ipairs(RUNS) do
    local want = not opts.only
    for word in (opts.only or ""):gmatch("[^,%s]+") do
      if run.name:find(word, 1, true) then want = true end
    end
    if want then selected[#selected + 1] = run end
  end
  for n, run in ipairs(selected) do
    local args = {}
    for k, v in pairs(run.args) do args[k] = v end
    local with_python = python ~= nil and run.python ~= false
    if opts.quick then
      for k, v in pairs(run.quick and run.quick.args or {}) do args[k] = v end
      if run.quick and run.quick.python == false then with_python = false end
    end
    local rec = { name = run.name, args = args, ours = { seconds = json.array() },
                  python = with_python and { seconds = json.array() } or nil }
    records[#records + 1] = rec
    local done = { python = not with_python }
    if run.mpi and not MPI_LAUNCH then   -- neither side: no MPI to compare
      rec.ours.skipped = NO_MPI
      log("  %s: skipped: %s", run.name, NO_MPI)
      done = { ours = true, python = true }
    end
    for rep = 1, opts.reps do
      local order = rep % 2 == 1 and { "ours", "python" } or { "python", "ours" }
      for _, impl in ipairs(order) do
        if not done[impl] then
          local cmd = workload_cmd(run, impl, args)
          rec[impl].command = cmd
          local stop_busy = run.busy and start_busy_process()
          local r = run_cmd(cmd)
          if stop_busy then stop_busy() end
          table.insert(rec[impl].seconds, r.seconds)
          if opts.verbose then
            for _, line in ipairs(r.extra) do log("    %s| %s", impl, line) end
            if r.stderr ~= "" then log("    %s stderr| %s", impl, r.stderr) end
          end
          if not r.ok then
            local why = r.timed_out and ("timed out after %d s"):format(TIME_LIMIT)
              or ("exit status %s"):format(tostring(r.code))
            rec[impl].failed = why .. ": " .. r.stderr:sub(1, 2000)
            failures[#failures + 1] = { workload = run.name, impl = impl, why = why,
                                        stderr = r.stderr:sub(1, 2000) }
            log("  %s: %s (%s) FAILED: %s\n%s", run.name, impl, cmd, why, r.stderr)
            done[impl] = true
          elseif r.skip then
            rec[impl].skipped = r.skip
            log("  %s: %s skipped: %s", run.name, impl, r.skip)
            done[impl] = true
          end
          for _, m in ipairs(r.metrics) do
            local id, v = m[1], m[2]
            samples[id] = samples[id] or {}
            samples[id][impl] = samples[id][impl] or json.array()
            if v then table.insert(samples[id][impl], v) end
          end
        end
      end
    end
    local function total(t) local s = 0 for _, x in ipairs(t or {}) do s = s + x end return s end
    log("[%2d/%d] %-20s ours %5.1f s%s", n, #selected, run.name, total(rec.ours.seconds),
      rec.python and (", python %5.1f s"):format(total(rec.python.seconds)) or "")
  end
  return samples, records, failures
end

---------------------------------------------------------------- results

local OP_TEXT = { ["<="] = "≤", [">="] = "≥", ["<"] = "<", [">"] = ">" }

local function target_text(m, t)
  local v = ("%g"):format(t[2])
  if t.of then
    local other = BY_ID[t.of]
    return ("%s %sx %s"):format(OP_TEXT[t[1]], v, other and other.label:match("^[^:]+") or t.of)
  elseif t.ratio then
    return ("%s %sx Python"):format(OP_TEXT[t[1]], v)
  end
  return OP_TEXT[t[1]] .. " " .. (m.unit == "x" and v .. "x" or v .. " " .. UNIT[m.unit])
end

local function compare(op, v, t)
  if op == "<=" then return v <= t elseif op == "<" then return v < t
  elseif op == ">=" then return v >= t else return v > t end
end

-- Whether target t of a figure holds: its value v (our median), its ratio
-- to Python, and our medians of the other figures (by id). nil: unknown.
local function meets(t, v, ratio, ours_of)
  if t.ratio then
    if ratio == nil then return nil end
    return compare(t[1], ratio, t[2])
  end
  if v == nil then return nil end
  if t.of then
    local other = ours_of[t.of]
    if other == nil then return nil end
    return compare(t[1], v, t[2] * other)
  end
  return compare(t[1], v, t[2])
end

local function summarize(samples)
  local out = json.array()
  local seen = {}
  local list = {}
  for _, m in ipairs(METRICS) do list[#list + 1] = m end
  -- Figures a workload printed that the catalogue does not know still show.
  local extra = {}
  for id in pairs(samples) do if not BY_ID[id] then extra[#extra + 1] = id end end
  table.sort(extra)
  for _, id in ipairs(extra) do list[#list + 1] = { id = id, label = id, unit = "x", better = "lower" } end
  local ours_of = {}   -- our medians by id, for relative targets
  for id, s in pairs(samples) do
    local st = stats(s.ours)
    ours_of[id] = st and st.median
  end
  for _, m in ipairs(list) do
    -- A figure nobody produced (a skipped pool) still gets its row, n/a,
    -- unless --only narrowed the run.
    if not seen[m.id] and (samples[m.id] or (BY_ID[m.id] and not opts.only)) then
      seen[m.id] = true
      local s = samples[m.id] or {}
      local ours, py = stats(s.ours), stats(s.python)
      local ratio
      if ours and py and ours.median > 0 and py.median > 0 then
        ratio = m.better == "lower" and py.median / ours.median or ours.median / py.median
      end
      local targets, all = json.array(), nil
      for _, t in ipairs(m.targets or {}) do
        local ok = meets(t, ours and ours.median, ratio, ours_of)
        targets[#targets + 1] = { op = t[1], value = t[2], of = t.of, ratio = t.ratio,
                                  text = target_text(m, t), meets = ok }
        if ok == false then all = false elseif ok and all == nil then all = true end
      end
      out[#out + 1] = {
        id = m.id, label = m.label, unit = m.unit, better = m.better,
        target = m.target and { op = m.target[1], value = m.target[2] } or nil,
        targets = #targets > 0 and targets or nil,
        meets_target = all,
        ours = ours, python = py, ratio = ratio,
      }
    end
  end
  return out
end

local function cell(st, unit)
  if not st then return "n/a" end
  local s = with_unit(st.median, unit)
  if #st.samples > 1 then s = s .. (" ±%.0f%%"):format(st.spread) end
  return s
end

local function results_table(results)
  local rows = { { "workload", "ours", "Python", "ratio", "target" } }
  for _, r in ipairs(results) do
    local parts = {}
    for _, t in ipairs(r.targets or {}) do
      parts[#parts + 1] = t.text .. (t.meets == nil and "" or (t.meets and " ok" or " MISS"))
    end
    local tgt = table.concat(parts, ", ")
    rows[#rows + 1] = { r.label, cell(r.ours, r.unit), cell(r.python, r.unit),
      r.ratio and num(r.ratio) .. "x" or "", tgt }
  end
  return table_lines(rows, { false, true, true, true, false })
end

local function compare_lines(old, new)
  local lines = {}
  local om, nm = old.machine or {}, new.machine or {}
  if om.model ~= nm.model or om.cpus ~= nm.cpus then
    lines[#lines + 1] = ("note: different machines: %s × %s then, %s × %s now"):format(
      tostring(om.cpus), tostring(om.model), tostring(nm.cpus), tostring(nm.model))
  end
  if old.mode ~= new.mode then
    lines[#lines + 1] = ("note: %s run then, %s run now (sizes differ)"):format(
      tostring(old.mode), tostring(new.mode))
  end
  local by = {}
  for _, r in ipairs(old.metrics or {}) do by[r.id] = r end
  local rows = { { "workload", "old", "new", "change", "" } }
  local regressions = 0
  for _, r in ipairs(new.metrics or {}) do
    local o = by[r.id]
    local ov = o and o.ours and o.ours.median
    local nv = r.ours and r.ours.median
    local change, verdict = "", ""
    if ov and nv and ov ~= 0 then
      local pct = (nv - ov) / math.abs(ov) * 100
      change = ("%+.1f%%"):format(pct)
      local worse = (r.better == "higher") and -pct or pct
      -- Beyond the threshold and beyond the two runs' own spreads: a change;
      -- beyond the threshold only: maybe, the runs are noisier than that.
      local noise = (o.ours.spread or 0) + (r.ours.spread or 0)
      if worse > opts.threshold then
        if worse > noise then verdict = "REGRESSION"; regressions = regressions + 1
        else verdict = "worse (within noise)" end
      elseif worse < -opts.threshold then
        verdict = -worse > noise and "better" or "better (within noise)"
      end
    end
    rows[#rows + 1] = { r.label or r.id,
      ov and with_unit(ov, r.unit) or "n/a", nv and with_unit(nv, r.unit) or "n/a",
      change, verdict }
  end
  for _, l in ipairs(table_lines(rows, { false, true, true, true, false })) do
    lines[#lines + 1] = l
  end
  lines[#lines + 1] = ("%d regression%s: worse by more than %g%% and more than the"
    .. " two runs' spreads (ours, medians)"):format(
    regressions, regressions == 1 and "" or "s", opts.threshold)
  return lines
end

local function load_results(path)
  local s = read_file(path)
  if not s then io.stderr:write("bench: cannot read ", path, "\n"); os.exit(2) end
  local ok, v = pcall(json.decode, s)
  if not ok or type(v) ~= "table" then
    io.stderr:write("bench: ", path, " is not a results file: ", tostring(v), "\n"); os.exit(2)
  end
  return v
end

---------------------------------------------------------------- main

if opts.diff_old then
  local old, new = load_results(opts.diff_old), load_results(opts.diff_new)
  print(("change from %s to %s"):format(opts.diff_old, opts.diff_new))
  for _, l in ipairs(compare_lines(old, new)) do print(l) end
  os.exit(0)
end

local old = opts.compare and load_results(opts.compare)   -- fail before running
local machine = machine_info()
local python, why_no_python = python_info()
opts.python_cmd = python and python.cmd
local git = capture(("git -C %s rev-parse --short HEAD"):format(q(BENCH)))
if git and capture(("git -C %s status --porcelain --untracked-files=no"):format(q(BENCH))) ~= "" then
  git = git .. "+dirty"
end

log("lua-futures bench (%s): %d repetitions, %d CPUs, %s", opts.quick and "quick" or "full",
  opts.reps, CPUS, machine.model)
log("python: %s", python and (python.cmd .. " " .. python.version) or ("n/a (" .. why_no_python .. ")"))
local function loadavg()
  local s = read_file("/proc/loadavg")
  return s and tonumber(s:match("^(%S+)"))
end
machine.load_before = loadavg()
local started = futures.monotonic()
local samples, records, failures = run_all(python)
local elapsed = futures.monotonic() - started
machine.load_after = loadavg()

local results = summarize(samples)
local report = {
  bench = "lua-futures", schema = 1,
  mode = opts.quick and "quick" or "full",
  repetitions = opts.reps,
  date = os.date("!%Y-%m-%dT%H:%M:%SZ"),
  seconds = elapsed,
  machine = machine,
  versions = {
    lua_futures = futures._VERSION, lua = _VERSION, git = git,
    lua_release = capture("pkg-config --modversion lua5.4"),   -- the liblua built against
    python = python and python.version, python_start_method = python and python.start_method,
  },
  workloads = records,
  metrics = results,
  failures = json.array(failures),
}
write_file(opts.out, json.encode(report) .. "\n")

local header = {
  ("lua-futures %s bench, %s: median of %d repetitions (± half their range)"):format(
    report.mode, report.date, opts.reps),
  ("machine: %d × %s, %s; %s on %s; Python %s"):format(CPUS, machine.model, machine.kernel,
    futures._VERSION or "lua-futures",
    report.versions.lua_release and ("Lua " .. report.versions.lua_release) or _VERSION,
    python and (python.version .. " (" .. python.start_method .. ")") or "n/a"),
}
-- Other work on the machine shows as spread; say so next to the figures.
-- (Only the load before counts: the one after includes the bench itself.)
if (machine.load_before or 0) > 0.5 then
  header[#header + 1] = ("note: the machine was busy when the run started (load average"
    .. " %.2f): expect noise"):format(machine.load_before)
end
header[#header + 1] = ""
local lines = results_table(results)
lines[#lines + 1] = ""
lines[#lines + 1] = "ratio: how many times better lua-futures is than Python (> 1: ours wins)."
local md = table.concat(header, "\n") .. "\n" .. table.concat(lines, "\n") .. "\n"
write_file((opts.out:gsub("%.json$", "")) .. ".md", md)
io.write("\n", md)
print(("results: %s (%.0f s)"):format(opts.out, elapsed))

if old then
  print(("\nchange against %s (ours):"):format(opts.compare))
  for _, l in ipairs(compare_lines(old, report)) do print(l) end
end

if #failures > 0 then
  local ours_failed = 0
  for _, f in ipairs(failures) do
    print(("FAILED: %s (%s): %s"):format(f.workload, f.impl, f.why))
    if f.impl == "ours" then ours_failed = ours_failed + 1 end
  end
  if ours_failed > 0 then os.exit(1) end
end
