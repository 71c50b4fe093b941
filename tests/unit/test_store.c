/* store: every test runs on a real SQLite file in a fresh temp directory, so
 * WAL, migrations, locking and persistence are the ones production gets.
 * With NCGHL_TEST_PG_URL set (ctest's unit_pg/test_store, which starts a
 * throwaway PostgreSQL server through tests/pgcluster.py) the same tests,
 * less the ones about SQLite's file, run on PostgreSQL instead, each in a
 * fresh schema of its own, with the PostgreSQL-only ones (schemas, SKIP
 * LOCKED between two connections, leases of other nodes, reconnects). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <dirent.h>
#include <grp.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "buf.h"
#include "log.h"
#include "store.h"

/* The PostgreSQL database the tests run on, or NULL for SQLite files. */
static const char *pg_url;
static int pg_schemas;

struct fx {
  char dir[64];
  char path[512];   /* a SQLite file, or a URL naming the test's schema */
  char schema[64];  /* PostgreSQL: that schema */
  struct store *s;
};

static void rm_rf(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0)
    return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    if (d) {
      struct dirent *de;
      while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
          continue;
        char sub[512];
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        rm_rf(sub);
      }
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->dir, sizeof f->dir, "/tmp/ncghl-store-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  /* Two levels that do not exist yet: store_open must create them. */
  snprintf(f->path, sizeof f->path, "%s/data/sub/ncghl.db", f->dir);
  if (pg_url) {
    snprintf(f->schema, sizeof f->schema, "ut_%ld_%d", (long)getpid(), ++pg_schemas);
    snprintf(f->path, sizeof f->path, "%s%cncghl_schema=%s", pg_url,
             strchr(pg_url, '?') ? '&' : '?', f->schema);
  }
  char err[256];
  f->s = store_open(f->path, err, sizeof err);
  if (!f->s)
    fail_msg("store_open: %s", err);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  store_close(f->s);
  chmod(f->path, 0600);
  rm_rf(f->dir);
  free(f);
  return 0;
}

static void reopen(struct fx *f) {
  store_close(f->s);
  char err[256];
  f->s = store_open(f->path, err, sizeof err);
  if (!f->s)
    fail_msg("store_open: %s", err);
}

/* A connection of the test's own, beside the store's: libpq wants the URL
 * without ncghl's parameter. */
static PGconn *pg_side(void) {
  PGconn *c = PQconnectdb(pg_url);
  if (PQstatus(c) != CONNECTION_OK)
    fail_msg("test connection: %s", PQerrorMessage(c));
  return c;
}

static void pg_exec(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    fail_msg("%s: %s", sql, PQerrorMessage(c));
  PQclear(r);
}

static long pg_long(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
    fail_msg("%s: %s", sql, PQerrorMessage(c));
  long v = atol(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

static void put(struct store *s, const char *id, double now, enum store_put want) {
  enum store_put r;
  enum ev_status ex;
  assert_int_equal(store_event_put(s, id, "nowcerts", "INSURED_INSERT", "{}", 2, EV_PENDING, now,
                                   86400, &r, &ex),
                   0);
  assert_int_equal(r, want);
}

static enum ev_status status_of(struct store *s, const char *id) {
  struct store_event e;
  assert_int_equal(store_event_get(s, id, &e), 0);
  enum ev_status st = e.status;
  store_event_free(&e);
  return st;
}

static int count_attempts_cb(void *ud, const struct store_attempt *a) {
  (void)a;
  (*(int *)ud)++;
  return 0;
}

/* ---- status names ---- */

static void test_status_names(void **state) {
  (void)state;
  const char *names[] = {"pending", "running", "done", "retry_wait", "dead"};
  for (int i = 0; i < EV_STATUS_COUNT; i++) {
    assert_string_equal(store_status_name((enum ev_status)i), names[i]);
    assert_int_equal(store_status_parse(names[i]), i);
  }
  assert_int_equal(store_status_parse("bogus"), -1);
  assert_int_equal(store_status_parse(NULL), -1);
  assert_int_equal(store_status_parse("DONE"), -1);
}

/* ---- open and migrations ---- */

/* The indexes on events, by name, sorted and comma-separated: the ones
 * its queries use (issue 10: every index is paid for by every accepted
 * event and every change of state). */
/* The first column of the one row sql answers, as text. */
static const char *sql_value(sqlite3 *db, const char *sql, char *out, size_t cap) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  const unsigned char *v = sqlite3_column_text(st, 0);
  snprintf(out, cap, "%s", v ? (const char *)v : "");
  sqlite3_finalize(st);
  return out;
}

static void events_indexes(const char *path, char *out, size_t cap) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  sql_value(db,
            "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master WHERE type ="
            " 'index' AND tbl_name = 'events' ORDER BY name)",
            out, cap);
  sqlite3_close(db);
}

static void test_open_creates_dirs_and_migrates_once(void **state) {
  struct fx *f = *state;
  struct stat sb;
  assert_int_equal(stat(f->path, &sb), 0);
  int v = store_schema_version(f->s);
  assert_true(v >= 1);

  reopen(f);
  assert_int_equal(store_schema_version(f->s), v);
  reopen(f);
  assert_int_equal(store_schema_version(f->s), v);

  /* Seen from outside: WAL is persistent in the file, and the version the
   * store reports is the file's user_version. */
  sqlite3 *db;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  char got[64];
  assert_string_equal(sql_value(db, "PRAGMA journal_mode", got, sizeof got), "wal");
  assert_int_equal(atoi(sql_value(db, "PRAGMA user_version", got, sizeof got)), v);
  assert_string_equal(sql_value(db,
                                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name"
                                " IN ('events','attempts','links','kv','snapshots','conflicts',"
                                "'changes','rate_stamps')",
                                got, sizeof got),
                      "8");
  sqlite3_close(db);
  /* The id's unique index, the lists by time and by state, and retry_wait
   * rows by when they are due; no index by type or source. */
  char idx[512];
  events_indexes(f->path, idx, sizeof idx);
  assert_string_equal(idx, "events_created,events_retry_next,events_status_created,"
                           "sqlite_autoindex_events_1");
}

static void test_open_refuses_newer_schema(void **state) {
  struct fx *f = *state;
  store_close(f->s);
  f->s = NULL;
  sqlite3 *db;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 999", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  char err[256] = "";
  assert_null(store_open(f->path, err, sizeof err));
  assert_non_null(strstr(err, "999"));
}

static void test_open_fails_on_unmakeable_dir(void **state) {
  struct fx *f = *state;
  /* A regular file where a directory should be. */
  char file[256], path[320];
  snprintf(file, sizeof file, "%s/plainfile", f->dir);
  FILE *fp = fopen(file, "w");
  assert_non_null(fp);
  fclose(fp);
  snprintf(path, sizeof path, "%s/sub/x.db", file);
  char err[256] = "";
  assert_null(store_open(path, err, sizeof err));
  assert_true(err[0] != '\0');
  assert_null(store_open("", err, sizeof err));
}

/* ---- intake ---- */

