-- ncghl.util: small, pure text helpers shared by the engine's modules:
-- emptiness as mappings understand it, trimming, the email and phone forms
-- used for searching, locking and comparing, dotted paths and URL encoding.
--
-- These run for every field of every event (`ncghl test` runs tens of
-- thousands of events a second), so each has a fast path for the common
-- case, a string with no white space at either end, that looks at two bytes
-- instead of running a pattern; the pattern is kept for the rest.
local json = require "ncghl.json"

local byte, find, lower = string.byte, string.find, string.lower
local type, tostring, next = type, tostring, next
local mtype, floor, tointeger = math.type, math.floor, math.tointeger
local NULL = json.null

local util = {}

-- The bytes Lua's %s matches (isspace in the C locale).
local SPACE = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }
util.SPACE = SPACE

-- Whether a search answer's list can be believed: a sequence (keys 1..n
-- only) of objects, and not empty while the answer's own count (`total`,
-- `@odata.count`, when it gives one) says it found some. What fails this
-- is no "nobody": taken for one, a search makes a second record.
function util.records_list(l, count)
  if type(l) ~= "table" then
    return false
  end
  local n = #l
  for k, v in pairs(l) do
    if math.type(k) ~= "integer" or k < 1 or k > n or type(v) ~= "table" then
      return false
    end
  end
  count = tonumber(count)
  return not (n == 0 and count ~= nil and count > 0)
end

-- Whether a value counts as "no value": nil, JSON null, a string with
-- nothing but white space, or an empty table.
function util.empty(v)
  if v == nil or v == NULL then
    return true
  end
  local t = type(v)
  if t == "string" then
    local b = byte(v, 1)
    if b == nil then
      return true
    elseif not SPACE[b] then
      return false
    end
    return not find(v, "%S")
  elseif t == "table" then
    return next(v) == nil
  end
  return false
end

function util.trim(s)
  if type(s) == "string" then
    local b = byte(s, 1)
    if b == nil then
      return s
    elseif not SPACE[b] and not SPACE[byte(s, -1)] then
      return s -- nothing to cut: the usual case
    end
  end
  return s:match("^%s*(.*%S)") or ""
end

-- A scalar as text; whole floats print without ".0".
function util.str(v)
  local t = type(v)
  if t == "string" then
    return v
  elseif v == nil or v == NULL then
    return nil
  end
  if t == "number" and mtype(v) == "float" and v == floor(v) and tointeger(v) then
    return tostring(tointeger(v))
  end
  return tostring(v)
end

-- The caches below keep at most CACHE_ENTRIES entries, each for a string of
-- at most CACHE_KEY_BYTES: their keys come from data, and no cache may hold
-- on to much of the state's memory.
local CACHE_ENTRIES, CACHE_KEY_BYTES = 1000, 256
util.CACHE_ENTRIES, util.CACHE_KEY_BYTES = CACHE_ENTRIES, CACHE_KEY_BYTES

-- f, remembering its results for strings: the same email, phone or name
-- goes through these several times in one event (lock, search, compare,
-- echo fingerprint). false stands for a nil result.
local function memo(f)
  local cache, n = {}, 0
  return function(v)
    local r = cache[v]
    if r ~= nil then
      return r or nil
    end
    r = f(v)
    if type(v) == "string" and #v <= CACHE_KEY_BYTES then
      if n >= CACHE_ENTRIES then
        cache, n = {}, 0
      end
      if r == nil then
        cache[v] = false
      else
        cache[v] = r
      end
      n = n + 1
    end
    return r
  end
end

-- A scalar as trimmed, lower-case text ("" for no value): how names of
-- pipelines, stages and people are compared.
util.fold = memo(function(v)
  return lower(util.trim(util.str(v) or ""))
end)

-- The form an email is searched, locked and compared in: trimmed, lower case.
util.email = memo(function(v)
  local s = util.str(v)
  if not s then
    return nil
  end
  s = lower(util.trim(s))
  if s == "" then
    return nil
  end
  return s
end)

-- The form a phone is locked and compared in: its last 10 digits (so
-- "+1 (555) 123-4567" and "5551234567" are the same number).
-- A phone number without its extension ("813-555-0142 ext. 12",
-- "(813) 555-0145 x3", "... #7"): the extension's digits are not part of the
-- number, and GHL's phone field has no place for them.
function util.phone_number(s)
  s = s:gsub("%s*[,;]?%s*[Ee][Xx][Tt]%a*%.?%s*:?%s*%d+%s*$", "")
  return (s:gsub("%s*[Xx#]%.?%s*%d+%s*$", ""))
end

util.phone10 = memo(function(v)
  local s = util.str(v)
  if not s then
    return nil
  end
  local d = util.phone_number(s):gsub("%D", "")
  if d == "" then
    return nil
  end
  if #d > 10 then
    d = d:sub(-10)
  end
  return d
end)

-- A dotted path split into its steps, once per path: maps name the same few
-- paths on every event. false marks a path without a dot (one plain index).
local steps_of, nsteps = {}, 0

local function steps(path)
  local s = steps_of[path]
  if s == nil then
    if not find(path, ".", 1, true) then
      s = false
    else
      s = {}
      for part in path:gmatch("[^.]+") do
        s[#s + 1] = part
      end
    end
    if #path <= CACHE_KEY_BYTES then
      if nsteps >= CACHE_ENTRIES then
        steps_of, nsteps = {}, 0
      end
      steps_of[path] = s
      nsteps = nsteps + 1
    end
  end
  return s
end
util.steps = steps

-- t["a"]["b"]["c"] for the path "a.b.c"; nil as soon as a step is missing.
function util.get(t, path)
  if type(t) ~= "table" then
    return nil
  end
  local s = steps_of[path]
  if s == nil then
    s = steps(path)
  end
  if not s then
    return t[path]
  end
  local v = t
  for i = 1, #s do
    if type(v) ~= "table" then
      return nil
    end
    v = v[s[i]]
  end
  return v
end

-- Every byte's escape, so gsub replaces from a table instead of calling a
-- function per escaped character.
local PCT = {}
for b = 0, 255 do
  PCT[string.char(b)] = string.format("%%%02X", b)
end

-- Percent-encodes everything but RFC 3986's unreserved characters.
function util.pct(s)
  s = tostring(s)
  if not find(s, "[^%w%-%._~]") then
    return s -- ids and names that need no escaping: no copy
  end
  return (s:gsub("[^%w%-%._~]", PCT))
end

-- require(name) for a mapping file an agency may delete: nil when there is
-- no such file. Any other error (one inside that file, or a file it needs
-- that is missing) is raised as usual, so a broken file still fails the load.
function util.require_optional(name)
  local ok, mod = pcall(require, name)
  if ok then
    return mod
  end
  if type(mod) == "string" and mod:find("module '" .. name .. "' not found", 1, true) then
    return nil
  end
  error(mod, 0)
end

-- The string keys of t, sorted: for output in a stable order.
function util.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  return keys
end

-- '"A", "B"' (the names of a list of {name = ...}) for a message, or "none".
function util.names_of(list)
  local out = {}
  for _, item in ipairs(type(list) == "table" and list or {}) do
    if type(item) == "table" and not util.empty(item.name) then
      out[#out + 1] = '"' .. util.str(item.name) .. '"'
    end
  end
  return #out > 0 and table.concat(out, ", ") or "none"
end

-- A shallow copy without the listed keys.
function util.without(t, keys)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  if keys then
    for _, k in ipairs(keys) do
      out[k] = nil
    end
  end
  return out
end

return util
