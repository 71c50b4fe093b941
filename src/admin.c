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
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "allowed.h"
#include "buf.h"
#include "clock.h"
#include "config.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "lua_rt.h"
#include "queue.h"
#include "reply.h"
#include "sig.h"
#include "store.h"

#define ADMIN_LIST_DEFAULT 100
#define ADMIN_LIST_MAX 10000
#define ADMIN_RELOADS_MAX 50
/* The page's files are small; anything bigger is not one of them. */
#define ADMIN_UI_FILE_MAX (4L * 1024 * 1024)

struct admin {
  const struct config *cfg;
  struct store *store;
  struct queue *queue;
  struct engine *engine;
  struct lrt *rt;
  bool draining;
};

static void send_json(struct evhttp_request *req, int code, const char *reason, const char *body,
                      size_t len) {
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
  evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
  reply_send(req, code, reason);
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
  long long last; /* the last row's id, for the next page */
};

/* A filter value from the query: at most max bytes of printable text. */
static bool filter_ok(const char *v, size_t max) {
  size_t n = strlen(v);
  if (!n || n > max)
    return false;
  for (const unsigned char *p = (const unsigned char *)v; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return false;
  return true;
}

struct page {
  struct store *store;
  struct buf b;
  int n;
  char last_id[EVENT_ID_MAX];
  double last_at;
};

struct people {
  struct buf *b;
  int n;
};

static int people_one(void *ud, const char *term) {
  struct people *p = ud;
  if (p->n++)
    buf_putc(p->b, ',');
  buf_json_str(p->b, term ? term : "", term ? strlen(term) : 0);
  return 0;
}

/* Each row names the people of its payload, so a list says whom each
 * event is about: one index lookup a row. */
static int page_one(void *ud, const struct store_event *e) {
  struct page *l = ud;
  buf_putc(&l->b, l->n++ ? ',' : '[');
  buf_putc(&l->b, '{');
  store_event_json_fields(&l->b, e);
  buf_puts(&l->b, ",\"people\":[");
  struct people p = {&l->b, 0};
  store_event_people(l->store, e->id, people_one, &p);
  buf_puts(&l->b, "]}");
  snprintf(l->last_id, sizeof l->last_id, "%s", e->id);
  l->last_at = e->created_at;
  return 0;
}

/* GET /api/v1/events: the newest events, filtered in the store (each filter
 * an index range), one page at a time. The body stays the bare list it has
 * always been; the cursor of the next page travels in X-Next-Before. */
static void admin_list(struct admin *s, struct evhttp_request *req, const char *query) {
  struct evkeyvalq q;
  /* It initialises q even when the query cannot be parsed. */
  evhttp_parse_query_str(query ? query : "", &q);
  struct store_event_filter f = {0};
  f.status = evhttp_find_header(&q, "status");
  f.source = evhttp_find_header(&q, "source");
  f.type = evhttp_find_header(&q, "type");
  f.person = evhttp_find_header(&q, "q");
  const char *before = evhttp_find_header(&q, "before");
  const char *limit_s = evhttp_find_header(&q, "limit");
  static const char *const statuses[] = {"pending", "running", "done", "retry_wait", "dead", NULL};
  long limit = ADMIN_LIST_DEFAULT;
  char msg[160], before_id[EVENT_ID_MAX] = "";
  const char *bad = NULL, *type = "value_error";
  if (f.status && !*f.status)
    f.status = NULL;
  if (f.source && !*f.source)
    f.source = NULL;
  if (f.type && !*f.type)
    f.type = NULL;
  if (f.person && !*f.person)
    f.person = NULL;
  if (f.status && !allowed_has(statuses, f.status)) {
    allowed_message(msg, sizeof msg, statuses);
    bad = "status";
    type = "value_error.const";
  } else if (f.source && !filter_ok(f.source, 15)) {
    bad = "source";
    snprintf(msg, sizeof msg, "source must be 1 to 15 printable characters");
  } else if (f.type && !filter_ok(f.type, 100)) {
    bad = "type";
    snprintf(msg, sizeof msg, "type must be 1 to 100 printable characters");
  } else if (f.person && !filter_ok(f.person, STORE_SEARCH_MAX)) {
    bad = "q";
    snprintf(msg, sizeof msg, "q (an e-mail or a name) must be 1 to %d printable characters",
             STORE_SEARCH_MAX);
  }
  if (!bad && before) {
    /* "<created_at>,<id>", as X-Next-Before gave it. */
    const char *comma = strchr(before, ',');
    char *end = NULL;
    f.before_at = comma ? strtod(before, &end) : 0;
    size_t idlen = comma ? strlen(comma + 1) : 0;
    if (!comma || end != comma || idlen == 0 || idlen >= sizeof before_id) {
      bad = "before";
      snprintf(msg, sizeof msg, "before must be the X-Next-Before value of the page before");
    } else {
      memcpy(before_id, comma + 1, idlen + 1);
      f.before_id = before_id;
    }
  }
  if (!bad && limit_s) {
    char *end;
    limit = strtol(limit_s, &end, 10);
    if (!*limit_s || *end || limit < 1 || limit > ADMIN_LIST_MAX) {
      bad = "limit";
      type = "value_error.number";
      snprintf(msg, sizeof msg, "limit must be a whole number from 1 to %d", ADMIN_LIST_MAX);
    }
  }
  if (bad) {
    send_problem(req, "query", bad, msg, type);
    evhttp_clear_headers(&q);
    return;
  }
  struct page l;
  memset(&l, 0, sizeof l);
  l.store = s->store;
  buf_init(&l.b, 0);
  int rc = store_event_search(s->store, &f, (int)limit, page_one, &l);
  evhttp_clear_headers(&q);
  if (rc != 0) {
    buf_free(&l.b);
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
    return;
  }
  buf_puts(&l.b, l.n ? "]" : "[]");
  if (l.n == limit) {
    /* %.17g gives back the very double, so the next page starts exactly
     * after this one's last event. */
    char next[EVENT_ID_MAX + 40];
    snprintf(next, sizeof next, "%.17g,%s", l.last_at, l.last_id);
    evhttp_add_header(evhttp_request_get_output_headers(req), "X-Next-Before", next);
  }
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
  buf_printf(b, ",\"duration_ms\":%.1f,\"at\":%.3f,\"event_attempt\":%d", a->duration_ms, a->at,
             a->event_attempt);
  buf_puts(b, ",\"request\":");
  put_json_value(b, a->request, a->request ? strlen(a->request) : 0);
  buf_puts(b, ",\"answer\":");
  put_json_value(b, a->answer, a->answer ? strlen(a->answer) : 0);
  buf_putc(b, '}');
  return 0;
}

static int change_one(void *ud, const struct store_change *c) {
  struct listing *l = ud;
  if (l->n++)
    buf_putc(&l->b, ',');
  store_change_json(&l->b, c);
  return 0;
}

static int conflict_one(void *ud, const struct store_conflict *c) {
  struct listing *l = ud;
  if (l->n++)
    buf_putc(&l->b, ',');
  store_conflict_json(&l->b, c);
  l->last = c->id;
  return 0;
}

/* GET /api/v1/conflicts?limit=&before=&kind=&nowcerts_id=&ghl_id= and
 * GET /api/v1/timeline?nowcerts_id=|ghl_id=[&kind=contact][&limit=&before=]:
 * the conflicts ncghl recorded, and one link's field changes (a person's
 * timeline), newest first, a page at a time. */
static void admin_sync_list(struct admin *s, struct evhttp_request *req, const char *query,
                            bool timeline) {
  struct evkeyvalq q;
  evhttp_parse_query_str(query ? query : "", &q);
  struct store_sync_filter f = {
      .kind = evhttp_find_header(&q, "kind"),
      .nowcerts_id = evhttp_find_header(&q, "nowcerts_id"),
      .ghl_id = evhttp_find_header(&q, "ghl_id"),
      .limit = ADMIN_LIST_DEFAULT,
  };
  const char *limit_s = evhttp_find_header(&q, "limit");
  const char *before_s = evhttp_find_header(&q, "before");
  if (limit_s) {
    char *end;
    long limit = strtol(limit_s, &end, 10);
    if (!*limit_s || *end || limit < 1 || limit > ADMIN_LIST_MAX) {
      char msg[96];
      snprintf(msg, sizeof msg, "limit must be a whole number from 1 to %d", ADMIN_LIST_MAX);
      send_problem(req, "query", "limit", msg, "value_error.number");
      evhttp_clear_headers(&q);
      return;
    }
    f.limit = (int)limit;
  }
  if (before_s) {
    char *end;
    long long before = strtoll(before_s, &end, 10);
    if (!*before_s || *end || before < 1) {
      send_problem(req, "query", "before", "before must be a positive id", "value_error.number");
      evhttp_clear_headers(&q);
      return;
    }
    f.before = before;
  }
  if (timeline && !f.nowcerts_id && !f.ghl_id) {
    send_problem(req, "query", "nowcerts_id", "give nowcerts_id or ghl_id", "value_error.missing");
    evhttp_clear_headers(&q);
    return;
  }
  struct listing l;
  buf_init(&l.b, 0);
  l.n = 0;
  l.last = 0;
  int rc;
  if (timeline) {
    /* The link as it stands now, so a timeline opened by either id names
     * both; a contact deleted in GHL has no link any more (null). */
    if (!f.kind)
      f.kind = "contact";
    char *nc = f.nowcerts_id ? strdup(f.nowcerts_id) : store_link_nowcerts(s->store, f.kind, f.ghl_id);
    char *gh = f.ghl_id ? strdup(f.ghl_id) : store_link_ghl(s->store, f.kind, f.nowcerts_id);
    buf_puts(&l.b, "{\"link\":");
    if (nc && gh) {
      buf_puts(&l.b, "{\"kind\":");
      buf_json_str(&l.b, f.kind, strlen(f.kind));
      buf_puts(&l.b, ",\"nowcerts_id\":");
      buf_json_str(&l.b, nc, strlen(nc));
      buf_puts(&l.b, ",\"ghl_id\":");
      buf_json_str(&l.b, gh, strlen(gh));
      buf_putc(&l.b, '}');
    } else {
      buf_puts(&l.b, "null");
    }
    buf_puts(&l.b, ",\"changes\":[");
    /* Changes are kept by the NowCerts id when it is known, so one lookup
     * finds those made before and after the contact id changed. */
    struct store_sync_filter g = f;
    if (nc) {
      g.nowcerts_id = nc;
      g.ghl_id = NULL;
    }
    rc = store_change_list(s->store, &g, change_one, &l);
    buf_putc(&l.b, ']');
    free(nc);
    free(gh);
  } else {
    buf_puts(&l.b, "{\"conflicts\":[");
    rc = store_conflict_list(s->store, &f, conflict_one, &l);
    buf_putc(&l.b, ']');
    if (l.n == f.limit && l.last > 1)
      buf_printf(&l.b, ",\"next_before\":%lld", l.last);
    else
      buf_puts(&l.b, ",\"next_before\":null");
  }
  buf_putc(&l.b, '}');
  evhttp_clear_headers(&q);
  if (rc != 0)
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
  else
    send_buf(req, 200, "OK", &l.b);
  buf_free(&l.b);
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

/* ---- the links an event touched ------------------------------------------------ */

#define LINK_IDS_MAX 16

struct ids {
  const char *v[LINK_IDS_MAX];
  int n;
};

/* Record ids in a payload or a result: string values of the members that
 * name a record (id, databaseId, insuredDatabaseId, contactId, ...), at any
 * depth. */
static void collect_ids(const struct json *v, struct ids *out, int depth) {
  if (!v || depth > 8)
    return;
  enum json_type t = json_type(v);
  if (t != JSON_OBJECT && t != JSON_ARRAY)
    return;
  static const char *const keys[] = {"id",        "databaseId", "insuredDatabaseId", "contactId",
                                     "insuredId", "policyId",   "opportunityId",     NULL};
  for (size_t i = 0; i < json_len(v) && out->n < LINK_IDS_MAX; i++) {
    const struct json *c = json_at(v, i);
    const char *k = t == JSON_OBJECT ? json_key_at(v, i) : NULL;
    if (k && json_type(c) == JSON_STRING && allowed_has(keys, k) && *json_str(c)) {
      bool seen = false;
      for (int j = 0; j < out->n; j++)
        seen |= strcmp(out->v[j], json_str(c)) == 0;
      if (!seen)
        out->v[out->n++] = json_str(c);
    } else {
      collect_ids(c, out, depth + 1);
    }
  }
}

static void put_link(struct buf *b, int *n, const char *kind, const char *nc, const char *ghl) {
  buf_puts(b, (*n)++ ? ",{\"kind\":" : "{\"kind\":");
  buf_json_str(b, kind, strlen(kind));
  buf_puts(b, ",\"nowcerts_id\":");
  buf_json_str(b, nc, strlen(nc));
  buf_puts(b, ",\"ghl_id\":");
  buf_json_str(b, ghl, strlen(ghl));
  buf_putc(b, '}');
}

/* The cross-references (store_link_*) that hold any record id of the
 * event's payload or of its mapping's result, as they stand now. */
static void put_links(struct admin *s, struct buf *b, const struct store_event *e) {
  char err[64];
  struct json *p = e->payload ? json_parse(e->payload, e->payload_len, err, sizeof err) : NULL;
  struct json *r = e->result ? json_parse(e->result, strlen(e->result), err, sizeof err) : NULL;
  struct ids ids = {.n = 0};
  collect_ids(p, &ids, 0);
  collect_ids(r, &ids, 0);
  static const char *const kinds[] = {"contact", "policy"};
  char seen[LINK_IDS_MAX * 2][2 * 80];
  int nseen = 0, n = 0;
  buf_putc(b, '[');
  for (int i = 0; i < ids.n; i++)
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
      /* NowCerts ids are GUIDs, linked lower-cased; GHL ids keep their case. */
      char lower[80];
      snprintf(lower, sizeof lower, "%s", ids.v[i]);
      for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
          *c = (char)(*c - 'A' + 'a');
      char *ghl = store_link_ghl(s->store, kinds[k], lower);
      char *nc = ghl ? NULL : store_link_nowcerts(s->store, kinds[k], ids.v[i]);
      const char *ncid = ghl ? lower : nc, *ghlid = ghl ? ghl : ids.v[i];
      if (ghl || nc) {
        char key[2 * 80];
        snprintf(key, sizeof key, "%s|%s|%s", kinds[k], ncid, ghlid);
        bool dup = false;
        for (int j = 0; j < nseen; j++)
          dup |= strcmp(seen[j], key) == 0;
        if (!dup && nseen < LINK_IDS_MAX * 2) {
          snprintf(seen[nseen++], sizeof seen[0], "%s", key);
          put_link(b, &n, kinds[k], ncid, ghlid);
        }
      }
      free(ghl);
      free(nc);
    }
  buf_putc(b, ']');
  json_free(p);
  json_free(r);
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
  /* The field changes this event saw or made: the links it touched. */
  buf_puts(&l.b, "],\"changes\":[");
  l.n = 0;
  struct store_sync_filter f = {.event_id = id, .limit = ADMIN_LIST_MAX};
  if (rc == 0)
    rc = store_change_list(s->store, &f, change_one, &l);
  buf_puts(&l.b, "],\"links\":");
  put_links(s, &l.b, &e);
  buf_puts(&l.b, ",\"people\":[");
  struct people p = {&l.b, 0};
  if (rc == 0)
    rc = store_event_people(s->store, id, people_one, &p);
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
  if (!r || queue_join_durable(s->queue) != 0 || store_event_requeue(s->store, id, clock_wall()) != 1) {
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

/* /api/v1/conflicts and /api/v1/timeline: GET only, admin token, 404 while
 * ADMIN_TOKEN is unset (like every admin route). */
static void handle_admin_sync(struct admin *s, struct evhttp_request *req, const char *path,
                              const char *query, enum evhttp_cmd_type cmd) {
  if (!s->cfg->admin_token || !*s->cfg->admin_token) {
    send_detail(req, 404, "Not Found", "Not Found");
    return;
  }
  if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
    send_detail(req, 405, "Method Not Allowed", "Method Not Allowed");
    return;
  }
  if (!admin_authorized(s, req))
    return;
  admin_sync_list(s, req, query, strcmp(path, "/api/v1/timeline") == 0);
}

/* ---- what /ui reads besides events ------------------------------------------- */

static void put_time(struct buf *b, double t) {
  char at[32] = "";
  time_t secs = (time_t)t;
  struct tm tm;
  if (t > 0 && gmtime_r(&secs, &tm))
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (*at)
    buf_printf(b, "\"%s\"", at);
  else
    buf_puts(b, "null");
}

/* GET /api/v1/overview: the queue by status, what arrived lately, what is
 * running and the mappings in use: the page's at-a-glance row. Latency
 * lives in /metrics' histograms, which the page reads too. */
static void admin_overview(struct admin *s, struct evhttp_request *req) {
  long counts[EV_STATUS_COUNT];
  double now = clock_wall();
  static const struct {
    const char *name;
    double seconds;
  } windows[] = {{"minute", 60}, {"hour", 3600}, {"day", 86400}};
  long got[3];
  int rc = store_count_by_status(s->store, counts);
  for (int i = 0; rc == 0 && i < 3; i++)
    rc = store_event_count_since(s->store, now - windows[i].seconds, &got[i]);
  if (rc != 0) {
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
    return;
  }
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"events\":{");
  for (int i = 0; i < EV_STATUS_COUNT; i++)
    buf_printf(&b, "%s\"%s\":%ld", i ? "," : "", store_status_name((enum ev_status)i), counts[i]);
  buf_puts(&b, "},\"received\":{");
  for (int i = 0; i < 3; i++)
    buf_printf(&b, "%s\"%s\":%ld", i ? "," : "", windows[i].name, got[i]);
  buf_printf(&b, "},\"running\":%d,\"mappings\":{\"version\":", engine_running(s->engine));
  const char *v = lrt_version(s->rt);
  buf_json_str(&b, v ? v : "", v ? strlen(v) : 0);
  bool ok = false;
  double at = 0;
  const char *msg = lrt_last_reload(s->rt, &ok, &at);
  buf_printf(&b, ",\"last_reload\":{\"result\":\"%s\",\"at\":", ok ? "ok" : "error");
  put_time(&b, at);
  buf_puts(&b, ",\"message\":");
  buf_json_str(&b, msg ? msg : "", msg ? strlen(msg) : 0);
  buf_printf(&b, "}},\"version\":\"%s\",\"now\":%.3f}", NCGHL_VERSION, now);
  send_buf(req, 200, "OK", &b);
  buf_free(&b);
}

static int reload_one(void *ud, const struct store_reload *r) {
  struct listing *l = ud;
  buf_puts(&l->b, l->n++ ? ",{\"at\":" : "{\"at\":");
  put_time(&l->b, r->at);
  buf_printf(&l->b, ",\"result\":\"%s\",\"version\":", r->ok ? "ok" : "error");
  buf_json_str(&l->b, r->version ? r->version : "", r->version ? strlen(r->version) : 0);
  buf_puts(&l->b, ",\"message\":");
  buf_json_str(&l->b, r->message ? r->message : "", r->message ? strlen(r->message) : 0);
  buf_putc(&l->b, '}');
  return 0;
}

/* GET /api/v1/reloads: the version running and the last loads, newest
 * first: at start, and on each SIGHUP, ok or not. */
static void admin_reloads(struct admin *s, struct evhttp_request *req) {
  struct listing l;
  buf_init(&l.b, 0);
  l.n = 0;
  const char *v = lrt_version(s->rt);
  buf_puts(&l.b, "{\"version\":");
  buf_json_str(&l.b, v ? v : "", v ? strlen(v) : 0);
  buf_puts(&l.b, ",\"reloads\":[");
  int rc = store_reload_list(s->store, ADMIN_RELOADS_MAX, reload_one, &l);
  buf_puts(&l.b, "]}");
  if (rc != 0)
    send_detail(req, 503, "Service Unavailable", "The store could not be read; try again");
  else
    send_buf(req, 200, "OK", &l.b);
  buf_free(&l.b);
}

/* GET /api/v1/backfill: the resume point `ncghl backfill` keeps in the store
 * while it runs (and after an interruption), one per side; a finished
 * backfill leaves none. */
static void admin_backfill(struct admin *s, struct evhttp_request *req) {
  static const struct {
    const char *from, *stages[2];
  } sides[] = {{"nowcerts", {"insureds", "policies"}}, {"ghl", {"contacts", "opportunities"}}};
  struct buf b;
  buf_init(&b, 0);
  buf_puts(&b, "{\"backfills\":[");
  int n = 0;
  for (size_t i = 0; i < sizeof sides / sizeof *sides; i++) {
    char key[64];
    snprintf(key, sizeof key, "backfill.cursor.%s", sides[i].from);
    char *v = store_kv_get(s->store, key);
    if (!v)
      continue;
    char err[64];
    struct json *c = json_parse(v, strlen(v), err, sizeof err);
    const struct json *stage = c ? json_get(c, "stage") : NULL;
    int st = stage && json_type(stage) == JSON_NUMBER ? (int)json_num(stage) : -1;
    buf_printf(&b, "%s{\"from\":\"%s\",\"stage\":", n++ ? "," : "", sides[i].from);
    if (st == 0 || st == 1)
      buf_printf(&b, "\"%s\"", sides[i].stages[st]);
    else
      buf_puts(&b, "null");
    buf_puts(&b, ",\"cursor\":");
    put_json_value(&b, v, strlen(v));
    buf_putc(&b, '}');
    json_free(c);
    free(v);
  }
  buf_puts(&b, "]}");
  send_buf(req, 200, "OK", &b);
  buf_free(&b);
}

/* ---- the /ui files ------------------------------------------------------------- */

static const char *ui_content_type(const char *name) {
  static const struct {
    const char *ext, *type;
  } types[] = {{".html", "text/html; charset=utf-8"},
               {".js", "text/javascript; charset=utf-8"},
               {".css", "text/css; charset=utf-8"},
               {".svg", "image/svg+xml"},
               {".png", "image/png"},
               {".ico", "image/x-icon"},
               {".json", "application/json"},
               {".woff2", "font/woff2"}};
  const char *dot = strrchr(name, '.');
  for (size_t i = 0; dot && i < sizeof types / sizeof *types; i++)
    if (strcmp(dot, types[i].ext) == 0)
      return types[i].type;
  return NULL;
}

/* A file of UI_DIR by its bare name: letters, digits, '-', '_' and '.', not
 * starting with '.', so no path can leave the directory. */
static bool ui_name_ok(const char *name) {
  if (!*name || *name == '.' || strlen(name) > 64)
    return false;
  for (const char *p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '_' || *p == '.'))
      return false;
  return true;
}

