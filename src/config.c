/* Configuration is read once at start-up. Lookup order per variable: the
 * process environment, then the .env file, then the default. Every value is
 * validated here, so the rest of the code trusts struct config. */
#include "config.h"

#include <ctype.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "dirlist.h"
#include "log.h"
#include "tenant.h"
#include "store.h"
#include "url.h"

struct envfile {
  char **keys, **vals;
  size_t n;
};

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  char *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
    *--e = 0;
  return s;
}

/* KEY=VALUE lines; "export " prefixes, comments and matching quotes are
 * tolerated because people copy these files from shell scripts. */
static int envfile_read(struct envfile *f, const char *path, bool required, char *err,
                        size_t errlen) {
  FILE *fp = fopen(path, "r");
  if (!fp) {
    if (!required)
      return 0;
    snprintf(err, errlen, "--env: cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  char line[4096];
  int lineno = 0;
  while (fgets(line, sizeof line, fp)) {
    lineno++;
    char *s = trim(line);
    if (!*s || *s == '#')
      continue;
    if (strncmp(s, "export ", 7) == 0)
      s = trim(s + 7);
    char *eq = strchr(s, '=');
    if (!eq) {
      snprintf(err, errlen, "%s:%d: expected NAME=value", path, lineno);
      fclose(fp);
      return -1;
    }
    *eq = 0;
    char *k = trim(s), *v = trim(eq + 1);
    size_t vl = strlen(v);
    if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
      v[vl - 1] = 0;
      v++;
    } else {
      char *hash = strstr(v, " #");
      if (hash)
        *trim(hash) = 0, v = trim(v);
    }
    char **nk = realloc(f->keys, (f->n + 1) * sizeof *nk);
    if (nk)
      f->keys = nk;
    char **nv = realloc(f->vals, (f->n + 1) * sizeof *nv);
    if (nv)
      f->vals = nv;
    if (!nk || !nv) {
      fclose(fp);
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    f->keys[f->n] = strdup(k);
    f->vals[f->n] = strdup(v);
    f->n++;
  }
  fclose(fp);
  return 0;
}

static void envfile_free(struct envfile *f) {
  for (size_t i = 0; i < f->n; i++) {
    free(f->keys[i]);
    free(f->vals[i]);
  }
  free(f->keys);
  free(f->vals);
}

struct loader {
  struct envfile over; /* a tenant's file: read before everything else */
  struct envfile file;
  char *err;
  size_t errlen;
  int failed;
};

static const char *lookup(struct loader *ld, const char *name) {
  for (size_t i = ld->over.n; i-- > 0;)
    if (strcmp(ld->over.keys[i], name) == 0)
      return ld->over.vals[i];
  const char *v = getenv(name);
  if (v)
    return v;
  for (size_t i = ld->file.n; i-- > 0;)
    if (strcmp(ld->file.keys[i], name) == 0)
      return ld->file.vals[i];
  return NULL;
}

static void fail(struct loader *ld, const char *name, const char *why, const char *value) {
  if (ld->failed++)
    return; /* the first problem is the one reported */
  if (value)
    snprintf(ld->err, ld->errlen, "%s: %s (got '%.80s')", name, why, value);
  else
    snprintf(ld->err, ld->errlen, "%s: %s", name, why);
}

static char *get_str(struct loader *ld, const char *name, const char *def) {
  const char *v = lookup(ld, name);
  if (v && !*v)
    v = NULL; /* NAME= means unset, as in the source design's .env.example */
  v = v ? v : def;
  return v ? strdup(v) : NULL;
}

static double get_num(struct loader *ld, const char *name, double def, double min, double max,
                      bool integer) {
  const char *v = lookup(ld, name);
  if (!v || !*v)
    return def;
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  while (*end == ' ')
    end++;
  if (errno || end == v || *end || !isfinite(d)) {
    fail(ld, name, integer ? "not a whole number" : "not a number", v);
    return def;
  }
  if (integer && d != floor(d)) {
    fail(ld, name, "not a whole number", v);
    return def;
  }
  if (d < min || d > max) {
    char why[96];
    /* %.15g: whole bounds in full (1073741824, not 1.07374e+09). */
    if (max >= 1e15)
      snprintf(why, sizeof why, "must be at least %.15g", min);
    else
      snprintf(why, sizeof why, "must be between %.15g and %.15g", min, max);
    fail(ld, name, why, v);
    return def;
  }
  return d;
}

static bool get_bool(struct loader *ld, const char *name, bool def) {
  const char *v = lookup(ld, name);
  if (!v || !*v)
    return def;
  static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
  for (int i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0)
      return true;
    if (strcasecmp(v, no[i]) == 0)
      return false;
  }
  fail(ld, name, "expected true or false", v);
  return def;
}

static char *get_url(struct loader *ld, const char *name, const char *def) {
  char *u = get_str(ld, name, def);
  if (u && strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
    fail(ld, name, "must start with http:// or https://", u);
    return u;
  }
  size_t n = u ? strlen(u) : 0;
  while (n > 0 && u[n - 1] == '/')
    u[--n] = 0; /* paths are appended with their own leading '/' */
  return u;
}

static bool is_dir(const char *p) {
  struct stat st;
  return p && stat(p, &st) == 0 && S_ISDIR(st.st_mode) && access(p, R_OK | X_OK) == 0;
}

/* A directory from the variable; unset, the default relative to the working
 * directory, else the one beside the sources (so a build run from anywhere
 * still finds the shipped scripts). A directory named explicitly must exist. */
static char *get_dir(struct loader *ld, const char *name, const char *def) {
  const char *v = lookup(ld, name);
  if (v && *v) {
    if (!is_dir(v))
      fail(ld, name, "not a readable directory", v);
    return strdup(v);
  }
  if (is_dir(def))
    return strdup(def);
  char alt[PATH_MAX];
  snprintf(alt, sizeof alt, "%s/%s", NCGHL_SOURCE_DIR, def);
  if (is_dir(alt))
    return strdup(alt);
  fail(ld, name, "not a readable directory", def);
  return strdup(def);
}

/* Like get_dir, but an unset UI_DIR whose default is missing (an install
 * without the page) is not an error: /ui is then 404. */
static char *get_ui_dir(struct loader *ld) {
  const char *v = lookup(ld, "UI_DIR");
  if (v && *v)
    return get_dir(ld, "UI_DIR", "ui");
  if (is_dir("ui"))
    return strdup("ui");
  char alt[PATH_MAX];
  snprintf(alt, sizeof alt, "%s/ui", NCGHL_SOURCE_DIR);
  return is_dir(alt) ? strdup(alt) : NULL;
}

/* MAPPINGS_DEFAULTS_DIR: the shipped mappings, which an agency's
 * MAPPINGS_DIR overlays (docs/mapping-guide.md). By default they sit beside
 * the engine's library (<LUA_DIR>/../mappings, as in the repository and an
 * install under /usr/share/ncghl); none found means no defaults. */
static char *get_defaults_dir(struct loader *ld, const char *lua_dir) {
  const char *v = lookup(ld, "MAPPINGS_DEFAULTS_DIR");
  if (v && *v) {
    if (!is_dir(v))
      fail(ld, "MAPPINGS_DEFAULTS_DIR", "not a readable directory", v);
    return strdup(v);
  }
  char alt[PATH_MAX];
  const char *slash = lua_dir ? strrchr(lua_dir, '/') : NULL;
  if (slash)
    snprintf(alt, sizeof alt, "%.*s/mappings", (int)(slash - lua_dir), lua_dir);
  else
    snprintf(alt, sizeof alt, "mappings");
  if (is_dir(alt))
    return strdup(alt);
  snprintf(alt, sizeof alt, "%s/mappings", NCGHL_SOURCE_DIR);
  return is_dir(alt) ? strdup(alt) : NULL;
}

static bool is_file(const char *p) {
  struct stat st;
  return p && stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, R_OK) == 0;
}

