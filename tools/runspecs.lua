-- Runs the busted suite once under each interpreter given (plain lua5.4 with
-- the built futures/core.so, bin/lua-futures, a sanitizer build), streams
-- busted's output and ends with one closing line: "N passed, N failed".
-- usage: lua5.4 tools/runspecs.lua BUSTED INTERP... [-- busted args...]
local busted = arg[1] or "busted"
local interps, extra = {}, {}
local i = 2
while arg[i] and arg[i] ~= "--" do interps[#interps + 1] = arg[i]; i = i + 1 end
for j = i + 1, #arg do extra[#extra + 1] = arg[j] end
if #interps == 0 then interps = { "lua5.4" } end

local passed, failed = 0, 0
for _, interp in ipairs(interps) do
  print(("== busted under %s"):format(interp))
  local cmd = ("LUA_FUTURES_SPEC_INTERP=%s %s --lua=%s %s 2>&1")
    :format(interp, busted, interp, table.concat(extra, " "))
  local p = assert(io.popen(cmd))
  local summary
  for line in p:lines() do
    print(line)
    local s, f, e = line:match("(%d+) successe?s? / (%d+) failures? / (%d+) errors?")
    if s then summary = { tonumber(s), tonumber(f) + tonumber(e) } end
  end
  local ok = p:close()
  if not summary then
    failed = failed + 1
    print(("busted under %s printed no summary"):format(interp))
  else
    passed, failed = passed + summary[1], failed + summary[2]
    if not ok and summary[2] == 0 then
      failed = failed + 1
      print(("busted under %s exited with a failure status"):format(interp))
    end
  end
end
print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
