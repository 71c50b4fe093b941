/* The backfill command (see backfill.h).
 *
 * Two phases. Reading runs an event loop of its own for the upstream calls
 * (tokens, retries and GHL's rate limit are upstream.c's, as in the
 * service), one page at a time; each page's events and the cursor that
 * points past the page are one SQLite transaction, so a backfill killed at
 * any moment resumes at the first page it had not stored. Following needs no
 * network: the service picks the events up from the shared store, and this
 * process watches their rows until each has ended.
 *
 * NowCerts lists are read like the poller reads them, in (changeDate, id)
 * order, each page after the first starting on the last record already read;
 * if that record moved (a change while we read), the lists shifted and the
 * backfill steps back one page: records read twice are the same events. */
#include "backfill.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "httpc.h"
#include "json.h"
#include "log.h"
#include "poller.h"
#include "presence.h"
#include "store.h"
#include "upstream.h"

#define GHL_PAGE 100
#define FOLLOW_TICK_MS 200
/* Events finish roughly in the order they were queued: a walk over the
 * unfinished ones stops after this many that are still running. */
#define FOLLOW_SCAN 64
#define PRESENCE_CHECK_SECONDS 2.0
#define PLAIN_PROGRESS_SECONDS 2.0
/* Beyond this many step-backs the lists change faster than they are read. */
#define MAX_STEPBACKS 50
#define BAR_WIDTH 30

enum stage { ST_INSUREDS = 0, ST_POLICIES = 1, ST_CONTACTS = 0, ST_OPPORTUNITIES = 1, ST_DONE = 2 };

struct follow_id {
  char id[EVENT_ID_MAX];
};

struct bf {
  struct config cfg;
  struct event_base *base;
  struct httpc *http;
  struct upstream *up;
  struct store *store;
  bool from_ghl;
  const char *side; /* "NowCerts" or "GHL", for people */
  char since[32];   /* "" when every record is wanted */
  double since_t;
  char key[48]; /* the cursor's kv key */

  int stage;
  long pos; /* NowCerts: records of the stage read; GHL: the next page */
  char *sentinel_id, *sentinel_change;
  int stepbacks;
  long stage_total;

  long read, queued, known, older; /* this run */
  long prior_read, prior_queued;   /* a resumed cursor's */
  struct follow_id *ids;
  size_t nids, capids;
  int rc;
  bool tty;
  double last_print;
  bool progress_open; /* a \r line is on the terminal */
};

static const char *stage_name(const struct bf *b, int stage) {
  if (b->from_ghl)
    return stage == ST_CONTACTS ? "contacts" : "opportunities";
  return poller_list_name((enum poller_list)stage);
}

static void set_sentinel(struct bf *b, const char *id, const char *change) {
  free(b->sentinel_id);
  free(b->sentinel_change);
  b->sentinel_id = id ? strdup(id) : NULL;
  b->sentinel_change = change ? strdup(change) : NULL;
}

static void end_progress_line(struct bf *b) {
  if (b->progress_open) {
    fputc('\n', stdout);
    b->progress_open = false;
  }
}

static void say(struct bf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct bf *b, const char *fmt, ...) {
  end_progress_line(b);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  fflush(stdout);
}

static void fail(struct bf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct bf *b, const char *fmt, ...) {
  end_progress_line(b);
  fputs("ncghl backfill: ", stderr);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  b->rc = 1;
  if (b->base)
    event_base_loopbreak(b->base);
}

static int follow_add(struct bf *b, const char *id) {
  if (b->nids == b->capids) {
    size_t cap = b->capids ? b->capids * 2 : 256;
    struct follow_id *n = realloc(b->ids, cap * sizeof *n);
    if (!n)
      return -1;
    b->ids = n;
    b->capids = cap;
  }
  snprintf(b->ids[b->nids++].id, EVENT_ID_MAX, "%s", id);
  return 0;
}

/* ---- the cursor -------------------------------------------------------------- */

