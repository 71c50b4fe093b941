/* store: everything ncghl must not lose, in one SQLite file (WAL,
 * synchronous=FULL) or in one PostgreSQL schema (store_open with a URL): the event queue with each attempt of each upstream call,
 * idempotency (an event id is its own key), the NowCerts <-> GHL id
 * cross-reference, the field-level sync state (snapshots, conflicts, field
 * changes), and small key/value cursors. The schema is versioned and migrated at open.
 *
 * Calls are synchronous and run inside whatever transaction is open on the
 * connection (store_begin/store_commit), or in their own when none is; the
 * group commit that batches many requests into one fsync is queue.c's job.
 * Return values: 0 ok, -1 error (logged, with the database's message).
 * The backends (store_sqlite.c, store_pg.c) answer every call alike; where a
 * SQLite notion has no PostgreSQL counterpart the call says what it does
 * there (docs/decisions.md, "The store on PostgreSQL"). */
#ifndef NCGHL_STORE_H
#define NCGHL_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "digest.h"

enum ev_status { EV_PENDING = 0, EV_RUNNING, EV_DONE, EV_RETRY_WAIT, EV_DEAD };
#define EV_STATUS_COUNT 5

const char *store_status_name(enum ev_status s); /* "pending", "running", "done", "retry_wait", "dead" */
int store_status_parse(const char *name);        /* -1 if unknown */

struct store;

struct store_event {
  char id[EVENT_ID_MAX];
  char source[16];  /* "nowcerts", "ghl", "manual", ... */
  char *type;       /* descriptive event type, e.g. "INSURED_INSERT" */
  char *payload;    /* the raw body as received */
  size_t payload_len;
  enum ev_status status;
  int attempts;     /* times the event was started */
  char *last_error; /* NULL if none */
  char *result;     /* JSON the mapping returned, NULL if none */
  double created_at, updated_at, next_at; /* unix seconds */
};
void store_event_free(struct store_event *e); /* frees the strings, not e */
/* The one JSON shape of an event's summary, shared by `ncghl events --json`
 * and the admin API: the members id, source, type, status, attempts,
 * last_error, created_at, updated_at, next_at, without the braces. */
void store_event_json_fields(struct buf *b, const struct store_event *e);

struct store_attempt {
  long long seq;
  char *service; /* "nowcerts" | "ghl" */
  char *method;
  char *url;     /* never carries a secret */
  int status;    /* HTTP status, 0 for a transport error */
  char *error;   /* NULL if none */
  double duration_ms;
  double at;
  int event_attempt; /* which run of the event made the call */
  char *request;     /* excerpt of the body sent, NULL if none or not kept */
  char *answer;      /* excerpt of the body answered, NULL if none or not kept */
};
/* How much of an attempt's request and answer bodies is kept. */
#define STORE_EXCERPT_MAX 2048

/* target: a postgresql:// or postgres:// URL opens PostgreSQL (a query
 * parameter ncghl_schema=<name> puts every table in that schema, created if
 * missing; default public); anything else is a SQLite file, whose directory
 * is created if needed. err gets a one-line reason, never a password. */
struct store *store_open(const char *target, char *err, size_t errlen);
/* Whether a store was ever created there (a SQLite file exists; a
 * PostgreSQL schema has ncghl's tables), for commands that read one and
 * must not create it. A database that cannot be reached counts as there:
 * store_open then says why. */
bool store_exists(const char *target);
/* For one store per tenant on one PostgreSQL database: the URL `base`
 * with its ncghl_schema parameter set to `schema` (added, or replacing the
 * one it has). -1 when the schema name is not 1 to 63 letters, digits,
 * '_' or '-' (not starting with a digit), base is not a URL, or out is
 * too small. */
int store_url_with_schema(const char *base, const char *schema, char *out, size_t outlen);
/* True for a target store_open gives to PostgreSQL. */
bool store_is_url(const char *target);
/* The target as messages may show it: a URL's password is masked. */
void store_display_name(const char *target, char *out, size_t outlen);
/* Calls each(ud, p, n) for every password a store URL carries (in its
 * user-info, and as a `password=` parameter), in order. */
void store_url_secrets(const char *target, void (*each)(void *ud, const char *p, size_t n),
                       void *ud);
/* How long a lease outlives its owner's last renewal (engine.c renews its
 * own every 10 s); a running row whose owner's lease is older is anyone's. */
#define STORE_LEASE_TTL 30
void store_close(struct store *s);

int store_begin(struct store *s); /* BEGIN IMMEDIATE (PostgreSQL: BEGIN) */
/* How the next transactions commit: full (fsync of the WAL at COMMIT, the
 * default) or not (survives a crash of the process, not of the machine,
 * until the next full commit). SQLite reads this at BEGIN, so it is set
 * between transactions. */
