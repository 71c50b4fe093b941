/* The engine keeps one job per event that is queued or running in this
 * process, in a hash by id, so the HTTP side can wait on it. Every status
 * change joins the queue's group commit, and waiters hear of a run's end only
 * after the commit that records it: an answer never gets ahead of the disk. */
#include "engine.h"

#include <event2/event.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "config.h"
#include "hash.h"
#include "log.h"
#include "pace.h"
#include "queue.h"
#include "retry.h"

#define ENGINE_BUCKETS 4096
#define ENGINE_POLL_SECONDS 1
/* Leases: this process renews its own every ENGINE_LEASE_SWEEP seconds and
 * at the same time takes up running rows whose owner has not renewed for
 * ENGINE_LEASE_TTL seconds (or that are its own but have no job: a commit
 * that failed after the row was marked). */
#define ENGINE_LEASE_SWEEP 10
#define ENGINE_LEASE_TTL STORE_LEASE_TTL /* store.h: store_recover_running uses it too */
/* Events queued behind a full concurrency budget keep a small job (no
 * payload: that stays in the store) so an answer can still wait for them;
 * past this many they are only rows, found by the claim. */
#define ENGINE_WAITING_MAX 1024
/* Seconds events may wait for their turn in a burst (pace.h) before runs
 * start freely again. */
#define ENGINE_PATIENCE 30
/* A burst that held this many events back is logged at info. */
#define ENGINE_BURST_LOGGED 100

struct engine_watch {
  struct engine_watch *next;
  struct job *job;
  engine_watch_cb cb;
  void *ud;
};

struct job {
  struct hash_node node; /* in engine.jobs, keyed by id */
  struct engine *e;
  char id[EVENT_ID_MAX];
  char source[16];
  char *type;
  char *payload;
  size_t payload_len;
  int run;
  char *last_error; /* how the run before ended (NULL: none, or it never ended) */
  bool starting; /* a start is scheduled after the commit */
  bool running;  /* the Lua runtime has it */
  struct engine_watch *watches;
  /* The outcome, kept from the end of the run until its commit. */
  enum ev_status status;
  enum lrt_outcome outcome;
  char *message, *data, *error;
  double next_at;
};

struct engine {
  struct event_base *base;
  char who[80]; /* "tenant <name>: " before its lines, "" for the single agency */
  const struct config *cfg;
  struct store *store;
  struct queue *queue;
  struct lrt *rt;
  struct hash_node *buckets[ENGINE_BUCKETS];
  struct hash_table jobs; /* by id, in buckets */
  int active; /* jobs starting or running: the concurrency budget */
  bool stopping;
  bool backlog; /* events were left pending for lack of a slot */
  struct event *poll_ev;
  struct event *kick_ev;
  struct event *lease_ev;
  struct event *pace_ev; /* looks again once the pace allows a start */
  int waiting; /* jobs without payload, queued behind the budget */
  /* The loop's share (pace.h); only runs nobody waits on are paced: with
   * WEBHOOK_WAIT_MS=0 every answer is sent at the commit. */
  struct pace *pace;
  bool paced;
  bool holding;      /* a burst is on: runs were held back (logged once) */
  long held;         /* runs held back during it */
  double held_since; /* clock_mono of the first of them; 0: none waits */
};

static struct job *job_find(struct engine *e, const char *id) {
  struct hash_node *n = hash_find(&e->jobs, id);
  return n ? HASH_ENTRY(n, struct job, node) : NULL;
}

static struct job *job_add(struct engine *e, const char *id, const char *source, const char *type,
                           const char *payload, size_t len) {
  struct job *j = calloc(1, sizeof *j);
  if (!j)
    return NULL;
  j->e = e;
  snprintf(j->id, sizeof j->id, "%s", id);
  snprintf(j->source, sizeof j->source, "%s", source);
  j->type = strdup(type ? type : "");
  if (payload) {
    j->payload = malloc(len + 1);
    if (j->payload) {
      memcpy(j->payload, payload, len);
      j->payload[len] = 0;
      j->payload_len = len;
    }
  }
  if (!j->type || (payload && !j->payload)) {
    free(j->type);
    free(j->payload);
    free(j);
    return NULL;
  }
  if (!payload)
    e->waiting++;
  j->node.key = j->id;
  hash_insert(&e->jobs, &j->node);
  return j;
}

