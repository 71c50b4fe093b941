/* Group commit: writes of one loop turn share one transaction; a plain
 * batch's callbacks run right after its COMMIT, a durable batch's only once
 * an fsync of the WAL (done off the loop) has finished; queue_flush settles
 * everything owed. With NCGHL_TEST_PG_URL set (ctest's unit_pg/test_queue)
 * the store is PostgreSQL, where a COMMIT is durable itself: the same
 * callbacks must run, with no WAL to sync; the lock test is SQLite's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue.h"
#include "store.h"

static const char *pg_url;
static int pg_schemas;

struct fixture {
  char dir[64];
  char path[512];
  struct event_base *base;
  struct store *s;
  struct queue *q;
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/ncghl-queue-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  char path[512], err[256];
  snprintf(path, sizeof path, "%s/q.db", f->dir);
  if (pg_url)
    snprintf(path, sizeof path, "%s%cncghl_schema=q_%ld_%d", pg_url, strchr(pg_url, '?') ? '&' : '?',
             (long)getpid(), ++pg_schemas);
  snprintf(f->path, sizeof f->path, "%s", path);
  f->base = event_base_new();
  f->s = store_open(path, err, sizeof err);
  assert_non_null(f->s);
  f->q = queue_new(f->base, f->s);
  assert_non_null(f->q);
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

/* Runs the loop until *calls is set (the fsync thread answers through it). */
static void run_until(struct fixture *f, int *calls) {
  for (int i = 0; i < 500 && *calls == 0; i++) {
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    if (*calls == 0)
      usleep(2000);
  }
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
  /* a plain batch stays open a moment (1 ms) for more plain writes, then
   * commits, and is called back right at the commit */
  run_until(f, &a.calls);
  assert_int_equal(a.calls, 1);
  assert_int_equal(b.calls, 1);
  assert_true(a.committed && b.committed);
  assert_false(a.in_txn);
  assert_false(store_in_txn(f->s));
  char *v = store_kv_get(f->s, "k2");
  assert_string_equal(v, "v2");
  free(v);
}

/* Opens a plain batch held for 30 s (whatever the clock does) with one
 * write and plain's callback, and checks it is still open after a turn. */
static void open_held_batch(struct fixture *f, struct seen *plain) {
  queue_set_plain_hold(f->q, 30 * 1000000L);
  assert_int_equal(queue_join(f->q), 0);
  assert_int_equal(store_kv_put(f->s, "attempt", "1"), 0);
  queue_after_commit(f->q, on_commit, plain);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_true(store_in_txn(f->s)); /* held */
  assert_int_equal(plain->calls, 0);
}

/* A plain batch is held for more plain writes; an acknowledged write that
 * joins it is not: the batch commits in the same turn, as an intake batch
 * always did. */
static void test_durable_write_ends_the_hold(void **state) {
  struct fixture *f = *state;
  struct seen plain = {0, false, false, f->s}, acked = {0, false, false, f->s};
  open_held_batch(f, &plain);
  assert_int_equal(queue_join_durable(f->q), 0);
  assert_int_equal(store_kv_put(f->s, "acked", "1"), 0);
  queue_after_commit(f->q, on_commit, &acked);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_false(store_in_txn(f->s)); /* committed this turn, no hold */
  run_until(f, &acked.calls); /* after the fsync */
  assert_int_equal(plain.calls, 1);
  assert_int_equal(acked.calls, 1);
  assert_true(plain.committed && acked.committed);
}

/* A run's outcome an answer waits for joins a held plain batch: the batch
 * commits this turn, and no fsync is waited for. */
static void test_join_now_ends_the_hold(void **state) {
  struct fixture *f = *state;
  struct seen plain = {0, false, false, f->s}, waited = {0, false, false, f->s};
  open_held_batch(f, &plain);
  assert_int_equal(queue_join_now(f->q), 0);
  assert_int_equal(store_kv_put(f->s, "outcome", "done"), 0);
  queue_after_commit(f->q, on_commit, &waited);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_false(store_in_txn(f->s));
  assert_int_equal(plain.calls, 1);
  assert_int_equal(waited.calls, 1); /* at the commit: no fsync owed */
  assert_true(waited.committed);
  /* Alone, it opens a batch that commits this turn too. */
  struct seen alone = {0, false, false, f->s};
  assert_int_equal(queue_join_now(f->q), 0);
  assert_int_equal(store_kv_put(f->s, "outcome2", "done"), 0);
  queue_after_commit(f->q, on_commit, &alone);
  event_base_loop(f->base, EVLOOP_NONBLOCK);
  assert_int_equal(alone.calls, 1);
}

