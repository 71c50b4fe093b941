/* SQLite behind store.h. One connection per process, every statement prepared
 * once at open. Other ncghl processes (replay, backfill) write the same file
 * while the service runs, so every multi-statement operation takes the write
 * lock up front (BEGIN IMMEDIATE) instead of upgrading a read, and the busy
 * timeout absorbs their short transactions. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
/* Debian's libsqlite3 is built with the pre-update hook (the session
 * extension needs it); the header only declares it when asked. */
#define SQLITE_ENABLE_PREUPDATE_HOOK 1
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "log.h"
#include "store_backend.h"
#include "walbuf.h"

#define STORE_BUSY_TIMEOUT_MS 5000

/* The SQL below spells statuses as numbers; this keeps them honest. */
_Static_assert(EV_PENDING == 0 && EV_RUNNING == 1 && EV_DONE == 2 && EV_RETRY_WAIT == 3 &&
                   EV_DEAD == 4 && EV_STATUS_COUNT == 5,
               "store.c SQL assumes these status numbers");
#define S_PENDING "0"
#define S_RUNNING "1"
#define S_RETRY_WAIT "3"

/* Which payload fields name a person (compared lower-cased, at any depth):
 * the e-mail and name fields of NowCerts, GHL and the source design. */
#define PEOPLE_TERM "lower(trim(t.value))"
#define PEOPLE_WHERE                                                                             \
  "t.type = 'text' AND length(trim(t.value)) BETWEEN 2 AND 200 AND lower(t.key) IN ('email',"    \
  " 'insuredemail', 'firstname', 'lastname', 'insuredfirstname', 'insuredlastname',"           \
  " 'first_name', 'last_name', 'name', 'fullname', 'full_name', 'commercialname',"              \
  " 'contactname', 'companyname')"

/* The same rule in C, for intake: json_tree over every payload cost a tenth
 * of intake's CPU (docs/performance.md). people_walk finds what
 * PEOPLE_TERM and PEOPLE_WHERE over json_tree find (SQLite's lower() and
 * trim() fold only ASCII letters and spaces, and length() counts
 * characters); test_store_ui checks the two agree. Keep the lists equal. */
static const char *const people_keys[] = {
    "email", "insuredemail", "firstname", "lastname", "insuredfirstname", "insuredlastname",
    "first_name", "last_name", "name", "fullname", "full_name", "commercialname",
    "contactname", "companyname"};

struct terms {
  char **v;
  size_t n, cap;
  bool oom;
};

static bool people_key(const char *k) {
  for (size_t i = 0; i < sizeof people_keys / sizeof people_keys[0]; i++)
    if (strcasecmp(k, people_keys[i]) == 0)
      return true;
  return false;
}

static void terms_add(struct terms *t, const char *value) {
  size_t len = strlen(value);
  while (len && value[len - 1] == ' ')
    len--;
  while (len && *value == ' ') {
    value++;
    len--;
  }
  size_t chars = 0;
  for (size_t i = 0; i < len; i++)
    chars += ((unsigned char)value[i] & 0xC0) != 0x80;
  if (chars < 2 || chars > 200)
    return;
  char *term = malloc(len + 1);
  if (!term) {
    t->oom = true;
    return;
  }
  for (size_t i = 0; i < len; i++)
    term[i] = (value[i] >= 'A' && value[i] <= 'Z') ? (char)(value[i] - 'A' + 'a') : value[i];
  term[len] = '\0';
  for (size_t i = 0; i < t->n; i++)
    if (strcmp(t->v[i], term) == 0) {
      free(term);
      return;
    }
  if (t->n == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    char **v = realloc(t->v, cap * sizeof *v);
    if (!v) {
      free(term);
      t->oom = true;
      return;
    }
    t->v = v;
    t->cap = cap;
  }
  t->v[t->n++] = term;
}

static void people_walk(const struct json *v, struct terms *t) {
  enum json_type ty = json_type(v);
  if (ty != JSON_OBJECT && ty != JSON_ARRAY)
    return;
  for (size_t i = 0; i < json_len(v); i++) {
    const struct json *c = json_at(v, i);
    if (ty == JSON_OBJECT && json_type(c) == JSON_STRING && people_key(json_key_at(v, i)))
      terms_add(t, json_str(c));
    people_walk(c, t);
  }
}

static void terms_free(struct terms *t) {
  for (size_t i = 0; i < t->n; i++)
    free(t->v[i]);
  free(t->v);
}

/* Migration i takes the file from schema version i to i + 1, in one
 * transaction. A shipped migration is never edited: a schema change is a new
 * string at the end. */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE events ("
    " id TEXT PRIMARY KEY,"
    " source TEXT NOT NULL,"
    " type TEXT NOT NULL DEFAULT '',"
    " payload TEXT NOT NULL DEFAULT '',"
    " status INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " result TEXT,"
    " created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL,"
    " next_at REAL NOT NULL DEFAULT 0);"
    "CREATE INDEX events_status_next ON events (status, next_at);"
    "CREATE INDEX events_created ON events (created_at);"
    "CREATE TABLE attempts ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,"
    " event_attempt INTEGER NOT NULL,"
    " service TEXT NOT NULL,"
    " method TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " error TEXT,"
    " duration_ms REAL NOT NULL,"
    " at REAL NOT NULL);"
    "CREATE INDEX attempts_event ON attempts (event_id);"
    /* Two unique keys: INSERT OR REPLACE then drops every old row holding
     * either side of a new pair, which is the replacement rule store.h wants. */
    "CREATE TABLE links ("
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT NOT NULL,"
    " ghl_id TEXT NOT NULL,"
    " updated_at REAL NOT NULL,"
    " UNIQUE (kind, nowcerts_id),"
    " UNIQUE (kind, ghl_id));"
    "CREATE TABLE fingerprints ("
    " side TEXT NOT NULL,"
    " record_id TEXT NOT NULL,"
    " json TEXT NOT NULL,"
    " updated_at REAL NOT NULL,"
    " PRIMARY KEY (side, record_id));"
    "CREATE TABLE kv ("
    " key TEXT PRIMARY KEY,"
    " value TEXT NOT NULL);",
    /* 2: claiming pending work walks this index instead of every event ever
     * received in created_at order. */
    "CREATE INDEX events_status_created ON events (status, created_at);",
    /* 3: field-level sync (SPEC 10). A link's snapshot is one JSON document
     * (its shape is lua/ncghl/sync.lua's); the record fingerprints it
     * replaces become its first bases, so links made before the upgrade are
     * not re-sent whole (no resync storm). Conflicts and field changes are
     * rows, listed by link, by contact and by event. */
    "CREATE TABLE snapshots ("
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT NOT NULL,"
    " ghl_id TEXT,"
    " json TEXT NOT NULL,"
    " updated_at REAL NOT NULL,"
    " PRIMARY KEY (kind, nowcerts_id));"
    "INSERT INTO snapshots (kind, nowcerts_id, ghl_id, json, updated_at)"
    " SELECT l.kind, l.nowcerts_id, l.ghl_id,"
    "  json_object('v', 1, 'fields', (SELECT json_group_object(j.key,"
    "   json_object('base', CAST(j.value AS TEXT))) FROM json_each(f.json) j"
    "   WHERE j.type IN ('text', 'integer', 'real'))),"
    "  f.updated_at"
    " FROM links l JOIN fingerprints f ON f.side = 'ghl' AND f.record_id = l.ghl_id"
    " WHERE json_valid(f.json);"
    "DROP TABLE fingerprints;"
    "CREATE TABLE conflicts ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT NOT NULL,"
    " ghl_id TEXT,"
    " field TEXT NOT NULL,"
    " nowcerts_value TEXT,"
    " ghl_value TEXT,"
    " base TEXT,"
    " winner TEXT NOT NULL,"
    " event_id TEXT,"
    " nowcerts_at REAL NOT NULL DEFAULT 0,"
    " ghl_at REAL NOT NULL DEFAULT 0,"
    " at REAL NOT NULL);"
    "CREATE INDEX conflicts_link ON conflicts (kind, nowcerts_id, id);"
    "CREATE INDEX conflicts_ghl ON conflicts (ghl_id, id);"
    "CREATE INDEX conflicts_at ON conflicts (at);"
    "CREATE TABLE changes ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT,"
    " ghl_id TEXT,"
    " field TEXT NOT NULL,"
    " side TEXT NOT NULL,"
    " old_value TEXT,"
    " new_value TEXT,"
    " action TEXT NOT NULL,"
    " event_id TEXT,"
    " at REAL NOT NULL);"
    "CREATE INDEX changes_link ON changes (kind, nowcerts_id, id);"
    "CREATE INDEX changes_ghl ON changes (ghl_id, id);"
    "CREATE INDEX changes_event ON changes (event_id);"
    "CREATE INDEX changes_at ON changes (at);",
    /* 4: who holds a running row. A row left running by
     * an owner whose lease lapsed is taken up again without a restart. */
    "ALTER TABLE events ADD COLUMN owner TEXT;",
    /* 5: what the /ui page reads. Each upstream attempt
     * keeps a bounded excerpt of its request and answer; event_people holds
     * the lower-cased e-mails and names of each payload (filled at intake),
     * so finding a person's events is one index range, not a scan of every
     * payload; events by type or source page on their own index; reloads is
     * the history of the mapping versions. Events stored before this
     * migration get their people here, once. */
    "ALTER TABLE attempts ADD COLUMN request TEXT;"
    "ALTER TABLE attempts ADD COLUMN answer TEXT;"
    "CREATE TABLE event_people ("
    " term TEXT NOT NULL,"
    " event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,"
    " PRIMARY KEY (term, event_id)) WITHOUT ROWID;"
    "CREATE INDEX event_people_event ON event_people (event_id);"
    "CREATE INDEX events_type_created ON events (type, created_at);"
    "CREATE INDEX events_source_created ON events (source, created_at);"
    "CREATE TABLE reloads ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " at REAL NOT NULL,"
    " ok INTEGER NOT NULL,"
    " version TEXT NOT NULL,"
    " message TEXT NOT NULL);"
    "INSERT OR IGNORE INTO event_people (term, event_id)"
    " SELECT " PEOPLE_TERM ", events.id FROM events, json_tree(CASE WHEN json_valid(events.payload)"
    " THEN events.payload ELSE '{}' END) AS t WHERE " PEOPLE_WHERE ";",
    /* 6: limits shared by every node of a store (store_rate_take): the
     * send times of the last window, per key. A SQLite file has one
     * service, but the schema stays the same on both backends. */
    "CREATE TABLE rate_stamps ("
    " key TEXT NOT NULL,"
    " at REAL NOT NULL);"
    "CREATE INDEX rate_stamps_key_at ON rate_stamps (key, at);",
    /* 7: intake's one write made compact (SPEC 8). An event gets an
     * integer key, seq, and its people are kept by it: a term many events
     * share (a common first name) gains its new entries at the end of its
     * range, and an event's entries sit together, where keyed by the
     * 70-byte text id each landed on a random page of two b-trees (they were
     * two thirds of the WAL written per accepted event). The id stays
     * unique. migrate() runs this with foreign keys off, SQLite's way to
     * rebuild a table others refer to, and checks them before the commit. */
    "CREATE TABLE events_v7 ("
    " id TEXT NOT NULL UNIQUE,"
    " source TEXT NOT NULL,"
    " type TEXT NOT NULL DEFAULT '',"
    " payload TEXT NOT NULL DEFAULT '',"
    " status INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " result TEXT,"
    " created_at REAL NOT NULL,"
    " updated_at REAL NOT NULL,"
    " next_at REAL NOT NULL DEFAULT 0,"
    " owner TEXT,"
    " seq INTEGER PRIMARY KEY);"
    "INSERT INTO events_v7 (id, source, type, payload, status, attempts, last_error, result,"
    " created_at, updated_at, next_at, owner) SELECT id, source, type, payload, status, attempts,"
    " last_error, result, created_at, updated_at, next_at, owner FROM events"
    " ORDER BY created_at, id;"
    "CREATE TABLE event_people_v7 ("
    " term TEXT NOT NULL,"
    " seq INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE,"
    " PRIMARY KEY (term, seq)) WITHOUT ROWID;"
    "INSERT INTO event_people_v7 (term, seq) SELECT p.term, e.seq FROM event_people AS p"
    " JOIN events_v7 AS e ON e.id = p.event_id;"
    "DROP TABLE event_people;"
    "DROP TABLE events;"
    "ALTER TABLE events_v7 RENAME TO events;"
    "ALTER TABLE event_people_v7 RENAME TO event_people;"
    "CREATE INDEX event_people_seq ON event_people (seq);"
    "CREATE INDEX events_status_next ON events (status, next_at);"
    "CREATE INDEX events_created ON events (created_at);"
    "CREATE INDEX events_status_created ON events (status, created_at);"
    "CREATE INDEX events_type_created ON events (type, created_at);"
    "CREATE INDEX events_source_created ON events (source, created_at);",
    /* 8: an event's attempts found by its integer key too. Indexed by the
     * text id, every attempt row landed on a random page of attempts_event:
     * three of the ~8 WAL pages the full path wrote per event. By seq they
     * append. event_id stays, unindexed, for what reads the rows by hand. */
    "CREATE TABLE attempts_v8 ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " event_id TEXT NOT NULL,"
    " event_attempt INTEGER NOT NULL,"
    " service TEXT NOT NULL,"
    " method TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " error TEXT,"
    " duration_ms REAL NOT NULL,"
    " at REAL NOT NULL,"
    " request TEXT,"
    " answer TEXT,"
    " event_seq INTEGER NOT NULL REFERENCES events (seq) ON DELETE CASCADE);"
    "INSERT INTO attempts_v8 (seq, event_id, event_attempt, service, method, url, status, error,"
    " duration_ms, at, request, answer, event_seq) SELECT a.seq, a.event_id, a.event_attempt,"
    " a.service, a.method, a.url, a.status, a.error, a.duration_ms, a.at, a.request, a.answer,"
    " e.seq FROM attempts AS a JOIN events AS e ON e.id = a.event_id;"
    "DROP TABLE attempts;"
    "ALTER TABLE attempts_v8 RENAME TO attempts;"
    "CREATE INDEX attempts_event_seq ON attempts (event_seq);",
    /* 9: only the indexes a query uses, each as small as its query needs
     * (issue 10; docs/decisions.md). Every accepted event went into six
     * indexes, and every change of state moved it in two. The /ui's type
     * and source filters now walk events_created, newest first, like the
     * unfiltered list (a rare type costs a pass over what retention
     * keeps); retry_wait rows, the only ones read by next_at, get an
     * index of their own instead of every row in (status, next_at). */
    "DROP INDEX events_type_created;"
    "DROP INDEX events_source_created;"
    "DROP INDEX events_status_next;"
    "CREATE INDEX events_retry_next ON events (next_at) WHERE status = " S_RETRY_WAIT ";",
};
#define MIGRATION_COUNT ((int)(sizeof migrations / sizeof migrations[0]))

