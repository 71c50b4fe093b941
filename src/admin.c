/* The admin API: routes, their checks and their JSON. Every answer is JSON
 * in FastAPI's shapes, like the webhook routes': {"detail": "..."} for a plain
 * error, a list of {loc, msg, type} for a 422. */
#include "admin.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "buf.h"
#include "config.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "queue.h"
#include "sig.h"
#include "store.h"

#define ADMIN_LIST_DEFAULT 100
#define ADMIN_LIST_MAX 10000

struct admin {
  const struct config *cfg;
  struct store *store;
  struct queue *queue;
  struct engine *engine;
  bool draining;
};

static double wall_now(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static void send_json(struct evhttp_request *req, int code, const char *reason, const char *body,
                      size_t len) {
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
  evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
  evhttp_send_reply(req, code, reason, NULL);
}

static void send_buf(struct evhttp_request *req, int code, const char *reason, struct buf *b) {
  if (!b->p) {
    send_json(req, 500, "Internal Server Error", "{\"detail\":\"out of memory\"}", 26);
    return;
  }
  send_json(req, code, reason, b->p, b->len);
}

/* {"detail": "<text>"} */
static void send_detail(struct evhttp_request *req, int code, const char *reason,
                        const char *text) {
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"detail\":");
  buf_json_str(&b, text, strlen(text));
  buf_putc(&b, '}');
  send_buf(req, code, reason, &b);
  buf_free(&b);
}

/* One 422 with a single problem; loc is [where, field]. */
static void send_problem(struct evhttp_request *req, const char *where, const char *field,
                         const char *msg, const char *type) {
  struct buf b;
  buf_init(&b, 0);
  buf_printf(&b, "{\"detail\":[{\"loc\":[\"%s\",", where);
  buf_json_str(&b, field, strlen(field));
  buf_puts(&b, "],\"msg\":");
  buf_json_str(&b, msg, strlen(msg));
  buf_puts(&b, ",\"type\":");
  buf_json_str(&b, type, strlen(type));
  buf_puts(&b, "}]}");
  send_buf(req, 422, "Unprocessable Entity", &b);
  buf_free(&b);
}

static bool one_of(const char *s, const char *const *allowed) {
  for (int i = 0; s && allowed[i]; i++)
    if (strcmp(s, allowed[i]) == 0)
      return true;
  return false;
}

/* "unexpected value; permitted: 'a', 'b'" */
static void permitted(char *msg, size_t len, const char *const *allowed) {
  snprintf(msg, len, "unexpected value; permitted: ");
  for (int i = 0; allowed[i]; i++)
    snprintf(msg + strlen(msg), len - strlen(msg), "%s'%s'", i ? ", " : "", allowed[i]);
}

static bool admin_authorized(struct admin *s, struct evhttp_request *req) {
  const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
  const char *token = NULL;
  if (h && strncasecmp(h, "Bearer ", 7) == 0) {
    token = h + 7;
    while (*token == ' ')
      token++;
  }
  if (token && sig_secret_equal(token, s->cfg->admin_token))
    return true;
  evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
  send_detail(req, 401, "Unauthorized",
              h ? "Invalid admin token" : "Not authenticated: send Authorization: Bearer <ADMIN_TOKEN>");
  return false;
}


struct listing {
  struct buf b;
  int n;
};

static int list_one(void *ud, const struct store_event *e) {
  struct listing *l = ud;
  buf_putc(&l->b, l->n++ ? ',' : '[');
  buf_putc(&l->b, '{');
  store_event_json_fields(&l->b, e);
  buf_putc(&l->b, '}');
  return 0;
}

