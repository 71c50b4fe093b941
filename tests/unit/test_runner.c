/* The offline runner (ncghl test / check / map): the shipped cases pass, a
 * wrong expectation fails with a readable diff, a case file that is not well
 * formed names its file and line, answers are consumed in order and the rest
 * get the default answers, and a dry run prints the requests and the field
 * trace as JSON. Everything runs on the real runtime and the repository's
 * scripts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "json.h"
#include "log.h"
#include "runner.h"

#ifndef NCGHL_SOURCE_DIR
#define NCGHL_SOURCE_DIR "."
#endif

struct world {
  struct config cfg;
  char dir[64];
  char *out;
  size_t outlen;
};

static int setup(void **state) {
  struct world *w = calloc(1, sizeof(*w));
  assert_non_null(w);
  snprintf(w->dir, sizeof(w->dir), "/tmp/ncghl-runner-XXXXXX");
  assert_non_null(mkdtemp(w->dir));
  w->cfg.lua_dir = NCGHL_SOURCE_DIR "/lua";
  w->cfg.mappings_dir = NCGHL_SOURCE_DIR "/mappings";
  w->cfg.lua_memory_mb = 32;
  w->cfg.lua_instruction_budget = 2000000;
  *state = w;
  return 0;
}

static void rm_tree(const char *dir, int depth) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    if (remove(path) != 0 && depth < 3)
      rm_tree(path, depth + 1);
  }
  closedir(d);
  rmdir(dir);
}

static int teardown(void **state) {
  struct world *w = *state;
  rm_tree(w->dir, 0);
  free(w->out);
  free(w);
  return 0;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static struct runner *new_runner(struct world *w) {
  char err[1024] = "";
  struct runner *r = runner_new(&w->cfg, NULL, NULL, NULL, err, sizeof(err));
  if (!r)
    fail_msg("runner_new: %s", err);
  return r;
}

/* Runs the cases of `text` (written to a file); returns the runner's exit
 * status and leaves its output in w->out. */
static int run_text(struct world *w, const char *text, struct runner_report *rep, char *first,
                    size_t firstlen) {
  char path[128], err[1024];
  snprintf(path, sizeof(path), "%s/cases.lua", w->dir);
  write_file(path, text);
  struct runner *r = new_runner(w);
  if (runner_load_file(r, path, err, sizeof(err)) < 0)
    fail_msg("load: %s", err);
  free(w->out);
  w->out = NULL;
  FILE *out = open_memstream(&w->out, &w->outlen);
  assert_non_null(out);
  int rc = runner_run(r, 1, out, rep, first, firstlen);
  fclose(out);
  runner_free(r);
  return rc;
}

static void assert_contains(const char *hay, const char *needle) {
  if (!hay || !strstr(hay, needle))
    fail_msg("expected to find\n  %s\nin\n%s", needle, hay ? hay : "(null)");
}

/* ------------------------------------------------------------------------ */

static void test_the_shipped_cases_pass(void **state) {
  struct world *w = *state;
  struct runner *r = new_runner(w);
  char err[1024];
  int n = runner_load_dir(r, NCGHL_SOURCE_DIR "/mappings/tests", err, sizeof(err));
  if (n < 0)
    fail_msg("load: %s", err);
  assert_true(n >= 20);
  assert_int_equal(runner_case_count(r), n);
  FILE *out = open_memstream(&w->out, &w->outlen);
  struct runner_report rep;
  char first[1024];
  int rc = runner_run(r, 2, out, &rep, first, sizeof(first));
  fclose(out);
  if (rc != 0)
    fail_msg("%s\n%s", first, w->out);
  assert_int_equal(rep.passed, n);
  assert_int_equal(rep.failed, 0);
  assert_int_equal(rep.runs, 2L * n); /* two rounds, one printed */
  assert_contains(w->out, "ok   " NCGHL_SOURCE_DIR "/mappings/tests/contacts_to_ghl.lua: "
                          "insured insert creates a GHL contact\n");
  assert_null(strstr(w->out, "FAIL"));
  runner_free(r);
}