#define EV_COLS                                                                                  \
  "id, source, type, payload, status, attempts, last_error, result, created_at, updated_at, "   \
  "next_at"

enum stmt_id {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SAVEPOINT,
  ST_RELEASE,
  ST_ROLLBACK_TO,
  ST_USER_VERSION,
  ST_EV_INSERT,
  ST_EV_STATE,
  ST_EV_REQUEUE_DEAD,
  ST_EV_RENEW,
  ST_EV_GET,
  ST_EV_CLAIM,
  ST_EV_CLAIM_DUE,
  ST_EV_FINISH,
  ST_EV_REQUEUE,
  ST_EV_RECOVER,
  ST_EV_NEXT_DUE,
  ST_EV_LIST,
  ST_EV_LIST_STATUS,
  ST_EV_COUNT,
  ST_AT_ADD,
  ST_AT_LIST,
  ST_LINK_PUT,
  ST_LINK_GHL,
  ST_LINK_NC,
  ST_LINK_DEL,
  ST_SNAP_PUT,
  ST_SNAP_GET,
  ST_SNAP_DEL,
  ST_CONFLICT_ADD,
  ST_CONFLICT_COUNT,
  ST_CHANGE_ADD,
  ST_KV_PUT,
  ST_KV_GET,
  ST_KV_DEL,
  ST_WRITABLE_PROBE,
  ST_PEOPLE_PUT,
  ST_AT_ADD_IO,
  ST_RELOAD_ADD,
  ST_RELOAD_LIST,
  ST_EV_SINCE,
  ST_EV_RUNNING_LIST,
  ST_EV_RELEASE,
  ST_RETAIN_EVENTS,
  ST_EV_FORGET,
  ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT store_op",
    [ST_RELEASE] = "RELEASE store_op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO store_op",
    [ST_USER_VERSION] = "PRAGMA user_version",
    [ST_EV_INSERT] = "INSERT INTO events (id, source, type, payload, status, attempts, created_at,"
                     " updated_at, next_at, owner) VALUES (?1, ?2, ?3, ?4, ?5,"
                     " CASE WHEN ?5 = " S_RUNNING " THEN 1 ELSE 0 END, ?6, ?6, 0,"
                     " CASE WHEN ?5 = " S_RUNNING " THEN ncghl_owner() END)"
                     " ON CONFLICT (id) DO NOTHING",
    [ST_EV_STATE] = "SELECT status, created_at FROM events WHERE id = ?1",
    [ST_EV_REQUEUE_DEAD] = "UPDATE events SET status = ?2, next_at = 0, updated_at = ?3,"
                           " attempts = attempts + CASE WHEN ?2 = " S_RUNNING " THEN 1 ELSE 0 END,"
                           " owner = CASE WHEN ?2 = " S_RUNNING " THEN ncghl_owner() END"
                           " WHERE id = ?1",
    [ST_EV_RENEW] = "UPDATE events SET source = ?2, type = ?3, payload = ?4, status = ?5,"
                    " last_error = NULL, result = NULL, created_at = ?6, updated_at = ?6,"
                    " attempts = attempts + CASE WHEN ?5 = " S_RUNNING " THEN 1 ELSE 0 END,"
                    " next_at = 0, owner = CASE WHEN ?5 = " S_RUNNING " THEN ncghl_owner() END"
                    " WHERE id = ?1",
    [ST_EV_GET] = "SELECT " EV_COLS " FROM events WHERE id = ?1",
    [ST_EV_CLAIM] = "UPDATE events SET status = " S_RUNNING ", attempts = attempts + 1,"
                    " owner = ncghl_owner(), updated_at = ?2"
                    " WHERE id = ?1 AND status IN (" S_PENDING ", " S_RETRY_WAIT ")",
    /* Pending first, oldest first; then retry_wait rows whose time has come.
     * Each branch is one index range, so a store full of done events costs
     * nothing here (the second one named: see ST_EV_NEXT_DUE). */
    [ST_EV_CLAIM_DUE] = "UPDATE events SET status = " S_RUNNING ", attempts = attempts + 1,"
                        " owner = ncghl_owner(), updated_at = ?1 WHERE id IN ("
                        "SELECT id FROM (SELECT id FROM events WHERE status = " S_PENDING
                        " ORDER BY created_at LIMIT ?2)"
                        " UNION ALL SELECT id FROM (SELECT id FROM events"
                        " INDEXED BY events_retry_next WHERE status = " S_RETRY_WAIT
                        " AND next_at <= ?1 ORDER BY next_at LIMIT ?2)"
                        " LIMIT ?2) RETURNING " EV_COLS,
    [ST_EV_FINISH] = "UPDATE events SET status = ?2, next_at = ?3, last_error = ?4, result = ?5,"
                     " updated_at = ?6, owner = NULL WHERE id = ?1",
    [ST_EV_REQUEUE] = "UPDATE events SET status = " S_PENDING ", next_at = 0, updated_at = ?2"
                      " WHERE id = ?1 AND status <> " S_RUNNING,
    [ST_EV_RECOVER] = "UPDATE events SET status = " S_PENDING ", owner = NULL WHERE status = "
                      S_RUNNING,
    /* INDEXED BY: with no statistics the planner would take the whole
     * retry_wait range of events_status_created and sort it. */
    [ST_EV_NEXT_DUE] = "SELECT MIN(next_at) FROM events INDEXED BY events_retry_next"
                       " WHERE status = " S_RETRY_WAIT,
    [ST_EV_LIST] = "SELECT " EV_COLS " FROM events ORDER BY created_at DESC, rowid DESC"
                   " LIMIT ?1",
    [ST_EV_LIST_STATUS] = "SELECT " EV_COLS " FROM events WHERE status = ?2"
                          " ORDER BY created_at DESC, rowid DESC LIMIT ?1",
    [ST_EV_COUNT] = "SELECT status, COUNT(*) FROM events GROUP BY status",
    [ST_AT_ADD] = "INSERT INTO attempts (event_id, event_attempt, service, method, url, status,"
                  " error, duration_ms, at, event_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
                  " (SELECT seq FROM events WHERE id = ?1))",
    [ST_AT_LIST] = "SELECT seq, service, method, url, status, error, duration_ms, at,"
                   " event_attempt, request, answer FROM attempts WHERE event_seq ="
                   " (SELECT seq FROM events WHERE id = ?1) ORDER BY seq",
    [ST_LINK_PUT] = "INSERT OR REPLACE INTO links (kind, nowcerts_id, ghl_id, updated_at)"
                    " VALUES (?1, ?2, ?3, ?4)",
    [ST_LINK_GHL] = "SELECT ghl_id FROM links WHERE kind = ?1 AND nowcerts_id = ?2",
    [ST_LINK_NC] = "SELECT nowcerts_id FROM links WHERE kind = ?1 AND ghl_id = ?2",
    [ST_LINK_DEL] = "DELETE FROM links WHERE kind = ?1 AND nowcerts_id = ?2",
    [ST_SNAP_PUT] = "INSERT INTO snapshots (kind, nowcerts_id, ghl_id, json, updated_at)"
                    " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (kind, nowcerts_id)"
                    " DO UPDATE SET ghl_id = excluded.ghl_id, json = excluded.json,"
                    " updated_at = excluded.updated_at",
    [ST_SNAP_GET] = "SELECT json FROM snapshots WHERE kind = ?1 AND nowcerts_id = ?2",
    [ST_SNAP_DEL] = "DELETE FROM snapshots WHERE kind = ?1 AND nowcerts_id = ?2",
    [ST_CONFLICT_ADD] = "INSERT INTO conflicts (kind, nowcerts_id, ghl_id, field, nowcerts_value,"
                        " ghl_value, base, winner, event_id, nowcerts_at, ghl_at, at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_CONFLICT_COUNT] = "SELECT COUNT(*) FROM conflicts",
    [ST_CHANGE_ADD] = "INSERT INTO changes (kind, nowcerts_id, ghl_id, field, side, old_value,"
                      " new_value, action, event_id, at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_KV_PUT] = "INSERT INTO kv (key, value) VALUES (?1, ?2)"
                  " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_KV_GET] = "SELECT value FROM kv WHERE key = ?1",
    [ST_KV_DEL] = "DELETE FROM kv WHERE key = ?1",
    /* Always rolled back: it only proves the write lock and a write. */
    [ST_WRITABLE_PROBE] = "INSERT OR REPLACE INTO kv (key, value)"
                          " VALUES ('ncghl.writable_probe', '1')",
    [ST_PEOPLE_PUT] = "INSERT OR IGNORE INTO event_people (term, seq) VALUES (?1, ?2)",
    [ST_AT_ADD_IO] = "INSERT INTO attempts (event_id, event_attempt, service, method, url,"
                     " status, error, duration_ms, at, request, answer, event_seq)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
                     " (SELECT seq FROM events WHERE id = ?1))",
    [ST_RELOAD_ADD] = "INSERT INTO reloads (at, ok, version, message) VALUES (?1, ?2, ?3, ?4)",
    [ST_RELOAD_LIST] = "SELECT at, ok, version, message FROM reloads ORDER BY seq DESC LIMIT ?1",
    [ST_EV_SINCE] = "SELECT COUNT(*) FROM events WHERE created_at >= ?1",
    [ST_EV_RUNNING_LIST] = "SELECT id, owner, updated_at FROM events WHERE status = " S_RUNNING,
    [ST_EV_RELEASE] = "UPDATE events SET status = " S_PENDING ", owner = NULL, updated_at = ?2"
                      " WHERE id = ?1 AND status = " S_RUNNING,
    /* Only done events age out: pending, running and retry_wait ones are
     * work still owed, and a dead one waits for a replay. Their attempts go
     * with them (ON DELETE CASCADE). */
    [ST_RETAIN_EVENTS] = "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events"
                         " WHERE created_at < ?1 AND status = 2 LIMIT ?2)",
    /* Only a row that never ran: one refused with 503 after a failed fsync. */
    [ST_EV_FORGET] = "DELETE FROM events WHERE id = ?1 AND status IN (" S_PENDING ", " S_RUNNING
                     ") AND attempts <= 1",
};

