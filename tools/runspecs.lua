-- Runs the busted suite once under each interpreter given (plain lua5.4 with
-- the built futures/core.so, bin/lua-futures, a sanitizer build), streams
-- busted's output and ends with one closing line: "N passed, N failed".
-- With --mpi=LAUNCHER (the mpiexec command, its environment first) it then
-- runs the MPI specs, which the plain runs leave out (.busted):
-- spec/mpi_launch_spec.lua as a plain run (it starts MPI jobs itself), and
-- every other spec/mpi_*_spec.lua as rank 0 of `LAUNCHER -n NP` under each
-- interpreter (bin/lua-futures --mpi, lua5.4 -l futures.mpi), the other
-- ranks serving. --mpi-skip=WHY says in one line why they do not run.
-- usage: lua5.4 tools/runspecs.lua BUSTED INTERP... [--mpi=CMD [--mpi-np=N]
--        | --mpi-skip=WHY] [-- busted args...]
local busted = arg[1] or "busted"
local interps, extra = {}, {}
local mpi, mpi_np, mpi_skip = nil, 3, nil
local i = 2
while arg[i] and arg[i] ~= "--" do
  local a = arg[i]
  if a:match("^%-%-mpi=") then mpi = a:sub(7)
  elseif a:match("^%-%-mpi%-np=") then mpi_np = tonumber(a:sub(10))
  elseif a:match("^%-%-mpi%-skip=") then mpi_skip = a:sub(12)
  else interps[#interps + 1] = a end
  i = i + 1
end
for j = i + 1, #arg do extra[#extra + 1] = arg[j] end
if #interps == 0 then interps = { "lua5.4" } end

local function q(s) return "'" .. tostring(s):gsub("'", [['\'']]) .. "'" end

local passed, failed = 0, 0

-- Runs one busted command (its output merged), counting its summary.
local function run(title, cmd)
  print(("== %s"):format(title))
  local p = assert(io.popen(cmd .. " 2>&1"))
  local summary
  for line in p:lines() do
    print(line)
    local plain = line:gsub("\27%[[%d;]*m", "")   -- busted colours some outputs
    local s, f, e = plain:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors?")
    if s then summary = { tonumber(s), tonumber(f) + tonumber(e) } end
  end
  local ok = p:close()
  if not summary then
    failed = failed + 1
    print(("%s printed no summary"):format(title))
  else
    passed, failed = passed + summary[1], failed + summary[2]
    if not ok and summary[2] == 0 then
      failed = failed + 1
      print(("%s exited with a failure status"):format(title))
    end
  end
end

for _, interp in ipairs(interps) do
  run(("busted under %s"):format(interp),
    ("LUA_FUTURES_SPEC_INTERP=%s %s --lua=%s %s"):format(interp, busted, interp,
      table.concat(extra, " ")))
end

if mpi_skip then
  print(("== MPI specs skipped: %s"):format(mpi_skip))
elseif mpi then
  local p = assert(io.popen("ls spec/mpi_*_spec.lua 2>/dev/null"))
  local launch, world = {}, {}
  for file in p:lines() do
    if file:match("mpi_launch_spec%.lua$") then launch[#launch + 1] = file
    else world[#world + 1] = file end
  end
  p:close()
  local which = assert(io.popen("command -v " .. q(busted)))
  local script = which:read("l") or busted
  which:close()
  local last = interps[#interps]
  if #launch > 0 then
    run(("MPI launch specs under %s"):format(last),
      ("LUA_FUTURES_SPEC_INTERP=%s LUA_FUTURES_MPIEXEC=%s %s --lua=%s %s %s"):format(last,
        q(mpi), busted, last, table.concat(extra, " "), table.concat(launch, " ")))
  end
  for _, interp in ipairs(interps) do
    -- bin/lua-futures has --mpi; another interpreter loads the module first,
    -- from the build tree (.busted's paths), before busted sets them
    local ours = interp:match("lua%-futures$")
    local load = ours and "--mpi" or "-l futures.mpi"
    local paths = ours and "" or
      "LUA_PATH_5_4='./lua/?.lua;./lua/?/init.lua;;' LUA_CPATH_5_4='./build/?.so;;' "
    run(("MPI specs: %s -n %d %s %s busted"):format(mpi:match("(%S+)$"), mpi_np, interp, load),
      ("%sLUA_FUTURES_SPEC_INTERP=%s %s -n %d %s %s %s --ignore-lua %s %s"):format(paths, interp,
        mpi, mpi_np, interp, load, script, table.concat(extra, " "), table.concat(world, " ")))
  end
end
print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
