/* store, what the /ui page reads: the person search, filters and cursor
 * paging of store_event_search, attempt excerpts, the reload history. On a
 * real SQLite file in a fresh temp directory, like test_store.c; with
 * NCGHL_TEST_PG_URL set (ctest's unit_pg/test_store_ui), on PostgreSQL, in
 * a fresh schema per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"

struct fx {
  char dir[64];
  char path[512];
  struct store *s;
};

static int pg_schemas;

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  snprintf(f->dir, sizeof f->dir, "/tmp/ncghl-store-ui-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/ncghl.db", f->dir);
  const char *url = getenv("NCGHL_TEST_PG_URL");
  if (url && *url)
    snprintf(f->path, sizeof f->path, "%s%cncghl_schema=ui_%ld_%d", url,
             strchr(url, '?') ? '&' : '?', (long)getpid(), ++pg_schemas);
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
  char p[600];
  const char *suffix[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
    unlink(p);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

static void put(struct store *s, const char *id, const char *source, const char *type,
                const char *payload, double now) {
  enum store_put r;
  assert_int_equal(store_event_put(s, id, source, type, payload, strlen(payload), EV_PENDING, now,
                                   86400, &r, NULL),
                   0);
  assert_int_equal(r, STORE_PUT_NEW);
}

struct got {
  char ids[16][EVENT_ID_MAX];
  double at[16];
  int n;
};

static int got_cb(void *ud, const struct store_event *e) {
  struct got *g = ud;
  if (g->n < 16) {
    snprintf(g->ids[g->n], EVENT_ID_MAX, "%s", e->id);
    g->at[g->n] = e->created_at;
  }
  g->n++;
  return 0;
}

/* The ids found, comma-joined, newest first. */
static const char *search(struct store *s, const struct store_event_filter *f, int limit,
                          struct got *g) {
  static char out[512];
  memset(g, 0, sizeof *g);
  assert_int_equal(store_event_search(s, f, limit, got_cb, g), 0);
  out[0] = 0;
  for (int i = 0; i < g->n && i < 16; i++)
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s%s", i ? "," : "", g->ids[i]);
  return out;
}

static void seed(struct store *s) {
  put(s, "e1", "nowcerts", "INSURED_INSERT",
      "{\"data\":{\"firstName\":\"Jane\",\"lastName\":\"Doe\",\"eMail\":\"Jane.Doe@Example.com\"}}",
      1);
  put(s, "e2", "ghl", "ContactCreate",
      "{\"type\":\"ContactCreate\",\"email\":\"john@example.com\",\"firstName\":\"John\","
      "\"lastName\":\"Doe\"}",
      2);
  put(s, "e3", "nowcerts", "POLICY_INSERT",
      "{\"data\":{\"insuredEmail\":\"jane.doe@example.com\",\"number\":\"P-1\"}}", 3);
  put(s, "e4", "nowcerts", "INSURED_UPDATE", "{\"data\":{\"commercialName\":\"Acme Roofing\"}}",
      4);
  put(s, "e5", "nowcerts", "FOO", "not json at all", 5);
}

static void test_person_search(void **state) {
  struct fx *f = *state;
  seed(f->s);
  struct got g;
  struct store_event_filter q = {0};
  q.person = "jane.doe@example.com";
  assert_string_equal(search(f->s, &q, 0, &g), "e3,e1"); /* NowCerts' eMail, case folded */
  q.person = "JANE";
  assert_string_equal(search(f->s, &q, 0, &g), "e3,e1"); /* the start of a name or an e-mail */
  q.person = "doe";
  assert_string_equal(search(f->s, &q, 0, &g), "e2,e1");
  q.person = "jane doe";
  /* Every word must start a term of the same event: e3 names only the
   * e-mail, which "doe" does not start. */
  assert_string_equal(search(f->s, &q, 0, &g), "e1");
  q.person = "john   DOE,";
  assert_string_equal(search(f->s, &q, 0, &g), "e2");
  q.person = "jane smith";
  assert_string_equal(search(f->s, &q, 0, &g), "");
  q.person = "acme roof";
  assert_string_equal(search(f->s, &q, 0, &g), "e4");
  q.person = "john";
  q.source = "nowcerts";
  assert_string_equal(search(f->s, &q, 0, &g), "");
}

