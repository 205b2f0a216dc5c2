-- The transfer codec: futures.serialize / futures.deserialize, and through
-- the test hooks of futures.core the paths only executors reach (shared
-- handles, decoding in another lua_State). docs/codec.md is the reference.
local futures = require "futures"
local core = require "futures.core"
local T = require "futures._test"
local helpers = require "support.helpers"

local serialize = futures.serialize
local TRUSTED = { functions = true }

-- Most specs here decode data they made themselves: trusted, so functions
-- load. The safe default has specs of its own ("decoder" below).
local function deserialize(s, opts)
  return futures.deserialize(s, opts or TRUSTED)
end

local function roundtrip(...)
  return deserialize(serialize(...))
end

local function pack(...) return { n = select("#", ...), ... } end

-- "function at spec/codec_spec.lua:12", as the codec names a function.
local function where(f)
  local info = debug.getinfo(f, "S")
  return ("function at %s:%d"):format(info.short_src, info.linedefined)
end

local function plain(s) return (s:gsub("%p", "%%%0")) end

-- Runs fn and returns its error message (fails if it did not raise).
local function error_of(fn, ...) return tostring(helpers.error_of(fn, ...)) end

describe("codec values", function()
  it("round-trips nil and booleans", function()
    local t = pack(roundtrip(nil, true, false))
    assert.same({ n = 3, nil, true, false }, t)
  end)

  it("keeps integers and floats distinct, at every width", function()
    local ints = { 0, 1, -1, 127, 128, -128, -129, 255, 32767, 32768, -32768,
      -32769, 2147483647, 2147483648, -2147483648, -2147483649,
      math.maxinteger, math.mininteger }
    for _, v in ipairs(ints) do
      local got = roundtrip(v)
      assert.equals(v, got)
      assert.equals("integer", math.type(got))
      local f = roundtrip(v + 0.0)
      assert.equals("float", math.type(f))
      assert.equals(v + 0.0, f)
    end
  end)

  it("keeps NaN, infinities, -0.0 and the exact bits of floats", function()
    local nan = roundtrip(0 / 0)
    assert.is_true(nan ~= nan)
    assert.equals(math.huge, roundtrip(math.huge))
    assert.equals(-math.huge, roundtrip(-math.huge))
    assert.equals(-math.huge, 1 / roundtrip(-0.0))
    for _, v in ipairs { 0.1, 1 / 3, 2 ^ -1074, 1.7976931348623157e308, -2.5 } do
      assert.equals(string.pack("d", v), string.pack("d", roundtrip(v)))
    end
  end)

  it("keeps nils anywhere among the values, trailing ones included", function()
    local t = pack(roundtrip(nil, 1, nil, nil))
    assert.equals(4, t.n)
    assert.equals(1, t[2])
    assert.equals(0, select("#", roundtrip()))
  end)

  it("round-trips strings of any bytes and length", function()
    local all = {}
    for b = 0, 255 do all[#all + 1] = string.char(b) end
    all = table.concat(all)
    for _, s in ipairs { "", "a", "a\0b\0", all, all:rep(4000), ("x"):rep(127), ("y"):rep(128) } do
      assert.equals(s, roundtrip(s))
    end
  end)

  it("round-trips tables: array and hash parts, nested, keys of every kind", function()
    local key = { "a table key" }
    local t = { 1, 2, 3, "four", { 5 }, name = "x", [2.5] = "float key",
      [true] = "true key", [key] = "table key", [-7] = "negative", nested = { deep = { er = 1 } } }
    local r = roundtrip(t)
    assert.equals(1, r[1]); assert.equals("four", r[4]); assert.equals(5, r[5][1])
    assert.equals("x", r.name); assert.equals("float key", r[2.5])
    assert.equals("true key", r[true]); assert.equals("negative", r[-7])
    assert.equals(1, r.nested.deep.er)
    local k, v = next(r, nil)
    local found
    for kk, vv in pairs(r) do
      if type(kk) == "table" then found = { kk, vv } end
    end
    assert.same({ "a table key" }, found[1])
    assert.equals("table key", found[2])
    assert.is_not_nil(k and v)
  end)

  it("packs arrays of numbers, any mix of widths, integers and floats", function()
    local cases = {
      {}, { 1 }, { 1.5 }, { 1, 2.5 }, { 2.5, 1 }, { 1, 300, 70000, 2 ^ 40 | 0 },
      { math.mininteger, 0, math.maxinteger }, { 1, "s", 2, 3.5, 4.5, true, 5 },
    }
    local big = {}
    for i = 1, 5000 do big[i] = (i % 3 == 0) and i * 1.5 or i * 1000 - 2500000 end
    cases[#cases + 1] = big
    for _, t in ipairs(cases) do
      local r = roundtrip(t)
      assert.equals(#t, #r)
      for i = 1, #t do
        assert.equals(t[i], r[i])
        assert.equals(math.type(t[i]), math.type(r[i]))
      end
    end
  end)

  it("keeps every pair of a table whatever the layout of its parts", function()
    -- built by a loop (array part larger than the border), by a constructor
    -- (exact size), with [k] = v syntax (all in the hash part), with holes,
    -- and with integer keys past the border
    local layouts = {}
    local a = {}
    for i = 1, 1000 do a[i] = i end
    a.x, a[1002], a[-1] = "x", 1002, -1
    layouts[#layouts + 1] = a
    local b = {}
    for i = 1, 1024 do b[i] = i end          -- border == size of the array part
    b.y = "y"
    layouts[#layouts + 1] = b
    local c = load("return {" .. ("1,"):rep(300) .. " z = 'z', [500] = 500 }")()
    layouts[#layouts + 1] = c
    local d = {}
    for i = 1, 200 do d[i] = i end
    d[100] = nil
    d.w = "w"
    layouts[#layouts + 1] = d
    layouts[#layouts + 1] = { [1] = "a", [2] = "b", [3] = "c", [10] = "j", k = "k" }
    for _, t in ipairs(layouts) do
      local r = roundtrip(t)
      local n = 0
      for k, v in pairs(t) do
        n = n + 1
        assert.equals(v, r[k])
      end
      for _ in pairs(r) do n = n - 1 end
      assert.equals(0, n)
    end
  end)

  it("keeps every pair of a table used as a stack and popped", function()
    -- t[#t + 1] = v then t[#t] = nil leaves a node for key #t + 1 in the
    -- hash part when there was room there; a traversal started at that key
    -- (instead of at the first one) skipped every pair stored before it
    for trial = 1, 100 do
      local t = {}
      for i = 1, 64 do t[i] = i end
      for k = 1, 3 + trial % 4 do t["k" .. trial .. "_" .. k] = k end
      t[65] = true
      t[65] = nil
      local r = roundtrip(t)
      local n = 0
      for k, v in pairs(t) do
        n = n + 1
        assert.equals(v, r[k])
      end
      for _ in pairs(r) do n = n - 1 end
      assert.equals(0, n)
    end
  end)

  it("keeps integer keys apart from strings that look like them", function()
    local r = roundtrip({ 1, 2, 3, 4, ["5"] = "five", ["1"] = "one" })
    assert.equals(4, #r)
    assert.is_nil(r[5])
    assert.equals("five", r["5"])
    assert.equals("one", r["1"])
    assert.equals(1, r[1])
  end)

  it("keeps the holes of an array part, near and far apart", function()
    local t = { 1, nil, 3, nil, nil, 6 }
    t[40] = 40                              -- far past the last one
    for _, v in ipairs { t, { nil, nil, 3 }, { 1.5, nil, "s", nil, 5 } } do
      local r = roundtrip(v)
      for k, x in pairs(v) do assert.equals(x, r[k]) end
      for k, x in pairs(r) do assert.equals(x, v[k]) end
    end
    local seq = {}
    for i = 1, 100 do seq[i] = i end
    assert.equals(100, #roundtrip(seq))
  end)

  it("keeps integer keys that a table stores among its other keys", function()
    -- keys 1..3 go into free nodes of the hash part: no array part at all
    local t = { x = 1, y = 2, z = 3, w = 4 }
    t[1], t[2], t[3] = "a", "b", "c"
    local r = roundtrip(t)
    for k, v in pairs(t) do assert.equals(v, r[k]) end
    for k, v in pairs(r) do assert.equals(v, t[k]) end
    assert.equals(3, #r)
  end)

  it("widens a packed run as its numbers grow, at any point", function()
    local t = {}
    for i = 1, 1000 do t[i] = i % 100 end
    t[1001], t[1002], t[1003], t[1004] = 300, -70000, 2 ^ 40 | 0, 5
    local r = roundtrip(t)
    for i = 1, #t do
      assert.equals(t[i], r[i])
      assert.equals("integer", math.type(r[i]))
    end
    assert.equals(#t, #r)
  end)

  it("keeps cycles and shared references within one transfer", function()
    local shared = { "shared" }
    local t = { a = shared, b = shared, list = { shared, shared } }
    t.self = t
    local r = roundtrip(t)
    assert.equals(r, r.self)
    assert.equals(r.a, r.b)
    assert.equals(r.a, r.list[1])
    assert.equals(r.a, r.list[2])
    local x, y = roundtrip(shared, shared)
    assert.equals(x, y)
    local k = {}
    local kv = roundtrip({ [k] = k })
    local key, val = next(kv)
    assert.equals(key, val)
  end)

  it("copies metatables as values, a shared one once", function()
    local mt = { __index = function(_, key) return key .. "!" end, kind = "point" }
    local objs = {}
    for i = 1, 10000 do objs[i] = setmetatable({ i }, mt) end
    local s = serialize(objs)
    assert.is_true(#s < 10000 * 16, "size " .. #s)
    local r = deserialize(s)
    assert.equals("foo!", r[1].foo)
    assert.equals(getmetatable(r[1]), getmetatable(r[10000]))
    assert.equals("point", getmetatable(r[5]).kind)
    assert.equals(5, r[5][1])
    local selfmt = {}
    setmetatable(selfmt, selfmt)
    local rs = roundtrip(selfmt)
    assert.equals(rs, getmetatable(rs))
  end)

  it("gives no identity across transfers: each decode makes new tables", function()
    local s = serialize({})
    assert.are_not.equal(deserialize(s), deserialize(s))
  end)
end)

describe("codec functions", function()
  it("copies a Lua function with its upvalues, by value", function()
    local base, tbl = 10, { 1, 2 }
    local function f(x) return x + base + #tbl end
    local g = roundtrip(f)
    assert.equals(15, g(3))
    base, tbl[3] = 100, 3
    assert.equals(15, g(3))          -- a copy: later changes do not reach it
  end)

  it("keeps debug info: errors and tracebacks name file:line", function()
    local function boom() error("boom") end
    local g = roundtrip(boom)
    local line = debug.getinfo(boom, "S").linedefined
    local ok, err = pcall(g)
    assert.is_false(ok)
    assert.matches("codec_spec%.lua:" .. line .. ": boom", err)
    assert.equals(where(boom), where(g))
  end)

  it("keeps two closures sharing an upvalue sharing it", function()
    local n = 0
    local function inc() n = n + 1; return n end
    local function get() return n end
    local i2, g2 = roundtrip(inc, get)
    i2(); i2()
    assert.equals(2, g2())
    assert.equals(0, n)
    local t = roundtrip({ inc = inc, get = get })
    t.inc()
    assert.equals(1, t.get())
  end)

  it("keeps a recursive local function working", function()
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    assert.equals(3628800, roundtrip(fact)(10))
  end)

  it("keeps a closure in its own upvalue's table", function()
    local t = {}
    local function f() return t end
    t.f = f
    local r = roundtrip(t)
    assert.equals(r, r.f())
  end)

  it("turns the _ENV upvalue into the target's global table", function()
    local function globals() return _G, string end
    local g = roundtrip(globals)
    assert.equals(_G, (g()))
    assert.equals(_G, roundtrip(_G))
  end)

  it("turns an _ENV upvalue into the target's globals whatever table it was", function()
    local env = setmetatable({ x = "sandboxed" }, { __index = _G })
    local f = load("return x, _ENV", "=sandboxed", "t", env)
    assert.equals("sandboxed", (f()))
    local g = roundtrip(f)
    local x, genv = g()
    assert.equals(_G, genv)                  -- the environment did not travel
    assert.is_nil(x)
    local name, value = debug.getupvalue(g, 1)
    assert.equals("_ENV", name)
    assert.equals(_G, value)
  end)

  it("sends C functions and modules by name", function()
    for _, f in ipairs { string.format, math.floor, print, futures.sleep, table.concat, require } do
      assert.equals(f, roundtrip(f))
    end
    assert.equals(string, roundtrip(string))
    assert.equals(futures, roundtrip(futures))
    local fmt = string.format
    local function show(x) return fmt("%03d", x) end
    assert.equals("007", roundtrip(show)(7))
  end)

  it("names a library function by its library, not by a module's alias", function()
    -- a module that re-exports string.format must not make it travel as
    -- "alias.fmt", which the target would have to require
    -- (a name shorter than the library's, which alone used to decide)
    local methods = getmetatable(io.stdout).__index
    package.loaded.csa = { f = string.format, p = print, setvbuf = methods.setvbuf }
    local ok, err = pcall(function()
      local function show(x) return string.format("%d", x) end
      serialize(methods.setvbuf)         -- unknown so far: rebuilds the names
      local s = serialize(string.format, print, show)
      assert.is_truthy(s:find("string.format", 1, true))
      assert.is_truthy(s:find("_G.print", 1, true))
      assert.is_falsy(s:find("csa.", 1, true))
    end)
    package.loaded.csa = nil
    pcall(serialize, methods.flush)      -- unknown: rebuilds them without csa
    assert(ok, err)
  end)

  it("sends by name a module loaded after earlier transfers", function()
    serialize({}, print)                 -- the names of the modules are known
    local mod = { greet = function(who) return "hi " .. who end, data = { 1, 2 } }
    package.loaded.codec_spec_late = mod
    local ok, err = pcall(function()
      local function task() return mod.greet("x"), mod.data end
      local s = serialize(task)
      assert.is_truthy(s:find("codec_spec_late", 1, true))
      local g = deserialize(s)
      assert.equals(mod, select(2, debug.getupvalue(g, 1)))
    end)
    package.loaded.codec_spec_late = nil
    assert(ok, err)
  end)

  it("refuses a C function that no module holds, naming it", function()
    local seek = getmetatable(io.stdout).__index.seek
    assert.matches("cannot transfer value #1: C function not reachable by name",
      error_of(serialize, seek))
    local iter = string.gmatch("a", "a")
    assert.matches("C closure with upvalues", error_of(serialize, iter))
  end)

  it("loads a function once per state: the same closure when only _ENV", function()
    local function plainf(x) return x * 2 end
    local s = serialize(plainf)
    local a, b = deserialize(s), deserialize(s)
    assert.equals(a, b)
    assert.equals(8, a(4))
    local k = 1
    local function withup() return k end
    s = serialize(withup)
    local c, d = deserialize(s), deserialize(s)
    assert.are_not.equal(c, d)
    assert.equals(1, c())
  end)
end)

describe("codec across states", function()
  it("runs a function with its arguments in another lua_State", function()
    local k = 5
    local function add(a, b) return a + b + k, math.type(a), string.format("%d", b) end
    local x, t, s = T.codec_call(add, 1, 2)
    assert.equals(8, x); assert.equals("integer", t); assert.equals("2", s)
  end)

  it("gives the function the other state's globals", function()
    local function set() codec_spec_global = 42; return rawget(_G, "codec_spec_global") end
    assert.equals(42, T.codec_call(set))
    assert.is_nil(rawget(_G, "codec_spec_global"))
  end)

  it("resolves modules and C functions by require in the other state", function()
    local function use(m, f, fmt) return m.rep("ab", 2), f(2.7), fmt("%x", 255) end
    local a, b, c = T.codec_call(use, string, math.floor, string.format)
    assert.equals("abab", a); assert.equals(2, b); assert.equals("ff", c)
    assert.equals("function", T.codec_call(function(s) return type(s) end, futures.sleep))
    -- a module of the program, loaded here: require'd there by its name
    local function count() return type(helpers.counter), helpers == package.loaded["support.helpers"] end
    local kind, same = T.codec_call(count)
    assert.equals("function", kind)
    assert.is_true(same)
  end)

  it("sends current upvalues every call, the bytecode once", function()
    local k = 1
    local function get() return k end
    assert.equals(1, T.codec_call(get))
    k = 2
    assert.equals(2, T.codec_call(get))
    local function plainf(x) return x + 1 end
    for i = 1, 50 do assert.equals(i + 1, T.codec_call(plainf, i)) end
  end)

  it("does not reuse a cached closure whose _ENV the last call replaced", function()
    local function f()
      local seen = rawget(_ENV, "codec_marker")
      _ENV = { codec_marker = "replaced", rawget = rawget }
      return seen
    end
    assert.is_nil(T.codec_call(f))
    assert.is_nil(T.codec_call(f))
  end)

  it("brings back an error value with its file:line", function()
    local function fail() error({ code = 7 }) end
    local err = helpers.error_of(T.codec_call, fail)
    assert.same({ code = 7 }, err)
    local function fail2() error("bad thing") end
    local line = debug.getinfo(fail2, "S").linedefined
    assert.matches("codec_spec%.lua:" .. line .. ": bad thing", error_of(T.codec_call, fail2))
  end)
end)

describe("codec errors", function()
  it("names the argument and the path of a value that cannot travel", function()
    assert.equals("cannot transfer value #2 (field 'conn'.[3]): userdata (FILE*)",
      error_of(serialize, 1, { conn = { 1, 2, io.stdout } }))
    assert.equals("cannot transfer value #1 (field [true].[2.5].'x y'): thread (coroutine)",
      error_of(serialize, { [true] = { [2.5] = { ["x y"] = coroutine.create(print) } } }))
    assert.equals("cannot transfer value #1 (field 'a', a key): userdata (FILE*)",
      error_of(serialize, { a = { [io.stdout] = 1 } }))
    assert.equals("cannot transfer value #1 (metatable, field '__index'): userdata (FILE*)",
      error_of(serialize, setmetatable({}, { __index = io.stderr })))
    assert.matches("cannot transfer value #1: light userdata",
      error_of(serialize, debug.upvalueid(roundtrip, 1)))
  end)

  it("names the upvalue and the function that holds it", function()
    local sock = io.stdout
    local function job() return sock end
    assert.equals("cannot transfer value #1 (upvalue 'sock' of " .. where(job) .. "): userdata (FILE*)",
      error_of(serialize, job))
    local handlers = { on = job }
    assert.equals("cannot transfer value #1 (field 'on', upvalue 'sock' of " .. where(job)
      .. "): userdata (FILE*)", error_of(serialize, handlers))
  end)

  it("leaves the source untouched after an error and encodes again", function()
    local mt = {}
    local t = setmetatable({ 1, 2, bad = coroutine.create(print) }, mt)
    for _ = 1, 3 do assert.has_error(function() serialize(t) end) end
    assert.equals(mt, getmetatable(t))
    t.bad = nil
    assert.same({ 1, 2 }, roundtrip(t))
  end)

  it("leaks no handle reference when a transfer fails", function()
    local h = T.codec_handle()
    for _ = 1, 3 do
      assert.has_error(function() T.codec_local({ h, h, { h } }, coroutine.create(print)) end)
    end
    collectgarbage(); collectgarbage()
    assert.equals(1, h:refs())
  end)

  it("refuses a shared handle in a string, naming its kind", function()
    local h = T.codec_handle()
    assert.equals("cannot transfer value #1: test handle (a shared handle cannot leave the process)",
      error_of(serialize, h))
    assert.equals("cannot transfer value #1 (field 'h'): test handle (a shared handle cannot leave the process)",
      error_of(serialize, { h = h }))
  end)
end)

describe("codec shared handles", function()
  it("carry a reference to the same object within the process", function()
    local h = T.codec_handle()
    assert.equals(1, h:refs())
    local h2, h3 = T.codec_local(h, h)
    assert.equals(h:id(), h2:id())
    assert.equals(h2, h3)                   -- one userdata per transfer
    assert.equals(2, h:refs())              -- the buffer's reference is gone
    h2, h3 = nil, nil
    collectgarbage(); collectgarbage()
    assert.equals(1, h:refs())
  end)

  it("are refused by a decoder told the data comes from outside", function()
    local h = T.codec_handle()
    local s = T.codec_encode(true, { h })
    assert.matches("shared handle outside its process", error_of(deserialize, s))
    assert.equals(1, h:refs())
  end)

  it("refuse a queue named by id outside a worker process", function()
    -- a T_REMOTE value (tag 20) naming queue ('Q') id 1, flagged shared
    local template = serialize(true)
    local payload = "\1" .. string.char(20) .. "Q" .. string.pack("<I8", 1)
    local s = T.codec_reseal(template:sub(1, 4) .. string.pack("<I4", 8)
      .. template:sub(9, 24) .. payload)
    assert.matches("shared object outside its process", error_of(deserialize, s))
  end)

  it("travel to another state of the process and back", function()
    local h = T.codec_handle()
    local function echo(x) return x end
    local back = T.codec_call(echo, h)
    assert.equals(h:id(), back:id())
  end)
end)

describe("codec long strings within the process", function()
  -- Strings of 64 KB or more are lent: the encoding points at the source
  -- string, and the target copies its bytes once (docs/codec.md).
  local function bytes(n)
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local all = table.concat(t)
    return all:rep(n // 256 + 1):sub(1, n)
  end

  it("arrive with every byte, in this state and in another", function()
    local s = bytes(200000)
    assert.equals(s, T.codec_local(s))
    local function echo(x) return x end
    assert.equals(s, T.codec_call(echo, s))
    local function len(x) return #x, x:byte(1), x:byte(-1) end
    local n, first, last = T.codec_call(len, s)
    assert.equals(200000, n)
    assert.equals(0, first)
    assert.equals(s:byte(-1), last)
  end)

  it("decode to equal strings where one string is used twice", function()
    local s, u = bytes(100000), bytes(100001)
    local function echo(...) return ... end
    local r, x, y = T.codec_call(echo, { a = s, b = s, u }, s, u)
    assert.equals(s, r.a)
    assert.equals(r.a, r.b)
    assert.equals(s, x)
    assert.equals(u, y)
    assert.equals(u, r[1])
  end)

  it("are copied when short", function()
    local s = bytes(1000)
    local function echo(x) return x end
    assert.equals(s, T.codec_call(echo, s))
    assert.equals(s, T.codec_local(s))
  end)

  it("never leave the process: a decoder of outside data refuses them", function()
    local s = T.codec_encode("lend", bytes(70000))
    assert.matches("shared handle outside its process", error_of(deserialize, s))
    assert.equals(70000, #deserialize(serialize(bytes(70000))))
  end)
end)

describe("codec limits", function()
  local function nest(n)
    local t = {}
    for _ = 1, n - 1 do t = { t } end
    return t
  end

  it("nests 200 levels by default and refuses the 201st", function()
    assert.is_table(roundtrip(nest(200)))
    assert.equals("cannot transfer value #1: nesting deeper than 200 levels",
      (error_of(serialize, nest(201)):gsub(" %(.*%)", "")))
  end)

  it("refuses very deep nesting with an error, not a crash", function()
    assert.matches("nesting deeper than", error_of(serialize, nest(100000)))
    local chain = function() return 0 end
    for _ = 1, 300 do
      local inner = chain
      chain = function() return inner() + 1 end
    end
    assert.matches("nesting deeper than 200", error_of(serialize, chain))
  end)

  it("nests up to 1000 levels when asked, no further", function()
    local s = futures.serialize_with({ max_depth = 1000 }, nest(1000))
    assert.matches("nesting too deep", error_of(deserialize, s))
    assert.is_table(deserialize(s, { max_depth = 1000 }))
    assert.matches("nesting deeper than 1000", error_of(futures.serialize_with, { max_depth = 1000 }, nest(1001)))
    assert.matches("max_depth", error_of(futures.serialize_with, { max_depth = 1001 }, 1))
    assert.matches("max_depth", error_of(deserialize, s, { max_depth = 1001 }))
  end)

  it("holds max_size to the exact length of the encoding", function()
    local ints = {}
    for i = 1, 1000 do ints[i] = i % 100 end    -- packed one byte a number
    local values = { { 1, 2, 3 }, ints, { 1.5, 2.5 }, { a = { b = {} } }, "x", function() return 1 end }
    for _, v in ipairs(values) do
      local s = serialize(v)
      assert.equals(s, futures.serialize_with({ max_size = #s }, v))
      assert.matches("encoded size over the limit", error_of(futures.serialize_with, { max_size = #s - 1 }, v))
      assert.is_not_nil(deserialize(s, { max_size = #s, functions = true }))
      assert.matches("larger than max_size", error_of(deserialize, s, { max_size = #s - 1 }))
    end
  end)

  it("takes max_depth and max_size from serialize_with", function()
    assert.matches("nesting deeper than 5 levels", error_of(futures.serialize_with, { max_depth = 5 }, nest(6)))
    assert.is_string(futures.serialize_with({ max_depth = 6 }, nest(6)))
    assert.equals("cannot transfer value #1: encoded size over the limit of 1024 bytes",
      error_of(futures.serialize_with, { max_size = 1024 }, string.rep("x", 4096)))
    local s = serialize(string.rep("x", 1000))
    assert.equals(s, futures.serialize_with({ max_size = #s }, string.rep("x", 1000)))
    assert.has_error(function() futures.serialize_with({ max_size = #s - 1 }, string.rep("x", 1000)) end)
    assert.matches("unknown option 'depth'", error_of(futures.serialize_with, { depth = 1 }, 1))
    assert.matches("max_depth", error_of(futures.serialize_with, { max_depth = 0 }, 1))
  end)

  it("takes max_depth and max_size from deserialize", function()
    local s = serialize(nest(20))
    assert.matches("nesting too deep", error_of(deserialize, s, { max_depth = 10 }))
    assert.is_table(deserialize(s, { max_depth = 20 }))
    assert.matches("larger than max_size", error_of(deserialize, s, { max_size = 10 }))
    assert.matches("unknown option 'function'", error_of(deserialize, s, { ["function"] = false }))
  end)
end)

describe("codec decoder", function()
  local sample = serialize({ 1, 2.5, "three", { four = 4 }, [true] = false }, "x", 42,
    setmetatable({ 1 }, { kind = "mt" }), string.format, string)
  local withfn = serialize(function(x) return x + 1 end, { 1, 2 })

  it("refuses every truncation of a valid encoding", function()
    for _, s in ipairs { sample, withfn } do
      for n = 0, #s - 1 do
        assert.matches("cannot decode transfer data", error_of(deserialize, s:sub(1, n)))
      end
    end
  end)

  it("refuses every flipped bit, by checksum, before decoding anything", function()
    for _, s in ipairs { sample, withfn } do
      for i = 1, #s do
        for _, bit in ipairs { 1, 16, 128 } do
          local bad = s:sub(1, i - 1) .. string.char(s:byte(i) ~ bit) .. s:sub(i + 1)
          assert.matches("cannot decode transfer data", error_of(deserialize, bad))
        end
      end
    end
  end)

  it("checks a function's bytecode hash before lua_load", function()
    local i = withfn:find("\27Lua", 1, true)
    local bad = withfn:sub(1, i + 20) .. "!" .. withfn:sub(i + 22)
    bad = T.codec_reseal(bad)
    assert.matches("bytecode checksum mismatch", error_of(deserialize, bad))
  end)

  it("survives garbage behind a valid header: errors, no crash", function()
    math.randomseed(4)
    for _ = 1, 3000 do
      local body = {}
      for j = 1, math.random(0, 40) do body[j] = string.char(math.random(0, 255)) end
      local s = T.codec_reseal(sample:sub(1, 24) .. table.concat(body))
      pcall(deserialize, s)
      pcall(deserialize, s, { functions = false })
    end
    -- and mutations of valid payloads
    for _ = 1, 3000 do
      local s = math.random(2) == 1 and sample or withfn
      local i = math.random(25, #s)
      s = s:sub(1, i - 1) .. string.char(math.random(0, 255)) .. s:sub(i + 1)
      s = T.codec_reseal(s)
      pcall(deserialize, s)
    end
  end)

  it("refuses garbage, another format and another version", function()
    assert.matches("shorter than the header", error_of(deserialize, ""))
    assert.matches("shorter than the header", error_of(deserialize, "garbage"))
    assert.matches("bad magic", error_of(deserialize, ("\0"):rep(40)))
    local v2 = sample:sub(1, 3) .. "\2" .. sample:sub(5)
    assert.matches("unsupported format version", error_of(deserialize, v2))
    assert.matches("length mismatch", error_of(deserialize, sample .. "x"))
  end)

  it("refuses Lua functions by default, saying where they sit", function()
    local fn = function() end
    local msg = error_of(futures.deserialize, serialize(1, { x = { fn } }))
    assert.matches("the data holds a Lua function %(value #2 %(field 'x'%.%[1%]%)%); "
      .. "pass { functions = true } to load it", msg)
    assert.matches("value #1%)", error_of(futures.deserialize, withfn))
    local obj = setmetatable({}, { __gc = function() end })
    assert.matches("value #1 %(metatable, field '__gc'%)",
      error_of(futures.deserialize, serialize(obj)))
  end)

  it("says where a refused function sits however deep, the rest as ...", function()
    local t = function() end
    for _ = 1, 40 do t = { t } end
    local msg = error_of(futures.deserialize, serialize(t))
    assert.matches("value #1 %(field %[1%]" .. ("%.%[1%]"):rep(30) .. ", %.%.%.%)", msg)
  end)

  it("loads Lua functions when asked with functions = true", function()
    assert.equals(3, futures.deserialize(serialize(function() return 3 end),
      { functions = true })())
  end)

  it("decodes plain data, C functions and loaded modules by default", function()
    assert.same({ 1, { 2 } }, futures.deserialize(serialize({ 1, { 2 } })))
    assert.equals(print, futures.deserialize(serialize(print)))
    assert.equals(string, futures.deserialize(serialize(string)))
  end)

  it("never loads a module by default: names only modules already loaded", function()
    package.loaded.codec_spec_gone = { f = string.len }
    local s = serialize(package.loaded.codec_spec_gone)
    package.loaded.codec_spec_gone = nil
    package.preload.codec_spec_gone = function() error("loaded on a stranger's word") end
    local msg = error_of(futures.deserialize, s)
    package.preload.codec_spec_gone = nil
    assert.matches("names module 'codec_spec_gone', which is not loaded here", msg)
  end)

  it("refuses the global table by default: it is the program's state", function()
    assert.matches("global table refused", error_of(futures.deserialize, serialize(_G)))
    assert.matches("global table refused", error_of(futures.deserialize, serialize({ env = _G })))
    -- a forged header cannot slip it past: the value itself is refused
    local s = serialize({ env = _G })
    local unflagged = T.codec_reseal(s:sub(1, 4) .. "\0\0\0\0" .. s:sub(9))
    assert.matches("global table refused", error_of(futures.deserialize, unflagged))
    unflagged = T.codec_reseal(withfn:sub(1, 4) .. "\0\0\0\0" .. withfn:sub(9))
    assert.matches("holds a Lua function", error_of(futures.deserialize, unflagged))
  end)

  it("allocates in proportion to its input, whatever the sizes it claims", function()
    -- tables nested 190 deep, each claiming the rest of the input as its
    -- array and hash sizes, once made 570 MB of empty tables from 100 KB
    local size, depth = 100000, 190
    local parts = { "\1" }
    for k = 1, depth do
      local rest = size - (1 + k * 9)
      parts[#parts + 1] = string.pack("<BI4I4", 9, rest, rest // 2)   -- T_TABLE (9)
    end
    parts[#parts + 1] = ("\0"):rep(size - 1 - depth * 9)
    local s = T.codec_reseal(sample:sub(1, 24) .. table.concat(parts))
    collectgarbage(); collectgarbage()
    collectgarbage("stop")
    local before = collectgarbage("count")
    local ok = pcall(deserialize, s)
    local grew = (collectgarbage("count") - before) * 1024
    collectgarbage("restart")
    assert.is_false(ok)
    assert.is_true(grew < 64 * #s, ("%d bytes allocated for a %d-byte input"):format(grew, #s))
  end)

  it("replays every input saved under spec/corpus without crashing", function()
    local shell = require "support.shell"
    local p = io.popen("ls " .. shell.q(shell.ROOT .. "/spec/corpus") .. " 2>/dev/null")
    local count = 0
    for name in p:lines() do
      local s = shell.read_file(shell.ROOT .. "/spec/corpus/" .. name)
      pcall(deserialize, s)
      pcall(deserialize, s, { functions = false })
      if #s >= 24 then pcall(deserialize, T.codec_reseal(s)) end
      count = count + 1
    end
    p:close()
    assert.is_true(count > 0, "spec/corpus is empty")
  end)
end)