static void test_put_new_then_duplicate(void **state) {
  struct fx *f = *state;
  enum store_put r;
  enum ev_status ex;
  const char body[] = "{\"a\":1}\0tail"; /* raw bytes survive, NUL included */
  size_t blen = sizeof body - 1;
  assert_int_equal(store_event_put(f->s, "nowcerts_aa", "nowcerts", "INSURED_INSERT", body, blen,
                                   EV_PENDING, 1000, 86400, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_NEW);

  struct store_event e;
  assert_int_equal(store_event_get(f->s, "nowcerts_aa", &e), 0);
  assert_string_equal(e.id, "nowcerts_aa");
  assert_string_equal(e.source, "nowcerts");
  assert_string_equal(e.type, "INSURED_INSERT");
  assert_int_equal(e.payload_len, blen);
  assert_memory_equal(e.payload, body, blen);
  assert_int_equal(e.payload[blen], '\0');
  assert_int_equal(e.status, EV_PENDING);
  assert_int_equal(e.attempts, 0);
  assert_null(e.last_error);
  assert_null(e.result);
  assert_true(e.created_at == 1000 && e.updated_at == 1000 && e.next_at == 0);
  store_event_free(&e);
  assert_null(e.type);
  assert_null(e.payload);

  assert_int_equal(store_event_put(f->s, "nowcerts_aa", "nowcerts", "INSURED_INSERT", body, blen,
                                   EV_PENDING, 1010, 86400, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
  assert_int_equal(ex, EV_PENDING);

  assert_int_equal(store_event_claim(f->s, "nowcerts_aa", 1020), 1);
  assert_int_equal(store_event_put(f->s, "nowcerts_aa", "nowcerts", "X", "{}", 2, EV_PENDING, 1030,
                                   86400, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
  assert_int_equal(ex, EV_RUNNING);

  assert_int_equal(store_event_finish(f->s, "nowcerts_aa", EV_DONE, 0, NULL, "{}", 1040), 0);
  assert_int_equal(store_event_put(f->s, "nowcerts_aa", "nowcerts", "X", "{}", 2, EV_PENDING, 1050,
                                   86400, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
  assert_int_equal(ex, EV_DONE);

  /* The duplicate changed nothing. */
  assert_int_equal(store_event_get(f->s, "nowcerts_aa", &e), 0);
  assert_string_equal(e.type, "INSURED_INSERT");
  assert_true(e.created_at == 1000);
  assert_int_equal(e.attempts, 1);
  store_event_free(&e);

  assert_int_equal(store_event_get(f->s, "nope", &e), 1);
}

static void test_put_null_optionals_and_bad_args(void **state) {
  struct fx *f = *state;
  enum store_put r;
  assert_int_equal(
      store_event_put(f->s, "m_1", "manual", NULL, NULL, 0, EV_PENDING, 5, 100, &r, NULL), 0);
  assert_int_equal(r, STORE_PUT_NEW);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "m_1", &e), 0);
  assert_string_equal(e.type, "");
  assert_int_equal(e.payload_len, 0);
  assert_string_equal(e.payload, "");
  store_event_free(&e);

  char longid[EVENT_ID_MAX + 8];
  memset(longid, 'x', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  assert_int_equal(store_event_put(f->s, longid, "ghl", "t", "{}", 2, EV_PENDING, 1, 1, &r, NULL),
                   -1);
  assert_int_equal(store_event_put(f->s, NULL, "ghl", "t", "{}", 2, EV_PENDING, 1, 1, &r, NULL),
                   -1);
  assert_int_equal(store_event_put(f->s, "g_1", NULL, "t", "{}", 2, EV_PENDING, 1, 1, &r, NULL),
                   -1);
  assert_int_equal(
      store_event_put(f->s, "g_1", "a-source-name-far-too-long", "t", "{}", 2, EV_PENDING, 1, 1,
                      &r, NULL),
      -1);
  assert_int_equal(store_event_put(f->s, "g_1", "ghl", "t", "{}", 2, EV_DONE, 1, 1, &r, NULL), -1);
  assert_int_equal(store_event_get(f->s, "g_1", &e), 1);
}

static void test_put_dead_is_requeued(void **state) {
  struct fx *f = *state;
  put(f->s, "ghl_d", 100, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "ghl_d", 110), 1);
  assert_int_equal(store_attempt_add(f->s, "ghl_d", 1, "ghl", "POST", "https://x/contacts/", 400,
                                     "bad request", 12.5, 111),
                   0);
  assert_int_equal(store_event_finish(f->s, "ghl_d", EV_DEAD, 0, "HTTP 400", NULL, 112), 0);

  enum store_put r;
  enum ev_status ex;
  assert_int_equal(store_event_put(f->s, "ghl_d", "nowcerts", "INSURED_INSERT", "{}", 2,
                                   EV_PENDING, 200, 86400, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_REQUEUED);
  assert_int_equal(ex, EV_DEAD);

  struct store_event e;
  assert_int_equal(store_event_get(f->s, "ghl_d", &e), 0);
  assert_int_equal(e.status, EV_PENDING);
  assert_int_equal(e.attempts, 1);
  assert_true(e.created_at == 100);
  assert_true(e.updated_at == 200);
  assert_string_equal(e.last_error, "HTTP 400"); /* kept until the next run ends */
  store_event_free(&e);

  int n = 0;
  assert_int_equal(store_attempt_list(f->s, "ghl_d", count_attempts_cb, &n), 0);
  assert_int_equal(n, 1);
}

static void test_put_dead_keeps_history_and_can_start_running(void **state) {
  struct fx *f = *state;
  put(f->s, "ghl_h", 100, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "ghl_h", 110), 1);
  assert_int_equal(
      store_attempt_add(f->s, "ghl_h", 1, "ghl", "PUT", "https://x/c/1", 0, "timeout", 30000, 111),
      0);
  assert_int_equal(store_event_finish(f->s, "ghl_h", EV_DEAD, 0, "timeout", NULL, 112), 0);

  enum store_put r;
  assert_int_equal(store_event_put(f->s, "ghl_h", "nowcerts", "t", "{}", 2, EV_RUNNING, 300, 86400,
                                   &r, NULL),
                   0);
  assert_int_equal(r, STORE_PUT_REQUEUED);
  assert_int_equal(status_of(f->s, "ghl_h"), EV_RUNNING);
  /* The put that starts it again counts its second run. */
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "ghl_h", &e), 0);
  assert_int_equal(e.attempts, 2);
  store_event_free(&e);
  int n = 0;
  assert_int_equal(store_attempt_list(f->s, "ghl_h", count_attempts_cb, &n), 0);
  assert_int_equal(n, 1);
}

static void test_put_ttl_expiry_is_new(void **state) {
  struct fx *f = *state;
  enum store_put r;
  enum ev_status ex;
  assert_int_equal(store_event_put(f->s, "nc_t", "nowcerts", "OLD", "{\"v\":1}", 7, EV_PENDING,
                                   1000, 100, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "nc_t", 1001), 1);
  assert_int_equal(store_attempt_add(f->s, "nc_t", 1, "ghl", "POST", "u", 200, NULL, 1, 1002), 0);
  assert_int_equal(store_event_finish(f->s, "nc_t", EV_DONE, 0, NULL, "{\"ok\":true}", 1003), 0);

  /* now - created_at == ttl is still inside the window. */
  assert_int_equal(store_event_put(f->s, "nc_t", "nowcerts", "NEW", "{ \"v\": 1 }", 10, EV_PENDING,
                                   1100, 100, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
  assert_int_equal(ex, EV_DONE);

  assert_int_equal(store_event_put(f->s, "nc_t", "nowcerts", "NEW", "{ \"v\": 1 }", 10, EV_PENDING,
                                   1100.5, 100, &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_NEW);

  struct store_event e;
  assert_int_equal(store_event_get(f->s, "nc_t", &e), 0);
  assert_int_equal(e.status, EV_PENDING);
  assert_true(e.created_at == 1100.5);
  assert_string_equal(e.type, "NEW");
  assert_int_equal(e.payload_len, 10);
  assert_null(e.result);
  assert_int_equal(e.attempts, 1); /* history kept */
  store_event_free(&e);
  int n = 0;
  assert_int_equal(store_attempt_list(f->s, "nc_t", count_attempts_cb, &n), 0);
  assert_int_equal(n, 1);

  /* The TTL counts from the re-acceptance. */
  assert_int_equal(store_event_put(f->s, "nc_t", "nowcerts", "NEW", "{}", 2, EV_PENDING, 1150, 100,
                                   &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
}

static void test_put_ttl_never_resets_running_and_zero_ttl_never_expires(void **state) {
  struct fx *f = *state;
  enum store_put r;
  enum ev_status ex;
  put(f->s, "nc_r", 1000, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "nc_r", 1001), 1);
  assert_int_equal(store_event_put(f->s, "nc_r", "nowcerts", "t", "{}", 2, EV_PENDING, 999999, 100,
                                   &r, &ex),
                   0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
  assert_int_equal(ex, EV_RUNNING);
  assert_int_equal(status_of(f->s, "nc_r"), EV_RUNNING);

  put(f->s, "nc_z", 1000, STORE_PUT_NEW);
  assert_int_equal(
      store_event_put(f->s, "nc_z", "nowcerts", "t", "{}", 2, EV_PENDING, 1e9, 0, &r, &ex), 0);
  assert_int_equal(r, STORE_PUT_DUPLICATE);
}

/* ---- claiming and finishing ---- */

static void test_claim_started_and_finish(void **state) {
  struct fx *f = *state;
  put(f->s, "e1", 10, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "e1", 11), 1);
  assert_int_equal(store_event_claim(f->s, "e1", 12), 0); /* already running */
  assert_int_equal(store_event_claim(f->s, "missing", 12), 0);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "e1", &e), 0);
  assert_int_equal(e.status, EV_RUNNING);
  assert_int_equal(e.attempts, 1);
  assert_true(e.updated_at == 11);
  store_event_free(&e);

  assert_int_equal(store_event_finish(f->s, "e1", EV_RETRY_WAIT, 500, "HTTP 503", NULL, 13), 0);
  assert_int_equal(store_event_get(f->s, "e1", &e), 0);
  assert_int_equal(e.status, EV_RETRY_WAIT);
  assert_true(e.next_at == 500);
  assert_string_equal(e.last_error, "HTTP 503");
  assert_null(e.result);
  store_event_free(&e);

  /* retry_wait can be claimed explicitly (replay), whatever next_at says. */
  assert_int_equal(store_event_claim(f->s, "e1", 14), 1);
  assert_int_equal(
      store_event_finish(f->s, "e1", EV_DONE, 999, NULL, "{\"contact_id\":\"c1\"}", 15), 0);
  assert_int_equal(store_event_get(f->s, "e1", &e), 0);
  assert_int_equal(e.status, EV_DONE);
  assert_int_equal(e.attempts, 2);
  assert_null(e.last_error);
  assert_string_equal(e.result, "{\"contact_id\":\"c1\"}");
  assert_true(e.next_at == 0); /* next_at only means something in retry_wait */
  store_event_free(&e);
  assert_int_equal(store_event_claim(f->s, "e1", 16), 0); /* done */

  assert_int_equal(store_event_finish(f->s, "e1", EV_PENDING, 0, NULL, NULL, 17), -1);
  assert_int_equal(store_event_finish(f->s, "missing", EV_DONE, 0, NULL, NULL, 17), -1);

  /* An event put as running has its first run counted by the put itself
   * (one write per accepted event); put as pending, none yet. */
  enum store_put r;
  assert_int_equal(
      store_event_put(f->s, "e2", "ghl", "t", "{}", 2, EV_RUNNING, 20, 86400, &r, NULL), 0);
  assert_int_equal(r, STORE_PUT_NEW);
  assert_int_equal(store_event_get(f->s, "e2", &e), 0);
  assert_int_equal(e.status, EV_RUNNING);
  assert_int_equal(e.attempts, 1);
  assert_true(e.updated_at == 20);
  store_event_free(&e);
  assert_int_equal(
      store_event_put(f->s, "e3", "ghl", "t", "{}", 2, EV_PENDING, 20, 86400, &r, NULL), 0);
  assert_int_equal(store_event_get(f->s, "e3", &e), 0);
  assert_int_equal(e.attempts, 0);
  store_event_free(&e);
}

/* Claims what is due at `now` and names it: the ids in the order handed
 * back, comma-separated ("" for none). The rows are freed. */
static void claimed_ids(struct store *s, double now, char *ids, size_t cap) {
  struct store_event ev[8];
  int n = -1;
  assert_int_equal(store_claim_due(s, now, 8, ev, &n), 0);
  assert_in_range(n, 0, 8);
  ids[0] = '\0';
  for (int i = 0; i < n; i++) {
    size_t used = strlen(ids), len = strlen(ev[i].id);
    assert_true(used + len + 2 <= cap);
    if (i)
      ids[used++] = ',';
    memcpy(ids + used, ev[i].id, len + 1);
    store_event_free(&ev[i]);
  }
}

static void test_claim_due_order_and_next_at(void **state) {
  struct fx *f = *state;
  /* Inserted out of age order on purpose. */
  put(f->s, "c_new", 40, STORE_PUT_NEW);
  put(f->s, "c_old", 10, STORE_PUT_NEW);
  put(f->s, "c_mid", 20, STORE_PUT_NEW);
  put(f->s, "c_wait_past", 5, STORE_PUT_NEW);
  put(f->s, "c_wait_future", 1, STORE_PUT_NEW);
  put(f->s, "c_done", 0, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "c_wait_past", 50), 1);
  assert_int_equal(store_event_finish(f->s, "c_wait_past", EV_RETRY_WAIT, 90, "e", NULL, 51), 0);
  assert_int_equal(store_event_claim(f->s, "c_wait_future", 50), 1);
  assert_int_equal(store_event_finish(f->s, "c_wait_future", EV_RETRY_WAIT, 200, "e", NULL, 51),
                   0);
  assert_int_equal(store_event_claim(f->s, "c_done", 50), 1);
  assert_int_equal(store_event_finish(f->s, "c_done", EV_DONE, 0, NULL, NULL, 51), 0);
  assert_true(store_next_due(f->s) == 90);

  struct store_event out[8];
  int n = -1;
  /* At 60 the retry_wait rows are not due yet. */
  assert_int_equal(store_claim_due(f->s, 60, 2, out, &n), 0);
  assert_int_equal(n, 2);
  assert_string_equal(out[0].id, "c_old");
  assert_string_equal(out[1].id, "c_mid");
  for (int i = 0; i < n; i++) {
    assert_int_equal(out[i].status, EV_RUNNING);
    assert_int_equal(out[i].attempts, 1);
    assert_true(out[i].updated_at == 60);
    assert_string_equal(out[i].payload, "{}");
    assert_string_equal(out[i].type, "INSURED_INSERT");
    store_event_free(&out[i]);
  }
  assert_int_equal(status_of(f->s, "c_old"), EV_RUNNING);

  assert_int_equal(store_claim_due(f->s, 60, 8, out, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(out[0].id, "c_new");
  store_event_free(&out[0]);
  assert_int_equal(store_claim_due(f->s, 60, 8, out, &n), 0);
  assert_int_equal(n, 0);

  /* next_at <= now is due: exactly at 90 the first one comes. */
  assert_int_equal(store_claim_due(f->s, 90, 8, out, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(out[0].id, "c_wait_past");
  assert_int_equal(out[0].attempts, 2);
  assert_string_equal(out[0].last_error, "e");
  store_event_free(&out[0]);
  assert_true(store_next_due(f->s) == 200);

  assert_int_equal(store_claim_due(f->s, 1000, 8, out, &n), 0);
  assert_int_equal(n, 1);
  assert_string_equal(out[0].id, "c_wait_future");
  store_event_free(&out[0]);
  assert_true(store_next_due(f->s) == 0);

  assert_int_equal(store_claim_due(f->s, 1000, 0, out, &n), 0);
  assert_int_equal(n, 0);

  /* One claim of several rows hands them back oldest first, whatever order
   * they were inserted (and so updated) in. */
  put(f->s, "z_new", 300, STORE_PUT_NEW);
  put(f->s, "z_mid", 200, STORE_PUT_NEW);
  put(f->s, "z_old", 100, STORE_PUT_NEW);
  char ids[256];
  claimed_ids(f->s, 1000, ids, sizeof ids);
  assert_string_equal(ids, "z_old,z_mid,z_new");
}

static void test_claim_due_inside_caller_txn(void **state) {
  struct fx *f = *state;
  put(f->s, "t1", 1, STORE_PUT_NEW);
  assert_int_equal(store_begin(f->s), 0);
  struct store_event out[2];
  int n = 0;
  assert_int_equal(store_claim_due(f->s, 5, 2, out, &n), 0);
  assert_int_equal(n, 1);
  store_event_free(&out[0]);
  assert_true(store_in_txn(f->s));
  assert_int_equal(store_rollback(f->s), 0);
  /* Rolled back with the caller's batch. */
  assert_int_equal(status_of(f->s, "t1"), EV_PENDING);
}

static void test_recover_running_and_requeue(void **state) {
  struct fx *f = *state;
  put(f->s, "r1", 1, STORE_PUT_NEW);
  put(f->s, "r2", 2, STORE_PUT_NEW);
  put(f->s, "r3", 3, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "r1", 5), 1);
  assert_int_equal(store_event_claim(f->s, "r2", 5), 1);
  int n = -1;
  assert_int_equal(store_recover_running(f->s, &n), 0);
  assert_int_equal(n, 2);
  assert_int_equal(status_of(f->s, "r1"), EV_PENDING);
  assert_int_equal(status_of(f->s, "r2"), EV_PENDING);
  assert_int_equal(status_of(f->s, "r3"), EV_PENDING);
  assert_int_equal(store_recover_running(f->s, &n), 0);
  assert_int_equal(n, 0);

  /* requeue: any status but running. */
  assert_int_equal(store_event_claim(f->s, "r1", 6), 1);
  assert_int_equal(store_event_requeue(f->s, "r1", 7), 0);
  assert_int_equal(status_of(f->s, "r1"), EV_RUNNING);
  assert_int_equal(store_event_finish(f->s, "r1", EV_DONE, 0, NULL, NULL, 8), 0);
  assert_int_equal(store_event_requeue(f->s, "r1", 9), 1);
  assert_int_equal(status_of(f->s, "r1"), EV_PENDING);

  assert_int_equal(store_event_claim(f->s, "r2", 10), 1);
  assert_int_equal(store_event_finish(f->s, "r2", EV_RETRY_WAIT, 5000, "x", NULL, 11), 0);
  assert_int_equal(store_event_requeue(f->s, "r2", 12), 1);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "r2", &e), 0);
  assert_int_equal(e.status, EV_PENDING);
  assert_true(e.next_at == 0);
  assert_true(e.updated_at == 12);
  assert_int_equal(e.attempts, 2); /* claimed at 5 and at 10 */
  store_event_free(&e);

  assert_int_equal(store_event_requeue(f->s, "missing", 13), 0);
}

/* ---- listing and counting ---- */

struct seen {
  int n;
  int stop_after;
  char ids[8][EVENT_ID_MAX];
};

static int collect_cb(void *ud, const struct store_event *e) {
  struct seen *sn = ud;
  if (sn->n < 8)
    snprintf(sn->ids[sn->n], EVENT_ID_MAX, "%s", e->id);
  sn->n++;
  return sn->stop_after && sn->n >= sn->stop_after;
}

static void test_list_and_counts(void **state) {
  struct fx *f = *state;
  put(f->s, "l1", 1, STORE_PUT_NEW);
  put(f->s, "l2", 2, STORE_PUT_NEW);
  put(f->s, "l3", 3, STORE_PUT_NEW);
  put(f->s, "l4", 4, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "l1", 5), 1);
  assert_int_equal(store_event_finish(f->s, "l1", EV_DEAD, 0, "boom", NULL, 6), 0);
  assert_int_equal(store_event_claim(f->s, "l3", 5), 1);
  assert_int_equal(store_event_finish(f->s, "l3", EV_DEAD, 0, "boom", NULL, 6), 0);
  assert_int_equal(store_event_claim(f->s, "l4", 5), 1);

  struct seen sn = {0};
  assert_int_equal(store_event_list(f->s, NULL, 0, collect_cb, &sn), 0);
  assert_int_equal(sn.n, 4);
  assert_string_equal(sn.ids[0], "l4");
  assert_string_equal(sn.ids[3], "l1");

  memset(&sn, 0, sizeof sn);
  assert_int_equal(store_event_list(f->s, "dead", 0, collect_cb, &sn), 0);
  assert_int_equal(sn.n, 2);
  assert_string_equal(sn.ids[0], "l3");
  assert_string_equal(sn.ids[1], "l1");

  memset(&sn, 0, sizeof sn);
  assert_int_equal(store_event_list(f->s, "dead", 1, collect_cb, &sn), 0);
  assert_int_equal(sn.n, 1);
  assert_string_equal(sn.ids[0], "l3");

  memset(&sn, 0, sizeof sn);
  sn.stop_after = 2;
  assert_int_equal(store_event_list(f->s, NULL, 10, collect_cb, &sn), 0);
  assert_int_equal(sn.n, 2);

  memset(&sn, 0, sizeof sn);
  assert_int_equal(store_event_list(f->s, "done", 10, collect_cb, &sn), 0);
  assert_int_equal(sn.n, 0);
  assert_int_equal(store_event_list(f->s, "bogus", 10, collect_cb, &sn), -1);

  long counts[EV_STATUS_COUNT];
  assert_int_equal(store_count_by_status(f->s, counts), 0);
  assert_int_equal(counts[EV_PENDING], 1);
  assert_int_equal(counts[EV_RUNNING], 1);
  assert_int_equal(counts[EV_DONE], 0);
  assert_int_equal(counts[EV_RETRY_WAIT], 0);
  assert_int_equal(counts[EV_DEAD], 2);
}

/* ---- attempts ---- */

struct attempt_seen {
  int n;
  long long seq[4];
  char url[4][64];
  int status[4];
  int has_error[4];
  int event_attempt[4];
  double duration[4];
};

static int attempt_cb(void *ud, const struct store_attempt *a) {
  struct attempt_seen *as = ud;
  if (as->n < 4) {
    as->seq[as->n] = a->seq;
    snprintf(as->url[as->n], sizeof as->url[0], "%s", a->url);
    as->status[as->n] = a->status;
    as->has_error[as->n] = a->error != NULL;
    as->event_attempt[as->n] = a->event_attempt;
    as->duration[as->n] = a->duration_ms;
    assert_string_equal(a->service, as->n == 0 ? "nowcerts" : "ghl");
  }
  as->n++;
  return 0;
}

static void test_attempts(void **state) {
  struct fx *f = *state;
  put(f->s, "a1", 1, STORE_PUT_NEW);
  put(f->s, "a2", 2, STORE_PUT_NEW);
  assert_int_equal(store_attempt_add(f->s, "a1", 1, "nowcerts", "GET", "https://nc/api/Insured",
                                     0, "connection refused", 3.5, 10),
                   0);
  assert_int_equal(
      store_attempt_add(f->s, "a2", 1, "ghl", "GET", "https://other", 200, NULL, 1, 11), 0);
  assert_int_equal(store_attempt_add(f->s, "a1", 2, "ghl", "POST", "https://ghl/contacts/", 201,
                                     NULL, 80.25, 12),
                   0);
  struct attempt_seen as = {0};
  assert_int_equal(store_attempt_list(f->s, "a1", attempt_cb, &as), 0);
  assert_int_equal(as.n, 2);
  assert_true(as.seq[0] < as.seq[1]);
  assert_string_equal(as.url[0], "https://nc/api/Insured");
  assert_int_equal(as.status[0], 0);
  assert_int_equal(as.has_error[0], 1);
  assert_int_equal(as.event_attempt[0], 1);
  assert_true(as.duration[0] == 3.5);
  assert_int_equal(as.status[1], 201);
  assert_int_equal(as.has_error[1], 0);
  assert_int_equal(as.event_attempt[1], 2);
  assert_true(as.duration[1] == 80.25);

  /* NULL optional strings do not crash; an unknown event is refused. */
  assert_int_equal(store_attempt_add(f->s, "a2", 2, NULL, NULL, NULL, 0, NULL, 0, 13), 0);
  assert_int_equal(store_attempt_add(f->s, "nope", 1, "ghl", "GET", "u", 200, NULL, 1, 14), -1);
  assert_int_equal(store_attempt_add(f->s, NULL, 1, "ghl", "GET", "u", 200, NULL, 1, 14), -1);
  memset(&as, 0, sizeof as);
  assert_int_equal(store_attempt_list(f->s, "nope", attempt_cb, &as), 0);
  assert_int_equal(as.n, 0);
}

/* ---- links, fingerprints, kv ---- */

static void assert_str_owned(char *got, const char *want) {
  if (!want) {
    assert_null(got);
    return;
  }
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static void test_links(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_link_put(f->s, "contact", "nc1", "g1", 1), 0);
  assert_int_equal(store_link_put(f->s, "policy", "nc1", "opp1", 1), 0);
  assert_str_owned(store_link_ghl(f->s, "contact", "nc1"), "g1");
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g1"), "nc1");
  assert_str_owned(store_link_ghl(f->s, "policy", "nc1"), "opp1");
  assert_str_owned(store_link_nowcerts(f->s, "policy", "g1"), NULL);
  assert_str_owned(store_link_ghl(f->s, "contact", "unknown"), NULL);

  /* The NowCerts side gets a new GHL id: the old GHL id is forgotten. */
  assert_int_equal(store_link_put(f->s, "contact", "nc1", "g2", 2), 0);
  assert_str_owned(store_link_ghl(f->s, "contact", "nc1"), "g2");
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g1"), NULL);
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g2"), "nc1");

  /* The GHL side gets a new NowCerts id: the old NowCerts id is forgotten. */
  assert_int_equal(store_link_put(f->s, "contact", "nc2", "g2", 3), 0);
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g2"), "nc2");
  assert_str_owned(store_link_ghl(f->s, "contact", "nc1"), NULL);

  /* A pair that crosses two old pairs removes both. */
  assert_int_equal(store_link_put(f->s, "contact", "nc3", "g3", 4), 0);
  assert_int_equal(store_link_put(f->s, "contact", "nc2", "g3", 5), 0);
  assert_str_owned(store_link_ghl(f->s, "contact", "nc2"), "g3");
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g3"), "nc2");
  assert_str_owned(store_link_ghl(f->s, "contact", "nc3"), NULL);
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g2"), NULL);

  assert_int_equal(store_link_put(f->s, "contact", NULL, "g9", 6), -1);
  assert_int_equal(store_link_put(f->s, "contact", "nc9", NULL, 6), -1);
  assert_int_equal(store_link_put(f->s, NULL, "nc9", "g9", 6), -1);
  assert_null(store_link_ghl(f->s, NULL, "nc2"));
  assert_null(store_link_nowcerts(f->s, "contact", NULL));
}

static void test_link_delete(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_link_put(f->s, "contact", "nc1", "g1", 1), 0);
  assert_int_equal(store_link_put(f->s, "policy", "nc1", "o1", 1), 0);
  assert_int_equal(store_link_delete(f->s, "contact", "nc1"), 0);
  assert_str_owned(store_link_ghl(f->s, "contact", "nc1"), NULL);
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g1"), NULL);
  assert_str_owned(store_link_ghl(f->s, "policy", "nc1"), "o1"); /* other kinds stay */
  assert_int_equal(store_link_delete(f->s, "contact", "nc-unknown"), 0);
  assert_int_equal(store_link_delete(f->s, NULL, "nc1"), -1);
}

static void test_snapshots(void **state) {
  struct fx *f = *state;
  assert_str_owned(store_snapshot_get(f->s, "contact", "nc1"), NULL);
  assert_int_equal(store_snapshot_put(f->s, "contact", "nc1", "g1", "{\"v\":1}", 1), 0);
  assert_int_equal(store_snapshot_put(f->s, "policy", "nc1", "o1", "{\"v\":2}", 1), 0);
  assert_str_owned(store_snapshot_get(f->s, "contact", "nc1"), "{\"v\":1}");
  assert_int_equal(store_snapshot_put(f->s, "contact", "nc1", NULL, "{\"v\":3}", 2), 0);
  assert_str_owned(store_snapshot_get(f->s, "contact", "nc1"), "{\"v\":3}");
  assert_str_owned(store_snapshot_get(f->s, "policy", "nc1"), "{\"v\":2}");
  assert_int_equal(store_snapshot_put(f->s, "contact", "nc1", NULL, NULL, 3), 0);
  assert_str_owned(store_snapshot_get(f->s, "contact", "nc1"), NULL);
  assert_int_equal(store_snapshot_put(f->s, "contact", "", NULL, "{}", 3), -1);
  assert_int_equal(store_snapshot_put(f->s, NULL, "nc1", NULL, "{}", 3), -1);
}

struct rows {
  int n;
  long long ids[16];
  char fields[16][32];
  char winners[16][16];
};

static int conflict_row(void *ud, const struct store_conflict *c) {
  struct rows *r = ud;
  r->ids[r->n] = c->id;
  snprintf(r->fields[r->n], sizeof r->fields[0], "%s", c->field);
  snprintf(r->winners[r->n], sizeof r->winners[0], "%s", c->winner);
  r->n++;
  return 0;
}

static int change_row(void *ud, const struct store_change *c) {
  struct rows *r = ud;
  r->ids[r->n] = c->id;
  snprintf(r->fields[r->n], sizeof r->fields[0], "%s:%s", c->field, c->new_value ? c->new_value : "-");
  snprintf(r->winners[r->n], sizeof r->winners[0], "%s", c->action);
  r->n++;
  return 0;
}

static void test_conflicts(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_conflict_count(f->s), 0);
  struct store_conflict c = {.kind = "contact", .nowcerts_id = "nc1", .ghl_id = "g1",
                             .field = "phone", .nowcerts_value = "5551112222",
                             .ghl_value = "5553334444", .base = "5550000000",
                             .winner = "nowcerts", .event_id = "ghl_1", .nowcerts_at = 10,
                             .ghl_at = 9, .at = 11};
  assert_int_equal(store_conflict_add(f->s, &c), 0);
  c.field = "city";
  c.winner = "ghl";
  c.nowcerts_id = "nc2";
  c.ghl_id = "g2";
  c.base = NULL; /* no base: a field neither side had */
  assert_int_equal(store_conflict_add(f->s, &c), 0);
  c.field = "email";
  assert_int_equal(store_conflict_add(f->s, &c), 0);
  assert_int_equal(store_conflict_count(f->s), 3);

  struct rows r = {0};
  struct store_sync_filter all = {0};
  assert_int_equal(store_conflict_list(f->s, &all, conflict_row, &r), 0);
  assert_int_equal(r.n, 3); /* newest first */
  assert_string_equal(r.fields[0], "email");
  assert_string_equal(r.fields[2], "phone");
  assert_string_equal(r.winners[2], "nowcerts");

  memset(&r, 0, sizeof r);
  struct store_sync_filter by_link = {.kind = "contact", .nowcerts_id = "nc2"};
  assert_int_equal(store_conflict_list(f->s, &by_link, conflict_row, &r), 0);
  assert_int_equal(r.n, 2);
  long long newest = r.ids[0];

  memset(&r, 0, sizeof r);
  struct store_sync_filter page = {.ghl_id = "g2", .before = newest, .limit = 5};
  assert_int_equal(store_conflict_list(f->s, &page, conflict_row, &r), 0);
  assert_int_equal(r.n, 1);
  assert_string_equal(r.fields[0], "city");

  memset(&r, 0, sizeof r);
  struct store_sync_filter one = {.limit = 1};
  assert_int_equal(store_conflict_list(f->s, &one, conflict_row, &r), 0);
  assert_int_equal(r.n, 1);

  struct store_conflict bad = {.kind = "contact", .nowcerts_id = "nc1", .field = "x"};
  assert_int_equal(store_conflict_add(f->s, &bad), -1); /* no winner */

  struct buf b;
  buf_init(&b, 0);
  c.id = 7;
  c.ghl_value = "a \"quoted\" value";
  store_conflict_json(&b, &c);
  assert_non_null(strstr(b.p, "\"id\":7,\"kind\":\"contact\""));
  assert_non_null(strstr(b.p, "\"ghl_value\":\"a \\\"quoted\\\" value\""));
  assert_non_null(strstr(b.p, "\"base\":null"));
  buf_free(&b);
}

static void test_changes(void **state) {
  struct fx *f = *state;
  struct store_change c = {.kind = "contact", .nowcerts_id = "nc1", .ghl_id = "g1",
                           .field = "city", .side = "ghl", .old_value = NULL,
                           .new_value = "Tampa", .action = "sent", .event_id = "ghl_1", .at = 1};
  assert_int_equal(store_change_add(f->s, &c), 0);
  c.field = "phone";
  c.new_value = "5551112222";
  c.side = "nowcerts";
  c.event_id = "nowcerts_2";
  assert_int_equal(store_change_add(f->s, &c), 0);
  c.nowcerts_id = "nc9";
  c.ghl_id = "g9";
  assert_int_equal(store_change_add(f->s, &c), 0);

  struct rows r = {0};
  struct store_sync_filter link = {.kind = "contact", .nowcerts_id = "nc1"};
  assert_int_equal(store_change_list(f->s, &link, change_row, &r), 0);
  assert_int_equal(r.n, 2);
  assert_string_equal(r.fields[0], "phone:5551112222");
  assert_string_equal(r.fields[1], "city:Tampa");
  assert_string_equal(r.winners[1], "sent");

  memset(&r, 0, sizeof r);
  struct store_sync_filter ev = {.event_id = "nowcerts_2"};
  assert_int_equal(store_change_list(f->s, &ev, change_row, &r), 0);
  assert_int_equal(r.n, 2);

  memset(&r, 0, sizeof r);
  struct store_sync_filter by_ghl = {.ghl_id = "g9"};
  assert_int_equal(store_change_list(f->s, &by_ghl, change_row, &r), 0);
  assert_int_equal(r.n, 1);

  struct store_change bad = {.kind = "contact", .field = "x", .side = "ghl"};
  assert_int_equal(store_change_add(f->s, &bad), -1); /* no action */
}

/* A file of schema version 2 (record fingerprints) opened by this version:
 * each link's GHL-side fingerprint becomes its snapshot's bases, so nothing
 * is re-sent whole after the upgrade. */
static void test_migration_turns_fingerprints_into_snapshots(void **state) {
  struct fx *f = *state;
  store_close(f->s);
  f->s = NULL;
  char old[300];
  snprintf(old, sizeof old, "%s/v2.db", f->dir);
  sqlite3 *db;
  assert_int_equal(sqlite3_open(old, &db), SQLITE_OK);
  const char *v2 =
      "CREATE TABLE events (id TEXT PRIMARY KEY, source TEXT NOT NULL, type TEXT NOT NULL"
      " DEFAULT '', payload TEXT NOT NULL DEFAULT '', status INTEGER NOT NULL, attempts INTEGER"
      " NOT NULL DEFAULT 0, last_error TEXT, result TEXT, created_at REAL NOT NULL, updated_at"
      " REAL NOT NULL, next_at REAL NOT NULL DEFAULT 0);"
      "CREATE INDEX events_status_next ON events (status, next_at);"
      "CREATE INDEX events_created ON events (created_at);"
      "CREATE TABLE attempts (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
      " REFERENCES events (id) ON DELETE CASCADE, event_attempt INTEGER NOT NULL, service TEXT"
      " NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL, status INTEGER NOT NULL, error TEXT,"
      " duration_ms REAL NOT NULL, at REAL NOT NULL);"
      "CREATE INDEX attempts_event ON attempts (event_id);"
      "CREATE TABLE links (kind TEXT NOT NULL, nowcerts_id TEXT NOT NULL, ghl_id TEXT NOT NULL,"
      " updated_at REAL NOT NULL, UNIQUE (kind, nowcerts_id), UNIQUE (kind, ghl_id));"
      "CREATE TABLE fingerprints (side TEXT NOT NULL, record_id TEXT NOT NULL, json TEXT NOT NULL,"
      " updated_at REAL NOT NULL, PRIMARY KEY (side, record_id));"
      "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE INDEX events_status_created ON events (status, created_at);"
      "INSERT INTO links VALUES ('contact', 'nc1', 'g1', 5);"
      "INSERT INTO links VALUES ('policy', 'p1', 'o1', 5);"
      "INSERT INTO links VALUES ('contact', 'nc2', 'g2', 5);"
      "INSERT INTO fingerprints VALUES ('ghl', 'g1',"
      " '{\"email\":\"jane@x.com\",\"phone\":\"5551234567\",\"tags\":[\"a\"]}', 6);"
      "INSERT INTO fingerprints VALUES ('ghl', 'o1', '{\"pipelineStageId\":\"s1\",\"monetaryValue\":980}', 6);"
      "INSERT INTO fingerprints VALUES ('nowcerts', 'nc1', '{\"eMail\":\"jane@x.com\"}', 6);"
      "PRAGMA user_version = 2;";
  assert_int_equal(sqlite3_exec(db, v2, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);

  char err[256];
  f->s = store_open(old, err, sizeof err);
  if (!f->s)
    fail_msg("store_open: %s", err);
  assert_true(store_schema_version(f->s) >= 3);
  char *snap = store_snapshot_get(f->s, "contact", "nc1");
  assert_non_null(snap);
  assert_non_null(strstr(snap, "\"email\":{\"base\":\"jane@x.com\"}"));
  assert_non_null(strstr(snap, "\"phone\":{\"base\":\"5551234567\"}"));
  assert_null(strstr(snap, "tags")); /* lists were never fingerprinted values */
  free(snap);
  snap = store_snapshot_get(f->s, "policy", "p1");
  assert_non_null(snap);
  assert_non_null(strstr(snap, "\"pipelineStageId\":{\"base\":\"s1\"}"));
  assert_non_null(strstr(snap, "\"monetaryValue\":{\"base\":\"980\"}"));
  free(snap);
  assert_str_owned(store_snapshot_get(f->s, "contact", "nc2"), NULL); /* no fingerprint */
  assert_str_owned(store_link_ghl(f->s, "contact", "nc1"), "g1");
}

static int term_cb(void *ud, const char *term) {
  char *out = ud;
  snprintf(out + strlen(out), 256 - strlen(out), "%s%s", *out ? "|" : "", term);
  return 0;
}

static int found_cb(void *ud, const struct store_event *e) {
  char *out = ud;
  snprintf(out + strlen(out), 256 - strlen(out), "%s%s", *out ? "," : "", e->id);
  return 0;
}

static int attempt_count_cb(void *ud, const struct store_attempt *a) {
  (void)a;
  ++*(int *)ud;
  return 0;
}

/* A file of schema version 6 (people and attempts found by the text id)
 * opened by this version: migrations 7 and 8 rebuild events with an integer
 * key and attempts keyed by it, keeping every row, every person noted and
 * every attempt (a DROP must not cascade), and foreign keys hold again
 * afterwards. */
static void test_migration_keeps_events_people_and_attempts(void **state) {
  struct fx *f = *state;
  const char *payload = "{\"data\":{\"firstName\":\"Jane\",\"eMail\":\"jane@x.com\"}}";
  enum store_put r;
  assert_int_equal(store_event_put(f->s, "old1", "nowcerts", "INSURED_INSERT", payload,
                                   strlen(payload), EV_PENDING, 1, 0, &r, NULL), 0);
  assert_int_equal(store_event_put(f->s, "old2", "ghl", "ContactCreate", "{}", 2, EV_PENDING, 2,
                                   0, &r, NULL), 0);
  assert_int_equal(store_attempt_add(f->s, "old1", 1, "ghl", "POST", "/contacts/", 201, NULL, 3,
                                     1), 0);
  assert_int_equal(store_event_put(f->s, "old3", "ghl", "ContactUpdate", "{}", 2, EV_PENDING, 3,
                                   0, &r, NULL), 0);
  store_close(f->s);
  f->s = NULL;
  /* Back to version 6's shape, as a file written by the previous release. */
  sqlite3 *db;
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  const char *to_v6 =
      "PRAGMA foreign_keys = OFF; BEGIN;"
      "CREATE TABLE e6 (id TEXT PRIMARY KEY, source TEXT NOT NULL, type TEXT NOT NULL DEFAULT '',"
      " payload TEXT NOT NULL DEFAULT '', status INTEGER NOT NULL, attempts INTEGER NOT NULL"
      " DEFAULT 0, last_error TEXT, result TEXT, created_at REAL NOT NULL, updated_at REAL NOT"
      " NULL, next_at REAL NOT NULL DEFAULT 0, owner TEXT);"
      "INSERT INTO e6 SELECT id, source, type, payload, status, attempts, last_error, result,"
      " created_at, updated_at, next_at, owner FROM events;"
      "CREATE TABLE p6 (term TEXT NOT NULL, event_id TEXT NOT NULL REFERENCES events (id) ON"
      " DELETE CASCADE, PRIMARY KEY (term, event_id)) WITHOUT ROWID;"
      "INSERT INTO p6 SELECT p.term, e.id FROM event_people AS p JOIN events AS e ON e.seq = p.seq;"
      "CREATE TABLE a6 (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL"
      " REFERENCES events (id) ON DELETE CASCADE, event_attempt INTEGER NOT NULL, service TEXT"
      " NOT NULL, method TEXT NOT NULL, url TEXT NOT NULL, status INTEGER NOT NULL, error TEXT,"
      " duration_ms REAL NOT NULL, at REAL NOT NULL, request TEXT, answer TEXT);"
      "INSERT INTO a6 SELECT seq, event_id, event_attempt, service, method, url, status, error,"
      " duration_ms, at, request, answer FROM attempts;"
      "DROP TABLE attempts; ALTER TABLE a6 RENAME TO attempts;"
      "CREATE INDEX attempts_event ON attempts (event_id);"
      "DROP TABLE event_people; DROP TABLE events;"
      "ALTER TABLE e6 RENAME TO events; ALTER TABLE p6 RENAME TO event_people;"
      "CREATE INDEX event_people_event ON event_people (event_id);"
      "CREATE INDEX events_status_next ON events (status, next_at);"
      "CREATE INDEX events_created ON events (created_at);"
      "CREATE INDEX events_status_created ON events (status, created_at);"
      "CREATE INDEX events_type_created ON events (type, created_at);"
      "CREATE INDEX events_source_created ON events (source, created_at);"
      "PRAGMA user_version = 6; COMMIT;";
  char *msg = NULL;
  if (sqlite3_exec(db, to_v6, NULL, NULL, &msg) != SQLITE_OK)
    fail_msg("to v6: %s", msg);
  /* A retry waiting in the old file, due at 40. */
  assert_int_equal(sqlite3_exec(db, "UPDATE events SET status = 3, attempts = 1, next_at = 40"
                                    " WHERE id = 'old3'", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);

  char err[256];
  f->s = store_open(f->path, err, sizeof err);
  if (!f->s)
    fail_msg("store_open: %s", err);
  assert_int_equal(store_schema_version(f->s), 9);
  char idx[512];
  events_indexes(f->path, idx, sizeof idx);
  assert_string_equal(idx, "events_created,events_retry_next,events_status_created,"
                           "sqlite_autoindex_events_1");
  char out[256] = "";
  assert_int_equal(store_event_people(f->s, "old1", term_cb, out), 0);
  assert_string_equal(out, "jane|jane@x.com");
  out[0] = 0;
  struct store_event_filter q = {.person = "jane"};
  assert_int_equal(store_event_search(f->s, &q, 10, found_cb, out), 0);
  assert_string_equal(out, "old1");
  int n = 0;
  assert_int_equal(store_attempt_list(f->s, "old1", attempt_count_cb, &n), 0);
  assert_int_equal(n, 1);
  assert_int_equal(status_of(f->s, "old2"), EV_PENDING);
  /* New events after the upgrade are noted and found beside the old. */
  assert_int_equal(store_event_put(f->s, "new1", "nowcerts", "INSURED_INSERT", payload,
                                   strlen(payload), EV_PENDING, 5, 0, &r, NULL), 0);
  out[0] = 0;
  assert_int_equal(store_event_search(f->s, &q, 10, found_cb, out), 0);
  assert_string_equal(out, "new1,old1");
  /* The retry is found through the index schema 9 builds over retry_wait
   * rows: not before it is due, then with the pending ones. */
  assert_true(store_next_due(f->s) == 40);
  char ids[256];
  claimed_ids(f->s, 39, ids, sizeof ids);
  assert_string_equal(ids, "old1,old2,new1");
  struct store_event due[8];
  int ndue = 0;
  assert_int_equal(store_claim_due(f->s, 40, 8, due, &ndue), 0);
  assert_int_equal(ndue, 1);
  assert_string_equal(due[0].id, "old3");
  assert_int_equal(due[0].attempts, 2);
  store_event_free(&due[0]);
  assert_true(store_next_due(f->s) == 0);
  store_close(f->s);
  f->s = NULL;
  /* Foreign keys are on again: deleting an event takes its people along. */
  assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "PRAGMA foreign_keys = ON; DELETE FROM events WHERE id ="
                                    " 'old1'", NULL, NULL, NULL), SQLITE_OK);
  char got[32];
  /* new1's two terms; old1's attempt went with it. */
  assert_string_equal(sql_value(db, "SELECT count(*) FROM event_people", got, sizeof got), "2");
  assert_string_equal(sql_value(db, "SELECT count(*) FROM attempts", got, sizeof got), "0");
  sqlite3_close(db);
  f->s = store_open(f->path, err, sizeof err);
  assert_non_null(f->s);
}

static long long wal_bytes(struct store *s) {
  struct stat sb;
  return stat(store_wal_file(s), &sb) == 0 ? (long long)sb.st_size : 0;
}

/* One event per commit, like a trickle of webhooks. */
static void commit_events(struct store *s, const char *prefix, int n) {
  char id[32];
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "%s%d", prefix, i);
    assert_int_equal(store_begin(s), 0);
    put(s, id, i + 1, STORE_PUT_NEW);
    assert_int_equal(store_commit(s), 0);
  }
}

