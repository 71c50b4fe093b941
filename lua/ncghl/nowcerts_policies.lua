-- ncghl.nowcerts_policies: a policy or quote sent to NowCerts by a manual
-- sync from GHL (POST /api/v1/sync/manual, source "ghl", direction
-- "to_nowcerts"), as the source design does: written with Policy/Insert or
-- Quote/Insert (ref/nowcerts/NOTES.md section 5), which NowCerts matches on
-- databaseId, else on the number, so sending one again updates it rather
-- than adding a second. The map is mappings/policies.lua's
-- policy_to_nowcerts.
local map = require "ncghl.map"
local util = require "ncghl.util"
local nowcerts = require "ncghl.nowcerts"

local M = {}

local function fail(message)
  ncghl.fail({ retryable = false, message = message })
end

-- What Policy/Insert and Quote/Insert need (NOTES section 5: R fields).
M.required = { "number", "effectiveDate", "expirationDate", "lineOfBusinessName" }

-- upsert(src, m, opts): the record src mapped with m.policy_to_nowcerts,
-- on the insured it names (insuredDatabaseId; else the insured with its
-- e-mail, looked up; else NowCerts locates it by first and last name).
-- opts.quote: a quote (Quote/Insert).
function M.upsert(src, m, opts)
  opts = opts or {}
  if type(m) ~= "table" or type(m.policy_to_nowcerts) ~= "table" then
    fail("policies.lua has no policy_to_nowcerts map: no policy can be sent to NowCerts")
  end
  local body = map.apply(m.policy_to_nowcerts, type(src) == "table" and src or {})
  local missing = {}
  for _, f in ipairs(M.required) do
    if util.empty(util.str(body[f])) then
      missing[#missing + 1] = f
    end
  end
  if missing[1] then
    fail(("the record lacks what NowCerts needs for a %s: %s (policies.lua policy_to_nowcerts)")
      :format(opts.quote and "quote" or "policy", table.concat(missing, ", ")))
  end
  local found_by = "id"
  if util.empty(util.str(body.insuredDatabaseId)) then
    local email = util.email(body.insuredEmail)
    local named = not util.empty(util.str(body.insuredFirstName))
      and not util.empty(util.str(body.insuredLastName))
    local ins = email and nowcerts.find_insured_by_email(email)
    if ins then
      body.insuredDatabaseId, found_by = util.str(ins.databaseId or ins.id), "email"
    elseif named then
      found_by = "name"
    elseif email then
      fail(("NowCerts has no insured with the e-mail %s: sync the contact first"):format(email))
    else
      fail("the record names no insured: it needs insuredDatabaseId, insuredEmail, or "
        .. "insuredFirstName and insuredLastName")
    end
  end
  local path = opts.quote and "/Quote/Insert" or "/Policy/Insert"
  local answer = nowcerts.request("POST", path, body)
  local item = type(answer.policiesOrQuotes) == "table" and answer.policiesOrQuotes[1] or nil
  local id = type(item) == "table" and util.str(item.policyOrQuoteId) or nil
  if answer.status ~= 1 or util.empty(id) then
    ncghl.fail({ retryable = true,
      message = ("NowCerts POST %s did not say it wrote the %s: %s"):format(path,
        opts.quote and "quote" or "policy", util.str(answer.message) or "no message") })
  end
  return {
    action = "written",
    policy_id = id,
    number = body.number,
    kind = opts.quote and "quote" or "policy",
    insured_id = util.str(answer.insuredDatabaseId),
    insured_found_by = found_by,
    message = ("NowCerts %s %s written (number %s)"):format(opts.quote and "quote" or "policy", id,
      util.str(body.number)),
  }
end

return M
