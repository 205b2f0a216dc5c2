-- Helpers for the specs that run programs: examples, the installed module,
-- the docs. Every command runs under `timeout`, so a hang fails the test
-- instead of stalling the suite.
local shell = {}

-- Quotes one word for sh.
function shell.q(s)
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local function capture(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

shell.ROOT = capture("pwd"):gsub("\n$", "")
shell.EXE = shell.ROOT .. "/bin/lua-futures"

function shell.read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

function shell.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- Runs the shell command `cmd` with at most `seconds` seconds (default 60)
-- and no standard input. Returns { status = exit status (124 on timeout),
-- out = stdout, err = stderr }.
function shell.run(cmd, seconds)
  local errpath = os.tmpname()
  local p = assert(io.popen(("timeout %d sh -c %s </dev/null 2>%s")
    :format(seconds or 60, shell.q(cmd), shell.q(errpath))))
  local out = p:read("a")
  local _, _, status = p:close()
  local err = shell.read_file(errpath)
  os.remove(errpath)
  return { status = status, out = out, err = err }
end

-- Runs bin/lua-futures from the repository root with the argument list
-- `args` (quoted here); LUA_INIT is removed so the caller's does not leak in.
function shell.lua_futures(args, seconds)
  local words = { "cd", shell.q(shell.ROOT), "&&", "env -u LUA_INIT -u LUA_INIT_5_4",
    shell.q(shell.EXE) }
  for _, a in ipairs(args) do words[#words + 1] = shell.q(a) end
  return shell.run(table.concat(words, " "), seconds)
end

-- Runs the Lua code `code` in a child process: the interpreter that runs
-- the specs (LUA_FUTURES_SPEC_INTERP, else lua5.4) with this process's
-- package.path and package.cpath, from the repository root, so that it
-- loads the same futures module (and spec/support/). `args` (a list) are
-- the chunk's `...`. For what prints on the C side's stderr, which a spec
-- cannot capture in its own process: the result's `err` holds it.
-- Returns what shell.run returns.
function shell.run_lua(code, args, seconds)
  local interp = os.getenv("LUA_FUTURES_SPEC_INTERP") or "lua5.4"
  local script = shell.write_file(os.tmpname(), code)
  local words = { "cd", shell.q(shell.ROOT), "&&", "env -u LUA_INIT -u LUA_INIT_5_4",
    "LUA_PATH_5_4=" .. shell.q(package.path), "LUA_CPATH_5_4=" .. shell.q(package.cpath),
    shell.q(interp), shell.q(script) }
  for _, a in ipairs(args or {}) do words[#words + 1] = shell.q(a) end
  local r = shell.run(table.concat(words, " "), seconds)
  os.remove(script)
  return r
end

-- A fresh temporary directory, and its removal.
function shell.tmpdir()
  return (capture("mktemp -d"):gsub("\n$", ""))
end

function shell.rmdir(dir)
  assert(dir:match("^/tmp/"), "refusing to remove " .. dir)
  os.execute("rm -rf " .. shell.q(dir))
end

-- Whether bin/lua-futures can run a task on a process pool: nil when it can,
-- else the reason (for pending()). Asked once per busted run.
local process_pool_problem
function shell.process_pool_problem()
  if process_pool_problem == nil then
    local r = shell.lua_futures({ "-e", [[
      local futures = require "futures"
      if not futures.ProcessPoolExecutor then print("no ProcessPoolExecutor") return end
      local px <close> = futures.ProcessPoolExecutor(1)
      print(px:submit(function(x) return x * 2 end, 21):result(20) == 42 and "ok" or "wrong result")
    ]] }, 60)
    local said = r.out:gsub("%s+$", "")
    if r.status == 0 and said == "ok" then
      process_pool_problem = false
    else
      process_pool_problem = ("process pools do not work in this build (%s)")
        :format(said ~= "" and said or r.err:match("[^\n]*"))
    end
  end
  return process_pool_problem or nil
end

return shell