static void test_durable_batch_waits_for_the_fsync(void **state) {
  struct fixture *f = *state;
  struct seen a = {0, false, false, f->s}, plain = {0, false, false, f->s};
  assert_int_equal(queue_join(f->q), 0);         /* a run outcome ... */
  assert_int_equal(queue_join_durable(f->q), 0); /* ... and an accepted webhook */
  assert_int_equal(store_kv_put(f->s, "acked", "1"), 0);
  queue_after_commit(f->q, on_commit, &a);
  run_until(f, &a.calls);
  assert_int_equal(a.calls, 1);
  assert_true(a.committed);
  /* the next plain batch does not wait for any fsync */
  assert_int_equal(queue_join(f->q), 0);
  queue_after_commit(f->q, on_commit, &plain);
  run_until(f, &plain.calls); /* after the hold of a plain batch */
  assert_int_equal(plain.calls, 1);
}

static void test_many_durable_batches_all_answered(void **state) {
  struct fixture *f = *state;
  enum { N = 50 };
  struct seen w[N];
  int done = 0;
  for (int i = 0; i < N; i++) {
    w[i] = (struct seen){0, false, false, f->s};
    assert_int_equal(queue_join_durable(f->q), 0);
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    assert_int_equal(store_kv_put(f->s, k, "v"), 0);
    queue_after_commit(f->q, on_commit, &w[i]);
    event_base_loop(f->base, EVLOOP_NONBLOCK); /* one batch per turn */
  }
  for (int t = 0; t < 1000 && done < N; t++) {
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    done = 0;
    for (int i = 0; i < N; i++)
      done += w[i].calls;
    if (done < N)
      usleep(1000);
  }
  for (int i = 0; i < N; i++) {
    assert_int_equal(w[i].calls, 1);
    assert_true(w[i].committed);
  }
}

static void test_flush_settles_what_is_owed(void **state) {
  struct fixture *f = *state;
  struct seen a = {0, false, false, f->s};
  assert_int_equal(queue_join_durable(f->q), 0);
  assert_int_equal(store_kv_put(f->s, "k", "v"), 0);
  queue_after_commit(f->q, on_commit, &a);
  assert_int_equal(queue_flush(f->q), 0);
  assert_int_equal(a.calls, 1);
  assert_true(a.committed);
}

/* Another process holds the write lock: the queue neither waits for it nor
 * fails the write; the write runs from a timer once the lock is free. */
static void test_busy_lock_waits_on_a_timer(void **state) {
  struct fixture *f = *state;
  store_set_busy_timeout(f->s, 0);
  sqlite3 *other;
  assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(queue_join(f->q), -1);
  assert_true(queue_busy(f->q));
  assert_null(queue_failed(f->q));
  struct seen w = {0, false, false, f->s};
  queue_when_writable(f->q, on_commit, &w);
  for (int i = 0; i < 20; i++) {
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    usleep(2000);
  }
  assert_int_equal(w.calls, 0); /* still held */
  assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  run_until(f, &w.calls);
  assert_int_equal(w.calls, 1);
  assert_true(w.committed);
  assert_true(w.in_txn); /* called with a batch open for its write */
}

int main(void) {
  pg_url = getenv("NCGHL_TEST_PG_URL");
  if (pg_url && *pg_url) {
    const struct CMUnitTest pg_tests[] = {
      cmocka_unit_test_setup_teardown(test_one_batch_per_turn, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_write_ends_the_hold, setup, teardown),
      cmocka_unit_test_setup_teardown(test_join_now_ends_the_hold, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_batch_waits_for_the_fsync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_durable_batches_all_answered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_settles_what_is_owed, setup, teardown),
    };
    return cmocka_run_group_tests_name("queue on PostgreSQL", pg_tests, NULL, NULL);
  }
  pg_url = NULL;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_one_batch_per_turn, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_write_ends_the_hold, setup, teardown),
      cmocka_unit_test_setup_teardown(test_join_now_ends_the_hold, setup, teardown),
      cmocka_unit_test_setup_teardown(test_durable_batch_waits_for_the_fsync, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_durable_batches_all_answered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flush_settles_what_is_owed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_busy_lock_waits_on_a_timer, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
