#include "lua_api.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "config.h"
#include "digest.h"
#include "log.h"
#include "lua_rt.h"
#include "queue.h"
#include "store.h"

#define FAIL_MT "ncghl.fail"
#define MEMORY_KEY "ncghl.memory"
#define CONFIG_KEY "ncghl.config_override"

static struct lapi_ctx *ctx_of(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static double now_unix(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *event_label(const struct lapi_ctx *c) {
  return c->event_id ? c->event_id : "-";
}


/* A link or fingerprint write that finds the write lock held by another
 * process (a backfill, a replay) waits for it on the queue's timer instead
 * of failing the event; the run goes on meanwhile, and the write lands in
 * the batch that later carries the run's outcome. */
struct later_write {
  struct store *store;
  char what; /* 'l' link, 'f' fingerprint */
  char *a, *b, *c;
};

static void later_free(struct later_write *w) {
  free(w->a);
  free(w->b);
  free(w->c);
  free(w);
}

static void on_writable_write(void *ud, bool ok) {
  struct later_write *w = ud;
  int rc = -1;
  if (ok && w->what == 'l')
    rc = store_link_put(w->store, w->a, w->b, w->c, now_unix());
  else if (ok)
    rc = store_fp_put(w->store, w->a, w->b, w->c, now_unix());
  if (rc != 0)
    log_error("lua: a %s write that waited for the store's lock was lost (%s %s)",
              w->what == 'l' ? "link" : "fingerprint", w->a, w->b);
  later_free(w);
}

/* Store writes join the queue's open batch so they share its fsync (and
 * commit together with the event's own status); without a queue (tests, the
 * offline runner) each write commits on its own. True when the write was
 * taken over instead (to run once the lock is free). */
static bool write_later(struct lapi_ctx *c, char what, const char *a, const char *b,
                        const char *v) {
  struct queue *q = c->host->queue;
  if (!q || queue_join(q) == 0 || !queue_busy(q))
    return false;
  struct later_write *w = calloc(1, sizeof *w);
  if (!w)
    return false;
  w->store = c->host->store;
  w->what = what;
  w->a = strdup(a);
  w->b = strdup(b);
  w->c = strdup(v);
  if (!w->a || !w->b || !w->c) {
    later_free(w);
    return false;
  }
  queue_when_writable(q, on_writable_write, w);
  return true;
}

/* A failed store write is the service's trouble, not the data's: the event is
 * worth trying again later. */
static int raise_store_error(lua_State *L, const char *what) {
  lapi_push_fail(L, true, what);
  return lua_error(L);
}

void lapi_push_fail(lua_State *L, bool retryable, const char *message) {
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, retryable);
  lua_setfield(L, -2, "retryable");
  lua_pushstring(L, message ? message : "failed");
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, FAIL_MT);
}

bool lapi_is_fail(lua_State *L, int idx, bool *retryable, const char **message) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
    return false;
  luaL_getmetatable(L, FAIL_MT);
  bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  if (!same)
    return false;
  lua_getfield(L, idx, "retryable");
  *retryable = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "message");
  /* The string stays reachable from the table, which stays on the stack. */
  *message = lua_isstring(L, -1) ? lua_tostring(L, -1) : "failed";
  lua_pop(L, 1);
  return true;
}

/* ncghl.fail{retryable=bool, message=string} or ncghl.fail(message). */
static int api_fail(lua_State *L) {
  bool retryable = false;
  const char *message;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "retryable");
    retryable = lua_toboolean(L, -1);
    lua_getfield(L, 1, "message");
    message = luaL_optstring(L, -1, "failed");
  } else {
    message = luaL_checkstring(L, 1);
  }
  lapi_push_fail(L, retryable, message);
  return lua_error(L);
}

static int fail_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1))
    lua_pushliteral(L, "failed");
  return 1;
}

/* Without a store (the offline runner, unit tests) links and fingerprints
 * live in one Lua table in the registry, so a mapping that stores a link and
 * reads it back behaves as it would against SQLite. Keys are
 * "<what>\x1f<kind or side>\x1f<id>"; the table is the state's, never shared. */
static void push_memory(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, MEMORY_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, MEMORY_KEY);
  }
}

/* Pushes memory[what|a|b] (nil if unknown). */
static void mem_get(lua_State *L, const char *what, const char *a, const char *b) {
  push_memory(L);
  lua_pushfstring(L, "%s\x1f%s\x1f%s", what, a, b);
  lua_rawget(L, -2);
  lua_remove(L, -2);
}

