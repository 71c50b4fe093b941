/* The store's dispatch: store_open picks the backend from what it is given
 * (a postgresql:// URL or a SQLite path), every other call goes through the
 * backend's ops table (store_backend.h). What does not depend on the
 * backend lives here: status names, the JSON shapes the CLI and the admin
 * API share, the owner of running rows and the in-memory counts. */
#include "store.h"
#include "url.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_backend.h"

static const char *const status_names[EV_STATUS_COUNT] = {"pending", "running", "done",
                                                          "retry_wait", "dead"};

const char *store_status_name(enum ev_status s) {
  return (unsigned)s < EV_STATUS_COUNT ? status_names[s] : "unknown";
}

int store_status_parse(const char *name) {
  if (!name)
    return -1;
  for (int i = 0; i < EV_STATUS_COUNT; i++)
    if (strcmp(name, status_names[i]) == 0)
      return i;
  return -1;
}

void store_event_free(struct store_event *e) {
  if (!e)
    return;
  free(e->type);
  free(e->payload);
  free(e->last_error);
  free(e->result);
  e->type = e->payload = e->last_error = e->result = NULL;
  e->payload_len = 0;
}

void store_event_json_fields(struct buf *b, const struct store_event *e) {
  buf_puts(b, "\"id\":");
  buf_json_str(b, e->id, strlen(e->id));
  buf_puts(b, ",\"source\":");
  buf_json_str(b, e->source, strlen(e->source));
  buf_puts(b, ",\"type\":");
  buf_json_str(b, e->type ? e->type : "", e->type ? strlen(e->type) : 0);
  buf_printf(b, ",\"status\":\"%s\",\"attempts\":%d,\"last_error\":", store_status_name(e->status),
             e->attempts);
  if (e->last_error)
    buf_json_str(b, e->last_error, strlen(e->last_error));
  else
    buf_puts(b, "null");
  buf_printf(b, ",\"created_at\":%.3f,\"updated_at\":%.3f,\"next_at\":%.3f", e->created_at,
             e->updated_at, e->next_at);
}

static void json_member(struct buf *b, const char *name, const char *v, bool comma) {
  buf_printf(b, "%s\"%s\":", comma ? "," : "", name);
  if (v)
    buf_json_str(b, v, strlen(v));
  else
    buf_puts(b, "null");
}
void store_conflict_json(struct buf *b, const struct store_conflict *c) {
  buf_printf(b, "{\"id\":%lld", c->id);
  json_member(b, "kind", c->kind, true);
  json_member(b, "nowcerts_id", c->nowcerts_id, true);
  json_member(b, "ghl_id", c->ghl_id, true);
  json_member(b, "field", c->field, true);
  json_member(b, "nowcerts_value", c->nowcerts_value, true);
  json_member(b, "ghl_value", c->ghl_value, true);
  json_member(b, "base", c->base, true);
  json_member(b, "winner", c->winner, true);
  json_member(b, "event_id", c->event_id, true);
  buf_printf(b, ",\"nowcerts_at\":%.3f,\"ghl_at\":%.3f,\"at\":%.3f}", c->nowcerts_at, c->ghl_at,
             c->at);
}
void store_change_json(struct buf *b, const struct store_change *c) {
  buf_printf(b, "{\"id\":%lld", c->id);
  json_member(b, "kind", c->kind, true);
  json_member(b, "nowcerts_id", c->nowcerts_id, true);
  json_member(b, "ghl_id", c->ghl_id, true);
  json_member(b, "field", c->field, true);
  json_member(b, "side", c->side, true);
  json_member(b, "old_value", c->old_value, true);
  json_member(b, "new_value", c->new_value, true);
  json_member(b, "action", c->action, true);
  json_member(b, "event_id", c->event_id, true);
  buf_printf(b, ",\"at\":%.3f}", c->at);
}

/* ---- opening: which backend ------------------------------------------- */

bool store_is_url(const char *target) {
  return target &&
         (strncmp(target, "postgresql://", 13) == 0 || strncmp(target, "postgres://", 11) == 0);
}

