/* PostgreSQL behind store.h (libpq), for several ncghl nodes sharing one
 * database. The schema is store_sqlite.c's, migration for migration, in
 * PostgreSQL's dialect; every table lives in the schema the URL names
 * (ncghl_schema=, default public). Events are claimed with FOR UPDATE SKIP
 * LOCKED, so two nodes never take the same row; running rows carry their
 * node's owner ("host:pid:start") and the engine's store-kept leases decide
 * when another node may take them up. Calls are synchronous, like SQLite's:
 * the loop waits for the round trip. */
#include <ctype.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "store_backend.h"

#define PG_SCHEMA_MAX 63
#define PG_PARAMS_MAX 16
/* The service's connection asks for a busy timeout of 0 (never sleep in
 * SQLite's busy handler); PostgreSQL's lock_timeout 0 means "wait forever",
 * and the row locks another node holds last one short commit, so 0 maps to
 * this instead. */
#define PG_NO_WAIT_LOCK_MS 2000
#define PG_DEFAULT_LOCK_MS 5000

_Static_assert(EV_PENDING == 0 && EV_RUNNING == 1 && EV_DONE == 2 && EV_RETRY_WAIT == 3 &&
                   EV_DEAD == 4 && EV_STATUS_COUNT == 5,
               "store_pg.c SQL assumes these status numbers");

/* The person terms of a payload, as store_sqlite.c's json_tree query finds
 * them: lower-cased, trimmed string values (2 to 200 characters) of the
 * e-mail and name keys, at any depth. A payload that is not JSON (or not
 * UTF-8) has none: the exception block keeps that from failing the insert. */
#define PG_PEOPLE_FUNCTION                                                                         \
  "CREATE OR REPLACE FUNCTION ncghl_people(p BYTEA) RETURNS SETOF TEXT "                           \
  "LANGUAGE plpgsql AS $f$"                                                                        \
  " DECLARE j JSONB;"                                                                              \
  " BEGIN"                                                                                         \
  "  BEGIN j := convert_from(p, 'UTF8')::jsonb; EXCEPTION WHEN others THEN "                       \
  "RETURN; END;"                                                                                   \
  "  RETURN QUERY WITH RECURSIVE t(k, v) AS (SELECT NULL::text, j UNION ALL"                       \
  "   SELECT c.k, c.v FROM t, LATERAL (SELECT e.key AS k, e.value AS v FROM "                      \
  "jsonb_each(CASE"                                                                                \
  "    WHEN jsonb_typeof(t.v) = 'object' THEN t.v ELSE '{}'::jsonb END) e "                        \
  "UNION ALL"                                                                                      \
  "    SELECT NULL, a.value FROM jsonb_array_elements(CASE WHEN "                                  \
  "jsonb_typeof(t.v) = 'array'"                                                                    \
  "    THEN t.v ELSE '[]'::jsonb END) a) c)"                                                       \
  "  SELECT DISTINCT lower(btrim(t.v #>> '{}', ' ')) FROM t WHERE "                                \
  "jsonb_typeof(t.v) = 'string'"                                                                   \
  "   AND length(btrim(t.v #>> '{}', ' ')) BETWEEN 2 AND 200 AND lower(t.k) "                      \
  "IN ('email',"                                                                                   \
  "   'insuredemail', 'firstname', 'lastname', 'insuredfirstname', "                               \
  "'insuredlastname',"                                                                             \
  "   'first_name', 'last_name', 'name', 'fullname', 'full_name', "                                \
  "'commercialname',"                                                                              \
  "   'contactname', 'companyname');"                                                              \
  " END $f$;"

/* Migration i takes the schema from version i to i + 1; the same steps as
 * store_sqlite.c's, in PostgreSQL's types: DOUBLE PRECISION for unix times,
 * BIGSERIAL for SQLite's AUTOINCREMENT keys, BYTEA for the payload (a body
 * is bytes; it need not be UTF-8), COLLATE "C" where SQLite's byte order
 * matters (ids and person terms are ordered and ranged). A shipped
 * migration is never edited. */
static const char *const migrations[] = {
    /* 1: the initial schema. */
    "CREATE TABLE events ("
    " id TEXT COLLATE \"C\" PRIMARY KEY,"
    " source TEXT NOT NULL,"
    " type TEXT NOT NULL DEFAULT '',"
    " payload BYTEA NOT NULL DEFAULT ''::bytea,"
    " status INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " result TEXT,"
    " created_at DOUBLE PRECISION NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL,"
    " next_at DOUBLE PRECISION NOT NULL DEFAULT 0);"
    "CREATE INDEX events_status_next ON events (status, next_at);"
    "CREATE INDEX events_created ON events (created_at);"
    "CREATE TABLE attempts ("
    " seq BIGSERIAL PRIMARY KEY,"
    " event_id TEXT COLLATE \"C\" NOT NULL REFERENCES events (id) ON DELETE "
    "CASCADE,"
    " event_attempt INTEGER NOT NULL,"
    " service TEXT NOT NULL,"
    " method TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " status INTEGER NOT NULL,"
    " error TEXT,"
    " duration_ms DOUBLE PRECISION NOT NULL,"
    " at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX attempts_event ON attempts (event_id);"
    "CREATE TABLE links ("
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT NOT NULL,"
    " ghl_id TEXT NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL,"
    " UNIQUE (kind, nowcerts_id),"
    " UNIQUE (kind, ghl_id));"
    "CREATE TABLE fingerprints ("
    " side TEXT NOT NULL,"
    " record_id TEXT NOT NULL,"
    " json TEXT NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (side, record_id));"
    "CREATE TABLE kv ("
    " key TEXT PRIMARY KEY,"
    " value TEXT NOT NULL);",
    /* 2 */
    "CREATE INDEX events_status_created ON events (status, created_at);",
    /* 3: field-level sync; fingerprints become the snapshots' first bases
     * (a store born on PostgreSQL has none, but the step is the same). */
    "CREATE TABLE snapshots ("
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT NOT NULL,"
    " ghl_id TEXT,"
    " json TEXT NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (kind, nowcerts_id));"
    "INSERT INTO snapshots (kind, nowcerts_id, ghl_id, json, updated_at)"
    " SELECT l.kind, l.nowcerts_id, l.ghl_id,"
    "  jsonb_build_object('v', 1, 'fields', COALESCE((SELECT "
    "jsonb_object_agg(j.key,"
    "   jsonb_build_object('base', j.value #>> '{}')) FROM "
    "jsonb_each(f.json::jsonb) j"
    "   WHERE jsonb_typeof(j.value) IN ('string', 'number')), "
    "'{}'::jsonb))::text,"
    "  f.updated_at"
    " FROM links l JOIN fingerprints f ON f.side = 'ghl' AND f.record_id = "
    "l.ghl_id"
    " WHERE f.json LIKE '{%';"
    "DROP TABLE fingerprints;"
    "CREATE TABLE conflicts ("
    " id BIGSERIAL PRIMARY KEY,"
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT NOT NULL,"
    " ghl_id TEXT,"
    " field TEXT NOT NULL,"
    " nowcerts_value TEXT,"
    " ghl_value TEXT,"
    " base TEXT,"
    " winner TEXT NOT NULL,"
    " event_id TEXT,"
    " nowcerts_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " ghl_at DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX conflicts_link ON conflicts (kind, nowcerts_id, id);"
    "CREATE INDEX conflicts_ghl ON conflicts (ghl_id, id);"
    "CREATE INDEX conflicts_at ON conflicts (at);"
    "CREATE TABLE changes ("
    " id BIGSERIAL PRIMARY KEY,"
    " kind TEXT NOT NULL,"
    " nowcerts_id TEXT,"
    " ghl_id TEXT,"
    " field TEXT NOT NULL,"
    " side TEXT NOT NULL,"
    " old_value TEXT,"
    " new_value TEXT,"
    " action TEXT NOT NULL,"
    " event_id TEXT,"
    " at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX changes_link ON changes (kind, nowcerts_id, id);"
    "CREATE INDEX changes_ghl ON changes (ghl_id, id);"
    "CREATE INDEX changes_event ON changes (event_id);"
    "CREATE INDEX changes_at ON changes (at);",
    /* 4: who holds a running row. */
    "ALTER TABLE events ADD COLUMN owner TEXT;",
    /* 5: what the /ui page reads. */
    "ALTER TABLE attempts ADD COLUMN request TEXT;"
    "ALTER TABLE attempts ADD COLUMN answer TEXT;"
    "CREATE TABLE event_people ("
    " term TEXT COLLATE \"C\" NOT NULL,"
    " event_id TEXT COLLATE \"C\" NOT NULL REFERENCES events (id) ON DELETE "
    "CASCADE,"
    " PRIMARY KEY (term, event_id));"
    "CREATE INDEX event_people_event ON event_people (event_id);"
    "CREATE INDEX events_type_created ON events (type, created_at);"
    "CREATE INDEX events_source_created ON events (source, created_at);"
    "CREATE TABLE reloads ("
    " seq BIGSERIAL PRIMARY KEY,"
    " at DOUBLE PRECISION NOT NULL,"
    " ok INTEGER NOT NULL,"
    " version TEXT NOT NULL,"
    " message TEXT NOT NULL);" PG_PEOPLE_FUNCTION
    "INSERT INTO event_people (term, event_id) SELECT t, events.id FROM events,"
    " ncghl_people(events.payload) AS t ON CONFLICT DO NOTHING;",
    /* 6: limits shared by every node (store_rate_take). The function takes
     * a lock per key for its transaction, so two nodes counting the same
     * window take turns; its answer is the wait (0: counted, go). */
    "CREATE TABLE rate_stamps ("
    " key TEXT NOT NULL,"
    " at DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX rate_stamps_key_at ON rate_stamps (key, at);"
    "CREATE FUNCTION ncghl_rate_take(k TEXT, lim INTEGER, win DOUBLE PRECISION,"
    " now DOUBLE PRECISION) RETURNS DOUBLE PRECISION LANGUAGE plpgsql AS $f$"
    " DECLARE n INTEGER; oldest DOUBLE PRECISION;"
    " BEGIN"
    "  PERFORM pg_advisory_xact_lock(hashtext('ncghl.rate.' || k));"
    "  DELETE FROM rate_stamps WHERE key = k AND at <= now - win;"
    "  SELECT count(*), min(at) INTO n, oldest FROM rate_stamps WHERE key = k;"
    "  IF n < lim THEN INSERT INTO rate_stamps (key, at) VALUES (k, now); "
    "RETURN 0; END IF;"
    "  RETURN greatest(oldest + win - now, 0.001);"
    " END $f$;",
    /* 7: an event's people kept by an integer key (seq), as on SQLite:
     * a term many events share gains its new entries at the end of its
     * range instead of at a random place among 70-byte text ids. */
    "ALTER TABLE events ADD COLUMN seq BIGSERIAL;"
    "ALTER TABLE events ADD CONSTRAINT events_seq_key UNIQUE (seq);"
    "CREATE TABLE event_people_v7 ("
    " term TEXT COLLATE \"C\" NOT NULL,"
    " seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,"
    " PRIMARY KEY (term, seq));"
    "INSERT INTO event_people_v7 (term, seq) SELECT p.term, e.seq FROM event_people AS p"
    " JOIN events AS e ON e.id = p.event_id;"
    "DROP TABLE event_people;"
    "ALTER TABLE event_people_v7 RENAME TO event_people;"
    "CREATE INDEX event_people_seq ON event_people (seq);",
    /* 8: an event's attempts found by its integer key too (as on SQLite). */
    "ALTER TABLE attempts ADD COLUMN event_seq BIGINT;"
    "UPDATE attempts AS a SET event_seq = e.seq FROM events AS e WHERE e.id = a.event_id;"
    "ALTER TABLE attempts ALTER COLUMN event_seq SET NOT NULL;"
    "ALTER TABLE attempts ADD CONSTRAINT attempts_event_seq_fkey FOREIGN KEY (event_seq)"
    " REFERENCES events (seq) ON DELETE CASCADE;"
    "ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_event_id_fkey;"
    "DROP INDEX attempts_event;"
    "CREATE INDEX attempts_event_seq ON attempts (event_seq);",
    /* 9: only the indexes a query uses (as on SQLite). */
    "DROP INDEX events_type_created;"
    "DROP INDEX events_source_created;"
    "DROP INDEX events_status_next;"
    "CREATE INDEX events_retry_next ON events (next_at) WHERE status = 3;",
};
#define MIGRATION_COUNT ((int)(sizeof migrations / sizeof migrations[0]))