static const char WRONG[] =
    "return {\n"
    "  { name = \"right\",\n"
    "    source = \"nowcerts\",\n"
    "    body = { event_type = \"INSURED_INSERT\", data = { firstName = \"Jane\", email = \"jane@x.com\" } },\n"
    "    expect = { outcome = \"done\", data = { action = \"created\" } } },\n"
    "  { name = \"wrong email\",\n"
    "    source = \"nowcerts\",\n"
    "    body = { event_type = \"INSURED_INSERT\", data = { firstName = \"Jane\", email = \"jane@x.com\" } },\n"
    "    answers = { { service = \"ghl\", method = \"POST\", path = \"/contacts/\", status = 201,\n"
    "                  body = { contact = { id = \"c1\" } } } },\n"
    "    expect = { outcome = \"done\",\n"
    "      requests = { { service = \"ghl\", method = \"POST\", path = \"/contacts/\",\n"
    "                     body = { email = \"jane@y.com\" } } } } },\n"
    "}\n";

static void test_a_wrong_expectation_fails_with_a_diff(void **state) {
  struct world *w = *state;
  struct runner_report rep;
  char first[1024];
  assert_int_equal(run_text(w, WRONG, &rep, first, sizeof(first)), 1);
  assert_int_equal(rep.passed, 1);
  assert_int_equal(rep.failed, 1);
  assert_contains(w->out, "ok   ");
  assert_contains(w->out, "/cases.lua: right\n");
  assert_contains(w->out, "FAIL ");
  assert_contains(w->out, "/cases.lua: wrong email\n");
  /* The first difference, with the case's file and line. */
  assert_contains(first, "/cases.lua:6: case \"wrong email\": request 1 (ghl POST /contacts/) "
                         "differs from actual request 2 at body.email: expected \"jane@y.com\", "
                         "got \"jane@x.com\"");
  /* Expected against actual: every request made, in order, with its body
   * and the answer it got. */
  assert_contains(w->out, "    expected:\n");
  assert_contains(w->out, "request  1. ghl POST /contacts/ body {\"email\":\"jane@y.com\"}");
  assert_contains(w->out, "    actual:\n");
  assert_contains(w->out, "request  1. ghl POST /contacts/search body {\"filters\":");
  assert_contains(w->out, "request  2. ghl POST /contacts/ body {\"email\":\"jane@x.com\"");
  assert_contains(w->out, "-> 201 (fixture)");
  assert_contains(w->out, "-> 200 (default)");
}

