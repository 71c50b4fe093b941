/* Group commit. The first write of a loop turn opens a transaction and
 * activates a one-shot event; libevent runs active events after the ones
 * already being dispatched, so by the time the commit runs, every request
 * read in this turn has joined. One fsync then covers them all. */
#include "queue.h"

#include <event2/event.h>
#include <stdlib.h>

#include "log.h"
#include "store.h"

struct waiter {
  queue_commit_cb cb;
  void *ud;
};

struct queue {
  struct event_base *base;
  struct store *store;
  struct event *commit_ev;
  bool open;
  bool durable;   /* the open batch was begun with a full sync */
  bool need_sync; /* a durable write joined a batch begun without one */
  struct waiter *waiters;
  size_t nwaiters, capwaiters;
  /* Waiters being called back; a callback that writes again opens the next
   * batch, which must not be confused with this one. */
};

static void run_commit(struct queue *q) {
  if (!q->open)
    return;
  q->open = false;
  bool ok = store_commit(q->store) == 0;
  if (!ok) {
    log_error("queue: batch commit failed, rolled back");
    store_rollback(q->store);
  } else if (q->need_sync && store_sync(q->store) != 0) {
    log_error("queue: committed batch could not be made durable");
    ok = false;
  }
  /* Take the waiter list before calling back: callbacks may join again. */
  struct waiter *w = q->waiters;
  size_t n = q->nwaiters;
  q->waiters = NULL;
  q->nwaiters = q->capwaiters = 0;
  for (size_t i = 0; i < n; i++)
    w[i].cb(w[i].ud, ok);
  free(w);
}

static void on_commit(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  run_commit(arg);
}

struct queue *queue_new(struct event_base *base, struct store *store) {
  struct queue *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->base = base;
  q->store = store;
  q->commit_ev = event_new(base, -1, 0, on_commit, q);
  if (!q->commit_ev) {
    free(q);
    return NULL;
  }
  /* Fails harmlessly on a base without priorities (tests, CLI commands). */
  event_priority_set(q->commit_ev, QUEUE_PRIO_INTAKE);
  return q;
}

void queue_free(struct queue *q) {
  if (!q)
    return;
  run_commit(q);
  event_free(q->commit_ev);
  free(q);
}

static int join(struct queue *q, bool durable) {
  if (q->open) {
    if (durable && !q->durable)
      q->need_sync = true;
    return 0;
  }
  /* SQLite reads the sync mode at BEGIN, so it is chosen by the first
   * writer of the batch; a durable writer arriving later asks for a sync
   * after the commit instead. */
  if (store_set_full_sync(q->store, durable) != 0 || store_begin(q->store) != 0)
    return -1;
  q->open = true;
  q->durable = durable;
  q->need_sync = false;
  event_active(q->commit_ev, 0, 0);
  return 0;
}

int queue_join(struct queue *q) { return join(q, false); }

int queue_join_durable(struct queue *q) { return join(q, true); }

void queue_after_commit(struct queue *q, queue_commit_cb cb, void *ud) {
  if (queue_join(q) != 0) {
    cb(ud, false);
    return;
  }
  if (q->nwaiters == q->capwaiters) {
    size_t cap = q->capwaiters ? q->capwaiters * 2 : 64;
    struct waiter *w = realloc(q->waiters, cap * sizeof *w);
    if (!w) {
      cb(ud, false);
      return;
    }
    q->waiters = w;
    q->capwaiters = cap;
  }
  q->waiters[q->nwaiters++] = (struct waiter){cb, ud};
}

int queue_flush(struct queue *q) {
  if (!q->open)
    return 0;
  event_del(q->commit_ev);
  run_commit(q);
  return 0;
}