/* Same lookup as get_dir, for a file (the shipped public keys). */
static char *get_file(struct loader *ld, const char *name, const char *def) {
  const char *v = lookup(ld, name);
  if (v && *v) {
    if (!is_file(v))
      fail(ld, name, "not a readable file", v);
    return strdup(v);
  }
  if (is_file(def))
    return strdup(def);
  char alt[PATH_MAX];
  snprintf(alt, sizeof alt, "%s/%s", NCGHL_SOURCE_DIR, def);
  return strdup(is_file(alt) ? alt : def);
}

bool config_is_secret(const char *name) {
  static const char *marks[] = {"PASSWORD", "SECRET", "TOKEN", "API_KEY"};
  for (size_t i = 0; i < sizeof marks / sizeof *marks; i++)
    if (strstr(name, marks[i]))
      return true;
  return false;
}

/* A store URL's password (user:password@, or ?password=) is a secret like
 * the others: no log line may carry it, whatever prints the URL. */
static void add_url_secret(void *ud, const char *p, size_t n) {
  (void)ud;
  char *pw = strndup(p, n);
  if (pw)
    log_add_secret(pw);
  free(pw);
}

/* A base URL's user-info password (a proxy's, a gateway's). */
static void add_userinfo_secret(const char *url) {
  const char *p;
  size_t n;
  if (url_password(url, &p, &n))
    add_url_secret(NULL, p, n);
}

