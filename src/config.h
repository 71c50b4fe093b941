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

  char *nowcerts_base_url; /* REST base, "/api" included */
  char *nowcerts_username;
  char *nowcerts_password;
  char *ghl_base_url;
  char *ghl_api_key;
  char *ghl_location_id;
  char *ghl_client_id;
  char *ghl_client_secret;
  char *ghl_refresh_token;

  int max_retries;
  double retry_backoff_factor;
  double retry_initial_delay; /* seconds */
  double upstream_timeout;    /* seconds, one attempt */

  char *db_path;
  char *mappings_dir;
  char *lua_dir; /* the engine's own library (lua/) */
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
  char *public_url; /* where NowCerts REST hooks reach us; NULL: unset */

  int lua_memory_mb;          /* per Lua state */
  long lua_instruction_budget; /* per event */

  bool sandbox;
  int sandbox_nowcerts_port;
  int sandbox_ghl_port;
};

/* Fills c from the environment and env_file (NULL: ./.env if present); a
 * variable already in the environment wins over the file. sandbox changes
 * some defaults (upstreams on loopback, webhook verification off).
 * Returns 0, or -1 with "NAME: why" in err. */
int config_load(struct config *c, const char *env_file, bool sandbox, char *err, size_t errlen);
void config_free(struct config *c);
/* Whether a configuration value may be shown (false for passwords, tokens,
 * keys and secrets). */
bool config_is_secret(const char *name);

#endif
