/* The metrics registry: Prometheus text exactly as scrapers read it (HELP
 * and TYPE lines, escaped label values, cumulative histogram buckets with
 * _sum and _count), families shared by name, and wrong uses ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "metrics.h"

static char *render(struct metrics *m, struct buf *b) {
  buf_init(b, 0);
  assert_int_equal(metrics_render(m, b), 0);
  return b->p ? b->p : "";
}

static void test_counter_and_labels(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  struct metric *c = metrics_counter(m, "ncghl_webhook_requests_total", "Webhook requests answered.",
                                     METRIC_LABELS("source", "status"));
  assert_non_null(c);
  metric_inc(c, METRIC_LABELS("nowcerts", "200"));
  metric_inc(c, METRIC_LABELS("nowcerts", "200"));
  metric_inc(c, METRIC_LABELS("ghl", "401"));
  metric_add(c, METRIC_LABELS("ghl", "401"), 2);
  assert_true(metric_value(c, METRIC_LABELS("nowcerts", "200")) == 2);
  assert_true(metric_value(c, METRIC_LABELS("ghl", "401")) == 3);
  assert_true(metric_value(c, METRIC_LABELS("manual", "200")) == 0);

  struct buf b;
  const char *text = render(m, &b);
  assert_string_equal(text, "# HELP ncghl_webhook_requests_total Webhook requests answered.\n"
                            "# TYPE ncghl_webhook_requests_total counter\n"
                            "ncghl_webhook_requests_total{source=\"nowcerts\",status=\"200\"} 2\n"
                            "ncghl_webhook_requests_total{source=\"ghl\",status=\"401\"} 3\n");
  buf_free(&b);
  metrics_free(m);
}

/* A tenant's view: the same family names, one more label first, rendered by
 * the root; two views share a family, each with its own series. */
static void test_view_adds_a_label(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  struct metrics *a = metrics_view(m, "tenant", "a"), *b2 = metrics_view(m, "tenant", "b");
  assert_non_null(a);
  assert_non_null(b2);
  assert_null(metrics_view(a, "tenant", "x")); /* a view of a view */
  struct metric *ca = metrics_counter(a, "ncghl_x_total", "X.", METRIC_LABELS("source"));
  struct metric *cb = metrics_counter(b2, "ncghl_x_total", "X.", METRIC_LABELS("source"));
  struct metric *ga = metrics_gauge(a, "ncghl_g", "G.", METRIC_NO_LABELS);
  assert_non_null(ca);
  assert_non_null(cb);
  metric_inc(ca, METRIC_LABELS("ghl"));
  metric_add(cb, METRIC_LABELS("ghl"), 5);
  metric_set(ga, METRIC_NO_LABELS, 7);
  metric_inc(ca, METRIC_LABELS("ghl", "extra")); /* one value too many: ignored */
  assert_true(metric_value(ca, METRIC_LABELS("ghl")) == 1);
  assert_true(metric_value(cb, METRIC_LABELS("ghl")) == 5);
  assert_true(metric_value(ga, METRIC_NO_LABELS) == 7);
  /* The plain family of that name has the label: a label-less one is refused. */
  assert_null(metrics_counter(m, "ncghl_x_total", "X.", METRIC_LABELS("source")));
  metrics_free(a); /* the series stay in the root */
  struct buf b;
  const char *text = render(m, &b);
  assert_string_equal(text, "# HELP ncghl_x_total X.\n"
                            "# TYPE ncghl_x_total counter\n"
                            "ncghl_x_total{tenant=\"a\",source=\"ghl\"} 1\n"
                            "ncghl_x_total{tenant=\"b\",source=\"ghl\"} 5\n"
                            "# HELP ncghl_g G.\n"
                            "# TYPE ncghl_g gauge\n"
                            "ncghl_g{tenant=\"a\"} 7\n");
  buf_free(&b);
  metrics_free(b2);
  metrics_free(m);
}

static void test_wrong_uses_change_nothing(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  struct metric *c = metrics_counter(m, "x_total", "x", METRIC_LABELS("a"));
  /* the wrong number of label values */
  metric_inc(c, METRIC_LABELS("1", "2"));
  metric_inc(c, METRIC_NO_LABELS);
  metric_inc(c, NULL);
  /* a counter never goes down, and is not a gauge or a histogram */
  metric_add(c, METRIC_LABELS("1"), -5);
  metric_set(c, METRIC_LABELS("1"), 7);
  metric_observe(c, METRIC_LABELS("1"), 7);
  struct buf b;
  assert_string_equal(render(m, &b), "# HELP x_total x\n# TYPE x_total counter\n");
  buf_free(&b);
  /* NULL families are no-ops, so callers without a registry need no checks */
  metric_inc(NULL, METRIC_LABELS("1"));
  metric_observe(NULL, NULL, 1);
  assert_true(metric_value(NULL, NULL) == 0);
  /* bad names, and "le" on a histogram */
  assert_null(metrics_counter(m, "1abc", "", NULL));
  assert_null(metrics_counter(m, "ok_total", "", METRIC_LABELS("bad-label")));
  assert_null(metrics_histogram(m, "h", "", METRIC_LABELS("le"), metrics_webhook_buckets,
                                metrics_webhook_nbuckets));
  static const double unsorted[] = {1, 0.5};
  assert_null(metrics_histogram(m, "h", "", NULL, unsorted, 2));
  metrics_free(m);
}