#define EV_COLS                                                                                    \
  "id, source, type, payload, status, attempts, last_error, result, "                              \
  "created_at, updated_at, "                                                                       \
  "next_at"
#define EV_COLS_E                                                                                  \
  "e.id, e.source, e.type, e.payload, e.status, e.attempts, e.last_error, "                        \
  "e.result,"                                                                                      \
  " e.created_at, e.updated_at, e.next_at"

struct pg {
  struct store base; /* first: the dispatch in store.c sees this */
  PGconn *conn;
  char *conninfo;                 /* the URL without ncghl_schema */
  char schema[PG_SCHEMA_MAX + 1]; /* where every table lives */
  char label[512];                /* the URL with its password masked */
  /* While the server cannot be reached: since when (0: it can), when to
   * try again, how many tries failed, when that was last said. */
  double down_since, retry_at, down_said;
  unsigned long down_tries;
  bool full_sync;                 /* synchronous_commit on */
  int lock_ms;                    /* lock_timeout wanted */
  bool lock_pending;              /* asked inside a transaction: set at the next BEGIN */
  enum store_fault fault;
  bool txn_open;  /* BEGIN ran and no COMMIT or ROLLBACK yet */
  bool aborted;   /* a statement failed inside the open transaction */
  int savepoints; /* depth of op_begin savepoints */
  long long changes;
  PGconn *keys_conn; /* store_keys_lock's own session; NULL until first used */
};

/* ---- parameters -------------------------------------------------------- */

/* Every parameter is sent as text except the payload (binary BYTEA). Text
 * goes to TEXT columns, which PostgreSQL keeps valid UTF-8: a string that
 * is not (an upstream's garbage answer, a cut error message) is sent with
 * each bad byte as U+FFFD rather than failing the whole batch. */
struct prm {
  const char *v[PG_PARAMS_MAX];
  int len[PG_PARAMS_MAX];
  int fmt[PG_PARAMS_MAX];
  char num[PG_PARAMS_MAX][40];
  char *owned[PG_PARAMS_MAX];
  int n;
  bool oom;
};

static size_t utf8_valid_prefix(const unsigned char *p, size_t n, size_t *bad) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    size_t k = c < 0x80             ? 1
               : (c & 0xE0) == 0xC0 ? 2
               : (c & 0xF0) == 0xE0 ? 3
               : (c & 0xF8) == 0xF0 ? 4
                                    : 0;
    if (c == 0 || k == 0 || i + k > n || (k == 2 && c < 0xC2) || (k == 4 && c > 0xF4))
      break;
    bool ok = true;
    for (size_t j = 1; j < k; j++)
      ok = ok && (p[i + j] & 0xC0) == 0x80;
    if (ok && k == 3) {
      unsigned cp = ((c & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
      ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
    }
    if (ok && k == 4) {
      unsigned cp = ((c & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6);
      ok = cp >= 0x10000 && cp <= 0x10FFFF;
    }
    if (!ok)
      break;
    i += k;
  }
  *bad = i;
  return i;
}

static void p_text_n(struct prm *p, const char *v, size_t n) {
  int i = p->n++;
  p->fmt[i] = 0;
  p->len[i] = 0;
  if (!v) {
    p->v[i] = NULL;
    return;
  }
  size_t good;
  utf8_valid_prefix((const unsigned char *)v, n, &good);
  if (good == n && v[n] == '\0') {
    p->v[i] = v;
    return;
  }
  struct buf b;
  buf_init(&b, 0);
  size_t at = 0;
  while (at < n) {
    size_t ok;
    utf8_valid_prefix((const unsigned char *)v + at, n - at, &ok);
    buf_append(&b, v + at, ok);
    at += ok;
    if (at < n) {
      buf_puts(&b, "\xEF\xBF\xBD");
      at++;
    }
  }
  char *c = buf_steal(&b);
  if (!c) {
    p->oom = true;
    p->v[i] = "";
    return;
  }
  p->owned[i] = c;
  p->v[i] = c;
}

static void p_text(struct prm *p, const char *v) { p_text_n(p, v, v ? strlen(v) : 0); }

static void p_bin(struct prm *p, const char *v, size_t n) {
  int i = p->n++;
  p->v[i] = v ? v : "";
  p->len[i] = (int)n;
  p->fmt[i] = 1;
}

static void p_int(struct prm *p, long long v) {
  int i = p->n++;
  snprintf(p->num[i], sizeof p->num[i], "%lld", v);
  p->v[i] = p->num[i];
  p->fmt[i] = 0;
}

static void p_dbl(struct prm *p, double v) {
  int i = p->n++;
  snprintf(p->num[i], sizeof p->num[i], "%.17g", v);
  p->v[i] = p->num[i];
  p->fmt[i] = 0;
}

static void p_null(struct prm *p) {
  int i = p->n++;
  p->v[i] = NULL;
  p->fmt[i] = 0;
}

static void p_free(struct prm *p) {
  for (int i = 0; i < p->n; i++)
    free(p->owned[i]);
}

/* ---- running statements ------------------------------------------------- */

static enum store_fault fault_of(struct pg *s, const PGresult *r) {
  if (PQstatus(s->conn) != CONNECTION_OK)
    return STORE_FAULT_IO;
  const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (!code)
    return STORE_FAULT_IO; /* no answer at all: the connection went */
  if (strcmp(code, "53100") == 0)
    return STORE_FAULT_FULL;
  if (strcmp(code, "55P03") == 0 || strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0)
    return STORE_FAULT_BUSY;
  if (strncmp(code, "08", 2) == 0 || strncmp(code, "57P", 3) == 0 || strncmp(code, "58", 2) == 0 ||
      strcmp(code, "XX001") == 0 || strcmp(code, "XX002") == 0)
    return STORE_FAULT_IO;
  return STORE_FAULT_OTHER;
}

/* Kept by ncghl, not asked of libpq: a transaction whose connection was
 * lost is still "open" to its caller until it commits or rolls back (and
 * hears that it failed), so no later statement of it runs on its own. */
static bool in_txn(struct pg *s) { return s->txn_open; }

static int fail_arg(const char *what, const char *why) {
  log_error("store: %s: %s", what, why);
  return -1;
}

static void count_status(struct pg *s, int from, int to);
static void settle_counts(struct pg *s);

/* A lost connection is taken up again at the next statement that starts a
 * transaction of its own (never inside one: that one is gone, and its
 * caller hears so). The session settings are set again. */
static int session_setup(struct pg *s);

/* While the server is down, a try at most this often: each try may hold
 * the loop for up to connect_timeout, and every statement would ask. */
#define PG_RETRY_SECONDS 1.0
/* And a line about it at most this often, not one per statement. */
#define PG_DOWN_SAY_SECONDS 60.0

static int ensure_connected(struct pg *s) {
  if (PQstatus(s->conn) == CONNECTION_OK)
    return 0;
  double now = clock_mono();
  if (s->down_since > 0 && now < s->retry_at) {
    s->fault = STORE_FAULT_IO;
    return -1;
  }
  if (s->down_since == 0)
    log_warn("store: the connection to %s was lost; connecting again", s->label);
  PQreset(s->conn);
  if (PQstatus(s->conn) != CONNECTION_OK || session_setup(s) != 0) {
    s->fault = STORE_FAULT_IO;
    s->down_tries++;
    now = clock_mono();
    s->retry_at = now + PG_RETRY_SECONDS;
    char why[256];
    snprintf(why, sizeof why, "%s", PQerrorMessage(s->conn));
    for (char *c = why; *c; c++)
      if (*c == '\n' || *c == '\t')
        *c = ' ';
    for (size_t n = strlen(why); n > 0 && why[n - 1] == ' '; n--)
      why[n - 1] = '\0';
    if (s->down_since == 0) {
      s->down_since = s->down_said = now;
      log_error("store: cannot connect again to %s: %s; trying every %g s, webhooks get 503"
                " until then", s->label, why, PG_RETRY_SECONDS);
    } else if (now - s->down_said >= PG_DOWN_SAY_SECONDS) {
      s->down_said = now;
      log_error("store: %s still cannot be reached after %.0f s (%lu tries): %s", s->label,
                now - s->down_since, s->down_tries, why);
    }
    return -1;
  }
  s->savepoints = 0;
  s->aborted = false;
  s->txn_open = false;
  memset(s->base.delta, 0, sizeof s->base.delta);
  if (s->down_since > 0)
    log_info("store: connected again to %s after %.1f s", s->label, clock_mono() - s->down_since);
  else
    log_info("store: connected again to %s", s->label);
  s->down_since = 0;
  s->down_tries = 0;
  return 0;
}

static PGresult *exec_once(struct pg *s, const char *sql, struct prm *p) {
  return p ? PQexecParams(s->conn, sql, p->n, NULL, p->v, p->len, p->fmt, 0)
           : PQexec(s->conn, sql); /* may hold several statements (migrations) */
}

static bool result_ok(const PGresult *r) {
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* A write inside a transaction runs under a savepoint of its own: SQLite
 * undoes only the failed statement and keeps the transaction, while
 * PostgreSQL would spoil the whole batch of the group commit. */
static bool needs_guard(struct pg *s, const char *sql, struct prm *p) {
  return p && in_txn(s) && !s->aborted &&
         (strncmp(sql, "INSERT", 6) == 0 || strncmp(sql, "UPDATE", 6) == 0 ||
          strncmp(sql, "DELETE", 6) == 0 || strncmp(sql, "WITH", 4) == 0 ||
          strncmp(sql, "SELECT ncghl_", 13) == 0);
}

static void log_failure(struct pg *s, const PGresult *r, const char *what) {
  const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(s->conn);
  char line[512];
  snprintf(line, sizeof line, "%s", msg && *msg ? msg : "no answer from the server");
  line[strcspn(line, "\n")] = '\0';
  if (s->fault == STORE_FAULT_BUSY)
    log_debug("store: %s: %s", what, line);
  else
    log_error("store: %s: %s", what, line);
}

/* Runs one statement; the result (rows or none) or NULL on failure, which
 * is logged and classified. */
static PGresult *q(struct pg *s, const char *sql, struct prm *p, const char *what) {
  if (p && p->oom) {
    fail_arg(what, "out of memory");
    return NULL;
  }
  if (!in_txn(s) && ensure_connected(s) != 0)
    return NULL;
  if (in_txn(s) && s->aborted && strncmp(sql, "ROLLBACK", 8) != 0) {
    /* PostgreSQL would refuse it too (25P02); the first failure's fault
     * is the one the caller needs. */
    log_debug("store: %s: skipped, the transaction already failed", what);
    return NULL;
  }
  bool guard = needs_guard(s, sql, p);
  if (guard) {
    PGresult *g = PQexec(s->conn, "SAVEPOINT store_stmt");
    bool ok = result_ok(g);
    PQclear(g);
    if (!ok)
      guard = false; /* the statement itself will say what is wrong */
  }
  PGresult *r = exec_once(s, sql, p);
  if (!result_ok(r) && !in_txn(s) && PQstatus(s->conn) != CONNECTION_OK &&
      (strncmp(sql, "SELECT", 6) == 0 || strcmp(sql, "BEGIN") == 0)) {
    /* The connection was found dead by a statement that changes nothing:
     * connect again and ask once more. */
    PQclear(r);
    if (ensure_connected(s) != 0)
      return NULL; /* said there, and the fault set */
    r = exec_once(s, sql, p);
  }
  if (result_ok(r)) {
    if (guard) {
      PGresult *g = PQexec(s->conn, "RELEASE store_stmt");
      PQclear(g);
    }
    const char *n = PQcmdTuples(r);
    if (n && *n && strncmp(PQcmdStatus(r), "SELECT", 6) != 0)
      s->changes += atoll(n);
    return r;
  }
  s->fault = fault_of(s, r);
  log_failure(s, r, what);
  PQclear(r);
  if (in_txn(s)) {
    bool undone = false;
    if (guard) {
      PGresult *g = PQexec(s->conn, "ROLLBACK TO store_stmt");
      undone = result_ok(g);
      PQclear(g);
      g = PQexec(s->conn, "RELEASE store_stmt");
      PQclear(g);
    }
    if (!undone)
      s->aborted = true;
  }
  return NULL;
}

/* A statement whose rows are not wanted: 0 or -1; *rows (may be NULL) gets
 * how many it changed. */
static int run(struct pg *s, const char *sql, struct prm *p, const char *what, long *rows) {
  PGresult *r = q(s, sql, p, what);
  if (p)
    p_free(p);
  if (!r)
    return -1;
  if (rows)
    *rows = atol(PQcmdTuples(r));
  PQclear(r);
  return 0;
}

static int exec_simple(struct pg *s, const char *sql, const char *what) {
  return run(s, sql, NULL, what, NULL);
}

static int apply_lock_timeout(struct pg *s);

static int txn_begin(struct pg *s) {
  s->aborted = false;
  s->savepoints = 0;
  if (s->lock_pending && apply_lock_timeout(s) == 0)
    s->lock_pending = false;
  if (exec_simple(s, "BEGIN", "begin") != 0)
    return -1;
  s->txn_open = true;
  return 0;
}

/* Ends the transaction either way; 0 only when COMMIT made it durable. */
static int txn_end(struct pg *s, bool commit) {
  int rc = -1;
  if (commit && !s->aborted) {
    PGresult *r = q(s, "COMMIT", NULL, "commit");
    /* COMMIT of a transaction that failed only rolls it back. */
    if (r && strcmp(PQcmdStatus(r), "COMMIT") == 0)
      rc = 0;
    else if (r)
      fail_arg("commit", "the transaction was rolled back");
    PQclear(r);
  }
  if (rc != 0 && PQstatus(s->conn) == CONNECTION_OK &&
      PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
    PGresult *r = PQexec(s->conn, "ROLLBACK");
    PQclear(r);
  }
  s->txn_open = false;
  s->aborted = false;
  s->savepoints = 0;
  if (rc == 0)
    settle_counts(s);
  else
    memset(s->base.delta, 0, sizeof s->base.delta);
  return rc;
}

/* The same all-or-nothing rule as store_sqlite.c's op_begin: a transaction
 * of its own when none is open, else a savepoint, so a failure undoes only
 * itself. On PostgreSQL a failed statement spoils the whole transaction
 * until the savepoint is rolled back to, which op_end does. */
static int op_begin(struct pg *s, bool *own) {
  *own = !in_txn(s);
  if (!*own && s->aborted)
    return fail_arg("store", "the transaction already failed");
  memcpy(s->base.saved_delta, s->base.delta, sizeof s->base.delta);
  if (*own)
    return txn_begin(s);
  if (exec_simple(s, "SAVEPOINT store_op", "savepoint") != 0)
    return -1;
  s->savepoints++;
  return 0;
}

static int op_end(struct pg *s, bool own, bool ok) {
  if (own)
    return txn_end(s, ok);
  s->savepoints--;
  if (ok && !s->aborted && exec_simple(s, "RELEASE store_op", "release") == 0)
    return 0;
  /* ROLLBACK TO makes the transaction usable again. */
  if (exec_simple(s, "ROLLBACK TO store_op", "rollback to savepoint") == 0) {
    s->aborted = false;
    exec_simple(s, "RELEASE store_op", "release");
  }
  memcpy(s->base.delta, s->base.saved_delta, sizeof s->base.delta);
  return -1;
}

/* Counts: each statement that moves an event between statuses says so;
 * outside a transaction the move is committed at once. */
static void count_status(struct pg *s, int from, int to) {
  if (from >= 0 && from < EV_STATUS_COUNT)
    s->base.delta[from]--;
  if (to >= 0 && to < EV_STATUS_COUNT)
    s->base.delta[to]++;
  if (!in_txn(s))
    settle_counts(s);
}

static void settle_counts(struct pg *s) {
  for (int i = 0; i < EV_STATUS_COUNT; i++) {
    s->base.counts[i] += s->base.delta[i];
    s->base.delta[i] = 0;
  }
}

static char *dup_col(const PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col))
    return NULL;
  return strdup(PQgetvalue(r, row, col));
}

