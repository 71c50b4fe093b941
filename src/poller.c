/* The NowCerts poller (see poller.h).
 *
 * One cycle reads the insureds list, then the policies list, one page at a
 * time and never two at once:
 *
 *   timer ─▶ page request ─▶ answer ─▶ events + watermark into the open batch
 *     ▲                                        │
 *     └── interval ◀── last page / failure ◀── commit ─▶ next page
 *
 * Paging uses $skip over a list ordered by (changeDate, id). A record that
 * changes while we page moves to the end of the list, which shifts the
 * records after its old place one step towards the start: a page boundary
 * could then step over one of them. So every page after the first starts
 * one record early, on the last record of the page before; if that record is
 * not where it was, the list has shifted and the cycle ends there. Nothing is
 * lost: the watermark only covers pages read without a shift, and the next
 * cycle reads again from it. */
#include "poller.h"

#include <ctype.h>
#include <event2/event.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "config.h"
#include "engine.h"
#include "json.h"
#include "log.h"
#include "queue.h"
#include "store.h"
#include "upstream.h"

#define SOURCE "nowcerts"
/* On a store several nodes share (PostgreSQL), one node at a time reads
 * NowCerts (SPEC 13): the kv lease below, taken at
 * each cycle and renewed at each page, outlives a cycle's interval a few
 * times over, so a node that dies hands the poller on within that. */
#define POLLER_LEASE "poller.lease"
#define POLLER_LEASE_TTL(p) ((p)->cfg->nowcerts_poll_interval * 3 + 30)

struct list_counts {
  long listed; /* records read this cycle (the repeated first record not counted) */
  long queued; /* new events */
  long seen;   /* events that already existed: the overlap, or a re-read */
  long own;    /* ncghl's own changes, skipped */
  long pages;
};

struct poller {
  char who[80]; /* "tenant <name>: " before each log line, or "" */
  struct event_base *base;
  const struct config *cfg;
  struct store *store;
  struct queue *queue;
  struct engine *engine;
  struct upstream *up;
  struct event *timer;
  bool stopping;
  bool busy; /* a request or a page's commit is outstanding */

  /* The cycle in progress. */
  enum poller_list list;
  long consumed;  /* records of this list read so far in this cycle */
  char since[32]; /* the window's lower bound, fixed for the cycle */
  double mark;    /* the watermark so far: max changeDate seen */
  bool more;      /* the committed page was full: read the next one */
  bool shifted;   /* the cycle ended early because the list shifted */
  bool failed;
  bool ahead_said; /* this cycle warned of a changeDate ahead of the clock */
  char *sentinel_id; /* the last record read: id and changeDate */
  char *sentinel_change;
  struct list_counts counts[POLLER_LISTS + 1];
  double deleted_due; /* when DeletedInsuredList is read next (wall clock) */
};

/* ---- time --------------------------------------------------------------- */

static int digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)**p))
      return -1;
    v = v * 10 + (**p - '0');
    (*p)++;
  }
  *out = v;
  return 0;
}

int poller_parse_time(const char *s, double *t) {
  if (!s || !t)
    return -1;
  const char *p = s;
  int y, mo, d, h = 0, mi = 0, sec = 0;
  double frac = 0;
  if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
    return -1;
  int offset = 0; /* seconds east of UTC */
  if (*p == 'T' || *p == 't' || *p == ' ') {
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
      return -1;
    if (*p == ':') {
      p++;
      if (digits(&p, 2, &sec))
        return -1;
      if (*p == '.') {
        p++;
        double scale = 0.1;
        if (!isdigit((unsigned char)*p))
          return -1;
        while (isdigit((unsigned char)*p)) {
          frac += (*p - '0') * scale;
          scale /= 10;
          p++;
        }
      }
    }
    if (*p == 'Z' || *p == 'z') {
      p++;
    } else if (*p == '+' || *p == '-') {
      int sign = *p == '-' ? -1 : 1, oh, om;
      p++;
      if (digits(&p, 2, &oh))
        return -1;
      if (*p == ':')
        p++;
      if (digits(&p, 2, &om))
        return -1;
      offset = sign * (oh * 3600 + om * 60);
    }
  }
  if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
    return -1;
  struct tm tm = {0};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  time_t base = timegm(&tm);
  if (base == (time_t)-1 && !(y == 1969 && mo == 12 && d == 31))
    return -1;
  *t = (double)base - offset + frac;
  return 0;
}