/* A waiting job gets its payload when it is claimed. */
static int job_fill(struct engine *e, struct job *j, const char *payload, size_t len) {
  if (j->payload)
    return 0;
  j->payload = malloc(len + 1);
  if (!j->payload)
    return -1;
  memcpy(j->payload, payload, len);
  j->payload[len] = 0;
  j->payload_len = len;
  e->waiting--;
  return 0;
}

static void job_remove(struct engine *e, struct job *j) {
  if (!j->payload)
    e->waiting--;
  hash_remove(&e->jobs, &j->node);
  struct engine_watch *w = j->watches;
  while (w) {
    struct engine_watch *n = w->next;
    free(w);
    w = n;
  }
  free(j->type);
  free(j->payload);
  free(j->last_error);
  free(j->message);
  free(j->data);
  free(j->error);
  free(j);
}

static void schedule_claim(struct engine *e) {
  if (!e->stopping)
    event_active(e->kick_ev, 0, 0);
}

static void schedule_paced_claim(struct engine *e);

/* How many runs the pace lets start now (INT_MAX: no limit). Once events
 * have waited ENGINE_PATIENCE for their turn, the burst has lasted long
 * enough: runs start freely until the backlog is gone, and senders feel the
 * load as slower answers instead (no event waits on the pace for ever). */
static int pace_allows(struct engine *e) {
  if (!e->paced)
    return INT_MAX;
  int room = pace_room(e->pace);
  if (e->holding && room == INT_MAX) {
    /* Short bursts (a few webhooks in one millisecond) are everyday. */
    if (e->held >= ENGINE_BURST_LOGGED)
      log_info("%sintake burst over: %ld events had waited their turn; they run now", e->who, e->held);
    else
      log_debug("%sintake burst over: %ld events had waited their turn", e->who, e->held);
    e->holding = false;
    e->held = 0;
  }
  if (room != INT_MAX && e->held_since > 0 && clock_mono() - e->held_since > ENGINE_PATIENCE) {
    if (e->holding) {
      log_info("intake burst: events have waited %d s for their turn; they run at full speed "
               "until none is left",
               ENGINE_PATIENCE);
      e->holding = false;
      e->held = 0;
    }
    return INT_MAX;
  }
  return room;
}

/* Runs were held back by the pace: claim them when it allows. */
static void schedule_paced_claim(struct engine *e) {
  if (e->stopping || evtimer_pending(e->pace_ev, NULL))
    return;
  double w = pace_wait(e->pace);
  struct timeval tv = {(time_t)w, (suseconds_t)((w - (double)(time_t)w) * 1e6)};
  evtimer_add(e->pace_ev, &tv);
}

