-- Field maps for people: a NowCerts insured <-> a GHL contact.
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
  tags = function(insured)
    return { "nowcerts" }
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
  -- NowCerts needs these three on every write. For new records:
  type = 1, -- 1 = Prospect (0 = Insured)
  insuredType = 1, -- 1 = Personal (0 = Commercial)
  active = true,
}

return contacts
