-- Which GHL pipeline, stage and status a NowCerts policy or quote goes to.
--
-- Out of the box nothing here names a pipeline: ncghl reads the location's
-- own pipelines (GET /opportunities/pipelines, read once and kept) and picks
-- one by the policy's line of business, so it works whatever your pipelines
-- are called. Write names below only to decide yourself; names you write win,
-- and an event fails, naming what is missing, if GHL has no pipeline or
-- stage of that name. Names are compared without case and surrounding spaces.
-- `ncghl map` shows the choice made for a record and how (explicit, matched
-- or catch-all); `ncghl doctor` shows it for every kind of line.
local choice = require "ncghl.pipeline_choice"

local pipelines = {}

-- Explicit pipelines, by line of business (empty: none). The first rule
-- that matches wins. A rule matches when the record's line of business
-- (policyType, lineOfBusinessName, ...) contains one of its words, in any
-- case; a rule without words takes every line, so keep it last. A line no
-- rule takes is matched as below. For example:
--   pipelines.by_line = {
--     { pipeline = "Commercial Lines", words = { "commercial", "general liability", "bop" } },
--     { pipeline = "Personal Lines" },
--   }
pipelines.by_line = {}

-- Without a rule, the line's words are matched against the location's
-- pipeline names ("Homeowners" goes to a pipeline "Homeowners Insurance").
-- These hints help when the names share no word with the line: a line
-- containing one of a hint's words prefers a pipeline whose name has one of
-- its names ("General Liability" -> "Business Insurance"). The first hint
-- that matches is used, so "Commercial Auto" is commercial.
pipelines.hints = {
  { label = "commercial lines", names = { "commercial", "business" },
    words = { "commercial", "business", "general liability", "workers comp", "workers' comp",
      "bop", "professional liability", "errors and omissions", "e&o", "d&o", "cyber", "garage",
      "inland marine", "builders risk", "liquor", "cargo", "trucking" } },
  { label = "personal lines", names = { "personal", "home", "auto" },
    words = { "personal", "auto", "home", "homeowner", "renters", "condo", "dwelling", "umbrella",
      "motorcycle", "boat", "watercraft", "rv", "flood", "mobile home" } },
}

-- When no pipeline matches: the first of these names the location has,
-- else the location's first pipeline.
pipelines.catch_all = { "Insurance", "Sales", "Sales Pipeline", "Pipeline" }

-- Explicit stages (nil: chosen by words). Quotes wait in the quote stage; a
-- quote that becomes a policy moves its opportunity to the policy stage (the
-- same opportunity, not a new one). For example:
--   pipelines.stage = { quote = "Quoted", policy = "Bound" }
pipelines.stage = {}

-- Without explicit stages: the first stage whose name has one of these
-- words (tried in this order), else the first stage for a quote and the
-- last stage not named like a closed one for a policy.
pipelines.stage_words = {
  quote = { "quoted", "quote", "proposal", "proposed" },
  policy = { "bound", "won", "sold", "issued", "active" },
}
pipelines.closed_stage_words = { "lost", "dead", "closed", "cancelled", "canceled", "declined", "abandoned" }

-- The opportunity's status (open, won, lost or abandoned): a quote's, an
-- active policy's ("open", or "won" if a bound policy is a won deal to
-- you), and a lost one's (a cancelled, expired, non-renewed or declined
-- policy or quote).
pipelines.status = { quote = "open", policy = "open", lost = "lost" }

-- What the record's NowCerts status means (PolicyDetailList `status`;
-- compared without case, "-", "_" or spaces mattering). A status not listed
-- fails the event, naming the accepted values: add it to the group it
-- belongs to. A record without a status is active, unless its `active`
-- flag is false (then lost).
pipelines.statuses = {
  active = { "Active", "Bound", "Pending Cancel", "Renewing", "Renewed", "Reinstated", "Reinstating",
    "Rewriting", "Rewritten", "Replaced" },
  lost = { "Cancelled", "Canceled", "Expired", "Non-Renewal", "Non-Renewed", "Declined" },
}

-- Called for every policy and quote with the record and ctx = { quote =
-- true|false, line = "Homeowners" (or nil), status = "Active" (or nil),
-- active = true|false|nil, status_field = "status", pipelines = the
-- location's [{id, name, stages = [{id, name}]}] }. Returns { pipeline =
-- name, stage = name, status = "open", how = "explicit"|"matched"|
-- "catch-all"|"missing", stage_how = ... }.
function pipelines.choose(record, ctx)
  return choice.choose(pipelines, ctx)
end

-- For `ncghl doctor`: what each explicit rule, each hint and any other line
-- get in a location with these pipelines, for quotes and for policies:
-- a list of { line, kind = "quote"|"policy", pipeline, stage, how }.
function pipelines.choices(location_pipelines)
  return choice.choices(pipelines, location_pipelines)
end

return pipelines
