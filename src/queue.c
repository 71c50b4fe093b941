/* Group commit. The first write of a loop turn opens a transaction and
 * activates a one-shot event; libevent runs it after the events already
 * being dispatched, so every request read in that turn has joined before the
 * single COMMIT.
 *
 * The store commits without syncing (synchronous=NORMAL: safe against a
 * crash of the process), and durability against a crash of the machine is
 * added here, off the loop: a small thread fdatasync()s the WAL file through
 * a descriptor of its own (fsync flushes the file, whichever descriptor asks)
 * while the loop goes on reading the next batch. Waiters of a durable batch
 * run when an fsync that began after their COMMIT has finished; batches that
 * commit while one fsync runs share the next. So the loop never waits for
 * the disk, and one fsync covers as many batches as arrive meanwhile.
 * A store with no WAL file (PostgreSQL, store_wal_file NULL) keeps full
 * sync: its COMMIT returns once the server has flushed it, and the fsync
 * steps here are no-ops. */
#include "queue.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

/* How soon a commit nobody waits on for durability (outcomes, links,
 * attempts) gets its fsync anyway. */
#define QUEUE_LAZY_SYNC_SECONDS 0.5
/* How often a write that found the lock held by another process tries
 * again. The loop never sleeps in SQLite's busy handler. */
#define QUEUE_BUSY_RETRY_USEC 5000
/* How long a batch of plain writes only stays open. Run outcomes, attempts
 * and links come one callback at a time, each in a loop turn of its own:
 * committed turn by turn they rewrote the same table and index pages into
 * the WAL hundreds of times a second, a fifth of processing's CPU (a backlog
 * drained at ~1,900 events/s; held 1 ms, ~2,500/s). Nobody is answered on
 * such a batch, so nothing waits on the hold but the run's next step. */
#define QUEUE_PLAIN_HOLD_USEC 1000

struct waiter {
  queue_commit_cb cb;
  void *ud;
};

struct wlist {
  struct waiter *v;
  size_t n, cap;
};

struct queue {
  struct event_base *base;
  struct store *store;
  struct event *commit_ev;
  bool open;
  bool durable; /* a durable write joined the open batch */
  struct wlist batch;
  /* The open batch commits when the fsync in flight ends (not at the end
   * of this loop turn): batches grow with the load, with no timer. */
  bool commit_after_sync;

  /* The fsync pipeline. */
  int wal_fd;             /* -1 until the first durable commit */
  bool thread_started;
  pthread_t thread;
  int req_pipe[2];        /* loop -> thread: 's' sync, 'q' quit */
  int done_pipe[2];       /* thread -> loop: '1' synced, '0' failed */
  struct event *done_ev;
  bool syncing;
  struct wlist in_sync;   /* covered by the fsync in flight */
  struct wlist next_sync; /* committed since it began: wait for the next one */

  /* Commits with nobody waiting for their fsync still get one soon. */
  struct event *lazy_ev;
  unsigned long lazy_gen;   /* bumped by every commit not followed by a sync */
  unsigned long flight_gen; /* lazy_gen when the sync in flight began */
  unsigned long synced_gen; /* lazy_gen covered by the last good sync */
  long long changes_at_begin; /* store_total_changes when the batch opened */
  /* False when the store has no WAL file to sync (PostgreSQL): its COMMIT
   * is durable itself (full sync stays on) and every "sync" is a no-op. */
  bool wal_sync;

  bool full; /* the last batch was rolled back on a full disk; cleared by a good commit */
  long plain_hold_usec; /* QUEUE_PLAIN_HOLD_USEC unless set */

  /* Writes waiting for the write lock another process holds. */
  struct event *busy_ev;
  struct wlist when_writable;

  /* Once a COMMIT or an fsync fails the file is not trusted again. */
  char failed[256];
  void (*on_fail)(void *ud, const char *reason);
  void *fail_ud;
};

static void enter_failed(struct queue *q, const char *fmt, const char *detail);
static void run_commit(struct queue *q);

