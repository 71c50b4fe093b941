/* Intake is one pass over the body: parse (strict), validate the fields the
 * route needs, canonicalise, hash. Nothing is answered before the batch that
 * holds the event commits; a request that must wait for its event parks a
 * struct answer, which the engine's watch or the WEBHOOK_WAIT_MS timer
 * completes, whichever comes first. */
#include "server.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "digest.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "lua_rt.h"
#include "queue.h"
#include "sig.h"
#include "store.h"

#define SERVICE_NAME "NowCerts GHL Integration API"
/* GHL's guidance: refuse a signed webhook whose timestamp is older than this. */
#define REPLAY_WINDOW_SECONDS 300

enum route { R_NOWCERTS, R_GHL, R_MANUAL };
static const char *route_source[] = {"nowcerts", "ghl", "manual"};

struct answer {
  struct answer *prev, *next; /* the server's list of answers owed */
  struct server *srv;
  struct evhttp_request *req;
  struct evhttp_connection *conn;
  enum route route;
  char id[EVENT_ID_MAX];
  enum store_put put;
  enum ev_status existing;
  struct engine_watch *watch;
  struct event *timer;
};

struct server {
  struct event_base *base;
  const struct config *cfg;
  struct store *store;
  struct queue *queue;
  struct engine *engine;
  struct lrt *rt;
  struct evhttp *http;
  struct sig_keys *ghl_keys; /* NULL when GHL_WEBHOOK_VERIFY is off */
  struct answer *owed;
  int nowed;
  bool draining;
};

static void send_json(struct evhttp_request *req, int code, const char *reason, const char *body,
                      size_t len) {
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "application/json");
  struct evbuffer *out = evhttp_request_get_output_buffer(req);
  evbuffer_add(out, body, len);
  evhttp_send_reply(req, code, reason, NULL);
}

static void send_buf(struct evhttp_request *req, int code, const char *reason, struct buf *b) {
  if (!b->p) {
    send_json(req, 500, "Internal Server Error", "{\"detail\":\"out of memory\"}", 26);
    return;
  }
  send_json(req, code, reason, b->p, b->len);
}

/* {"detail": "<text>"} — FastAPI's shape for every plain error. */
static void send_detail(struct evhttp_request *req, int code, const char *reason, const char *text) {
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"detail\":");
  buf_json_str(&b, text, strlen(text));
  buf_putc(&b, '}');
  send_buf(req, code, reason, &b);
  buf_free(&b);
}

/* 422 in FastAPI/Pydantic's shape: a list of {loc, msg, type}. */
struct problems {
  struct buf b;
  int n;
};

static void problem(struct problems *p, const char *field, const char *msg, const char *type) {
  buf_puts(&p->b, p->n++ ? "," : "[");
  buf_puts(&p->b, "{\"loc\":[\"body\"");
  if (field) {
    buf_putc(&p->b, ',');
    buf_json_str(&p->b, field, strlen(field));
  }
  buf_puts(&p->b, "],\"msg\":");
  buf_json_str(&p->b, msg, strlen(msg));
  buf_puts(&p->b, ",\"type\":");
  buf_json_str(&p->b, type, strlen(type));
  buf_putc(&p->b, '}');
}

static void send_problems(struct evhttp_request *req, struct problems *p) {
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"detail\":");
  buf_append(&b, p->b.p, p->b.len);
  buf_puts(&b, "]}");
  send_buf(req, 422, "Unprocessable Entity", &b);
  buf_free(&b);
}

static void require_str(struct problems *p, const struct json *root, const char *field) {
  const struct json *v = json_get(root, field);
  if (!v)
    problem(p, field, "field required", "value_error.missing");
  else if (json_type(v) != JSON_STRING)
    problem(p, field, "str type expected", "type_error.str");
}

static void require_obj(struct problems *p, const struct json *root, const char *field) {
  const struct json *v = json_get(root, field);
  if (!v)
    problem(p, field, "field required", "value_error.missing");
  else if (json_type(v) != JSON_OBJECT)
    problem(p, field, "value is not a valid dict", "type_error.dict");
}