static void test_outcomes_errors_and_markers(void **state) {
  struct world *w = *state;
  static const char text[] =
      "return {\n"
      "  { name = \"400 fails\", source = \"nowcerts\",\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\" } },\n"
      "    answers = { { service = \"ghl\", path = \"/contacts/\", status = 400, body = { message = \"no\" } } },\n"
      "    expect = { outcome = \"failed\", error = \"HTTP 400\" } },\n"
      "  { name = \"429 retries\", source = \"nowcerts\",\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\" } },\n"
      "    answers = { { service = \"ghl\", status = 429, body = \"slow down\" } },\n"
      "    expect = { outcome = \"retry\", request_count = 1 } },\n"
      "  { name = \"no answer retries\", source = \"ghl\",\n"
      "    body = { type = \"ContactCreate\", id = \"g1\", email = \"a@x.com\" },\n"
      "    answers = { { service = \"nowcerts\", status = 0, error = \"connection refused\" } },\n"
      "    expect = { outcome = \"retry\", error = \"connection error: connection refused\" } },\n"
      "  { name = \"status 0 fails\", source = \"ghl\",\n"
      "    body = { type = \"ContactCreate\", id = \"g1\", email = \"a@x.com\", firstName = \"A\", lastName = \"B\" },\n"
      "    answers = { { service = \"nowcerts\", method = \"POST\", status = 200,\n"
      "                  body = { status = 0, message = \"nope\" } } },\n"
      "    expect = { outcome = \"failed\", error = \"status 0: nope\" } },\n"
      /* Answers are consumed in order: the first search finds nobody, the
       * second (by phone) finds c5. */
      "  { name = \"answers in order\", source = \"nowcerts\",\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\", phone = \"5550001111\" } },\n"
      "    answers = {\n"
      "      { service = \"ghl\", path = \"/contacts/search\", body = { contacts = {} } },\n"
      "      { service = \"ghl\", path = \"/contacts/search\",\n"
      "        body = { contacts = { { id = \"c5\", phone = \"+15550001111\" } } } } },\n"
      "    expect = { outcome = \"done\",\n"
      "      requests = {\n"
      "        { path = \"/contacts/search\", body = { filters = { { field = \"email\" } } } },\n"
      "        { path = \"/contacts/search\", body = { filters = { { field = \"phone\" } } } },\n"
      "        { method = \"put\", path = \"/contacts/c5\", body = { locationId = ABSENT, email = ANY } } },\n"
      "      request_count = 4,\n"
      "      data = { contact_id = \"c5\", found_by = \"phone\" } } },\n"
      /* A query is matched as a subset of the decoded query string. */
      "  { name = \"query subset\", source = \"ghl\",\n"
      "    body = { type = \"ContactCreate\", id = \"g2\", email = \"O'Brien@x.com\" },\n"
      "    expect = { requests = { { service = \"nowcerts\", method = \"GET\", path = \"/InsuredDetailList\",\n"
      "      query = { [\"$filter\"] = \"tolower(eMail) eq 'o''brien@x.com' or tolower(eMail2) eq\"\n"
      "        .. \" 'o''brien@x.com' or tolower(eMail3) eq 'o''brien@x.com'\" } } } } },\n"
      "  { name = \"a case's config wins\", source = \"nowcerts\",\n"
      "    config = { GHL_LOCATION_ID = \"loc-9\" },\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\" } },\n"
      "    expect = { requests = { { path = \"/contacts/\", body = { locationId = \"loc-9\" } } } } },\n"
      "}\n";
  struct runner_report rep;
  char first[1024];
  if (run_text(w, text, &rep, first, sizeof(first)) != 0)
    fail_msg("%s", w->out);
  assert_int_equal(rep.passed, 7);

  /* The same markers, failing: each names what it wanted. */
  static const char bad[] =
      "return {\n"
      "  { name = \"absent\", source = \"nowcerts\",\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\" } },\n"
      "    expect = { requests = { { path = \"/contacts/\", body = { locationId = ABSENT } } } } },\n"
      "  { name = \"list length\", source = \"nowcerts\",\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\" } },\n"
      "    expect = { requests = { { path = \"/contacts/\", body = { tags = { \"nowcerts\", \"x\" } } } } } },\n"
      "  { name = \"not made\", source = \"nowcerts\",\n"
      "    body = { event_type = \"INSURED_INSERT\", data = { email = \"a@x.com\" } },\n"
      "    expect = { requests = { { path = \"/contacts/\" }, { path = \"/contacts/search\" } } } },\n"
      "  { name = \"outcome\", source = \"nowcerts\",\n"
      "    body = { event_type = \"NOPE\", data = {} },\n"
      "    expect = { outcome = \"done\" } },\n"
      "}\n";
  assert_int_equal(run_text(w, bad, &rep, first, sizeof(first)), 1);
  assert_int_equal(rep.failed, 4);
  assert_contains(w->out, "at body.locationId: expected no value, got \"loc-1\"");
  assert_contains(w->out, "at body.tags: expected [\"nowcerts\",\"x\"] (2 items), got [\"nowcerts\"] (1 item)");
  assert_contains(w->out, "request 2 (* * /contacts/search) was not made after request 2");
  assert_contains(w->out, "outcome: expected done, got ignored");
}

