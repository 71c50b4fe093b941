/* upstream: one logical call to NowCerts or GHL (see upstream.h).
 *
 * A call is a small state machine driven by three kinds of event: a token
 * arriving (tokens.c), an HTTP answer (httpc.c) and its own timer (a retry
 * delay, a rate-limit pause, or a result waiting to be delivered outside
 * up_start). Nothing here blocks: every wait is an evtimer or a callback.
 *
 *   attempt ─▶ token? ─(wait)─▶ rate limit? ─(timer)─▶ HTTP ─▶ classify
 *      ▲                                                          │
 *      └──── 401 once (fresh token) / retryable (backoff timer) ◀─┘
 */
#include "upstream.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "digest.h"
#include "httpc.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "pii.h"
#include "retry.h"
#include "store.h"
#include "tokens.h"

#define GHL_API_VERSION "2021-07-28"
/* A Retry-After longer than this is not waited out inside one run: the call
 * gives up (retryable) and the event goes to retry_wait, freeing its slot. */
#define RETRY_AFTER_MAX 60.0
/* GHL counts a location's requests as they arrive, in 10 s windows; ncghl
 * counts them when it lets one go, a little earlier (the loop, a database
 * round trip, the connection). Counted over 10 s exactly, a burst let go
 * just after its window ended could still land in GHL's previous one; the
 * half second more keeps every arrival of a window inside one of GHL's. */
#define GHL_RATE_WINDOW 10.5 /* seconds: GHL's burst window, and a margin */
/* How long room held for a write after its read (up_call.then_write) stays
 * kept: the write follows within milliseconds, unless the run waits on
 * NowCerts in between; unused, it goes back to the others. */
#define GHL_HOLD_SECONDS 5.0
#define ERROR_BODY_BYTES 300
#define DEFAULT_TIMEOUT 30.0 /* seconds, when the config has none */
#define RETRY_JITTER 0.1

enum call_state { CS_IDLE = 0, CS_TOKEN, CS_TIMER, CS_HTTP };

struct ucall {
  struct upstream *u;
  enum up_service svc;
  char *method, *url, *body, *content_type;
  size_t body_len;
  up_attempt_cb on_attempt;
  up_done_cb done;
  void *ud;

  enum call_state state;
  struct event *timer;
  char *token;       /* the token the attempt in flight carries (for a 401) */
  int attempts;      /* HTTP attempts made */
  int retries;       /* retries used, 401 retry excluded */
  bool auth_retried; /* the one 401 retry is spent */
  bool starting;     /* inside up_start: the result must wait for the loop */
  bool finished;     /* the result is final; the timer delivers it */
  bool once;         /* up_call.once: no re-send after an attempt that may have landed */
  bool then_write;   /* up_call.then_write */
  bool use_held;     /* up_call.use_held, for the first send only */
  bool held;         /* this call holds room for the write that follows */

  bool ok, retryable;
  int status;
  struct buf resp; /* last response body */
  char *error;

  struct ucall *prev, *next;
};

/* What a token observer needs to label its count. */
struct token_obs {
  struct upstream *u;
  enum up_service svc;
};

struct upstream {
  struct event_base *base;
  const struct config *cfg;
  struct httpc *http;
  struct tokens *tk[2]; /* by enum up_service; NULL: not configured */
  const char *missing[2]; /* why there are no tokens for that service */
  char *base_url[2];
  struct ratelimit ghl_rl;
  /* On a store several nodes share (PostgreSQL), GHL's limit per location
   * is counted there too, on a connection of its own that is never inside
   * the group commit's transaction; NULL on SQLite (one node). */
  struct store *shared_rl;
  char shared_rl_key[160];
  struct retry_policy policy;
  double timeout_s;
  struct ucall *calls;
  int active;
  uint64_t rng;
  /* NULL until up_set_metrics; the metric functions ignore NULL. */
  struct metric *m_requests, *m_duration, *m_retries, *m_tokens;
  struct store *store; /* GHL OAuth tokens kept across restarts; NULL: none */
  struct token_obs obs[2];
};

/* A token request handed to httpc for tokens.c. */
struct treq {
  tokens_reply_fn reply;
  void *req_ud;
};

