/* Unit tests for pii: every field name that says it holds a name, phone or
 * e-mail masks its value, whatever its case and underscores, in JSON,
 * key=value and OData forms; names that only look alike (longer, shorter,
 * plural) leave their value alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pii.h"

static const char *mask(const char *in) {
  static char out[512];
  pii_mask(in, strlen(in), out, sizeof out);
  return out;
}

static void assert_masked_as(const char *key, const char *value, const char *want) {
  char in[256], expect[256];
  snprintf(in, sizeof in, "{\"%s\":\"%s\"}", key, value);
  snprintf(expect, sizeof expect, "{\"%s\":\"%s\"}", key, want);
  assert_string_equal(mask(in), expect);
}

static void test_every_named_field_is_masked(void **state) {
  (void)state;
  static const char *const names[] = {"firstname", "lastname", "middlename", "fullname",
                                      "contactname", "insuredname"};
  static const char *const phones[] = {"phone", "phonenumber", "cellphone", "mobile",
                                       "mobilephone", "homephone", "workphone",
                                       "businessphone", "fax", "sms"};
  static const char *const emails[] = {"email", "emailaddress", "email2", "email3"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    assert_masked_as(names[i], "Jane", "J***");
  for (size_t i = 0; i < sizeof phones / sizeof *phones; i++)
    assert_masked_as(phones[i], "x5551234567", "***4567");
  for (size_t i = 0; i < sizeof emails / sizeof *emails; i++)
    assert_masked_as(emails[i], "jane@example.com", "j***@e***.com");
}

static void test_case_and_underscores_do_not_matter(void **state) {
  (void)state;
  assert_masked_as("firstName", "Jane", "J***");
  assert_masked_as("First_Name", "Jane", "J***");
  assert_masked_as("BUSINESS_PHONE", "x5551234567", "***4567");
  assert_masked_as("Email_Address", "jane@example.com", "j***@e***.com");
  assert_masked_as("e_m_a_i_l", "Jane", "J***");
  assert_string_equal(mask("GET /x?First_Name=Jane&id=7"), "GET /x?First_Name=J***&id=7");
  assert_string_equal(mask("$filter=lastName eq 'Doe'"), "$filter=lastName eq 'D***'");
}

static void test_names_that_only_look_alike_are_left(void **state) {
  (void)state;
  static const char *const others[] = {"name",    "firstnames", "phon",     "emails",
                                       "email4",  "faxes",      "smss",     "mobil",
                                       "lastnam", "phone_id",   "contactid", "fullnames",
                                       "x",       "businessphones"};
  for (size_t i = 0; i < sizeof others / sizeof *others; i++)
    assert_masked_as(others[i], "Jane", "Jane");
  /* Too long to be one of them, underscores or not. */
  assert_masked_as("a_very_long_field_name_that_is_no_key_at_all", "Jane", "Jane");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_named_field_is_masked),
      cmocka_unit_test(test_case_and_underscores_do_not_matter),
      cmocka_unit_test(test_names_that_only_look_alike_are_left),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