static void test_case_files_that_are_not_well_formed(void **state) {
  struct world *w = *state;
  static const struct {
    const char *text, *want;
  } bad[] = {
    {"return {\n  { name = = 1 },\n}\n", "cases.lua:2:"},
    {"return 42\n", "cases.lua:1: a test case file must return a list of cases"},
    {"return {\n  { name = \"a\", source = \"nowcerts\", body = {},\n    expect = {}, expects = {} },\n}\n",
     "cases.lua:2: case \"a\" a case has no field \"expects\" (a typo?)"},
    {"return {\n  { name = \"b\", source = \"zapier\", body = {}, expect = {} },\n}\n",
     "source must be \"nowcerts\", \"ghl\" or \"manual\""},
    {"return {\n\n  { name = \"c\", source = \"ghl\", body = { type = \"X\" } },\n}\n",
     "cases.lua:3: case \"c\" expect is missing"},
    {"return {\n  { name = \"d\", source = \"ghl\", body = { type = \"X\" },\n"
     "    answers = { { path = \"/a?b=1\" } }, expect = {} },\n}\n",
     "answers[1].path must be the path without its query"},
    {"return {\n  { name = \"e\", source = \"ghl\", body = { type = \"X\" },\n"
     "    expect = { outcome = \"ok\" } },\n}\n",
     "expect.outcome must be \"done\", \"ignored\", \"retry\" or \"failed\""},
    {"return { { source = \"ghl\", body = {}, expect = {} } }\n", "case 1 has no name"},
    /* A case file is agency code too: the same budget and memory cap. */
    {"local n = 0\nwhile true do n = n + 1 end\n", "cases.lua:2: instruction budget exceeded"},
    {"local s = string.rep('x', 1 << 30)\nreturn {}\n", "not enough memory"},
  };
  char path[128];
  snprintf(path, sizeof(path), "%s/cases.lua", w->dir);
  struct runner *r = new_runner(w);
  for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
    char err[1024] = "";
    write_file(path, bad[i].text);
    assert_int_equal(runner_load_file(r, path, err, sizeof(err)), -1);
    if (!strstr(err, bad[i].want))
      fail_msg("case file %zu: wanted \"%s\" in \"%s\"", i, bad[i].want, err);
  }
  assert_int_equal(runner_case_count(r), 0);
  runner_free(r);
}

/* A route that never ends is stopped by the instruction budget: the case
 * fails, the run goes on. */
static void test_a_looping_mapping_fails_its_case(void **state) {
  struct world *w = *state;
  char mapdir[128], path[192];
  snprintf(mapdir, sizeof(mapdir), "%s/mappings", w->dir);
  mkdir(mapdir, 0700);
  snprintf(path, sizeof(path), "%s/normalize.lua", mapdir);
  write_file(path, "return function(ev) ev.type = ev.payload.event_type; ev.data = ev.payload.data end\n");
  snprintf(path, sizeof(path), "%s/routes.lua", mapdir);
  write_file(path, "nowcerts.LOOP = function() while true do end end\n"
                   "nowcerts.OK = function() return { fine = true } end\n"
                   "return { nowcerts = nowcerts, ghl = ghl }\n");
  w->cfg.mappings_dir = mapdir;
  static const char text[] =
      "return {\n"
      "  { name = \"loop\", source = \"nowcerts\", body = { event_type = \"LOOP\", data = {} },\n"
      "    expect = { outcome = \"done\" } },\n"
      "  { name = \"after\", source = \"nowcerts\", body = { event_type = \"OK\", data = {} },\n"
      "    expect = { outcome = \"done\", data = { fine = true } } },\n"
      "}\n";
  struct runner_report rep;
  char first[1024];
  assert_int_equal(run_text(w, text, &rep, first, sizeof(first)), 1);
  assert_int_equal(rep.passed, 1);
  assert_int_equal(rep.failed, 1);
  assert_contains(first, "outcome: expected done, got failed");
  assert_contains(first, "routes.lua:1: instruction budget exceeded");
}

/* The reload check: passes on the shipped mappings, and says which case
 * broke otherwise. */