static void admin_list(struct admin *s, struct evhttp_request *req, const char *query) {
  struct evkeyvalq q;
  /* It initialises q even when the query cannot be parsed. */
  evhttp_parse_query_str(query ? query : "", &q);
  const char *status = evhttp_find_header(&q, "status");
  const char *limit_s = evhttp_find_header(&q, "limit");
  static const char *const statuses[] = {"pending", "running", "done", "retry_wait", "dead", NULL};
  long limit = ADMIN_LIST_DEFAULT;
  if (status && !one_of(status, statuses)) {
    char msg[160];
    permitted(msg, sizeof msg, statuses);
    send_problem(req, "query", "status", msg, "value_error.const");
    evhttp_clear_headers(&q);
    return;
  }
  if (limit_s) {
    char *end;
    limit = strtol(limit_s, &end, 10);
    if (!*limit_s || *end || limit < 1 || limit > ADMIN_LIST_MAX) {
      char msg[96];
      snprintf(msg, sizeof msg, "limit must be a whole number from 1 to %d", ADMIN_LIST_MAX);
      send_problem(req, "query", "limit", msg, "value_error.number");
      evhttp_clear_headers(&q);
      return;
    }
  }
  struct listing l;
  buf_init(&l.b, 0);
  l.n = 0;
  int rc = store_event_list(s->store, status, (int)limit, list_one, &l);
  evhttp_clear_headers(&q);
  if (rc != 0) {
    buf_free(&l.b);
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
    return;
  }
  buf_puts(&l.b, l.n ? "]" : "[]");
  send_buf(req, 200, "OK", &l.b);
  buf_free(&l.b);
}

/* A stored JSON text as a JSON value: as it is when it parses (it was
 * checked at intake), as a string otherwise, null when absent. */
static void put_json_value(struct buf *b, const char *text, size_t len) {
  if (!text) {
    buf_puts(b, "null");
    return;
  }
  char err[64];
  struct json *v = json_parse(text, len, err, sizeof err);
  if (v)
    buf_append(b, text, len);
  else
    buf_json_str(b, text, len);
  json_free(v);
}

static int attempt_one(void *ud, const struct store_attempt *a) {
  struct listing *l = ud;
  struct buf *b = &l->b;
  buf_puts(b, l->n++ ? ",{" : "{");
  buf_puts(b, "\"service\":");
  buf_json_str(b, a->service ? a->service : "", a->service ? strlen(a->service) : 0);
  buf_puts(b, ",\"method\":");
  buf_json_str(b, a->method ? a->method : "", a->method ? strlen(a->method) : 0);
  buf_puts(b, ",\"url\":");
  buf_json_str(b, a->url ? a->url : "", a->url ? strlen(a->url) : 0);
  buf_printf(b, ",\"status\":%d,\"error\":", a->status);
  if (a->error)
    buf_json_str(b, a->error, strlen(a->error));
  else
    buf_puts(b, "null");
  buf_printf(b, ",\"duration_ms\":%.1f,\"at\":%.3f,\"event_attempt\":%d}", a->duration_ms, a->at,
             a->event_attempt);
  return 0;
}

/* ids are "<source>_<hex>"; anything else cannot name an event. */
static bool id_ok(const char *id) {
  if (!*id || strlen(id) >= EVENT_ID_MAX)
    return false;
  for (const char *p = id; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '_' || *p == '-' || *p == ':' || *p == '.'))
      return false;
  return true;
}

static void send_not_found_event(struct evhttp_request *req, const char *id) {
  char msg[EVENT_ID_MAX + 32];
  snprintf(msg, sizeof msg, "Event not found: %s", id);
  send_detail(req, 404, "Not Found", msg);
}

static void admin_show(struct admin *s, struct evhttp_request *req, const char *id) {
  struct store_event e;
  int rc = store_event_get(s->store, id, &e);
  if (rc != 0) {
    if (rc > 0)
      send_not_found_event(req, id);
    else
      send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
    return;
  }
  struct listing l;
  buf_init(&l.b, 0);
  l.n = 0;
  buf_puts(&l.b, "{\"event\":{");
  store_event_json_fields(&l.b, &e);
  buf_puts(&l.b, ",\"payload\":");
  put_json_value(&l.b, e.payload, e.payload ? e.payload_len : 0);
  buf_puts(&l.b, ",\"result\":");
  put_json_value(&l.b, e.result, e.result ? strlen(e.result) : 0);
  buf_puts(&l.b, "},\"attempts\":[");
  rc = store_attempt_list(s->store, id, attempt_one, &l);
  buf_puts(&l.b, "]}");
  store_event_free(&e);
  if (rc != 0)
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
  else
    send_buf(req, 200, "OK", &l.b);
  buf_free(&l.b);
}

struct replay {
  struct admin *srv;
  struct evhttp_request *req;
  char id[EVENT_ID_MAX];
  enum ev_status was;
};

