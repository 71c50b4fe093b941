local json = require "ncghl.json"

-- Turns every body ncghl accepts into one event: ev.source (the side it is
-- FROM, which picks the route table), ev.type (the route) and ev.data (the
-- record). ev.payload is the decoded body; ev.source and ev.type arrive as
-- stored at intake.

-- NowCerts REST hooks (Zapier/Subscribe deliveries, `ncghl subscribe`)
-- arrive on /api/v1/webhooks/nowcerts?hook=<EventName> and are stored as
-- {"hook": "<EventName>", "data": <the delivered JSON>}. Their payload is NOT
-- confirmed (ref/nowcerts/NOTES.md section 6): it is probably NowCerts'
-- Zapier model, in snake_case. Every delivery's raw body is logged at DEBUG
-- (LOG_LEVEL=DEBUG), so the two tables below can be fixed from real ones.

-- The hook's event name -> the event it stands for. A name not listed here
-- stays "hook:<EventName>" and is answered "ignored".
local HOOK_EVENTS = {
  CreateInsured = "INSURED_INSERT",
  UpdateInsured = "INSURED_UPDATE",
  CreateProspect = "INSURED_INSERT",
  UpdateProspect = "INSURED_UPDATE",
  ConvertProspectToInsured = "INSURED_UPDATE",
  CreatePolicy = "POLICY_INSERT",
  UpdatePolicy = "POLICY_UPDATE",
  CreateQuote = "QUOTE_INSERT",
  UpdateQuote = "QUOTE_UPDATE",
}

-- A delivered field name -> the name contacts.lua and policies.lua read.
-- Other snake_case names are turned into camelCase (line_of_business_name
-- -> lineOfBusinessName) and PascalCase ones get a small first letter
-- (FirstName -> firstName); the delivered names are kept as well.
local HOOK_FIELDS = {
  database_id = "databaseId",
  insured_database_id = "insuredDatabaseId",
  first_name = "firstName",
  middle_name = "middleName",
  last_name = "lastName",
  commercial_name = "commercialName",
  email = "email",
  e_mail = "email",
  phone_number = "phone",
  phone = "phone",
  cell_phone = "cellPhone",
  sms_phone = "smsPhone",
  address_line_1 = "addressLine1",
  address_line_2 = "addressLine2",
  city = "city",
  state = "state",
  zip_code = "zipCode",
  zip = "zipCode",
  number = "number",
  policy_number = "number",
  effective_date = "effectiveDate",
  expiration_date = "expirationDate",
  line_of_business_name = "lineOfBusinessName",
  line_of_business = "lineOfBusinessName",
  carrier_name = "carrierName",
  premium = "premium",
  total_premium = "totalPremium",
  is_quote = "isQuote",
  insured_email = "insuredEmail",
  insured_first_name = "insuredFirstName",
  insured_last_name = "insuredLastName",
  insured_commercial_name = "insuredCommercialName",
}

local function camel(name)
  if name:find("_", 1, true) then
    local out = name:lower():gsub("_(%w)", function(c)
      return c:upper()
    end)
    return out
  end
  return (name:gsub("^%u", string.lower))
end

-- The one record of a delivery: an object, or an array holding one.
local function hook_record(name, d)
  if type(d) == "table" and d[1] ~= nil then
    if #d ~= 1 then
      ncghl.fail({
        retryable = false,
        message = ("NowCerts hook %s delivered %d records in one body; ncghl handles one "
          .. "(adjust hook_record in normalize.lua)"):format(name, #d),
      })
    end
    d = d[1]
  end
  if type(d) ~= "table" or next(d) == nil then
    ncghl.fail({
      retryable = false,
      message = ("NowCerts hook %s delivered no record (an object or a one-element array)"):format(name),
    })
  end
  local out = {}
  for k, v in pairs(d) do
    out[k] = v
  end
  for k, v in pairs(d) do
    if type(k) == "string" then
      local to = HOOK_FIELDS[k:lower()] or camel(k)
      if out[to] == nil then
        out[to] = v
      end
    end
  end
  json.copy_nulls(d, out)
  json.copy_nulls(d, out, function(k)
    return type(k) == "string" and (HOOK_FIELDS[k:lower()] or camel(k)) or nil
  end)
  return out
end

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

-- A shallow copy that keeps the record's story: a field sent as null stays
-- "sent empty" (a clear), not "not sent" (json.copy_nulls).
local function copy(t, skip)
  local out = {}
  for k, v in pairs(t) do
    if not (skip and skip[k]) then
      out[k] = v
    end
  end
  json.copy_nulls(t, out, skip and function(k)
    return not skip[k] and k or nil
  end)
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
  elseif ev.source == "nowcerts" and type(p.hook) == "string" then
    -- A NowCerts REST hook (see HOOK_EVENTS above).
    local raw = ev.raw or ""
    if #raw > 4000 then
      raw = raw:sub(1, 4000) .. "..."
    end
    ncghl.log("debug", ("nowcerts REST hook %s, raw body: %s"):format(p.hook, raw))
    local t = HOOK_EVENTS[p.hook]
    if not t then
      ev.type = "hook:" .. p.hook
      ev.data = type(p.data) == "table" and p.data or {}
      return ev
    end
    ev.type = t
    ev.data = hook_record(p.hook, p.data)
    if ev.data.isQuote == nil and t:find("^QUOTE_") then
      ev.data.isQuote = true
    elseif ev.data.isQuote == nil and t:find("^POLICY_") then
      ev.data.isQuote = false
    end
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
      ev.data = copy(p, ENVELOPE)
    end
  else
    ev.data = p
  end
  return ev
end
