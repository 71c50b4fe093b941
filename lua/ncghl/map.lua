-- ncghl.map: the declarative field-map engine. A map is a Lua table
-- `target = spec`, where a spec is
--   "path"                a source field, dots for nesting ("address.zip");
--   { spec, spec, ... }   tried in order, the first with a value wins;
--   map.const(v)          a constant (also: any number or boolean);
--   function(src, ctx)    computed, for the odd case.
-- "A value" is anything but nil, JSON null, an empty or blank string, or an
-- empty table; strings are trimmed. Fields without a value are left out, so a
-- map never blanks a field on the other side.
--
-- map.apply returns the target table and a trace (target -> the path that
-- filled it, or "const" / "function"): the trace is what `ncghl map` prints
-- and what echo suppression uses to fingerprint exactly the data it wrote.
-- Pure: no I/O, no upstream calls.
local util = require "ncghl.util"

local map = {}

local CONST = { __name = "ncghl.map.const" }

function map.const(v)
  return setmetatable({ value = v }, CONST)
end

function map.is_const(spec)
  return getmetatable(spec) == CONST
end

local function clean(v)
  if type(v) == "string" then
    v = util.trim(v)
  end
  if util.empty(v) then
    return nil
  end
  return v
end

local function resolve(spec, src, ctx)
  local t = type(spec)
  if t == "string" then
    local v = clean(util.get(src, spec))
    if v ~= nil then
      return v, spec
    end
  elseif t == "number" or t == "boolean" then
    return spec, "const"
  elseif t == "function" then
    local v = clean(spec(src, ctx))
    if v ~= nil then
      return v, "function"
    end
  elseif t == "table" then
    if getmetatable(spec) == CONST then
      local v = clean(spec.value)
      if v ~= nil then
        return v, "const"
      end
    else
      for _, s in ipairs(spec) do
        local v, how = resolve(s, src, ctx)
        if v ~= nil then
          return v, how
        end
      end
    end
  end
  return nil
end

-- The value one spec gives for src (and how it got it), e.g.
-- map.get(insured, { "databaseId", "id" }).
function map.get(src, spec, ctx)
  if type(src) ~= "table" then
    src = {}
  end
  return resolve(spec, src, ctx)
end

-- Spec builders for the shapes NowCerts sends that a plain path cannot read.
-- Each returns a function spec, so it can stand anywhere a spec can, also
-- inside a list: { "policyType", map.first("lineOfBusinesses", "lineOfBusinessName") }.

-- The first item of the list at `path` that has a value; for items that are
-- objects, their `field`. A plain value at `path` (not a list) is taken as is,
-- since NowCerts names one field a list in one endpoint and a string in another.
function map.first(path, field)
  return function(src)
    local v = util.get(src, path)
    if type(v) ~= "table" then
      return v
    end
    for _, item in ipairs(v) do
      if type(item) == "table" then
        item = field and item[field]
      end
      item = clean(item)
      if item ~= nil then
        return item
      end
    end
    return nil
  end
end

-- The value of `spec` as a number ("1,200.50" and "$980" included); nil when
-- it is not one, so a map never sends text where a number is wanted.
function map.number(spec)
  return function(src, ctx)
    local v = resolve(spec, src, ctx)
    if type(v) == "number" then
      return v
    elseif type(v) == "string" then
      local n = tonumber((v:gsub("[%s,$]", "")))
      if n and math.type(n) == "float" and n == math.floor(n) and math.tointeger(n) then
        n = math.tointeger(n)
      end
      return n
    end
    return nil
  end
end

-- The calendar date (YYYY-MM-DD) of `spec`'s value: NowCerts writes
-- "2024-02-01T00:00:00-05:00", and the day it names is the policy's day in the
-- agency's own time zone, so the date part is kept as written, not converted.
-- A value in another form is passed on unchanged.
function map.date(spec)
  return function(src, ctx)
    local v = resolve(spec, src, ctx)
    if type(v) ~= "string" then
      return v
    end
    return v:match("^(%d%d%d%d%-%d%d%-%d%d)") or v
  end
end

-- GHL's customFields input from a list of { key = "...", from = spec } (or
-- id = "..." instead of key): [{key|id, field_value}], fields without a value
-- left out. GHL takes either id or key; which key form it wants is not
-- confirmed (ref/ghl/NOTES.md section 2), so the list lives in the map file.
function map.custom_fields(list)
  return function(src, ctx)
    local out = {}
    for _, f in ipairs(list) do
      local v = resolve(f.from, src, ctx)
      if v ~= nil and type(v) ~= "table" then
        local item = { field_value = v }
        if f.id ~= nil and f.id ~= "" then
          item.id = f.id
        else
          item.key = f.key
        end
        out[#out + 1] = item
      end
    end
    return out
  end
end

function map.apply(m, src, ctx)
  if type(src) ~= "table" then
    src = {}
  end
  local out, trace = {}, {}
  for target, spec in pairs(m) do
    local v, how = resolve(spec, src, ctx)
    if v ~= nil then
      out[target] = v
      trace[target] = how
    end
  end
  return out, trace
end

return map