/* The loop's connection checkpoints inside the COMMIT that takes the WAL
 * past its bound (tenant.c sets 65,536 pages), so the WAL starts again from
 * its beginning and its file stops growing; with the bound off and nobody
 * else checkpointing, the same writes make it grow without end. */
static void test_autocheckpoint_bounds_the_wal(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_set_full_sync(f->s, false), 0); /* the bound, not the disk, is tested */
  assert_int_equal(store_set_autocheckpoint(f->s, 64), 0);
  commit_events(f->s, "bounded", 600);
  long long bounded = wal_bytes(f->s);
  assert_true(bounded > 0);
  /* 64 pages, plus the one commit that passed them. */
  assert_true(bounded < 160 * 4120);

  assert_int_equal(store_set_autocheckpoint(f->s, 0), 0);
  commit_events(f->s, "unbounded", 600);
  assert_true(wal_bytes(f->s) > 8 * bounded);
}

static void test_kv(void **state) {
  struct fx *f = *state;
  assert_str_owned(store_kv_get(f->s, "poll.cursor"), NULL);
  assert_int_equal(store_kv_put(f->s, "poll.cursor", "2024-01-01T00:00:00Z"), 0);
  assert_str_owned(store_kv_get(f->s, "poll.cursor"), "2024-01-01T00:00:00Z");
  assert_int_equal(store_kv_put(f->s, "poll.cursor", "2024-02-01T00:00:00Z"), 0);
  assert_str_owned(store_kv_get(f->s, "poll.cursor"), "2024-02-01T00:00:00Z");
  assert_int_equal(store_kv_put(f->s, "empty", ""), 0);
  assert_str_owned(store_kv_get(f->s, "empty"), "");
  assert_int_equal(store_kv_put(f->s, "poll.cursor", NULL), 0);
  assert_str_owned(store_kv_get(f->s, "poll.cursor"), NULL);
  assert_null(store_kv_get(f->s, NULL));
  assert_int_equal(store_kv_put(f->s, NULL, "v"), -1);
}

