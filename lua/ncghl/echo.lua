-- ncghl.echo: echo suppression (SPEC section 6). Every write ncghl makes to
-- a record comes back to it as a webhook or a polled change from that side;
-- it must not be sent back again, or every sync would bounce forever.
--
-- After a write to side S, record R, ncghl stores a fingerprint: JSON of
-- {field = normalised value} for the scalar fields written from data (strings
-- trimmed, emails lower-cased, phones cut to their last 10 digits). An event
-- from S about R is an echo when every fingerprinted field, read from the
-- incoming record and normalised the same way, is equal.
--
-- Left out on purpose: lists and objects (tags, customFields: the other side
-- reorders and merges them), and constants a map adds (source, type,
-- insuredType, active). Constants are ncghl's own, not the person's data, and
-- NowCerts reads them back in another form (type 1 comes back as
-- "Prospect"), so comparing them would only make every echo look new.
local json = require "ncghl.json"
local util = require "ncghl.util"

local echo = {}

local type, next, lower, find = type, next, string.lower, string.find
local trim, str, email, phone10 = util.trim, util.str, util.email, util.phone10
local NULL = json.null

-- Which kind of field a name is ("email", "phone" or false), worked out
-- once per name: fingerprints compare the same few fields on every event.
-- Bounded like util's caches, since incoming records may name any field.
local kinds, nkinds = {}, 0

local function kind(field)
  local k = kinds[field]
  if k == nil then
    local f = lower(field)
    if find(f, "mail", 1, true) then
      k = "email"
    elseif find(f, "phone", 1, true) then
      k = "phone"
    else
      k = false
    end
    if type(field) == "string" and #field <= util.CACHE_KEY_BYTES then
      if nkinds >= util.CACHE_ENTRIES then
        kinds, nkinds = {}, 0
      end
      kinds[field] = k
      nkinds = nkinds + 1
    end
  end
  return k
end

-- The comparable form of one field's value; "" for no value, nil for a value
-- that is not compared (a list or an object). Strings, nearly every value,
-- are settled first with one type check.
function echo.normalise(field, v)
  if v == nil or v == NULL then
    return ""
  end
  local t = type(v)
  if t == "table" then
    return next(v) == nil and "" or nil
  end
  local k = kinds[field]
  if k == nil then
    k = kind(field)
  end
  if t == "string" then
    if k == "email" then
      return email(v) or ""
    elseif k == "phone" then
      return phone10(v) or trim(v)
    end
    return trim(v)
  elseif k == "email" then
    return email(v) or ""
  elseif k == "phone" then
    return phone10(v) or trim(str(v))
  elseif t == "number" then
    return str(v)
  end
  return v
end

function echo.fingerprint(body, trace)
  local fp = {}
  for field, v in pairs(body) do
    local how = trace and trace[field]
    if how and how ~= "const" then
      local n = echo.normalise(field, v)
      if n ~= nil and n ~= "" then
        fp[field] = n
      end
    end
  end
  return fp
end

function echo.record(side, id, body, trace)
  if not id then
    return
  end
  local fp = echo.fingerprint(body, trace)
  if next(fp) ~= nil then
    ncghl.fp_put(side, id, json.encode(fp))
  end
end

-- A field of an incoming record by the name it was written under; names that
-- differ only in case (eMail, email) are the same field.
local function reader(rec)
  local lower
  return function(field)
    local v = rec[field]
    if v ~= nil then
      return v
    end
    if not lower then
      lower = {}
      for k, val in pairs(rec) do
        if type(k) == "string" then
          lower[k:lower()] = val
        end
      end
    end
    return lower[field:lower()]
  end
end

local function load_fp(side, id)
  local s = ncghl.fp_get(side, id)
  if not s then
    return nil
  end
  local ok, fp = pcall(json.decode, s)
  if not ok or type(fp) ~= "table" or next(fp) == nil then
    return nil
  end
  return fp
end

-- What ncghl last wrote to record `id` on `side`, as {field = normalised
-- value}, or nil if it never wrote it.
function echo.last_written(side, id)
  if not id then
    return nil
  end
  return load_fp(side, id)
end

function echo.is_echo(side, id, rec)
  if not id or type(rec) ~= "table" then
    return false
  end
  local fp = load_fp(side, id)
  if not fp then
    return false
  end
  local get = reader(rec)
  for field, want in pairs(fp) do
    if echo.normalise(field, get(field)) ~= want then
      return false
    end
  end
  return true
end

-- After a real (not echoed) change from side S about R has been handled, the
-- fingerprint takes the record's new values: otherwise a person who later
-- changes a field back to what ncghl once wrote would be mistaken for an echo.
function echo.observe(side, id, rec)
  if not id or type(rec) ~= "table" then
    return
  end
  local fp = load_fp(side, id)
  if not fp then
    return
  end
  local get, changed = reader(rec), false
  for field, old in pairs(fp) do
    local now = echo.normalise(field, get(field))
    if now ~= nil and now ~= old then
      fp[field] = now
      changed = true
    end
  end
  if changed then
    ncghl.fp_put(side, id, json.encode(fp))
  end
end

return echo
