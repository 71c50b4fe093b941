/* install: GHL's Marketplace install (see install.h).
 *
 * The callback is the only place an authorization code enters: the code is
 * exchanged at <GHL_BASE_URL>/oauth/token exactly as ref/ghl/NOTES.md §1
 * describes (a form body: client_id, client_secret,
 * grant_type=authorization_code, code, user_type=Location, and redirect_uri
 * when GHL_REDIRECT_URI is set), and only an answer that holds everything
 * a location install must hold (access and refresh token, the location) is
 * handed on. Every other answer leaves the tenant's tokens as they were, so
 * a forged, replayed or expired code can only cost one request to GHL. */
#include "install.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "httpc.h"
#include "json.h"
#include "log.h"
#include "queue.h"
#include "tokens.h"

#define CALLBACK_PATH "/oauth/callback"
#define INSTALL_PATH "/oauth/install"
/* GHL's codes are short; anything this long is not one of them. */
#define CODE_MAX 2048
#define LOCATION_MAX 128
/* When the token answer has no usable expires_in: short, so the first
 * refresh comes early rather than after a refusal. */
#define DEFAULT_TIMEOUT_MS 10000

/* One exchange in flight: the browser waiting for its page. */
struct pend {
  struct install *in;  /* NULL once the pend waits only for its commit */
  struct evhttp_request *req; /* NULL once the browser went away */
  struct evhttp_connection *conn;
  char *code; /* registered with the logger while in flight */
  struct pend *prev, *next;
  char *done_msg; /* the page to send once the tokens are committed */
};

struct install {
  const struct config *cfg;
  struct httpc *http;
  install_find_fn find;
  void *find_ud;
  bool configured; /* client id and secret set */
  char *token_url;
  struct pend *pending;
  int npending;
};

static bool set(const char *s) { return s && *s; }

/* ---- answers ------------------------------------------------------------------ */

static void html_escape(struct buf *b, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '<':
      buf_puts(b, "&lt;");
      break;
    case '>':
      buf_puts(b, "&gt;");
      break;
    case '&':
      buf_puts(b, "&amp;");
      break;
    case '"':
      buf_puts(b, "&quot;");
      break;
    case '\'':
      buf_puts(b, "&#39;");
      break;
    default:
      buf_putc(b, *s);
    }
  }
}

/* A page for the installing person: a title and one paragraph. The code
 * is in this page's URL, so nothing on it is loaded from elsewhere and no
 * Referer leaves it. */
static void send_page(struct evhttp_request *req, int code, const char *reason, const char *title,
                      const char *msg) {
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ncghl: ");
  html_escape(&b, title);
  buf_puts(&b, "</title></head>\n<body><h1>");
  html_escape(&b, title);
  buf_puts(&b, "</h1>\n<p>");
  html_escape(&b, msg);
  buf_puts(&b, "</p></body></html>\n");
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
  evhttp_add_header(h, "Cache-Control", "no-store");
  evhttp_add_header(h, "Referrer-Policy", "no-referrer");
  evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
  evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'");
  struct evbuffer *out = evbuffer_new();
  if (out && b.p)
    evbuffer_add(out, b.p, b.len);
  evhttp_send_reply(req, code, reason, out);
  if (out)
    evbuffer_free(out);
  buf_free(&b);
}

/* ---- construction -------------------------------------------------------------- */

struct install *install_new(const struct config *cfg, struct httpc *http, install_find_fn find,
                            void *find_ud) {
  struct install *in = calloc(1, sizeof *in);
  if (!in)
    return NULL;
  in->cfg = cfg;
  in->http = http;
  in->find = find;
  in->find_ud = find_ud;
  in->configured = set(cfg->ghl_client_id) && set(cfg->ghl_client_secret) &&
                   set(cfg->ghl_base_url) && http && find;
  if (in->configured) {
    const char *base = cfg->ghl_base_url;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
      bl--;
    size_t n = bl + sizeof "/oauth/token";
    if (!(in->token_url = malloc(n))) {
      free(in);
      return NULL;
    }
    snprintf(in->token_url, n, "%.*s/oauth/token", (int)bl, base);
  }
  return in;
}

