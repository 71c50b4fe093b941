-- Mapping test cases for NowCerts REST hooks (normalize.lua): deliveries
-- stored as {"hook": "<EventName>", "data": <delivered JSON>}, in NowCerts'
-- snake_case Zapier names, become INSURED_* / POLICY_* / QUOTE_* events.
-- The delivered shape is not confirmed; these cases pin down what the
-- normaliser accepts today.

local PIPELINES = {
  service = "ghl", method = "GET", path = "/opportunities/pipelines", status = 200,
  body = { pipelines = {
    { id = "pl-personal", name = "Personal Lines", stages = {
      { id = "st-personal-new", name = "New" }, { id = "st-personal-quoted", name = "Quoted" },
      { id = "st-personal-bound", name = "Bound" } } },
    { id = "pl-commercial", name = "Commercial Lines", stages = {
      { id = "st-commercial-new", name = "New" }, { id = "st-commercial-quoted", name = "Quoted" },
      { id = "st-commercial-bound", name = "Bound" } } },
  } },
}

local INSURED_ID = "7a0c1b2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d"

return {
  { name = "hook CreatePolicy (a one-element array in snake_case) becomes an opportunity",
    source = "nowcerts",
    body = { hook = "CreatePolicy", data = { {
      database_id = "9e8d7c6b-5a49-4837-a625-140f1e2d3c4b", number = "HO-501",
      line_of_business_name = "Homeowners", premium = "1,310.00", carrier_name = "Citizens",
      effective_date = "2024-03-01T00:00:00-05:00", expiration_date = "2025-03-01T00:00:00-05:00",
      insured_database_id = INSURED_ID, insured_email = "pat@example.com" } } },
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-pat" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-ho" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Homeowners Policy - HO-501", monetaryValue = 1310, contactId = "c-pat",
            pipelineStageId = "st-personal-bound",
            customFields = {
              { key = "policy_number", field_value = "HO-501" },
              { key = "carrier", field_value = "Citizens" },
              { key = "effective_date", field_value = "2024-03-01" },
              { key = "expiration_date", field_value = "2025-03-01" },
            } } },
      },
      data = { action = "created", opportunity_id = "o-ho", kind = "policy", contact_found_by = "link" },
    } },

  { name = "hook UpdateQuote follows the link and keeps the opportunity at the Quoted stage",
    source = "nowcerts",
    body = { hook = "UpdateQuote", data = {
      id = "9E8D7C6B-5A49-4837-A625-140F1E2D3C4B", number = "HO-501", line_of_business_name = "Homeowners",
      premium = 1250, insured_database_id = INSURED_ID } },
    links = { { kind = "policy", nowcerts = "9e8d7c6b-5a49-4837-a625-140f1e2d3c4b", ghl = "o-ho" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-ho", status = 200, body = { opportunity = { id = "o-ho" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-ho",
          body = { pipelineStageId = "st-personal-quoted", monetaryValue = 1250 } },
      },
      data = { action = "updated", kind = "quote", found_by = "link" },
    } },

  { name = "hook CreateProspect (an object) becomes a GHL contact",
    source = "nowcerts",
    body = { hook = "CreateProspect", data = {
      database_id = INSURED_ID, first_name = "Pat", last_name = "Quinn", email = "pat@example.com",
      cell_phone = "555-010-4444", address_line_1 = "9 Bay Rd", city = "Tampa", state = "FL",
      zip_code = "33602" } },
    answers = {
      { service = "ghl", method = "POST", path = "/contacts/", status = 201, body = { contact = { id = "c-pat" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/search",
          body = { filters = { { field = "email", value = "pat@example.com" } } } },
        { service = "ghl", method = "POST", path = "/contacts/",
          body = { firstName = "Pat", lastName = "Quinn", email = "pat@example.com", phone = "+15550104444",
            address1 = "9 Bay Rd", city = "Tampa", state = "FL", postalCode = "33602" } },
      },
      data = { action = "created", contact_id = "c-pat" },
    } },

  { name = "hook UpdateInsured in PascalCase names updates the linked contact",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-pat" } },
    snapshots = { { nowcerts = INSURED_ID, ghl = "c-pat", tags = { "nowcerts" },
      fields = { firstName = "Pat", lastName = "Quinn", email = "pat@example.com" } } },
    body = { hook = "UpdateInsured", data = { {
      Id = INSURED_ID, FirstName = "Pat", LastName = "Quinn-Lee", EMail = "pat@example.com" } } },
    answers = {
      { service = "ghl", method = "GET", path = "/contacts/c-pat", status = 200,
        body = { contact = { id = "c-pat", firstName = "Pat", lastName = "Quinn", email = "pat@example.com",
          tags = { "vip" } } } },
      { service = "ghl", method = "PUT", path = "/contacts/c-pat", status = 200,
        body = { succeded = true, contact = { id = "c-pat" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        -- Only the changed field. Tags are not touched: ncghl wants the
        -- same tags as at the last sync, and someone removed "nowcerts" from
        -- the contact since (that choice is theirs); "vip" is theirs too.
        { service = "ghl", method = "PUT", path = "/contacts/c-pat",
          body = { lastName = "Quinn-Lee", firstName = ABSENT, tags = ABSENT } },
      },
      request_count = 3,
      data = { action = "updated", contact_id = "c-pat", found_by = "link" },
    } },

  { name = "a hook the normaliser does not know is ignored",
    source = "nowcerts",
    body = { hook = "CreateClaim", data = { number = "CL-1" } },
    expect = { outcome = "ignored", request_count = 0 } },

  { name = "a delivery of several records fails for good and names the hook",
    source = "nowcerts",
    body = { hook = "UpdatePolicy", data = { { number = "P-1" }, { number = "P-2" } } },
    expect = { outcome = "failed", error = "UpdatePolicy delivered 2 records", request_count = 0 } },

  { name = "an empty delivery fails for good",
    source = "nowcerts",
    body = { hook = "CreateInsured", data = {} },
    expect = { outcome = "failed", error = "delivered no record", request_count = 0 } },
}