int store_url_with_schema(const char *base, const char *schema, char *out, size_t outlen) {
  size_t n = schema ? strlen(schema) : 0;
  bool ok = store_is_url(base) && n > 0 && n <= 63 && !(schema[0] >= '0' && schema[0] <= '9');
  for (size_t i = 0; ok && i < n; i++)
    ok = (schema[i] >= 'a' && schema[i] <= 'z') || (schema[i] >= 'A' && schema[i] <= 'Z') ||
         (schema[i] >= '0' && schema[i] <= '9') || schema[i] == '_' || schema[i] == '-';
  if (!ok || !outlen)
    return -1;
  /* The URL without any ncghl_schema of its own, then ours. */
  const char *q = strchr(base, '?');
  size_t head = q ? (size_t)(q - base) : strlen(base);
  int len = snprintf(out, outlen, "%.*s", (int)head, base);
  char sep = '?';
  for (const char *p = q ? q + 1 : NULL; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen && strncmp(p, "ncghl_schema=", 13) != 0 && len >= 0 && (size_t)len < outlen) {
      len += snprintf(out + len, outlen - (size_t)len, "%c%.*s", sep, (int)plen, p);
      sep = '&';
    }
    p = amp ? amp + 1 : p + plen;
  }
  if (len >= 0 && (size_t)len < outlen)
    len += snprintf(out + len, outlen - (size_t)len, "%cncghl_schema=%s", sep, schema);
  return len >= 0 && (size_t)len < outlen ? 0 : -1;
}

void store_url_secrets(const char *target, void (*each)(void *ud, const char *p, size_t n),
                       void *ud) {
  const char *auth = target && store_is_url(target) ? strstr(target, "://") : NULL;
  if (!auth)
    return;
  const char *pw;
  size_t pn;
  if (url_password(target, &pw, &pn))
    each(ud, pw, pn);
  /* And libpq's other form, a parameter: ...?password=...&... */
  for (const char *q = strchr(auth, '?'); q && *q; q = strchr(q + 1, '&')) {
    if (strncmp(q + 1, "password=", 9) != 0)
      continue;
    const char *v = q + 10;
    size_t n = strcspn(v, "&#");
    if (n)
      each(ud, v, n);
  }
}

struct shown {
  const char *from; /* the target's next byte not yet copied */
  char *out;
  size_t len, cap;
};

static void shown_put(struct shown *sh, const char *p, size_t n) {
  if (sh->len + 1 >= sh->cap)
    return;
  size_t room = sh->cap - 1 - sh->len;
  memcpy(sh->out + sh->len, p, n < room ? n : room);
  sh->len += n < room ? n : room;
  sh->out[sh->len] = '\0';
}

static void shown_mask(void *ud, const char *p, size_t n) {
  struct shown *sh = ud;
  shown_put(sh, sh->from, (size_t)(p - sh->from));
  shown_put(sh, "***", 3);
  sh->from = p + n;
}

void store_display_name(const char *target, char *out, size_t outlen) {
  if (!outlen)
    return;
  out[0] = '\0';
  if (!target)
    return;
  struct shown sh = {.from = target, .out = out, .cap = outlen};
  store_url_secrets(target, shown_mask, &sh);
  shown_put(&sh, sh.from, strlen(sh.from));
}

void store_set_err(char *err, size_t errlen, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  /* A caller that takes the reason reports it, on its one line that names
   * the setting (DB_PATH: ...); logged here only when nobody takes it. */
  if (err && errlen)
    snprintf(err, errlen, "%s", line);
  else
    log_error("store: %s", line);
}

void store_base_init(struct store *s, const struct store_ops *ops) {
  memset(s, 0, sizeof *s);
  s->ops = ops;
  /* Unique across machines sharing one PostgreSQL: the host tells nodes
   * apart, the pid processes on one host, the start time a pid reused. */
  char host[64] = "";
  if (gethostname(host, sizeof host) != 0 || !host[0])
    snprintf(host, sizeof host, "%s", "localhost");
  host[sizeof host - 1] = '\0';
  snprintf(s->owner, sizeof s->owner, "%s:%ld:%ld", host, (long)getpid(), (long)time(NULL));
}

bool store_exists(const char *target) {
  if (store_is_url(target))
    return store_pg_exists(target);
  struct stat st;
  return target && stat(target, &st) == 0;
}

struct store *store_open(const char *target, char *err, size_t errlen) {
  if (err && errlen)
    err[0] = '\0';
  if (store_is_url(target))
    return store_pg_open(target, err, errlen);
  return store_sqlite_open(target, err, errlen);
}

/* ---- what both backends share ----------------------------------------- */

