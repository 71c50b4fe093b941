/* A tenant is started in the order a webhook meets its modules (store,
 * queue, upstream, Lua, engine, the server's site) and taken down in
 * reverse, exactly as the single-agency service was before tenants: that
 * service is now the one tenant without a name. A changed tenant file is
 * applied by stopping the tenant and starting it again on the new file:
 * both can never hold the same store at once, and a running event left
 * behind is 'running' in the store, which the next start puts back. */
#include "tenant.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "buf.h"
#include "clock.h"
#include "config.h"
#include "dirlist.h"
#include "doctor.h"
#include "engine.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "poller.h"
#include "presence.h"
#include "queue.h"
#include "runner.h"
#include "server.h"
#include "store.h"
#include "upkeep.h"
#include "upstream.h"

struct tenant {
  struct tenant *next;
  struct tenants *set;
  char *name;      /* NULL: the single agency */
  char *file;      /* its TENANTS_DIR file; NULL for the single agency */
  char *file_text; /* what the file held when it started: a change restarts it */
  char *store_at;  /* where its store is (tenant_store_location) */
  struct config cfg;
  struct metrics *view; /* tenant="<name>"; NULL: the registry itself */
  struct store *store;
  struct queue *queue;
  struct upstream *up;
  struct lrt *rt;
  struct engine *engine;
  struct server_site *site;
  struct presence *presence;
  struct upkeep *upkeep;
  struct poller *poller;
  struct metric *m_reloads;
  struct doctor *doctor; /* the last preflight run (doctor.h) */
  bool doctor_running, doctor_again;
  /* A test case the scripts in force fail (they were loaded at start, with
   * no older version to keep); NULL when they pass. A reason of /health's
   * "degraded" until a reload passes. */
  char *cases_failed;

  /* Retiring (its file changed or went): no site, no new work; freed once
   * its running events end, or at retire_deadline. Then `next` starts, the
   * configuration that replaces it (none when its file is gone). */
  struct event *retire_timer;
  double retire_deadline;
  struct config next_cfg;
  char *next_file, *next_text;
  bool has_next;
};

/* How long a retiring tenant's running events may take before it is freed
 * anyway (they stay 'running' in its store, run again at its next start):
 * the same grace as a stopping service. */
#define RETIRE_GRACE_SECONDS 10

/* How long a tenant's Lua state outlives its last event (lua_rt.h, idle
 * release). A state weighs ~0.3 MiB and takes a few milliseconds to build
 * (docs/performance.md): a tenant with steady traffic keeps it, one that
 * hears nothing for a minute gives it back. */
#define TENANT_LUA_IDLE_SECONDS 60.0

/* The WAL pages (4 KiB each) past which the loop's COMMIT checkpoints:
 * 256 MiB, about two seconds of the heaviest intake measured. Smaller
 * bounds cost intake more than they save disk: each loop checkpoint is a
 * stall, and they come more often (docs/performance.md, "The WAL"). */
#define TENANT_WAL_PAGES 65536

struct tenants {
  struct tenant_shared sh;
  struct tenant *list;
  struct tenant *retiring;
  struct lrt_texts *texts; /* the script bytes every tenant's runtime shares */
  struct upkeep_pool *upkeep; /* the one upkeep thread (NULL: none could start) */
  bool started; /* the directory was read once: later errors keep what runs */
};

size_t tenant_file_stem(const char *file) {
  size_t len = strlen(file);
  return len > 4 && strcmp(file + len - 4, ".env") == 0 ? len - 4 : 0;
}

bool tenant_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > 40)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '-')))
      return false;
  }
  return true;
}

char *tenant_store_location(const char *db_path, const char *store_url, const char *name) {
  if (!name)
    return strdup(store_url && *store_url ? store_url : db_path);
  if (store_url && *store_url) {
    /* A PostgreSQL URL: the tenant's own schema, through the parameter the
     * store reads. */
    char schema[80];
    size_t cap = strlen(store_url) + sizeof schema + 16;
    char *url = malloc(cap);
    snprintf(schema, sizeof schema, "t_%s", name);
    if (url && store_url_with_schema(store_url, schema, url, cap) != 0) {
      free(url);
      url = NULL;
    }
    return url;
  }
  struct buf b;
  buf_init(&b, 0);
  {
    const char *slash = strrchr(db_path, '/');
    if (slash)
      buf_append(&b, db_path, (size_t)(slash - db_path) + 1);
    buf_printf(&b, "tenants/%s.db", name);
  }
  return buf_steal(&b);
}

