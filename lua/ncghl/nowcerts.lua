-- ncghl.nowcerts: NowCerts (Momentum AMS) REST helpers over ncghl.call.
-- Tokens, retries and NowCerts' "HTTP 200 with status 0" (which arrives here
-- already as ok=false) are the C core's business. Every failed call raises
-- ncghl.fail with the upstream's answer in the message.
--
-- The rules that matter most: Insured/Insert overwrites any record that
-- merely has the same name, so it is only ever sent WITH the databaseId of a
-- record we found, and a new person goes through Insured/OnlyInsertInsured;
-- and Insert with a databaseId REPLACES the record, so an update is the
-- current record, read right before, with the changes applied.
local json = require "ncghl.json"
local util = require "ncghl.util"

local nowcerts = {}

-- NowCerts reads these enums back as names and wants numbers on write
-- (ref/nowcerts/enums.json). A name not listed fails the write, naming the
-- field and the names it accepts: it never silently becomes another value.
nowcerts.enums = {
  type = { Insured = 0, Prospect = 1, ["Underwriter (MGA)"] = 2, ["NAIC (Carrier)"] = 3,
    Finance_Company = 4, Referral_Source = 5, Other = 6 },
  insuredType = { Commercial = 0, Personal = 1, LifeHealth_Group = 2, LifeHealth_Individual = 3,
    Medicare = 4 },
  prospectType = { ["Hot Prospect"] = 0, Prospect = 1, Cold_Prospect = 2 },
}

-- What InsuredDetailList reads that Insured/Insert writes back under the
-- same name (ref/nowcerts/NOTES.md section 4): an update sends all of them,
-- as they are now, so that none is blanked. Fields the lists do not read
-- (agents, CSRs, custom fields, lead sources) cannot be carried this way;
-- see docs/decisions.md.
nowcerts.insured_fields = {
  "commercialName", "firstName", "middleName", "lastName", "dateOfBirth", "type", "dba",
  "addressLine1", "addressLine2", "state", "city", "zipCode", "eMail", "eMail2", "eMail3", "fax",
  "phone", "cellPhone", "smsPhone", "description", "active", "website", "fein", "customerId",
  "insuredId", "referralSourceCompanyName", "coInsured_FirstName", "coInsured_MiddleName",
  "coInsured_LastName", "coInsured_DateOfBirth", "insuredType", "prospectType", "acquisitionDate",
}

-- The fields e-mails and phones are searched in.
nowcerts.email_fields = { "eMail", "eMail2", "eMail3" }
nowcerts.phone_fields = { "phone", "cellPhone", "smsPhone" }

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

-- The decoded answer of a result from ncghl.call; a failed call raises
-- ncghl.fail with the upstream's answer.
function nowcerts.check(method, path, res)
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
    -- A page that is no answer (a proxy's, a maintenance notice) passes;
    -- the event waits for an answer rather than dying on it.
    ncghl.fail({
      retryable = true,
      message = ("NowCerts %s %s answered something that is not JSON: %s"):format(
        method, path, res.body:sub(1, 200)),
    })
  end
  return decoded, res
end

-- request(method, path, body_table [, opts]) -> decoded answer, raw result.
-- opts.once: a create (see ncghl.call).
function nowcerts.request(method, path, body, opts)
  local res = ncghl.call("nowcerts", method, path, body ~= nil and json.encode(body) or nil, opts)
  return nowcerts.check(method, path, res)
end

-- An OData string literal: quotes doubled inside single quotes.
function nowcerts.odata_string(s)
  return "'" .. tostring(s):gsub("'", "''") .. "'"
end

-- An OData list's rows. An answer without `value` (an error body with
-- status 200, `[]`, null) is a failed call, never "no rows": a search
-- taken for "nobody" would create the insured twice. Retryable, as a
-- passing fault is.
local function list(path_and_query)
  local found, res = nowcerts.request("GET", path_and_query)
  if not util.records_list(found.value, found["@odata.count"]) then
    ncghl.fail({
      retryable = true,
      message = ("NowCerts GET %s answered without a \"value\" list of records that agrees with "
        .. "its count, so what it holds is unknown: %s"):format(
        path_and_query:match("^[^?]*"), answer_of(res)),
    })
  end
  return found.value
end

local GUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

function nowcerts.is_id(id)
  id = util.str(id)
  return id ~= nil and id:match(GUID) ~= nil
end

-- The insured with this id as NowCerts has it now, or nil. Ids go into the
-- filter unquoted (OData GUID literals), so anything that is not a GUID is
-- refused first.
function nowcerts.get_insured(id)
  id = util.str(id)
  if not id or not id:match(GUID) then
    ncghl.fail({ retryable = false, message = ("not a NowCerts id: %s"):format(tostring(id)) })
  end
  local rows = list("/InsuredDetailList?$filter=" .. util.pct("id eq " .. id:lower()) .. "&$count=true")
  return rows[1]
end

local function any_field(rec, names, want, form)
  for _, f in ipairs(names) do
    if form(rec[f]) == want then
      return true
    end
  end
  return false
end