/* The variables one agency may set in its tenant file: its accounts, its
 * limits, its mappings. Everything else is shared by the process (one
 * listener, one log, one store location, GHL's signing keys). */
static const char *const per_tenant[] = {
    "NOWCERTS_BASE_URL", "NOWCERTS_USERNAME", "NOWCERTS_PASSWORD", "GHL_BASE_URL", "GHL_API_KEY",
    "GHL_LOCATION_ID", "GHL_CLIENT_ID", "GHL_CLIENT_SECRET", "GHL_REFRESH_TOKEN",
    "NOWCERTS_WEBHOOK_SECRET", "NOWCERTS_POLL_INTERVAL", "NOWCERTS_DELETED_POLL_INTERVAL",
    "GHL_RATE_LIMIT", "MAX_RETRIES", "RETRY_BACKOFF_FACTOR", "RETRY_INITIAL_DELAY",
    "UPSTREAM_TIMEOUT", "DEFAULT_COUNTRY", "WEBHOOK_WAIT_MS", "MAPPINGS_DIR",
    "TOKEN_REFRESH_MARGIN", "IDEMPOTENCY_TTL", "EVENT_CONCURRENCY", "RETENTION_DAYS", "PUBLIC_URL",
    "LUA_MEMORY_MB", "LUA_INSTRUCTION_BUDGET", "LUA_EVENT_MEMORY_MB", "LUA_EVENT_TIMEOUT_MS",
    "DOCTOR_AT_START", NULL};

/* The process's own: a tenant file naming one is told where it belongs. */
static const char *const per_process[] = {
    "HOST", "PORT", "DEBUG", "LOG_LEVEL", "LOG_FILE", "LOG_FORMAT", "LOG_PII",
    "SANDBOX_NOWCERTS_PORT", "SANDBOX_GHL_PORT", "SANDBOX_DB_PATH", "DB_PATH", "STORE_URL",
    "LUA_DIR", "MAPPINGS_DEFAULTS_DIR", "MAX_BODY_BYTES", "RATE_LIMIT_PER_MINUTE", "ADMIN_TOKEN",
    "UI_DIR",
    "GHL_WEBHOOK_VERIFY", "GHL_WEBHOOK_ED25519_KEY", "GHL_WEBHOOK_RSA_KEY", "TENANTS_DIR", NULL};

static bool listed(const char *const *list, const char *name) {
  for (size_t i = 0; list[i]; i++)
    if (strcmp(list[i], name) == 0)
      return true;
  return false;
}

bool config_is_per_tenant(const char *name) { return listed(per_tenant, name); }

