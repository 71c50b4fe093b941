/* Fuzz target: field-map application through the real Lua runtime. The
 * shipped engine library and mappings are loaded into a sandboxed state
 * (lrt_new, the memory cap and instruction budget included), the input is
 * decoded as a webhook's record would be (ncghl.json.decode), and the
 * shipped contact and policy maps are applied to it with ncghl.map.apply,
 * then the result encoded as the request body would be. A record is data
 * from outside: any JSON must map without a Lua error (a script error would
 * kill that event), and the C side must never crash. Input that is not JSON
 * is refused by the decoder, as intake would. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "fuzz.h"
#include "log.h"
#include "lua_rt.h"

#ifndef NCGHL_SOURCE_DIR
#define NCGHL_SOURCE_DIR "."
#endif

static struct event_base *base;
static struct config cfg;
static struct lrt *rt;

/* Returns nothing on success; raises only when a map does. */
static const char HARNESS[] =
    "local data = ...\n"
    "local json = require 'ncghl.json'\n"
    "local map = require 'ncghl.map'\n"
    "local contacts = require 'contacts'\n"
    "local policies = require 'policies'\n"
    "local ok, rec = pcall(json.decode, data)\n"
    "if not ok then return 'not json' end\n"
    "local maps = { contacts.insured_to_contact, contacts.contact_to_insured,\n"
    "               policies.insured_to_contact, policies.opportunity }\n"
    "for _, m in ipairs(maps) do\n"
    "  local out, trace = map.apply(m, rec, {})\n"
    "  json.encode(out)\n"
    "  for k in pairs(out) do assert(trace[k] ~= nil, k) end\n"
    "end\n"
    "map.get(rec, contacts.insured_id)\n"
    "map.get(rec, policies.number)\n"
    "return 'mapped'\n";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  log_init(LOGL_ERROR, NULL);
  base = event_base_new();
  cfg.lua_dir = NCGHL_SOURCE_DIR "/lua";
  cfg.mappings_dir = NCGHL_SOURCE_DIR "/mappings";
  cfg.lua_memory_mb = 64;
  cfg.lua_instruction_budget = 10000000;
  struct lrt_host host = {.base = base, .cfg = &cfg};
  char err[512];
  rt = lrt_new(&host, err, sizeof err);
  if (!rt) {
    fprintf(stderr, "fuzz_map: %s\n", err);
    abort();
  }
  lrt_set_quiet(rt, true);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = lrt_lua_state(rt);
  int top = lua_gettop(L);
  if (luaL_loadbufferx(L, HARNESS, sizeof HARNESS - 1, "=fuzz_map", "t") != LUA_OK)
    abort();
  lua_pushlstring(L, (const char *)data, size);
  int rc = lrt_pcall(rt, 1, 1);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    /* The budget and the memory cap are the sandbox doing its job on a
     * pathological record, not a bug in a map. */
    if (rc != LUA_ERRMEM && !(msg && strstr(msg, "instruction budget"))) {
      fprintf(stderr, "fuzz_map: a map raised on a JSON record: %s\n", msg ? msg : "?");
      abort();
    }
  }
  if (getenv("FUZZ_MAP_TRACE"))
    fprintf(stderr, "fuzz_map: %s\n", lua_tostring(L, -1));
  lua_settop(L, top);
  return 0;
}
