-- Test cases for the commercial-lines example's contact maps (contacts.lua
-- next to this directory). Run them with
--   ncghl test examples/commercial-lines/tests
-- The walk-through is in ../README.md; the format in docs/mapping-guide.md.

local ACME_ID = "5b1f0c2a-7d3e-4f60-9a8b-1c2d3e4f5a6b"

-- A commercial insured as NowCerts' InsuredDetailList names its fields.
local ACME = {
  id = ACME_ID, commercialName = "Acme Roofing LLC", firstName = "Rita", lastName = "Reyes",
  eMail = "rita@acmeroofing.example", phone = "(813) 555-0142", type = "Insured",
  insuredType = "Commercial", customerId = "C-1042", fein = "59-1234567",
  addressLine1 = "400 Industrial Blvd", city = "Tampa", state = "FL", zipCode = "33619",
}

return {
  { name = "a commercial insured becomes a GHL contact with its company and custom fields",
    source = "nowcerts",
    body = { event_type = "INSURED_INSERT", data = ACME },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/", status = 201,
        body = { contact = { id = "c-acme" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/",
          body = {
            companyName = "Acme Roofing LLC",
            firstName = "Rita",
            email = "rita@acmeroofing.example",
            customFields = {
              -- In the map's order; a field without a value is left out.
              { key = "contact.nowcerts_customer_id", field_value = "C-1042" },
              { key = "contact.fein", field_value = "59-1234567" },
              { key = "contact.insured_type", field_value = "Commercial" },
            },
            tags = { "nowcerts", "commercial" },
          } },
      },
      data = { action = "created", contact_id = "c-acme" },
    } },

  { name = "an update keeps GHL's tags, sends the custom fields and never companyName",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = ACME_ID, ghl = "c-acme" } },
    body = { event_type = "INSURED_UPDATE", data = ACME },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/c-acme", status = 200,
        body = { contact = { id = "c-acme", tags = { "roofing", "nowcerts" } } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/contacts/c-acme",
          body = {
            companyName = ABSENT, -- GHL answers 422 to it on update
            customFields = ANY,
            tags = ABSENT, -- a PUT of tags would replace "roofing"
          } },
        { service = "ghl", method = "POST", path = "/contacts/c-acme/tags", body = { tags = { "commercial" } } },
      },
      data = { action = "updated", found_by = "link" },
    } },

  { name = "a personal prospect is tagged personal and prospect, with no company",
    source = "nowcerts",
    body = { event_type = "INSURED_INSERT", data = {
      firstName = "Sam", lastName = "Lee", eMail = "sam@example.com", type = "Prospect",
      insuredType = "Personal" } },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/",
          body = {
            companyName = ABSENT,
            tags = { "nowcerts", "personal", "prospect" },
            customFields = { { key = "contact.insured_type", field_value = "Personal" } },
          } },
      },
    } },

  { name = "a GHL lead with a company becomes a Commercial prospect in NowCerts",
    source = "ghl",
    body = {
      type = "ContactCreate", locationId = "loc-1", id = "c-new", firstName = "Dana",
      lastName = "Ng", email = "dana@ngplumbing.example", companyName = "Ng Plumbing",
    },
    answers = {
      { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured", status = 200,
        body = { status = 1, insuredDatabaseId = "0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a" } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "POST", path = "/Insured/OnlyInsertInsured",
          body = { commercialName = "Ng Plumbing", type = 1, insuredType = 0, active = true } },
      },
      data = { action = "created" },
    } },
}