static int cursor_put(struct bf *b) {
  if (b->stage >= ST_DONE)
    return store_kv_put(b->store, b->key, NULL);
  struct buf v;
  buf_init(&v, 0);
  int rc = buf_puts(&v, "{\"since\":");
  rc |= buf_json_str(&v, b->since, strlen(b->since));
  rc |= buf_printf(&v, ",\"stage\":%d,\"pos\":%ld,\"read\":%ld,\"queued\":%ld", b->stage, b->pos,
                   b->prior_read + b->read, b->prior_queued + b->queued);
  if (b->sentinel_id && b->sentinel_change) {
    rc |= buf_puts(&v, ",\"sentinel_id\":");
    rc |= buf_json_str(&v, b->sentinel_id, strlen(b->sentinel_id));
    rc |= buf_puts(&v, ",\"sentinel_change\":");
    rc |= buf_json_str(&v, b->sentinel_change, strlen(b->sentinel_change));
  }
  rc |= buf_putc(&v, '}');
  if (rc == 0)
    rc = store_kv_put(b->store, b->key, v.p);
  buf_free(&v);
  return rc ? -1 : 0;
}

/* Picks up an interrupted backfill of the same side and --since. */
static void cursor_load(struct bf *b) {
  char *v = store_kv_get(b->store, b->key);
  if (!v)
    return;
  char err[128];
  struct json *root = json_parse(v, strlen(v), err, sizeof err);
  const char *since = root ? json_str(json_get(root, "since")) : NULL;
  const struct json *stage = root ? json_get(root, "stage") : NULL;
  const struct json *pos = root ? json_get(root, "pos") : NULL;
  if (!since || !stage || !pos || json_type(stage) != JSON_NUMBER ||
      json_type(pos) != JSON_NUMBER || json_num(stage) < 0 || json_num(stage) >= ST_DONE ||
      json_num(pos) < 0) {
    say(b,
        "ignoring an unreadable resume point of an earlier backfill; starting from the beginning");
  } else if (strcmp(since, b->since) != 0) {
    say(b,
        "an earlier backfill from %s %s%s was not finished; this one (%s%s) starts from the "
        "beginning",
        b->side, *since ? "since " : "of all records", since, *b->since ? "since " : "all records",
        b->since);
  } else {
    b->stage = (int)json_num(stage);
    b->pos = (long)json_num(pos);
    b->prior_read = (long)json_num(json_get(root, "read"));
    b->prior_queued = (long)json_num(json_get(root, "queued"));
    set_sentinel(b, json_str(json_get(root, "sentinel_id")),
                 json_str(json_get(root, "sentinel_change")));
    if (b->from_ghl)
      say(b,
          "resuming an interrupted backfill at %s page %ld (%ld records were read and queued "
          "before)",
          stage_name(b, b->stage), b->pos, b->prior_read);
    else
      say(b,
          "resuming an interrupted backfill at %s record %ld (%ld records were read and queued "
          "before)",
          stage_name(b, b->stage), b->pos, b->prior_read);
  }
  json_free(root);
  free(v);
}

/* ---- reading ------------------------------------------------------------------- */

static void read_progress(struct bf *b, bool force) {
  double t = clock_wall();
  if (!force && !b->tty && t - b->last_print < PLAIN_PROGRESS_SECONDS)
    return;
  b->last_print = t;
  long done = b->from_ghl ? (b->pos - 1) * GHL_PAGE : b->pos;
  if (done > b->stage_total)
    done = b->stage_total;
  if (b->tty) {
    printf("\rreading %s %s: %ld of %ld records   ", b->side, stage_name(b, b->stage), done,
           b->stage_total);
    b->progress_open = true;
    fflush(stdout);
  } else {
    say(b, "reading %s %s: %ld of %ld records", b->side, stage_name(b, b->stage), done,
        b->stage_total);
  }
}

/* One event into the open transaction. */
static int queue_event(struct bf *b, const char *source, const char *type, const char *body,
                       size_t len, const char *id) {
  enum store_put put;
  enum ev_status existing = EV_PENDING;
  if (store_event_put(b->store, id, source, type, body, len, EV_PENDING, clock_wall(),
                      b->cfg.idempotency_ttl, &put, &existing) != 0)
    return -1;
  b->read++;
  if (put != STORE_PUT_DUPLICATE) {
    b->queued++;
    return follow_add(b, id);
  }
  /* The same record, unchanged, had its event already. One still queued
   * (an interrupted run's) is followed; one that ran is "unchanged". */
  if (existing == EV_PENDING || existing == EV_RUNNING)
    return follow_add(b, id);
  b->known++;
  return 0;
}

