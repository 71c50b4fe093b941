/* One thread visits every registered store once a tick (UPKEEP_TICK_MS).
 * A store it keeps open gets a PASSIVE checkpoint each visit (it never
 * waits for a reader or writer, so it never holds the loop up) and every
 * UPKEEP_RETENTION_SECONDS a retention pass in batches of UPKEEP_BATCH rows,
 * each its own short transaction, with a pause between them so the loop's
 * commits get the write lock in between. What it changes reaches the loop
 * through a pipe: the loop's connection owns its counts.
 *
 * Why not a thread and a connection per store: with 500 tenants those were
 * 500 threads and 500 connections held for nothing most of the time, ~180
 * MiB of a 512 MiB budget (docs/performance.md, "Tenants"). A connection
 * costs ~1 ms to open, so a quiet tenant's once-a-minute visit is cheap,
 * and a busy one keeps its connection while its WAL keeps filling. */
#include "upkeep.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "store.h"

#define UPKEEP_TICK_MS 1000
#define UPKEEP_RETENTION_SECONDS 10
#define UPKEEP_RECOUNT_SECONDS 60
#define UPKEEP_BATCH 500
#define UPKEEP_BATCH_PAUSE_MS 20
/* Batches one visit may run, so one store's long retention does not hold
 * up the others' checkpoints; the rest follows on the next visits. */
#define UPKEEP_BATCHES_PER_VISIT 10
/* A quiet store's visit: its connection opened, one checkpoint, retention
 * and recount when due, closed. Spread over the minute by arrival. */
#define UPKEEP_QUIET_VISIT_SECONDS 60
/* A busy store's connection stays open until this many checkpoints in a
 * row found at most UPKEEP_QUIET_FRAMES frames in the WAL (a presence beat
 * writes one or two a second). */
#define UPKEEP_QUIET_TICKS 30
#define UPKEEP_QUIET_FRAMES 64
/* What a quiet store's WAL may gain between two visits before it counts as
 * busy (and gets its checkpoint every tick). */
#define UPKEEP_BUSY_GROWTH (1LL << 20)

/* One message from the thread to the loop; small enough for an atomic
 * pipe write. */
struct upkeep_msg {
  int kind; /* 'd': deleted done events (n), 'c': a recount (counts) */
  long n;
  long counts[EV_STATUS_COUNT];
};

struct upkeep {
  struct upkeep_pool *pool;
  struct upkeep *next; /* in pool->list */
  struct store *loop_store;
  char *db_path, *wal_path;
  int retention_days;
  bool always;
  int msg_pipe[2]; /* thread -> loop */
  struct event *msg_ev;

  /* The thread's, while in the pool's list (and upkeep_stop's after). */
  struct store *s;    /* its connection; NULL while quiet */
  bool wal_known;     /* the WAL file could be looked at */
  long long wal_size; /* its size after this thread's last checkpoint */
  int quiet_ticks;    /* checkpoints in a row that found little */
  double next_visit;  /* a quiet store's next visit */
  double next_retention, next_recount;
};

struct upkeep_pool {
  pthread_t thread;
  int stop_pipe[2];    /* loop -> thread: closed to stop */
  unsigned long added; /* spreads the quiet visits over the minute */
  pthread_mutex_t mu;
  pthread_cond_t idle; /* broadcast when `busy` goes back to NULL */
  struct upkeep *list;
  struct upkeep *busy; /* the one the thread is working on */
};

static void send_msg(struct upkeep *u, const struct upkeep_msg *m) {
  while (write(u->msg_pipe[1], m, sizeof *m) < 0 && errno == EINTR)
    ;
}

/* true when asked to stop (or the wait failed). */
static bool wait_stop(struct upkeep_pool *p, int ms) {
  struct pollfd pf = {p->stop_pipe[0], POLLIN, 0};
  int rc = poll(&pf, 1, ms);
  return rc != 0 && !(rc < 0 && errno == EINTR);
}

/* Up to UPKEEP_BATCHES_PER_VISIT batches; true when asked to stop. */
static bool retention_pass(struct upkeep *u, struct store *s, double now) {
  double cutoff = clock_wall() - (double)u->retention_days * 86400.0;
  long total = 0;
  bool more = false;
  for (int i = 0; i < UPKEEP_BATCHES_PER_VISIT; i++) {
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
    more = i + 1 == UPKEEP_BATCHES_PER_VISIT;
    if (wait_stop(u->pool, UPKEEP_BATCH_PAUSE_MS))
      return true;
  }
  if (total)
    log_info("retention: %ld done events older than %d days removed", total,
             u->retention_days);
  u->next_retention = more ? now : now + UPKEEP_RETENTION_SECONDS;
  return false;
}