const char *up_service_name(enum up_service s) {
  return s == UP_GHL ? "ghl" : s == UP_NOWCERTS ? "nowcerts" : "?";
}

int up_service_parse(const char *name) {
  if (!name)
    return -1;
  if (strcmp(name, "nowcerts") == 0)
    return UP_NOWCERTS;
  if (strcmp(name, "ghl") == 0)
    return UP_GHL;
  return -1;
}

/* xorshift64*: jitter only needs to spread retries apart, not be secret. */
static double rand01(struct upstream *u) {
  u->rng ^= u->rng >> 12;
  u->rng ^= u->rng << 25;
  u->rng ^= u->rng >> 27;
  return (double)((u->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static bool set(const char *s) { return s && *s; }

/* ---- the token transport ---------------------------------------------------- */

static void on_token_http(void *ud, const struct httpc_response *resp) {
  struct treq *t = ud;
  tokens_reply_fn reply = t->reply;
  void *req_ud = t->req_ud;
  free(t);
  const char *err = resp->error;
  if (resp->status == 0 && resp->timed_out)
    err = "timed out";
  reply(req_ud, resp->status, resp->body, resp->body_len, err);
}

static void *token_post(void *io_ud, const char *url, const char *form, size_t form_len,
                        tokens_reply_fn reply, void *req_ud) {
  struct upstream *u = io_ud;
  struct treq *t = malloc(sizeof *t);
  if (!t)
    return NULL;
  t->reply = reply;
  t->req_ud = req_ud;
  static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                        "Accept: application/json", NULL};
  struct httpc_request req = {.method = "POST", .url = url, .headers = headers, .body = form,
                              .body_len = form_len, .timeout_ms = (long)(u->timeout_s * 1000)};
  if (httpc_send(u->http, &req, on_token_http, t) != 0) {
    free(t);
    return NULL;
  }
  return t;
}

static void token_cancel(void *io_ud, void *request) {
  struct upstream *u = io_ud;
  httpc_cancel(u->http, request);
  free(request);
}

/* ---- construction ---------------------------------------------------------- */

static char *join_base(const char *base) {
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/')
    n--;
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, base, n);
    s[n] = '\0';
  }
  return s;
}

struct upstream *up_new(struct event_base *base, const struct config *cfg, struct httpc *http) {
  if (!base || !cfg || !http)
    return NULL;
  struct upstream *u = calloc(1, sizeof *u);
  if (!u)
    return NULL;
  u->base = base;
  u->cfg = cfg;
  u->http = http;
  u->timeout_s = cfg->upstream_timeout > 0 ? cfg->upstream_timeout : DEFAULT_TIMEOUT;
  u->policy.max_retries = cfg->max_retries > 0 ? cfg->max_retries : 0;
  u->policy.initial_delay = cfg->retry_initial_delay >= 0 ? cfg->retry_initial_delay : 0;
  u->policy.factor = cfg->retry_backoff_factor > 0 ? cfg->retry_backoff_factor : 1;
  u->policy.jitter = RETRY_JITTER;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  u->rng = ((uint64_t)ts.tv_sec * 1000000007ULL) ^ (uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)u;
  if (!u->rng)
    u->rng = 0x9E3779B97F4A7C15ULL;

  u->base_url[UP_NOWCERTS] = join_base(set(cfg->nowcerts_base_url) ? cfg->nowcerts_base_url : "");
  u->base_url[UP_GHL] = join_base(set(cfg->ghl_base_url) ? cfg->ghl_base_url : "");
  if (!u->base_url[UP_NOWCERTS] || !u->base_url[UP_GHL] ||
      ratelimit_init(&u->ghl_rl, cfg->ghl_rate_limit, GHL_RATE_WINDOW) != 0) {
    up_free(u);
    return NULL;
  }

  if (cfg->ghl_rate_limit > 0 && store_is_url(config_store(cfg))) {
    char err[256];
    u->shared_rl = store_open(config_store(cfg), err, sizeof err);
    if (!u->shared_rl)
      log_warn("upstream: GHL's rate limit is counted by this node only: %s", err);
    else
      store_set_busy_timeout(u->shared_rl, 1000);
    snprintf(u->shared_rl_key, sizeof u->shared_rl_key, "ghl:%s",
             set(cfg->ghl_location_id) ? cfg->ghl_location_id : "");
  }

