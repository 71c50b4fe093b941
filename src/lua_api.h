/* lua_api: the parts of the `ncghl` table that scripts call and that need no
 * coroutine machinery: ID links, sync snapshots, conflicts and field changes,
 * logging, configuration,
 * hashing, time and ncghl.fail. Internal to the Lua runtime (lua_rt.c, which
 * adds the two functions that yield, ncghl.call and ncghl.lock, to the same
 * table) and to its offline runner (runner.c).
 *
 * Without a store (host->store NULL: the offline runner, unit tests), links
 * and snapshots are kept in a Lua table of the state instead, so mappings
 * behave the same; nothing there outlives the state. */
#ifndef NCGHL_LUA_API_H
#define NCGHL_LUA_API_H

#include <stdbool.h>

#include <lua.h>

struct lrt_host;

/* One per Lua state, owned by lua_rt.c; the functions hold a pointer to it. */
struct lapi_ctx {
  const struct lrt_host *host;
  const char *event_id; /* the event whose Lua code runs now, NULL at load */
};

/* Sets the globals `ncghl` (a table, left on no stack) and `print` (which
 * logs instead of writing to stdout). Raises a Lua error on failure, so call
 * it in protected mode. */
void lapi_open(lua_State *L, struct lapi_ctx *ctx);

/* Pushes the error value that ncghl.fail raises. */
void lapi_push_fail(lua_State *L, bool retryable, const char *message);

/* Whether the value at idx was raised by ncghl.fail; if so *retryable and
 * *message (valid while the value stays on the stack) describe it. */
bool lapi_is_fail(lua_State *L, int idx, bool *retryable, const char **message);

/* The retry_in (seconds, > 0) of a value raised by ncghl.fail, else 0. */
double lapi_fail_retry_in(lua_State *L, int idx);

/* Forgets every link and snapshot kept in memory (no-store mode). */
void lapi_memory_reset(lua_State *L);

/* Makes ncghl.config answer from the table at idx before the configuration
 * (a non-table removes it). Secrets stay nil either way. */
void lapi_set_config_override(lua_State *L, int idx);

#endif