/* Whether the WAL grew by more than UPKEEP_BUSY_GROWTH since the last
 * checkpoint this thread ran (wal_size, the size then): writes are coming
 * faster than a once-a-minute checkpoint should let them pile up. (A WAL
 * starts again from its beginning once checkpointed, so its size is a
 * high-water mark: it grows only when writes outrun the checkpoints.) A
 * store without a WAL file to look at (another backend) counts as busy. */
static bool wal_busy(struct upkeep *u) {
  struct stat sb;
  if (stat(u->wal_path, &sb) != 0) {
    u->wal_known = false;
    return true;
  }
  if (!u->wal_known) {
    u->wal_known = true;
    u->wal_size = (long long)sb.st_size;
  }
  return (long long)sb.st_size > u->wal_size + UPKEEP_BUSY_GROWTH;
}

static void wal_mark(struct upkeep *u) {
  struct stat sb;
  if (stat(u->wal_path, &sb) == 0)
    u->wal_size = (long long)sb.st_size;
}

/* One store's turn; true when asked to stop. */
static bool visit(struct upkeep *u, double now) {
  bool grew = wal_busy(u);
  bool busy = u->always || !u->wal_known || grew || u->s;
  if (!busy && now < u->next_visit)
    return false;
  bool was_open = u->s != NULL;
  if (!u->s) {
    char err[512];
    if (!(u->s = store_open(u->db_path, err, sizeof err))) {
      log_error("upkeep: cannot open the store a second time: %s", err);
      u->next_visit = now + UPKEEP_QUIET_VISIT_SECONDS;
      return false;
    }
    u->quiet_ticks = 0;
  }
  int frames = 0;
  store_checkpoint(u->s, &frames, NULL);
  wal_mark(u);
  bool stop = false;
  if (u->retention_days > 0 && now >= u->next_retention)
    stop = retention_pass(u, u->s, now);
  if (!stop && now >= u->next_recount) {
    /* Other processes (backfill, replay) change statuses the loop's
     * connection never sees; a recount now and then folds them in. */
    struct upkeep_msg m = {'c', 0, {0}};
    if (store_count_by_status(u->s, m.counts) == 0)
      send_msg(u, &m);
    u->next_recount = now + UPKEEP_RECOUNT_SECONDS;
  }
  u->quiet_ticks =
      frames <= UPKEEP_QUIET_FRAMES && !grew ? u->quiet_ticks + 1 : 0;
  /* A quiet store's visit closes at once; a busy store's connection once it
   * has been quiet for a while. */
  if (!u->always && u->wal_known && !grew &&
      (!was_open || u->quiet_ticks >= UPKEEP_QUIET_TICKS)) {
    store_close(u->s);
    u->s = NULL;
    bool more = u->retention_days > 0 && u->next_retention <= now;
    u->next_visit = more ? now : now + UPKEEP_QUIET_VISIT_SECONDS;
  }
  return stop;
}

static void *pool_thread(void *arg) {
  struct upkeep_pool *p = arg;
  bool stop = false;
  while (!stop && !wait_stop(p, UPKEEP_TICK_MS)) {
    double now = clock_wall();
    pthread_mutex_lock(&p->mu);
    for (struct upkeep *u = p->list; u && !stop; u = u->next) {
      /* upkeep_stop waits while its store is `busy`, so u (and u->next,
       * read under the lock) stays valid. */
      p->busy = u;
      pthread_mutex_unlock(&p->mu);
      stop = visit(u, now);
      pthread_mutex_lock(&p->mu);
      p->busy = NULL;
      pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
  }
  return NULL;
}

struct upkeep_pool *upkeep_pool_new(void) {
  struct upkeep_pool *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->stop_pipe[0] = p->stop_pipe[1] = -1;
  if (pipe(p->stop_pipe) != 0)
    goto fail;
  for (int i = 0; i < 2; i++)
    fcntl(p->stop_pipe[i], F_SETFD, FD_CLOEXEC);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->idle, NULL);
  if (pthread_create(&p->thread, NULL, pool_thread, p) != 0) {
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->mu);
    goto fail;
  }
  return p;
