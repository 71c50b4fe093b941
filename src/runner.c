/* The offline runner. Design in brief:
 *  - The runner owns a runtime built on an offline host: `start` is
 *    fixture_start (answers come from the case, at once, from inside
 *    ncghl.call), there is no store (links and fingerprints live in the Lua
 *    state, see lua_api.h) and no upstream, and it logs no event outcomes.
 *  - Its own Lua (HARNESS below) runs in that same state: it loads the case
 *    files, seeds links, picks answers, records the requests and compares
 *    them with what the case expects. Everything about a case stays in Lua
 *    tables; C only moves strings across.
 *  - A case is one lrt_run followed by lrt_drain: no loop turns, no disk, no
 *    new state per case. The runner's own cost is about 7 us per case and
 *    2.5 us per upstream call (SPEC 8 asks for 50,000 mapping executions a
 *    second); the rest is the mapping code itself. Its Lua is written for
 *    that path: a passing case decodes and compares only what it must, and
 *    builds no text (diffs, labels) that only a failure would show.
 *
 * The harness is compiled into the binary rather than read from LUA_DIR: it
 * is ncghl's, not the agency's, and a production state never loads it. Its
 * default answers (what an upstream answers when a case gives no fixture)
 * are API shapes and are kept in that Lua, next to the notes they cite. It
 * is written one C string per Lua line; errors in it name
 * "ncghl/runner.lua:<line>", counted from its first line. */
#include "runner.h"

#include "dirlist.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "lua_api.h"
#include "lua_rt.h"
#include "upstream.h"

/* ------------------------------------------------------------------------ */
/* The runner's own Lua (chunk name "ncghl/runner.lua")                     */

