/* Intake is one pass over the body: parse (strict), validate the fields the
 * route needs, canonicalise, hash. Nothing is answered before the batch that
 * holds the event commits; a request that must wait for its event parks a
 * struct answer, which the engine's watch or the WEBHOOK_WAIT_MS timer
 * completes, whichever comes first.
 *
 * Every answer on a webhook route goes through send_json with the request's
 * struct track, which is where ncghl_webhook_requests_total and
 * ncghl_webhook_duration_seconds are counted: one place, so no answer escapes the
 * metrics. The cheap refusals (rate limit, size, signature) come before the
 * body is parsed. */
#include "server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <math.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>

#include "admin.h"
#include "allowed.h"
#include "buf.h"
#include "clock.h"
#include "config.h"
#include "digest.h"
#include "engine.h"
#include "hash.h"
#include "install.h"
#include "json.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "openapi.h"
#include "pace.h"
#include "queue.h"
#include "reply.h"
#include "sig.h"
#include "store.h"

#define SERVICE_NAME "NowCerts GHL Integration API"
/* GHL's guidance: refuse a signed webhook whose timestamp is older than this. */
#define REPLAY_WINDOW_SECONDS 300

/* The inbound rate limiter forgets a client idle this long: by then its
 * bucket is full again, so forgetting it loses nothing. */
#define RL_IDLE_SECONDS 60.0
#define RL_BUCKETS 1024
/* At most this many client addresses are remembered (about 80 bytes each). */
#define RL_MAX_CLIENTS 4096

/* R_HOOK is a NowCerts REST-hook delivery: the nowcerts path with ?hook=. */
enum route { R_NOWCERTS, R_GHL, R_MANUAL, R_HOOK };
static const char *const route_source[] = {"nowcerts", "ghl", "manual", "nowcerts"};

/* NowCerts' Zapier REST-hook events we accept (ref/nowcerts/NOTES.md §6). */
static const char *const hook_names[] = {"CreateInsured",  "UpdateInsured",
                                         "CreateProspect", "UpdateProspect",
                                         "ConvertProspectToInsured",
                                         "CreatePolicy",   "UpdatePolicy",
                                         "CreateQuote",    "UpdateQuote",
                                         NULL};

struct server;
struct server_site;

/* Who is being answered on a webhook route, and since when: what the
 * webhook metrics need at the moment the answer goes out. site is NULL
 * while a GHL webhook has not found its tenant yet: it counts as tenant "". */
struct track {
  struct server *srv;
  struct server_site *site;
  enum route route;
  double t0; /* monotonic seconds at arrival */
};

struct rl_client {
  struct rl_client *next;
  double tokens;
  double last; /* monotonic seconds of the last request */
  char addr[48]; /* an IPv6 address in text fits */
};

struct answer {
  struct answer *prev, *next; /* the site's list of answers owed */
  struct server_site *site;
  struct track track; /* its route, and when it arrived */
  struct evhttp_request *req;
  struct evhttp_connection *conn;
  char id[EVENT_ID_MAX];
  enum store_put put;
  enum ev_status existing;
  struct engine_watch *watch;
  struct event *timer;
};

/* One tenant's intake (the single agency's is the site without a name):
 * everything an event touches from its arrival to its answer is the
 * site's, so no tenant's request ever reaches another's store. */
struct server_site {
  struct server_site *next;
  struct server *srv;
  char *name; /* NULL: the single agency, on the routes without /t/ */
  const struct config *cfg;
  struct store *store;
  struct queue *queue;
  struct engine *engine;
  struct lrt *rt;
  struct admin *admin;
  struct answer *owed;
  int nowed;
  bool paused; /* its tenant restarts: new events are answered 503 */
  struct metric *m_requests, *m_duration, *m_events;

  /* Events stored but answered 503 because the store failed after their
   * COMMIT (a failed fsync): undone at exit so a later copy is new. */
  char (*refused)[EVENT_ID_MAX];
  size_t nrefused, caprefused;

  char *degraded; /* JSON array of the last doctor run's ✗ reasons; NULL: none */
};

struct server {
  struct event_base *base;
  const struct config *cfg; /* the process's: listener, limits, GHL's keys */
  struct evhttp *http;
  struct sig_keys *ghl_keys; /* NULL when GHL_WEBHOOK_VERIFY is off */
  struct install *install;   /* the Marketplace install's routes; NULL: 503 there */
  struct pace *pace;         /* told how many answers are owed (pace.h); may be NULL */
  bool draining;
  struct server_site *sites;

  struct metrics *metrics;     /* the registry /metrics renders */
  struct metrics *own_metrics; /* ours until server_set_metrics hands one over */
  struct metric *m_log_dropped;
  /* Tenant "" (tenants configured): GHL webhooks before, or without, their
   * tenant. */
  struct metrics *unrouted;
  struct metric *m_requests, *m_duration, *m_ignored;

  struct rl_client *rl[RL_BUCKETS]; /* inbound rate limit, by client address */
  int rl_count;
  double rl_swept;

  struct evconnlistener *listener; /* evhttp's; paused when accept() fails */
  struct event *accept_resume;
  struct metric *m_accept_paused;
  double accept_warned; /* clock_mono() of the last warning; 0: none yet */
  struct server *next_listening;
};

/* libevent calls a listener's error callback with evhttp's own pointer, not
 * ours: the servers of this process that listen, to find the one whose
 * accept() failed. Only the loop's thread touches it. */
static struct server *listening;

/* How long the listener rests after accept() failed, and how often that is
 * said in the log while it keeps failing. */
#define ACCEPT_PAUSE_USEC 100000
#define ACCEPT_WARN_EVERY 60.0

static void track_answered(const struct track *t, int code) {
  struct metric *req = t->site ? t->site->m_requests : t->srv->m_requests;
  struct metric *dur = t->site ? t->site->m_duration : t->srv->m_duration;
  if (!req)
    return;
  char status[16];
  snprintf(status, sizeof status, "%d", code);
  const char *src = route_source[t->route];
  metric_inc(req, METRIC_LABELS(src, status));
  metric_observe(dur, METRIC_LABELS(src), clock_mono() - t->t0);
}

/* t is NULL for answers outside the webhook routes. */
static void send_json(struct evhttp_request *req, const struct track *t, int code,
                      const char *reason, const char *body, size_t len) {
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "application/json");
  struct evbuffer *out = evhttp_request_get_output_buffer(req);
  evbuffer_add(out, body, len);
  reply_send(req, code, reason);
  if (t)
    track_answered(t, code);
}

static void send_buf(struct evhttp_request *req, const struct track *t, int code,
                     const char *reason, struct buf *b) {
  if (!b->p) {
    send_json(req, t, 500, "Internal Server Error", "{\"detail\":\"out of memory\"}", 26);
    return;
  }
  send_json(req, t, code, reason, b->p, b->len);
}

/* {"detail": "<text>"} — FastAPI's shape for every plain error. */
static void send_detail(struct evhttp_request *req, const struct track *t, int code,
                        const char *reason, const char *text) {
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"detail\":");
  buf_json_str(&b, text, strlen(text));
  buf_putc(&b, '}');
  send_buf(req, t, code, reason, &b);
  buf_free(&b);
}

