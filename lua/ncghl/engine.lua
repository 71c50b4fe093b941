-- ncghl.engine: the entry point the C runtime calls for every event.
-- run(ev) decodes the payload, lets mappings/normalize.lua turn whatever
-- format arrived into one event (source, type, data), finds the route in
-- mappings/routes.lua and returns what it returns.
--
-- It also prepares the two globals routes.lua is written against: `nowcerts`
-- and `ghl`. Each reads like one table but keeps two apart: the routes for
-- events FROM that side (keys are event types: nowcerts.INSURED_UPDATE,
-- ghl.ContactCreate), which only a route file assigns, and the helpers that
-- write TO that side (ghl.upsert_contact, nowcerts.upsert_insured, ...),
-- made below from the modules that do the work. An event named like a
-- helper can never call one.
local json = require "ncghl.json"

local engine = {}

-- Returned by handle() when no route takes the event. A route may return it
-- too (with a message after it) for an event it looked at and chose to leave.
engine.IGNORED = setmetatable({}, { __name = "ncghl.engine.IGNORED" })

-- Registered before the helpers and routes load, so that they can reach
-- engine.IGNORED with require "ncghl.engine" while this file still runs.
package.loaded["ncghl.engine"] = engine

local util = require "ncghl.util"
local sync = require "ncghl.sync"
local opportunities = require "ncghl.opportunities"
local nowcerts_policies = require "ncghl.nowcerts_policies"
local clients = {
  nowcerts = require "ncghl.nowcerts",
  ghl = require "ncghl.ghl",
}

-- The contact maps (mappings/contacts.lua) with one of them replaced: the
-- helpers below take a single map, as routes written for them pass it.
local function maps_with(which, m, opts)
  if type(m) == "table" and m.insured_to_contact and m.contact_to_insured then
    return m -- the whole contacts module
  end
  local base = (opts and opts.maps) or util.require_optional("contacts") or {}
  local out = {}
  for k, v in pairs(base) do
    out[k] = v
  end
  out[which] = m
  out.insured_id = out.insured_id or { "databaseId", "id", "insuredDatabaseId" }
  out.contact_to_insured = out.contact_to_insured or {}
  out.insured_to_contact = out.insured_to_contact or {}
  return out
end

local function sync_opts(opts, maps)
  local o = {}
  for k, v in pairs(opts or {}) do
    o[k] = v
  end
  o.maps = maps
  return o
end

-- What routes call, by side: the helpers that write TO that side. Each is
-- made here from the modules that do the work; no module adds functions to
-- another's table.
local own = {
  ghl = {
    -- A NowCerts insured, field by field, to its GHL contact (ncghl.sync).
    upsert_contact = function(src, m, opts)
      return sync.contact("nowcerts", src, sync_opts(opts, maps_with("insured_to_contact", m, opts)))
    end,
    upsert_opportunity = opportunities.upsert,
    opportunity_echo = opportunities.echo,
    contact_deleted = sync.contact_deleted,
    -- A NowCerts insured deleted: its contact as contacts.lifecycle says.
    insured_deleted = function(row, maps)
      return sync.insured_deleted(row, { maps = maps_with("insured_to_contact", maps) })
    end,
  },
  nowcerts = {
    -- A GHL contact, field by field, to its NowCerts insured (ncghl.sync).
    upsert_insured = function(src, m, opts)
      return sync.contact("ghl", src, sync_opts(opts, maps_with("contact_to_insured", m, opts)))
    end,
    -- A policy or quote pushed from GHL by a manual sync.
    upsert_policy = nowcerts_policies.upsert,
  },
}

-- A helper is the side's own (above) or its API client's; assigning one
-- that exists replaces it where it lives, so an agency may change a helper
-- or a client setting (ghl.create_only = {...}) from routes.lua.
local helpers = {}
for name, client in pairs(clients) do
  helpers[name] = setmetatable({}, {
    __index = function(_, k)
      local v = own[name][k]
      if v ~= nil then
        return v
      end
      return client[k]
    end,
    __newindex = function(_, k, v)
      if own[name][k] ~= nil then
        own[name][k] = v
      else
        client[k] = v
      end
    end,
  })