static const char HARNESS[] =
    "-- The offline runner's own Lua: loads test cases, answers the mapping's\n"
    "-- upstream calls from each case's fixtures (or the default answers below),\n"
    "-- and compares what happened with what the case expects. It runs in the Lua\n"
    "-- state of an offline runtime, next to the mappings it tests; `...` is a\n"
    "-- table of C functions: reset_memory() and set_config(t).\n"
    "local host = ...\n"
    "local json = require \"ncghl.json\"\n"
    "local cjson = require \"cjson\"\n"
    "\n"
    "local NULL = cjson.null\n"
    "local H = {}\n"
    "local cases = {}\n"
    "local cur -- the run in progress: { case, requests, used, seq }\n"
    "local traces -- map mode: every map.apply of the run\n"
    "\n"
    "-- Markers a case may use in expected bodies: the field must be missing (or\n"
    "-- null), or present with any value.\n"
    "local ABSENT = setmetatable({}, { __name = \"ABSENT\", __tostring = function() return \"ABSENT\" end })\n"
    "local ANY = setmetatable({}, { __name = \"ANY\", __tostring = function() return \"ANY\" end })\n"
    "\n"
    "-- ncghl.config in test cases: the case's own `config`, then these, then the\n"
    "-- real setting. Fixed values keep a case's expectations the same on every\n"
    "-- machine (and in the service's reload check).\n"
    "H.TEST_CONFIG = { GHL_LOCATION_ID = \"loc-1\" }\n"
    "-- In a dry run the real setting wins; these only fill what is not set.\n"
    "H.DRY_RUN_CONFIG = { GHL_LOCATION_ID = \"dry-run-location-id\" }\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Showing values: compact JSON with sorted keys (diffs) and indented JSON\n"
    "-- (ncghl map).\n"
    "\n"
    "local function is_list(t)\n"
    "  local n = #t\n"
    "  if n == 0 then\n"
    "    return false\n"
    "  end\n"
    "  local count = 0\n"
    "  for k in pairs(t) do\n"
    "    if math.type(k) ~= \"integer\" or k < 1 or k > n then\n"
    "      return false\n"
    "    end\n"
    "    count = count + 1\n"
    "  end\n"
    "  return count == n\n"
    "end\n"
    "\n"
    "local function quote(s)\n"
    "  return '\"' .. s:gsub('[%c\"\\\\]', function(c)\n"
    "    if c == '\"' then\n"
    "      return '\\\\\"'\n"
    "    elseif c == \"\\\\\" then\n"
    "      return \"\\\\\\\\\"\n"
    "    elseif c == \"\\n\" then\n"
    "      return \"\\\\n\"\n"
    "    elseif c == \"\\t\" then\n"
    "      return \"\\\\t\"\n"
    "    elseif c == \"\\r\" then\n"
    "      return \"\\\\r\"\n"
    "    end\n"
    "    return string.format(\"\\\\u%04x\", c:byte())\n"
    "  end) .. '\"'\n"
    "end\n"
    "\n"
    "local function number(v)\n"
    "  if v ~= v or v == math.huge or v == -math.huge then\n"
    "    return \"null\"\n"
    "  end\n"
    "  if math.type(v) == \"float\" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then\n"
    "    return string.format(\"%d\", math.tointeger(v))\n"
    "  end\n"
    "  if math.type(v) == \"float\" then\n"
    "    return string.format(\"%.14g\", v)\n"
    "  end\n"
    "  return tostring(v)\n"
    "end\n"
    "\n"
    "local function sorted_keys(t)\n"
    "  local keys = {}\n"
    "  for k in pairs(t) do\n"
    "    keys[#keys + 1] = k\n"
    "  end\n"
    "  table.sort(keys, function(a, b)\n"
    "    local ta, tb = type(a), type(b)\n"
    "    if ta ~= tb then\n"
    "      return ta < tb\n"
    "    end\n"
    "    return a < b\n"
    "  end)\n"
    "  return keys\n"
    "end\n"
    "\n"
    "local function show(v, depth)\n"
    "  depth = depth or 0\n"
    "  local t = type(v)\n"
    "  if v == nil then\n"
    "    return \"nothing\"\n"
    "  elseif v == ABSENT or v == ANY then\n"
    "    return tostring(v)\n"
    "  elseif v == NULL then\n"
    "    return \"null\"\n"
    "  elseif t == \"string\" then\n"
    "    return quote(v)\n"
    "  elseif t == \"number\" then\n"
    "    return number(v)\n"
    "  elseif t == \"boolean\" then\n"
    "    return tostring(v)\n"
    "  elseif t == \"table\" then\n"
    "    if depth > 20 then\n"
    "      return \"{...}\"\n"
    "    end\n"
    "    local parts = {}\n"
    "    if is_list(v) then\n"
    "      for i = 1, #v do\n"
    "        parts[i] = show(v[i], depth + 1)\n"
    "      end\n"
    "      return \"[\" .. table.concat(parts, \",\") .. \"]\"\n"
    "    end\n"
    "    for _, k in ipairs(sorted_keys(v)) do\n"
    "      parts[#parts + 1] = quote(tostring(k)) .. \":\" .. show(v[k], depth + 1)\n"
    "    end\n"
    "    return \"{\" .. table.concat(parts, \",\") .. \"}\"\n"
    "  end\n"
    "  return \"<\" .. t .. \">\"\n"
    "end\n"
    "\n"
    "local function pretty(v, indent, out)\n"
    "  local t = type(v)\n"
    "  if t == \"table\" and v ~= NULL and v ~= ABSENT and v ~= ANY and next(v) ~= nil then\n"
    "    local inner = indent .. \"  \"\n"
    "    if is_list(v) then\n"
    "      out[#out + 1] = \"[\\n\"\n"
    "      for i = 1, #v do\n"
    "        out[#out + 1] = inner\n"
    "        pretty(v[i], inner, out)\n"
    "        out[#out + 1] = i < #v and \",\\n\" or \"\\n\"\n"
    "      end\n"
    "      out[#out + 1] = indent .. \"]\"\n"
    "    else\n"
    "      out[#out + 1] = \"{\\n\"\n"
    "      local keys = sorted_keys(v)\n"
    "      for i, k in ipairs(keys) do\n"
    "        out[#out + 1] = inner .. quote(tostring(k)) .. \": \"\n"
    "        pretty(v[k], inner, out)\n"
    "        out[#out + 1] = i < #keys and \",\\n\" or \"\\n\"\n"
    "      end\n"
    "      out[#out + 1] = indent .. \"}\"\n"
    "    end\n"
    "  elseif t == \"table\" and v ~= NULL and v ~= ABSENT and v ~= ANY then\n"
    "    out[#out + 1] = \"{}\"\n"
    "  elseif v == nil then\n"
    "    out[#out + 1] = \"null\"\n"
    "  else\n"
    "    out[#out + 1] = show(v)\n"
    "  end\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Requests as the runner saw them\n"
    "\n"
    "-- Every \"%XX\" escape's byte (either case), so gsub replaces from a table\n"
    "-- instead of calling a function per escape.\n"
    "local UNHEX = {}\n"
    "for b = 0, 255 do\n"
    "  local hex = (\"%02x\"):format(b)\n"
    "  UNHEX[hex], UNHEX[hex:upper()] = string.char(b), string.char(b)\n"
    "  UNHEX[hex:sub(1, 1):upper() .. hex:sub(2)] = string.char(b)\n"
    "  UNHEX[hex:sub(1, 1) .. hex:sub(2):upper()] = string.char(b)\n"
    "end\n"
    "\n"
    "local function unpct(s)\n"
    "  if not s:find(\"[%%+]\") then\n"
    "    return s\n"
    "  end\n"
    "  return (s:gsub(\"%+\", \" \"):gsub(\"%%(%x%x)\", UNHEX))\n"
    "end\n"
    "\n"
    "local function parse_query(qs)\n"
    "  local q = {}\n"
    "  if qs and qs ~= \"\" then\n"
    "    for pair in qs:gmatch(\"[^&]+\") do\n"
    "      local k, v = pair:match(\"^([^=]*)=?(.*)$\")\n"
    "      q[unpct(k)] = unpct(v)\n"
    "    end\n"
    "  end\n"
    "  return q\n"
    "end\n"
    "\n"
    "-- The body as a table when it is JSON (or a form), else the text itself.\n"
    "local function decode_body(raw, ctype)\n"
    "  if raw == nil or raw == \"\" then\n"
    "    return nil\n"
    "  end\n"
    "  if ctype and ctype:find(\"x-www-form-urlencoded\", 1, true) then\n"
    "    return parse_query(raw)\n"
    "  end\n"
    "  -- cjson itself, not ncghl.json: no need to tidy what is only compared\n"
    "  -- (1 == 1.0) and shown (number() prints whole floats without \".0\").\n"
    "  local ok, v = pcall(cjson.decode, raw)\n"
    "  if ok then\n"
    "    return v\n"
    "  end\n"
    "  return raw\n"
    "end\n"
    "\n"
    "local function query_of(r)\n"
    "  if r.query == nil then\n"
    "    r.query = parse_query(r.qs)\n"
    "  end\n"
    "  return r.query\n"
    "end\n"
    "\n"
    "local function body_of(r)\n"
    "  if r.body == nil and r.raw ~= nil then\n"
    "    r.body = decode_body(r.raw, r.ctype)\n"
    "    if r.body == nil then\n"
    "      r.body = false\n"
    "    end\n"
    "  end\n"
    "  return r.body or nil\n"
    "end\n"
    "\n"
    "local function req_label(r)\n"
    "  return (\"%s %s %s\"):format(tostring(r.service or \"*\"), tostring(r.method or \"*\"),\n"
    "    tostring(r.path or \"*\"))\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Comparing: the expected value is a subset of the actual one. Tables match\n"
    "-- key by key (keys the case does not name are ignored); a list in the case\n"
    "-- must have the same length as the actual list, element by element.\n"
    "\n"
    "-- Whether exp matches act, without saying where not: the fast path every\n"
    "-- passing case takes (no sorting, no strings built).\n"
    "-- Expected values are case data, fixed once loaded: whether one is a list\n"
    "-- is worked out once per table, not on every comparison.\n"
    "local list_of = setmetatable({}, { __mode = \"k\" })\n"
    "\n"
    "local function same(exp, act)\n"
    "  if exp == act then\n"
    "    return true -- equal scalars, by far the most common case (act is never ABSENT or ANY)\n"
    "  elseif exp == ABSENT then\n"
    "    return act == nil or act == NULL\n"
    "  elseif exp == ANY then\n"
    "    return act ~= nil and act ~= NULL\n"
    "  elseif type(exp) == \"table\" and exp ~= NULL then\n"
    "    if type(act) ~= \"table\" or act == NULL then\n"
    "      return false\n"
    "    end\n"
    "    local n = #exp\n"
    "    local list = false\n"
    "    if n > 0 then\n"
    "      list = list_of[exp]\n"
    "      if list == nil then\n"
    "        list = is_list(exp)\n"
    "        list_of[exp] = list\n"
    "      end\n"
    "    end\n"
    "    if list then\n"
    "      if #act ~= n then\n"
    "        return false\n"
    "      end\n"
    "      for i = 1, n do\n"
    "        if not same(exp[i], act[i]) then\n"
    "          return false\n"
    "        end\n"
    "      end\n"
    "      return true\n"
    "    end\n"
    "    for k, v in pairs(exp) do\n"
    "      if not same(v, act[k]) then\n"
    "        return false\n"
    "      end\n"
    "    end\n"
    "    return true\n"
    "  end\n"
    "  return exp == act\n"
    "end\n"
    "\n"
    "local function diff(exp, act, path)\n"
    "  if exp == ABSENT then\n"
    "    if act ~= nil and act ~= NULL then\n"
    "      return path, \"no value\", show(act)\n"
    "    end\n"
    "    return nil\n"
    "  end\n"
    "  if exp == ANY then\n"
    "    if act == nil or act == NULL then\n"
    "      return path, \"a value\", \"nothing\"\n"
    "    end\n"
    "    return nil\n"
    "  end\n"
    "  if type(exp) == \"table\" and exp ~= NULL then\n"
    "    if type(act) ~= \"table\" or act == NULL then\n"
    "      return path, show(exp), show(act)\n"
    "    end\n"
    "    if is_list(exp) then\n"
    "      if #act ~= #exp then\n"
    "        return path, show(exp) .. (\" (%d item%s)\"):format(#exp, #exp == 1 and \"\" or \"s\"),\n"
    "          show(act) .. (\" (%d item%s)\"):format(#act, #act == 1 and \"\" or \"s\")\n"
    "      end\n"
    "      for i = 1, #exp do\n"
    "        local p, e, a = diff(exp[i], act[i], (\"%s[%d]\"):format(path, i))\n"
    "        if p then\n"
    "          return p, e, a\n"
    "        end\n"
    "      end\n"
    "      return nil\n"
    "    end\n"
    "    for _, k in ipairs(sorted_keys(exp)) do\n"
    "      local p, e, a = diff(exp[k], act[k], path == \"\" and tostring(k) or path .. \".\" .. tostring(k))\n"
    "      if p then\n"
    "        return p, e, a\n"
    "      end\n"
    "    end\n"
    "    return nil\n"
    "  end\n"
    "  if exp ~= act then\n"
    "    return path, show(exp), show(act)\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "-- A case's method in upper case (\"post\" -> \"POST\"), once per spelling.\n"
    "local uppers = {}\n"
    "local function upper(s)\n"
    "  local u = uppers[s]\n"
    "  if not u then\n"
    "    u = s:upper()\n"
    "    uppers[s] = u\n"
    "  end\n"
    "  return u\n"
    "end\n"
    "\n"
    "local function request_diff(er, r)\n"
    "  if er.service and er.service ~= r.service then\n"
    "    return \"service\", show(er.service), show(r.service)\n"
    "  end\n"
    "  if er.method and upper(er.method) ~= r.method then\n"
    "    return \"method\", show(er.method), show(r.method)\n"
    "  end\n"
    "  if er.path and er.path ~= r.path then\n"
    "    return \"path\", show(er.path), show(r.path)\n"
    "  end\n"
    "  if er.query ~= nil and not same(er.query, query_of(r)) then\n"
    "    return diff(er.query, query_of(r), \"query\")\n"
    "  end\n"
    "  if er.body ~= nil and not same(er.body, body_of(r)) then\n"
    "    return diff(er.body, body_of(r), \"body\")\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "-- Whether actual request r is the expected one: request_diff without the\n"
    "-- words, for the scan every passing case makes (most requests it looks at\n"
    "-- are other requests, and their differences are never shown).\n"
    "local function request_matches(er, r)\n"
    "  return (not er.service or er.service == r.service)\n"
    "    and (not er.method or upper(er.method) == r.method)\n"
    "    and (not er.path or er.path == r.path)\n"
    "    and (er.query == nil or same(er.query, query_of(r)))\n"
    "    and (er.body == nil or same(er.body, body_of(r)))\n"
    "end\n"
    "\n"
    "local function same_target(er, r)\n"
    "  return (not er.service or er.service == r.service) and\n"
    "      (not er.method or upper(er.method) == r.method) and (not er.path or er.path == r.path)\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Default answers: what the upstream APIs answer (shapes from\n"
    "-- ref/ghl/NOTES.md and ref/nowcerts/NOTES.md) when a case gives no fixture\n"
    "-- for a request, and in every dry run without --fixtures. Lookups find\n"
    "-- nothing; writes succeed with a made-up id.\n"
    "\n"
    "local function dry_guid(n)\n"
    "  return (\"00000000-0000-4000-8000-%012d\"):format(n)\n"
    "end\n"
    "\n"
    "local function with(body, extra)\n"
    "  local out = {}\n"
    "  if type(body) == \"table\" then\n"
    "    for k, v in pairs(body) do\n"
    "      out[k] = v\n"
    "    end\n"
    "  end\n"
    "  for k, v in pairs(extra) do\n"
    "    out[k] = v\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "\n"
    "local function next_id(prefix)\n"
    "  cur.seq = cur.seq + 1\n"
    "  if prefix == \"nowcerts\" then\n"
    "    return dry_guid(cur.seq)\n"
    "  end\n"
    "  return (\"dry-run-%s-%d\"):format(prefix, cur.seq)\n"
    "end\n"
    "\n"
    "local GHL_NOT_FOUND = { statusCode = 404, message = \"Not found (no fixture for this request)\" }\n"
    "local GHL_NO_CONTACTS = { contacts = {}, total = 0 }\n"
    "local GHL_NO_OPPORTUNITIES = { opportunities = {}, total = 0, meta = { total = 0 } }\n"
    "local GHL_DELETED = { succeded = true }\n"
    "local NC_EMPTY_LIST = { [\"@odata.count\"] = 0, value = {} }\n"
    "local NC_NO_POLICIES = {}\n"
    "-- The answers above never change: H.answer encodes each of them once.\n"
    "local CONSTANT = {\n"
    "  [GHL_NOT_FOUND] = true, [GHL_NO_CONTACTS] = true, [GHL_NO_OPPORTUNITIES] = true,\n"
    "  [GHL_DELETED] = true, [NC_EMPTY_LIST] = true, [NC_NO_POLICIES] = true,\n"
    "}\n"
    "\n"
    "-- A GHL that has every pipeline and stage the mappings' pipelines.lua names\n"
    "-- (when it has the usual by_line and stage tables), so that a dry run of a\n"
    "-- policy shows its opportunity rather than a missing pipeline.\n"
    "local function dry_pipelines()\n"
    "  local ok, pl = pcall(require, \"pipelines\")\n"
    "  if not ok or type(pl) ~= \"table\" then\n"
    "    return {}\n"
    "  end\n"
    "  local stages, seen = {}, {}\n"
    "  for _, name in pairs(type(pl.stage) == \"table\" and pl.stage or {}) do\n"
    "    if type(name) == \"string\" and not seen[name] then\n"
    "      seen[name] = true\n"
    "      stages[#stages + 1] = name\n"
    "    end\n"
    "  end\n"
    "  table.sort(stages)\n"
    "  local out, named = {}, {}\n"
    "  for _, rule in ipairs(type(pl.by_line) == \"table\" and pl.by_line or {}) do\n"
    "    local name = type(rule) == \"table\" and rule.pipeline\n"
    "    if type(name) == \"string\" and not named[name] then\n"
    "      named[name] = true\n"
    "      local n = #out + 1\n"
    "      local list = {}\n"
    "      for j, st in ipairs(stages) do\n"
    "        list[j] = { id = (\"dry-run-stage-%d-%d\"):format(n, j), name = st }\n"
    "      end\n"
    "      out[n] = { id = (\"dry-run-pipeline-%d\"):format(n), name = name, stages = list }\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "\n"
    "function H.default_answer(r)\n"
    "  local m, p = r.method, r.path\n"
    "  if r.service == \"ghl\" then\n"
    "    -- Lookups are answered without decoding the request's body: only the\n"
    "    -- answers that echo it (creates and updates) need it.\n"
    "    if m == \"POST\" and p == \"/contacts/search\" then\n"
    "      return 200, GHL_NO_CONTACTS\n"
    "    elseif m == \"GET\" and p == \"/opportunities/pipelines\" then\n"
    "      return 200, { pipelines = dry_pipelines() }\n"
    "    elseif p == \"/opportunities/search\" then\n"
    "      return 200, GHL_NO_OPPORTUNITIES\n"
    "    end\n"
    "    local body = body_of(r)\n"
    "    if m == \"POST\" and (p == \"/contacts/\" or p == \"/contacts\") then\n"
    "      return 201, { contact = with(body, { id = next_id(\"contact\") }) }\n"
    "    elseif m == \"POST\" and p == \"/contacts/upsert\" then\n"
    "      return 200, { new = true, contact = with(body, { id = next_id(\"contact\") }) }\n"
    "    elseif m == \"PUT\" and p:match(\"^/contacts/[^/]+$\") then\n"
    "      return 200, { succeded = true, contact = with(body, { id = unpct(p:match(\"^/contacts/(.*)$\")) }) }\n"
    "    elseif m == \"POST\" and (p == \"/opportunities/\" or p == \"/opportunities\") then\n"
    "      return 201, { opportunity = with(body, { id = next_id(\"opportunity\") }) }\n"
    "    elseif m == \"POST\" and p == \"/opportunities/upsert\" then\n"
    "      return 200, { new = true, opportunity = with(body, { id = next_id(\"opportunity\") }) }\n"
    "    elseif m == \"PUT\" and p:match(\"^/opportunities/[^/]+$\") then\n"
    "      return 200, { opportunity = with(body, { id = unpct(p:match(\"^/opportunities/(.*)$\")) }) }\n"
    "    elseif m == \"GET\" then\n"
    "      return 404, GHL_NOT_FOUND\n"
    "    elseif m == \"DELETE\" then\n"
    "      return 200, GHL_DELETED\n"
    "    end\n"
    "    return 200, with(body, { id = next_id(\"record\"), succeded = true })\n"
    "  end\n"
    "  -- NowCerts: every list is an OData set; writes answer status 1.\n"
    "  if m == \"GET\" then\n"
    "    return 200, NC_EMPTY_LIST\n"
    "  end\n"
    "  local body = body_of(r)\n"
    "  body = type(body) == \"table\" and body or {}\n"
    "  if p:match(\"^/Insured/\") and p ~= \"/Insured/InsuredPolicies\" then\n"
    "    return 200, { status = 1, message = \"dry run: insured saved\",\n"
    "      insuredDatabaseId = body.databaseId or next_id(\"nowcerts\") }\n"
    "  elseif p == \"/Insured/InsuredPolicies\" then\n"
    "    return 200, NC_NO_POLICIES\n"
    "  elseif p:match(\"^/Policy/\") or p:match(\"^/Quote/\") then\n"
    "    local id = body.databaseId or next_id(\"nowcerts\")\n"
    "    return 200, { status = 1, message = \"dry run: policy saved\",\n"
    "      insuredDatabaseId = body.insuredDatabaseId or next_id(\"nowcerts\"),\n"
    "      policiesOrQuotes = { { policyOrQuoteId = id, isQuote = p:match(\"^/Quote/\") ~= nil,\n"
    "        status = 1, message = \"dry run\" } } }\n"
    "  end\n"
    "  return 200, { status = 1, message = \"dry run\", databaseId = body.databaseId or next_id(\"nowcerts\") }\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Answering a call (from C, inside ncghl.call)\n"
    "\n"
    "local function answer_matches(a, r)\n"
    "  if a.service and a.service ~= r.service then\n"
    "    return false\n"
    "  end\n"
    "  if a.method and a.method ~= r.method then\n"
    "    return false\n"
    "  end\n"
    "  if a.path and a.path ~= r.path then\n"
    "    return false\n"
    "  end\n"
    "  if a.query and not same(a.query, query_of(r)) then\n"
    "    return false\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "\n"
    "-- Returns what upstream.c would hand the mapping after its retries: ok,\n"
    "-- retryable, status, body text, error.\n"
    "-- Default answers that never change are encoded once.\n"
    "local encoded = setmetatable({}, { __mode = \"k\" })\n"
    "\n"
    "function H.answer(service, method, full, raw, ctype)\n"
    "  local path, qs = full, \"\"\n"
    "  local q = full:find(\"?\", 1, true)\n"
    "  if q then\n"
    "    path, qs = full:sub(1, q - 1), full:sub(q + 1)\n"
    "  end\n"
    "  -- One table per request, its answer kept in it (status, answer_body,\n"
    "  -- from): every slot is named here so that filling them in later never\n"
    "  -- grows the table.\n"
    "  local r = {\n"
    "    service = service, method = method, path = path, qs = qs, raw = raw, ctype = ctype,\n"
    "    status = false, answer_body = false, from = false, query = nil, body = nil,\n"
    "  }\n"
    "  local reqs = cur.requests\n"
    "  reqs[#reqs + 1] = r\n"
    "  local a\n"
    "  local answers = cur.case and cur.case.answers\n"
    "  if answers then\n"
    "    local used = cur.used\n"
    "    for i = 1, #answers do\n"
    "      if not used[i] and answer_matches(answers[i], r) then\n"
    "        used[i] = true\n"
    "        a = answers[i]\n"
    "        break\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  local status, body, from, text, status0\n"
    "  if a then\n"
    "    status, body, from, text, status0 = a.status, a.body, \"fixture\", a.text, a.status0\n"
    "  else\n"
    "    status, body = H.default_answer(r)\n"
    "    from = \"default\"\n"
    "    if type(body) == \"string\" then\n"
    "      text = body\n"
    "    elseif body == nil then\n"
    "      text = \"\"\n"
    "    else\n"
    "      text = encoded[body]\n"
    "      if not text then\n"
    "        text = json.encode(body)\n"
    "        if CONSTANT[body] then\n"
    "          encoded[body] = text\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    status0 = type(body) == \"table\" and body.status == 0 and tostring(body.message or \"\")\n"
    "  end\n"
    "  r.status, r.answer_body, r.from = status, body, from\n"
    "  if status == 0 then\n"
    "    return false, true, 0, \"\", \"connection error: \" .. tostring(a and a.error or \"no answer\")\n"
    "  elseif status >= 200 and status < 300 then\n"
    "    if service == \"nowcerts\" and status0 then\n"
    "      return false, false, status, text, \"status 0: \" .. status0\n"
    "    end\n"
    "    return true, false, status, text, nil\n"
    "  end\n"
    "  local retryable = status == 429 or (status >= 500 and status <= 599)\n"
    "  local shown = #text > 300 and text:sub(1, 300) or text\n"
    "  if shown:find(\"[\\r\\n]\") then\n"
    "    shown = shown:gsub(\"[\\r\\n]\", \" \")\n"
    "  end\n"
    "  return false, retryable, status, text, (\"HTTP %d: %s\"):format(status, shown)\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Loading cases\n"
    "\n"
    "local SOURCES = { nowcerts = true, ghl = true, manual = true }\n"
    "local OUTCOMES = { done = true, ignored = true, retry = true, failed = true }\n"
    "local SERVICES = { nowcerts = true, ghl = true }\n"
    "local CASE_KEYS = { name = true, source = true, body = true, type = true, run = true, links = true,\n"
    "  fingerprints = true, answers = true, expect = true, config = true }\n"
    "local ANSWER_KEYS = { service = true, method = true, path = true, query = true, status = true,\n"
    "  body = true, error = true }\n"
    "local REQUEST_KEYS = { service = true, method = true, path = true, query = true, body = true }\n"
    "local EXPECT_KEYS = { outcome = true, requests = true, data = true, error = true,\n"
    "  request_count = true, message = true }\n"
    "\n"
    "local function unknown_key(t, allowed, what)\n"
    "  for _, k in ipairs(sorted_keys(t)) do\n"
    "    if not allowed[k] then\n"
    "      return (\"%s has no field %s (a typo?)\"):format(what, show(k))\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "local function line_of(text, name)\n"
    "  for _, q in ipairs({ '\"', \"'\" }) do\n"
    "    local at = text:find(q .. name .. q, 1, true)\n"
    "    if at then\n"
    "      local _, n = text:sub(1, at):gsub(\"\\n\", \"\")\n"
    "      return n + 1\n"
    "    end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "-- The event type intake would store (server.c). Bodies that the webhook\n"
    "-- routes would refuse still run: the poller and NowCerts' REST hooks store\n"
    "-- other shapes under the same sources.\n"
    "local function intake_type(source, body)\n"
    "  if type(body) ~= \"table\" then\n"
    "    return nil, \"the body is not a JSON object or array\"\n"
    "  end\n"
    "  if source == \"nowcerts\" then\n"
    "    if type(body.event_type) == \"string\" then\n"
    "      return body.event_type\n"
    "    elseif type(body.hook) == \"string\" then\n"
    "      return \"hook:\" .. body.hook\n"
    "    end\n"
    "  elseif source == \"ghl\" then\n"
    "    local t = body.type ~= nil and body.type or body.event\n"
    "    if type(t) == \"string\" then\n"
    "      return t\n"
    "    end\n"
    "  elseif type(body.entity_type) == \"string\" and type(body.direction) == \"string\" then\n"
    "    return body.entity_type .. \":\" .. body.direction\n"
    "  end\n"
    "  return \"\"\n"
    "end\n"
    "\n"
    "local function check_list(v, what)\n"
    "  if v == nil then\n"
    "    return true\n"
    "  end\n"
    "  if type(v) ~= \"table\" then\n"
    "    return false, what .. \" must be a list\"\n"
    "  end\n"
    "  for i, x in ipairs(v) do\n"
    "    if type(x) ~= \"table\" then\n"
    "      return false, (\"%s[%d] must be a table\"):format(what, i)\n"
    "    end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "\n"
    "local function normalize_answers(list)\n"
    "  local answers = {}\n"
    "  for j, a in ipairs(list or {}) do\n"
    "    local bad = unknown_key(a, ANSWER_KEYS, (\"answers[%d]\"):format(j))\n"
    "    if bad then\n"
    "      return nil, bad\n"
    "    end\n"
    "    if a.service ~= nil and not SERVICES[a.service] then\n"
    "      return nil, ('answers[%d].service must be \"ghl\" or \"nowcerts\"'):format(j)\n"
    "    end\n"
    "    if a.method ~= nil and type(a.method) ~= \"string\" then\n"
    "      return nil, (\"answers[%d].method must be a string\"):format(j)\n"
    "    end\n"
    "    if a.query ~= nil and type(a.query) ~= \"table\" then\n"
    "      return nil, (\"answers[%d].query must be a table of the query's fields\"):format(j)\n"
    "    end\n"
    "    if a.status ~= nil and math.type(a.status) ~= \"integer\" then\n"
    "      return nil, (\"answers[%d].status must be a whole number\"):format(j)\n"
    "    end\n"
    "    if a.path ~= nil and (type(a.path) ~= \"string\" or a.path:find(\"?\", 1, true)) then\n"
    "      return nil, (\"answers[%d].path must be the path without its query (use query = {...})\"):format(j)\n"
    "    end\n"
    "    -- Encoded once here, not on every run.\n"
    "    local text = a.body\n"
    "    if type(text) == \"table\" then\n"
    "      local ok, v = pcall(json.encode, text)\n"
    "      if not ok then\n"
    "        return nil, (\"answers[%d].body cannot be sent as JSON: %s\"):format(j, tostring(v))\n"
    "      end\n"
    "      text = v\n"
    "    elseif text == nil then\n"
    "      text = \"\"\n"
    "    elseif type(text) ~= \"string\" then\n"
    "      return nil, (\"answers[%d].body must be a table or a string\"):format(j)\n"
    "    end\n"
    "    -- NowCerts' failure inside an HTTP 200, found once here (upstream.c\n"
    "    -- finds it in every answer).\n"
    "    local parsed = a.body\n"
    "    if type(parsed) == \"string\" then\n"
    "      local okp, v = pcall(cjson.decode, parsed)\n"
    "      parsed = okp and v or nil\n"
    "    end\n"
    "    local status0 = type(parsed) == \"table\" and parsed.status == 0 and tostring(parsed.message or \"\")\n"
    "    answers[j] = {\n"
    "      service = a.service, method = a.method and a.method:upper(), path = a.path, query = a.query,\n"
    "      status = a.status or 200, body = a.body, text = text, error = a.error, status0 = status0,\n"
    "    }\n"
    "  end\n"
    "  return answers\n"
    "end\n"
    "\n"
    "-- Whether an expected value holds JSON null anywhere (H.check then compares\n"
    "-- it with the data decoded as the mapping would see it). seen: the tables\n"
    "-- already looked at, so a table that holds itself ends the walk.\n"
    "local function has_null(v, seen)\n"
    "  if v == NULL then\n"
    "    return true\n"
    "  elseif type(v) ~= \"table\" or seen[v] then\n"
    "    return false\n"
    "  end\n"
    "  seen[v] = true\n"
    "  for _, x in pairs(v) do\n"
    "    if has_null(x, seen) then\n"
    "      return true\n"
    "    end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "\n"
    "local function validate(c, i)\n"
    "  if type(c) ~= \"table\" then\n"
    "    return nil, (\"case %d is a %s, not a table\"):format(i, type(c))\n"
    "  end\n"
    "  local name = c.name\n"
    "  if type(name) ~= \"string\" or name == \"\" then\n"
    "    return nil, (\"case %d has no name\"):format(i)\n"
    "  end\n"
    "  local unknown = unknown_key(c, CASE_KEYS, \"a case\")\n"
    "  if unknown then\n"
    "    return nil, unknown\n"
    "  end\n"
    "  if c.run ~= nil and (math.type(c.run) ~= \"integer\" or c.run < 1) then\n"
    "    return nil, \"run must be a whole number from 1 (1 = the event's first run)\"\n"
    "  end\n"
    "  if not SOURCES[c.source] then\n"
    "    return nil, 'source must be \"nowcerts\", \"ghl\" or \"manual\"'\n"
    "  end\n"
    "  local body = c.body\n"
    "  local payload\n"
    "  if type(body) == \"string\" then\n"
    "    payload = body\n"
    "    local ok, v = pcall(json.decode, body)\n"
    "    if not ok then\n"
    "      return nil, \"body is not JSON: \" .. tostring(v)\n"
    "    end\n"
    "    body = v\n"
    "  elseif type(body) == \"table\" then\n"
    "    local ok, v = pcall(json.encode, body)\n"
    "    if not ok then\n"
    "      return nil, \"body cannot be sent as JSON: \" .. tostring(v)\n"
    "    end\n"
    "    payload = v\n"
    "  else\n"
    "    return nil, \"body is missing (the webhook body, as a table or JSON text)\"\n"
    "  end\n"
    "  local etype, why = c.type, nil\n"
    "  if etype == nil then\n"
    "    etype, why = intake_type(c.source, body)\n"
    "    if not etype then\n"
    "      return nil, \"body: \" .. why\n"
    "    end\n"
    "  end\n"
    "  for _, k in ipairs({ \"links\", \"fingerprints\", \"answers\" }) do\n"
    "    local ok, e = check_list(c[k], k)\n"
    "    if not ok then\n"
    "      return nil, e\n"
    "    end\n"
    "  end\n"
    "  local answers, bad = normalize_answers(c.answers)\n"
    "  if not answers then\n"
    "    return nil, bad\n"
    "  end\n"
    "  for j, l in ipairs(c.links or {}) do\n"
    "    if (l.kind ~= nil and type(l.kind) ~= \"string\") or type(l.nowcerts) ~= \"string\" or\n"
    "        type(l.ghl) ~= \"string\" or l.nowcerts == \"\" or l.ghl == \"\" then\n"
    "      return nil, (\"links[%d] needs nowcerts and ghl ids\"):format(j)\n"
    "    end\n"
    "  end\n"
    "  for j, f in ipairs(c.fingerprints or {}) do\n"
    "    if not SERVICES[f.side] or type(f.id) ~= \"string\" or type(f.fields) ~= \"table\" then\n"
    "      return nil, ('fingerprints[%d] needs side (\"ghl\" or \"nowcerts\"), id and fields'):format(j)\n"
    "    end\n"
    "  end\n"
    "  if c.config ~= nil and type(c.config) ~= \"table\" then\n"
    "    return nil, \"config must be a table of settings\"\n"
    "  end\n"
    "  local e = c.expect\n"
    "  if type(e) ~= \"table\" then\n"
    "    return nil, \"expect is missing (what should happen)\"\n"
    "  end\n"
    "  unknown = unknown_key(e, EXPECT_KEYS, \"expect\")\n"
    "  if unknown then\n"
    "    return nil, unknown\n"
    "  end\n"
    "  if e.outcome ~= nil and not OUTCOMES[e.outcome] then\n"
    "    return nil, 'expect.outcome must be \"done\", \"ignored\", \"retry\" or \"failed\"'\n"
    "  end\n"
    "  local ok, err = check_list(e.requests, \"expect.requests\")\n"
    "  if not ok then\n"
    "    return nil, err\n"
    "  end\n"
    "  for j, r in ipairs(e.requests or {}) do\n"
    "    local what = (\"expect.requests[%d]\"):format(j)\n"
    "    local bad = unknown_key(r, REQUEST_KEYS, what)\n"
    "    if bad then\n"
    "      return nil, bad\n"
    "    end\n"
    "    if r.service ~= nil and not SERVICES[r.service] then\n"
    "      return nil, ('%s.service must be \"ghl\" or \"nowcerts\"'):format(what)\n"
    "    end\n"
    "    if r.method ~= nil and type(r.method) ~= \"string\" then\n"
    "      return nil, what .. \".method must be a string\"\n"
    "    end\n"
    "    for _, k in ipairs({ \"query\", \"body\" }) do\n"
    "      if r[k] ~= nil and type(r[k]) ~= \"table\" then\n"
    "        return nil, (\"%s.%s must be a table of the fields to compare\"):format(what, k)\n"
    "      end\n"
    "    end\n"
    "    if r.path ~= nil and (type(r.path) ~= \"string\" or r.path:find(\"?\", 1, true)) then\n"
    "      return nil, (\"expect.requests[%d].path must be the path without its query (use query = {...})\"):format(j)\n"
    "    end\n"
    "  end\n"
    "  if e.error ~= nil and type(e.error) ~= \"string\" then\n"
    "    return nil, \"expect.error must be a Lua pattern (a string)\"\n"
    "  end\n"
    "  if e.message ~= nil and type(e.message) ~= \"string\" then\n"
    "    return nil, \"expect.message must be a Lua pattern (a string)\"\n"
    "  end\n"
    "  if e.request_count ~= nil and math.type(e.request_count) ~= \"integer\" then\n"
    "    return nil, \"expect.request_count must be a whole number\"\n"
    "  end\n"
    "  local config = c.config and with(H.TEST_CONFIG, c.config) or H.TEST_CONFIG\n"
    "  -- Fingerprints are stored as JSON text: encoded here once, not on every\n"
    "  -- run (one that cannot be encoded fails its run, as before).\n"
    "  local fp_texts = {}\n"
    "  for j, f in ipairs(c.fingerprints or {}) do\n"
    "    local okf, text = pcall(json.encode, f.fields)\n"
    "    fp_texts[j] = okf and text or nil\n"
    "    if not okf then\n"
    "      fp_texts = nil\n"
    "      break\n"
    "    end\n"
    "  end\n"
    "  return {\n"
    "    name = name, source = c.source, type = etype, payload = payload, run = c.run or 1,\n"
    "    links = c.links, fingerprints = c.fingerprints, fp_texts = fp_texts, answers = answers,\n"
    "    expect = e, config = config, data_has_null = e.data ~= nil and has_null(e.data, {}),\n"
    "  }\n"
    "end\n"
    "\n"
    "-- Compiles a case file (text read by C) in its own environment. Returns the\n"
    "-- chunk, or nil and \"file:line: message\". C runs the chunk itself, under\n"
    "-- the budget, so that a loop in a case file is stopped at its own line.\n"
    "function H.compile(path, text)\n"
    "  local env = setmetatable({ ABSENT = ABSENT, ANY = ANY }, { __index = _G })\n"
    "  return load(text, \"@\" .. path, \"t\", env)\n"
    "end\n"
    "\n"
    "-- Takes the cases a case file returned. Returns how many, or nil and\n"
    "-- \"file:line: message\".\n"
    "function H.load(path, text, list)\n"
    "  if type(list) ~= \"table\" then\n"
    "    return nil, path .. \":1: a test case file must return a list of cases\"\n"
    "  end\n"
    "  local n = 0\n"
    "  for i, c in ipairs(list) do\n"
    "    local case, why = validate(c, i)\n"
    "    local line = type(c) == \"table\" and type(c.name) == \"string\" and line_of(text, c.name) or 1\n"
    "    if not case then\n"
    "      local label = type(c) == \"table\" and type(c.name) == \"string\" and (' case \"%s\"'):format(c.name) or \"\"\n"
    "      return nil, (\"%s:%d:%s %s\"):format(path, line, label, why)\n"
    "    end\n"
    "    case.file, case.line = path, line\n"
    "    cases[#cases + 1] = case\n"
    "    n = n + 1\n"
    "  end\n"
    "  return n\n"
    "end\n"
    "\n"
    "function H.count()\n"
    "  return #cases\n"
    "end\n"
    "\n"
    "function H.info(i)\n"
    "  local c = cases[i]\n"
    "  return c.file, c.name, c.line\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- Running\n"
    "\n"
    "local function seed(c)\n"
    "  host.reset_memory()\n"
    "  local links = c.links\n"
    "  if links then\n"
    "    for _, l in ipairs(links) do\n"
    "      ncghl.link_put(l.kind or \"contact\", l.nowcerts, l.ghl)\n"
    "    end\n"
    "  end\n"
    "  local fps, texts = c.fingerprints, c.fp_texts\n"
    "  if fps then\n"
    "    for j, f in ipairs(fps) do\n"
    "      ncghl.fp_put(f.side, f.id, texts and texts[j] or json.encode(f.fields))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "\n"
    "-- Makes case i the current one; returns what C needs for lrt_run.\n"
    "local engine = require \"ncghl.engine\"\n"
    "\n"
    "function H.prepare(i)\n"
    "  local c = cases[i]\n"
    "  cur = { case = c, requests = {}, used = {}, seq = 0 }\n"
    "  -- What the helpers cached (GHL's pipelines) came from another case.\n"
    "  if engine.reset then\n"
    "    engine.reset()\n"
    "  end\n"
    "  seed(c)\n"
    "  host.set_config(c.config)\n"
    "  return \"case-\" .. i, c.source, c.type, c.payload, c.run\n"
    "end\n"
    "\n"
    "local function describe_run(c, outcome, message, data, err)\n"
    "  local out = {}\n"
    "  local e = c.expect\n"
    "  out[#out + 1] = \"    expected:\"\n"
    "  if e.outcome then\n"
    "    out[#out + 1] = \"      outcome  \" .. e.outcome\n"
    "  end\n"
    "  if e.error then\n"
    "    out[#out + 1] = \"      error    matching \" .. quote(e.error)\n"
    "  end\n"
    "  for j, er in ipairs(e.requests or {}) do\n"
    "    local extra = {}\n"
    "    if er.query ~= nil then\n"
    "      extra[#extra + 1] = \"query \" .. show(er.query)\n"
    "    end\n"
    "    if er.body ~= nil then\n"
    "      extra[#extra + 1] = \"body \" .. show(er.body)\n"
    "    end\n"
    "    out[#out + 1] = (\"      request  %d. %s %s\"):format(j, req_label(er), table.concat(extra, \" \"))\n"
    "  end\n"
    "  if e.request_count then\n"
    "    out[#out + 1] = (\"      requests %d in all\"):format(e.request_count)\n"
    "  end\n"
    "  if e.data ~= nil then\n"
    "    out[#out + 1] = \"      data     \" .. show(e.data)\n"
    "  end\n"
    "  out[#out + 1] = \"    actual:\"\n"
    "  out[#out + 1] = \"      outcome  \" .. outcome .. (err and (\" (\" .. err .. \")\") or \"\")\n"
    "  if #cur.requests == 0 then\n"
    "    out[#out + 1] = \"      requests none\"\n"
    "  end\n"
    "  for j, r in ipairs(cur.requests) do\n"
    "    local line = (\"      request  %d. %s %s\"):format(j, r.service, r.method) .. \" \" .. r.path\n"
    "    if r.qs ~= \"\" then\n"
    "      line = line .. \" query \" .. show(query_of(r))\n"
    "    end\n"
    "    local b = body_of(r)\n"
    "    if b ~= nil then\n"
    "      line = line .. \" body \" .. show(b)\n"
    "    end\n"
    "    line = line .. (\"  -> %s (%s)\"):format(tostring(r.status), r.from)\n"
    "    out[#out + 1] = line\n"
    "  end\n"
    "  if data ~= nil then\n"
    "    out[#out + 1] = \"      data     \" .. show(data)\n"
    "  end\n"
    "  if message and outcome ~= \"failed\" and outcome ~= \"retry\" then\n"
    "    out[#out + 1] = \"      message  \" .. message\n"
    "  end\n"
    "  return table.concat(out, \"\\n\")\n"
    "end\n"
    "\n"
    "-- The route's data as the mapping would see it (json.decode), or the text\n"
    "-- itself when it is not JSON.\n"
    "local function decode_data(data_json)\n"
    "  if data_json and data_json ~= \"\" then\n"
    "    local ok, v = pcall(json.decode, data_json)\n"
    "    return ok and v or data_json\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "\n"
    "-- The route's data for the comparison every passing case makes: as cjson\n"
    "-- gives it, which same() cannot tell from json.decode's result (1 == 1.0,\n"
    "-- and a null under a key neither passes ANY nor fails ABSENT), except for\n"
    "-- an expected null, which gets json.decode's form.\n"
    "local function compared_data(c, data_json)\n"
    "  if not c.data_has_null and data_json and data_json ~= \"\" then\n"
    "    local ok, v = pcall(cjson.decode, data_json)\n"
    "    if ok then\n"
    "      return v\n"
    "    end\n"
    "  end\n"
    "  return decode_data(data_json)\n"
    "end\n"
    "\n"
    "-- Compares the run with the case. Returns true, or false, the first\n"
    "-- difference (one line) and the whole report.\n"
    "function H.check(outcome, message, data_json, err)\n"
    "  local c = cur.case\n"
    "  local e = c.expect\n"
    "  local problem\n"
    "  if e.outcome and e.outcome ~= outcome then\n"
    "    problem = (\"outcome: expected %s, got %s%s\"):format(e.outcome, outcome,\n"
    "      err and (\" (\" .. err .. \")\") or \"\")\n"
    "  end\n"
    "  if not problem and e.error then\n"
    "    if not err then\n"
    "      problem = (\"error: expected one matching %s, got none\"):format(quote(e.error))\n"
    "    else\n"
    "      local ok, found = pcall(string.find, err, e.error)\n"
    "      if not ok then\n"
    "        problem = \"expect.error is not a valid Lua pattern: \" .. tostring(found)\n"
    "      elseif not found then\n"
    "        problem = (\"error: expected one matching %s, got %s\"):format(quote(e.error), quote(err))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  if not problem and e.requests then\n"
    "    local reqs = cur.requests\n"
    "    local pos = 1\n"
    "    for j, er in ipairs(e.requests) do\n"
    "      local found\n"
    "      for k = pos, #reqs do\n"
    "        if request_matches(er, reqs[k]) then\n"
    "          found = k\n"
    "          break\n"
    "        end\n"
    "      end\n"
    "      if not found then\n"
    "        local near\n"
    "        for k = pos, #reqs do\n"
    "          if same_target(er, reqs[k]) then\n"
    "            near = k\n"
    "            break\n"
    "          end\n"
    "        end\n"
    "        if near then\n"
    "          local p, ev, av = request_diff(er, reqs[near])\n"
    "          problem = (\"request %d (%s) differs from actual request %d at %s: expected %s, got %s\"):format(\n"
    "            j, req_label(er), near, p, ev, av)\n"
    "        else\n"
    "          problem = (\"request %d (%s) was not made%s\"):format(j, req_label(er),\n"
    "            pos > 1 and (\" after request %d\"):format(pos - 1) or \"\")\n"
    "        end\n"
    "        break\n"
    "      end\n"
    "      pos = found + 1\n"
    "    end\n"
    "  end\n"
    "  if not problem and e.request_count and e.request_count ~= #cur.requests then\n"
    "    problem = (\"requests: expected %d in all, got %d\"):format(e.request_count, #cur.requests)\n"
    "  end\n"
    "  if not problem and e.message then\n"
    "    local ok, found = pcall(string.find, message or \"\", e.message)\n"
    "    if not ok or not found then\n"
    "      problem = (\"message: expected one matching %s, got %s\"):format(quote(e.message), quote(message or \"\"))\n"
    "    end\n"
    "  end\n"
    "  if not problem and e.data ~= nil and not same(e.data, compared_data(c, data_json)) then\n"
    "    local data = decode_data(data_json)\n"
    "    local p, ev, av = diff(e.data, data, \"data\")\n"
    "    problem = (\"%s: expected %s, got %s\"):format(p or \"data\", ev or show(e.data), av or show(data))\n"
    "  end\n"
    "  if not problem then\n"
    "    return true\n"
    "  end\n"
    "  local summary = ('%s:%d: case \"%s\": %s'):format(c.file, c.line, c.name, problem)\n"
    "  return false, summary, \"    \" .. summary .. \"\\n\" .. describe_run(c, outcome, message,\n"
    "    decode_data(data_json), err)\n"
    "end\n"
    "\n"
    "-- After the runs: nothing of the cases stays in the state.\n"
    "function H.finish()\n"
    "  cur = nil\n"
    "  host.reset_memory()\n"
    "  host.set_config(nil)\n"
    "end\n"
    "\n"
    "------------------------------------------------------------------------------\n"
    "-- ncghl map: one body, dry\n"
    "\n"
    "local function map_names()\n"
    "  local names = {}\n"
    "  local mods = {}\n"
    "  for modname, mod in pairs(package.loaded) do\n"
    "    if type(mod) == \"table\" and type(modname) == \"string\" and modname ~= \"_G\" then\n"
    "      mods[#mods + 1] = modname\n"
    "    end\n"
    "  end\n"
    "  table.sort(mods)\n"
    "  for _, modname in ipairs(mods) do\n"
    "    local mod = package.loaded[modname]\n"
    "    for _, k in ipairs(sorted_keys(mod)) do\n"
    "      local v = mod[k]\n"
    "      if type(k) == \"string\" and type(v) == \"table\" and names[v] == nil then\n"
    "        names[v] = modname .. \".\" .. k\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  return names\n"
    "end\n"
    "\n"
    "-- Prepares a dry run of `payload` (JSON text). list: what the case file at\n"
    "-- fixtures_path returned (its first case lends its answers, links and\n"
    "-- fingerprints), or nil.\n"
    "function H.map_prepare(source, payload, fixtures_path, list)\n"
    "  local ok, body = pcall(json.decode, payload)\n"
    "  if not ok then\n"
    "    return nil, \"the body is not JSON: \" .. tostring(body)\n"
    "  end\n"
    "  local etype, why = intake_type(source, body)\n"
    "  if not etype then\n"
    "    return nil, why\n"
    "  end\n"
    "  local c = { answers = nil }\n"
    "  if fixtures_path then\n"
    "    local first = type(list) == \"table\" and (list.answers and list or list[1]) or nil\n"
    "    if type(first) ~= \"table\" then\n"
    "      return nil, fixtures_path .. \":1: expected a test case file (a list of cases) or a table with answers\"\n"
    "    end\n"
    "    for _, k in ipairs({ \"links\", \"fingerprints\", \"answers\" }) do\n"
    "      local okl, e = check_list(first[k], k)\n"
    "      if not okl then\n"
    "        return nil, fixtures_path .. \":1: \" .. e\n"
    "      end\n"
    "    end\n"
    "    local answers, bad = normalize_answers(first.answers)\n"
    "    if not answers then\n"
    "      return nil, fixtures_path .. \":1: \" .. bad\n"
    "    end\n"
    "    c.answers, c.links, c.fingerprints = answers, first.links, first.fingerprints\n"
    "  end\n"
    "  cur = { case = c, requests = {}, used = {}, seq = 0 }\n"
    "  seed(c)\n"
    "  local config = {}\n"
    "  for k, v in pairs(H.DRY_RUN_CONFIG) do\n"
    "    if ncghl.config(k) == nil then\n"
    "      config[k] = v\n"
    "    end\n"
    "  end\n"
    "  host.set_config(config)\n"
    "  traces = {}\n"
    "  local mapmod = require \"ncghl.map\"\n"
    "  if not H.orig_apply then\n"
    "    H.orig_apply = mapmod.apply\n"
    "    mapmod.apply = function(m, src, ctx)\n"
    "      local out, trace = H.orig_apply(m, src, ctx)\n"
    "      if traces then\n"
    "        traces[#traces + 1] = { map = m, out = out, trace = trace }\n"
    "      end\n"
    "      return out, trace\n"
    "    end\n"
    "  end\n"
    "  return \"dry-run\", source, etype, payload\n"
    "end\n"
    "\n"
    "-- The dry run's result as indented JSON text.\n"
    "function H.map_result(source, etype, outcome, message, data_json, err)\n"
    "  local data\n"
    "  if data_json and data_json ~= \"\" then\n"
    "    local ok, v = pcall(json.decode, data_json)\n"
    "    data = ok and v or data_json\n"
    "  end\n"
    "  local out = {}\n"
    "  local function field(k, v, last)\n"
    "    out[#out + 1] = \"  \" .. quote(k) .. \": \"\n"
    "    pretty(v, \"  \", out)\n"
    "    out[#out + 1] = last and \"\\n\" or \",\\n\"\n"
    "  end\n"
    "  out[#out + 1] = \"{\\n\"\n"
    "  field(\"source\", source)\n"
    "  field(\"type\", etype)\n"
    "  field(\"outcome\", outcome)\n"
    "  field(\"message\", message)\n"
    "  field(\"error\", err)\n"
    "  local reqs = {}\n"
    "  for _, r in ipairs(cur.requests) do\n"
    "    reqs[#reqs + 1] = {\n"
    "      service = r.service, method = r.method, path = r.path, query = query_of(r),\n"
    "      body = body_of(r), answer = { status = r.status, body = r.answer_body, from = r.from },\n"
    "    }\n"
    "  end\n"
    "  -- Requests keep their order and their fields a fixed one.\n"
    "  out[#out + 1] = '  \"requests\": ['\n"
    "  for i, r in ipairs(reqs) do\n"
    "    out[#out + 1] = (i == 1 and \"\\n\" or \"\") .. \"    {\\n\"\n"
    "    local keys = { \"service\", \"method\", \"path\", \"query\", \"body\", \"answer\" }\n"
    "    for j, k in ipairs(keys) do\n"
    "      out[#out + 1] = \"      \" .. quote(k) .. \": \"\n"
    "      pretty(r[k], \"      \", out)\n"
    "      out[#out + 1] = j < #keys and \",\\n\" or \"\\n\"\n"
    "    end\n"
    "    out[#out + 1] = \"    }\" .. (i < #reqs and \",\\n\" or \"\\n  \")\n"
    "  end\n"
    "  out[#out + 1] = \"],\\n\"\n"
    "  local names = map_names()\n"
    "  local maps = {}\n"
    "  for _, t in ipairs(traces or {}) do\n"
    "    local fields = {}\n"
    "    for target, how in pairs(t.trace) do\n"
    "      fields[target] = { from = how, value = t.out[target] }\n"
    "    end\n"
    "    maps[#maps + 1] = { map = names[t.map] or \"(a map table)\", fields = fields }\n"
    "  end\n"
    "  if #maps == 0 then\n"
    "    out[#out + 1] = '  \"maps\": [],\\n'\n"
    "  else\n"
    "    field(\"maps\", maps)\n"
    "  end\n"
    "  field(\"data\", data, true)\n"
    "  out[#out + 1] = \"}\\n\"\n"
    "  traces = nil\n"
    "  return table.concat(out)\n"
    "end\n"
    "\n"
    "return H\n";