static void test_same_name_is_the_same_family(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  struct metric *a = metrics_counter(m, "ncghl_retries_total", "Retries.", METRIC_LABELS("service"));
  struct metric *b = metrics_counter(m, "ncghl_retries_total", "Retries.", METRIC_LABELS("service"));
  assert_ptr_equal(a, b);
  /* the same name with another type or other labels is refused */
  assert_null(metrics_gauge(m, "ncghl_retries_total", "Retries.", METRIC_LABELS("service")));
  assert_null(metrics_counter(m, "ncghl_retries_total", "Retries.", METRIC_LABELS("svc")));
  metrics_free(m);
}

static void test_escaping(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  struct metric *g = metrics_gauge(m, "odd", "a \\ back\nslash", METRIC_LABELS("v"));
  metric_set(g, METRIC_LABELS("q\"uo\\te\nnl"), 1.5);
  metric_set(g, METRIC_LABELS("q\"uo\\te\nnl"), -2.25);
  struct buf b;
  assert_string_equal(render(m, &b), "# HELP odd a \\\\ back\\nslash\n"
                                     "# TYPE odd gauge\n"
                                     "odd{v=\"q\\\"uo\\\\te\\nnl\"} -2.25\n");
  buf_free(&b);
  metrics_free(m);
}

static void test_unlabelled_family_shows_zero(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  assert_non_null(metrics_gauge(m, "up_flag", "Always there.", NULL));
  struct buf b;
  assert_string_equal(render(m, &b), "# HELP up_flag Always there.\n# TYPE up_flag gauge\nup_flag 0\n");
  buf_free(&b);
  metrics_free(m);
}

static void test_histogram_buckets(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  static const double bounds[] = {0.01, 0.1, 1};
  struct metric *h = metrics_histogram(m, "d_seconds", "Durations.", METRIC_LABELS("source"),
                                       bounds, 3);
  assert_non_null(h);
  metric_observe(h, METRIC_LABELS("ghl"), 0.005);
  metric_observe(h, METRIC_LABELS("ghl"), 0.01); /* on the bound: counts in le="0.01" */
  metric_observe(h, METRIC_LABELS("ghl"), 0.5);
  metric_observe(h, METRIC_LABELS("ghl"), 7);
  assert_true(metric_value(h, METRIC_LABELS("ghl")) == 4);
  struct buf b;
  assert_string_equal(render(m, &b), "# HELP d_seconds Durations.\n"
                                     "# TYPE d_seconds histogram\n"
                                     "d_seconds_bucket{source=\"ghl\",le=\"0.01\"} 2\n"
                                     "d_seconds_bucket{source=\"ghl\",le=\"0.1\"} 2\n"
                                     "d_seconds_bucket{source=\"ghl\",le=\"1\"} 3\n"
                                     "d_seconds_bucket{source=\"ghl\",le=\"+Inf\"} 4\n"
                                     "d_seconds_sum{source=\"ghl\"} 7.515\n"
                                     "d_seconds_count{source=\"ghl\"} 4\n");
  buf_free(&b);
  metrics_free(m);
}

static void test_standard_buckets_are_sane(void **state) {
  (void)state;
  /* webhook latencies from half a millisecond to 5 s */
  assert_true(metrics_webhook_buckets[0] <= 0.0005);
  assert_true(metrics_webhook_buckets[metrics_webhook_nbuckets - 1] >= 5);
  assert_true(metrics_upstream_buckets[metrics_upstream_nbuckets - 1] >= 10);
  struct metrics *m = metrics_new();
  assert_non_null(metrics_histogram(m, "w", "", NULL, metrics_webhook_buckets,
                                    metrics_webhook_nbuckets));
  assert_non_null(metrics_histogram(m, "u", "", NULL, metrics_upstream_buckets,
                                    metrics_upstream_nbuckets));
  metrics_free(m);
}

static void test_many_series_and_a_bounded_buffer(void **state) {
  (void)state;
  struct metrics *m = metrics_new();
  struct metric *c = metrics_counter(m, "n_total", "n", METRIC_LABELS("k"));
  char k[16];
  for (int i = 0; i < 300; i++) {
    snprintf(k, sizeof k, "k%d", i);
    metric_add(c, METRIC_LABELS(k), i);
  }
  for (int i = 0; i < 300; i++) {
    snprintf(k, sizeof k, "k%d", i);
    assert_true(metric_value(c, METRIC_LABELS(k)) == i);
  }
  /* a buffer that lets too little in fails cleanly */
  struct buf b;
  buf_init(&b, 64);
  assert_int_equal(metrics_render(m, &b), -1);
  buf_free(&b);
  metrics_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counter_and_labels),
      cmocka_unit_test(test_view_adds_a_label),
      cmocka_unit_test(test_wrong_uses_change_nothing),
      cmocka_unit_test(test_same_name_is_the_same_family),
      cmocka_unit_test(test_escaping),
      cmocka_unit_test(test_unlabelled_family_shows_zero),
      cmocka_unit_test(test_histogram_buckets),
      cmocka_unit_test(test_standard_buckets_are_sane),
      cmocka_unit_test(test_many_series_and_a_bounded_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
