-- The offline runner's own Lua: loads test cases, answers the mapping's
-- upstream calls from each case's fixtures (or the default answers below),
-- and compares what happened with what the case expects. It runs in the Lua
-- state of an offline runtime, next to the mappings it tests; `...` is a
-- table of C functions: reset_memory() and set_config(t).
local host = ...
local json = require "ncghl.json"
local cjson = require "cjson"

local NULL = cjson.null
local H = {}
local cases = {}
local cur -- the run in progress: { case, requests, used, seq }
local traces -- map mode: every map.apply of the run

-- Markers a case may use in expected bodies: the field must be missing (or
-- null), or present with any value.
local ABSENT = setmetatable({}, { __name = "ABSENT", __tostring = function() return "ABSENT" end })
local ANY = setmetatable({}, { __name = "ANY", __tostring = function() return "ANY" end })

-- ncghl.config in test cases: the case's own `config`, then these, then the
-- real setting. Fixed values keep a case's expectations the same on every
-- machine and every agency's settings (and in the service's reload check:
-- with DEFAULT_COUNTRY=GB the shipped cases' phones once failed it).
H.TEST_CONFIG = { GHL_LOCATION_ID = "loc-1", DEFAULT_COUNTRY = "US" }
-- In a dry run the real setting wins; these only fill what is not set.
H.DRY_RUN_CONFIG = { GHL_LOCATION_ID = "dry-run-location-id" }

------------------------------------------------------------------------------
-- Showing values: compact JSON with sorted keys (diffs) and indented JSON
-- (ncghl map).

local function is_list(t)
  local n = #t
  if n == 0 then
    return false
  end
  local count = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then
      return false
    end
    count = count + 1
  end
  return count == n
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' then
      return '\\"'
    elseif c == "\\" then
      return "\\\\"
    elseif c == "\n" then
      return "\\n"
    elseif c == "\t" then
      return "\\t"
    elseif c == "\r" then
      return "\\r"
    end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function number(v)
  if v ~= v or v == math.huge or v == -math.huge then
    return "null"
  end
  if math.type(v) == "float" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
    return string.format("%d", math.tointeger(v))
  end
  if math.type(v) == "float" then
    return string.format("%.14g", v)
  end
  return tostring(v)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then
      return ta < tb
    end
    return a < b
  end)
  return keys
end