/* ------------------------------------------------------------------------ */
/* The runner                                                               */

#define MAX_CASE_FILE_BYTES (4u << 20)
#define MAX_BODY_FILE_BYTES (16u << 20)
#define MAX_DIR_DEPTH 4

struct case_info {
  char *file, *name;
  int line;
};

struct runner {
  const struct config *cfg;
  struct event_base *base;
  bool own_base;
  struct lrt *rt;
  lua_State *L;
  int harness; /* registry ref of the harness table */

  struct case_info *cases;
  int ncases, capcases;

  /* The run in progress. */
  bool map_mode;
  bool done;
  bool passed;
  char *summary, *report; /* a failure's first difference and whole diff */
  char *map_json;
  const char *map_source;
  char *map_type;
  char *harness_error; /* the runner's own Lua failed while answering */
};

static char *xstrdup(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p)
    memcpy(p, s, n);
  return p;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The whole file, NUL-terminated; -1 with a reason. */
static int read_text(const char *path, size_t max, char **text, size_t *len, char *err,
                     size_t errlen) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  struct buf b;
  buf_init(&b, max);
  char chunk[8192];
  size_t got;
  int rc = 0;
  while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
    if (buf_append(&b, chunk, got) != 0) {
      snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
      rc = -1;
      break;
    }
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, errlen, "%s: read error", path);
    rc = -1;
  }
  if (f != stdin)
    fclose(f);
  if (rc != 0) {
    buf_free(&b);
    return -1;
  }
  *len = b.len;
  *text = buf_steal(&b);
  if (!*text) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