static int wlist_add(struct wlist *l, queue_commit_cb cb, void *ud) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct waiter *v = realloc(l->v, cap * sizeof *v);
    if (!v)
      return -1;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = (struct waiter){cb, ud};
  return 0;
}

static int wlist_move(struct wlist *to, struct wlist *from) {
  for (size_t i = 0; i < from->n; i++)
    if (wlist_add(to, from->v[i].cb, from->v[i].ud) != 0)
      return -1;
  from->n = 0;
  return 0;
}

/* Callbacks may join and wait again: they land in fresh lists. */
static void wlist_run(struct wlist *l, bool ok) {
  struct wlist mine = *l;
  memset(l, 0, sizeof *l);
  for (size_t i = 0; i < mine.n; i++)
    mine.v[i].cb(mine.v[i].ud, ok);
  free(mine.v);
}

/* The WAL's fdatasync; nothing to do on a store whose commits are durable. */
static int wal_datasync(struct queue *q) { return q->wal_sync ? fdatasync(q->wal_fd) : 0; }

static void *sync_thread(void *arg) {
  struct queue *q = arg;
  char c;
  while (read(q->req_pipe[0], &c, 1) == 1 && c == 's') {
    char ok = wal_datasync(q) == 0 ? '1' : '0';
    while (write(q->done_pipe[1], &ok, 1) < 0 && errno == EINTR)
      ;
  }
  return NULL;
}

