-- ncghl.fields: what a field's value means, for comparing and writing it.
-- The sync compares the two sides field by field (SPEC 10), so "the same
-- value" must not depend on how each side spells it: e-mails compare without
-- case, phones by their digits, text trimmed. Writing a phone to GHL needs
-- E.164, and the records' own timestamps (NowCerts' changeDate, GHL's
-- dateUpdated) are read here into seconds.
local json = require "ncghl.json"
local util = require "ncghl.util"

local type, next, lower, find = type, next, string.lower, string.find
local trim, str, email, phone10 = util.trim, util.str, util.email, util.phone10
local NULL = json.null

local fields = {}

-- Which kind of field a name is ("email", "phone" or false), worked out once
-- per name. Bounded like util's caches, since records may name any field.
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

-- The comparable form of one field's value: "" for no value, nil for a
-- value that is not compared (a list or an object). E-mails lower case,
-- phones their last 10 digits, other text trimmed, numbers as text.
function fields.normalise(field, v)
  if v == nil or v == NULL then
    return ""
  end
  local t = type(v)
  if t == "table" then
    return next(v) == nil and "" or nil
  end
  local k = kind(field)
  if k == "email" then
    return email(v) or ""
  elseif k == "phone" then
    return phone10(v) or trim(str(v))
  elseif t == "string" then
    return trim(v)
  end
  return str(v)
end

-- Country calling codes for the default country of numbers written without
-- one. Numbers that start with + keep their own.
fields.calling_codes = {
  US = "1", CA = "1", PR = "1", GB = "44", IE = "353", AU = "61", NZ = "64", MX = "52",
  DE = "49", FR = "33", ES = "34", IT = "39", NL = "31", IN = "91", PH = "63", ZA = "27",
}

-- A phone in E.164 (+15551234567), as GHL stores and searches numbers.
-- `country` is the default for numbers without a + (ISO code, "US" when
-- nil). nil for no digits; a number that cannot be made E.164 (an unknown
-- country, too few digits) is returned trimmed, as typed.
function fields.e164(phone, country)
  local s = str(phone)
  if not s then
    return nil
  end
  s = util.phone_number(trim(s))
  local d = s:gsub("%D", "")
  if d == "" then
    return nil
  end
  if s:sub(1, 1) == "+" then
    return "+" .. d
  end
  if s:sub(1, 2) == "00" and #d > 10 then
    return "+" .. d:sub(3)
  end
  local cc = fields.calling_codes[(country or "US"):upper()]
  if not cc then
    return s
  end
  if cc == "1" then
    if #d == 10 then
      return "+1" .. d
    elseif #d == 11 and d:sub(1, 1) == "1" then
      return "+" .. d
    end
    return s
  end
  if d:sub(1, 1) == "0" then
    d = d:sub(2) -- the trunk prefix of a national number
  end
  if #d < 6 then
    return s
  end
  return "+" .. cc .. d
end

-- Days from 1970-01-01 to a civil date (proleptic Gregorian).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- An ISO-8601 date-time ("2024-05-01T10:00:00Z", "2022-07-07T06:03:00-05:00",
-- "2021-11-26T12:41:02.193Z", "2023-11-01T18:11:34.7032599-05:00") as unix
-- seconds; a number is taken as seconds (or milliseconds, when it is that
-- large). nil for anything else. A time without a zone is taken as UTC.
function fields.time(v)
  if type(v) == "number" then
    return v > 1e11 and v / 1000 or v
  end
  if type(v) ~= "string" then
    return nil
  end
  local y, mo, d, h, mi, sec, rest = v:match("^%s*(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):?(%d*)(.-)%s*$")
  if not y then
    y, mo, d = v:match("^%s*(%d%d%d%d)%-(%d%d)%-(%d%d)%s*$")
    if not y then
      return nil
    end
    return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
  end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + (tonumber(sec) or 0)
  local frac = rest:match("^%.(%d+)")
  if frac then
    t = t + tonumber("0." .. frac)
    rest = rest:sub(#frac + 2)
  end
  if rest == "" or rest == "Z" or rest == "z" then
    return t
  end
  local sign, oh, om = rest:match("^([+-])(%d%d):?(%d%d)$")
  if not sign then
    return nil
  end
  local off = tonumber(oh) * 3600 + tonumber(om) * 60
  return sign == "+" and t - off or t + off
end

return fields
