-- ncghl.engine: the entry point the C runtime calls for every event.
-- run(ev) decodes the payload, lets mappings/normalize.lua turn whatever
-- format arrived into one event (source, type, data), finds the route in
-- mappings/routes.lua and returns what it returns.
--
-- It also prepares the two globals routes.lua is written against: `nowcerts`
-- and `ghl`. Each holds the routes for events FROM that side (keys are event
-- types: nowcerts.INSURED_UPDATE, ghl.ContactCreate) and the helpers that
-- write TO that side (ghl.upsert_contact, nowcerts.upsert_insured, ...). Only
-- what a route file assigns is ever run as a route, so an event named like a
-- helper can never call one.
local json = require "ncghl.json"

local engine = {}

-- Returned by handle() when no route takes the event. A route may return it
-- too (with a message after it) for an event it looked at and chose to leave.
engine.IGNORED = setmetatable({}, { __name = "ncghl.engine.IGNORED" })

-- Registered before the helpers and routes load, so that they can reach
-- engine.IGNORED with require "ncghl.engine" while this file still runs.
package.loaded["ncghl.engine"] = engine

local helpers = {
  nowcerts = require "ncghl.nowcerts",
  ghl = require "ncghl.ghl",
}
-- Adds ghl.upsert_opportunity and ghl.opportunity_echo (policies and quotes).
require "ncghl.opportunities"

-- Forgets what the helpers cached in this Lua state (GHL's pipelines). For
-- a test runner: call it before each case if cases share one state, and
-- before a state that ran test cases serves real events, so that no
-- fixture's answer ever stands in for the real API's.
function engine.reset()
  for _, h in pairs(helpers) do
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

function engine.handle(ev)
  normalize(ev)
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