/* 422 in FastAPI/Pydantic's shape: a list of {loc, msg, type}. */
struct problems {
  struct buf b;
  int n;
};

/* loc is ["body"] or ["body", field]; a query parameter's is ["query", name]. */
static void problem_at(struct problems *p, const char *where, const char *field, const char *msg,
                       const char *type) {
  buf_puts(&p->b, p->n++ ? "," : "[");
  buf_printf(&p->b, "{\"loc\":[\"%s\"", where);
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

static void problem(struct problems *p, const char *field, const char *msg, const char *type) {
  problem_at(p, "body", field, msg, type);
}

static void send_problems(struct evhttp_request *req, const struct track *t, struct problems *p) {
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"detail\":");
  buf_append(&b, p->b.p, p->b.len);
  buf_puts(&b, "]}");
  send_buf(req, t, 422, "Unprocessable Entity", &b);
  buf_free(&b);
}

/* One 422 with a single problem. */
static void send_problem(struct evhttp_request *req, const struct track *t, const char *where,
                         const char *field, const char *msg, const char *type) {
  struct problems p;
  buf_init(&p.b, 0);
  p.n = 0;
  problem_at(&p, where, field, msg, type);
  send_problems(req, t, &p);
  buf_free(&p.b);
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
  if (allowed_has(allowed, json_type(v) == JSON_STRING ? json_str(v) : NULL))
    return;
  char msg[160];
  allowed_message(msg, sizeof msg, allowed);
  problem(p, field, msg, "value_error.const");
}

/* Checks the body against the route's model without answering, so the
 * same checks serve a request and server_check_webhook. On success returns
 * the event type to store (malloc'd); otherwise NULL with the 422 problems
 * in p, or (p->n == 0) a 400 sentence in detail. */
static char *check_body(enum route r, const struct json *root, struct problems *p, char *detail,
                        size_t dlen) {
  char *type = NULL;
  if (json_type(root) != JSON_OBJECT) {
    problem(p, NULL, "value is not a valid dict", "type_error.dict");
  } else if (r == R_NOWCERTS) {
    require_str(p, root, "event_type");
    require_obj(p, root, "data");
    if (!p->n)
      type = strdup(json_str(json_get(root, "event_type")));
  } else if (r == R_GHL) {
    /* GHL's own format names the event "type"; the source design's, "event". */
    const struct json *t = json_get(root, "type");
    const struct json *ev = json_get(root, "event");
    const struct json *name = t ? t : ev;
    if (!name)
      problem(p, "type", "field required (\"type\", or \"event\" in the source design's format)",
              "value_error.missing");
    else if (json_type(name) != JSON_STRING)
      problem(p, t ? "type" : "event", "str type expected", "type_error.str");
    else
      type = strdup(json_str(name));
  } else {
    static const char *const sources[] = {"nowcerts", "ghl", NULL};
    static const char *const entities[] = {"contact", "policy", "quote", NULL};
    static const char *const directions[] = {"to_ghl", "to_nowcerts", NULL};
    require_enum(p, root, "source", sources);
    require_enum(p, root, "entity_type", entities);
    require_enum(p, root, "direction", directions);
    require_obj(p, root, "data");
    if (!p->n) {
      const char *src = json_str(json_get(root, "source"));
      const char *dir = json_str(json_get(root, "direction"));
      if ((strcmp(src, "nowcerts") == 0) != (strcmp(dir, "to_ghl") == 0)) {
        snprintf(detail, dlen, "Invalid combination: source=%s direction=%s", src, dir);
        return NULL;
      }
      struct buf t;
      buf_init(&t, 0);
      buf_printf(&t, "%s:%s", json_str(json_get(root, "entity_type")), dir);
      type = buf_steal(&t);
    }
  }
  return type;
}

/* check_body for a request: on failure it has answered and returns NULL. */
static char *validate(struct evhttp_request *req, const struct track *tr, const struct json *root) {
  struct problems p;
  buf_init(&p.b, 0);
  p.n = 0;
  char detail[128] = "";
  char *type = check_body(tr->route, root, &p, detail, sizeof detail);
  if (!type && p.n)
    send_problems(req, tr, &p);
  else if (!type)
    send_detail(req, tr, 400, "Bad Request", detail);
  buf_free(&p.b);
  return type;
}

static void answer_unlink(struct answer *a) {
  struct server_site *s = a->site;
  if (a->prev)
    a->prev->next = a->next;
  else if (s->owed == a)
    s->owed = a->next;
  if (a->next)
    a->next->prev = a->prev;
  a->prev = a->next = NULL;
  s->nowed--;
  pace_owed(s->srv->pace, -1);
}

static void answer_free(struct answer *a) {
  if (a->timer)
    event_free(a->timer);
  if (a->watch)
    engine_unwatch(a->site->engine, a->watch);
  if (a->conn)
    evhttp_connection_set_closecb(a->conn, NULL, NULL);
  answer_unlink(a);
  free(a);
}

