-- Field maps for policies and quotes: a NowCerts policy (or quote) becomes a
-- GHL opportunity on its insured's contact.
--
-- Read each line as in contacts.lua: "target = where its value comes from".
-- Lists name the source design's field first and NowCerts' real one after it
-- (ref/nowcerts/NOTES.md section 8), so one map serves both.
--
-- The pipeline, stage and status are chosen in pipelines.lua. Delete this
-- file to stop sending policies and quotes to GHL: their events are then
-- answered "ignored".
local map = require "ncghl.map"
local contacts = require "contacts"
local pipelines = require "pipelines"

local policies = {}

-- The record's own NowCerts id (PolicyDetailList's field table says id, its
-- sample and Policy/Insert say databaseId).
policies.policy_id = { "databaseId", "id" }

-- The policy number.
policies.number = { "policyNumber", "number" }

-- The policy type ("Auto", "Homeowners"): the source design's policyType,
-- else NowCerts' line of business, which Policy/Insert takes as a name,
-- PolicyDetailList reads back as a list of {lineOfBusinessName = ...} and
-- Insured/InsuredPolicies as a list of names.
policies.line_of_business = {
  "policyType",
  "lineOfBusinessName",
  map.first("lineOfBusinesses", "lineOfBusinessName"),
  map.first("linesOfBusiness"),
}

-- The policy's status ("Active", "Cancelled", "Expired", "Non-Renewal",
-- ...: PolicyDetailList's status) and its active flag, read when it has no
-- status. pipelines.lua says what each status does to the opportunity.
policies.status = { "status" }
policies.active = { "active" }

-- A quote says so (isQuote = true). Records without the field are taken as
-- the event says: QUOTE_* is a quote, POLICY_* a policy.
policies.is_quote = { "isQuote" }

-- The insured's NowCerts id. When GHL has no contact linked to it and the
-- record names the insured no other way, ncghl reads the insured from
-- NowCerts and writes its contact with this map (contacts.lua):
policies.insured_id = { "insuredDatabaseId" }
policies.insured_contact = contacts.insured_to_contact

-- A record that names its GHL contact itself (the source design's relays
-- carry contactId or ghlContactId) goes on that contact while GHL has it.
policies.contact_id = { "contactId", "ghlContactId" }

-- Otherwise the contact is looked up from the record's own insured fields
-- (link, then email, then phone, then first + last name) and created from
-- them only if GHL has none. A policy never changes an existing contact: the
-- insured's own events keep it up to date.
policies.insured_to_contact = {
  firstName = { "insuredFirstName", "firstName" },
  lastName = { "insuredLastName", "lastName" },
  email = { "insuredEmail", "email", "eMail" },
  phone = { "insuredPhone", "phone", "cellPhone" },
  companyName = { "insuredCommercialName", "commercialName" },
  source = map.const("NowCerts"),
  tags = function()
    return { "nowcerts" }
  end,
}

-- The opportunity's custom fields. GHL wants each field's id or key; which
-- form of key it wants ("policy_number" or "opportunity.policy_number") is
-- not confirmed (ref/ghl/NOTES.md section 2), so check yours in GHL
-- (Settings > Custom Fields) and write it here, or use id = "..." instead.
policies.custom_fields = {
  { key = "policy_number", from = policies.number },
  { key = "carrier", from = { "carrier", "carrierName" } },
  { key = "effective_date", from = map.date("effectiveDate") },
  { key = "expiration_date", from = map.date("expirationDate") },
}

-- The opportunity. ncghl adds pipelineId, pipelineStageId and status
-- (pipelines.lua), and contactId and locationId when it creates one.
policies.opportunity = {
  -- "Auto Policy - POL-123"
  name = function(p)
    local line = map.get(p, policies.line_of_business)
    local number = map.get(p, policies.number)
    if line then
      return ("%s Policy - %s"):format(line, number)
    end
    return ("Policy - %s"):format(number)
  end,
  monetaryValue = map.number({ "premium", "totalPremium" }),
  customFields = map.custom_fields(policies.custom_fields),
}

-- The other way: a policy or quote a manual sync pushes from GHL to
-- NowCerts (Policy/Insert, Quote/Insert: ref/nowcerts/NOTES.md section 5),
-- in the source design's names first and NowCerts' after them. NowCerts
-- needs the number, both dates and the line of business; the insured is
-- found by insuredDatabaseId, else by e-mail, else NowCerts locates it by
-- first and last name. businessType and businessSubType (ints NowCerts
-- defaults to New Business) are left to NowCerts.
policies.policy_to_nowcerts = {
  databaseId = { "databaseId" },
  number = { "policyNumber", "number" },
  lineOfBusinessName = { "policyType", "lineOfBusinessName" },
  carrierName = { "carrier", "carrierName" },
  premium = map.number({ "premium", "totalPremium" }),
  effectiveDate = { "effectiveDate" },
  expirationDate = { "expirationDate" },
  description = { "description" },
  insuredDatabaseId = { "insuredDatabaseId" },
  insuredEmail = { "insuredEmail", "email" },
  insuredFirstName = { "insuredFirstName", "firstName" },
  insuredLastName = { "insuredLastName", "lastName" },
}

-- Pipeline, stage and status: pipelines.lua (looked up at each event, so a
-- pipelines.choose of your own is used wherever it is set).
policies.pipeline = function(record, ctx)
  return pipelines.choose(record, ctx)
end

return policies
