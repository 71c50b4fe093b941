/* Unit tests for pace.c on clocks the test moves: no pressure, no pacing;
 * under pressure processing keeps its share of a saturated loop, no more
 * and no less, and is credited the moments the loop sits idle; starts are
 * spread a few per millisecond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>

#include "pace.h"

struct clocks {
  double wall, cpu;
};

static double wall_of(void *ud) { return ((struct clocks *)ud)->wall; }
static double cpu_of(void *ud) { return ((struct clocks *)ud)->cpu; }

/* The loop busy for dt: processing's when `processing`, else intake's. */
static void busy(struct pace *p, struct clocks *c, double dt, int processing) {
  double stamp = processing ? pace_begin(p) : 0;
  c->wall += dt;
  c->cpu += dt;
  if (processing)
    pace_end(p, stamp);
}

static void pressure(struct pace *p, int on) { pace_owed(p, on ? PACE_PRESSURE : -PACE_PRESSURE); }

static void test_no_pace_is_no_limit(void **state) {
  (void)state;
  assert_int_equal(pace_room(NULL), INT_MAX);
  assert_true(pace_wait(NULL) == 0);
  pace_owed(NULL, 1);
  pace_started(NULL, 3);
  pace_end(NULL, pace_begin(NULL));
}

static void test_without_pressure_processing_runs_freely(void **state) {
  (void)state;
  struct clocks c = {100, 5};
  struct pace *p = pace_new_clocks(wall_of, cpu_of, &c);
  pace_owed(p, PACE_PRESSURE - 1); /* a few senders waiting: no burst */
  for (int i = 0; i < 1000; i++) {
    busy(p, &c, 0.001, 1); /* processing takes the whole loop */
    assert_int_equal(pace_room(p), INT_MAX);
    pace_started(p, 10);
  }
  assert_true(pace_wait(p) == 0);
  pace_free(p);
}

/* Under pressure, a run is started whenever the pace allows; each costs
 * `cost` of processing time in slices, and the loop is never idle (intake
 * fills the rest). Returns processing's fraction of `seconds`. */
static double share_under_burst(double cost, double seconds, int idle_intake) {
  struct clocks c = {100, 5};
  struct pace *p = pace_new_clocks(wall_of, cpu_of, &c);
  pressure(p, 1);
  const double dt = 0.0001;
  double left = 0, spent = 0;
  int starts = 0;
  for (double t = 0; t < seconds; t += dt) {
    if (left <= 0 && pace_room(p) > 0) {
      pace_started(p, 1);
      starts++;
      left = cost;
    }
    if (left > 0) {
      busy(p, &c, dt, 1);
      left -= dt;
      spent += dt;
    } else if (idle_intake) {
      c.wall += dt; /* the loop waits (for an fsync, for requests) */
    } else {
      busy(p, &c, dt, 0);
    }
  }
  assert_true(starts > 0);
  pace_free(p);
  return spent / seconds;
}

static void test_burst_keeps_processing_to_its_share(void **state) {
  (void)state;
  double f = share_under_burst(0.0004, 2.0, 0);
  assert_true(f > PACE_SHARE - 0.05);
  assert_true(f < PACE_SHARE + 0.05);
  /* Runs far dearer than the bucket: still the share, not starved. */
  f = share_under_burst(0.02, 4.0, 0);
  assert_true(f > PACE_SHARE - 0.05);
  assert_true(f < PACE_SHARE + 0.06);
}

static void test_idle_moments_go_to_processing(void **state) {
  (void)state;
  /* Intake waits rather than works: processing earns every idle moment,
   * so it gets far more than its share (the rest stays idle for intake). */
  double f = share_under_burst(0.0004, 2.0, 1);
  assert_true(f > 0.55);
}

static void test_starts_are_spread(void **state) {
  (void)state;
  struct clocks c = {100, 5};
  struct pace *p = pace_new_clocks(wall_of, cpu_of, &c);
  pressure(p, 1);
  int room = pace_room(p);
  assert_true(room > 0 && room < 16);
  pace_started(p, room);
  assert_int_equal(pace_room(p), 0);
  double w = pace_wait(p);
  assert_true(w > 0 && w <= 0.005);
  c.wall += 0.0011; /* a millisecond later, idle: room again */
  assert_true(pace_room(p) > 0);
  /* The burst ends: no limit at once. */
  pressure(p, 0);
  assert_int_equal(pace_room(p), INT_MAX);
  assert_true(pace_wait(p) == 0);
  pace_free(p);
}

static void test_debt_is_paid_back_then_runs_resume(void **state) {
  (void)state;
  struct clocks c = {100, 5};
  struct pace *p = pace_new_clocks(wall_of, cpu_of, &c);
  pressure(p, 1);
  busy(p, &c, 0.04, 1); /* runs already going took 40 ms of a busy loop */
  assert_int_equal(pace_room(p), 0);
  double w = pace_wait(p);
  assert_true(w > 0 && w <= 0.005); /* looks again soon: the burst may end */
  /* Intake alone for a while: the share pays the debt back, then a start. */
  int ms = 0;
  while (pace_room(p) == 0 && ms < 5000) {
    busy(p, &c, 0.001, 0);
    ms++;
  }
  /* 40 ms spent, PACE_SHARE of them earned meanwhile, 5 ms in the bucket:
   * the debt is paid at PACE_SHARE of the time. */
  double expect = (0.040 - 0.005 - PACE_SHARE * 0.040) / PACE_SHARE * 1000;
  assert_true(ms >= expect * 0.95 && ms <= expect * 1.05 + 1);
  pace_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_pace_is_no_limit),
      cmocka_unit_test(test_without_pressure_processing_runs_freely),
      cmocka_unit_test(test_burst_keeps_processing_to_its_share),
      cmocka_unit_test(test_idle_moments_go_to_processing),
      cmocka_unit_test(test_starts_are_spread),
      cmocka_unit_test(test_debt_is_paid_back_then_runs_resume),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
