-- ncghl.custom_fields: finding a GHL custom field that a map names by key.
-- GHL lists a location's fields (GET /locations/{id}/customFields) with a
-- fieldKey of the form "<model>.<key>" ("opportunity.policy_number"). Which
-- form GHL's write API wants in `key` is not confirmed (ref/ghl/NOTES.md),
-- so how a map's key is matched is a setting, not a guess:
--   "either"    (default) the full fieldKey or the part after the model;
--   "bare"      only the part after the model ("policy_number");
--   "fieldKey"  only the full fieldKey ("opportunity.policy_number").
-- An agency sets it from one of its mapping files:
--   require("ncghl.custom_fields").key_form = "fieldKey"
local custom_fields = {}

custom_fields.key_form = "either"

local FORMS = { either = true, bare = true, fieldKey = true }

local function bare_of(field_key)
  return field_key:match("^[^.]+%.(.+)$")
end

-- Whether GHL's field f is the one `key` names, under key_form.
function custom_fields.matches(f, key)
  local fk = type(f) == "table" and f.fieldKey
  if type(fk) ~= "string" or type(key) ~= "string" then
    return false
  end
  local form = custom_fields.key_form
  if not FORMS[form] then
    error(("ncghl.custom_fields.key_form must be \"either\", \"bare\" or \"fieldKey\", not %q")
      :format(tostring(form)), 0)
  end
  if form ~= "bare" and fk == key then
    return true
  end
  return form ~= "fieldKey" and bare_of(fk) == key
end

-- The field of `list` (GHL's customFields) that `key` names, or nil.
function custom_fields.find(list, key)
  for _, f in ipairs(list or {}) do
    if custom_fields.matches(f, key) then
      return f
    end
  end
end

-- The keys a map could write for the fields of `list`, under key_form (for
-- a did-you-mean).
function custom_fields.keys(list)
  local out = {}
  local form = custom_fields.key_form
  for _, f in ipairs(list or {}) do
    if type(f) == "table" and type(f.fieldKey) == "string" then
      if form ~= "bare" then
        out[#out + 1] = f.fieldKey
      end
      if form ~= "fieldKey" and bare_of(f.fieldKey) then
        out[#out + 1] = bare_of(f.fieldKey)
      end
    end
  end
  return out
end

return custom_fields