static void require_enum(struct problems *p, const struct json *root, const char *field,
                         const char *const *allowed) {
  const struct json *v = json_get(root, field);
  if (!v) {
    problem(p, field, "field required", "value_error.missing");
    return;
  }
  const char *s = json_type(v) == JSON_STRING ? json_str(v) : NULL;
  for (int i = 0; s && allowed[i]; i++)
    if (strcmp(s, allowed[i]) == 0)
      return;
  char msg[160] = "unexpected value; permitted: ";
  for (int i = 0; allowed[i]; i++)
    snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "%s'%s'", i ? ", " : "", allowed[i]);
  problem(p, field, msg, "value_error.const");
}

/* Checks the body against the route's model; on success returns the event
 * type to store (malloc'd). On failure it has answered and returns NULL. */
static char *validate(struct evhttp_request *req, enum route r, const struct json *root) {
  struct problems p;
  buf_init(&p.b, 0);
  p.n = 0;
  char *type = NULL;
  if (json_type(root) != JSON_OBJECT) {
    problem(&p, NULL, "value is not a valid dict", "type_error.dict");
  } else if (r == R_NOWCERTS) {
    require_str(&p, root, "event_type");
    require_obj(&p, root, "data");
    if (!p.n)
      type = strdup(json_str(json_get(root, "event_type")));
  } else if (r == R_GHL) {
    /* GHL's own format names the event "type"; the source design's, "event". */
    const struct json *t = json_get(root, "type");
    const struct json *ev = json_get(root, "event");
    const struct json *name = t ? t : ev;
    if (!name)
      problem(&p, "type", "field required (\"type\", or \"event\" in the source design's format)",
              "value_error.missing");
    else if (json_type(name) != JSON_STRING)
      problem(&p, t ? "type" : "event", "str type expected", "type_error.str");
    else
      type = strdup(json_str(name));
  } else {
    static const char *const sources[] = {"nowcerts", "ghl", NULL};
    static const char *const entities[] = {"contact", "policy", "quote", NULL};
    static const char *const directions[] = {"to_ghl", "to_nowcerts", NULL};
    require_enum(&p, root, "source", sources);
    require_enum(&p, root, "entity_type", entities);
    require_enum(&p, root, "direction", directions);
    require_obj(&p, root, "data");
    if (!p.n) {
      const char *src = json_str(json_get(root, "source"));
      const char *dir = json_str(json_get(root, "direction"));
      if ((strcmp(src, "nowcerts") == 0) != (strcmp(dir, "to_ghl") == 0)) {
        char msg[128];
        snprintf(msg, sizeof msg, "Invalid combination: source=%s direction=%s", src, dir);
        buf_free(&p.b);
        send_detail(req, 400, "Bad Request", msg);
        return NULL;
      }
      struct buf t;
      buf_init(&t, 0);
      buf_printf(&t, "%s:%s", json_str(json_get(root, "entity_type")), dir);
      type = buf_steal(&t);
    }
  }
  if (p.n)
    send_problems(req, &p);
  buf_free(&p.b);
  return type;
}

static void answer_unlink(struct answer *a) {
  struct server *s = a->srv;
  if (a->prev)
    a->prev->next = a->next;
  else if (s->owed == a)
    s->owed = a->next;
  if (a->next)
    a->next->prev = a->prev;
  a->prev = a->next = NULL;
  s->nowed--;
}

static void answer_free(struct answer *a) {
  if (a->timer)
    event_free(a->timer);
  if (a->watch)
    engine_unwatch(a->srv->engine, a->watch);
  if (a->conn)
    evhttp_connection_set_closecb(a->conn, NULL, NULL);
  answer_unlink(a);
  free(a);
}