/* memory[what|a|b] = the value on top (popped; nil deletes). */
static void mem_set(lua_State *L, const char *what, const char *a, const char *b) {
  push_memory(L);
  lua_pushfstring(L, "%s\x1f%s\x1f%s", what, a, b);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 2);
}

void lapi_memory_reset(lua_State *L) {
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, MEMORY_KEY);
}

void lapi_set_config_override(lua_State *L, int idx) {
  if (lua_istable(L, idx))
    lua_pushvalue(L, idx);
  else
    lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, CONFIG_KEY);
}

/* ncghl.link_get(kind, want, id): `want` names the side whose id you want.
 * link_get("contact", "ghl", insured_id) -> the GHL contact id linked to that
 * NowCerts insured; link_get("contact", "nowcerts", contact_id) -> the
 * NowCerts insured id linked to that GHL contact. nil when unknown. */
static int api_link_get(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *kind = luaL_checkstring(L, 1);
  const char *want = luaL_checkstring(L, 2);
  const char *id = luaL_checkstring(L, 3);
  char *other;
  bool to_ghl = strcmp(want, "ghl") == 0;
  if (!to_ghl && strcmp(want, "nowcerts") != 0)
    return luaL_argerror(L, 2, "expected \"ghl\" or \"nowcerts\"");
  if (!c->host->store) {
    mem_get(L, to_ghl ? "g" : "n", kind, id);
    return 1;
  }
  if (to_ghl)
    other = store_link_ghl(c->host->store, kind, id);
  else
    other = store_link_nowcerts(c->host->store, kind, id);
  if (!other) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, other); /* may raise on memory: free first */
  free(other);
  return 1;
}

static int api_link_put(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *kind = luaL_checkstring(L, 1);
  const char *nowcerts_id = luaL_checkstring(L, 2);
  const char *ghl_id = luaL_checkstring(L, 3);
  if (!*nowcerts_id || !*ghl_id)
    return luaL_error(L, "ncghl.link_put: empty id");
  if (!c->host->store) {
    /* Either side's old pair goes, as in the store: one id links to one id. */
    mem_get(L, "g", kind, nowcerts_id);
    if (lua_isstring(L, -1)) {
      lua_pushnil(L);
      mem_set(L, "n", kind, lua_tostring(L, -2));
    }
    lua_pop(L, 1);
    mem_get(L, "n", kind, ghl_id);
    if (lua_isstring(L, -1)) {
      lua_pushnil(L);
      mem_set(L, "g", kind, lua_tostring(L, -2));
    }
    lua_pop(L, 1);
    lua_pushstring(L, ghl_id);
    mem_set(L, "g", kind, nowcerts_id);
    lua_pushstring(L, nowcerts_id);
    mem_set(L, "n", kind, ghl_id);
    return 0;
  }
  if (write_later(c, 'l', kind, nowcerts_id, ghl_id))
    return 0;
  if (store_link_put(c->host->store, kind, nowcerts_id, ghl_id, now_unix()) != 0)
    return raise_store_error(L, "store: could not save the id link");
  return 0;
}

static const char *check_side(lua_State *L, int arg) {
  const char *side = luaL_checkstring(L, arg);
  if (strcmp(side, "ghl") != 0 && strcmp(side, "nowcerts") != 0)
    luaL_argerror(L, arg, "expected \"ghl\" or \"nowcerts\"");
  return side;
}

static int api_fp_get(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *side = check_side(L, 1);
  const char *id = luaL_checkstring(L, 2);
  if (!c->host->store) {
    mem_get(L, "f", side, id);
    return 1;
  }
  char *fp = store_fp_get(c->host->store, side, id);
  if (!fp) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, fp);
  free(fp);
  return 1;
}

static int api_fp_put(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *side = check_side(L, 1);
  const char *id = luaL_checkstring(L, 2);
  luaL_checkstring(L, 3);
  if (!c->host->store) {
    lua_pushvalue(L, 3);
    mem_set(L, "f", side, id);
    return 0;
  }
  const char *json = lua_tostring(L, 3);
  if (write_later(c, 'f', side, id, json))
    return 0;
  if (store_fp_put(c->host->store, side, id, json, now_unix()) != 0)
    return raise_store_error(L, "store: could not save the write fingerprint");
  return 0;
}

static int parse_level(const char *name) {
  if (strcmp(name, "debug") == 0)
    return LOGL_DEBUG;
  if (strcmp(name, "info") == 0)
    return LOGL_INFO;
  if (strcmp(name, "warn") == 0 || strcmp(name, "warning") == 0)
    return LOGL_WARNING;
  if (strcmp(name, "error") == 0)
    return LOGL_ERROR;
  return -1;
}

/* ncghl.log(level, msg): one line, tagged with the event it is about. The
 * logger itself redacts every registered secret. */