void poller_format_time(double t, char out[32]) {
  time_t s = (time_t)floor(t);
  struct tm tm;
  if (!gmtime_r(&s, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(out, 32, "1970-01-01T00:00:00Z");
}

/* ---- records and events ------------------------------------------------- */

const char *poller_list_path_name(enum poller_list l) {
  return l == POLLER_POLICIES  ? "PolicyDetailList"
         : l == POLLER_DELETED ? "DeletedInsuredList"
                               : "InsuredDetailList";
}

const char *poller_list_name(enum poller_list l) {
  return l == POLLER_POLICIES ? "policies" : l == POLLER_DELETED ? "deleted insureds" : "insureds";
}

int poller_list_request(enum poller_list l, const char *since, long skip, struct buf *out) {
  if (l == POLLER_DELETED) /* no date to filter on: the whole list, in a stable order */
    return buf_printf(out,
                      "/DeletedInsuredList?$orderby=insuredDatabaseId%%20asc&$top=%d&$skip=%ld"
                      "&$count=true",
                      POLLER_PAGE, skip < 0 ? 0 : skip) < 0
               ? -1
               : 0;
  /* OData wants datetimes unquoted with their Z; spaces are %20 so the URL
   * is one curl will send as it is. */
  int rc = buf_printf(out, "/%s?", poller_list_path_name(l));
  if (since)
    rc |= buf_printf(out, "$filter=changeDate%%20ge%%20%s&", since);
  rc |= buf_printf(out, "$orderby=changeDate%%20asc,%%20id%%20asc&$top=%d&$skip=%ld&$count=true",
                   POLLER_PAGE, skip < 0 ? 0 : skip);
  return rc ? -1 : 0;
}

const char *poller_record_id(const struct json *rec) {
  const char *id = json_str(json_get(rec, "id"));
  return id && *id ? id : json_str(json_get(rec, "databaseId"));
}

static bool same_instant(const struct json *a, const struct json *b) {
  const char *x = json_str(a), *y = json_str(b);
  double tx, ty;
  if (!x || !y)
    return false;
  if (poller_parse_time(x, &tx) == 0 && poller_parse_time(y, &ty) == 0)
    return fabs(tx - ty) < 1e-6;
  return strcmp(x, y) == 0;
}

const char *poller_event_type(enum poller_list l, const struct json *rec) {
  /* NowCerts sends no "created" flag; a record whose createDate is its
   * changeDate has not been touched since it was made. */
  bool insert = same_instant(json_get(rec, "createDate"), json_get(rec, "changeDate"));
  if (l == POLLER_INSUREDS)
    return insert ? "INSURED_INSERT" : "INSURED_UPDATE";
  const struct json *q = json_get(rec, "isQuote");
  bool quote = q && json_type(q) == JSON_BOOL && json_bool(q);
  if (quote)
    return insert ? "QUOTE_INSERT" : "QUOTE_UPDATE";
  return insert ? "POLICY_INSERT" : "POLICY_UPDATE";
}

int poller_event(enum poller_list l, const struct json *rec, struct buf *body,
                 char id[EVENT_ID_MAX], const char **type) {
  const char *t = poller_event_type(l, rec);
  const struct json *cd = json_get(rec, "changeDate");
  /* Keys in byte order and canonical values: the body is its own canonical
   * form, so its id is the one the HTTP intake would give the same body. */
  buf_reset(body);
  int rc = buf_puts(body, "{\"data\":");
  rc |= json_canonical(rec, body);
  rc |= buf_printf(body, ",\"event_type\":\"%s\",\"timestamp\":", t);
  if (cd)
    rc |= json_canonical(cd, body);
  else
    rc |= buf_puts(body, "null");
  rc |= buf_putc(body, '}');
  if (rc)
    return -1;
  digest_event_id(SOURCE, body->p, body->len, id);
  if (type)
    *type = t;
  return 0;
}

/* ---- the cycle ---------------------------------------------------------- */

bool poller_wanted(const struct config *cfg) {
  return cfg->nowcerts_poll_interval > 0 && cfg->nowcerts_username && *cfg->nowcerts_username &&
         cfg->nowcerts_password && *cfg->nowcerts_password;
}

static void mark_key(enum poller_list l, char *out, size_t n) {
  snprintf(out, n, "poller.watermark.%s", poller_list_name(l));
}

static void set_sentinel(struct poller *p, const char *id, const char *change) {
  free(p->sentinel_id);
  free(p->sentinel_change);
  p->sentinel_id = id ? strdup(id) : NULL;
  p->sentinel_change = change ? strdup(change) : NULL;
}

static void schedule(struct poller *p, double seconds) {
  if (p->stopping)
    return;
  struct timeval tv;
  tv.tv_sec = (time_t)seconds;
  tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
  evtimer_add(p->timer, &tv);
}

static void end_cycle(struct poller *p) {
  char m[POLLER_LISTS][32];
  for (int l = 0; l < POLLER_LISTS; l++) {
    char key[64];
    mark_key((enum poller_list)l, key, sizeof key);
    char *v = store_kv_get(p->store, key);
    snprintf(m[l], sizeof m[l], "%s", v ? v : "none");
    free(v);
  }
  const struct list_counts *i = &p->counts[POLLER_INSUREDS], *c = &p->counts[POLLER_POLICIES];
  const struct list_counts *d = &p->counts[POLLER_DELETED];
  if (d->pages > 0)
    log_info("%spoller: deleted insureds %ld listed (%ld new events for linked contacts, %ld "
             "seen before)",
             p->who, d->listed, d->queued, d->seen);
  log_info("%spoller: insureds %ld changed (%ld new events, %ld seen before, %ld ncghl's own), "
           "policies %ld changed (%ld new events, %ld seen before, %ld ncghl's own); "
           "watermarks %s, %s%s", p->who,
           i->listed, i->queued, i->seen, i->own, c->listed, c->queued, c->seen, c->own, m[0], m[1],
           p->failed    ? "; cycle failed, retrying next interval"
           : p->shifted ? "; the list changed while it was read, the next cycle reads on"
                        : "");
  set_sentinel(p, NULL, NULL);
  schedule(p, p->cfg->nowcerts_poll_interval);
}

static void fetch(struct poller *p);

static void begin_list(struct poller *p) {
  char key[64];
  mark_key(p->list, key, sizeof key);
  char *v = store_kv_get(p->store, key);
  double mark;
  double now = clock_wall();
  if (!v || poller_parse_time(v, &mark) != 0) {
    /* No history: the first start reads from now (less the overlap) on.
     * Earlier records are what `ncghl backfill` is for. */
    mark = now;
    log_info("%spoller: no %s watermark yet; reading changes from now on", p->who,
             poller_list_name(p->list));
  } else if (mark > now + POLLER_OVERLAP_SECONDS) {
    /* Left by a version that let one row dated ahead carry the watermark
     * there: every change dated before it was skipped. */
    log_warn("%spoller: the %s watermark %s is ahead of this machine's clock; reading from the "
             "clock on. Changes made in NowCerts since it was set may have been skipped: "
             "`ncghl backfill --from nowcerts --since <when it was set>` brings them", p->who,
             poller_list_name(p->list), v);
    mark = now;
  }
  free(v);
  p->mark = mark;
  p->consumed = 0;
  p->more = false;
  set_sentinel(p, NULL, NULL);
  poller_format_time(mark - POLLER_OVERLAP_SECONDS, p->since);
  fetch(p);
}

static void next_step(struct poller *p) {
  if (p->stopping)
    return;
  if (p->more) {
    fetch(p);
  } else if (p->list == POLLER_INSUREDS) {
    p->list = POLLER_POLICIES;
    begin_list(p);
  } else if (p->list == POLLER_POLICIES && p->cfg->nowcerts_deleted_poll_interval > 0 &&
             clock_wall() >= p->deleted_due) {
    p->deleted_due = clock_wall() + p->cfg->nowcerts_deleted_poll_interval;
    p->list = POLLER_DELETED;
    p->consumed = 0;
    p->more = false;
    fetch(p);
  } else {
    end_cycle(p);
  }
}

static void on_committed(void *ud, bool committed) {
  struct poller *p = ud;
  p->busy = false;
  if (p->stopping)
    return;
  if (!committed) {
    log_error("%spoller: a page of %s could not be stored; it is read again next cycle", p->who,
              poller_list_name(p->list));
    p->failed = true;
    end_cycle(p);
    return;
  }
  next_step(p);
}

static bool own_change(struct poller *p, const struct json *rec) {
  const char *me = up_nowcerts_user_id(p->up);
  const char *who = json_str(json_get(rec, "lastChangeUserId"));
  return me && who && *me && strcasecmp(me, who) == 0;
}

/* One record into the open batch. Returns -1 if the store failed. */
static int take_record(struct poller *p, const struct json *rec, struct buf *body) {
  struct list_counts *c = &p->counts[p->list];
  c->listed++;
  double t;
  const char *cd = json_str(json_get(rec, "changeDate"));
  if (cd && poller_parse_time(cd, &t) == 0 && t > p->mark) {
    /* A row dated ahead of the clock (a bad row, a NowCerts clock running
     * fast) never takes the watermark past now: the changes dated before it
     * that come later would never be read. It stays in the window, read
     * again each cycle (as a change seen before) until its time passes. */
    double now = clock_wall();
    if (t > now + POLLER_OVERLAP_SECONDS && !p->ahead_said) {
      p->ahead_said = true;
      log_warn("%spoller: a %s row has changeDate %s, ahead of this machine's clock; the watermark "
               "stays at the clock (are both clocks right?)", p->who,
               poller_list_name(p->list), cd);
    }
    p->mark = t < now ? t : now;
  }
  /* A row ncghl itself changed last is still an event: the sync compares
   * its fields with the base (SPEC 10), so an agent's edit made in the same
   * poll window is not lost; an echo ends there, without a call. */
  if (own_change(p, rec))
    c->own++;
  char id[EVENT_ID_MAX];
  const char *type;
  if (poller_event(p->list, rec, body, id, &type) != 0)
    return -1;
  /* An event the store already holds, in any state, is this very change
   * read again through the overlap: it has run or will run; a dead one is
   * for `ncghl replay`, not for a poll to retry every interval. */
  struct store_event se;
  int got = store_event_get(p->store, id, &se);
  if (got == 0) {
    store_event_free(&se);
    c->seen++;
    return 0;
  }
  if (got < 0)
    return -1;
  enum store_put put;
  enum ev_status existing;
  if (engine_submit(p->engine, id, SOURCE, type, body->p, body->len, &put, &existing) != 0)
    return -1;
  if (put == STORE_PUT_DUPLICATE)
    c->seen++;
  else
    c->queued++;
  return 0;
}

/* A row of DeletedInsuredList: an event only for an insured ncghl linked
 * to a contact (the others have nothing in GHL to act on); the same row read
 * again is the same event id, so a deletion is handled once. */
static int take_deleted(struct poller *p, const struct json *rec, struct buf *body) {
  struct list_counts *c = &p->counts[POLLER_DELETED];
  c->listed++;
  const char *raw = json_str(json_get(rec, "insuredDatabaseId"));
  char id_lower[64];
  if (!raw || strlen(raw) >= sizeof id_lower)
    return 0;
  for (size_t i = 0; raw[i]; i++)
    id_lower[i] = (char)tolower((unsigned char)raw[i]);
  id_lower[strlen(raw)] = 0;
  char *linked = store_link_ghl(p->store, "contact", id_lower);
  if (!linked)
    return 0;
  free(linked);
  buf_reset(body);
  int rc = buf_puts(body, "{\"data\":");
  rc |= json_canonical(rec, body);
  rc |= buf_puts(body, ",\"event_type\":\"INSURED_DELETE\",\"timestamp\":null}");
  if (rc)
    return -1;
  char id[EVENT_ID_MAX];
  digest_event_id(SOURCE, body->p, body->len, id);
  struct store_event se;
  int got = store_event_get(p->store, id, &se);
  if (got == 0) {
    store_event_free(&se);
    c->seen++;
    return 0;
  }
  if (got < 0)
    return -1;
  enum store_put put;
  enum ev_status existing;
  if (engine_submit(p->engine, id, SOURCE, "INSURED_DELETE", body->p, body->len, &put, &existing) != 0)
    return -1;
  if (put == STORE_PUT_DUPLICATE)
    c->seen++;
  else
    c->queued++;
  return 0;
}

static void on_page(void *ud, const struct up_result *r) {
  struct poller *p = ud;
  p->busy = false;
  if (p->stopping)
    return;
  const char *list = poller_list_name(p->list);
  if (!r->ok) {
    log_warn("%spoller: reading %s at record %ld failed: %s", p->who, list, p->consumed,
             r->error ? r->error : "no answer");
    p->failed = true;
    end_cycle(p);
    return;
  }
  char err[160];
  struct json *root = json_parse(r->body, r->body_len, err, sizeof err);
  const struct json *rows = root ? json_get(root, "value") : NULL;
  if (!rows || json_type(rows) != JSON_ARRAY) {
    log_warn("%spoller: %s answered something that is not an OData list: %s", p->who, list,
             root ? "no \"value\" array" : err);
    json_free(root);
    p->failed = true;
    end_cycle(p);
    return;
  }
  size_t n = json_len(rows), start = 0;
  if (p->list == POLLER_DELETED) {
    struct buf body;
    buf_init(&body, 0);
    bool ok = queue_join(p->queue) == 0;
    for (size_t i = 0; ok && i < n; i++) {
      const struct json *rec = json_at(rows, i);
      if (json_type(rec) == JSON_OBJECT && take_deleted(p, rec, &body) != 0)
        ok = false;
    }
    buf_free(&body);
    json_free(root);
    if (!ok) {
      log_error("%spoller: cannot store the events of a %s page; it is read again next time",
                p->who, list);
      p->failed = true;
      end_cycle(p);
      return;
    }
    p->consumed += (long)n;
    p->counts[POLLER_DELETED].pages++;
    p->more = n == POLLER_PAGE;
    p->busy = true;
    queue_after_commit(p->queue, on_committed, p);
    return;
  }
  if (p->consumed > 0) {
    const struct json *first = n ? json_at(rows, 0) : NULL;
    const char *fid = first ? poller_record_id(first) : NULL;
    const char *fcd = first ? json_str(json_get(first, "changeDate")) : NULL;
    if (!fid || !fcd || !p->sentinel_id || strcmp(fid, p->sentinel_id) != 0 ||
        strcmp(fcd, p->sentinel_change) != 0) {
      json_free(root);
      p->shifted = true;
      end_cycle(p);
      return;
    }
    start = 1;
  }
  struct buf body;
  buf_init(&body, 0);
  bool ok = queue_join(p->queue) == 0;
  for (size_t i = start; ok && i < n; i++) {
    const struct json *rec = json_at(rows, i);
    if (json_type(rec) == JSON_OBJECT && take_record(p, rec, &body) != 0)
      ok = false;
  }
  buf_free(&body);
  if (!ok) {
    /* Events stored so far in this page stay (the next cycle finds them);
     * the watermark does not move past what was not stored. */
    log_error("%spoller: cannot store the events of a %s page; it is read again next cycle",
              p->who, list);
    json_free(root);
    p->failed = true;
    end_cycle(p);
    return;
  }
  if (n > 0) {
    const struct json *last = json_at(rows, n - 1);
    set_sentinel(p, poller_record_id(last), json_str(json_get(last, "changeDate")));
  }
  p->consumed += (long)(n - start);
  p->counts[p->list].pages++;
  p->more = n == POLLER_PAGE && p->sentinel_id && p->sentinel_change;
  json_free(root);
  char key[64], mark[32];
  mark_key(p->list, key, sizeof key);
  poller_format_time(p->mark, mark);
  /* The watermark joins the batch that holds this page's events: both
   * reach the disk in one commit, or neither does. */
  if (store_kv_put(p->store, key, mark) != 0) {
    p->failed = true;
    end_cycle(p);
    return;
  }
  p->busy = true;
  queue_after_commit(p->queue, on_committed, p);
}

static void fetch(struct poller *p) {
  /* A long cycle keeps its lease. */
  if (store_is_shared(p->store))
    store_lease_take(p->store, POLLER_LEASE, POLLER_LEASE_TTL(p), clock_wall());
  struct buf path;
  buf_init(&path, 0);
  /* Pages after the first start on the last record already read (the
   * deleted list, read whole every time, needs no such check). */
  long skip = p->list == POLLER_DELETED ? p->consumed : p->consumed > 0 ? p->consumed - 1 : 0;
  if (poller_list_request(p->list, p->since, skip, &path) != 0) {
    buf_free(&path);
    p->failed = true;
    end_cycle(p);
    return;
  }
  struct up_call call = {.service = UP_NOWCERTS, .method = "GET", .path = path.p};
  log_debug("%spoller: reading %s from record %ld (changed since %s)", p->who,
            poller_list_name(p->list),
            skip, p->since);
  if (up_start(p->up, &call, NULL, on_page, p) != 0) {
    buf_free(&path);
    p->failed = true;
    end_cycle(p);
    return;
  }
  buf_free(&path);
  p->busy = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct poller *p = arg;
  if (p->stopping || p->busy)
    return;
  int held = !store_is_shared(p->store)
                 ? 1
                 : store_lease_take(p->store, POLLER_LEASE, POLLER_LEASE_TTL(p), clock_wall());
  if (held != 1) {
    if (held == 0)
      log_debug("%spoller: another node reads NowCerts now", p->who);
    schedule(p, p->cfg->nowcerts_poll_interval);
    return;
  }
  memset(p->counts, 0, sizeof p->counts);
  p->failed = p->shifted = p->ahead_said = false;
  p->list = POLLER_INSUREDS;
  begin_list(p);
}

struct poller *poller_new(struct event_base *base, const char *tenant, const struct config *cfg,
                          struct store *store, struct queue *queue, struct engine *engine,
                          struct upstream *up) {
  struct poller *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  if (tenant)
    snprintf(p->who, sizeof p->who, "tenant %s: ", tenant);
  p->base = base;
  p->cfg = cfg;
  p->store = store;
  p->queue = queue;
  p->engine = engine;
  p->up = up;
  p->timer = evtimer_new(base, on_timer, p);
  if (!p->timer) {
    free(p);
    return NULL;
  }
  log_info("%spoller: reading NowCerts changes every %g s (overlap %d s)", p->who,
           cfg->nowcerts_poll_interval, POLLER_OVERLAP_SECONDS);
  schedule(p, 0);
  return p;
}

void poller_stop(struct poller *p) {
  if (!p)
    return;
  p->stopping = true;
  evtimer_del(p->timer);
  /* Another node takes over at its next interval, not after the lease. */
  if (store_is_shared(p->store))
    store_lease_release(p->store, POLLER_LEASE);
}

void poller_free(struct poller *p) {
  if (!p)
    return;
  event_free(p->timer);
  set_sentinel(p, NULL, NULL);
  free(p);
}