static void send_queued(struct answer *a) {
  struct buf b;
  buf_init(&b, 0);
  buf_printf(&b, "{\"success\":true,\"status\":\"queued\",\"event_id\":\"%s\"}", a->id);
  send_buf(a->req, 202, "Accepted", &b);
  buf_free(&b);
}

static void on_outcome(void *ud, const struct engine_outcome *o) {
  struct answer *a = ud;
  a->watch = NULL; /* the engine frees it after this call */
  struct buf b;
  buf_init(&b, 0);
  if (o->status == EV_DONE && o->outcome == LRT_IGNORED) {
    buf_printf(&b, "{\"success\":true,\"status\":\"ignored\",\"message\":");
    buf_json_str(&b, o->message, strlen(o->message));
    buf_printf(&b, ",\"event_id\":\"%s\"}", a->id);
    send_buf(a->req, 200, "OK", &b);
  } else if (o->status == EV_DONE) {
    buf_puts(&b, "{\"success\":true,\"message\":");
    buf_json_str(&b, o->message, strlen(o->message));
    buf_printf(&b, ",\"event_id\":\"%s\",\"data\":%s}", a->id, o->data && *o->data ? o->data : "{}");
    send_buf(a->req, 200, "OK", &b);
  } else if (o->status == EV_DEAD) {
    const char *err = o->error ? o->error : "failed";
    buf_printf(&b, "{\"success\":false,\"status\":\"dead\",\"event_id\":\"%s\",\"error\":", a->id);
    buf_json_str(&b, err, strlen(err));
    buf_putc(&b, '}');
    /* GHL retries any non-2xx twelve times and pauses endpoints that fail;
     * the event is kept for replay, so GHL is told 200. */
    if (a->route == R_GHL)
      send_buf(a->req, 200, "OK", &b);
    else
      send_buf(a->req, 502, "Bad Gateway", &b);
  } else {
    send_queued(a); /* retry_wait: it goes on in the background */
  }
  buf_free(&b);
  answer_free(a);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct answer *a = arg;
  send_queued(a);
  answer_free(a);
}

static void on_conn_close(struct evhttp_connection *conn, void *arg) {
  (void)conn;
  struct answer *a = arg;
  a->conn = NULL; /* evhttp frees the request with the connection */
  answer_free(a);
}

static void on_committed(void *ud, bool committed) {
  struct answer *a = ud;
  struct server *s = a->srv;
  if (!committed) {
    send_detail(a->req, 503, "Service Unavailable", "The event could not be stored; try again");
    answer_free(a);
    return;
  }
  if (a->put == STORE_PUT_DUPLICATE) {
    struct buf b;
    buf_init(&b, 0);
    if (a->route == R_GHL) {
      buf_printf(&b, "{\"success\":true,\"status\":\"duplicate\",\"event_id\":\"%s\"}", a->id);
      send_buf(a->req, 200, "OK", &b);
    } else {
      buf_printf(&b, "Event already processed: %s", a->id);
      char *text = buf_steal(&b);
      send_detail(a->req, 409, "Conflict", text);
      free(text);
    }
    buf_free(&b);
    answer_free(a);
    return;
  }
  if (s->cfg->webhook_wait_ms > 0)
    a->watch = engine_watch(s->engine, a->id, on_outcome, a);
  if (!a->watch) {
    send_queued(a);
    answer_free(a);
    return;
  }
  a->timer = evtimer_new(s->base, on_wait_timeout, a);
  struct timeval tv = {s->cfg->webhook_wait_ms / 1000, (s->cfg->webhook_wait_ms % 1000) * 1000};
  evtimer_add(a->timer, &tv);
  a->conn = evhttp_request_get_connection(a->req);
  evhttp_connection_set_closecb(a->conn, on_conn_close, a);
}

