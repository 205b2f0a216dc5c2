-- `make install` and `make uninstall`: installs into a temporary prefix and
-- uses the installed files the way a user would — plain lua5.4 with
-- LUA_PATH/LUA_CPATH pointing at the prefix (and nowhere else), the installed
-- interpreter, pkg-config, man. Each command runs under `timeout`.
local shell = require "support.shell"
local q = shell.q

local VERSION = require("futures")._VERSION:match("%d+%.%d+%.%d+")

local function make(args)
  return shell.run(("make -C %s --no-print-directory %s"):format(q(shell.ROOT), args), 600)
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function mode(path)
  local r = shell.run("stat -c %a " .. q(path), 10)
  return r.out:gsub("%s+$", "")
end

-- Runs lua5.4 -e `code` with the module of `prefix` only.
local function plain_lua(prefix, code)
  local share, lib = prefix .. "/share/lua/5.4", prefix .. "/lib/lua/5.4"
  local env = ("env -u LUA_INIT -u LUA_INIT_5_4 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
    .. "-u LUA_FUTURES_WORKER LUA_PATH=%s LUA_CPATH=%s")
    :format(q(share .. "/?.lua;" .. share .. "/?/init.lua"), q(lib .. "/?.so"))
  -- from / so that nothing of the work tree (./?.lua) can be found
  return shell.run(("cd / && %s lua5.4 -e %s"):format(env, q(code)), 120)
end

local function ok(r)
  assert.equals(0, r.status, ("exit status %s\nstdout: %s\nstderr: %s")
    :format(tostring(r.status), r.out, r.err))
end

describe("make install", function()
  local prefix, installed

  setup(function()
    prefix = shell.tmpdir() .. "/usr"
    installed = make("install PREFIX=" .. q(prefix))
  end)

  teardown(function()
    shell.rmdir(prefix:match("^(.*)/usr$"))
  end)

  it("puts the module, the interpreter, the manual page and the pkg-config file under PREFIX", function()
    ok(installed)
    for path, m in pairs {
      ["/lib/lua/5.4/futures/core.so"] = "755",
      ["/share/lua/5.4/futures/init.lua"] = "644",
      ["/share/lua/5.4/futures/progress.lua"] = "644",
      ["/share/lua/5.4/futures/meta.lua"] = "644",
      ["/share/lua/5.4/futures/luv.lua"] = "644",
      ["/share/lua/5.4/futures/cqueues.lua"] = "644",
      ["/share/lua/5.4/futures/_await.lua"] = "644",
      ["/bin/lua-futures"] = "755",
      ["/share/man/man1/lua-futures.1"] = "644",
      ["/lib/pkgconfig/lua-futures.pc"] = "644",
    } do
      assert.is_true(exists(prefix .. path), "missing " .. path)
      assert.equals(m, mode(prefix .. path), path)
    end
  end)

  it("lets plain lua5.4 require the installed module and run a thread pool", function()
    local r = plain_lua(prefix, [[
      local futures = require "futures"
      print(package.searchpath("futures", package.path))
      print(package.searchpath("futures.core", package.cpath))
      local ex <close> = futures.ThreadPoolExecutor(2)
      local sum = 0
      for _, v in ex:map(function(x) return x * x end, { 1, 2, 3 }, { timeout = 20 }) do sum = sum + v end
      print(sum, ex:submit(function() return require("futures")._VERSION end):result(20))
    ]])
    ok(r)
    assert.matches(prefix .. "/share/lua/5.4/futures/init.lua\n", r.out, 1, true)
    assert.matches(prefix .. "/lib/lua/5.4/futures/core.so\n", r.out, 1, true)
    assert.matches("14\tlua-futures " .. VERSION .. "\n", r.out, 1, true)
  end)

  it("lets plain lua5.4 run a process pool whose workers are the installed interpreter", function()
    local problem = shell.process_pool_problem()
    if problem then pending(problem) return end
    local r = plain_lua(prefix, [[
      local futures = require "futures"
      local px <close> = futures.ProcessPoolExecutor(1)
      print(px:submit(function(x) return x + 1 end, 41):result(30))
      -- /proc/$PPID/exe of a command the worker starts: the worker's program.
      print(px:submit(function()
        local p = io.popen("readlink /proc/$PPID/exe")
        local exe = p:read("l")
        p:close()
        return exe
      end):result(30))
    ]])
    ok(r)
    local realprefix = shell.run("realpath " .. q(prefix), 10).out:gsub("%s+$", "")
    assert.equals("42\n" .. realprefix .. "/bin/lua-futures\n", r.out)
  end)

  it("installs an interpreter that needs no LUA_PATH or LUA_CPATH", function()
    local r = shell.run(("cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. "-u LUA_INIT -u LUA_INIT_5_4 %s -e %s"):format(q(prefix .. "/bin/lua-futures"), q([[
        local futures = require "futures"
        local ex <close> = futures.ThreadPoolExecutor(1)
        print(ex:submit(function(a, b) return a .. b end, "in", "stalled"):result(20))
      ]])), 60)
    ok(r)
    assert.equals("installed\n", r.out)
  end)

  it("installs a pkg-config file with the version and the directories", function()
    local pc = ("PKG_CONFIG_PATH=%s pkg-config "):format(q(prefix .. "/lib/pkgconfig"))
    local r = shell.run(pc .. "--modversion lua-futures", 10)
    ok(r)
    assert.equals(VERSION .. "\n", r.out)
    assert.equals(prefix .. "/bin/lua-futures\n",
      shell.run(pc .. "--variable=interpreter lua-futures", 10).out)
    assert.equals(prefix .. "/lib/lua/5.4\n",
      shell.run(pc .. "--variable=INSTALL_CMOD lua-futures", 10).out)
    assert.equals(prefix .. "/share/lua/5.4\n",
      shell.run(pc .. "--variable=INSTALL_LMOD lua-futures", 10).out)
  end)

  it("installs a manual page that man can show", function()
    local page = prefix .. "/share/man/man1/lua-futures.1"
    assert.matches('\n%.TH LUA%-FUTURES 1 ', shell.read_file(page))
    if shell.run("command -v man", 5).status ~= 0 then
      pending("man is not installed; the page's header was checked")
      return
    end
    local r = shell.run("MANWIDTH=80 man -l " .. q(page), 30)
    ok(r)
    assert.matches("lua%-futures %- Lua 5%.4 interpreter with the futures module built in", r.out)
  end)