/* quiet: at start, when the WAL may not exist yet (the first sync opens it). */
static int open_wal(struct queue *q, bool quiet) {
  if (q->wal_fd >= 0 || !q->wal_sync)
    return 0;
  const char *path = store_wal_file(q->store);
  q->wal_fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
  if (q->wal_fd < 0) {
    if (!quiet)
      log_error("queue: cannot open %s to sync it: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

static void start_sync(struct queue *q) {
  if (q->failed[0]) {
    /* No fsync is coming: a batch that was open when the queue failed
     * hears so now, not at exit. */
    if (!q->syncing)
      wlist_run(&q->next_sync, false);
    return;
  }
  if (q->syncing || (q->next_sync.n == 0 && q->synced_gen == q->lazy_gen))
    return;
  q->flight_gen = q->lazy_gen;
  bool ok = open_wal(q, false) == 0 && q->thread_started;
  if (ok) {
    ok = wlist_move(&q->in_sync, &q->next_sync) == 0;
    char c = 's';
    if (ok && write(q->req_pipe[1], &c, 1) == 1) {
      q->syncing = true;
      /* Watched only while a sync is owed, so an idle queue leaves no
       * event pending and event_base_dispatch can return. */
      event_add(q->done_ev, NULL);
      return;
    }
  }
  /* No thread (or no descriptor): sync here, on the loop. */
  ok = ok || open_wal(q, false) == 0;
  ok = ok && wal_datasync(q) == 0;
  if (ok)
    q->synced_gen = q->flight_gen;
  else
    enter_failed(q, "fdatasync of the WAL failed: %s", strerror(errno));
  wlist_move(&q->in_sync, &q->next_sync);
  wlist_run(&q->in_sync, ok);
}

static void on_synced(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  struct queue *q = arg;
  char ok = '0';
  if (read(fd, &ok, 1) != 1)
    return;
  q->syncing = false;
  event_del(q->done_ev);
  if (ok == '1') {
    q->synced_gen = q->flight_gen;
    log_debug("queue: WAL synced");
  } else {
    /* After a failed fsync the kernel may have dropped the dirty pages
     * while the page cache still shows them: nothing written since the last
     * good sync can be trusted, so stop here (see enter_failed). */
    enter_failed(q, "fdatasync of the WAL failed: %s", "I/O error");
    wlist_move(&q->in_sync, &q->next_sync); /* no later sync is coming */
  }
  wlist_run(&q->in_sync, ok == '1');
  if (q->commit_after_sync)
    run_commit(q); /* the batch that waited for this fsync; it starts the next */
  start_sync(q);
}

static void run_commit(struct queue *q) {
  if (!q->open)
    return;
  if (!store_in_txn(q->store)) {
    /* A statement of the batch hit a full disk or an I/O error and SQLite
     * rolled the whole batch back under us. */
    q->open = false;
    if (store_last_fault(q->store) == STORE_FAULT_IO) {
      enter_failed(q, "a write failed: %s", "I/O error");
    } else {
      q->full = true;
      log_error("queue: the batch was rolled back by SQLite (disk full?); its requests get 503");
    }
    wlist_run(&q->batch, false);
    return;
  }
  q->commit_after_sync = false;
  store_clear_fault(q->store);
  bool ok = store_commit(q->store) == 0;
  if (!ok && store_last_fault(q->store) == STORE_FAULT_BUSY && store_in_txn(q->store)) {
    /* Still open, writes and waiters kept: commit again in a moment. */
    struct timeval tv = {0, QUEUE_BUSY_RETRY_USEC};
    event_add(q->commit_ev, &tv);
    return;
  }
  q->open = false;
  if (!ok) {
    store_rollback(q->store);
    if (store_last_fault(q->store) == STORE_FAULT_FULL) {
      q->full = true;
      log_error("queue: batch commit failed (disk full), rolled back; its requests get 503");
    } else if (!q->wal_sync) {
      /* A database server (PostgreSQL): a failed COMMIT, a lost connection
       * included, left nothing of the batch behind and casts no doubt on
       * what was committed before, so the next batch simply tries again
       * (on a new connection if need be). */
      log_error("queue: batch commit failed on the database server, rolled back; its requests "
                "get 503");
    } else
      enter_failed(q, "COMMIT failed: %s", "the store could not write its batch");
  }
  if (ok)
    q->full = false;
  log_debug("queue: batch %s, %zu waiting%s", ok ? "committed" : "rolled back", q->batch.n,
            q->durable ? " for the fsync" : "");
  if (ok && !q->durable && store_total_changes(q->store) != q->changes_at_begin) {
    q->lazy_gen++;
    if (!event_pending(q->lazy_ev, EV_TIMEOUT, NULL)) {
      struct timeval tv = {0, (suseconds_t)(QUEUE_LAZY_SYNC_SECONDS * 1e6)};
      event_add(q->lazy_ev, &tv);
    }
  }
  if (ok && q->durable) {
    q->lazy_gen++; /* the fsync it waits for covers the lazy ones too */
    if (wlist_move(&q->next_sync, &q->batch) == 0) {
      start_sync(q);
      return;
    }
    ok = false;
  }
  wlist_run(&q->batch, ok);
}

static void on_commit(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  run_commit(arg);
}

static void on_lazy_sync(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct queue *q = arg;
  if (q->failed[0] || q->synced_gen == q->lazy_gen)
    return;
  if (q->syncing) {
    /* The sync in flight may have begun before the commit: look again. */
    struct timeval tv = {0, (suseconds_t)(QUEUE_LAZY_SYNC_SECONDS * 1e6)};
    event_add(q->lazy_ev, &tv);
    return;
  }
  start_sync(q);
}

static void on_busy_retry(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct queue *q = arg;
  if (q->failed[0]) {
    wlist_run(&q->when_writable, false);
    return;
  }
  if (!q->open && queue_join(q) != 0) {
    if (!queue_busy(q)) {
      wlist_run(&q->when_writable, false); /* not the lock: no point waiting */
      return;
    }
    struct timeval tv = {0, QUEUE_BUSY_RETRY_USEC};
    event_add(q->busy_ev, &tv);
    return;
  }
  log_debug("queue: the write lock is free again; %zu writes go on", q->when_writable.n);
  wlist_run(&q->when_writable, true);
}

static void enter_failed(struct queue *q, const char *fmt, const char *detail) {
  if (q->failed[0])
    return;
  snprintf(q->failed, sizeof q->failed, fmt, detail);
  log_error("queue: %s; the store is no longer trusted: intake stops, and the service must "
            "restart to recover from the file",
            q->failed);
  if (q->on_fail)
    q->on_fail(q->fail_ud, q->failed);
}

static int make_pipe(int fds[2]) {
  if (pipe(fds) != 0)
    return -1;
  fcntl(fds[0], F_SETFD, FD_CLOEXEC);
  fcntl(fds[1], F_SETFD, FD_CLOEXEC);
  return 0;
}

struct queue *queue_new(struct event_base *base, struct store *store) {
  struct queue *q = calloc(1, sizeof *q);
  if (!q)
    return NULL;
  q->base = base;
  q->store = store;
  q->wal_fd = -1;
  q->plain_hold_usec = QUEUE_PLAIN_HOLD_USEC;
  q->req_pipe[0] = q->req_pipe[1] = q->done_pipe[0] = q->done_pipe[1] = -1;
  q->commit_ev = event_new(base, -1, 0, on_commit, q);
  q->lazy_ev = event_new(base, -1, 0, on_lazy_sync, q);
  q->busy_ev = event_new(base, -1, 0, on_busy_retry, q);
  q->wal_sync = store_wal_file(store) != NULL;
  if (!q->commit_ev || !q->lazy_ev || !q->busy_ev ||
      (q->wal_sync && store_set_full_sync(store, false) != 0) ||
      make_pipe(q->req_pipe) != 0 || make_pipe(q->done_pipe) != 0 ||
      !(q->done_ev = event_new(base, q->done_pipe[0], EV_READ | EV_PERSIST, on_synced, q))) {
    queue_free(q);
    return NULL;
  }
  /* Fail harmlessly on a base without priorities (tests, CLI commands). */
  event_priority_set(q->commit_ev, QUEUE_PRIO_INTAKE);
  event_priority_set(q->done_ev, QUEUE_PRIO_INTAKE);
  event_priority_set(q->busy_ev, QUEUE_PRIO_INTAKE);
  /* Opened now, while descriptors are to be had: opened at the first sync,
   * a flood of connections that took the last one would fail that sync and
   * with it the store. If the WAL is not there yet, the first sync opens it. */
  (void)open_wal(q, true);
  q->thread_started = pthread_create(&q->thread, NULL, sync_thread, q) == 0;
  if (!q->thread_started)
    log_warn("queue: no sync thread; fsyncs run on the loop");
  return q;
}

void queue_free(struct queue *q) {
  if (!q)
    return;
  if (q->commit_ev)
    queue_flush(q);
  if (q->thread_started) {
    char c = 'q';
    if (write(q->req_pipe[1], &c, 1) == 1)
      pthread_join(q->thread, NULL);
  }
  if (q->done_ev)
    event_free(q->done_ev);
  if (q->lazy_ev)
    event_free(q->lazy_ev);
  wlist_run(&q->when_writable, false);
  if (q->busy_ev)
    event_free(q->busy_ev);
  free(q->when_writable.v);
  if (q->commit_ev)
    event_free(q->commit_ev);
  int fds[] = {q->req_pipe[0], q->req_pipe[1], q->done_pipe[0], q->done_pipe[1], q->wal_fd};
  for (size_t i = 0; i < sizeof fds / sizeof *fds; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  free(q->batch.v);
  free(q->in_sync.v);
  free(q->next_sync.v);
  free(q);
}

/* urgent: someone waits for this write's commit (not for its fsync): no hold. */
static int join(struct queue *q, bool durable, bool urgent) {
  if (q->failed[0])
    return -1;
  if (!q->open) {
    store_clear_fault(q->store);
    if (store_begin(q->store) != 0)
      return -1;
    q->changes_at_begin = store_total_changes(q->store);
    q->open = true;
    q->durable = false;
    /* Adaptive group commit. With no fsync in flight the batch commits at
     * the end of this loop turn (an idle system waits for nothing). With
     * one in flight, its answers could not go out before that fsync ends
     * anyway: the batch stays open, gathering what arrives meanwhile, and
     * commits the moment the fsync is done. Under load the batches grow
     * with it; each COMMIT costs about as much as the writes it carries. */
    if (q->syncing && q->wal_sync) {
      q->commit_after_sync = true;
    } else if (!durable && !urgent) {
      struct timeval tv = {q->plain_hold_usec / 1000000, q->plain_hold_usec % 1000000};
      event_add(q->commit_ev, &tv);
    } else {
      event_active(q->commit_ev, 0, 0);
    }
  } else if ((durable || urgent) && !q->commit_after_sync) {
    /* An acknowledgement, or a write someone waits on, joins a held batch:
     * it commits this turn. */
    event_active(q->commit_ev, 0, 0);
  }
  q->durable = q->durable || durable;
  return 0;
}

void queue_set_plain_hold(struct queue *q, long usec) { q->plain_hold_usec = usec < 0 ? 0 : usec; }

int queue_join(struct queue *q) { return join(q, false, false); }

int queue_join_now(struct queue *q) { return join(q, false, true); }

int queue_join_durable(struct queue *q) { return join(q, true, false); }

void queue_after_commit(struct queue *q, queue_commit_cb cb, void *ud) {
  if (queue_join(q) != 0 || wlist_add(&q->batch, cb, ud) != 0)
    cb(ud, false);
}

int queue_flush(struct queue *q) {
  /* Writes still waiting for another process's lock give up now (their
   * webhooks get 503: nothing of them was stored), while whoever owns them
   * is still there to answer. */
  wlist_run(&q->when_writable, false);
  if (q->busy_ev)
    event_del(q->busy_ev);
  if (q->open) {
    event_del(q->commit_ev);
    run_commit(q);
    /* Still open: another process holds the lock. At shutdown, wait for it
     * (with SQLite's own busy wait: the loop has nothing left to serve). */
    if (q->open) {
      store_set_busy_timeout(q->store, 5000);
      run_commit(q);
      event_del(q->commit_ev);
      if (q->open) {
        q->open = false;
        store_rollback(q->store);
        wlist_run(&q->batch, false);
      }
    }
  }
  if (q->syncing) {
    /* Wait for the fsync in flight, then settle what it covered. */
    char ok = '0';
    while (read(q->done_pipe[0], &ok, 1) < 0 && errno == EINTR)
      ;
    q->syncing = false;
    event_del(q->done_ev);
    wlist_run(&q->in_sync, ok == '1');
  }
  if (q->next_sync.n || q->synced_gen != q->lazy_gen) {
    bool ok = !q->failed[0] && open_wal(q, false) == 0 && wal_datasync(q) == 0;
    if (ok)
      q->synced_gen = q->lazy_gen;
    else
      enter_failed(q, "fdatasync of the WAL failed: %s", "at shutdown");
    wlist_move(&q->in_sync, &q->next_sync);
    wlist_run(&q->in_sync, ok);
  }
  return q->failed[0] ? -1 : 0;
}

bool queue_busy(struct queue *q) {
  return !q->open && !q->failed[0] && store_last_fault(q->store) == STORE_FAULT_BUSY;
}

void queue_when_writable(struct queue *q, queue_commit_cb cb, void *ud) {
  if (q->failed[0] || wlist_add(&q->when_writable, cb, ud) != 0) {
    cb(ud, false);
    return;
  }
  if (!event_pending(q->busy_ev, EV_TIMEOUT, NULL)) {
    struct timeval tv = {0, QUEUE_BUSY_RETRY_USEC};
    event_add(q->busy_ev, &tv);
  }
}

int queue_undo(struct queue *q, int (*fn)(void *ud, struct store *s), void *ud) {
  if (q->open) {
    q->open = false;
    event_del(q->commit_ev);
    store_rollback(q->store);
    wlist_run(&q->batch, false);
  }
  store_set_busy_timeout(q->store, 5000);
  store_clear_fault(q->store);
  if (store_begin(q->store) != 0)
    return -1;
  if (fn(ud, q->store) != 0 || store_commit(q->store) != 0) {
    store_rollback(q->store);
    return -1;
  }
  return open_wal(q, false) == 0 && wal_datasync(q) == 0 ? 0 : -1;
}

bool queue_disk_full(const struct queue *q) { return q && q->full; }

const char *queue_failed(const struct queue *q) { return q->failed[0] ? q->failed : NULL; }

void queue_on_fail(struct queue *q, void (*cb)(void *ud, const char *reason), void *ud) {
  q->on_fail = cb;
  q->fail_ud = ud;
}
