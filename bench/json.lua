-- bench/json.lua — the little JSON the bench needs: encode results.json
-- (pretty, keys sorted, so two runs diff line by line) and decode a saved one
-- for --compare. Tables with only keys 1..n are arrays; an empty table is an
-- object unless marked with json.array. NaN and infinities become null.
local json = {}

local ARRAY = setmetatable({}, { __mode = "k" })

--- Mark t as an array (for an empty one) and return it.
function json.array(t)
  t = t or {}
  ARRAY[t] = true
  return t
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
              ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESC[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local function is_array(t)
  if ARRAY[t] then return true end
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local function scalar(v)
  local tv = type(v)
  if v == nil then return "null"
  elseif tv == "boolean" then return tostring(v)
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    local s = ("%.10g"):format(v)
    if not s:find("[%.eEn]") then s = s .. ".0" end
    return s
  elseif tv == "string" then return quote(v)
  end
  error("cannot encode a " .. tv .. " as JSON")
end

-- Arrays of scalars stay on one line; everything else is indented.
local function encode(v, indent, out)
  if type(v) ~= "table" then out[#out + 1] = scalar(v); return end
  local pad = ("  "):rep(indent + 1)
  if is_array(v) then
    local flat = true
    for _, x in ipairs(v) do if type(x) == "table" then flat = false; break end end
    if flat then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = scalar(x) end
      out[#out + 1] = "[" .. table.concat(parts, ", ") .. "]"
      return
    end
    out[#out + 1] = "[\n"
    for i, x in ipairs(v) do
      out[#out + 1] = pad
      encode(x, indent + 1, out)
      out[#out + 1] = i < #v and ",\n" or "\n"
    end
    out[#out + 1] = ("  "):rep(indent) .. "]"
    return
  end
  local keys = {}
  for k in pairs(v) do
    if type(k) ~= "string" then error("JSON object keys must be strings") end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  if #keys == 0 then out[#out + 1] = "{}"; return end
  out[#out + 1] = "{\n"
  for i, k in ipairs(keys) do
    out[#out + 1] = pad .. quote(k) .. ": "
    encode(v[k], indent + 1, out)
    out[#out + 1] = i < #keys and ",\n" or "\n"
  end
  out[#out + 1] = ("  "):rep(indent) .. "}"
end

function json.encode(v)
  local out = {}
  encode(v, 0, out)
  return table.concat(out)
end

---------------------------------------------------------------- decoding

local function decode_error(s, pos, what)
  error(("JSON: %s at byte %d"):format(what, pos), 0)
end

local decode_value

local function skip(s, pos) return s:find("[^ \t\r\n]", pos) or #s + 1 end

local function decode_string(s, pos)
  local parts, i = {}, pos + 1
  while true do
    local j = s:find('["\\]', i)
    if not j then decode_error(s, pos, "unterminated string") end
    parts[#parts + 1] = s:sub(i, j - 1)
    if s:sub(j, j) == '"' then return table.concat(parts), j + 1 end
    local c = s:sub(j + 1, j + 1)
    if c == "u" then
      local hex = s:match("^%x%x%x%x", j + 2)
      if not hex then decode_error(s, j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      local nexti = j + 6
      if cp >= 0xD800 and cp < 0xDC00 then
        local lo = s:match("^\\u(%x%x%x%x)", nexti)
        if lo then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(lo, 16) - 0xDC00)
          nexti = nexti + 6
        end
      end
      parts[#parts + 1] = utf8.char(cp)
      i = nexti
    else
      local map = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                    n = "\n", r = "\r", t = "\t" }
      if not map[c] then decode_error(s, j, "bad escape") end
      parts[#parts + 1] = map[c]
      i = j + 2
    end
  end
end

function decode_value(s, pos)
  pos = skip(s, pos)
  local c = s:sub(pos, pos)
  if c == "{" then
    local obj = {}
    pos = skip(s, pos + 1)
    if s:sub(pos, pos) == "}" then return obj, pos + 1 end
    while true do
      if s:sub(pos, pos) ~= '"' then decode_error(s, pos, "object key expected") end
      local k
      k, pos = decode_string(s, pos)
      pos = skip(s, pos)
      if s:sub(pos, pos) ~= ":" then decode_error(s, pos, "':' expected") end
      obj[k], pos = decode_value(s, pos + 1)
      pos = skip(s, pos)
      local d = s:sub(pos, pos)
      if d == "}" then return obj, pos + 1 end
      if d ~= "," then decode_error(s, pos, "',' or '}' expected") end
      pos = skip(s, pos + 1)
    end
  elseif c == "[" then
    local arr = json.array({})
    local n = 0
    pos = skip(s, pos + 1)
    if s:sub(pos, pos) == "]" then return arr, pos + 1 end
    while true do
      n = n + 1
      arr[n], pos = decode_value(s, pos)
      pos = skip(s, pos)
      local d = s:sub(pos, pos)
      if d == "]" then return arr, pos + 1 end
      if d ~= "," then decode_error(s, pos, "',' or ']' expected") end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(s, pos)
  elseif s:find("^true", pos) then return true, pos + 4
  elseif s:find("^false", pos) then return false, pos + 5
  elseif s:find("^null", pos) then return nil, pos + 4
  end
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not num or num == "" or not tonumber(num) then decode_error(s, pos, "value expected") end
  return tonumber(num), pos + #num
end

function json.decode(s)
  local v, pos = decode_value(s, 1)
  pos = skip(s, pos)
  if pos <= #s then decode_error(s, pos, "trailing data") end
  return v
end

return json