end)

describe("make install with DESTDIR", function()
  it("stages the files under DESTDIR while they name only PREFIX", function()
    local dest = shell.tmpdir()
    local r = make(("install DESTDIR=%s PREFIX=/opt/lua-futures"):format(q(dest)))
    local staged = dest .. "/opt/lua-futures"
    local pc = exists(staged .. "/lib/pkgconfig/lua-futures.pc")
      and shell.read_file(staged .. "/lib/pkgconfig/lua-futures.pc") or ""
    local core = exists(staged .. "/lib/lua/5.4/futures/core.so")
    local exe = exists(staged .. "/bin/lua-futures")
    shell.rmdir(dest)
    ok(r)
    assert.is_true(core and exe)
    assert.matches("\nprefix=/opt/lua-futures\n", pc, 1, true)
    assert.matches("\ninterpreter=${bindir}/lua-futures\n", pc, 1, true)
    assert.is_nil(pc:find(dest, 1, true))
  end)
end)

describe("make uninstall", function()
  it("removes every file that make install put under PREFIX", function()
    local dir = shell.tmpdir()
    local prefix = dir .. "/usr"
    ok(make("install PREFIX=" .. q(prefix)))
    local r = make("uninstall PREFIX=" .. q(prefix))
    local left = shell.run("find " .. q(prefix) .. " -type f", 10).out
    local dirs = shell.run("find " .. q(prefix) .. " -name futures", 10).out
    shell.rmdir(dir)
    ok(r)
    assert.equals("", left)
    assert.equals("", dirs)
  end)
end)

describe("the rockspec", function()
  it("passes luarocks lint", function()
    if shell.run("command -v luarocks", 5).status ~= 0 then
      pending("luarocks is not installed (apt-get install luarocks to check the rockspec)")
      return
    end
    local r = shell.run(("cd %s && luarocks lint lua-futures-%s-1.rockspec")
      :format(q(shell.ROOT), VERSION), 60)
    ok(r)
  end)
end)

describe("make deps (tools/deps.sh)", function()
  it("names every package it needs in the apt-get line when none is installed", function()
    -- A PATH with only the tools the script uses itself: every check fails.
    local dir = shell.tmpdir()
    for _, tool in ipairs { "sort", "tr" } do
      assert.equals(0, shell.run(("ln -s \"$(command -v %s)\" %s"):format(tool, q(dir .. "/" .. tool)), 10).status)
    end
    shell.write_file(dir .. "/id", "#!/bin/sh\necho 1000\n")   -- not root: print, never install
    shell.run("chmod +x " .. q(dir .. "/id"), 10)
    local r = shell.run(("cd %s && PATH=%s /bin/sh tools/deps.sh"):format(q(shell.ROOT), q(dir)), 30)
    shell.rmdir(dir)
    assert.equals(1, r.status)
    local line = r.err:match("\n  sudo apt%-get install %-y ([^\n]*)")
    assert.is_not_nil(line, r.err)
    local packages = {}
    for word in line:gmatch("%S+") do packages[#packages + 1] = word end
    table.sort(packages)
    assert.same({ "build-essential", "liblua5.4-dev", "libopenmpi-dev", "lua-busted", "lua-cqueues",
      "lua-luv", "lua5.4", "luarocks", "openmpi-bin", "pkg-config" }, packages)
  end)
end)