static double dbl_col(const PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? 0 : strtod(PQgetvalue(r, row, col), NULL);
}

static int int_col(const PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? 0 : atoi(PQgetvalue(r, row, col));
}

static const char *txt_col(const PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* Reads a row laid out as EV_COLS from column c0. -1 (e freed) on no memory. */
static int read_event(const PGresult *r, int row, int c0, struct store_event *e) {
  memset(e, 0, sizeof *e);
  snprintf(e->id, sizeof e->id, "%s", PQgetvalue(r, row, c0));
  snprintf(e->source, sizeof e->source, "%s", PQgetvalue(r, row, c0 + 1));
  int st = int_col(r, row, c0 + 4);
  e->status = st >= 0 && st < EV_STATUS_COUNT ? (enum ev_status)st : EV_DEAD;
  e->attempts = int_col(r, row, c0 + 5);
  e->created_at = dbl_col(r, row, c0 + 8);
  e->updated_at = dbl_col(r, row, c0 + 9);
  e->next_at = dbl_col(r, row, c0 + 10);
  e->type = strdup(PQgetvalue(r, row, c0 + 2));
  size_t n = 0;
  unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, c0 + 3), &n);
  if (raw) {
    e->payload = malloc(n + 1);
    if (e->payload) {
      memcpy(e->payload, raw, n);
      e->payload[n] = '\0';
      e->payload_len = n;
    }
    PQfreemem(raw);
  }
  bool ok = e->type && e->payload;
  if (ok && !PQgetisnull(r, row, c0 + 6))
    ok = (e->last_error = dup_col(r, row, c0 + 6)) != NULL;
  if (ok && !PQgetisnull(r, row, c0 + 7))
    ok = (e->result = dup_col(r, row, c0 + 7)) != NULL;
  if (!ok) {
    store_event_free(e);
    return -1;
  }
  return 0;
}

/* A one-column lookup: malloc'd value or NULL. */
static char *lookup(struct pg *s, const char *sql, struct prm *p, const char *what) {
  PGresult *r = q(s, sql, p, what);
  p_free(p);
  if (!r)
    return NULL;
  char *out = PQntuples(r) > 0 ? dup_col(r, 0, 0) : NULL;
  PQclear(r);
  return out;
}

/* ---- open, close, migrations -------------------------------------------- */