static void send_queued(struct answer *a) {
  struct buf b;
  buf_init(&b, 0);
  buf_printf(&b, "{\"success\":true,\"status\":\"queued\",\"event_id\":\"%s\"}", a->id);
  send_buf(a->req, &a->track, 202, "Accepted", &b);
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
    send_buf(a->req, &a->track, 200, "OK", &b);
  } else if (o->status == EV_DONE) {
    buf_puts(&b, "{\"success\":true,\"message\":");
    buf_json_str(&b, o->message, strlen(o->message));
    buf_printf(&b, ",\"event_id\":\"%s\",\"data\":%s}", a->id, o->data && *o->data ? o->data : "{}");
    send_buf(a->req, &a->track, 200, "OK", &b);
  } else if (o->status == EV_DEAD) {
    const char *err = o->error ? o->error : "failed";
    buf_printf(&b, "{\"success\":false,\"status\":\"dead\",\"event_id\":\"%s\",\"error\":", a->id);
    buf_json_str(&b, err, strlen(err));
    buf_putc(&b, '}');
    /* GHL retries any non-2xx twelve times and pauses endpoints that fail;
     * the event is kept for replay, so GHL is told 200. */
    if (a->track.route == R_GHL)
      send_buf(a->req, &a->track, 200, "OK", &b);
    else
      send_buf(a->req, &a->track, 502, "Bad Gateway", &b);
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

static void send_store_failed(struct server_site *s, struct evhttp_request *req,
                              const struct track *t);

static void remember_refused(struct server_site *s, const char *id) {
  if (s->nrefused == s->caprefused) {
    size_t cap = s->caprefused ? s->caprefused * 2 : 16;
    char(*v)[EVENT_ID_MAX] = realloc(s->refused, cap * sizeof *v);
    if (!v)
      return;
    s->refused = v;
    s->caprefused = cap;
  }
  snprintf(s->refused[s->nrefused++], EVENT_ID_MAX, "%s", id);
}

static int forget_refused(void *ud, struct store *st) {
  struct server_site *s = ud;
  for (size_t i = 0; i < s->nrefused; i++)
    if (store_event_forget(st, s->refused[i]) < 0)
      return -1;
  return 0;
}

int server_site_undo_refused(struct server_site *s) {
  if (!s || s->nrefused == 0)
    return 0;
  if (queue_undo(s->queue, forget_refused, s) != 0) {
    log_error("store failed: %zu events answered 503 stay in the file and will run; a copy of "
              "one of them is answered as a duplicate",
              s->nrefused);
    return -1;
  }
  log_info("store failed: none of the %zu events answered 503 is left in the file; a copy of "
           "one is new",
           s->nrefused);
  return 0;
}

static void on_committed(void *ud, bool committed) {
  struct answer *a = ud;
  struct server_site *s = a->site;
  if (!committed) {
    if (a->put == STORE_PUT_NEW && queue_failed(s->queue))
      remember_refused(s, a->id);
    send_store_failed(s, a->req, &a->track);
    answer_free(a);
    return;
  }
  if (a->put == STORE_PUT_DUPLICATE) {
    struct buf b;
    buf_init(&b, 0);
    if (a->track.route == R_GHL) {
      buf_printf(&b, "{\"success\":true,\"status\":\"duplicate\",\"event_id\":\"%s\"}", a->id);
      send_buf(a->req, &a->track, 200, "OK", &b);
    } else {
      buf_printf(&b, "Event already processed: %s", a->id);
      char *text = buf_steal(&b);
      send_detail(a->req, &a->track, 409, "Conflict", text);
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
  a->timer = evtimer_new(s->srv->base, on_wait_timeout, a);
  struct timeval tv = {s->cfg->webhook_wait_ms / 1000, (s->cfg->webhook_wait_ms % 1000) * 1000};
  evtimer_add(a->timer, &tv);
  a->conn = evhttp_request_get_connection(a->req);
  evhttp_connection_set_closecb(a->conn, on_conn_close, a);
}

/* ---- inbound rate limit ---------------------------------------------------- */

static unsigned rl_hash(const char *s) { return hash_str(s) % RL_BUCKETS; }

/* Forgets clients idle for RL_IDLE_SECONDS (their buckets are full again);
 * when that is not enough to make room, also the least recently seen. */
static void rl_sweep(struct server *s, double now, bool make_room) {
  for (int b = 0; b < RL_BUCKETS; b++)
    for (struct rl_client **p = &s->rl[b]; *p;) {
      if (now - (*p)->last >= RL_IDLE_SECONDS) {
        struct rl_client *gone = *p;
        *p = gone->next;
        free(gone);
        s->rl_count--;
      } else {
        p = &(*p)->next;
      }
    }
  s->rl_swept = now;
  if (!make_room || s->rl_count < RL_MAX_CLIENTS)
    return;
  struct rl_client **oldest = NULL;
  for (int b = 0; b < RL_BUCKETS; b++)
    for (struct rl_client **p = &s->rl[b]; *p; p = &(*p)->next)
      if (!oldest || (*p)->last < (*oldest)->last)
        oldest = p;
  if (oldest) {
    struct rl_client *gone = *oldest;
    *oldest = gone->next;
    free(gone);
    s->rl_count--;
  }
}

/* A token bucket per client address: RATE_LIMIT_PER_MINUTE requests at
 * once, refilled evenly over a minute. Returns 0 when the request may go on,
 * else the whole seconds after which it may be sent again. */
static long rl_check(struct server *s, struct evhttp_request *req) {
  int limit = s->cfg->rate_limit_per_minute;
  if (limit <= 0)
    return 0;
  char *addr = NULL;
  ev_uint16_t port = 0;
  struct evhttp_connection *conn = evhttp_request_get_connection(req);
  if (conn)
    evhttp_connection_get_peer(conn, &addr, &port);
  if (!addr)
    addr = "";
  double now = clock_mono();
  double rate = limit / 60.0;
  if (now - s->rl_swept >= RL_IDLE_SECONDS)
    rl_sweep(s, now, false);
  unsigned b = rl_hash(addr);
  struct rl_client *c = s->rl[b];
  while (c && strcmp(c->addr, addr) != 0)
    c = c->next;
  if (!c) {
    if (s->rl_count >= RL_MAX_CLIENTS)
      rl_sweep(s, now, true);
    c = calloc(1, sizeof *c);
    if (!c)
      return 0; /* out of memory is no reason to refuse a webhook */
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->tokens = limit;
    c->last = now;
    c->next = s->rl[b];
    s->rl[b] = c;
    s->rl_count++;
  }
  c->tokens += (now - c->last) * rate;
  if (c->tokens > limit)
    c->tokens = limit;
  c->last = now;
  if (c->tokens >= 1) {
    c->tokens -= 1;
    return 0;
  }
  long wait = (long)ceil((1 - c->tokens) / rate);
  return wait < 1 ? 1 : wait;
}

/* ---- webhook intake -------------------------------------------------------- */

/* The secret checks that can run on the raw bytes; 0 when the request may
 * go on, else it has been answered. */
static int check_signatures(struct server *s, struct evhttp_request *req, const struct track *t,
                            const char *body, size_t len) {
  struct server_site *site = t->site;
  struct evkeyvalq *h = evhttp_request_get_input_headers(req);
  enum route r = t->route;
  if (r == R_GHL && s->ghl_keys) {
    enum sig_result v = sig_verify_ghl(s->ghl_keys, body, len, evhttp_find_header(h, "X-GHL-Signature"),
                                       evhttp_find_header(h, "x-wh-signature"));
    if (v != SIG_OK) {
      log_warn("ghl webhook refused: %s signature", v == SIG_MISSING ? "missing" : "invalid");
      send_detail(req, t, 401, "Unauthorized",
                  v == SIG_MISSING ? "Missing webhook signature" : "Invalid webhook signature");
      return -1;
    }
  }
  /* NowCerts routes always know their tenant by now (path or the single
   * agency): the secret is that tenant's. */
  const char *secret = site ? site->cfg->nowcerts_webhook_secret : NULL;
  if ((r == R_NOWCERTS || r == R_HOOK) && secret && *secret) {
    enum sig_result v = sig_verify_hmac(secret, body, len, evhttp_find_header(h, "X-NCGHL-Signature"));
    if (v != SIG_OK) {
      log_warn("nowcerts webhook refused: %s X-NCGHL-Signature",
               v == SIG_MISSING ? "missing" : "invalid");
      send_detail(req, t, 401, "Unauthorized",
                  v == SIG_MISSING ? "Missing X-NCGHL-Signature (sha256=<hex HMAC of the body>)"
                                   : "Invalid X-NCGHL-Signature");
      return -1;
    }
  }
  return 0;
}

static void send_store_failed(struct server_site *s, struct evhttp_request *req,
                              const struct track *t) {
  const char *why = queue_failed(s->queue);
  if (!why) {
    send_detail(req, t, 503, "Service Unavailable", "The event could not be stored; try again");
    return;
  }
  char msg[400];
  snprintf(msg, sizeof msg, "The store failed (%s); the service restarts. Try again shortly", why);
  send_detail(req, t, 503, "Service Unavailable", msg);
}

static void owe(struct answer *a);
static struct server_site *server_site_by_location(const struct server *s, const char *loc);

/* An event that arrived while another process held the write lock: its
 * request waits (not the loop) until a batch can be opened, but not for
 * ever: past INTAKE_LOCK_WAIT_S (a backfill or replay holds it for moments,
 * not seconds) it is answered 503 with Retry-After, nothing
 * stored, so the sender tries again and its copy is accepted as new. */
#define INTAKE_LOCK_WAIT_S 10
struct deferred {
  struct answer *a;
  struct evhttp_connection *conn;
  struct event *timer;
  char *type, *payload;
  size_t len;
};

static void deferred_free(struct deferred *d) {
  if (d->conn)
    evhttp_connection_set_closecb(d->conn, NULL, NULL);
  if (d->timer)
    event_free(d->timer);
  free(d->type);
  free(d->payload);
  free(d);
}

/* The lock is still held: answer now; the queue's callback, when it comes,
 * finds no request and only frees. */
static void on_deferred_timeout(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct deferred *d = arg;
  struct answer *a = d->a;
  if (!a->req)
    return;
  if (d->conn) {
    evhttp_connection_set_closecb(d->conn, NULL, NULL);
    d->conn = NULL;
  }
  struct evhttp_request *req = a->req;
  a->req = NULL;
  log_info("intake %s: another process still holds the store's write lock; answered 503", a->id);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "2");
  send_detail(req, &a->track, 503, "Service Unavailable",
              "The store is busy (another process holds it); nothing was stored. Try again shortly");
}

static void on_deferred_close(struct evhttp_connection *conn, void *arg) {
  (void)conn;
  struct deferred *d = arg;
  d->conn = NULL; /* the request goes with it: nothing was acknowledged */
  d->a->req = NULL;
}

static void on_writable(void *ud, bool ok) {
  struct deferred *d = ud;
  struct answer *a = d->a;
  struct server_site *s = a->site;
  if (!a->req) {
    free(a);
    deferred_free(d);
    return;
  }
  if (ok && engine_submit(s->engine, a->id, route_source[a->track.route], d->type, d->payload,
                          d->len, &a->put, &a->existing) == 0) {
    deferred_free(d);
    owe(a);
    return;
  }
  if (ok && queue_busy(s->queue)) {
    queue_when_writable(s->queue, on_writable, d);
    return;
  }
  struct evhttp_request *req = a->req;
  struct track t = a->track;
  free(a);
  deferred_free(d);
  send_store_failed(s, req, &t);
}

static int defer_submit(struct answer *a, const char *type, const char *payload, size_t len) {
  struct deferred *d = calloc(1, sizeof *d);
  if (!d)
    return -1;
  d->a = a;
  d->type = strdup(type);
  d->payload = malloc(len + 1);
  if (!d->type || !d->payload) {
    free(d->type);
    free(d->payload);
    free(d);
    return -1;
  }
  memcpy(d->payload, payload, len);
  d->payload[len] = 0;
  d->len = len;
  d->conn = evhttp_request_get_connection(a->req);
  evhttp_connection_set_closecb(d->conn, on_deferred_close, d);
  d->timer = evtimer_new(a->site->srv->base, on_deferred_timeout, d);
  if (d->timer) {
    struct timeval tv = {INTAKE_LOCK_WAIT_S, 0};
    evtimer_add(d->timer, &tv);
  }
  log_debug("intake %s: the write lock is held by another process; waiting for it", a->id);
  queue_when_writable(a->site->queue, on_writable, d);
  return 0;
}

/* Stores the event (payload as given, id over `canon`) and parks its answer
 * until the commit. Takes nothing over from the caller. */
static void submit(struct server_site *s, struct evhttp_request *req, const struct track *t,
                   const char *type, const char *payload, size_t len, const struct buf *canon) {
  if (s->paused) {
    /* Nothing stored: the sender's next try reaches the restarted tenant. */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "2");
    send_detail(req, t, 503, "Service Unavailable",
                "This tenant is restarting on its new configuration; send it again shortly");
    return;
  }
  struct answer *a = calloc(1, sizeof *a);
  if (!a) {
    send_detail(req, t, 500, "Internal Server Error", "out of memory");
    return;
  }
  a->site = s;
  a->req = req;
  a->track = *t;
  digest_event_id(route_source[t->route], canon->p ? canon->p : "", canon->len, a->id);
  log_debug("intake %s %s %s (%zu bytes)", route_source[t->route], type, a->id, len);
  if (engine_submit(s->engine, a->id, route_source[t->route], type, payload, len, &a->put,
                    &a->existing) != 0) {
    if (queue_busy(s->queue) && defer_submit(a, type, payload, len) == 0)
      return;
    free(a);
    send_store_failed(s, req, t);
    return;
  }
  owe(a);
}

static void owe(struct answer *a) {
  struct server_site *s = a->site;
  a->next = s->owed;
  if (s->owed)
    s->owed->prev = a;
  s->owed = a;
  s->nowed++;
  pace_owed(s->srv->pace, 1);
  queue_after_commit(s->queue, on_committed, a);
}

/* A REST hook's stored payload {"hook":<name>,"data":<body>} and the
 * canonical form its id is taken over. Returns 0, or non-zero when out of
 * memory. */
static int hook_wrap(const char *hook, const struct json *root, const char *body, size_t len,
                     struct buf *canon, struct buf *payload) {
  /* The wrapper's canonical form, written directly: "data" sorts before
   * "hook", and a hook name is plain letters that need no escaping. */
  int rc = buf_puts(canon, "{\"data\":");
  rc |= json_canonical(root, canon);
  rc |= buf_printf(canon, ",\"hook\":\"%s\"}", hook);
  rc |= buf_printf(payload, "{\"hook\":\"%s\",\"data\":", hook);
  rc |= buf_append(payload, body, len);
  rc |= buf_putc(payload, '}');
  return rc;
}

/* NowCerts REST hook (?hook=<EventName>): the delivery's shape is not
 * documented, so any JSON object or array is taken as it is, wrapped as
 * {"hook":<name>,"data":<body>} for the mappings to normalise. */
static void handle_hook(struct server_site *s, struct evhttp_request *req, const struct track *t,
                        const char *hook, const struct json *root, const char *body, size_t len) {
  if (json_type(root) != JSON_OBJECT && json_type(root) != JSON_ARRAY) {
    send_problem(req, t, "body", NULL, "a REST-hook body must be a JSON object or array",
                 "type_error.dict");
    return;
  }
  struct buf canon, payload;
  buf_init(&canon, 0);
  buf_init(&payload, 0);
  int rc = hook_wrap(hook, root, body, len, &canon, &payload);
  char type[64];
  snprintf(type, sizeof type, "hook:%s", hook);
  if (rc != 0)
    send_detail(req, t, 500, "Internal Server Error", "out of memory");
  else
    submit(s, req, t, type, payload.p, payload.len, &canon);
  buf_free(&canon);
  buf_free(&payload);
}

static void handle_event(struct server *s, struct evhttp_request *req, const struct track *t,
                         const char *hook) {
  enum route r = t->route;
  if (r == R_HOOK && !allowed_has(hook_names, hook)) {
    char msg[320];
    allowed_message(msg, sizeof msg, hook_names);
    send_problem(req, t, "query", "hook", msg, "value_error.const");
    return;
  }
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t len = evbuffer_get_length(in);
  if ((long)len > s->cfg->max_body_bytes) {
    char msg[96];
    snprintf(msg, sizeof msg, "Request body too large (limit %ld bytes)", s->cfg->max_body_bytes);
    send_detail(req, t, 413, "Payload Too Large", msg);
    return;
  }
  const char *body = (const char *)evbuffer_pullup(in, -1);
  if (!body)
    body = "";
  if (check_signatures(s, req, t, body, len) != 0)
    return;
  char err[160];
  struct json *root = json_parse(body, len, err, sizeof err);
  if (!root) {
    char msg[200];
    snprintf(msg, sizeof msg, "Invalid JSON: %s", err);
    send_problem(req, t, "body", NULL, msg, "value_error.jsondecode");
    return;
  }
  if (r == R_HOOK) {
    handle_hook(t->site, req, t, hook, root, body, len);
    json_free(root);
    return;
  }
  char *type = validate(req, t, root);
  if (!type) {
    json_free(root);
    return;
  }
  struct track routed = *t;
  if (!routed.site && r == R_GHL) {
    /* Several tenants, a GHL webhook on the plain route: its locationId
     * names the tenant. A location no tenant has is another sub-account's,
     * left alone as the single agency leaves it (SPEC 10). */
    const char *loc = json_str(json_get(root, "locationId"));
    routed.site = loc ? server_site_by_location(s, loc) : NULL;
    if (!routed.site) {
      metric_inc(s->m_ignored, METRIC_LABELS("other_location"));
      struct buf b;
      buf_init(&b, 0);
      buf_printf(&b, "{\"success\":true,\"status\":\"ignored\",\"message\":");
      char msg[300];
      snprintf(msg, sizeof msg, "GHL %.60s for location %.80s: no tenant has this GHL_LOCATION_ID",
               type, loc ? loc : "(none)");
      buf_json_str(&b, msg, strlen(msg));
      buf_putc(&b, '}');
      send_buf(req, t, 200, "OK", &b);
      buf_free(&b);
      free(type);
      json_free(root);
      return;
    }
    t = &routed;
  }
  if (r == R_GHL && s->ghl_keys) {
    /* Signed bodies carry their own time; an old one is a replay. */
    time_t ts = sig_parse_time(json_str(json_get(root, "timestamp")));
    if (ts > 0 && ts < time(NULL) - REPLAY_WINDOW_SECONDS) {
      free(type);
      json_free(root);
      send_detail(req, t, 401, "Unauthorized",
                  "Webhook timestamp is older than 5 minutes (replay refused)");
      return;
    }
  }
  struct buf canon;
  buf_init(&canon, 0);
  if (json_canonical(root, &canon) != 0)
    send_detail(req, t, 500, "Internal Server Error", "out of memory");
  else
    submit(t->site, req, t, type, body, len, &canon);
  free(type);
  json_free(root);
  buf_free(&canon);
}

/* ---- sites ------------------------------------------------------------------ */

static struct server_site *single_site(const struct server *s) {
  for (struct server_site *p = s->sites; p; p = p->next)
    if (!p->name)
      return p;
  return NULL;
}

static struct server_site *site_by_name(const struct server *s, const char *name) {
  for (struct server_site *p = s->sites; p; p = p->next)
    if (p->name && strcmp(p->name, name) == 0)
      return p;
  return NULL;
}

static struct server_site *server_site_by_location(const struct server *s, const char *loc) {
  for (struct server_site *p = s->sites; p; p = p->next)
    if (p->name && p->cfg->ghl_location_id && strcmp(p->cfg->ghl_location_id, loc) == 0)
      return p;
  return NULL;
}

/* "a, b, c": the tenants an answer may name, in the order they were added. */
static void site_names(const struct server *s, struct buf *b) {
  for (const struct server_site *p = s->sites; p; p = p->next)
    if (p->name)
      buf_printf(b, "%s%s", b->len ? ", " : "", p->name);
}

/* ---- health, metrics, OpenAPI ---------------------------------------------- */

/* Whether the site's store takes writes; *failed says why intake stopped. */
static bool site_ok(const struct server_site *site, const char **failed) {
  *failed = queue_failed(site->queue);
  if (!*failed && queue_disk_full(site->queue))
    *failed = "the disk is full: the last batch could not be written";
  return !*failed && store_writable(site->store);
}

/* One site's part of /health: store, running events, mappings, the last
 * reload and the doctor's reasons. */
static void health_site(struct buf *b, const struct server_site *site) {
  const char *failed;
  bool ok = site_ok(site, &failed);
  buf_printf(b, "\"store\":{\"writable\":%s,\"schema_version\":%d", ok ? "true" : "false",
             store_schema_version(site->store));
  if (failed) {
    /* Why intake stopped: the file is no longer trusted until a restart. */
    buf_puts(b, ",\"failed\":");
    buf_json_str(b, failed, strlen(failed));
  }
  buf_printf(b, "},\"events_running\":%d,\"mappings\":{\"version\":\"%s\",\"dir\":",
             engine_running(site->engine), lrt_version(site->rt));
  buf_json_str(b, site->cfg->mappings_dir, strlen(site->cfg->mappings_dir));
  /* Kept apart from "mappings": a failed reload changes nothing there. */
  bool reload_ok = false;
  double reload_at = 0;
  const char *msg = lrt_last_reload(site->rt, &reload_ok, &reload_at);
  char at[32] = "";
  time_t secs = (time_t)reload_at;
  struct tm tm;
  if (gmtime_r(&secs, &tm))
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
  buf_printf(b, "},\"last_reload\":{\"result\":\"%s\",\"at\":\"%s\",\"message\":",
             reload_ok ? "ok" : "error", at);
  buf_json_str(b, msg ? msg : "", msg ? strlen(msg) : 0);
  buf_putc(b, '}');
  if (site->degraded)
    buf_printf(b, ",\"reasons\":%s", site->degraded);
}

/* The single agency's answer is the site's fields at the top level; with
 * tenants, each tenant's are under "tenants" with its own status, and the
 * service is unhealthy when one tenant's store is, degraded when one
 * tenant is. */
static void handle_health(struct server *s, struct evhttp_request *req) {
  struct server_site *one = single_site(s);
  bool ok = true, degraded = false;
  for (struct server_site *p = s->sites; p; p = p->next) {
    const char *failed;
    ok = site_ok(p, &failed) && ok;
    degraded = degraded || p->degraded;
  }
  struct buf b;
  buf_init(&b, 0);
  /* degraded: serving, but a doctor check failed (server_set_degraded). */
  buf_printf(&b,
             "{\"status\":\"%s\",\"service\":\"" SERVICE_NAME "\",\"version\":\"" NCGHL_VERSION
             "\",",
             !ok ? "unhealthy" : degraded ? "degraded" : "healthy");
  if (one) {
    health_site(&b, one);
  } else {
    buf_puts(&b, "\"tenants\":{");
    for (struct server_site *p = s->sites; p; p = p->next) {
      const char *failed;
      bool tok = site_ok(p, &failed);
      buf_json_str(&b, p->name, strlen(p->name));
      buf_printf(&b, ":{\"status\":\"%s\",\"ghl_location_id\":",
                 !tok ? "unhealthy" : p->degraded ? "degraded" : "healthy");
      const char *loc = p->cfg->ghl_location_id ? p->cfg->ghl_location_id : "";
      buf_json_str(&b, loc, strlen(loc));
      buf_putc(&b, ',');
      health_site(&b, p);
      buf_puts(&b, p->next ? "}," : "}");
    }
    buf_putc(&b, '}');
  }
  buf_putc(&b, '}');
  send_buf(req, NULL, ok ? 200 : 503, ok ? "OK" : "Service Unavailable", &b);
  buf_free(&b);
}

static void handle_metrics(struct server *s, struct evhttp_request *req) {
  /* From the counts each store keeps in memory (seeded once at start): a
   * scrape never scans the events. */
  for (struct server_site *p = s->sites; p; p = p->next) {
    long counts[EV_STATUS_COUNT];
    store_counts(p->store, counts);
    for (int i = 0; i < EV_STATUS_COUNT; i++)
      metric_set(p->m_events, METRIC_LABELS(store_status_name((enum ev_status)i)),
                 (double)(counts[i] > 0 ? counts[i] : 0));
  }
  /* The logger counts its drops itself (it has no registry); bring the
   * counter up to date at each scrape. */
  double dropped = (double)log_dropped();
  metric_add(s->m_log_dropped, METRIC_NO_LABELS, dropped - metric_value(s->m_log_dropped, METRIC_NO_LABELS));
  struct buf b;
  buf_init(&b, 0);
  if (metrics_render(s->metrics, &b) != 0 || !b.p) {
    buf_free(&b);
    send_detail(req, NULL, 500, "Internal Server Error", "out of memory");
    return;
  }
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8");
  evbuffer_add(evhttp_request_get_output_buffer(req), b.p, b.len);
  reply_send(req, 200, "OK");
  buf_free(&b);
}

static void handle_openapi(struct evhttp_request *req) {
  send_json(req, NULL, 200, "OK", openapi_json, openapi_json_len);
}

/* ---- routing --------------------------------------------------------------- */

enum handler { H_HEALTH, H_METRICS, H_OPENAPI, H_EVENT };

static bool has_param(const char *query, const char *name, char *value, size_t len) {
  if (!query)
    return false;
  struct evkeyvalq q;
  if (evhttp_parse_query_str(query, &q) != 0) {
    evhttp_clear_headers(&q);
    return false;
  }
  const char *v = evhttp_find_header(&q, name);
  if (v)
    snprintf(value, len, "%s", v);
  evhttp_clear_headers(&q);
  return v != NULL;
}

static void send_rate_limited(struct server *s, struct evhttp_request *req, const struct track *t,
                              long wait) {
  char secs[24], msg[128];
  snprintf(secs, sizeof secs, "%ld", wait);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", secs);
  snprintf(msg, sizeof msg, "Rate limit exceeded (%d requests a minute); retry after %ld s",
           s->cfg->rate_limit_per_minute, wait);
  send_detail(req, t, 429, "Too Many Requests", msg);
}

/* The Marketplace install's routes (install.c) share the inbound rate
 * limit: each forged code would cost a request to GHL's token endpoint. */
static void route_install(struct server *s, struct evhttp_request *req, const char *path,
                          const char *query, enum evhttp_cmd_type cmd) {
  if (s->draining) {
    send_detail(req, NULL, 503, "Service Unavailable", "Shutting down; try again shortly");
    return;
  }
  long wait = rl_check(s, req);
  if (wait > 0) {
    send_rate_limited(s, req, NULL, wait);
    return;
  }
  install_handle(s->install, req, path, query, cmd);
}

static void send_unknown_tenant(struct evhttp_request *req, const char *name) {
  char msg[160];
  snprintf(msg, sizeof msg, "Unknown tenant '%.64s'", name);
  send_detail(req, NULL, 404, "Not Found", msg);
}

/* With tenants configured, a route that belongs to one tenant was asked
 * for without naming it (admin API). */
static void send_which_tenant(struct server *s, struct evhttp_request *req) {
  struct buf names, msg;
  buf_init(&names, 0);
  buf_init(&msg, 0);
  site_names(s, &names);
  buf_printf(&msg,
             "Several tenants are configured (%s): add ?tenant=<name> or use /t/<name>/api/v1/...",
             names.p ? names.p : "");
  send_detail(req, NULL, 400, "Bad Request", msg.p ? msg.p : "Several tenants are configured");
  buf_free(&names);
  buf_free(&msg);
}

static void on_request(struct evhttp_request *req, void *arg) {
  struct server *s = arg;
  double t0 = clock_mono();
  const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
  const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
  const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
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

  /* The Marketplace install is the process's: the token's location says
   * which tenant it is for. */
  if (install_owns(clean)) {
    route_install(s, req, clean, query, cmd);
    return;
  }

  /* Which tenant: the single agency's site, or with tenants the one the
   * path (/t/<name>/...) or ?tenant= names; none yet for a GHL webhook on
   * the plain route, which its locationId routes. */
  struct server_site *site = single_site(s);
  const char *rest = clean;
  bool prefixed = false;
  if (!site && strncmp(clean, "/t/", 3) == 0) {
    char name[64];
    size_t k = strcspn(clean + 3, "/");
    snprintf(name, sizeof name, "%.*s", (int)(k < sizeof name ? k : sizeof name - 1), clean + 3);
    site = site_by_name(s, name);
    if (!site) {
      send_unknown_tenant(req, name);
      return;
    }
    rest = clean + 3 + k;
    prefixed = true;
  } else if (!site) {
    char name[64];
    if (has_param(query, "tenant", name, sizeof name) && !(site = site_by_name(s, name))) {
      send_unknown_tenant(req, name);
      return;
    }
  }

  if (site) {
    if (admin_handle(site->admin, req, rest, query, cmd))
      return;
  } else if (admin_is_route(rest)) {
    /* The page is the same for every tenant (it asks the API with
     * ?tenant=); the API answers only for a tenant named. */
    struct admin *any = s->sites ? s->sites->admin : NULL;
    if (!any)
      send_detail(req, NULL, 404, "Not Found", "Not Found");
    else if (strcmp(rest, "/ui") == 0 || strncmp(rest, "/ui/", 4) == 0)
      admin_handle(any, req, rest, query, cmd);
    else if (admin_check_token(any, req))
      send_which_tenant(s, req);
    return;
  }

  static const struct {
    const char *path;
    enum evhttp_cmd_type method;
    enum handler handler;
    enum route route; /* H_EVENT only */
  } routes[] = {
      {"/health", EVHTTP_REQ_GET, H_HEALTH, R_NOWCERTS},
      {"/metrics", EVHTTP_REQ_GET, H_METRICS, R_NOWCERTS},
      {"/openapi.json", EVHTTP_REQ_GET, H_OPENAPI, R_NOWCERTS},
      {"/api/v1/webhooks/nowcerts", EVHTTP_REQ_POST, H_EVENT, R_NOWCERTS},
      {"/api/v1/webhooks/ghl", EVHTTP_REQ_POST, H_EVENT, R_GHL},
      {"/api/v1/sync/manual", EVHTTP_REQ_POST, H_EVENT, R_MANUAL},
  };
  for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
    if (strcmp(rest, routes[i].path) != 0)
      continue;
    if (prefixed && routes[i].handler != H_EVENT)
      break; /* /health and /metrics are the process's, not a tenant's */
    bool head = cmd == EVHTTP_REQ_HEAD && routes[i].method == EVHTTP_REQ_GET;
    if (cmd != routes[i].method && !head) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                        routes[i].method == EVHTTP_REQ_GET ? "GET" : "POST");
      send_detail(req, NULL, 405, "Method Not Allowed", "Method Not Allowed");
      return;
    }
    switch (routes[i].handler) {
    case H_HEALTH:
      handle_health(s, req);
      return;
    case H_METRICS:
      handle_metrics(s, req);
      return;
    case H_OPENAPI:
      handle_openapi(req);
      return;
    case H_EVENT:
      break;
    }
    char hook[64] = "";
    struct track t = {s, site, routes[i].route, t0};
    if (t.route == R_NOWCERTS && has_param(query, "hook", hook, sizeof hook))
      t.route = R_HOOK;
    if (!site && t.route != R_GHL) {
      /* Only GHL says whose a webhook is (locationId); NowCerts and manual
       * syncs must come on their tenant's path. */
      char msg[200];
      snprintf(msg, sizeof msg,
               "Several tenants are configured: send this to /t/<tenant>%s", routes[i].path);
      send_detail(req, &t, 404, "Not Found", msg);
      return;
    }
    if (s->draining) {
      send_detail(req, &t, 503, "Service Unavailable", "Shutting down; send it again shortly");
      return;
    }
    long wait = rl_check(s, req);
    if (wait > 0) {
      send_rate_limited(s, req, &t, wait);
      return;
    }
    handle_event(s, req, &t, hook);
    return;
  }
  send_detail(req, NULL, 404, "Not Found", "Not Found");
}