int store_attempt_add(struct store *s, const char *event_id, int event_attempt, const char *service,
                      const char *method, const char *url, int status, const char *error,
                      double duration_ms, double at) {
  return store_attempt_add_io(s, event_id, event_attempt, service, method, url, status, error,
                              duration_ms, at, NULL, 0, NULL, 0);
}

const char *store_owner(struct store *s) { return s->owner; }

bool store_is_shared(struct store *s) { return s->shared; }

/* Owners are "host:pid:start". */
bool store_owner_gone(struct store *s, const char *owner) {
  const char *mine = s->owner;
  const char *c1 = strrchr(owner, ':');
  const char *m1 = strrchr(mine, ':');
  if (!c1 || !m1 || c1 == owner)
    return false;
  const char *c0 = c1 - 1;
  while (c0 > owner && *c0 != ':')
    c0--;
  const char *m0 = m1 - 1;
  while (m0 > mine && *m0 != ':')
    m0--;
  if (*c0 != ':' || *m0 != ':' || c0 - owner != m0 - mine ||
      strncmp(owner, mine, (size_t)(c0 - owner)) != 0)
    return false; /* another host: only its lease can say */
  long pid = strtol(c0 + 1, NULL, 10);
  if (pid <= 0)
    return false;
  if (pid == (long)getpid())
    return strcmp(owner, mine) != 0;
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* "<owner> <until>" in kv: held by its owner until the time given. */
int store_lease_take(struct store *s, const char *name, double ttl, double now) {
  char *cur = store_kv_get(s, name);
  char owner[sizeof s->owner] = "";
  double until = 0;
  if (cur) {
    const char *sp = strrchr(cur, ' ');
    if (sp && (size_t)(sp - cur) < sizeof owner) {
      memcpy(owner, cur, (size_t)(sp - cur));
      owner[sp - cur] = '\0';
      until = strtod(sp + 1, NULL);
    }
  }
  bool mine = strcmp(owner, s->owner) == 0;
  if (cur && !mine && until >= now && !store_owner_gone(s, owner)) {
    free(cur);
    return 0; /* another live node holds it */
  }
  char v[sizeof s->owner + 32];
  snprintf(v, sizeof v, "%s %.3f", s->owner, now + ttl);
  /* Compare and swap: of two nodes taking a lapsed lease at once, one wins. */
  int rc = s->ops->kv_swap(s, name, cur, v);
  free(cur);
  return rc;
}

int store_lease_release(struct store *s, const char *name) {
  char *cur = store_kv_get(s, name);
  size_t n = strlen(s->owner);
  int rc = 0;
  if (cur && strncmp(cur, s->owner, n) == 0 && cur[n] == ' ')
    rc = store_kv_put(s, name, NULL);
  free(cur);
  return rc;
}

int store_counts_seed(struct store *s) {
  long c[EV_STATUS_COUNT];
  if (store_count_by_status(s, c) != 0)
    return -1;
  log_debug("store: events counted by status (count query %ld on this connection)",
            s->count_queries);
  memcpy(s->counts, c, sizeof c);
  return 0;
}

void store_counts(struct store *s, long counts[EV_STATUS_COUNT]) {
  memcpy(counts, s->counts, sizeof s->counts);
}

void store_counts_set(struct store *s, const long counts[EV_STATUS_COUNT]) {
  memcpy(s->counts, counts, sizeof s->counts);
}

long store_count_queries(struct store *s) { return s->count_queries; }

const char *store_wal_file(struct store *s) { return s->ops->wal_file(s); }

int store_rate_take(struct store *s, const char *key, int limit, double window, double now,
                    double *wait) {
  *wait = 0;
  if (limit <= 0)
    return 0;
  return s->ops->rate_take(s, key, limit, window, now, wait);
}

int store_keys_lock(struct store *s, const char *const *keys, int n) {
  if (n <= 0 || !s->ops->keys_lock)
    return 1;
  return s->ops->keys_lock(s, keys, n);
}

void store_keys_unlock(struct store *s, const char *const *keys, int n) {
  if (n > 0 && s->ops->keys_unlock)
    s->ops->keys_unlock(s, keys, n);
}

/* ---- the dispatch ------------------------------------------------------ */

void store_close(struct store *s) {
  if (s)
    s->ops->close(s);
}

int store_begin(struct store *s) { return s->ops->begin(s); }

int store_set_full_sync(struct store *s, bool full) { return s->ops->set_full_sync(s, full); }

const char *store_path(struct store *s) { return s->ops->path(s); }

int store_commit(struct store *s) { return s->ops->commit(s); }

int store_rollback(struct store *s) { return s->ops->rollback(s); }

bool store_in_txn(struct store *s) { return s->ops->in_txn(s); }

bool store_writable(struct store *s) { return s->ops->writable(s); }

int store_schema_version(struct store *s) { return s->ops->schema_version(s); }

int store_event_put(struct store *s, const char *id, const char *source, const char *type,
                    const char *payload, size_t payload_len, enum ev_status initial, double now,
                    double ttl, enum store_put *result, enum ev_status *existing) {
  /* What a backend may take for granted, checked once for both. */
  const char *bad = NULL;
  if (!id || !*id || strlen(id) >= EVENT_ID_MAX)
    bad = "missing or overlong event id";
  else if (!source || !*source || strlen(source) >= sizeof((struct store_event *)0)->source)
    bad = "missing or overlong source";
  else if (initial != EV_PENDING && initial != EV_RUNNING)
    bad = "initial status must be pending or running";
  else if (payload && payload_len > (size_t)0x7fffffff)
    bad = "payload too large";
  if (bad) {
    log_error("store: event_put: %s", bad);
    return -1;
  }
  if (!payload)
    payload_len = 0;
  return s->ops->event_put(s, id, source, type ? type : "", payload ? payload : "", payload_len,
                           initial, now, ttl, result, existing);
}

int store_event_get(struct store *s, const char *id, struct store_event *out) {
  return s->ops->event_get(s, id, out);
}

int store_event_claim(struct store *s, const char *id, double now) {
  return s->ops->event_claim(s, id, now);
}


int store_claim_due(struct store *s, double now, int max, struct store_event *out, int *n) {
  *n = 0;
  if (max <= 0)
    return 0;
  return s->ops->claim_due(s, now, max, out, n);
}

int store_event_finish(struct store *s, const char *id, enum ev_status st_new, double next_at,
                       const char *last_error, const char *result, double now) {
  return s->ops->event_finish(s, id, st_new, next_at, last_error, result, now);
}

int store_event_requeue(struct store *s, const char *id, double now) {
  return s->ops->event_requeue(s, id, now);
}

int store_recover_running(struct store *s, int *n) { return s->ops->recover_running(s, n); }

double store_next_due(struct store *s) { return s->ops->next_due(s); }

int store_event_list(struct store *s, const char *status, int limit,
                     int (*cb)(void *ud, const struct store_event *e), void *ud) {
  return s->ops->event_list(s, status, limit, cb, ud);
}

int store_count_by_status(struct store *s, long counts[EV_STATUS_COUNT]) {
  return s->ops->count_by_status(s, counts);
}

int store_attempt_add_io(struct store *s, const char *event_id, int event_attempt,
                         const char *service, const char *method, const char *url, int status,
                         const char *error, double duration_ms, double at, const char *request,
                         size_t request_len, const char *answer, size_t answer_len) {
  return s->ops->attempt_add_io(s, event_id, event_attempt, service, method, url, status, error,
                                duration_ms, at, request, request_len, answer, answer_len);
}

int store_attempt_list(struct store *s, const char *event_id,
                       int (*cb)(void *ud, const struct store_attempt *a), void *ud) {
  return s->ops->attempt_list(s, event_id, cb, ud);
}

int store_link_put(struct store *s, const char *kind, const char *nowcerts_id, const char *ghl_id,
                   double now) {
  return s->ops->link_put(s, kind, nowcerts_id, ghl_id, now);
}

char *store_link_ghl(struct store *s, const char *kind, const char *nowcerts_id) {
  return s->ops->link_ghl(s, kind, nowcerts_id);
}

char *store_link_nowcerts(struct store *s, const char *kind, const char *ghl_id) {
  return s->ops->link_nowcerts(s, kind, ghl_id);
}

int store_link_delete(struct store *s, const char *kind, const char *nowcerts_id) {
  return s->ops->link_delete(s, kind, nowcerts_id);
}

int store_snapshot_put(struct store *s, const char *kind, const char *nowcerts_id,
                       const char *ghl_id, const char *json, double now) {
  return s->ops->snapshot_put(s, kind, nowcerts_id, ghl_id, json, now);
}

char *store_snapshot_get(struct store *s, const char *kind, const char *nowcerts_id) {
  return s->ops->snapshot_get(s, kind, nowcerts_id);
}

int store_conflict_add(struct store *s, const struct store_conflict *c) {
  return s->ops->conflict_add(s, c);
}

long long store_conflict_count(struct store *s) { return s->ops->conflict_count(s); }

int store_change_add(struct store *s, const struct store_change *c) {
  return s->ops->change_add(s, c);
}

int store_conflict_list(struct store *s, const struct store_sync_filter *f,
                        int (*cb)(void *ud, const struct store_conflict *c), void *ud) {
  return s->ops->conflict_list(s, f, cb, ud);
}

int store_change_list(struct store *s, const struct store_sync_filter *f,
                      int (*cb)(void *ud, const struct store_change *c), void *ud) {
  return s->ops->change_list(s, f, cb, ud);
}

int store_kv_put(struct store *s, const char *key, const char *value) {
  return s->ops->kv_put(s, key, value);
}

char *store_kv_get(struct store *s, const char *key) { return s->ops->kv_get(s, key); }

void store_set_busy_timeout(struct store *s, int ms) { s->ops->set_busy_timeout(s, ms); }

enum store_fault store_last_fault(struct store *s) { return s->ops->last_fault(s); }

void store_clear_fault(struct store *s) { s->ops->clear_fault(s); }

long long store_total_changes(struct store *s) { return s->ops->total_changes(s); }

int store_running_list(struct store *s,
                       int (*cb)(void *ud, const char *id, const char *owner, double updated_at),
                       void *ud) {
  return s->ops->running_list(s, cb, ud);
}

int store_event_release(struct store *s, const char *id, double now) {
  return s->ops->event_release(s, id, now);
}

int store_event_forget(struct store *s, const char *id) { return s->ops->event_forget(s, id); }

int store_set_autocheckpoint(struct store *s, int pages) {
  return s->ops->set_autocheckpoint(s, pages);
}

int store_checkpoint(struct store *s, int *wal_pages, int *copied) {
  return s->ops->checkpoint(s, wal_pages, copied);
}

int store_retention_batch(struct store *s, double cutoff, int batch, int *deleted) {
  return s->ops->retention_batch(s, cutoff, batch, deleted);
}

int store_reload_add(struct store *s, double at, bool ok, const char *version,
                     const char *message) {
  return s->ops->reload_add(s, at, ok, version, message);
}

int store_reload_list(struct store *s, int limit, int (*cb)(void *ud, const struct store_reload *r),
                      void *ud) {
  return s->ops->reload_list(s, limit, cb, ud);
}

int store_event_count_since(struct store *s, double since, long *n) {
  return s->ops->event_count_since(s, since, n);
}

int store_event_search(struct store *s, const struct store_event_filter *f, int limit,
                       int (*cb)(void *ud, const struct store_event *e), void *ud) {
  return s->ops->event_search(s, f, limit, cb, ud);
}

int store_event_people(struct store *s, const char *event_id, int (*cb)(void *ud, const char *term),
                       void *ud) {
  return s->ops->event_people(s, event_id, cb, ud);
}

int store_person_words(const char *person, char words[][STORE_SEARCH_MAX + 1]) {
  int nwords = 0;
  const char *p = person ? person : "";
  while (*p && nwords < STORE_TERMS_MAX) {
    while (*p == ' ' || *p == '\t' || *p == ',')
      p++;
    size_t n = 0;
    while (p[n] && p[n] != ' ' && p[n] != '\t' && p[n] != ',')
      n++;
    if (!n)
      break;
    if (n > STORE_SEARCH_MAX)
      n = STORE_SEARCH_MAX;
    for (size_t i = 0; i < n; i++)
      words[nwords][i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] - 'A' + 'a' : p[i]);
    words[nwords][n] = 0;
    nwords++;
    p += n;
    while (*p && *p != ' ' && *p != '\t' && *p != ',')
      p++; /* the rest of an overlong word */
  }
  return nwords;
}

int store_event_age_cmp(const void *a, const void *b) {
  const struct store_event *x = a, *y = b;
  if (x->created_at != y->created_at)
    return x->created_at < y->created_at ? -1 : 1;
  return strcmp(x->id, y->id);
}