fail:
  log_error(
      "upkeep: cannot start its thread; checkpoints and retention are off");
  for (int i = 0; i < 2; i++)
    if (p->stop_pipe[i] >= 0)
      close(p->stop_pipe[i]);
  free(p);
  return NULL;
}

void upkeep_pool_free(struct upkeep_pool *p) {
  if (!p)
    return;
  if (p->list)
    log_warn("upkeep: its thread stopped with stores still on it");
  close(p->stop_pipe[1]); /* wakes the thread's poll */
  pthread_join(p->thread, NULL);
  close(p->stop_pipe[0]);
  pthread_cond_destroy(&p->idle);
  pthread_mutex_destroy(&p->mu);
  free(p);
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

struct upkeep *upkeep_start(struct upkeep_pool *pool, struct event_base *base,
                            struct store *loop_store, const char *db_path,
                            int retention_days, bool always) {
  if (!pool)
    return NULL;
  struct upkeep *u = calloc(1, sizeof *u);
  if (!u)
    goto fail;
  u->pool = pool;
  u->loop_store = loop_store;
  u->retention_days = retention_days;
  u->always = always;
  u->msg_pipe[0] = u->msg_pipe[1] = -1;
  u->db_path = strdup(db_path);
  size_t n = strlen(db_path) + 5;
  u->wal_path = malloc(n);
  if (!u->db_path || !u->wal_path || pipe(u->msg_pipe) != 0)
    goto fail;
  snprintf(u->wal_path, n, "%s-wal", db_path);
  for (int i = 0; i < 2; i++)
    fcntl(u->msg_pipe[i], F_SETFD, FD_CLOEXEC);
  fcntl(u->msg_pipe[0], F_SETFL, O_NONBLOCK);
  u->msg_ev = event_new(base, u->msg_pipe[0], EV_READ | EV_PERSIST, on_msg, u);
  if (!u->msg_ev || event_add(u->msg_ev, NULL) != 0)
    goto fail;
  double now = clock_wall();
  u->next_recount = now + UPKEEP_RECOUNT_SECONDS;
  (void)wal_busy(u); /* the size at start is the first mark */
  pthread_mutex_lock(&pool->mu);
  /* Retention at once, as at every start; quiet stores' first visits are
   * spread over the minute so that 500 do not open their stores at once. */
  u->next_visit = now + (double)(pool->added++ % UPKEEP_QUIET_VISIT_SECONDS);
  u->next_retention = u->next_visit;
  u->next = pool->list;
  pool->list = u;
  pthread_mutex_unlock(&pool->mu);
  return u;
fail:
  log_error("upkeep: cannot set it up for %s; checkpoints and retention are "
            "off for it",
            db_path);
  if (u) {
    if (u->msg_ev)
      event_free(u->msg_ev);
    for (int i = 0; i < 2; i++)
      if (u->msg_pipe[i] >= 0)
        close(u->msg_pipe[i]);
    free(u->db_path);
    free(u->wal_path);
    free(u);
  }
  return NULL;
}

bool upkeep_connected(struct upkeep *u) {
  if (!u)
    return false;
  pthread_mutex_lock(&u->pool->mu);
  while (u->pool->busy == u)
    pthread_cond_wait(&u->pool->idle, &u->pool->mu);
  bool open = u->s != NULL;
  pthread_mutex_unlock(&u->pool->mu);
  return open;
}

void upkeep_stop(struct upkeep *u) {
  if (!u)
    return;
  struct upkeep_pool *p = u->pool;
  pthread_mutex_lock(&p->mu);
  while (p->busy == u)
    pthread_cond_wait(&p->idle, &p->mu);
  for (struct upkeep **at = &p->list; *at; at = &(*at)->next)
    if (*at == u) {
      *at = u->next;
      break;
    }
  pthread_mutex_unlock(&p->mu);
  /* Off the thread: its connection is ours now, for a last checkpoint. */
  if (u->s) {
    store_checkpoint(u->s, NULL, NULL);
    store_close(u->s);
  }
  event_free(u->msg_ev);
  close(u->msg_pipe[0]);
  close(u->msg_pipe[1]);
  free(u->db_path);
  free(u->wal_path);
  free(u);
}
