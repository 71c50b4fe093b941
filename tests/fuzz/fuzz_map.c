/* Fuzz target: field-map application through the real Lua runtime. The
 * shipped engine library and mappings are loaded into a sandboxed state
 * (lrt_new, the memory cap and instruction budget included), the input is
 * decoded as a webhook's record would be (ncghl.json.decode), and the
 * shipped contact and policy maps are applied to it with ncghl.map.apply,
 * then the result encoded as the request body would be. A record is data
 * from outside: any JSON must map without a Lua error (a script error would
 * kill that event), and the C side must never crash. Input that is not JSON
 * is refused by the decoder, as intake would. */
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

/* Lua lines run, as extra coverage counters: libFuzzer sees only
 * instrumented C, and the Lua interpreter (a Debian package) is not, so
 * without these it could not tell one path through map.lua from another. */
#ifdef NCGHL_LIBFUZZER
__attribute__((used, section("__libfuzzer_extra_counters")))
#endif
static uint8_t lua_lines[1 << 12];
/* Lines a covered() call may run: the budget's stand-in on its thread. */
#define LINE_CAP 2000000L
static long lines_left;

static void line_hook(lua_State *L, lua_Debug *ar) {
  if (--lines_left < 0)
    luaL_error(L, "instruction budget exceeded (fuzz line cap)");
  if (ar->event != LUA_HOOKLINE || !lua_getinfo(L, "S", ar))
    return;
  /* A chunk's source string lives as long as its function, so its address
   * names the file. */
  uintptr_t h = ((uintptr_t)ar->source >> 4) * 2654435761u ^ (uintptr_t)ar->currentline * 40503u;
  lua_lines[h & (sizeof lua_lines - 1)]++;
}

/* covered(f, ...): f(...) on a fresh thread with the line hook. Called from
 * inside lrt_pcall, so the state's memory cap stays on; the thread's own
 * hook replaces the budget's (one hook per thread), hence LINE_CAP. */
static int covered(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_insert(L, 1);
  lua_xmove(L, co, n);
  lines_left = LINE_CAP;
  lua_sethook(co, line_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1000);
  if (lua_pcall(co, n - 1, 0, 0) != LUA_OK) {
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  return 0;
}

/* Returns "mapped" or "not json"; raises only when a map does. */
static const char HARNESS[] =
    "local data, covered = ...\n"
    "local json = require 'ncghl.json'\n"
    "local map = require 'ncghl.map'\n"
    "local contacts = require 'contacts'\n"
    "local policies = require 'policies'\n"
    "local ok, rec\n"
    "covered(function() ok, rec = pcall(json.decode, data) end)\n"
    "if not ok then return 'not json' end\n"
    "local maps = { contacts.insured_to_contact, contacts.contact_to_insured,\n"
    "               policies.insured_to_contact, policies.opportunity }\n"
    "local function one(m)\n"
    "  local out, trace = map.apply(m, rec, {})\n"
    "  json.encode(out)\n"
    "  for k in pairs(out) do assert(trace[k] ~= nil, k) end\n"
    "end\n"
    "for _, m in ipairs(maps) do covered(one, m) end\n"
    "covered(map.get, rec, contacts.insured_id)\n"
    "covered(map.get, rec, policies.number)\n"
    "return 'mapped'\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  rt = lua_harness_runtime("fuzz_map");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_harness_run(rt, "fuzz_map", HARNESS, sizeof HARNESS - 1, data, size, covered,
                  "a map raised on a JSON record", "FUZZ_MAP_TRACE");
  return 0;
}
