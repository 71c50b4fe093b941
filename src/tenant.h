/* tenant: one NowCerts agency paired with one GHL location (SPEC 13), as a
 * bundle of its own config, store, queue, upstream (tokens, GHL rate
 * limit), Lua runtime, engine, poller, presence and upkeep, and the set of
 * them read from TENANTS_DIR. A tenant shares only the process's loop, HTTP
 * client, listener and metrics registry, so nothing one tenant does reaches
 * another's events, links or snapshots. The single agency is the one tenant
 * without a name. */
#ifndef NCGHL_TENANT_H
#define NCGHL_TENANT_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct event_base;
struct httpc;
struct metrics;
struct pace;
struct server;
struct upstream;
struct tokens;
struct tenant;
struct tenants;

/* What every tenant of a process shares; it must outlive them. */
struct tenant_shared {
  struct event_base *base;
  struct httpc *http;
  struct server *server;
  struct metrics *metrics;
  /* The loop's share between intake and processing (pace.h); may be NULL. */
  struct pace *pace;
  /* A tenant's store failed (queue.h): the process stops and restarts. */
  void (*on_store_failed)(void *ud, const char *reason);
  void *ud;
};

/* Whether name can name a tenant: [a-z0-9][a-z0-9_-]{0,39}. */
bool tenant_name_ok(const char *name);
/* The length of a TENANTS_DIR entry's tenant name (the file's name without
 * ".env"), 0 when the entry is no tenant file (README, editor backups). */
size_t tenant_file_stem(const char *file);
/* Where a tenant's store lives (malloc'd): for SQLite, tenants/<name>.db
 * beside DB_PATH; for a PostgreSQL STORE_URL, the same URL with the query
 * parameter ncghl_schema=t_<name> added (its own schema). NULL name: the
 * single agency's, db_path or store_url unchanged. NULL when out of memory. */
char *tenant_store_location(const char *db_path, const char *store_url, const char *name);

/* The set, empty. */
struct tenants *tenants_new(const struct tenant_shared *sh);
/* Starts the single agency: one tenant without a name on cfg (taken over:
 * the caller's struct is cleared). 0, or -1 with the reason logged. */
int tenants_start_single(struct tenants *ts, struct config *cfg);
/* Reads every <name>.env in main->tenants_dir and makes the running set
 * match it: a new file starts its tenant, a removed one stops it, a changed
 * one restarts it on its new configuration (and mappings); the others
 * reload their mappings. At start (first call) any bad file is an error:
 * -1 with "file: why" in err and nothing started. Later, a bad file keeps
 * that tenant as it runs, logged with its file; the return is then the
 * number of files refused. */
int tenants_sync_dir(struct tenants *ts, const struct config *main, bool sandbox, char *err,
                     size_t errlen);
/* SIGHUP for the single agency: the mappings again (lua_rt.h). */
void tenants_reload_mappings(struct tenants *ts);
/* Stop taking work (pollers, engines), for a graceful stop. */
void tenants_stop(struct tenants *ts);
/* Events running, all tenants'. */
int tenants_running(const struct tenants *ts);
/* Commit what every tenant's queue holds (queue_flush). */
void tenants_flush(struct tenants *ts);
/* At exit, after a store failed: server_site_undo_refused for each. */
void tenants_undo_refused(struct tenants *ts);
void tenants_free(struct tenants *ts);
size_t tenants_count(const struct tenants *ts);

/* Lookups: by name (NULL: the single agency) and by GHL_LOCATION_ID. NULL
 * when none. A tenant found stays valid until the next tenants_sync_dir. */
struct tenant *tenants_by_name(struct tenants *ts, const char *name);
struct tenant *tenants_by_location(struct tenants *ts, const char *location_id);
/* NULL for the single agency. */
const char *tenant_name(const struct tenant *t);
const struct config *tenant_config(const struct tenant *t);
/* Its mappings' version (lua_rt.h), for the start-up line. */
const char *tenant_mappings_version(const struct tenant *t);
/* The tenant's upstream and its GHL tokens object (tokens.h; NULL when its
 * GHL access is an API key without OAuth): what the Marketplace install
 * hands new tokens to. */
struct upstream *tenant_upstream(struct tenant *t);
struct tokens *tenant_ghl_tokens(struct tenant *t);
/* Its group commit (queue.h): a write something is answered on joins it. */
struct queue *tenant_queue(struct tenant *t);

#endif
