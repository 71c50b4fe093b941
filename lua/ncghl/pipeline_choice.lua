-- ncghl.pipeline_choice: picks, for a policy or quote, a pipeline and stage
-- among a GHL location's own ones, and its opportunity status from the
-- policy's NowCerts status (SPEC section 10, Policies). Settings come from
-- mappings/pipelines.lua, which calls these functions; nothing here is
-- agency-specific.
--
-- How a choice was made is reported as `how`: "explicit" (a name written in
-- pipelines.lua), "matched" (found by words), "catch-all" (the fallback) or
-- "missing" (nothing fits: the location has no pipelines, or an explicit
-- name is not in GHL).
local util = require "ncghl.util"

local choice = {}

local fold = util.fold

local function fail(message)
  ncghl.fail({ retryable = false, message = message })
end

-- Words that name no line of business: "Personal Lines", "Auto Insurance"
-- and "Sales Pipeline" are matched by their other words only.
choice.NOISE = {
  ["line"] = true, ["lines"] = true, ["insurance"] = true, ["policy"] = true, ["policies"] = true,
  ["pipeline"] = true, ["pipelines"] = true, ["the"] = true, ["and"] = true, ["of"] = true,
  ["for"] = true, ["a"] = true, ["new"] = true,
}

-- Every event matches its line against the same few pipeline, stage and
-- hint names, so what is worked out of a name is kept per text: a bounded
-- table, emptied when full. Callers only read what it returns.
local function memo_by_text(fn)
  local cache, n = {}, 0
  return function(text)
    if type(text) ~= "string" then
      return fn(text)
    end
    local out = cache[text]
    if out == nil then
      out = fn(text)
      if n >= 4096 then
        cache, n = {}, 0
      end
      cache[text], n = out, n + 1
    end
    return out
  end
end