int store_set_full_sync(struct store *s, bool full);
/* The database file's path, as SQLite resolved it ("" for :memory:); on
 * PostgreSQL the URL with its password masked. */
const char *store_path(struct store *s);
/* The file whose fdatasync makes the commits made without full sync durable
 * (SQLite's WAL), or NULL when there is none: on PostgreSQL only a COMMIT
 * with full sync is durable, so the queue keeps full sync on there. */
const char *store_wal_file(struct store *s);
int store_commit(struct store *s);
int store_rollback(struct store *s);
bool store_in_txn(struct store *s);
/* True when a write transaction can be started and committed right now. */
bool store_writable(struct store *s);
int store_schema_version(struct store *s);

enum store_put { STORE_PUT_NEW, STORE_PUT_DUPLICATE, STORE_PUT_REQUEUED };
/* Intake. No row: insert with status `initial` (EV_PENDING, or EV_RUNNING
 * when the caller starts it at once) -> NEW. A row that is dead: back to
 * `initial`, keeping id, attempts and history -> REQUEUED. A row created more
 * than ttl seconds ago: treated as a new event (status `initial`, created_at
 * now, history kept) -> NEW. Otherwise -> DUPLICATE, *existing = its status.
 * Put as EV_RUNNING (NEW or REQUEUED), the run it starts is counted in
 * attempts by the same statement: one write per accepted event. */
int store_event_put(struct store *s, const char *id, const char *source, const char *type,
                    const char *payload, size_t payload_len, enum ev_status initial, double now,
                    double ttl, enum store_put *result, enum ev_status *existing);
/* 0 found, 1 not found, -1 error. */
int store_event_get(struct store *s, const char *id, struct store_event *out);
/* Marks a pending or retry_wait event running and counts the attempt.
 * Returns 1 if claimed, 0 if it was in another status, -1 on error. */
int store_event_claim(struct store *s, const char *id, double now);
/* Claims up to `max` events that are pending, or retry_wait with
 * next_at <= now, oldest first; *n gets how many. Caller frees each. */
int store_claim_due(struct store *s, double now, int max, struct store_event *out, int *n);
/* Ends a run: status done, retry_wait (with next_at) or dead; last_error and
 * result may be NULL. */
int store_event_finish(struct store *s, const char *id, enum ev_status st, double next_at,
                       const char *last_error, const char *result, double now);
/* Puts an event back in the queue (pending, next_at 0) whatever its status
 * unless running. Returns 1 if requeued, 0 if not found or running. */
int store_event_requeue(struct store *s, const char *id, double now);
/* Start-up: running events nobody works on back to pending; *n gets how
 * many. SQLite (one service per file): every running event. PostgreSQL
 * (several nodes): only rows without an owner, rows of an earlier process
 * of this host (same pid, or a pid no longer alive) and rows whose owner's
 * lease (kv "lease.<owner>") is older than STORE_LEASE_TTL; another live
 * node's rows stay its own. */
int store_recover_running(struct store *s, int *n);
/* Earliest next_at among retry_wait events, or 0 if none. */
double store_next_due(struct store *s);
/* Lists events, newest first; status NULL for all; cb returns non-zero to stop. */
int store_event_list(struct store *s, const char *status, int limit,
                     int (*cb)(void *ud, const struct store_event *e), void *ud);
int store_count_by_status(struct store *s, long counts[EV_STATUS_COUNT]);

int store_attempt_add(struct store *s, const char *event_id, int event_attempt, const char *service,
                      const char *method, const char *url, int status, const char *error,
                      double duration_ms, double at);
/* The same, keeping the first STORE_EXCERPT_MAX bytes of the request and
 * answer bodies (either may be NULL) for the event's story in /ui. */
int store_attempt_add_io(struct store *s, const char *event_id, int event_attempt,
                         const char *service, const char *method, const char *url, int status,
                         const char *error, double duration_ms, double at, const char *request,
                         size_t request_len, const char *answer, size_t answer_len);
int store_attempt_list(struct store *s, const char *event_id,
                       int (*cb)(void *ud, const struct store_attempt *a), void *ud);

/* ID cross-reference: kind is "contact", "policy", ...; one NowCerts id maps to
 * one GHL id and back (a new pair replaces either side's old pair). */
int store_link_put(struct store *s, const char *kind, const char *nowcerts_id, const char *ghl_id,
                   double now);
/* malloc'd id or NULL if unknown (or on error). */
char *store_link_ghl(struct store *s, const char *kind, const char *nowcerts_id);
char *store_link_nowcerts(struct store *s, const char *kind, const char *ghl_id);