/* ---- one tenant --------------------------------------------------------- */

static void start_doctor(struct tenant *t);

/* /health's "degraded": a failing test case of the scripts in force, then
 * the ✗ lines of the preflight `d` (NULL: none run), which are also logged
 * as warnings. */
static void set_degraded(struct tenant *t, const struct doctor *d) {
  size_t n = 0;
  const struct doctor_line *lines = d ? doctor_lines(d, &n) : NULL;
  const char **reasons = calloc(n + 1, sizeof *reasons);
  size_t nr = 0, failed = 0;
  if (reasons && t->cases_failed)
    reasons[nr++] = t->cases_failed;
  const char *who = t->name ? t->name : "";
  const char *sep = t->name ? ": " : "";
  for (size_t i = 0; i < n; i++) {
    if (lines[i].ok)
      continue;
    failed++;
    log_warn("%s%sdoctor: ✗ %s. Fix: %s", who, sep, lines[i].text,
             lines[i].fix ? lines[i].fix : "see ncghl doctor");
    if (reasons)
      reasons[nr++] = lines[i].text;
  }
  if (d && failed == 0)
    log_info("%s%sdoctor: all %zu checks passed", who, sep, n);
  server_site_set_degraded(t->site, reasons, nr);
  free(reasons);
}

static void on_doctor_done(void *ud, struct doctor *d) {
  struct tenant *t = ud;
  set_degraded(t, d);
  t->doctor_running = false;
  if (t->doctor_again) {
    t->doctor_again = false;
    start_doctor(t);
  }
}

/* The same checks as `ncghl doctor`, in the background; a run asked for
 * while one is going (a reload) starts when it ends. The finished run is
 * kept until the next one: it may be in its own callback. */
static void start_doctor(struct tenant *t) {
  if (!t->cfg.doctor_at_start) {
    set_degraded(t, NULL); /* /health still hears of a failing case */
    return;
  }
  if (t->doctor_running) {
    t->doctor_again = true;
    return;
  }
  doctor_free(t->doctor);
  t->doctor = doctor_start(t->set->sh.base, &t->cfg, t->up, t->store, t->rt, on_doctor_done, t);
  t->doctor_running = t->doctor != NULL;
}

/* The reload history /ui shows: each load's result and the version left
 * running. Losing a line of history never stops a reload. */
static void note_reload(struct tenant *t, bool ok, const char *message) {
  if (t->queue)
    queue_join(t->queue);
  if (store_reload_add(t->store, clock_wall(), ok, lrt_version(t->rt), message) != 0)
    log_warn("could not record the mapping reload in the store");
}

static void reload_mappings(struct tenant *t) {
  char err[1024];
  const char *who = t->name ? t->name : "";
  const char *sep = t->name ? ": " : "";
  if (lrt_reload(t->rt, err, sizeof err) == 0) {
    log_info("%s%smappings reloaded (version %s)", who, sep, lrt_version(t->rt));
    free(t->cases_failed);
    t->cases_failed = NULL;
    metric_inc(t->m_reloads, METRIC_LABELS("ok"));
    note_reload(t, true, lrt_last_reload(t->rt, NULL, NULL));
    start_doctor(t);
  } else {
    log_error("%s%smappings reload failed, keeping version %s: %s", who, sep, lrt_version(t->rt),
              err);
    metric_inc(t->m_reloads, METRIC_LABELS("error"));
    note_reload(t, false, err);
  }
}

static int up_start_hook(void *ud, const struct up_call *call, up_attempt_cb on_attempt,
                         up_done_cb done, void *done_ud) {
  return up_start(ud, call, on_attempt, done, done_ud);
}

static void tenant_stop(struct tenant *t) {
  poller_stop(t->poller);
  if (t->engine)
    engine_stop(t->engine);
}

