/* Group commit: writes of one loop turn share one transaction, callbacks
 * run after its commit, and a durable write that joins a batch begun
 * without a full sync gets the sync afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue.h"
#include "store.h"

struct fixture {
  char dir[64];
  struct event_base *base;
  struct store *s;
  struct queue *q;
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/ncghl-queue-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  char path[128], err[256];
  snprintf(path, sizeof path, "%s/q.db", f->dir);
  f->base = event_base_new();
  f->s = store_open(path, err, sizeof err);
  assert_non_null(f->s);
  f->q = queue_new(f->base, f->s);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  queue_free(f->q);
  store_close(f->s);
  event_base_free(f->base);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

struct seen {
  int calls;
  bool committed;
  bool in_txn; /* was a transaction open while the callback ran? */
  struct store *s;
};

static void on_commit(void *ud, bool committed) {
  struct seen *w = ud;
  w->calls++;
  w->committed = committed;
  w->in_txn = store_in_txn(w->s);
}

static int sync_count(struct store *s) {
  char *v = store_kv_get(s, "store.sync");
  int n = v ? atoi(v) : 0;
  free(v);
  return n;
}

static void test_one_batch_per_turn(void **state) {
  struct fixture *f = *state;
  struct seen a = {0, false, false, f->s}, b = {0, false, false, f->s};
  assert_int_equal(queue_join(f->q), 0);
  assert_int_equal(store_kv_put(f->s, "k1", "v1"), 0);
  queue_after_commit(f->q, on_commit, &a);
  assert_int_equal(queue_join(f->q), 0); /* same batch */
  assert_int_equal(store_kv_put(f->s, "k2", "v2"), 0);
  queue_after_commit(f->q, on_commit, &b);
  assert_int_equal(a.calls, 0); /* nothing before the commit */
  assert_true(store_in_txn(f->s));
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(a.calls, 1);
  assert_int_equal(b.calls, 1);
  assert_true(a.committed && b.committed);
  assert_false(a.in_txn);
  assert_false(store_in_txn(f->s));
  char *v = store_kv_get(f->s, "k2");
  assert_string_equal(v, "v2");
  free(v);
}

static void test_durable_join_into_plain_batch_syncs(void **state) {
  struct fixture *f = *state;
  struct seen a = {0, false, false, f->s};
  int before = sync_count(f->s);
  assert_int_equal(queue_join(f->q), 0);         /* a run outcome: no fsync needed */
  assert_int_equal(queue_join_durable(f->q), 0); /* an accepted webhook joins */
  queue_after_commit(f->q, on_commit, &a);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_true(a.committed);
  assert_int_equal(sync_count(f->s), before + 1);
}

static void test_durable_batch_needs_no_extra_sync(void **state) {
  struct fixture *f = *state;
  struct seen a = {0, false, false, f->s};
  int before = sync_count(f->s);
  assert_int_equal(queue_join_durable(f->q), 0); /* begun with a full sync */
  assert_int_equal(queue_join(f->q), 0);
  queue_after_commit(f->q, on_commit, &a);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_true(a.committed);
  assert_int_equal(sync_count(f->s), before);
  /* and a plain batch alone is not synced either */
  struct seen b = {0, false, false, f->s};
  assert_int_equal(queue_join(f->q), 0);
  queue_after_commit(f->q, on_commit, &b);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_true(b.committed);
  assert_int_equal(sync_count(f->s), before);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_one_batch_per_turn, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_join_into_plain_batch_syncs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_batch_needs_no_extra_sync, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
