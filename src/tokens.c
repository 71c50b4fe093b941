/* tokens: NowCerts and GHL token lifecycles (see tokens.h).
 *
 * The state is small: the current access token, when to renew it, whether a
 * 401 refused it, the latest refresh token, and at most one request in
 * flight with the callers waiting for it. Every transition happens either in
 * a call from the owner (fresh, wait, invalid) or in the transport's reply,
 * so a fake transport and a fake clock reach all of them. */
#include "tokens.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "log.h"

/* NowCerts' token endpoint only knows this one public client. */
#define NOWCERTS_CLIENT_ID "ngAuthApp"
/* When a token response carries no usable expires_in. */
#define DEFAULT_LIFETIME 3600.0

enum req_kind { REQ_NONE = 0, REQ_LOGIN, REQ_REFRESH };

struct waiter {
  tokens_cb cb;
  void *ud;
  struct waiter *next;
};

struct tokens {
  enum tokens_kind kind;
  char *token_url;
  char *username, *password;
  char *client_id, *client_secret;
  double margin;
  struct tokens_io io;

  char *access;         /* current access token, NULL before the first */
  bool access_issued;   /* came from a token response (ours to forget) */
  bool refused;         /* a 401 refused `access` */
  double renew_at;      /* INFINITY: unknown lifetime, renew only on 401 */
  char *refresh;        /* latest refresh token, NULL when none is usable */
  bool refresh_issued;
  char *user_id;

  void *inflight;       /* transport handle, NULL when idle */
  enum req_kind req;
  double req_started;   /* lifetimes count from here: never later than issue */
  struct waiter *waiters, **waiters_tail;
  long requests;
  tokens_observer_fn observer;
  void *observer_ud;
  tokens_saver_fn saver;
  void *saver_ud;

  /* tokens_free called from inside a waiter's callback: the dispatch loop
   * finishes the job, since it still holds the struct. */
  bool dispatching, dead;
};

static const char *kind_name(enum tokens_kind k) {
  return k == TOKENS_NOWCERTS ? "nowcerts" : "ghl";
}

static bool set(const char *s) { return s && *s; }

double tokens_lifetime(const struct json *root) {
  double lifetime = -1;
  const struct json *exp = json_get(root, "expires_in");
  if (exp && json_type(exp) == JSON_NUMBER)
    lifetime = json_num(exp);
  else if (exp && json_type(exp) == JSON_STRING)
    lifetime = strtod(json_str(exp), NULL);
  return lifetime > 0 && isfinite(lifetime) ? lifetime : DEFAULT_LIFETIME;
}

long tokens_form_escape(const char *s, char *out, size_t outlen) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                 (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
    size_t need = plain ? 1 : 3;
    if (n + need >= outlen)
      return -1;
    if (plain) {
      out[n++] = (char)*p;
    } else {
      out[n++] = '%';
      out[n++] = hex[*p >> 4];
      out[n++] = hex[*p & 15];
    }
  }
  if (n >= outlen)
    return -1;
  out[n] = '\0';
  return (long)n;
}

int tokens_form_add(struct buf *b, const char *name, const char *value) {
  size_t cap = strlen(value) * 3 + 1;
  char *enc = malloc(cap);
  if (!enc)
    return -1;
  int rc = -1;
  if (tokens_form_escape(value, enc, cap) >= 0)
    rc = buf_printf(b, "%s%s=%s", b->len ? "&" : "", name, enc);
  /* The encoded value is as secret as the value itself. */
  memset(enc, 0, cap);
  free(enc);
  return rc;
}

static void wipe_free(char *s) {
  if (s) {
    memset(s, 0, strlen(s));
    free(s);
  }
}

static void drop_access(struct tokens *tk) {
  if (tk->access && tk->access_issued)
    log_forget_secret(tk->access);
  wipe_free(tk->access);
  tk->access = NULL;
  tk->access_issued = false;
}

static void drop_refresh(struct tokens *tk) {
  if (tk->refresh && tk->refresh_issued)
    log_forget_secret(tk->refresh);
  wipe_free(tk->refresh);
  tk->refresh = NULL;
  tk->refresh_issued = false;
}

/* Installs a token we were just issued. The old one is forgotten by the
 * logger only if it was ours and differs: the upstream may hand back the
 * same string, which must stay redacted. */
static void replace_secret(char **slot, bool *issued, char *fresh) {
  if (*slot && *issued && strcmp(*slot, fresh) != 0)
    log_forget_secret(*slot);
  wipe_free(*slot);
  *slot = fresh;
  *issued = true;
}