/* GET /ui and /ui/<file>. The page itself holds no data; every view reads
 * the admin API with the token the page asks for. The policy header keeps
 * the page to this service: nothing loads from anywhere else. */
static void handle_ui(struct admin *s, struct evhttp_request *req, const char *path,
                      enum evhttp_cmd_type cmd) {
  const char *name = path[3] ? path + 4 : "index.html";
  const char *type = ui_content_type(name);
  if (!ui_name_ok(name) || !type || !s->cfg->ui_dir) {
    send_detail(req, 404, "Not Found", "Not Found");
    return;
  }
  if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
    send_detail(req, 405, "Method Not Allowed", "Method Not Allowed");
    return;
  }
  char file[4096];
  snprintf(file, sizeof file, "%s/%s", s->cfg->ui_dir, name);
  FILE *fp = fopen(file, "rb");
  struct stat stt;
  if (!fp || fstat(fileno(fp), &stt) != 0 || !S_ISREG(stt.st_mode) ||
      stt.st_size > ADMIN_UI_FILE_MAX) {
    if (fp)
      fclose(fp);
    send_detail(req, 404, "Not Found", "Not Found");
    return;
  }
  struct evbuffer *out = evhttp_request_get_output_buffer(req);
  char chunk[16384];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
    evbuffer_add(out, chunk, n);
  fclose(fp);
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", type);
  evhttp_add_header(h, "Cache-Control", "no-cache");
  evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
  evhttp_add_header(h, "Referrer-Policy", "no-referrer");
  evhttp_add_header(h, "Content-Security-Policy",
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                    "base-uri 'none'; form-action 'self'");
  reply_send(req, 200, "OK");
}

