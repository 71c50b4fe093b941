-- COMMERCIAL LINES EXAMPLE (examples/commercial-lines/README.md): an overlay
-- of the shipped mappings/policies.lua ("defaults.policies"). This agency's
-- opportunity custom fields use GHL's "opportunity.<name>" keys and add the
-- line of business as a field of its own; everything else is the default.
local map = require "ncghl.map"
local policies = require "defaults.policies"

policies.custom_fields = {
  { key = "opportunity.policy_number", from = policies.number },
  { key = "opportunity.carrier", from = { "carrier", "carrierName" } },
  { key = "opportunity.line_of_business", from = policies.line_of_business },
  { key = "opportunity.effective_date", from = map.date("effectiveDate") },
  { key = "opportunity.expiration_date", from = map.date("expirationDate") },
}
-- The opportunity map read the default list when it was built: point it at
-- this one.
policies.opportunity.customFields = map.custom_fields(policies.custom_fields)

return policies
