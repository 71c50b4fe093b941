-- Field maps for people: a NowCerts insured <-> a GHL contact.
--
-- Read each line as "target field = where its value comes from":
--   "path"               a field of the incoming record ("address.zip" = nested)
--   { "a", "b" }         the first of these that has a value
--   map.const("text")    always this text; numbers and true/false are
--                        constants as they are
--   map.keep(spec)       as spec, and a clear on one side never empties the
--                        other side's value
--   function(src) ... end  anything else
--
-- The two maps sync both ways, field by field: a GHL field whose sources
-- name a NowCerts field that reads it back (postalCode <- "zipCode",
-- zipCode <- "postalCode") is one field of the sync; only the fields that
-- changed travel, and an edit on each side to different fields both survive
-- (docs/sync-model.md). Constants and functions are written when ncghl
-- creates a record; `tags` are GHL tags ncghl manages (added and removed
-- through GHL's tag endpoints; tags people add are never touched).
local map = require "ncghl.map"

local contacts = {}

-- Where a NowCerts record keeps its own id (read lists say id, our webhook
-- format and write answers say databaseId / insuredDatabaseId).
contacts.insured_id = { "databaseId", "id", "insuredDatabaseId" }

-- NowCerts insured -> GHL contact. Each source list names the source design's
-- field first and NowCerts' real one after it.
contacts.insured_to_contact = {
  firstName = map.keep({ "firstName" }),
  lastName = map.keep({ "lastName" }),
  email = { "email", "eMail" },
  phone = { "phone", "cellPhone", "smsPhone" },
  address1 = { "address.street", "addressLine1" },
  city = { "address.city", "city" },
  state = { "address.state", "state" },
  postalCode = { "address.zip", "zipCode" },
  companyName = { "commercialName" },
  source = map.const("NowCerts"),
  -- The tags ncghl keeps on the contact: "nowcerts" always, "prospect" while
  -- the insured is a prospect, "inactive" while NowCerts marks it inactive.
  -- When a rule stops holding, ncghl removes the tag it set.
  tags = function(insured)
    local tags = { "nowcerts" }
    local kind = insured.type
    if kind == 1 or kind == "Prospect" then
      tags[#tags + 1] = "prospect"
    end
    if insured.active == false then
      tags[#tags + 1] = "inactive"
    end
    return tags
  end,
}

-- GHL contact -> NowCerts insured, in the names Insured/Insert and
-- Insured/OnlyInsertInsured take.
contacts.contact_to_insured = {
  firstName = map.keep("firstName"),
  lastName = map.keep("lastName"),
  eMail = { "email" },
  phone = { "phone" },
  addressLine1 = { "address1" },
  city = "city",
  state = "state",
  zipCode = { "postalCode" },
  -- GHL takes companyName only when it creates a contact (a PUT with it is
  -- refused), so it cannot travel both ways: a function is never paired,
  -- and a new prospect gets its company name from it.
  commercialName = function(contact)
    return contact.companyName
  end,
  -- NowCerts needs these three on every record it creates. An update keeps
  -- whatever the record has (it is read and written back whole).
  type = 1, -- 1 = Prospect (0 = Insured)
  insuredType = 1, -- 1 = Personal (0 = Commercial)
  active = true,
}

-- A GHL lead often has a first name and a phone only, but NowCerts needs a
-- first and a last name, or a company name. The rule for a new prospect:
--   * a company name and no person's name: a Commercial prospect;
--   * one of the two names missing: this stand-in takes its place (NowCerts
--     shows it, an agent can correct it; ncghl never sends it to GHL);
--   * neither a name nor a company: not created, the event says why.
contacts.placeholders = { lastName = "(no last name)", firstName = "(no first name)" }

function contacts.prospect_name(body, contact)
  local first, last = body.firstName, body.lastName
  local company = body.commercialName
  local has = function(v)
    return v ~= nil and tostring(v):match("%S") ~= nil
  end
  if not has(first) and not has(last) then
    if has(company) then
      body.insuredType = 0 -- Commercial
      return body
    end
    return nil, "the GHL contact has neither a name nor a company name, which NowCerts needs"
  end
  if not has(last) then
    body.lastName = contacts.placeholders.lastName
  elseif not has(first) then
    body.firstName = contacts.placeholders.firstName
  end
  return body
end

return contacts