/* Off the list of exchanges in flight: a stop no longer answers it. */
static void pend_unlink(struct pend *p) {
  struct install *in = p->in;
  if (!in)
    return;
  if (p->prev)
    p->prev->next = p->next;
  else
    in->pending = p->next;
  if (p->next)
    p->next->prev = p->prev;
  in->npending--;
  p->in = NULL;
  p->prev = p->next = NULL;
}

static void pend_free(struct pend *p) {
  pend_unlink(p);
  free(p->done_msg);
  if (p->conn)
    evhttp_connection_set_closecb(p->conn, NULL, NULL);
  if (p->code) {
    log_forget_secret(p->code);
    memset(p->code, 0, strlen(p->code));
    free(p->code);
  }
  free(p);
}

void install_stop(struct install *in) {
  if (!in)
    return;
  while (in->pending) {
    struct pend *p = in->pending;
    httpc_cancel(in->http, p);
    if (p->req)
      send_page(p->req, 503, "Service Unavailable", "Install interrupted",
                "ncghl is shutting down; the code may or may not have been used. Start the "
                "install again from the Marketplace once it is back.");
    pend_free(p);
  }
}

void install_free(struct install *in) {
  if (!in)
    return;
  install_stop(in);
  free(in->token_url);
  free(in);
}

bool install_owns(const char *path) {
  return strcmp(path, CALLBACK_PATH) == 0 || strcmp(path, INSTALL_PATH) == 0;
}

int install_pending(const struct install *in) { return in ? in->npending : 0; }

/* ---- the exchange --------------------------------------------------------------- */

static bool id_like(const char *s) {
  size_t n = 0;
  for (; s[n]; n++) {
    char c = s[n];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_'))
      return false;
  }
  return n > 0 && n <= LOCATION_MAX;
}

/* GHL's own words from an error answer ({"message"} as a string or a list,
 * or OAuth's {"error_description"}/{"error"}), cut short; "" if none. */
static void ghl_message(const char *body, size_t len, char *out, size_t outlen) {
  out[0] = '\0';
  char err[64];
  struct json *root = len ? json_parse(body, len, err, sizeof err) : NULL;
  if (!root)
    return;
  const char *keys[] = {"error_description", "message", "error"};
  for (size_t i = 0; i < sizeof keys / sizeof *keys && !out[0]; i++) {
    const struct json *v = json_get(root, keys[i]);
    if (v && json_type(v) == JSON_STRING)
      snprintf(out, outlen, "%.200s", json_str(v));
    else if (v && json_type(v) == JSON_ARRAY && json_str(json_at(v, 0)))
      snprintf(out, outlen, "%.200s", json_str(json_at(v, 0)));
  }
  json_free(root);
}

/* Refused before anything was stored. */
static void fail(struct pend *p, int code, const char *reason, const char *title, const char *msg) {
  log_warn("install: %s (HTTP %d): %s", title, code, msg);
  if (p->req)
    send_page(p->req, code, reason, title, msg);
}

/* The batch holding an install's tokens ended: the page says what it
 * holds. The pend is off the install's list by now (it may be gone). */
static void on_install_committed(void *ud, bool committed) {
  struct pend *p = ud;
  if (!committed)
    log_error("install: the tokens are in use but the store could not keep them");
  if (p->req) {
    if (committed)
      send_page(p->req, 200, "OK", "Installed", p->done_msg);
    else
      send_page(p->req, 500, "Internal Server Error", "Installed, not stored",
                "The tokens are in use, but the store could not keep them: a restart will "
                "lose them. Check the store (/health), then install again.");
  }
  pend_free(p);
}

/* A 2xx from the token endpoint: install it if it is a whole location
 * install for a location this deployment serves. */