static void on_finished(void *ud, bool committed) {
  struct job *j = ud;
  struct engine *e = j->e;
  if (!committed)
    log_error("%sevent %s: its outcome could not be stored; it will run again", j->e->who, j->id);
  struct engine_outcome o = {j->status, j->outcome, j->message ? j->message : "",
                             j->data ? j->data : "{}", j->error};
  /* Watchers may unwatch others (never themselves mid-call); detach the list
   * first so each is called exactly once. */
  struct engine_watch *w = j->watches;
  j->watches = NULL;
  while (w) {
    struct engine_watch *n = w->next;
    w->cb(w->ud, &o);
    free(w);
    w = n;
  }
  job_remove(e, j);
  e->active--;
  /* Only when work was left waiting for a slot; the poll finds the rest. */
  if (e->backlog)
    schedule_claim(e);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* The outcome joins the next batch; while another process holds the write
 * lock it waits for the lock (from a timer), never on the loop. */
static void write_outcome(void *ud, bool writable) {
  struct job *j = ud;
  struct engine *e = j->e;
  /* An answer waiting for this run is not held for company (queue.h). */
  int joined = writable ? (j->watches ? queue_join_now(e->queue) : queue_join(e->queue)) : -1;
  if (joined != 0 && writable && queue_busy(e->queue)) {
    queue_when_writable(e->queue, write_outcome, j);
    return;
  }
  /* Without a batch (the queue failed) nothing is written: the row stays
   * running and its lease brings it back. */
  if (joined != 0 || store_event_finish(e->store, j->id, j->status, j->next_at, j->error,
                                        j->status == EV_DONE ? j->data : NULL, clock_wall()) != 0)
    log_error("%sevent %s: cannot record its outcome", j->e->who, j->id);
  queue_after_commit(e->queue, on_finished, j);
}

static void on_run_done(void *ud, const struct lrt_result *r) {
  struct job *j = ud;
  double now = clock_wall();
  double next_at = 0;
  j->running = false;
  j->outcome = r->outcome;
  switch (r->outcome) {
  case LRT_DONE:
  case LRT_IGNORED:
    j->status = EV_DONE;
    break;
  case LRT_RETRY: {
    double delay = retry_event_delay(j->run);
    /* A wait the script asked for replaces the schedule's, not its limit:
     * the event still ends dead when its runs are used up. */
    if (delay >= 0 && r->retry_in > 0)
      delay = r->retry_in;
    j->status = delay < 0 ? EV_DEAD : EV_RETRY_WAIT;
    next_at = delay < 0 ? 0 : now + delay;
    break;
  }
  case LRT_FAILED:
  default:
    j->status = EV_DEAD;
    break;
  }
  j->message = dup_or_null(r->message);
  j->data = dup_or_null(r->data);
  j->error = dup_or_null(r->error);
  if (j->status == EV_DONE)
    log_info("%sevent %s %s %s: %s", j->e->who, j->id, j->source, j->type,
             r->outcome == LRT_IGNORED ? "ignored" : "done");
  else
    log_warn("%sevent %s %s %s: %s after run %d: %s", j->e->who, j->id, j->source, j->type,
             store_status_name(j->status), j->run, r->error ? r->error : "(no error text)");
  j->next_at = next_at;
  write_outcome(j, true);
}

static void run_job(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct job *j = arg;
  struct pace *pace = j->e->pace;
  double stamp = pace_begin(pace);
  struct lrt_event ev = {j->id, j->source, j->type, j->payload, j->payload_len, j->run,
                         j->last_error};
  if (lrt_run(j->e->rt, &ev, on_run_done, j) != 0) {
    struct lrt_result r = {LRT_RETRY, "", "{}", "the Lua runtime could not start the event", 0};
    on_run_done(j, &r);
  }
  pace_end(pace, stamp);
}

static void start_job(void *ud, bool committed) {
  struct job *j = ud;
  struct engine *e = j->e;
  j->starting = false;
  if (!committed) {
    /* The intake answer says 503 for these; nothing was acknowledged. */
    struct engine_watch *w = j->watches;
    j->watches = NULL;
    while (w) {
      struct engine_watch *n = w->next;
      free(w);
      w = n;
    }
    job_remove(e, j);
    e->active--;
    return;
  }
  j->running = true;
  /* The run itself waits for the loop's lower priority (queue.h): this
   * callback runs with the commit, at intake priority. */
  if (event_base_once(e->base, -1, EV_TIMEOUT, run_job, j, NULL) != 0)
    run_job(-1, 0, j);
}

int engine_submit(struct engine *e, const char *id, const char *source, const char *type,
                  const char *payload, size_t len, enum store_put *put, enum ev_status *existing) {
  if (queue_join_durable(e->queue) != 0)
    return -1;
  double now = clock_wall();
  bool slot = !e->stopping && e->active < e->cfg->event_concurrency;
  bool start_now = slot && pace_allows(e) > 0;
  enum ev_status initial = start_now ? EV_RUNNING : EV_PENDING;
  if (store_event_put(e->store, id, source, type, payload, len, initial, now,
                      e->cfg->idempotency_ttl, put, existing) != 0)
    return -1;
  if (*put == STORE_PUT_DUPLICATE)
    return 0;
  struct job *j = job_find(e, id);
  if (!start_now) {
    /* The payload is in the store; the claim reads it back. */
    e->backlog = true;
    if (!j && e->waiting < ENGINE_WAITING_MAX)
      job_add(e, id, source, type, NULL, 0);
    if (slot) {
      /* Only the pace held this one back. */
      if (!e->holding)
        log_debug("intake burst: %d%% of a busy loop goes to running events, the rest to "
                  "answering webhooks; events wait their turn in the store",
                  (int)(PACE_SHARE * 100));
      e->holding = true;
      e->held++;
      if (e->held_since == 0)
        e->held_since = clock_mono();
      schedule_paced_claim(e);
    }
    return 0;
  }
  if (e->paced)
    pace_started(e->pace, 1);
  if (!j && !(j = job_add(e, id, source, type, payload, len)))
    return -1;
  if (job_fill(e, j, payload, len) != 0)
    return -1;
  j->run = 1;
  if (*put == STORE_PUT_REQUEUED) {
    struct store_event se;
    if (store_event_get(e->store, id, &se) == 0) {
      j->run = se.attempts; /* the put counted this run */
      free(j->last_error);
      j->last_error = se.last_error ? strdup(se.last_error) : NULL;
      store_event_free(&se);
    }
  }
  j->starting = true;
  e->active++;
  queue_after_commit(e->queue, start_job, j);
  return 0;
}

static void claim_due(struct engine *e) {
  int room = e->cfg->event_concurrency - e->active;
  if (e->stopping || room <= 0)
    return;
  if (room > 256)
    room = 256;
  bool limited = false; /* the pace, not the slots, set room */
  if (e->paced) {
    int allowed = pace_allows(e);
    if (allowed < room) {
      room = allowed;
      limited = true;
    }
    if (room <= 0) {
      schedule_paced_claim(e);
      return;
    }
  }
  struct store_event *evs = calloc((size_t)room, sizeof *evs);
  int n = 0;
  if (!evs || queue_join(e->queue) != 0 || store_claim_due(e->store, clock_wall(), room, evs, &n) != 0) {
    free(evs);
    return;
  }
  e->backlog = n == room;
  if (!e->backlog)
    e->held_since = 0; /* nothing is left waiting */
  if (e->paced) {
    pace_started(e->pace, n);
    if (limited && e->backlog)
      schedule_paced_claim(e);
  }
  for (int i = 0; i < n; i++) {
    struct store_event *se = &evs[i];
    struct job *j = job_find(e, se->id);
    if (!j)
      j = job_add(e, se->id, se->source, se->type, se->payload ? se->payload : "",
                  se->payload ? se->payload_len : 0);
    if (j && job_fill(e, j, se->payload ? se->payload : "", se->payload ? se->payload_len : 0) != 0)
      j = NULL;
    if (j && !j->starting && !j->running) {
      j->run = se->attempts;
      free(j->last_error);
      j->last_error = se->last_error ? strdup(se->last_error) : NULL;
      j->starting = true;
      e->active++;
      queue_after_commit(e->queue, start_job, j);
    }
    store_event_free(se);
  }
  free(evs);
}

struct sweep {
  struct engine *e;
  double now;
  char (*ids)[EVENT_ID_MAX];
  size_t n, cap;
};

static bool owner_alive(struct engine *e, const char *owner, double now) {
  char key[96];
  snprintf(key, sizeof key, "lease.%s", owner);
  char *v = store_kv_get(e->store, key);
  double beat = v ? strtod(v, NULL) : 0;
  free(v);
  return now - beat <= ENGINE_LEASE_TTL;
}

static int sweep_one(void *ud, const char *id, const char *owner, double updated_at) {
  struct sweep *w = ud;
  struct engine *e = w->e;
  bool mine = owner && strcmp(owner, store_owner(e->store)) == 0;
  if (mine ? job_find(e, id) != NULL
           : owner ? owner_alive(e, owner, w->now) : w->now - updated_at <= ENGINE_LEASE_TTL)
    return 0;
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 16;
    char(*ids)[EVENT_ID_MAX] = realloc(w->ids, cap * sizeof *ids);
    if (!ids)
      return 1;
    w->ids = ids;
    w->cap = cap;
  }
  snprintf(w->ids[w->n++], EVENT_ID_MAX, "%s", id);
  return 0;
}

