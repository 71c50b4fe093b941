/* Unit tests for retry.c: the call backoff schedule, jitter, Retry-After,
 * which statuses are retried, the event schedule, and the rate limiter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include <cmocka.h>

#include "retry.h"

#define EPS 1e-9

/* cmocka's float assertions work in float precision; schedules need better. */
#define assert_double_equal(a, b, eps) assert_near_impl((a), (b), (eps), #a, __FILE__, __LINE__)
static void assert_near_impl(double a, double b, double eps, const char *expr, const char *file,
                             int line) {
  if (fabs(a - b) > eps) {
    print_error("%s:%d: %s = %.9g, expected %.9g\n", file, line, expr, a, b);
    _fail(file, line);
  }
}

static const struct retry_policy source_design = {
    .max_retries = 3, .initial_delay = 1.0, .factor = 2.0, .jitter = 0.1};

static void test_schedule_is_1_2_4(void **state) {
  assert_double_equal(retry_delay(&source_design, 0, -1, 0), 1.0, EPS);
  assert_double_equal(retry_delay(&source_design, 1, -1, 0), 2.0, EPS);
  assert_double_equal(retry_delay(&source_design, 2, -1, 0), 4.0, EPS);
  struct retry_policy p = {.initial_delay = 0.5, .factor = 3.0};
  assert_double_equal(retry_delay(&p, 2, -1, 0.7), 4.5, EPS); /* no jitter configured */
}

static void test_jitter_only_lengthens_up_to_its_fraction(void **state) {
  for (int attempt = 0; attempt < 3; attempt++) {
    double base = retry_delay(&source_design, attempt, -1, 0);
    double top = retry_delay(&source_design, attempt, -1, 1);
    assert_double_equal(top, base * 1.1, EPS);
    for (double r = 0; r <= 1.0; r += 0.125) {
      double d = retry_delay(&source_design, attempt, -1, r);
      assert_true(d >= base - EPS);
      assert_true(d <= top + EPS);
    }
  }
  assert_double_equal(retry_delay(&source_design, 0, -1, 0.5), 1.05, EPS);
  /* Out-of-range randomness is clamped, never a shorter or wild delay. */
  assert_double_equal(retry_delay(&source_design, 0, -1, -3), 1.0, EPS);
  assert_double_equal(retry_delay(&source_design, 0, -1, 7), 1.1, EPS);
}

static void test_retry_after_wins_when_larger(void **state) {
  assert_double_equal(retry_delay(&source_design, 0, 30, 0), 30.0, EPS);
  assert_double_equal(retry_delay(&source_design, 2, 5, 0), 5.0, EPS);
  /* Smaller than the backoff: the backoff stands. */
  assert_double_equal(retry_delay(&source_design, 2, 3, 0), 4.0, EPS);
  assert_double_equal(retry_delay(&source_design, 1, 0, 0), 2.0, EPS);
  /* -1 means "no header". */
  assert_double_equal(retry_delay(&source_design, 0, -1, 0), 1.0, EPS);
}

static void test_retryable_statuses(void **state) {
  const int yes[] = {0, 429, 500, 502, 503, 504, 599};
  const int no[] = {200, 201, 204, 301, 400, 401, 403, 404, 405, 409, 413, 422, 428, 431, 600};
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
    assert_true(retry_is_retryable(yes[i]));
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
    assert_false(retry_is_retryable(no[i]));
}

static void test_event_schedule(void **state) {
  assert_double_equal(retry_event_delay(0), 0, EPS);
  assert_double_equal(retry_event_delay(1), 60, EPS);
  assert_double_equal(retry_event_delay(2), 300, EPS);
  assert_double_equal(retry_event_delay(3), 1800, EPS);
  assert_double_equal(retry_event_delay(4), 7200, EPS);
  assert_double_equal(retry_event_delay(5), 21600, EPS);
  assert_double_equal(retry_event_delay(6), -1, EPS);
  assert_double_equal(retry_event_delay(100), -1, EPS);
}

static void test_ratelimit_sliding_window(void **state) {
  struct ratelimit r;
  assert_int_equal(ratelimit_init(&r, 3, 10.0), 0);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 1.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 2.0), 0, EPS);
  /* Full: the oldest (t=0) leaves the window at t=10. */
  assert_double_equal(ratelimit_take(&r, 3.0), 7.0, EPS);
  assert_double_equal(ratelimit_take(&r, 9.5), 0.5, EPS);
  assert_double_equal(ratelimit_take(&r, 10.0), 0, EPS);
  /* Now t=1 is the oldest. */
  assert_double_equal(ratelimit_take(&r, 10.0), 1.0, EPS);
  assert_double_equal(ratelimit_take(&r, 11.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 11.0), 1.0, EPS);
  /* A refused take is not counted. */
  assert_double_equal(ratelimit_take(&r, 12.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 30.0), 0, EPS);
  ratelimit_free(&r);
}

/* Peeking answers like a take and counts nothing. */
static void test_ratelimit_peek_counts_nothing(void **state) {
  struct ratelimit r;
  assert_int_equal(ratelimit_init(&r, 2, 10.0), 0);
  for (int i = 0; i < 5; i++)
    assert_double_equal(ratelimit_peek(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 1.0), 0, EPS);
  assert_double_equal(ratelimit_peek(&r, 2.0), 8.0, EPS);
  assert_double_equal(ratelimit_peek(&r, 10.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 10.0), 0, EPS);
  assert_double_equal(ratelimit_peek(&r, 10.0), 1.0, EPS);
  ratelimit_observe(&r, 0, 5000, 10.0);
  assert_double_equal(ratelimit_peek(&r, 12.0), 3.0, EPS);
  ratelimit_free(&r);
}