static void on_replay_committed(void *ud, bool committed) {
  struct replay *r = ud;
  if (!committed) {
    send_detail(r->req, 503, "Service Unavailable", "The replay could not be stored; try again");
  } else {
    engine_kick(r->srv->engine); /* the poll would find it too, a second later */
    log_info("event %s: replayed through the admin API (was %s)", r->id, store_status_name(r->was));
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"success\":true,\"status\":\"queued\",\"event_id\":\"%s\",\"previous_status\":\"%s\"}",
               r->id, store_status_name(r->was));
    send_buf(r->req, 202, "Accepted", &b);
    buf_free(&b);
  }
  free(r);
}

static void admin_replay(struct admin *s, struct evhttp_request *req, const char *id) {
  if (s->draining) {
    send_detail(req, 503, "Service Unavailable", "Shutting down; replay it after the restart");
    return;
  }
  struct store_event e;
  int rc = store_event_get(s->store, id, &e);
  if (rc > 0) {
    send_not_found_event(req, id);
    return;
  }
  if (rc < 0) {
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
    return;
  }
  enum ev_status was = e.status;
  store_event_free(&e);
  if (was == EV_RUNNING) {
    char msg[EVENT_ID_MAX + 64];
    snprintf(msg, sizeof msg, "Event is running now; replay it once it ends: %s", id);
    send_detail(req, 409, "Conflict", msg);
    return;
  }
  struct replay *r = calloc(1, sizeof *r);
  if (!r || queue_join_durable(s->queue) != 0 || store_event_requeue(s->store, id, wall_now()) != 1) {
    free(r);
    send_detail(req, 503, "Service Unavailable", "The replay could not be stored; try again");
    return;
  }
  r->srv = s;
  r->req = req;
  r->was = was;
  snprintf(r->id, sizeof r->id, "%s", id);
  /* Like a webhook: the answer goes out after the commit that holds it. */
  queue_after_commit(s->queue, on_replay_committed, r);
}

/* Routes under /api/v1/events. Every one of them is 404 while ADMIN_TOKEN
 * is unset, before anything else is looked at. */
static void handle_events(struct admin *s, struct evhttp_request *req, const char *path,
                          const char *query, enum evhttp_cmd_type cmd) {
  if (!s->cfg->admin_token || !*s->cfg->admin_token) {
    send_detail(req, 404, "Not Found", "Not Found");
    return;
  }
  const char *rest = path + strlen("/api/v1/events");
  char id[EVENT_ID_MAX + 1];
  enum { A_LIST, A_SHOW, A_REPLAY } what;
  if (!*rest) {
    what = A_LIST;
  } else {
    rest++; /* the '/' */
    const char *slash = strchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : strlen(rest);
    if (n == 0 || n >= sizeof id || (slash && strcmp(slash, "/replay") != 0)) {
      send_detail(req, 404, "Not Found", "Not Found");
      return;
    }
    memcpy(id, rest, n);
    id[n] = 0;
    what = slash ? A_REPLAY : A_SHOW;
  }
  enum evhttp_cmd_type want = what == A_REPLAY ? EVHTTP_REQ_POST : EVHTTP_REQ_GET;
  if (cmd != want && !(cmd == EVHTTP_REQ_HEAD && want == EVHTTP_REQ_GET)) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                      want == EVHTTP_REQ_GET ? "GET" : "POST");
    send_detail(req, 405, "Method Not Allowed", "Method Not Allowed");
    return;
  }
  if (!admin_authorized(s, req))
    return;
  if (what == A_LIST)
    admin_list(s, req, query);
  else if (!id_ok(id))
    send_not_found_event(req, id);
  else if (what == A_SHOW)
    admin_show(s, req, id);
  else
    admin_replay(s, req, id);
}

struct admin *admin_new(const struct config *cfg, struct store *store, struct queue *queue,
                        struct engine *engine) {
  struct admin *a = calloc(1, sizeof *a);
  if (!a)
    return NULL;
  a->cfg = cfg;
  a->store = store;
  a->queue = queue;
  a->engine = engine;
  return a;
}

void admin_free(struct admin *a) { free(a); }

void admin_drain(struct admin *a) { a->draining = true; }

bool admin_handle(struct admin *a, struct evhttp_request *req, const char *path, const char *query,
                  enum evhttp_cmd_type cmd) {
  if (strcmp(path, "/api/v1/events") == 0 || strncmp(path, "/api/v1/events/", 15) == 0) {
    handle_events(a, req, path, query, cmd);
    return true;
  }
  return false;
}
