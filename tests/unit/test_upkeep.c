/* upkeep: one thread for every store; a store that is not always kept open
 * gets its visit (checkpoint, retention) on a connection that is closed
 * again afterwards, and one that is always kept keeps its connection. (Not
 * seen from the descriptors: SQLite keeps a closed connection's descriptor
 * while another connection of the process holds locks on the file.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "upkeep.h"

struct fx {
  char dir[64], path[128];
  struct event_base *base;
  struct store *s;
  struct upkeep_pool *pool;
  struct upkeep *u;
};

static int setup(void **state) {
  struct fx *f = calloc(1, sizeof *f);
  assert_non_null(f);
  const char *tmp = getenv("TMPDIR");
  snprintf(f->dir, sizeof f->dir, "%s/ncghl-upkeep-XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
  char err[256];
  f->s = store_open(f->path, err, sizeof err);
  if (!f->s)
    fail_msg("store_open: %s", err);
  assert_int_equal(store_counts_seed(f->s), 0);
  f->base = event_base_new();
  assert_non_null(f->base);
  f->pool = upkeep_pool_new();
  assert_non_null(f->pool);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fx *f = *state;
  upkeep_pool_free(f->pool);
  store_close(f->s);
  event_base_free(f->base);
  char p[200];
  static const char *const sfx[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", f->path, sfx[i]);
    unlink(p);
  }
  rmdir(f->dir);
  free(f);
  return 0;
}

static void old_done_events(struct store *s, int n) {
  for (int i = 0; i < n; i++) {
    char id[32];
    snprintf(id, sizeof id, "old-%d", i);
    enum store_put put;
    enum ev_status existing;
    assert_int_equal(store_event_put(s, id, "manual", "t", "{}", 2, EV_RUNNING,
                                     1000.0, 86400, &put, &existing),
                     0);
    assert_int_equal(store_event_finish(s, id, EV_DONE, 0, NULL, "{}", 1000.0),
                     0);
  }
}

struct wait {
  struct fx *f;
  bool (*until)(struct fx *f);
  struct event *tick;
  int left; /* ticks before giving up: a guard against hanging, not a measure */
};

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct wait *w = arg;
  if (w->until(w->f) || --w->left <= 0)
    event_base_loopbreak(w->f->base);
}

/* Runs the loop (the thread's messages arrive through it) until `until`
 * holds; false if it never did. */
static bool run_until(struct fx *f, bool (*until)(struct fx *f)) {
  struct wait w = {f, until, NULL, 1200};
  w.tick = event_new(f->base, -1, EV_PERSIST, on_tick, &w);
  struct timeval tv = {0, 50000};
  event_add(w.tick, &tv);
  event_base_dispatch(f->base);
  event_free(w.tick);
  return until(f);
}

static bool no_done(struct fx *f) {
  long c[EV_STATUS_COUNT];
  store_counts(f->s, c);
  return c[EV_DONE] == 0;
}

static bool visited(struct fx *f) {
  return no_done(f) && !upkeep_connected(f->u);
}

static void test_quiet_store_visit_closes_its_connection(void **state) {
  struct fx *f = *state;
  old_done_events(f->s, 3);
  long c[EV_STATUS_COUNT];
  store_counts(f->s, c);
  assert_int_equal(c[EV_DONE], 3);
  struct upkeep *u = f->u =
      upkeep_start(f->pool, f->base, f->s, f->path, 30, false);
  assert_non_null(u);
  assert_false(upkeep_connected(u));
  /* The first store of a pool is visited at its first tick: retention ran,
   * its deletions reached the loop's counts, and the visit's connection is
   * closed again once it is done. */
  assert_true(run_until(f, visited));
  assert_false(upkeep_connected(u));
  upkeep_stop(u);
}

static bool connected(struct fx *f) { return upkeep_connected(f->u); }

static void test_always_kept_store_keeps_its_connection(void **state) {
  struct fx *f = *state;
  old_done_events(f->s, 2);
  struct upkeep *u = f->u =
      upkeep_start(f->pool, f->base, f->s, f->path, 30, true);
  assert_non_null(u);
  assert_true(run_until(f, no_done));
  assert_true(upkeep_connected(u)); /* and it stays */
  assert_true(run_until(f, connected));
  upkeep_stop(u); /* a last checkpoint, then closed */
}

int main(void) {
  log_init(LOGL_ERROR, NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          test_quiet_store_visit_closes_its_connection, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_always_kept_store_keeps_its_connection, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
