/* ncghl's command line. `serve` wires the modules together in the order a
 * webhook meets them (store, queue, outbound, Lua, engine, HTTP) and takes
 * them down in reverse; signals arrive as libevent events, so no handler
 * does more than the loop allows. */
#include <curl/curl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backfill.h"
#include "clock.h"
#include "config.h"
#include "conflicts_cmd.h"
#include "doctor.h"
#include "engine.h"
#include "events_cmd.h"
#include "httpc.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "poller.h"
#include "presence.h"
#include "queue.h"
#include "runner.h"
#include "sandbox.h"
#include "server.h"
#include "store.h"
#include "subscribe.h"
#include "upkeep.h"
#include "upstream.h"

#define SHUTDOWN_GRACE_SECONDS 10
/* After a failed COMMIT or fsync: how long /health keeps saying why (and
 * webhooks get 503) before the process exits non-zero for systemd to
 * restart it from the file. */
#define STORE_FAILED_EXIT_SECONDS 10

static const char usage[] =
    "usage: ncghl <command> [options]\n"
    "\n"
    "  serve [--env FILE] [--sandbox]   run the service (--sandbox: with fake NowCerts and GHL)\n"
    "  events [--status S] [--limit N] [--json]\n"
    "                                   list stored events: id, source, type, status, attempts,\n"
    "                                   last error (tab-separated; --json: one object a line)\n"
    "  events --as-case ID              a stored event as a mapping test case skeleton (Lua)\n"
    "  replay ID|--dead                 put one event, or every dead one, back in the queue\n"
    "                                   (same id and history; a running service picks it up)\n"
    "  conflicts [--limit N] [--json]   fields both sides changed since the last sync, and which\n"
    "                                   side's value won (newest first)\n"
    "  check [--env FILE]               load the config and every script, run the mapping tests;\n"
    "                                   the first problem as file:line: message\n"
    "  test [--bench N] [--coverage] [PATH...]\n"
    "                                   run mapping test cases offline (default MAPPINGS_DIR/tests);\n"
    "                                   --coverage: the map targets no case filled\n"
    "  map --source nowcerts|ghl FILE.json [--fixtures CASES.lua] [--explain]\n"
    "                                   dry run: the requests a webhook body would make, as JSON;\n"
    "                                   --explain: the source fields with a value no map read\n"
    "  backfill --from nowcerts|ghl [--since DATE]\n"
    "                                   bulk sync of existing records through the same queue and\n"
    "                                   mappings, with progress; an interrupted one resumes\n"
    "  doctor [--env FILE] [--sandbox]  preflight against the live accounts: one line per check,\n"
    "                                   ✓ or ✗ with the fix; exit 1 on any ✗ (--sandbox: the fakes)\n"
    "  subscribe                        register PUBLIC_URL with NowCerts' REST hooks\n"
    "  unsubscribe                      remove the REST hooks registered by subscribe\n"
    "  version                          print the version\n"
    "  help                             this text\n"
    "\n"
    "Configuration comes from the environment and an optional .env file (see README.md).\n";

struct app {
  struct config cfg;
  struct event_base *base;
  struct store *store;
  struct queue *queue;
  struct httpc *http;
  struct upstream *up;
  struct lrt *rt;
  struct engine *engine;
  struct server *server;
  struct presence *presence;
  struct poller *poller;
  struct event *sig_term, *sig_int, *sig_hup, *drain_timer;
  double drain_deadline;
  pid_t fakes;
  struct metrics *metrics;
  struct metric *m_reloads;
  struct doctor *doctor;   /* the last preflight run (doctor.h) */
  bool doctor_running, doctor_again;
  struct upkeep *upkeep;
  bool store_failed;
};

static void start_doctor(struct app *a);

/* The preflight's ✗ lines become warnings and /health's "degraded". */
static void on_doctor_done(void *ud, struct doctor *d) {
  struct app *a = ud;
  size_t n;
  const struct doctor_line *lines = doctor_lines(d, &n);
  const char **reasons = calloc(n ? n : 1, sizeof *reasons);
  size_t nr = 0;
  for (size_t i = 0; i < n; i++) {
    if (lines[i].ok)
      continue;
    log_warn("doctor: ✗ %s. Fix: %s", lines[i].text, lines[i].fix ? lines[i].fix : "see ncghl doctor");
    if (reasons)
      reasons[nr++] = lines[i].text;
  }
  if (nr == 0)
    log_info("doctor: all %zu checks passed", n);
  server_set_degraded(a->server, reasons, nr);
  free(reasons);
  a->doctor_running = false;
  if (a->doctor_again) {
    a->doctor_again = false;
    start_doctor(a);
  }
}

