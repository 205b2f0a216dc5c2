-- Runs the busted suite once under each interpreter (plain lua5.4 with the
-- built futures/core.so, then bin/lua-futures), streams busted's output and
-- ends with one closing line: "N passed, N failed".
-- usage: lua5.4 tools/runspecs.lua BUSTED LUA [busted args...]
local busted, lua = arg[1] or "busted", arg[2] or "lua5.4"
local extra = table.concat(arg, " ", 3)
local passed, failed = 0, 0
for _, interp in ipairs { lua, "bin/lua-futures" } do
  print(("== busted under %s"):format(interp))
  local cmd = ("LUA_FUTURES_SPEC_INTERP=%s %s --lua=%s %s 2>&1"):format(interp, busted, interp, extra)
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
    if not ok and summary[2] == 0 then failed = failed + 1 end
  end
end
print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