local function show(v, depth)
  depth = depth or 0
  local t = type(v)
  if v == nil then
    return "nothing"
  elseif v == ABSENT or v == ANY then
    return tostring(v)
  elseif v == NULL then
    return "null"
  elseif t == "string" then
    return quote(v)
  elseif t == "number" then
    return number(v)
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    if depth > 20 then
      return "{...}"
    end
    local parts = {}
    if is_list(v) then
      for i = 1, #v do
        parts[i] = show(v[i], depth + 1)
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for _, k in ipairs(sorted_keys(v)) do
      parts[#parts + 1] = quote(tostring(k)) .. ":" .. show(v[k], depth + 1)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "<" .. t .. ">"
end

local function pretty(v, indent, out)
  local t = type(v)
  if t == "table" and v ~= NULL and v ~= ABSENT and v ~= ANY and next(v) ~= nil then
    local inner = indent .. "  "
    if is_list(v) then
      out[#out + 1] = "[\n"
      for i = 1, #v do
        out[#out + 1] = inner
        pretty(v[i], inner, out)
        out[#out + 1] = i < #v and ",\n" or "\n"
      end
      out[#out + 1] = indent .. "]"
    else
      out[#out + 1] = "{\n"
      local keys = sorted_keys(v)
      for i, k in ipairs(keys) do
        out[#out + 1] = inner .. quote(tostring(k)) .. ": "
        pretty(v[k], inner, out)
        out[#out + 1] = i < #keys and ",\n" or "\n"
      end
      out[#out + 1] = indent .. "}"
    end
  elseif t == "table" and v ~= NULL and v ~= ABSENT and v ~= ANY then
    out[#out + 1] = "{}"
  elseif v == nil then
    out[#out + 1] = "null"
  else
    out[#out + 1] = show(v)
  end
end

------------------------------------------------------------------------------
-- Requests as the runner saw them

-- Every "%XX" escape's byte (either case), so gsub replaces from a table
-- instead of calling a function per escape.
local UNHEX = {}
for b = 0, 255 do
  local hex = ("%02x"):format(b)
  UNHEX[hex], UNHEX[hex:upper()] = string.char(b), string.char(b)
  UNHEX[hex:sub(1, 1):upper() .. hex:sub(2)] = string.char(b)
  UNHEX[hex:sub(1, 1) .. hex:sub(2):upper()] = string.char(b)
end

local function unpct(s)
  if not s:find("[%%+]") then
    return s
  end
  return (s:gsub("%+", " "):gsub("%%(%x%x)", UNHEX))
end

local function parse_query(qs)
  local q = {}
  if qs and qs ~= "" then
    for pair in qs:gmatch("[^&]+") do
      local k, v = pair:match("^([^=]*)=?(.*)$")
      q[unpct(k)] = unpct(v)
    end
  end
  return q
end

-- The body as a table when it is JSON (or a form), else the text itself.
local function decode_body(raw, ctype)
  if raw == nil or raw == "" then
    return nil
  end
  if ctype and ctype:find("x-www-form-urlencoded", 1, true) then
    return parse_query(raw)
  end
  -- cjson itself, not ncghl.json: no need to tidy what is only compared
  -- (1 == 1.0) and shown (number() prints whole floats without ".0").
  local ok, v = pcall(cjson.decode, raw)
  if ok then
    return v
  end
  return raw
end

local function query_of(r)
  if r.query == nil then
    r.query = parse_query(r.qs)
  end
  return r.query
end

local function body_of(r)
  if r.body == nil and r.raw ~= nil then
    r.body = decode_body(r.raw, r.ctype)
    if r.body == nil then
      r.body = false
    end
  end
  return r.body or nil
end

local function req_label(r)
  return ("%s %s %s"):format(tostring(r.service or "*"), tostring(r.method or "*"),
    tostring(r.path or "*"))
end

------------------------------------------------------------------------------
-- Comparing: the expected value is a subset of the actual one. Tables match
-- key by key (keys the case does not name are ignored); a list in the case
-- must have the same length as the actual list, element by element.

-- Whether exp matches act, without saying where not: the fast path every
-- passing case takes (no sorting, no strings built).
-- Expected values are case data, fixed once loaded: whether one is a list
-- is worked out once per table, not on every comparison.
local list_of = setmetatable({}, { __mode = "k" })

local function same(exp, act)
  if exp == act then
    return true -- equal scalars, by far the most common case (act is never ABSENT or ANY)
  elseif exp == ABSENT then
    return act == nil or act == NULL
  elseif exp == ANY then
    return act ~= nil and act ~= NULL
  elseif type(exp) == "table" and exp ~= NULL then
    if type(act) ~= "table" or act == NULL then
      return false
    end
    local n = #exp
    local list = false
    if n > 0 then
      list = list_of[exp]
      if list == nil then
        list = is_list(exp)
        list_of[exp] = list
      end
    end
    if list then
      if #act ~= n then
        return false
      end
      for i = 1, n do
        if not same(exp[i], act[i]) then
          return false
        end
      end
      return true
    end
    for k, v in pairs(exp) do
      if not same(v, act[k]) then
        return false
      end
    end
    return true
  end
  return exp == act
end

local function diff(exp, act, path)
  if exp == ABSENT then
    if act ~= nil and act ~= NULL then
      return path, "no value", show(act)
    end
    return nil
  end
  if exp == ANY then
    if act == nil or act == NULL then
      return path, "a value", "nothing"
    end
    return nil
  end
  if type(exp) == "table" and exp ~= NULL then
    if type(act) ~= "table" or act == NULL then
      return path, show(exp), show(act)
    end
    if is_list(exp) then
      if #act ~= #exp then
        return path, show(exp) .. (" (%d item%s)"):format(#exp, #exp == 1 and "" or "s"),
          show(act) .. (" (%d item%s)"):format(#act, #act == 1 and "" or "s")
      end
      for i = 1, #exp do
        local p, e, a = diff(exp[i], act[i], ("%s[%d]"):format(path, i))
        if p then
          return p, e, a
        end
      end
      return nil
    end
    for _, k in ipairs(sorted_keys(exp)) do
      local p, e, a = diff(exp[k], act[k], path == "" and tostring(k) or path .. "." .. tostring(k))
      if p then
        return p, e, a
      end
    end
    return nil
  end
  if exp ~= act then
    return path, show(exp), show(act)
  end
  return nil
end

-- A case's method in upper case ("post" -> "POST"), once per spelling.
local uppers = {}
local function upper(s)
  local u = uppers[s]
  if not u then
    u = s:upper()
    uppers[s] = u
  end
  return u
end

local function request_diff(er, r)
  if er.service and er.service ~= r.service then
    return "service", show(er.service), show(r.service)
  end
  if er.method and upper(er.method) ~= r.method then
    return "method", show(er.method), show(r.method)
  end
  if er.path and er.path ~= r.path then
    return "path", show(er.path), show(r.path)
  end
  if er.query ~= nil and not same(er.query, query_of(r)) then
    return diff(er.query, query_of(r), "query")
  end
  if er.body ~= nil and not same(er.body, body_of(r)) then
    return diff(er.body, body_of(r), "body")
  end
  return nil
end

-- Whether actual request r is the expected one: request_diff without the
-- words, for the scan every passing case makes (most requests it looks at
-- are other requests, and their differences are never shown).
local function request_matches(er, r)
  return (not er.service or er.service == r.service)
    and (not er.method or upper(er.method) == r.method)
    and (not er.path or er.path == r.path)
    and (er.query == nil or same(er.query, query_of(r)))
    and (er.body == nil or same(er.body, body_of(r)))
end

local function same_target(er, r)
  return (not er.service or er.service == r.service) and
      (not er.method or upper(er.method) == r.method) and (not er.path or er.path == r.path)
end

------------------------------------------------------------------------------
-- Default answers: what the upstream APIs answer (shapes from
-- ref/ghl/NOTES.md and ref/nowcerts/NOTES.md) when a case gives no fixture
-- for a request, and in every dry run without --fixtures. Lookups find
-- nothing; writes succeed with a made-up id.

local function dry_guid(n)
  return ("00000000-0000-4000-8000-%012d"):format(n)
end

local function with(body, extra)
  local out = {}
  if type(body) == "table" then
    for k, v in pairs(body) do
      out[k] = v
    end
  end
  for k, v in pairs(extra) do
    out[k] = v
  end
  return out
end

local function next_id(prefix)
  cur.seq = cur.seq + 1
  if prefix == "nowcerts" then
    return dry_guid(cur.seq)
  end
  return ("dry-run-%s-%d"):format(prefix, cur.seq)
end

local GHL_NOT_FOUND = { statusCode = 404, message = "Not found (no fixture for this request)" }
local GHL_NO_CONTACTS = { contacts = {}, total = 0 }
local GHL_NO_OPPORTUNITIES = { opportunities = {}, total = 0, meta = { total = 0 } }
local GHL_DELETED = { succeded = true }
local NC_EMPTY_LIST = { ["@odata.count"] = 0, value = {} }
local NC_NO_POLICIES = {}
-- The answers above never change: H.answer encodes each of them once.
local CONSTANT = {
  [GHL_NOT_FOUND] = true, [GHL_NO_CONTACTS] = true, [GHL_NO_OPPORTUNITIES] = true,
  [GHL_DELETED] = true, [NC_EMPTY_LIST] = true, [NC_NO_POLICIES] = true,
}

-- A GHL that has every pipeline and stage the mappings' pipelines.lua names
-- (when it has the usual by_line and stage tables), so that a dry run of a
-- policy shows its opportunity rather than a missing pipeline. When it
-- names none (it chooses among the location's own), a location like the
-- sandbox's: Personal Lines and Commercial Lines, stages New, Quoted, Bound.
local function dry_pipelines()
  local ok, pl = pcall(require, "pipelines")
  if not ok or type(pl) ~= "table" then
    return {}
  end
  local stages, seen = {}, {}
  for _, name in pairs(type(pl.stage) == "table" and pl.stage or {}) do
    if type(name) == "string" and not seen[name] then
      seen[name] = true
      stages[#stages + 1] = name
    end
  end
  table.sort(stages)
  local rules = type(pl.by_line) == "table" and pl.by_line or {}
  if #rules == 0 then
    rules = { { pipeline = "Personal Lines" }, { pipeline = "Commercial Lines" } }
    if #stages == 0 then
      stages = { "New", "Quoted", "Bound" }
    end
  end
  local out, named = {}, {}
  for _, rule in ipairs(rules) do
    local name = type(rule) == "table" and rule.pipeline
    if type(name) == "string" and not named[name] then
      named[name] = true
      local n = #out + 1
      local list = {}
      for j, st in ipairs(stages) do
        list[j] = { id = ("dry-run-stage-%d-%d"):format(n, j), name = st }
      end
      out[n] = { id = ("dry-run-pipeline-%d"):format(n), name = name, stages = list }
    end
  end
  return out
end

function H.default_answer(r)
  local m, p = r.method, r.path
  if r.service == "ghl" then
    -- Lookups are answered without decoding the request's body: only the
    -- answers that echo it (creates and updates) need it.
    if m == "POST" and p == "/contacts/search" then
      return 200, GHL_NO_CONTACTS
    elseif m == "GET" and p == "/opportunities/pipelines" then
      return 200, { pipelines = dry_pipelines() }
    elseif p == "/opportunities/search" then
      return 200, GHL_NO_OPPORTUNITIES
    end
    local body = body_of(r)
    if m == "POST" and (p == "/contacts/" or p == "/contacts") then
      return 201, { contact = with(body, { id = next_id("contact") }) }
    elseif m == "POST" and p == "/contacts/upsert" then
      return 200, { new = true, contact = with(body, { id = next_id("contact") }) }
    elseif m == "PUT" and p:match("^/contacts/[^/]+$") then
      return 200, { succeded = true, contact = with(body, { id = unpct(p:match("^/contacts/(.*)$")) }) }
    elseif m == "POST" and (p == "/opportunities/" or p == "/opportunities") then
      return 201, { opportunity = with(body, { id = next_id("opportunity") }) }
    elseif m == "POST" and p == "/opportunities/upsert" then
      return 200, { new = true, opportunity = with(body, { id = next_id("opportunity") }) }
    elseif m == "PUT" and p:match("^/opportunities/[^/]+$") then
      return 200, { opportunity = with(body, { id = unpct(p:match("^/opportunities/(.*)$")) }) }
    elseif m == "GET" then
      return 404, GHL_NOT_FOUND
    elseif m == "DELETE" then
      return 200, GHL_DELETED
    end
    return 200, with(body, { id = next_id("record"), succeded = true })
  end
  -- NowCerts: every list is an OData set; writes answer status 1.
  if m == "GET" then
    return 200, NC_EMPTY_LIST
  end
  local body = body_of(r)
  body = type(body) == "table" and body or {}
  if p:match("^/Insured/") and p ~= "/Insured/InsuredPolicies" then
    return 200, { status = 1, message = "dry run: insured saved",
      insuredDatabaseId = body.databaseId or next_id("nowcerts") }
  elseif p == "/Insured/InsuredPolicies" then
    return 200, NC_NO_POLICIES
  elseif p:match("^/Policy/") or p:match("^/Quote/") then
    local id = body.databaseId or next_id("nowcerts")
    return 200, { status = 1, message = "dry run: policy saved",
      insuredDatabaseId = body.insuredDatabaseId or next_id("nowcerts"),
      policiesOrQuotes = { { policyOrQuoteId = id, isQuote = p:match("^/Quote/") ~= nil,
        status = 1, message = "dry run" } } }
  end
  return 200, { status = 1, message = "dry run", databaseId = body.databaseId or next_id("nowcerts") }
end

------------------------------------------------------------------------------
-- Answering a call (from C, inside ncghl.call)

local function answer_matches(a, r)
  if a.service and a.service ~= r.service then
    return false
  end
  if a.method and a.method ~= r.method then
    return false
  end
  if a.path and a.path ~= r.path then
    return false
  end
  if a.query and not same(a.query, query_of(r)) then
    return false
  end
  return true
end

-- Returns what upstream.c would hand the mapping after its retries: ok,
-- retryable, status, body text, error.
-- Default answers that never change are encoded once.
local encoded = setmetatable({}, { __mode = "k" })

function H.answer(service, method, full, raw, ctype)
  local path, qs = full, ""
  local q = full:find("?", 1, true)
  if q then
    path, qs = full:sub(1, q - 1), full:sub(q + 1)
  end
  -- One table per request, its answer kept in it (status, answer_body,
  -- from): every slot is named here so that filling them in later never
  -- grows the table.
  local r = {
    service = service, method = method, path = path, qs = qs, raw = raw, ctype = ctype,
    status = false, answer_body = false, from = false, query = nil, body = nil,
  }
  local reqs = cur.requests
  reqs[#reqs + 1] = r
  local a
  local answers = cur.case and cur.case.answers
  if answers then
    local used = cur.used
    for i = 1, #answers do
      if not used[i] and answer_matches(answers[i], r) then
        used[i] = true
        a = answers[i]
        break
      end
    end
  end
  local status, body, from, text, status0
  if a then
    status, body, from, text, status0 = a.status, a.body, "fixture", a.text, a.status0
  else
    status, body = H.default_answer(r)
    from = "default"
    if type(body) == "string" then
      text = body
    elseif body == nil then
      text = ""
    else
      text = encoded[body]
      if not text then
        text = json.encode(body)
        if CONSTANT[body] then
          encoded[body] = text
        end
      end
    end
    status0 = type(body) == "table" and body.status == 0 and tostring(body.message or "")
  end
  r.status, r.answer_body, r.from = status, body, from
  if status == 0 then
    return false, true, 0, "", "connection error: " .. tostring(a and a.error or "no answer")
  elseif status >= 200 and status < 300 then
    if service == "nowcerts" and status0 then
      return false, false, status, text, "status 0: " .. status0
    end
    return true, false, status, text, nil
  end
  local retryable = status == 429 or (status >= 500 and status <= 599)
  local shown = #text > 300 and text:sub(1, 300) or text
  if shown:find("[\r\n]") then
    shown = shown:gsub("[\r\n]", " ")
  end
  return false, retryable, status, text, ("HTTP %d: %s"):format(status, shown)
end

------------------------------------------------------------------------------
-- Loading cases

local SOURCES = { nowcerts = true, ghl = true, manual = true }
local OUTCOMES = { done = true, ignored = true, retry = true, failed = true }
local SERVICES = { nowcerts = true, ghl = true }
local CASE_KEYS = { name = true, source = true, body = true, type = true, run = true, links = true,
  snapshots = true, answers = true, expect = true, config = true }
local ANSWER_KEYS = { service = true, method = true, path = true, query = true, status = true,
  body = true, error = true }
local REQUEST_KEYS = { service = true, method = true, path = true, query = true, body = true }
local EXPECT_KEYS = { outcome = true, requests = true, data = true, error = true,
  request_count = true, message = true }

local function unknown_key(t, allowed, what)
  for _, k in ipairs(sorted_keys(t)) do
    if not allowed[k] then
      return ("%s has no field %s (a typo?)"):format(what, show(k))
    end
  end
  return nil
end

local function line_of(text, name)
  for _, q in ipairs({ '"', "'" }) do
    local at = text:find(q .. name .. q, 1, true)
    if at then
      local _, n = text:sub(1, at):gsub("\n", "")
      return n + 1
    end
  end
  return nil
end

-- The event type intake would store (server.c). Bodies that the webhook
-- routes would refuse still run: the poller and NowCerts' REST hooks store
-- other shapes under the same sources.
local function intake_type(source, body)
  if type(body) ~= "table" then
    return nil, "the body is not a JSON object or array"
  end
  if source == "nowcerts" then
    if type(body.event_type) == "string" then
      return body.event_type
    elseif type(body.hook) == "string" then
      return "hook:" .. body.hook
    end
  elseif source == "ghl" then
    local t = body.type ~= nil and body.type or body.event
    if type(t) == "string" then
      return t
    end
  elseif type(body.entity_type) == "string" and type(body.direction) == "string" then
    return body.entity_type .. ":" .. body.direction
  end
  return ""
end

local function check_list(v, what)
  if v == nil then
    return true
  end
  if type(v) ~= "table" then
    return false, what .. " must be a list"
  end
  for i, x in ipairs(v) do
    if type(x) ~= "table" then
      return false, ("%s[%d] must be a table"):format(what, i)
    end
  end
  return true
end

local function normalize_answers(list)
  local answers = {}
  for j, a in ipairs(list or {}) do
    local bad = unknown_key(a, ANSWER_KEYS, ("answers[%d]"):format(j))
    if bad then
      return nil, bad
    end
    if a.service ~= nil and not SERVICES[a.service] then
      return nil, ('answers[%d].service must be "ghl" or "nowcerts"'):format(j)
    end
    if a.method ~= nil and type(a.method) ~= "string" then
      return nil, ("answers[%d].method must be a string"):format(j)
    end
    if a.query ~= nil and type(a.query) ~= "table" then
      return nil, ("answers[%d].query must be a table of the query's fields"):format(j)
    end
    if a.status ~= nil and math.type(a.status) ~= "integer" then
      return nil, ("answers[%d].status must be a whole number"):format(j)
    end
    if a.path ~= nil and (type(a.path) ~= "string" or a.path:find("?", 1, true)) then
      return nil, ("answers[%d].path must be the path without its query (use query = {...})"):format(j)
    end
    -- Encoded once here, not on every run.
    local text = a.body
    if type(text) == "table" then
      local ok, v = pcall(json.encode, text)
      if not ok then
        return nil, ("answers[%d].body cannot be sent as JSON: %s"):format(j, tostring(v))
      end
      text = v
    elseif text == nil then
      text = ""
    elseif type(text) ~= "string" then
      return nil, ("answers[%d].body must be a table or a string"):format(j)
    end
    -- NowCerts' failure inside an HTTP 200, found once here (upstream.c
    -- finds it in every answer).
    local parsed = a.body
    if type(parsed) == "string" then
      local okp, v = pcall(cjson.decode, parsed)
      parsed = okp and v or nil
    end
    local status0 = type(parsed) == "table" and parsed.status == 0 and tostring(parsed.message or "")
    answers[j] = {
      service = a.service, method = a.method and a.method:upper(), path = a.path, query = a.query,
      status = a.status or 200, body = a.body, text = text, error = a.error, status0 = status0,
    }
  end
  return answers
end

-- Whether an expected value holds JSON null anywhere (H.check then compares
-- it with the data decoded as the mapping would see it). seen: the tables
-- already looked at, so a table that holds itself ends the walk.
local function has_null(v, seen)
  if v == NULL then
    return true
  elseif type(v) ~= "table" or seen[v] then
    return false
  end
  seen[v] = true
  for _, x in pairs(v) do
    if has_null(x, seen) then
      return true
    end
  end
  return false
end

local function validate(c, i)
  if type(c) ~= "table" then
    return nil, ("case %d is a %s, not a table"):format(i, type(c))
  end
  local name = c.name
  if type(name) ~= "string" or name == "" then
    return nil, ("case %d has no name"):format(i)
  end
  local unknown = unknown_key(c, CASE_KEYS, "a case")
  if unknown then
    return nil, unknown
  end
  if c.run ~= nil and (math.type(c.run) ~= "integer" or c.run < 1) then
    return nil, "run must be a whole number from 1 (1 = the event's first run)"
  end
  if not SOURCES[c.source] then
    return nil, 'source must be "nowcerts", "ghl" or "manual"'
  end
  local body = c.body
  local payload
  if type(body) == "string" then
    payload = body
    local ok, v = pcall(json.decode, body)
    if not ok then
      return nil, "body is not JSON: " .. tostring(v)
    end
    body = v
  elseif type(body) == "table" then
    local ok, v = pcall(json.encode, body)
    if not ok then
      return nil, "body cannot be sent as JSON: " .. tostring(v)
    end
    payload = v
  else
    return nil, "body is missing (the webhook body, as a table or JSON text)"
  end
  local etype = c.type
  if etype == nil then
    local why
    etype, why = intake_type(c.source, body)
    if not etype then
      return nil, "body: " .. why
    end
  end
  for _, k in ipairs({ "links", "snapshots", "answers" }) do
    local ok, e = check_list(c[k], k)
    if not ok then
      return nil, e
    end
  end
  local answers, bad = normalize_answers(c.answers)
  if not answers then
    return nil, bad
  end
  for j, l in ipairs(c.links or {}) do
    if (l.kind ~= nil and type(l.kind) ~= "string") or type(l.nowcerts) ~= "string" or
        type(l.ghl) ~= "string" or l.nowcerts == "" or l.ghl == "" then
      return nil, ("links[%d] needs nowcerts and ghl ids"):format(j)
    end
  end
  for j, f in ipairs(c.snapshots or {}) do
    if (f.kind ~= nil and type(f.kind) ~= "string") or type(f.nowcerts) ~= "string"
        or f.nowcerts == "" or type(f.fields) ~= "table" then
      return nil, ("snapshots[%d] needs nowcerts (the link's NowCerts id) and fields"):format(j)
    end
  end
  if c.config ~= nil and type(c.config) ~= "table" then
    return nil, "config must be a table of settings"
  end
  local e = c.expect
  if type(e) ~= "table" then
    return nil, "expect is missing (what should happen)"
  end
  unknown = unknown_key(e, EXPECT_KEYS, "expect")
  if unknown then
    return nil, unknown
  end
  if e.outcome ~= nil and not OUTCOMES[e.outcome] then
    return nil, 'expect.outcome must be "done", "ignored", "retry" or "failed"'
  end
  local ok, err = check_list(e.requests, "expect.requests")
  if not ok then
    return nil, err
  end
  for j, r in ipairs(e.requests or {}) do
    local what = ("expect.requests[%d]"):format(j)
    local unknown_r = unknown_key(r, REQUEST_KEYS, what)
    if unknown_r then
      return nil, unknown_r
    end
    if r.service ~= nil and not SERVICES[r.service] then
      return nil, ('%s.service must be "ghl" or "nowcerts"'):format(what)
    end
    if r.method ~= nil and type(r.method) ~= "string" then
      return nil, what .. ".method must be a string"
    end
    for _, k in ipairs({ "query", "body" }) do
      if r[k] ~= nil and type(r[k]) ~= "table" then
        return nil, ("%s.%s must be a table of the fields to compare"):format(what, k)
      end
    end
    if r.path ~= nil and (type(r.path) ~= "string" or r.path:find("?", 1, true)) then
      return nil, ("expect.requests[%d].path must be the path without its query (use query = {...})"):format(j)
    end
  end
  if e.error ~= nil and type(e.error) ~= "string" then
    return nil, "expect.error must be a Lua pattern (a string)"
  end
  if e.message ~= nil and type(e.message) ~= "string" then
    return nil, "expect.message must be a Lua pattern (a string)"
  end
  if e.request_count ~= nil and math.type(e.request_count) ~= "integer" then
    return nil, "expect.request_count must be a whole number"
  end
  local config = c.config and with(H.TEST_CONFIG, c.config) or H.TEST_CONFIG
  -- Snapshots are stored as JSON text (the sync's shape: each field's base
  -- value): encoded here once, not on every run (one that cannot be encoded
  -- fails its run).
  local snap_texts = {}
  for j, f in ipairs(c.snapshots or {}) do
    local fields = {}
    for k, v in pairs(f.fields) do
      fields[k] = { base = tostring(v) }
    end
    local okf, text = pcall(json.encode, { v = 1, fields = fields, tags = f.tags })
    snap_texts[j] = okf and text or nil
    if not okf then
      snap_texts = nil
      break
    end
  end
  return {
    name = name, source = c.source, type = etype, payload = payload, run = c.run or 1,
    links = c.links, snapshots = c.snapshots, snap_texts = snap_texts, answers = answers,
    expect = e, config = config, data_has_null = e.data ~= nil and has_null(e.data, {}),
  }
end

-- Compiles a case file (text read by C) in its own environment. Returns the
-- chunk, or nil and "file:line: message". C runs the chunk itself, under
-- the budget, so that a loop in a case file is stopped at its own line.
function H.compile(path, text)
  local env = setmetatable({ ABSENT = ABSENT, ANY = ANY }, { __index = _G })
  return load(text, "@" .. path, "t", env)
end

-- Takes the cases a case file returned. Returns how many, or nil and
-- "file:line: message".
function H.load(path, text, list)
  if type(list) ~= "table" then
    return nil, path .. ":1: a test case file must return a list of cases"
  end
  local n = 0
  for i, c in ipairs(list) do
    local case, why = validate(c, i)
    local line = type(c) == "table" and type(c.name) == "string" and line_of(text, c.name) or 1
    if not case then
      local label = type(c) == "table" and type(c.name) == "string" and (' case "%s"'):format(c.name) or ""
      return nil, ("%s:%d:%s %s"):format(path, line, label, why)
    end
    case.file, case.line = path, line
    cases[#cases + 1] = case
    n = n + 1
  end
  return n
end

function H.count()
  return #cases
end

-- ncghl.lint's findings: the map targets no upstream accepts, then the
-- source paths no case body has.
function H.lint()
  local lint = require "ncghl.lint"
  local bodies = {}
  for _, c in ipairs(cases) do
    local ok, b = pcall(json.decode, c.payload)
    if ok then
      bodies[#bodies + 1] = b
    end
  end
  return lint.targets(), lint.sources(bodies)
end

function H.info(i)
  local c = cases[i]
  return c.file, c.name, c.line
end

------------------------------------------------------------------------------
-- Running

local function seed(c)
  host.reset_memory()
  local links = c.links
  if links then
    for _, l in ipairs(links) do
      ncghl.link_put(l.kind or "contact", l.nowcerts, l.ghl)
    end
  end
  local snaps, texts = c.snapshots, c.snap_texts
  if snaps then
    for j, f in ipairs(snaps) do
      ncghl.snapshot_put(f.kind or "contact", f.nowcerts, f.ghl, texts and texts[j] or "{}")
    end
  end
end

-- Makes case i the current one; returns what C needs for lrt_run.
local engine = require "ncghl.engine"

function H.prepare(i)
  local c = cases[i]
  cur = { case = c, requests = {}, used = {}, seq = 0 }
  -- What the helpers cached (GHL's pipelines) came from another case.
  if engine.reset then
    engine.reset()
  end
  seed(c)
  host.set_config(c.config)
  return "case-" .. i, c.source, c.type, c.payload, c.run
end

local function describe_run(c, outcome, message, data, err)
  local out = {}
  local e = c.expect
  out[#out + 1] = "    expected:"
  if e.outcome then
    out[#out + 1] = "      outcome  " .. e.outcome
  end
  if e.error then
    out[#out + 1] = "      error    matching " .. quote(e.error)
  end
  for j, er in ipairs(e.requests or {}) do
    local extra = {}
    if er.query ~= nil then
      extra[#extra + 1] = "query " .. show(er.query)
    end
    if er.body ~= nil then
      extra[#extra + 1] = "body " .. show(er.body)
    end
    out[#out + 1] = ("      request  %d. %s %s"):format(j, req_label(er), table.concat(extra, " "))
  end
  if e.request_count then
    out[#out + 1] = ("      requests %d in all"):format(e.request_count)
  end
  if e.data ~= nil then
    out[#out + 1] = "      data     " .. show(e.data)
  end
  out[#out + 1] = "    actual:"
  out[#out + 1] = "      outcome  " .. outcome .. (err and (" (" .. err .. ")") or "")
  if #cur.requests == 0 then
    out[#out + 1] = "      requests none"
  end
  for j, r in ipairs(cur.requests) do
    local line = ("      request  %d. %s %s"):format(j, r.service, r.method) .. " " .. r.path
    if r.qs ~= "" then
      line = line .. " query " .. show(query_of(r))
    end
    local b = body_of(r)
    if b ~= nil then
      line = line .. " body " .. show(b)
    end
    line = line .. ("  -> %s (%s)"):format(tostring(r.status), r.from)
    out[#out + 1] = line
  end
  if data ~= nil then
    out[#out + 1] = "      data     " .. show(data)
  end
  if message and outcome ~= "failed" and outcome ~= "retry" then
    out[#out + 1] = "      message  " .. message
  end
  return table.concat(out, "\n")
end

-- The route's data as the mapping would see it (json.decode), or the text
-- itself when it is not JSON.
local function decode_data(data_json)
  if data_json and data_json ~= "" then
    local ok, v = pcall(json.decode, data_json)
    return ok and v or data_json
  end
  return nil
end

-- The route's data for the comparison every passing case makes: as cjson
-- gives it, which same() cannot tell from json.decode's result (1 == 1.0,
-- and a null under a key neither passes ANY nor fails ABSENT), except for
-- an expected null, which gets json.decode's form.
local function compared_data(c, data_json)
  if not c.data_has_null and data_json and data_json ~= "" then
    local ok, v = pcall(cjson.decode, data_json)
    if ok then
      return v
    end
  end
  return decode_data(data_json)
end

-- Compares the run with the case. Returns true, or false, the first
-- difference (one line) and the whole report.
function H.check(outcome, message, data_json, err)
  local c = cur.case
  local e = c.expect
  local problem
  if e.outcome and e.outcome ~= outcome then
    problem = ("outcome: expected %s, got %s%s"):format(e.outcome, outcome,
      err and (" (" .. err .. ")") or "")
  end
  if not problem and e.error then
    if not err then
      problem = ("error: expected one matching %s, got none"):format(quote(e.error))
    else
      local ok, found = pcall(string.find, err, e.error)
      if not ok then
        problem = "expect.error is not a valid Lua pattern: " .. tostring(found)
      elseif not found then
        problem = ("error: expected one matching %s, got %s"):format(quote(e.error), quote(err))
      end
    end
  end
  if not problem and e.requests then
    local reqs = cur.requests
    local pos = 1
    for j, er in ipairs(e.requests) do
      local found
      for k = pos, #reqs do
        if request_matches(er, reqs[k]) then
          found = k
          break
        end
      end
      if not found then
        local near
        for k = pos, #reqs do
          if same_target(er, reqs[k]) then
            near = k
            break
          end
        end
        if near then
          local p, ev, av = request_diff(er, reqs[near])
          problem = ("request %d (%s) differs from actual request %d at %s: expected %s, got %s"):format(
            j, req_label(er), near, p, ev, av)
        else
          problem = ("request %d (%s) was not made%s"):format(j, req_label(er),
            pos > 1 and (" after request %d"):format(pos - 1) or "")
        end
        break
      end
      pos = found + 1
    end
  end
  if not problem and e.request_count and e.request_count ~= #cur.requests then
    problem = ("requests: expected %d in all, got %d"):format(e.request_count, #cur.requests)
  end
  if not problem and e.message then
    local ok, found = pcall(string.find, message or "", e.message)
    if not ok or not found then
      problem = ("message: expected one matching %s, got %s"):format(quote(e.message), quote(message or ""))
    end
  end
  if not problem and e.data ~= nil and not same(e.data, compared_data(c, data_json)) then
    local data = decode_data(data_json)
    local p, ev, av = diff(e.data, data, "data")
    problem = ("%s: expected %s, got %s"):format(p or "data", ev or show(e.data), av or show(data))
  end
  if not problem then
    return true
  end
  local summary = ('%s:%d: case "%s": %s'):format(c.file, c.line, c.name, problem)
  return false, summary, "    " .. summary .. "\n" .. describe_run(c, outcome, message,
    decode_data(data_json), err)
end

-- After the runs: nothing of the cases stays in the state.
function H.finish()
  cur = nil
  host.reset_memory()
  host.set_config(nil)
end

------------------------------------------------------------------------------
-- ncghl map: one body, dry

local function map_names()
  local names = {}
  local mods = {}
  for modname, mod in pairs(package.loaded) do
    if type(mod) == "table" and type(modname) == "string" and modname ~= "_G" then
      mods[#mods + 1] = modname
    end
  end
  table.sort(mods)
  for _, modname in ipairs(mods) do
    local mod = package.loaded[modname]
    for _, k in ipairs(sorted_keys(mod)) do
      local v = mod[k]
      if type(k) == "string" and type(v) == "table" and names[v] == nil then
        names[v] = modname .. "." .. k
      end
    end
  end
  return names
end

-- Prepares a dry run of `payload` (JSON text). list: what the case file at
-- fixtures_path returned (its first case lends its answers, links and
-- snapshots), or nil.
function H.map_prepare(source, payload, fixtures_path, list)
  local ok, body = pcall(json.decode, payload)
  if not ok then
    return nil, "the body is not JSON: " .. tostring(body)
  end
  local etype, why = intake_type(source, body)
  if not etype then
    return nil, why
  end
  local c = { answers = nil }
  if fixtures_path then
    local first = type(list) == "table" and (list.answers and list or list[1]) or nil
    if type(first) ~= "table" then
      return nil, fixtures_path .. ":1: expected a test case file (a list of cases) or a table with answers"
    end
    for _, k in ipairs({ "links", "snapshots", "answers" }) do
      local okl, e = check_list(first[k], k)
      if not okl then
        return nil, fixtures_path .. ":1: " .. e
      end
    end
    local answers, bad = normalize_answers(first.answers)
    if not answers then
      return nil, fixtures_path .. ":1: " .. bad
    end
    c.answers, c.links, c.snapshots = answers, first.links, first.snapshots
  end
  cur = { case = c, requests = {}, used = {}, seq = 0 }
  seed(c)
  local config = {}
  for k, v in pairs(H.DRY_RUN_CONFIG) do
    if ncghl.config(k) == nil then
      config[k] = v
    end
  end
  host.set_config(config)
  traces = {}
  local mapmod = require "ncghl.map"
  if not H.orig_apply then
    H.orig_apply = mapmod.apply
    mapmod.apply = function(m, src, ctx)
      local out, trace = H.orig_apply(m, src, ctx)
      if traces then
        traces[#traces + 1] = { map = m, out = out, trace = trace, src = src }
      end
      return out, trace
    end
  end
  return "dry-run", source, etype, payload
end

------------------------------------------------------------------------------
-- ncghl test --coverage: the targets of each map (ncghl.lint's list) that
-- no case filled.

local covered

function H.coverage_start()
  covered = {}
  local mapmod = require "ncghl.map"
  if not H.cov_apply then
    H.cov_apply = mapmod.apply
    mapmod.apply = function(m, src, ctx)
      local out, trace = H.cov_apply(m, src, ctx)
      if covered and type(trace) == "table" then
        local c = covered[m] or {}
        covered[m] = c
        for target in pairs(trace) do
          c[target] = true
        end
      end
      return out, trace
    end
  end
end

-- One line per map: how many of its targets a case filled, and which not.
function H.coverage_report()
  local lint = require "ncghl.lint"
  local util = require "ncghl.util"
  local lines = {}
  for _, e in ipairs(lint.maps) do
    local mod = util.require_optional(e.module)
    local m = type(mod) == "table" and mod[e.map]
    if type(m) == "table" then
      local c = covered and covered[m] or {}
      local all, never = 0, {}
      for _, k in ipairs(sorted_keys(m)) do
        if type(k) == "string" then
          all = all + 1
          if not c[k] then
            never[#never + 1] = k
          end
        end
      end
      lines[#lines + 1] = ("coverage %s.%s: %d of %d targets filled by a case%s"):format(e.module,
        e.map, all - #never, all, #never > 0 and ("; never: " .. table.concat(never, ", ")) or "")
    end
  end
  covered = nil
  return table.concat(lines, "\n")
end

------------------------------------------------------------------------------
-- ncghl map --explain: the source fields that carried a value no map read.

local map_module = require "ncghl.map"

local function spec_paths(spec, out)
  if map_module.is_keep(spec) then
    spec = spec.spec -- map.keep(x) reads what x reads
  end
  if type(spec) == "string" then
    out[spec] = true
  elseif type(spec) == "table" and getmetatable(spec) == nil then
    for _, s in ipairs(spec) do
      spec_paths(s, out)
    end
  end
end

-- Every field of v with a value, by path; a list is one field.
local function leaves(v, prefix, out, seen)
  if type(v) ~= "table" then
    if v ~= nil and v ~= NULL and v ~= "" then
      out[#out + 1] = { path = prefix, value = v }
    end
    return out
  end
  if seen[v] or next(v) == nil then
    return out
  end
  seen[v] = true
  if is_list(v) then
    out[#out + 1] = { path = prefix, value = v }
    return out
  end
  for _, k in ipairs(sorted_keys(v)) do
    if type(k) == "string" then
      leaves(v[k], prefix == "" and k or (prefix .. "." .. k), out, seen)
    end
  end
  return out
end

local function unread_fields()
  local named, srcs, order, fn = {}, {}, {}, false
  for _, t in ipairs(traces or {}) do
    for _, spec in pairs(t.map) do
      spec_paths(spec, named)
      fn = fn or type(spec) == "function"
    end
    if type(t.src) == "table" and not srcs[t.src] then
      srcs[t.src] = true
      order[#order + 1] = t.src
    end
  end
  local out, seen = {}, {}
  for _, src in ipairs(order) do
    for _, f in ipairs(leaves(src, "", {}, {})) do
      local read = false
      local p = f.path
      while p do
        if named[p] then
          read = true
          break
        end
        p = p:match("^(.*)%.[^.]*$")
      end
      if not read and not seen[f.path] then
        seen[f.path] = true
        out[#out + 1] = f
      end
    end
  end
  return out, fn
end

-- The dry run's result as indented JSON text.
function H.map_result(source, etype, outcome, message, data_json, err)
  local data
  if data_json and data_json ~= "" then
    local ok, v = pcall(json.decode, data_json)
    data = ok and v or data_json
  end
  local out = {}
  local function field(k, v, last)
    out[#out + 1] = "  " .. quote(k) .. ": "
    pretty(v, "  ", out)
    out[#out + 1] = last and "\n" or ",\n"
  end
  out[#out + 1] = "{\n"
  field("source", source)
  field("type", etype)
  field("outcome", outcome)
  field("message", message)
  field("error", err)
  local reqs = {}
  for _, r in ipairs(cur.requests) do
    reqs[#reqs + 1] = {
      service = r.service, method = r.method, path = r.path, query = query_of(r),
      body = body_of(r), answer = { status = r.status, body = r.answer_body, from = r.from },
    }
  end
  -- Requests keep their order and their fields a fixed one.
  out[#out + 1] = '  "requests": ['
  for i, r in ipairs(reqs) do
    out[#out + 1] = (i == 1 and "\n" or "") .. "    {\n"
    local keys = { "service", "method", "path", "query", "body", "answer" }
    for j, k in ipairs(keys) do
      out[#out + 1] = "      " .. quote(k) .. ": "
      pretty(r[k], "      ", out)
      out[#out + 1] = j < #keys and ",\n" or "\n"
    end
    out[#out + 1] = "    }" .. (i < #reqs and ",\n" or "\n  ")
  end
  out[#out + 1] = "],\n"
  local names = map_names()
  local maps = {}
  for _, t in ipairs(traces or {}) do
    local fields = {}
    for target, how in pairs(t.trace) do
      fields[target] = { from = how, value = t.out[target] }
    end
    maps[#maps + 1] = { map = names[t.map] or "(a map table)", fields = fields }
  end
  if #maps == 0 then
    out[#out + 1] = '  "maps": [],\n'
  else
    field("maps", maps)
  end
  if H.explain then
    local unread, fn = unread_fields()
    field("unread", #unread > 0 and unread or {})
    if fn then
      field("unread_note", "a map function may read fields not listed as read")
    end
  end
  field("data", data, true)
  out[#out + 1] = "}\n"
  traces = nil
  return table.concat(out)
end

return H