/* keep_cfg and keep_text, when not NULL, get the tenant's configuration and
 * file text instead of their being freed (a restart's fallback). */
static void tenant_free_keep(struct tenant *t, struct config *keep_cfg, char **keep_text) {
  if (!t)
    return;
  tenant_stop(t);
  /* Nothing new starts; then everything written is committed and synced,
   * and the answers waiting on it are sent, while the site that owns them
   * is still there. Only then does the site go (answering 202 for events
   * still running: they are stored and run again at the next start). */
  if (t->queue)
    queue_flush(t->queue);
  if (t->presence)
    presence_stop(t->presence);
  server_site_remove(t->set->sh.server, t->site);
  upkeep_stop(t->upkeep);
  if (t->engine)
    engine_free(t->engine);
  if (t->queue)
    queue_free(t->queue); /* commits what the last turn wrote */
  if (t->rt)
    lrt_free(t->rt);
  if (t->up)
    up_free(t->up);
  doctor_free(t->doctor); /* after up_free: its calls end without calling back */
  free(t->cases_failed);
  poller_free(t->poller); /* after queue and upstream: they may hold its callbacks */
  if (t->store)
    store_close(t->store);
  if (t->retire_timer)
    event_free(t->retire_timer);
  if (t->has_next)
    config_free(&t->next_cfg);
  free(t->next_file);
  free(t->next_text);
  metrics_free(t->view);
  if (keep_cfg)
    *keep_cfg = t->cfg;
  else
    config_free(&t->cfg);
  if (keep_text)
    *keep_text = t->file_text;
  else
    free(t->file_text);
  free(t->name);
  free(t->file);
  free(t->store_at);
  free(t);
}

static void tenant_free(struct tenant *t) { tenant_free_keep(t, NULL, NULL); }

/* Builds and starts one tenant on cfg (taken over). NULL with the reason
 * logged, everything undone. */
