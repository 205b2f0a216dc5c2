-- The reference (docs/API.md) and the editor annotations
-- (lua/futures/meta.lua) keep up with the module: every name that
-- require "futures" exports, every method of a future and of an executor,
-- and every option the Lua side accepts is documented and annotated; the
-- examples in the reference compile; meta.lua loads as a module.
local futures = require "futures"
local shell = require "support.shell"

local API = shell.read_file(shell.ROOT .. "/docs/API.md")
local META = shell.read_file(shell.ROOT .. "/lua/futures/meta.lua")

local function plain(s) return (s:gsub("%p", "%%%0")) end

-- Lines of the reference that document something: headings and table rows.
local doc_lines = {}
for line in API:gmatch("[^\n]+") do
  if line:match("^#") or line:match("^|") then doc_lines[#doc_lines + 1] = line end
end

-- Is `pattern` found in a heading or a table row, followed by no more of
-- a name (so that `futures.wait` does not count for `futures.waiter`)?
local function documented(pattern)
  for _, line in ipairs(doc_lines) do
    if line:match(pattern .. "%f[^%w_]") then return true end
  end
  return false
end

local function public(name) return type(name) == "string" and not name:match("^_%l") end

local function sorted_keys(t, filter)
  local keys = {}
  for k in pairs(t) do if filter(k) then keys[#keys + 1] = k end end
  table.sort(keys)
  return keys
end

local function methods_of(object)
  local index = getmetatable(object).__index
  return sorted_keys(index, public)
end

local function executors()
  local list = { futures.ThreadPoolExecutor(1) }
  if futures.ProcessPoolExecutor then
    local ok, px = pcall(futures.ProcessPoolExecutor, 1)
    if ok then list[#list + 1] = px end
  end
  return list
end

-- Option names of the tables `NAME_OPTIONS = { key = true, ... }` and
-- `OPTIONS = { ... }` in the Lua side's sources, and of the inline option
-- lists given to check_options.
local function accepted_options()
  local found = {}
  local p = io.popen("ls " .. shell.q(shell.ROOT .. "/lua/futures"))
  for file in p:lines() do
    if file:match("%.lua$") and file ~= "meta.lua" then
      local src = shell.read_file(shell.ROOT .. "/lua/futures/" .. file)
      local function collect(body, where)
        for key in body:gmatch("([%a_][%w_]*)%s*=%s*true") do
          found[#found + 1] = { key = key, where = where }
        end
      end
      for name, body in src:gmatch("([%u_]*OPTIONS)%s*=%s*(%b{})") do
        collect(body, file .. " " .. name)
      end
      for body in src:gmatch("check_options%([%w_.]+,%s*(%b{})") do
        collect(body, file .. " check_options")
      end
    end
  end
  p:close()
  return found
end

describe("docs/API.md", function()
  it("documents every name that require 'futures' exports", function()
    local missing = {}
    for _, name in ipairs(sorted_keys(futures, function(k) return type(k) == "string" end)) do
      if not documented("futures%." .. plain(name)) then missing[#missing + 1] = name end
    end
    assert.same({}, missing)
  end)

  it("documents every method of a future", function()
    local missing = {}
    for _, name in ipairs(methods_of(futures.Future())) do
      if not documented("f:" .. plain(name)) then missing[#missing + 1] = name end
    end
    assert.same({}, missing)
  end)

  it("documents every method of an executor, for each kind of pool", function()
    local missing = {}
    for _, ex in ipairs(executors()) do
      for _, name in ipairs(methods_of(ex)) do
        if not documented("ex:" .. plain(name)) then missing[#missing + 1] = name end
      end
      ex:shutdown()
    end
    assert.same({}, missing)
  end)

  it("documents every option that the module accepts", function()
    local options = accepted_options()
    assert.is_true(#options >= 15, "found only " .. #options .. " options in lua/futures")
    local missing = {}
    for _, o in ipairs(options) do
      if not API:find("| `" .. o.key .. "`", 1, true) then
        missing[#missing + 1] = o.key .. " (" .. o.where .. ")"
      end
    end
    assert.same({}, missing)
  end)

  it("says in Semantics that modules in tasks are the worker's and when paths are copied", function()
    local semantics = API:match("\n## Semantics\n(.-)\n## ")
    assert.is_not_nil(semantics)
    assert.matches("\n### Modules in tasks", semantics)
    assert.matches("initializer", semantics:match("### Modules in tasks.-\n###"))
    assert.matches("\n### Workers see package%.path as it was when the pool was created", semantics)
    assert.matches("package.cpath", semantics, 1, true)
  end)

  it("has Lua examples that all compile", function()
    local n, bad = 0, {}
    for code in API:gmatch("```lua\n(.-)```") do
      n = n + 1
      local fn, err = load(code, "=API.md example " .. n, "t", {})
      if not fn then bad[#bad + 1] = err end
    end
    assert.is_true(n >= 20, "only " .. n .. " examples")
    assert.same({}, bad)
  end)
end)

describe("lua/futures/meta.lua", function()
  it("annotates every name that require 'futures' exports", function()
    local missing = {}
    for _, name in ipairs(sorted_keys(futures, function(k) return type(k) == "string" end)) do
      local p = plain(name)
      if not (META:match("\nfunction futures%." .. p .. "%(")
          or META:match("\n%-%-%-@field " .. p .. "%s")) then
        missing[#missing + 1] = name
      end
    end
    assert.same({}, missing)
  end)

  it("annotates every method of a future and of an executor", function()
    local missing = {}
    for _, name in ipairs(methods_of(futures.Future())) do
      if not META:match("\nfunction Future:" .. plain(name) .. "%(") then
        missing[#missing + 1] = "Future:" .. name
      end
    end
    for _, ex in ipairs(executors()) do
      for _, name in ipairs(methods_of(ex)) do
        if not META:match("\nfunction Executor:" .. plain(name) .. "%(") then
          missing[#missing + 1] = "Executor:" .. name
        end
      end
      ex:shutdown()
    end
    assert.same({}, missing)
  end)

  it("annotates every option that the module accepts as a field", function()
    local missing = {}
    for _, o in ipairs(accepted_options()) do
      if not META:match("\n%-%-%-@field " .. plain(o.key) .. "%?") then
        missing[#missing + 1] = o.key .. " (" .. o.where .. ")"
      end
    end
    assert.same({}, missing)
  end)

  it("is a ---@meta file that loads as a module and returns a table", function()
    assert.matches("^%-%-%-@meta futures\n", META)
    local loaded = require "futures.meta"
    assert.equals("table", type(loaded))
    assert.equals("function", type(loaded.ThreadPoolExecutor))
  end)
end)