static void on_notice(void *arg, const char *message) {
  (void)arg;
  log_debug("store: postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

/* Splits ncghl_schema=<name> off the URL's query (libpq refuses parameters
 * it does not know). The rest of the URL is libpq's. */
static int split_schema(const char *url, char **conninfo, char *schema, char *err, size_t errlen) {
  snprintf(schema, PG_SCHEMA_MAX + 1, "%s", "public");
  char *u = strdup(url);
  if (!u) {
    store_set_err(err, errlen, "out of memory");
    return -1;
  }
  char *qm = strchr(u, '?');
  if (!qm) {
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, u);
    if (!strstr(url, "connect_timeout="))
      buf_puts(&b, "?connect_timeout=5");
    free(u);
    *conninfo = buf_steal(&b);
    if (!*conninfo) {
      store_set_err(err, errlen, "out of memory");
      return -1;
    }
    return 0;
  }
  struct buf rest;
  buf_init(&rest, 0);
  buf_append(&rest, u, (size_t)(qm - u));
  bool first = true;
  for (char *save = NULL, *kv = strtok_r(qm + 1, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
    if (strncmp(kv, "ncghl_schema=", 13) == 0) {
      const char *name = kv + 13;
      size_t n = strlen(name);
      bool ok = n > 0 && n <= PG_SCHEMA_MAX && !isdigit((unsigned char)name[0]);
      for (size_t i = 0; ok && i < n; i++)
        /* '-' too: tenant names have it, and the name is always quoted. */
        ok = isalnum((unsigned char)name[i]) || name[i] == '_' || name[i] == '-';
      if (!ok) {
        store_set_err(err, errlen,
                      "ncghl_schema must be 1 to %d letters, digits, '_' or '-', "
                      "not starting with a digit",
                      PG_SCHEMA_MAX);
        free(u);
        buf_free(&rest);
        return -1;
      }
      snprintf(schema, PG_SCHEMA_MAX + 1, "%s", name);
      continue;
    }
    buf_puts(&rest, first ? "?" : "&");
    buf_puts(&rest, kv);
    first = false;
  }
  free(u);
  /* libpq waits for a connection without end by default: a reconnect on
   * the loop must give up in time. A URL that says otherwise wins. */
  if (!strstr(url, "connect_timeout="))
    buf_puts(&rest, first ? "?connect_timeout=5" : "&connect_timeout=5");
  *conninfo = buf_steal(&rest);
  if (!*conninfo) {
    store_set_err(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

static int apply_lock_timeout(struct pg *s) {
  char sql[64];
  int ms = s->lock_ms > 0 ? s->lock_ms : PG_NO_WAIT_LOCK_MS;
  snprintf(sql, sizeof sql, "SET lock_timeout = %d", ms);
  return exec_simple(s, sql, "lock_timeout");
}

static int session_setup(struct pg *s) {
  char sql[160];
  /* The schema name was checked to be letters, digits and underscores. */
  snprintf(sql, sizeof sql, "SET search_path TO \"%s\"", s->schema);
  if (exec_simple(s, "SET client_min_messages = warning", "configure") != 0 ||
      exec_simple(s, sql, "search_path") != 0 ||
      exec_simple(s, s->full_sync ? "SET synchronous_commit = on" : "SET synchronous_commit = off",
                  "synchronous_commit") != 0 ||
      apply_lock_timeout(s) != 0)
    return -1;
  return 0;
}

static int read_version(struct pg *s) {
  PGresult *r = q(s, "SELECT version FROM schema_version", NULL, "schema_version");
  int v = -1;
  if (r) {
    v = PQntuples(r) > 0 ? int_col(r, 0, 0) : 0;
    PQclear(r);
  }
  return v;
}

/* Brings the schema to MIGRATION_COUNT in one transaction. Nodes starting
 * together take turns on an advisory lock named after the schema, so the
 * schema and its tables are created once. */
static int migrate(struct pg *s, char *err, size_t errlen) {
  /* CREATE ... IF NOT EXISTS still asks for the right to create, so a
   * user that may only use an existing schema could not open it: each is
   * created only when it is missing. */
  char sql[1024];
  snprintf(sql, sizeof sql,
           "SELECT pg_advisory_xact_lock(hashtext('ncghl.migrate.%s'));"
           "DO $d$ BEGIN"
           " IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = '%s') THEN"
           "  CREATE SCHEMA \"%s\"; END IF;"
           " IF to_regclass('\"%s\".schema_version') IS NULL THEN"
           "  CREATE TABLE \"%s\".schema_version (version INTEGER NOT NULL); END IF;"
           " END $d$",
           s->schema, s->schema, s->schema, s->schema, s->schema);
  if (txn_begin(s) != 0 || exec_simple(s, sql, "create schema") != 0)
    goto fail;
  int v = read_version(s);
  if (v < 0)
    goto fail;
  if (v > MIGRATION_COUNT) {
    txn_end(s, false);
    store_set_err(err, errlen,
                  "%s (schema %s) has schema version %d, newer than this build "
                  "knows (%d)",
                  s->label, s->schema, v, MIGRATION_COUNT);
    return -1;
  }
  int from = v;
  if (v == 0 && exec_simple(s,
                            "INSERT INTO schema_version (version) SELECT 0 WHERE NOT EXISTS"
                            " (SELECT 1 FROM schema_version)",
                            "schema_version") != 0)
    goto fail;
  for (; v < MIGRATION_COUNT; v++) {
    char bump[64];
    snprintf(bump, sizeof bump, "UPDATE schema_version SET version = %d", v + 1);
    if (exec_simple(s, migrations[v], "migration") != 0 || exec_simple(s, bump, "migration") != 0)
      goto fail;
  }
  if (txn_end(s, true) != 0)
    goto fail;
  if (v != from)
    log_info("store: %s (schema %s) migrated to schema version %d", s->label, s->schema, v);
  return 0;
fail:
  store_set_err(err, errlen, "cannot migrate %s (schema %s): %s", s->label, s->schema,
                PQerrorMessage(s->conn));
  if (in_txn(s))
    txn_end(s, false);
  return -1;
}

static const struct store_ops pg_ops;
static void pg_close(struct store *base_);

bool store_pg_exists(const char *url) {
  char *conninfo = NULL, schema[PG_SCHEMA_MAX + 1];
  if (split_schema(url, &conninfo, schema, NULL, 0) != 0)
    return true; /* store_open says what is wrong with the URL */
  PGconn *c = PQconnectdb(conninfo);
  free(conninfo);
  bool there = true;
  if (c && PQstatus(c) == CONNECTION_OK) {
    PQsetNoticeProcessor(c, on_notice, NULL);
    const char *v[1] = {schema};
    PGresult *r =
        PQexecParams(c, "SELECT to_regclass(quote_ident($1) || '.schema_version') IS NOT NULL", 1,
                     NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
      there = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
  }
  PQfinish(c);
  return there;
}

struct store *store_pg_open(const char *url, char *err, size_t errlen) {
  struct pg *s = calloc(1, sizeof *s);
  if (!s) {
    store_set_err(err, errlen, "out of memory");
    return NULL;
  }
  store_base_init(&s->base, &pg_ops);
  s->base.shared = true;
  store_display_name(url, s->label, sizeof s->label);
  s->full_sync = true;
  s->lock_ms = PG_DEFAULT_LOCK_MS;
  if (split_schema(url, &s->conninfo, s->schema, err, errlen) != 0)
    goto fail;
  s->conn = PQconnectdb(s->conninfo);
  if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
    char why[256];
    snprintf(why, sizeof why, "%s", s->conn ? PQerrorMessage(s->conn) : "out of memory");
    why[strcspn(why, "\n")] = '\0';
    store_set_err(err, errlen, "cannot connect to %s: %s", s->label, why);
    goto fail;
  }
  PQsetNoticeProcessor(s->conn, on_notice, NULL);
  if (session_setup(s) != 0) {
    store_set_err(err, errlen, "cannot configure the session on %s: %s", s->label,
                  PQerrorMessage(s->conn));
    goto fail;
  }
  if (migrate(s, err, errlen) != 0)
    goto fail;
  return &s->base;
fail:
  pg_close(&s->base);
  return NULL;
}

static void pg_close(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  if (s->conn && in_txn(s))
    log_warn("store: closing with a transaction open; it is rolled back");
  if (s->conn)
    PQfinish(s->conn);
  if (s->keys_conn)
    PQfinish(s->keys_conn);
  free(s->conninfo);
  free(s);
}

/* ---- transactions ------------------------------------------------------- */

static int pg_begin(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  if (in_txn(s))
    return fail_arg("begin", "a transaction is already open");
  return txn_begin(s);
}

/* SQLite's synchronous=FULL/NORMAL is PostgreSQL's synchronous_commit
 * on/off: off survives a crash of ncghl, not of the database server, until
 * the next commit with it on. */
static int pg_set_full_sync(struct store *base_, bool full) {
  struct pg *s = (struct pg *)base_;
  if (full == s->full_sync)
    return 0;
  if (exec_simple(s, full ? "SET synchronous_commit = on" : "SET synchronous_commit = off",
                  "set_full_sync") != 0)
    return -1;
  s->full_sync = full;
  return 0;
}

static const char *pg_path(struct store *base_) { return ((struct pg *)base_)->label; }

static int pg_commit(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  if (!in_txn(s))
    return fail_arg("commit", "no transaction is open");
  return txn_end(s, true);
}

static int pg_rollback(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  if (!in_txn(s))
    return 0;
  txn_end(s, false);
  return 0;
}

static bool pg_in_txn(struct store *base_) { return in_txn((struct pg *)base_); }

/* A server that refuses writes (read-only, no space) only shows when a
 * write is tried: try one and roll it back. */
static bool pg_writable(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  if (in_txn(s))
    return true;
  if (txn_begin(s) != 0)
    return false;
  bool ok = exec_simple(s,
                        "INSERT INTO kv (key, value) VALUES ('ncghl.writable_probe', '1')"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        "writable") == 0;
  txn_end(s, false);
  if (!ok && s->fault == STORE_FAULT_BUSY)
    return true; /* another node holds the row a moment */
  return ok;
}

static int pg_schema_version(struct store *base_) { return read_version((struct pg *)base_); }

/* ---- events ------------------------------------------------------------- */

static int pg_event_put(struct store *base_, const char *id, const char *source, const char *type,
                        const char *payload, size_t payload_len, enum ev_status initial, double now,
                        double ttl, enum store_put *result, enum ev_status *existing) {
  struct pg *s = (struct pg *)base_;
  const char *what = "event_put"; /* arguments checked by store_event_put */

  struct prm p = {0};
  p_text(&p, id);
  p_text(&p, source);
  p_text(&p, type);
  p_bin(&p, payload, payload_len);
  p_int(&p, initial);
  p_dbl(&p, now);
  p_text(&p, s->base.owner);
  PGresult *r = q(s,
                  "INSERT INTO events (id, source, type, payload, status, "
                  "attempts, created_at,"
                  " updated_at, next_at, owner) VALUES ($1, $2, $3, $4::bytea, "
                  "$5::integer, CASE WHEN $5::integer = 1 THEN 1 ELSE 0 END,"
                  " $6::double precision, $6::double precision, 0,"
                  " CASE WHEN $5::integer = 1 THEN $7::text END)"
                  " ON CONFLICT (id) DO NOTHING RETURNING seq",
                  &p, what);
  p_free(&p);
  if (!r)
    return -1;
  bool inserted = PQntuples(r) == 1;
  long long seq = inserted ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
  PQclear(r);
  if (inserted) {
    count_status(s, -1, initial);
    struct prm pp = {0};
    p_int(&pp, seq);
    p_bin(&pp, payload, payload_len);
    run(s,
        "INSERT INTO event_people (term, seq) SELECT t, $1::bigint FROM "
        "ncghl_people($2::bytea) AS t"
        " ON CONFLICT DO NOTHING",
        &pp, "event_put (people)", NULL);
    if (result)
      *result = STORE_PUT_NEW;
    if (existing)
      *existing = initial;
    return 0;
  }

  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  bool ok = false;
  enum store_put res = STORE_PUT_DUPLICATE;
  int old = EV_PENDING;
  struct prm ps = {0};
  p_text(&ps, id);
  r = q(s, "SELECT status, created_at FROM events WHERE id = $1 FOR UPDATE", &ps, what);
  p_free(&ps);
  bool found = r && PQntuples(r) == 1;
  double created = 0;
  if (found) {
    old = int_col(r, 0, 0);
    created = dbl_col(r, 0, 1);
  }
  PQclear(r);
  if (found) {
    if (old == EV_DEAD) {
      struct prm pu = {0};
      p_text(&pu, id);
      p_int(&pu, initial);
      p_dbl(&pu, now);
      p_text(&pu, s->base.owner);
      ok = run(s,
               "UPDATE events SET status = $2::integer, next_at = 0, "
               "attempts = attempts + CASE WHEN $2::integer = 1 THEN 1 ELSE 0 END, "
               "updated_at = $3::double"
               " precision, owner = CASE WHEN $2::integer = 1 THEN $4::text "
               "END WHERE id = $1",
               &pu, what, NULL) == 0;
      if (ok)
        count_status(s, old, initial);
      res = STORE_PUT_REQUEUED;
    } else if (ttl > 0 && now - created > ttl && old != EV_RUNNING) {
      struct prm pu = {0};
      p_text(&pu, id);
      p_text(&pu, source);
      p_text(&pu, type);
      p_bin(&pu, payload, payload_len);
      p_int(&pu, initial);
      p_dbl(&pu, now);
      p_text(&pu, s->base.owner);
      ok = run(s,
               "UPDATE events SET source = $2, type = $3, payload = $4::bytea, "
               "status ="
               " $5::integer, last_error = NULL, result = NULL, created_at = "
               "$6::double"
               " precision, updated_at = $6::double precision, next_at = 0, "
               "attempts = attempts + CASE WHEN $5::integer = 1 THEN 1 ELSE 0 END, "
               "owner = CASE WHEN"
               " $5::integer = 1 THEN $7::text END WHERE id = $1",
               &pu, what, NULL) == 0;
      if (ok)
        count_status(s, old, initial);
      res = STORE_PUT_NEW;
    } else {
      ok = true;
    }
  } else if (r) {
    fail_arg(what, "the event vanished between its insert and its look-up");
  }
  if (op_end(s, own, ok) != 0)
    return -1;
  if (result)
    *result = res;
  if (existing)
    *existing = (enum ev_status)old;
  return 0;
}

static int pg_event_get(struct store *base_, const char *id, struct store_event *out) {
  struct pg *s = (struct pg *)base_;
  memset(out, 0, sizeof *out);
  if (!id)
    return 1;
  struct prm p = {0};
  p_text(&p, id);
  PGresult *r = q(s, "SELECT " EV_COLS " FROM events WHERE id = $1", &p, "event_get");
  p_free(&p);
  if (!r)
    return -1;
  int ret = 1;
  if (PQntuples(r) == 1)
    ret = read_event(r, 0, 0, out) == 0 ? 0 : fail_arg("event_get", "out of memory");
  PQclear(r);
  return ret;
}

/* Moves rows and counts the move: the statement returns each row's old
 * status in its first column. Returns how many rows moved, -1 on error. */
static int move_rows(struct pg *s, const char *sql, struct prm *p, int to, const char *what) {
  PGresult *r = q(s, sql, p, what);
  p_free(p);
  if (!r)
    return -1;
  int n = PQntuples(r);
  for (int i = 0; i < n; i++)
    count_status(s, int_col(r, i, 0), to);
  PQclear(r);
  return n;
}

/* Another node may be claiming the same row: SKIP LOCKED answers "not
 * claimed" at once instead of waiting for it. */
static int pg_event_claim(struct store *base_, const char *id, double now) {
  struct pg *s = (struct pg *)base_;
  if (!id)
    return fail_arg("event_claim", "missing event id");
  struct prm p = {0};
  p_text(&p, id);
  p_dbl(&p, now);
  p_text(&p, s->base.owner);
  int n = move_rows(s,
                    "WITH o AS (SELECT id, status FROM events WHERE id = $1 "
                    "AND status IN (0, 3)"
                    " FOR UPDATE SKIP LOCKED)"
                    " UPDATE events e SET status = 1, attempts = e.attempts + "
                    "1, owner = $3::text,"
                    " updated_at = $2::double precision FROM o WHERE e.id = "
                    "o.id RETURNING o.status",
                    &p, EV_RUNNING, "event_claim");
  return n < 0 ? -1 : n > 0;
}

/* Pending first, oldest first, then retry_wait rows whose time has come;
 * rows another node has locked (it is claiming them) are skipped, and a
 * row's status is checked again once it is locked, so no two nodes ever
 * mark the same row running. */
static int pg_claim_due(struct store *base_, double now, int max, struct store_event *out, int *n) {
  struct pg *s = (struct pg *)base_; /* max >= 1, *n = 0: store_claim_due */
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  struct prm p = {0};
  p_dbl(&p, now);
  p_int(&p, max);
  p_text(&p, s->base.owner);
  PGresult *r = q(s,
                  "WITH pend AS (SELECT id, status FROM events WHERE status = 0"
                  " ORDER BY created_at LIMIT $2::integer FOR UPDATE SKIP LOCKED),"
                  " due AS (SELECT id, status FROM events WHERE status = 3 AND next_at <="
                  " $1::double precision ORDER BY next_at LIMIT $2::integer FOR UPDATE "
                  "SKIP LOCKED),"
                  " c AS (SELECT * FROM (SELECT id, status, 0 AS k FROM pend UNION ALL"
                  " SELECT id, status, 1 FROM due) u ORDER BY k LIMIT $2::integer)"
                  " UPDATE events e SET status = 1, attempts = e.attempts + 1, owner = "
                  "$3::text,"
                  " updated_at = $1::double precision FROM c WHERE e.id = c.id"
                  " RETURNING c.status, " EV_COLS_E,
                  &p, "claim_due");
  p_free(&p);
  int k = 0;
  bool ok = r != NULL;
  if (r) {
    int rows = PQntuples(r);
    for (int i = 0; i < rows && ok; i++) {
      if (k >= max || read_event(r, i, 1, &out[k]) != 0) {
        ok = fail_arg("claim_due", k >= max ? "more rows than asked for" : "out of memory") == 0;
        break;
      }
      count_status(s, int_col(r, i, 0), EV_RUNNING);
      k++;
    }
    PQclear(r);
  }
  if (op_end(s, own, ok) != 0) {
    for (int i = 0; i < k; i++)
      store_event_free(&out[i]);
    return -1;
  }
  qsort(out, (size_t)k, sizeof *out, store_event_age_cmp);
  *n = k;
  return 0;
}

static int pg_event_finish(struct store *base_, const char *id, enum ev_status st_new,
                           double next_at, const char *last_error, const char *result, double now) {
  struct pg *s = (struct pg *)base_;
  const char *what = "event_finish";
  if (!id)
    return fail_arg(what, "missing event id");
  if (st_new != EV_DONE && st_new != EV_RETRY_WAIT && st_new != EV_DEAD)
    return fail_arg(what, "a run ends done, retry_wait or dead");
  struct prm p = {0};
  p_text(&p, id);
  p_int(&p, st_new);
  p_dbl(&p, st_new == EV_RETRY_WAIT ? next_at : 0);
  p_text(&p, last_error);
  p_text(&p, result);
  p_dbl(&p, now);
  int n = move_rows(s,
                    "WITH o AS (SELECT id, status FROM events WHERE id = $1 FOR UPDATE)"
                    " UPDATE events e SET status = $2::integer, next_at = $3::double "
                    "precision,"
                    " last_error = $4::text, result = $5::text, updated_at = $6::double "
                    "precision,"
                    " owner = NULL FROM o WHERE e.id = o.id RETURNING o.status",
                    &p, st_new, what);
  if (n < 0)
    return -1;
  if (n == 0)
    return fail_arg(what, "no such event");
  return 0;
}

static int pg_event_requeue(struct store *base_, const char *id, double now) {
  struct pg *s = (struct pg *)base_;
  if (!id)
    return fail_arg("event_requeue", "missing event id");
  struct prm p = {0};
  p_text(&p, id);
  p_dbl(&p, now);
  int n = move_rows(s,
                    "WITH o AS (SELECT id, status FROM events WHERE id = $1 AND status <> 1"
                    " FOR UPDATE)"
                    " UPDATE events e SET status = 0, next_at = 0, updated_at = $2::double "
                    "precision"
                    " FROM o WHERE e.id = o.id RETURNING o.status",
                    &p, EV_PENDING, "event_requeue");
  return n < 0 ? -1 : n > 0;
}

static int pg_event_release(struct store *base_, const char *id, double now) {
  struct pg *s = (struct pg *)base_;
  if (!id)
    return fail_arg("event_release", "missing event id");
  struct prm p = {0};
  p_text(&p, id);
  p_dbl(&p, now);
  int n = move_rows(s,
                    "UPDATE events SET status = 0, owner = NULL, updated_at = "
                    "$2::double precision"
                    " WHERE id = $1 AND status = 1 RETURNING 1",
                    &p, EV_PENDING, "event_release");
  return n < 0 ? -1 : n > 0;
}

struct recover {
  struct pg *s;
  double now;
  char (*ids)[EVENT_ID_MAX];
  size_t n, cap;
};

static int recover_one(void *ud, const char *id, const char *owner, double updated_at) {
  (void)updated_at;
  struct recover *w = ud;
  bool take = !owner || store_owner_gone(&w->s->base, owner);
  if (!take) {
    char key[200];
    snprintf(key, sizeof key, "lease.%s", owner);
    char *v = store_kv_get(&w->s->base, key);
    double beat = v ? strtod(v, NULL) : 0;
    free(v);
    take = w->now - beat > STORE_LEASE_TTL;
  }
  if (!take)
    return 0;
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 16;
    char(*ids)[EVENT_ID_MAX] = realloc(w->ids, cap * sizeof *ids);
    if (!ids)
      return 1;
    w->ids = ids;
    w->cap = cap;
  }
  snprintf(w->ids[w->n++], EVENT_ID_MAX, "%s", id);
  return 0;
}

static int pg_running_list(struct store *base_,
                           int (*cb)(void *ud, const char *id, const char *owner,
                                     double updated_at),
                           void *ud);

/* Several nodes share the rows: at start only the rows nobody works on are
 * queued again (see store.h), never a live node's. */
static int pg_recover_running(struct store *base_, int *n) {
  struct pg *s = (struct pg *)base_;
  if (n)
    *n = 0;
  struct recover w = {s, clock_wall(), NULL, 0, 0};
  /* The list is read whole first: lookups cannot run inside its walk. */
  int rc = pg_running_list(base_, recover_one, &w);
  int taken = 0;
  for (size_t i = 0; rc == 0 && i < w.n; i++) {
    int r = pg_event_release(base_, w.ids[i], w.now);
    if (r < 0)
      rc = -1;
    taken += r > 0;
  }
  free(w.ids);
  if (n)
    *n = taken;
  return rc;
}

static double pg_next_due(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  PGresult *r = q(s, "SELECT MIN(next_at) FROM events WHERE status = 3", NULL, "next_due");
  double t = r && PQntuples(r) ? dbl_col(r, 0, 0) : 0;
  PQclear(r);
  return t;
}

static int walk_events(PGresult *r, int (*cb)(void *ud, const struct store_event *e), void *ud,
                       const char *what) {
  if (!r)
    return -1;
  int ret = 0;
  for (int i = 0; i < PQntuples(r); i++) {
    struct store_event e;
    if (read_event(r, i, 0, &e) != 0) {
      ret = fail_arg(what, "out of memory");
      break;
    }
    int stop = cb(ud, &e);
    store_event_free(&e);
    if (stop)
      break;
  }
  PQclear(r);
  return ret;
}

static int pg_event_list(struct store *base_, const char *status, int limit,
                         int (*cb)(void *ud, const struct store_event *e), void *ud) {
  struct pg *s = (struct pg *)base_;
  struct prm p = {0};
  if (limit > 0)
    p_int(&p, limit);
  else
    p_null(&p);
  const char *sql = "SELECT " EV_COLS " FROM events ORDER BY created_at DESC, id DESC"
                    " LIMIT $1::integer";
  if (status) {
    int code = store_status_parse(status);
    if (code < 0)
      return fail_arg("event_list", "unknown status");
    p_int(&p, code);
    sql = "SELECT " EV_COLS " FROM events WHERE status = $2::integer"
          " ORDER BY created_at DESC, id DESC LIMIT $1::integer";
  }
  PGresult *r = q(s, sql, &p, "event_list");
  p_free(&p);
  return walk_events(r, cb, ud, "event_list");
}

static int pg_count_by_status(struct store *base_, long counts[EV_STATUS_COUNT]) {
  struct pg *s = (struct pg *)base_;
  s->base.count_queries++;
  for (int i = 0; i < EV_STATUS_COUNT; i++)
    counts[i] = 0;
  PGresult *r =
      q(s, "SELECT status, COUNT(*) FROM events GROUP BY status", NULL, "count_by_status");
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    int code = int_col(r, i, 0);
    if (code >= 0 && code < EV_STATUS_COUNT)
      counts[code] = atol(PQgetvalue(r, i, 1));
  }
  PQclear(r);
  return 0;
}

/* ---- attempts ----------------------------------------------------------- */

static void p_excerpt(struct prm *p, const char *v, size_t len) {
  if (!v) {
    p_null(p);
    return;
  }
  if (len > STORE_EXCERPT_MAX) {
    len = STORE_EXCERPT_MAX;
    while (len > 0 && ((unsigned char)v[len] & 0xC0) == 0x80)
      len--;
  }
  p_text_n(p, v, len);
  /* p_text_n keeps a borrowed pointer only for a whole, valid string. */
  int i = p->n - 1;
  if (p->v[i] == v && v[len] != '\0') {
    char *c = strndup(v, len);
    if (!c)
      p->oom = true;
    p->owned[i] = c;
    p->v[i] = c ? c : "";
  }
}

static int pg_attempt_add_io(struct store *base_, const char *event_id, int event_attempt,
                             const char *service, const char *method, const char *url, int status,
                             const char *error, double duration_ms, double at, const char *request,
                             size_t request_len, const char *answer, size_t answer_len) {
  struct pg *s = (struct pg *)base_;
  if (!event_id)
    return fail_arg("attempt_add", "missing event id");
  struct prm p = {0};
  p_text(&p, event_id);
  p_int(&p, event_attempt);
  p_text(&p, service ? service : "");
  p_text(&p, method ? method : "");
  p_text(&p, url ? url : "");
  p_int(&p, status);
  p_text(&p, error);
  p_dbl(&p, duration_ms);
  p_dbl(&p, at);
  p_excerpt(&p, request, request_len);
  p_excerpt(&p, answer, answer_len);
  return run(s,
             "INSERT INTO attempts (event_id, event_attempt, service, method, "
             "url, status, error,"
             " duration_ms, at, request, answer, event_seq) VALUES ($1, $2::integer, $3, "
             "$4, $5, $6::integer,"
             " $7::text, $8::double precision, $9::double precision, "
             "$10::text, $11::text, (SELECT seq FROM events WHERE id = $1))",
             &p, "attempt_add", NULL);
}

static int pg_attempt_list(struct store *base_, const char *event_id,
                           int (*cb)(void *ud, const struct store_attempt *a), void *ud) {
  struct pg *s = (struct pg *)base_;
  if (!event_id)
    return 0;
  struct prm p = {0};
  p_text(&p, event_id);
  PGresult *r = q(s,
                  "SELECT seq, service, method, url, status, error, duration_ms, at, "
                  "event_attempt,"
                  " request, answer FROM attempts WHERE event_seq ="
                  " (SELECT seq FROM events WHERE id = $1) ORDER BY seq",
                  &p, "attempt_list");
  p_free(&p);
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    struct store_attempt a = {
        .seq = atoll(PQgetvalue(r, i, 0)),
        .service = (char *)txt_col(r, i, 1),
        .method = (char *)txt_col(r, i, 2),
        .url = (char *)txt_col(r, i, 3),
        .status = int_col(r, i, 4),
        .error = (char *)txt_col(r, i, 5),
        .duration_ms = dbl_col(r, i, 6),
        .at = dbl_col(r, i, 7),
        .event_attempt = int_col(r, i, 8),
        .request = (char *)txt_col(r, i, 9),
        .answer = (char *)txt_col(r, i, 10),
    };
    if (cb(ud, &a))
      break;
  }
  PQclear(r);
  return 0;
}

/* ---- links, snapshots, kv ----------------------------------------------- */

/* SQLite's INSERT OR REPLACE drops every row holding either side of the new
 * pair; here that is a DELETE and an INSERT under one savepoint. */
static int pg_link_put(struct store *base_, const char *kind, const char *nowcerts_id,
                       const char *ghl_id, double now) {
  struct pg *s = (struct pg *)base_;
  if (!kind || !nowcerts_id || !ghl_id || !*nowcerts_id || !*ghl_id)
    return fail_arg("link_put", "kind and both ids are required");
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  struct prm d = {0};
  p_text(&d, kind);
  p_text(&d, nowcerts_id);
  p_text(&d, ghl_id);
  bool ok = run(s,
                "DELETE FROM links WHERE kind = $1 AND (nowcerts_id = $2 OR "
                "ghl_id = $3)",
                &d, "link_put", NULL) == 0;
  if (ok) {
    struct prm p = {0};
    p_text(&p, kind);
    p_text(&p, nowcerts_id);
    p_text(&p, ghl_id);
    p_dbl(&p, now);
    ok = run(s,
             "INSERT INTO links (kind, nowcerts_id, ghl_id, updated_at)"
             " VALUES ($1, $2, $3, $4::double precision)",
             &p, "link_put", NULL) == 0;
  }
  return op_end(s, own, ok);
}

static char *pg_link_ghl(struct store *base_, const char *kind, const char *nowcerts_id) {
  if (!kind || !nowcerts_id)
    return NULL;
  struct prm p = {0};
  p_text(&p, kind);
  p_text(&p, nowcerts_id);
  return lookup((struct pg *)base_, "SELECT ghl_id FROM links WHERE kind = $1 AND nowcerts_id = $2",
                &p, "link_ghl");
}

static char *pg_link_nowcerts(struct store *base_, const char *kind, const char *ghl_id) {
  if (!kind || !ghl_id)
    return NULL;
  struct prm p = {0};
  p_text(&p, kind);
  p_text(&p, ghl_id);
  return lookup((struct pg *)base_, "SELECT nowcerts_id FROM links WHERE kind = $1 AND ghl_id = $2",
                &p, "link_nowcerts");
}

static int pg_link_delete(struct store *base_, const char *kind, const char *nowcerts_id) {
  if (!kind || !nowcerts_id)
    return fail_arg("link_delete", "kind and NowCerts id are required");
  struct prm p = {0};
  p_text(&p, kind);
  p_text(&p, nowcerts_id);
  return run((struct pg *)base_, "DELETE FROM links WHERE kind = $1 AND nowcerts_id = $2", &p,
             "link_delete", NULL);
}

static int pg_snapshot_put(struct store *base_, const char *kind, const char *nowcerts_id,
                           const char *ghl_id, const char *json, double now) {
  struct pg *s = (struct pg *)base_;
  if (!kind || !nowcerts_id || !*nowcerts_id)
    return fail_arg("snapshot_put", "kind and NowCerts id are required");
  struct prm p = {0};
  p_text(&p, kind);
  p_text(&p, nowcerts_id);
  if (!json)
    return run(s, "DELETE FROM snapshots WHERE kind = $1 AND nowcerts_id = $2", &p, "snapshot_put",
               NULL);
  p_text(&p, ghl_id);
  p_text(&p, json);
  p_dbl(&p, now);
  return run(s,
             "INSERT INTO snapshots (kind, nowcerts_id, ghl_id, json, updated_at)"
             " VALUES ($1, $2, $3::text, $4, $5::double precision) ON CONFLICT (kind, "
             "nowcerts_id)"
             " DO UPDATE SET ghl_id = excluded.ghl_id, json = excluded.json,"
             " updated_at = excluded.updated_at",
             &p, "snapshot_put", NULL);
}

static char *pg_snapshot_get(struct store *base_, const char *kind, const char *nowcerts_id) {
  if (!kind || !nowcerts_id)
    return NULL;
  struct prm p = {0};
  p_text(&p, kind);
  p_text(&p, nowcerts_id);
  return lookup((struct pg *)base_,
                "SELECT json FROM snapshots WHERE kind = $1 AND nowcerts_id = $2", &p,
                "snapshot_get");
}

static int pg_conflict_add(struct store *base_, const struct store_conflict *c) {
  if (!c || !c->kind || !c->nowcerts_id || !c->field || !c->winner)
    return fail_arg("conflict_add", "kind, NowCerts id, field and winner are required");
  struct prm p = {0};
  p_text(&p, c->kind);
  p_text(&p, c->nowcerts_id);
  p_text(&p, c->ghl_id);
  p_text(&p, c->field);
  p_text(&p, c->nowcerts_value);
  p_text(&p, c->ghl_value);
  p_text(&p, c->base);
  p_text(&p, c->winner);
  p_text(&p, c->event_id);
  p_dbl(&p, c->nowcerts_at);
  p_dbl(&p, c->ghl_at);
  p_dbl(&p, c->at);
  return run((struct pg *)base_,
             "INSERT INTO conflicts (kind, nowcerts_id, ghl_id, field, "
             "nowcerts_value, ghl_value,"
             " base, winner, event_id, nowcerts_at, ghl_at, at) VALUES ($1, $2, "
             "$3::text, $4,"
             " $5::text, $6::text, $7::text, $8, $9::text, $10::double precision,"
             " $11::double precision, $12::double precision)",
             &p, "conflict_add", NULL);
}

static long long pg_conflict_count(struct store *base_) {
  struct pg *s = (struct pg *)base_;
  PGresult *r = q(s, "SELECT COUNT(*) FROM conflicts", NULL, "conflict_count");
  long long n = r && PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : -1;
  PQclear(r);
  return n;
}

static int pg_change_add(struct store *base_, const struct store_change *c) {
  if (!c || !c->kind || !c->field || !c->side || !c->action)
    return fail_arg("change_add", "kind, field, side and action are required");
  struct prm p = {0};
  p_text(&p, c->kind);
  p_text(&p, c->nowcerts_id);
  p_text(&p, c->ghl_id);
  p_text(&p, c->field);
  p_text(&p, c->side);
  p_text(&p, c->old_value);
  p_text(&p, c->new_value);
  p_text(&p, c->action);
  p_text(&p, c->event_id);
  p_dbl(&p, c->at);
  return run((struct pg *)base_,
             "INSERT INTO changes (kind, nowcerts_id, ghl_id, field, side, "
             "old_value, new_value,"
             " action, event_id, at) VALUES ($1, $2::text, $3::text, $4, $5, "
             "$6::text, $7::text,"
             " $8, $9::text, $10::double precision)",
             &p, "change_add", NULL);
}

/* The filters given, each one parameter in order (PostgreSQL wants every
 * $n it is sent to appear in the statement). */
static PGresult *sync_list(struct pg *s, const char *table, const char *cols,
                           const struct store_sync_filter *f, const char *what) {
  char sql[768];
  struct prm p = {0};
  int n = snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE true", cols, table);
  const char *names[] = {"kind", "nowcerts_id", "ghl_id", "event_id"};
  const char *vals[] = {f->kind, f->nowcerts_id, f->ghl_id, f->event_id};
  for (int i = 0; i < 4; i++)
    if (vals[i]) {
      p_text(&p, vals[i]);
      n += snprintf(sql + n, sizeof sql - (size_t)n, " AND %s = $%d", names[i], p.n);
    }
  if (f->before > 0) {
    p_int(&p, f->before);
    n += snprintf(sql + n, sizeof sql - (size_t)n, " AND id < $%d::bigint", p.n);
  }
  p_int(&p, f->limit > 0 ? f->limit : 100);
  snprintf(sql + n, sizeof sql - (size_t)n, " ORDER BY id DESC LIMIT $%d::integer", p.n);
  PGresult *r = q(s, sql, &p, what);
  p_free(&p);
  return r;
}

static int pg_conflict_list(struct store *base_, const struct store_sync_filter *f,
                            int (*cb)(void *ud, const struct store_conflict *c), void *ud) {
  PGresult *r = sync_list((struct pg *)base_, "conflicts",
                          "id, kind, nowcerts_id, ghl_id, field, nowcerts_value, ghl_value, base,"
                          " winner, event_id, nowcerts_at, ghl_at, at",
                          f, "conflict_list");
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    struct store_conflict c = {
        .id = atoll(PQgetvalue(r, i, 0)),
        .kind = txt_col(r, i, 1),
        .nowcerts_id = txt_col(r, i, 2),
        .ghl_id = txt_col(r, i, 3),
        .field = txt_col(r, i, 4),
        .nowcerts_value = txt_col(r, i, 5),
        .ghl_value = txt_col(r, i, 6),
        .base = txt_col(r, i, 7),
        .winner = txt_col(r, i, 8),
        .event_id = txt_col(r, i, 9),
        .nowcerts_at = dbl_col(r, i, 10),
        .ghl_at = dbl_col(r, i, 11),
        .at = dbl_col(r, i, 12),
    };
    if (cb(ud, &c))
      break;
  }
  PQclear(r);
  return 0;
}

static int pg_change_list(struct store *base_, const struct store_sync_filter *f,
                          int (*cb)(void *ud, const struct store_change *c), void *ud) {
  PGresult *r = sync_list((struct pg *)base_, "changes",
                          "id, kind, nowcerts_id, ghl_id, field, side, "
                          "old_value, new_value, action, event_id, at",
                          f, "change_list");
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    struct store_change c = {
        .id = atoll(PQgetvalue(r, i, 0)),
        .kind = txt_col(r, i, 1),
        .nowcerts_id = txt_col(r, i, 2),
        .ghl_id = txt_col(r, i, 3),
        .field = txt_col(r, i, 4),
        .side = txt_col(r, i, 5),
        .old_value = txt_col(r, i, 6),
        .new_value = txt_col(r, i, 7),
        .action = txt_col(r, i, 8),
        .event_id = txt_col(r, i, 9),
        .at = dbl_col(r, i, 10),
    };
    if (cb(ud, &c))
      break;
  }
  PQclear(r);
  return 0;
}