/* Read, but neither list's: the Marketplace app's settings. */
static const char *const app_settings[] = {"GHL_REDIRECT_URI", "GHL_OAUTH_SCOPES",
                                           "GHL_MARKETPLACE_URL", NULL};

/* Levenshtein distance, given up above 2: enough to tell a typo. */
static int near(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 40 || lb > 40 || (la > lb ? la - lb : lb - la) > 2)
    return 3;
  int row[41];
  for (size_t j = 0; j <= lb; j++)
    row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int diag = row[0], best = row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int up = row[j];
      int v = diag + (a[i - 1] != b[j - 1]);
      if (row[j - 1] + 1 < v)
        v = row[j - 1] + 1;
      if (up + 1 < v)
        v = up + 1;
      row[j] = v;
      diag = up;
      if (v < best)
        best = v;
    }
    if (best > 2)
      return 3;
  }
  return row[lb];
}

/* A name in an env file that ncghl does not read but is a typo away from
 * one it does: said, since the setting meant is otherwise silently unset
 * (names far from every setting are someone else's and left alone). */
static void warn_misspelt(const char *path, const struct envfile *f) {
  const char *const *lists[] = {per_tenant, per_process, app_settings};
  for (size_t i = 0; i < f->n; i++) {
    const char *k = f->keys[i], *best = NULL;
    if (listed(per_tenant, k) || listed(per_process, k) || listed(app_settings, k))
      continue;
    int d = 3;
    for (size_t l = 0; l < sizeof lists / sizeof *lists; l++)
      for (size_t j = 0; lists[l][j]; j++) {
        int n = near(k, lists[l][j]);
        if (n < d)
          d = n, best = lists[l][j];
      }
    if (best && strlen(k) > 5)
      log_warn("%s: %s is not a setting ncghl reads (did you mean %s?); it is ignored", path, k,
               best);
  }
}

static int load(struct config *c, const struct loader *ld0, const char *env_file, bool sandbox);

int config_load(struct config *c, const char *env_file, bool sandbox, char *err, size_t errlen) {
  struct loader ld = {.err = err, .errlen = errlen};
  if (load(c, &ld, env_file, sandbox) != 0)
    return -1;
  /* `ncghl <command> --tenant NAME` (main.c sets NCGHL_TENANT): the
   * command works on that tenant as `serve` runs it. */
  const char *name = getenv("NCGHL_TENANT");
  if (!name || !*name)
    return 0;
  if (strcmp(name, CONFIG_TENANT_NEEDED) == 0) {
    /* A command on one agency's store or accounts, without --tenant: with
     * tenants there is no such agency, and the process's settings name
     * none of theirs (its store would be a new, empty one). */
    if (!c->tenants_dir)
      return 0;
    struct buf names;
    buf_init(&names, 0);
    char **list = NULL;
    size_t n = 0;
    if (dirlist_read(c->tenants_dir, &list, &n) == 0) {
      for (size_t i = 0; i < n; i++) {
        size_t stem = tenant_file_stem(list[i]);
        if (stem)
          buf_printf(&names, "%s%.*s", names.len ? ", " : "", (int)stem, list[i]);
      }
      dirlist_free(list, n);
    }
    snprintf(err, errlen, "TENANTS_DIR is set (%s): name the tenant with --tenant NAME (%s)",
             c->tenants_dir, names.len ? names.p : "no tenant files there");
    buf_free(&names);
    config_free(c);
    return -1;
  }
  char why[1024];
  if (!c->tenants_dir) {
    snprintf(err, errlen, "--tenant %s: TENANTS_DIR is not set, so there are no tenants", name);
  } else if (!tenant_name_ok(name)) {
    snprintf(err, errlen, "--tenant %.60s: not a tenant name ([a-z0-9][a-z0-9_-]{0,39})", name);
  } else {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.env", c->tenants_dir, name);
    if (access(path, F_OK) != 0) {
      snprintf(err, errlen, "--tenant %s: no such tenant (%s does not exist)", name, path);
    } else {
      struct config t;
      char *env = c->env_file ? strdup(c->env_file) : NULL;
      int rc = config_load_tenant(&t, env, sandbox, name, path, why, sizeof why);
      free(env);
      if (rc == 0) {
        config_free(c);
        *c = t;
        return 0;
      }
      snprintf(err, errlen, "%s", why);
    }
  }
  config_free(c);
  return -1;
}

