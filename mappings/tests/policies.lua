-- Mapping test cases for policies and quotes (routes.lua, policies.lua,
-- pipelines.lua). Run them with `ncghl test`; the format is described in
-- docs/mapping-guide.md.
--
-- Every case answers GET /opportunities/pipelines itself, always with the
-- same list for one location: ncghl keeps the pipelines it read (per
-- location, in the Lua state the cases share), so a case must not depend on
-- which case ran before it. The cases about a missing pipeline or stage use
-- a location of their own, whose list lacks them.

-- The pipelines GHL answers: the names pipelines.lua chooses, with our ids.
local function stages(prefix, names)
  local out = {}
  for _, n in ipairs(names) do
    out[#out + 1] = { id = prefix .. "-" .. n:lower(), name = n }
  end
  return out
end

local PIPELINES = {
  service = "ghl", method = "GET", path = "/opportunities/pipelines", status = 200,
  body = { pipelines = {
    { id = "pl-personal", name = "Personal Lines", stages = stages("st-personal", { "New", "Quoted", "Bound" }) },
    { id = "pl-commercial", name = "Commercial Lines", stages = stages("st-commercial", { "New", "Quoted", "Bound" }) },
  } },
}

-- The location "loc-short" has only a personal pipeline, and that without
-- a stage named like a quote's or a bound policy's.
local PIPELINES_SHORT = {
  service = "ghl", method = "GET", path = "/opportunities/pipelines", status = 200,
  body = { pipelines = {
    { id = "pl-personal", name = "Personal Lines", stages = stages("st-personal", { "New", "Contacted", "Closed Lost" }) },
  } },
}

-- The location "loc-none" has no pipeline at all.
local PIPELINES_NONE = {
  service = "ghl", method = "GET", path = "/opportunities/pipelines", status = 200,
  body = { pipelines = {} },
}

local INSURED_ID = "7a0c1b2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d"

-- The first case also lends its answers to a dry run:
--   ncghl map --source nowcerts policy.json --fixtures mappings/tests/policies.lua
return {
  { name = "policy insert creates the contact, then the opportunity (source design names)",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", timestamp = "2024-01-15T10:30:00Z", data = {
      policyNumber = "POL-1", policyType = "Auto", premium = 1200, carrier = "Progressive",
      effectiveDate = "2024-01-01", expirationDate = "2025-01-01",
      insuredEmail = "Jane.Doe@Example.com", insuredFirstName = "Jane", insuredLastName = "Doe" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200, body = { contacts = {}, total = 0 } },
      { service = "ghl", method = "POST", path = "/contacts/", status = 201, body = { contact = { id = "c-new" } } },
      { service = "ghl", method = "GET", path = "/opportunities/search", status = 200,
        body = { opportunities = {}, meta = { total = 0 } } },
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-1" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/search",
          body = { filters = { { field = "email", operator = "eq", value = "jane.doe@example.com" } } } },
        { service = "ghl", method = "POST", path = "/contacts/",
          body = { email = "Jane.Doe@Example.com", firstName = "Jane", lastName = "Doe", source = "NowCerts" } },
        { service = "ghl", method = "GET", path = "/opportunities/search",
          query = { contact_id = "c-new", q = "POL-1" } },
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Auto Policy - POL-1", monetaryValue = 1200, contactId = "c-new", locationId = "loc-1",
            pipelineId = "pl-personal", pipelineStageId = "st-personal-bound", status = "open",
            customFields = {
              { key = "policy_number", field_value = "POL-1" },
              { key = "carrier", field_value = "Progressive" },
              { key = "effective_date", field_value = "2024-01-01" },
              { key = "expiration_date", field_value = "2025-01-01" },
            } } },
      },
      -- The default pipelines.lua names no pipeline: "Auto" is matched to
      -- "Personal Lines" (a personal line), "Bound" by its word.
      data = { action = "created", opportunity_id = "o-1", contact_id = "c-new", kind = "policy",
        pipeline = "Personal Lines", how = "matched", stage = "Bound", stage_how = "matched", status = "open" },
    } },

  { name = "a policy that names its GHL contact by contactId goes on that contact",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = {
      policyNumber = "POL-125", policyType = "Auto", premium = 300, contactId = "c-77" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "GET", path = "/contacts/c-77", status = 200,
        body = { contact = { id = "c-77", email = "al@example.com" } } },
      { service = "ghl", method = "GET", path = "/opportunities/search", status = 200,
        body = { opportunities = {}, meta = { total = 0 } } },
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-125" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "GET", path = "/contacts/c-77" },
        { service = "ghl", method = "GET", path = "/opportunities/search", query = { contact_id = "c-77" } },
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Auto Policy - POL-125", contactId = "c-77" } },
      },
      data = { action = "created", opportunity_id = "o-125", contact_id = "c-77", contact_found_by = "contact_id" },
    } },

  { name = "a manual sync of a policy from GHL writes it to NowCerts on the insured with its e-mail",
    source = "manual",
    body = { source = "ghl", entity_type = "policy", direction = "to_nowcerts", data = {
      policyNumber = "MP-1", policyType = "Auto", premium = "1,200.50", carrier = "Progressive",
      effectiveDate = "2024-01-01", expirationDate = "2025-01-01", insuredEmail = "Al@Example.com" } },
    answers = {
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList", status = 200,
        body = { value = { { id = INSURED_ID, eMail = "al@example.com" } } } },
      { service = "nowcerts", method = "POST", path = "/Policy/Insert", status = 200,
        body = { policiesOrQuotes = { { policyOrQuoteId = "p-1", isQuote = false, status = 1 } },
          insuredDatabaseId = INSURED_ID, status = 1, message = "imported" } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "GET", path = "/InsuredDetailList" },
        { service = "nowcerts", method = "POST", path = "/Policy/Insert",
          body = { number = "MP-1", lineOfBusinessName = "Auto", premium = 1200.5, carrierName = "Progressive",
            effectiveDate = "2024-01-01", expirationDate = "2025-01-01", insuredDatabaseId = INSURED_ID } },
      },
      data = { action = "written", policy_id = "p-1", kind = "policy", insured_found_by = "email" },
    } },

  { name = "a manual sync of a quote without its dates fails, naming what NowCerts needs",
    source = "manual",
    body = { source = "ghl", entity_type = "quote", direction = "to_nowcerts", data = {
      policyNumber = "MQ-1", policyType = "Auto", insuredEmail = "al@example.com" } },
    expect = {
      outcome = "failed",
      error = "lacks what NowCerts needs for a quote: effectiveDate, expirationDate",
    } },

  { name = "a location without pipelines fails for good, saying so",
    source = "nowcerts",
    config = { GHL_LOCATION_ID = "loc-none" },
    body = { event_type = "POLICY_INSERT", data = {
      policyNumber = "GL-9", policyType = "Commercial General Liability", premium = 5000,
      insuredEmail = "owner@acme.example" } },
    answers = { PIPELINES_NONE, PIPELINES_NONE },
    expect = {
      outcome = "failed",
      error = "GHL's location has no pipelines",
      requests = {
        { service = "ghl", method = "GET", path = "/opportunities/pipelines", query = { locationId = "loc-none" } },
      },
      -- Nothing is written when there is no pipeline: not even the contact.
      request_count = 1,
    } },

  { name = "without stages named like a quote's or a policy's: a policy goes to the last open stage",
    source = "nowcerts",
    config = { GHL_LOCATION_ID = "loc-short" },
    body = { event_type = "POLICY_INSERT", data = {
      policyNumber = "POL-8", policyType = "Auto", premium = 800, insuredEmail = "jo@example.com" } },
    answers = {
      PIPELINES_SHORT,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-8" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-personal", pipelineStageId = "st-personal-contacted", status = "open" } },
      },
      data = { pipeline = "Personal Lines", how = "matched", stage = "Contacted", stage_how = "catch-all" },
    } },

  { name = "without stages named like a quote's or a policy's: a quote goes to the first stage",
    source = "nowcerts",
    config = { GHL_LOCATION_ID = "loc-short" },
    body = { event_type = "QUOTE_INSERT", data = {
      policyNumber = "Q-8", policyType = "Auto", premium = 800, insuredEmail = "jo@example.com" } },
    answers = {
      PIPELINES_SHORT,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-q8" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-personal", pipelineStageId = "st-personal-new", status = "open" } },
      },
      data = { kind = "quote", stage = "New", stage_how = "catch-all" },
    } },

  { name = "NowCerts' own names: number, lineOfBusinesses, totalPremium, carrierName, dates with offsets",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = {
      databaseId = "0B1C2D3E-4F50-4617-8293-A4B5C6D7E8F9", number = "H-77", isQuote = false,
      lineOfBusinesses = { { lineOfBusinessName = "Homeowners" } }, totalPremium = 980.5,
      carrierName = "Citizens", effectiveDate = "2024-02-01T00:00:00-05:00",
      expirationDate = "2025-02-01T00:00:00-05:00", insuredEmail = "ann@example.com" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "c-ann", email = "ann@example.com" } }, total = 1 } },
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-77" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Homeowners Policy - H-77", monetaryValue = 980.5, contactId = "c-ann",
            customFields = {
              { key = "policy_number", field_value = "H-77" },
              { key = "carrier", field_value = "Citizens" },
              { key = "effective_date", field_value = "2024-02-01" },
              { key = "expiration_date", field_value = "2025-02-01" },
            } } },
      },
      -- The contact is only used: a policy never changes it.
      data = { action = "created", opportunity_id = "o-77", contact_id = "c-ann", contact_found_by = "email" },
    } },

  { name = "an update follows the link and PUTs the same opportunity, without create-only fields",
    source = "nowcerts",
    links = { { kind = "policy", nowcerts = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", ghl = "o-77" } },
    body = { event_type = "POLICY_UPDATE", data = {
      databaseId = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", number = "H-77",
      lineOfBusinessName = "Homeowners", totalPremium = 1100, insuredEmail = "ann@example.com" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-77", status = 200, body = { opportunity = { id = "o-77" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        -- The record carries no status: the opportunity's stays as it is.
        { service = "ghl", method = "PUT", path = "/opportunities/o-77",
          body = { name = "Homeowners Policy - H-77", monetaryValue = 1100, pipelineId = "pl-personal",
            pipelineStageId = "st-personal-bound", status = ABSENT } },
      },
      data = { action = "updated", opportunity_id = "o-77", found_by = "link" },
    } },

  { name = "a partial update carrying only the carrier changes only the carrier",
    source = "nowcerts",
    links = { { kind = "policy", nowcerts = "77777777-0000-4000-8000-000000000002", ghl = "o-cm1" } },
    snapshots = { { kind = "policy", nowcerts = "77777777-0000-4000-8000-000000000002", ghl = "o-cm1", fields = {
      name = "General Liability Policy - CM-1", pipelineId = "pl-commercial",
      pipelineStageId = "st-commercial-bound", status = "lost", ["customFields.carrier"] = "Hartford",
      ["customFields.policy_number"] = "CM-1" } } },
    body = { event_type = "POLICY_UPDATE", data = {
      databaseId = "77777777-0000-4000-8000-000000000002", number = "CM-1", carrierName = "Travelers" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-cm1", status = 200, body = { opportunity = { id = "o-cm1" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-cm1",
          body = { customFields = { { key = "carrier", field_value = "Travelers" } }, name = ABSENT,
            pipelineId = ABSENT, pipelineStageId = ABSENT, status = ABSENT } },
      },
      data = { action = "updated", opportunity_id = "o-cm1", pipeline = ABSENT, status = ABSENT },
    } },

  { name = "a custom field the policy carries empty is cleared in GHL; one it does not carry stays",
    source = "nowcerts",
    links = { { kind = "policy", nowcerts = "77777777-0000-4000-8000-000000000003", ghl = "o-pt1" } },
    snapshots = { { kind = "policy", nowcerts = "77777777-0000-4000-8000-000000000003", ghl = "o-pt1", fields = {
      name = "Auto Policy - PT-1", pipelineId = "pl-personal", pipelineStageId = "st-personal-bound",
      ["customFields.policy_number"] = "PT-1", ["customFields.carrier"] = "Geico",
      ["customFields.effective_date"] = "2024-01-01" } } },
    body = { event_type = "POLICY_UPDATE", data = {
      databaseId = "77777777-0000-4000-8000-000000000003", number = "PT-1", lineOfBusinessName = "Auto",
      carrierName = "" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-pt1", status = 200, body = { opportunity = { id = "o-pt1" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-pt1",
          body = { customFields = { { key = "carrier", field_value = "" } }, name = ABSENT } },
      },
      data = { action = "updated", opportunity_id = "o-pt1" },
    } },

  { name = "a resend without a NowCerts id finds the opportunity by the policy number's link",
    source = "nowcerts",
    links = { { kind = "policy_number", nowcerts = "pol-2", ghl = "o-2" } },
    body = { event_type = "POLICY_UPDATE", data = {
      policyNumber = "POL-2", policyType = "Auto", premium = 640, insuredEmail = "kim@example.com" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-2", status = 200, body = { opportunity = { id = "o-2" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-2",
          body = { name = "Auto Policy - POL-2", monetaryValue = 640 } },
      },
      data = { action = "updated", opportunity_id = "o-2", found_by = "number" },
    } },

  { name = "a quote goes to the Quoted stage",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-9" } },
    body = { event_type = "QUOTE_INSERT", data = {
      databaseId = "5f0e1d2c-3b4a-4968-8776-655443322110", number = "Q-5", lineOfBusinessName = "Personal Auto",
      premium = 455.25, insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-q5" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "GET", path = "/opportunities/search", query = { contact_id = "c-9" } },
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Personal Auto Policy - Q-5", monetaryValue = 455.25, contactId = "c-9",
            pipelineId = "pl-personal", pipelineStageId = "st-personal-quoted", status = "open" } },
      },
      data = { action = "created", opportunity_id = "o-q5", kind = "quote", stage = "Quoted",
        contact_found_by = "link" },
    } },

  { name = "a quote that becomes a policy moves its opportunity to Bound (same NowCerts id)",
    source = "nowcerts",
    links = { { kind = "policy", nowcerts = "5f0e1d2c-3b4a-4968-8776-655443322110", ghl = "o-q5" } },
    body = { event_type = "POLICY_UPDATE", data = {
      databaseId = "5f0e1d2c-3b4a-4968-8776-655443322110", number = "Q-5", isQuote = false,
      lineOfBusinessName = "Personal Auto", totalPremium = 470, insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-q5", status = 200, body = { opportunity = { id = "o-q5" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-q5",
          body = { pipelineId = "pl-personal", pipelineStageId = "st-personal-bound", monetaryValue = 470 } },
      },
      data = { action = "updated", opportunity_id = "o-q5", kind = "policy", stage = "Bound" },
    } },

  { name = "a quote bound as a new NowCerts record moves the quote's opportunity",
    source = "nowcerts",
    links = { { kind = "policy_number", nowcerts = "q-6", ghl = "o-q6" } },
    -- What ncghl last wrote to o-q6: the quote stage.
    snapshots = { { kind = "policy_number", nowcerts = "q-6", ghl = "o-q6", fields = {
      name = "Auto Policy - Q-6", pipelineId = "pl-personal", pipelineStageId = "st-personal-quoted",
      status = "open" } } },
    body = { event_type = "POLICY_INSERT", data = {
      databaseId = "11111111-2222-4333-8444-555555555555", number = "Q-6", isQuote = false,
      lineOfBusinessName = "Auto", totalPremium = 820, insuredEmail = "ray@example.com" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-q6", status = 200, body = { opportunity = { id = "o-q6" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-q6",
          body = { pipelineStageId = "st-personal-bound", monetaryValue = 820, status = ABSENT,
            contactId = ABSENT, locationId = ABSENT } },
      },
      data = { action = "updated", opportunity_id = "o-q6", found_by = "quote", stage = "Bound" },
    } },

  { name = "a late update of a quote whose number is already bound is skipped",
    source = "nowcerts",
    links = { { kind = "policy_number", nowcerts = "q-6", ghl = "o-q6" } },
    snapshots = { { kind = "policy_number", nowcerts = "q-6", ghl = "o-q6", fields = {
      name = "Auto Policy - Q-6", pipelineId = "pl-personal", pipelineStageId = "st-personal-bound",
      status = "open" } } },
    body = { event_type = "QUOTE_UPDATE", data = {
      databaseId = "66666666-7777-4888-8999-000000000000", number = "Q-6", isQuote = true,
      lineOfBusinessName = "Auto", totalPremium = 790, insuredEmail = "ray@example.com" } },
    answers = { PIPELINES },
    expect = {
      outcome = "done",
      data = { action = "skipped", opportunity_id = "o-q6" },
    } },

  { name = "a renewal (a new NowCerts record, same number as a bound policy) gets its own opportunity",
    source = "nowcerts",
    links = { { kind = "policy_number", nowcerts = "r-1", ghl = "o-r1" },
      { kind = "contact", nowcerts = INSURED_ID, ghl = "c-9" } },
    snapshots = { { kind = "policy_number", nowcerts = "r-1", ghl = "o-r1", fields = {
      name = "Auto Policy - R-1", pipelineId = "pl-personal", pipelineStageId = "st-personal-bound",
      status = "open" } } },
    body = { event_type = "POLICY_INSERT", data = {
      databaseId = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", number = "R-1", lineOfBusinessName = "Auto",
      totalPremium = 1300, insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-r2" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Auto Policy - R-1", contactId = "c-9", monetaryValue = 1300 } },
      },
      data = { action = "created", opportunity_id = "o-r2" },
    } },

  { name = "an update leaves stage and status as GHL has them when they are what ncghl last wrote",
    source = "nowcerts",
    links = { { kind = "policy", nowcerts = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", ghl = "o-77" } },
    snapshots = { { kind = "policy", nowcerts = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", ghl = "o-77", fields = {
      name = "Homeowners Policy - H-77", monetaryValue = "980.5", pipelineId = "pl-personal",
      pipelineStageId = "st-personal-bound", status = "open" } } },
    body = { event_type = "POLICY_UPDATE", data = {
      databaseId = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", number = "H-77",
      lineOfBusinessName = "Homeowners", totalPremium = 1010 } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "PUT", path = "/opportunities/o-77", status = 200, body = { opportunity = { id = "o-77" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "PUT", path = "/opportunities/o-77",
          body = { monetaryValue = 1010, pipelineId = ABSENT, pipelineStageId = ABSENT, status = ABSENT } },
      },
      data = { action = "updated" },
    } },

  { name = "GHL's webhook about an opportunity ncghl just wrote is skipped as an echo",
    source = "ghl",
    links = { { kind = "policy", nowcerts = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", ghl = "o-77" } },
    snapshots = { { kind = "policy", nowcerts = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9", ghl = "o-77", fields = {
      name = "Homeowners Policy - H-77", monetaryValue = "1010", pipelineId = "pl-personal",
      pipelineStageId = "st-personal-bound", status = "open" } } },
    body = { type = "OpportunityUpdate", locationId = "loc-1", id = "o-77", name = "Homeowners Policy - H-77",
      monetaryValue = 1010, pipelineId = "pl-personal", pipelineStageId = "st-personal-bound", status = "open",
      contactId = "c-ann", source = "" },
    expect = { outcome = "done", data = { action = "skipped" }, request_count = 0 } },

  { name = "a commercial line goes to the Commercial Lines pipeline",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-9" } },
    body = { event_type = "POLICY_INSERT", data = {
      number = "BOP-1", lineOfBusinessName = "Business Owners Policy (BOP)", premium = "2,400.00",
      insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-bop" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Business Owners Policy (BOP) Policy - BOP-1", monetaryValue = 2400,
            pipelineId = "pl-commercial", pipelineStageId = "st-commercial-bound" } },
      },
      data = { action = "created", pipeline = "Commercial Lines" },
    } },

  { name = "only insuredDatabaseId and no link: the insured is read from NowCerts and its contact written first",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = {
      number = "A-300", lineOfBusinessName = "Auto", premium = 300, insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "nowcerts", method = "GET", path = "/InsuredDetailList", status = 200,
        body = { value = { { id = INSURED_ID, firstName = "Lee", lastName = "Park", eMail = "lee@example.com",
          cellPhone = "(555) 010-2030", city = "Tampa" } } } },
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200, body = { contacts = {} } },
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200, body = { contacts = {} } },
      { service = "ghl", method = "POST", path = "/contacts/", status = 201, body = { contact = { id = "c-lee" } } },
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-300" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "nowcerts", method = "GET", path = "/InsuredDetailList",
          query = { ["$filter"] = "id eq " .. INSURED_ID } },
        { service = "ghl", method = "POST", path = "/contacts/",
          body = { firstName = "Lee", lastName = "Park", email = "lee@example.com", city = "Tampa" } },
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Auto Policy - A-300", contactId = "c-lee" } },
      },
      data = { action = "created", contact_id = "c-lee", contact_found_by = "nowcerts" },
    } },

  { name = "an insured named only by name is found by first and last name",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = {
      policyNumber = "POL-N1", policyType = "Renters", premium = 150,
      insuredFirstName = "Maria", insuredLastName = "Lopez" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "c-maria", firstName = "Maria", lastName = "Lopez" } } } },
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-n1" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/contacts/search",
          body = { filters = { { field = "firstName", value = "Maria" }, { field = "lastName", value = "Lopez" } } } },
        { service = "ghl", method = "POST", path = "/opportunities/", body = { contactId = "c-maria" } },
      },
      data = { action = "created", contact_found_by = "name" },
    } },

  { name = "two GHL contacts with the insured's name fail the event instead of picking one",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = {
      policyNumber = "POL-N2", policyType = "Renters", insuredFirstName = "Maria", insuredLastName = "Lopez" } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/contacts/search", status = 200,
        body = { contacts = { { id = "c-m1", firstName = "Maria", lastName = "Lopez" },
          { id = "c-m2", firstName = "maria", lastName = "LOPEZ" } } } },
    },
    expect = { outcome = "failed", error = "2 GHL contacts are named Maria Lopez" } },

  { name = "a policy that names no insured fails for good",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = { policyNumber = "POL-X", policyType = "Auto" } },
    answers = { PIPELINES },
    expect = { outcome = "failed", error = "names no insured" } },

  { name = "a policy without a number fails for good",
    source = "nowcerts",
    body = { event_type = "POLICY_INSERT", data = { policyType = "Auto", insuredEmail = "a@example.com" } },
    expect = { outcome = "failed", error = "has no policy number", request_count = 0 } },

  { name = "GHL answering 400 to the opportunity fails the event for good",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-9" } },
    body = { event_type = "POLICY_INSERT", data = {
      number = "E-400", lineOfBusinessName = "Auto", premium = 1, insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 400,
        body = { statusCode = 400, message = "Bad Request" } },
    },
    expect = { outcome = "failed", error = "GHL POST /opportunities/ failed" } },

  { name = "GHL answering 503 to the opportunity asks for a retry",
    source = "nowcerts",
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-9" } },
    body = { event_type = "POLICY_INSERT", data = {
      number = "E-503", lineOfBusinessName = "Auto", premium = 1, insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "POST", path = "/opportunities/", status = 503,
        body = { statusCode = 503, message = "Service Unavailable" } },
    },
    expect = { outcome = "retry", error = "GHL POST /opportunities/ failed" } },

  { name = "an opportunity change in GHL that ncghl did not write is ignored",
    source = "ghl",
    body = { type = "OpportunityStageUpdate", locationId = "loc-1", id = "o-elsewhere", name = "Boat - B1",
      pipelineId = "pl-personal", pipelineStageId = "st-personal-new", status = "open", monetaryValue = 10 },
    expect = { outcome = "ignored", request_count = 0 } },

  { name = "custom fields named by key go to GHL by the id its field list gives (of the opportunity's model)",
    source = "nowcerts",
    config = { GHL_LOCATION_ID = "loc-fields" },
    links = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-9" } },
    body = { event_type = "POLICY_INSERT", data = {
      number = "CF-1", lineOfBusinessName = "Auto", premium = 1, carrierName = "Progressive",
      insuredDatabaseId = INSURED_ID } },
    answers = {
      PIPELINES,
      { service = "ghl", method = "GET", path = "/locations/loc-fields/customFields", status = 200,
        body = { customFields = {
          { id = "cf-contact-pn", name = "Policy Number", fieldKey = "contact.policy_number", model = "contact" },
          { id = "cf-pn", name = "Policy Number", fieldKey = "opportunity.policy_number", model = "opportunity" },
          { id = "cf-carrier", name = "Carrier", fieldKey = "opportunity.carrier", model = "opportunity" },
        } } },
      { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = "o-cf" } } },
    },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "GET", path = "/locations/loc-fields/customFields", query = { model = "all" } },
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { customFields = {
            { id = "cf-pn", field_value = "CF-1" },
            { id = "cf-carrier", field_value = "Progressive" },
          } } },
      },
    } },
}
