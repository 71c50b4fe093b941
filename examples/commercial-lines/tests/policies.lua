-- Test cases for the commercial-lines example's policy map (policies.lua next
-- to this directory): the opportunity's custom fields under this agency's
-- "opportunity.<name>" keys, with the line of business as a field of its own.

local ACME_ID = "5b1f0c2a-7d3e-4f60-9a8b-1c2d3e4f5a6b"

-- GHL's pipelines, as this agency has them.
local PIPELINES = {
  service = "ghl", method = "GET", path = "/opportunities/pipelines", status = 200,
  body = { pipelines = {
    { id = "pl-commercial", name = "Commercial Lines", stages = {
      { id = "st-c-quoted", name = "Quoted" }, { id = "st-c-bound", name = "Bound" } } },
    { id = "pl-personal", name = "Personal Lines", stages = {
      { id = "st-p-quoted", name = "Quoted" }, { id = "st-p-bound", name = "Bound" } } },
  } },
}

return {
  { name = "a general liability policy lands in Commercial Lines with the agency's custom fields",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = ACME_ID, ghl = "c-acme" } },
    body = { event_type = "POLICY_INSERT", data = {
      databaseId = "8c7b6a59-4837-4261-9504-a3b2c1d0e9f8", number = "GL-2024-118",
      lineOfBusinessName = "Commercial General Liability", totalPremium = "4,250.00",
      carrierName = "The Hartford", effectiveDate = "2024-06-01T00:00:00-04:00",
      expirationDate = "2025-06-01T00:00:00-04:00", insuredDatabaseId = ACME_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201,
        body = { opportunity = { id = "o-gl" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = {
            name = "Commercial General Liability Policy - GL-2024-118",
            monetaryValue = 4250,
            contactId = "c-acme",
            pipelineId = "pl-commercial",
            pipelineStageId = "st-c-bound",
            customFields = {
              { key = "opportunity.policy_number", field_value = "GL-2024-118" },
              { key = "opportunity.carrier", field_value = "The Hartford" },
              { key = "opportunity.line_of_business", field_value = "Commercial General Liability" },
              { key = "opportunity.effective_date", field_value = "2024-06-01" },
              { key = "opportunity.expiration_date", field_value = "2025-06-01" },
            },
          } },
      },
      data = { action = "created", opportunity_id = "o-gl", contact_found_by = "link" },
    } },

  { name = "a personal auto quote still goes to Personal Lines, at Quoted",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = ACME_ID, ghl = "c-acme" } },
    body = { event_type = "QUOTE_INSERT", data = {
      number = "Q-77", lineOfBusinessName = "Personal Auto", totalPremium = 1300,
      insuredDatabaseId = ACME_ID } },
    answers = { PIPELINES },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = {
            pipelineId = "pl-personal", pipelineStageId = "st-p-quoted",
            customFields = {
              { key = "opportunity.policy_number", field_value = "Q-77" },
              { key = "opportunity.line_of_business", field_value = "Personal Auto" },
            },
          } },
      },
    } },
}
