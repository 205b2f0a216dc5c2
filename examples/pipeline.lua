-- A pipeline of tasks joined by queues: a producer task feeds numbers into
-- one queue, two transformer tasks take them and work out how long each
-- number's Collatz sequence is, and put their answers into a second queue,
-- which the host consumes as the answers come, with a progress line on
-- stderr. Bounded queues keep the stages in step: a fast producer waits
-- for the transformers instead of filling memory. The last transformer to
-- finish closes the answers queue (a SharedArray counts those still
-- running), which ends the host's loop.
-- usage: bin/lua-futures examples/pipeline.lua [count] [thread|process]
local futures = require "futures"

local count = math.tointeger(tonumber(arg and arg[1])) or 10000
local kind = arg and arg[2] or "thread"

local numbers = futures.Queue{ maxsize = 256 }   -- producer -> transformers
local answers = futures.Queue{ maxsize = 256 }   -- transformers -> host
local running = futures.SharedArray("i64", 1)    -- transformers not done yet

local function produce(out, n)
  for i = 1, n do out:put(i) end
  out:close()   -- once drained, the transformers' loops end
end

local function transform(input, out, still_running)
  local function steps(n)
    local s = 0
    while n ~= 1 do
      n = n % 2 == 0 and n // 2 or 3 * n + 1
      s = s + 1
    end
    return s
  end
  for n in input:iter() do out:put({ n = n, steps = steps(n) }) end
  if still_running:add(1, -1) == 0 then out:close() end
end

local ex <close> = kind == "process" and futures.ProcessPoolExecutor(3)
                                      or futures.ThreadPoolExecutor(3)
local start = futures.monotonic()
running[1] = 2
local tasks = { ex:submit(produce, numbers, count) }
for t = 1, 2 do tasks[t + 1] = ex:submit(transform, numbers, answers, running) end

local seen, longest, from = 0, -1, nil
for a in futures.progress(answers:iter(), { total = count, label = "collatz" }) do
  seen = seen + 1
  if a.steps > longest or (a.steps == longest and a.n < from) then
    longest, from = a.steps, a.n
  end
end
for _, t in ipairs(tasks) do t:result() end   -- a task's error, if any, raises here

print(("%d answers from 2 %s transformers in %.2f s"):format(seen, kind,
  futures.monotonic() - start))
print(("the longest sequence up to %d starts at %d: %d steps"):format(count, from, longest))