static struct tenant *tenant_start(struct tenants *ts, const char *name, const char *file,
                                   const char *file_text, struct config *cfg) {
  struct tenant *t = calloc(1, sizeof *t);
  if (!t) {
    config_free(cfg);
    log_error("out of memory");
    return NULL;
  }
  t->set = ts;
  t->cfg = *cfg;
  memset(cfg, 0, sizeof *cfg);
  const char *who = name ? name : "";
  const char *sep = name ? ": " : "";
  char err[1024];
  t->name = name ? strdup(name) : NULL;
  t->file = file ? strdup(file) : NULL;
  t->file_text = file_text ? strdup(file_text) : NULL;
  /* A tenant's config already names its own store (config_load_tenant). */
  t->store_at = strdup(config_store(&t->cfg));
  struct event_base *base = ts->sh.base;
  if (name) {
    t->view = metrics_view(ts->sh.metrics, "tenant", name);
    if (!t->view)
      goto oom;
  }
  struct metrics *m = t->view ? t->view : ts->sh.metrics;
  if ((name && (!t->name || !t->file_text)) || !t->store_at)
    goto oom;
  t->store = store_open(t->store_at, err, sizeof err);
  if (!t->store) {
    log_error("%s%s%s: cannot open the store %s: %s", who, sep, config_store_var(&t->cfg),
              t->cfg.store_label, err);
    goto fail;
  }
  /* One service per SQLite store (several nodes need PostgreSQL): a second
   * one would take the first one's running events for its own below, and
   * the two would each create the same new person. */
  long other = 0;
  if (!store_is_url(t->store_at) && presence_running(t->store, &other) &&
      other != (long)getpid()) {
    log_error("%s%sanother ncghl service (pid %ld) is running on %s: two services on one"
              " SQLite store would each create the same new person. Stop it first (several"
              " nodes need PostgreSQL: STORE_URL)", who, sep, other, t->cfg.store_label);
    goto fail;
  }
  int recovered = 0;
  if (store_recover_running(t->store, &recovered) != 0)
    goto fail;
  if (recovered)
    log_warn("%s%s%d events were running when the service last stopped; they run again", who, sep,
             recovered);
  /* The one count query: from here on the counts follow every change. */
  if (store_counts_seed(t->store) != 0)
    goto fail;
  /* The loop never sleeps in SQLite's busy handler. Upkeep's thread
   * checkpoints every second (and runs retention); but a WAL starts again
   * from its beginning only when a write begins with every frame
   * checkpointed, which a steady flood of writes never leaves time for:
   * the WAL grew ~140 MB a second at 10,000 events/s, until the disk was
   * full. So the COMMIT that takes the WAL past TENANT_WAL_PAGES
   * checkpoints on the loop, copying what upkeep's last pass left. */
  store_set_busy_timeout(t->store, 0);
  store_set_autocheckpoint(t->store, TENANT_WAL_PAGES);
  t->queue = queue_new(base, t->store);
  t->up = up_new(base, &t->cfg, ts->sh.http);
  if (!t->queue || !t->up) {
    log_error("%s%scannot set up outbound HTTP", who, sep);
    goto fail;
  }
  up_set_store(t->up, t->store);
  struct lrt_host host = {base, &t->cfg, t->up, t->store, t->queue, up_start_hook, t->up,
                          metrics_counter(m, "ncghl_conflicts_total",
                                          "Fields both sides changed since the last sync, by"
                                          " which side's value won (ncghl conflicts lists them).",
                                          METRIC_LABELS("kind", "winner")),
                          metrics_counter(m, "ncghl_ignored_events_total",
                                          "Events left alone on purpose, by reason"
                                          " (other_location: a GHL webhook for another"
                                          " sub-account).",
                                          METRIC_LABELS("reason")),
                          ts->texts};
  t->rt = lrt_new(&host, err, sizeof err);
  if (!t->rt) {
    log_error("%s%smappings: %s", who, sep, err);
    goto fail;
  }
  lrt_set_check(t->rt, runner_check);
  /* The test cases a reload would run. Failing, the scripts still run
   * (nothing older to keep, and refusing to start would refuse webhooks),
   * but the log and /health say so until a reload passes. */
  char cerr[1024];
  bool cases_ok = lrt_check_loaded(t->rt, cerr, sizeof cerr) == 0;
  if (!cases_ok) {
    log_error("%s%smappings: a test case fails with the scripts loaded at start; they run"
              " anyway (there is no older version to keep): %s. Fix the mappings or the case,"
              " then reload", who, sep, cerr);
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "a mapping test case fails: %s", cerr);
    t->cases_failed = buf_steal(&b);
  }
  note_reload(t, cases_ok, lrt_last_reload(t->rt, NULL, NULL));
#ifdef __GLIBC__
  /* The cases' throw-away runtime is freed; give its pages back, or they
   * stay in the idle service's RSS (SPEC 8: 16 MiB idle). Tenants run
   * their overlay's own cases, rarely any; the one agency runs them all. */
  if (!name)
    malloc_trim(0);
#endif
  /* Many tenants: a state only while events need it (lua_rt.h). The load
   * above checked the scripts; an idle tenant's first event builds its
   * state again from those bytes. The single agency keeps its state. */
  if (name && lrt_set_idle(t->rt, TENANT_LUA_IDLE_SECONDS) != 0)
    log_warn("%s%sthe Lua state stays loaded (no idle timer)", who, sep);
  t->engine = engine_new(base, &t->cfg, t->store, t->queue, t->rt, ts->sh.pace, t->name);
  if (!t->engine)
    goto fail;
  t->site = server_site_add(ts->sh.server, name, &t->cfg, t->store, t->queue, t->engine, t->rt, m);
  if (!t->site)
    goto oom;
  t->m_reloads = metrics_counter(m, "ncghl_mapping_reloads_total",
                                 "Mapping reloads on SIGHUP; error: the old mappings were kept.",
                                 METRIC_LABELS("result"));
  metric_add(t->m_reloads, METRIC_LABELS("ok"), 0);
  metric_add(t->m_reloads, METRIC_LABELS("error"), 0);
  up_set_metrics(t->up, m);
  t->presence = presence_start(base, t->store, t->queue);
  queue_on_fail(t->queue, ts->sh.on_store_failed, ts->sh.ud);
  /* One thread for every tenant's upkeep; a tenant's second connection
   * only while its store is busy (upkeep.h). The single agency keeps its
   * connection and its checkpoint every second, as before. */
  t->upkeep = upkeep_start(ts->upkeep, base, t->store, t->store_at, t->cfg.retention_days,
                           name == NULL);
  if (poller_wanted(&t->cfg) &&
      !(t->poller = poller_new(base, name, &t->cfg, t->store, t->queue, t->engine, t->up)))
    goto fail;
  if (t->cases_failed)
    set_degraded(t, NULL); /* degraded at once, not after the preflight */
  start_doctor(t);
  if (name)
    lrt_release(t->rt);
  if (name)
    log_info("tenant %s: started (GHL location %s, store %s, mappings %s version %s)", name,
             t->cfg.ghl_location_id, t->cfg.store_label, t->cfg.mappings_dir, lrt_version(t->rt));
  return t;