/* Renews this process's lease and takes up running rows nobody works on:
 * a crashed process's, or our own whose commit failed after they were
 * marked. Bounded by the running rows, which the claim keeps few. */
static void lease_sweep(struct engine *e) {
  if (e->stopping || queue_join(e->queue) != 0)
    return;
  struct sweep w = {e, clock_wall(), NULL, 0, 0};
  char key[96], beat[32];
  snprintf(key, sizeof key, "lease.%s", store_owner(e->store));
  snprintf(beat, sizeof beat, "%.0f", w.now);
  store_kv_put(e->store, key, beat);
  if (store_running_list(e->store, sweep_one, &w) == 0) {
    int taken = 0;
    for (size_t i = 0; i < w.n; i++)
      if (store_event_release(e->store, w.ids[i], w.now) == 1) {
        log_warn("%sevent %s: left running by an owner that is gone; queued again", e->who, w.ids[i]);
        taken++;
      }
    if (taken)
      schedule_claim(e);
  }
  free(w.ids);
}

static void on_lease(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  lease_sweep(arg);
}

static void on_poll(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct engine *e = arg;
  struct pace *pace = e->pace;
  double stamp = pace_begin(pace);
  claim_due(e);
  pace_end(pace, stamp);
}

struct engine *engine_new(struct event_base *base, const struct config *cfg, struct store *store,
                          struct queue *queue, struct lrt *rt, struct pace *pace, const char *tenant) {
  struct engine *e = calloc(1, sizeof *e);
  if (!e)
    return NULL;
  if (tenant)
    snprintf(e->who, sizeof e->who, "tenant %.60s: ", tenant);
  hash_init(&e->jobs, e->buckets, ENGINE_BUCKETS);
  e->base = base;
  e->cfg = cfg;
  e->store = store;
  e->queue = queue;
  e->rt = rt;
  e->pace = pace;
  e->paced = pace && cfg->webhook_wait_ms == 0;
  e->poll_ev = event_new(base, -1, EV_PERSIST, on_poll, e);
  e->pace_ev = evtimer_new(base, on_poll, e);
  e->kick_ev = event_new(base, -1, 0, on_poll, e);
  e->lease_ev = event_new(base, -1, EV_PERSIST, on_lease, e);
  if (!e->poll_ev || !e->kick_ev || !e->lease_ev || !e->pace_ev) {
    engine_free(e);
    return NULL;
  }
  struct timeval tv = {ENGINE_POLL_SECONDS, 0};
  event_add(e->poll_ev, &tv);
  struct timeval lt = {ENGINE_LEASE_SWEEP, 0};
  event_add(e->lease_ev, &lt);
  lease_sweep(e);
  schedule_claim(e); /* work left from before a restart starts at once */
  return e;
}