static void take_tokens(struct pend *p, const char *body, size_t len) {
  struct install *in = p->in;
  char err[128], msg[512];
  struct json *root = json_parse(body, len, err, sizeof err);
  if (!root || json_type(root) != JSON_OBJECT) {
    json_free(root);
    fail(p, 502, "Bad Gateway", "Install failed",
         "GHL's token endpoint answered with something that is not a JSON object; nothing was "
         "stored. Start the install again from the Marketplace.");
    return;
  }
  const char *access = json_str(json_get(root, "access_token"));
  const char *refresh = json_str(json_get(root, "refresh_token"));
  /* Registered before anything could print them. */
  if (set(access))
    log_add_secret(access);
  if (set(refresh))
    log_add_secret(refresh);
  const char *user_type = json_str(json_get(root, "userType"));
  const char *location = json_str(json_get(root, "locationId"));
  const struct json *bulk = json_get(root, "isBulkInstallation");
  if (!set(access)) {
    fail(p, 502, "Bad Gateway", "Install failed",
         "GHL's token endpoint answered without an access_token; nothing was stored. Start the "
         "install again from the Marketplace.");
  } else if ((user_type && strcmp(user_type, "Location") != 0) ||
             (bulk && json_type(bulk) == JSON_BOOL && json_bool(bulk)) || !set(location)) {
    /* Agency (Company) tokens would need /oauth/locationToken per location
     * and an agency refresh chain; ncghl keeps one location's tokens. */
    if (user_type && strcmp(user_type, "Location") != 0)
      fail(p, 400, "Bad Request", "Install for a single location",
           "This was an agency-level (Company) install. ncghl is installed one sub-account "
           "(location) at a time: start the install again and choose a single sub-account. "
           "Nothing was stored.");
    else if (bulk && json_type(bulk) == JSON_BOOL && json_bool(bulk))
      fail(p, 400, "Bad Request", "Install for a single location",
           "This was a bulk installation over several locations. ncghl is installed one "
           "sub-account (location) at a time: start the install again and choose a single "
           "sub-account. Nothing was stored.");
    else
      fail(p, 502, "Bad Gateway", "Install failed",
           "GHL's token endpoint answered without a locationId; nothing was stored. Start the "
           "install again from the Marketplace and choose a sub-account.");
  } else if (!set(refresh)) {
    fail(p, 502, "Bad Gateway", "Install failed",
         "GHL's token endpoint answered without a refresh_token: the access token would stop "
         "working within a day, so nothing was stored. Start the install again.");
  } else if (!id_like(location)) {
    fail(p, 502, "Bad Gateway", "Install failed",
         "GHL's token endpoint answered with a locationId that is not an id; nothing was stored.");
  } else {
    double lifetime = tokens_lifetime(root);
    struct install_target t = {0};
    bool served = in->find(in->find_ud, location, &t);
    if (served && !t.tokens) {
      snprintf(msg, sizeof msg,
               "Location %s is served here with a fixed token (GHL_API_KEY), not through the "
               "Marketplace app: give it the app's GHL_CLIENT_ID and GHL_CLIENT_SECRET, then "
               "install again. Nothing was stored.",
               location);
      fail(p, 409, "Conflict", "Location not set up for the app", msg);
    } else if (!served) {
      snprintf(msg, sizeof msg,
               "Location %s is not served by this ncghl (GHL_LOCATION_ID or its tenants name "
               "other locations). Nothing was stored. Uninstall the app from that location in "
               "GHL, or configure ncghl for it and install again.",
               location);
      fail(p, 403, "Forbidden", "Location not served here", msg);
    } else {
      /* The tokens join a durable batch, and the page waits for its fsync:
       * "stored" is never said before it is true. */
      bool durable = t.queue && queue_join_durable(t.queue) == 0;
      int rc = tokens_install(t.tokens, refresh, access, lifetime, clock_mono());
      if (rc == 0) {
        snprintf(msg, sizeof msg,
                 "ncghl now reaches GHL location %s with the app's tokens. They are stored and "
                 "renewed by ncghl; you can close this page.",
                 location);
        log_info("install: GHL location %s%s%s%s installed; its tokens are in use%s", location,
                 t.name ? " (" : "", t.name ? t.name : "", t.name ? ")" : "",
                 durable ? ", stored at the next commit" : " and stored");
        if (durable && (p->done_msg = strdup(msg))) {
          pend_unlink(p);
          queue_after_commit(t.queue, on_install_committed, p);
        } else if (p->req) {
          send_page(p->req, 200, "OK", "Installed", msg);
        }
      } else if (rc > 0) {
        snprintf(msg, sizeof msg,
                 "The tokens for location %s are in use, but the store could not keep them: a "
                 "restart will lose them. Check the store (/health), then install again.",
                 location);
        log_error("install: GHL location %s: tokens in use but not stored", location);
        if (p->req)
          send_page(p->req, 500, "Internal Server Error", "Installed, not stored", msg);
      } else {
        snprintf(msg, sizeof msg,
                 "ncghl could not take the tokens for location %s (is GHL set up for OAuth "
                 "there, with GHL_CLIENT_ID and GHL_CLIENT_SECRET?). Nothing was stored.",
                 location);
        fail(p, 500, "Internal Server Error", "Install failed", msg);
      }
    }
  }
  json_free(root);
}