struct sq {
  struct store base; /* first: the dispatch in store.c sees this */
  sqlite3 *db;
  sqlite3_stmt *st[ST_COUNT];
  bool full_sync; /* what PRAGMA synchronous is set to now */
  int busy_ms;    /* the busy timeout in force */
  int last_err;   /* primary SQLite code of the last failure */
};

/* ---- helpers ---------------------------------------------------------- */

static int fail(struct sq *s, const char *what) {
  s->last_err = sqlite3_errcode(s->db) & 0xff;
  if (s->last_err == SQLITE_BUSY) {
    /* Another process's lock: expected, and retried by the caller. */
    log_debug("store: %s: %s", what, sqlite3_errmsg(s->db));
    return -1;
  }
  log_error("store: %s: %s", what, sqlite3_errmsg(s->db));
  return -1;
}

static int fail_arg(const char *what, const char *why) {
  log_error("store: %s: %s", what, why);
  return -1;
}

static void done_with(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

/* Binds a string that must outlive only the step; NULL binds SQL NULL. */
static int bind_str(sqlite3_stmt *st, int i, const char *v) {
  return v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* Runs a statement whose rows, if any, are not wanted. Bindings are cleared
 * either way; bind_rc carries the first binding error so a half-bound
 * statement never runs. */
static int run(struct sq *s, enum stmt_id id, int bind_rc, const char *what) {
  sqlite3_stmt *st = s->st[id];
  int ret = 0;
  if (bind_rc != SQLITE_OK) {
    ret = fail(s, what);
  } else {
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
      ret = fail(s, what);
  }
  done_with(st);
  return ret;
}

/* A multi-statement operation must be all or nothing. With no transaction
 * open it gets its own (IMMEDIATE, so it never has to upgrade a read lock,
 * which SQLite answers with SQLITE_BUSY at once); inside the caller's batch
 * it gets a savepoint, so its failure undoes only itself, not the batch. */
static int op_begin(struct sq *s, bool *own) {
  *own = sqlite3_get_autocommit(s->db) != 0;
  memcpy(s->base.saved_delta, s->base.delta, sizeof s->base.delta);
  return run(s, *own ? ST_BEGIN : ST_SAVEPOINT, SQLITE_OK, *own ? "begin" : "savepoint");
}

static int op_end(struct sq *s, bool own, bool ok) {
  if (ok && run(s, own ? ST_COMMIT : ST_RELEASE, SQLITE_OK, own ? "commit" : "release") == 0)
    return 0;
  /* Some errors (I/O, full disk) make SQLite roll back the whole
   * transaction itself; there is then nothing left to undo. */
  if (sqlite3_get_autocommit(s->db))
    return -1;
  if (own) {
    run(s, ST_ROLLBACK, SQLITE_OK, "rollback");
  } else {
    run(s, ST_ROLLBACK_TO, SQLITE_OK, "rollback to savepoint");
    run(s, ST_RELEASE, SQLITE_OK, "release");
    memcpy(s->base.delta, s->base.saved_delta, sizeof s->base.delta); /* no hook sees a ROLLBACK TO */
  }
  return -1;
}

/* Copies a text column; a NULL column gives *out = NULL. -1 on no memory. */
static int col_dup(sqlite3_stmt *st, int i, char **out, size_t *len) {
  *out = NULL;
  if (len)
    *len = 0;
  if (sqlite3_column_type(st, i) == SQLITE_NULL)
    return 0;
  const unsigned char *t = sqlite3_column_text(st, i);
  int n = sqlite3_column_bytes(st, i);
  if (!t && n > 0)
    return -1;
  char *p = malloc((size_t)n + 1);
  if (!p)
    return -1;
  if (n > 0)
    memcpy(p, t, (size_t)n);
  p[n] = '\0';
  *out = p;
  if (len)
    *len = (size_t)n;
  return 0;
}

static void col_copy(sqlite3_stmt *st, int i, char *dst, size_t cap) {
  const unsigned char *t = sqlite3_column_text(st, i);
  snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

/* Reads a row laid out as EV_COLS. -1 (with e freed) on no memory. */
static int read_event(sqlite3_stmt *st, struct store_event *e) {
  memset(e, 0, sizeof *e);
  col_copy(st, 0, e->id, sizeof e->id);
  col_copy(st, 1, e->source, sizeof e->source);
  int st_num = sqlite3_column_int(st, 4);
  e->status = (st_num >= 0 && st_num < EV_STATUS_COUNT) ? (enum ev_status)st_num : EV_DEAD;
  e->attempts = sqlite3_column_int(st, 5);
  e->created_at = sqlite3_column_double(st, 8);
  e->updated_at = sqlite3_column_double(st, 9);
  e->next_at = sqlite3_column_double(st, 10);
  if (col_dup(st, 2, &e->type, NULL) != 0 || col_dup(st, 3, &e->payload, &e->payload_len) != 0 ||
      col_dup(st, 6, &e->last_error, NULL) != 0 || col_dup(st, 7, &e->result, NULL) != 0) {
    store_event_free(e);
    return -1;
  }
  /* Callers rely on these two being strings even when the row has none. */
  if (!e->type && !(e->type = calloc(1, 1))) {
    store_event_free(e);
    return -1;
  }
  if (!e->payload && !(e->payload = calloc(1, 1))) {
    store_event_free(e);
    return -1;
  }
  return 0;
}

/* Runs a one-column lookup bound to a, and b unless it is NULL (for
 * one-parameter statements); malloc'd value or NULL. */
static char *lookup(struct sq *s, enum stmt_id id, const char *a, const char *b,
                    const char *what) {
  sqlite3_stmt *st = s->st[id];
  int brc = bind_str(st, 1, a);
  if (b)
    brc |= bind_str(st, 2, b);
  char *out = NULL;
  if (brc != SQLITE_OK) {
    fail(s, what);
  } else {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      if (col_dup(st, 0, &out, NULL) != 0)
        log_error("store: %s: out of memory", what);
    } else if (rc != SQLITE_DONE) {
      fail(s, what);
    }
  }
  done_with(st);
  return out;
}

/* ---- open, close, migrations ------------------------------------------ */

/* mkdir -p of the directory holding path. The store holds client data, so a
 * directory we create is private to the service's user. */
static int make_parent_dirs(const char *path, char *err, size_t errlen) {
  char *dir = strdup(path);
  if (!dir) {
    store_set_err(err, errlen, "out of memory");
    return -1;
  }
  char *slash = strrchr(dir, '/');
  if (!slash || slash == dir) {
    free(dir);
    return 0;
  }
  *slash = '\0';
  for (char *p = dir + 1;; p++) {
    if (*p != '/' && *p != '\0')
      continue;
    char c = *p;
    *p = '\0';
    /* EEXIST is not the only answer for a directory that exists (a parent
     * we may not write answers EACCES or EROFS), so ask stat. */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
      int e = errno;
      struct stat sb;
      if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        store_set_err(err, errlen, "cannot create directory %s: %s", dir, strerror(e));
        free(dir);
        return -1;
      }
    }
    if (c == '\0')
      break;
    *p = c;
  }
  free(dir);
  return 0;
}

