#include "lua_api.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "clock.h"
#include "config.h"
#include "digest.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "queue.h"
#include "store.h"

#define FAIL_MT "ncghl.fail"
#define MEMORY_KEY "ncghl.memory"
#define CONFIG_KEY "ncghl.config_override"

static struct lapi_ctx *ctx_of(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static const char *event_label(const struct lapi_ctx *c) {
  return c->event_id ? c->event_id : "-";
}


/* A link write that finds the write lock held by another process (a
 * backfill, a replay) waits for it on the queue's timer instead of failing
 * the event; the run goes on meanwhile, and the write lands in the batch
 * that later carries the run's outcome. */
struct later_write {
  struct store *store;
  char what; /* 'l' link */
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
  if (ok)
    rc = store_link_put(w->store, w->a, w->b, w->c, clock_wall());
  if (rc != 0)
    log_error("lua: a link write that waited for the store's lock was lost (%s %s)", w->a, w->b);
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

/* Writes the rest of the run reads back (a snapshot) or whose order
 * matters (the timeline) join the batch now. When another process holds the
 * write lock they answer false and the script waits (ncghl.wait_writable)
 * and writes again: the event waits, the loop does not. */
static bool join_now(struct lapi_ctx *c) {
  return !c->host->queue || queue_join(c->host->queue) == 0;
}

/* A failed store write is the service's trouble, not the data's: the event is
 * worth trying again later. */
static int raise_store_error(lua_State *L, const char *what) {
  lapi_push_fail(L, true, what);
  return lua_error(L);
}

/* The answer of such a write when another process holds the lock: false,
 * nothing written; the caller waits with ncghl.wait_writable and tries
 * again. Any other failure raises. */
static int busy_or_raise(lua_State *L, struct lapi_ctx *c) {
  if (c->host->queue && queue_busy(c->host->queue)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return raise_store_error(L, "store: the write could not join a batch; the event runs again");
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

/* A script may ask for a short wait before the next run (a create whose
 * answer was lost is searched for again once the upstream has indexed it);
 * bounded, so a script cannot park an event for days or spin it. */
double lapi_fail_retry_in(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (!lua_istable(L, idx))
    return 0;
  lua_getfield(L, idx, "retry_in");
  double v = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  if (!(v > 0))
    return 0;
  return v < 1 ? 1 : (v > 3600 ? 3600 : v);
}

/* ncghl.fail{retryable=bool, message=string, retry_in=seconds} or
 * ncghl.fail(message). */
static int api_fail(lua_State *L) {
  bool retryable = false;
  const char *message;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "retryable");
    retryable = lua_toboolean(L, -1);
    lua_getfield(L, 1, "message");
    message = luaL_optstring(L, -1, "failed");
    lua_getfield(L, 1, "retry_in");
    double after = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0;
    lapi_push_fail(L, retryable, message);
    if (after > 0) {
      lua_pushnumber(L, (lua_Number)after);
      lua_setfield(L, -2, "retry_in");
    }
    return lua_error(L);
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
  if (store_link_put(c->host->store, kind, nowcerts_id, ghl_id, clock_wall()) != 0)
    return raise_store_error(L, "store: could not save the id link");
  return 0;
}

/* ncghl.link_del(kind, nowcerts_id): forgets a link (GHL deleted its side). */
static int api_link_del(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *kind = luaL_checkstring(L, 1);
  const char *nowcerts_id = luaL_checkstring(L, 2);
  if (!c->host->store) {
    mem_get(L, "g", kind, nowcerts_id);
    if (lua_isstring(L, -1)) {
      lua_pushnil(L);
      mem_set(L, "n", kind, lua_tostring(L, -2));
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    mem_set(L, "g", kind, nowcerts_id);
    return 0;
  }
  if (!join_now(c))
    return busy_or_raise(L, c);
  if (store_link_delete(c->host->store, kind, nowcerts_id) != 0)
    return raise_store_error(L, "store: could not remove the id link");
  return 0;
}

/* ncghl.snapshot_get(kind, nowcerts_id) -> the link's snapshot (JSON text)
 * or nil. The shape is sync.lua's; C keeps it whole. */
static int api_snapshot_get(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *kind = luaL_checkstring(L, 1);
  const char *id = luaL_checkstring(L, 2);
  if (!c->host->store) {
    mem_get(L, "s", kind, id);
    return 1;
  }
  char *json = store_snapshot_get(c->host->store, kind, id);
  if (!json) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, json); /* may raise on memory: free first */
  free(json);
  return 1;
}

/* ncghl.snapshot_put(kind, nowcerts_id, ghl_id|nil, json|nil). */
static int api_snapshot_put(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  const char *kind = luaL_checkstring(L, 1);
  const char *id = luaL_checkstring(L, 2);
  const char *ghl_id = luaL_optstring(L, 3, NULL);
  const char *json = luaL_optstring(L, 4, NULL);
  if (!*id)
    return luaL_error(L, "ncghl.snapshot_put: empty id");
  if (!c->host->store) {
    lua_pushvalue(L, 4);
    mem_set(L, "s", kind, id);
    return 0;
  }
  if (!join_now(c))
    return busy_or_raise(L, c);
  if (store_snapshot_put(c->host->store, kind, id, ghl_id, json, clock_wall()) != 0)
    return raise_store_error(L, "store: could not save the sync snapshot");
  return 0;
}

static const char *opt_field(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  const char *v = lua_isstring(L, -1) ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays reachable from the table */
  return v;
}

static double opt_number(lua_State *L, int t, const char *name) {
  lua_getfield(L, t, name);
  double v = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 0;
  lua_pop(L, 1);
  return v;
}

/* Without a store, conflicts and changes go to a list in memory: the offline
 * runner has nowhere else to keep them, and nothing reads them back. */
static void mem_append(lua_State *L, const char *list, int t) {
  mem_get(L, list, "", "");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    mem_set(L, list, "", "");
  }
  lua_pushvalue(L, t);
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  lua_pop(L, 1);
}

/* ncghl.conflict_add{kind=, nowcerts_id=, ghl_id=, field=, nowcerts_value=,
 * ghl_value=, base=, winner=, nowcerts_at=, ghl_at=}: the event's own id is
 * added here. */
static int api_conflict_add(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  struct store_conflict k = {
      .kind = opt_field(L, 1, "kind"),
      .nowcerts_id = opt_field(L, 1, "nowcerts_id"),
      .ghl_id = opt_field(L, 1, "ghl_id"),
      .field = opt_field(L, 1, "field"),
      .nowcerts_value = opt_field(L, 1, "nowcerts_value"),
      .ghl_value = opt_field(L, 1, "ghl_value"),
      .base = opt_field(L, 1, "base"),
      .winner = opt_field(L, 1, "winner"),
      .event_id = c->event_id,
      .nowcerts_at = opt_number(L, 1, "nowcerts_at"),
      .ghl_at = opt_number(L, 1, "ghl_at"),
      .at = clock_wall(),
  };
  if (!k.kind || !k.nowcerts_id || !k.field || !k.winner)
    return luaL_error(L, "ncghl.conflict_add: kind, nowcerts_id, field and winner are required");
  if (c->host->conflicts)
    metric_inc(c->host->conflicts, METRIC_LABELS(k.kind, k.winner));
  if (!c->host->store) {
    mem_append(L, "conflicts", 1);
    return 0;
  }
  if (!join_now(c))
    return busy_or_raise(L, c);
  if (store_conflict_add(c->host->store, &k) != 0)
    return raise_store_error(L, "store: could not record the conflict");
  return 0;
}

/* ncghl.count_ignored(reason): one more event left alone on purpose, by a
 * reason from a short fixed list (a label must not take any value a
 * payload carries). */
static int api_count_ignored(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  static const char *const reasons[] = {"other_location", "no_identity", "deleted", NULL};
  const char *reason = luaL_checkstring(L, 1);
  int i = 0;
  while (reasons[i] && strcmp(reasons[i], reason) != 0)
    i++;
  if (!reasons[i])
    return luaL_argerror(L, 1, "expected other_location, no_identity or deleted");
  if (c->host->ignored)
    metric_inc(c->host->ignored, METRIC_LABELS(reasons[i]));
  return 0;
}

/* ncghl.change_add{kind=, nowcerts_id=, ghl_id=, field=, side=, old=, new=,
 * action=}: one line of a person's timeline. */
static int api_change_add(lua_State *L) {
  struct lapi_ctx *c = ctx_of(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  struct store_change k = {
      .kind = opt_field(L, 1, "kind"),
      .nowcerts_id = opt_field(L, 1, "nowcerts_id"),
      .ghl_id = opt_field(L, 1, "ghl_id"),
      .field = opt_field(L, 1, "field"),
      .side = opt_field(L, 1, "side"),
      .old_value = opt_field(L, 1, "old"),
      .new_value = opt_field(L, 1, "new"),
      .action = opt_field(L, 1, "action"),
      .event_id = c->event_id,
      .at = clock_wall(),
  };
  if (!k.kind || !k.field || !k.side || !k.action)
    return luaL_error(L, "ncghl.change_add: kind, field, side and action are required");
  if (!c->host->store) {
    mem_append(L, "changes", 1);
    return 0;
  }
  if (!join_now(c))
    return busy_or_raise(L, c);
  if (store_change_add(c->host->store, &k) != 0)
    return raise_store_error(L, "store: could not record the field change");
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
  STR("DEFAULT_COUNTRY", default_country)
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
  lua_pushnumber(L, clock_wall());
  return 1;
}

void lapi_open(lua_State *L, struct lapi_ctx *ctx) {
  static const luaL_Reg fns[] = {
    {"fail", api_fail},
    {"link_get", api_link_get},
    {"link_put", api_link_put},
    {"link_del", api_link_del},
    {"snapshot_get", api_snapshot_get},
    {"snapshot_put", api_snapshot_put},
    {"conflict_add", api_conflict_add},
    {"change_add", api_change_add},
    {"count_ignored", api_count_ignored},
    {"log", api_log},
    {"config", api_config},
    {"sha256", api_sha256},
    {"now", api_now},
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