/* The families a site counts into, in registry (or tenant view) m. */
static void site_metrics(struct server_site *p, struct metrics *m) {
  p->m_requests = metrics_counter(m, "ncghl_webhook_requests_total",
                                  "Webhook and manual-sync requests answered, by HTTP status.",
                                  METRIC_LABELS("source", "status"));
  p->m_duration = metrics_histogram(m, "ncghl_webhook_duration_seconds",
                                    "Time from a webhook's arrival to its answer.",
                                    METRIC_LABELS("source"), metrics_webhook_buckets,
                                    metrics_webhook_nbuckets);
  p->m_events = metrics_gauge(m, "ncghl_events", "Stored events by status, kept as they change.",
                              METRIC_LABELS("status"));
}

/* The process's own families, in registry m. */
static void use_metrics(struct server *s, struct metrics *m) {
  s->metrics = m;
  s->m_log_dropped = metrics_counter(m, "ncghl_log_dropped_total",
                                     "Log lines dropped because the log writer fell behind.",
                                     METRIC_NO_LABELS);
  s->m_accept_paused = metrics_counter(
      m, "ncghl_http_accept_paused_total",
      "Times the listener paused because a new connection could not be accepted "
      "(out of file descriptors).",
      METRIC_NO_LABELS);
}

/* Out of descriptors (EMFILE, ENFILE) the listening socket stays readable
 * and libevent would call accept() again at once, for ever: a core spent
 * and a warning per try, while the store and the upstream calls starve for
 * descriptors too. The listener rests instead; clients wait in the
 * kernel's backlog and are taken as connections close. */