/* Pushes the harness function `name`. */
static void push_fn(struct runner *r, const char *name) {
  lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->harness);
  lua_getfield(r->L, -1, name);
  lua_remove(r->L, -2);
}

static int h_reset_memory(lua_State *L) {
  lapi_memory_reset(L);
  return 0;
}

static int h_set_config(lua_State *L) {
  lapi_set_config_override(L, 1);
  return 0;
}

/* The runtime's `start`: the harness picks the answer (a fixture or the
 * default) and it is handed back at once, from inside ncghl.call; lua_rt
 * delivers it when the coroutine has yielded. */
static int fixture_start(void *ud, const struct up_call *call, up_attempt_cb on_attempt,
                         up_done_cb done, void *done_ud) {
  (void)on_attempt; /* no store: attempts are not recorded */
  struct runner *r = ud;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  push_fn(r, "answer");
  lua_pushstring(L, up_service_name(call->service));
  lua_pushstring(L, call->method);
  lua_pushstring(L, call->path);
  if (call->body)
    lua_pushlstring(L, call->body, call->body_len);
  else
    lua_pushnil(L);
  if (call->content_type)
    lua_pushstring(L, call->content_type);
  else
    lua_pushnil(L);
  struct up_result res = {.body = "", .attempts = 1};
  if (lrt_pcall(r->rt, 5, 5) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!r->harness_error)
      r->harness_error = xstrdup(msg ? msg : "error in the runner");
    res.error = "the runner could not answer this call";
  } else {
    size_t bl = 0;
    res.ok = lua_toboolean(L, top + 1);
    res.retryable = lua_toboolean(L, top + 2);
    res.status = (int)lua_tointeger(L, top + 3);
    const char *b = lua_tolstring(L, top + 4, &bl);
    res.body = b ? b : "";
    res.body_len = b ? bl : 0;
    res.error = lua_tostring(L, top + 5);
  }
  done(done_ud, &res); /* lua_rt copies what it keeps */
  lua_settop(L, top);
  return 0;
}

