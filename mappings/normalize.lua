-- Turns every body ncghl accepts into one event: ev.source (the side it is
-- FROM, which picks the route table), ev.type (the route) and ev.data (the
-- record). ev.payload is the decoded body; ev.source and ev.type arrive as
-- stored at intake.

-- GHL's envelope fields, which are not part of the contact.
local ENVELOPE = { type = true, timestamp = true, webhookId = true, appId = true, versionId = true }

-- The source design's GHL event names.
local GHL_EVENTS = {
  ["contact.created"] = "ContactCreate",
  ["contact.updated"] = "ContactUpdate",
  ["contact.deleted"] = "ContactDelete",
}

-- POST /api/v1/sync/manual: source -> direction -> entity_type -> the event
-- it stands for.
local MANUAL = {
  nowcerts = {
    to_ghl = { contact = "INSURED_UPDATE", policy = "POLICY_UPDATE", quote = "QUOTE_UPDATE" },
  },
  ghl = {
    to_nowcerts = { contact = "ContactUpdate", policy = "POLICY_UPDATE", quote = "QUOTE_UPDATE" },
  },
}

local function copy(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return out
end

return function(ev)
  local p = type(ev.payload) == "table" and ev.payload or {}
  ev.intake_source = ev.source

  if ev.source == "manual" then
    local by_dir = MANUAL[p.source] and MANUAL[p.source][p.direction]
    local t = by_dir and by_dir[p.entity_type]
    if not t then
      ncghl.fail({
        retryable = false,
        message = ("manual sync: no %s sync from %s %s"):format(tostring(p.entity_type),
          tostring(p.source), tostring(p.direction)),
      })
    end
    ev.source, ev.type = p.source, t
    ev.data = type(p.data) == "table" and p.data or {}
  elseif type(p.event_type) == "string" and type(p.data) == "table" then
    -- Ours (relayed by Zapier, Make, n8n or the poller): {event_type, timestamp, data}.
    ev.type, ev.data = p.event_type, p.data
  elseif type(p.event) == "string" then
    -- The source design: {"event":"contact.created","contact":{...},"locationId":...}.
    ev.type = GHL_EVENTS[p.event] or p.event
    ev.data = type(p.contact) == "table" and copy(p.contact) or {}
    if ev.data.locationId == nil then
      ev.data.locationId = p.locationId
    end
  elseif type(p.type) == "string" then
    -- GHL's own: flat {"type":"ContactCreate","id":...,...}, or the fields
    -- nested under "data" as in GHL's test sample.
    ev.type = p.type
    if type(p.data) == "table" then
      ev.data = p.data
    else
      local d = {}
      for k, v in pairs(p) do
        if not ENVELOPE[k] then
          d[k] = v
        end
      end
      ev.data = d
    end
  else
    ev.data = p
  end
  return ev
end
