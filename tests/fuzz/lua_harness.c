#include "lua_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <lauxlib.h>

#include "config.h"
#include "log.h"
#include "lua_rt.h"

#ifndef NCGHL_SOURCE_DIR
#define NCGHL_SOURCE_DIR "."
#endif

/* One per process: libFuzzer and replay.c run a single target. */
static struct config cfg;

struct lrt *lua_harness_runtime(const char *who) {
  log_init(LOGL_ERROR, NULL);
  struct event_base *base = event_base_new();
  cfg.lua_dir = NCGHL_SOURCE_DIR "/lua";
  cfg.mappings_dir = NCGHL_SOURCE_DIR "/mappings";
  cfg.lua_memory_mb = 64;
  cfg.lua_instruction_budget = 10000000;
  struct lrt_host host = {.base = base, .cfg = &cfg};
  char err[512];
  struct lrt *rt = base ? lrt_new(&host, err, sizeof err) : NULL;
  if (!rt) {
    fprintf(stderr, "%s: %s\n", who, base ? err : "no event base");
    abort();
  }
  lrt_set_quiet(rt, true);
  return rt;
}

void lua_harness_run(struct lrt *rt, const char *who, const char *chunk, size_t chunk_len,
                     const uint8_t *data, size_t size, lua_CFunction helper, const char *finding,
                     const char *trace_env) {
  lua_State *L = lrt_lua_state(rt);
  int top = lua_gettop(L);
  char name[64];
  snprintf(name, sizeof name, "=%s", who);
  if (luaL_loadbufferx(L, chunk, chunk_len, name, "t") != LUA_OK)
    abort();
  lua_pushlstring(L, (const char *)data, size);
  if (helper)
    lua_pushcfunction(L, helper);
  int rc = lrt_pcall(rt, helper ? 2 : 1, 1);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    /* The budget and the memory cap are the sandbox doing its job on a
     * pathological input, not a finding. */
    if (rc != LUA_ERRMEM && !(msg && strstr(msg, "instruction budget"))) {
      fprintf(stderr, "%s: %s: %s\n", who, finding, msg ? msg : "?");
      abort();
    }
  }
  if (getenv(trace_env))
    fprintf(stderr, "%s: %s\n", who, lua_tostring(L, -1));
  lua_settop(L, top);
}
