/* tenant.h's pure parts: which names may name a tenant, and where each
 * tenant's store lives (SQLite beside DB_PATH, or its own PostgreSQL
 * schema), so two tenants can never share one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tenant.h"

static void test_names(void **state) {
  (void)state;
  const char *good[] = {"a", "agency1", "acme-insurance", "a_b", "0", "abcdefghijabcdefghijabcdefghijabcdefghij"};
  const char *bad[] = {"", "A", "-a", "_a", "a.b", "a b", "a/b", "..", "é",
                       "abcdefghijabcdefghijabcdefghijabcdefghijk"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++)
    assert_true(tenant_name_ok(good[i]));
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    assert_false(tenant_name_ok(bad[i]));
  assert_false(tenant_name_ok(NULL));
}

static void expect(const char *db, const char *url, const char *name, const char *want) {
  char *got = tenant_store_location(db, url, name);
  assert_non_null(got);
  assert_string_equal(got, want);
  free(got);
}

static void test_store_locations(void **state) {
  (void)state;
  /* The single agency keeps its store exactly where it was. */
  expect("data/ncghl.db", NULL, NULL, "data/ncghl.db");
  expect("data/ncghl.db", "", NULL, "data/ncghl.db");
  expect("data/ncghl.db", "postgresql://u@h/db", NULL, "postgresql://u@h/db");
  /* SQLite: tenants/<name>.db beside DB_PATH. */
  expect("data/ncghl.db", NULL, "a", "data/tenants/a.db");
  expect("/var/lib/ncghl/ncghl.db", NULL, "acme", "/var/lib/ncghl/tenants/acme.db");
  expect("ncghl.db", NULL, "a", "tenants/a.db");
  /* PostgreSQL: the same URL, its own schema. */
  expect("x.db", "postgresql://u@h/db", "a", "postgresql://u@h/db?ncghl_schema=t_a");
  expect("x.db", "postgresql://u@h/db?sslmode=require", "b",
         "postgresql://u@h/db?sslmode=require&ncghl_schema=t_b");
  /* A tenant name's '-' is kept (the schema name is always quoted), and a
   * schema the URL already names is replaced, not doubled. */
  expect("x.db", "postgresql://u@h/db?x=1", "acme-2", "postgresql://u@h/db?x=1&ncghl_schema=t_acme-2");
  expect("x.db", "postgresql://u@h/db?ncghl_schema=s&x=1", "c", "postgresql://u@h/db?x=1&ncghl_schema=t_c");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_store_locations),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
