-- as_completed over `n` futures of a pool (`pool` = thread or process) with
-- `workers` workers:
--   asc_total_ms  submit n small tasks, then as_completed over them, calling
--                 result() on each (end to end)
--   asc_done_ms   as_completed over the same n futures once all are done
--                 (the iterator's own cost)
-- params: pool, n, workers
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local futures = B.futures
local p = B.params()
local kind = p.pool or "thread"
local n = p.n or 10000
local workers = p.workers or futures.cpu_count()

local ex = B.pool_or_skip(kind, workers)
B.start_workers(ex, workers, 0.02)

B.full_gc()
local start = B.now()
local fs = {}
for i = 1, n do fs[i] = ex:submit(B.ident, i) end
local count, sum = 0, 0
for f in futures.as_completed(fs) do
  count = count + 1
  sum = sum + f:result()
end
B.emit(kind .. ".asc_total_ms", (B.now() - start) * 1e3)
assert(count == n and sum == n * (n + 1) // 2)

B.full_gc()
start = B.now()
count = 0
for _ in futures.as_completed(fs) do count = count + 1 end
B.emit(kind .. ".asc_done_ms", (B.now() - start) * 1e3)
assert(count == n)
ex:shutdown()
