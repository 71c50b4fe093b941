/* Unit tests for pii: every field name that says it holds a name, phone or
 * e-mail masks its value, whatever its case and underscores, in JSON,
 * key=value and OData forms; names that only look alike (longer, shorter,
 * plural) leave their value alone. In free text, US phone numbers in their
 * usual forms are masked and the numbers a log line holds besides (ids,
 * times, addresses, sizes, versions) are not. */
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
                                      "contactname", "insuredname", "firstNameLowerCase",
                                      "lastNameLowerCase", "fullNameLowerCase"};
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

/* Free text puts a number anywhere: mid-sentence, ending one, quoted in an
 * upstream's JSON error, alone, in brackets, as a query value. */
static const char *const contexts[][2] = {
    {"call ", " now"}, {"phone: ", "."},     {"{\"message\":\"Invalid phone ", "\"}"},
    {"", ""},          {"(", ")"},           {"GET /contacts?query=", "&limit=1"},
    {"a ", ", b"},     {"'", "' is taken"},
};

static void assert_in_every_context(const char *value, const char *want) {
  for (size_t i = 0; i < sizeof contexts / sizeof *contexts; i++) {
    char in[256], expect[256];
    snprintf(in, sizeof in, "%s%s%s", contexts[i][0], value, contexts[i][1]);
    snprintf(expect, sizeof expect, "%s%s%s", contexts[i][0], want, contexts[i][1]);
    assert_string_equal(mask(in), expect);
  }
}

static void test_us_phones_in_free_text_are_masked(void **state) {
  (void)state;
  static const char *const phones[] = {
      "555-987-6543",    "(555) 987-6543",       "(555)987-6543",  "5559876543",
      "555.987.6543",    "555 987 6543",         "1-555-987-6543", "1 (555) 987-6543",
      "1.555.987.6543",  "15559876543",          "+1 555 987 6543", "+15559876543",
      "+1-555-987-6543", "%28555%29%20987-6543", "%2B15559876543", "555%2D987%2D6543",
  };
  for (size_t i = 0; i < sizeof phones / sizeof *phones; i++)
    assert_in_every_context(phones[i], "***6543");
  /* Two in a row, and one between encoded quotes as an OData filter has it. */
  assert_string_equal(mask("555-987-6543,555.987.1234"), "***6543,***1234");
  assert_string_equal(mask("q=%27555-987-6543%27"), "q=%27***6543%27");
}

static void test_numbers_that_are_no_phones_are_left(void **state) {
  (void)state;
  static const char *const others[] = {
      /* Event ids, UUIDs, timestamps, addresses. */
      "nowcerts_649dc8fc5e2d5559876543ab", "ghl_5559876543", "097a7076-7666-4c8b-81e9-e2eb8dc1d25c",
      "55598765-4321-4c8b-81e9-555987654321", "2026-12-07T23:44:03.351Z", "2026-12-07 23:44:03",
      "127.0.0.1:8101", "10.0.0.1 8101", "[::1]:8101", "12-07-2026",
      /* Sizes, durations, counts, versions, statuses, schema numbers. */
      "1234567 bytes", "1234 ms", "2026-12-07 1234", "ncghl 1.4.0 1234567", "v2.10.3",
      "HTTP/1.1 503", "status 429", "schema version 12", "5559876543.25", "-5559876543",
      /* Digit runs that are ids or times, not phones. */
      "555987654", "555987654321", "25559876543", "1733615043", "0559876543", "555987654321987",
      "id5559876543", "5559876543abc", "x5559876543", "5559876543_2", "5559876543-2",
      "555-987-65430", "5555-987-6543", "555-9876-543", "555--987-6543", "1-1555-987-6543",
  };
  for (size_t i = 0; i < sizeof others / sizeof *others; i++)
    assert_in_every_context(others[i], others[i]);
}

/* An address in free text is masked; a URL's user at an IP address is no
 * mailbox, and masked it hid where a connection went. */
static void test_emails_in_free_text_but_not_user_at_an_ip(void **state) {
  (void)state;
  assert_in_every_context("jane@example.com", "j***@e***.com");
  assert_in_every_context("ncghl@127.0.0.1", "ncghl@127.0.0.1");
  assert_string_equal(mask("cannot connect to postgresql://ncghl@10.0.0.7:5432/db"),
                      "cannot connect to postgresql://ncghl@10.0.0.7:5432/db");
  assert_in_every_context("jane@mail.10.example.com", "j***@m***.com");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_named_field_is_masked),
      cmocka_unit_test(test_case_and_underscores_do_not_matter),
      cmocka_unit_test(test_names_that_only_look_alike_are_left),
      cmocka_unit_test(test_us_phones_in_free_text_are_masked),
      cmocka_unit_test(test_numbers_that_are_no_phones_are_left),
      cmocka_unit_test(test_emails_in_free_text_but_not_user_at_an_ip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