static void test_runner_check(void **state) {
  struct world *w = *state;
  char err[1024] = "";
  int n = 0;
  if (runner_check(&w->cfg, NULL, NULL, NULL, &n, err, sizeof(err)) != 0)
    fail_msg("check: %s", err);
  assert_true(n >= 20);

  /* A mappings directory without tests/ has no cases: nothing to fail. */
  char mapdir[128], path[192];
  snprintf(mapdir, sizeof(mapdir), "%s/mappings", w->dir);
  mkdir(mapdir, 0700);
  w->cfg.mappings_dir = mapdir;
  assert_int_equal(runner_check(&w->cfg, NULL, NULL, NULL, &n, err, sizeof(err)), 0);
  assert_int_equal(n, 0);

  snprintf(path, sizeof(path), "%s/normalize.lua", mapdir);
  write_file(path, "return function(ev) ev.type = ev.payload.event_type; ev.data = ev.payload.data end\n");
  snprintf(path, sizeof(path), "%s/routes.lua", mapdir);
  write_file(path, "nowcerts.OK = function() return { n = 1 } end\nreturn { nowcerts = nowcerts }\n");
  snprintf(path, sizeof(path), "%s/tests", mapdir);
  mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/tests/a.lua", mapdir);
  write_file(path, "return {\n  { name = \"n is 2\", source = \"nowcerts\",\n"
                   "    body = { event_type = \"OK\", data = {} }, expect = { data = { n = 2 } } },\n}\n");
  assert_int_equal(runner_check(&w->cfg, NULL, NULL, NULL, &n, err, sizeof(err)), -1);
  assert_contains(err, "tests/a.lua:2: case \"n is 2\": data.n: expected 2, got 1");
}

/* ------------------------------------------------------------------------ */
/* ncghl map                                                                */

static struct json *map_run(struct world *w, const char *source, const char *body,
                            const char *fixtures) {
  struct runner *r = new_runner(w);
  free(w->out);
  w->out = NULL;
  FILE *out = open_memstream(&w->out, &w->outlen);
  char err[1024];
  int rc = runner_map(r, source, body, strlen(body), fixtures, out, err, sizeof(err));
  fclose(out);
  runner_free(r);
  if (rc != 0)
    fail_msg("map: %s", err);
  struct json *j = json_parse(w->out, w->outlen, err, sizeof(err));
  if (!j)
    fail_msg("map printed something that is not JSON (%s):\n%s", err, w->out);
  return j;
}

static const struct json *request_at(const struct json *doc, size_t i) {
  const struct json *reqs = json_get(doc, "requests");
  assert_int_equal(json_type(reqs), JSON_ARRAY);
  assert_true(i < json_len(reqs));
  return json_at(reqs, i);
}

static void test_map_prints_requests_outcome_and_trace(void **state) {
  struct world *w = *state;
  struct json *doc = map_run(w, "nowcerts",
                             "{\"event_type\":\"INSURED_INSERT\",\"data\":{\"firstName\":\"Jane\","
                             "\"lastName\":\"Doe\",\"eMail\":\"Jane@X.com\",\"zipCode\":\"33601\"}}",
                             NULL);
  assert_string_equal(json_str(json_get(doc, "outcome")), "done");
  assert_string_equal(json_str(json_get(doc, "type")), "INSURED_INSERT");
  /* The search found nobody (the default answer), so the contact is created
   * with a dry-run id. */
  const struct json *search = request_at(doc, 0);
  assert_string_equal(json_str(json_get(search, "service")), "ghl");
  assert_string_equal(json_str(json_get(search, "method")), "POST");
  assert_string_equal(json_str(json_get(search, "path")), "/contacts/search");
  assert_string_equal(json_str(json_get(json_get(search, "answer"), "from")), "default");
  const struct json *create = request_at(doc, 1);
  assert_string_equal(json_str(json_get(create, "path")), "/contacts/");
  const struct json *body = json_get(create, "body");
  assert_string_equal(json_str(json_get(body, "email")), "Jane@X.com");
  assert_string_equal(json_str(json_get(body, "postalCode")), "33601");
  assert_int_equal(json_type(json_get(create, "query")), JSON_OBJECT);
  assert_string_equal(json_str(json_get(json_get(doc, "data"), "contact_id")), "dry-run-contact-1");
  /* Which source field filled which target field. */
  const struct json *maps = json_get(doc, "maps");
  assert_int_equal(json_type(maps), JSON_ARRAY);
  assert_int_equal(json_len(maps), 1);
  const struct json *m = json_at(maps, 0);
  assert_string_equal(json_str(json_get(m, "map")), "contacts.insured_to_contact");
  const struct json *fields = json_get(m, "fields");
  assert_string_equal(json_str(json_get(json_get(fields, "email"), "from")), "eMail");
  assert_string_equal(json_str(json_get(json_get(fields, "postalCode"), "from")), "zipCode");
  assert_string_equal(json_str(json_get(json_get(fields, "source"), "from")), "const");
  assert_string_equal(json_str(json_get(json_get(fields, "source"), "value")), "NowCerts");
  assert_null(json_get(fields, "city"));
  json_free(doc);
}

