/* The preflight checks (see doctor.h).
 *
 * The checks run one after the other on the loop: the three GHL reads and
 * the NowCerts login are upstream calls (with the service's retries, rate
 * limit and tokens), everything that needs the mappings is asked of
 * lua/ncghl/doctor.lua in the runtime's state, and the rest reads the
 * configuration and the store. A check never stops the ones after it. */
#include "doctor.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <lua.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "httpc.h"
#include "json.h"
#include "log.h"
#include "lua_rt.h"
#include "poller.h"
#include "sandbox.h"
#include "store.h"
#include "tokens.h"
#include "upstream.h"
#include "url.h"

enum step {
  S_LINT,
  S_NOWCERTS,
  S_GHL_LOCATION,
  S_PIPELINES,
  S_CUSTOM_FIELDS,
  S_ROUTES,
  S_POLLER,
  S_STORE,
  S_PUBLIC_URL,
  S_END
};

struct doctor {
  struct event_base *base;
  const struct config *cfg;
  struct upstream *up;
  struct store *store;
  struct lrt *rt;
  doctor_done_cb done;
  void *ud;
  enum step step;
  bool ghl_ok; /* the token and location answered: the lists are worth reading */
  struct doctor_line *lines;
  size_t n, cap;
  int failures;
  struct event *kick;
};

static char *vfmt(const char *fmt, va_list ap) {
  struct buf b;
  buf_init(&b, 0);
  buf_vprintf(&b, fmt, ap);
  return buf_steal(&b);
}

static void add_line(struct doctor *d, bool ok, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_line(struct doctor *d, bool ok, const char *fix, const char *fmt, ...) {
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 16;
    struct doctor_line *nl = realloc(d->lines, cap * sizeof *nl);
    if (!nl)
      return;
    d->lines = nl;
    d->cap = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  char *text = vfmt(fmt, ap);
  va_end(ap);
  if (!text)
    return;
  /* "... is incorrect." then ". Fix:": one full stop, not two. */
  for (size_t n = strlen(text); !ok && n > 0 && (text[n - 1] == '.' || text[n - 1] == ' '); n--)
    text[n - 1] = '\0';
  struct doctor_line *l = &d->lines[d->n++];
  l->ok = ok;
  l->text = text;
  l->fix = !ok && fix ? strdup(fix) : NULL;
  if (!ok)
    d->failures++;
}

static void run_steps(struct doctor *d);

/* ---- checks answered by lua/ncghl/doctor.lua ---------------------------- */

/* Calls doctor.<fn>(body) and turns the lines it returns into ours. */
static void lua_lines(struct doctor *d, const char *fn, const char *body, size_t len) {
  if (!d->rt) {
    add_line(d, false, "fix the mappings (ncghl check says where)", "%s: the mappings did not load",
             fn);
    return;
  }
  lua_State *L = lrt_lua_state(d->rt);
  if (!L)
    return;
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "ncghl.doctor");
  if (lrt_pcall(d->rt, 1, 1) != LUA_OK || !lua_istable(L, -1)) {
    add_line(d, false, "check LUA_DIR", "ncghl.doctor: %s",
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "not a table");
    lua_settop(L, top);
    return;
  }
  lua_getfield(L, -1, fn);
  if (body)
    lua_pushlstring(L, body, len);
  if (lrt_pcall(d->rt, body ? 1 : 0, 1) != LUA_OK || !lua_istable(L, -1)) {
    add_line(d, false, "fix the mapping named in the message", "%s: %s", fn,
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "no list of lines");
    lua_settop(L, top);
    return;
  }
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_istable(L, -1)) {
      lua_getfield(L, -1, "ok");
      lua_getfield(L, -2, "text");
      lua_getfield(L, -3, "fix");
      bool ok = lua_toboolean(L, -3);
      const char *text = lua_tostring(L, -2);
      const char *fix = lua_tostring(L, -1);
      add_line(d, ok, fix, "%s", text ? text : "(a check without text)");
      lua_pop(L, 3);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, top);
}

/* ---- upstream checks ---------------------------------------------------- */

/* A base URL as a fix may show it: a password in its user-info masked
 * (doctor's lines go to a terminal and, from serve, to the log). */
static const char *shown_url(const char *url, char *out, size_t n) {
  url_display(url, out, n);
  return out;
}