/* The routes with one fixed path, each a GET. */
static bool handle_fixed(struct admin *s, struct evhttp_request *req, const char *path,
                         enum evhttp_cmd_type cmd) {
  static const char *const paths[] = {"/api/v1/overview", "/api/v1/reloads", "/api/v1/backfill",
                                      NULL};
  int which = -1;
  for (int i = 0; paths[i]; i++)
    if (strcmp(path, paths[i]) == 0)
      which = i;
  if (which < 0)
    return false;
  if (!s->cfg->admin_token || !*s->cfg->admin_token) {
    send_detail(req, 404, "Not Found", "Not Found");
    return true;
  }
  if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
    send_detail(req, 405, "Method Not Allowed", "Method Not Allowed");
    return true;
  }
  if (!admin_authorized(s, req))
    return true;
  if (which == 0)
    admin_overview(s, req);
  else if (which == 1)
    admin_reloads(s, req);
  else
    admin_backfill(s, req);
  return true;
}

struct admin *admin_new(const struct config *cfg, struct store *store, struct queue *queue,
                        struct engine *engine, struct lrt *rt) {
  struct admin *a = calloc(1, sizeof *a);
  if (!a)
    return NULL;
  a->cfg = cfg;
  a->store = store;
  a->queue = queue;
  a->engine = engine;
  a->rt = rt;
  return a;
}

