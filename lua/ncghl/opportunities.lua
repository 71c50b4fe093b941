-- ncghl.opportunities: a NowCerts policy or quote becomes a GHL opportunity
-- on its insured's contact (SPEC section 6). Two functions, which the engine
-- offers routes as GHL-side helpers: upsert (ghl.upsert_opportunity, the
-- route's work) and echo (ghl.opportunity_echo, the route for GHL's
-- Opportunity* webhooks). What is mapped, and to which pipeline, is the
-- agency's: mappings/policies.lua and mappings/pipelines.lua.
--
-- The rules that matter: the contact is found (or, if GHL has none,
-- created) before the opportunity; one NowCerts record is one opportunity,
-- found again through the stored links, so an update PUTs the same one and a
-- quote that becomes a policy moves its opportunity instead of adding one;
-- an update never sends what UpdateOpportunityDto does not declare.
local json = require "ncghl.json"
local util = require "ncghl.util"
local map = require "ncghl.map"
local fields = require "ncghl.fields"
local sync = require "ncghl.sync"
local ghl = require "ncghl.ghl"
local nowcerts = require "ncghl.nowcerts"
local choice = require "ncghl.pipeline_choice"

local opportunities = {}

-- What ncghl last wrote to an opportunity, field by field, is the snapshot
-- of the link that holds it (by the policy's NowCerts id, else by its
-- number): {field = value as compared}, or nil.
local function link_of(opp_id)
  local pid = ncghl.link_get("policy", "nowcerts", opp_id)
  if pid then
    return "policy", pid
  end
  local number = ncghl.link_get("policy_number", "nowcerts", opp_id)
  if number then
    return "policy_number", number
  end
  return nil
end

-- The opportunity's snapshot, decoded, or nil.
local function snapshot_of(opp_id)
  local kind, key = link_of(opp_id)
  local text = kind and ncghl.snapshot_get(kind, key)
  local ok, snap = pcall(json.decode, text or "")
  return ok and type(snap) == "table" and snap or nil
end

-- {field = base} of a decoded snapshot, or nil.
local function written_in(snap)
  if not snap or type(snap.fields) ~= "table" then
    return nil
  end
  local out = {}
  for k, f in pairs(snap.fields) do
    if type(f) == "table" and type(f.base) == "string" then
      out[k] = f.base
    end
  end
  return next(out) and out or nil
end

-- After a write: the fields ncghl sent from data (not constants), as
-- compared, become the snapshot of every link that holds the opportunity.
-- A custom field's entry in the snapshot: "customFields.<key or id>".
local function custom_key(item)
  local name = type(item) == "table" and (util.str(item.key) or util.str(item.id))
  return name and "customFields." .. name or nil
end

