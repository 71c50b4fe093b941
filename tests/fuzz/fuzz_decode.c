/* Fuzz target: ncghl.json's two readings of JSON text must agree. The C
 * decoder (src/lua_json.c) and cjson followed by the Lua walk
 * (json.decode_cjson) run in the real sandboxed state on the same input;
 * whenever the C decoder accepts it, cjson must too, and both must give the
 * same values: the same types (integer or float), the same keys, json.null
 * in the same array slots, and the same keys noted as null. A difference
 * would mean some payload reads differently than it did before the C
 * decoder, which no agency's mapping should ever see. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "fuzz.h"
#include "lua_harness.h"
#include "lua_rt.h"

static struct lrt *rt;

/* Returns "same", "refused" (the C decoder refused: json.decode is cjson's
 * reading then, nothing to compare) or raises with the first difference. */
static const char HARNESS[] =
    "local data = ...\n"
    "local json = require 'ncghl.json'\n"
    "local fast = require('ncghl.json_c').decode\n"
    "if not fast(data) then return 'refused' end\n"
    "local c = json.decode(data)\n"
    "local ok, s = pcall(json.decode_cjson, data)\n"
    "if not ok then error('C decoder accepted what cjson refuses: ' .. tostring(s)) end\n"
    "local function marks(t)\n"
    "  local ks = {}\n"
    "  json.copy_nulls(t, {}, function(k) ks[k] = true end)\n"
    "  return ks\n"
    "end\n"
    "local function same(a, b, path)\n"
    "  local ta, tb = type(a), type(b)\n"
    "  if ta ~= tb then error(path .. ': ' .. ta .. ' against ' .. tb) end\n"
    "  if ta == 'number' then\n"
    "    if math.type(a) ~= math.type(b) or a ~= b then\n"
    "      error(path .. ': ' .. math.type(a) .. ' ' .. tostring(a) .. ' against '\n"
    "            .. math.type(b) .. ' ' .. tostring(b))\n"
    "    end\n"
    "  elseif ta == 'table' then\n"
    "    for k, v in pairs(a) do same(v, b[k], path .. '.' .. tostring(k)) end\n"
    "    for k in pairs(b) do\n"
    "      if a[k] == nil then error(path .. '.' .. tostring(k) .. ': only from cjson') end\n"
    "    end\n"
    "    local ma, mb = marks(a), marks(b)\n"
    "    for k in pairs(ma) do\n"
    "      if not mb[k] then error(path .. ': null noted only by C at ' .. tostring(k)) end\n"
    "    end\n"
    "    for k in pairs(mb) do\n"
    "      if not ma[k] then error(path .. ': null noted only by cjson at ' .. tostring(k)) end\n"
    "    end\n"
    "  elseif a ~= b then\n"
    "    error(path .. ': ' .. tostring(a) .. ' against ' .. tostring(b))\n"
    "  end\n"
    "end\n"
    "same(c, s, '$')\n"
    "return 'same'\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  rt = lua_harness_runtime("fuzz_decode");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_harness_run(rt, "fuzz_decode", HARNESS, sizeof HARNESS - 1, data, size, NULL,
                  "the two readings differ", "FUZZ_DECODE_TRACE");
  return 0;
}