static int read_user_version(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int v = -1;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  return v;
}

static int exec_sql(sqlite3 *db, const char *sql) {
  return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Brings the file to MIGRATION_COUNT. The version is read again once the
 * write lock is held: another ncghl process may have migrated meanwhile. A
 * file that only needs reading (current schema) never takes the lock, so a
 * read-only file still opens. */
/* No row of the file breaks a foreign key (checked before a migration's
 * commit, since migrations run with enforcement off). */
static bool foreign_keys_hold(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &st, NULL) != SQLITE_OK)
    return false;
  bool ok = sqlite3_step(st) == SQLITE_DONE;
  sqlite3_finalize(st);
  return ok;
}

static int migrate_steps(sqlite3 *db, const char *path, char *err, size_t errlen);

/* Foreign keys are off while migrating: a migration that rebuilds a table
 * others refer to (7) must not cascade its DROP into them. The pragma is a
 * no-op inside a transaction, so it is set around the steps. */
static int migrate(sqlite3 *db, const char *path, char *err, size_t errlen) {
  if (exec_sql(db, "PRAGMA foreign_keys = OFF") != 0) {
    store_set_err(err, errlen, "cannot migrate %s: %s", path, sqlite3_errmsg(db));
    return -1;
  }
  int rc = migrate_steps(db, path, err, errlen);
  if (exec_sql(db, "PRAGMA foreign_keys = ON") != 0 && rc == 0) {
    store_set_err(err, errlen, "cannot configure %s: %s", path, sqlite3_errmsg(db));
    rc = -1;
  }
  return rc;
}

static int migrate_steps(sqlite3 *db, const char *path, char *err, size_t errlen) {
  for (;;) {
    int v = read_user_version(db);
    if (v < 0) {
      store_set_err(err, errlen, "cannot read schema version of %s: %s", path, sqlite3_errmsg(db));
      return -1;
    }
    if (v > MIGRATION_COUNT) {
      store_set_err(err, errlen, "%s has schema version %d, newer than this build knows (%d)", path, v,
              MIGRATION_COUNT);
      return -1;
    }
    if (v == MIGRATION_COUNT)
      return 0;
    if (exec_sql(db, "BEGIN IMMEDIATE") != 0) {
      store_set_err(err, errlen, "cannot migrate %s: %s", path, sqlite3_errmsg(db));
      return -1;
    }
    v = read_user_version(db);
    if (v < 0 || v >= MIGRATION_COUNT) {
      exec_sql(db, "ROLLBACK");
      continue;
    }
    char bump[64];
    /* PRAGMA takes no parameters; the number is ours, not input. */
    snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
    bool ran = exec_sql(db, migrations[v]) == 0;
    bool kept = ran && foreign_keys_hold(db);
    if (!kept || exec_sql(db, bump) != 0 || exec_sql(db, "COMMIT") != 0) {
      if (ran && !kept)
        store_set_err(err, errlen, "migration %d of %s failed: it would leave rows whose"
                      " foreign keys point nowhere", v + 1, path);
      else
        store_set_err(err, errlen, "migration %d of %s failed: %s", v + 1, path,
                      sqlite3_errmsg(db));
      if (!sqlite3_get_autocommit(db))
        exec_sql(db, "ROLLBACK");
      return -1;
    }
    log_info("store: %s migrated to schema version %d", path, v + 1);
  }
}

static int configure(sqlite3 *db, const char *path, char *err, size_t errlen) {
  /* Before the journal switch, which itself needs the lock. */
  sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW) {
    store_set_err(err, errlen, "cannot set WAL on %s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return -1;
  }
  const unsigned char *mode = sqlite3_column_text(st, 0);
  if (!mode || strcmp((const char *)mode, "wal") != 0)
    log_warn("store: %s stays in journal mode %s, not wal", path, mode ? (const char *)mode : "?");
  sqlite3_finalize(st);
  /* A bigger page cache than SQLite's 2 MiB default: intake reads the
   * events index on every insert, and re-reading pages from the file showed
   * up as a tenth of the CPU time under load. */
  if (exec_sql(db, "PRAGMA synchronous = FULL") != 0 ||
      exec_sql(db, "PRAGMA cache_size = -16384") != 0 ||
      exec_sql(db, "PRAGMA foreign_keys = ON") != 0) {
    store_set_err(err, errlen, "cannot configure %s: %s", path, sqlite3_errmsg(db));
    return -1;
  }
  return 0;
}

/* The owner a running row is marked with, as SQL sees it. */
static void sql_owner(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  struct sq *s = sqlite3_user_data(ctx);
  sqlite3_result_text(ctx, s->base.owner, -1, SQLITE_TRANSIENT);
}

/* Status counts follow every row change on this connection, whatever
 * statement makes it; the change counts once its transaction commits. */
static int status_of(sqlite3 *db, bool old) {
  sqlite3_value *v = NULL;
  int rc = old ? sqlite3_preupdate_old(db, 4, &v) : sqlite3_preupdate_new(db, 4, &v);
  if (rc != SQLITE_OK || !v || sqlite3_value_type(v) != SQLITE_INTEGER)
    return -1;
  int st = sqlite3_value_int(v);
  return st >= 0 && st < EV_STATUS_COUNT ? st : -1;
}

static void on_preupdate(void *ud, sqlite3 *db, int op, const char *dbname, const char *table,
                         sqlite3_int64 k1, sqlite3_int64 k2) {
  (void)dbname;
  (void)k1;
  (void)k2;
  struct sq *s = ud;
  if (strcmp(table, "events") != 0)
    return;
  int was = op == SQLITE_INSERT ? -1 : status_of(db, true);
  int now = op == SQLITE_DELETE ? -1 : status_of(db, false);
  if (was >= 0)
    s->base.delta[was]--;
  if (now >= 0)
    s->base.delta[now]++;
}

static int on_commit_hook(void *ud) {
  struct sq *s = ud;
  for (int i = 0; i < EV_STATUS_COUNT; i++) {
    s->base.counts[i] += s->base.delta[i];
    s->base.delta[i] = 0;
  }
  return 0;
}

static void on_rollback_hook(void *ud) {
  struct sq *s = ud;
  memset(s->base.delta, 0, sizeof s->base.delta);
}

static const struct store_ops sqlite_ops;
static void sq_close(struct store *base_);

struct store *store_sqlite_open(const char *path, char *err, size_t errlen) {
  if (!path || !*path) {
    store_set_err(err, errlen, "no database path");
    return NULL;
  }
  if (strcmp(path, ":memory:") != 0 && make_parent_dirs(path, err, errlen) != 0)
    return NULL;
  struct sq *s = calloc(1, sizeof *s);
  if (!s) {
    store_set_err(err, errlen, "out of memory");
    return NULL;
  }
  store_base_init(&s->base, &sqlite_ops);
  /* The store holds personal data and the GHL tokens: its file is the
   * owner's only. SQLite gives the -wal and -shm files the same mode. */
  if (strcmp(path, ":memory:") != 0) {
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
      close(fd);
  }
  int rc = sqlite3_open_v2(path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           walbuf_vfs());
  if (rc != SQLITE_OK) {
    store_set_err(err, errlen, "cannot open %s: %s", path,
            s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    goto fail;
  }
  if (configure(s->db, path, err, errlen) != 0 || migrate(s->db, path, err, errlen) != 0)
    goto fail;
  /* Migrating walks (on a new file, builds) every table; the pages it left
   * in this connection's cache are not what the service reads next, and a
   * node keeps one connection per tenant: 500 new tenants held 35 MiB of
   * them after start (docs/performance.md, "Tenants"). */
  sqlite3_db_release_memory(s->db);
  s->full_sync = true; /* configure() set synchronous = FULL */
  s->busy_ms = STORE_BUSY_TIMEOUT_MS;
  if (sqlite3_create_function(s->db, "ncghl_owner", 0, SQLITE_UTF8, s, sql_owner, NULL, NULL) !=
      SQLITE_OK) {
    store_set_err(err, errlen, "cannot register ncghl_owner(): %s", sqlite3_errmsg(s->db));
    goto fail;
  }
  sqlite3_preupdate_hook(s->db, on_preupdate, s);
  sqlite3_commit_hook(s->db, on_commit_hook, s);
  sqlite3_rollback_hook(s->db, on_rollback_hook, s);
  for (int i = 0; i < ST_COUNT; i++) {
    if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) !=
        SQLITE_OK) {
      store_set_err(err, errlen, "cannot prepare \"%s\": %s", stmt_sql[i], sqlite3_errmsg(s->db));
      goto fail;
    }
  }
  if (sqlite3_db_readonly(s->db, "main") == 1)
    log_warn("store: %s is read-only", path);
  return &s->base;
fail:
  sq_close(&s->base);
  return NULL;
}

static void sq_close(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  if (!s)
    return;
  if (s->db && !sqlite3_get_autocommit(s->db))
    log_warn("store: closing with a transaction open; it is rolled back");
  for (int i = 0; i < ST_COUNT; i++)
    sqlite3_finalize(s->st[i]);
  if (s->db && sqlite3_close(s->db) != SQLITE_OK)
    log_error("store: close: %s", sqlite3_errmsg(s->db));
  free(s);
}

/* ---- transactions ----------------------------------------------------- */

static int sq_begin(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  return run(s, ST_BEGIN, SQLITE_OK, "begin");
}

