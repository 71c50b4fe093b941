-- Field maps for people: a NowCerts insured <-> a GHL contact.
--
-- COMMERCIAL LINES EXAMPLE (examples/commercial-lines/README.md): an agency
-- whose customers are mostly businesses. Changed from the default mappings:
--   * the business name goes to GHL's companyName, and back;
--   * three GHL custom fields of this agency (customer id, FEIN, type);
--   * tags say "commercial" or "personal", and "prospect";
--   * people who start in GHL become Commercial prospects in NowCerts.
-- Every change is marked "-- CHANGED".
--
-- Read each line as "target field = where its value comes from":
--   "path"               a field of the incoming record ("address.zip" = nested)
--   { "a", "b" }         the first of these that has a value
--   map.const("text")    always this text; numbers and true/false are
--                        constants as they are
--   function(src) ... end  anything else
-- Fields without a value are not sent, so nothing is ever blanked.
local map = require "ncghl.map"

local contacts = {}

-- Where a NowCerts record keeps its own id (read lists say id, our webhook
-- format and write answers say databaseId / insuredDatabaseId).
contacts.insured_id = { "databaseId", "id", "insuredDatabaseId" }

-- NowCerts insured -> GHL contact. Each source list names the source design's
-- field first and NowCerts' real one after it.
contacts.insured_to_contact = {
  firstName = { "firstName" },
  lastName = { "lastName" },
  email = { "email", "eMail" },
  phone = { "phone", "cellPhone", "smsPhone" },
  address1 = { "address.street", "addressLine1" },
  city = { "address.city", "city" },
  state = { "address.state", "state" },
  postalCode = { "address.zip", "zipCode" },
  source = map.const("NowCerts"),
  -- CHANGED: the business's name. GHL takes companyName on create only;
  -- ncghl leaves it out of updates by itself.
  companyName = { "commercialName", "dba" },
  -- CHANGED: this agency's custom fields, by the key GHL shows under
  -- Settings > Custom Fields (or write id = "..." instead of key).
  customFields = map.custom_fields({
    { key = "contact.nowcerts_customer_id", from = "customerId" },
    { key = "contact.fein", from = "fein" },
    { key = "contact.insured_type", from = "insuredType" },
  }),
  -- CHANGED: which book of business, and whether they are still a prospect.
  tags = function(insured)
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
  end,
}

-- GHL contact -> NowCerts insured, in the names Insured/Insert and
-- Insured/OnlyInsertInsured take.
contacts.contact_to_insured = {
  firstName = "firstName",
  lastName = "lastName",
  eMail = { "email" },
  phone = { "phone" },
  addressLine1 = { "address1" },
  city = "city",
  state = "state",
  zipCode = { "postalCode" },
  commercialName = { "companyName" }, -- CHANGED: the business's name
  -- NowCerts needs these three on every write. For new records:
  type = 1, -- 1 = Prospect (0 = Insured)
  insuredType = 0, -- CHANGED: 0 = Commercial (1 = Personal)
  active = true,
}

return contacts