struct tokens *tokens_new(const struct tokens_params *p, const struct tokens_io *io) {
  switch (p->kind) {
  case TOKENS_NOWCERTS:
    if (!set(p->base_url) || !set(p->username) || !set(p->password) || !io || !io->post)
      return NULL;
    break;
  case TOKENS_GHL_STATIC:
    if (!set(p->static_token))
      return NULL;
    break;
  case TOKENS_GHL_OAUTH:
    /* No refresh token yet is a deployment waiting for its Marketplace
     * install (tokens_install); it has nothing to send until then. */
    if (!set(p->base_url) || !set(p->client_id) || !set(p->client_secret) || !io || !io->post)
      return NULL;
    break;
  default:
    return NULL;
  }
  struct tokens *tk = calloc(1, sizeof *tk);
  if (!tk)
    return NULL;
  tk->kind = p->kind;
  tk->margin = p->refresh_margin > 0 ? p->refresh_margin : 0;
  if (io)
    tk->io = *io;
  tk->waiters_tail = &tk->waiters;
  tk->renew_at = INFINITY;

  bool oom = false;
  if (p->kind != TOKENS_GHL_STATIC) {
    const char *base = p->base_url;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
      bl--;
    const char *suffix = p->kind == TOKENS_NOWCERTS ? "/token" : "/oauth/token";
    size_t n = bl + strlen(suffix) + 1;
    tk->token_url = malloc(n);
    if (tk->token_url)
      snprintf(tk->token_url, n, "%.*s%s", (int)bl, base, suffix);
    oom |= !tk->token_url;
  }
  if (p->kind == TOKENS_NOWCERTS) {
    oom |= !(tk->username = strdup(p->username));
    oom |= !(tk->password = strdup(p->password));
    log_add_secret(p->password);
  } else if (p->kind == TOKENS_GHL_OAUTH) {
    oom |= !(tk->client_id = strdup(p->client_id));
    oom |= !(tk->client_secret = strdup(p->client_secret));
    log_add_secret(p->client_secret);
    if (set(p->refresh_token)) {
      oom |= !(tk->refresh = strdup(p->refresh_token));
      log_add_secret(p->refresh_token);
    }
  }
  if (set(p->static_token)) {
    /* With OAuth this is a first access token of unknown age: use it until
     * the upstream refuses it, then refresh. */
    oom |= !(tk->access = strdup(p->static_token));
    log_add_secret(p->static_token);
  }
  if (oom) {
    tokens_free(tk);
    return NULL;
  }
  return tk;
}

static void free_waiters(struct tokens *tk) {
  struct waiter *w = tk->waiters;
  while (w) {
    struct waiter *next = w->next;
    free(w);
    w = next;
  }
  tk->waiters = NULL;
  tk->waiters_tail = &tk->waiters;
}

static void destroy(struct tokens *tk) {
  drop_access(tk);
  drop_refresh(tk);
  free(tk->token_url);
  free(tk->username);
  wipe_free(tk->password);
  free(tk->client_id);
  wipe_free(tk->client_secret);
  free(tk->user_id);
  free(tk);
}

void tokens_free(struct tokens *tk) {
  if (!tk || tk->dead)
    return;
  if (tk->inflight && tk->io.cancel)
    tk->io.cancel(tk->io.io_ud, tk->inflight);
  tk->inflight = NULL;
  tk->req = REQ_NONE;
  free_waiters(tk);
  if (tk->dispatching) {
    tk->dead = true;
    return;
  }
  destroy(tk);
}

const char *tokens_fresh(struct tokens *tk, double now) {
  if (tk->kind == TOKENS_GHL_STATIC)
    return tk->access;
  if (!tk->access || tk->refused || now >= tk->renew_at)
    return NULL;
  return tk->access;
}

bool tokens_invalid(struct tokens *tk, const char *token) {
  if (tk->kind == TOKENS_GHL_STATIC)
    return false;
  if (token && tk->access && strcmp(token, tk->access) == 0)
    tk->refused = true;
  return true;
}

bool tokens_can_renew(const struct tokens *tk) { return tk->kind != TOKENS_GHL_STATIC; }

const char *tokens_user_id(const struct tokens *tk) { return tk->user_id; }

long tokens_requests(const struct tokens *tk) { return tk->requests; }