/* Forgets a link (a contact deleted in GHL). */
int store_link_delete(struct store *s, const char *kind, const char *nowcerts_id);

/* Field-level sync (SPEC 10). A link's snapshot holds, per mapped field, the
 * base value both sides agreed on and when each side's version was seen; it
 * is one JSON document whose shape belongs to lua/ncghl/sync.lua, kept by
 * (kind, NowCerts id), and outlives the link (a tombstone). json NULL deletes. */
int store_snapshot_put(struct store *s, const char *kind, const char *nowcerts_id,
                       const char *ghl_id, const char *json, double now);
char *store_snapshot_get(struct store *s, const char *kind, const char *nowcerts_id); /* malloc'd */

/* One field both sides changed since the base, and which side's value won.
 * Strings are borrowed (valid during a list callback only). */
struct store_conflict {
  long long id; /* assigned by the store */
  const char *kind, *nowcerts_id, *ghl_id, *field;
  const char *nowcerts_value, *ghl_value, *base; /* NULL: empty */
  const char *winner;                            /* "nowcerts" | "ghl" */
  const char *event_id;                          /* the event that found it */
  double nowcerts_at, ghl_at;                    /* each side's record time */
  double at;
};
int store_conflict_add(struct store *s, const struct store_conflict *c);
long long store_conflict_count(struct store *s); /* -1 on error */

/* One field change ncghl saw on a side or made there (the person timeline).
 * side: where the change was seen or made; action: what ncghl did. */
struct store_change {
  long long id;
  const char *kind, *nowcerts_id, *ghl_id, *field;
  const char *side;                 /* "nowcerts" | "ghl" */
  const char *old_value, *new_value; /* NULL: empty */
  const char *action;               /* "sent", "kept", "conflict_won", "conflict_lost", ... */
  const char *event_id;
  double at;
};
int store_change_add(struct store *s, const struct store_change *c);

/* Which rows a list wants: NULL/0 members do not filter. Newest first; a
 * page ends before `before` (an id), at most `limit` rows (default 100). */
struct store_sync_filter {
  const char *kind, *nowcerts_id, *ghl_id, *event_id;
  long long before;
  int limit;
};
int store_conflict_list(struct store *s, const struct store_sync_filter *f,
                        int (*cb)(void *ud, const struct store_conflict *c), void *ud);
int store_change_list(struct store *s, const struct store_sync_filter *f,
                      int (*cb)(void *ud, const struct store_change *c), void *ud);
/* The one JSON object of each, shared by the CLI and the admin API. */
void store_conflict_json(struct buf *b, const struct store_conflict *c);
void store_change_json(struct buf *b, const struct store_change *c);

int store_kv_put(struct store *s, const char *key, const char *value);
char *store_kv_get(struct store *s, const char *key); /* malloc'd or NULL */

/* ---- faults, leases, upkeep ------------------------------------------ */

/* The service's connection never sleeps in SQLite's busy handler (0 ms):
 * a lock held by another process is answered SQLITE_BUSY at once and the
 * caller retries from a timer. Commands keep the 5 s default. PostgreSQL:
 * lock_timeout, 0 meaning 2 s there (its 0 is "forever"). */
void store_set_busy_timeout(struct store *s, int ms);
/* What the last failed call on this connection ran into. BUSY: another
 * process holds the write lock (try again later); FULL: no space (nothing
 * was written); IO: the file can no longer be trusted (PostgreSQL: the
 * connection was lost). A failed COMMIT that was BUSY leaves a SQLite
 * transaction open for another store_commit; on PostgreSQL a failed COMMIT
 * always ends the transaction. */
enum store_fault {
  STORE_FAULT_NONE,
  STORE_FAULT_BUSY,
  STORE_FAULT_FULL,
  STORE_FAULT_IO,
  STORE_FAULT_OTHER
};
enum store_fault store_last_fault(struct store *s);
void store_clear_fault(struct store *s);

/* Leases: every row this connection sets running is marked with its owner
 * ("<host>:<pid>:<start time>", unique across the machines sharing a
 * PostgreSQL store); store_running_list walks the running rows (cb
 * returns non-zero to stop; owner NULL when unmarked) and
 * store_event_release puts one back to pending (1 if it was running). */
const char *store_owner(struct store *s);
/* Rows changed on this connection so far (a batch that changed none needs
 * no fsync). */
long long store_total_changes(struct store *s);
int store_running_list(struct store *s,
                       int (*cb)(void *ud, const char *id, const char *owner, double updated_at),
                       void *ud);
int store_event_release(struct store *s, const char *id, double now);
/* Deletes an event that was stored but refused (503) and never ran
 * (pending or running, at most one attempt), so a later copy is new.
 * 1 deleted, 0 not (absent or it ran), -1 error. */
