-- Ctrl-C during the blocking calls of the runtime: in bin/lua-futures each
-- ends with the usual "interrupted!" error within a fraction of a second.
-- Each case runs in its own interpreter process, under `timeout`.
local ROOT = (function()
  local p = assert(io.popen("pwd"))
  local dir = p:read("l")
  p:close()
  return dir
end)()

-- SIGINT after 0.5 s; a process still alive 2 s later is killed (137).
local function interrupted(code)
  local errpath = os.tmpname()
  local cmd = ("cd %s && timeout --foreground --preserve-status -k 2 -s INT 0.5 "
    .. "bin/lua-futures -e %q 2>%s"):format(ROOT, code, errpath)
  local t0 = os.time()
  local p = assert(io.popen(cmd))
  p:read("a")
  local _, _, status = p:close()
  local f = assert(io.open(errpath))
  local err = f:read("a")
  f:close()
  os.remove(errpath)
  return status, err, os.time() - t0
end

describe("Ctrl-C in bin/lua-futures", function()
  local cases = {
    ["result() of a future that never finishes"] =
      "local f = require'futures'.Future(); f:result()",
    ["exception() of a future that never finishes"] =
      "local f = require'futures'.Future(); f:exception()",
    ["result() of a long task"] =
      "local F = require'futures'; local ex = F.ThreadPoolExecutor(1); "
      .. "ex:submit(F.sleep, 30):result()",
    ["wait()"] =
      "local F = require'futures'; F.wait({ F.Future() })",
    ["as_completed"] =
      "local F = require'futures'; for f in F.as_completed({ F.Future() }) do end",
    ["a map iteration"] =
      "local F = require'futures'; local ex = F.ThreadPoolExecutor(1); "
      .. "for i in ex:map(F.sleep, { 30 }) do end",
    ["shutdown() waiting for a long task"] =
      "local F = require'futures'; local ex = F.ThreadPoolExecutor(1); "
      .. "ex:submit(F.sleep, 30); ex:shutdown()",
  }
  for name, code in pairs(cases) do
    it("interrupts " .. name, function()
      local status, err = interrupted(code)
      assert.equals(1, status, err)
      assert.matches("interrupted!", err)
    end)
  end
end)