/* ---- transactions ---- */

static void test_transactions(void **state) {
  struct fx *f = *state;
  assert_false(store_in_txn(f->s));
  assert_int_equal(store_rollback(f->s), 0); /* nothing open: a no-op */
  assert_int_equal(store_begin(f->s), 0);
  assert_true(store_in_txn(f->s));
  put(f->s, "x1", 1, STORE_PUT_NEW);
  assert_int_equal(store_kv_put(f->s, "k", "v"), 0);
  assert_int_equal(store_rollback(f->s), 0);
  assert_false(store_in_txn(f->s));
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "x1", &e), 1);
  assert_null(store_kv_get(f->s, "k"));

  /* A failed call inside a batch undoes only itself. */
  assert_int_equal(store_begin(f->s), 0);
  put(f->s, "x2", 1, STORE_PUT_NEW);
  assert_int_equal(store_attempt_add(f->s, "ghost", 1, "ghl", "GET", "u", 200, NULL, 1, 1), -1);
  put(f->s, "x2", 2, STORE_PUT_DUPLICATE);
  assert_true(store_in_txn(f->s));
  assert_int_equal(store_commit(f->s), 0);
  assert_false(store_in_txn(f->s));
  assert_int_equal(status_of(f->s, "x2"), EV_PENDING);

  assert_int_equal(store_commit(f->s), -1); /* nothing open */
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_begin(f->s), -1); /* no nesting */
  assert_true(store_in_txn(f->s));
  assert_int_equal(store_rollback(f->s), 0);
}