void admin_free(struct admin *a) { free(a); }

void admin_drain(struct admin *a) { a->draining = true; }

bool admin_is_route(const char *path) {
  static const char *const exact[] = {"/api/v1/events", "/api/v1/conflicts", "/api/v1/timeline",
                                      "/api/v1/overview", "/api/v1/reloads", "/api/v1/backfill",
                                      "/ui", NULL};
  for (int i = 0; exact[i]; i++)
    if (strcmp(path, exact[i]) == 0)
      return true;
  return strncmp(path, "/api/v1/events/", 15) == 0 || strncmp(path, "/ui/", 4) == 0;
}

bool admin_check_token(struct admin *a, struct evhttp_request *req) {
  if (!a->cfg->admin_token || !*a->cfg->admin_token) {
    send_detail(req, 404, "Not Found", "Not Found");
    return false;
  }
  return admin_authorized(a, req);
}

bool admin_handle(struct admin *a, struct evhttp_request *req, const char *path, const char *query,
                  enum evhttp_cmd_type cmd) {
  if (strcmp(path, "/api/v1/events") == 0 || strncmp(path, "/api/v1/events/", 15) == 0) {
    handle_events(a, req, path, query, cmd);
    return true;
  }
  if (strcmp(path, "/api/v1/conflicts") == 0 || strcmp(path, "/api/v1/timeline") == 0) {
    handle_admin_sync(a, req, path, query, cmd);
    return true;
  }
  if (strcmp(path, "/ui") == 0 || strncmp(path, "/ui/", 4) == 0) {
    if (!a->cfg->admin_token || !*a->cfg->admin_token)
      send_detail(req, 404, "Not Found", "Not Found");
    else
      handle_ui(a, req, path, cmd);
    return true;
  }
  return handle_fixed(a, req, path, cmd);
}
