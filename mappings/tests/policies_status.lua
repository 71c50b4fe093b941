-- Mapping test cases for the default pipeline choice against a GHL location
-- whose pipelines have names of its own (pipelines.lua names none), for
-- the opportunity status that follows the policy's NowCerts status, and
-- for custom-field values sent in the form GHL's schema takes.

local function stages(prefix, names)
  local out = {}
  for _, n in ipairs(names) do
    out[#out + 1] = { id = prefix .. "-" .. n:lower():gsub("%W+", "-"), name = n }
  end
  return out
end

-- The location "loc-other": no "Personal Lines" or "Commercial Lines".
local PIPELINES = {
  service = "ghl", method = "GET", path = "/opportunities/pipelines", status = 200,
  body = { pipelines = {
    { id = "pl-auto", name = "Auto Insurance", stages = stages("st-auto", { "New Lead", "Quote Sent", "Sold", "Lost" }) },
    { id = "pl-biz", name = "Business Insurance",
      stages = stages("st-biz", { "Inquiry", "Proposal", "Issued", "Closed Lost" }) },
    { id = "pl-home", name = "Homeowners & Renters", stages = stages("st-home", { "Lead", "Quoted", "Bound" }) },
    { id = "pl-sales", name = "Sales Pipeline", stages = stages("st-sales", { "Open", "Won" }) },
  } },
}

local CONFIG = { GHL_LOCATION_ID = "loc-other" }
local INSURED_ID = "5b1d2c3e-4f50-4a61-8b72-9c8d7e6f5a4b"
local LINKS = { { kind = "contact", nowcerts = INSURED_ID, ghl = "c-ins" } }

local function created(id)
  return { service = "ghl", method = "POST", path = "/opportunities/", status = 201, body = { opportunity = { id = id } } }
end

local function policy(fields)
  local d = { insuredDatabaseId = INSURED_ID, premium = 100 }
  for k, v in pairs(fields) do
    d[k] = v
  end
  return d
end

return {
  { name = "a commercial line finds the location's business pipeline and its Issued stage",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_INSERT", data = policy({
      number = "GL-1", lineOfBusinessName = "Commercial General Liability", status = "Active", active = true }) },
    answers = { PIPELINES, created("o-gl") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-biz", pipelineStageId = "st-biz-issued", status = "open", contactId = "c-ins" } },
      },
      data = { pipeline = "Business Insurance", how = "matched", stage = "Issued", stage_how = "matched",
        status = "open", policy_status = "Active" },
    } },

  { name = "a line that shares a word with a pipeline's name goes there",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_INSERT", data = policy({ number = "HO-1", lineOfBusinessName = "Homeowners" }) },
    answers = { PIPELINES, created("o-ho") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-home", pipelineStageId = "st-home-bound" } },
      },
      data = { pipeline = "Homeowners & Renters", how = "matched", stage = "Bound" },
    } },

  { name = "a quote sits at the quote stage, open",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "QUOTE_INSERT", data = policy({ number = "Q-1", lineOfBusinessName = "Personal Auto" }) },
    answers = { PIPELINES, created("o-q1") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-auto", pipelineStageId = "st-auto-quote-sent", status = "open" } },
      },
      data = { kind = "quote", pipeline = "Auto Insurance", stage = "Quote Sent", stage_how = "matched" },
    } },

  { name = "a line no pipeline name fits goes to the catch-all pipeline",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_INSERT", data = policy({ number = "L-1", lineOfBusinessName = "Term Life" }) },
    answers = { PIPELINES, created("o-l1") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-sales", pipelineStageId = "st-sales-won" } },
      },
      data = { pipeline = "Sales Pipeline", how = "catch-all", stage = "Won", stage_how = "matched" },
    } },

  { name = "a cancelled policy's opportunity is lost",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_UPDATE", data = policy({
      number = "A-1", lineOfBusinessName = "Auto", status = "Cancelled", active = false }) },
    answers = { PIPELINES, created("o-a1") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineId = "pl-auto", pipelineStageId = "st-auto-sold", status = "lost" } },
      },
      data = { status = "lost", policy_status = "Cancelled" },
    } },

  { name = "expired, non-renewed and declined are lost too, however they are written",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_UPDATE", data = policy({
      number = "A-2", lineOfBusinessName = "Auto", status = "NON_RENEWAL" }) },
    answers = { PIPELINES, created("o-a2") },
    expect = {
      outcome = "done",
      requests = { { service = "ghl", method = "POST", path = "/opportunities/", body = { status = "lost" } } },
      data = { status = "lost", policy_status = "NON_RENEWAL" },
    } },

  { name = "a declined quote is lost, at the quote stage",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "QUOTE_UPDATE", data = policy({
      number = "Q-2", lineOfBusinessName = "Auto", status = "Declined" }) },
    answers = { PIPELINES, created("o-q2") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { pipelineStageId = "st-auto-quote-sent", status = "lost" } },
      },
    } },

  { name = "a policy without a status whose active flag is false is lost",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_UPDATE", data = policy({ number = "A-3", lineOfBusinessName = "Auto", active = false }) },
    answers = { PIPELINES, created("o-a3") },
    expect = {
      outcome = "done",
      requests = { { service = "ghl", method = "POST", path = "/opportunities/", body = { status = "lost" } } },
    } },

  { name = "a quote's active flag says nothing: without a status it is open",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "QUOTE_INSERT", data = policy({ number = "Q-3", lineOfBusinessName = "Auto", active = false }) },
    answers = { PIPELINES, created("o-q3") },
    expect = {
      outcome = "done",
      requests = { { service = "ghl", method = "POST", path = "/opportunities/", body = { status = "open" } } },
    } },

  { name = "an unknown status fails for good, naming the field and the accepted values",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = { event_type = "POLICY_UPDATE", data = policy({ number = "A-4", lineOfBusinessName = "Auto", status = "Suspended" }) },
    answers = { PIPELINES },
    expect = {
      outcome = "failed",
      error = 'unknown policy status "Suspended" in field status; accepted values: Active, .*Cancelled, .*Non%-Renewal',
      -- Only the pipelines were read: nothing was written.
      request_count = 1,
    } },

  { name = "a policy number that arrives as a JSON number is sent as text",
    source = "nowcerts", config = CONFIG, links = LINKS,
    body = '{"event_type":"POLICY_INSERT","data":{"number":120045,"lineOfBusinessName":"Auto",'
      .. '"totalPremium":300,"carrierName":"Progressive","insuredDatabaseId":"' .. INSURED_ID .. '"}}',
    answers = { PIPELINES, created("o-n") },
    expect = {
      outcome = "done",
      requests = {
        { service = "ghl", method = "POST", path = "/opportunities/",
          body = { name = "Auto Policy - 120045",
            customFields = {
              { key = "policy_number", field_value = "120045" },
              { key = "carrier", field_value = "Progressive" },
            } } },
      },
    } },
}