static int load_harness(lua_State *L) {
  if (luaL_loadbufferx(L, HARNESS, sizeof(HARNESS) - 1, "=ncghl/runner.lua", "t") != LUA_OK)
    return lua_error(L);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, h_reset_memory);
  lua_setfield(L, -2, "reset_memory");
  lua_pushcfunction(L, h_set_config);
  lua_setfield(L, -2, "set_config");
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    return luaL_error(L, "the runner's Lua did not return its table");
  return 1;
}

struct runner *runner_new(const struct config *cfg, struct event_base *base, runner_build_fn build,
                          void *build_ud, char *err, size_t errlen) {
  struct runner *r = calloc(1, sizeof(*r));
  if (!r) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  r->cfg = cfg;
  r->harness = LUA_NOREF;
  r->base = base;
  if (!r->base) {
    r->base = event_base_new();
    r->own_base = true;
    if (!r->base) {
      snprintf(err, errlen, "cannot create an event base");
      free(r);
      return NULL;
    }
  }
  struct lrt_host host = {
    .base = r->base,
    .cfg = cfg,
    .start = fixture_start,
    .start_ud = r,
  };
  r->rt = build ? build(build_ud, &host, err, errlen) : lrt_new(&host, err, errlen);
  if (!r->rt) {
    runner_free(r);
    return NULL;
  }
  lrt_set_quiet(r->rt, true);
  r->L = lrt_lua_state(r->rt);
  lua_pushcfunction(r->L, load_harness);
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK) {
    snprintf(err, errlen, "runner: %s", lua_tostring(r->L, -1));
    lua_pop(r->L, 1);
    runner_free(r);
    return NULL;
  }
  r->harness = luaL_ref(r->L, LUA_REGISTRYINDEX);
  return r;
}