void tokens_set_observer(struct tokens *tk, tokens_observer_fn fn, void *ud) {
  tk->observer = fn;
  tk->observer_ud = ud;
}

void tokens_set_saver(struct tokens *tk, tokens_saver_fn fn, void *ud) {
  tk->saver = fn;
  tk->saver_ud = ud;
}

int tokens_restore(struct tokens *tk, const char *refresh, const char *access, double lifetime,
                   double now) {
  if (tk->kind != TOKENS_GHL_OAUTH || !set(refresh))
    return -1;
  char *r = strdup(refresh);
  char *a = set(access) && lifetime > 0 ? strdup(access) : NULL;
  if (!r || (set(access) && lifetime > 0 && !a)) {
    free(r);
    free(a);
    return -1;
  }
  log_add_secret(r);
  replace_secret(&tk->refresh, &tk->refresh_issued, r);
  if (a) {
    log_add_secret(a);
    replace_secret(&tk->access, &tk->access_issued, a);
    tk->refused = false;
    double early = tk->margin < lifetime / 2 ? tk->margin : lifetime / 2;
    tk->renew_at = now + lifetime - early;
  }
  return 0;
}

bool tokens_has_grant(const struct tokens *tk) { return tk->refresh || tk->access; }

static void dispatch(struct tokens *tk, const char *token, int status, const char *error);

int tokens_install(struct tokens *tk, const char *refresh, const char *access, double lifetime,
                   double now) {
  if (tk->kind != TOKENS_GHL_OAUTH || !set(refresh) || !set(access) || !(lifetime > 0) ||
      tk->dead)
    return -1;
  char *r = strdup(refresh);
  char *a = strdup(access);
  if (!r || !a) {
    free(r);
    free(a);
    return -1;
  }
  log_add_secret(r);
  log_add_secret(a);
  /* A refresh in flight presented the grant being replaced: whatever it
   * brings back must not overwrite the install, so it is dropped, and the
   * calls waiting for it take the installed token instead. */
  if (tk->inflight && tk->io.cancel)
    tk->io.cancel(tk->io.io_ud, tk->inflight);
  tk->inflight = NULL;
  tk->req = REQ_NONE;
  replace_secret(&tk->refresh, &tk->refresh_issued, r);
  replace_secret(&tk->access, &tk->access_issued, a);
  tk->refused = false;
  double early = tk->margin < lifetime / 2 ? tk->margin : lifetime / 2;
  tk->renew_at = now + lifetime - early;
  int stored = tk->saver ? tk->saver(tk->saver_ud, tk->refresh, tk->access, lifetime) : -1;
  log_info("tokens: ghl tokens installed (Marketplace)%s",
           stored == 0 ? "; stored" : "; NOT stored, a restart will lose them");
  if (tk->waiters)
    dispatch(tk, tk->access, 200, NULL);
  return stored == 0 ? 0 : 1;
}

static void observe(struct tokens *tk, bool ok) {
  if (tk->observer)
    tk->observer(tk->observer_ud, ok);
}

static void on_reply(void *req_ud, int status, const char *body, size_t len, const char *error);

/* Builds the form for `what` and hands it to the transport. */
static int send_request(struct tokens *tk, enum req_kind what, double now) {
  struct buf form;
  buf_init(&form, 0);
  int rc = 0;
  if (what == REQ_LOGIN) {
    rc |= tokens_form_add(&form, "grant_type", "password");
    rc |= tokens_form_add(&form, "username", tk->username);
    rc |= tokens_form_add(&form, "password", tk->password);
    rc |= tokens_form_add(&form, "client_id", NOWCERTS_CLIENT_ID);
  } else {
    rc |= tokens_form_add(&form, "grant_type", "refresh_token");
    rc |= tokens_form_add(&form, "refresh_token", tk->refresh);
    if (tk->kind == TOKENS_NOWCERTS) {
      rc |= tokens_form_add(&form, "client_id", NOWCERTS_CLIENT_ID);
    } else {
      rc |= tokens_form_add(&form, "client_id", tk->client_id);
      rc |= tokens_form_add(&form, "client_secret", tk->client_secret);
      rc |= tokens_form_add(&form, "user_type", "Location");
    }
  }
  void *h = NULL;
  if (rc == 0 && form.p)
    h = tk->io.post(tk->io.io_ud, tk->token_url, form.p, form.len, on_reply, tk);
  if (form.p)
    memset(form.p, 0, form.len);
  buf_free(&form);
  if (!h)
    return -1;
  tk->inflight = h;
  tk->req = what;
  tk->req_started = now;
  tk->requests++;
  log_debug("tokens: %s %s request sent", kind_name(tk->kind),
            what == REQ_LOGIN ? "login" : "refresh");
  return 0;
}