int config_load_tenant(struct config *c, const char *env_file, bool sandbox, const char *name,
                       const char *tenant_file, char *err, size_t errlen) {
  memset(c, 0, sizeof *c);
  struct loader ld = {.err = err, .errlen = errlen};
  char why[1024];
  if (sandbox) {
    /* The sandbox's accounts are its fakes', one location for everyone. */
    snprintf(err, errlen, "%s: tenants are not run with --sandbox (unset TENANTS_DIR)",
             tenant_file);
    return -1;
  }
  if (envfile_read(&ld.over, tenant_file, true, why, sizeof why) != 0) {
    envfile_free(&ld.over);
    snprintf(err, errlen, "%s", why);
    return -1;
  }
  warn_misspelt(tenant_file, &ld.over);
  /* A process variable in a tenant file would silently do nothing (or,
   * worse, half of something): say so, with the file and the name. */
  const char *bad = NULL, *what = NULL, *loc = NULL;
  for (size_t i = 0; i < ld.over.n && !bad; i++) {
    const char *k = ld.over.keys[i];
    if (strcmp(k, "GHL_LOCATION_ID") == 0 && *ld.over.vals[i])
      loc = ld.over.vals[i];
    if (config_is_per_tenant(k))
      continue;
    bad = k;
    what = listed(per_process, k)
               ? "is set for the whole process, not per tenant; set it in the main configuration"
               : "is not a tenant variable (docs/tenants.md lists them)";
  }
  if (bad || !loc) {
    if (bad)
      snprintf(err, errlen, "%s: %s %s", tenant_file, bad, what);
    else
      snprintf(err, errlen,
               "%s: GHL_LOCATION_ID: required in every tenant file (webhooks from GHL find their "
               "tenant by it)",
               tenant_file);
    envfile_free(&ld.over);
    return -1;
  }
  int rc = load(c, &ld, env_file, sandbox);
  if (rc != 0) {
    snprintf(why, sizeof why, "%s", err);
    snprintf(err, errlen, "%s: %s", tenant_file, why);
    return rc;
  }
  /* Its own store: a file beside DB_PATH's, or its own schema of the
   * STORE_URL database. */
  char *db = tenant_store_location(c->db_path, NULL, name);
  char *url = c->store_url ? tenant_store_location(c->db_path, c->store_url, name) : NULL;
  if (!db || (c->store_url && !url)) {
    free(db);
    free(url);
    config_free(c);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  free(c->db_path);
  c->db_path = db;
  if (url) {
    free(c->store_url);
    c->store_url = url;
  }
  store_display_name(config_store(c), c->store_label, sizeof c->store_label);
  return 0;
}

/* The one reading of every variable, for the process and for a tenant
 * alike (a tenant's file, if any, is already in ld->over). */
static int load(struct config *c, const struct loader *ld0, const char *env_file, bool sandbox) {
  struct loader ld = *ld0;
  char *err = ld.err;
  size_t errlen = ld.errlen;
  memset(c, 0, sizeof *c);
  if (envfile_read(&ld.file, env_file ? env_file : ".env", env_file != NULL, err, errlen) != 0) {
    envfile_free(&ld.file);
    envfile_free(&ld.over);
    return -1;
  }
  if (env_file || access(".env", R_OK) == 0)
    c->env_file = strdup(env_file ? env_file : ".env");
  warn_misspelt(env_file ? env_file : ".env", &ld.file);
  const double BIG = 1e18;
  c->sandbox = sandbox;
  c->host = get_str(&ld, "HOST", "127.0.0.1");
  c->port = (int)get_num(&ld, "PORT", 8001, 1, 65535, true);
  c->debug = get_bool(&ld, "DEBUG", false);
  char *lvl = get_str(&ld, "LOG_LEVEL", c->debug ? "DEBUG" : "INFO");
  c->log_level = log_parse_level(lvl);
  if (c->log_level < 0) {
    fail(&ld, "LOG_LEVEL", "expected DEBUG, INFO, WARNING or ERROR", lvl);
    c->log_level = LOGL_INFO;
  }
  free(lvl);
  c->log_file = get_str(&ld, "LOG_FILE", NULL);
  char *fmt = get_str(&ld, "LOG_FORMAT", "text");
  if (strcasecmp(fmt, "json") == 0)
    c->log_json = true;
  else if (strcasecmp(fmt, "text") != 0)
    fail(&ld, "LOG_FORMAT", "expected text or json", fmt);
  free(fmt);
  c->log_pii = get_bool(&ld, "LOG_PII", false);

  c->sandbox_nowcerts_port = (int)get_num(&ld, "SANDBOX_NOWCERTS_PORT", 9101, 1, 65535, true);
  c->sandbox_ghl_port = (int)get_num(&ld, "SANDBOX_GHL_PORT", 9102, 1, 65535, true);
  if (sandbox) {
    /* The sandbox never talks to a real upstream, whatever the environment
     * says: its credentials are the fakes'. */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/api", c->sandbox_nowcerts_port);
    c->nowcerts_base_url = strdup(url);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", c->sandbox_ghl_port);
    c->ghl_base_url = strdup(url);
    c->nowcerts_username = strdup("sandbox");
    c->nowcerts_password = strdup("sandbox-password");
    c->ghl_api_key = strdup("sandbox-token");
    c->ghl_location_id = strdup("sandbox-location");
  } else {
    c->nowcerts_base_url = get_url(&ld, "NOWCERTS_BASE_URL", "https://api.nowcerts.com/api");
    c->ghl_base_url = get_url(&ld, "GHL_BASE_URL", "https://services.leadconnectorhq.com");
    c->nowcerts_username = get_str(&ld, "NOWCERTS_USERNAME", NULL);
    c->nowcerts_password = get_str(&ld, "NOWCERTS_PASSWORD", NULL);
    c->ghl_api_key = get_str(&ld, "GHL_API_KEY", NULL);
    c->ghl_location_id = get_str(&ld, "GHL_LOCATION_ID", NULL);
    c->ghl_client_id = get_str(&ld, "GHL_CLIENT_ID", NULL);
    c->ghl_client_secret = get_str(&ld, "GHL_CLIENT_SECRET", NULL);
    c->ghl_refresh_token = get_str(&ld, "GHL_REFRESH_TOKEN", NULL);
  }
  c->ghl_redirect_uri = get_url(&ld, "GHL_REDIRECT_URI", NULL);
  c->ghl_oauth_scopes =
      get_str(&ld, "GHL_OAUTH_SCOPES",
              "contacts.readonly contacts.write opportunities.readonly opportunities.write "
              "locations.readonly locations/customFields.readonly");
  c->ghl_marketplace_url =
      get_url(&ld, "GHL_MARKETPLACE_URL", "https://marketplace.gohighlevel.com");

  c->max_retries = (int)get_num(&ld, "MAX_RETRIES", 3, 0, 100, true);
  c->retry_backoff_factor = get_num(&ld, "RETRY_BACKOFF_FACTOR", 2.0, 1.0, 100, false);
  c->retry_initial_delay = get_num(&ld, "RETRY_INITIAL_DELAY", 1.0, 0, 3600, false);
  c->upstream_timeout = get_num(&ld, "UPSTREAM_TIMEOUT", 10, 0.1, 3600, false);

  /* The sandbox keeps a store of its own: run in the real set-up's
   * directory, on the real store, it sent a real customer's waiting event
   * to its fake GHL and linked the insured to a contact that never was. */
  if (sandbox) {
    c->db_path = get_str(&ld, "SANDBOX_DB_PATH", "data/sandbox.db");
    c->store_url = NULL;
  } else {
    c->db_path = get_str(&ld, "DB_PATH", "data/ncghl.db");
    c->store_url = get_str(&ld, "STORE_URL", NULL);
  }
  if (c->store_url && !*c->store_url) {
    free(c->store_url);
    c->store_url = NULL;
  }
  if (c->store_url && !store_is_url(c->store_url))
    fail(&ld, "STORE_URL", "must be a postgresql:// or postgres:// URL (DB_PATH names a SQLite file)",
         NULL);
  store_display_name(config_store(c), c->store_label, sizeof c->store_label);
  c->mappings_dir = get_dir(&ld, "MAPPINGS_DIR", "mappings");
  c->lua_dir = get_dir(&ld, "LUA_DIR", "lua");
  c->mappings_defaults_dir = get_defaults_dir(&ld, c->lua_dir);
  c->doctor_at_start = get_bool(&ld, "DOCTOR_AT_START", true);
  c->token_refresh_margin = get_num(&ld, "TOKEN_REFRESH_MARGIN", 300, 0, BIG, false);
  c->idempotency_ttl = get_num(&ld, "IDEMPOTENCY_TTL", 86400, 1, BIG, false);
  c->webhook_wait_ms = (int)get_num(&ld, "WEBHOOK_WAIT_MS", 3000, 0, 600000, true);
  c->max_body_bytes = (long)get_num(&ld, "MAX_BODY_BYTES", 1048576, 64, 1 << 30, true);
  c->rate_limit_per_minute = (int)get_num(&ld, "RATE_LIMIT_PER_MINUTE", 100, 0, 1e9, true);
  c->ghl_rate_limit = (int)get_num(&ld, "GHL_RATE_LIMIT", 100, 0, 1e6, true);
  c->event_concurrency = (int)get_num(&ld, "EVENT_CONCURRENCY", 64, 1, 100000, true);
  c->admin_token = get_str(&ld, "ADMIN_TOKEN", NULL);
  c->ui_dir = get_ui_dir(&ld);
  c->nowcerts_webhook_secret = get_str(&ld, "NOWCERTS_WEBHOOK_SECRET", NULL);
  c->ghl_webhook_verify = get_bool(&ld, "GHL_WEBHOOK_VERIFY", !sandbox);
  c->ghl_webhook_ed25519_key =
      get_file(&ld, "GHL_WEBHOOK_ED25519_KEY", "keys/ghl-webhook-ed25519-x-ghl-signature.pem");
  c->ghl_webhook_rsa_key =
      get_file(&ld, "GHL_WEBHOOK_RSA_KEY", "keys/ghl-webhook-rsa4096-x-wh-signature.pem");
  c->nowcerts_poll_interval = get_num(&ld, "NOWCERTS_POLL_INTERVAL", 60, 0, BIG, false);
  c->nowcerts_deleted_poll_interval =
      get_num(&ld, "NOWCERTS_DELETED_POLL_INTERVAL", 900, 0, BIG, false);
  c->default_country = get_str(&ld, "DEFAULT_COUNTRY", "US");
  if (c->default_country && (strlen(c->default_country) != 2 || !isalpha((unsigned char)c->default_country[0]) ||
                             !isalpha((unsigned char)c->default_country[1])))
    fail(&ld, "DEFAULT_COUNTRY", "must be a two-letter country code such as US", c->default_country);
  c->retention_days = (int)get_num(&ld, "RETENTION_DAYS", 30, 0, 36500, true);
  c->public_url = get_url(&ld, "PUBLIC_URL", NULL);
  c->lua_memory_mb = (int)get_num(&ld, "LUA_MEMORY_MB", 64, 1, 65536, true);
  c->lua_instruction_budget =
      (long)get_num(&ld, "LUA_INSTRUCTION_BUDGET", 10000000, 1000, 1e15, true);
  /* An event's own share: a quarter of the state, so one runaway event
   * leaves room for the others. */
  c->lua_event_memory_mb = (int)get_num(&ld, "LUA_EVENT_MEMORY_MB",
                                        c->lua_memory_mb >= 4 ? c->lua_memory_mb / 4 : 1, 1,
                                        c->lua_memory_mb, true);
  c->lua_event_timeout_ms = (int)get_num(&ld, "LUA_EVENT_TIMEOUT_MS", 2000, 10, 3600000, true);

  /* Client id and secret alone are a deployment waiting for its
   * Marketplace install (docs/install.md); a refresh token needs both. */
  if (!ld.failed && (c->ghl_client_id || c->ghl_client_secret || c->ghl_refresh_token) &&
      !(c->ghl_client_id && c->ghl_client_secret))
    fail(&ld, c->ghl_client_id ? "GHL_CLIENT_SECRET" : "GHL_CLIENT_ID",
         "GHL OAuth needs GHL_CLIENT_ID and GHL_CLIENT_SECRET together (GHL_REFRESH_TOKEN "
         "is optional: a Marketplace install brings one)", NULL);

  const char *td = lookup(&ld, "TENANTS_DIR");
  if (td && *td)
    c->tenants_dir = get_dir(&ld, "TENANTS_DIR", td);

  envfile_free(&ld.file);
  envfile_free(&ld.over);
  /* Registered before anything can log, so no line ever carries them. */
  const char *secrets[] = {c->nowcerts_password, c->ghl_api_key, c->ghl_client_secret,
                           c->ghl_refresh_token, c->admin_token, c->nowcerts_webhook_secret};
  for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++)
    log_add_secret(secrets[i]);
  store_url_secrets(c->store_url, add_url_secret, NULL);
  /* A base URL may carry user:password@ too (a proxy's, a gateway's): every
   * request's log line names the URL. */
  const char *bases[] = {c->nowcerts_base_url, c->ghl_base_url, c->public_url};
  for (size_t i = 0; i < sizeof bases / sizeof *bases; i++)
    add_userinfo_secret(bases[i]);
  if (ld.failed) {
    config_free(c);
    return -1;
  }
  return 0;
}

