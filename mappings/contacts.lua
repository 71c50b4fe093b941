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
  -- Where the person came from, as the source design writes it: the
  -- record's own source when it has one (relays in the source design's
  -- format carry it), else "NowCerts".
  source = { "source", map.const("NowCerts") },
  -- The tags ncghl keeps on the contact: "nowcerts" always, "prospect" while
  -- the insured is a prospect, "inactive" while NowCerts marks it inactive.
  -- When a rule stops holding, ncghl removes the tag it set.
  tags = function(insured)
    local tags = { "nowcerts" }
    local kind = insured.type
    if kind == 1 or kind == "Prospect" then
      tags[#tags + 1] = "prospect"
    end
    if insured.active == false and contacts.lifecycle.inactive == "tag" then
      tags[#tags + 1] = contacts.lifecycle_tags.inactive
    end
    return tags
  end,
}

-- What an insured that NowCerts deletes or marks inactive does to its GHL
-- contact: "tag" (the tag below), "delete" (the contact is deleted, and a
-- later change does not create it again) or "nothing".
contacts.lifecycle = { deleted = "tag", inactive = "tag" }
contacts.lifecycle_tags = { deleted = "deleted in NowCerts", inactive = "inactive" }

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
--   * no first or last name but GHL's whole `name` ("Pedro Paramo", as
--     some forms and the API fill it): its first word is the first name,
--     the rest the last name;
--   * one of the two names missing: this stand-in takes its place (NowCerts
--     shows it, an agent can correct it; ncghl never sends it to GHL);
--   * neither a name nor a company: not created, the event says why.
contacts.placeholders = { lastName = "(no last name)", firstName = "(no first name)" }

function contacts.prospect_name(body, contact)
  local has = function(v)
    return v ~= nil and tostring(v):match("%S") ~= nil
  end
  if not has(body.firstName) and not has(body.lastName) and type(contact) == "table"
      and type(contact.name) == "string" and has(contact.name) then
    local first, rest = contact.name:match("^%s*(%S+)%s*(.-)%s*$")
    body.firstName, body.lastName = first, rest ~= "" and rest or nil
  end
  local first, last = body.firstName, body.lastName
  local company = body.commercialName
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

-- Consent. GHL keeps do-not-disturb flags (dnd, and dndSettings per
-- channel); the NowCerts reference names no consent field, so by default a
-- change of the GHL state becomes a NowCerts tag (Insured/Insert's tagName
-- and tagDescription) saying what GHL now has. `state` is "all" (DND on
-- every channel), the channels in DND ("Email,SMS"), or "" (none). Return
-- the NowCerts fields to write, or nil to send nothing.
function contacts.consent_to_insured(state)
  if state == "" then
    return { tagName = "GHL: contact allowed", tagDescription = "Do not disturb was turned off in GHL" }
  end
  return {
    tagName = "GHL: do not disturb",
    tagDescription = state == "all" and "Do not disturb in GHL on every channel"
      or ("Do not disturb in GHL on: " .. state:gsub(",", ", ")),
  }
end

-- NowCerts -> GHL: an agency that keeps consent in a NowCerts field (a
-- custom field, say) returns GHL's { dnd = true|false, dndSettings = ... }
-- from the insured here. NowCerts' lists show none by default: nil.
function contacts.consent_from_insured(insured) -- luacheck: ignore 212
  return nil
end

return contacts
