-- ncghl.util: small, pure text helpers shared by the engine's modules:
-- emptiness as mappings understand it, trimming, the email and phone forms
-- used for searching, locking and comparing, dotted paths and URL encoding.
local json = require "ncghl.json"

local util = {}

-- Whether a value counts as "no value": nil, JSON null, a string with
-- nothing but white space, or an empty table.
function util.empty(v)
  if v == nil or v == json.null then
    return true
  end
  local t = type(v)
  if t == "string" then
    return not v:find("%S")
  elseif t == "table" then
    return next(v) == nil
  end
  return false
end

function util.trim(s)
  return s:match("^%s*(.*%S)") or ""
end

-- A scalar as text; whole floats print without ".0".
function util.str(v)
  if v == nil or v == json.null then
    return nil
  end
  if math.type(v) == "float" and v == math.floor(v) and math.tointeger(v) then
    return tostring(math.tointeger(v))
  end
  return tostring(v)
end

-- The form an email is searched, locked and compared in: trimmed, lower case.
function util.email(v)
  local s = util.str(v)
  if not s then
    return nil
  end
  s = util.trim(s):lower()
  if s == "" then
    return nil
  end
  return s
end

-- The form a phone is locked and compared in: its last 10 digits (so
-- "+1 (555) 123-4567" and "5551234567" are the same number).
function util.phone10(v)
  local s = util.str(v)
  if not s then
    return nil
  end
  local d = s:gsub("%D", "")
  if d == "" then
    return nil
  end
  if #d > 10 then
    d = d:sub(-10)
  end
  return d
end

-- t["a"]["b"]["c"] for the path "a.b.c"; nil as soon as a step is missing.
function util.get(t, path)
  if type(t) ~= "table" then
    return nil
  end
  if not path:find(".", 1, true) then
    return t[path]
  end
  local v = t
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then
      return nil
    end
    v = v[part]
  end
  return v
end

-- Percent-encodes everything but RFC 3986's unreserved characters.
function util.pct(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", c:byte())
  end))
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

-- A shallow copy without the listed keys.
function util.without(t, keys)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  for _, k in ipairs(keys or {}) do
    out[k] = nil
  end
  return out
end

return util
