/* Unit tests for url: a user-info password is found only in the authority,
 * and shown as ***; everything else of the URL is shown as it is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "url.h"

static void test_a_user_info_password_is_masked_and_nothing_else(void **state) {
  (void)state;
  static const char *const shows[][2] = {
      {"http://apikey:S3cret@127.0.0.1:1", "http://apikey:***@127.0.0.1:1"},
      {"postgresql://u:pw@h/db?x=1", "postgresql://u:***@h/db?x=1"},
      {"https://services.leadconnectorhq.com", "https://services.leadconnectorhq.com"},
      {"http://user@host/path", "http://user@host/path"},          /* no password */
      {"http://u:@host/", "http://u:@host/"},                      /* an empty one */
      {"http://host/a:b@c", "http://host/a:b@c"},                  /* '@' in the path */
      {"http://host?q=a:b@c", "http://host?q=a:b@c"},              /* '@' in the query */
      {"/var/lib/ncghl/a:b@c.db", "/var/lib/ncghl/a:b@c.db"},      /* no scheme */
  };
  char out[256];
  for (size_t i = 0; i < sizeof shows / sizeof *shows; i++) {
    url_display(shows[i][0], out, sizeof out);
    assert_string_equal(out, shows[i][1]);
  }
  const char *p;
  size_t n;
  assert_true(url_password("http://apikey:S3cret@h", &p, &n));
  assert_int_equal(n, 6);
  assert_memory_equal(p, "S3cret", 6);
  assert_false(url_password(NULL, &p, &n));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_user_info_password_is_masked_and_nothing_else),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
