-- Fan-out of I/O-bound work on threads: start every "fetch" at once and
-- handle each reply as soon as it arrives, with futures.as_completed. A
-- fetch here is a shell command that waits and then answers (standing in for
-- a slow server), or a local file to read; the waits overlap, so the whole
-- batch takes about as long as the slowest fetch, not the sum of them all.
-- usage: bin/lua-futures examples/fetch.lua [file...]
local futures = require "futures"

-- Runs on a worker thread; io.popen and io.open are the worker's own (and
-- a worker's io.popen does not wait for the other workers' pipes).
local function fetch(job)
  if job.cmd then
    local p = assert(io.popen(job.cmd))
    local reply = p:read("a")
    local ok, how, code = p:close()
    if not ok then error(("command failed (%s %d)"):format(how, code)) end
    return (reply:gsub("%s+$", ""))
  end
  local f = assert(io.open(job.path, "rb"))
  local data = f:read("a")
  f:close()
  return ("%d bytes"):format(#data)
end

local jobs = {}
if arg and #arg > 0 then
  for i = 1, #arg do jobs[i] = { name = arg[i], path = arg[i] } end
else
  for i = 1, 8 do
    local delay = 0.1 + 0.1 * (i % 3)   -- 0.1 to 0.3 seconds
    jobs[i] = {
      name = ("server %d"):format(i), delay = delay,
      cmd = ("sleep %.1f; echo 'hello from server %d'"):format(delay, i),
    }
  end
end

local ex <close> = futures.ThreadPoolExecutor{ max_workers = #jobs, name = "fetch" }
local start = futures.monotonic()
local fs, job_of = {}, {}
for i, job in ipairs(jobs) do
  fs[i] = ex:submit(fetch, job)
  job_of[fs[i]] = job
end

local serial, failed = 0, 0
for f in futures.as_completed(fs, 60) do
  local job = job_of[f]
  local err = f:exception()
  local at = futures.monotonic() - start
  if err then
    failed = failed + 1
    print(("%5.2f s  %-10s failed: %s"):format(at, job.name, err))
  else
    print(("%5.2f s  %-10s %s"):format(at, job.name, (f:result())))
  end
  serial = serial + (job.delay or 0)
end

local elapsed = futures.monotonic() - start
print(("%d fetches (%d failed) in %.2f s"):format(#jobs, failed, elapsed))
if serial > 0 then
  print(("one after another they would take at least %.2f s (%.1fx slower)")
    :format(serial, serial / elapsed))
end