void engine_free(struct engine *e) {
  if (!e)
    return;
  if (e->poll_ev)
    event_free(e->poll_ev);
  if (e->kick_ev)
    event_free(e->kick_ev);
  if (e->lease_ev)
    event_free(e->lease_ev);
  if (e->pace_ev)
    event_free(e->pace_ev);
  for (struct hash_node *n; (n = hash_any(&e->jobs));)
    job_remove(e, HASH_ENTRY(n, struct job, node));
  free(e);
}

struct engine_watch *engine_watch(struct engine *e, const char *id, engine_watch_cb cb, void *ud) {
  struct job *j = job_find(e, id);
  if (!j)
    return NULL;
  struct engine_watch *w = calloc(1, sizeof *w);
  if (!w)
    return NULL;
  w->job = j;
  w->cb = cb;
  w->ud = ud;
  w->next = j->watches;
  j->watches = w;
  return w;
}

void engine_unwatch(struct engine *e, struct engine_watch *w) {
  (void)e;
  for (struct engine_watch **p = &w->job->watches; *p; p = &(*p)->next)
    if (*p == w) {
      *p = w->next;
      free(w);
      return;
    }
}

void engine_kick(struct engine *e) { schedule_claim(e); }

int engine_running(const struct engine *e) { return e->active; }

int engine_stop(struct engine *e) {
  e->stopping = true;
  event_del(e->poll_ev);
  event_del(e->kick_ev);
  event_del(e->lease_ev);
  event_del(e->pace_ev);
  /* Rows still running when this process goes are another live process's
   * to take up at once; a lease left behind would hold them 30 s more. */
  char key[96];
  snprintf(key, sizeof key, "lease.%s", store_owner(e->store));
  if (queue_join(e->queue) == 0)
    store_kv_put(e->store, key, NULL);
  return e->active;
}
