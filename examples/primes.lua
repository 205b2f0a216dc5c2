-- The seed workload: is each number prime? Sequentially, then on a pool.
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

local t0 = futures.monotonic()
for _, n in ipairs(PRIMES) do
  print(("%d is prime: %s"):format(n, is_prime(n)))
end
print(("sequential: %.2f s"):format(futures.monotonic() - t0))