int store_event_forget(struct store *s, const char *id);

/* Checkpoints: 0 turns off the automatic checkpoint inside COMMIT, for a
 * connection whose checkpoints run elsewhere. store_checkpoint runs one
 * PASSIVE checkpoint (never waits for readers or writers). On PostgreSQL,
 * which checkpoints itself, both do nothing (0 pages). */
int store_set_autocheckpoint(struct store *s, int pages);
int store_checkpoint(struct store *s, int *wal_pages, int *copied);
/* Retention: deletes up to `batch` done events created before `cutoff`
 * (unix seconds) with their attempts, in one transaction; *deleted gets
 * how many rows went. Dead, pending, running and retry_wait events stay. */
int store_retention_batch(struct store *s, double cutoff, int batch, int *deleted);

/* Events by status kept in memory: seeded by one count query
 * (store_counts_seed), then moved by every row change this connection
 * commits. store_counts_set replaces them (a recount made elsewhere);
 * store_count_queries says how many count queries this connection ran. */
int store_counts_seed(struct store *s);
void store_counts(struct store *s, long counts[EV_STATUS_COUNT]);
void store_counts_set(struct store *s, const long counts[EV_STATUS_COUNT]);
long store_count_queries(struct store *s);

/* Whether a running row's owner is a process of this host that is gone: a
 * pid that no longer exists, or ours under another start time (an earlier
 * run that had our pid). Another host's owner is never "gone" here: only
 * its lease can say. */
bool store_owner_gone(struct store *s, const char *owner);
/* True when several nodes may work on this store at once (PostgreSQL);
 * a SQLite file has one service. */
bool store_is_shared(struct store *s);
/* A named lease in kv ("<owner> <until>"), for work one node at a time
 * does (the poller): 1 when this connection's owner holds it for ttl
 * seconds from now (taken, or renewed), 0 when another live owner does, -1
 * on error. It is free once its time passed or its owner is gone
 * (store_owner_gone); of two nodes taking it at once only one gets it.
 * store_lease_release gives it up if it is ours. */
int store_lease_take(struct store *s, const char *name, double ttl, double now);
int store_lease_release(struct store *s, const char *name);

/* ---- limits shared by every node of a store ---- */

/* Keys an event works under (one person's e-mail, a policy number), held
 * across the nodes of a shared store: 1 when this connection now holds
 * every one of keys, 0 when another node holds one (none is then taken),
 * -1 on error. Held until store_keys_unlock, or until the connection ends
 * (a node that dies lets its keys go). A store of one service (SQLite)
 * answers 1 and keeps nothing: the process's own locks are enough. */
int store_keys_lock(struct store *s, const char *const *keys, int n);
void store_keys_unlock(struct store *s, const char *const *keys, int n);

/* A sliding-window limiter kept in the store, so several nodes on one
 * database together send at most `limit` requests per `window` seconds
 * under one key (GHL: per location). 0 when a request may go now (it is
 * counted), else *wait gets the seconds until one may. `now` is wall-clock
 * time: the nodes' clocks must agree (NTP). */
int store_rate_take(struct store *s, const char *key, int limit, double window, double now,
                    double *wait);

/* ---- what the /ui page reads ---- */

/* Events newest first (created_at, then id, descending), every filter
 * optional (NULL). person is one to four words; an event matches when each
 * word starts one of the e-mails or names in its payload, or the words
 * together start one ("acme roof"), case-insensitive (the terms are noted
 * at intake, so this is an index range). Paging: before_id and
 * before_at are the id and created_at of the last event of the page before. */
#define STORE_SEARCH_MAX 200
struct store_event_filter {
  const char *status, *source, *type, *person;
  const char *before_id;
  double before_at;
};
int store_event_search(struct store *s, const struct store_event_filter *f, int limit,
                       int (*cb)(void *ud, const struct store_event *e), void *ud);
/* The e-mails and names noted for an event, sorted. */
int store_event_people(struct store *s, const char *event_id,
                       int (*cb)(void *ud, const char *term), void *ud);
/* Events received since a unix time. */
int store_event_count_since(struct store *s, double since, long *n);

/* The mapping load and reload history: each load's time, result, the
 * version it left running (a hash of the scripts) and its message. */
struct store_reload {
  double at;
  bool ok;
  const char *version, *message; /* valid during the callback */
};
int store_reload_add(struct store *s, double at, bool ok, const char *version,
                     const char *message);
/* Newest first. */
int store_reload_list(struct store *s, int limit,
                      int (*cb)(void *ud, const struct store_reload *r), void *ud);

#endif
