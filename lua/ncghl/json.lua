-- ncghl.json: lua-cjson set up once for ncghl, and a decoder that hands
-- mappings the values they expect: a JSON null inside an object is simply an
-- absent field (nil), and whole numbers are Lua integers (so 42 prints as "42",
-- not "42.0", and a numeric phone keeps its digits). Which keys were null is
-- remembered aside (json.was_null), for the sync's "cleared, not unknown".
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

local type, next, tointeger, mtype = type, next, math.tointeger, math.type
local NULL, cdecode = cjson.null, cjson.decode

-- One pass over what cjson made: nulls in objects go, whole floats become
-- integers (cjson 2.1 decodes every number as a float). Only text the C
-- decoder refuses comes this way (see json.decode), yet it is kept shaped
-- for speed, as it was when every payload took it: a JSON array
-- is a table whose keys are exactly 1..#t (cjson keeps a null in an array as
-- json.null, never as a hole) and is walked by index instead of with next;
-- an object has only string keys, so #t is 0 for it.
-- The keys each decoded object held a null under, before tidy dropped them.
-- Field-level sync tells "sent empty" (a clear) from "not sent" (unknown)
-- with it; weak keys, so it never keeps a payload alive.
local null_keys = setmetatable({}, { __mode = "k" })

local function mark(t, k)
  local set = null_keys[t]
  if not set then
    set = {}
    null_keys[t] = set
  end
  set[k] = true
end

local function tidy(t, depth)
  local n = #t
  if n > 0 then
    for i = 1, n do
      local v = t[i]
      local tv = type(v)
      if tv == "string" then
        -- the most common value: nothing to do
      elseif tv == "table" then
        if depth < 1000 then
          tidy(v, depth + 1)
        end
      elseif tv == "number" and v > -EXACT and v < EXACT then
        local int = tointeger(v)
        if int then
          t[i] = int
        end
      end
    end
    return
  end
  for k, v in next, t do
    local tv = type(v)
    if tv == "string" then
      -- the most common value: nothing to do
    elseif tv == "table" then
      if depth < 1000 then
        tidy(v, depth + 1)
      end
    elseif tv == "number" then
      if v > -EXACT and v < EXACT then
        local int = tointeger(v)
        if int then
          t[k] = int
        end
      end
    elseif v == NULL then
      t[k] = nil
      mark(t, k)
    end
  end
end

-- The C decoder (lua_json.c) makes the values right in one pass; text it
-- refuses (invalid UTF-8, a \u0000, nesting past 256, or not JSON at all)
-- goes to cjson and the walk above, which read it as they always have and
-- word the error when there is one.
local fast = require("ncghl.json_c").decode

-- cjson's reading and the walk: what json.decode falls back to, and what
-- its C decoder must agree with (tests/fuzz/fuzz_decode.c compares them).
function json.decode_cjson(s)
  local v = cdecode(s)
  if type(v) == "table" then
    tidy(v, 0)
  elseif v == NULL then
    return nil
  elseif mtype(v) == "float" and v > -EXACT and v < EXACT then
    return tointeger(v) or v
  end
  return v
end

function json.decode(s)
  if type(s) == "string" then
    local ok, v = fast(s, null_keys)
    if ok then
      if v == NULL then
        return nil
      end
      return v
    end
  end
  return json.decode_cjson(s)
end

-- Whether the object `t` (as json.decode made it) carried `key` as null.
function json.was_null(t, key)
  local set = null_keys[t]
  return set ~= nil and set[key] == true
end

-- Marks `key` of `t` as having been null: for code that copies a decoded
-- object into a new table and wants the copy to tell the same story.
function json.set_null(t, key)
  mark(t, key)
end

-- Copies the null marks of `from` onto `to` (keys renamed by `rename`, a
-- function, when given).
function json.copy_nulls(from, to, rename)
  local set = null_keys[from]
  if set then
    for k in pairs(set) do
      local name = rename and rename(k) or k
      if name ~= nil and to[name] == nil then
        mark(to, name)
      end
    end
  end
end

function json.encode(v)
  return cjson.encode(v)
end

return json