static int sq_set_full_sync(struct store *base_, bool full) {
  struct sq *s = (struct sq *)base_;
  if (full == s->full_sync)
    return 0;
  if (exec_sql(s->db, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL") != 0)
    return fail(s, "set_full_sync");
  s->full_sync = full;
  return 0;
}

static const char *sq_path(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  const char *p = sqlite3_db_filename(s->db, "main");
  return p ? p : "";
}

/* A failed commit is rolled back here, so "failed" always means "nothing of
 * it was written" and the caller never holds a half-dead transaction. */
static int sq_commit(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  if (run(s, ST_COMMIT, SQLITE_OK, "commit") == 0) {
    /* The commit frame's write already sent the frames out (walbuf.c);
     * this is the guard should a later SQLite write its frames otherwise
     * (test_walbuf fails first), so that the group commit's fdatasync
     * never misses one. Its failure is a failed write to the disk: the
     * caller answers as for any failed commit, and the sender's retry
     * finds what SQLite holds. */
    int frc = walbuf_flush(s->db);
    if (frc == SQLITE_OK)
      return 0;
    log_error("store: writing the WAL after a commit: %s", sqlite3_errstr(frc));
    return -1;
  }
  if (s->last_err == SQLITE_BUSY)
    return -1; /* still open: the caller commits again later */
  if (!sqlite3_get_autocommit(s->db))
    run(s, ST_ROLLBACK, SQLITE_OK, "rollback");
  return -1;
}

static int sq_rollback(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  if (sqlite3_get_autocommit(s->db))
    return 0;
  return run(s, ST_ROLLBACK, SQLITE_OK, "rollback");
}

static bool sq_in_txn(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  return !sqlite3_get_autocommit(s->db);
}

/* A read-only or locked file only shows when a write is attempted, so try
 * one: take the write lock, write, and roll back. */
static bool sq_writable(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  if (!sqlite3_get_autocommit(s->db))
    return true;
  /* /health runs on the event loop: a lock held by another process (a CLI
   * command) must not stall it for the full busy timeout. */
  sqlite3_busy_timeout(s->db, s->busy_ms < 200 ? s->busy_ms : 200);
  sqlite3_stmt *begin = s->st[ST_BEGIN];
  int rc = sqlite3_step(begin);
  done_with(begin);
  sqlite3_busy_timeout(s->db, s->busy_ms);
  if ((rc & 0xff) == SQLITE_BUSY) {
    /* Another process (backfill, replay) holds the write lock for a moment:
     * the store is fine, and intake waits for the lock from a timer. */
    return true;
  }
  if (rc != SQLITE_DONE) {
    log_warn("store: not writable: %s", sqlite3_errmsg(s->db));
    return false;
  }
  sqlite3_stmt *probe = s->st[ST_WRITABLE_PROBE];
  rc = sqlite3_step(probe);
  if (rc != SQLITE_DONE)
    log_warn("store: not writable: %s", sqlite3_errmsg(s->db));
  done_with(probe);
  sq_rollback(&s->base);
  return rc == SQLITE_DONE;
}

static int sq_schema_version(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_USER_VERSION];
  int v = -1;
  if (sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int(st, 0);
  else
    fail(s, "schema_version");
  done_with(st);
  return v;
}

/* ---- events ----------------------------------------------------------- */

static int sq_event_put(struct store *base_, const char *id, const char *source, const char *type,
                    const char *payload, size_t payload_len, enum ev_status initial, double now,
                    double ttl, enum store_put *result, enum ev_status *existing) {
  struct sq *s = (struct sq *)base_;
  const char *what = "event_put"; /* arguments checked by store_event_put */

  /* The common case, a new id, is one INSERT: atomic without a transaction
   * of its own, and cheap inside the group commit. */
  sqlite3_stmt *st = s->st[ST_EV_INSERT];
  int brc = bind_str(st, 1, id);
  brc |= bind_str(st, 2, source);
  brc |= bind_str(st, 3, type);
  brc |= sqlite3_bind_text(st, 4, payload, (int)payload_len, SQLITE_STATIC);
  brc |= sqlite3_bind_int(st, 5, initial);
  brc |= sqlite3_bind_double(st, 6, now);
  if (run(s, ST_EV_INSERT, brc, what) != 0)
    return -1;
  if (sqlite3_changes(s->db) == 1) {
    /* Search only: an event whose people cannot be noted is still stored. */
    sqlite3_int64 seq = sqlite3_last_insert_rowid(s->db); /* the new row's */
    struct json *doc = json_parse(payload, payload_len, NULL, 0);
    struct terms t = {0};
    if (doc)
      people_walk(doc, &t);
    json_free(doc);
    for (size_t i = 0; i < t.n; i++) {
      st = s->st[ST_PEOPLE_PUT];
      brc = bind_str(st, 1, t.v[i]);
      brc |= sqlite3_bind_int64(st, 2, seq);
      if (run(s, ST_PEOPLE_PUT, brc, "event_put (people)") != 0)
        break;
    }
    if (t.oom)
      log_warn("store: event_put: out of memory noting the people of %s", id);
    terms_free(&t);
    if (result)
      *result = STORE_PUT_NEW;
    if (existing)
      *existing = initial;
    return 0;
  }

  /* The id is known: decide and update under one lock, so a concurrent
   * claim or put cannot slip between the look and the change. */
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  bool ok = false;
  enum store_put res = STORE_PUT_DUPLICATE;
  st = s->st[ST_EV_STATE];
  int old = EV_PENDING;
  double created = 0;
  int rc = bind_str(st, 1, id) == SQLITE_OK ? sqlite3_step(st) : SQLITE_ERROR;
  if (rc == SQLITE_ROW) {
    old = sqlite3_column_int(st, 0);
    created = sqlite3_column_double(st, 1);
  } else {
    fail(s, what); /* SQLITE_DONE too: nothing ever deletes an event */
  }
  done_with(st);
  if (rc == SQLITE_ROW) {
    if (old == EV_DEAD) {
      st = s->st[ST_EV_REQUEUE_DEAD];
      brc = bind_str(st, 1, id);
      brc |= sqlite3_bind_int(st, 2, initial);
      brc |= sqlite3_bind_double(st, 3, now);
      ok = run(s, ST_EV_REQUEUE_DEAD, brc, what) == 0;
      res = STORE_PUT_REQUEUED;
    } else if (ttl > 0 && now - created > ttl && old != EV_RUNNING) {
      /* Expired: a new event under an old id. A running row is left alone,
       * whatever its age: resetting it would run the event twice at once. */
      st = s->st[ST_EV_RENEW];
      brc = bind_str(st, 1, id);
      brc |= bind_str(st, 2, source);
      brc |= bind_str(st, 3, type);
      brc |= sqlite3_bind_text(st, 4, payload, (int)payload_len, SQLITE_STATIC);
      brc |= sqlite3_bind_int(st, 5, initial);
      brc |= sqlite3_bind_double(st, 6, now);
      ok = run(s, ST_EV_RENEW, brc, what) == 0;
      res = STORE_PUT_NEW;
    } else {
      ok = true;
    }
  }
  if (op_end(s, own, ok) != 0)
    return -1;
  if (result)
    *result = res;
  if (existing)
    *existing = (enum ev_status)old;
  return 0;
}

static int sq_event_get(struct store *base_, const char *id, struct store_event *out) {
  struct sq *s = (struct sq *)base_;
  memset(out, 0, sizeof *out);
  if (!id)
    return 1;
  sqlite3_stmt *st = s->st[ST_EV_GET];
  int ret;
  int rc = bind_str(st, 1, id) == SQLITE_OK ? sqlite3_step(st) : SQLITE_ERROR;
  if (rc == SQLITE_ROW)
    ret = read_event(st, out) == 0 ? 0 : fail_arg("event_get", "out of memory");
  else if (rc == SQLITE_DONE)
    ret = 1;
  else
    ret = fail(s, "event_get");
  done_with(st);
  return ret;
}

/* Runs an UPDATE keyed by (id, now); returns the number of rows changed. */
static int update_by_id(struct sq *s, enum stmt_id sid, const char *id, double now,
                        const char *what) {
  if (!id)
    return fail_arg(what, "missing event id");
  sqlite3_stmt *st = s->st[sid];
  int brc = bind_str(st, 1, id);
  brc |= sqlite3_bind_double(st, 2, now);
  if (run(s, sid, brc, what) != 0)
    return -1;
  return sqlite3_changes(s->db);
}

static int sq_event_claim(struct store *base_, const char *id, double now) {
  struct sq *s = (struct sq *)base_;
  int n = update_by_id(s, ST_EV_CLAIM, id, now, "event_claim");
  return n < 0 ? -1 : n > 0;
}

static int sq_claim_due(struct store *base_, double now, int max, struct store_event *out, int *n) {
  struct sq *s = (struct sq *)base_; /* max >= 1, *n = 0: store_claim_due */
  /* RETURNING applies every change at the first step; the transaction makes
   * sure a failure half-way through reading the rows leaves none of them
   * marked running with nobody working on them. */
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  sqlite3_stmt *st = s->st[ST_EV_CLAIM_DUE];
  int k = 0;
  bool ok = true;
  int brc = sqlite3_bind_double(st, 1, now);
  brc |= sqlite3_bind_int(st, 2, max);
  if (brc != SQLITE_OK) {
    ok = fail(s, "claim_due") == 0;
  } else {
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        ok = fail(s, "claim_due") == 0;
        break;
      }
      if (k >= max || read_event(st, &out[k]) != 0) {
        ok = fail_arg("claim_due", k >= max ? "more rows than asked for" : "out of memory") == 0;
        break;
      }
      k++;
    }
  }
  done_with(st);
  if (op_end(s, own, ok) != 0) {
    for (int i = 0; i < k; i++)
      store_event_free(&out[i]);
    return -1;
  }
  /* RETURNING promises no order. */
  qsort(out, (size_t)k, sizeof *out, store_event_age_cmp);
  *n = k;
  return 0;
}

static int sq_event_finish(struct store *base_, const char *id, enum ev_status st_new, double next_at,
                       const char *last_error, const char *result, double now) {
  struct sq *s = (struct sq *)base_;
  const char *what = "event_finish";
  if (!id)
    return fail_arg(what, "missing event id");
  if (st_new != EV_DONE && st_new != EV_RETRY_WAIT && st_new != EV_DEAD)
    return fail_arg(what, "a run ends done, retry_wait or dead");
  sqlite3_stmt *st = s->st[ST_EV_FINISH];
  int brc = bind_str(st, 1, id);
  brc |= sqlite3_bind_int(st, 2, st_new);
  brc |= sqlite3_bind_double(st, 3, st_new == EV_RETRY_WAIT ? next_at : 0);
  brc |= bind_str(st, 4, last_error);
  brc |= bind_str(st, 5, result);
  brc |= sqlite3_bind_double(st, 6, now);
  if (run(s, ST_EV_FINISH, brc, what) != 0)
    return -1;
  if (sqlite3_changes(s->db) == 0)
    return fail_arg(what, "no such event");
  return 0;
}

static int sq_event_requeue(struct store *base_, const char *id, double now) {
  struct sq *s = (struct sq *)base_;
  int n = update_by_id(s, ST_EV_REQUEUE, id, now, "event_requeue");
  return n < 0 ? -1 : n > 0;
}

static int sq_recover_running(struct store *base_, int *n) {
  struct sq *s = (struct sq *)base_;
  if (n)
    *n = 0;
  if (run(s, ST_EV_RECOVER, SQLITE_OK, "recover_running") != 0)
    return -1;
  if (n)
    *n = sqlite3_changes(s->db);
  return 0;
}

