/* Redaction: a registered secret never reaches a log line, whatever the
 * level and however the line was formatted; one record is one line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char text[65536];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = 0;
  fclose(f);
  return text;
}

static void test_redaction_and_levels(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(log_init(LOGL_DEBUG, path), 0);
  log_add_secret("s3cr3t-password");
  log_add_secret("tok-abcdef-123456");
  log_add_secret("abc"); /* too short to redact safely: ignored */
  log_debug("login with password=%s and Bearer %s", "s3cr3t-password", "tok-abcdef-123456");
  log_error("body {\"access_token\":\"tok-abcdef-123456tok-abcdef-123456\"}");
  log_info("multi\nline");
  log_forget_secret("tok-abcdef-123456");
  log_info("after rotation tok-abcdef-123456");
  log_close();
  char *text = slurp(path);
  unlink(path);
  assert_null(strstr(text, "s3cr3t-password"));
  assert_non_null(strstr(text, "password=*** and Bearer ***"));
  assert_non_null(strstr(text, "\"access_token\":\"******\""));
  assert_non_null(strstr(text, "multi line"));
  /* a forgotten (rotated-out) value is no longer redacted */
  assert_non_null(strstr(text, "after rotation tok-abcdef-123456"));
  int lines = 0;
  for (char *p = text; *p; p++)
    lines += *p == '\n';
  assert_int_equal(lines, 4);
}

static void test_level_filter(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  int fd = mkstemp(path);
  close(fd);
  assert_int_equal(log_init(LOGL_WARNING, path), 0);
  log_debug("hidden debug");
  log_info("hidden info");
  log_warn("shown warning");
  log_close();
  char *text = slurp(path);
  unlink(path);
  assert_null(strstr(text, "hidden"));
  assert_non_null(strstr(text, "WARNING shown warning"));
  assert_int_equal(log_parse_level("warn"), LOGL_WARNING);
  assert_int_equal(log_parse_level("Error"), LOGL_ERROR);
  assert_int_equal(log_parse_level("LOUD"), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_redaction_and_levels),
      cmocka_unit_test(test_level_filter),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
