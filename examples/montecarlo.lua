-- CPU-bound work on every core: estimate pi by throwing random points at a
-- square and counting those inside the quarter circle. The samples are split
-- into tasks; each worker has its own Lua state, and so its own math.random,
-- which the pool's initializer seeds once per worker so that no two workers
-- draw the same sequence.
-- usage: bin/lua-futures examples/montecarlo.lua [samples] [workers] [thread|process]
local futures = require "futures"

local samples = math.tointeger(tonumber(arg and arg[1])) or 4000000
local workers = math.tointeger(tonumber(arg and arg[2])) or futures.cpu_count()
local kind = arg and arg[3] or "thread"
local TASKS = workers * 4   -- a few tasks per worker evens out the load

-- Runs once in each new worker. The clock's nanoseconds and the address of
-- a table of this state differ between workers, so their seeds do too.
local monotonic = futures.monotonic   -- a C function: travels by its name
local function seed_worker(base)
  local ns = math.floor(monotonic() % 1 * 1e9)
  local address = tonumber(tostring({}):match("0x(%x+)") or "0", 16)
  math.randomseed(base, ns ~ address)
end

-- One task: n points, returns how many fell inside the circle.
local function hits(n)
  local random, inside = math.random, 0
  for _ = 1, n do
    local x, y = random(), random()
    if x * x + y * y <= 1 then inside = inside + 1 end
  end
  return inside
end

local opts = { max_workers = workers, initializer = seed_worker, initargs = { os.time() } }
local ex
if kind == "process" then
  assert(futures.ProcessPoolExecutor, "this build has no ProcessPoolExecutor")
  ex = futures.ProcessPoolExecutor(opts)
else
  ex = futures.ThreadPoolExecutor(opts)
end

local per_task = samples // TASKS
local sizes = {}
for i = 1, TASKS do sizes[i] = per_task end
sizes[TASKS] = samples - per_task * (TASKS - 1)

local start = futures.monotonic()
local inside = 0
for _, n in ex:map(hits, sizes) do inside = inside + n end
local elapsed = futures.monotonic() - start
ex:shutdown()

local pi = 4 * inside / samples
print(("pi is about %.5f (error %.5f) from %d samples"):format(pi, math.abs(pi - math.pi), samples))
print(("%d tasks on %d %s workers in %.2f s"):format(TASKS, workers, kind, elapsed))