/* GHL's own webhook format, flat: {"type":"ContactUpdate", ...record}. The
 * event type wins over a contact's own "type" (lead, customer). */
static int ghl_event(const char *type, const struct json *rec, struct buf *canon,
                     char id[EVENT_ID_MAX]) {
  struct buf raw;
  buf_init(&raw, 0);
  int rc = buf_printf(&raw, "{\"type\":\"%s\"", type);
  for (size_t i = 0; i < json_len(rec); i++) {
    const char *k = json_key_at(rec, i);
    if (strcmp(k, "type") == 0)
      continue;
    rc |= buf_putc(&raw, ',');
    rc |= buf_json_str(&raw, k, strlen(k));
    rc |= buf_putc(&raw, ':');
    rc |= json_canonical(json_at(rec, i), &raw);
  }
  rc |= buf_putc(&raw, '}');
  char err[128];
  struct json *root = rc ? NULL : json_parse(raw.p, raw.len, err, sizeof err);
  buf_free(&raw);
  buf_reset(canon);
  if (!root || json_canonical(root, canon) != 0) {
    json_free(root);
    return -1;
  }
  json_free(root);
  digest_event_id("ghl", canon->p, canon->len, id);
  return 0;
}

static bool older_than_since(const struct bf *b, const struct json *rec, const char *k1,
                             const char *k2) {
  if (!*b->since)
    return false;
  const char *s = json_str(json_get(rec, k1));
  if (!s)
    s = json_str(json_get(rec, k2));
  double t;
  return s && poller_parse_time(s, &t) == 0 && t < b->since_t;
}

static void fetch(struct bf *b);

/* Stores a page's events and the cursor after it in one transaction. */
static bool store_page(struct bf *b, const struct json *rows, size_t start, bool more) {
  if (store_begin(b->store) != 0) {
    fail(b, "cannot write to the store %s", b->cfg.store_label);
    return false;
  }
  struct buf body;
  buf_init(&body, 0);
  int rc = 0;
  size_t n = json_len(rows);
  for (size_t i = start; rc == 0 && i < n; i++) {
    const struct json *rec = json_at(rows, i);
    if (json_type(rec) != JSON_OBJECT)
      continue;
    char id[EVENT_ID_MAX];
    if (!b->from_ghl) {
      const char *type;
      rc = poller_event((enum poller_list)b->stage, rec, &body, id, &type);
      if (rc == 0)
        rc = queue_event(b, "nowcerts", type, body.p, body.len, id);
    } else if (b->stage == ST_CONTACTS) {
      if (older_than_since(b, rec, "dateUpdated", "dateAdded")) {
        b->older++;
        continue;
      }
      rc = ghl_event("ContactUpdate", rec, &body, id);
      if (rc == 0)
        rc = queue_event(b, "ghl", "ContactUpdate", body.p, body.len, id);
    } else {
      if (older_than_since(b, rec, "updatedAt", "createdAt")) {
        b->older++;
        continue;
      }
      rc = ghl_event("OpportunityUpdate", rec, &body, id);
      if (rc == 0)
        rc = queue_event(b, "ghl", "OpportunityUpdate", body.p, body.len, id);
    }
  }
  buf_free(&body);
  if (rc == 0) {
    if (b->from_ghl) {
      b->pos++;
    } else {
      b->pos += (long)(n - start);
      if (n > 0) {
        const struct json *last = json_at(rows, n - 1);
        set_sentinel(b, poller_record_id(last), json_str(json_get(last, "changeDate")));
      }
    }
    if (!more) {
      b->stage++;
      b->pos = b->from_ghl ? 1 : 0;
      set_sentinel(b, NULL, NULL);
    }
    rc = cursor_put(b);
  }
  if (rc != 0 || store_commit(b->store) != 0) {
    store_rollback(b->store);
    fail(b, "cannot store the events of a %s page in %s", stage_name(b, b->stage), b->cfg.store_label);
    return false;
  }
  return true;
}