static int pg_kv_put(struct store *base_, const char *key, const char *value) {
  if (!key)
    return fail_arg("kv_put", "missing key");
  struct prm p = {0};
  p_text(&p, key);
  if (!value)
    return run((struct pg *)base_, "DELETE FROM kv WHERE key = $1", &p, "kv_put", NULL);
  p_text(&p, value);
  return run((struct pg *)base_,
             "INSERT INTO kv (key, value) VALUES ($1, $2)"
             " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
             &p, "kv_put", NULL);
}

static char *pg_kv_get(struct store *base_, const char *key) {
  if (!key)
    return NULL;
  struct prm p = {0};
  p_text(&p, key);
  return lookup((struct pg *)base_, "SELECT value FROM kv WHERE key = $1", &p, "kv_get");
}

/* ---- faults, leases, upkeep --------------------------------------------- */

/* SQLite's busy timeout is PostgreSQL's lock_timeout: how long a statement
 * waits for a row lock another node holds (0: see PG_NO_WAIT_LOCK_MS). Set
 * between transactions, and again after a reconnect. */
static void pg_set_busy_timeout(struct store *base_, int ms) {
  struct pg *s = (struct pg *)base_;
  s->lock_ms = ms;
  /* A SET inside a transaction would be undone by its ROLLBACK. */
  if (in_txn(s))
    s->lock_pending = true;
  else
    apply_lock_timeout(s);
}