/* A read that a write follows waits until both fit, and the write's room
 * is kept from the others until it is used or expires. */
static void test_ratelimit_pair_holds_the_writes_room(void **state) {
  struct ratelimit r;
  bool held = false;
  assert_int_equal(ratelimit_init(&r, 3, 10.0), 0);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 1.0), 0, EPS);
  /* One slot left: the pair waits for a second (t=0 leaves at t=10). */
  assert_double_equal(ratelimit_take_pair(&r, 2.0, 5.0, &held), 8.0, EPS);
  assert_false(held);
  assert_double_equal(ratelimit_take_pair(&r, 10.0, 5.0, &held), 0, EPS);
  assert_true(held);
  /* The window holds t=1 and t=10 plus the held room: full for others. */
  assert_double_equal(ratelimit_take(&r, 10.5), 0.5, EPS);
  assert_double_equal(ratelimit_peek(&r, 10.5), 0.5, EPS);
  /* The write goes at once on the held room. */
  assert_double_equal(ratelimit_take_held(&r, 10.5), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 10.6), 0.4, EPS);
  /* A hold nobody uses expires and frees its room. */
  assert_double_equal(ratelimit_take_pair(&r, 21.0, 5.0, &held), 0, EPS);
  assert_true(held);
  assert_double_equal(ratelimit_take(&r, 21.0), 0, EPS);
  /* Two sends at t=21 and the held room: full until t=31, */
  assert_double_equal(ratelimit_take(&r, 21.0), 10.0, EPS);
  /* but the hold, unused, lapses at t=26. */
  assert_double_equal(ratelimit_take(&r, 26.5), 0, EPS);
  ratelimit_free(&r);
}

static void test_ratelimit_off(void **state) {
  struct ratelimit r;
  assert_int_equal(ratelimit_init(&r, 0, 10.0), 0);
  for (int i = 0; i < 1000; i++)
    assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  ratelimit_observe(&r, 0, 10000, 0.0);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  ratelimit_free(&r);
}

static void test_ratelimit_observe_zero_blocks_for_the_interval(void **state) {
  struct ratelimit r;
  assert_int_equal(ratelimit_init(&r, 100, 10.0), 0);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  ratelimit_observe(&r, 0, 2500, 1.0);
  assert_double_equal(ratelimit_take(&r, 1.0), 2.5, EPS);
  assert_double_equal(ratelimit_take(&r, 3.0), 0.5, EPS);
  assert_double_equal(ratelimit_take(&r, 3.5), 0, EPS);
  /* Unknown values change nothing. */
  ratelimit_observe(&r, -1, 5000, 4.0);
  assert_double_equal(ratelimit_take(&r, 4.0), 0, EPS);
  /* remaining 0 without an interval: our own window. */
  ratelimit_observe(&r, 0, -1, 5.0);
  assert_double_equal(ratelimit_take(&r, 6.0), 9.0, EPS);
  /* An earlier, shorter block never shortens a longer one. */
  ratelimit_observe(&r, 0, 1000, 6.0);
  assert_double_equal(ratelimit_take(&r, 7.0), 8.0, EPS);
  ratelimit_free(&r);
}

static void test_ratelimit_observe_remaining_steers(void **state) {
  struct ratelimit r;
  assert_int_equal(ratelimit_init(&r, 10, 10.0), 0);
  /* We sent one; the upstream says only 2 remain (someone else uses the
   * same budget): two more may go now, the third waits for the window. */
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  ratelimit_observe(&r, 2, 10000, 1.0);
  assert_double_equal(ratelimit_take(&r, 1.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 1.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 2.0), 8.0, EPS);
  /* More remaining than our own count allows is not trusted. */
  ratelimit_observe(&r, 50, 10000, 2.0);
  assert_double_equal(ratelimit_take(&r, 2.0), 8.0, EPS);
  ratelimit_free(&r);

  assert_int_equal(ratelimit_init(&r, 4, 10.0), 0);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  /* As many remain as we think: nothing changes. */
  ratelimit_observe(&r, 2, 10000, 0.0);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 0.0), 0, EPS);
  assert_double_equal(ratelimit_take(&r, 0.0), 10.0, EPS);
  /* After the window the padding stamps expire too. */
  assert_double_equal(ratelimit_take(&r, 10.0), 0, EPS);
  ratelimit_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schedule_is_1_2_4),
      cmocka_unit_test(test_jitter_only_lengthens_up_to_its_fraction),
      cmocka_unit_test(test_retry_after_wins_when_larger),
      cmocka_unit_test(test_retryable_statuses),
      cmocka_unit_test(test_event_schedule),
      cmocka_unit_test(test_ratelimit_sliding_window),
      cmocka_unit_test(test_ratelimit_peek_counts_nothing),
      cmocka_unit_test(test_ratelimit_off),
      cmocka_unit_test(test_ratelimit_pair_holds_the_writes_room),
      cmocka_unit_test(test_ratelimit_observe_zero_blocks_for_the_interval),
      cmocka_unit_test(test_ratelimit_observe_remaining_steers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