static double sq_next_due(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_EV_NEXT_DUE];
  double t = 0;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    t = sqlite3_column_double(st, 0); /* MIN of nothing is NULL, read as 0 */
  else
    fail(s, "next_due");
  done_with(st);
  return t;
}

/* cb runs while the statement is stepping, so it must not list again. */
static int sq_event_list(struct store *base_, const char *status, int limit,
                     int (*cb)(void *ud, const struct store_event *e), void *ud) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st;
  int brc = SQLITE_OK;
  if (status) {
    int code = store_status_parse(status);
    if (code < 0)
      return fail_arg("event_list", "unknown status");
    st = s->st[ST_EV_LIST_STATUS];
    brc |= sqlite3_bind_int(st, 2, code);
  } else {
    st = s->st[ST_EV_LIST];
  }
  brc |= sqlite3_bind_int(st, 1, limit > 0 ? limit : -1); /* LIMIT -1: no limit */
  int ret = 0;
  if (brc != SQLITE_OK) {
    ret = fail(s, "event_list");
  } else {
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        ret = fail(s, "event_list");
        break;
      }
      struct store_event e;
      if (read_event(st, &e) != 0) {
        ret = fail_arg("event_list", "out of memory");
        break;
      }
      int stop = cb(ud, &e);
      store_event_free(&e);
      if (stop)
        break;
    }
  }
  done_with(st);
  return ret;
}

static int sq_count_by_status(struct store *base_, long counts[EV_STATUS_COUNT]) {
  struct sq *s = (struct sq *)base_;
  s->base.count_queries++;
  for (int i = 0; i < EV_STATUS_COUNT; i++)
    counts[i] = 0;
  sqlite3_stmt *st = s->st[ST_EV_COUNT];
  int ret = 0;
  for (;;) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
      break;
    if (rc != SQLITE_ROW) {
      ret = fail(s, "count_by_status");
      break;
    }
    int code = sqlite3_column_int(st, 0);
    if (code >= 0 && code < EV_STATUS_COUNT)
      counts[code] = (long)sqlite3_column_int64(st, 1);
  }
  done_with(st);
  return ret;
}

/* ---- attempts --------------------------------------------------------- */

/* Binds at most STORE_EXCERPT_MAX bytes of text, cut back to a whole UTF-8
 * character so the excerpt stays valid text. */
static int bind_excerpt(sqlite3_stmt *st, int i, const char *p, size_t len) {
  if (!p)
    return sqlite3_bind_null(st, i);
  if (len > STORE_EXCERPT_MAX) {
    len = STORE_EXCERPT_MAX;
    while (len > 0 && ((unsigned char)p[len] & 0xC0) == 0x80)
      len--;
  }
  return sqlite3_bind_text(st, i, p, (int)len, SQLITE_STATIC);
}

static int sq_attempt_add_io(struct store *base_, const char *event_id, int event_attempt,
                         const char *service, const char *method, const char *url, int status,
                         const char *error, double duration_ms, double at, const char *request,
                         size_t request_len, const char *answer, size_t answer_len) {
  struct sq *s = (struct sq *)base_;
  if (!event_id)
    return fail_arg("attempt_add", "missing event id");
  enum stmt_id id = request || answer ? ST_AT_ADD_IO : ST_AT_ADD;
  sqlite3_stmt *st = s->st[id];
  int brc = bind_str(st, 1, event_id);
  brc |= sqlite3_bind_int(st, 2, event_attempt);
  brc |= bind_str(st, 3, service ? service : "");
  brc |= bind_str(st, 4, method ? method : "");
  brc |= bind_str(st, 5, url ? url : "");
  brc |= sqlite3_bind_int(st, 6, status);
  brc |= bind_str(st, 7, error);
  brc |= sqlite3_bind_double(st, 8, duration_ms);
  brc |= sqlite3_bind_double(st, 9, at);
  if (id == ST_AT_ADD_IO) {
    brc |= bind_excerpt(st, 10, request, request_len);
    brc |= bind_excerpt(st, 11, answer, answer_len);
  }
  return run(s, id, brc, "attempt_add");
}

static void attempt_free(struct store_attempt *a) {
  free(a->service);
  free(a->method);
  free(a->url);
  free(a->error);
  free(a->request);
  free(a->answer);
}

static int sq_attempt_list(struct store *base_, const char *event_id,
                       int (*cb)(void *ud, const struct store_attempt *a), void *ud) {
  struct sq *s = (struct sq *)base_;
  if (!event_id)
    return 0;
  sqlite3_stmt *st = s->st[ST_AT_LIST];
  int ret = 0;
  if (bind_str(st, 1, event_id) != SQLITE_OK) {
    ret = fail(s, "attempt_list");
  } else {
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        ret = fail(s, "attempt_list");
        break;
      }
      struct store_attempt a = {0};
      a.seq = sqlite3_column_int64(st, 0);
      a.status = sqlite3_column_int(st, 4);
      a.duration_ms = sqlite3_column_double(st, 6);
      a.at = sqlite3_column_double(st, 7);
      a.event_attempt = sqlite3_column_int(st, 8);
      if (col_dup(st, 1, &a.service, NULL) != 0 || col_dup(st, 2, &a.method, NULL) != 0 ||
          col_dup(st, 3, &a.url, NULL) != 0 || col_dup(st, 5, &a.error, NULL) != 0 ||
          col_dup(st, 9, &a.request, NULL) != 0 || col_dup(st, 10, &a.answer, NULL) != 0) {
        attempt_free(&a);
        ret = fail_arg("attempt_list", "out of memory");
        break;
      }
      int stop = cb(ud, &a);
      attempt_free(&a);
      if (stop)
        break;
    }
  }
  done_with(st);
  return ret;
}

/* ---- links, fingerprints, kv ------------------------------------------ */

static int sq_link_put(struct store *base_, const char *kind, const char *nowcerts_id, const char *ghl_id,
                   double now) {
  struct sq *s = (struct sq *)base_;
  if (!kind || !nowcerts_id || !ghl_id || !*nowcerts_id || !*ghl_id)
    return fail_arg("link_put", "kind and both ids are required");
  sqlite3_stmt *st = s->st[ST_LINK_PUT];
  int brc = bind_str(st, 1, kind);
  brc |= bind_str(st, 2, nowcerts_id);
  brc |= bind_str(st, 3, ghl_id);
  brc |= sqlite3_bind_double(st, 4, now);
  return run(s, ST_LINK_PUT, brc, "link_put");
}

static char *sq_link_ghl(struct store *base_, const char *kind, const char *nowcerts_id) {
  struct sq *s = (struct sq *)base_;
  if (!kind || !nowcerts_id)
    return NULL;
  return lookup(s, ST_LINK_GHL, kind, nowcerts_id, "link_ghl");
}

static char *sq_link_nowcerts(struct store *base_, const char *kind, const char *ghl_id) {
  struct sq *s = (struct sq *)base_;
  if (!kind || !ghl_id)
    return NULL;
  return lookup(s, ST_LINK_NC, kind, ghl_id, "link_nowcerts");
}

static int sq_link_delete(struct store *base_, const char *kind, const char *nowcerts_id) {
  struct sq *s = (struct sq *)base_;
  if (!kind || !nowcerts_id)
    return fail_arg("link_delete", "kind and NowCerts id are required");
  sqlite3_stmt *st = s->st[ST_LINK_DEL];
  int brc = bind_str(st, 1, kind);
  brc |= bind_str(st, 2, nowcerts_id);
  return run(s, ST_LINK_DEL, brc, "link_delete");
}

/* ---- field-level sync: snapshots, conflicts, changes ------------------- */

static int sq_snapshot_put(struct store *base_, const char *kind, const char *nowcerts_id,
                       const char *ghl_id, const char *json, double now) {
  struct sq *s = (struct sq *)base_;
  if (!kind || !nowcerts_id || !*nowcerts_id)
    return fail_arg("snapshot_put", "kind and NowCerts id are required");
  if (!json) {
    sqlite3_stmt *st = s->st[ST_SNAP_DEL];
    int brc = bind_str(st, 1, kind);
    brc |= bind_str(st, 2, nowcerts_id);
    return run(s, ST_SNAP_DEL, brc, "snapshot_put");
  }
  sqlite3_stmt *st = s->st[ST_SNAP_PUT];
  int brc = bind_str(st, 1, kind);
  brc |= bind_str(st, 2, nowcerts_id);
  brc |= bind_str(st, 3, ghl_id);
  brc |= bind_str(st, 4, json);
  brc |= sqlite3_bind_double(st, 5, now);
  return run(s, ST_SNAP_PUT, brc, "snapshot_put");
}

static char *sq_snapshot_get(struct store *base_, const char *kind, const char *nowcerts_id) {
  struct sq *s = (struct sq *)base_;
  if (!kind || !nowcerts_id)
    return NULL;
  return lookup(s, ST_SNAP_GET, kind, nowcerts_id, "snapshot_get");
}

static int sq_conflict_add(struct store *base_, const struct store_conflict *c) {
  struct sq *s = (struct sq *)base_;
  if (!c || !c->kind || !c->nowcerts_id || !c->field || !c->winner)
    return fail_arg("conflict_add", "kind, NowCerts id, field and winner are required");
  sqlite3_stmt *st = s->st[ST_CONFLICT_ADD];
  int brc = bind_str(st, 1, c->kind);
  brc |= bind_str(st, 2, c->nowcerts_id);
  brc |= bind_str(st, 3, c->ghl_id);
  brc |= bind_str(st, 4, c->field);
  brc |= bind_str(st, 5, c->nowcerts_value);
  brc |= bind_str(st, 6, c->ghl_value);
  brc |= bind_str(st, 7, c->base);
  brc |= bind_str(st, 8, c->winner);
  brc |= bind_str(st, 9, c->event_id);
  brc |= sqlite3_bind_double(st, 10, c->nowcerts_at);
  brc |= sqlite3_bind_double(st, 11, c->ghl_at);
  brc |= sqlite3_bind_double(st, 12, c->at);
  return run(s, ST_CONFLICT_ADD, brc, "conflict_add");
}

static long long sq_conflict_count(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_CONFLICT_COUNT];
  long long n = -1;
  if (sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  else
    fail(s, "conflict_count");
  done_with(st);
  return n;
}

