-- The seed workload: is each number prime? Sequentially, then with a thread
-- pool and a process pool, printing each answer and the times.
-- usage: bin/lua-futures examples/primes.lua [workers]
local futures = require "futures"

local PRIMES = {
  112272535095293, 112582705942171, 112272535095293,
  115280095190773, 115797848077099, 1099726899285419,
}

local function is_prime(n)
  if n < 2 then return false end
  if n == 2 then return true end
  if n % 2 == 0 then return false end
  local limit = math.floor(math.sqrt(n))
  for i = 3, limit, 2 do
    if n % i == 0 then return false end
  end
  return true
end

local workers = tonumber(arg and arg[1]) or futures.cpu_count()

local t0 = futures.monotonic()
for _, n in ipairs(PRIMES) do is_prime(n) end
local sequential = futures.monotonic() - t0
print(("sequential:             %.2f s"):format(sequential))

local function run(label, executor)
  local start = futures.monotonic()
  for i, prime in executor:map(is_prime, PRIMES) do
    print(("  %d is prime: %s"):format(PRIMES[i], prime))
  end
  local elapsed = futures.monotonic() - start
  print(("%-23s %.2f s  (%.2fx sequential)"):format(label .. ":", elapsed, sequential / elapsed))
end

do
  local ex <close> = futures.ThreadPoolExecutor(workers)
  run(("thread pool, %d workers"):format(workers), ex)
end

if futures.ProcessPoolExecutor then
  local ok, ex = pcall(futures.ProcessPoolExecutor, workers)
  if ok then
    local px <close> = ex
    run(("process pool, %d workers"):format(workers), px)
  else
    print("process pool: unavailable (" .. tostring(ex) .. ")")
  end
end
