/* The thread wakes every UPKEEP_TICK_MS: a PASSIVE checkpoint (it never
 * waits for a reader or writer, so it never holds the loop up), and every
 * UPKEEP_RETENTION_SECONDS a retention pass in batches of UPKEEP_BATCH rows,
 * each its own short transaction, with a pause between them so the loop's
 * commits get the write lock in between. What it changes reaches the loop
 * through a pipe: the loop's connection owns its counts. */
#include "upkeep.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "store.h"

#define UPKEEP_TICK_MS 1000
#define UPKEEP_RETENTION_SECONDS 10
#define UPKEEP_RECOUNT_SECONDS 60
#define UPKEEP_BATCH 500
#define UPKEEP_BATCH_PAUSE_MS 20

/* One message from the thread to the loop; small enough for an atomic
 * pipe write. */
struct upkeep_msg {
  int kind; /* 'd': deleted done events (n), 'c': a recount (counts) */
  long n;
  long counts[EV_STATUS_COUNT];
};

struct upkeep {
  struct store *loop_store;
  char *db_path;
  int retention_days;
  pthread_t thread;
  int stop_pipe[2]; /* loop -> thread: closed to stop */
  int msg_pipe[2];  /* thread -> loop */
  struct event *msg_ev;
};

static void send_msg(struct upkeep *u, const struct upkeep_msg *m) {
  while (write(u->msg_pipe[1], m, sizeof *m) < 0 && errno == EINTR)
    ;
}

/* true when asked to stop (or the wait failed). */
static bool wait_stop(struct upkeep *u, int ms) {
  struct pollfd p = {u->stop_pipe[0], POLLIN, 0};
  int rc = poll(&p, 1, ms);
  return rc != 0 && !(rc < 0 && errno == EINTR);
}

static bool retention_pass(struct upkeep *u, struct store *s) {
  double cutoff = clock_wall() - (double)u->retention_days * 86400.0;
  long total = 0;
  for (;;) {
    int n = 0;
    if (store_retention_batch(s, cutoff, UPKEEP_BATCH, &n) != 0)
      break; /* busy or failing: the next pass tries again */
    if (n > 0) {
      struct upkeep_msg m = {'d', n, {0}};
      send_msg(u, &m);
      total += n;
    }
    if (n < UPKEEP_BATCH)
      break;
    if (wait_stop(u, UPKEEP_BATCH_PAUSE_MS))
      return true;
  }
  if (total)
    log_info("retention: %ld done events older than %d days removed", total, u->retention_days);
  return false;
}

static void *upkeep_thread(void *arg) {
  struct upkeep *u = arg;
  char err[512];
  struct store *s = store_open(u->db_path, err, sizeof err);
  if (!s) {
    log_error("upkeep: cannot open the store a second time: %s", err);
    return NULL;
  }
  double next_retention = 0, next_recount = clock_wall() + UPKEEP_RECOUNT_SECONDS;
  while (!wait_stop(u, UPKEEP_TICK_MS)) {
    store_checkpoint(s, NULL, NULL);
    double now = clock_wall();
    if (u->retention_days > 0 && now >= next_retention) {
      if (retention_pass(u, s))
        break;
      next_retention = now + UPKEEP_RETENTION_SECONDS;
    }
    if (now >= next_recount) {
      /* Other processes (backfill, replay) change statuses the loop's
       * connection never sees; a recount now and then folds them in. */
      struct upkeep_msg m = {'c', 0, {0}};
      if (store_count_by_status(s, m.counts) == 0)
        send_msg(u, &m);
      next_recount = now + UPKEEP_RECOUNT_SECONDS;
    }
  }
  store_checkpoint(s, NULL, NULL);
  store_close(s);
  return NULL;
}

static void on_msg(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  struct upkeep *u = arg;
  struct upkeep_msg m;
  while (read(fd, &m, sizeof m) == (ssize_t)sizeof m) {
    long c[EV_STATUS_COUNT];
    if (m.kind == 'd') {
      store_counts(u->loop_store, c);
      c[EV_DONE] -= m.n;
      store_counts_set(u->loop_store, c);
    } else if (m.kind == 'c') {
      store_counts_set(u->loop_store, m.counts);
    }
  }
}

struct upkeep *upkeep_start(struct event_base *base, struct store *loop_store, const char *db_path,
                            int retention_days) {
  struct upkeep *u = calloc(1, sizeof *u);
  if (!u)
    return NULL;
  u->loop_store = loop_store;
  u->retention_days = retention_days;
  u->stop_pipe[0] = u->stop_pipe[1] = u->msg_pipe[0] = u->msg_pipe[1] = -1;
  u->db_path = strdup(db_path);
  if (!u->db_path || pipe(u->stop_pipe) != 0 || pipe(u->msg_pipe) != 0)
    goto fail;
  for (int i = 0; i < 2; i++) {
    fcntl(u->stop_pipe[i], F_SETFD, FD_CLOEXEC);
    fcntl(u->msg_pipe[i], F_SETFD, FD_CLOEXEC);
  }
  fcntl(u->msg_pipe[0], F_SETFL, O_NONBLOCK);
  u->msg_ev = event_new(base, u->msg_pipe[0], EV_READ | EV_PERSIST, on_msg, u);
  if (!u->msg_ev || event_add(u->msg_ev, NULL) != 0)
    goto fail;
  if (pthread_create(&u->thread, NULL, upkeep_thread, u) != 0)
    goto fail;
  return u;
fail:
  log_error("upkeep: cannot start its thread; checkpoints and retention are off");
  if (u->msg_ev)
    event_free(u->msg_ev);
  for (int i = 0; i < 2; i++) {
    if (u->stop_pipe[i] >= 0)
      close(u->stop_pipe[i]);
    if (u->msg_pipe[i] >= 0)
      close(u->msg_pipe[i]);
  }
  free(u->db_path);
  free(u);
  return NULL;
}

void upkeep_stop(struct upkeep *u) {
  if (!u)
    return;
  close(u->stop_pipe[1]); /* wakes the thread's poll */
  pthread_join(u->thread, NULL);
  close(u->stop_pipe[0]);
  event_free(u->msg_ev);
  close(u->msg_pipe[0]);
  close(u->msg_pipe[1]);
  free(u->db_path);
  free(u);
}