static void run_reset(struct runner *r) {
  free(r->summary);
  free(r->report);
  free(r->map_json);
  free(r->harness_error);
  free(r->map_type);
  r->summary = r->report = r->map_json = r->harness_error = r->map_type = NULL;
  r->done = r->passed = false;
}

void runner_free(struct runner *r) {
  if (!r)
    return;
  if (r->L && r->harness != LUA_NOREF) {
    push_fn(r, "finish");
    if (lrt_pcall(r->rt, 0, 0) != LUA_OK)
      lua_pop(r->L, 1);
    luaL_unref(r->L, LUA_REGISTRYINDEX, r->harness);
  }
  if (r->rt)
    lrt_free(r->rt);
  if (r->own_base && r->base)
    event_base_free(r->base);
  for (int i = 0; i < r->ncases; i++) {
    free(r->cases[i].file);
    free(r->cases[i].name);
  }
  free(r->cases);
  run_reset(r);
  free(r);
}

const char *runner_version(const struct runner *r) {
  return r ? lrt_version(r->rt) : "";
}

int runner_case_count(const struct runner *r) {
  return r ? r->ncases : 0;
}

/* Copies the names of the cases the harness now has past r->ncases. */
static int take_infos(struct runner *r, char *err, size_t errlen) {
  lua_State *L = r->L;
  push_fn(r, "count");
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK) {
    snprintf(err, errlen, "runner: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  int n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  if (n > r->capcases) {
    int ncap = n + 16;
    struct case_info *nc = realloc(r->cases, (size_t)ncap * sizeof(*nc));
    if (!nc) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    r->cases = nc;
    r->capcases = ncap;
  }
  for (int i = r->ncases; i < n; i++) {
    push_fn(r, "info");
    lua_pushinteger(L, i + 1);
    if (lrt_pcall(r->rt, 1, 3) != LUA_OK) {
      snprintf(err, errlen, "runner: %s", lua_tostring(L, -1));
      lua_pop(L, 1);
      return -1;
    }
    struct case_info *c = &r->cases[i];
    c->file = xstrdup(lua_tostring(L, -3));
    c->name = xstrdup(lua_tostring(L, -2));
    c->line = (int)lua_tointeger(L, -1);
    lua_pop(L, 3);
    if (!c->file || !c->name) {
      free(c->file);
      free(c->name);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    r->ncases = i + 1;
  }
  return 0;
}

/* Compiles and runs a case file; on success pushes its path, its text and
 * what it returned, and returns 0. */
static int eval_case_file(struct runner *r, const char *path, char *err, size_t errlen) {
  char *text;
  size_t len;
  if (read_text(path, MAX_CASE_FILE_BYTES, &text, &len, err, errlen) != 0)
    return -1;
  lua_State *L = r->L;
  int top = lua_gettop(L);
  lua_pushstring(L, path);
  lua_pushlstring(L, text, len);
  free(text);
  push_fn(r, "compile");
  lua_pushvalue(L, top + 1);
  lua_pushvalue(L, top + 2);
  if (lrt_pcall(r->rt, 2, 2) != LUA_OK || lua_isnil(L, -2)) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    lua_settop(L, top);
    return -1;
  }
  lua_pop(L, 1);
  /* The file's own code, under the budget: a loop stops at its own line. */
  if (lrt_pcall(r->rt, 0, 1) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (msg)
      snprintf(err, errlen, "%s", msg);
    else
      snprintf(err, errlen, "%s: the file raised an error that is not text", path);
    lua_settop(L, top);
    return -1;
  }
  return 0;
}