-- kept: {field = base or false} for fields this write did not send because
-- the record did not carry them; their base stays what it was.
local function record_written(opp_id, body, trace, links, seen_at, insured, kept)
  local snap = { v = 1, fields = {}, seen_at = seen_at, insured = insured }
  for field, v in pairs(body) do
    local how = trace and trace[field]
    if how and how ~= "const" then
      if field == "customFields" and type(v) == "table" then
        -- One entry per custom field, so a later write sends only those
        -- whose value changed (an agent's edit of another one stays).
        for _, item in ipairs(v) do
          local k = custom_key(item)
          local n = k and fields.normalise(k, item.field_value)
          if n ~= nil and n ~= "" then
            snap.fields[k] = { base = n }
          end
        end
      else
        local n = fields.normalise(field, v)
        if n ~= nil and n ~= "" then
          snap.fields[field] = { base = n }
        end
      end
    end
  end
  for field, base in pairs(kept or {}) do
    snap.fields[field] = base and { base = base } or nil
  end
  local text = json.encode(snap)
  for _, l in ipairs(links) do
    -- Another process holding the store's write lock: wait, then write.
    while ncghl.snapshot_put(l[1], l[2], opp_id, text) == false do
      ncghl.wait_writable()
    end
  end
end

local function fail(message)
  ncghl.fail({ retryable = false, message = message })
end

-- NowCerts ids are GUIDs and policy numbers match without case in NowCerts:
-- neither's case carries meaning, so links and locks use lower case.
local function key_of(v)
  local s = util.str(v)
  if not s then
    return nil
  end
  s = util.fold(s)
  return s ~= "" and s or nil
end

local fold = util.fold

-- Whose policy a record is, as the record names its insured
-- ("email:ann@example.com"), or nil. Kept in the opportunity's snapshot:
-- a policy number is unique per carrier, not across an agency's book, so a
-- record without a NowCerts id whose number is linked already is that
-- opportunity's policy only if it names the same insured.
local function insured_key(src, m)
  local id = key_of(map.get(src, m.insured_id))
  if id then
    return "id:" .. id
  end
  local cid = m.contact_id ~= nil and util.str((map.get(src, m.contact_id)))
  if cid and not util.empty(cid) then
    return "contact:" .. cid
  end
  local view = map.apply(m.insured_to_contact, src)
  local email = util.email(view.email)
  if email then
    return "email:" .. email
  end
  local phone = util.phone10(view.phone)
  if phone then
    return "phone:" .. phone
  end
  if not util.empty(view.firstName) and not util.empty(view.lastName) then
    return "name:" .. fold(view.firstName) .. " " .. fold(view.lastName)
  end
  return nil
end

-- Two insured keys name different people only when both are known and
-- say it the same way (an e-mail against an id tells nothing).
local function other_insured(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then
    return false
  end
  local ka, kb = a:match("^(%a+):"), b:match("^(%a+):")
  return ka == kb and a ~= b
end

local function pick(t, keys)
  local out = {}
  for _, k in ipairs(keys) do
    out[k] = t[k]
  end
  return out
end

-- The contact a record's insured is, found or created (never a blind
-- create: the sync looks it up first). Returns its id and how.
local function contact_for(src, m)
  local ins_id = key_of(map.get(src, m.insured_id))
  if ins_id then
    local linked = ncghl.link_get("contact", "ghl", ins_id)
    if linked then
      return linked, "link"
    end
  end
  -- A contact the record names itself (policies.contact_id), while GHL
  -- has it; a deleted or unknown one is looked for as if not named.
  local given = m.contact_id ~= nil and util.str((map.get(src, m.contact_id)))
  if given and not util.empty(given) and ghl.get_contact(given) then
    return given, "contact_id"
  end
  local maps = util.require_optional("contacts") or {}
  local view = map.apply(m.insured_to_contact, src)
  local named = util.email(view.email) ~= nil or util.phone10(view.phone) ~= nil
    or (not util.empty(view.firstName) and not util.empty(view.lastName))
  -- An insured known by its id but not linked: the insured itself, read
  -- from NowCerts, finds or makes its contact through the person's own sync,
  -- which knows a contact deleted in GHL (not made again) and one linked to
  -- another insured (never taken over). The policy's copy of the name
  -- could match another person who shares it.
  local insured = ins_id and nowcerts.get_insured(ins_id)
  if ins_id and not insured and not named then
    fail(("NowCerts has no insured %s (the record's insuredDatabaseId)"):format(ins_id))
  end
  if insured then
    local r = sync.contact("nowcerts", insured, {
      maps = {
        insured_id = maps.insured_id or { "databaseId", "id" },
        insured_to_contact = m.insured_contact,
        contact_to_insured = maps.contact_to_insured or {},
        placeholders = maps.placeholders,
      },
      fresh = true,
    })
    if util.empty(r.contact_id) then
      if r.action == "skipped" then
        -- Left alone on purpose (its contact was deleted in GHL, ...): so
        -- is the policy, with the same reason, rather than failing for good.
        return nil, nil, r.reason or r.message
      end
      fail(("the policy's insured %s has no GHL contact: %s"):format(ins_id, tostring(r.message)))
    end
    return r.contact_id, "nowcerts"
  end
  if not named then
    fail("the record names no insured: it needs insuredDatabaseId, insuredEmail (or email), "
      .. "insuredFirstName and insuredLastName, or the contactId of a contact GHL has")
  end
  -- The policy names its insured by its own fields (insuredEmail, ...): a
  -- contact that exists is used as it is (the insured's own events keep it
  -- up to date); only a missing one is created from them.
  local id, how = sync.ensure_contact(view, { nowcerts_id = ins_id, match_name = true })
  return id, how
end

-- An opportunity of the contact with exactly this name that no NowCerts
-- record is linked to: one ncghl made just before a crash lost its link, or
-- one made by hand. Taking it over is what keeps a re-run from duplicating.
local function adoptable(contact_id, name, number)
  for _, o in ipairs(ghl.search_opportunities(contact_id, number)) do
    local id = type(o) == "table" and util.str(o.id)
    if id and id ~= "" and fold(o.name) == fold(name)
        and (o.contactId == nil or util.str(o.contactId) == contact_id)
        and not ncghl.link_get("policy", "nowcerts", id)
        and not ncghl.link_get("policy_number", "nowcerts", id) then
      return id
    end
  end
  return nil
end

-- GHL refused the call (400, 404 or 422) with `words` in its answer. GHL
-- documents none of these refusals' wording, so a phrase is looked for.
local function refused_saying(res, words)
  if res.ok or res.retryable or (res.status ~= 400 and res.status ~= 404 and res.status ~= 422) then
    return false
  end
  return (res.body or ""):lower():find(words, 1, true) ~= nil
end

-- GHL refused the pipeline or stage id. The ids came from the pipelines
-- read earlier, which may be stale (a pipeline rebuilt in GHL): worth one
-- more try with the list read again.
local function pipeline_refused(res)
  return refused_saying(res, "pipeline")
end

-- The linked opportunity is gone (deleted in GHL): make a new one.
local function opportunity_gone(res)
  return (not res.ok and not res.retryable and res.status == 404)
    or refused_saying(res, "opportunity not found")
end

-- GHL refused an opportunity for its contact: the contact is not there.
local function contact_gone(res)
  return refused_saying(res, "contact not found")
end

-- What pipelines.lua chooses with: the record's kind, line of business and
-- status (policies.lua says where they are read), and, added by choose, the
-- location's pipelines.
local function choice_ctx(m, src, quote)
  local ctx = {
    quote = quote,
    line = util.str((map.get(src, m.line_of_business))),
    status_field = type(m.status) == "table" and type(m.status[1]) == "string" and m.status[1] or "status",
  }
  -- An older policies.lua may have neither map: no status then.
  if m.status ~= nil then
    ctx.status = map.get(src, m.status)
  end
  if m.active ~= nil then
    ctx.active = map.get(src, m.active) -- false is a value here
  end
  return ctx
end

-- pipelines.lua's choice for the record, against the location's pipelines
-- (read once and kept), and the ids of the names it chose. A name missing
-- from pipelines read earlier may be new in GHL: they are read again once,
-- and the choice made again, before the event fails naming what is missing.
local function choose(m, src, ctx)
  local list, fresh = ghl.pipelines(false)
  local t, pipeline_id, stage_id, why
  for _ = 1, 2 do
    ctx.pipelines = list
    t = m.pipeline(src, ctx)
    if type(t) ~= "table" then
      fail("pipelines.lua chose no pipeline for this record")
    end
    pipeline_id, stage_id, why = choice.ids(list, t)
    if not why or fresh then
      break
    end
    list, fresh = ghl.pipelines(true), true
  end
  if why then
    fail(why)
  end
  return t, pipeline_id, stage_id
end

-- upsert_opportunity(src, m, opts): the NowCerts policy or quote `src`,
-- mapped with `m` (mappings/policies.lua), written to GHL as one
-- opportunity. opts.quote: true for a quote, false for a policy (the
-- record's own isQuote wins when it has one).
--
-- The opportunity is looked for, in this order:
--   1. the link of the record's NowCerts id (kind "policy");
--   2. the link of its number (kind "policy_number"): taken as is when the
--      record has no NowCerts id (the source design's payloads), and taken
--      over by another NowCerts record with that number only while it is
--      still a quote (a quote that became a policy; a renewal that keeps its
--      number gets an opportunity of its own);
--   3. the contact's opportunity with exactly this name and no link;
-- and created when none is found. A quote never moves an opportunity ncghl
-- already put at the policy stage: that event is skipped. "Still a quote"
-- and "at the policy stage" mean the stage ncghl last wrote there (its echo
-- fingerprint), so an agent moving the opportunity in GHL changes neither.
function opportunities.upsert(src, m, opts)
  opts = opts or {}
  if type(src) ~= "table" then
    src = {}
  end
  local number = util.str((map.get(src, m.number)))
  if not number or util.trim(number) == "" then
    fail("the record has no policy number (policyNumber or number)")
  end
  local number_key = key_of(number)
  local quote = map.get(src, m.is_quote)
  if type(quote) ~= "boolean" then
    quote = opts.quote == true
  end
  local pid = key_of((map.get(src, m.policy_id)))
  local ctx = choice_ctx(m, src, quote)

  -- Two events about the same policy run one after the other from here on.
  ncghl.lock(pid and "policy:nowcerts:" .. pid, "policy:number:" .. number_key)

  local target, pipeline_id, stage_id = choose(m, src, ctx)
  -- The stage id this record's line would have as the other kind (quote or
  -- policy); nil when GHL has no such stage, which then cannot match.
  -- Worked out once: what it reads (the record, the pipelines already read)
  -- does not change between its uses below.
  local other_known, other
  local function other_stage()
    if not other_known then
      other_known = true
      local octx = {}
      for k, v in pairs(ctx) do
        octx[k] = v
      end
      octx.quote = not quote
      local t = m.pipeline(src, octx)
      if type(t) == "table" then
        local _
        _, other = choice.ids(ctx.pipelines, t)
      end
    end
    return other
  end
  -- An opportunity's snapshot, read (and decoded) once per id: this
  -- function writes no snapshot before its end, and other events about the
  -- same policy wait for its locks. last_written: what ncghl last wrote.
  local snap_by_id, last_by_id = {}, {}
  local function snap(id)
    local sn = snap_by_id[id]
    if sn == nil then
      sn = snapshot_of(id) or false
      snap_by_id[id] = sn
    end
    return sn or nil
  end
  local function last_written(id)
    local last = last_by_id[id]
    if last == nil then
      last = written_in(snap(id)) or false
      last_by_id[id] = last
    end
    return last or nil
  end
  local function written_stage(id)
    local last = last_written(id)
    return last and last.pipelineStageId
  end

  local insured = insured_key(src, m)
  local opp_id, found_by
  if pid then
    opp_id = ncghl.link_get("policy", "ghl", pid)
    found_by = opp_id and "link"
  end
  if not opp_id then
    local by_number = ncghl.link_get("policy_number", "ghl", number_key)
    if by_number and not pid then
      local sn = snap(by_number)
      if not other_insured(insured, sn and sn.insured) then
        opp_id, found_by = by_number, "number"
      end
    elseif by_number then
      local written = written_stage(by_number)
      local quote_stage, policy_stage
      if quote then
        quote_stage, policy_stage = stage_id, other_stage()
      else
        quote_stage, policy_stage = other_stage(), stage_id
      end
      if quote_stage and written == quote_stage then
        opp_id, found_by = by_number, "quote"
      elseif quote and policy_stage and written == policy_stage then
        -- A quote whose number is already bound (a late update of the quote
        -- that became that policy): found here so that it is skipped below.
        opp_id, found_by = by_number, "number"
      end
    end
  end
  if opp_id and quote then
    local policy_stage = other_stage()
    if policy_stage and policy_stage ~= stage_id and written_stage(opp_id) == policy_stage then
      return {
        action = "skipped",
        reason = "the opportunity is already at the policy stage",
        opportunity_id = opp_id,
        message = ("Skipped: GHL opportunity %s is already a bound policy"):format(opp_id),
      }
    end
  end

  local body, trace = map.apply(m.opportunity, src, ctx)
  if util.empty(body.name) then
    fail("the opportunity map (policies.lua) gave no name")
  end
  body.pipelineId, body.pipelineStageId, body.status = pipeline_id, stage_id, target.status or "open"
  trace.pipelineId, trace.pipelineStageId, trace.status = "pipelines.lua", "pipelines.lua", "pipelines.lua"

  -- One write, tried once more with fresh pipeline ids if GHL refused ours.
  local function send(method, path, b)
    b = ghl.with_field_ids(b, "opportunity")
    local res = ghl.call(method, path, b)
    if pipeline_refused(res) and (b.pipelineId or b.pipelineStageId) then
      ghl.pipelines(true)
      local t2, p2, s2 = choose(m, src, ctx)
      if p2 ~= pipeline_id or s2 ~= stage_id then
        target, pipeline_id, stage_id = t2, p2, s2
        body.pipelineId, body.pipelineStageId = p2, s2
        b.pipelineId, b.pipelineStageId = p2, s2
        res = ghl.call(method, path, b)
      end
    end
    return res
  end

  -- A late copy (GHL and relays retry for hours): a policy older, by its
  -- own changeDate, than the one ncghl last wrote from never overwrites it
  -- (SPEC 10). A copy without one (the source design's payloads) is dated
  -- by its event's `timestamp`, when the route passes the event.
  local stamp, stamp_name = src.changeDate, "changeDate"
  if stamp == nil and type(opts.event) == "table" and type(opts.event.payload) == "table" then
    stamp, stamp_name = opts.event.payload.timestamp, "the event's timestamp"
  end
  local changed_at = fields.time(stamp)
  -- The newest changeDate ncghl has written to the opportunity from.
  local seen_at = opp_id and snap(opp_id) and tonumber(snap(opp_id).seen_at) or nil
  if changed_at and seen_at and changed_at < seen_at then
    return {
      action = "skipped",
      reason = ("older than what ncghl already wrote to the opportunity (%s %s)"):format(
        stamp_name, util.str(stamp)),
      opportunity_id = opp_id,
      message = ("Skipped: GHL opportunity %s holds a newer version of the policy"):format(opp_id),
    }
  end
  if changed_at and (not seen_at or changed_at > seen_at) then
    seen_at = changed_at
  end

  local action, contact_id, contact_by
  -- A field the record does not carry is unknown, never a change (SPEC 10):
  -- a partial copy without its line of business keeps the name, pipeline
  -- and stage GHL has (they are worked out from the line), one without a
  -- status or active flag keeps the status.
  local unknown = {}
  if ctx.line == nil then
    unknown.name, unknown.pipelineId, unknown.pipelineStageId = true, true, true
  end
  if ctx.status == nil and ctx.active == nil then
    unknown.status = true
  end
  local kept
  if opp_id then
    local sent = pick(body, ghl.opportunity_update_fields)
    local last = last_written(opp_id)
    kept = {}
    for field in pairs(unknown) do
      sent[field] = nil
      kept[field] = last and last[field] or false
    end
    -- Pipeline, stage and status stay as GHL has them when they are what
    -- ncghl last wrote: an agent may have moved the opportunity since (won,
    -- another stage) and a premium change must not undo that. A new target
    -- (a quote bound, a pipelines.lua change) is sent.
    if last then
      if last.pipelineId == sent.pipelineId and last.pipelineStageId == sent.pipelineStageId then
        sent.pipelineId, sent.pipelineStageId = nil, nil
      end
      if last.status == sent.status then
        sent.status = nil
      end
      -- Field by field (SPEC 10): what the policy gives as ncghl last wrote
      -- it has not changed on NowCerts' side, so it is not sent, and an
      -- agent's edit of it in GHL (a name, a value) stays.
      for field, v in pairs(sent) do
        if field ~= "customFields" and field ~= "pipelineId" and field ~= "pipelineStageId"
            and field ~= "status" and last[field] ~= nil and last[field] == fields.normalise(field, v) then
          sent[field] = nil
        end
      end
      local changed = {}
      local given = {}
      for _, item in ipairs(type(sent.customFields) == "table" and sent.customFields or {}) do
        local k = custom_key(item)
        if k then
          given[k] = true
        end
        if not (k and last[k] ~= nil and last[k] == fields.normalise(k, item.field_value)) then
          changed[#changed + 1] = item
        end
      end
      -- A custom field the record carries empty ("" or null) where ncghl
      -- last wrote a value is a clear (SPEC 10), which travels; one the
      -- record does not carry at all is unknown and stays.
      for _, f in ipairs(type(m.custom_fields) == "table" and m.custom_fields or {}) do
        local k = custom_key(f)
        local paths = map.paths(f.from)
        if k and not given[k] and last[k] ~= nil and last[k] ~= "" and paths then
          for _, path in ipairs(paths) do
            if not path:find(".", 1, true)
                and (src[path] == "" or json.was_null(src, path)) then
              changed[#changed + 1] = map.custom_field(f, "")
              kept = kept or {}
              kept[k] = false
              break
            end
          end
        end
      end
      sent.customFields = changed[1] and changed or nil
    end
    if last and not next(sent) then
      action = "unchanged"
    else
      local path = "/opportunities/" .. util.pct(opp_id)
      local res = send("PUT", path, sent)
      if opportunity_gone(res) then
        opp_id, found_by = nil, nil
      else
        ghl.check("PUT", path, res)
        action = "updated"
      end
    end
  end
  if not opp_id then
    local why_not
    contact_id, contact_by, why_not = contact_for(src, m)
    if not contact_id and why_not then
      return {
        action = "skipped",
        reason = ("the policy's insured has no GHL contact: %s"):format(why_not),
        message = ("Skipped: the policy's insured has no GHL contact (%s)"):format(why_not),
      }
    end
    local adopted = adoptable(contact_id, body.name, number)
    if adopted then
      opp_id, found_by = adopted, "search"
      local path = "/opportunities/" .. util.pct(opp_id)
      ghl.check("PUT", path, send("PUT", path, pick(body, ghl.opportunity_update_fields)))
      action = "updated"
    else
      local b = util.without(body)
      b.contactId, b.locationId = contact_id, ghl.location_id()
      local res = send("POST", "/opportunities/", b)
      if contact_by == "link" and contact_gone(res) then
        -- The insured's linked contact was deleted in GHL with no webhook
        -- saying so: as a ContactDelete would, the link goes (a tombstone),
        -- and the insured's own sync decides: skipped, or GHL's other
        -- contact for the person.
        sync.contact_deleted(contact_id)
        contact_id, contact_by, why_not = contact_for(src, m)
        if not contact_id then
          return {
            action = "skipped",
            reason = ("the policy's insured has no GHL contact: %s"):format(why_not or "none"),
            message = ("Skipped: the policy's insured has no GHL contact (%s)"):format(why_not or "none"),
          }
        end
        b.contactId = contact_id
        res = send("POST", "/opportunities/", b)
      end
      local created = ghl.check("POST", "/opportunities/", res)
      local o = type(created.opportunity) == "table" and created.opportunity or created
      opp_id = util.str(o.id)
      if util.empty(opp_id) then
        -- Most likely made: retried (not dead), and the next run looks for
        -- it by the policy's number before it creates.
        ncghl.fail({ retryable = true, message = "GHL answered its opportunity create without an "
          .. "id: it was probably made; the next run looks for it first" })
      end
      action = "created"
    end
  end

  local links = {}
  if pid then
    ncghl.link_put("policy", pid, opp_id)
    links[#links + 1] = { "policy", pid }
  end
  ncghl.link_put("policy_number", number_key, opp_id)
  links[#links + 1] = { "policy_number", number_key }
  record_written(opp_id, body, trace, links, seen_at, insured, kept)
  -- What the answer says was chosen is what could be: not a pipeline for a
  -- record that did not name its line, nor a status for one without.
  local placed = not (kept and kept.pipelineId ~= nil)
  local stated = not (kept and kept.status ~= nil)
  return {
    action = action,
    opportunity_id = opp_id,
    found_by = found_by,
    contact_id = contact_id,
    contact_found_by = contact_by,
    kind = quote and "quote" or "policy",
    pipeline = placed and target.pipeline or nil,
    stage = placed and target.stage or nil,
    status = stated and body.status or nil,
    how = placed and target.how or nil,
    stage_how = placed and target.stage_how or nil,
    policy_status = target.policy_status,
    message = ("GHL opportunity %s %s"):format(opp_id, action),
  }
end

-- The route for GHL's Opportunity* webhooks: ncghl's own write coming back
-- (every field it carries that ncghl wrote holds what ncghl wrote) is
-- skipped; any other change is not sent to NowCerts and is "ignored".
function opportunities.echo(ev)
  local d = type(ev.data) == "table" and ev.data or {}
  local id = util.str(d.id)
  local last = id and written_in(snapshot_of(id))
  if last then
    local same, compared = true, 0
    for field, want in pairs(last) do
      if d[field] ~= nil then
        compared = compared + 1
        if fields.normalise(field, d[field]) ~= want then
          same = false
        end
      end
    end
    if same and compared > 0 then
      return {
        action = "skipped",
        reason = "echo of ncghl's own write",
        message = "Skipped: echo of ncghl's own write",
      }
    end
  end
  return require("ncghl.engine").IGNORED,
    ("GHL %s for opportunity %s: opportunity changes are not sent to NowCerts"):format(
      tostring(ev.type), tostring(id))
end

return opportunities
