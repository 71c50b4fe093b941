/* config: the environment (and an optional .env file) read once, validated
 * once, into one struct. A bad value stops start-up with one line that names
 * the variable; nothing else in ncghl reads getenv(). */
#ifndef NCGHL_CONFIG_H
#define NCGHL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct config {
  char *host;
  int port;
  bool debug;
  int log_level; /* enum log_level */
  char *log_file; /* NULL: stderr only */
  bool log_json;  /* LOG_FORMAT=json */
  bool log_pii;   /* LOG_PII: personal data unmasked in logs and attempt URLs */

  char *nowcerts_base_url; /* REST base, "/api" included */
  char *nowcerts_username;
  char *nowcerts_password;
  char *ghl_base_url;
  char *ghl_api_key;
  char *ghl_location_id;
  char *default_country; /* ISO code of phones written without one (E.164 to GHL) */
  char *ghl_client_id;
  char *ghl_client_secret;
  char *ghl_refresh_token;
  /* Marketplace install (install.c): the redirect URI registered with the
   * app (sent as redirect_uri when set), the scopes GET /oauth/install asks
   * for, and the marketplace host it sends the browser to. */
  char *ghl_redirect_uri;
  char *ghl_oauth_scopes;
  char *ghl_marketplace_url;

  int max_retries;
  double retry_backoff_factor;
  double retry_initial_delay; /* seconds */
  double upstream_timeout;    /* seconds, one attempt */

  char *db_path;
  /* STORE_URL: a postgresql:// URL; when set it wins over DB_PATH. */
  char *store_url;
  /* Which store commands and the service open (config_store) and how
   * messages name it (the URL with its password masked). */
  char store_label[512];
  char *mappings_dir;
  char *lua_dir; /* the engine's own library (lua/) */
  char *mappings_defaults_dir; /* the shipped mappings, `defaults.X` to an overlay; NULL: none */
  bool doctor_at_start; /* serve runs doctor's checks at start and on reload */
  double token_refresh_margin; /* seconds */
  double idempotency_ttl;      /* seconds */
  int webhook_wait_ms;
  long max_body_bytes;
  int rate_limit_per_minute;
  int ghl_rate_limit; /* per 10 s window */
  int event_concurrency; /* events run at once */
  char *admin_token;
  char *ui_dir; /* the /ui page's files; NULL: none found (the page is 404) */
  char *nowcerts_webhook_secret;
  bool ghl_webhook_verify;
  char *ghl_webhook_ed25519_key; /* PEM path, X-GHL-Signature */
  char *ghl_webhook_rsa_key;     /* PEM path, legacy x-wh-signature */
  double nowcerts_poll_interval;
  double nowcerts_deleted_poll_interval; /* DeletedInsuredList, read whole; 0 = never */
  char *public_url; /* where NowCerts REST hooks reach us; NULL: unset */
  int retention_days; /* done events older than this are deleted; 0: never */

  int lua_memory_mb;          /* per Lua state */
  long lua_instruction_budget; /* per event */
  int lua_event_memory_mb;     /* per event, at most lua_memory_mb */
  int lua_event_timeout_ms;    /* per event: time its code runs on the loop */

  char *tenants_dir; /* TENANTS_DIR: one <name>.env a tenant (docs/tenants.md); NULL: none */
  char *env_file;    /* the .env file read (NULL: none), which a tenant file is read over */

  bool sandbox;
  int sandbox_nowcerts_port;
  int sandbox_ghl_port;
};

/* Fills c from the environment and env_file (NULL: ./.env if present); a
 * variable already in the environment wins over the file. sandbox changes
 * some defaults (upstreams on loopback, webhook verification off). With
 * NCGHL_TENANT=<name> in the environment (a command's --tenant), c is that
 * tenant's configuration (config_load_tenant) instead.
 * Returns 0, or -1 with "NAME: why" in err. */
int config_load(struct config *c, const char *env_file, bool sandbox, char *err, size_t errlen);
/* NCGHL_TENANT's value for a command that works on one agency's store or
 * accounts and was given no --tenant: config_load then refuses when
 * TENANTS_DIR is set, naming the tenants, and is the single agency's
 * otherwise. */
#define CONFIG_TENANT_NEEDED "-"

/* config_load for a command (serve, events, replay, ...): the one-line
 * error on stderr, and the log set up as configured (format, PII masking,
 * level, file). 0, or -1 with nothing to free. */
int config_load_for_command(struct config *c, const char *env_file, bool sandbox);
/* config_load for tenant `name`: tenant_file's values first, then the
 * process environment and env_file as config_load reads them; db_path is
 * the tenant's own store (tenant_store_location). A tenant file may set
 * only per-agency variables (config_is_per_tenant), must set
 * GHL_LOCATION_ID, and its errors read "<tenant_file>: NAME: why". */
int config_load_tenant(struct config *c, const char *env_file, bool sandbox, const char *name,
                       const char *tenant_file, char *err, size_t errlen);
/* Whether a variable belongs to one agency (credentials, limits, mappings)
 * and so may be set in a tenant file; the others are the process's. */
bool config_is_per_tenant(const char *name);
void config_free(struct config *c);
/* The store to open: STORE_URL when set, else DB_PATH. */
const char *config_store(const struct config *c);
/* True when the store is a SQLite file (DB_PATH), which a command may look
 * for before opening; a database behind a URL is simply opened. */
bool config_store_is_file(const struct config *c);
/* "STORE_URL" or "DB_PATH": which variable named it, for messages. */
const char *config_store_var(const struct config *c);
/* Whether a configuration value may be shown (false for passwords, tokens,
 * keys and secrets). */
bool config_is_secret(const char *name);

#endif