static void on_page(void *ud, const struct up_result *r) {
  struct bf *b = ud;
  const char *what = stage_name(b, b->stage);
  if (!r->ok) {
    fail(b,
         "reading %s %s failed: %s (what was read so far is kept; run the same command again "
         "to go on)",
         b->side, what, r->error ? r->error : "no answer");
    return;
  }
  char err[160];
  struct json *root = json_parse(r->body, r->body_len, err, sizeof err);
  const char *field = !b->from_ghl              ? "value"
                      : b->stage == ST_CONTACTS ? "contacts"
                                                : "opportunities";
  const struct json *rows = root ? json_get(root, field) : NULL;
  if (!rows || json_type(rows) != JSON_ARRAY) {
    fail(b, "%s %s answered without a \"%s\" list: %s", b->side, what, field,
         root ? "field missing" : err);
    json_free(root);
    return;
  }
  size_t n = json_len(rows), start = 0;
  bool more;
  if (!b->from_ghl) {
    b->stage_total = (long)json_num(json_get(root, "@odata.count"));
    if (b->pos > 0 && b->sentinel_id) {
      const struct json *first = n ? json_at(rows, 0) : NULL;
      const char *fid = first ? poller_record_id(first) : NULL;
      const char *fcd = first ? json_str(json_get(first, "changeDate")) : NULL;
      if (!fid || !fcd || strcmp(fid, b->sentinel_id) != 0 ||
          strcmp(fcd, b->sentinel_change ? b->sentinel_change : "") != 0) {
        /* The list shifted under us: read the page before again. */
        json_free(root);
        if (++b->stepbacks == MAX_STEPBACKS)
          say(b,
              "warning: %s %s keep changing while they are read; run the backfill again "
              "afterwards to catch what moved",
              b->side, what);
        if (b->stepbacks < MAX_STEPBACKS) {
          b->pos = b->pos > POLLER_PAGE ? b->pos - POLLER_PAGE : 0;
          set_sentinel(b, NULL, NULL);
        } else {
          set_sentinel(b, NULL, NULL); /* read on from here, unchecked */
        }
        fetch(b);
        return;
      }
      start = 1;
    }
    more = n == POLLER_PAGE;
  } else if (b->stage == ST_CONTACTS) {
    b->stage_total = (long)json_num(json_get(root, "total"));
    more = n == GHL_PAGE && b->pos * GHL_PAGE < b->stage_total;
  } else {
    const struct json *meta = json_get(root, "meta");
    b->stage_total = (long)json_num(json_get(meta, "total"));
    const struct json *next = json_get(meta, "nextPage");
    more = n == GHL_PAGE && !(next && json_type(next) == JSON_NULL) &&
           b->pos * GHL_PAGE < b->stage_total;
  }
  int stage = b->stage;
  bool ok = store_page(b, rows, start, more);
  json_free(root);
  if (!ok)
    return;
  if (stage != b->stage) {
    long total = b->stage_total;
    if (b->tty) {
      end_progress_line(b);
    }
    say(b, "read %s %s: %ld records", b->side, stage_name(b, stage), total);
    b->stage_total = 0;
  } else {
    read_progress(b, false);
  }
  if (b->stage >= ST_DONE) {
    event_base_loopbreak(b->base);
    return;
  }
  fetch(b);
}

static void pct(struct buf *out, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      buf_putc(out, (char)c);
    } else {
      buf_putc(out, '%');
      buf_putc(out, hex[c >> 4]);
      buf_putc(out, hex[c & 15]);
    }
  }
}

