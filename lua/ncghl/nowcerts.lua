-- ncghl.nowcerts: NowCerts (Momentum AMS) REST helpers over ncghl.call.
-- Tokens, retries and NowCerts' "HTTP 200 with status 0" (which arrives here
-- already as ok=false) are the C core's business. Every failed call raises
-- ncghl.fail with the upstream's answer in the message.
--
-- The rule that matters most: Insured/Insert overwrites any record that
-- merely has the same name, so it is only ever sent WITH the databaseId of a
-- record we found; a new person goes through Insured/OnlyInsertInsured.
local json = require "ncghl.json"
local util = require "ncghl.util"
local map = require "ncghl.map"
local echo = require "ncghl.echo"

local nowcerts = {}

-- On an update these fields keep the value the record already has: a change
-- made in GHL must not turn a customer (Insured) back into a Prospect or
-- reactivate a record the agency closed. The map's constants only apply to
-- records ncghl creates. Set to {} to always send the map's values.
nowcerts.keep_on_update = { "type", "insuredType", "active" }

-- NowCerts reads these enums back as names and wants numbers on write.
nowcerts.enums = {
  type = { Insured = 0, Prospect = 1, ["Underwriter (MGA)"] = 2, ["NAIC (Carrier)"] = 3,
    Finance_Company = 4, Referral_Source = 5, Other = 6 },
  insuredType = { Commercial = 0, Personal = 1, LifeHealth_Group = 2, LifeHealth_Individual = 3,
    Medicare = 4 },
}

local function answer_of(res)
  if res.error and res.error ~= "" then
    return res.error
  end
  local body = res.body or ""
  if #body > 500 then
    body = body:sub(1, 500) .. "..."
  end
  return ("HTTP %s: %s"):format(tostring(res.status), body)
end

-- request(method, path, body_table) -> decoded answer, raw result.
function nowcerts.request(method, path, body)
  local res = ncghl.call("nowcerts", method, path, body ~= nil and json.encode(body) or nil)
  if not res.ok then
    ncghl.fail({
      retryable = res.retryable,
      message = ("NowCerts %s %s failed: %s"):format(method, path, answer_of(res)),
    })
  end
  if res.body == nil or res.body == "" then
    return {}, res
  end
  local ok, decoded = pcall(json.decode, res.body)
  if not ok or type(decoded) ~= "table" then
    ncghl.fail({
      retryable = false,
      message = ("NowCerts %s %s answered something that is not JSON: %s"):format(
        method, path, res.body:sub(1, 200)),
    })
  end
  return decoded, res
end

-- An OData string literal: quotes doubled inside single quotes.
function nowcerts.odata_string(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

local function list(path_and_query)
  local found = nowcerts.request("GET", path_and_query)
  return type(found.value) == "table" and found.value or {}
end

-- The insured with exactly this email (compared without case), or nil.
function nowcerts.find_insured_by_email(email)
  email = util.email(email)
  if not email then
    return nil
  end
  local filter = "eMail eq " .. nowcerts.odata_string(email)
  for _, ins in ipairs(list("/InsuredDetailList?$filter=" .. util.pct(filter) .. "&$top=10&$count=true")) do
    if util.email(ins.eMail) == email then
      return ins
    end
  end
  return nil
end

local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- The insured with this id, or nil. Ids go into the filter unquoted (OData
-- GUID literals), so anything that is not a GUID is refused first.
function nowcerts.get_insured(id)
  id = util.str(id)
  if not id or not id:match(GUID) then
    ncghl.fail({ retryable = false, message = ("not a NowCerts id: %s"):format(tostring(id)) })
  end
  local rows = list("/InsuredDetailList?$filter=" .. util.pct("id eq " .. id:lower()) .. "&$count=true")
  return rows[1]
end

local function skipped()
  return {
    action = "skipped",
    reason = "echo of ncghl's own write",
    message = "Skipped: echo of ncghl's own write",
  }
end

local function keep_existing(body, existing)
  for _, field in ipairs(nowcerts.keep_on_update or {}) do
    local v = existing[field]
    local enum = nowcerts.enums[field]
    if enum and type(v) == "string" then
      v = enum[v]
    end
    if v ~= nil then
      body[field] = v
    end
  end
end

-- upsert_insured(src, map, opts): the GHL contact `src`, mapped with `map`,
-- written to NowCerts: found by the id link, else by email; updated (with
-- its databaseId) if found, created with OnlyInsertInsured if not.
-- opts.ghl_id: the contact's GHL id (for the link and echoes).
function nowcerts.upsert_insured(src, m, opts)
  opts = opts or {}
  if type(src) ~= "table" then
    src = {}
  end
  local body, trace = map.apply(m, src, opts)
  local ghl_id = util.str(opts.ghl_id)
  local email = util.email(body.eMail or body.email)
  local phone = util.phone10(body.phone or body.cellPhone or body.smsPhone)

  ncghl.lock(ghl_id and "contact:ghl:" .. ghl_id, email and "contact:email:" .. email,
    phone and "contact:phone:" .. phone)

  if ghl_id and echo.is_echo("ghl", ghl_id, src) then
    return skipped()
  end

  local existing, found_by
  if ghl_id then
    local linked = ncghl.link_get("contact", "nowcerts", ghl_id)
    if linked then
      existing, found_by = nowcerts.get_insured(linked), "link"
    end
  end
  if not existing and email then
    existing, found_by = nowcerts.find_insured_by_email(email), "email"
  end

  local action, id, sent, answer
  if existing then
    sent = util.without(body)
    sent.databaseId = existing.id or existing.databaseId
    keep_existing(sent, existing)
    answer = nowcerts.request("POST", "/Insured/Insert", sent)
    id = answer.insuredDatabaseId or sent.databaseId
    action = "updated"
  else
    found_by = nil
    sent = body
    answer = nowcerts.request("POST", "/Insured/OnlyInsertInsured", sent)
    id = answer.insuredDatabaseId
    action = "created"
  end
  if util.empty(id) then
    ncghl.fail({ retryable = false, message = "NowCerts answered without an insuredDatabaseId" })
  end
  id = util.str(id):lower()

  if ghl_id then
    ncghl.link_put("contact", id, ghl_id)
    echo.observe("ghl", ghl_id, src)
  end
  echo.record("nowcerts", id, sent, trace)
  return {
    action = action,
    insured_id = id,
    found_by = found_by,
    message = ("NowCerts insured %s %s"):format(id, action),
  }
end

return nowcerts