static int sq_change_add(struct store *base_, const struct store_change *c) {
  struct sq *s = (struct sq *)base_;
  if (!c || !c->kind || !c->field || !c->side || !c->action)
    return fail_arg("change_add", "kind, field, side and action are required");
  sqlite3_stmt *st = s->st[ST_CHANGE_ADD];
  int brc = bind_str(st, 1, c->kind);
  brc |= bind_str(st, 2, c->nowcerts_id);
  brc |= bind_str(st, 3, c->ghl_id);
  brc |= bind_str(st, 4, c->field);
  brc |= bind_str(st, 5, c->side);
  brc |= bind_str(st, 6, c->old_value);
  brc |= bind_str(st, 7, c->new_value);
  brc |= bind_str(st, 8, c->action);
  brc |= bind_str(st, 9, c->event_id);
  brc |= sqlite3_bind_double(st, 10, c->at);
  return run(s, ST_CHANGE_ADD, brc, "change_add");
}

/* Listing conflicts and changes: the filters a caller may combine are few
 * (a link, a contact, an event, a page), so the statement is built for the
 * ones given and every one of them is served by an index; lists are read by
 * people, so statements are prepared per call rather than kept. */
static sqlite3_stmt *prepare_list(struct sq *s, const char *table, const char *cols,
                                  const struct store_sync_filter *f, const char *what) {
  char sql[640];
  int n = snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE 1", cols, table);
  if (f->kind)
    n += snprintf(sql + n, sizeof sql - (size_t)n, " AND kind = :kind");
  if (f->nowcerts_id)
    n += snprintf(sql + n, sizeof sql - (size_t)n, " AND nowcerts_id = :nc");
  if (f->ghl_id)
    n += snprintf(sql + n, sizeof sql - (size_t)n, " AND ghl_id = :ghl");
  if (f->event_id)
    n += snprintf(sql + n, sizeof sql - (size_t)n, " AND event_id = :ev");
  if (f->before > 0)
    n += snprintf(sql + n, sizeof sql - (size_t)n, " AND id < :before");
  snprintf(sql + n, sizeof sql - (size_t)n, " ORDER BY id DESC LIMIT :limit");
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
    fail(s, what);
    return NULL;
  }
  int brc = SQLITE_OK;
  if (f->kind)
    brc |= bind_str(st, sqlite3_bind_parameter_index(st, ":kind"), f->kind);
  if (f->nowcerts_id)
    brc |= bind_str(st, sqlite3_bind_parameter_index(st, ":nc"), f->nowcerts_id);
  if (f->ghl_id)
    brc |= bind_str(st, sqlite3_bind_parameter_index(st, ":ghl"), f->ghl_id);
  if (f->event_id)
    brc |= bind_str(st, sqlite3_bind_parameter_index(st, ":ev"), f->event_id);
  if (f->before > 0)
    brc |= sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":before"), f->before);
  brc |= sqlite3_bind_int(st, sqlite3_bind_parameter_index(st, ":limit"),
                          f->limit > 0 ? f->limit : 100);
  if (brc != SQLITE_OK) {
    fail(s, what);
    sqlite3_finalize(st);
    return NULL;
  }
  return st;
}

static const char *col_text(sqlite3_stmt *st, int i) {
  return (const char *)sqlite3_column_text(st, i);
}

static int sq_conflict_list(struct store *base_, const struct store_sync_filter *f,
                        int (*cb)(void *ud, const struct store_conflict *c), void *ud) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st =
      prepare_list(s, "conflicts",
                   "id, kind, nowcerts_id, ghl_id, field, nowcerts_value, ghl_value, base, winner,"
                   " event_id, nowcerts_at, ghl_at, at",
                   f, "conflict_list");
  if (!st)
    return -1;
  int rc, ret = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_conflict c = {
        .id = sqlite3_column_int64(st, 0),
        .kind = col_text(st, 1),
        .nowcerts_id = col_text(st, 2),
        .ghl_id = col_text(st, 3),
        .field = col_text(st, 4),
        .nowcerts_value = col_text(st, 5),
        .ghl_value = col_text(st, 6),
        .base = col_text(st, 7),
        .winner = col_text(st, 8),
        .event_id = col_text(st, 9),
        .nowcerts_at = sqlite3_column_double(st, 10),
        .ghl_at = sqlite3_column_double(st, 11),
        .at = sqlite3_column_double(st, 12),
    };
    if (cb(ud, &c))
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    ret = fail(s, "conflict_list");
  sqlite3_finalize(st);
  return ret;
}

static int sq_change_list(struct store *base_, const struct store_sync_filter *f,
                      int (*cb)(void *ud, const struct store_change *c), void *ud) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = prepare_list(
      s, "changes",
      "id, kind, nowcerts_id, ghl_id, field, side, old_value, new_value, action, event_id, at", f,
      "change_list");
  if (!st)
    return -1;
  int rc, ret = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_change c = {
        .id = sqlite3_column_int64(st, 0),
        .kind = col_text(st, 1),
        .nowcerts_id = col_text(st, 2),
        .ghl_id = col_text(st, 3),
        .field = col_text(st, 4),
        .side = col_text(st, 5),
        .old_value = col_text(st, 6),
        .new_value = col_text(st, 7),
        .action = col_text(st, 8),
        .event_id = col_text(st, 9),
        .at = sqlite3_column_double(st, 10),
    };
    if (cb(ud, &c))
      break;
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    ret = fail(s, "change_list");
  sqlite3_finalize(st);
  return ret;
}

/* value NULL deletes the key. */
static int sq_kv_put(struct store *base_, const char *key, const char *value) {
  struct sq *s = (struct sq *)base_;
  if (!key)
    return fail_arg("kv_put", "missing key");
  if (!value) {
    sqlite3_stmt *st = s->st[ST_KV_DEL];
    return run(s, ST_KV_DEL, bind_str(st, 1, key), "kv_put");
  }
  sqlite3_stmt *st = s->st[ST_KV_PUT];
  int brc = bind_str(st, 1, key);
  brc |= bind_str(st, 2, value);
  return run(s, ST_KV_PUT, brc, "kv_put");
}

static char *sq_kv_get(struct store *base_, const char *key) {
  struct sq *s = (struct sq *)base_;
  if (!key)
    return NULL;
  return lookup(s, ST_KV_GET, key, NULL, "kv_get");
}

/* ---- faults, leases, upkeep -------------------------------------------- */

static void sq_set_busy_timeout(struct store *base_, int ms) {
  struct sq *s = (struct sq *)base_;
  s->busy_ms = ms;
  sqlite3_busy_timeout(s->db, ms);
}

static enum store_fault sq_last_fault(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  switch (s->last_err) {
  case SQLITE_OK:
    return STORE_FAULT_NONE;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return STORE_FAULT_BUSY;
  case SQLITE_FULL:
    return STORE_FAULT_FULL;
  case SQLITE_IOERR:
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
  case SQLITE_CANTOPEN:
    return STORE_FAULT_IO;
  default:
    return STORE_FAULT_OTHER;
  }
}

static void sq_clear_fault(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  s->last_err = SQLITE_OK;
}

static long long sq_total_changes(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  return sqlite3_total_changes64(s->db);
}

static int sq_running_list(struct store *base_,
                       int (*cb)(void *ud, const char *id, const char *owner, double updated_at),
                       void *ud) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_EV_RUNNING_LIST];
  int ret = 0;
  for (;;) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
      break;
    if (rc != SQLITE_ROW) {
      ret = fail(s, "running_list");
      break;
    }
    const char *owner = (const char *)sqlite3_column_text(st, 1);
    if (cb(ud, (const char *)sqlite3_column_text(st, 0), owner, sqlite3_column_double(st, 2)))
      break;
  }
  done_with(st);
  return ret;
}

static int sq_event_release(struct store *base_, const char *id, double now) {
  struct sq *s = (struct sq *)base_;
  int n = update_by_id(s, ST_EV_RELEASE, id, now, "event_release");
  return n < 0 ? -1 : n > 0;
}

static int sq_event_forget(struct store *base_, const char *id) {
  struct sq *s = (struct sq *)base_;
  if (!id)
    return fail_arg("event_forget", "missing event id");
  sqlite3_stmt *st = s->st[ST_EV_FORGET];
  if (run(s, ST_EV_FORGET, bind_str(st, 1, id), "event_forget") != 0)
    return -1;
  return sqlite3_changes(s->db) > 0;
}

static int sq_set_autocheckpoint(struct store *base_, int pages) {
  struct sq *s = (struct sq *)base_;
  if (sqlite3_wal_autocheckpoint(s->db, pages) != SQLITE_OK)
    return fail(s, "wal_autocheckpoint");
  return 0;
}

static int sq_checkpoint(struct store *base_, int *wal_pages, int *copied) {
  struct sq *s = (struct sq *)base_;
  int log = 0, ckpt = 0;
  int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &ckpt);
  if (wal_pages)
    *wal_pages = log;
  if (copied)
    *copied = ckpt;
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
    return 0; /* a reader or another checkpoint: next time */
  return rc == SQLITE_OK ? 0 : fail(s, "checkpoint");
}

/* Conflicts and field changes older than the cut-off go in the same small
 * transactions as the events (SPEC 11: "events, attempts and conflicts");
 * a link's snapshot is its current state and is never aged out. */
static int retention_conflicts(struct sq *s, double cutoff, int batch, int *n) {
  static const char *const sql[] = {
      "DELETE FROM conflicts WHERE id IN (SELECT id FROM conflicts WHERE at < ?1 LIMIT ?2)",
      "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE at < ?1 LIMIT ?2)",
  };
  *n = 0;
  for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK)
      return fail(s, "retention of conflicts and changes");
    sqlite3_bind_double(st, 1, cutoff);
    sqlite3_bind_int(st, 2, batch);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return fail(s, "retention of conflicts and changes");
    *n += sqlite3_changes(s->db);
  }
  return 0;
}

static int sq_retention_batch(struct store *base_, double cutoff, int batch, int *deleted) {
  struct sq *s = (struct sq *)base_;
  *deleted = 0;
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  sqlite3_stmt *st = s->st[ST_RETAIN_EVENTS];
  int brc = sqlite3_bind_double(st, 1, cutoff);
  brc |= sqlite3_bind_int(st, 2, batch);
  bool ok = run(s, ST_RETAIN_EVENTS, brc, "retention") == 0;
  int n = ok ? sqlite3_changes(s->db) : 0;
  int nc = 0;
  ok = ok && retention_conflicts(s, cutoff, batch, &nc) == 0;
  if (op_end(s, own, ok) != 0)
    return -1;
  *deleted = n + nc;
  return 0;
}

/* ---- what the /ui page reads ------------------------------------------- */

static int sq_reload_add(struct store *base_, double at, bool ok, const char *version,
                     const char *message) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_RELOAD_ADD];
  int brc = sqlite3_bind_double(st, 1, at);
  brc |= sqlite3_bind_int(st, 2, ok ? 1 : 0);
  brc |= bind_str(st, 3, version ? version : "");
  brc |= bind_str(st, 4, message ? message : "");
  return run(s, ST_RELOAD_ADD, brc, "reload_add");
}