static void fetch(struct bf *b) {
  struct buf path, body;
  buf_init(&path, 0);
  buf_init(&body, 0);
  struct up_call call = {.method = "GET"};
  int rc = 0;
  if (!b->from_ghl) {
    long skip = b->pos > 0 && b->sentinel_id ? b->pos - 1 : b->pos;
    rc = poller_list_request((enum poller_list)b->stage, *b->since ? b->since : NULL, skip, &path);
    call.service = UP_NOWCERTS;
  } else if (b->stage == ST_CONTACTS) {
    /* Documented only by observation (ref/ghl/NOTES.md §2): locationId,
     * page and pageLimit, no filters: every contact of the location. */
    rc = buf_puts(&path, "/contacts/search");
    rc |= buf_puts(&body, "{\"locationId\":");
    rc |= buf_json_str(&body, b->cfg.ghl_location_id, strlen(b->cfg.ghl_location_id));
    rc |= buf_printf(&body, ",\"page\":%ld,\"pageLimit\":%d}", b->pos, GHL_PAGE);
    call.service = UP_GHL;
    call.method = "POST";
    call.body = body.p;
    call.body_len = body.len;
  } else {
    rc = buf_puts(&path, "/opportunities/search?location_id=");
    pct(&path, b->cfg.ghl_location_id);
    rc |= buf_printf(&path, "&page=%ld&limit=%d", b->pos, GHL_PAGE);
    call.service = UP_GHL;
  }
  call.path = path.p;
  if (rc != 0 || !path.p || up_start(b->up, &call, NULL, on_page, b) != 0)
    fail(b, "cannot start a request to %s (out of memory)", b->side);
  buf_free(&path);
  buf_free(&body);
}

/* ---- following ------------------------------------------------------------------- */

struct keyed_id {
  const char *id;
  size_t pos;
};