oom:
  log_error("%s%sout of memory", who, sep);
fail:
  tenant_free(t);
  return NULL;
}

static void add(struct tenants *ts, struct tenant *t);

static void retired(struct tenants *ts, struct tenant *t) {
  for (struct tenant **p = &ts->retiring; *p; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      t->next = NULL;
      break;
    }
  int left = t->engine ? engine_running(t->engine) : 0;
  if (left)
    log_warn("tenant %s: stopped with %d events still running; they run again at its next start",
             t->name, left);
  bool has_next = t->has_next;
  struct config next = t->next_cfg, old;
  memset(&old, 0, sizeof old);
  char *file = t->next_file, *text = t->next_text, *old_text = NULL;
  char *name = strdup(t->name);
  t->has_next = false;
  t->next_file = t->next_text = NULL;
  memset(&t->next_cfg, 0, sizeof t->next_cfg);
  if (has_next)
    tenant_free_keep(t, &old, &old_text);
  else
    tenant_free(t);
  if (has_next && name) {
    struct tenant *n = tenant_start(ts, name, file, text, &next);
    if (!n && old_text) {
      log_error("tenants: %s: the new configuration did not start; the old one runs again", file);
      n = tenant_start(ts, name, file, old_text, &old);
      if (n) {
        /* A failed reload like any other: counted, and in the history. */
        metric_inc(n->m_reloads, METRIC_LABELS("error"));
        char why[600];
        snprintf(why, sizeof why,
                 "%.500s changed but its new configuration did not start (the log says why); "
                 "the old one runs again",
                 file ? file : "the tenant's file");
        note_reload(n, false, why);
      }
    }
    if (n)
      add(ts, n);
  }
  config_free(&next);
  config_free(&old);
  free(file);
  free(text);
  free(old_text);
  free(name);
}

static void on_retire_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct tenant *t = arg;
  if ((t->engine ? engine_running(t->engine) : 0) == 0 || clock_wall() >= t->retire_deadline)
    retired(t->set, t);
}

/* Takes t (already out of the running list) off new work, and off the
 * server (paused instead when a new configuration follows), and frees it
 * once its running events end; answers still owed are sent 202 at once
 * (their events are stored). */
static void retire(struct tenants *ts, struct tenant *t) {
  tenant_stop(t);
  /* Webhooks whose batch has not committed yet are answered by that
   * commit (never before it), through the site: commit now, while the site
   * is still there. What stays owed after this is stored and running. */
  if (t->queue)
    queue_flush(t->queue);
  if (t->has_next) {
    /* Restarting: its webhooks meanwhile get 503 and are sent again, not a
     * 404 that a sender could take for good. The site goes with it. */
    server_site_pause(t->site);
  } else {
    server_site_remove(ts->sh.server, t->site);
    t->site = NULL;
  }
  t->next = ts->retiring;
  ts->retiring = t;
  t->retire_deadline = clock_wall() + RETIRE_GRACE_SECONDS;
  t->retire_timer = event_new(ts->sh.base, -1, EV_PERSIST, on_retire_tick, t);
  struct timeval tick = {0, 50000};
  if (!t->retire_timer || event_add(t->retire_timer, &tick) != 0)
    retired(ts, t); /* no timer: at once, as a stop would */
}

