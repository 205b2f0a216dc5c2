-- The seed workload: is-prime over the seed's list, sequentially, then with
-- a thread pool and a process pool of `workers` workers. Each pool is timed
-- from its creation to the end of its shutdown, as a script using it would
-- see it (the with-block of Python's concurrent.futures example).
-- params: workers
local B = dofile(arg[0]:match("^(.*)/") .. "/common.lua")
local p = B.params()
local workers = p.workers or B.futures.cpu_count()

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

local expected = {}
local t0 = B.now()
for i, n in ipairs(PRIMES) do expected[i] = is_prime(n) end
local seq = B.now() - t0
B.emit("primes.seq_s", seq)

local function run(kind)
  local start = B.now()
  local ex, why = B.pool(kind, workers)
  if not ex then return nil, why end
  for i, prime in ex:map(is_prime, PRIMES) do
    assert(prime == expected[i], "wrong answer")
  end
  ex:shutdown()
  return B.now() - start
end

local t = run("thread")
B.emit("primes.thread_s", t)
B.emit("primes.thread_speedup", seq / t)

local tp, why = run("process")
if tp then
  B.emit("primes.process_s", tp)
  B.emit("primes.process_speedup", seq / tp)
else
  print("process pool: " .. why)
  B.emit("primes.process_s", nil)
  B.emit("primes.process_speedup", nil)
end