int tokens_wait(struct tokens *tk, double now, tokens_cb cb, void *ud) {
  if (!cb || tk->kind == TOKENS_GHL_STATIC || tk->dead)
    return -1;
  struct waiter *w = malloc(sizeof *w);
  if (!w)
    return -1;
  w->cb = cb;
  w->ud = ud;
  w->next = NULL;
  if (!tk->inflight) {
    /* A refresh failing to even start is no reason not to log in. */
    int rc = -1;
    if (tk->refresh)
      rc = send_request(tk, REQ_REFRESH, now);
    if (rc != 0 && tk->kind == TOKENS_NOWCERTS)
      rc = send_request(tk, REQ_LOGIN, now);
    if (rc != 0) {
      free(w);
      return -1;
    }
  }
  *tk->waiters_tail = w;
  tk->waiters_tail = &w->next;
  return 0;
}

/* Calls every waiter once. The list is detached first: a callback may wait
 * again (joining a new request), invalidate, or free the whole instance. */
static void dispatch(struct tokens *tk, const char *token, int status, const char *error) {
  struct waiter *w = tk->waiters;
  tk->waiters = NULL;
  tk->waiters_tail = &tk->waiters;
  tk->dispatching = true;
  while (w) {
    struct waiter *next = w->next;
    tokens_cb cb = w->cb;
    void *ud = w->ud;
    free(w);
    w = next;
    cb(ud, token, status, error);
    if (tk->dead) {
      /* The owner is gone, and with it every remaining waiter's user data. */
      while (w) {
        next = w->next;
        free(w);
        w = next;
      }
      destroy(tk);
      return;
    }
  }
  tk->dispatching = false;
}

/* Reads a token response; 0 and the state updated, or -1 with why. */
static int take_response(struct tokens *tk, const char *body, size_t len, char *why,
                         size_t whylen) {
  char err[128];
  struct json *root = json_parse(body, len, err, sizeof err);
  if (!root) {
    snprintf(why, whylen, "token response is not JSON");
    return -1;
  }
  const char *access = json_str(json_get(root, "access_token"));
  if (!access || !*access || json_type(root) != JSON_OBJECT) {
    json_free(root);
    snprintf(why, whylen, "token response without access_token");
    return -1;
  }
  /* Register before anything could print it. */
  log_add_secret(access);
  const char *refresh = json_str(json_get(root, "refresh_token"));
  if (refresh && *refresh)
    log_add_secret(refresh);

  double lifetime = tokens_lifetime(root);

  char *new_access = strdup(access);
  char *new_refresh = refresh && *refresh ? strdup(refresh) : NULL;
  const char *uid = json_str(json_get(root, "userId"));
  char *new_uid = uid && *uid ? strdup(uid) : NULL;
  if (!new_access || (refresh && *refresh && !new_refresh) || (uid && *uid && !new_uid)) {
    free(new_access);
    free(new_refresh);
    free(new_uid);
    json_free(root);
    snprintf(why, whylen, "out of memory");
    return -1;
  }
  json_free(root);

  replace_secret(&tk->access, &tk->access_issued, new_access);
  tk->refused = false;
  /* Renew `margin` early, but never in the first half of a short-lived
   * token's life: a lifetime under the margin would otherwise make every
   * call renew again. */
  double early = tk->margin < lifetime / 2 ? tk->margin : lifetime / 2;
  tk->renew_at = tk->req_started + lifetime - early;

  if (new_refresh) {
    bool rotated = tk->refresh && strcmp(tk->refresh, new_refresh) != 0;
    replace_secret(&tk->refresh, &tk->refresh_issued, new_refresh);
    if (rotated && tk->kind == TOKENS_GHL_OAUTH)
      log_info("tokens: ghl refresh token rotated%s", tk->saver ? "; the new one is stored" : "");
  }
  if (tk->kind == TOKENS_GHL_OAUTH && tk->saver && tk->refresh)
    tk->saver(tk->saver_ud, tk->refresh, tk->access, lifetime);
  if (new_uid) {
    free(tk->user_id);
    tk->user_id = new_uid;
  }
  return 0;
}

/* One line on why a token request failed. The error body of a token
 * endpoint is OAuth's {"error","error_description"}; only those are kept. */
