-- ncghl.doctor: the checks of `ncghl doctor` (SPEC section 12) that need the
-- mappings: which pipelines, stages and custom fields they name, resolved
-- against what the GHL location really has (with a did-you-mean), and which
-- route each webhook type takes. The C side (src/doctor.c) fetches GHL's
-- lists and prints; each function here returns a list of
-- { ok = bool, text = "...", fix = "..." } lines. Nothing here calls out.
local custom_fields = require "ncghl.custom_fields"
local json = require "ncghl.json"
local suggest = require "ncghl.suggest"
local util = require "ncghl.util"

local doctor = {}

local function line(ok, text, fix)
  return { ok = ok, text = text, fix = fix }
end

local function norm(s)
  return util.trim(tostring(s or "")):lower()
end

local function decode(text, what)
  local ok, v = pcall(json.decode, text)
  if not ok or type(v) ~= "table" then
    return nil, ("GHL's %s answer is not JSON"):format(what)
  end
  return v
end

local function find_named(list, name)
  for _, item in ipairs(list or {}) do
    if type(item) == "table" and norm(item.name) == norm(name) then
      return item
    end
  end
end

local function names_of(list)
  local out = {}
  for _, item in ipairs(list or {}) do
    if type(item) == "table" and type(item.name) == "string" then
      out[#out + 1] = item.name
    end
  end
  return out
end

-- The names pipelines.lua uses, when it has no choices(): the rules'
-- pipelines and the quote and policy stages, each pipeline with each stage.
local function choices_of_today(p)
  local out = {}
  for _, rule in ipairs(p.by_line or {}) do
    for _, kind in ipairs({ "quote", "policy" }) do
      out[#out + 1] = {
        line = rule.words and rule.words[1] or "every other line",
        kind = kind,
        pipeline = rule.pipeline,
        stage = p.stage and p.stage[kind],
        how = "explicit",
      }
    end
  end
  return out
end

-- body: the text of GET /opportunities/pipelines. One line per distinct
-- pipeline and stage the mappings would use.
function doctor.pipelines(body)
  local p = util.require_optional "pipelines"
  if not p then
    return { line(true, "pipelines: no pipelines.lua, so policies and quotes make no opportunities") }
  end
  local answer, err = decode(body, "pipelines")
  if not answer then
    return { line(false, err, "check GHL_BASE_URL") }
  end
  local have = answer.pipelines or {}
  local choices
  if type(p.choices) == "function" then
    choices = p.choices(have)
  else
    choices = choices_of_today(p)
  end
  local out, seen = {}, {}
  local have_names = names_of(have)
  for _, c in ipairs(choices or {}) do
    local pl = c.pipeline and find_named(have, c.pipeline)
    local key = norm(c.pipeline) .. "\0" .. norm(c.stage)
    if seen[key] then
      goto continue
    end
    seen[key] = true
    if not c.pipeline then
      out[#out + 1] = line(false,
        ("pipeline for %s (%s): none matches in this location"):format(tostring(c.line), c.kind),
        "name a pipeline for it in pipelines.lua, or create one in GHL (Opportunities > Pipelines)")
    elseif not pl then
      out[#out + 1] = line(false,
        ("pipeline %q (%s, %s) is not in this location%s"):format(c.pipeline, tostring(c.line), c.kind,
          suggest.hint(c.pipeline, have_names)),
        "correct the name in pipelines.lua, or create the pipeline in GHL (Opportunities > Pipelines)")
    else
      local st = c.stage and find_named(pl.stages, c.stage)
      if not st then
        out[#out + 1] = line(false,
          ("stage %q of pipeline %q (%s) is not in GHL%s"):format(tostring(c.stage), pl.name, c.kind,
            c.stage and suggest.hint(c.stage, names_of(pl.stages)) or ""),
          "correct pipelines.stage in pipelines.lua, or add the stage to the pipeline in GHL")
      else
        out[#out + 1] = line(true, ("pipeline %q -> %s, stage %q -> %s (%s%s)"):format(pl.name,
          tostring(pl.id), st.name, tostring(st.id), c.kind == "quote" and "quotes" or "policies",
          c.how and c.how ~= "explicit" and (", " .. c.how) or ""))
      end
    end
    ::continue::
  end
  if #out == 0 then
    out[1] = line(true, "pipelines: the mappings name none")
  end
  return out
end