static void test_errors_are_logged_with_sqlite_message(void **state) {
  struct fx *f = *state;
  char logpath[320];
  snprintf(logpath, sizeof logpath, "%s/store.log", f->dir);
  assert_int_equal(log_init(LOGL_ERROR, logpath), 0);
  assert_int_equal(store_attempt_add(f->s, "ghost", 1, "ghl", "GET", "u", 200, NULL, 1, 1), -1);
  log_init(LOGL_INFO, NULL);
  FILE *fp = fopen(logpath, "r");
  assert_non_null(fp);
  char buf[2048] = "";
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  buf[n] = '\0';
  fclose(fp);
  /* An attempt of an unknown event has no event_seq to point at. */
  assert_non_null(strstr(buf, "store: attempt_add: NOT NULL constraint failed: attempts.event_seq"));
}

/* ---- writability ---- */

static void test_writable(void **state) {
  struct fx *f = *state;
  assert_true(store_writable(f->s));
  assert_false(store_in_txn(f->s));
  assert_null(store_kv_get(f->s, "ncghl.writable_probe")); /* the probe left nothing */

  assert_int_equal(store_begin(f->s), 0);
  assert_true(store_writable(f->s)); /* inside a txn: no nesting, true */
  assert_true(store_in_txn(f->s));
  assert_int_equal(store_rollback(f->s), 0);

  /* Another process holds the write lock: that is a busy store, not a
   * broken one (intake waits for the lock), so it still counts writable. */
  if (pg_url) {
    /* On PostgreSQL: another node holds the probe's row. */
    PGconn *c = pg_side();
    char sql[256];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO %s.kv VALUES ('ncghl.writable_probe', 'x')", f->schema);
    pg_exec(c, sql);
    store_set_busy_timeout(f->s, 100);
    assert_true(store_writable(f->s));
    assert_false(store_in_txn(f->s));
    long pc[EV_STATUS_COUNT];
    assert_int_equal(store_count_by_status(f->s, pc), 0);
    pg_exec(c, "ROLLBACK");
    PQfinish(c);
    assert_true(store_writable(f->s));
    return;
  }
  sqlite3 *other;
  assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);
  assert_true(store_writable(f->s));
  assert_false(store_in_txn(f->s));
  /* Reads still work under WAL while someone else writes. */
  long counts[EV_STATUS_COUNT];
  assert_int_equal(store_count_by_status(f->s, counts), 0);
  assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  assert_true(store_writable(f->s));
}

