/* Configuration: defaults, the environment over the .env file, and one clear
 * line naming the variable for every kind of bad value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

static const char *vars[] = {"HOST", "PORT", "DEBUG", "LOG_LEVEL", "MAX_RETRIES",
                             "RETRY_INITIAL_DELAY", "RETRY_BACKOFF_FACTOR", "MAPPINGS_DIR",
                             "GHL_API_KEY", "NOWCERTS_PASSWORD", "WEBHOOK_WAIT_MS",
                             "GHL_WEBHOOK_VERIFY", "GHL_CLIENT_ID", "DB_PATH", "NOWCERTS_BASE_URL",
                             "IDEMPOTENCY_TTL", "LOG_FORMAT", "LOG_PII", "LUA_MEMORY_MB",
                             "LUA_EVENT_MEMORY_MB", "LUA_EVENT_TIMEOUT_MS", NULL};
static char dir[64];

static int setup(void **state) {
  (void)state;
  for (int i = 0; vars[i]; i++)
    unsetenv(vars[i]);
  snprintf(dir, sizeof dir, "/tmp/ncghl-config-XXXXXX");
  assert_non_null(mkdtemp(dir));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
  return 0;
}

static const char *write_env(const char *text) {
  static char path[128];
  snprintf(path, sizeof path, "%s/test.env", dir);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static void test_defaults(void **state) {
  (void)state;
  struct config c;
  char err[256] = "";
  const char *env = write_env("# nothing\n");
  assert_int_equal(config_load(&c, env, false, err, sizeof err), 0);
  assert_string_equal(c.host, "127.0.0.1");
  assert_int_equal(c.port, 8001);
  assert_int_equal(c.max_retries, 3);
  assert_true(c.retry_backoff_factor == 2.0);
  assert_true(c.retry_initial_delay == 1.0);
  assert_string_equal(c.db_path, "data/ncghl.db");
  assert_string_equal(c.nowcerts_base_url, "https://api.nowcerts.com/api");
  assert_string_equal(c.ghl_base_url, "https://services.leadconnectorhq.com");
  assert_int_equal(c.webhook_wait_ms, 3000);
  assert_int_equal(c.max_body_bytes, 1048576);
  assert_int_equal(c.rate_limit_per_minute, 100);
  assert_int_equal(c.ghl_rate_limit, 100);
  assert_true(c.token_refresh_margin == 300);
  assert_true(c.idempotency_ttl == 86400);
  assert_true(c.ghl_webhook_verify);
  assert_null(c.admin_token);
  assert_int_equal(c.log_level, LOGL_INFO);
  assert_false(c.log_json);
  assert_false(c.log_pii);
  assert_int_equal(c.lua_memory_mb, 64);
  assert_int_equal(c.lua_event_memory_mb, 16); /* a quarter of the state */
  assert_int_equal(c.lua_event_timeout_ms, 2000);
  config_free(&c);
}

static void test_logging_and_lua_event_limits(void **state) {
  (void)state;
  struct config c;
  char err[256] = "";
  const char *env = write_env("LOG_FORMAT=JSON\nLOG_PII=true\nLUA_MEMORY_MB=32\n"
                              "LUA_EVENT_TIMEOUT_MS=500\n");
  assert_int_equal(config_load(&c, env, false, err, sizeof err), 0);
  assert_true(c.log_json);
  assert_true(c.log_pii);
  assert_int_equal(c.lua_event_memory_mb, 8);
  assert_int_equal(c.lua_event_timeout_ms, 500);
  config_free(&c);
  env = write_env("LUA_MEMORY_MB=32\nLUA_EVENT_MEMORY_MB=20\n");
  assert_int_equal(config_load(&c, env, false, err, sizeof err), 0);
  assert_int_equal(c.lua_event_memory_mb, 20);
  config_free(&c);
  /* An event's share cannot be more than the whole state. */
  env = write_env("LUA_MEMORY_MB=32\nLUA_EVENT_MEMORY_MB=40\n");
  assert_int_equal(config_load(&c, env, false, err, sizeof err), -1);
  assert_true(strncmp(err, "LUA_EVENT_MEMORY_MB:", 20) == 0);
  write_env("");
}

static void test_env_file_and_precedence(void **state) {
  (void)state;
  const char *env = write_env("export PORT=9000\nHOST = 0.0.0.0 # all\nLOG_LEVEL='debug'\n"
                              "GHL_API_KEY=\"pit-123456\"\nNOWCERTS_BASE_URL=http://x:1/api/\n");
  setenv("PORT", "9100", 1); /* the environment wins over the file */
  struct config c;
  char err[256] = "";
  assert_int_equal(config_load(&c, env, false, err, sizeof err), 0);
  assert_int_equal(c.port, 9100);
  assert_string_equal(c.host, "0.0.0.0");
  assert_int_equal(c.log_level, LOGL_DEBUG);
  assert_string_equal(c.ghl_api_key, "pit-123456");
  assert_string_equal(c.nowcerts_base_url, "http://x:1/api"); /* trailing slash dropped */
  config_free(&c);
}