end

-- Forgets what the helpers cached in this Lua state (GHL's pipelines). For
-- a test runner: call it before each case if cases share one state, and
-- before a state that ran test cases serves real events, so that no
-- fixture's answer ever stands in for the real API's.
function engine.reset()
  for _, h in pairs(clients) do
    if type(h.reset_cache) == "function" then
      h.reset_cache()
    end
  end
end

local routes = { nowcerts = {}, ghl = {} }

local function side(name)
  return setmetatable({}, {
    __name = name .. " (routes and helpers)",
    __index = function(_, k)
      local r = routes[name][k]
      if r ~= nil then
        return r
      end
      return helpers[name][k]
    end,
    __newindex = function(_, k, v)
      if helpers[name][k] ~= nil then
        helpers[name][k] = v -- an agency may replace a helper or a setting
      else
        routes[name][k] = v
      end
    end,
  })
end

nowcerts = side("nowcerts")
ghl = side("ghl")

local normalize = require "normalize"
if type(normalize) ~= "function" then
  error("normalize.lua must return a function(ev)", 0)
end

local returned = require "routes"
if type(returned) ~= "table" then
  error("routes.lua must return the routes: return { nowcerts = nowcerts, ghl = ghl }", 0)
end
-- A plain table of routes is accepted too: { nowcerts = { INSURED_UPDATE = f } }.
for name, t in pairs(returned) do
  if type(t) == "table" and t ~= nowcerts and t ~= ghl then
    routes[name] = routes[name] or {}
    for k, v in pairs(t) do
      routes[name][k] = v
    end
  end
end
for name, t in pairs(routes) do
  for k, v in pairs(t) do
    if type(v) ~= "function" then
      error(("routes.lua: %s.%s is a %s, not a function"):format(name, tostring(k), type(v)), 0)
    end
  end
end

function engine.route(source, type_)
  local t = routes[source]
  return t and t[type_]
end

-- A GHL webhook from another location (sub-account) is not this agency's:
-- it is answered "ignored" and never reaches NowCerts (SPEC 10).
local function other_location(ev)
  if ev.source ~= "ghl" or type(ev.data) ~= "table" then
    return nil
  end
  local loc = util.str(ev.data.locationId)
  local mine = ncghl.config("GHL_LOCATION_ID")
  if util.empty(loc) or util.empty(mine) or util.trim(loc) == util.trim(mine) then
    return nil
  end
  return loc
end

function engine.handle(ev)
  normalize(ev)
  local loc = other_location(ev)
  if loc then
    ncghl.count_ignored("other_location")
    return engine.IGNORED, ("GHL %s for location %s, not this service's GHL_LOCATION_ID")
      :format(tostring(ev.type), loc)
  end
  local route = engine.route(ev.source, ev.type)
  if not route then
    return engine.IGNORED, ("No route for %s event %s"):format(tostring(ev.source), tostring(ev.type))
  end
  return route(ev)
end

-- Called by C with ev = {id, source, type, run, raw}. Returns the outcome
-- ("done" or "ignored"), the result as JSON, and the message.
function engine.run(ev)
  local ok, payload = pcall(json.decode, ev.raw)
  if not ok then
    ncghl.fail({ retryable = false, message = "the payload is not JSON: " .. tostring(payload) })
  end
  ev.payload = payload
  local result, message = engine.handle(ev)
  if result == engine.IGNORED then
    return "ignored", nil, message
  end
  if result == nil then
    result = {}
  elseif type(result) ~= "table" then
    result = { result = result }
  end
  local msg = type(result.message) == "string" and result.message or "Event processed"
  return "done", json.encode(result), msg
end

return engine