/* The same checks as `ncghl doctor`, in the background; a run asked for
 * while one is going (a reload) starts when it ends. The finished run is
 * kept until the next one: it may be in its own callback. */
static void start_doctor(struct app *a) {
  if (!a->cfg.doctor_at_start)
    return;
  if (a->doctor_running) {
    a->doctor_again = true;
    return;
  }
  doctor_free(a->doctor);
  a->doctor = doctor_start(a->base, &a->cfg, a->up, a->store, a->rt, on_doctor_done, a);
  a->doctor_running = a->doctor != NULL;
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct app *a = arg;
  double t = clock_wall();
  int running = engine_running(a->engine);
  if (running == 0 || t >= a->drain_deadline) {
    if (running)
      log_warn("stopping with %d events still running; they run again at the next start", running);
    /* Settle every answer that waits on a commit or an fsync while the
     * loop still runs, and give the loop a moment to write them out. */
    queue_flush(a->queue);
    event_del(a->drain_timer);
    struct timeval out = {0, 100000};
    event_base_loopexit(a->base, &out);
  }
}

/* Graceful stop: refuse new work, let running events end (bounded), then
 * leave the loop; whatever is still running is 'running' in the store and
 * goes back to pending at the next start. */
static void on_stop_signal(evutil_socket_t sig, short what, void *arg) {
  (void)what;
  struct app *a = arg;
  if (a->drain_timer) {
    event_base_loopexit(a->base, NULL); /* a second signal: stop now */
    return;
  }
  log_info("signal %d: stopping (waiting up to %d s for running events)", (int)sig,
           SHUTDOWN_GRACE_SECONDS);
  server_drain(a->server);
  poller_stop(a->poller);
  engine_stop(a->engine);
  a->drain_deadline = clock_wall() + SHUTDOWN_GRACE_SECONDS;
  a->drain_timer = event_new(a->base, -1, EV_PERSIST, on_drain_tick, a);
  struct timeval tick = {0, 50000};
  event_add(a->drain_timer, &tick);
  on_drain_tick(-1, 0, a);
}

/* The store can no longer be trusted (queue.h): stop taking and starting
 * work now, keep answering /health with the reason for a while, then exit
 * non-zero. The next start recovers from the file: every event answered
 * 2xx was synced before its answer, so none is lost. */
static void on_store_failed(void *ud, const char *reason) {
  struct app *a = ud;
  if (a->store_failed)
    return;
  a->store_failed = true;
  log_error("store failed (%s): intake stopped; exiting in %d s for a restart", reason,
            STORE_FAILED_EXIT_SECONDS);
  poller_stop(a->poller);
  engine_stop(a->engine);
  struct timeval tv = {STORE_FAILED_EXIT_SECONDS, 0};
  event_base_loopexit(a->base, &tv);
}

/* The reload history /ui shows: each load's result and the version left
 * running. Losing a line of history never stops a reload. */
static void note_reload(struct app *a, bool ok, const char *message) {

  if (a->queue)
    queue_join(a->queue);
  if (store_reload_add(a->store, clock_wall(), ok, lrt_version(a->rt),
                       message) != 0)
    log_warn("could not record the mapping reload in the store");
}

static void on_hup(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  struct app *a = arg;
  char err[1024];
  if (lrt_reload(a->rt, err, sizeof err) == 0) {
    log_info("mappings reloaded (version %s)", lrt_version(a->rt));
    metric_inc(a->m_reloads, METRIC_LABELS("ok"));
    note_reload(a, true, lrt_last_reload(a->rt, NULL, NULL));
    start_doctor(a);
  } else {
    log_error("mappings reload failed, keeping version %s: %s", lrt_version(a->rt), err);
    metric_inc(a->m_reloads, METRIC_LABELS("error"));
    note_reload(a, false, err);
  }
}

static int up_start_hook(void *ud, const struct up_call *call, up_attempt_cb on_attempt,
                         up_done_cb done, void *done_ud) {
  return up_start(ud, call, on_attempt, done, done_ud);
}