const char *config_store(const struct config *c) {
  return c->store_url ? c->store_url : c->db_path;
}

bool config_store_is_file(const struct config *c) { return !c->store_url; }

const char *config_store_var(const struct config *c) { return c->store_url ? "STORE_URL" : "DB_PATH"; }

void config_free(struct config *c) {
  char **strs[] = {&c->host, &c->log_file, &c->nowcerts_base_url, &c->nowcerts_username,
                   &c->nowcerts_password, &c->ghl_base_url, &c->ghl_api_key, &c->ghl_location_id,
                   &c->ghl_client_id, &c->ghl_client_secret, &c->ghl_refresh_token, &c->ghl_redirect_uri,
                   &c->ghl_oauth_scopes, &c->ghl_marketplace_url, &c->db_path, &c->store_url,
                   &c->mappings_dir, &c->lua_dir, &c->mappings_defaults_dir, &c->admin_token, &c->ui_dir, &c->nowcerts_webhook_secret,
                   &c->ghl_webhook_ed25519_key, &c->ghl_webhook_rsa_key, &c->public_url,
                   &c->default_country, &c->tenants_dir, &c->env_file};
  for (size_t i = 0; i < sizeof strs / sizeof *strs; i++) {
    free(*strs[i]);
    *strs[i] = NULL;
  }
}

int config_load_for_command(struct config *c, const char *env_file, bool sandbox) {
  char err[1024];
  if (config_load(c, env_file, sandbox, err, sizeof err) != 0) {
    fprintf(stderr, "ncghl: configuration error: %s\n", err);
    return -1;
  }
  log_set_format(c->log_json);
  log_set_pii(c->log_pii);
  if (log_init(c->log_level, c->log_file) != 0) {
    fprintf(stderr, "ncghl: configuration error: LOG_FILE: cannot open %s\n", c->log_file);
    config_free(c);
    return -1;
  }
  return 0;
}