static void on_accept_error(struct evconnlistener *l, void *arg) {
  (void)arg;
  int err = EVUTIL_SOCKET_ERROR();
  struct server *s = listening;
  while (s && s->listener != l)
    s = s->next_listening;
  if (!s)
    return;
  evconnlistener_disable(l);
  struct timeval tv = {0, ACCEPT_PAUSE_USEC};
  event_add(s->accept_resume, &tv);
  metric_inc(s->m_accept_paused, METRIC_NO_LABELS);
  double now = clock_mono();
  if (s->accept_warned == 0 || now - s->accept_warned >= ACCEPT_WARN_EVERY) {
    s->accept_warned = now;
    struct rlimit rl = {0, 0};
    getrlimit(RLIMIT_NOFILE, &rl);
    log_warn("cannot accept a connection: %s (open descriptors limit %llu); new connections wait "
             "in the kernel's queue and are taken as others close (said at most once a minute; "
             "ncghl_http_accept_paused_total counts the pauses)",
             evutil_socket_error_to_string(err), (unsigned long long)rl.rlim_cur);
  }
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct server *s = arg;
  evconnlistener_enable(s->listener);
}

/* Client connections read and answer at intake priority (queue.h). */
static struct bufferevent *make_bev(struct event_base *base, void *arg) {
  (void)arg;
  struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
  if (bev)
    bufferevent_priority_set(bev, QUEUE_PRIO_INTAKE);
  return bev;
}