static void test_sandbox_forces_fakes(void **state) {
  (void)state;
  setenv("GHL_API_KEY", "real-key-must-not-be-used", 1);
  struct config c;
  char err[256] = "";
  assert_int_equal(config_load(&c, write_env(""), true, err, sizeof err), 0);
  assert_string_equal(c.ghl_base_url, "http://127.0.0.1:9102");
  assert_string_equal(c.nowcerts_base_url, "http://127.0.0.1:9101/api");
  assert_string_equal(c.ghl_api_key, "sandbox-token");
  assert_false(c.ghl_webhook_verify);
  config_free(&c);
}

/* Each bad value fails with a message that starts with the variable name. */
static void expect_bad(const char *name, const char *value) {
  setenv(name, value, 1);
  struct config c;
  char err[256] = "";
  assert_int_equal(config_load(&c, write_env(""), false, err, sizeof err), -1);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s:", name);
  if (strncmp(err, prefix, strlen(prefix)) != 0)
    fail_msg("for %s=%s expected an error naming it, got '%s'", name, value, err);
  assert_null(strchr(err, '\n'));
  unsetenv(name);
}

static void test_bad_values(void **state) {
  (void)state;
  expect_bad("PORT", "abc");
  expect_bad("PORT", "70000");
  expect_bad("MAX_RETRIES", "-1");
  expect_bad("MAX_RETRIES", "2.5");
  expect_bad("RETRY_INITIAL_DELAY", "-1");
  expect_bad("RETRY_BACKOFF_FACTOR", "fast");
  expect_bad("LOG_LEVEL", "LOUD");
  expect_bad("MAPPINGS_DIR", "/nonexistent/mappings");
  expect_bad("WEBHOOK_WAIT_MS", "soon");
  expect_bad("GHL_WEBHOOK_VERIFY", "maybe");
  expect_bad("NOWCERTS_BASE_URL", "ftp://example.com");
  expect_bad("IDEMPOTENCY_TTL", "0");
  expect_bad("LOG_FORMAT", "xml");
  expect_bad("LOG_PII", "sometimes");
  expect_bad("LUA_EVENT_TIMEOUT_MS", "0");
}

static void test_partial_oauth_rejected(void **state) {
  (void)state;
  setenv("GHL_CLIENT_ID", "abc", 1);
  struct config c;
  char err[256] = "";
  assert_int_equal(config_load(&c, write_env(""), false, err, sizeof err), -1);
  assert_non_null(strstr(err, "GHL_"));
  unsetenv("GHL_CLIENT_ID");
}

/* Client id and secret without a refresh token wait for a Marketplace
 * install; a refresh token without the secret is still refused. */
static void test_oauth_without_refresh_token_accepted(void **state) {
  (void)state;
  struct config c;
  char err[256] = "";
  assert_int_equal(config_load(&c, write_env("GHL_CLIENT_ID=abc\nGHL_CLIENT_SECRET=def\n"
                                             "GHL_REDIRECT_URI=https://ncghl.example/oauth/callback\n"),
                               false, err, sizeof err),
                   0);
  assert_null(c.ghl_refresh_token);
  assert_string_equal(c.ghl_redirect_uri, "https://ncghl.example/oauth/callback");
  assert_non_null(strstr(c.ghl_oauth_scopes, "contacts.write"));
  assert_string_equal(c.ghl_marketplace_url, "https://marketplace.gohighlevel.com");
  config_free(&c);
  assert_int_equal(config_load(&c, write_env("GHL_CLIENT_ID=abc\nGHL_REFRESH_TOKEN=r\n"), false,
                               err, sizeof err),
                   -1);
  assert_non_null(strstr(err, "GHL_CLIENT_SECRET"));
  assert_int_equal(config_load(&c, write_env("GHL_REDIRECT_URI=not a url\n"), false, err,
                               sizeof err),
                   -1);
  assert_non_null(strstr(err, "GHL_REDIRECT_URI"));
}

static void test_missing_env_file(void **state) {
  (void)state;
  struct config c;
  char err[256] = "";
  assert_int_equal(config_load(&c, "/nonexistent/x.env", false, err, sizeof err), -1);
  assert_non_null(strstr(err, "--env"));
}

static void test_secret_names(void **state) {
  (void)state;
  assert_true(config_is_secret("NOWCERTS_PASSWORD"));
  assert_true(config_is_secret("GHL_API_KEY"));
  assert_true(config_is_secret("GHL_CLIENT_SECRET"));
  assert_true(config_is_secret("ADMIN_TOKEN"));
  assert_true(config_is_secret("GHL_REFRESH_TOKEN"));
  assert_false(config_is_secret("GHL_LOCATION_ID"));
  assert_false(config_is_secret("NOWCERTS_USERNAME"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
      cmocka_unit_test_setup_teardown(test_env_file_and_precedence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sandbox_forces_fakes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_logging_and_lua_event_limits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_partial_oauth_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oauth_without_refresh_token_accepted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_env_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_secret_names, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