-- The custom fields the mappings name: every list in a mapping module whose
-- items are { key = ... } or { id = ... } with a `from` (the form
-- map.custom_fields takes). Sorted, so the lines come in a stable order.
local function named_custom_fields()
  local out, modules = {}, {}
  for name, mod in pairs(package.loaded) do
    if type(name) == "string" and type(mod) == "table" and not name:find("^ncghl%.")
        and name ~= "_G" and _G[name] ~= mod and name ~= "cjson" then
      modules[#modules + 1] = name
    end
  end
  -- An agency's own name first: "policies" before the "defaults.policies"
  -- it overlays.
  table.sort(modules, function(a, b)
    local da, db = a:find("^defaults%.") ~= nil, b:find("^defaults%.") ~= nil
    if da ~= db then
      return db
    end
    return a < b
  end)
  local seen = {} -- an overlay's module and its defaults.X may be one table
  for _, name in ipairs(modules) do
    local mod = package.loaded[name]
    local fields = {}
    for k in pairs(mod) do
      if type(k) == "string" then
        fields[#fields + 1] = k
      end
    end
    table.sort(fields)
    for _, k in ipairs(fields) do
      local list = mod[k]
      if type(list) == "table" and #list > 0 and not seen[list] then
        seen[list] = true
        for _, item in ipairs(list) do
          if type(item) == "table" and item.from ~= nil
              and (type(item.key) == "string" or type(item.id) == "string") then
            out[#out + 1] = { where = name .. "." .. k, key = item.key, id = item.id }
          end
        end
      end
    end
  end
  return out
end

-- A did-you-mean for a custom field key: the same key in the other form
-- ("x" for "opportunity.x" and back) first, else the closest.
local function key_hint(key, keys)
  for _, k in ipairs(keys) do
    if k:match("^[^.]+%.(.+)$") == key or key:match("^[^.]+%.(.+)$") == k then
      return (" (did you mean %q?)"):format(k)
    end
  end
  return suggest.hint(key, keys)
end

-- body: the text of GET /locations/{id}/customFields?model=all.
function doctor.custom_fields(body)
  local named = named_custom_fields()
  if #named == 0 then
    return { line(true, "custom fields: the mappings name none") }
  end
  local answer, err = decode(body, "custom fields")
  if not answer then
    return { line(false, err, "check GHL_BASE_URL") }
  end
  local have = answer.customFields or {}
  local keys = custom_fields.keys(have)
  local out = {}
  for _, n in ipairs(named) do
    local hit
    if n.id then
      for _, f in ipairs(have) do
        if f.id == n.id then
          hit = f
          break
        end
      end
    else
      hit = custom_fields.find(have, n.key)
    end
    local label = n.id and ("id " .. n.id) or ("%q"):format(n.key)
    if hit then
      out[#out + 1] = line(true, ("custom field %s (%s) -> id %s, %s %q"):format(label, n.where,
        tostring(hit.id), tostring(hit.fieldKey), tostring(hit.name)))
    else
      out[#out + 1] = line(false,
        ("custom field %s (%s) is not in this location%s"):format(label, n.where,
          n.key and key_hint(n.key, keys) or ""),
        ("create it in GHL (Settings > Custom Fields) or correct the key in the map (keys are "
          .. "matched as ncghl.custom_fields.key_form = %q says)"):format(custom_fields.key_form))
    end
  end
  return out
end

-- The fields the maps write, against the lists of what each upstream
-- accepts (ncghl.lint).
function doctor.lint()
  local findings = require("ncghl.lint").targets()
  if #findings == 0 then
    return { line(true, "map targets: every field the maps write is one its upstream accepts") }
  end
  local out = {}
  for _, f in ipairs(findings) do
    out[#out + 1] = line(false, f.message, ("correct the field name in %s.lua"):format(f.module))
  end
  return out
end

-- The webhook types ncghl is expected to handle (SPEC section 5) and the
-- GHL ones worth knowing about; a missing route for an expected one is a ✗.
doctor.expected = {
  nowcerts = { "INSURED_INSERT", "INSURED_UPDATE", "POLICY_INSERT", "POLICY_UPDATE", "QUOTE_INSERT",
    "QUOTE_UPDATE" },
  ghl = { "ContactCreate", "ContactUpdate" },
}
doctor.optional = {
  ghl = { "ContactDelete", "OpportunityCreate", "OpportunityUpdate", "OpportunityStatusUpdate",
    "OpportunityStageUpdate" },
}

function doctor.routes()
  local engine = require "ncghl.engine"
  local out = {}
  for _, source in ipairs({ "nowcerts", "ghl" }) do
    local routed, ignored, missing = {}, {}, {}
    for _, t in ipairs(doctor.expected[source] or {}) do
      if engine.route(source, t) then
        routed[#routed + 1] = t
      else
        missing[#missing + 1] = t
      end
    end
    for _, t in ipairs(doctor.optional[source] or {}) do
      if engine.route(source, t) then
        routed[#routed + 1] = t
      else
        ignored[#ignored + 1] = t
      end
    end
    local text = ("%s webhooks routed: %s"):format(source, #routed > 0 and table.concat(routed, ", ") or "none")
    if #ignored > 0 then
      text = text .. "; answered \"ignored\": " .. table.concat(ignored, ", ")
    end
    out[#out + 1] = line(true, text)
    for _, t in ipairs(missing) do
      out[#out + 1] = line(false, ("%s %s has no route (it would be answered \"ignored\")"):format(source, t),
        ("add %s.%s to routes.lua"):format(source, t))
    end
  end
  return out
end

return doctor
