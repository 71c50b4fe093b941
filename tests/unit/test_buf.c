/* Unit tests for buf: growth, the size limit (a failed append changes
 * nothing), printf, JSON string escaping and handing the bytes over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

static void test_starts_empty(void **state) {
  struct buf b;
  buf_init(&b, 0);
  assert_null(b.p);
  assert_int_equal(b.len, 0);
  /* A zero-byte append is not "anything appended". */
  assert_int_equal(buf_append(&b, "x", 0), 0);
  assert_null(b.p);
  char *s = buf_steal(&b);
  assert_non_null(s);
  assert_string_equal(s, "");
  free(s);
  buf_free(&b);
}

static void test_append_and_terminate(void **state) {
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(buf_puts(&b, "hello"), 0);
  assert_int_equal(buf_putc(&b, ' '), 0);
  assert_int_equal(buf_append(&b, "world!!", 5), 0);
  assert_int_equal(b.len, 11);
  assert_string_equal(b.p, "hello world");
  assert_true(b.cap > b.len);
  buf_free(&b);
  assert_null(b.p);
  assert_int_equal(b.len, 0);
}

static void test_growth_doubles(void **state) {
  struct buf b;
  buf_init(&b, 0);
  char chunk[7] = "abcdefg";
  size_t caps[8] = {0};
  size_t ncaps = 0, last = 0;
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(buf_append(&b, chunk, sizeof chunk), 0);
    if (b.cap != last) {
      if (ncaps < 8)
        caps[ncaps++] = b.cap;
      last = b.cap;
    }
  }
  assert_int_equal(b.len, 7000);
  for (size_t i = 0; i < 7000; i++)
    assert_int_equal(b.p[i], chunk[i % 7]);
  assert_int_equal(b.p[7000], '\0');
  /* Each reallocation at least doubles: few of them for many appends. */
  for (size_t i = 1; i < ncaps; i++)
    assert_true(caps[i] >= 2 * caps[i - 1]);
  assert_true(b.cap < 2 * 7001 + 64);
  buf_free(&b);
}

static void test_limit_is_exact(void **state) {
  struct buf b;
  buf_init(&b, 10);
  assert_int_equal(buf_append(&b, "0123456789", 10), 0);
  assert_int_equal(b.len, 10);
  assert_true(b.cap <= 11);
  assert_int_equal(buf_putc(&b, 'x'), -1);
  assert_int_equal(buf_append(&b, "xyz", 3), -1);
  assert_int_equal(b.len, 10);
  assert_string_equal(b.p, "0123456789");
  buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.p, "");
  assert_int_equal(buf_append(&b, "abc", 3), 0);
  /* One append that does not fit fails whole: no partial write. */
  assert_int_equal(buf_append(&b, "defghijklmn", 11), -1);
  assert_int_equal(b.len, 3);
  assert_string_equal(b.p, "abc");
  assert_int_equal(buf_append(&b, "defghij", 7), 0);
  assert_string_equal(b.p, "abcdefghij");
  buf_free(&b);
  assert_int_equal(b.max, 10);
}

static void test_reset_keeps_allocation(void **state) {
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(buf_puts(&b, "some text that is here"), 0);
  char *p = b.p;
  size_t cap = b.cap;
  buf_reset(&b);
  assert_ptr_equal(b.p, p);
  assert_int_equal(b.cap, cap);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.p, "");
  buf_free(&b);
}

static void test_printf(void **state) {
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(buf_printf(&b, "%d-%s", 42, "x"), 0);
  assert_string_equal(b.p, "42-x");
  /* Longer than the first allocation: takes the second formatting pass. */
  char big[300];
  memset(big, 'q', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  assert_int_equal(buf_printf(&b, "[%s]%zu", big, (size_t)7), 0);
  assert_int_equal(b.len, 4 + 1 + 299 + 1 + 1);
  assert_memory_equal(b.p, "42-x[", 5);
  assert_int_equal(b.p[5 + 299], ']');
  assert_string_equal(b.p + 5 + 299 + 1, "7");
  buf_free(&b);
}

static void test_printf_over_limit_changes_nothing(void **state) {
  struct buf b;
  buf_init(&b, 16);
  assert_int_equal(buf_printf(&b, "%s", "abcdef"), 0);
  assert_int_equal(buf_printf(&b, "%s", "0123456789X"), -1);
  assert_int_equal(b.len, 6);
  assert_string_equal(b.p, "abcdef");
  assert_int_equal(buf_printf(&b, "%s", "0123456789"), 0);
  assert_int_equal(b.len, 16);
  assert_string_equal(b.p, "abcdef0123456789");
  assert_int_equal(buf_printf(&b, "%s", ""), 0);
  assert_int_equal(buf_printf(&b, "%c", 'z'), -1);
  assert_string_equal(b.p, "abcdef0123456789");
  buf_free(&b);
}

static void json_str_is(const char *in, size_t n, const char *want) {
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(buf_json_str(&b, in, n), 0);
  assert_int_equal(b.len, strlen(want));
  assert_string_equal(b.p, want);
  buf_free(&b);
}

static void test_json_str_escaping(void **state) {
  json_str_is("", 0, "\"\"");
  json_str_is("plain", 5, "\"plain\"");
  json_str_is("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
  json_str_is("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"");
  json_str_is("\x01\x1f", 2, "\"\\u0001\\u001f\"");
  json_str_is("a\0b", 3, "\"a\\u0000b\"");
  /* Minimal: '/' and DEL are not escaped, UTF-8 goes out raw. */
  json_str_is("a/b\x7f", 4, "\"a/b\x7f\"");
  json_str_is("caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"");
  /* Ill-formed UTF-8 becomes U+FFFD, so the result is always valid JSON. */
  json_str_is("a\xff" "b", 3, "\"a\xef\xbf\xbd" "b\"");
  json_str_is("\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
  json_str_is("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
  json_str_is("\xe2\x82", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
}

static void test_json_str_limit_rolls_back(void **state) {
  struct buf b;
  buf_init(&b, 12);
  assert_int_equal(buf_puts(&b, "x="), 0);
  /* Fits raw (8 + 2 quotes) but not once escaped. */
  assert_int_equal(buf_json_str(&b, "\n\n\n\n\n\n\n\n", 8), -1);
  assert_int_equal(b.len, 2);
  assert_string_equal(b.p, "x=");
  assert_int_equal(buf_json_str(&b, "12345678", 8), 0);
  assert_string_equal(b.p, "x=\"12345678\"");
  assert_int_equal(buf_json_str(&b, "", 0), -1);
  assert_string_equal(b.p, "x=\"12345678\"");
  buf_free(&b);
}

static void test_steal(void **state) {
  struct buf b;
  buf_init(&b, 100);
  assert_int_equal(buf_puts(&b, "keep me"), 0);
  char *s = buf_steal(&b);
  assert_string_equal(s, "keep me");
  assert_null(b.p);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
  assert_int_equal(b.max, 100);
  /* The buffer is usable again and independent of what was handed over. */
  assert_int_equal(buf_puts(&b, "new"), 0);
  assert_string_equal(s, "keep me");
  free(s);
  buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_starts_empty),
      cmocka_unit_test(test_append_and_terminate),
      cmocka_unit_test(test_growth_doubles),
      cmocka_unit_test(test_limit_is_exact),
      cmocka_unit_test(test_reset_keeps_allocation),
      cmocka_unit_test(test_printf),
      cmocka_unit_test(test_printf_over_limit_changes_nothing),
      cmocka_unit_test(test_json_str_escaping),
      cmocka_unit_test(test_json_str_limit_rolls_back),
      cmocka_unit_test(test_steal),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