/* Returns 0, or the line of the first failed check. Plain checks, not cmocka
 * asserts: as root this runs in a forked child. */
#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c))                                                                                      \
      return __LINE__;                                                                             \
  } while (0)
static int read_only_scenario(const char *dir) {
  char path[320], err[256];
  snprintf(path, sizeof path, "%s/ro.db", dir);
  struct store *s = store_open(path, err, sizeof err);
  CHECK(s);
  enum store_put r;
  int put_rc = store_event_put(s, "ro1", "ghl", "t", "{}", 2, EV_PENDING, 1, 100, &r, NULL);
  store_close(s);
  CHECK(put_rc == 0);
  CHECK(chmod(path, 0444) == 0);
  s = store_open(path, err, sizeof err);
  CHECK(s); /* a read-only store still opens, for reading */
  bool writable = store_writable(s);
  struct store_event e;
  int got = store_event_get(s, "ro1", &e);
  enum ev_status st = e.status;
  if (got == 0)
    store_event_free(&e);
  int kv = store_kv_put(s, "k", "v");
  store_close(s);
  CHECK(!writable);
  CHECK(got == 0 && st == EV_PENDING);
  CHECK(kv == -1);
  return 0;
}

static void test_writable_false_on_read_only_file(void **state) {
  struct fx *f = *state;
  char dir[320];
  snprintf(dir, sizeof dir, "%s/ro", f->dir);
  assert_int_equal(mkdir(dir, 0700), 0);
  if (geteuid() != 0) {
    assert_int_equal(read_only_scenario(dir), 0);
    return;
  }
  /* Root writes through any mode bits, so the scenario runs as nobody. */
  assert_int_equal(chown(dir, 65534, 65534), 0);
  assert_int_equal(chmod(f->dir, 0711), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0)
      _exit(77);
    int line = read_only_scenario(dir);
    if (line)
      fprintf(stderr, "read_only_scenario failed at test_store.c:%d\n", line);
    _exit(line ? 1 : 0);
  }
  int wst;
  assert_int_equal(waitpid(pid, &wst, 0), pid);
  assert_true(WIFEXITED(wst));
  if (WEXITSTATUS(wst) == 77)
    skip(); /* no privilege to drop privileges: the lock case in test_writable stands */
  assert_int_equal(WEXITSTATUS(wst), 0);
}

/* ---- durability ---- */

static void test_survives_reopen(void **state) {
  struct fx *f = *state;
  put(f->s, "p1", 1, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "p1", 2), 1);
  assert_int_equal(store_attempt_add(f->s, "p1", 1, "ghl", "POST", "https://g/c", 201, NULL, 9, 3),
                   0);
  assert_int_equal(store_event_finish(f->s, "p1", EV_DONE, 0, NULL, "{\"id\":\"g1\"}", 4), 0);
  put(f->s, "p2", 5, STORE_PUT_NEW);
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_link_put(f->s, "contact", "nc1", "g1", 6), 0);
  assert_int_equal(store_snapshot_put(f->s, "contact", "nc1", "g1", "{\"a\":1}", 6), 0);
  assert_int_equal(store_kv_put(f->s, "cursor", "42"), 0);
  assert_int_equal(store_commit(f->s), 0);

  reopen(f);

  struct store_event e;
  assert_int_equal(store_event_get(f->s, "p1", &e), 0);
  assert_int_equal(e.status, EV_DONE);
  assert_int_equal(e.attempts, 1);
  assert_string_equal(e.result, "{\"id\":\"g1\"}");
  store_event_free(&e);
  assert_int_equal(status_of(f->s, "p2"), EV_PENDING);
  int n = 0;
  assert_int_equal(store_attempt_list(f->s, "p1", count_attempts_cb, &n), 0);
  assert_int_equal(n, 1);
  assert_str_owned(store_link_ghl(f->s, "contact", "nc1"), "g1");
  assert_str_owned(store_link_nowcerts(f->s, "contact", "g1"), "nc1");
  assert_str_owned(store_snapshot_get(f->s, "contact", "nc1"), "{\"a\":1}");
  assert_str_owned(store_kv_get(f->s, "cursor"), "42");
  put(f->s, "p1", 7, STORE_PUT_DUPLICATE); /* idempotency survives a restart */
}

static void test_uncommitted_batch_is_lost_on_close(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_begin(f->s), 0);
  put(f->s, "u1", 1, STORE_PUT_NEW);
  reopen(f);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "u1", &e), 1);
}

/* ---- faults: counts, leases, retention, forget ---- */

static void assert_counts(struct store *s, long p, long r, long d, long w, long x) {
  long c[EV_STATUS_COUNT];
  store_counts(s, c);
  assert_int_equal(c[EV_PENDING], p);
  assert_int_equal(c[EV_RUNNING], r);
  assert_int_equal(c[EV_DONE], d);
  assert_int_equal(c[EV_RETRY_WAIT], w);
  assert_int_equal(c[EV_DEAD], x);
}

static void test_counts_follow_commits_not_rollbacks(void **state) {
  struct fx *f = *state;
  put(f->s, "old", 1, STORE_PUT_NEW); /* before the seed */
  assert_int_equal(store_counts_seed(f->s), 0);
  long q = store_count_queries(f->s);
  assert_counts(f->s, 1, 0, 0, 0, 0);
  put(f->s, "a", 2, STORE_PUT_NEW); /* autocommit */
  assert_counts(f->s, 2, 0, 0, 0, 0);
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_event_claim(f->s, "a", 3), 1);
  assert_counts(f->s, 2, 0, 0, 0, 0); /* not before the COMMIT */
  assert_int_equal(store_commit(f->s), 0);
  assert_counts(f->s, 1, 1, 0, 0, 0);
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_event_finish(f->s, "a", EV_DONE, 0, NULL, NULL, 4), 0);
  assert_int_equal(store_rollback(f->s), 0);
  assert_counts(f->s, 1, 1, 0, 0, 0);
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_event_finish(f->s, "a", EV_DEAD, 0, "x", NULL, 4), 0);
  /* A duplicate put runs in a savepoint that is released: no change. */
  put(f->s, "a", 5, STORE_PUT_REQUEUED);
  assert_int_equal(store_commit(f->s), 0);
  assert_counts(f->s, 2, 0, 0, 0, 0);
  assert_int_equal(store_count_queries(f->s), q); /* none of that counted rows */
}

static int collect_running(void *ud, const char *id, const char *owner, double at) {
  (void)at;
  char *out = ud;
  strcat(out, id);
  strcat(out, owner ? "=mine;" : "=none;");
  return 0;
}

static void test_running_rows_carry_their_owner_and_can_be_released(void **state) {
  struct fx *f = *state;
  put(f->s, "a", 1, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "a", 2), 1);
  char seen[256] = "";
  assert_int_equal(store_running_list(f->s, collect_running, seen), 0);
  assert_string_equal(seen, "a=mine;");
  assert_int_equal(store_event_release(f->s, "a", 3), 1);
  assert_int_equal(status_of(f->s, "a"), EV_PENDING);
  assert_int_equal(store_event_release(f->s, "a", 3), 0); /* no longer running */
  seen[0] = 0;
  assert_int_equal(store_running_list(f->s, collect_running, seen), 0);
  assert_string_equal(seen, "");
}

static void test_retention_keeps_dead_and_unfinished(void **state) {
  struct fx *f = *state;
  const char *ids[] = {"done-old", "dead-old", "pending-old", "done-new"};
  for (int i = 0; i < 4; i++)
    put(f->s, ids[i], i == 3 ? 1000 : 10, STORE_PUT_NEW);
  for (int i = 0; i < 4; i++)
    if (i != 2) {
      assert_int_equal(store_event_claim(f->s, ids[i], 20), 1);
      assert_int_equal(store_event_finish(f->s, ids[i], i == 1 ? EV_DEAD : EV_DONE, 0, NULL, NULL,
                                          30),
                       0);
    }
  assert_int_equal(store_attempt_add(f->s, "done-old", 1, "ghl", "POST", "/x", 200, NULL, 1, 20),
                   0);
  int n = -1;
  assert_int_equal(store_retention_batch(f->s, 500, 100, &n), 0);
  assert_int_equal(n, 1);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "done-old", &e), 1);
  for (int i = 1; i < 4; i++) {
    assert_int_equal(store_event_get(f->s, ids[i], &e), 0);
    store_event_free(&e);
  }
  int attempts = 0;
  assert_int_equal(store_attempt_list(f->s, "done-old", count_attempts_cb, &attempts), 0);
  assert_int_equal(attempts, 0);
}

static void test_forget_only_a_row_that_never_ran(void **state) {
  struct fx *f = *state;
  put(f->s, "fresh", 1, STORE_PUT_NEW);
  put(f->s, "ran", 1, STORE_PUT_NEW);
  assert_int_equal(store_event_claim(f->s, "ran", 2), 1);
  assert_int_equal(store_event_finish(f->s, "ran", EV_DONE, 0, NULL, NULL, 3), 0);
  assert_int_equal(store_event_forget(f->s, "fresh"), 1);
  assert_int_equal(store_event_forget(f->s, "ran"), 0);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "fresh", &e), 1);
  assert_int_equal(store_event_get(f->s, "ran", &e), 0);
  store_event_free(&e);
}

/* ---- limits shared by the nodes of a store ---- */