static void handle_event(struct server *s, struct evhttp_request *req, enum route r) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t len = evbuffer_get_length(in);
  if ((long)len > s->cfg->max_body_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "Request body too large (limit %ld bytes)", s->cfg->max_body_bytes);
    send_detail(req, 413, "Payload Too Large", msg);
    return;
  }
  const char *body = (const char *)evbuffer_pullup(in, -1);
  if (!body)
    body = "";
  if (r == R_GHL && s->ghl_keys) {
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    enum sig_result v = sig_verify_ghl(s->ghl_keys, body, len, evhttp_find_header(h, "X-GHL-Signature"),
                                       evhttp_find_header(h, "x-wh-signature"));
    if (v != SIG_OK) {
      log_warn("ghl webhook refused: %s signature", v == SIG_MISSING ? "missing" : "invalid");
      send_detail(req, 401, "Unauthorized",
                  v == SIG_MISSING ? "Missing webhook signature" : "Invalid webhook signature");
      return;
    }
  }
  char err[160];
  struct json *root = json_parse(body, len, err, sizeof err);
  if (!root) {
    struct problems p;
    buf_init(&p.b, 0);
    p.n = 0;
    char msg[200];
    snprintf(msg, sizeof msg, "Invalid JSON: %s", err);
    problem(&p, NULL, msg, "value_error.jsondecode");
    send_problems(req, &p);
    buf_free(&p.b);
    return;
  }
  char *type = validate(req, r, root);
  if (!type) {
    json_free(root);
    return;
  }
  if (r == R_GHL && s->ghl_keys) {
    /* Signed bodies carry their own time; an old one is a replay. */
    time_t ts = sig_parse_time(json_str(json_get(root, "timestamp")));
    if (ts > 0 && ts < time(NULL) - REPLAY_WINDOW_SECONDS) {
      free(type);
      json_free(root);
      send_detail(req, 401, "Unauthorized", "Webhook timestamp is older than 5 minutes (replay refused)");
      return;
    }
  }
  struct buf canon;
  buf_init(&canon, 0);
  struct answer *a = calloc(1, sizeof *a);
  if (!a || json_canonical(root, &canon) != 0) {
    free(a);
    free(type);
    json_free(root);
    buf_free(&canon);
    send_detail(req, 500, "Internal Server Error", "out of memory");
    return;
  }
  json_free(root);
  a->srv = s;
  a->req = req;
  a->route = r;
  digest_event_id(route_source[r], canon.p, canon.len, a->id);
  buf_free(&canon);
  log_debug("intake %s %s %s (%zu bytes)", route_source[r], type, a->id, len);
  if (engine_submit(s->engine, a->id, route_source[r], type, body, len, &a->put, &a->existing) != 0) {
    free(type);
    free(a);
    send_detail(req, 503, "Service Unavailable", "The event could not be stored; try again");
    return;
  }
  free(type);
  a->next = s->owed;
  if (s->owed)
    s->owed->prev = a;
  s->owed = a;
  s->nowed++;
  queue_after_commit(s->queue, on_committed, a);
}