int runner_load_file(struct runner *r, const char *path, char *err, size_t errlen) {
  lua_State *L = r->L;
  int top = lua_gettop(L);
  if (eval_case_file(r, path, err, errlen) != 0)
    return -1;
  push_fn(r, "load");
  lua_insert(L, top + 1);
  int rc;
  if (lrt_pcall(r->rt, 3, 2) != LUA_OK) {
    snprintf(err, errlen, "%s: %s", path, lua_tostring(L, -1));
    rc = -1;
  } else if (lua_isnil(L, top + 1)) {
    snprintf(err, errlen, "%s", lua_tostring(L, top + 2));
    rc = -1;
  } else {
    rc = (int)lua_tointeger(L, top + 1);
  }
  lua_settop(L, top);
  if (rc >= 0 && take_infos(r, err, errlen) != 0)
    rc = -1;
  return rc;
}

/* Every *.lua under dir (recursively, names sorted), appended to *list. */
static int collect_cases(const char *dir, int depth, char ***list, int *n, int *cap, char *err,
                         size_t errlen) {
  char **names;
  size_t count;
  if (dirlist_read(dir, &names, &count) != 0) {
    if (depth == 0 && errno == ENOENT)
      return 0;
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    return -1;
  }
  int nn = (int)count, rc = 0;
  for (int i = 0; rc == 0 && i < nn; i++) {
    struct buf p;
    buf_init(&p, 0);
    buf_printf(&p, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]);
    char *path = buf_steal(&p);
    struct stat sb;
    size_t nl = strlen(names[i]);
    if (!path) {
      snprintf(err, errlen, "out of memory");
      rc = -1;
    } else if (stat(path, &sb) != 0) {
      free(path); /* a dangling link holds no cases */
    } else if (S_ISDIR(sb.st_mode)) {
      if (depth < MAX_DIR_DEPTH)
        rc = collect_cases(path, depth + 1, list, n, cap, err, errlen);
      free(path);
    } else if (S_ISREG(sb.st_mode) && nl > 4 && strcmp(names[i] + nl - 4, ".lua") == 0) {
      if (*n == *cap) {
        int ncap = *cap ? *cap * 2 : 16;
        char **nv = realloc(*list, (size_t)ncap * sizeof(*nv));
        if (!nv) {
          free(path);
          snprintf(err, errlen, "out of memory");
          rc = -1;
          break;
        }
        *list = nv;
        *cap = ncap;
      }
      (*list)[(*n)++] = path;
    } else {
      free(path);
    }
  }
  dirlist_free(names, count);
  return rc;
}

static void free_list(char **list, int n) {
  for (int i = 0; i < n; i++)
    free(list[i]);
  free(list);
}

int runner_load_dir(struct runner *r, const char *dir, char *err, size_t errlen) {
  char **files = NULL;
  int n = 0, cap = 0, total = 0;
  if (collect_cases(dir, 0, &files, &n, &cap, err, errlen) != 0) {
    free_list(files, n);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    int got = runner_load_file(r, files[i], err, errlen);
    if (got < 0) {
      free_list(files, n);
      return -1;
    }
    total += got;
  }
  free_list(files, n);
  return total;
}

/* The runtime's done callback: the harness compares (or, in a dry run,
 * writes the result) while the strings are alive. */
static void on_done(void *ud, const struct lrt_result *res) {
  struct runner *r = ud;
  lua_State *L = r->L;
  static const char *const outcomes[] = {"done", "ignored", "retry", "failed"};
  int top = lua_gettop(L);
  r->done = true;
  int nargs = 0;
  if (r->map_mode) {
    push_fn(r, "map_result");
    lua_pushstring(L, r->map_source);
    lua_pushstring(L, r->map_type);
    nargs = 2;
  } else {
    push_fn(r, "check");
  }
  lua_pushstring(L, outcomes[res->outcome]);
  lua_pushstring(L, res->message);
  lua_pushstring(L, res->data);
  lua_pushstring(L, res->error);
  if (lrt_pcall(r->rt, nargs + 4, 3) != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (!r->harness_error)
      r->harness_error = xstrdup(msg ? msg : "error in the runner");
  } else if (r->map_mode) {
    r->map_json = xstrdup(lua_tostring(L, top + 1));
  } else {
    r->passed = lua_toboolean(L, top + 1);
    if (!r->passed) {
      r->summary = xstrdup(lua_tostring(L, top + 2));
      r->report = xstrdup(lua_tostring(L, top + 3));
    }
  }
  lua_settop(L, top);
}

/* Runs the event whose lrt_event fields the harness left at top+1..top+5
 * (id, source, type, payload, run) and drains the runtime. */
static int run_event(struct runner *r, int top, char *err, size_t errlen) {
  lua_State *L = r->L;
  size_t plen = 0;
  struct lrt_event ev = {
    .id = lua_tostring(L, top + 1),
    .source = lua_tostring(L, top + 2),
    .type = lua_tostring(L, top + 3),
    .payload = lua_tolstring(L, top + 4, &plen),
    .run = lua_isinteger(L, top + 5) ? (int)lua_tointeger(L, top + 5) : 1,
  };
  ev.payload_len = plen;
  int rc = lrt_run(r->rt, &ev, on_done, r);
  lua_settop(L, top);
  if (rc != 0) {
    snprintf(err, errlen, "the runtime could not start the event");
    return -1;
  }
  lrt_drain(r->rt);
  if (!r->done) {
    snprintf(err, errlen, "the event did not end (an upstream call was never answered)");
    return -1;
  }
  if (r->harness_error) {
    snprintf(err, errlen, "runner: %s", r->harness_error);
    return -1;
  }
  return 0;
}

/* One case; fills r->passed / summary / report. */
static void run_case(struct runner *r, int i) {
  lua_State *L = r->L;
  char err[512];
  run_reset(r);
  int top = lua_gettop(L);
  push_fn(r, "prepare");
  lua_pushinteger(L, i + 1);
  int rc;
  if (lrt_pcall(r->rt, 1, 5) != LUA_OK) {
    snprintf(err, sizeof(err), "could not prepare the case: %s", lua_tostring(L, -1));
    lua_settop(L, top);
    rc = -1;
  } else {
    rc = run_event(r, top, err, sizeof(err));
  }
  if (rc != 0) {
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "%s:%d: case \"%s\": %s", r->cases[i].file, r->cases[i].line,
               r->cases[i].name, err);
    free(r->summary);
    free(r->report);
    r->passed = false;
    r->report = NULL;
    r->summary = buf_steal(&b);
  }
}

int runner_run(struct runner *r, int rounds, FILE *out, struct runner_report *rep, char *first,
               size_t firstlen) {
  struct runner_report local = {0};
  if (!rep)
    rep = &local;
  memset(rep, 0, sizeof(*rep));
  if (first && firstlen)
    first[0] = '\0';
  if (rounds < 1)
    rounds = 1;
  r->map_mode = false;
  bool all = true;
  double t0 = mono_s();
  for (int round = 0; round < rounds; round++) {
    for (int i = 0; i < r->ncases; i++) {
      run_case(r, i);
      rep->runs++;
      if (!r->passed) {
        all = false;
        if (first && firstlen && !first[0])
          snprintf(first, firstlen, "%s", r->summary ? r->summary : "failed");
      }
      if (round > 0)
        continue;
      if (r->passed)
        rep->passed++;
      else
        rep->failed++;
      if (out) {
        fprintf(out, "%s %s: %s\n", r->passed ? "ok  " : "FAIL", r->cases[i].file,
                r->cases[i].name);
        if (!r->passed)
          fprintf(out, "%s\n", r->report ? r->report : (r->summary ? r->summary : ""));
      }
    }
  }
  rep->seconds = mono_s() - t0;
  run_reset(r);
  push_fn(r, "finish");
  if (lrt_pcall(r->rt, 0, 0) != LUA_OK)
    lua_pop(r->L, 1);
  return all ? 0 : 1;
}

int runner_map(struct runner *r, const char *source, const char *body, size_t len,
               const char *fixtures_path, FILE *out, char *err, size_t errlen) {
  lua_State *L = r->L;
  run_reset(r);
  int top = lua_gettop(L);
  push_fn(r, "map_prepare");
  lua_pushstring(L, source);
  lua_pushlstring(L, body, len);
  if (fixtures_path) {
    if (eval_case_file(r, fixtures_path, err, errlen) != 0) {
      lua_settop(L, top);
      return -1;
    }
    lua_remove(L, -2); /* keep the path and what the file returned */
  } else {
    lua_pushnil(L);
    lua_pushnil(L);
  }
  int rc = 0;
  if (lrt_pcall(r->rt, 4, 5) != LUA_OK) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    rc = -1;
  } else if (lua_isnil(L, top + 1)) {
    snprintf(err, errlen, "%s", lua_tostring(L, top + 2));
    rc = -1;
  }
  if (rc != 0) {
    lua_settop(L, top);
    return -1;
  }
  r->map_mode = true;
  r->map_source = source;
  r->map_type = xstrdup(lua_tostring(L, top + 3)); /* on_done needs it after the pop */
  rc = run_event(r, top, err, errlen);
  if (rc == 0 && !r->map_json) {
    snprintf(err, errlen, "the dry run produced no result");
    rc = -1;
  }
  if (rc == 0)
    fputs(r->map_json, out);
  lua_settop(L, top);
  r->map_mode = false;
  run_reset(r);
  push_fn(r, "finish");
  if (lrt_pcall(r->rt, 0, 0) != LUA_OK)
    lua_pop(L, 1);
  return rc;
}