  struct tokens_io io = {.post = token_post, .cancel = token_cancel, .io_ud = u};
  if (set(cfg->nowcerts_username) && set(cfg->nowcerts_password) && set(cfg->nowcerts_base_url)) {
    struct tokens_params p = {.kind = TOKENS_NOWCERTS,
                              .base_url = cfg->nowcerts_base_url,
                              .username = cfg->nowcerts_username,
                              .password = cfg->nowcerts_password,
                              .refresh_margin = cfg->token_refresh_margin};
    if (!(u->tk[UP_NOWCERTS] = tokens_new(&p, &io))) {
      up_free(u);
      return NULL;
    }
  } else {
    u->missing[UP_NOWCERTS] =
        "NowCerts credentials not configured (NOWCERTS_USERNAME, NOWCERTS_PASSWORD)";
  }
  /* Client id and secret make GHL OAuth, even before there is a refresh
   * token: a Marketplace install (install.c) brings the first pair. */
  if (set(cfg->ghl_client_id) && set(cfg->ghl_client_secret) && set(cfg->ghl_base_url)) {
    struct tokens_params p = {.kind = TOKENS_GHL_OAUTH,
                              .base_url = cfg->ghl_base_url,
                              .client_id = cfg->ghl_client_id,
                              .client_secret = cfg->ghl_client_secret,
                              .refresh_token = cfg->ghl_refresh_token,
                              .static_token = cfg->ghl_api_key,
                              .refresh_margin = cfg->token_refresh_margin};
    u->tk[UP_GHL] = tokens_new(&p, &io);
  } else if (set(cfg->ghl_api_key)) {
    struct tokens_params p = {.kind = TOKENS_GHL_STATIC, .static_token = cfg->ghl_api_key};
    u->tk[UP_GHL] = tokens_new(&p, &io);
  } else {
    u->missing[UP_GHL] = "GHL token not configured (GHL_API_KEY)";
  }
  if (!u->tk[UP_GHL] && !u->missing[UP_GHL]) {
    up_free(u);
    return NULL;
  }
  return u;
}

static void call_free(struct ucall *c) {
  if (c->timer)
    event_free(c->timer);
  free(c->method);
  free(c->url);
  if (c->body)
    memset(c->body, 0, c->body_len);
  free(c->body);
  free(c->content_type);
  free(c->token);
  buf_free(&c->resp);
  free(c->error);
  free(c);
}

void up_free(struct upstream *u) {
  if (!u)
    return;
  /* Tokens first: their waiters point at calls, their requests at httpc. */
  for (int i = 0; i < 2; i++) {
    tokens_free(u->tk[i]);
    u->tk[i] = NULL;
  }
  struct ucall *c;
  while ((c = u->calls) != NULL) {
    u->calls = c->next;
    if (c->state == CS_HTTP)
      httpc_cancel(u->http, c);
    call_free(c);
  }
  u->active = 0;
  ratelimit_free(&u->ghl_rl);
  store_close(u->shared_rl);
  free(u->base_url[0]);
  free(u->base_url[1]);
  free(u);
}

const char *up_nowcerts_user_id(const struct upstream *u) {
  return u && u->tk[UP_NOWCERTS] ? tokens_user_id(u->tk[UP_NOWCERTS]) : NULL;
}

struct tokens *up_tokens(struct upstream *u, enum up_service svc) {
  return u && (svc == UP_NOWCERTS || svc == UP_GHL) ? u->tk[svc] : NULL;
}

int up_active(const struct upstream *u) { return u ? u->active : 0; }

static void on_token_result(void *ud, bool ok) {
  struct token_obs *o = ud;
  metric_inc(o->u->m_tokens, METRIC_LABELS(up_service_name(o->svc), ok ? "ok" : "error"));
}

/* ---- GHL OAuth tokens in the store ---------------------------------------- */

#define OAUTH_KV_KEY "ghl_oauth"

/* Appends s as a JSON string (tokens are printable ASCII, but escape what
 * JSON needs anyway). */
