-- Specs of bin/lua-futures, the bundled interpreter: it must answer a
-- command line the way lua5.4 does, with `require "futures"` working
-- anywhere. Each test starts the interpreter as a separate process under
-- `timeout`, so a hang fails the test instead of stalling the suite; the
-- specs run the same way whichever interpreter runs busted.

local function q(s)  -- quote one word for sh
  return "'" .. tostring(s):gsub("'", [['\'']]) .. "'"
end

local ROOT = (function()
  local p = assert(io.popen("pwd"))
  local dir = p:read("l")
  p:close()
  return dir
end)()
local EXE = ROOT .. "/bin/lua-futures"
local VERSION = require("futures")._VERSION  -- "lua-futures x.y.z"

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

-- Runs a shell command with `stdin` (a string) as its standard input.
-- Returns { status = exit status, out = stdout, err = stderr }.
local function sh(cmd, stdin)
  local inpath = write_file(os.tmpname(), stdin or "")
  local errpath = os.tmpname()
  local p = assert(io.popen(("(%s) <%s 2>%s"):format(cmd, q(inpath), q(errpath))))
  local out = p:read("a")
  local _, _, status = p:close()
  local err = read_file(errpath)
  os.remove(inpath)
  os.remove(errpath)
  return { status = status, out = out, err = err }
end