int runner_check(const struct config *cfg, struct event_base *base, runner_build_fn build,
                 void *build_ud, int *ncases, char *err, size_t errlen) {
  *ncases = 0;
  char dir[4096];
  if (snprintf(dir, sizeof(dir), "%s/tests", cfg->mappings_dir) >= (int)sizeof(dir)) {
    snprintf(err, errlen, "%s: path too long", cfg->mappings_dir);
    return -1;
  }
  /* No case files: nothing to run, and no second runtime to build. */
  char **files = NULL;
  int n = 0, cap = 0;
  if (collect_cases(dir, 0, &files, &n, &cap, err, errlen) != 0) {
    free_list(files, n);
    return -1;
  }
  free_list(files, n);
  if (n == 0)
    return 0;
  struct runner *r = runner_new(cfg, base, build, build_ud, err, errlen);
  if (!r)
    return -1;
  int rc = runner_load_dir(r, dir, err, errlen) < 0 ? -1 : 0;
  if (rc == 0) {
    struct runner_report rep;
    if (runner_run(r, 1, NULL, &rep, err, errlen) != 0)
      rc = -1;
    *ncases = r->ncases;
  }
  runner_free(r);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The command line                                                         */

static int load_config(struct config *cfg, const char *env_file, const char *cmd) {
  char err[512];
  if (config_load(cfg, env_file, false, err, sizeof(err)) != 0) {
    fprintf(stderr, "ncghl %s: configuration error: %s\n", cmd, err);
    return -1;
  }
  log_set_format(cfg->log_json);
  log_set_pii(cfg->log_pii);
  if (log_init(cfg->log_level, cfg->log_file) != 0) {
    fprintf(stderr, "ncghl %s: configuration error: LOG_FILE: cannot open %s\n", cmd,
            cfg->log_file);
    config_free(cfg);
    return -1;
  }
  return 0;
}

int runner_cmd_check(int argc, char **argv) {
  const char *env_file = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--env") == 0 && i + 1 < argc) {
      env_file = argv[++i];
    } else {
      fprintf(stderr, "ncghl check: unknown option '%s' (usage: ncghl check [--env FILE])\n",
              argv[i]);
      return 2;
    }
  }
  struct config cfg;
  if (load_config(&cfg, env_file, "check") != 0)
    return 1;
  char err[1024];
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s/tests", cfg.mappings_dir);
  int rc = 1;
  struct runner *r = runner_new(&cfg, NULL, NULL, NULL, err, sizeof(err));
  if (!r) {
    fprintf(stderr, "%s\n", err);
  } else if (runner_load_dir(r, dir, err, sizeof(err)) < 0) {
    fprintf(stderr, "%s\n", err);
  } else if (runner_run(r, 1, NULL, NULL, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
  } else {
    printf("ok: scripts in %s and %s load (version %s); %d test case%s passed\n", cfg.lua_dir,
           cfg.mappings_dir, runner_version(r), r->ncases, r->ncases == 1 ? "" : "s");
    rc = 0;
  }
  runner_free(r);
  config_free(&cfg);
  log_close();
  return rc;
}

/* The mappings directory a case file or directory belongs to: for a path
 * under "<dir>/tests/", <dir> when it has a routes.lua; else NULL. */
static char *owner_dir(const char *path) {
  char *real = realpath(path, NULL);
  if (!real)
    return NULL;
  struct stat sb;
  if (stat(real, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
    char *slash = strrchr(real, '/');
    if (slash)
      *slash = '\0';
  }
  for (int depth = 0; depth <= MAX_DIR_DEPTH; depth++) {
    char *slash = strrchr(real, '/');
    if (!slash || slash == real)
      break;
    if (strcmp(slash + 1, "tests") == 0) {
      *slash = '\0';
      struct buf p;
      buf_init(&p, 0);
      buf_printf(&p, "%s/routes.lua", real);
      bool has = p.p && stat(p.p, &sb) == 0;
      buf_free(&p);
      if (has)
        return real;
      *slash = '/';
    }
    *slash = '\0';
  }
  free(real);
  return NULL;
}

struct group {
  char *mappings; /* NULL: MAPPINGS_DIR */
  char **files;
  int n, cap;
};

static int group_add(struct group *g, const char *file) {
  if (g->n == g->cap) {
    int ncap = g->cap ? g->cap * 2 : 8;
    char **nv = realloc(g->files, (size_t)ncap * sizeof(*nv));
    if (!nv)
      return -1;
    g->files = nv;
    g->cap = ncap;
  }
  if (!(g->files[g->n] = xstrdup(file)))
    return -1;
  g->n++;
  return 0;
}

static struct group *group_for(struct group **groups, int *ngroups, char *mappings) {
  for (int i = 0; i < *ngroups; i++) {
    struct group *g = &(*groups)[i];
    if ((!g->mappings && !mappings) || (g->mappings && mappings && !strcmp(g->mappings, mappings))) {
      free(mappings);
      return g;
    }
  }
  struct group *ng = realloc(*groups, (size_t)(*ngroups + 1) * sizeof(*ng));
  if (!ng) {
    free(mappings);
    return NULL;
  }
  *groups = ng;
  struct group *g = &ng[(*ngroups)++];
  memset(g, 0, sizeof(*g));
  g->mappings = mappings;
  return g;
}

static void groups_free(struct group *groups, int n) {
  for (int i = 0; i < n; i++) {
    free(groups[i].mappings);
    free_list(groups[i].files, groups[i].n);
  }
  free(groups);
}

/* Runs one group of case files against its mappings directory. */
static void test_group(const struct config *base_cfg, const struct group *g, int rounds,
                       struct runner_report *total) {
  struct config cfg = *base_cfg; /* shallow: only mappings_dir differs */
  if (g->mappings)
    cfg.mappings_dir = g->mappings;
  char err[1024];
  struct runner *r = runner_new(&cfg, NULL, NULL, NULL, err, sizeof(err));
  if (!r) {
    printf("FAIL %s: the scripts do not load\n    %s\n", cfg.mappings_dir, err);
    total->failed++;
    return;
  }
  for (int i = 0; i < g->n; i++) {
    if (runner_load_file(r, g->files[i], err, sizeof(err)) < 0) {
      printf("FAIL %s: the file does not load\n    %s\n", g->files[i], err);
      total->failed++;
    }
  }
  struct runner_report rep;
  runner_run(r, rounds, stdout, &rep, NULL, 0);
  total->passed += rep.passed;
  total->failed += rep.failed;
  total->runs += rep.runs;
  total->seconds += rep.seconds;
  runner_free(r);
}

int runner_cmd_test(int argc, char **argv) {
  const char *env_file = NULL;
  int rounds = 1;
  bool bench = false;
  char **paths = calloc((size_t)argc + 1, sizeof(*paths));
  int npaths = 0;
  if (!paths)
    return 1;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--env") == 0 && i + 1 < argc) {
      env_file = argv[++i];
    } else if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc) {
      char *end;
      long n = strtol(argv[++i], &end, 10);
      if (*end || n < 1 || n > 10000000) {
        fprintf(stderr, "ncghl test: --bench wants a whole number of rounds from 1\n");
        free(paths);
        return 2;
      }
      rounds = (int)n;
      bench = true;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "ncghl test: unknown option '%s' (usage: ncghl test [--env FILE] "
                      "[--bench N] [PATH...])\n", argv[i]);
      free(paths);
      return 2;
    } else {
      paths[npaths++] = argv[i];
    }
  }
  struct config cfg;
  if (load_config(&cfg, env_file, "test") != 0) {
    free(paths);
    return 1;
  }
  struct group *groups = NULL;
  int ngroups = 0, problems = 0;
  char err[1024];
  char deftests[4096];
  snprintf(deftests, sizeof(deftests), "%s/tests", cfg.mappings_dir);
  if (npaths == 0)
    paths[npaths++] = deftests;
  for (int i = 0; i < npaths; i++) {
    struct stat sb;
    if (stat(paths[i], &sb) != 0) {
      if (paths[i] == deftests) /* no tests directory: no cases */
        continue;
      printf("FAIL %s: %s\n", paths[i], strerror(errno));
      problems++;
      continue;
    }
    char **files = NULL;
    int n = 0, cap = 0;
    if (S_ISDIR(sb.st_mode)) {
      if (collect_cases(paths[i], 0, &files, &n, &cap, err, sizeof(err)) != 0) {
        printf("FAIL %s: %s\n", paths[i], err);
        problems++;
      }
    } else {
      files = malloc(sizeof(*files));
      if (files && (files[0] = xstrdup(paths[i])))
        n = 1;
    }
    struct group *g = n ? group_for(&groups, &ngroups, paths[i] == deftests ? NULL
                                                                             : owner_dir(paths[i]))
                        : NULL;
    for (int j = 0; j < n; j++) {
      if (!g || group_add(g, files[j]) != 0) {
        printf("FAIL %s: out of memory\n", files[j]);
        problems++;
      }
    }
    free_list(files, n);
  }
  struct runner_report total = {0};
  total.failed = problems;
  for (int i = 0; i < ngroups; i++)
    test_group(&cfg, &groups[i], rounds, &total);
  if (total.passed + total.failed == 0)
    fprintf(stderr, "ncghl test: no test cases found (looked in %s)\n",
            npaths == 1 && paths[0] == deftests ? deftests : "the given paths");
  printf("%d passed, %d failed\n", total.passed, total.failed);
  fflush(stdout);
  if (bench && total.seconds > 0)
    fprintf(stderr, "bench: %ld cases in %.3f s: %.0f cases/s\n", total.runs, total.seconds,
            (double)total.runs / total.seconds);
  groups_free(groups, ngroups);
  free(paths);
  config_free(&cfg);
  log_close();
  return total.failed ? 1 : 0;
}

int runner_cmd_map(int argc, char **argv) {
  const char *env_file = NULL, *source = NULL, *file = NULL, *fixtures = NULL;
  static const char use[] =
      "usage: ncghl map --source nowcerts|ghl|manual FILE.json [--fixtures CASES.lua] [--env FILE]";
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
      env_file = argv[++i];
    else if (strcmp(argv[i], "--source") == 0 && i + 1 < argc)
      source = argv[++i];
    else if (strcmp(argv[i], "--fixtures") == 0 && i + 1 < argc)
      fixtures = argv[++i];
    else if ((argv[i][0] != '-' || !argv[i][1]) && !file)
      file = argv[i];
    else {
      fprintf(stderr, "ncghl map: unexpected '%s'\n%s\n", argv[i], use);
      return 2;
    }
  }
  if (!source || !file) {
    fprintf(stderr, "ncghl map: %s\n%s\n", !source ? "--source is required" : "FILE.json is required",
            use);
    return 2;
  }
  if (strcmp(source, "nowcerts") != 0 && strcmp(source, "ghl") != 0 &&
      strcmp(source, "manual") != 0) {
    fprintf(stderr, "ncghl map: --source must be nowcerts, ghl or manual, not '%s'\n", source);
    return 2;
  }
  char err[1024];
  char *body;
  size_t len;
  if (read_text(file, MAX_BODY_FILE_BYTES, &body, &len, err, sizeof(err)) != 0) {
    fprintf(stderr, "ncghl map: %s\n", err);
    return 1;
  }
  /* The same strict parser as intake: what it refuses, the service would. */
  struct json *doc = json_parse(body, len, err, sizeof(err));
  if (!doc) {
    fprintf(stderr, "ncghl map: %s is not JSON: %s\n", file, err);
    free(body);
    return 1;
  }
  bool object = json_type(doc) == JSON_OBJECT;
  json_free(doc);
  if (!object) {
    fprintf(stderr, "ncghl map: %s: a webhook body must be a JSON object\n", file);
    free(body);
    return 1;
  }
  struct config cfg;
  if (load_config(&cfg, env_file, "map") != 0) {
    free(body);
    return 1;
  }
  int rc = 1;
  struct runner *r = runner_new(&cfg, NULL, NULL, NULL, err, sizeof(err));
  if (!r)
    fprintf(stderr, "ncghl map: %s\n", err);
  else if (runner_map(r, source, body, len, fixtures, stdout, err, sizeof(err)) != 0)
    fprintf(stderr, "ncghl map: %s\n", err);
  else
    rc = 0;
  runner_free(r);
  free(body);
  config_free(&cfg);
  log_close();
  return rc;
}