static enum store_fault pg_last_fault(struct store *base_) { return ((struct pg *)base_)->fault; }

static void pg_clear_fault(struct store *base_) { ((struct pg *)base_)->fault = STORE_FAULT_NONE; }

static long long pg_total_changes(struct store *base_) { return ((struct pg *)base_)->changes; }

static int pg_running_list(struct store *base_,
                           int (*cb)(void *ud, const char *id, const char *owner,
                                     double updated_at),
                           void *ud) {
  struct pg *s = (struct pg *)base_;
  PGresult *r =
      q(s, "SELECT id, owner, updated_at FROM events WHERE status = 1", NULL, "running_list");
  if (!r)
    return -1;
  /* The rows are all here before the callback runs, so it may run
   * statements of its own (lease look-ups). */
  for (int i = 0; i < PQntuples(r); i++)
    if (cb(ud, PQgetvalue(r, i, 0), txt_col(r, i, 1), dbl_col(r, i, 2)))
      break;
  PQclear(r);
  return 0;
}

static int pg_event_forget(struct store *base_, const char *id) {
  struct pg *s = (struct pg *)base_;
  if (!id)
    return fail_arg("event_forget", "missing event id");
  struct prm p = {0};
  p_text(&p, id);
  int n = move_rows(s,
                    "DELETE FROM events WHERE id = $1 AND status IN (0, 1) AND attempts <= 1"
                    " RETURNING status",
                    &p, -1, "event_forget");
  return n < 0 ? -1 : n > 0;
}