struct server *server_new(struct event_base *base, const struct config *cfg, struct metrics *m,
                          char *err, size_t errlen) {
  struct server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->base = base;
  s->cfg = cfg;
  s->rl_swept = clock_mono();
  if (!m)
    m = s->own_metrics = metrics_new(); /* out of memory before: count into our own */
  s->http = m ? evhttp_new(base) : NULL;
  if (!s->http) {
    snprintf(err, errlen, "cannot create the HTTP server");
    metrics_free(s->own_metrics);
    free(s);
    return NULL;
  }
  use_metrics(s, m);
  /* Every method reaches our handler, so a wrong one gets a JSON 405 rather
   * than libevent's own page. Bodies up to 8x the limit are read and refused
   * with a JSON 413; beyond that libevent closes the connection itself. */
  evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                          EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                          EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
  evhttp_set_max_body_size(s->http, cfg->max_body_bytes * 8 + 65536);
  evhttp_set_max_headers_size(s->http, 64 * 1024);
  evhttp_set_timeout(s->http, 60);
  evhttp_set_default_content_type(s->http, "application/json");
  evhttp_set_gencb(s->http, on_request, s);
  evhttp_set_bevcb(s->http, make_bev, s);
  if (cfg->ghl_webhook_verify) {
    s->ghl_keys = sig_keys_load(cfg->ghl_webhook_ed25519_key, cfg->ghl_webhook_rsa_key, err, errlen);
    if (!s->ghl_keys) {
      char why[400];
      snprintf(why, sizeof why, "GHL_WEBHOOK_ED25519_KEY/GHL_WEBHOOK_RSA_KEY: %s", err);
      snprintf(err, errlen, "%s", why);
      evhttp_free(s->http);
      metrics_free(s->own_metrics);
      free(s);
      return NULL;
    }
  }
  /* Resolved here first, so a HOST that names nothing is said so on one
   * line (libevent would log its own getaddrinfo warning, then fail). */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE};
  struct addrinfo *ai = NULL;
  int gai = getaddrinfo(cfg->host, NULL, &hints, &ai);
  if (ai)
    freeaddrinfo(ai);
  errno = 0;
  struct evhttp_bound_socket *bound =
      gai == 0 ? evhttp_bind_socket_with_handle(s->http, cfg->host, (ev_uint16_t)cfg->port) : NULL;
  if (bound) {
    s->listener = evhttp_bound_socket_get_listener(bound);
    s->accept_resume = evtimer_new(base, on_accept_resume, s);
    if (s->accept_resume) {
      evconnlistener_set_error_cb(s->listener, on_accept_error);
      s->next_listening = listening;
      listening = s;
    }
  }
  if (!bound) {
    if (gai != 0)
      snprintf(err, errlen, "HOST: \"%s\" is not an address this machine can listen on: %s", cfg->host,
               gai_strerror(gai));
    else
      snprintf(err, errlen, "HOST/PORT: cannot listen on %s:%d: %s", cfg->host, cfg->port,
               errno == EADDRINUSE ? "the port is in use (another ncghl, or another program)"
               : errno ? strerror(errno) : "address in use or not available");
    evhttp_free(s->http);
    sig_keys_free(s->ghl_keys);
    metrics_free(s->own_metrics);
    free(s);
    return NULL;
  }
  return s;
}