static int cmp_keyed(const void *a, const void *b) {
  const struct keyed_id *x = a, *y = b;
  int c = strcmp(x->id, y->id);
  return c ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* A page read twice (after a step-back) may name a still-queued event twice.
 * Keeps the first of each, in queue order: following relies on that order. */
static void follow_unique(struct bf *b) {
  if (b->nids < 2)
    return;
  struct keyed_id *k = malloc(b->nids * sizeof *k);
  bool *dup = calloc(b->nids, sizeof *dup);
  if (!k || !dup) {
    free(k);
    free(dup);
    return; /* a duplicate is then only counted twice */
  }
  for (size_t i = 0; i < b->nids; i++)
    k[i] = (struct keyed_id){b->ids[i].id, i};
  qsort(k, b->nids, sizeof *k, cmp_keyed);
  for (size_t i = 1; i < b->nids; i++)
    if (strcmp(k[i].id, k[i - 1].id) == 0)
      dup[k[i].pos] = true;
  free(k);
  size_t w = 0;
  for (size_t i = 0; i < b->nids; i++)
    if (!dup[i])
      b->ids[w++] = b->ids[i];
  b->nids = w;
  free(dup);
}

struct tally {
  long created, updated, unchanged, failed, retrying;
};

/* 1 when the event has ended (tallied), 0 while it is queued or running,
 * -1 on a store error. */
static int check_event(struct bf *b, const char *id, struct tally *t) {
  struct store_event e;
  int rc = store_event_get(b->store, id, &e);
  if (rc < 0)
    return -1;
  if (rc == 1) { /* cannot happen: nothing deletes an event */
    t->failed++;
    return 1;
  }
  int done = 1;
  if (e.status == EV_DONE) {
    const char *action = NULL;
    char err[64];
    struct json *res = e.result ? json_parse(e.result, strlen(e.result), err, sizeof err) : NULL;
    action = res ? json_str(json_get(res, "action")) : NULL;
    if (action && strcmp(action, "created") == 0)
      t->created++;
    else if (action && strcmp(action, "updated") == 0)
      t->updated++;
    else
      t->unchanged++; /* skipped (an echo), ignored (no route), or nothing said */
    json_free(res);
  } else if (e.status == EV_DEAD) {
    t->failed++;
  } else if (e.status == EV_RETRY_WAIT) {
    /* Its next run is minutes to hours away: not waited for here. */
    t->retrying++;
  } else {
    done = 0;
  }
  store_event_free(&e);
  return done;
}

static void follow_progress(struct bf *b, size_t total, size_t left, double started, bool force) {
  double t = clock_wall();
  if (!force && t - b->last_print < (b->tty ? 0.2 : PLAIN_PROGRESS_SECONDS))
    return;
  b->last_print = t;
  size_t finished = total - left;
  double rate = t > started ? (double)finished / (t - started) : 0;
  char eta[32] = "--";
  if (rate > 0 && left > 0) {
    long s = (long)((double)left / rate + 0.5);
    snprintf(eta, sizeof eta, "%ld:%02ld", s / 60, s % 60);
  } else if (left == 0) {
    snprintf(eta, sizeof eta, "0:00");
  }
  int pctv = total ? (int)(finished * 100 / total) : 100;
  if (b->tty) {
    char bar[BAR_WIDTH + 1];
    int fill = total ? (int)(finished * BAR_WIDTH / total) : BAR_WIDTH;
    for (int i = 0; i < BAR_WIDTH; i++)
      bar[i] = i < fill ? '#' : '.';
    bar[BAR_WIDTH] = '\0';
    printf("\r[%s] %3d%%  %zu/%zu events  %.1f/s  ETA %s   ", bar, pctv, finished, total, rate,
           eta);
    b->progress_open = true;
    fflush(stdout);
  } else {
    say(b, "progress: %zu/%zu events finished (%d%%), %.1f/s, ETA %s", finished, total, pctv, rate,
        eta);
  }
}

/* Returns 0 when every followed event ended, 1 when the service went away. */
static int follow(struct bf *b, struct tally *t) {
  size_t total = b->nids;
  size_t left = total;
  double started = clock_wall(), checked = started;
  b->last_print = 0;
  follow_progress(b, total, left, started, true);
  while (left > 0) {
    size_t w = 0, waiting = 0;
    for (size_t i = 0; i < left; i++) {
      int rc = waiting < FOLLOW_SCAN ? check_event(b, b->ids[i].id, t) : 0;
      if (rc < 0) {
        fail(b, "cannot read the store %s", b->cfg.store_label);
        return 1;
      }
      if (rc == 0) {
        waiting++;
        if (w != i)
          b->ids[w] = b->ids[i];
        w++;
      }
    }
    left = w;
    follow_progress(b, total, left, started, left == 0);
    if (left == 0)
      break;
    if (clock_wall() - checked >= PRESENCE_CHECK_SECONDS) {
      checked = clock_wall();
      if (!presence_running(b->store, NULL)) {
        say(b, "the service on %s stopped: %zu events are still queued; they run at its next start",
            b->cfg.store_label, left);
        return 1;
      }
    }
    struct timespec ts = {0, FOLLOW_TICK_MS * 1000000L};
    nanosleep(&ts, NULL);
  }
  end_progress_line(b);
  return 0;
}

/* ---- the command ------------------------------------------------------------------- */

static const char usage[] =
    "usage: ncghl backfill --from nowcerts|ghl [--since DATE] [--env FILE]\n"
    "  DATE: 2024-05-01 or 2024-05-01T10:00:00Z; only records changed since then\n";

static void bf_free(struct bf *b) {
  if (b->up)
    up_free(b->up);
  if (b->http)
    httpc_free(b->http);
  if (b->base)
    event_base_free(b->base);
  if (b->store)
    store_close(b->store);
  set_sentinel(b, NULL, NULL);
  free(b->ids);
  config_free(&b->cfg);
}

static int run(struct bf *b) {
  cursor_load(b);
  if (b->stage == 0 && b->pos == (b->from_ghl ? 1 : 0) && !b->prior_read)
    say(b, "backfill from %s: reading %s%s (%s)", b->side,
        *b->since ? "the records changed since " : "every record", b->since,
        b->from_ghl ? "contacts, then opportunities" : "insureds, then policies");
  fetch(b);
  if (b->rc == 0)
    event_base_dispatch(b->base);
  if (b->rc != 0)
    return b->rc;
  end_progress_line(b);
  say(b, "read %ld records: %ld new events queued", b->read, b->queued);
  if (b->known)
    say(b, "%ld records were already synced as they are now (the same events as before)", b->known);
  if (b->older)
    say(b, "%ld %s records had not changed since %s", b->older, b->side, b->since);

  follow_unique(b);
  struct tally t = {0};
  t.unchanged = b->known;
  long pid = 0;
  if (!presence_running(b->store, &pid)) {
    /* A resumed run reads on from its cursor: the events an interrupted run
     * queued before it are not among this run's, but wait all the same. */
    long counts[EV_STATUS_COUNT] = {0};
    long waiting = store_count_by_status(b->store, counts) == 0
                       ? counts[EV_PENDING] + counts[EV_RETRY_WAIT]
                       : 0;
    if (b->nids > 0 || waiting > 0) {
      say(b, "no service is running on %s: %zu events queued; they run at the next start",
          b->cfg.store_label, b->nids);
      if (waiting > (long)b->nids)
        say(b, "%ld events in all wait in the store (those an interrupted backfill queued "
               "among them)",
            waiting);
      return 0;
    }
  }
  if (b->nids > 0) {
    say(b, "the service (pid %ld) is working through them:", pid);
    if (follow(b, &t) != 0)
      return b->rc ? b->rc : 0;
  }
  char extra[96] = "";
  if (t.retrying)
    snprintf(extra, sizeof extra, ", %ld waiting to retry", t.retrying);
  say(b, "summary: %ld created, %ld updated, %ld unchanged, %ld failed%s", t.created, t.updated,
      t.unchanged, t.failed, extra);
  if (t.failed)
    say(b, "`ncghl events --status dead` lists the failed ones; `ncghl replay --dead` runs them "
           "again");
  return t.failed ? 1 : 0;
}

int backfill_main(int argc, char **argv) {
  const char *from = NULL, *since = NULL, *env_file = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--from") == 0 && i + 1 < argc)
      from = argv[++i];
    else if (strcmp(argv[i], "--since") == 0 && i + 1 < argc)
      since = argv[++i];
    else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
      env_file = argv[++i];
    else {
      fprintf(stderr, "ncghl backfill: unknown option '%s'\n%s", argv[i], usage);
      return 2;
    }
  }
  if (!from || (strcmp(from, "nowcerts") != 0 && strcmp(from, "ghl") != 0)) {
    fprintf(stderr, "ncghl backfill: --from nowcerts or --from ghl is required\n%s", usage);
    return 2;
  }
  struct bf b;
  memset(&b, 0, sizeof b);
  b.from_ghl = strcmp(from, "ghl") == 0;
  b.side = b.from_ghl ? "GHL" : "NowCerts";
  b.pos = b.from_ghl ? 1 : 0;
  b.tty = isatty(STDOUT_FILENO);
  snprintf(b.key, sizeof b.key, "backfill.cursor.%s", from);
  if (since) {
    if (poller_parse_time(since, &b.since_t) != 0) {
      fprintf(stderr,
              "ncghl backfill: --since '%s' is not a date (2024-05-01 or "
              "2024-05-01T10:00:00Z)\n",
              since);
      return 2;
    }
    poller_format_time(b.since_t, b.since);
  }
  char err[512];
  if (config_load(&b.cfg, env_file, false, err, sizeof err) != 0) {
    fprintf(stderr, "ncghl: configuration error: %s\n", err);
    return 1;
  }
  log_set_format(b.cfg.log_json);
  log_set_pii(b.cfg.log_pii);
  if (log_init(b.cfg.log_level, b.cfg.log_file) != 0) {
    fprintf(stderr, "ncghl: configuration error: LOG_FILE: cannot open %s\n", b.cfg.log_file);
    config_free(&b.cfg);
    return 1;
  }
  int rc = 1;
  if (b.from_ghl && (!b.cfg.ghl_location_id || !*b.cfg.ghl_location_id)) {
    fprintf(stderr, "ncghl backfill: GHL_LOCATION_ID is not set: it names the GHL location to "
                    "read\n");
    goto out;
  }
  signal(SIGPIPE, SIG_IGN);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "ncghl backfill: cannot initialise libcurl\n");
    goto out;
  }
  b.store = store_open(config_store(&b.cfg), err, sizeof err);
  if (!b.store) {
    fprintf(stderr, "ncghl backfill: %s: cannot open the store %s: %s\n", config_store_var(&b.cfg),
            b.cfg.store_label, err);
    goto cleanup;
  }
  b.base = event_base_new();
  b.http = b.base ? httpc_new(b.base, 64 * 1024 * 1024) : NULL;
  b.up = b.http ? up_new(b.base, &b.cfg, b.http) : NULL;
  if (!b.up) {
    fprintf(stderr, "ncghl backfill: cannot set up outbound HTTP\n");
    goto cleanup;
  }
  up_set_store(b.up, b.store);
  rc = run(&b);
cleanup:
  bf_free(&b);
  curl_global_cleanup();
  log_close();
  return rc;
out:
  config_free(&b.cfg);
  log_close();
  return rc;
}
