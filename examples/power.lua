-- The first thing to try: submit a few calls to a thread pool and print
-- their results. Each task computes base^n with integers, on a worker that
-- has its own Lua state; the function and its arguments are copied there.
-- usage: bin/lua-futures examples/power.lua [base]
local futures = require "futures"

local base = math.tointeger(tonumber(arg and arg[1]) or 2) or 2

-- Integer power by squaring. Lua integers are 64-bit and wrap around, so a
-- result that does not fit is reported as an error of the task.
local function power(b, n)
  if math.abs(b) ^ n >= 2 ^ 63 then
    error(("%d^%d does not fit in a 64-bit integer"):format(b, n))
  end
  local result = 1
  while n > 0 do
    if n % 2 == 1 then result = result * b end
    b = b * b
    n = n // 2
  end
  return result
end

local ex <close> = futures.ThreadPoolExecutor{ max_workers = 4 }

-- submit returns a future at once; result() waits for the value.
local exponents = { 1, 2, 8, 10, 16, 32, 62 }
local fs = {}
for i, n in ipairs(exponents) do
  fs[i] = ex:submit(power, base, n)
end
for i, n in ipairs(exponents) do
  local err = fs[i]:exception(10)   -- nil when the task succeeded
  if err then
    print(("%d^%d: %s"):format(base, n, err))
  else
    print(("%d^%d = %d"):format(base, n, fs[i]:result()))
  end
end

-- The same with map: it yields the index of each input, then the results.
local sum = 0
for _, p in ex:map(power, { base, base, base }, { 3, 4, 5 }, { timeout = 10 }) do
  sum = sum + p
end
print(("%d^3 + %d^4 + %d^5 = %d"):format(base, base, base, sum))