struct server_site *server_site_add(struct server *s, const char *tenant,
                                    const struct config *cfg, struct store *store,
                                    struct queue *queue, struct engine *engine, struct lrt *rt,
                                    struct metrics *m) {
  struct server_site *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->srv = s;
  p->cfg = cfg;
  p->store = store;
  p->queue = queue;
  p->engine = engine;
  p->rt = rt;
  p->name = tenant ? strdup(tenant) : NULL;
  p->admin = admin_new(cfg, store, queue, engine, rt);
  if (!p->admin || (tenant && !p->name)) {
    admin_free(p->admin);
    free(p->name);
    free(p);
    return NULL;
  }
  if (tenant && !s->unrouted) {
    /* GHL webhooks that find no tenant count as tenant "". */
    s->unrouted = metrics_view(s->metrics, "tenant", "");
    s->m_requests = metrics_counter(s->unrouted, "ncghl_webhook_requests_total",
                                    "Webhook and manual-sync requests answered, by HTTP status.",
                                    METRIC_LABELS("source", "status"));
    s->m_duration = metrics_histogram(s->unrouted, "ncghl_webhook_duration_seconds",
                                      "Time from a webhook's arrival to its answer.",
                                      METRIC_LABELS("source"), metrics_webhook_buckets,
                                      metrics_webhook_nbuckets);
    s->m_ignored = metrics_counter(s->unrouted, "ncghl_ignored_events_total",
                                   "Events left alone on purpose, by reason (other_location: a"
                                   " GHL webhook for another sub-account).",
                                   METRIC_LABELS("reason"));
  }
  site_metrics(p, m ? m : s->metrics);
  if (s->draining)
    admin_drain(p->admin);
  struct server_site **end = &s->sites;
  while (*end)
    end = &(*end)->next;
  *end = p;
  return p;
}

