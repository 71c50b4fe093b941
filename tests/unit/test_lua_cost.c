/* The bounds the runtime checks before a C function runs: small for the
 * patterns and values mappings use, huge for the hostile ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lua_cost.h"

static double cost(const char *s, const char *p) {
  return lcost_pattern(s, strlen(s), p, strlen(p));
}

static void test_pattern_bounds(void **state) {
  (void)state;
  size_t n = 500000;
  char *as = malloc(n + 1);
  memset(as, 'a', n);
  as[n] = 0;
  /* The hostile case: the length to the fifth power. */
  assert_true(cost(as, ".-.-.-.-b") > 1e25);
  /* A plain search or a single class is linear. */
  assert_true(cost(as, "b") <= 2.0 * (double)n + 2);
  assert_true(cost(as, "[^%w]") <= 2.0 * (double)n + 2);
  /* An anchored trim of a field value is cheap... */
  assert_true(cost("  Jane Doe  ", "^%s*(.-)%s*$") < 1000);
  /* ...and a repeated class that matches little of the subject stays so. */
  assert_true(cost(as, "%d+x") <= 2.0 * (double)n + 2);
  /* A repeated last item never backtracks: words of a long blob are cheap. */
  assert_true(cost(as, "%S+") <= 2.0 * (double)n + 2);
  assert_true(cost(as, "([^.]+)") <= 2.0 * (double)n + 2);
  /* ...but followed by anything it does. */
  assert_true(cost(as, "%S+x") > 1e11);
  /* Malformed patterns are left for the string library to report. */
  assert_true(cost("abc", "[a") < 100);
  assert_true(cost("abc", "%") < 100);
  free(as);
}

static void test_json_bounds(void **state) {
  (void)state;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  /* 1000 references to one table of 1000 strings of 1000 bytes: a
   * gigabyte of output from a few kilobytes of Lua data. */
  assert_int_equal(luaL_dostring(L, "local row, t, u = string.rep('x', 1000), {}, {}\n"
                                    "for i = 1, 1000 do t[i] = row end\n"
                                    "for i = 1, 1000 do u[i] = t end\n"
                                    "return u, {a = 'b', n = 1, list = {1, 2, 3}}"),
                   LUA_OK);
  int top = lua_gettop(L);
  double big = lcost_json(L, -2, 1e7);
  assert_true(big > 1e7);
  assert_true(big < 1e7 + 2e3); /* it stopped counting soon after the limit */
  assert_int_equal(lua_gettop(L), top); /* and left the stack as it was */
  double small = lcost_json(L, -1, 1e7);
  assert_true(small > 10 && small < 200);
  assert_int_equal(lua_gettop(L), top);
  lua_close(L);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pattern_bounds),
      cmocka_unit_test(test_json_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