static void app_free(struct app *a) {
  poller_stop(a->poller);
  /* Nothing new starts; then everything written is committed and synced,
   * and the answers waiting on it are sent, while the server that owns
   * them is still there. Only then does the server go (answering 202 for
   * events still running: they are on disk and run again at the next
   * start). */
  if (a->engine)
    engine_stop(a->engine);
  if (a->queue)
    queue_flush(a->queue);
  if (a->presence)
    presence_stop(a->presence);
  if (a->store_failed)
    server_undo_refused(a->server);
  if (a->server)
    server_free(a->server);
  upkeep_stop(a->upkeep);
  if (a->engine)
    engine_free(a->engine);
  if (a->queue)
    queue_free(a->queue); /* commits what the last turn wrote */
  if (a->rt)
    lrt_free(a->rt);
  if (a->up)
    up_free(a->up);
  if (a->http)
    httpc_free(a->http);
  doctor_free(a->doctor); /* after up_free: its calls end without calling back */
  poller_free(a->poller); /* after queue and upstream: they may hold its callbacks */
  if (a->store)
    store_close(a->store);
  struct event *evs[] = {a->sig_term, a->sig_int, a->sig_hup, a->drain_timer};
  for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
    if (evs[i])
      event_free(evs[i]);
  if (a->base)
    event_base_free(a->base);
  if (a->fakes > 0)
    sandbox_stop(a->fakes);
  metrics_free(a->metrics); /* after everything that counts into it */
  config_free(&a->cfg);
}

static int load_config(struct config *cfg, const char *env_file, bool sandbox) {
  return config_load_for_command(cfg, env_file, sandbox);
}