static void json_string_to(struct buf *b, const char *s) {
  buf_append(b, "\"", 1);
  for (; s && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      buf_printf(b, "\\%c", ch);
    else if (ch < 0x20)
      buf_printf(b, "\\u%04x", ch);
    else
      buf_append(b, (const char *)&ch, 1);
  }
  buf_append(b, "\"", 1);
}

/* Which configured seed the stored pair grew from: a changed
 * GHL_REFRESH_TOKEN wins over what an earlier run stored. Without one (a
 * deployment installed from the Marketplace) the seed is the empty string. */
static void seed_digest(const struct upstream *u, char *out) {
  const char *seed = u->cfg->ghl_refresh_token ? u->cfg->ghl_refresh_token : "";
  digest_sha256_hex(seed, strlen(seed), out);
}

static int save_oauth(void *ud, const char *refresh, const char *access, double lifetime) {
  struct upstream *u = ud;
  if (!u->store)
    return -1;
  char seed[DIGEST_HEX_LEN + 1];
  seed_digest(u, seed);
  struct buf b;
  buf_init(&b, 0);
  buf_printf(&b, "{\"seed\":");
  json_string_to(&b, seed);
  buf_printf(&b, ",\"refresh_token\":");
  json_string_to(&b, refresh);
  buf_printf(&b, ",\"access_token\":");
  json_string_to(&b, access ? access : "");
  buf_printf(&b, ",\"expires_at\":%.0f}", clock_wall() + lifetime);
  /* The refresh token GHL just issued is the only one that will work: a
   * failure to keep it is worth an error line (the token itself never is). */
  int rc = b.p && store_kv_put(u->store, OAUTH_KV_KEY, b.p) == 0 ? 0 : -1;
  if (rc != 0)
    log_error("tokens: could not store the rotated GHL refresh token; a restart will need "
              "the newest one in GHL_REFRESH_TOKEN");
  if (b.p)
    memset(b.p, 0, b.len);
  buf_free(&b);
  return rc;
}

void up_set_store(struct upstream *u, struct store *s) {
  struct tokens *tk = u ? u->tk[UP_GHL] : NULL;
  if (!tk || !s || !tokens_can_renew(tk))
    return;
  u->store = s;
  tokens_set_saver(tk, save_oauth, u);
  char *v = store_kv_get(s, OAUTH_KV_KEY);
  if (!v)
    return;
  char err[64];
  struct json *root = json_parse(v, strlen(v), err, sizeof err);
  char seed[DIGEST_HEX_LEN + 1];
  seed_digest(u, seed);
  const char *stored_seed = root ? json_str(json_get(root, "seed")) : NULL;
  const char *refresh = root ? json_str(json_get(root, "refresh_token")) : NULL;
  const char *access = root ? json_str(json_get(root, "access_token")) : NULL;
  const struct json *exp = root ? json_get(root, "expires_at") : NULL;
  double left = exp && json_type(exp) == JSON_NUMBER ? json_num(exp) - clock_wall() : 0;
  if (!stored_seed || !refresh) {
    log_warn("tokens: the stored GHL OAuth tokens are unreadable; using GHL_REFRESH_TOKEN");
  } else if (strcmp(stored_seed, seed) != 0) {
    log_info("tokens: GHL_REFRESH_TOKEN changed since the tokens were stored; using it");
  } else if (tokens_restore(tk, refresh, access, left, clock_mono()) == 0) {
    log_info("tokens: using the GHL OAuth tokens stored by an earlier run%s",
             left > 0 ? "" : " (the access token has expired: refreshing first)");
  }
  json_free(root);
  memset(v, 0, strlen(v));
  free(v);
}

struct tokens *up_ghl_oauth(struct upstream *u) {
  struct tokens *tk = u ? u->tk[UP_GHL] : NULL;
  return tk && tokens_can_renew(tk) ? tk : NULL;
}

