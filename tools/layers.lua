-- Checks the layering of the C core from its object files: each object may
-- use symbols defined only by objects listed before it (the order of the
-- Makefile's CORE_OBJS and EXE_OBJS, bottom layer first). Prints every
-- back-call (user, symbol, definer) and fails if there is one; otherwise
-- prints the dependency graph's size. The objects after "--" are those of a
-- companion module (futures/mpi.so), which must reach the core through its
-- API table (lf_api.h) alone: any symbol of the core they use is reported.
-- Anyone can run it: make layers.
-- usage: lua5.4 tools/layers.lua build/a.o build/b.o ... [-- build/c.o ...]
local objs, companions = {}, {}
do
  local into = objs
  for _, a in ipairs { ... } do
    if a == "--" then into = companions else into[#into + 1] = a end
  end
end
local function nm(args, obj)
  local p = assert(io.popen(("nm %s %q"):format(args, obj)))
  local syms = {}
  for line in p:lines() do
    local sym = line:match("%s[A-Za-z]%s+([%w_%.]+)$") or line:match("^%s*[A-Za-z]%s+([%w_%.]+)$")
    if sym then syms[#syms + 1] = sym end
  end
  p:close()
  return syms
end

local definer, position = {}, {}
for i, obj in ipairs(objs) do
  position[obj] = i
  for _, sym in ipairs(nm("--defined-only --extern-only", obj)) do definer[sym] = obj end
end

local bad, edges = 0, 0
local short = function(o) return (o:gsub("^.*/", "")) end
for i, obj in ipairs(objs) do
  local seen = {}
  for _, sym in ipairs(nm("--undefined-only", obj)) do
    local d = definer[sym]
    if d and d ~= obj and not seen[d] then
      seen[d] = true
      edges = edges + 1
      if position[d] > i then
        bad = bad + 1
        print(("layers: %s uses %s from %s, which is above it"):format(short(obj), sym, short(d)))
      end
    end
  end
end
if bad > 0 then
  print(("layers: %d back-call(s): the core's files form a cycle or break the order"):format(bad))
  os.exit(1)
end
for _, obj in ipairs(companions) do
  for _, sym in ipairs(nm("--undefined-only", obj)) do
    if definer[sym] then
      bad = bad + 1
      print(("layers: %s uses %s of the core directly (a companion module goes through lf_api.h)")
        :format(short(obj), sym))
    end
  end
end
if bad > 0 then os.exit(1) end
print(("layers: %d objects, %d file dependencies, all downward (no cycle)%s"):format(#objs, edges,
  #companions > 0 and (", %d companion objects through lf_api.h"):format(#companions) or ""))
