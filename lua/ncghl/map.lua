-- ncghl.map: the declarative field-map engine. A map is a Lua table
-- `target = spec`, where a spec is
--   "path"                a source field, dots for nesting ("address.zip");
--   { spec, spec, ... }   tried in order, the first with a value wins;
--   map.const(v)          a constant (also: any number or boolean);
--   function(src, ctx)    computed, for the odd case;
--   map.keep(spec)        as spec, and the sync never clears this field.
-- "A value" is anything but nil, JSON null, an empty or blank string, or an
-- empty table; strings are trimmed. Fields without a value are left out of
-- what map.apply returns; clearing a field is the sync's decision
-- (ncghl.sync), made from the record, never from a map's output.
--
-- map.apply returns the target table and a trace (target -> the path that
-- filled it, or "const" / "function"): the trace is what `ncghl map` prints.
-- Pure: no I/O, no upstream calls.
local util = require "ncghl.util"
local json = require "ncghl.json"

local type, next, getmetatable, byte = type, next, getmetatable, string.byte
local trim, steps_of = util.trim, util.steps
local SPACE, NULL = util.SPACE, json.null

local map = {}

local CONST = { __name = "ncghl.map.const" }

function map.const(v)
  return setmetatable({ value = v }, CONST)
end

function map.is_const(spec)
  return getmetatable(spec) == CONST
end

-- A field whose value is never cleared by the sync: when one side empties
-- it, the other side keeps its value (SPEC 10). The spec inside reads the
-- value as usual: firstName = map.keep("firstName").
local KEEP = { __name = "ncghl.map.keep" }

function map.keep(spec)
  return setmetatable({ spec = spec }, KEEP)
end

function map.is_keep(spec)
  return getmetatable(spec) == KEEP
end