static void ghl_fix(const struct doctor *d, int status, const char *error, char *out, size_t n) {
  char url[256];
  /* The token endpoint's refusals (tokens.c words them) have their own fix:
   * the location is not what is wrong. */
  if (error && strstr(error, "refused the refresh token"))
    snprintf(out, n,
             "GHL no longer accepts this sub-account's tokens (the app was uninstalled, or "
             "installed again elsewhere): install the app again (open /oauth/install on this "
             "service; docs/install.md)");
  else if (error && strstr(error, "refused the app's keys"))
    snprintf(out, n, "GHL refused the app's keys: check GHL_CLIENT_ID and GHL_CLIENT_SECRET");
  else if (status == 0 && d->up && up_ghl_oauth(d->up) && !tokens_has_grant(up_ghl_oauth(d->up)))
    snprintf(out, n,
             "GHL OAuth has no tokens yet: install the Marketplace app on the sub-account "
             "(open /oauth/install on this service; docs/install.md)");
  else if (status == 0 && error && strstr(error, "not configured"))
    snprintf(out, n,
             "set GHL_API_KEY to a Private Integration token of this sub-account (GHL Settings >"
             " Private Integrations)");
  else if (status == 0)
    snprintf(out, n, "GHL did not answer at GHL_BASE_URL (%s): check the address and the network",
             shown_url(d->cfg->ghl_base_url, url, sizeof url));
  else if (status == 404 && error && strstr(error, "Cannot "))
    snprintf(out, n,
             "GHL_BASE_URL (%s) has no such API: it is https://services.leadconnectorhq.com,"
             " without a path", shown_url(d->cfg->ghl_base_url, url, sizeof url));
  else if (status == 401)
    snprintf(out, n,
             "GHL refused GHL_API_KEY: create a Private Integration token for this sub-account "
             "(GHL Settings > Private Integrations) and set GHL_API_KEY to it");
  else
    snprintf(out, n,
             "GHL_LOCATION_ID %s is not a sub-account this token reaches: copy the sub-account's "
             "id from GHL (Settings > Business Profile)",
             d->cfg->ghl_location_id);
}

static void on_nowcerts(void *ud, const struct up_result *r) {
  struct doctor *d = ud;
  if (r->ok) {
    const char *uid = up_nowcerts_user_id(d->up);
    add_line(d, true, NULL, "NowCerts login as %s works (token user id %s)",
             d->cfg->nowcerts_username, uid && *uid ? uid : "not in the token answer");
  } else {
    bool login = r->error && strncmp(r->error, "token request", 13) == 0;
    char fix[512], url[256];
    if (r->status == 0)
      snprintf(fix, sizeof fix,
               "NowCerts did not answer at NOWCERTS_BASE_URL (%s): check the address and the network",
               shown_url(d->cfg->nowcerts_base_url, url, sizeof url));
    else if (login && r->status == 404)
      snprintf(fix, sizeof fix,
               "NOWCERTS_BASE_URL (%s) has no token endpoint: it ends in /api"
               " (https://api.nowcerts.com/api)",
               shown_url(d->cfg->nowcerts_base_url, url, sizeof url));
    else if (login)
      snprintf(fix, sizeof fix,
               "check NOWCERTS_USERNAME and NOWCERTS_PASSWORD (log in to NowCerts with them once)");
    else
      snprintf(fix, sizeof fix, "the user %s may lack the right to read insureds in NowCerts",
               d->cfg->nowcerts_username);
    add_line(d, false, fix, "NowCerts login as %s failed: %s", d->cfg->nowcerts_username,
             r->error ? r->error : "no answer");
  }
  d->step++;
  run_steps(d);
}

static void on_location(void *ud, const struct up_result *r) {
  struct doctor *d = ud;
  if (r->ok) {
    char err[128];
    struct json *root = json_parse(r->body, r->body_len, err, sizeof err);
    const struct json *loc = root ? json_get(root, "location") : NULL;
    if (!loc || json_type(loc) != JSON_OBJECT) {
      /* A 200 that is no location (a proxy's page, an error body) says
       * nothing about the token: not a pass. */
      char excerpt[120];
      size_t n = r->body_len < sizeof excerpt - 1 ? r->body_len : sizeof excerpt - 1;
      for (size_t i = 0; i < n; i++)
        excerpt[i] = (r->body[i] == '\n' || r->body[i] == '\r') ? ' ' : r->body[i];
      excerpt[n] = '\0';
      add_line(d, false,
               "check GHL_BASE_URL: it should be GHL's API (https://services.leadconnectorhq.com)",
               "GHL answered GET /locations/%s with HTTP %d but no location: %s",
               d->cfg->ghl_location_id, r->status, root ? "a JSON body without \"location\"" : excerpt);
      json_free(root);
    } else {
      const char *name = json_str(json_get(loc, "name"));
      add_line(d, true, NULL, "GHL token works for location %s (%s)", d->cfg->ghl_location_id,
               name ? name : "no name in the answer");
      json_free(root);
      d->ghl_ok = true;
    }
  } else {
    char fix[512];
    ghl_fix(d, r->status, r->error, fix, sizeof fix);
    add_line(d, false, fix, "GHL token and location %s: %s", d->cfg->ghl_location_id,
             r->error ? r->error : "no answer");
  }
  d->step++;
  run_steps(d);
}

