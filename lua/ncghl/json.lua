-- ncghl.json: lua-cjson set up once for ncghl, and a decoder that hands
-- mappings the values they expect: a JSON null inside an object is simply an
-- absent field (nil), and whole numbers are Lua integers (so 42 prints as "42",
-- not "42.0", and a numeric phone keeps its digits).
local cjson = require "cjson"

local json = {}

json.null = cjson.null

-- Sparse arrays become objects instead of failing the event; NaN and infinity
-- (which JSON cannot carry) become null; numbers keep all the digits cjson
-- can print.
cjson.encode_sparse_array(true)
cjson.encode_invalid_numbers("null")
cjson.encode_number_precision(14)
-- Only newer lua-cjson builds have this switch; where they do, an empty Lua
-- table (most often an empty list such as tags) is sent as [] rather than {}.
if cjson.encode_empty_table_as_object then
  cjson.encode_empty_table_as_object(false)
end

-- Doubles hold every integer up to 2^53 exactly; past that a number is kept
-- as the float cjson made of it rather than pretending to a precision it lost.
local EXACT = 2 ^ 53

local function tidy(t, depth)
  if depth > 200 then
    return
  end
  for k, v in pairs(t) do
    local tv = type(v)
    if v == cjson.null then
      if type(k) == "string" then
        t[k] = nil
      end
    elseif tv == "number" then
      if math.type(v) == "float" and v == math.floor(v) and v > -EXACT and v < EXACT then
        t[k] = math.tointeger(v)
      end
    elseif tv == "table" then
      tidy(v, depth + 1)
    end
  end
end

function json.decode(s)
  local v = cjson.decode(s)
  if type(v) == "table" then
    tidy(v, 0)
  elseif v == cjson.null then
    return nil
  elseif math.type(v) == "float" and v == math.floor(v) and v > -EXACT and v < EXACT then
    return math.tointeger(v)
  end
  return v
end

function json.encode(v)
  return cjson.encode(v)
end

return json
