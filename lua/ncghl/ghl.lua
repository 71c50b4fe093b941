-- ncghl.ghl: GoHighLevel (API v2, Version 2021-07-28) helpers over
-- ncghl.call. Every failed call raises ncghl.fail with the upstream's answer
-- in the message, retryable exactly when the core says the failure was
-- (5xx, 429, no answer; never another 4xx). Auth, the Version header, rate
-- limits and retries are the C core's business, not this file's.
local json = require "ncghl.json"
local util = require "ncghl.util"
local map = require "ncghl.map"
local echo = require "ncghl.echo"

local ghl = {}

-- Fields GHL accepts on create but refuses on PUT /contacts/{id} with a 422
-- ("property gender should not exist").
ghl.create_only = { "locationId", "gender", "companyName" }

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

-- request(method, path, body_table [, opts]) -> decoded answer, raw result.
-- opts.not_found = true: a 404 returns nil instead of failing.
function ghl.request(method, path, body, opts)
  local res = ncghl.call("ghl", method, path, body ~= nil and json.encode(body) or nil)
  if not res.ok then
    if opts and opts.not_found and res.status == 404 then
      return nil, res
    end
    ncghl.fail({
      retryable = res.retryable,
      message = ("GHL %s %s failed: %s"):format(method, path, answer_of(res)),
    })
  end
  if res.body == nil or res.body == "" then
    return {}, res
  end
  local ok, decoded = pcall(json.decode, res.body)
  if not ok or type(decoded) ~= "table" then
    ncghl.fail({
      retryable = false,
      message = ("GHL %s %s answered something that is not a JSON object: %s"):format(
        method, path, res.body:sub(1, 200)),
    })
  end
  return decoded, res
end

function ghl.location_id()
  local id = ncghl.config("GHL_LOCATION_ID")
  if util.empty(id) then
    ncghl.fail({ retryable = false, message = "GHL_LOCATION_ID is not configured" })
  end
  return id
end

-- The search filter. GHL's filter grammar is not documented (only observed),
-- so it lives here and nowhere else.
function ghl.search_filters(field, value)
  return { { field = field, operator = "eq", value = value } }
end

-- How a phone is searched: GHL stores numbers in E.164, and this agency's
-- numbers are North American unless they say otherwise.
function ghl.phone_query(phone)
  local s = util.str(phone) or ""
  local d = s:gsub("%D", "")
  if #d == 10 then
    return "+1" .. d
  elseif #d == 11 and d:sub(1, 1) == "1" then
    return "+" .. d
  elseif s:sub(1, 1) == "+" then
    return "+" .. d
  end
  return s
end

local function contact_matches(c, email, phone)
  if type(c) ~= "table" or util.empty(c.id) then
    return false
  end
  if email then
    return util.email(c.email) == email or util.email(c.emailLowerCase) == email
  end
  return phone ~= nil and util.phone10(c.phone) == phone
end

-- search_contact{email=} or search_contact{phone=} -> the contact or nil.
-- Only a contact that really has that email or phone is returned: should the
-- filter not work as observed, a search must find nobody rather than hand
-- back some other person to overwrite.
function ghl.search_contact(q)
  local field, value, email, phone
  if not util.empty(q.email) then
    email = util.email(q.email)
    field, value = "email", email
  elseif not util.empty(q.phone) then
    phone = util.phone10(q.phone)
    field, value = "phone", ghl.phone_query(q.phone)
  else
    return nil
  end
  local body = {
    locationId = ghl.location_id(),
    pageLimit = 10,
    page = 1,
    filters = ghl.search_filters(field, value),
  }
  local found = ghl.request("POST", "/contacts/search", body)
  for _, c in ipairs(type(found.contacts) == "table" and found.contacts or {}) do
    if contact_matches(c, email, phone) then
      return c
    end
  end
  return nil
end

-- The contact, or nil when GHL no longer has it (a stale link).
function ghl.get_contact(id)
  local found = ghl.request("GET", "/contacts/" .. util.pct(id), nil, { not_found = true })
  if not found then
    return nil
  end
  return type(found.contact) == "table" and found.contact or found
end

function ghl.create_contact(body)
  local b = util.without(body)
  if util.empty(b.locationId) then
    b.locationId = ghl.location_id()
  end
  local created = ghl.request("POST", "/contacts/", b)
  return type(created.contact) == "table" and created.contact or created
end

function ghl.update_contact(id, body)
  local updated = ghl.request("PUT", "/contacts/" .. util.pct(id), util.without(body, ghl.create_only))
  return type(updated.contact) == "table" and updated.contact or updated
end

-- A PUT replaces all of a contact's tags: keep theirs and add ours.
function ghl.merge_tags(existing, ours)
  local out, seen = {}, {}
  for _, list in ipairs({ existing or {}, ours or {} }) do
    if type(list) == "table" then
      for _, tag in ipairs(list) do
        local key = type(tag) == "string" and util.trim(tag):lower() or nil
        if key and key ~= "" and not seen[key] then
          seen[key] = true
          out[#out + 1] = tag
        end
      end
    end
  end
  return out
end

local function skipped()
  return {
    action = "skipped",
    reason = "echo of ncghl's own write",
    message = "Skipped: echo of ncghl's own write",
  }
end

-- upsert_contact(src, map, opts): the NowCerts record `src`, mapped with
-- `map`, written to GHL without ever creating a duplicate: by the id link
-- first, then by email, then by phone; updated if found, created if not.
-- opts.nowcerts_id: the insured's NowCerts id (for the link and echoes).
function ghl.upsert_contact(src, m, opts)
  opts = opts or {}
  if type(src) ~= "table" then
    src = {}
  end
  local body, trace = map.apply(m, src, opts)
  local nc_id = util.str(opts.nowcerts_id)
  nc_id = nc_id and nc_id:lower() -- NowCerts ids are GUIDs: case carries no meaning
  local email = util.email(body.email)
  local phone = util.phone10(body.phone)

  -- Two events about the same person (same id, email or phone) run one after
  -- the other from here on, so the second finds what the first created.
  ncghl.lock(nc_id and "contact:nowcerts:" .. nc_id, email and "contact:email:" .. email,
    phone and "contact:phone:" .. phone)

  if nc_id and echo.is_echo("nowcerts", nc_id, src) then
    return skipped()
  end

  local existing, found_by
  if nc_id then
    local linked = ncghl.link_get("contact", "ghl", nc_id)
    if linked then
      existing, found_by = ghl.get_contact(linked), "link"
    end
  end
  if not existing and email then
    existing, found_by = ghl.search_contact({ email = email }), "email"
  end
  if not existing and phone then
    existing, found_by = ghl.search_contact({ phone = body.phone }), "phone"
  end

  local action, id, contact, sent
  if existing then
    if type(body.tags) == "table" then
      body.tags = ghl.merge_tags(existing.tags, body.tags)
    end
    sent = util.without(body, ghl.create_only)
    id = existing.id
    contact = ghl.update_contact(id, sent)
    action = "updated"
  else
    found_by = nil
    sent = body
    contact = ghl.create_contact(body)
    id = contact and contact.id
    action = "created"
    if util.empty(id) then
      ncghl.fail({ retryable = false, message = "GHL created a contact but its answer has no id" })
    end
  end

  if nc_id then
    ncghl.link_put("contact", nc_id, id)
    echo.observe("nowcerts", nc_id, src)
  end
  echo.record("ghl", id, sent, trace)
  return {
    action = action,
    contact_id = id,
    found_by = found_by,
    contact = contact,
    message = ("GHL contact %s %s"):format(id, action),
  }
end

return ghl