void up_set_metrics(struct upstream *u, struct metrics *m) {
  if (!u || !m)
    return;
  u->m_requests = metrics_counter(m, "ncghl_upstream_requests_total",
                                  "HTTP attempts to NowCerts and GHL, by HTTP status (0: no answer).",
                                  METRIC_LABELS("service", "status"));
  u->m_duration = metrics_histogram(m, "ncghl_upstream_duration_seconds",
                                    "Time of one HTTP attempt to NowCerts or GHL.",
                                    METRIC_LABELS("service"), metrics_upstream_buckets,
                                    metrics_upstream_nbuckets);
  u->m_retries = metrics_counter(m, "ncghl_retries_total",
                                 "Upstream calls tried again after a 5xx, 429 or no answer.",
                                 METRIC_LABELS("service"));
  u->m_tokens = metrics_counter(m, "ncghl_token_refreshes_total",
                                "Token requests (NowCerts login or refresh, GHL OAuth refresh).",
                                METRIC_LABELS("service", "result"));
  for (int i = 0; i < 2; i++) {
    const char *svc = up_service_name((enum up_service)i);
    /* Zero series exist from the start, so rate() and alerts see them. */
    metric_add(u->m_retries, METRIC_LABELS(svc), 0);
    u->obs[i].u = u;
    u->obs[i].svc = (enum up_service)i;
    if (u->tk[i] && tokens_can_renew(u->tk[i])) {
      metric_add(u->m_tokens, METRIC_LABELS(svc, "ok"), 0);
      metric_add(u->m_tokens, METRIC_LABELS(svc, "error"), 0);
      tokens_set_observer(u->tk[i], on_token_result, &u->obs[i]);
    }
  }
}

/* ---- one call --------------------------------------------------------------- */

static void attempt(struct ucall *c);

static void deliver(struct ucall *c) {
  struct upstream *u = c->u;
  if (c->prev)
    c->prev->next = c->next;
  else
    u->calls = c->next;
  if (c->next)
    c->next->prev = c->prev;
  u->active--;
  struct up_result r = {
      .ok = c->ok,
      .retryable = !c->ok && c->retryable,
      .status = c->status,
      .body = c->resp.p ? c->resp.p : "",
      .body_len = c->resp.len,
      .error = c->ok ? NULL : (c->error ? c->error : "failed"),
      .attempts = c->attempts,
      .held = c->held,
  };
  /* c is unlinked: the callback may start calls or even free u. */
  c->done(c->ud, &r);
  call_free(c);
}

static void arm(struct ucall *c, double seconds) {
  if (seconds < 0)
    seconds = 0;
  struct timeval tv;
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  c->state = CS_TIMER;
  evtimer_add(c->timer, &tv);
}

static void finish(struct ucall *c) {
  c->finished = true;
  c->state = CS_IDLE;
  if (c->starting)
    arm(c, 0); /* up_start promised never to call back from inside */
  else
    deliver(c);
}

static void set_error(struct ucall *c, const char *msg) {
  free(c->error);
  c->error = msg ? strdup(msg) : NULL;
}

/* A failed attempt (or token request): retry when allowed, else the end. */
static void after_failure(struct ucall *c, double retry_after) {
  struct upstream *u = c->u;
  if (c->retryable && retry_after > RETRY_AFTER_MAX)
    log_warn("upstream: %s %s %s: Retry-After %.0f s is too long to wait in this run",
             up_service_name(c->svc), c->method, c->url, retry_after);
  if (c->retryable && retry_after <= RETRY_AFTER_MAX && c->retries < u->policy.max_retries) {
    double d = retry_delay(&u->policy, c->retries, retry_after, rand01(u));
    c->retries++;
    metric_inc(u->m_retries, METRIC_LABELS(up_service_name(c->svc)));
    log_warn("upstream: %s %s %s: status %d; retry %d/%d in %.2f s", up_service_name(c->svc),
             c->method, c->url, c->status, c->retries, u->policy.max_retries, d);
    arm(c, d);
    return;
  }
  finish(c);
}

static void on_call_timer(evutil_socket_t fd, short what, void *arg) {
  struct ucall *c = arg;
  c->state = CS_IDLE;
  if (c->finished)
    deliver(c);
  else
    attempt(c);
}

/* Makes s one line: control bytes (a body's newlines) become spaces. */
static void one_line(char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      *s = ' ';
}

static bool contains(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (hay[i] == needle[0] && memcmp(hay + i, needle, n) == 0)
      return true;
  return false;
}

/* NowCerts answers many failures with HTTP 200 and {"status":0,"message"}.
 * Returns true (and the message) for such a body. */