-- Runs bin/lua-futures with the argument list `args`. opts: stdin (string),
-- env (table of variables to set), cwd (default: the repository root),
-- prefix (words put before the interpreter instead of `timeout 10`).
-- LUA_INIT and LUA_INIT_5_4 of the environment running the suite are
-- removed unless opts.env sets them.
local function lf(args, opts)
  opts = opts or {}
  local words = { "cd", q(opts.cwd or ROOT), "&&", "env", "-u LUA_INIT", "-u LUA_INIT_5_4" }
  for k, v in pairs(opts.env or {}) do words[#words + 1] = k .. "=" .. q(v) end
  words[#words + 1] = opts.prefix or "timeout 10"
  words[#words + 1] = q(EXE)
  for _, a in ipairs(args) do words[#words + 1] = q(a) end
  return sh(table.concat(words, " "), opts.stdin)
end

-- A fresh directory for the files of one test.
local function tmpdir()
  local p = assert(io.popen("mktemp -d"))
  local dir = p:read("l")
  p:close()
  return dir
end

local function rmdir(dir)
  os.execute("rm -rf " .. q(dir))
end

describe("bin/lua-futures command line", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmdir(dir) end)

  it("runs a script with its arguments as ... and in arg", function()
    local script = write_file(dir .. "/s.lua", [[
      print(select("#", ...), ...)
      print(#arg, arg[0], arg[1], arg[2])
    ]])
    local r = lf({ script, "a", "b c" })
    assert.equals(0, r.status, r.err)
    assert.equals("2\ta\tb c\n2\t" .. script .. "\ta\tb c\n", r.out)
  end)

  it("puts the interpreter and its options at negative indices of arg", function()
    local script = write_file(dir .. "/s.lua", [[
      for i = -3, 1 do print(i, arg[i]) end
      print(arg[-4])
    ]])
    local r = lf({ "-e", "x=1", script, "a" })
    assert.equals(0, r.status, r.err)
    assert.equals(("-3\t%s\n-2\t-e\n-1\tx=1\n0\t%s\n1\ta\nnil\n"):format(EXE, script), r.out)
  end)

  it("without a script puts the interpreter at arg[0] and the options after it, as Lua 5.4.4 does", function()
    local r = lf({ "-e", "print(arg[0], arg[1], arg[2], arg[-1])" })
    assert.equals(0, r.status, r.err)
    assert.equals(EXE .. "\t-e\tprint(arg[0], arg[1], arg[2], arg[-1])\tnil\n", r.out)
  end)

  it("runs -e statements in order, attached or separate", function()
    local r = lf({ "-e", "x = 20", "-ex = x + 1", "-e", "print(x * 2)" })
    assert.equals(0, r.status, r.err)
    assert.equals("42\n", r.out)
  end)

  it("runs -e before the script", function()
    local script = write_file(dir .. "/s.lua", "print(greeting)")
    local r = lf({ "-e", "greeting = 'hi'", script })
    assert.equals("hi\n", r.out)
  end)

  it("-l mod requires a module into the global of the same name", function()
    write_file(dir .. "/mymod.lua", "return { answer = 42 }")
    local r = lf({ "-l", "mymod", "-e", "print(mymod.answer)" },
                 { env = { LUA_PATH = dir .. "/?.lua;;" } })
    assert.equals(0, r.status, r.err)
    assert.equals("42\n", r.out)
  end)

  it("-l g=mod requires mod into the global g", function()
    write_file(dir .. "/mymod.lua", "return { answer = 42 }")
    local r = lf({ "-l", "m=mymod", "-lfut=futures", "-e", "print(m.answer, mymod, fut._VERSION)" },
                 { env = { LUA_PATH = dir .. "/?.lua;;" } })
    assert.equals(0, r.status, r.err)
    assert.equals("42\tnil\t" .. VERSION .. "\n", r.out)
  end)

  it("-l of a missing module fails with status 1", function()
    local r = lf({ "-l", "no_such_module_xyz", "-e", "print'not reached'" })
    assert.equals(1, r.status)
    assert.equals("", r.out)
    assert.matches("^lua%-futures: module 'no_such_module_xyz' not found", r.err)
  end)

  it("- runs stdin as the script, with the arguments after it", function()
    local r = lf({ "-", "a", "b" }, { stdin = "print(...) print(arg[0])" })
    assert.equals(0, r.status, r.err)
    assert.equals("a\tb\n-\n", r.out)
  end)

  it("-- ends the options: what follows is the script and its arguments", function()
    local script = write_file(dir .. "/s.lua", "print(arg[-1], ...)")
    local r = lf({ "--", script, "-e", "error'not an option'" })
    assert.equals(0, r.status, r.err)
    assert.equals("--\t-e\terror'not an option'\n", r.out)
  end)

  it("-v prints the Lua version and the lua-futures version", function()
    local r = lf({ "-v" })
    assert.equals(0, r.status, r.err)
    assert.equals(_VERSION .. ".", r.out:match("^(Lua 5%.4%.)%d+  Copyright"))
    assert.matches("\n" .. VERSION:gsub("%p", "%%%0") .. "\n$", r.out)
  end)

  it("-W turns warnings on", function()
    assert.equals("", lf({ "-e", "warn('quiet')" }).err)
    assert.equals("Lua warning: loud\n", lf({ "-W", "-e", "warn('loud')" }).err)
  end)

  it("rejects an unknown option with a usage message and status 1", function()
    local r = lf({ "-x" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: unrecognized option '%-x'\nusage: lua%-futures %[options%] %[script %[args%]%]\n", r.err)
  end)

  it("rejects -e or -l without an argument", function()
    local r = lf({ "-e" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: '%-e' needs argument\nusage:", r.err)
    assert.matches("^lua%-futures: '%-l' needs argument\nusage:", lf({ "-l", "-v" }).err)
  end)

  it("fails with status 1 when the script cannot be opened", function()
    local r = lf({ dir .. "/missing.lua" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: cannot open .*missing%.lua", r.err)
  end)
end)

describe("bin/lua-futures exit status", function()
  it("is 0 when the script ends normally", function()
    assert.equals(0, lf({ "-e", "local x = 1" }).status)
  end)

  it("is what os.exit was given", function()
    assert.equals(3, lf({ "-e", "os.exit(3)" }).status)
    assert.equals(0, lf({ "-e", "os.exit(true)" }).status)
    assert.equals(1, lf({ "-e", "os.exit(false)" }).status)
  end)

  it("is 1 for an uncaught error, reported with a traceback", function()
    local r = lf({ "-e", "local function f() error('boom') end f()" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: %(command line%):1: boom\nstack traceback:\n", r.err)
    assert.matches("in local 'f'", r.err)
  end)

  it("names the script file and line of an error", function()
    local dir = tmpdir()
    local script = write_file(dir .. "/bad.lua", "local x = 1\nerror('on line two')\n")
    local r = lf({ script })
    rmdir(dir)
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: [^\n]*bad%.lua:2: on line two\n", r.err)
  end)

  it("reports an error object through its __tostring", function()
    local r = lf({ "-e", "error(setmetatable({}, { __tostring = function() return 'MyError: custom' end }))" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: MyError: custom\n", r.err)
  end)

  it("prints where a task's uncaught error came from in its worker", function()
    local r = lf({ "-e", [[
      local futures = require "futures"
      local ex <close> = futures.ThreadPoolExecutor(1)
      local function deep() error("failed in the task") end
      ex:submit(function() deep() end):result(10)
    ]] })
    assert.equals(1, r.status)
    assert.matches("failed in the task\nstack traceback:\n\t%[C%]: in method 'result'", r.err)
    assert.matches("\nin the worker that ran the task, stack traceback:\n[^\n]*\n[^\n]*in upvalue 'deep'", r.err)
  end)

  it("names the type of an error object it cannot print", function()
    local r = lf({ "-e", "error({})" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: %(error object is a table value%)\nstack traceback:", r.err)
    assert.matches("^lua%-futures: %(error object is a nil value%)", lf({ "-e", "error()" }).err)
  end)
end)

describe("bin/lua-futures environment", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() rmdir(dir) end)

  it("runs LUA_INIT code before the command line", function()
    local r = lf({ "-e", "print(from_init)" }, { env = { LUA_INIT = "from_init = 'yes'" } })
    assert.equals(0, r.status, r.err)
    assert.equals("yes\n", r.out)
  end)

  it("runs the file named by LUA_INIT=@file", function()
    local init = write_file(dir .. "/init.lua", "from_file = 'file'")
    local r = lf({ "-e", "print(from_file)" }, { env = { LUA_INIT = "@" .. init } })
    assert.equals("file\n", r.out)
  end)

  it("prefers LUA_INIT_5_4 to LUA_INIT", function()
    local r = lf({ "-e", "print(which)" },
                 { env = { LUA_INIT = "which = 'plain'", LUA_INIT_5_4 = "which = '5.4'" } })
    assert.equals("5.4\n", r.out)
  end)

  it("fails with status 1 when LUA_INIT fails, before running anything else", function()
    local r = lf({ "-e", "print'not reached'" }, { env = { LUA_INIT = "error('init failed')" } })
    assert.equals(1, r.status)
    assert.equals("", r.out)
    assert.matches("^lua%-futures: LUA_INIT:1: init failed", r.err)
  end)

  it("-E ignores LUA_INIT, LUA_PATH and LUA_CPATH, like lua5.4 -E", function()
    local code = "print(from_init) print(package.path) print(package.cpath)"
    local env = { LUA_INIT = "from_init = 'ran'", LUA_PATH = "/nonexistent/?.lua",
                  LUA_CPATH = "/nonexistent/?.so" }
    local r = lf({ "-E", "-e", code }, { env = env })
    local ref = sh("env -u LUA_INIT -u LUA_INIT_5_4 LUA_PATH=/nonexistent/?.lua timeout 10 lua5.4 -E -e "
                   .. q(code))
    assert.equals(0, r.status, r.err)
    assert.equals("nil\n", r.out:match("^[^\n]*\n"))
    assert.not_matches("nonexistent", r.out)
    assert.equals(ref.out, r.out)
  end)

  it("finds futures from any directory whatever LUA_PATH and LUA_CPATH say", function()
    local r = lf({ "-e", "print(require('futures')._VERSION, require('futures.core').cpu_count() >= 1)" },
                 { cwd = "/tmp", env = { LUA_PATH = dir .. "/?.lua", LUA_CPATH = dir .. "/?.so" } })
    assert.equals(0, r.status, r.err)
    assert.equals(VERSION .. "\ttrue\n", r.out)
  end)

  it("finds futures with -E too", function()
    local r = lf({ "-E", "-e", "print(require('futures')._VERSION)" }, { cwd = "/tmp" })
    assert.equals(VERSION .. "\n", r.out)
  end)

  it("still finds the user's own modules through LUA_PATH", function()
    write_file(dir .. "/mymod.lua", "return { answer = 42 }")
    local r = lf({ "-e", "print(require('mymod').answer, require('futures')._VERSION)" },
                 { cwd = "/tmp", env = { LUA_PATH = dir .. "/?.lua;;" } })
    assert.equals(0, r.status, r.err)
    assert.equals("42\t" .. VERSION .. "\n", r.out)
  end)
end)

describe("bin/lua-futures reading stdin", function()
  it("runs stdin as a script when it is not a terminal and no script is given", function()
    local r = lf({}, { stdin = "local t = {} for i = 1, 3 do t[i] = i * i end print(table.concat(t, ' '))" })
    assert.equals(0, r.status, r.err)
    assert.equals("1 4 9\n", r.out)
  end)

  it("exits with status 1 when the script read from stdin fails (lua5.4 exits 0)", function()
    local r = lf({}, { stdin = "error('from stdin')" })
    assert.equals(1, r.status)
    assert.matches("^lua%-futures: stdin:1: from stdin\n", r.err)
  end)

  it("-i reads, runs and prints lines like lua5.4's prompt", function()
    local input = "x = 1 + 1\nx\n=x*2\nfor i = 1, 2 do\nprint(i)\nend\nreturn 1, nil, 3\n"
    local r = lf({ "-i" }, { stdin = input })
    assert.equals(0, r.status, r.err)
    local banner = r.out:match("^Lua 5%.4[^\n]*\n" .. VERSION:gsub("%p", "%%%0") .. "\n")
    assert.is_truthy(banner, r.out)
    assert.equals("> > 2\n> 4\n> >> >> 1\n2\n> 1\tnil\t3\n> \n", r.out:sub(#banner + 1))
  end)

  it("-i uses _PROMPT and _PROMPT2 and goes on after an error", function()
    local input = "_PROMPT = 'P: '\n_PROMPT2 = setmetatable({}, {__tostring = function() return 'C: ' end})\n"
      .. "error('oops')\nif true then\nprint('after')\nend\n"
    local r = lf({ "-i" }, { stdin = input })
    assert.equals(0, r.status, r.err)
    assert.matches("\n> P: P: P: C: C: after\nP: \n$", r.out)
    assert.matches("^stdin:1: oops\nstack traceback:", r.err)  -- no program name at the prompt
  end)

  it("-i reports a statement left unfinished at the end of input", function()
    local r = lf({ "-i" }, { stdin = "for i = 1, 2 do\n" })
    assert.equals(0, r.status)
    assert.matches("^stdin:1: 'end' expected near <eof>\n$", r.err)
  end)

  it("-i runs the script first, then the prompt", function()
    local r = lf({ "-i", "-" }, { stdin = "print('script')" })
    assert.equals(0, r.status, r.err)
    assert.matches("\nscript\n> \n$", r.out)
  end)

  it("shows the banner and a prompt when stdin is a terminal", function()
    if not os.execute("command -v script >/dev/null 2>&1") then
      pending("util-linux script is not installed")
      return
    end
    local r = sh("timeout 10 script -qec " .. q(q(EXE)) .. " /dev/null",
                 "=6*7\n_PROMPT = 'lf> '\nprint('x' .. 'y')\n")
    assert.equals(0, r.status, r.err)
    local out = r.out:gsub("\r", "")
    assert.matches(VERSION:gsub("%p", "%%%0") .. "\n", out)
    assert.matches("> 42\n", out)
    assert.matches("lf> xy\n", out)
  end)
end)

describe("bin/lua-futures and Ctrl-C", function()
  -- SIGINT after 0.3 s; if the interpreter is still alive 2 s later, it is
  -- killed and the status is 137 instead of 1. --foreground makes timeout
  -- signal the interpreter alone, once (without it the process group gets a
  -- second SIGINT, which is meant to kill).
  local ctrl_c = "timeout --foreground --preserve-status -k 2 -s INT 0.3"

  it("interrupts a busy Lua loop with 'interrupted!' and status 1", function()
    local r = lf({ "-e", "while true do end" }, { prefix = ctrl_c })
    assert.equals(1, r.status, r.err)
    assert.matches("^lua%-futures: [^\n]*interrupted!\nstack traceback:", r.err)
  end)

  it("interrupts a blocking futures.sleep within a fraction of a second", function()
    local r = lf({ "-e", "require'futures'.sleep(30)" }, { prefix = ctrl_c })
    assert.equals(1, r.status, r.err)
    assert.matches("^lua%-futures: [^\n]*interrupted!\n", r.err)
  end)

  it("at the prompt interrupts the running line and reads the next one", function()
    local r = lf({ "-i" }, { prefix = ctrl_c, stdin = "while true do end\nprint('still here')\n" })
    assert.equals(0, r.status, r.err)
    assert.matches("^interrupted!\nstack traceback:", r.err)
    assert.matches("> > still here\n> \n$", r.out)
  end)
end)

describe("futures.core under plain lua5.4", function()
  it("loads from build/ and counts CPUs", function()
    local code = ("package.cpath = %q .. package.cpath; local core = require 'futures.core'; "
      .. "local n = core.cpu_count() print(math.type(n), n >= 1)"):format(ROOT .. "/build/?.so;")
    local r = sh("cd /tmp && timeout 10 lua5.4 -e " .. q(code))
    assert.equals(0, r.status, r.err)
    assert.equals("integer\ttrue\n", r.out)
  end)
end)
