-- Who wins when both sides changed the same field since the last sync (a
-- conflict). Edits to different fields never conflict: both survive.
--
-- A rule is one of:
--   "newer"     the side whose record changed later, by the records' own
--               timestamps (NowCerts changeDate, GHL dateUpdated); NowCerts
--               on a tie, judged at NowCerts' precision (a GHL edit within
--               the second, or the minute, its changeDate names is a tie).
--               The default.
--   "nowcerts"  NowCerts always wins this field.
--   "ghl"       GHL always wins this field.
--   function(c) ... end   c = { field, base, nowcerts, ghl, nowcerts_at,
--               ghl_at } (values as compared: e-mails lower case, phones
--               their last 10 digits); return "nowcerts", "ghl" or "newer".
--
-- Every conflict is recorded, whoever wins: `ncghl conflicts`, the admin
-- API (GET /api/v1/conflicts), the page at /ui, the metric
-- ncghl_conflicts_total.
local conflicts = {}

conflicts.default = "newer"

-- Per field, by the GHL field name (contacts.lua's left-hand side).
conflicts.fields = {
  -- email = "nowcerts",   -- e.g.: the agency management system owns e-mails
}

return conflicts
