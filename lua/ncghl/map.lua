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
