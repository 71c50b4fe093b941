-- ncghl.sync: two-way sync of people at the field level (SPEC 10), one
-- helper for both directions. A NowCerts insured and its GHL contact are a
-- link; for every field the two maps pair up (contacts.lua), the link's
-- snapshot keeps the base: the value both sides agreed on after the last
-- sync, and when each side's version of it was seen.
--
-- An event from one side (A) is a claim about A's record. Its changes are
-- the fields whose value differs from the base; a field the event does not
-- carry is unknown, never a change; a field carried empty is a clear. Only
-- changes travel, as a partial write to the other side (B), read right
-- before the write. A field both sides changed since the base is a conflict,
-- decided by mappings/conflicts.lua and recorded. A value older than the one
-- already seen for that field never overwrites it. Everything ncghl does to
-- a field is a line of the person's timeline (ncghl.change_add).
--
-- The two sides are alike to this file: each is a small table of functions
-- (read, find, create, update, its record's id and time) at the end.
local json = require "ncghl.json"
local util = require "ncghl.util"
local map = require "ncghl.map"
local fields = require "ncghl.fields"
local ghl = require "ncghl.ghl"
local nowcerts = require "ncghl.nowcerts"

local sync = {}

local KIND = "contact"
local norm = fields.normalise

-- How long a re-run waits before it searches again for a record that an
-- earlier run may have created (an upstream indexes a new record with a
-- delay; a blind second create would make a duplicate).
sync.recheck_delay = 10

-- A store write that must land now (the rest of the run, and the next event
-- about this person, read it back): when another process holds the store's
-- write lock, ncghl's write answers false; the event waits and writes again.
local function stored(fn, ...)
  while fn(...) == false do
    ncghl.wait_writable()
  end
end

local function other(side)
  return side == "nowcerts" and "ghl" or "nowcerts"
end

local function fail(message, retryable, retry_in)
  ncghl.fail({ retryable = retryable == true, message = message, retry_in = retry_in })
end

-- Pairs ------------------------------------------------------------------

local function has(list, x)
  for _, v in ipairs(list) do
    if v == x then
      return true
    end
  end
  return false
end

local sorted_keys = util.sorted_keys

-- The fields the two maps sync both ways: a GHL field `key` whose NowCerts
-- paths (to_ghl[key]) name a NowCerts field `nc_field` whose GHL paths
-- (to_nowcerts[nc_field]) name `key` back. postalCode = {"address.zip",
-- "zipCode"} and zipCode = {"postalCode"} make one pair. Constants and
-- functions pair with nothing: they are written when a record is created.
-- Worked out once per pair of map tables (weak keys: a reload's new maps
-- start afresh). Maps are tables an agency writes and never changes while
-- they run, and the pairing is O(fields^2): per event it was a quarter of
-- the mapping's time.
local pairs_cache = setmetatable({}, { __mode = "k" })

local function compute_pairs(to_ghl, to_nowcerts)
  local out = {}
  local nc_keys = sorted_keys(to_nowcerts)
  for _, key in ipairs(sorted_keys(to_ghl)) do
    local spec = to_ghl[key]
    local from_nc = map.paths(spec)
    if from_nc then
      for _, t in ipairs(nc_keys) do
        local spec2 = to_nowcerts[t]
        local from_ghl = map.paths(spec2)
        if from_ghl and has(from_nc, t) and has(from_ghl, key) then
          out[#out + 1] = {
            key = key,
            nc_field = t,
            nc_spec = spec,
            ghl_spec = spec2,
            keep = map.is_keep(spec) or map.is_keep(spec2),
          }
          break
        end
      end
    end
  end
  return out
end

function sync.pairs(to_ghl, to_nowcerts)
  local by_nc = pairs_cache[to_ghl]
  if not by_nc then
    by_nc = setmetatable({}, { __mode = "k" })
    pairs_cache[to_ghl] = by_nc
  end
  local out = by_nc[to_nowcerts]
  if not out then
    out = compute_pairs(to_ghl, to_nowcerts)
    by_nc[to_nowcerts] = out
  end
  return out
end

-- Reading a record -------------------------------------------------------

-- rec[path] with whether the record carried it at all (a JSON null counts).
local function lookup(rec, path)
  local st = util.steps(path)
  local t, last = rec, path
  if st then
    for i = 1, #st - 1 do
      t = t[st[i]]
      if type(t) ~= "table" then
        return nil, false
      end
    end
    last = st[#st]
  end
  local v = t[last]
  if v ~= nil then
    return v, true
  end
  return nil, json.was_null(t, last)
end

-- A field's value in a record: the first of its paths with a value; "" when
-- the record carries the field empty (or `whole` says the record is complete,
-- as one read from the API is); nil when the record says nothing of it.
local function value_of(rec, spec, whole)
  local present = false
  for _, p in ipairs(map.paths(spec) or {}) do
    local v, here = lookup(rec, p)
    if here then
      if type(v) ~= "table" and not util.empty(v) then
        return type(v) == "string" and util.trim(v) or v
      end
      present = true
    end
  end
  if present or whole then
    return ""
  end
  return nil
end

-- Snapshots ---------------------------------------------------------------

local function load_snapshot(nc_id, kind)
  local snap
  local text = nc_id and ncghl.snapshot_get(kind or KIND, nc_id)
  if text then
    local ok, v = pcall(json.decode, text)
    if ok and type(v) == "table" then
      snap = v
    end
  end
  snap = snap or {}
  snap.v = 1
  if type(snap.fields) ~= "table" then
    snap.fields = {}
  end
  return snap
end

local function save_snapshot(nc_id, ghl_id, snap, kind)
  stored(ncghl.snapshot_put, kind or KIND, nc_id, ghl_id, json.encode(snap))
end

-- A contact written for a record that names no NowCerts id (the source
-- design's payloads) has no link, so what ncghl wrote there is kept under
-- the contact's own id, for GHL's echo of it.
local UNLINKED = "contact_unlinked"

local function remember_unlinked(ghl_id, pairs_, values)
  local snap = { v = 1, fields = {} }
  for _, p in ipairs(pairs_) do
    local v = values[p.key]
    if v ~= nil and v ~= "" then
      snap.fields[p.key] = { base = norm(p.key, v) }
    end
  end
  save_snapshot(ghl_id, ghl_id, snap, UNLINKED)
end

local function base_of(snap, key)
  local f = snap.fields[key]
  return f and type(f.base) == "string" and f.base or ""
end

-- Conflicts ----------------------------------------------------------------

-- Newer by the records' own timestamps, NowCerts on a tie (or when a time
-- is unknown on both sides). A tie is judged at NowCerts' precision: its
-- changeDate names a second, or (seen in its samples) only a minute, and
-- its edit was made somewhere within it; a GHL time (to the millisecond)
-- inside that second or minute is not known to be later.
function sync.newer(c)
  local nc, gh = c.nowcerts_at or 0, c.ghl_at or 0
  local within = 1
  if nc % 1 ~= 0 then
    within = 0
  elseif nc % 60 == 0 then
    within = 60
  end
  if gh >= nc + within and gh > nc then
    return "ghl"
  end
  return "nowcerts"
end

local function decide(field, c)
  local policy = util.require_optional("conflicts") or {}
  local rule = type(policy.fields) == "table" and policy.fields[field] or policy.default or "newer"
  if type(rule) == "function" then
    rule = rule(c)
  end
  if rule == "nowcerts" or rule == "ghl" then
    return rule
  end
  if rule ~= "newer" and rule ~= nil then
    fail(("conflicts.lua: the rule for %s gave %s; expected \"nowcerts\", \"ghl\" or \"newer\"")
      :format(field, tostring(rule)))
  end
  return sync.newer(c)
end

-- Tags ---------------------------------------------------------------------

local function tag_list(v)
  local out, seen = {}, {}
  if type(v) == "string" then
    v = { v }
  end
  for _, t in ipairs(type(v) == "table" and v or {}) do
    local s = util.str(t)
    if s and util.trim(s) ~= "" and not seen[util.fold(s)] then
      seen[util.fold(s)] = true
      out[#out + 1] = util.trim(s)
    end
  end
  return out
end

local function tag_set(list)
  local set = {}
  for _, t in ipairs(list) do
    set[util.fold(t)] = true
  end
  return set
end

local function same_tags(a, b)
  if #a ~= #b then
    return false
  end
  local sa = tag_set(a)
  for _, t in ipairs(b) do
    if not sa[util.fold(t)] then
      return false
    end
  end
  return true
end

-- The tags ncghl wants on the contact for this insured (the contacts map's
-- `tags`), or nil when the map sets none.
local function wanted_tags(maps, insured)
  local spec = maps.insured_to_contact.tags
  if spec == nil then
    return nil
  end
  return tag_list((map.get(insured, spec)))
end

-- GHL's tags change through its tag endpoints: ours are added, and only a
-- tag ncghl itself set and no longer wants is removed; tags people added
-- stay, also one ncghl wants too ("prospect" on a lead an agent tagged so):
-- ncghl did not set it, so it never removes it. `owned`: the tags ncghl set
-- (nil: every tag of `managed`, as snapshots before this rule kept them).
-- Returns what was added and removed, and the tags ncghl now owns.
local function apply_tags(contact_id, current, wanted, owned)
  local have = tag_set(tag_list(current))
  local want = tag_set(wanted)
  local mine = tag_set(owned or {})
  local add, remove, now_owned = {}, {}, {}
  for _, t in ipairs(wanted) do
    if not have[util.fold(t)] then
      add[#add + 1] = t
      now_owned[#now_owned + 1] = t
    elseif mine[util.fold(t)] then
      now_owned[#now_owned + 1] = t
    end
  end
  for _, t in ipairs(owned or {}) do
    if not want[util.fold(t)] and have[util.fold(t)] then
      remove[#remove + 1] = t
    end
  end
  ghl.add_tags(contact_id, add)
  ghl.remove_tags(contact_id, remove)
  return add, remove, now_owned
end

-- The tags of a snapshot ncghl set itself (snapshots written before the
-- `tags_owned` list count every tag it managed).
local function owned_tags(snap)
  local t = type(snap.tags_owned) == "table" and snap.tags_owned or snap.tags
  return type(t) == "table" and t or {}
end

-- Consent -------------------------------------------------------------------

local DND_CHANNELS = { "Call", "Email", "SMS", "WhatsApp", "GMB", "FB" }

-- A GHL contact's do-not-disturb state as one comparable text: "all" (dnd
-- on), the channels whose DND status is active or permanent ("Email,SMS"),
-- "" (none); nil when the record says nothing of it (a webhook without
-- dnd and dndSettings).
function sync.consent_of(contact)
  if type(contact) ~= "table" then
    return nil
  end
  local dnd, settings = contact.dnd, contact.dndSettings
  if dnd == nil and settings == nil then
    return nil
  end
  if dnd == true then
    return "all"
  end
  local on = {}
  for _, ch in ipairs(DND_CHANNELS) do
    local st = type(settings) == "table" and type(settings[ch]) == "table" and settings[ch].status
    if st == "active" or st == "permanent" then
      on[#on + 1] = ch
    end
  end
  table.sort(on)
  return table.concat(on, ",")
end

-- The NowCerts fields a GHL consent state becomes (contacts.lua's
-- consent_to_insured), or nil when the map sets no rule.
local function consent_fields(maps, state, contact)
  if state == nil or type(maps.consent_to_insured) ~= "function" then
    return nil
  end
  return maps.consent_to_insured(state, contact)
end

-- The two sides ------------------------------------------------------------

local sides = {}

sides.nowcerts = {
  name = "nowcerts",
  spec = function(p)
    return p.nc_spec
  end,
  field = function(p)
    return p.nc_field
  end,
  id_of = function(rec, maps)
    local id = util.str((map.get(rec, maps.insured_id)))
    return id and util.trim(id):lower() or nil
  end,
  time_of = function(rec)
    return fields.time(rec.changeDate)
  end,
  read = function(id)
    return nowcerts.get_insured(id)
  end,
  find = function(who)
    local found = who.email and nowcerts.find_insured_by_email(who.email)
    if found then
      return found, "email"
    end
    found = who.phone and nowcerts.find_insured_by_phone(who.phone, who.email)
    return found, found and "phone" or nil
  end,
  create = function(body)
    return nowcerts.create_insured(body)
  end,
  -- Returns nothing (Insert answers no record: the time of the write is not
  -- known), or nil, true when the insured is gone (deleted meanwhile).
  update = function(id, changes, current)
    return nil, nowcerts.update_insured(id, changes, current) == nil
  end,
}

sides.ghl = {
  name = "ghl",
  spec = function(p)
    return p.ghl_spec
  end,
  field = function(p)
    return p.key
  end,
  id_of = function(rec)
    local id = util.str(rec.id) or util.str(rec.contactId)
    return id and util.trim(id) or nil
  end,
  time_of = function(rec)
    return fields.time(rec.dateUpdated)
  end,
  read = function(id, for_write)
    return ghl.get_contact(id, for_write)
  end,
  find = function(who)
    local found = who.email and ghl.search_contact({ email = who.email })
    if found then
      return found, "email"
    end
    found = who.phone and ghl.search_contact({ phone = who.phone })
    -- A phone is shared by families and offices: a record with an e-mail is
    -- only taken for a phone match that has no e-mail of its own.
    if found and who.email and not util.empty(found.email) then
      found = nil
    end
    if found then
      return found, "phone"
    end
    if who.match_name and not who.email and not who.phone and who.first and who.last then
      local same = ghl.search_contacts_by_name(who.first, who.last)
      if #same > 1 then
        fail(("%d GHL contacts are named %s %s and nothing else tells them apart: "
          .. "give the record an email or link the contact"):format(#same, who.first, who.last))
      end
      if same[1] then
        return same[1], "name"
      end
    end
    return nil
  end,
  create = function(body)
    local c = ghl.create_contact(body)
    local id = type(c) == "table" and util.str(c.id) or nil
    return not util.empty(id) and id or nil, c
  end,
  -- The contact as written, or nil, true when it is gone (deleted meanwhile).
  update = function(id, changes)
    local c = ghl.update_contact(id, changes)
    return c, c == nil
  end,
}

-- A record's values, pair by pair, keyed by the GHL field name.
local function view(side, pairs_, rec, whole, maps)
  local out = {}
  for _, p in ipairs(pairs_) do
    local v = value_of(rec, side.spec(p), whole)
    if side.name == "nowcerts" and v ~= nil and maps.placeholders
        and v == maps.placeholders[p.nc_field] then
      v = "" -- ncghl's own stand-in (a lead without a last name) is no value
    end
    out[p.key] = v
  end
  return out
end

-- Who a record is, for finding it on the other side.
local function identity(pairs_, values, opts)
  local who = { match_name = opts and opts.match_name }
  for _, p in ipairs(pairs_) do
    local v = values[p.key]
    local k = p.key:lower()
    if v ~= nil and v ~= "" then
      if k:find("mail", 1, true) and not who.email then
        who.email = util.email(v)
      elseif k:find("phone", 1, true) and not who.phone then
        who.phone = util.phone10(v) and v or nil
      elseif k == "firstname" then
        who.first = util.str(v)
      elseif k == "lastname" then
        who.last = util.str(v)
      end
    end
  end
  return who
end

-- A contact whose NowCerts insured was deleted keeps a link of its own kind
-- ("contact_deleted"), so a later change in GHL finds the tombstone.
local function deleted_insured(ghl_id)
  return ghl_id and ncghl.link_get("contact_deleted", "nowcerts", ghl_id) or nil
end

-- The timeline ---------------------------------------------------------------

local function note(ids, field, side, old, new, action)
  stored(ncghl.change_add, {
    kind = KIND,
    nowcerts_id = ids.nowcerts,
    ghl_id = ids.ghl,
    field = field,
    side = side,
    old = old ~= "" and old or nil,
    new = new ~= "" and new or nil,
    action = action,
  })
end

-- The sync itself ---------------------------------------------------------------

-- The changes an event from side `from` claims, against the snapshot:
-- {key = value} for each field whose value differs from the base, is not
-- older than what was already seen of that field, and is not a clear of a
-- field that is never cleared.
local function changes_of(pairs_, values, snap, from, at)
  local out, stale = {}, {}
  local at_key = from .. "_at"
  for _, p in ipairs(pairs_) do
    local v = values[p.key]
    if v ~= nil then
      local n = norm(p.key, v)
      local f = snap.fields[p.key]
      if n ~= nil and n ~= base_of(snap, p.key) then
        if at and f and type(f[at_key]) == "number" and at < f[at_key] then
          stale[#stale + 1] = p.key
        elseif n == "" and p.keep then -- luacheck: ignore 542
          -- never cleared: the other side keeps its value
        else
          out[p.key] = v
        end
      end
    end
  end
  return out, stale
end

-- Marks the fields an event carried unchanged as seen at its time, so an
-- older copy of another value can no longer pass for news.
local function seen(pairs_, values, snap, from, at)
  local dirty = false
  if not at then
    return dirty
  end
  local at_key = from .. "_at"
  for _, p in ipairs(pairs_) do
    local v = values[p.key]
    if v ~= nil and norm(p.key, v) == base_of(snap, p.key) then
      local f = snap.fields[p.key] or { base = base_of(snap, p.key) }
      if type(f[at_key]) ~= "number" or f[at_key] < at then
        f[at_key] = at
        snap.fields[p.key] = f
        dirty = true
      end
    end
  end
  return dirty
end

local function by_field(side, pairs_, values)
  local out = {}
  for _, p in ipairs(pairs_) do
    local v = values[p.key]
    if v ~= nil then
      out[side.field(p)] = v
    end
  end
  return out
end

-- A value's comparable text, whatever its shape: object keys sorted.
local function canon(v)
  if type(v) ~= "table" then
    return tostring(v)
  end
  local keys = {}
  for k in pairs(v) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  local parts = {}
  for _, k in ipairs(keys) do
    parts[#parts + 1] = tostring(k) .. "=" .. canon(v[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Fields that go one way only: what the map toward side `to` fills that
-- no pair covers and that is neither a constant (a create-time default)
-- nor tags (kept through their own endpoints) nor a field `to` takes only
-- on create (GHL's companyName). A computed customFields is one: it is
-- sent when its value changes, like any field.
local function oneway_of(maps, to, rec, pairs_)
  local m = to == "ghl" and maps.insured_to_contact or maps.contact_to_insured
  local body, trace = map.apply(m, rec)
  local paired = {}
  for _, p in ipairs(pairs_) do
    paired[to == "ghl" and p.key or p.nc_field] = true
  end
  local skip = {}
  if to == "ghl" then
    for _, f in ipairs(ghl.create_only or {}) do
      skip[f] = true
    end
    skip.tags = true
  end
  local out = {}
  for f, v in pairs(body) do
    if not paired[f] and not skip[f] and trace[f] ~= "const" then
      out[f] = v
    end
  end
  return out
end

local function oneway_changes(snap, to, vals)
  local base = type(snap.oneway) == "table" and type(snap.oneway[to]) == "table" and snap.oneway[to] or {}
  local out = {}
  for f, v in pairs(vals) do
    if canon(v) ~= base[f] then
      out[f] = v
    end
  end
  return out
end

local function remember_oneway(snap, to, vals)
  if type(snap.oneway) ~= "table" then
    snap.oneway = {}
  end
  local base = type(snap.oneway[to]) == "table" and snap.oneway[to] or {}
  for f, v in pairs(vals) do
    base[f] = canon(v)
  end
  snap.oneway[to] = base
end

-- The write for side B: the paired changes under B's names, and the
-- one-way fields as they are.
local function with_oneway(body, ow)
  for f, v in pairs(ow or {}) do
    body[f] = v
  end
  return body
end

local function event_time(ev)
  local p = ev and type(ev.payload) == "table" and ev.payload
  return p and fields.time(p.timestamp) or nil
end

local function skipped(reason, extra)
  local r = extra or {}
  r.action, r.reason = "skipped", reason
  r.message = "Skipped: " .. reason
  return r
end

-- Creates the record on side `to` from the event's record, after one more
-- search on a re-run (an earlier run may have created it and lost the
-- answer). Returns the new id.
-- Whether the run before this one may have sent a create whose answer was
-- lost: it never ended (a crash), or it ended on a failure that says nothing
-- of what the upstream did (no answer, a time-out, a 5xx or 429). A refusal
-- (another 4xx, NowCerts' status 0) created nothing.
local function create_maybe_landed(ev)
  if not ev or type(ev.run) ~= "number" or ev.run < 2 then
    return false
  end
  local e = ev.last_error
  if type(e) ~= "string" or e == "" then
    return true
  end
  if e:find("status 0:", 1, true) then
    return false
  end
  local code = tonumber(e:match("HTTP (%d%d%d)"))
  return not code or code >= 500 or code == 429
end

local function create(to, body, who, ev)
  local name = to == "ghl" and "GHL" or "NowCerts"
  if ev and type(ev.run) == "number" and ev.run > 1 and create_maybe_landed(ev) then
    local found = sides[to].find(who)
    if found then
      return nil, found
    end
    if ev.run == 2 and (ev.last_error == nil or ev.last_error == "") then
      -- The run before crashed, perhaps right after its create: give the
      -- upstream time to index what it made before searching once more.
      fail(("%s: an earlier run may have created this record; searching again in %d s before "
        .. "creating it"):format(name, sync.recheck_delay), true, sync.recheck_delay)
    end
  end
  local ok, id, rec = pcall(sides[to].create, body)
  if ok and not id then
    -- A 2xx that names no new id: the record was most likely made, and
    -- there is no id to link. Never dead (a replay would be the operator's
    -- chore) and never created again blindly: the next run searches first.
    fail(("%s answered its create without the new record's id: it was probably made; the next "
      .. "run searches for it first"):format(name), true, sync.recheck_delay)
  end
  if not ok then
    local e = id
    if type(e) == "table" and e.retryable and tostring(e.message):find("failed: [^H]") then
      -- No answer (a time-out, a reset): the record may exist. The next run
      -- searches for it first, once the upstream has had time to index it.
      fail(("%s (the create may have landed: the next run searches for the record first)")
        :format(tostring(e.message)), true, sync.recheck_delay)
    end
    error(e, 0)
  end
  return id, rec
end

-- The body a new record on side `to` is created with: the whole directional
-- map, constants and tags included.
local function create_body(to, maps, rec, values)
  if to == "ghl" then
    local body = map.apply(maps.insured_to_contact, rec)
    -- A contact nobody can tell from another (no name, company, e-mail or
    -- phone) is not made, as a nameless GHL lead makes no insured (SPEC 10).
    for _, f in ipairs({ "firstName", "lastName", "name", "companyName", "email", "phone" }) do
      if not util.empty(util.str(body[f])) then
        return body
      end
    end
    return nil, "the record has no name, company, e-mail or phone: a GHL contact with nothing "
      .. "to know the person by is not made"
  end
  local body = map.apply(maps.contact_to_insured, rec)
  local state = sync.consent_of(rec)
  if state ~= nil and state ~= "" then
    for f, v in pairs(consent_fields(maps, state, rec) or {}) do
      body[f] = v
    end
  end
  if type(maps.prospect_name) == "function" then
    local ok_body, reason = maps.prospect_name(body, rec, values)
    if not ok_body then
      return nil, reason
    end
    body = ok_body
  end
  return body
end

-- What happens in GHL to the contact of an insured NowCerts deleted or
-- made inactive: contacts.lua's lifecycle choice, "tag" (the default),
-- "delete" or "nothing".
local function lifecycle_choice(maps, what)
  local l = type(maps.lifecycle) == "table" and maps.lifecycle or {}
  local c = l[what] or "tag"
  if c ~= "tag" and c ~= "delete" and c ~= "nothing" then
    fail(("contacts.lua: lifecycle.%s is %s; expected \"tag\", \"delete\" or \"nothing\"")
      :format(what, tostring(c)))
  end
  return c
end

-- The contact of an insured that NowCerts no longer has, or that is
-- inactive, handled as lifecycle says. Deleting leaves a tombstone, so a
-- later change does not create the contact again.
local function retire(maps, what, nc_id, ghl_id, snap)
  local choice = lifecycle_choice(maps, what)
  local ids = { nowcerts = nc_id, ghl = ghl_id }
  if choice == "nothing" then
    return skipped(("the insured is %s in NowCerts; lifecycle.%s is \"nothing\""):format(what, what),
      { insured_id = nc_id, contact_id = ghl_id })
  elseif choice == "delete" then
    ghl.delete_contact(ghl_id)
    stored(ncghl.link_del, KIND, nc_id)
    snap.deleted_ghl_id = ghl_id
    snap.retired = what
    save_snapshot(nc_id, nil, snap)
    note(ids, "contact", "nowcerts", ghl_id, "", "deleted")
    return { action = "deleted", insured_id = nc_id, contact_id = ghl_id,
      message = ("GHL contact %s deleted: the insured is %s in NowCerts"):format(ghl_id, what) }
  end
  local tags = type(maps.lifecycle_tags) == "table" and maps.lifecycle_tags or {}
  local tag = tags[what] or ("%s in NowCerts"):format(what)
  local current = ghl.get_contact(ghl_id)
  if not current then
    return skipped("the GHL contact is gone already", { insured_id = nc_id, contact_id = ghl_id })
  end
  local added = apply_tags(ghl_id, current.tags, { tag }, {})
  local managed = type(snap.tags) == "table" and snap.tags or {}
  if not tag_set(managed)[util.fold(tag)] then
    managed[#managed + 1] = tag
  end
  local owned = owned_tags(snap)
  if #added > 0 and not tag_set(owned)[util.fold(tag)] then
    owned[#owned + 1] = tag
  end
  snap.tags, snap.tags_owned = managed, owned
  snap.retired = what
  save_snapshot(nc_id, ghl_id, snap)
  note(ids, "tags", "nowcerts", "", tag, "sent")
  return { action = "tagged", insured_id = nc_id, contact_id = ghl_id, tags_added = #added > 0 and added or nil,
    message = ("GHL contact %s tagged \"%s\": the insured is %s in NowCerts"):format(ghl_id, tag, what) }
end

-- sync.contact(from, rec, opts): the record `rec` (an insured when `from` is
-- "nowcerts", a contact when "ghl") changed; bring the other side in step.
-- opts.maps: the contact maps (mappings/contacts.lua); opts.event: the event
-- (its run number and timestamp); opts.whole: rec is a complete record as
-- read from the API (absent fields are empty); opts.update = false: only
-- find or create the other side, never change it (a policy's insured);
-- opts.match_name: with neither e-mail nor phone, find by first + last name.
function sync.contact(from, rec, opts)
  opts = opts or {}
  local maps = opts.maps
  if type(rec) ~= "table" then
    rec = {}
  end
  local to = other(from)
  local A, B = sides[from], sides[to]
  local pairs_ = sync.pairs(maps.insured_to_contact, maps.contact_to_insured)
  local ev = opts.event
  local ids = {}
  ids[from] = A.id_of(rec, maps)
  local values = view(A, pairs_, rec, opts.whole, maps)
  local at = A.time_of(rec) or event_time(ev)
  local who = identity(pairs_, values, opts)

  -- Two events about the same person run one after the other from here on.
  ncghl.lock(ids.nowcerts and "contact:nowcerts:" .. ids.nowcerts,
    ids.ghl and "contact:ghl:" .. ids.ghl,
    who.email and "contact:email:" .. who.email,
    who.phone and "contact:phone:" .. util.phone10(who.phone))
  if ids[from] then
    ids[to] = ncghl.link_get(KIND, to, ids[from])
    if ids[to] then
      ncghl.lock("contact:" .. to .. ":" .. ids[to])
    end
  end
  local snap = load_snapshot(ids.nowcerts)
  local result = { kind = KIND }

  local wanted = from == "nowcerts" and wanted_tags(maps, rec) or nil

  -- The linked record on `side` is gone: deleted there without ncghl
  -- hearing of it, found by a read or refused by a write. The link goes, a
  -- tombstone stays (the record is never created again), and when it is
  -- the other side's the sync starts over (so the person's other record
  -- there, if any, is linked).
  local function linked_gone(side)
    local tomb = load_snapshot(ids.nowcerts)
    stored(ncghl.link_del, KIND, ids.nowcerts)
    if side == "ghl" then
      tomb.deleted_ghl_id = ids.ghl
      save_snapshot(ids.nowcerts, nil, tomb)
      note(ids, "contact", "ghl", ids.ghl, "", "deleted")
    else
      ncghl.link_put("contact_deleted", ids.nowcerts, ids.ghl)
      tomb.deleted_nowcerts_id = ids.nowcerts
      save_snapshot(ids.nowcerts, nil, tomb)
      note(ids, "insured", "nowcerts", ids.nowcerts, "", "deleted")
      -- What a deleted insured does to its contact (lifecycle), here too:
      -- the deleted-list poll acts only on linked contacts, and this link
      -- is gone now, so a GHL edit that came first left the contact as it
      -- was.
      if tomb.retired ~= "deleted" then
        retire(maps, "deleted", ids.nowcerts, ids.ghl, tomb)
      end
    end
    if side == to then
      return sync.contact(from, rec, opts)
    end
    return skipped(("the %s was deleted meanwhile"):format(
      side == "ghl" and "GHL contact" or "NowCerts insured"),
      { insured_id = ids.nowcerts, contact_id = ids.ghl })
  end

  -- Timeline lines of values sent, written once the writes went through
  -- (a write refused because the record is gone sent nothing).
  local function later_notes()
    local list = {}
    return function(...)
      list[#list + 1] = table.pack(...)
    end, function()
      for _, n in ipairs(list) do
        note(table.unpack(n, 1, n.n))
      end
    end
  end

  -- The first sync of a link (just found, or made before ncghl kept
  -- snapshots): there is no base yet, so nothing can be a conflict. What
  -- this record has travels; what only the other side has comes back; both
  -- end alike, and that is the base.
  local function first_sync(current, how)
    local theirs = view(B, pairs_, current, true, maps)
    -- A webhook leaves out what its record lacks (GHL sends no empty
    -- fields), and what it leaves out is unknown, not agreed: before the
    -- other side's values fill this record's blanks, the record is read,
    -- so a field the other side has and this one lacks comes back here
    -- instead of becoming a base this record never had (which the next
    -- read of it would take for a clear, and blank the other side).
    if not opts.whole and ids[from] then
      for _, p in ipairs(pairs_) do
        if values[p.key] == nil and (theirs[p.key] or "") ~= "" then
          local now = A.read(ids[from])
          if now then
            for k, v in pairs(view(A, pairs_, now, true, maps)) do
              if values[k] == nil then
                values[k] = v
              end
            end
          end
          break
        end
      end
    end
    local write_to, write_back = {}, {}
    local later, flush_notes = later_notes()
    for _, p in ipairs(pairs_) do
      local mine, yours = values[p.key], theirs[p.key]
      local nm, ny = mine ~= nil and norm(p.key, mine) or nil, norm(p.key, yours) or ""
      local f = snap.fields[p.key] or {}
      if nm ~= nil and nm ~= "" and nm ~= ny then
        write_to[p.key] = mine
        f.base = nm
        later(ids, p.key, from, ny, nm, "sent")
      elseif nm == "" and ny ~= "" and not p.keep then
        write_back[p.key] = yours
        f.base = ny
        later(ids, p.key, to, "", ny, "sent")
      else
        f.base = ny ~= "" and ny or (nm or "")
      end
      f[from .. "_at"] = at
      f[to .. "_at"] = B.time_of(current)
      snap.fields[p.key] = f
    end
    local ow = oneway_changes(snap, to, oneway_of(maps, to, rec, pairs_))
    remember_oneway(snap, to, ow)
    local after, gone
    if next(write_to) or next(ow) then
      after, gone = B.update(ids[to], with_oneway(by_field(B, pairs_, write_to), ow), current)
      if gone then
        return linked_gone(to)
      end
    end
    if next(write_back) then
      local mine_now = from == "nowcerts" and (A.read(ids[from]) or rec) or rec
      if select(2, A.update(ids[from], by_field(A, pairs_, write_back), mine_now)) then
        return linked_gone(from)
      end
    end
    flush_notes()
    local after_at = after and B.time_of(after)
    if after_at then
      for k in pairs(write_to) do
        snap.fields[k][to .. "_at"] = after_at
      end
    end
    local tags = wanted or wanted_tags(maps, current)
    if tags then
      local _, _, owned = apply_tags(ids.ghl, from == "ghl" and rec.tags or current.tags, tags,
        owned_tags(snap))
      snap.tags, snap.tags_owned = tags, owned
    end
    save_snapshot(ids.nowcerts, ids.ghl, snap)
    result.action = next(write_to) and "updated" or "linked"
    result.found_by = how
    result.contact_id, result.insured_id = ids.ghl, ids.nowcerts
    result.message = ("%s %s %s"):format(to == "ghl" and "GHL contact" or "NowCerts insured", ids[to],
      result.action)
    return result
  end

  -- Not linked (yet): find the other side's record, or create it.
  if not ids[to] and from == "ghl" and ids.ghl then
    local written = ncghl.snapshot_get(UNLINKED, ids.ghl) and load_snapshot(ids.ghl, UNLINKED)
    if written and not next((changes_of(pairs_, values, written, from, nil))) then
      return skipped("echo of ncghl's own write (a contact written for a record with no NowCerts id)",
        { contact_id = ids.ghl })
    end
  end
  if not ids[to] then
    local found, how = B.find(who)
    local gone = from == "nowcerts" and snap.deleted_ghl_id
      or (from == "ghl" and deleted_insured(ids.ghl))
    local found_id = found and (to == "nowcerts" and B.id_of(found, maps) or B.id_of(found))
    if gone and (not found or found_id == gone) then
      -- The record was deleted on that side: never created again, unless
      -- that side has another record for this person (duplicates merged),
      -- which is linked below.
      ncghl.count_ignored("deleted")
      return skipped(("the %s was deleted there; it is not created again"):format(
        to == "ghl" and "GHL contact" or "NowCerts insured"),
        { insured_id = ids.nowcerts, contact_id = ids.ghl, deleted_id = gone })
    end
    if not found then
      if opts.create == false then
        return skipped("no record on the other side, and this event does not create one")
      end
      local body, reason = create_body(to, maps, rec, values)
      if not body then
        return skipped(reason)
      end
      local new_id, existing = create(to, body, who, ev)
      if not new_id then
        found, how = existing, "search"
      else
        ids[to] = to == "nowcerts" and new_id:lower() or new_id
        if not ids.nowcerts or not ids.ghl then
          -- The other side's id is unknown (a record that names no id):
          -- nothing to link, the record was written.
          if to == "ghl" then
            remember_unlinked(ids.ghl, pairs_, values)
          end
          result.action = "created"
          result[to == "ghl" and "contact_id" or "insured_id"] = ids[to]
          result.message = ("%s %s created"):format(to == "ghl" and "GHL contact" or "NowCerts insured", ids[to])
          return result
        end
        ncghl.link_put(KIND, ids.nowcerts, ids.ghl)
        snap.deleted_ghl_id = nil
        remember_oneway(snap, to, oneway_of(maps, to, rec, pairs_))
        if from == "ghl" then
          snap.consent = sync.consent_of(rec)
        end
        for _, p in ipairs(pairs_) do
          local v = values[p.key]
          if v ~= nil then
            local f = { base = norm(p.key, v) or "" }
            f[from .. "_at"] = at
            snap.fields[p.key] = f
            if f.base ~= "" then
              note(ids, p.key, from, "", f.base, "created")
            end
          end
        end
        if wanted then
          snap.tags, snap.tags_owned = wanted, wanted -- made by ncghl, tags and all
        elseif from == "ghl" then
          -- The contact now stands for a NowCerts record: it gets ncghl's
          -- tags for it (e.g. "prospect"), as a contact made from NowCerts would.
          snap.tags = wanted_tags(maps, body)
          if snap.tags then
            local _, _, owned = apply_tags(ids.ghl, rec.tags, snap.tags, {})
            snap.tags_owned = owned
          end
        end
        save_snapshot(ids.nowcerts, ids.ghl, snap)
        result.action = "created"
        result.contact_id, result.insured_id = ids.ghl, ids.nowcerts
        result.message = ("%s %s created"):format(to == "ghl" and "GHL contact" or "NowCerts insured", ids[to])
        return result
      end
    end
    -- Found: the first link. Fields this record has travel; fields only the
    -- other side has come back, so both end alike.
    ids[to] = to == "nowcerts" and B.id_of(found, maps) or B.id_of(found)
    result.found_by = how
    if not ids.nowcerts or not ids.ghl then
      -- A record that names no id of its own (the source design's
      -- payloads) cannot be linked, so it has no snapshot to compare with:
      -- what it carries is written over what the other side has.
      result[to == "ghl" and "contact_id" or "insured_id"] = ids[to]
      result.contact = to == "ghl" and found or nil
      local fill = {}
      for k, v in pairs(values) do
        if v ~= "" then
          fill[k] = v
        end
      end
      if opts.update == false or not next(fill) then
        result.action = "found"
      else
        local current = found -- as the search answered it: nothing here is compared
        if to == "nowcerts" then
          current = B.read(ids[to]) or found -- Insert replaces: the whole record is needed
        end
        local written = B.update(ids[to], by_field(B, pairs_, fill), current)
        if to == "ghl" and type(written) == "table" and next(written) then
          result.contact = written -- the contact as GHL answered the update, not as found
        end
        if wanted then
          apply_tags(ids.ghl, current.tags, wanted, nil)
        end
        if to == "ghl" then
          remember_unlinked(ids.ghl, pairs_, fill)
        end
        result.action = "updated"
      end
      result.message = ("%s %s %s"):format(to == "ghl" and "GHL contact" or "NowCerts insured", ids[to],
        result.action)
      return result
    end
    ncghl.lock("contact:" .. to .. ":" .. ids[to])
    snap = load_snapshot(ids.nowcerts) -- the insured may have had one before
    -- A late copy of a change to a contact GHL has deleted since (GHL
    -- retries webhooks for hours): its insured is found by e-mail, but the
    -- contact is gone; linking it again would write its old values over the
    -- insured's. A change made after the deletion (a contact restored) is
    -- newer than it and goes through.
    if from == "ghl" and snap.deleted_ghl_id == ids.ghl
        and (at or 0) <= (tonumber(snap.deleted_at) or math.huge) then
      return skipped(("GHL contact %s was deleted; this change to it is older than the deletion and is "
          .. "not synced"):format(ids.ghl), { insured_id = ids.nowcerts, contact_id = ids.ghl })
    end
    -- The record found is another's already (two contacts, or two insureds,
    -- with one e-mail): taking it over would rename it and leave its
    -- partner unlinked. Left alone, with the reason; the people who know
    -- whether these are one person merge them or give one its own e-mail.
    local holder = ncghl.link_get(KIND, from, ids[to])
    if holder and holder ~= ids[from] and from == "ghl" and not A.read(holder) then
      -- Unless that other contact is gone from GHL (merged into this one,
      -- its ContactDelete not here yet): its link goes as the delete's
      -- would, and this one, the survivor, is linked (SPEC 10, Lifecycle).
      sync.contact_deleted(holder)
      snap = load_snapshot(ids.nowcerts)
      holder = nil
    end
    if holder and holder ~= ids[from] and from == "nowcerts"
        and load_snapshot(holder).retired == "deleted" and not A.read(holder) then
      -- The contact's insured is gone from NowCerts (its deletion seen in
      -- the deleted list, and a read no longer finds it), and this person
      -- was entered again. The old link goes (a tombstone stays, as for
      -- any deleted insured) and this insured takes the contact; the tags
      -- ncghl gave the contact (its "deleted in NowCerts" among them) carry
      -- over, so the ones this insured does not want come off.
      local old = load_snapshot(holder)
      stored(ncghl.link_del, KIND, holder)
      ncghl.link_put("contact_deleted", holder, ids.ghl)
      old.deleted_nowcerts_id = holder
      save_snapshot(holder, nil, old)
      note({ nowcerts = holder, ghl = ids.ghl }, "insured", "nowcerts", holder, "", "deleted")
      snap.tags, snap.tags_owned = old.tags, old.tags_owned
      holder = nil
    end
    if holder and holder ~= ids[from] then
      local mine, theirs = from == "ghl" and "GHL contact" or "NowCerts insured",
        to == "ghl" and "GHL contact" or "NowCerts insured"
      return skipped(("%s %s matches %s %s by %s, which is linked to %s %s already: not taken over "
          .. "(a duplicate? merge the two, or give this one its own e-mail and phone)"):format(
          mine, ids[from], theirs, ids[to], how or "search", mine, holder),
        { insured_id = ids.nowcerts, contact_id = ids.ghl, linked_to = holder })
    end
    ncghl.link_put(KIND, ids.nowcerts, ids.ghl)
    snap.deleted_ghl_id = nil
    if opts.update == false then
      save_snapshot(ids.nowcerts, ids.ghl, snap)
      result.action = "found"
      result.contact_id, result.insured_id = ids.ghl, ids.nowcerts
      result.contact = to == "ghl" and found or nil
      result.message = ("%s %s found"):format(to == "ghl" and "GHL contact" or "NowCerts insured", ids[to])
      return result
    end
    return first_sync(B.read(ids[to]) or found, how)
  end

  -- An inactive insured whose contact lifecycle.inactive deletes (the
  -- default, a tag, is the contacts map's own `tags` rule).
  if from == "nowcerts" and rec.active == false and lifecycle_choice(maps, "inactive") == "delete" then
    return retire(maps, "inactive", ids.nowcerts, ids.ghl, snap)
  end

  -- Linked before ncghl kept snapshots (and no fingerprint to start from).
  if not next(snap.fields) then
    local current = B.read(ids[to])
    if current then
      return first_sync(current, "link")
    end
  end

  -- Linked. GHL's webhooks leave empty fields out: a field the snapshot has
  -- a value for and the webhook lacks is read from GHL, never taken for a
  -- clear; and without any time on the event, the record read is the truth.
  -- Once read, the contact as GHL has it now stands for every field, not
  -- just the missing ones: the webhook may be late, and its values, dated
  -- by the read, would pass for newer than edits made since.
  if from == "ghl" and not opts.whole then
    local missing = false
    for _, p in ipairs(pairs_) do
      if values[p.key] == nil and base_of(snap, p.key) ~= "" then
        missing = true
      end
    end
    if missing or (at == nil and next((changes_of(pairs_, values, snap, from, at)))) then
      local now = A.read(ids.ghl)
      if now then
        local fresh = view(A, pairs_, now, true, maps)
        for k, v in pairs(fresh) do
          values[k] = v
        end
        at = A.time_of(now) or at
      end
    end
  end

  local changed, stale = changes_of(pairs_, values, snap, from, at)
  local tags_changed = wanted ~= nil and not same_tags(wanted, type(snap.tags) == "table" and snap.tags or {})
  if opts.update == false then
    changed, tags_changed = {}, false
  end
  if next(changed) and from == "nowcerts" and not opts.fresh then
    -- The insured as NowCerts has it now is the truth: a queued or relayed
    -- copy may be older than an edit ncghl or an agent made since.
    local now = A.read(ids.nowcerts)
    if now then
      rec = now
      values = view(A, pairs_, now, true, maps)
      at = A.time_of(now) or at
      changed, stale = changes_of(pairs_, values, snap, from, at)
      wanted = wanted_tags(maps, now)
      tags_changed = wanted ~= nil and not same_tags(wanted, type(snap.tags) == "table" and snap.tags or {})
    end
  end
  local dirty = seen(pairs_, values, snap, from, at)
  local ow = opts.update == false and {} or oneway_changes(snap, to, oneway_of(maps, to, rec, pairs_))
  -- Consent travels when it changed: GHL's DND state to what contacts.lua
  -- makes of it in NowCerts; NowCerts' to GHL where the map reads one.
  local consent
  if opts.update ~= false then
    if from == "ghl" then
      consent = sync.consent_of(rec)
      if consent ~= nil and consent ~= (snap.consent or "") then
        for f, v in pairs(consent_fields(maps, consent, rec) or {}) do
          ow[f] = v
        end
      else
        consent = nil
      end
    elseif type(maps.consent_from_insured) == "function" then
      local c = maps.consent_from_insured(rec)
      local state = type(c) == "table" and sync.consent_of(c) or nil
      if state ~= nil and state ~= (snap.consent or "") then
        for f, v in pairs(c) do
          ow[f] = v
        end
        consent = state
      end
    end
  end

  if not next(changed) and not tags_changed and not next(ow) then
    if dirty then
      save_snapshot(ids.nowcerts, ids.ghl, snap)
    end
    local reason = #stale > 0 and ("older than what ncghl already has for " .. table.concat(stale, ", "))
      or "no field changed since the last sync (echo of ncghl's own write, or nothing new)"
    return skipped(reason, { contact_id = ids.ghl, insured_id = ids.nowcerts, stale = #stale > 0 and stale or nil })
  end

  -- The other side, as it is right before the write (after any wait for
  -- GHL's rate limit, which the read takes for both).
  local current = B.read(ids[to], true)
  if not current then
    -- Deleted (or merged away) there without ncghl hearing of it.
    return linked_gone(to)
  end
  local theirs = view(B, pairs_, current, true, maps)
  local their_at = B.time_of(current)

  local write_to, write_back, conflicts, sent = {}, {}, {}, {}
  local later, flush_notes = later_notes()
  for _, p in ipairs(pairs_) do
    local mine = changed[p.key]
    if mine ~= nil then
      local base = base_of(snap, p.key)
      local nm, ny = norm(p.key, mine), norm(p.key, theirs[p.key]) or ""
      local f = snap.fields[p.key] or {}
      if ny == base then
        write_to[p.key] = mine
        f.base = nm
        later(ids, p.key, from, base, nm, "sent")
        sent[#sent + 1] = p.key
      elseif ny == nm then
        f.base = nm
        note(ids, p.key, from, base, nm, "same")
      else
        local c = {
          field = p.key,
          base = base,
          nowcerts = from == "nowcerts" and nm or ny,
          ghl = from == "ghl" and nm or ny,
          nowcerts_at = from == "nowcerts" and at or their_at,
          ghl_at = from == "ghl" and at or their_at,
        }
        local winner = decide(p.key, c)
        stored(ncghl.conflict_add, {
          kind = KIND,
          nowcerts_id = ids.nowcerts,
          ghl_id = ids.ghl,
          field = p.key,
          nowcerts_value = c.nowcerts ~= "" and c.nowcerts or nil,
          ghl_value = c.ghl ~= "" and c.ghl or nil,
          base = base ~= "" and base or nil,
          winner = winner,
          nowcerts_at = c.nowcerts_at,
          ghl_at = c.ghl_at,
        })
        conflicts[#conflicts + 1] = { field = p.key, winner = winner, nowcerts = c.nowcerts, ghl = c.ghl }
        if winner == from then
          write_to[p.key] = mine
          f.base = nm
          note(ids, p.key, from, base, nm, "conflict_won")
          note(ids, p.key, to, base, ny, "conflict_lost")
        else
          write_back[p.key] = theirs[p.key]
          f.base = ny
          note(ids, p.key, to, base, ny, "conflict_won")
          note(ids, p.key, from, base, nm, "conflict_lost")
        end
      end
      if at and (type(f[from .. "_at"]) ~= "number" or f[from .. "_at"] < at) then
        f[from .. "_at"] = at
      end
      if their_at then
        f[to .. "_at"] = their_at
      end
      snap.fields[p.key] = f
    end
  end

  local after
  remember_oneway(snap, to, ow)
  if consent ~= nil then
    snap.consent = consent
    note(ids, "consent", from, "", consent, "sent")
  end
  if next(write_to) or next(ow) then
    local gone
    after, gone = B.update(ids[to], with_oneway(by_field(B, pairs_, write_to), ow), current)
    if gone then
      return linked_gone(to)
    end
  end
  if next(write_back) then
    local mine_now = rec
    if from == "nowcerts" and not opts.fresh then
      mine_now = A.read(ids.nowcerts) or rec
    end
    local back, gone = A.update(ids[from], by_field(A, pairs_, write_back), mine_now)
    if gone then
      return linked_gone(from)
    end
    local back_at = back and A.time_of(back)
    if back_at then
      for k in pairs(write_back) do
        snap.fields[k][from .. "_at"] = back_at
      end
    end
  end
  flush_notes()
  -- A write to GHL answers the contact with its new time: an older webhook
  -- about these fields is stale from now on.
  local after_at = after and B.time_of(after)
  if after_at then
    for k in pairs(write_to) do
      snap.fields[k][to .. "_at"] = after_at
    end
  end
  local added, removed
  if tags_changed and from == "nowcerts" then
    local owned
    added, removed, owned = apply_tags(ids.ghl, current.tags, wanted, owned_tags(snap))
    snap.tags, snap.tags_owned = wanted, owned
  end
  save_snapshot(ids.nowcerts, ids.ghl, snap)

  result.action = "updated"
  result.found_by = "link"
  result.contact_id, result.insured_id = ids.ghl, ids.nowcerts
  result.fields = sent
  result.conflicts = #conflicts > 0 and conflicts or nil
  result.tags_added = added and #added > 0 and added or nil
  result.tags_removed = removed and #removed > 0 and removed or nil
  result.message = ("%s %s updated (%s)"):format(to == "ghl" and "GHL contact" or "NowCerts insured",
    ids[to], #sent > 0 and table.concat(sent, ", ") or (#conflicts > 0 and "conflicts" or "tags"))
  return result
end

-- sync.insured_deleted(row, opts): a row of NowCerts' DeletedInsuredList
-- ({insuredDatabaseId, ...}) for a linked insured.
function sync.insured_deleted(row, opts)
  local maps = opts.maps
  local nc_id = util.str(type(row) == "table" and row.insuredDatabaseId)
  if util.empty(nc_id) then
    return skipped("the row names no insuredDatabaseId")
  end
  nc_id = nc_id:lower()
  ncghl.lock("contact:nowcerts:" .. nc_id)
  local ghl_id = ncghl.link_get(KIND, "ghl", nc_id)
  if not ghl_id then
    return skipped(("insured %s has no linked GHL contact"):format(nc_id))
  end
  ncghl.lock("contact:ghl:" .. ghl_id)
  local snap = load_snapshot(nc_id)
  if snap.retired == "deleted" then
    return skipped("already handled", { insured_id = nc_id, contact_id = ghl_id })
  end
  return retire(maps, "deleted", nc_id, ghl_id, snap)
end

-- sync.ensure_contact(body, opts) -> contact id, how: the GHL contact of a
-- person a record only names (a policy's insured: body in GHL's field
-- names), found by the link of opts.nowcerts_id, then by e-mail, phone, or
-- (opts.match_name) first + last name, and created from body only when GHL
-- has none. An existing contact is not changed: the insured's own events
-- keep it up to date.
function sync.ensure_contact(body, opts)
  opts = opts or {}
  local nc_id = util.str(opts.nowcerts_id)
  nc_id = nc_id and nc_id:lower()
  local who = {
    email = util.email(body.email),
    phone = util.phone10(body.phone) and body.phone or nil,
    first = util.str(body.firstName),
    last = util.str(body.lastName),
    match_name = opts.match_name,
  }
  local name = who.first and who.last and (who.first .. " " .. who.last):lower()
  ncghl.lock(nc_id and "contact:nowcerts:" .. nc_id, who.email and "contact:email:" .. who.email,
    who.phone and "contact:phone:" .. util.phone10(who.phone),
    (not who.email and not who.phone and name) and "contact:name:" .. name or nil)
  if nc_id then
    local linked = ncghl.link_get(KIND, "ghl", nc_id)
    if linked then
      return linked, "link"
    end
  end
  local found, how = sides.ghl.find(who)
  if found and nc_id then
    -- Another insured's contact (two people who share a name, a phone) is
    -- not this insured's: it gets one of its own.
    local linked_to = ncghl.link_get(KIND, "nowcerts", util.str(found.id))
    if linked_to and linked_to ~= nc_id then
      found = nil
    end
  end
  local id
  if found then
    id = util.str(found.id)
  else
    local existing
    id, existing = create("ghl", body, who, opts.event)
    if not id then
      how = "search"
      id = util.str(existing.id)
    else
      how = "created"
    end
  end
  if nc_id then
    ncghl.link_put(KIND, nc_id, id)
  end
  return id, how
end

-- A GHL contact was deleted: the link goes, and the snapshot stays as a
-- tombstone, so a later change to the insured does not create the contact
-- again (unless GHL has another contact for the person).
function sync.contact_deleted(ghl_id)
  ghl_id = util.str(ghl_id)
  if util.empty(ghl_id) then
    return skipped("the webhook names no contact id")
  end
  ncghl.lock("contact:ghl:" .. ghl_id)
  local nc_id = ncghl.link_get(KIND, "nowcerts", ghl_id)
  if not nc_id then
    return skipped(("GHL contact %s is not linked to a NowCerts insured"):format(ghl_id))
  end
  ncghl.lock("contact:nowcerts:" .. nc_id)
  local snap = load_snapshot(nc_id)
  snap.deleted_ghl_id = ghl_id
  snap.deleted_at = ncghl.now()
  stored(ncghl.link_del, KIND, nc_id)
  save_snapshot(nc_id, nil, snap)
  note({ nowcerts = nc_id, ghl = ghl_id }, "contact", "ghl", ghl_id, "", "deleted")
  return {
    action = "unlinked",
    insured_id = nc_id,
    contact_id = ghl_id,
    message = ("GHL contact %s was deleted: unlinked from NowCerts insured %s"):format(ghl_id, nc_id),
  }
end

return sync
