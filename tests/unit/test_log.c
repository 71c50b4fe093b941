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
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char text[1 << 20];
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

static char *log_to_file(char *path) {
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(log_init(LOGL_DEBUG, path), 0);
  return path;
}

static char *close_and_read(char *path) {
  log_close();
  char *text = slurp(path);
  unlink(path);
  return text;
}

/* A secret straddling the line limit: the line is cut, and the part of the
 * secret before the cut is not printed either. */
static void test_secret_cut_by_the_line_limit(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  log_to_file(path);
  log_add_secret("SECRETVALUE-0123456789");
  for (int pad = 8100; pad < 8200; pad += 3) {
    char *filler = malloc((size_t)pad + 1);
    memset(filler, 'x', (size_t)pad);
    filler[pad] = 0;
    log_info("%s%s tail", filler, "SECRETVALUE-0123456789");
    free(filler);
  }
  char *text = close_and_read(path);
  assert_null(strstr(text, "SECRETVALUE"));
  assert_null(strstr(text, "0123456789"));
  /* The tail before the cut: at least the first four bytes never show. */
  assert_null(strstr(text, "xSECR"));
  for (char *line = text; *line;) {
    char *nl = strchr(line, '\n');
    assert_non_null(nl);
    assert_true(nl - line <= 8192);
    line = nl + 1;
  }
}

static void test_encoded_secrets_are_redacted(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  log_to_file(path);
  log_add_secret("pa ss/w+rd=A1");
  log_info("form password=pa+ss%%2Fw%%2Brd%%3DA1&x=1");
  log_info("url q=pa%%20ss%%2fw%%2brd%%3dA1 end");
  log_info("json {\"p\":\"pa ss\\/w+rd=\\u0041\\u0031\"}");
  char *text = close_and_read(path);
  assert_null(strstr(text, "ss%2Fw"));
  assert_null(strstr(text, "ss%2fw"));
  assert_null(strstr(text, "ss\\/w"));
  assert_non_null(strstr(text, "form password=***&x=1"));
  assert_non_null(strstr(text, "url q=*** end"));
  assert_non_null(strstr(text, "json {\"p\":\"***\"}"));
}

static void test_json_format(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  log_set_format(true);
  log_to_file(path);
  log_add_secret("tok-abcdef-123456");
  log_warn("lua event=ev-42 failed: \"quoted\" token tok-abcdef-123456");
  char *text = close_and_read(path);
  log_set_format(false);
  assert_non_null(strstr(text, "{\"ts\":\""));
  assert_non_null(strstr(text, "\"level\":\"WARNING\""));
  assert_non_null(strstr(text, "\"msg\":\"lua event=ev-42 failed: \\\"quoted\\\" token ***\""));
  assert_non_null(strstr(text, ",\"event\":\"ev-42\"}"));
  assert_null(strstr(text, "tok-abcdef"));
}

static void test_personal_data_masked_unless_shown(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  log_to_file(path);
  log_info("GET /InsuredDetailList?$filter=eMail%%20eq%%20%%27jane.doe%%40example.com%%27 phone +1 555-123-4567");
  log_info("body {\"firstName\":\"Jane\",\"lastName\":\"Doe\",\"phone\":\"(555) 123-4567\"}");
  char *text = close_and_read(path);
  assert_null(strstr(text, "jane.doe"));
  assert_null(strstr(text, "example"));
  assert_null(strstr(text, "123-4567"));
  assert_null(strstr(text, "Jane"));
  assert_null(strstr(text, "Doe"));
  assert_non_null(strstr(text, "%27j***%40e***.com%27"));
  assert_non_null(strstr(text, "***4567"));
  assert_non_null(strstr(text, "\"firstName\":\"J***\""));

  char path2[] = "/tmp/ncghl-log-XXXXXX";
  log_set_pii(true);
  log_to_file(path2);
  log_info("email jane.doe@example.com");
  text = close_and_read(path2);
  log_set_pii(false);
  assert_non_null(strstr(text, "jane.doe@example.com"));
}

/* The writer is a thread: lines queued before log_close are all written,
 * in order, and nothing was dropped. */
static void test_lines_in_order_and_none_dropped(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  log_to_file(path);
  unsigned long long before = log_dropped();
  for (int i = 0; i < 500; i++)
    log_info("line %04d", i);
  char *text = close_and_read(path);
  assert_true(log_dropped() == before);
  char *p = text;
  for (int i = 0; i < 500; i++) {
    char want[32];
    snprintf(want, sizeof want, "line %04d", i);
    p = strstr(p, want);
    assert_non_null(p);
  }
}

/* A child of fork() has the lock but not the writer thread: its lines are
 * its own to write, the parent's queue stays the parent's. Without that the
 * child's line sat in a queue nobody empties (and a fork while the writer
 * held the lock hung the child at its first line). */
static void test_a_forked_child_writes_its_own_lines(void **state) {
  (void)state;
  char path[] = "/tmp/ncghl-log-XXXXXX";
  log_to_file(path);
  for (int i = 0; i < 200; i++)
    log_info("parent %04d", i);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    log_info("from the child");
    _exit(0); /* no log_close: nothing is left to flush */
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  log_info("parent after");
  char *text = close_and_read(path);
  assert_non_null(strstr(text, "from the child"));
  assert_non_null(strstr(text, "parent after"));
  /* Every parent line once: the child wrote none of them. */
  for (int i = 0; i < 200; i++) {
    char want[32];
    snprintf(want, sizeof want, "parent %04d", i);
    char *at = strstr(text, want);
    assert_non_null(at);
    assert_null(strstr(at + 1, want));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_redaction_and_levels),
      cmocka_unit_test(test_level_filter),
      cmocka_unit_test(test_secret_cut_by_the_line_limit),
      cmocka_unit_test(test_encoded_secrets_are_redacted),
      cmocka_unit_test(test_json_format),
      cmocka_unit_test(test_personal_data_masked_unless_shown),
      cmocka_unit_test(test_lines_in_order_and_none_dropped),
      cmocka_unit_test(test_a_forked_child_writes_its_own_lines),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