/* What replaces a retiring tenant when it is gone (cfg and text taken
 * over; a later SIGHUP's file replaces an earlier one's). */
static void retire_then(struct tenant *t, const char *file, const char *text, struct config *cfg) {
  if (t->has_next)
    config_free(&t->next_cfg);
  free(t->next_file);
  free(t->next_text);
  t->next_file = strdup(file);
  t->next_text = strdup(text);
  t->next_cfg = *cfg;
  memset(cfg, 0, sizeof *cfg);
  t->has_next = true;
}

static struct tenant *find_retiring(struct tenants *ts, const char *name) {
  for (struct tenant *t = ts->retiring; t; t = t->next)
    if (strcmp(t->name, name) == 0)
      return t;
  return NULL;
}

const char *tenant_name(const struct tenant *t) { return t ? t->name : NULL; }
const struct config *tenant_config(const struct tenant *t) { return t ? &t->cfg : NULL; }
const char *tenant_mappings_version(const struct tenant *t) { return t ? lrt_version(t->rt) : ""; }
struct upstream *tenant_upstream(struct tenant *t) { return t ? t->up : NULL; }
struct tokens *tenant_ghl_tokens(struct tenant *t) {
  return t ? up_tokens(t->up, UP_GHL) : NULL;
}

struct queue *tenant_queue(struct tenant *t) { return t ? t->queue : NULL; }

/* ---- the set ------------------------------------------------------------ */

struct tenants *tenants_new(const struct tenant_shared *sh) {
  struct tenants *ts = calloc(1, sizeof *ts);
  if (!ts)
    return NULL;
  ts->sh = *sh;
  if (!(ts->texts = lrt_texts_new())) {
    free(ts);
    return NULL;
  }
  ts->upkeep = upkeep_pool_new(); /* NULL: logged, the service runs on */
  return ts;
}

static void add(struct tenants *ts, struct tenant *t) {
  struct tenant **end = &ts->list;
  while (*end)
    end = &(*end)->next;
  *end = t;
}

static void unlink_tenant(struct tenants *ts, struct tenant *t) {
  for (struct tenant **p = &ts->list; *p; p = &(*p)->next)
    if (*p == t) {
      *p = t->next;
      t->next = NULL;
      return;
    }
}

int tenants_start_single(struct tenants *ts, struct config *cfg) {
  struct tenant *t = tenant_start(ts, NULL, NULL, NULL, cfg);
  if (!t)
    return -1;
  add(ts, t);
  ts->started = true;
  return 0;
}

/* The whole file, to see later whether it changed (NULL: unreadable). */
static char *slurp(const char *path) {
  FILE *fp = fopen(path, "r");
  if (!fp)
    return NULL;
  struct buf b;
  buf_init(&b, 0);
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0)
    buf_append(&b, chunk, n);
  bool bad = ferror(fp);
  fclose(fp);
  if (bad) {
    buf_free(&b);
    return NULL;
  }
  return b.p ? buf_steal(&b) : strdup("");
}

/* One tenant file as read: its name, path, bytes and configuration. */
struct wanted {
  char name[48];
  char *path, *text;
  struct config cfg;
  bool loaded;  /* cfg holds a configuration */
  bool refused; /* bad: what runs under this name stays as it is */
};

static void wanted_free(struct wanted *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(w[i].path);
    free(w[i].text);
    if (w[i].loaded)
      config_free(&w[i].cfg);
  }
  free(w);
}

static struct tenant *find_name(struct tenants *ts, const char *name) {
  for (struct tenant *t = ts->list; t; t = t->next)
    if ((t->name == NULL) == (name == NULL) && (!name || strcmp(t->name, name) == 0))
      return t;
  return NULL;
}

/* At start the first problem stops everything (err); on a reload each is
 * logged and that tenant keeps running as it was. */
static void refuse(struct tenants *ts, struct wanted *w, int *nbad, char *err, size_t errlen,
                   const char *fmt, const char *a, const char *b) {
  char msg[1200];
  snprintf(msg, sizeof msg, fmt, a, b);
  if (*nbad == 0)
    snprintf(err, errlen, "%s", msg);
  if (ts->started)
    log_error("tenants: %s; %s", msg,
              find_name(ts, w->name) ? "that tenant keeps running as it was"
                                     : "that tenant is not started");
  w->refused = true;
  (*nbad)++;
}