static void test_rate_take_is_a_sliding_window(void **state) {
  struct fx *f = *state;
  double wait = -1;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(store_rate_take(f->s, "ghl:loc1", 3, 10, 100 + i, &wait), 0);
    assert_true(wait == 0);
  }
  /* Full: the oldest (at 100) leaves the window at 110. */
  assert_int_equal(store_rate_take(f->s, "ghl:loc1", 3, 10, 104, &wait), 0);
  assert_true(wait > 5.99 && wait < 6.01);
  /* Another key has its own window. */
  assert_int_equal(store_rate_take(f->s, "ghl:loc2", 3, 10, 104, &wait), 0);
  assert_true(wait == 0);
  /* The refused take was not counted: at 110 one place is free again. */
  assert_int_equal(store_rate_take(f->s, "ghl:loc1", 3, 10, 110, &wait), 0);
  assert_true(wait == 0);
  assert_int_equal(store_rate_take(f->s, "ghl:loc1", 3, 10, 110.5, &wait), 0);
  assert_true(wait > 0.49 && wait < 0.51);
  /* Inside the caller's transaction too, and a limit of 0 is no limit. */
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_rate_take(f->s, "ghl:loc3", 1, 10, 200, &wait), 0);
  assert_true(wait == 0);
  assert_int_equal(store_commit(f->s), 0);
  assert_int_equal(store_rate_take(f->s, "ghl:loc3", 0, 10, 200, &wait), 0);
  assert_true(wait == 0);
}

/* A named lease for work one node at a time does (the poller). */
static void test_lease_goes_to_one_owner_at_a_time(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_lease_take(f->s, "work.lease", 30, 1000), 1);
  assert_int_equal(store_lease_take(f->s, "work.lease", 30, 1010), 1); /* renewed */
  char *v = store_kv_get(f->s, "work.lease");
  assert_non_null(v);
  char want[256];
  snprintf(want, sizeof want, "%s 1040.000", store_owner(f->s));
  assert_string_equal(v, want);
  free(v);
  /* Another host's live owner holds it until its time passes. */
  assert_int_equal(store_kv_put(f->s, "work.lease", "other-host:7:1 2000.000"), 0);
  assert_int_equal(store_lease_take(f->s, "work.lease", 30, 1999), 0);
  assert_int_equal(store_lease_release(f->s, "work.lease"), 0);
  assert_str_owned(store_kv_get(f->s, "work.lease"), "other-host:7:1 2000.000");
  assert_int_equal(store_lease_take(f->s, "work.lease", 30, 2001), 1);
  /* A process of this host that is gone holds nothing (pid 2^22+1 is
   * above Linux's pid_max default). */
  char host[128];
  snprintf(host, sizeof host, "%s", store_owner(f->s));
  *strchr(host, ':') = '\0';
  char dead[200];
  snprintf(dead, sizeof dead, "%s:4194305:1 9999.000", host);
  assert_int_equal(store_kv_put(f->s, "work.lease", dead), 0);
  *strrchr(dead, ' ') = '\0';
  assert_true(store_owner_gone(f->s, dead));
  assert_false(store_owner_gone(f->s, store_owner(f->s))); /* ourselves */
  assert_false(store_owner_gone(f->s, "other-host:7:1"));  /* only its lease can say */
  assert_false(store_owner_gone(f->s, "x"));
  snprintf(dead, sizeof dead, "%s:4194305:1 9999.000", host);
  assert_int_equal(store_lease_take(f->s, "work.lease", 30, 3000), 1);
  assert_int_equal(store_lease_release(f->s, "work.lease"), 0);
  assert_null(store_kv_get(f->s, "work.lease"));
}

/* ---- PostgreSQL only ---- */

static void test_pg_tables_live_in_the_urls_schema(void **state) {
  struct fx *f = *state;
  int v = store_schema_version(f->s);
  assert_int_equal(v, 9); /* SQLite's files say the same (PRAGMA user_version) */
  reopen(f);
  assert_int_equal(store_schema_version(f->s), v);
  put(f->s, "e1", 1, STORE_PUT_NEW);
  PGconn *c = pg_side();
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM information_schema.tables WHERE table_schema = '%s'", f->schema);
  /* events, attempts, links, kv, snapshots, conflicts, changes,
   * event_people, reloads, rate_stamps and schema_version; none of them in
   * public. */
  assert_int_equal(pg_long(c, sql), 11);
  snprintf(sql, sizeof sql, "SELECT version FROM %s.schema_version", f->schema);
  assert_int_equal(pg_long(c, sql), v);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM %s.events WHERE id = 'e1'", f->schema);
  assert_int_equal(pg_long(c, sql), 1);
  assert_int_equal(pg_long(c, "SELECT count(*) FROM information_schema.tables WHERE"
                              " table_schema = 'public' AND table_name = 'events'"),
                   0);
  /* Only the indexes a query uses, as on SQLite: none by type, source or
   * (status, next_at); retry_wait rows by when they are due. */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_indexes WHERE schemaname = '%s' AND tablename = 'events'"
           " AND indexname IN ('events_type_created', 'events_source_created',"
           " 'events_status_next')",
           f->schema);
  assert_int_equal(pg_long(c, sql), 0);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_indexes WHERE schemaname = '%s' AND indexname ="
           " 'events_retry_next' AND indexdef LIKE '%%(next_at) WHERE (status = 3)'",
           f->schema);
  assert_int_equal(pg_long(c, sql), 1);
  PQfinish(c);
}

static void test_pg_refuses_newer_schema_and_bad_names(void **state) {
  struct fx *f = *state;
  store_close(f->s);
  f->s = NULL;
  PGconn *c = pg_side();
  char sql[256];
  snprintf(sql, sizeof sql, "UPDATE %s.schema_version SET version = 999", f->schema);
  pg_exec(c, sql);
  PQfinish(c);
  char err[512];
  assert_null(store_open(f->path, err, sizeof err));
  assert_non_null(strstr(err, "newer than this build knows"));
  char bad[600];
  snprintf(bad, sizeof bad, "%s%cncghl_schema=x;drop", pg_url, strchr(pg_url, '?') ? '&' : '?');
  assert_null(store_open(bad, err, sizeof err));
  assert_non_null(strstr(err, "ncghl_schema"));
}

static void test_pg_messages_never_show_the_password(void **state) {
  (void)state;
  char err[512];
  /* Port 1: nobody listens, the connection fails and says where it tried. */
  assert_null(store_open("postgresql://ncghl:s3cr3t-pw@127.0.0.1:1/db", err, sizeof err));
  assert_null(strstr(err, "s3cr3t-pw"));
  assert_non_null(strstr(err, "postgresql://ncghl:***@127.0.0.1:1/db"));
  /* {target, as shown}: the user-info's password, and libpq's other way to
   * give it, a parameter, wherever it stands. */
  static const char *const shows[][2] = {
      {"postgres://u:pw@h/db?ncghl_schema=a", "postgres://u:***@h/db?ncghl_schema=a"},
      {"postgresql://u@h/db", "postgresql://u@h/db"},
      {"/var/lib/ncghl/a:b@c.db", "/var/lib/ncghl/a:b@c.db"},
      {"postgresql://u@h/db?password=pw2&sslmode=disable",
       "postgresql://u@h/db?password=***&sslmode=disable"},
      {"postgresql://u:pw@h/db?sslmode=disable&password=pw2",
       "postgresql://u:***@h/db?sslmode=disable&password=***"},
      {"postgresql://u@h/db?xpassword=a", "postgresql://u@h/db?xpassword=a"},
  };
  char shown[256];
  for (size_t i = 0; i < sizeof shows / sizeof *shows; i++) {
    store_display_name(shows[i][0], shown, sizeof shown);
    assert_string_equal(shown, shows[i][1]);
  }
  assert_null(store_open("postgresql://ncghl@127.0.0.1:1/db?password=s3cr3t-pw", err, sizeof err));
  assert_null(strstr(err, "s3cr3t-pw"));
}

static void test_pg_url_with_schema(void **state) {
  (void)state;
  char out[256];
  assert_int_equal(store_url_with_schema("postgresql://u:p@h/db", "tenant_1", out, sizeof out), 0);
  assert_string_equal(out, "postgresql://u:p@h/db?ncghl_schema=tenant_1");
  assert_int_equal(store_url_with_schema("postgres://h/db?sslmode=require&ncghl_schema=old"
                                         "&connect_timeout=3",
                                         "acme", out, sizeof out),
                   0);
  assert_string_equal(out, "postgres://h/db?sslmode=require&connect_timeout=3&ncghl_schema=acme");
  assert_int_equal(store_url_with_schema("postgresql://h/db", "1bad", out, sizeof out), -1);
  assert_int_equal(store_url_with_schema("postgresql://h/db", "bad\"name", out, sizeof out), -1);
  assert_int_equal(store_url_with_schema("postgresql://h/db", "bad name", out, sizeof out), -1);
  assert_int_equal(store_url_with_schema("/var/lib/ncghl.db", "acme", out, sizeof out), -1);
  assert_int_equal(store_url_with_schema("postgresql://h/db", "acme", out, 10), -1);
  /* What it builds opens, in that schema. */
  char url[600];
  /* A tenant's '-' too: the schema name is always quoted. */
  assert_int_equal(store_url_with_schema(pg_url, "url-built", url, sizeof url), 0);
  char err[256];
  struct store *s = store_open(url, err, sizeof err);
  assert_non_null(s);
  assert_int_equal(store_kv_put(s, "k", "v"), 0);
  store_close(s);
  PGconn *c = pg_side();
  assert_int_equal(pg_long(c, "SELECT count(*) FROM \"url-built\".kv WHERE key = 'k'"), 1);
  PQfinish(c);
}

/* A user that owns its schema but may not create schemas in the database
 * (a tenant's least privilege) still opens, migrates and writes it. */
static void test_pg_schema_owner_without_create_on_the_database(void **state) {
  (void)state;
  PGconn *c = pg_side();
  pg_exec(c, "DROP SCHEMA IF EXISTS lim CASCADE; DROP ROLE IF EXISTS lim_user;"
             " CREATE ROLE lim_user LOGIN; CREATE SCHEMA lim AUTHORIZATION lim_user;"
             " REVOKE CREATE ON DATABASE ncghl_unit FROM PUBLIC;"
             " REVOKE CREATE ON SCHEMA public FROM PUBLIC");
  /* pg_url is postgresql://<user>:<password>@host:port/db: swap the user. */
  const char *at = strchr(pg_url, '@');
  assert_non_null(at);
  char url[600];
  snprintf(url, sizeof url, "postgresql://lim_user%s?ncghl_schema=lim", at);
  char err[256];
  struct store *s = store_open(url, err, sizeof err);
  if (!s)
    fail_msg("store_open as lim_user: %s", err);
  assert_int_equal(store_schema_version(s), 9);
  put(s, "lim1", 1, STORE_PUT_NEW);
  store_close(s);
  s = store_open(url, err, sizeof err); /* and again, with nothing to create */
  assert_non_null(s);
  assert_int_equal(status_of(s, "lim1"), EV_PENDING);
  store_close(s);
  pg_exec(c, "GRANT CREATE ON DATABASE ncghl_unit TO PUBLIC");
  PQfinish(c);
}

static void test_pg_errors_are_logged_with_the_servers_message(void **state) {
  struct fx *f = *state;
  char logpath[320];
  snprintf(logpath, sizeof logpath, "%s/store.log", f->dir);
  assert_int_equal(log_init(LOGL_ERROR, logpath), 0);
  assert_int_equal(store_attempt_add(f->s, "ghost", 1, "ghl", "GET", "u", 200, NULL, 1, 1), -1);
  log_init(LOGL_INFO, NULL);
  assert_int_equal(store_last_fault(f->s), STORE_FAULT_OTHER);
  FILE *fp = fopen(logpath, "r");
  assert_non_null(fp);
  char buf[2048] = "";
  size_t n = fread(buf, 1, sizeof buf - 1, fp);
  buf[n] = '\0';
  fclose(fp);
  /* An attempt of an unknown event has no event_seq to point at. */
  assert_non_null(strstr(buf, "store: attempt_add: ERROR:  null value in column \"event_seq\""
                              " of relation \"attempts\" violates not-null constraint"));
}