/* PostgreSQL checkpoints itself: there is no WAL of ours to fold back. */
static int pg_set_autocheckpoint(struct store *base_, int pages) {
  (void)base_;
  (void)pages;
  return 0;
}

static int pg_checkpoint(struct store *base_, int *wal_pages, int *copied) {
  (void)base_;
  if (wal_pages)
    *wal_pages = 0;
  if (copied)
    *copied = 0;
  return 0;
}

static int pg_retention_batch(struct store *base_, double cutoff, int batch, int *deleted) {
  struct pg *s = (struct pg *)base_;
  *deleted = 0;
  bool own;
  if (op_begin(s, &own) != 0)
    return -1;
  struct prm p = {0};
  p_dbl(&p, cutoff);
  p_int(&p, batch);
  int n = move_rows(s,
                    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at <"
                    " $1::double precision AND status = 2 LIMIT $2::integer FOR UPDATE SKIP "
                    "LOCKED)"
                    " RETURNING status",
                    &p, -1, "retention");
  bool ok = n >= 0;
  long nc = 0;
  static const char *const sql[] = {
      "DELETE FROM conflicts WHERE id IN (SELECT id FROM conflicts WHERE at < "
      "$1::double precision"
      " LIMIT $2::integer)",
      "DELETE FROM changes WHERE id IN (SELECT id FROM changes WHERE at < "
      "$1::double precision"
      " LIMIT $2::integer)",
  };
  for (size_t i = 0; ok && i < sizeof sql / sizeof *sql; i++) {
    struct prm pc = {0};
    p_dbl(&pc, cutoff);
    p_int(&pc, batch);
    long k = 0;
    ok = run(s, sql[i], &pc, "retention of conflicts and changes", &k) == 0;
    nc += k;
  }
  if (op_end(s, own, ok) != 0)
    return -1;
  *deleted = n + (int)nc;
  return 0;
}

/* ---- what the /ui page reads -------------------------------------------- */

static int pg_reload_add(struct store *base_, double at, bool ok, const char *version,
                         const char *message) {
  struct prm p = {0};
  p_dbl(&p, at);
  p_int(&p, ok ? 1 : 0);
  p_text(&p, version ? version : "");
  p_text(&p, message ? message : "");
  return run((struct pg *)base_,
             "INSERT INTO reloads (at, ok, version, message) VALUES "
             "($1::double precision,"
             " $2::integer, $3, $4)",
             &p, "reload_add", NULL);
}

static int pg_reload_list(struct store *base_, int limit,
                          int (*cb)(void *ud, const struct store_reload *r), void *ud) {
  struct pg *s = (struct pg *)base_;
  struct prm p = {0};
  if (limit > 0)
    p_int(&p, limit);
  else
    p_null(&p);
  PGresult *r = q(s,
                  "SELECT at, ok, version, message FROM reloads ORDER BY seq DESC"
                  " LIMIT $1::integer",
                  &p, "reload_list");
  p_free(&p);
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++) {
    struct store_reload rl = {.at = dbl_col(r, i, 0),
                              .ok = int_col(r, i, 1) != 0,
                              .version = txt_col(r, i, 2),
                              .message = txt_col(r, i, 3)};
    if (cb(ud, &rl))
      break;
  }
  PQclear(r);
  return 0;
}

static int pg_event_count_since(struct store *base_, double since, long *n) {
  struct pg *s = (struct pg *)base_;
  *n = 0;
  struct prm p = {0};
  p_dbl(&p, since);
  PGresult *r = q(s, "SELECT COUNT(*) FROM events WHERE created_at >= $1::double precision", &p,
                  "event_count_since");
  p_free(&p);
  if (!r)
    return -1;
  *n = PQntuples(r) ? atol(PQgetvalue(r, 0, 0)) : 0;
  PQclear(r);
  return 0;
}

/* A term's range: [term, term || U+10FFFF), with the C collation of the
 * column (bytes, as in SQLite). */
#define TERM_TOP "chr(1114111)"