-- The folded words of a name: "Commercial Auto (BAP)" -> commercial, auto, bap.
choice.words = memo_by_text(function(text)
  local out = {}
  for w in fold(text):gmatch("[%w']+") do
    w = w:gsub("'", "")
    if w ~= "" then
      out[#out + 1] = w
    end
  end
  return out
end)

-- Two words match when equal, or when the shorter (4 letters or more) starts
-- the longer: "home" and "homeowners", "quote" and "quoted".
local function same_word(a, b)
  if a == b then
    return true
  end
  if #a > #b then
    a, b = b, a
  end
  return #a >= 4 and b:sub(1, #a) == a
end

local function has_word(words, w)
  for _, x in ipairs(words) do
    if same_word(x, w) then
      return true
    end
  end
  return false
end

-- Whether folded text contains one of `list` (phrases, compared as text,
-- as pipelines.lua's by_line words always were).
local function contains_any(text, list)
  for _, w in ipairs(type(list) == "table" and list or {}) do
    local f = fold(w)
    if f ~= "" and text:find(f, 1, true) then
      return true
    end
  end
  return false
end

local function usable(item)
  return type(item) == "table" and not util.empty(item.name) and not util.empty(item.id)
end

-- The item of `list` named `name` (trimmed, any case), or nil.
function choice.named(list, name)
  local want = fold(name)
  if want == "" then
    return nil
  end
  for _, item in ipairs(type(list) == "table" and list or {}) do
    if usable(item) and fold(item.name) == want then
      return item
    end
  end
  return nil
end

-- '"A", "B"' for a message, or "none".
choice.names_of = util.names_of

-- The first explicit rule of settings.by_line that takes `line`: a rule
-- takes a line that contains one of its words, or every line when it has
-- none. Returns the rule or nil.
function choice.explicit_rule(settings, line)
  local text = fold(line)
  for _, rule in ipairs(type(settings.by_line) == "table" and settings.by_line or {}) do
    if type(rule) == "table" and not util.empty(rule.pipeline)
        and (rule.words == nil or contains_any(text, rule.words)) then
      return rule
    end
  end
  return nil
end

-- Text with every run of other characters than letters and digits as one
-- space, and a space in front: " e o" for "E&O".
local spaced = memo_by_text(function(text)
  return " " .. (fold(text):gsub("[^%w]+", " "))
end)

-- Whether `list` has a phrase that starts at a word of the text: hints are
-- short ("rv", "bop"), and "rv" must not be found in "Services".
local function starts_word(text, list)
  local s = spaced(text)
  for _, w in ipairs(type(list) == "table" and list or {}) do
    local f = spaced(w):gsub(" +$", "")
    if f ~= "" and s:find(f, 1, true) then
      return true
    end
  end
  return false
end

-- The first hint (settings.hints) whose words the line has, or nil.
local function hint_for(settings, text)
  for _, h in ipairs(type(settings.hints) == "table" and settings.hints or {}) do
    if type(h) == "table" and starts_word(text, h.words) then
      return h
    end
  end
  return nil
end

-- The location's pipeline that best fits `line` by words: two points for
-- each word of the line in the pipeline's name, one when the name has a
-- word the line's hint points to ("commercial" for "General Liability").
-- Ties go to the pipeline GHL lists first. Returns the pipeline or nil.
function choice.matched_pipeline(settings, line, list)
  local text = fold(line)
  local line_words = {}
  for _, w in ipairs(choice.words(text)) do
    if not choice.NOISE[w] then
      line_words[#line_words + 1] = w
    end
  end
  local hint = hint_for(settings, text)
  local best, best_score = nil, 0
  for _, p in ipairs(type(list) == "table" and list or {}) do
    if usable(p) then
      local name_words = choice.words(p.name)
      local score = 0
      for _, w in ipairs(line_words) do
        if has_word(name_words, w) then
          score = score + 2
        end
      end
      if hint then
        for _, n in ipairs(type(hint.names) == "table" and hint.names or {}) do
          if has_word(name_words, fold(n)) then
            score = score + 1
            break
          end
        end
      end
      if score > best_score then
        best, best_score = p, score
      end
    end
  end
  return best
end

-- The catch-all: the first name of settings.catch_all that the location
-- has (the whole name: "Insurance" must not take "Auto Insurance"), else its
-- first pipeline.
function choice.catch_all_pipeline(settings, list)
  for _, n in ipairs(type(settings.catch_all) == "table" and settings.catch_all or {}) do
    local p = choice.named(list, n)
    if p then
      return p
    end
  end
  for _, p in ipairs(type(list) == "table" and list or {}) do
    if usable(p) then
      return p
    end
  end
  return nil
end

-- pipeline(settings, line, list) -> name, how. An explicit rule wins even
-- when GHL lacks its pipeline (that fails later, naming it).
function choice.pipeline(settings, line, list)
  local rule = choice.explicit_rule(settings, line)
  if rule then
    local p = choice.named(list, rule.pipeline)
    return util.str(rule.pipeline), p and "explicit" or "missing"
  end
  local p = choice.matched_pipeline(settings, line, list)
  if p then
    return util.str(p.name), "matched"
  end
  p = choice.catch_all_pipeline(settings, list)
  if p then
    return util.str(p.name), "catch-all"
  end
  return nil, "missing"
end

local function stage_has(stage, words)
  local sw = choice.words(stage.name)
  for _, w in ipairs(type(words) == "table" and words or {}) do
    if has_word(sw, fold(w)) then
      return true
    end
  end
  return false
end

-- stage(settings, kind, pipeline) -> name, how. kind: "quote" or "policy".
-- The explicit name (settings.stage[kind]) wins; else the first stage
-- matching one of settings.stage_words[kind], tried word by word in order;
-- else the first stage for a quote, the last one not named like a closed
-- stage (settings.closed_stage_words) for a policy.
function choice.stage(settings, kind, pipeline)
  local explicit = type(settings.stage) == "table" and settings.stage[kind] or nil
  local stages = type(pipeline) == "table" and type(pipeline.stages) == "table" and pipeline.stages or {}
  if not util.empty(explicit) then
    local s = choice.named(stages, explicit)
    return util.str(explicit), s and "explicit" or "missing"
  end
  local words = type(settings.stage_words) == "table" and settings.stage_words[kind] or nil
  for _, w in ipairs(type(words) == "table" and words or {}) do
    for _, s in ipairs(stages) do
      if usable(s) and stage_has(s, { w }) then
        return util.str(s.name), "matched"
      end
    end
  end
  local pick
  for _, s in ipairs(stages) do
    if usable(s) then
      if kind == "quote" then
        return util.str(s.name), "catch-all"
      elseif not stage_has(s, settings.closed_stage_words) then
        pick = s
      end
    end
  end
  if pick then
    return util.str(pick.name), "catch-all"
  end
  return nil, "missing"
end

-- The accepted status texts, as a message lists them.
local function accepted(settings)
  local out, seen = {}, {}
  for _, group in ipairs({ "active", "lost" }) do
    for _, name in ipairs(type(settings.statuses) == "table" and settings.statuses[group] or {}) do
      local key = fold(name)
      if not seen[key] then
        seen[key] = true
        out[#out + 1] = util.str(name)
      end
    end
  end
  return table.concat(out, ", ")
end

-- "Non-Renewal", "non renewal" and "NON_RENEWAL" are one status.
local function status_key(s)
  return (fold(s):gsub("[%s_%-]+", " "))
end

-- state(settings, status, active, field) -> "active" or "lost", and the
-- status text as the record wrote it (nil when it has none). status: the
-- record's status text (settings.statuses lists the accepted ones, in two
-- groups); active: its `active` flag, read only when it has no status
-- (false is then "lost"). An unknown or non-text status fails the event
-- naming `field` and the accepted values: it never silently becomes one.
function choice.state(settings, status, active, field)
  if util.empty(status) then
    if active == false then
      return "lost", nil
    end
    return "active", nil
  end
  field = field or "status"
  if type(status) ~= "string" then
    fail(("the record's %s is %s, not a status name; accepted values: %s (pipelines.statuses in pipelines.lua)")
      :format(field, util.str(status) or type(status), accepted(settings)))
  end
  local key = status_key(status)
  for _, group in ipairs({ "active", "lost" }) do
    for _, name in ipairs(type(settings.statuses) == "table" and settings.statuses[group] or {}) do
      if status_key(name) == key then
        return group, status
      end
    end
  end
  fail(('unknown policy status "%s" in field %s; accepted values: %s (pipelines.statuses in pipelines.lua)')
    :format(status, field, accepted(settings)))
end

-- choose(settings, ctx) -> { pipeline, stage, status, how, stage_how,
-- policy_status }: the whole choice for one record. ctx: quote (boolean),
-- line (text or nil), status and active (the record's), status_field (the
-- field the status came from, for messages), pipelines (the location's).
function choice.choose(settings, ctx)
  local kind = ctx.quote and "quote" or "policy"
  -- A quote's active flag says nothing about the deal: only a policy's counts.
  local active
  if not ctx.quote then
    active = ctx.active
  end
  local state, status_text = choice.state(settings, ctx.status, active, ctx.status_field)
  local name, how = choice.pipeline(settings, ctx.line, ctx.pipelines)
  local stage, stage_how
  if name then
    stage, stage_how = choice.stage(settings, kind, choice.named(ctx.pipelines, name))
  end
  local statuses = type(settings.status) == "table" and settings.status or {}
  local status
  if state == "lost" then
    status = statuses.lost or "lost"
  else
    status = statuses[kind] or "open"
  end
  return {
    pipeline = name, stage = stage, status = status, how = how, stage_how = stage_how,
    policy_status = status_text, state = state,
  }
end

-- choices(settings, list): what choose gives each kind of line against the
-- location's pipelines `list`, for `ncghl doctor`: one entry per explicit
-- rule, per hint (settings.hints, by its label) and for any other line,
-- each for quotes and for policies:
-- { line, kind, pipeline, stage, how, stage_how }. `how` is "missing" when
-- the pipeline or the stage is.
function choice.choices(settings, list)
  local lines = {}
  for _, rule in ipairs(type(settings.by_line) == "table" and settings.by_line or {}) do
    if type(rule) == "table" and not util.empty(rule.pipeline) then
      local sample = type(rule.words) == "table" and rule.words[1] or ""
      lines[#lines + 1] = { label = util.str(rule.label or rule.pipeline), line = sample, rule = rule }
    end
  end
  for _, h in ipairs(type(settings.hints) == "table" and settings.hints or {}) do
    if type(h) == "table" and type(h.words) == "table" and h.words[1] then
      lines[#lines + 1] = { label = util.str(h.label or h.words[1]), line = util.str(h.words[1]) }
    end
  end
  lines[#lines + 1] = { label = "any other line", line = "" }
  local out = {}
  for _, l in ipairs(lines) do
    for _, kind in ipairs({ "quote", "policy" }) do
      local name, how, stage, stage_how
      if l.rule then
        local p = choice.named(list, l.rule.pipeline)
        name, how = util.str(l.rule.pipeline), p and "explicit" or "missing"
      else
        name, how = choice.pipeline(settings, l.line, list)
      end
      if name then
        stage, stage_how = choice.stage(settings, kind, choice.named(list, name))
      end
      if how ~= "missing" and stage_how == "missing" and not util.empty(settings.stage and settings.stage[kind]) then
        how = "missing"
      end
      out[#out + 1] = { line = l.label, kind = kind, pipeline = name, stage = stage, how = how,
        stage_how = stage_how }
    end
  end
  return out
end

-- ids(list, t) -> pipeline id, stage id: the names t.pipeline and t.stage
-- (as choose returns them) looked up in the location's pipelines `list`.
-- Returns nil and a message naming what GHL lacks; no stage asked for
-- gives a nil stage id (GHL then uses the pipeline's first stage).
function choice.ids(list, t)
  if util.empty(t.pipeline) then
    return nil, nil, ("no pipeline was chosen for this record: GHL's location has %s")
      :format(#(type(list) == "table" and list or {}) == 0 and "no pipelines"
        or "pipelines " .. choice.names_of(list) .. " and pipelines.lua chose none")
  end
  local p = choice.named(list, t.pipeline)
  if not p then
    return nil, nil, ('GHL has no pipeline named "%s" (it has: %s); change pipelines.lua or add it in GHL')
      :format(util.str(t.pipeline), choice.names_of(list))
  end
  if util.empty(t.stage) then
    return util.str(p.id), nil
  end
  local s = choice.named(p.stages, t.stage)
  if not s then
    return nil, nil, ('GHL pipeline "%s" has no stage named "%s" (it has: %s); change pipelines.lua or add it in GHL')
      :format(util.str(p.name), util.str(t.stage), choice.names_of(p.stages))
  end
  return util.str(p.id), util.str(s.id)
end

return choice