static int api_log(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *level = luaL_checkstring(L, 1);
  const char *msg = luaL_tolstring(L, 2, NULL);
  int l = parse_level(level);
  if (l < 0)
    return luaL_argerror(L, 1, "expected debug, info, warn or error");
  if (log_enabled((enum log_level)l))
    log_msg((enum log_level)l, "lua event=%s %s", event_label(c), msg);
  return 0;
}

/* print() goes to the log at debug level: scripts have no stdout. */
static int api_print(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  if (!log_enabled(LOGL_DEBUG))
    return 0;
  int n = lua_gettop(L);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addchar(&b, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  log_msg(LOGL_DEBUG, "lua event=%s %s", event_label(c), lua_tostring(L, -1));
  return 0;
}

/* Only values a mapping may reasonably want; secrets are refused twice over:
 * they are not in this list, and config_is_secret() is asked anyway. */
static int push_config(lua_State *L, const struct config *cfg, const char *name) {
#define STR(n, f)                                                                                  \
  if (strcmp(name, n) == 0) {                                                                      \
    if (cfg->f)                                                                                    \
      lua_pushstring(L, cfg->f);                                                                   \
    else                                                                                           \
      lua_pushnil(L);                                                                              \
    return 1;                                                                                      \
  }
#define NUM(n, f)                                                                                  \
  if (strcmp(name, n) == 0) {                                                                      \
    lua_pushnumber(L, (lua_Number)cfg->f);                                                         \
    return 1;                                                                                      \
  }
#define INT(n, f)                                                                                  \
  if (strcmp(name, n) == 0) {                                                                      \
    lua_pushinteger(L, (lua_Integer)cfg->f);                                                       \
    return 1;                                                                                      \
  }
#define BOOL(n, f)                                                                                 \
  if (strcmp(name, n) == 0) {                                                                      \
    lua_pushboolean(L, cfg->f);                                                                    \
    return 1;                                                                                      \
  }
  STR("HOST", host)
  INT("PORT", port)
  BOOL("DEBUG", debug)
  STR("NOWCERTS_BASE_URL", nowcerts_base_url)
  STR("GHL_BASE_URL", ghl_base_url)
  STR("GHL_LOCATION_ID", ghl_location_id)
  INT("MAX_RETRIES", max_retries)
  NUM("RETRY_BACKOFF_FACTOR", retry_backoff_factor)
  NUM("RETRY_INITIAL_DELAY", retry_initial_delay)
  STR("MAPPINGS_DIR", mappings_dir)
  INT("WEBHOOK_WAIT_MS", webhook_wait_ms)
  NUM("NOWCERTS_POLL_INTERVAL", nowcerts_poll_interval)
  INT("GHL_RATE_LIMIT", ghl_rate_limit)
  BOOL("SANDBOX", sandbox)
#undef STR
#undef NUM
#undef INT
#undef BOOL
  lua_pushnil(L);
  return 1;
}

static int api_config(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *name = luaL_checkstring(L, 1);
  if (!c->host->cfg || config_is_secret(name)) {
    lua_pushnil(L);
    return 1;
  }
  /* The offline runner's values (a test case's `config`) come first. */
  if (lua_getfield(L, LUA_REGISTRYINDEX, CONFIG_KEY) == LUA_TTABLE) {
    if (lua_getfield(L, -1, name) != LUA_TNIL)
      return 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return push_config(L, c->host->cfg, name);
}

static int api_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[DIGEST_HEX_LEN + 1];
  digest_sha256_hex(s, len, hex);
  lua_pushlstring(L, hex, DIGEST_HEX_LEN);
  return 1;
}

static int api_now(lua_State *L) {
  lua_pushnumber(L, now_unix());
  return 1;
}

void lapi_open(lua_State *L, struct lapi_ctx *ctx) {
  static const luaL_Reg fns[] = {
    {"fail", api_fail},     {"link_get", api_link_get}, {"link_put", api_link_put},
    {"fp_get", api_fp_get}, {"fp_put", api_fp_put},     {"log", api_log},
    {"config", api_config}, {"sha256", api_sha256},     {"now", api_now},
    {NULL, NULL},
  };
  if (luaL_newmetatable(L, FAIL_MT)) {
    lua_pushcfunction(L, fail_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);

  lua_getglobal(L, "ncghl");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_pushlightuserdata(L, ctx);
  luaL_setfuncs(L, fns, 1);
  lua_setglobal(L, "ncghl");

  lua_pushlightuserdata(L, ctx);
  lua_pushcclosure(L, api_print, 1);
  lua_setglobal(L, "print");
}
