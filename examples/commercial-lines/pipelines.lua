-- Which GHL pipeline, stage and status a NowCerts policy or quote goes to.
--
-- Write names, as GHL shows them: ncghl looks their ids up in GHL
-- (GET /opportunities/pipelines, read once and kept) and fails the event,
-- naming what is missing, if GHL has no pipeline or stage of that name.
-- Names are compared without case and surrounding spaces.
local pipelines = {}

-- The pipeline, by line of business. The first rule that matches wins. A
-- rule matches when the record's line of business (policyType,
-- lineOfBusinessName, ...) contains one of its words, in any case; a rule
-- without words takes every line, so keep it last.
pipelines.by_line = {
  { pipeline = "Commercial Lines",
    words = { "commercial", "business", "general liability", "workers comp", "workers' comp",
      "bop", "professional liability", "errors and omissions", "e&o", "d&o", "cyber", "garage",
      "inland marine", "builders risk", "liquor", "cargo", "trucking" } },
  { pipeline = "Personal Lines" }, -- everything else: auto, home, renters, umbrella, ...
}

-- The stage: quotes wait in "Quoted"; a quote that becomes a policy moves
-- its opportunity to "Bound" (the same opportunity, not a new one).
pipelines.stage = { quote = "Quoted", policy = "Bound" }

-- The status: open, won, lost or abandoned.
pipelines.status = { quote = "open", policy = "open" }

local function matches(line, words)
  if words == nil then
    return true
  end
  for _, w in ipairs(words) do
    if line:find(w:lower(), 1, true) then
      return true
    end
  end
  return false
end

-- Called for every policy and quote with the record and
-- ctx = { quote = true|false, line = "Homeowners" (or nil) }.
-- Returns { pipeline = name, stage = name, status = "open" }.
function pipelines.choose(record, ctx)
  local line = tostring(ctx.line or ""):lower()
  local chosen
  for _, rule in ipairs(pipelines.by_line) do
    if matches(line, rule.words) then
      chosen = rule.pipeline
      break
    end
  end
  local kind = ctx.quote and "quote" or "policy"
  return { pipeline = chosen, stage = pipelines.stage[kind], status = pipelines.status[kind] }
end

return pipelines