static void test_filters_and_paging(void **state) {
  struct fx *f = *state;
  seed(f->s);
  /* Three more at one and the same instant: the cursor must not lose or
   * repeat any of them. */
  put(f->s, "t1", "manual", "FOO", "{}", 9);
  put(f->s, "t2", "manual", "FOO", "{}", 9);
  put(f->s, "t3", "manual", "FOO", "{}", 9);
  assert_int_equal(store_event_finish(f->s, "e2", EV_DEAD, 0, "HTTP 400", NULL, 10), 0);
  struct got g;
  struct store_event_filter q = {0};
  assert_string_equal(search(f->s, &q, 0, &g), "t3,t2,t1,e5,e4,e3,e2,e1");
  q.status = "dead";
  assert_string_equal(search(f->s, &q, 0, &g), "e2");
  q.status = NULL;
  q.type = "FOO";
  assert_string_equal(search(f->s, &q, 0, &g), "t3,t2,t1,e5");
  q.source = "manual";
  assert_string_equal(search(f->s, &q, 0, &g), "t3,t2,t1");
  q.type = NULL;
  q.source = NULL;
  q.status = "sleepy";
  assert_int_equal(store_event_search(f->s, &q, 0, got_cb, &g), -1);

  struct store_event_filter p = {0};
  char seen[512] = "";
  int pages = 0;
  for (;;) {
    search(f->s, &p, 3, &g);
    for (int i = 0; i < g.n; i++)
      snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s%s", *seen ? "," : "", g.ids[i]);
    pages++;
    if (g.n < 3)
      break;
    static char last[EVENT_ID_MAX];
    snprintf(last, sizeof last, "%s", g.ids[g.n - 1]);
    p.before_id = last;
    p.before_at = g.at[g.n - 1];
  }
  assert_string_equal(seen, "t3,t2,t1,e5,e4,e3,e2,e1");
  assert_int_equal(pages, 3);

  long n = -1;
  assert_int_equal(store_event_count_since(f->s, 4, &n), 0);
  assert_int_equal(n, 5);
}

static int people_cb(void *ud, const char *term) {
  char *out = ud;
  snprintf(out + strlen(out), 256 - strlen(out), "%s%s", *out ? "|" : "", term);
  return 0;
}

static void test_people_noted(void **state) {
  struct fx *f = *state;
  seed(f->s);
  char out[256] = "";
  assert_int_equal(store_event_people(f->s, "e1", people_cb, out), 0);
  assert_string_equal(out, "doe|jane|jane.doe@example.com");
  out[0] = 0;
  assert_int_equal(store_event_people(f->s, "e5", people_cb, out), 0); /* not JSON: none */
  assert_string_equal(out, "");
}

struct att {
  char *request, *answer;
  int n;
};

static int att_cb(void *ud, const struct store_attempt *a) {
  struct att *t = ud;
  t->n++;
  free(t->request);
  free(t->answer);
  t->request = a->request ? strdup(a->request) : NULL;
  t->answer = a->answer ? strdup(a->answer) : NULL;
  return 0;
}

static void test_attempt_excerpts(void **state) {
  struct fx *f = *state;
  seed(f->s);
  /* An answer longer than the excerpt, with a two-byte character across
   * the cut: the excerpt ends before it, never inside it. */
  size_t len = STORE_EXCERPT_MAX + 100;
  char *big = malloc(len + 1);
  assert_non_null(big);
  memset(big, 'a', len);
  big[STORE_EXCERPT_MAX - 1] = (char)0xC3;
  big[STORE_EXCERPT_MAX] = (char)0xA9;
  big[len] = 0;
  assert_int_equal(store_attempt_add_io(f->s, "e1", 1, "ghl", "POST", "https://ghl/contacts/",
                                        201, NULL, 2.5, 10, "{\"email\":\"x\"}", 13, big, len),
                   0);
  struct att t = {0};
  assert_int_equal(store_attempt_list(f->s, "e1", att_cb, &t), 0);
  assert_int_equal(t.n, 1);
  assert_string_equal(t.request, "{\"email\":\"x\"}");
  assert_non_null(t.answer);
  assert_int_equal(strlen(t.answer), STORE_EXCERPT_MAX - 1);
  free(big);
  /* The plain call keeps no bodies. */
  assert_int_equal(store_attempt_add(f->s, "e2", 1, "ghl", "GET", "u", 200, NULL, 1, 11), 0);
  assert_int_equal(store_attempt_list(f->s, "e2", att_cb, &t), 0);
  assert_null(t.request);
  assert_null(t.answer);
  free(t.request);
  free(t.answer);
}

struct rl {
  char seen[256];
};

static int reload_cb(void *ud, const struct store_reload *r) {
  struct rl *x = ud;
  snprintf(x->seen + strlen(x->seen), sizeof x->seen - strlen(x->seen), "%s%.0f:%s:%s:%s",
           *x->seen ? "|" : "", r->at, r->ok ? "ok" : "error", r->version, r->message);
  return 0;
}