static void on_pipelines(void *ud, const struct up_result *r) {
  struct doctor *d = ud;
  if (r->ok) {
    lua_lines(d, "pipelines", r->body, r->body_len);
  } else {
    char fix[512];
    ghl_fix(d, r->status, r->error, fix, sizeof fix);
    add_line(d, false, fix, "cannot read GHL's pipelines: %s", r->error ? r->error : "no answer");
  }
  d->step++;
  run_steps(d);
}

static void on_custom_fields(void *ud, const struct up_result *r) {
  struct doctor *d = ud;
  if (r->ok) {
    lua_lines(d, "custom_fields", r->body, r->body_len);
  } else {
    char fix[512];
    if (r->status == 401 || r->status == 403)
      snprintf(fix, sizeof fix, "give the token the locations/customFields.readonly scope");
    else
      ghl_fix(d, r->status, r->error, fix, sizeof fix);
    add_line(d, false, fix, "cannot read GHL's custom fields: %s", r->error ? r->error : "no answer");
  }
  d->step++;
  run_steps(d);
}

static bool set(const char *s) { return s && *s; }

/* Starts the step's call; false when the step ended without one. */
static bool start_call(struct doctor *d, enum up_service svc, const char *path, up_done_cb cb) {
  struct up_call call = {.service = svc, .method = "GET", .path = path};
  if (up_start(d->up, &call, NULL, cb, d) == 0)
    return true;
  add_line(d, false, "see the log", "cannot start the request GET %s", path);
  return false;
}

/* A location id goes into a path as it is: GHL's ids are letters and
 * digits, anything else is a mistake worth naming. */
static bool clean_id(const char *s) {
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          *s == '-' || *s == '_'))
      return false;
  return true;
}

/* ---- local checks ------------------------------------------------------- */

static void check_poller(struct doctor *d) {
  if (!poller_wanted(d->cfg)) {
    add_line(d, true, NULL, "poller off (%s): NowCerts changes arrive only by REST hooks or relays",
             d->cfg->nowcerts_poll_interval > 0 ? "no NowCerts credentials"
                                                : "NOWCERTS_POLL_INTERVAL=0");
    return;
  }
  if (!d->store) {
    add_line(d, false, "see the store check", "poller watermarks: the store is not open");
    return;
  }
  struct buf b;
  buf_init(&b, 0);
  buf_printf(&b, "poller every %g s; watermarks:", d->cfg->nowcerts_poll_interval);
  bool ahead = false;
  for (int l = 0; l < 2; l++) {
    char key[64];
    snprintf(key, sizeof key, "poller.watermark.%s", poller_list_name((enum poller_list)l));
    char *v = store_kv_get(d->store, key);
    double t;
    if (v && poller_parse_time(v, &t) == 0 && t > clock_wall() + POLLER_OVERLAP_SECONDS)
      ahead = true;
    buf_printf(&b, " %s %s%s", poller_list_name((enum poller_list)l),
               v ? v : "none yet (the first poll reads from its start on; earlier records: "
                       "ncghl backfill)",
               l == 0 ? "," : "");
    free(v);
  }
  if (ahead)
    add_line(d, false,
             "a NowCerts changeDate ahead of this machine's clock carried it there; the service "
             "reads from the clock on at its next cycle. Check both clocks, and bring the changes "
             "skipped meanwhile with `ncghl backfill --from nowcerts --since <when it was set>`",
             "%s: ahead of this machine's clock", b.p ? b.p : "poller");
  else
    add_line(d, true, NULL, "%s", b.p ? b.p : "poller");
  buf_free(&b);
}

static void check_store(struct doctor *d) {
  if (!d->store) {
    add_line(d, false,
             config_store_is_file(d->cfg)
                 ? "make DB_PATH's directory exist and writable by the service's user"
                 : "check STORE_URL: the server, the database, the user and its password",
             "store %s cannot be opened", d->cfg->store_label);
    return;
  }
  if (!store_writable(d->store)) {
    add_line(d, false,
             config_store_is_file(d->cfg)
                 ? "free disk space, or give the service's user write access to DB_PATH"
                 : "give STORE_URL's user write access to its schema, or free the server's disk",
             "store %s cannot be written", d->cfg->store_label);
    return;
  }
  add_line(d, true, NULL, "store %s is writable (schema version %d)", d->cfg->store_label,
           store_schema_version(d->store));
}