/* Two nodes claim at the same moment: the second skips the rows the first
 * holds locked (FOR UPDATE SKIP LOCKED) instead of waiting for them or
 * taking them twice. */
static void test_pg_two_connections_never_claim_the_same_event(void **state) {
  struct fx *f = *state;
  char err[256];
  struct store *other = store_open(f->path, err, sizeof err);
  assert_non_null(other);
  for (int i = 0; i < 30; i++) {
    char id[16];
    snprintf(id, sizeof id, "c%02d", i);
    put(f->s, id, 1 + i, STORE_PUT_NEW);
  }
  struct store_event a[10], b[10];
  int na = 0, nb = 0;
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_claim_due(f->s, 100, 10, a, &na), 0);
  /* f->s has not committed: its ten rows are locked, not yet running. */
  assert_int_equal(store_claim_due(other, 100, 10, b, &nb), 0);
  assert_int_equal(store_commit(f->s), 0);
  assert_int_equal(na, 10);
  assert_int_equal(nb, 10);
  for (int i = 0; i < 10; i++)
    for (int j = 0; j < 10; j++)
      assert_string_not_equal(a[i].id, b[j].id);
  /* Each took the oldest it could: f->s the first ten, other the next. */
  assert_string_equal(a[0].id, "c00");
  assert_string_equal(b[0].id, "c10");
  /* A claim by id of a row the other holds locked answers "not claimed". */
  put(f->s, "solo", 200, STORE_PUT_NEW);
  assert_int_equal(store_begin(f->s), 0);
  assert_int_equal(store_event_claim(f->s, "solo", 201), 1);
  assert_int_equal(store_event_claim(other, "solo", 201), 0);
  assert_int_equal(store_commit(f->s), 0);
  assert_int_equal(store_event_claim(other, "solo", 202), 0); /* running now */
  for (int i = 0; i < 10; i++) {
    store_event_free(&a[i]);
    store_event_free(&b[i]);
  }
  long c[EV_STATUS_COUNT];
  assert_int_equal(store_count_by_status(other, c), 0);
  assert_int_equal(c[EV_RUNNING], 21);
  assert_int_equal(c[EV_PENDING], 10);
  store_close(other);
}

static int count_running(void *ud, const char *id, const char *owner, double at) {
  (void)id;
  (void)owner;
  (void)at;
  (*(int *)ud)++;
  return 0;
}

/* At start a node queues again only the rows nobody works on: its own
 * host's dead processes', those of owners whose lease lapsed, unowned
 * ones; never a live node's. */
static void test_pg_recover_leaves_live_nodes_rows(void **state) {
  struct fx *f = *state;
  const char *ids[] = {"live", "lapsed", "deadpid", "unowned"};
  for (int i = 0; i < 4; i++) {
    put(f->s, ids[i], 1, STORE_PUT_NEW);
    assert_int_equal(store_event_claim(f->s, ids[i], 2), 1);
  }
  char host[128];
  snprintf(host, sizeof host, "%s", store_owner(f->s));
  *strchr(host, ':') = '\0';
  double now = (double)time(NULL);
  char sql[1024];
  /* pid 2^22+1 is above Linux's pid_max default: no such process. */
  snprintf(sql, sizeof sql,
           "SET search_path TO %s;"
           "UPDATE events SET owner = 'other-host:7:1' WHERE id = 'live';"
           "UPDATE events SET owner = 'gone-host:8:1' WHERE id = 'lapsed';"
           "UPDATE events SET owner = '%s:4194305:1' WHERE id = 'deadpid';"
           "UPDATE events SET owner = NULL WHERE id = 'unowned';"
           "INSERT INTO kv VALUES ('lease.other-host:7:1', '%.0f');"
           "INSERT INTO kv VALUES ('lease.gone-host:8:1', '%.0f');",
           f->schema, host, now, now - STORE_LEASE_TTL - 5);
  PGconn *c = pg_side();
  pg_exec(c, sql);
  PQfinish(c);
  int n = -1;
  assert_int_equal(store_recover_running(f->s, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(status_of(f->s, "live"), EV_RUNNING);
  for (int i = 1; i < 4; i++)
    assert_int_equal(status_of(f->s, ids[i]), EV_PENDING);
  int running = 0;
  assert_int_equal(store_running_list(f->s, count_running, &running), 0);
  assert_int_equal(running, 1);
}

/* Two nodes share one window: together they get the limit, not twice it. */
static void test_pg_two_connections_share_a_rate_window(void **state) {
  struct fx *f = *state;
  char err[256];
  struct store *other = store_open(f->path, err, sizeof err);
  assert_non_null(other);
  int allowed = 0;
  for (int i = 0; i < 10; i++) {
    double wait = -1;
    assert_int_equal(store_rate_take(i % 2 ? other : f->s, "ghl:shared", 4, 10, 50 + i * 0.1,
                                     &wait),
                     0);
    allowed += wait == 0;
  }
  assert_int_equal(allowed, 4);
  store_close(other);
}

static void kill_other_backends(void) {
  PGconn *c = pg_side();
  pg_exec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
             " current_database() AND pid <> pg_backend_pid()");
  PQfinish(c);
}

/* The server closing the connection between transactions costs nothing:
 * the next transaction connects again (and finds its schema again). Inside
 * a transaction the loss is reported, and that transaction is gone. */
static void test_pg_reconnects_between_transactions(void **state) {
  struct fx *f = *state;
  put(f->s, "before", 1, STORE_PUT_NEW);
  kill_other_backends();
  assert_int_equal(store_begin(f->s), 0);
  put(f->s, "after", 2, STORE_PUT_NEW);
  assert_int_equal(store_commit(f->s), 0);
  assert_int_equal(status_of(f->s, "after"), EV_PENDING);

  assert_int_equal(store_begin(f->s), 0);
  put(f->s, "lost", 3, STORE_PUT_NEW);
  kill_other_backends();
  enum store_put r;
  assert_int_equal(store_event_put(f->s, "lost2", "ghl", "t", "{}", 2, EV_PENDING, 4, 0, &r, NULL),
                   -1);
  assert_int_equal(store_last_fault(f->s), STORE_FAULT_IO);
  assert_true(store_in_txn(f->s)); /* its caller still has to hear it failed */
  assert_int_equal(store_commit(f->s), -1);
  assert_false(store_in_txn(f->s));
  store_clear_fault(f->s);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "lost", &e), 1); /* never committed */
  assert_int_equal(status_of(f->s, "before"), EV_PENDING);
}

/* A payload is bytes: what is not UTF-8 comes back as it went in. */
static void test_pg_payload_bytes_round_trip(void **state) {
  struct fx *f = *state;
  const char raw[] = "{\"a\":\"\xff\xfe\"}\x00tail";
  enum store_put r;
  assert_int_equal(store_event_put(f->s, "bin", "ghl", "t", raw, sizeof raw - 1, EV_PENDING, 1, 0,
                                   &r, NULL),
                   0);
  struct store_event e;
  assert_int_equal(store_event_get(f->s, "bin", &e), 0);
  assert_int_equal(e.payload_len, sizeof raw - 1);
  assert_memory_equal(e.payload, raw, sizeof raw - 1);
  store_event_free(&e);
  /* Text that is not UTF-8 (an upstream's garbage answer) is still kept. */
  assert_int_equal(store_attempt_add_io(f->s, "bin", 1, "ghl", "GET", "/x", 502, "bad \xc3", 1, 2,
                                        NULL, 0, "\xff\xfe junk", 7),
                   0);
}


int main(void) {
  pg_url = getenv("NCGHL_TEST_PG_URL");
  if (pg_url && !*pg_url)
    pg_url = NULL;
  if (pg_url) {
    /* Everything but what is about SQLite's file (its directory, WAL,
     * PRAGMA user_version, file modes, the locks of another process). */
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test_setup_teardown(test_put_new_then_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_null_optionals_and_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_dead_is_requeued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_dead_keeps_history_and_can_start_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_ttl_expiry_is_new, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_ttl_never_resets_running_and_zero_ttl_never_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_started_and_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_due_order_and_next_at, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_due_inside_caller_txn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_running_and_requeue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attempts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted_batch_is_lost_on_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counts_follow_commits_not_rollbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running_rows_carry_their_owner_and_can_be_released, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_keeps_dead_and_unfinished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forget_only_a_row_that_never_ran, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_tables_live_in_the_urls_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_refuses_newer_schema_and_bad_names, setup, teardown),
        cmocka_unit_test(test_pg_messages_never_show_the_password),
        cmocka_unit_test(test_pg_url_with_schema),
        cmocka_unit_test(test_pg_schema_owner_without_create_on_the_database),
        cmocka_unit_test_setup_teardown(test_pg_errors_are_logged_with_the_servers_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_two_connections_never_claim_the_same_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_recover_leaves_live_nodes_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_take_is_a_sliding_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_goes_to_one_owner_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_two_connections_share_a_rate_window, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pg_reconnects_between_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pg_payload_bytes_round_trip, setup, teardown),
    };
    return cmocka_run_group_tests_name("store on PostgreSQL", pg_tests, NULL, NULL);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_names),
      cmocka_unit_test_setup_teardown(test_open_creates_dirs_and_migrates_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_refuses_newer_schema, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_fails_on_unmakeable_dir, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_new_then_duplicate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_null_optionals_and_bad_args, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_dead_is_requeued, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_dead_keeps_history_and_can_start_running, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_ttl_expiry_is_new, setup, teardown),
      cmocka_unit_test_setup_teardown(test_put_ttl_never_resets_running_and_zero_ttl_never_expires, setup, teardown),
      cmocka_unit_test_setup_teardown(test_claim_started_and_finish, setup, teardown),
      cmocka_unit_test_setup_teardown(test_claim_due_order_and_next_at, setup, teardown),
      cmocka_unit_test_setup_teardown(test_claim_due_inside_caller_txn, setup, teardown),
      cmocka_unit_test_setup_teardown(test_recover_running_and_requeue, setup, teardown),
      cmocka_unit_test_setup_teardown(test_list_and_counts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_attempts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_links, setup, teardown),
      cmocka_unit_test_setup_teardown(test_link_delete, setup, teardown),
      cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
      cmocka_unit_test_setup_teardown(test_conflicts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_migration_turns_fingerprints_into_snapshots, setup, teardown),
      cmocka_unit_test_setup_teardown(test_migration_keeps_events_people_and_attempts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_autocheckpoint_bounds_the_wal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors_are_logged_with_sqlite_message, setup, teardown),
      cmocka_unit_test_setup_teardown(test_writable, setup, teardown),
      cmocka_unit_test_setup_teardown(test_writable_false_on_read_only_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_survives_reopen, setup, teardown),
      cmocka_unit_test_setup_teardown(test_uncommitted_batch_is_lost_on_close, setup, teardown),
      cmocka_unit_test_setup_teardown(test_counts_follow_commits_not_rollbacks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_running_rows_carry_their_owner_and_can_be_released, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retention_keeps_dead_and_unfinished, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forget_only_a_row_that_never_ran, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rate_take_is_a_sliding_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_goes_to_one_owner_at_a_time, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