static void handle_health(struct server *s, struct evhttp_request *req) {
  bool ok = store_writable(s->store);
  struct buf b;
  buf_init(&b, 0);
  buf_printf(&b,
             "{\"status\":\"%s\",\"service\":\"" SERVICE_NAME "\",\"version\":\"" NCGHL_VERSION
             "\",\"store\":{\"writable\":%s,\"schema_version\":%d},\"events_running\":%d,"
             "\"mappings\":{\"version\":\"%s\",\"dir\":",
             ok ? "healthy" : "unhealthy", ok ? "true" : "false", store_schema_version(s->store),
             engine_running(s->engine), lrt_version(s->rt));
  buf_json_str(&b, s->cfg->mappings_dir, strlen(s->cfg->mappings_dir));
  buf_puts(&b, "}}");
  send_buf(req, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", &b);
  buf_free(&b);
}

static void on_request(struct evhttp_request *req, void *arg) {
  struct server *s = arg;
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  if (!path || !*path)
    path = "/";
  char clean[256];
  size_t n = strlen(path);
  if (n >= sizeof clean)
    n = sizeof clean - 1;
  memcpy(clean, path, n);
  clean[n] = 0;
  while (n > 1 && clean[n - 1] == '/')
    clean[--n] = 0; /* "/health/" is "/health" */
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

  static const struct {
    const char *path;
    enum evhttp_cmd_type method;
    int route; /* -1 health, else enum route */
  } routes[] = {
      {"/health", EVHTTP_REQ_GET, -1},
      {"/api/v1/webhooks/nowcerts", EVHTTP_REQ_POST, R_NOWCERTS},
      {"/api/v1/webhooks/ghl", EVHTTP_REQ_POST, R_GHL},
      {"/api/v1/sync/manual", EVHTTP_REQ_POST, R_MANUAL},
  };
  for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
    if (strcmp(clean, routes[i].path) != 0)
      continue;
    bool head = cmd == EVHTTP_REQ_HEAD && routes[i].method == EVHTTP_REQ_GET;
    if (cmd != routes[i].method && !head) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                        routes[i].method == EVHTTP_REQ_GET ? "GET" : "POST");
      send_detail(req, 405, "Method Not Allowed", "Method Not Allowed");
      return;
    }
    if (routes[i].route < 0) {
      handle_health(s, req);
      return;
    }
    if (s->draining) {
      send_detail(req, 503, "Service Unavailable", "Shutting down; send it again shortly");
      return;
    }
    handle_event(s, req, (enum route)routes[i].route);
    return;
  }
  send_detail(req, 404, "Not Found", "Not Found");
}

struct server *server_new(struct event_base *base, const struct config *cfg, struct store *store,
                          struct queue *queue, struct engine *engine, struct lrt *rt, char *err,
                          size_t errlen) {
  struct server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->base = base;
  s->cfg = cfg;
  s->store = store;
  s->queue = queue;
  s->engine = engine;
  s->rt = rt;
  s->http = evhttp_new(base);
  if (!s->http) {
    snprintf(err, errlen, "cannot create the HTTP server");
    free(s);
    return NULL;
  }
  /* Every method reaches our handler, so a wrong one gets a JSON 405 rather
   * than libevent's own page. Bodies up to 8x the limit are read and refused
   * with a JSON 413; beyond that libevent closes the connection itself. */
  evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                          EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
  evhttp_set_max_body_size(s->http, cfg->max_body_bytes * 8 + 65536);
  evhttp_set_max_headers_size(s->http, 64 * 1024);
  evhttp_set_timeout(s->http, 60);
  evhttp_set_default_content_type(s->http, "application/json");
  evhttp_set_gencb(s->http, on_request, s);
  if (cfg->ghl_webhook_verify) {
    s->ghl_keys = sig_keys_load(cfg->ghl_webhook_ed25519_key, cfg->ghl_webhook_rsa_key, err, errlen);
    if (!s->ghl_keys) {
      char why[400];
      snprintf(why, sizeof why, "GHL_WEBHOOK_ED25519_KEY/GHL_WEBHOOK_RSA_KEY: %s", err);
      snprintf(err, errlen, "%s", why);
      evhttp_free(s->http);
      free(s);
      return NULL;
    }
  }
  if (evhttp_bind_socket(s->http, cfg->host, (ev_uint16_t)cfg->port) != 0) {
    snprintf(err, errlen, "cannot listen on %s:%d (HOST/PORT): address in use or not available",
             cfg->host, cfg->port);
    evhttp_free(s->http);
    sig_keys_free(s->ghl_keys);
    free(s);
    return NULL;
  }
  return s;
}

void server_drain(struct server *s) { s->draining = true; }

int server_pending(const struct server *s) { return s->nowed; }

void server_free(struct server *s) {
  if (!s)
    return;
  while (s->owed) {
    struct answer *a = s->owed;
    send_queued(a); /* acknowledged and stored: it will run after a restart */
    answer_free(a);
  }
  evhttp_free(s->http);
  sig_keys_free(s->ghl_keys);
  free(s);
}
