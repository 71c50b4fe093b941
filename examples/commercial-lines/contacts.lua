-- COMMERCIAL LINES EXAMPLE (examples/commercial-lines/README.md): an agency
-- whose customers are mostly businesses. This file is an overlay: it takes
-- the shipped maps (mappings/contacts.lua, reachable as "defaults.contacts")
-- and changes only what differs:
--   * the business name goes to GHL's companyName, and back;
--   * three GHL custom fields of this agency (customer id, FEIN, type);
--   * tags say "commercial" or "personal", and "prospect";
--   * people who start in GHL become Commercial prospects in NowCerts.
local map = require "ncghl.map"
local contacts = require "defaults.contacts"

local to_contact = contacts.insured_to_contact
-- The business's name. GHL takes companyName on create only; ncghl leaves
-- it out of updates by itself.
to_contact.companyName = { "commercialName", "dba" }
-- This agency's custom fields, by the key GHL shows under Settings > Custom
-- Fields (or write id = "..." instead of key).
to_contact.customFields = map.custom_fields({
  { key = "contact.nowcerts_customer_id", from = "customerId" },
  { key = "contact.fein", from = "fein" },
  { key = "contact.insured_type", from = "insuredType" },
})
-- Which book of business, and whether they are still a prospect.
to_contact.tags = function(insured)
  local tags = { "nowcerts" }
  if insured.insuredType == "Commercial" or insured.commercialName then
    tags[#tags + 1] = "commercial"
  else
    tags[#tags + 1] = "personal"
  end
  if insured.type == "Prospect" then
    tags[#tags + 1] = "prospect"
  end
  return tags
end

local to_insured = contacts.contact_to_insured
to_insured.commercialName = { "companyName" } -- the business's name
to_insured.insuredType = 0 -- 0 = Commercial (1 = Personal)

return contacts