static void describe_failure(int status, const char *body, size_t len, const char *error,
                             char *out, size_t outlen) {
  if (status == 0) {
    snprintf(out, outlen, "token request: connection error: %s", error ? error : "no answer");
    return;
  }
  const char *desc = NULL;
  char err[64];
  struct json *root = len ? json_parse(body, len, err, sizeof err) : NULL;
  if (root) {
    desc = json_str(json_get(root, "error_description"));
    if (!desc)
      desc = json_str(json_get(root, "error"));
    if (!desc)
      desc = json_str(json_get(root, "message"));
  }
  if (desc)
    snprintf(out, outlen, "token request: HTTP %d: %.200s", status, desc);
  else if (status >= 200 && status < 300)
    snprintf(out, outlen, "token request: HTTP %d: unusable answer", status);
  else
    snprintf(out, outlen, "token request: HTTP %d", status);
  json_free(root);
}

/* OAuth's error code in a token endpoint's answer (RFC 6749 5.2:
 * invalid_grant, invalid_client, ...) into out, "" when there is none. Only
 * a code's shape is taken: some servers put "Unauthorized" or prose there. */
static void oauth_error_code(const char *body, size_t len, char *out, size_t outlen) {
  out[0] = '\0';
  char err[64];
  struct json *root = len ? json_parse(body, len, err, sizeof err) : NULL;
  const char *code = root ? json_str(json_get(root, "error")) : NULL;
  if (code && *code && strspn(code, "abcdefghijklmnopqrstuvwxyz_") == strlen(code))
    snprintf(out, outlen, "%s", code);
  json_free(root);
}

/* GHL refusing a refresh (4xx) almost always means the grant is gone: the
 * app was uninstalled, or installed again, which revokes the earlier
 * tokens. Presenting the same token again seldom helps; an install does,
 * so the line the agency reads on its waiting events says that first. */
static void describe_refusal(int status, const char *body, size_t len, const char *detail,
                             char *out, size_t outlen) {
  char code[40];
  oauth_error_code(body, len, code, sizeof code);
  if (strcmp(code, "invalid_client") == 0)
    snprintf(out, outlen,
             "GHL refused the app's keys (invalid_client): check GHL_CLIENT_ID and "
             "GHL_CLIENT_SECRET; %s",
             detail);
  else if (*code)
    snprintf(out, outlen,
             "GHL refused the refresh token (%s): install the app again for this location "
             "(docs/install.md); %s",
             code, detail);
  else
    snprintf(out, outlen,
             "GHL refused the refresh token (HTTP %d): install the app again for this location "
             "(docs/install.md); %s",
             status, detail);
}

static void on_reply(void *req_ud, int status, const char *body, size_t len, const char *error) {
  struct tokens *tk = req_ud;
  enum req_kind what = tk->req;
  tk->inflight = NULL;
  tk->req = REQ_NONE;
  if (!body)
    body = "";

  char why[512];
  if (status >= 200 && status < 300) {
    char bad[128];
    if (take_response(tk, body, len, bad, sizeof bad) == 0) {
      log_info("tokens: %s %s ok, renewing in %.0f s", kind_name(tk->kind),
               what == REQ_LOGIN ? "login" : "refresh", tk->renew_at - tk->req_started);
      observe(tk, true);
      dispatch(tk, tk->access, status, NULL);
      return;
    }
    snprintf(why, sizeof why, "token request: HTTP %d: %s", status, bad);
  } else if (what == REQ_REFRESH && tk->kind == TOKENS_GHL_OAUTH && status >= 400 && status < 500) {
    char detail[320];
    describe_failure(status, body, len, error, detail, sizeof detail);
    describe_refusal(status, body, len, detail, why, sizeof why);
  } else {
    describe_failure(status, body, len, error, why, sizeof why);
  }
  observe(tk, false);

  if (what == REQ_REFRESH && tk->kind == TOKENS_NOWCERTS) {
    /* NowCerts refresh tokens rotate and their lifetime is undocumented:
     * one that failed is not tried again, a password login replaces it. */
    log_warn("tokens: nowcerts refresh failed (%s); logging in again", why);
    drop_refresh(tk);
    if (send_request(tk, REQ_LOGIN, tk->req_started) == 0)
      return;
  }
  log_error("tokens: %s %s failed: %s", kind_name(tk->kind),
            what == REQ_LOGIN ? "login" : "refresh", why);
  dispatch(tk, NULL, status, why);
}
