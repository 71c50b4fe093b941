-- ncghl.ghl: GoHighLevel (API v2, Version 2021-07-28) helpers over
-- ncghl.call. Every failed call raises ncghl.fail with the upstream's answer
-- in the message, retryable exactly when the core says the failure was
-- (5xx, 429, no answer; never another 4xx). Auth, the Version header, rate
-- limits and retries are the C core's business, not this file's.
local json = require "ncghl.json"
local util = require "ncghl.util"
local fields = require "ncghl.fields"
local custom_fields = require "ncghl.custom_fields"

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

-- call(method, path, body_table) -> the raw result, failed or not: for the
-- callers that handle some failures themselves (see ncghl.opportunities).
function ghl.call(method, path, body, opts)
  return ncghl.call("ghl", method, path, body ~= nil and json.encode(body) or nil, opts)
end

-- The decoded answer of a result from ghl.call; a failed call raises
-- ncghl.fail with the upstream's answer.
function ghl.check(method, path, res)
  if not res.ok then
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
    -- A page that is no answer (a proxy's, a maintenance notice) passes;
    -- the event waits for an answer rather than dying on it.
    ncghl.fail({
      retryable = true,
      message = ("GHL %s %s answered something that is not a JSON object: %s"):format(
        method, path, res.body:sub(1, 200)),
    })
  end
  return decoded, res
end

-- The list a search answers (found[key]). An answer without it (an error
-- body with status 200, `[]`, null) is a failed call, never "nobody": a
-- create would then duplicate the person. Retryable, as a passing fault is.
local function list_in(found, key, method, path, res)
  local l = type(found) == "table" and found[key]
  if not util.records_list(l, type(found) == "table" and found.total) then
    ncghl.fail({
      retryable = true,
      message = ("GHL %s %s answered without a %q list of records that agrees with its total, "
        .. "so who it found is unknown: %s"):format(method, path, key, answer_of(res)),
    })
  end
  return l
end

-- request(method, path, body_table [, opts]) -> decoded answer, raw result.
-- opts.not_found = true: a 404 returns nil instead of failing.
function ghl.request(method, path, body, opts)
  local res = ghl.call(method, path, body)
  if not res.ok and opts and opts.not_found and res.status == 404 then
    return nil, res
  end
  return ghl.check(method, path, res), res
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

-- The default country of phone numbers written without one (GHL stores and
-- searches E.164): DEFAULT_COUNTRY, else US.
function ghl.country()
  local c = ncghl.config("DEFAULT_COUNTRY")
  return util.empty(c) and "US" or c
end

-- A phone as GHL wants it written and searched: E.164.
function ghl.phone(phone)
  return fields.e164(phone, ghl.country())
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
    field, value = "phone", ghl.phone(q.phone)
  else
    return nil
  end
  local body = {
    locationId = ghl.location_id(),
    pageLimit = 10,
    page = 1,
    filters = ghl.search_filters(field, value),
  }
  local found, res = ghl.request("POST", "/contacts/search", body)
  for _, c in ipairs(list_in(found, "contacts", "POST", "/contacts/search", res)) do
    if contact_matches(c, email, phone) then
      return c
    end
  end
  return nil
end

-- The contacts named exactly first + last (compared trimmed, without case).
-- For records that name a person no other way (a policy's insured): the
-- caller decides what more than one means.
function ghl.search_contacts_by_name(first, last)
  local f, l = util.trim(util.str(first) or ""):lower(), util.trim(util.str(last) or ""):lower()
  if f == "" or l == "" then
    return {}
  end
  local filters = ghl.search_filters("firstName", util.trim(util.str(first)))
  for _, flt in ipairs(ghl.search_filters("lastName", util.trim(util.str(last)))) do
    filters[#filters + 1] = flt
  end
  local found, res = ghl.request("POST", "/contacts/search", {
    locationId = ghl.location_id(),
    pageLimit = 10,
    page = 1,
    filters = filters,
  })
  local out = {}
  for _, c in ipairs(list_in(found, "contacts", "POST", "/contacts/search", res)) do
    if type(c) == "table" and not util.empty(c.id)
        and util.trim(util.str(c.firstName) or ""):lower() == f
        and util.trim(util.str(c.lastName) or ""):lower() == l then
      out[#out + 1] = c
    end
  end
  return out
end

-- GHL answers an id it does not know (deleted, merged away, another
-- location's) with 404, or with 400 "Contact not found" (both seen).
local function gone(res)
  if res.ok or res.retryable then
    return false
  end
  if res.status == 404 then
    return true
  end
  return (res.status == 400 or res.status == 422)
    and (res.body or ""):lower():find("not found", 1, true) ~= nil
end

-- The contact as GHL has it now, or nil when GHL no longer has it.
-- for_write: a write of it follows; the read waits until the rate limit has
-- room for both (see ncghl.call's then_write), so it is read right before
-- the write, not before a wait for the limit.
function ghl.get_contact(id, for_write)
  local path = "/contacts/" .. util.pct(id)
  local res = ghl.call("GET", path, nil, for_write and { then_write = true } or nil)
  if gone(res) then
    return nil
  end
  local found = ghl.check("GET", path, res)
  return type(found.contact) == "table" and found.contact or found
end

-- Custom fields ----------------------------------------------------------

-- GHL's custom fields per location, as last read; like the pipelines, one
-- GET serves every event until a key is missing: then they are read again,
-- but at most once a minute, so a key the location lacks (which doctor
-- names) does not cost every event a GET.
local fields_cache = {}
local fields_read_at = {}
local FIELDS_REREAD_S = 60

-- The location's custom fields [{id, fieldKey, model, ...}] and whether they
-- were just read. A location GHL will not list (a token without the
-- locations/customFields.readonly scope: 401/403, or 404) gives an empty
-- list, kept, so keys go out as mapped and doctor names the missing scope;
-- an answer that may come later (5xx, 429, none) fails the event for a retry.
function ghl.custom_field_list(refresh)
  local loc = ghl.location_id()
  local cached = fields_cache[loc]
  if cached and not refresh then
    return cached, false
  end
  local path = "/locations/" .. util.pct(loc) .. "/customFields?model=all"
  local res = ghl.call("GET", path)
  local list = {}
  if res.ok or res.retryable then
    local found = ghl.check("GET", path, res)
    list = type(found.customFields) == "table" and found.customFields or {}
  end
  fields_cache[loc] = list
  fields_read_at[loc] = os.time()
  return list, true
end

local function field_of(list, key, model)
  local of_model = {}
  for _, f in ipairs(list) do
    if type(f) == "table" and (f.model == nil or f.model == model) and not util.empty(f.id) then
      of_model[#of_model + 1] = f
    end
  end
  return custom_fields.find(of_model, key)
end

-- with_field_ids(body, model) -> body, or a copy whose customFields items
-- named by key carry GHL's field id instead: the notes say prefer id, and
-- which key form GHL's write API takes is not confirmed. Which keys match
-- a field is ncghl.custom_fields.key_form; a key GHL does not list goes out
-- as mapped (`ncghl doctor` names it).
function ghl.with_field_ids(body, model)
  local items = type(body) == "table" and body.customFields
  if type(items) ~= "table" then
    return body
  end
  local keyed = false
  for _, it in ipairs(items) do
    if type(it) == "table" and util.empty(it.id) and not util.empty(it.key) then
      keyed = true
      break
    end
  end
  if not keyed then
    return body
  end
  local list, fresh = ghl.custom_field_list(false)
  local function resolve(l)
    local out, missing = {}, false
    for i, it in ipairs(items) do
      local f = type(it) == "table" and util.empty(it.id) and not util.empty(it.key)
        and field_of(l, it.key, model)
      if f then
        local item = util.without(it, { "key" })
        item.id = util.str(f.id)
        out[i] = item
      else
        missing = missing or (type(it) == "table" and util.empty(it.id))
        out[i] = it
      end
    end
    return out, missing
  end
  local out, missing = resolve(list)
  local read_at = fields_read_at[ghl.location_id()] or 0
  if missing and not fresh and os.time() - read_at >= FIELDS_REREAD_S then
    out = resolve((ghl.custom_field_list(true)))
  end
  local b = util.without(body)
  b.customFields = out
  return b
end

-- A body as GHL takes it: phones in E.164, custom fields by id.
local function outgoing(body)
  local b = ghl.with_field_ids(util.without(body), "contact")
  if b.phone ~= nil and b.phone ~= "" then
    b.phone = ghl.phone(b.phone) or b.phone
  end
  return b
end

-- POST /contacts/, sent once: a create whose answer is lost is not sent
-- again blindly (the sync searches first).
function ghl.create_contact(body)
  local b = outgoing(body)
  if util.empty(b.locationId) then
    b.locationId = ghl.location_id()
  end
  local res = ncghl.call("ghl", "POST", "/contacts/", json.encode(b), { once = true })
  local created = ghl.check("POST", "/contacts/", res)
  return type(created.contact) == "table" and created.contact or created
end

-- PUT /contacts/{id} with only the given fields (never the create-only
-- ones). nil when the contact is gone.
function ghl.update_contact(id, body)
  local path = "/contacts/" .. util.pct(id)
  local res = ghl.call("PUT", path, util.without(outgoing(body), ghl.create_only))
  if gone(res) then
    return nil
  end
  local updated = ghl.check("PUT", path, res)
  -- GHL answers a done update with {"succeded":true,"contact":{...}}; a 200
  -- that says neither (an error body behind a 200) has not been seen to
  -- change anything, and the change must not be taken for delivered. A PUT
  -- sends the same values again: retryable.
  if updated.succeded ~= true and type(updated.contact) ~= "table" then
    ncghl.fail({
      retryable = true,
      message = ("GHL PUT %s answered without saying the update succeeded: %s"):format(path, answer_of(res)),
    })
  end
  return type(updated.contact) == "table" and updated.contact or updated
end

-- DELETE /contacts/{id}; true when it is gone (already gone included).
function ghl.delete_contact(id)
  local path = "/contacts/" .. util.pct(id)
  local res = ghl.call("DELETE", path)
  if gone(res) then
    return true
  end
  ghl.check("DELETE", path, res)
  return true
end

-- Tags through GHL's own endpoints: a PUT of `tags` would replace all of
-- them, and a tag someone added meanwhile would be lost.
-- Each returns false, changing nothing, when the contact is gone.
local function tags_call(method, id, tags)
  if #tags == 0 then
    return true
  end
  local path = "/contacts/" .. util.pct(id) .. "/tags"
  local res = ghl.call(method, path, { tags = tags })
  if gone(res) then
    return false
  end
  ghl.check(method, path, res)
  return true
end

function ghl.add_tags(id, tags)
  return tags_call("POST", id, tags)
end

function ghl.remove_tags(id, tags)
  return tags_call("DELETE", id, tags)
end

-- Opportunities and pipelines -------------------------------------------

-- The fields UpdateOpportunityDto declares. Anything else on a PUT
-- /opportunities/{id} (contactId, locationId) is answered 422.
ghl.opportunity_update_fields = { "pipelineId", "name", "pipelineStageId", "status", "monetaryValue",
  "assignedTo", "customFields" }

-- GHL's pipelines per location, as last read. Kept in the Lua state, so one
-- GET serves every event until a name is missing (then read again, once) or
-- the state is replaced by a reload. engine.reset() empties it.
local pipelines_cache = {}

function ghl.reset_cache()
  pipelines_cache = {}
  fields_cache = {}
  fields_read_at = {}
end

-- The location's pipelines [{id, name, stages = [{id, name}]}] and whether
-- they were just read. refresh = true reads them again.
function ghl.pipelines(refresh)
  local loc = ghl.location_id()
  local cached = pipelines_cache[loc]
  if cached and not refresh then
    return cached, false
  end
  local found = ghl.request("GET", "/opportunities/pipelines?locationId=" .. util.pct(loc))
  local list = type(found.pipelines) == "table" and found.pipelines or {}
  pipelines_cache[loc] = list
  return list, true
end

local fold = util.fold

-- Names are compared trimmed and without case. The stage item's shape is
-- not confirmed (ref/ghl/NOTES.md section 3): items without an id and a
-- name are passed over.
local function named(list, name)
  for _, item in ipairs(type(list) == "table" and list or {}) do
    if type(item) == "table" and fold(item.name) == name and not util.empty(item.id) then
      return item
    end
  end
  return nil
end

local names_of = util.names_of

-- resolve_pipeline("Personal Lines", "Bound") -> pipeline id, stage id (nil
-- when no stage is asked for: GHL then uses the pipeline's first stage).
-- A name that is still missing after reading the pipelines again fails the
-- event for good, naming what GHL has. opts.known_only = true: only the
-- pipelines already read are searched, and a missing name gives nil.
function ghl.resolve_pipeline(pipeline_name, stage_name, opts)
  local known_only = opts and opts.known_only
  local want_p = fold(pipeline_name)
  local want_s = stage_name ~= nil and fold(stage_name) or ""
  if want_p == "" and known_only then
    return nil, nil
  elseif want_p == "" then
    ncghl.fail({ retryable = false, message = "no pipeline was chosen for this record (pipelines.lua)" })
  end
  local function lookup(list)
    local p = named(list, want_p)
    if not p or want_s == "" then
      return p, nil
    end
    return p, named(p.stages, want_s)
  end
  if known_only then
    local p, s = lookup(pipelines_cache[ghl.location_id()])
    return p and util.str(p.id), s and util.str(s.id) or nil
  end
  local list, fresh = ghl.pipelines(false)
  local p, s = lookup(list)
  if (not p or (want_s ~= "" and not s)) and not fresh then
    list = ghl.pipelines(true)
    p, s = lookup(list)
  end
  if not p then
    ncghl.fail({
      retryable = false,
      message = ('GHL has no pipeline named "%s" (it has: %s); change pipelines.lua or add it in GHL')
        :format(util.str(pipeline_name), names_of(list)),
    })
  end
  if want_s ~= "" and not s then
    ncghl.fail({
      retryable = false,
      message = ('GHL pipeline "%s" has no stage named "%s" (it has: %s); change pipelines.lua or add it in GHL')
        :format(util.str(p.name), util.str(stage_name), names_of(p.stages)),
    })
  end
  return util.str(p.id), s and util.str(s.id) or nil
end

-- The contact's opportunities whose name contains `q` (GET search; its
-- parameters are snake_case). An answer that is not found is an empty list.
function ghl.search_opportunities(contact_id, q)
  local path = ("/opportunities/search?location_id=%s&contact_id=%s&q=%s&limit=20"):format(
    util.pct(ghl.location_id()), util.pct(contact_id), util.pct(q))
  local found, res = ghl.request("GET", path, nil, { not_found = true })
  return found and list_in(found, "opportunities", "GET", "/opportunities/search", res) or {}
end

return ghl