static void test_reloads(void **state) {
  struct fx *f = *state;
  assert_int_equal(store_reload_add(f->s, 100, true, "aaa", "loaded at start"), 0);
  assert_int_equal(store_reload_add(f->s, 200, false, "aaa", "routes.lua:3: syntax"), 0);
  assert_int_equal(store_reload_add(f->s, 300, true, "bbb", NULL), 0);
  struct rl x = {""};
  assert_int_equal(store_reload_list(f->s, 0, reload_cb, &x), 0);
  assert_string_equal(x.seen, "300:ok:bbb:|200:error:aaa:routes.lua:3: syntax|100:ok:aaa:loaded at start");
  x.seen[0] = 0;
  assert_int_equal(store_reload_list(f->s, 1, reload_cb, &x), 0);
  assert_string_equal(x.seen, "300:ok:bbb:");
}

/* What SQLite's json_tree finds under the people rule (the SQL the
 * migrations use for stored events), "|"-joined and sorted. */
static void people_by_sql(const char *payload, char *out, size_t n) {
  sqlite3 *db;
  assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
  sqlite3_stmt *st;
  assert_int_equal(
      sqlite3_prepare_v2(
          db,
          "SELECT DISTINCT lower(trim(t.value)) FROM json_tree(CASE WHEN json_valid(?1) THEN ?1"
          " ELSE '{}' END) AS t WHERE t.type = 'text' AND length(trim(t.value)) BETWEEN 2 AND"
          " 200 AND lower(t.key) IN ('email', 'insuredemail', 'firstname', 'lastname',"
          " 'insuredfirstname', 'insuredlastname', 'first_name', 'last_name', 'name', 'fullname',"
          " 'full_name', 'commercialname', 'contactname', 'companyname') ORDER BY 1",
          -1, &st, NULL),
      SQLITE_OK);
  sqlite3_bind_text(st, 1, payload, -1, SQLITE_STATIC);
  out[0] = 0;
  while (sqlite3_step(st) == SQLITE_ROW)
    snprintf(out + strlen(out), n - strlen(out), "%s%s", *out ? "|" : "",
             (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* Intake finds the people in C; it must find what json_tree finds: every
 * depth, arrays, keys in any case, ASCII-only folding, spaces-only trim,
 * length in characters, duplicates once, wrong types and non-JSON skipped. */
static void test_people_in_c_match_json_tree(void **state) {
  struct fx *f = *state;
  const char *payloads[] = {
      "{\"data\":{\"firstName\":\"Jane\",\"lastName\":\"Doe\",\"eMail\":\"Jane.Doe@Example.com\"}}",
      "{\"EMAIL\":\"  A@B.CO  \",\"Name\":\"x\",\"fullName\":\"  \",\"first_name\":\"Ab\"}",
      "{\"contacts\":[{\"email\":\"one@x.com\"},{\"email\":\"two@x.com\",\"name\":\"Two\"}],"
      "\"email\":[\"in-an-array@x.com\"],\"companyName\":\"ACME Roofing\"}",
      "{\"name\":\"\u00c9lodie \u00c9MILE\",\"lastname\":\"\u00e9\u00e9\",\"firstname\":\"\u00e9\"}",
      "{\"email\":\"dup@x.com\",\"insuredEmail\":\"DUP@x.com\",\"email\":\"dup@x.com\"}",
      "{\"email\":12,\"name\":null,\"firstName\":true,\"lastName\":{\"name\":\"deep\"}}",
      "{\"commercialName\":\"\tTabbed Co\t\",\"contactName\":\"a\u00a0b\"}",
      "[{\"full_name\":\"Top Array\"}]",
      "not json at all",
  };
  char id[16], by_c[1024], by_sql[1024];
  for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
    snprintf(id, sizeof id, "p%zu", i);
    put(f->s, id, "nowcerts", "T", payloads[i], (double)i + 1);
    by_c[0] = 0;
    assert_int_equal(store_event_people(f->s, id, people_cb, by_c), 0);
    people_by_sql(payloads[i], by_sql, sizeof by_sql);
    assert_string_equal(by_c, by_sql);
  }
  /* Not vacuous: the rule found something where it should. */
  by_c[0] = 0;
  assert_int_equal(store_event_people(f->s, "p2", people_cb, by_c), 0);
  assert_string_equal(by_c, "acme roofing|one@x.com|two|two@x.com"); /* not the array's */
}

int main(void) {
  const char *pg = getenv("NCGHL_TEST_PG_URL");
  if (!pg || !*pg) {
    /* SQLite's own rule; PostgreSQL finds the people with its function. */
    const struct CMUnitTest sqlite_only[] = {
        cmocka_unit_test_setup_teardown(test_people_in_c_match_json_tree, setup, teardown),
    };
    if (cmocka_run_group_tests(sqlite_only, NULL, NULL) != 0)
      return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_person_search, setup, teardown),
      cmocka_unit_test_setup_teardown(test_filters_and_paging, setup, teardown),
      cmocka_unit_test_setup_teardown(test_people_noted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_attempt_excerpts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reloads, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