static void on_token_answer(void *ud, const struct httpc_response *resp) {
  struct pend *p = ud;
  char said[256], msg[512];
  if (resp->status >= 200 && resp->status < 300) {
    take_tokens(p, resp->body, resp->body_len);
  } else if (resp->status == 0) {
    snprintf(msg, sizeof msg,
             "GHL's token endpoint did not answer (%s); nothing was stored. Try the install "
             "again in a moment.",
             resp->timed_out ? "timed out" : "connection failed");
    fail(p, 502, "Bad Gateway", "Install failed", msg);
  } else if (resp->status == 401 || resp->status == 403) {
    ghl_message(resp->body, resp->body_len, said, sizeof said);
    snprintf(msg, sizeof msg,
             "GHL refused this app's credentials (HTTP %d%s%s): check GHL_CLIENT_ID and "
             "GHL_CLIENT_SECRET. Nothing was stored.",
             resp->status, said[0] ? ": " : "", said);
    fail(p, 502, "Bad Gateway", "Install failed", msg);
  } else if (resp->status >= 400 && resp->status < 500) {
    ghl_message(resp->body, resp->body_len, said, sizeof said);
    snprintf(msg, sizeof msg,
             "GHL refused the authorization code (HTTP %d%s%s). A code works once and only "
             "for a short time, and only with the redirect URI it was issued for. The tokens "
             "ncghl had are unchanged; start the install again from the Marketplace.",
             resp->status, said[0] ? ": " : "", said);
    fail(p, 400, "Bad Request", "Install failed", msg);
  } else {
    snprintf(msg, sizeof msg,
             "GHL's token endpoint failed (HTTP %d); nothing was stored. Try the install again "
             "in a moment.",
             resp->status);
    fail(p, 502, "Bad Gateway", "Install failed", msg);
  }
  if (!p->done_msg)
    pend_free(p); /* else its commit's callback does */
}

static void on_browser_gone(struct evhttp_connection *conn, void *arg) {
  (void)conn;
  struct pend *p = arg;
  /* evhttp frees the request with the connection; the exchange goes on,
   * since GHL may already have spent the code. */
  p->req = NULL;
  p->conn = NULL;
}