static void check_public_url(struct doctor *d) {
  const char *u = d->cfg->public_url;
  if (!set(u)) {
    add_line(d, true, NULL,
             "PUBLIC_URL unset: no REST hooks to register (the poller hears NowCerts' changes)");
    return;
  }
  size_t n = strlen(u);
  while (n > 0 && u[n - 1] == '/')
    n--;
  const char *host = strstr(u, "://");
  host = host ? host + 3 : u;
  if (strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost", 9) == 0 ||
      strncmp(host, "[::1]", 5) == 0) {
    add_line(d, false,
             "set PUBLIC_URL to the address NowCerts can reach from the internet (https://...)",
             "PUBLIC_URL %.*s is a loopback address: NowCerts cannot deliver REST hooks to it",
             (int)n, u);
    return;
  }
  add_line(d, true, NULL,
           "PUBLIC_URL: ncghl subscribe would register %.*s/api/v1/webhooks/nowcerts?hook=<event> "
           "for the insured, prospect, policy and quote events",
           (int)n, u);
}

/* ---- the sequence ------------------------------------------------------- */

static void run_steps(struct doctor *d) {
  const struct config *c = d->cfg;
  char path[512];
  while (d->step < S_END) {
    switch (d->step) {
    case S_LINT:
      lua_lines(d, "lint", NULL, 0);
      break;
    case S_NOWCERTS:
      if (!set(c->nowcerts_username) || !set(c->nowcerts_password)) {
        add_line(d, false, "set NOWCERTS_USERNAME and NOWCERTS_PASSWORD (a dedicated NowCerts user)",
                 "NowCerts login: no credentials");
        break;
      }
      if (start_call(d, UP_NOWCERTS, "/InsuredDetailList?$top=1", on_nowcerts))
        return;
      break;
    case S_GHL_LOCATION:
      if (!set(c->ghl_location_id) || !clean_id(c->ghl_location_id)) {
        add_line(d, false, "set GHL_LOCATION_ID to the sub-account's id (GHL Settings > Business Profile)",
                 "GHL location: GHL_LOCATION_ID is %s", set(c->ghl_location_id) ? "not an id" : "unset");
        break;
      }
      snprintf(path, sizeof path, "/locations/%s", c->ghl_location_id);
      if (start_call(d, UP_GHL, path, on_location))
        return;
      break;
    case S_PIPELINES:
      if (!d->ghl_ok) {
        add_line(d, false, "fix the GHL check above first",
                 "pipelines and stages not checked: GHL did not answer for the location");
        break;
      }
      snprintf(path, sizeof path, "/opportunities/pipelines?locationId=%s", c->ghl_location_id);
      if (start_call(d, UP_GHL, path, on_pipelines))
        return;
      break;
    case S_CUSTOM_FIELDS:
      if (!d->ghl_ok) {
        add_line(d, false, "fix the GHL check above first",
                 "custom fields not checked: GHL did not answer for the location");
        break;
      }
      snprintf(path, sizeof path, "/locations/%s/customFields?model=all", c->ghl_location_id);
      if (start_call(d, UP_GHL, path, on_custom_fields))
        return;
      break;
    case S_ROUTES:
      lua_lines(d, "routes", NULL, 0);
      break;
    case S_POLLER:
      check_poller(d);
      break;
    case S_STORE:
      check_store(d);
      break;
    case S_PUBLIC_URL:
      check_public_url(d);
      break;
    case S_END:
      break;
    }
    d->step++;
  }
  d->done(d->ud, d);
}

static void on_kick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  run_steps(arg);
}

struct doctor *doctor_start(struct event_base *base, const struct config *cfg, struct upstream *up,
                            struct store *store, struct lrt *rt, doctor_done_cb done, void *ud) {
  struct doctor *d = calloc(1, sizeof *d);
  if (!d)
    return NULL;
  *d = (struct doctor){.base = base, .cfg = cfg, .up = up, .store = store, .rt = rt,
                       .done = done, .ud = ud};
  /* Through the loop, so done is never called from inside doctor_start. */
  d->kick = evtimer_new(base, on_kick, d);
  struct timeval now = {0, 0};
  if (!d->kick || evtimer_add(d->kick, &now) != 0) {
    doctor_free(d);
    return NULL;
  }
  return d;
}

void doctor_free(struct doctor *d) {
  if (!d)
    return;
  for (size_t i = 0; i < d->n; i++) {
    free(d->lines[i].text);
    free(d->lines[i].fix);
  }
  free(d->lines);
  if (d->kick)
    event_free(d->kick);
  free(d);
}