-- The insured with exactly this e-mail in any of its e-mail fields, compared
-- without case (NowCerts' own comparison may or may not ignore case: the
-- filter lower-cases both sides), or nil.
function nowcerts.find_insured_by_email(email)
  email = util.email(email)
  if not email then
    return nil
  end
  local lit = nowcerts.odata_string(email)
  local terms = {}
  for _, f in ipairs(nowcerts.email_fields) do
    terms[#terms + 1] = ("tolower(%s) eq %s"):format(f, lit)
  end
  local filter = table.concat(terms, " or ")
  for _, ins in ipairs(list("/InsuredDetailList?$filter=" .. util.pct(filter) .. "&$top=10&$count=true")) do
    if any_field(ins, nowcerts.email_fields, email, util.email) then
      return ins
    end
  end
  return nil
end

-- The insured with this phone (its last 10 digits) in any phone field, or
-- nil. NowCerts keeps phones as typed ("(555) 123-4567"), so the filter asks
-- for the last four digits and the answer is compared digit by digit.
-- `email`: the record looked for has this e-mail; a phone match that has an
-- e-mail of its own, another one, is another person (families and offices
-- share numbers) and is not returned.
function nowcerts.find_insured_by_phone(phone, email)
  local p10 = util.phone10(phone)
  if not p10 or #p10 < 7 then
    return nil
  end
  local lit = nowcerts.odata_string(p10:sub(-4))
  local terms = {}
  for _, f in ipairs(nowcerts.phone_fields) do
    terms[#terms + 1] = ("contains(%s,%s)"):format(f, lit)
  end
  local filter = table.concat(terms, " or ")
  email = util.email(email)
  for _, ins in ipairs(list("/InsuredDetailList?$filter=" .. util.pct(filter) .. "&$top=50&$count=true")) do
    if any_field(ins, nowcerts.phone_fields, p10, util.phone10) then
      local own = false
      for _, f in ipairs(nowcerts.email_fields) do
        own = own or util.email(ins[f]) ~= nil
      end
      if not (email and own) then
        return ins
      end
    end
  end
  return nil
end

-- An enum as NowCerts writes it: a number, from a number or a known name.
function nowcerts.enum_value(field, v)
  local names = nowcerts.enums[field]
  if not names or v == nil or type(v) == "number" or type(v) == "boolean" then
    return v
  end
  local s = util.trim(util.str(v) or "")
  if s == "" then
    return nil
  end
  if tonumber(s) then
    return math.tointeger(tonumber(s)) or tonumber(s)
  end
  for name, n in pairs(names) do
    if util.fold(name) == util.fold(s) then
      return n
    end
  end
  local accepted = {}
  for name in pairs(names) do
    accepted[#accepted + 1] = name
  end
  table.sort(accepted)
  ncghl.fail({
    retryable = false,
    message = ('NowCerts field %s has the value "%s", which NowCerts does not know; accepted: %s')
      :format(field, s, table.concat(accepted, ", ")),
  })
end

local function with_enums(body)
  for field in pairs(nowcerts.enums) do
    if body[field] ~= nil then
      body[field] = nowcerts.enum_value(field, body[field])
    end
  end
  return body
end

-- Insured/OnlyInsertInsured ("always add a new insured"), sent once: a
-- create whose answer is lost is not sent again blindly. Returns the new id.
function nowcerts.create_insured(body)
  local answer = nowcerts.request("POST", "/Insured/OnlyInsertInsured", with_enums(util.without(body)),
    { once = true })
  -- nil when the answer names no insuredDatabaseId (the caller decides).
  local id = util.str(answer.insuredDatabaseId)
  return not util.empty(id) and id:lower() or nil
end

-- An e-mail written over another that the record also holds in a second
-- field (GHL's e-mail is the insured's eMail2, say: found by it, then
-- synced): the two swap, so the address replaced stays in the record
-- instead of being lost, and the record still holds both.
local function keep_replaced_email(body, changes, current)
  local first = nowcerts.email_fields[1]
  local new, old = util.str(changes[first]), util.str(current[first])
  if not new or not old or util.email(new) == util.email(old) then
    return
  end
  for i = 2, #nowcerts.email_fields do
    local f = nowcerts.email_fields[i]
    if changes[f] == nil and util.email(util.str(current[f])) == util.email(new) then
      body[f] = old
      return
    end
  end
end

-- Insured/Insert of `current` (the record as read right before) with
-- `changes` applied: every field the list read is sent back as it was, so
-- nothing ncghl does not map is blanked (Insert with a databaseId replaces
-- the whole record). A change to nil or "" clears that field. Returns the
-- insured's id, or nil when the insured is gone.
function nowcerts.update_insured(id, changes, current)
  local body = {}
  for _, f in ipairs(nowcerts.insured_fields) do
    local v = current[f]
    if v ~= nil and v ~= json.null then
      body[f] = v
    end
  end
  for f, v in pairs(changes) do
    if v == "" or v == json.null then
      body[f] = json.null
    else
      body[f] = v
    end
  end
  keep_replaced_email(body, changes, current)
  body.databaseId = id
  local res = ncghl.call("nowcerts", "POST", "/Insured/Insert", json.encode(with_enums(body)))
  -- A write refused for good to an insured a read no longer finds: deleted
  -- meanwhile (what NowCerts answers then is not documented, so the read
  -- decides, not the message).
  if not res.ok and not res.retryable and nowcerts.get_insured(id) == nil then
    return nil
  end
  local answer = nowcerts.check("POST", "/Insured/Insert", res)
  -- NowCerts' writes say how they went in "status" (1 done, 0 failed, which
  -- ncghl.call already fails on): a 200 without it (an error body behind a
  -- 200) has not been seen to write anything. Insert with a databaseId
  -- sends the same record again: retryable.
  if tonumber(answer.status) ~= 1 then
    ncghl.fail({
      retryable = true,
      message = ("NowCerts POST /Insured/Insert answered without \"status\":1: %s"):format(answer_of(res)),
    })
  end
  return util.str(answer.insuredDatabaseId) or id
end

return nowcerts