static void handle_callback(struct install *in, struct evhttp_request *req, const char *query) {
  struct evkeyvalq q;
  /* evhttp_parse_query_str starts the list itself, even for "". */
  if (evhttp_parse_query_str(query ? query : "", &q) != 0) {
    evhttp_clear_headers(&q);
    send_page(req, 400, "Bad Request", "Install failed", "The address's query is malformed.");
    return;
  }
  const char *code = evhttp_find_header(&q, "code");
  const char *gerr = evhttp_find_header(&q, "error");
  if (!set(code) || strlen(code) > CODE_MAX) {
    char msg[400];
    if (set(gerr))
      snprintf(msg, sizeof msg, "GHL sent no authorization code (error: %.200s). Nothing changed.",
               gerr);
    else
      snprintf(msg, sizeof msg,
               "This address expects ?code= from GHL's Marketplace install (it is where GHL "
               "sends the browser back). Nothing changed.");
    evhttp_clear_headers(&q);
    send_page(req, 400, "Bad Request", "Missing authorization code", msg);
    return;
  }
  struct pend *p = calloc(1, sizeof *p);
  char *code_copy = p ? strdup(code) : NULL;
  struct buf form;
  buf_init(&form, 0);
  int rc = code_copy ? 0 : -1;
  if (rc == 0) {
    log_add_secret(code_copy);
    rc |= tokens_form_add(&form, "client_id", in->cfg->ghl_client_id);
    rc |= tokens_form_add(&form, "client_secret", in->cfg->ghl_client_secret);
    rc |= tokens_form_add(&form, "grant_type", "authorization_code");
    rc |= tokens_form_add(&form, "code", code_copy);
    rc |= tokens_form_add(&form, "user_type", "Location");
    if (set(in->cfg->ghl_redirect_uri))
      rc |= tokens_form_add(&form, "redirect_uri", in->cfg->ghl_redirect_uri);
  }
  evhttp_clear_headers(&q);
  static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
                                        "Accept: application/json", NULL};
  double t = in->cfg->upstream_timeout;
  struct httpc_request hr = {.method = "POST",
                             .url = in->token_url,
                             .headers = headers,
                             .body = form.p,
                             .body_len = form.len,
                             .timeout_ms = t > 0 ? (long)(t * 1000) : DEFAULT_TIMEOUT_MS};
  if (rc == 0 && form.p)
    rc = httpc_send(in->http, &hr, on_token_answer, p);
  if (form.p)
    memset(form.p, 0, form.len);
  buf_free(&form);
  if (rc != 0) {
    if (code_copy) {
      log_forget_secret(code_copy);
      free(code_copy);
    }
    free(p);
    send_page(req, 503, "Service Unavailable", "Install failed",
              "ncghl could not reach GHL's token endpoint just now; nothing changed. Try again.");
    return;
  }
  p->in = in;
  p->req = req;
  p->code = code_copy;
  p->next = in->pending;
  if (in->pending)
    in->pending->prev = p;
  in->pending = p;
  in->npending++;
  p->conn = evhttp_request_get_connection(req);
  if (p->conn)
    evhttp_connection_set_closecb(p->conn, on_browser_gone, p);
}

/* GET /oauth/install: GHL's chooselocation page for this app (NOTES §1). */
static void handle_install(struct install *in, struct evhttp_request *req) {
  const struct config *c = in->cfg;
  struct buf url;
  buf_init(&url, 0);
  const char *host =
      set(c->ghl_marketplace_url) ? c->ghl_marketplace_url : "https://marketplace.gohighlevel.com";
  size_t hl = strlen(host);
  while (hl > 0 && host[hl - 1] == '/')
    hl--;
  int rc = buf_printf(&url, "%.*s/v2/oauth/chooselocation?", (int)hl, host);
  rc |= tokens_form_add(&url, "response_type", "code");
  if (set(c->ghl_redirect_uri))
    rc |= tokens_form_add(&url, "redirect_uri", c->ghl_redirect_uri);
  rc |= tokens_form_add(&url, "client_id", c->ghl_client_id);
  if (set(c->ghl_oauth_scopes))
    rc |= tokens_form_add(&url, "scope", c->ghl_oauth_scopes);
  if (rc != 0 || !url.p) {
    buf_free(&url);
    send_page(req, 500, "Internal Server Error", "Install", "Out of memory.");
    return;
  }
  /* form_add put a '&' after the '?'; drop it. */
  char *q = strchr(url.p, '?');
  if (q && q[1] == '&')
    memmove(q + 1, q + 2, strlen(q + 2) + 1);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Location", url.p);
  char msg[160];
  snprintf(msg, sizeof msg, "Continue at GHL's Marketplace to choose the sub-account.");
  send_page(req, 302, "Found", "Install ncghl", msg);
  buf_free(&url);
}

void install_handle(struct install *in, struct evhttp_request *req, const char *path,
                    const char *query, enum evhttp_cmd_type cmd) {
  if (cmd != EVHTTP_REQ_GET) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    struct evbuffer *out = evbuffer_new();
    if (out)
      evbuffer_add_printf(out, "{\"detail\":\"Method Not Allowed\"}");
    evhttp_send_reply(req, 405, "Method Not Allowed", out);
    if (out)
      evbuffer_free(out);
    return;
  }
  if (!in || !in->configured) {
    send_page(req, 503, "Service Unavailable", "Marketplace install not configured",
              "This ncghl has no GHL app credentials: set GHL_CLIENT_ID and GHL_CLIENT_SECRET "
              "(the Marketplace app's keys) and restart it, then install again. Nothing changed.");
    return;
  }
  if (strcmp(path, INSTALL_PATH) == 0)
    handle_install(in, req);
  else
    handle_callback(in, req, query);
}