static int pg_event_search(struct store *base_, const struct store_event_filter *f, int limit,
                           int (*cb)(void *ud, const struct store_event *e), void *ud) {
  struct pg *s = (struct pg *)base_;
  const char *what = "event_search";
  int status = -1;
  if (f->status && (status = store_status_parse(f->status)) < 0)
    return fail_arg(what, "unknown status");
  char words[STORE_TERMS_MAX][STORE_SEARCH_MAX + 1];
  int nwords = store_person_words(f->person, words);
  struct prm p = {0};
  struct buf q_;
  buf_init(&q_, 0);
  buf_puts(&q_, "SELECT " EV_COLS " FROM events");
  if (nwords) {
    p_text(&p, words[0]);
    buf_printf(&q_,
               " JOIN (SELECT DISTINCT seq FROM event_people WHERE term "
               ">= $%d::text AND"
               " term < $%d::text || " TERM_TOP ") AS p ON p.seq = events.seq",
               p.n, p.n);
  }
  buf_puts(&q_, " WHERE true");
  char phrase[STORE_TERMS_MAX * (STORE_SEARCH_MAX + 2)] = "";
  if (nwords > 1) {
    for (int i = 0; i < nwords; i++)
      snprintf(phrase + strlen(phrase), sizeof phrase - strlen(phrase), "%s%s", i ? " " : "",
               words[i]);
    p_text(&p, phrase);
    buf_printf(&q_,
               " AND (EXISTS (SELECT 1 FROM event_people AS ph WHERE "
               "ph.seq = events.seq"
               " AND ph.term >= $%d::text AND ph.term < $%d::text || " TERM_TOP ") OR (true",
               p.n, p.n);
    for (int i = 1; i < nwords; i++) {
      p_text(&p, words[i]);
      buf_printf(&q_,
                 " AND EXISTS (SELECT 1 FROM event_people AS q WHERE "
                 "q.seq = events.seq"
                 " AND q.term >= $%d::text AND q.term < $%d::text || " TERM_TOP ")",
                 p.n, p.n);
    }
    buf_puts(&q_, "))");
  }
  if (status >= 0) {
    p_int(&p, status);
    buf_printf(&q_, " AND status = $%d::integer", p.n);
  }
  if (f->source) {
    p_text(&p, f->source);
    buf_printf(&q_, " AND source = $%d", p.n);
  }
  if (f->type) {
    p_text(&p, f->type);
    buf_printf(&q_, " AND type = $%d", p.n);
  }
  if (f->before_id) {
    p_dbl(&p, f->before_at);
    p_text(&p, f->before_id);
    buf_printf(&q_,
               " AND (created_at < $%d::double precision OR (created_at = "
               "$%d::double precision"
               " AND id < $%d::text))",
               p.n - 1, p.n - 1, p.n);
  }
  if (limit > 0)
    p_int(&p, limit);
  else
    p_null(&p);
  buf_printf(&q_, " ORDER BY created_at DESC, id DESC LIMIT $%d::integer", p.n);
  if (!q_.p) {
    buf_free(&q_);
    p_free(&p);
    return fail_arg(what, "out of memory");
  }
  PGresult *r = q(s, q_.p, &p, what);
  buf_free(&q_);
  p_free(&p);
  return walk_events(r, cb, ud, what);
}

static int pg_event_people(struct store *base_, const char *event_id,
                           int (*cb)(void *ud, const char *term), void *ud) {
  struct pg *s = (struct pg *)base_;
  struct prm p = {0};
  p_text(&p, event_id);
  PGresult *r =
      q(s, "SELECT term FROM event_people WHERE seq = (SELECT seq FROM events WHERE id = $1)"
           " ORDER BY term", &p, "event_people");
  p_free(&p);
  if (!r)
    return -1;
  for (int i = 0; i < PQntuples(r); i++)
    if (cb(ud, PQgetvalue(r, i, 0)))
      break;
  PQclear(r);
  return 0;
}

static int pg_kv_swap(struct store *base_, const char *key, const char *old, const char *value) {
  struct pg *s = (struct pg *)base_;
  if (!key || !value)
    return fail_arg("kv_swap", "missing key or value");
  struct prm p = {0};
  p_text(&p, key);
  p_text(&p, value);
  long n = 0;
  int rc;
  if (!old) {
    rc = run(s,
             "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO "
             "NOTHING",
             &p, "kv_swap", &n);
  } else {
    p_text(&p, old);
    rc = run(s, "UPDATE kv SET value = $2 WHERE key = $1 AND value = $3", &p, "kv_swap", &n);
  }
  return rc != 0 ? -1 : n > 0;
}

static int pg_rate_take(struct store *base_, const char *key, int limit, double window, double now,
                        double *wait) {
  struct pg *s = (struct pg *)base_;
  struct prm p = {0};
  p_text(&p, key);
  p_int(&p, limit);
  p_dbl(&p, window);
  p_dbl(&p, now);
  PGresult *r = q(s,
                  "SELECT ncghl_rate_take($1, $2::integer, $3::double precision,"
                  " $4::double precision)",
                  &p, "rate_take");
  p_free(&p);
  if (!r)
    return -1;
  *wait = PQntuples(r) ? dbl_col(r, 0, 0) : 0;
  PQclear(r);
  return 0;
}

/* Keys as PostgreSQL advisory locks of the session (two int4 keys: the
 * schema, so tenants never meet, and the key), which outlive the batch
 * transaction they may be taken in and go with the connection when a node
 * dies. Two keys that hash alike only wait for each other. */
static int32_t lock_hash(const char *a, const char *b) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *t = a; *t; t++)
    h = (h ^ (unsigned char)*t) * 16777619u;
  h = (h ^ 0xffu) * 16777619u;
  for (const char *t = b; t && *t; t++)
    h = (h ^ (unsigned char)*t) * 16777619u;
  return (int32_t)h;
}

/* "{h1,h2,...}", an int4[] literal of the keys' hashes. */
static char *lock_array(const char *const *keys, int n) {
  size_t cap = (size_t)n * 12 + 3;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  size_t len = 0;
  out[len++] = '{';
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(out + len, cap - len, "%s%d", i ? "," : "",
                            (int)lock_hash("k", keys[i]));
  out[len++] = '}';
  out[len] = 0;
  return out;
}

/* The keys live on a session of their own: the service's connection runs
 * the group commit's transactions, and an unlock sent while one of them has
 * failed would be refused, leaving the key held for good. */
static PGconn *keys_conn(struct pg *s) {
  if (s->keys_conn && PQstatus(s->keys_conn) == CONNECTION_OK)
    return s->keys_conn;
  if (s->keys_conn) {
    log_warn("store: the key session to %s was lost (its keys with it); connecting again",
             s->label);
    PQfinish(s->keys_conn);
  }
  s->keys_conn = PQconnectdb(s->conninfo);
  if (PQstatus(s->keys_conn) != CONNECTION_OK) {
    log_error("store: cannot open the key session to %s: %s", s->label,
              PQerrorMessage(s->keys_conn));
    PQfinish(s->keys_conn);
    s->keys_conn = NULL;
    return NULL;
  }
  PQsetNoticeProcessor(s->keys_conn, on_notice, NULL);
  return s->keys_conn;
}

/* Runs sql with $1 the schema's lock class and $2 the int4[] literal arr.
 * With `again`, a session found lost by this very query (a database restart
 * ends it, and libpq only learns so on its next use) is opened anew and the
 * query sent once more: taking keys needs nothing from the old session. */
static PGresult *keys_sql(struct pg *s, const char *sql, const char *arr, const char *what,
                          bool again) {
  char cls[16];
  snprintf(cls, sizeof cls, "%d", (int)lock_hash("ncghl.keys", s->schema));
  const char *v[2] = {cls, arr};
  for (int tries = again ? 2 : 1; tries > 0; tries--) {
    PGconn *c = arr ? keys_conn(s) : NULL;
    if (!c)
      return NULL;
    PGresult *r = PQexecParams(c, sql, 2, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
      return r;
    PQclear(r);
    if (tries > 1 && PQstatus(c) != CONNECTION_OK)
      continue;
    log_error("store: %s: %s", what, PQerrorMessage(c));
  }
  return NULL;
}

static const char unlock_sql[] =
    "SELECT pg_advisory_unlock($1::int4, k) FROM unnest($2::int4[]) AS k";

static void pg_keys_unlock(struct store *base_, const char *const *keys, int n) {
  char *arr = lock_array(keys, n);
  /* Not again on a new session: the keys went with the old one. */
  PGresult *r = keys_sql((struct pg *)base_, unlock_sql, arr, "keys_unlock", false);
  PQclear(r);
  free(arr);
}

static int pg_keys_lock(struct store *base_, const char *const *keys, int n) {
  struct pg *s = (struct pg *)base_;
  char *arr = lock_array(keys, n);
  PGresult *r = keys_sql(s,
                         "SELECT k, pg_try_advisory_lock($1::int4, k)"
                         " FROM unnest($2::int4[]) AS k",
                         arr, "keys_lock", true);
  free(arr);
  if (!r)
    return -1;
  int rows = PQntuples(r);
  struct buf taken;
  buf_init(&taken, 0);
  buf_putc(&taken, '{');
  int got = 0;
  for (int i = 0; i < rows; i++)
    if (PQgetvalue(r, i, 1)[0] == 't') {
      if (got++)
        buf_putc(&taken, ',');
      buf_puts(&taken, PQgetvalue(r, i, 0));
    }
  buf_putc(&taken, '}');
  PQclear(r);
  int rc = 1;
  if (got != n || rows != n) {
    /* All or none: what was taken goes back, so two nodes never each hold
     * half of what both want. */
    rc = 0;
    if (got > 0) {
      r = keys_sql(s, unlock_sql, taken.p, "keys_lock", false);
      rc = r ? 0 : -1;
      PQclear(r);
    }
  }
  buf_free(&taken);
  return rc;
}

/* No WAL file of ours: a COMMIT with synchronous_commit on is durable. */
static const char *pg_wal_file(struct store *base_) {
  (void)base_;
  return NULL;
}

static const struct store_ops pg_ops = {
    .close = pg_close,
    .begin = pg_begin,
    .set_full_sync = pg_set_full_sync,
    .path = pg_path,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .in_txn = pg_in_txn,
    .writable = pg_writable,
    .schema_version = pg_schema_version,
    .event_put = pg_event_put,
    .event_get = pg_event_get,
    .event_claim = pg_event_claim,
    .claim_due = pg_claim_due,
    .event_finish = pg_event_finish,
    .event_requeue = pg_event_requeue,
    .recover_running = pg_recover_running,
    .next_due = pg_next_due,
    .event_list = pg_event_list,
    .count_by_status = pg_count_by_status,
    .attempt_add_io = pg_attempt_add_io,
    .attempt_list = pg_attempt_list,
    .link_put = pg_link_put,
    .link_ghl = pg_link_ghl,
    .link_nowcerts = pg_link_nowcerts,
    .link_delete = pg_link_delete,
    .snapshot_put = pg_snapshot_put,
    .snapshot_get = pg_snapshot_get,
    .conflict_add = pg_conflict_add,
    .conflict_count = pg_conflict_count,
    .change_add = pg_change_add,
    .conflict_list = pg_conflict_list,
    .change_list = pg_change_list,
    .kv_put = pg_kv_put,
    .kv_get = pg_kv_get,
    .set_busy_timeout = pg_set_busy_timeout,
    .last_fault = pg_last_fault,
    .clear_fault = pg_clear_fault,
    .total_changes = pg_total_changes,
    .running_list = pg_running_list,
    .event_release = pg_event_release,
    .event_forget = pg_event_forget,
    .set_autocheckpoint = pg_set_autocheckpoint,
    .checkpoint = pg_checkpoint,
    .retention_batch = pg_retention_batch,
    .reload_add = pg_reload_add,
    .reload_list = pg_reload_list,
    .event_count_since = pg_event_count_since,
    .event_search = pg_event_search,
    .event_people = pg_event_people,
    .wal_file = pg_wal_file,
    .rate_take = pg_rate_take,
    .kv_swap = pg_kv_swap,
    .keys_lock = pg_keys_lock,
    .keys_unlock = pg_keys_unlock,
};