-- The plain source paths a spec reads, in order ("a" -> {"a"}, {"a", "b"}
-- -> itself, map.keep(x) -> x's), or nil for a constant or a function:
-- how the sync pairs a field of one map with the field of the other map
-- that reads it back.
function map.paths(spec)
  if getmetatable(spec) == KEEP then
    spec = spec.spec
  end
  if type(spec) == "string" then
    return { spec }
  end
  if type(spec) ~= "table" or getmetatable(spec) ~= nil or #spec == 0 then
    return nil
  end
  for i = 1, #spec do
    if type(spec[i]) ~= "string" then
      return nil
    end
  end
  return spec
end

-- A value as a map sends it, or nil for "no value". The usual string (no
-- white space at either end) is checked with two byte reads, not a pattern.
local function clean(v)
  local t = type(v)
  if t == "string" then
    local b = byte(v, 1)
    if b == nil then
      return nil
    elseif SPACE[b] or SPACE[byte(v, -1)] then
      v = trim(v)
      if v == "" then
        return nil
      end
    end
    return v
  elseif v == nil or v == NULL then
    return nil
  elseif t == "table" and next(v) == nil then
    return nil
  end
  return v
end

-- The paths this module has read, each with its steps (util.steps: false
-- for a path without a dot). A lookup here also tells a path from any other
-- spec without a call to type(). Bounded like util's caches, since mapping
-- code may build paths from data.
local known, nknown = {}, 0

local function learn(path)
  local st = steps_of(path)
  if #path <= util.CACHE_KEY_BYTES then
    if nknown >= util.CACHE_ENTRIES then
      known, nknown = {}, 0
    end
    known[path] = st
    nknown = nknown + 1
  end
  return st
end

-- clean(util.get(src, path)) in one call; st is the path's steps. src must
-- be a table.
local function pick(src, path, st)
  local v
  if st then
    v = src
    for i = 1, #st do
      if type(v) ~= "table" then
        return nil
      end
      v = v[st[i]]
    end
  else
    v = src[path]
  end
  if v == nil then
    return nil
  end
  local t = type(v)
  if t == "string" then
    local b = byte(v, 1)
    if b == nil then
      return nil
    elseif SPACE[b] or SPACE[byte(v, -1)] then
      v = trim(v)
      if v == "" then
        return nil
      end
    end
    return v
  elseif v == NULL or (t == "table" and next(v) == nil) then
    return nil
  end
  return v
end

local function resolve(spec, src, ctx)
  local st, t = known[spec], nil
  if st == nil then
    t = type(spec)
    if t == "string" then
      st = learn(spec)
    end
  end
  if st ~= nil then -- a path
    if type(src) ~= "table" then
      return nil
    end
    local v = pick(src, spec, st)
    if v ~= nil then
      return v, spec
    end
    return nil
  end
  if t == "table" then
    if getmetatable(spec) == KEEP then
      return resolve(spec.spec, src, ctx)
    elseif getmetatable(spec) == CONST then
      local v = clean(spec.value)
      if v ~= nil then
        return v, "const"
      end
    else
      -- A list: the first spec with a value. Paths already seen, by far
      -- the most common items, are read here rather than through a call to
      -- resolve (which learns a new one).
      local tab
      for i = 1, #spec do
        local s = spec[i]
        if s == nil then
          break
        end
        local sst = known[s]
        if sst ~= nil then
          if tab == nil then
            tab = type(src) == "table"
          end
          if tab then
            local v = pick(src, s, sst)
            if v ~= nil then
              return v, s
            end
          end
        else
          local v, how = resolve(s, src, ctx)
          if v ~= nil then
            return v, how
          end
        end
      end
    end
  elseif t == "function" then
    local v = clean(spec(src, ctx))
    if v ~= nil then
      return v, "function"
    end
  elseif t == "number" or t == "boolean" then
    return spec, "const"
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

-- One entry of GHL's customFields for field f of a custom_fields list
-- ({key = ...} or {id = ...}): { id or key, field_value = value }.
function map.custom_field(f, value)
  local item = { field_value = value }
  if f.id ~= nil and f.id ~= "" then
    item.id = f.id
  else
    item.key = f.key
  end
  return item
end

-- GHL's customFields input from a list of { key = "...", from = spec } (or
-- id = "..." instead of key): [{key|id, field_value}], fields without a value
-- left out. GHL takes either id or key; which key form it wants is not
-- confirmed (ref/ghl/NOTES.md section 2), so the list lives in the map file.
-- field_value is string | string[] | object in GHL's schema (NOTES section
-- 3): a number or a boolean (a policy number that arrived as a JSON number)
-- is sent as its text, never as a number that GHL's validation refuses.
function map.custom_fields(list)
  return function(src, ctx)
    local out = {}
    for _, f in ipairs(list) do
      local v = resolve(f.from, src, ctx)
      local t = type(v)
      if t == "number" or t == "boolean" then
        v = util.str(v)
      end
      if v ~= nil and type(v) ~= "table" then
        out[#out + 1] = map.custom_field(f, v)
      end
    end
    return out
  end
end

-- map.apply runs for every record of every event, so a map's lists of plain
-- paths (most of any map: { "email", "eMail" }) are compiled once per map
-- table into a plan: the paths with their steps (util.steps), read without
-- resolve's dispatch on the kind of spec. The plan is checked on every use
-- against the map as it is now (the same spec in the field, the same paths
-- in the list), so code that edits a map, or a list in it, still gets
-- exactly what it wrote; any other spec goes through resolve.
local plans = setmetatable({}, { __mode = "k" })

-- A field's plan entry: for a list of plain paths, its length (n), paths and
-- their steps; false for any other spec, which resolve reads (a field whose
-- spec is later replaced by a list stays with resolve: slower, not wrong).
local function compile(spec)
  if type(spec) ~= "table" or getmetatable(spec) ~= nil then
    return false
  end
  local n = #spec
  if n == 0 then
    return false
  end
  local e = { spec = spec, n = n, steps = {} }
  for i = 1, n do
    local p = spec[i]
    if type(p) ~= "string" then
      return false
    end
    e[i] = p
    e.steps[i] = steps_of(p)
  end
  return e
end

-- A table with room for about n keys. Filled key by key, a table is grown
-- (and rehashed) at 1, 2, 4, 8 and 16 keys; a constructor that names nil
-- fields allocates the room up front without storing any key.
local function sized(n)
  if n <= 4 then
    return {}
  elseif n <= 8 then
    return { _1 = nil, _2 = nil, _3 = nil, _4 = nil, _5 = nil, _6 = nil, _7 = nil, _8 = nil }
  end
  return {
    _1 = nil, _2 = nil, _3 = nil, _4 = nil, _5 = nil, _6 = nil, _7 = nil, _8 = nil,
    _9 = nil, _10 = nil, _11 = nil, _12 = nil, _13 = nil, _14 = nil, _15 = nil, _16 = nil,
  }
end

-- The key under which a plan keeps how many fields its map had last time
-- (a table, so it can never be a field's name).
local FIELDS = {}

function map.apply(m, src, ctx)
  if type(src) ~= "table" then
    src = {}
  end
  local plan = plans[m]
  if plan == nil then
    plan = { [FIELDS] = 0 }
    plans[m] = plan
  end
  local nfields = plan[FIELDS]
  local out, trace = sized(nfields), sized(nfields)
  local count = 0
  for target, spec in pairs(m) do
    count = count + 1
    local e = plan[target]
    if e == nil or (e and (e.spec ~= spec or #spec ~= e.n)) then
      e = compile(spec)
      plan[target] = e
    end
    local v, how
    if e then
      local steps = e.steps
      for i = 1, e.n do
        local p = e[i]
        if spec[i] ~= p then -- the list was edited: compile it again next time
          plan[target] = nil
          v, how = resolve(spec, src, ctx)
          break
        end
        v = pick(src, p, steps[i])
        if v ~= nil then
          how = p
          break
        end
      end
    else
      v, how = resolve(spec, src, ctx)
    end
    if v ~= nil then
      out[target] = v
      trace[target] = how
    end
  end
  plan[FIELDS] = count
  return out, trace
end

return map