const struct doctor_line *doctor_lines(const struct doctor *d, size_t *n) {
  *n = d->n;
  return d->lines;
}

int doctor_failures(const struct doctor *d) { return d->failures; }

/* ---- ncghl doctor ------------------------------------------------------- */

static void print_line(FILE *f, const struct doctor_line *l) {
  if (l->ok)
    fprintf(f, "✓ %s\n", l->text);
  else
    fprintf(f, "✗ %s. Fix: %s\n", l->text, l->fix ? l->fix : "see above");
}

static void on_cmd_done(void *ud, struct doctor *d) {
  (void)d;
  event_base_loopbreak(ud);
}

static int cmd_up_start(void *ud, const struct up_call *call, up_attempt_cb on_attempt,
                        up_done_cb done, void *done_ud) {
  return up_start(ud, call, on_attempt, done, done_ud);
}

int doctor_main(int argc, char **argv) {
  const char *env_file = NULL;
  bool sandbox = false;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--sandbox") == 0)
      sandbox = true;
    else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
      env_file = argv[++i];
    else {
      fprintf(stderr, "ncghl doctor: unknown option '%s'\nusage: ncghl doctor [--env FILE] [--sandbox]\n",
              argv[i]);
      return 2;
    }
  }
  struct config cfg;
  char err[1024];
  if (config_load(&cfg, env_file, sandbox, err, sizeof err) != 0) {
    fprintf(stderr, "ncghl: configuration error: %s\n", err);
    printf("✗ configuration: %s. Fix: correct that variable\n", err);
    return 1;
  }
  /* Warnings (a retry, a refused token) go to the log, not between the
   * lines: doctor's own output is the report. */
  if (log_init(cfg.log_level, cfg.log_file) != 0) {
    fprintf(stderr, "ncghl: configuration error: LOG_FILE: cannot open %s\n", cfg.log_file);
    config_free(&cfg);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  int rc = 1;
  pid_t fakes = -1;
  struct event_base *base = NULL;
  struct httpc *http = NULL;
  struct upstream *up = NULL;
  struct store *store = NULL;
  struct lrt *rt = NULL;
  struct doctor *d = NULL;
  int extra_failures = 0;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
    goto out;
  if (sandbox) {
    fakes = sandbox_start(&cfg, err, sizeof err);
    if (fakes < 0) {
      printf("✗ sandbox: %s. Fix: free SANDBOX_NOWCERTS_PORT and SANDBOX_GHL_PORT\n", err);
      goto out;
    }
  }
  base = event_base_new();
  http = base ? httpc_new(base, 16 * 1024 * 1024) : NULL;
  up = http ? up_new(base, &cfg, http) : NULL;
  if (!up) {
    printf("✗ cannot set up outbound HTTP (out of memory)\n");
    goto out;
  }
  store = store_open(config_store(&cfg), err, sizeof err);
  if (!store)
    log_error("%s: %s", config_store_var(&cfg), err); /* why the store check fails */
  /* GHL OAuth tokens (rotated or from a Marketplace install) live in the
   * store, as for serve and backfill: the seed alone may be used up. */
  up_set_store(up, store);
  struct lrt_host host = {base, &cfg, up, NULL, NULL, cmd_up_start, up, NULL, NULL, NULL};
  rt = lrt_new(&host, err, sizeof err);
  if (!rt) {
    printf("✗ mappings in %s do not load: %s. Fix: correct that file and line (ncghl check)\n",
           cfg.mappings_dir, err);
    extra_failures++;
  } else {
    printf("✓ mappings in %s load (version %s)\n", cfg.mappings_dir, lrt_version(rt));
  }
  fflush(stdout);
  d = doctor_start(base, &cfg, up, store, rt, on_cmd_done, base);
  if (!d)
    goto out;
  event_base_dispatch(base);
  size_t n;
  const struct doctor_line *lines = doctor_lines(d, &n);
  for (size_t i = 0; i < n; i++)
    print_line(stdout, &lines[i]);
  int failures = doctor_failures(d) + extra_failures;
  if (failures)
    printf("%d check%s failed\n", failures, failures == 1 ? "" : "s");
  else
    printf("all checks passed\n");
  rc = failures ? 1 : 0;
out:
  if (rt)
    lrt_free(rt);
  if (up)
    up_free(up);
  if (http)
    httpc_free(http);
  doctor_free(d);
  store_close(store);
  if (base)
    event_base_free(base);
  if (fakes > 0)
    sandbox_stop(fakes);
  curl_global_cleanup();
  config_free(&cfg);
  log_close();
  return rc;
}