static int cmd_serve(int argc, char **argv) {
  const char *env_file = NULL;
  bool sandbox = false;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--sandbox") == 0)
      sandbox = true;
    else if (strcmp(argv[i], "--env") == 0 && i + 1 < argc)
      env_file = argv[++i];
    else {
      fprintf(stderr, "ncghl serve: unknown option '%s'\n%s", argv[i], usage);
      return 2;
    }
  }
  struct app a;
  memset(&a, 0, sizeof a);
  if (load_config(&a.cfg, env_file, sandbox) != 0)
    return 1;
  char err[1024];
  int rc = 1;
  signal(SIGPIPE, SIG_IGN);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    log_error("cannot initialise libcurl");
    goto out;
  }
  if (sandbox) {
    a.fakes = sandbox_start(&a.cfg, err, sizeof err);
    if (a.fakes < 0) {
      log_error("%s", err);
      goto out;
    }
    log_info("sandbox: fake NowCerts on http://127.0.0.1:%d/api, fake GHL on http://127.0.0.1:%d",
             a.cfg.sandbox_nowcerts_port, a.cfg.sandbox_ghl_port);
  }
  a.base = event_base_new();
  if (a.base)
    event_base_priority_init(a.base, QUEUE_PRIORITIES);
  a.store = a.base ? store_open(config_store(&a.cfg), err, sizeof err) : NULL;
  if (!a.store) {
    log_error("%s: cannot open the store %s: %s", config_store_var(&a.cfg), a.cfg.store_label, a.base ? err : "no event base");
    goto out;
  }
  int recovered = 0;
  if (store_recover_running(a.store, &recovered) != 0)
    goto out;
  if (recovered)
    log_warn("%d events were running when the service last stopped; they run again", recovered);
  /* The one count query: from here on the counts follow every change. */
  if (store_counts_seed(a.store) != 0)
    goto out;
  /* The loop never sleeps in SQLite's busy handler, and never checkpoints
   * inside a COMMIT: upkeep's thread does that (and retention). */
  store_set_busy_timeout(a.store, 0);
  store_set_autocheckpoint(a.store, 0);
  a.queue = queue_new(a.base, a.store);
  a.http = httpc_new(a.base, 16 * 1024 * 1024);
  a.up = a.http ? up_new(a.base, &a.cfg, a.http) : NULL;
  if (!a.queue || !a.up) {
    log_error("cannot set up outbound HTTP");
    goto out;
  }
  /* One registry for the whole process; each module registers its own
   * families in it. Without memory for it the service runs uncounted. */
  a.metrics = metrics_new();
  up_set_store(a.up, a.store);
  struct lrt_host host = {a.base, &a.cfg, a.up, a.store, a.queue, up_start_hook, a.up,
                          metrics_counter(a.metrics, "ncghl_conflicts_total",
                                          "Fields both sides changed since the last sync, by"
                                          " which side's value won (ncghl conflicts lists them).",
                                          METRIC_LABELS("kind", "winner")),
                          metrics_counter(a.metrics, "ncghl_ignored_events_total",
                                          "Events left alone on purpose, by reason"
                                          " (other_location: a GHL webhook for another"
                                          " sub-account).",
                                          METRIC_LABELS("reason"))};
  a.rt = lrt_new(&host, err, sizeof err);
  if (!a.rt) {
    log_error("mappings: %s", err);
    goto out;
  }
  lrt_set_check(a.rt, runner_check);
  note_reload(&a, true, "loaded at start");
  a.engine = engine_new(a.base, &a.cfg, a.store, a.queue, a.rt);
  if (!a.engine)
    goto out;
  a.server = server_new(a.base, &a.cfg, a.store, a.queue, a.engine, a.rt, err, sizeof err);
  if (!a.server) {
    log_error("%s", err);
    goto out;
  }
  a.m_reloads = metrics_counter(a.metrics, "ncghl_mapping_reloads_total",
                                "Mapping reloads on SIGHUP; error: the old mappings were kept.",
                                METRIC_LABELS("result"));
  metric_add(a.m_reloads, METRIC_LABELS("ok"), 0);
  metric_add(a.m_reloads, METRIC_LABELS("error"), 0);
  server_set_metrics(a.server, a.metrics);
  up_set_metrics(a.up, a.metrics);
  a.presence = presence_start(a.base, a.store, a.queue);
  queue_on_fail(a.queue, on_store_failed, &a);
  a.upkeep = upkeep_start(a.base, a.store, config_store(&a.cfg), a.cfg.retention_days);
  if (poller_wanted(&a.cfg) &&
      !(a.poller = poller_new(a.base, &a.cfg, a.store, a.queue, a.engine, a.up)))
    goto out;
  a.sig_term = evsignal_new(a.base, SIGTERM, on_stop_signal, &a);
  a.sig_int = evsignal_new(a.base, SIGINT, on_stop_signal, &a);
  a.sig_hup = evsignal_new(a.base, SIGHUP, on_hup, &a);
  event_add(a.sig_term, NULL);
  event_add(a.sig_int, NULL);
  event_add(a.sig_hup, NULL);
  start_doctor(&a);
  log_info("ncghl %s listening on http://%s:%d (store %s, mappings %s version %s%s)", NCGHL_VERSION,
           a.cfg.host, a.cfg.port, a.cfg.store_label, a.cfg.mappings_dir, lrt_version(a.rt),
           sandbox ? ", sandbox" : "");
  if (a.cfg.admin_token && *a.cfg.admin_token && a.cfg.ui_dir)
    log_info("web page: http://%s:%d/ui (sign in with ADMIN_TOKEN)", a.cfg.host, a.cfg.port);
  event_base_dispatch(a.base);
  rc = a.store_failed ? 1 : 0;
  log_info("stopped%s", a.store_failed ? " (store failed: exit status 1)" : "");
out:
  app_free(&a);
  curl_global_cleanup();
  log_close();
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "serve") == 0)
    return cmd_serve(argc - 2, argv + 2);
  if (strcmp(cmd, "events") == 0)
    return events_main(argc - 2, argv + 2, usage);
  if (strcmp(cmd, "replay") == 0)
    return replay_main(argc - 2, argv + 2, usage);
  if (strcmp(cmd, "conflicts") == 0)
    return conflicts_main(argc - 2, argv + 2);
  if (strcmp(cmd, "check") == 0)
    return runner_cmd_check(argc - 2, argv + 2);
  if (strcmp(cmd, "test") == 0)
    return runner_cmd_test(argc - 2, argv + 2);
  if (strcmp(cmd, "map") == 0)
    return runner_cmd_map(argc - 2, argv + 2);
  if (strcmp(cmd, "backfill") == 0)
    return backfill_main(argc - 2, argv + 2);
  if (strcmp(cmd, "doctor") == 0)
    return doctor_main(argc - 2, argv + 2);
  if (strcmp(cmd, "subscribe") == 0 || strcmp(cmd, "unsubscribe") == 0)
    return subscribe_main(argc - 2, argv + 2, strcmp(cmd, "subscribe") == 0);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("ncghl %s\n", NCGHL_VERSION);
    return 0;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  fprintf(stderr, "ncghl: unknown command '%s'\n%s", cmd, usage);
  return 2;
}