int tenants_sync_dir(struct tenants *ts, const struct config *main, bool sandbox, char *err,
                     size_t errlen) {
  char **names = NULL;
  size_t nnames = 0;
  if (dirlist_read(main->tenants_dir, &names, &nnames) != 0) {
    snprintf(err, errlen, "TENANTS_DIR: cannot read %s: %s", main->tenants_dir, strerror(errno));
    if (ts->started)
      log_error("tenants: %s; every tenant keeps running as it was", err);
    return ts->started ? 1 : -1;
  }
  struct wanted *w = calloc(nnames ? nnames : 1, sizeof *w);
  size_t nw = 0;
  int nbad = 0;
  if (!w) {
    dirlist_free(names, nnames);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  /* Read every file first: a duplicate GHL_LOCATION_ID is only seen
   * across them. */
  for (size_t i = 0; i < nnames; i++) {
    size_t stem = tenant_file_stem(names[i]);
    if (!stem)
      continue;
    struct wanted *x = &w[nw++];
    snprintf(x->name, sizeof x->name, "%.*s", (int)(stem < 47 ? stem : 47), names[i]);
    struct buf p;
    buf_init(&p, 0);
    buf_printf(&p, "%s/%s", main->tenants_dir, names[i]);
    x->path = buf_steal(&p);
    if (!x->path) {
      refuse(ts, x, &nbad, err, errlen, "%s%s: out of memory", names[i], "");
      continue;
    }
    if (stem > 40 || !tenant_name_ok(x->name)) {
      refuse(ts, x, &nbad, err, errlen,
             "%s: a tenant's name (the file's, without .env) must match "
             "[a-z0-9][a-z0-9_-]{0,39}%s",
             x->path, "");
      continue;
    }
    x->text = slurp(x->path);
    char why[1024];
    if (!x->text) {
      refuse(ts, x, &nbad, err, errlen, "%s: cannot read: %s", x->path, strerror(errno));
      continue;
    }
    if (config_load_tenant(&x->cfg, main->env_file, sandbox, x->name, x->path, why, sizeof why) !=
        0) {
      refuse(ts, x, &nbad, err, errlen, "%s%s", why, "");
      continue;
    }
    x->loaded = true;
  }
  dirlist_free(names, nnames);
  for (size_t i = 0; i < nw; i++)
    for (size_t k = 0; k < i && w[i].loaded && !w[i].refused; k++)
      if (w[k].loaded && strcmp(w[k].cfg.ghl_location_id, w[i].cfg.ghl_location_id) == 0)
        refuse(ts, &w[i], &nbad, err, errlen,
               "%s: GHL_LOCATION_ID: the same as in %s (one GHL location is one tenant)",
               w[i].path, w[k].path);
  if (!ts->started && nbad > 0) {
    wanted_free(w, nw);
    return -1;
  }

  /* Removed files stop their tenants; changed ones stop here and start
   * again below on their new configuration. */
  for (struct tenant *t = ts->list, *next; t; t = next) {
    next = t->next;
    if (!t->name)
      continue;
    struct wanted *x = NULL;
    for (size_t i = 0; i < nw && !x; i++)
      if (strcmp(w[i].name, t->name) == 0)
        x = &w[i];
    if (x && (x->refused || strcmp(x->text, t->file_text) == 0))
      continue;
    unlink_tenant(ts, t);
    if (!x) {
      log_info("tenant %s: stopping (%s/%s.env is gone)", t->name, main->tenants_dir, t->name);
      retire(ts, t);
      continue;
    }
    /* The old one goes first (both would hold one store); the new one
     * starts when it is gone, and if it cannot, the old configuration
     * (kept from the old one) starts again. */
    log_info("tenant %s: %s changed; restarting it on the new configuration", t->name, x->path);
    retire_then(t, x->path, x->text, &x->cfg);
    x->loaded = false;
    x->refused = true; /* dealt with */
    retire(ts, t);
  }
  /* A tenant still retiring from an earlier change whose file is now gone
   * does not start again when it is done. */
  for (struct tenant *r = ts->retiring; r; r = r->next) {
    bool wanted = false;
    for (size_t i = 0; i < nw && !wanted; i++)
      wanted = strcmp(w[i].name, r->name) == 0;
    if (wanted || !r->has_next)
      continue;
    log_info("tenant %s: stopping (%s/%s.env is gone)", r->name, main->tenants_dir, r->name);
    config_free(&r->next_cfg);
    r->has_next = false;
    server_site_remove(ts->sh.server, r->site);
    r->site = NULL;
  }
  /* Unchanged tenants reload their mappings, as the single agency does. */
  if (ts->started)
    for (struct tenant *t = ts->list; t; t = t->next)
      for (size_t i = 0; i < nw; i++)
        if (t->name && !w[i].refused && strcmp(w[i].name, t->name) == 0)
          reload_mappings(t);
  for (size_t i = 0; i < nw; i++) {
    struct wanted *x = &w[i];
    if (x->refused || find_name(ts, x->name))
      continue;
    struct tenant *r = find_retiring(ts, x->name);
    if (r) {
      /* Still going: this file starts when it is gone. */
      retire_then(r, x->path, x->text, &x->cfg);
      x->loaded = false;
      continue;
    }
    struct tenant *n = tenant_start(ts, x->name, x->path, x->text, &x->cfg);
    x->loaded = false;
    if (!n) {
      if (nbad++ == 0)
        snprintf(err, errlen, "%s: the tenant could not start (the log says why)", x->path);
      if (!ts->started)
        break;
      continue;
    }
    add(ts, n);
  }
  wanted_free(w, nw);
  if (!ts->started && nbad > 0)
    return -1;
  ts->started = true;
  return nbad;
}

void tenants_reload_mappings(struct tenants *ts) {
  for (struct tenant *t = ts->list; t; t = t->next)
    reload_mappings(t);
}

void tenants_stop(struct tenants *ts) {
  for (struct tenant *t = ts ? ts->list : NULL; t; t = t->next)
    tenant_stop(t);
}

int tenants_running(const struct tenants *ts) {
  int n = 0;
  for (const struct tenant *t = ts ? ts->list : NULL; t; t = t->next)
    n += t->engine ? engine_running(t->engine) : 0;
  for (const struct tenant *t = ts ? ts->retiring : NULL; t; t = t->next)
    n += t->engine ? engine_running(t->engine) : 0;
  return n;
}

void tenants_flush(struct tenants *ts) {
  for (struct tenant *t = ts ? ts->list : NULL; t; t = t->next)
    if (t->queue)
      queue_flush(t->queue);
  for (struct tenant *t = ts ? ts->retiring : NULL; t; t = t->next)
    if (t->queue)
      queue_flush(t->queue);
}

void tenants_undo_refused(struct tenants *ts) {
  for (struct tenant *t = ts ? ts->list : NULL; t; t = t->next)
    server_site_undo_refused(t->site);
}

size_t tenants_count(const struct tenants *ts) {
  size_t n = 0;
  for (const struct tenant *t = ts ? ts->list : NULL; t; t = t->next)
    n++;
  return n;
}

void tenants_free(struct tenants *ts) {
  if (!ts)
    return;
  /* Every tenant stops taking work before any is taken down. */
  tenants_stop(ts);
  while (ts->list) {
    struct tenant *t = ts->list;
    ts->list = t->next;
    tenant_free(t);
  }
  while (ts->retiring) {
    struct tenant *t = ts->retiring;
    ts->retiring = t->next;
    tenant_free(t);
  }
  lrt_texts_free(ts->texts);
  upkeep_pool_free(ts->upkeep);
  free(ts);
}

struct tenant *tenants_by_name(struct tenants *ts, const char *name) {
  return ts ? find_name(ts, name) : NULL;
}

struct tenant *tenants_by_location(struct tenants *ts, const char *location_id) {
  for (struct tenant *t = ts && location_id ? ts->list : NULL; t; t = t->next)
    if (t->cfg.ghl_location_id && strcmp(t->cfg.ghl_location_id, location_id) == 0)
      return t;
  return NULL;
}