static void site_free(struct server_site *p) {
  while (p->owed) {
    struct answer *a = p->owed;
    send_queued(a); /* acknowledged and stored: it will run after a restart */
    answer_free(a);
  }
  free(p->degraded);
  admin_free(p->admin);
  free(p->refused);
  free(p->name);
  free(p);
}

void server_site_pause(struct server_site *site) {
  if (!site)
    return;
  site->paused = true;
  while (site->owed) {
    struct answer *a = site->owed;
    send_queued(a); /* stored: it runs on, or again after the restart */
    answer_free(a);
  }
}

void server_site_remove(struct server *s, struct server_site *site) {
  if (!s || !site)
    return;
  for (struct server_site **p = &s->sites; *p; p = &(*p)->next)
    if (*p == site) {
      *p = site->next;
      site_free(site);
      return;
    }
}

void server_set_install(struct server *s, struct install *in) { s->install = in; }

void server_set_pace(struct server *s, struct pace *p) { s->pace = p; }

void server_drain(struct server *s) {
  s->draining = true;
  for (struct server_site *p = s->sites; p; p = p->next)
    admin_drain(p->admin);
}

int server_pending(const struct server *s) {
  int n = 0;
  for (const struct server_site *p = s->sites; p; p = p->next)
    n += p->nowed;
  return n;
}

void server_site_set_degraded(struct server_site *s, const char *const *reasons, size_t n) {
  if (!s)
    return; /* a retiring tenant's doctor ending: it has no site any more */
  free(s->degraded);
  s->degraded = NULL;
  if (n == 0)
    return;
  struct buf b;
  buf_init(&b, 0);
  buf_putc(&b, '[');
  for (size_t i = 0; i < n; i++) {
    if (i)
      buf_putc(&b, ',');
    buf_json_str(&b, reasons[i], strlen(reasons[i]));
  }
  buf_putc(&b, ']');
  s->degraded = buf_steal(&b);
}

void server_free(struct server *s) {
  if (!s)
    return;
  while (s->sites) {
    struct server_site *p = s->sites;
    s->sites = p->next;
    site_free(p);
  }
  for (struct server **p = &listening; *p; p = &(*p)->next_listening)
    if (*p == s) {
      *p = s->next_listening;
      break;
    }
  if (s->accept_resume)
    event_free(s->accept_resume);
  evhttp_free(s->http);
  sig_keys_free(s->ghl_keys);
  for (int b = 0; b < RL_BUCKETS; b++)
    while (s->rl[b]) {
      struct rl_client *c = s->rl[b];
      s->rl[b] = c->next;
      free(c);
    }
  metrics_free(s->unrouted);
  metrics_free(s->own_metrics);
  free(s);
}

int server_check_webhook(const char *path, const char *hook, const char *body, size_t len,
                         char *type, size_t typelen, char *id) {
  /* In the order of enum route: R_NOWCERTS, R_GHL, R_MANUAL. */
  static const char *const paths[] = {"/api/v1/webhooks/nowcerts", "/api/v1/webhooks/ghl",
                                      "/api/v1/sync/manual"};
  size_t i = 0;
  while (i < sizeof paths / sizeof *paths && strcmp(path, paths[i]) != 0)
    i++;
  if (i == sizeof paths / sizeof *paths)
    return 404;
  enum route r = (enum route)i;
  if (r == R_NOWCERTS && hook)
    r = R_HOOK;
  if (r == R_HOOK && !allowed_has(hook_names, hook))
    return 422;
  char err[160];
  struct json *root = json_parse(body, len, err, sizeof err);
  if (!root)
    return 422;
  int code = 0;
  struct buf canon, payload;
  buf_init(&canon, 0);
  buf_init(&payload, 0);
  if (r == R_HOOK) {
    if (json_type(root) != JSON_OBJECT && json_type(root) != JSON_ARRAY)
      code = 422;
    else if (hook_wrap(hook, root, body, len, &canon, &payload) != 0)
      code = 500;
    else
      snprintf(type, typelen, "hook:%s", hook);
  } else {
    struct problems p;
    buf_init(&p.b, 0);
    p.n = 0;
    char detail[128] = "";
    char *t = check_body(r, root, &p, detail, sizeof detail);
    if (!t)
      code = p.n ? 422 : 400;
    else if (json_canonical(root, &canon) != 0)
      code = 500;
    else
      snprintf(type, typelen, "%s", t);
    free(t);
    buf_free(&p.b);
  }
  if (code == 0)
    digest_event_id(route_source[r], canon.p ? canon.p : "", canon.len, id);
  buf_free(&canon);
  buf_free(&payload);
  json_free(root);
  return code;
}
