-- Memory, from VmRSS (Linux /proc; n/a elsewhere):
--   <pool>.worker_kb   an idle worker. Thread pool: growth of this process's
--                      RSS per started worker. Process pool: the RSS of a
--                      worker process (median over the workers).
--   <pool>.pending_mb  growth of this process's RSS while `pending` futures
--                      wait behind a blocked worker, scaled to 100 000.
-- params: pool, workers, pending
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local kind = p.pool or "thread"
local workers = p.workers or 8
local pending = p.pending or 100000

if not B.rss_kb() then B.skip("no /proc/self/status VmRSS on this system"); os.exit(0) end

-- Idle workers.
B.full_gc()
local before = B.rss_kb()
local ex = B.pool_or_skip(kind, workers)
local started, rss = B.start_workers(ex, workers, 0.05)
B.full_gc()
local after = B.rss_kb()
if kind == "thread" then
  B.emit("mem.thread.worker_kb", (after - before) / started)
else
  B.emit("mem.process.worker_kb", B.median(rss))
end
print(("%d workers started"):format(started))
ex:shutdown()

-- Pending futures behind a blocked worker.
ex = B.pool_or_skip(kind, 1)
local gate = B.gate_path()
local blocker = ex:submit(B.gated, gate)
B.wait_running(blocker)
B.full_gc()
before = B.rss_kb()
local fs = {}
for i = 1, pending do fs[i] = ex:submit(B.ident, i) end
B.full_gc()
after = B.rss_kb()
B.emit("mem." .. kind .. ".pending_mb", (after - before) / 1024 * (100000 / pending))
B.open_gate(gate)
assert(fs[pending]:result(300) == pending)
B.remove_gate(gate)
ex:shutdown()