static bool nowcerts_status0(const char *body, size_t len, char *msg, size_t msglen) {
  const char *p = body;
  while (p < body + len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
    p++;
  /* Only objects can carry it; skip parsing anything that cannot. */
  if (p == body + len || *p != '{' || !contains(body, len, "\"status\""))
    return false;
  char err[64];
  struct json *root = json_parse(body, len, err, sizeof err);
  if (!root)
    return false;
  const struct json *st = json_get(root, "status");
  bool failed = st && json_type(st) == JSON_NUMBER && json_num(st) == 0;
  if (failed) {
    const char *m = json_str(json_get(root, "message"));
    snprintf(msg, msglen, "%s", m ? m : "");
  }
  json_free(root);
  return failed;
}

/* The first UP_EXCERPT_MAX bytes of a body with personal data masked:
 * what an attempt's stored request and answer may show. NULL for no body,
 * and when out of memory (the excerpt is then left out, never unmasked). */
#define UP_EXCERPT_MAX 4096
static char *masked_excerpt(const char *p, size_t len, size_t *out_len) {
  *out_len = 0;
  if (!p)
    return NULL;
  size_t n = len > UP_EXCERPT_MAX ? UP_EXCERPT_MAX : len;
  size_t cap = 2 * n + 16; /* a short name can grow when masked ("Al" -> "A***") */
  char *out = malloc(cap);
  if (out)
    *out_len = pii_mask(p, n, out, cap);
  return out;
}

static void on_http(void *ud, const struct httpc_response *resp) {
  struct ucall *c = ud;
  struct upstream *u = c->u;
  c->state = CS_IDLE;
  c->attempts++;
  c->status = resp->status;
  buf_reset(&c->resp);
  if (resp->body_len && buf_append(&c->resp, resp->body, resp->body_len) != 0)
    log_warn("upstream: out of memory keeping a response body");

  if (c->svc == UP_GHL) {
    double now = clock_mono();
    ratelimit_observe(&u->ghl_rl, resp->ratelimit_remaining, resp->ratelimit_interval_ms, now);
    /* A 429 holds back every GHL call, not just this one. */
    if (resp->status == 429)
      ratelimit_observe(&u->ghl_rl, 0,
                        resp->retry_after > 0 ? (long)(resp->retry_after * 1000) : -1, now);
  }

  char msg[ERROR_BODY_BYTES + 96];
  c->ok = false;
  if (resp->status == 0) {
    if (resp->timed_out)
      snprintf(msg, sizeof msg, "timeout after %g s", u->timeout_s);
    else
      snprintf(msg, sizeof msg, "connection error: %s", resp->error ? resp->error : "no answer");
    c->retryable = true;
  } else if (resp->status >= 200 && resp->status < 300) {
    char m[ERROR_BODY_BYTES + 1];
    if (c->svc == UP_NOWCERTS && nowcerts_status0(resp->body, resp->body_len, m, sizeof m)) {
      snprintf(msg, sizeof msg, "status 0: %s", m);
      c->retryable = false;
    } else {
      c->ok = true;
    }
  } else {
    int n = resp->body_len > ERROR_BODY_BYTES ? ERROR_BODY_BYTES : (int)resp->body_len;
    snprintf(msg, sizeof msg, "HTTP %d: %.*s", resp->status, n, resp->body);
    c->retryable = retry_is_retryable(resp->status);
  }
  if (!c->ok)
    one_line(msg);
  set_error(c, c->ok ? NULL : msg);

  if (c->on_attempt) {
    /* Attempts are stored for people to read: personal data in an OData
     * filter or an error body is masked unless LOG_PII says otherwise. */
    bool mask = !u->cfg->log_pii;
    char *url = mask ? pii_mask_dup(c->url) : NULL;
    char *error = mask && c->error ? pii_mask_dup(c->error) : NULL;
    struct up_attempt a = {.service = c->svc, .method = c->method, .url = url ? url : c->url,
                           .status = resp->status, .error = error ? error : c->error,
                           .duration_ms = resp->duration_ms};
    /* The bodies too, for an event's story in /ui, masked the same way. */
    size_t req_n = c->body ? c->body_len : 0, ans_n = resp->body ? resp->body_len : 0;
    char *req = mask ? masked_excerpt(c->body, req_n, &req_n) : NULL;
    char *ans = mask ? masked_excerpt(resp->body, ans_n, &ans_n) : NULL;
    a.request = mask ? req : c->body;
    a.request_len = a.request ? req_n : 0;
    a.answer = mask ? ans : resp->body;
    a.answer_len = a.answer ? ans_n : 0;
    c->on_attempt(c->ud, &a);
    free(url);
    free(error);
    free(req);
    free(ans);
  }
  log_debug("upstream: %s %s %s -> %d (%.1f ms)", up_service_name(c->svc), c->method, c->url,
            resp->status, resp->duration_ms);
  if (u->m_requests) {
    char code[16];
    snprintf(code, sizeof code, "%d", resp->status);
    metric_inc(u->m_requests, METRIC_LABELS(up_service_name(c->svc), code));
    metric_observe(u->m_duration, METRIC_LABELS(up_service_name(c->svc)),
                   resp->duration_ms / 1000.0);
  }

  if (c->ok) {
    finish(c);
    return;
  }
  struct tokens *tk = u->tk[c->svc];
  if (resp->status == 401 && !c->auth_retried && tk && tokens_invalid(tk, c->token)) {
    /* The token may have expired early or been revoked: renew once and
     * try again, outside the retry budget (the call itself is not at fault). */
    c->auth_retried = true;
    log_info("upstream: %s answered 401; renewing the token and retrying once",
             up_service_name(c->svc));
    attempt(c);
    return;
  }
  if (c->once && resp->status == 0) {
    finish(c); /* no answer: it may have landed; the caller searches first */
    return;
  }
  after_failure(c, resp->retry_after);
}

static void send_with(struct ucall *c, const char *token) {
  struct upstream *u = c->u;
  if (c->svc == UP_GHL) {
    /* The store's window counts every node's sends; it is asked only when
     * this node's own window has room, and this node counts a send only
     * once the store let it go (a refused try counted here would keep the
     * node's own window full of sends that never happened). When the
     * store cannot be asked (the database is away), the node's own window
     * still holds. */
    double wait = 0, now = clock_mono();
    bool pair = c->then_write && !c->held; /* a read that holds room for its write */
    bool held = c->use_held;               /* a write on the room held for it */
    if (u->shared_rl && !held) {
      /* A pair's write is counted in the store at its read: room held
       * across the nodes too. A second take refused after the first took
       * leaves one send counted that never happens: the safe side. */
      int want = pair ? 2 : 1;
      wait = ratelimit_peek_n(&u->ghl_rl, now, want);
      for (int i = 0; i < want && wait <= 0; i++)
        if (store_rate_take(u->shared_rl, u->shared_rl_key, u->cfg->ghl_rate_limit,
                            GHL_RATE_WINDOW, clock_wall(), &wait) != 0) {
          wait = 0;
          break;
        }
    }
    if (wait <= 0) {
      if (held) {
        wait = ratelimit_take_held(&u->ghl_rl, now);
        c->use_held = false; /* a retry waits as any send does */
      } else if (pair) {
        wait = ratelimit_take_pair(&u->ghl_rl, now, GHL_HOLD_SECONDS, &c->held);
      } else {
        wait = ratelimit_take(&u->ghl_rl, now);
      }
    }
    if (wait > 0) {
      log_debug("upstream: ghl rate limit: %s %s waits %.2f s", c->method, c->url, wait);
      arm(c, wait);
      return;
    }
  }
  char *tok = strdup(token);
  size_t alen = strlen(token) + sizeof "Authorization: Bearer ";
  char *auth = malloc(alen);
  char ctype[160];
  const char *headers[6];
  int n = 0;
  if (!tok || !auth) {
    free(tok);
    free(auth);
    c->status = 0;
    c->retryable = true;
    set_error(c, "connection error: out of memory");
    after_failure(c, -1);
    return;
  }
  free(c->token);
  c->token = tok;
  snprintf(auth, alen, "Authorization: Bearer %s", token);
  headers[n++] = auth;
  headers[n++] = "Accept: application/json";
  if (c->svc == UP_GHL)
    headers[n++] = "Version: " GHL_API_VERSION;
  if (c->body) {
    snprintf(ctype, sizeof ctype, "Content-Type: %s",
             c->content_type ? c->content_type : "application/json");
    headers[n++] = ctype;
  }
  headers[n] = NULL;
  struct httpc_request req = {.method = c->method, .url = c->url, .headers = headers,
                              .body = c->body, .body_len = c->body_len,
                              .timeout_ms = (long)(u->timeout_s * 1000),
                              .no_resend = c->once};
  int rc = httpc_send(u->http, &req, on_http, c);
  memset(auth, 0, alen);
  free(auth);
  if (rc != 0) {
    c->status = 0;
    c->retryable = true;
    set_error(c, "connection error: request could not be queued");
    after_failure(c, -1);
    return;
  }
  c->state = CS_HTTP;
}

static void on_token(void *ud, const char *token, int status, const char *error) {
  struct ucall *c = ud;
  c->state = CS_IDLE;
  if (token) {
    send_with(c, token);
    return;
  }
  /* Not an HTTP attempt of this call, but its failure is the call's. A
   * token endpoint that is down, slow or answers garbage (even with a 2xx)
   * delays the event (SPEC 11). So does GHL refusing the refresh token
   * (every GHL token request is an OAuth refresh): after an uninstall or an
   * install elsewhere, an install brings new tokens without a restart
   * (tokens_install), and the event should be there to use them. Only
   * NowCerts refusing its password login is final: that needs a new .env. */
  c->status = status;
  c->retryable = c->svc == UP_GHL || retry_is_retryable(status) || status < 400 || status > 499;
  set_error(c, error ? error : "token request failed");
  after_failure(c, -1);
}

static void attempt(struct ucall *c) {
  struct upstream *u = c->u;
  struct tokens *tk = u->tk[c->svc];
  if (!tk) {
    c->status = 0;
    c->retryable = false;
    set_error(c, u->missing[c->svc] ? u->missing[c->svc] : "no credentials");
    finish(c);
    return;
  }
  double now = clock_mono();
  const char *token = tokens_fresh(tk, now);
  if (token) {
    send_with(c, token);
    return;
  }
  if (tokens_wait(tk, now, on_token, c) == 0) {
    c->state = CS_TOKEN;
    return;
  }
  c->status = 0;
  c->retryable = true;
  /* Events wait (retry_wait) for the install rather than die. */
  set_error(c, tokens_has_grant(tk) ? "token request: could not be sent"
                                    : "GHL app not installed yet: no OAuth tokens (docs/install.md)");
  after_failure(c, -1);
}

int up_start(struct upstream *u, const struct up_call *call, up_attempt_cb on_attempt,
             up_done_cb done, void *ud) {
  if (!u || !call || !done || !call->method || !*call->method || !call->path ||
      call->path[0] != '/' || (call->service != UP_NOWCERTS && call->service != UP_GHL))
    return -1;
  struct ucall *c = calloc(1, sizeof *c);
  if (!c)
    return -1;
  c->u = u;
  c->svc = call->service;
  c->on_attempt = on_attempt;
  c->once = call->once;
  c->then_write = call->then_write && call->service == UP_GHL;
  c->use_held = call->use_held && call->service == UP_GHL;
  c->done = done;
  c->ud = ud;
  buf_init(&c->resp, 0);
  const char *base = u->base_url[c->svc];
  size_t ul = strlen(base) + strlen(call->path) + 1;
  c->url = malloc(ul);
  if (c->url)
    snprintf(c->url, ul, "%s%s", base, call->path);
  c->method = strdup(call->method);
  if (call->body) {
    c->body = malloc(call->body_len + 1);
    if (c->body) {
      memcpy(c->body, call->body, call->body_len);
      c->body[call->body_len] = '\0';
    }
    c->body_len = call->body_len;
  }
  if (call->content_type)
    c->content_type = strdup(call->content_type);
  c->timer = evtimer_new(u->base, on_call_timer, c);
  if (!c->url || !c->method || (call->body && !c->body) ||
      (call->content_type && !c->content_type) || !c->timer) {
    call_free(c);
    return -1;
  }
  c->next = u->calls;
  if (u->calls)
    u->calls->prev = c;
  u->calls = c;
  u->active++;
  c->starting = true;
  attempt(c);
  c->starting = false;
  return 0;
}