static void test_map_with_fixtures(void **state) {
  struct world *w = *state;
  char path[128];
  snprintf(path, sizeof(path), "%s/fixtures.lua", w->dir);
  write_file(path, "return {\n  { name = \"found\",\n    answers = {\n"
                   "      { service = \"ghl\", method = \"POST\", path = \"/contacts/search\",\n"
                   "        body = { contacts = { { id = \"c77\", email = \"jane@x.com\" } } } },\n"
                   "    } },\n}\n");
  struct json *doc = map_run(w, "nowcerts",
                             "{\"event_type\":\"INSURED_UPDATE\",\"data\":{\"email\":\"jane@x.com\"}}",
                             path);
  const struct json *put = request_at(doc, 1);
  assert_string_equal(json_str(json_get(put, "method")), "PUT");
  assert_string_equal(json_str(json_get(put, "path")), "/contacts/c77");
  assert_string_equal(json_str(json_get(json_get(request_at(doc, 0), "answer"), "from")), "fixture");
  assert_string_equal(json_str(json_get(json_get(doc, "data"), "action")), "updated");
  json_free(doc);

  /* A GHL contact goes to NowCerts: the list lookup comes back empty, the
   * create answers with a dry-run id. */
  doc = map_run(w, "ghl",
                "{\"type\":\"ContactCreate\",\"id\":\"g1\",\"firstName\":\"Al\",\"lastName\":\"Bo\","
                "\"email\":\"al@x.com\"}",
                NULL);
  assert_string_equal(json_str(json_get(request_at(doc, 0), "path")), "/InsuredDetailList");
  assert_string_equal(json_str(json_get(json_get(request_at(doc, 0), "query"), "$filter")),
                      "tolower(eMail) eq 'al@x.com' or tolower(eMail2) eq 'al@x.com' or "
                      "tolower(eMail3) eq 'al@x.com'");
  assert_string_equal(json_str(json_get(request_at(doc, 1), "path")), "/Insured/OnlyInsertInsured");
  assert_string_equal(json_str(json_get(json_get(doc, "data"), "insured_id")),
                      "00000000-0000-4000-8000-000000000001");
  json_free(doc);
}

static void test_map_refuses_bad_input(void **state) {
  struct world *w = *state;
  struct runner *r = new_runner(w);
  char err[1024];
  FILE *out = open_memstream(&w->out, &w->outlen);
  assert_int_equal(runner_map(r, "nowcerts", "[1,", 3, NULL, out, err, sizeof(err)), -1);
  assert_contains(err, "not JSON");
  assert_int_equal(runner_map(r, "nowcerts", "{}", 2, "/nonexistent/f.lua", out, err, sizeof(err)),
                   -1);
  assert_contains(err, "/nonexistent/f.lua");
  fclose(out);
  assert_int_equal(w->outlen, 0);
  runner_free(r);
}

int main(void) {
  log_init(LOGL_ERROR, NULL);
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_the_shipped_cases_pass, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_wrong_expectation_fails_with_a_diff, setup, teardown),
    cmocka_unit_test_setup_teardown(test_outcomes_errors_and_markers, setup, teardown),
    cmocka_unit_test_setup_teardown(test_case_files_that_are_not_well_formed, setup, teardown),
    cmocka_unit_test_setup_teardown(test_a_looping_mapping_fails_its_case, setup, teardown),
    cmocka_unit_test_setup_teardown(test_runner_check, setup, teardown),
    cmocka_unit_test_setup_teardown(test_map_prints_requests_outcome_and_trace, setup, teardown),
    cmocka_unit_test_setup_teardown(test_map_with_fixtures, setup, teardown),
    cmocka_unit_test_setup_teardown(test_map_refuses_bad_input, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
