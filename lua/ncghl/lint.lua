-- ncghl.lint: checks an agency's field maps before an upstream does.
--   targets(): every field a map writes must be one the upstream accepts
--     (lists in ncghl/fields/, generated from the reference APIs by
--     scripts/gen-fields.py), with a did-you-mean. GHL answers an unknown
--     field with 422; NowCerts drops it silently.
--   sources(bodies): every source path a map reads should exist in at least
--     one test case body; one that matches nothing is most likely a typo
--     ("eMial") that would quietly never fill its field.
-- Both return findings { module, map, field, path, message }; the runner
-- (`ncghl check`) prints them with file and line, doctor shows targets().
local suggest = require "ncghl.suggest"
local util = require "ncghl.util"
local mapmod = require "ncghl.map"

local lint = {}

-- Which map writes what. An agency with maps of its own adds a line here
-- (from a mapping file: require "ncghl.lint".maps[#...+1] = {...}).
lint.maps = {
  { module = "contacts", map = "insured_to_contact", fields = "ghl_contact", what = "a GHL contact" },
  { module = "contacts", map = "contact_to_insured", fields = "nowcerts_insured", what = "a NowCerts insured" },
  { module = "policies", map = "opportunity", fields = "ghl_opportunity", what = "a GHL opportunity" },
}

local sorted_keys = util.sorted_keys

-- Each configured map that exists: { entry, table }.
local function each_map()
  local out = {}
  for _, e in ipairs(lint.maps) do
    local mod = util.require_optional(e.module)
    local m = type(mod) == "table" and mod[e.map]
    if type(m) == "table" then
      out[#out + 1] = { e, m }
    end
  end
  return out
end

function lint.targets()
  local findings = {}
  for _, em in ipairs(each_map()) do
    local e, m = em[1], em[2]
    local ok, list = pcall(require, "ncghl.fields." .. e.fields)
    if ok and type(list) == "table" then
      local set = {}
      for _, f in ipairs(list) do
        set[f] = true
      end
      for _, target in ipairs(sorted_keys(m)) do
        if not set[target] then
          findings[#findings + 1] = {
            module = e.module, map = e.map, field = target,
            message = ("%s.%s: %q is not a field of %s%s"):format(e.module, e.map, target, e.what,
              suggest.hint(target, list)),
          }
        end
      end
    end
  end
  return findings
end

-- The source paths of one spec: a path, or a list of specs; constants and
-- functions read nothing a lint can see.
local function paths_of(spec, out)
  if type(spec) == "string" then
    out[#out + 1] = spec
  elseif type(spec) == "table" and getmetatable(spec) == nil then
    for _, s in ipairs(spec) do
      paths_of(s, out)
    end
  end
  return out
end

-- Whether some table anywhere in v has the path (all its steps).
local function found_in(v, steps, seen)
  if type(v) ~= "table" or seen[v] then
    return false
  end
  seen[v] = true
  local node = v
  for i = 1, #steps do
    if type(node) ~= "table" then
      node = nil
      break
    end
    node = node[steps[i]]
  end
  if node ~= nil then
    return true
  end
  for _, child in pairs(v) do
    if found_in(child, steps, seen) then
      return true
    end
  end
  return false
end

-- bodies: the decoded bodies of the test cases. No cases, no findings.
function lint.sources(bodies)
  local findings = {}
  if type(bodies) ~= "table" or #bodies == 0 then
    return findings
  end
  for _, em in ipairs(each_map()) do
    local e, m = em[1], em[2]
    for _, target in ipairs(sorted_keys(m)) do
      local spec = m[target]
      if not mapmod.is_const(spec) then
        for _, path in ipairs(paths_of(spec, {})) do
          local steps = {}
          for s in path:gmatch("[^.]+") do
            steps[#steps + 1] = s
          end
          local hit = false
          for _, b in ipairs(bodies) do
            if found_in(b, steps, {}) then
              hit = true
              break
            end
          end
          if not hit then
            findings[#findings + 1] = {
              module = e.module, map = e.map, field = target, path = path,
              message = ("%s.%s.%s: source path %q matches nothing in any test case body"):format(
                e.module, e.map, target, path),
            }
          end
        end
      end
    end
  end
  return findings
end

return lint
