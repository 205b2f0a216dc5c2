-- Map-reduce on a thread pool: count the words of a large text. The text is
-- cut into chunks of lines; workers count the words of each chunk (map) and
-- the main state adds the partial counts up (reduce). Without a file, a
-- text of about 1.5 MB is made up first. The result is checked against a
-- count done sequentially, which also gives the speed-up.
-- usage: bin/lua-futures examples/wordcount.lua [file] [workers]
local futures = require "futures"

local path = arg and arg[1]
local workers = math.tointeger(tonumber(arg and arg[2])) or futures.cpu_count()
local LINES_PER_CHUNK = 1000

-- A made-up text: words of a small vocabulary, frequent ones more often (as
-- in real text), from a fixed pseudo-random sequence so every run is alike.
local function make_text(file, lines)
  local syllables = { "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po" }
  local vocabulary = {}
  for i = 1, 500 do
    local a, b, c = i % 10 + 1, i // 10 % 10 + 1, i // 100 % 10 + 1
    vocabulary[i] = syllables[a] .. syllables[b] .. (i > 100 and syllables[c] or "")
  end
  local seed = 12345
  local function next_random()   -- a 31-bit linear congruential generator
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648
  end
  local f = assert(io.open(file, "w"))
  for _ = 1, lines do
    local words = {}
    for k = 1, 8 + math.floor(next_random() * 8) do
      words[k] = vocabulary[1 + math.floor(#vocabulary * next_random() ^ 3)]
    end
    words[1] = words[1]:sub(1, 1):upper() .. words[1]:sub(2)
    f:write(table.concat(words, " "), ".\n")
  end
  f:close()
end

local made_up = not path
if made_up then
  path = os.tmpname()
  make_text(path, 25000)
end

-- The map step, run by a worker on one chunk: word -> count.
local function count_words(chunk)
  local counts = {}
  for word in chunk:gmatch("%a+") do
    word = word:lower()
    counts[word] = (counts[word] or 0) + 1
  end
  return counts
end

-- Chunks of LINES_PER_CHUNK lines, read lazily from the file.
-- (io.lines closes the file at its end, after which it must not be called.)
local function chunks(file)
  local lines = io.lines(file)
  local at_end = false
  return function()
    local buf = {}
    while not at_end and #buf < LINES_PER_CHUNK do
      local line = lines()
      if line == nil then at_end = true else buf[#buf + 1] = line end
    end
    if #buf > 0 then return table.concat(buf, "\n") end
  end
end

local function add(total, part)
  for word, n in pairs(part) do total[word] = (total[word] or 0) + n end
end

-- Parallel: at most 2 chunks per worker in flight, so memory stays bounded
-- whatever the size of the file.
local start = futures.monotonic()
local totals = {}
do
  local ex <close> = futures.ThreadPoolExecutor(workers)
  for _, part in ex:map(count_words, chunks(path), { buffersize = 2 * workers }) do
    add(totals, part)
  end
end
local parallel = futures.monotonic() - start

-- Sequential, for comparison and to check the result.
start = futures.monotonic()
local check = {}
for chunk in chunks(path) do add(check, count_words(chunk)) end
local sequential = futures.monotonic() - start

if made_up then os.remove(path) end

local words, distinct, same = 0, 0, true
local sorted = {}
for word, n in pairs(totals) do
  words, distinct = words + n, distinct + 1
  sorted[#sorted + 1] = word
  if check[word] ~= n then same = false end
end
for word in pairs(check) do if totals[word] == nil then same = false end end
table.sort(sorted, function(a, b)
  if totals[a] ~= totals[b] then return totals[a] > totals[b] end
  return a < b
end)

print("most frequent words:")
for i = 1, math.min(10, #sorted) do
  print(("  %-10s %d"):format(sorted[i], totals[sorted[i]]))
end
print(("%d words, %d distinct, counted in %.2f s on %d workers (sequential: %.2f s, %.1fx)")
  :format(words, distinct, parallel, workers, sequential, sequential / parallel))
print("matches the sequential count: " .. (same and "yes" or "NO"))
if not same then os.exit(1) end