static int sq_reload_list(struct store *base_, int limit,
                      int (*cb)(void *ud, const struct store_reload *r), void *ud) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_RELOAD_LIST];
  int ret = 0;
  if (sqlite3_bind_int(st, 1, limit > 0 ? limit : -1) != SQLITE_OK) {
    ret = fail(s, "reload_list");
  } else {
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        ret = fail(s, "reload_list");
        break;
      }
      struct store_reload r = {.at = sqlite3_column_double(st, 0),
                               .ok = sqlite3_column_int(st, 1) != 0,
                               .version = (const char *)sqlite3_column_text(st, 2),
                               .message = (const char *)sqlite3_column_text(st, 3)};
      if (cb(ud, &r))
        break;
    }
  }
  done_with(st);
  return ret;
}

static int sq_event_count_since(struct store *base_, double since, long *n) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = s->st[ST_EV_SINCE];
  int ret = 0;
  *n = 0;
  if (sqlite3_bind_double(st, 1, since) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
    ret = fail(s, "event_count_since");
  else
    *n = (long)sqlite3_column_int64(st, 0);
  done_with(st);
  return ret;
}

/* A search term's index range: [term, term + U+10FFFF), every term that
 * starts with it. */
#define TERM_TOP "char(1114111)"

static int sq_event_search(struct store *base_, const struct store_event_filter *f, int limit,
                       int (*cb)(void *ud, const struct store_event *e), void *ud) {
  struct sq *s = (struct sq *)base_;
  const char *what = "event_search";
  int status = -1;
  if (f->status && (status = store_status_parse(f->status)) < 0)
    return fail_arg(what, "unknown status");
  char words[STORE_TERMS_MAX][STORE_SEARCH_MAX + 1];
  int nwords = store_person_words(f->person, words);
  struct buf q;
  buf_init(&q, 0);
  buf_puts(&q, "SELECT " EV_COLS " FROM events");
  if (nwords)
    buf_puts(&q, " JOIN (SELECT DISTINCT seq FROM event_people WHERE term >= ?1 AND term < ?1"
                 " || " TERM_TOP ") AS p ON p.seq = events.seq");
  buf_puts(&q, " WHERE 1");
  /* Either the words, joined by one space, start one term ("acme roof" in
   * "acme roofing"), or each further word starts a term of its own. */
  char phrase[STORE_TERMS_MAX * (STORE_SEARCH_MAX + 2)] = "";
  if (nwords > 1) {
    for (int i = 0; i < nwords; i++)
      snprintf(phrase + strlen(phrase), sizeof phrase - strlen(phrase), "%s%s", i ? " " : "",
               words[i]);
    buf_puts(&q, " AND (EXISTS (SELECT 1 FROM event_people AS ph WHERE ph.seq = events.seq"
                 " AND ph.term >= ?9 AND ph.term < ?9 || " TERM_TOP ") OR (1");
    for (int i = 1; i < nwords; i++)
      buf_printf(&q,
                 " AND EXISTS (SELECT 1 FROM event_people AS q WHERE q.seq = events.seq"
                 " AND q.term >= ?%d AND q.term < ?%d || " TERM_TOP ")",
                 i + 1, i + 1);
    buf_puts(&q, "))");
  }
  if (status >= 0)
    buf_puts(&q, " AND status = ?10");
  if (f->source)
    buf_puts(&q, " AND source = ?11");
  if (f->type)
    buf_puts(&q, " AND type = ?12");
  if (f->before_id)
    buf_puts(&q, " AND (created_at < ?13 OR (created_at = ?13 AND id < ?14))");
  buf_puts(&q, " ORDER BY created_at DESC, id DESC LIMIT ?15");
  if (!q.p) {
    buf_free(&q);
    return fail_arg(what, "out of memory");
  }
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, q.p, (int)q.len, &st, NULL) != SQLITE_OK) {
    buf_free(&q);
    return fail(s, what);
  }
  buf_free(&q);
  int brc = SQLITE_OK;
  for (int i = 0; i < nwords; i++)
    brc |= bind_str(st, i + 1, words[i]);
  if (nwords > 1)
    brc |= bind_str(st, 9, phrase);
  if (status >= 0)
    brc |= sqlite3_bind_int(st, 10, status);
  if (f->source)
    brc |= bind_str(st, 11, f->source);
  if (f->type)
    brc |= bind_str(st, 12, f->type);
  if (f->before_id) {
    brc |= sqlite3_bind_double(st, 13, f->before_at);
    brc |= bind_str(st, 14, f->before_id);
  }
  brc |= sqlite3_bind_int(st, 15, limit > 0 ? limit : -1);
  int ret = 0;
  if (brc != SQLITE_OK) {
    ret = fail(s, what);
  } else {
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        ret = fail(s, what);
        break;
      }
      struct store_event e;
      if (read_event(st, &e) != 0) {
        ret = fail_arg(what, "out of memory");
        break;
      }
      int stop = cb(ud, &e);
      store_event_free(&e);
      if (stop)
        break;
    }
  }
  sqlite3_finalize(st);
  return ret;
}

static int sq_event_people(struct store *base_, const char *event_id,
                       int (*cb)(void *ud, const char *term), void *ud) {
  struct sq *s = (struct sq *)base_;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->db, "SELECT term FROM event_people WHERE seq ="
                         " (SELECT seq FROM events WHERE id = ?1) ORDER BY term",
                         -1, &st, NULL) != SQLITE_OK)
    return fail(s, "event_people");
  int ret = 0;
  if (bind_str(st, 1, event_id) != SQLITE_OK) {
    ret = fail(s, "event_people");
  } else {
    for (;;) {
      int rc = sqlite3_step(st);
      if (rc == SQLITE_DONE)
        break;
      if (rc != SQLITE_ROW) {
        ret = fail(s, "event_people");
        break;
      }
      if (cb(ud, (const char *)sqlite3_column_text(st, 0)))
        break;
    }
  }
  sqlite3_finalize(st);
  return ret;
}

/* The WAL beside the file: an fdatasync of it makes every commit made
 * without full sync durable (queue.c's group commit). */
static const char *sq_wal_file(struct store *base_) {
  struct sq *s = (struct sq *)base_;
  const char *p = sqlite3_db_filename(s->db, "main");
  if (!p || !*p)
    return NULL;
  return sqlite3_filename_wal(p);
}

/* The window's stamps are read and written under the write lock (a
 * transaction of its own, or a savepoint of the caller's). */
static int sq_rate_take(struct store *base_, const char *key, int limit, double window, double now,
                        double *wait) {
  struct sq *s = (struct sq *)base_;
  static const char *const sql[] = {
      "DELETE FROM rate_stamps WHERE key = ?1 AND at <= ?2",
      "SELECT count(*), min(at) FROM rate_stamps WHERE key = ?1",
      "INSERT INTO rate_stamps (key, at) VALUES (?1, ?2)",
  };
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  bool ok = true;
  for (int i = 0; ok && i < 3; i++) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK) {
      ok = fail(s, "rate_take") == 0;
      break;
    }
    int brc = bind_str(st, 1, key);
    if (i != 1)
      brc |= sqlite3_bind_double(st, 2, i == 0 ? now - window : now);
    int rc = brc == SQLITE_OK ? sqlite3_step(st) : SQLITE_ERROR;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      ok = fail(s, "rate_take") == 0;
    if (ok && i == 1 && sqlite3_column_int(st, 0) >= limit) {
      *wait = sqlite3_column_double(st, 1) + window - now;
      if (*wait <= 0)
        *wait = 0.001;
      sqlite3_finalize(st);
      break; /* full: nothing is counted */
    }
    sqlite3_finalize(st);
  }
  return op_end(s, own, ok);
}

static int sq_kv_swap(struct store *base_, const char *key, const char *old, const char *value) {
  struct sq *s = (struct sq *)base_;
  if (!key || !value)
    return fail_arg("kv_swap", "missing key or value");
  sqlite3_stmt *st = NULL;
  const char *sql = old ? "UPDATE kv SET value = ?2 WHERE key = ?1 AND value = ?3"
                        : "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING";
  if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
    return fail(s, "kv_swap");
  int brc = bind_str(st, 1, key);
  brc |= bind_str(st, 2, value);
  if (old)
    brc |= bind_str(st, 3, old);
  int rc = brc == SQLITE_OK ? sqlite3_step(st) : SQLITE_ERROR;
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE)
    return fail(s, "kv_swap");
  return sqlite3_changes(s->db) > 0;
}

static const struct store_ops sqlite_ops = {
    .close = sq_close,
    .begin = sq_begin,
    .set_full_sync = sq_set_full_sync,
    .path = sq_path,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .in_txn = sq_in_txn,
    .writable = sq_writable,
    .schema_version = sq_schema_version,
    .event_put = sq_event_put,
    .event_get = sq_event_get,
    .event_claim = sq_event_claim,
    .claim_due = sq_claim_due,
    .event_finish = sq_event_finish,
    .event_requeue = sq_event_requeue,
    .recover_running = sq_recover_running,
    .next_due = sq_next_due,
    .event_list = sq_event_list,
    .count_by_status = sq_count_by_status,
    .attempt_add_io = sq_attempt_add_io,
    .attempt_list = sq_attempt_list,
    .link_put = sq_link_put,
    .link_ghl = sq_link_ghl,
    .link_nowcerts = sq_link_nowcerts,
    .link_delete = sq_link_delete,
    .snapshot_put = sq_snapshot_put,
    .snapshot_get = sq_snapshot_get,
    .conflict_add = sq_conflict_add,
    .conflict_count = sq_conflict_count,
    .change_add = sq_change_add,
    .conflict_list = sq_conflict_list,
    .change_list = sq_change_list,
    .kv_put = sq_kv_put,
    .kv_get = sq_kv_get,
    .set_busy_timeout = sq_set_busy_timeout,
    .last_fault = sq_last_fault,
    .clear_fault = sq_clear_fault,
    .total_changes = sq_total_changes,
    .running_list = sq_running_list,
    .event_release = sq_event_release,
    .event_forget = sq_event_forget,
    .set_autocheckpoint = sq_set_autocheckpoint,
    .checkpoint = sq_checkpoint,
    .retention_batch = sq_retention_batch,
    .reload_add = sq_reload_add,
    .reload_list = sq_reload_list,
    .event_count_since = sq_event_count_since,
    .event_search = sq_event_search,
    .event_people = sq_event_people,
    .wal_file = sq_wal_file,
    .rate_take = sq_rate_take,
    .kv_swap = sq_kv_swap,
};
