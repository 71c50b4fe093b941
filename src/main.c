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
#include <sys/resource.h>
#include <unistd.h>

#include "backfill.h"
#include "clock.h"
#include "config.h"
#include "conflicts_cmd.h"
#include "doctor.h"
#include "engine.h"
#include "events_cmd.h"
#include "httpc.h"
#include "install.h"
#include "log.h"
#include "lua_rt.h"
#include "metrics.h"
#include "pace.h"
#include "poller.h"
#include "presence.h"
#include "queue.h"
#include "runner.h"
#include "sandbox.h"
#include "server.h"
#include "store.h"
#include "subscribe.h"
#include "tenant.h"
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
    "With TENANTS_DIR set, every command but serve takes --tenant NAME: it then works on that\n"
    "tenant's configuration and store (docs/tenants.md).\n"
    "\n"
    "Configuration comes from the environment and an optional .env file (see README.md).\n";

struct app {
  struct config cfg; /* the process's; each tenant has its own (tenant.h) */
  bool sandbox;
  struct event_base *base;
  struct httpc *http;
  struct server *server;
  struct tenants *tenants;
  struct install *install; /* GHL Marketplace install (install.h) */
  struct event *sig_term, *sig_int, *sig_hup, *drain_timer;
  double drain_deadline;
  pid_t fakes;
  struct metrics *metrics;
  struct pace *pace; /* the loop's share between intake and processing */
  bool store_failed;
};

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct app *a = arg;
  double t = clock_wall();
  int running = tenants_running(a->tenants);
  /* An install exchange in flight may hold a code GHL already spent. */
  int installs = install_pending(a->install);
  if ((running == 0 && installs == 0) || t >= a->drain_deadline) {
    if (running)
      log_warn("stopping with %d events still running; they run again at the next start", running);
    if (installs)
      log_warn("stopping with %d GHL install(s) waiting for GHL's token endpoint; install again",
               installs);
    install_stop(a->install);
    /* Settle every answer that waits on a commit or an fsync while the
     * loop still runs, and give the loop a moment to write them out. */
    tenants_flush(a->tenants);
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
  tenants_stop(a->tenants);
  a->drain_deadline = clock_wall() + SHUTDOWN_GRACE_SECONDS;
  a->drain_timer = event_new(a->base, -1, EV_PERSIST, on_drain_tick, a);
  struct timeval tick = {0, 50000};
  event_add(a->drain_timer, &tick);
  on_drain_tick(-1, 0, a);
}

/* A store can no longer be trusted (queue.h): stop taking and starting
 * work now, keep answering /health with the reason for a while, then exit
 * non-zero. The next start recovers from the file: every event answered
 * 2xx was synced before its answer, so none is lost. One tenant's store
 * failing stops the process: a restart is how every store recovers. */
static void on_store_failed(void *ud, const char *reason) {
  struct app *a = ud;
  if (a->store_failed)
    return;
  a->store_failed = true;
  log_error("store failed (%s): intake stopped; exiting in %d s for a restart", reason,
            STORE_FAILED_EXIT_SECONDS);
  tenants_stop(a->tenants);
  struct timeval tv = {STORE_FAILED_EXIT_SECONDS, 0};
  event_base_loopexit(a->base, &tv);
}

/* SIGHUP: the single agency reloads its mappings; with tenants, the
 * directory is read again (tenant.h says what each change does). */
static void on_hup(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  struct app *a = arg;
  if (!a->cfg.tenants_dir) {
    tenants_reload_mappings(a->tenants);
    return;
  }
  char err[1200];
  int bad = tenants_sync_dir(a->tenants, &a->cfg, a->sandbox, err, sizeof err);
  log_info("tenants reloaded from %s: %zu running%s", a->cfg.tenants_dir,
           tenants_count(a->tenants), bad ? ", some files refused (see above)" : "");
}

/* The Marketplace install's tenant: the one whose GHL_LOCATION_ID is the
 * installed location. The app's keys (GHL_CLIENT_ID/SECRET) are the
 * process's, inherited by every tenant: one Marketplace app serves them all. */
static bool install_find(void *ud, const char *location_id, struct install_target *out) {
  struct app *a = ud;
  struct tenant *t = tenants_by_location(a->tenants, location_id);
  if (!t) {
    /* The single agency without GHL_LOCATION_ID takes the location it is
     * installed for (a deployment waiting for its first install). */
    struct tenant *single = tenants_by_name(a->tenants, NULL);
    const char *mine = single ? tenant_config(single)->ghl_location_id : NULL;
    if (!single || (mine && *mine))
      return false;
    t = single;
  }
  out->tokens = tenant_ghl_tokens(t);
  out->name = tenant_name(t);
  out->queue = tenant_queue(t);
  return true;
}

static void app_free(struct app *a) {
  /* Every tenant stops, commits and takes its site off the server, whose
   * answers still owed are sent first; only then does the server go. */
  if (a->store_failed)
    tenants_undo_refused(a->tenants);
  install_free(a->install); /* answers its browsers while the server is there */
  a->install = NULL;
  tenants_free(a->tenants);
  if (a->server)
    server_free(a->server);
  if (a->http)
    httpc_free(a->http);
  struct event *evs[] = {a->sig_term, a->sig_int, a->sig_hup, a->drain_timer};
  for (size_t i = 0; i < sizeof evs / sizeof *evs; i++)
    if (evs[i])
      event_free(evs[i]);
  if (a->base)
    event_base_free(a->base);
  pace_free(a->pace); /* after the HTTP client and engines that charge it */
  if (a->fakes > 0)
    sandbox_stop(a->fakes);
  metrics_free(a->metrics); /* after everything that counts into it */
  config_free(&a->cfg);
}

static int load_config(struct config *cfg, const char *env_file, bool sandbox) {
  return config_load_for_command(cfg, env_file, sandbox);
}

/* The service's loop batches its epoll changes (libevent's change list): a
 * watch removed and added again in one loop turn, as a keep-alive answer
 * and a reused upstream connection do for every request, costs no system
 * call instead of two. libevent warns the list is unsafe with descriptors
 * cloned by dup(); the service clones none, and forks (the sandbox's
 * fakes) only before the loop exists (docs/decisions.md). */
/* libevent's own warnings (an accept() that failed, a bad request line)
 * would go to stderr bare: they become lines of the service's log, with
 * its time stamp, level, masking and LOG_FILE. */
static void on_libevent_log(int severity, const char *msg) {
  enum log_level l = severity >= EVENT_LOG_ERR    ? LOGL_ERROR
                     : severity == EVENT_LOG_WARN ? LOGL_WARNING
                     : severity == EVENT_LOG_MSG  ? LOGL_INFO
                                                  : LOGL_DEBUG;
  if (log_enabled(l))
    log_msg(l, "libevent: %s", msg);
}

/* Each client connection, upstream connection and store file is a
 * descriptor. Distributions start services with a soft limit of 1,024 and
 * a much higher hard one; a burst of webhook senders would otherwise run
 * the service out of descriptors long before memory. Raised to the hard
 * limit, as far as the kernel allows; what is left is logged. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t want = rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max;
    struct rlimit up = {want, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &up) == 0)
      rl.rlim_cur = want;
  }
  log_debug("open descriptors limit: %llu", (unsigned long long)rl.rlim_cur);
}

static struct event_base *loop_base_new(void) {
  struct event_config *c = event_config_new();
  if (!c)
    return NULL;
  event_config_set_flag(c, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  struct event_base *base = event_base_new_with_config(c);
  event_config_free(c);
  return base;
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
  event_set_log_callback(on_libevent_log);
  raise_fd_limit();
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
  a.sandbox = sandbox;
  a.base = loop_base_new();
  if (a.base)
    event_base_priority_init(a.base, QUEUE_PRIORITIES);
  /* One registry for the whole process; each module registers its own
   * families in it (a tenant's through its view). Without memory for it the
   * service runs uncounted. */
  a.metrics = metrics_new();
  a.http = a.base ? httpc_new(a.base, 16 * 1024 * 1024) : NULL;
  if (!a.http) {
    log_error("cannot set up outbound HTTP");
    goto out;
  }
  /* Each running event makes one upstream call at a time: as many
   * connections to one API as events may run, so EVENT_CONCURRENCY is the
   * outbound concurrency (a cap of 64 held 256 running events to ~1,000
   * events/s against an API answering in 20 ms). */
  if (a.cfg.event_concurrency > 64)
    httpc_set_host_connections(a.http, a.cfg.event_concurrency);
  /* One loop, one pace: every tenant's processing shares it with all intake.
   * Without one (no memory) nothing is paced. */
  a.pace = pace_new();
  httpc_set_pace(a.http, a.pace);
  a.server = server_new(a.base, &a.cfg, a.metrics, err, sizeof err);
  if (!a.server) {
    log_error("%s", err);
    goto out;
  }
  server_set_pace(a.server, a.pace);
  struct tenant_shared shared = {a.base, a.http, a.server, a.metrics, a.pace, on_store_failed, &a};
  a.tenants = tenants_new(&shared);
  if (!a.tenants)
    goto out;
  if (a.cfg.tenants_dir) {
    if (tenants_sync_dir(a.tenants, &a.cfg, sandbox, err, sizeof err) != 0) {
      log_error("tenants: %s", err);
      goto out;
    }
    log_info("tenants: %zu from %s", tenants_count(a.tenants), a.cfg.tenants_dir);
  } else {
    /* The single agency: one tenant without a name, on its own copy of the
     * configuration (the process keeps its own for the listener). */
    struct config one;
    if (config_load(&one, env_file, sandbox, err, sizeof err) != 0) {
      log_error("configuration error: %s", err);
      goto out;
    }
    if (tenants_start_single(a.tenants, &one) != 0)
      goto out;
  }
  if (!(a.install = install_new(&a.cfg, a.http, install_find, &a)))
    goto out;
  server_set_install(a.server, a.install);
  a.sig_term = evsignal_new(a.base, SIGTERM, on_stop_signal, &a);
  a.sig_int = evsignal_new(a.base, SIGINT, on_stop_signal, &a);
  a.sig_hup = evsignal_new(a.base, SIGHUP, on_hup, &a);
  event_add(a.sig_term, NULL);
  event_add(a.sig_int, NULL);
  event_add(a.sig_hup, NULL);
  struct tenant *single = tenants_by_name(a.tenants, NULL);
  if (single)
    log_info("ncghl %s listening on http://%s:%d (store %s, mappings %s version %s%s)", NCGHL_VERSION,
             a.cfg.host, a.cfg.port, a.cfg.store_label, a.cfg.mappings_dir,
             tenant_mappings_version(single), sandbox ? ", sandbox" : "");
  else
    log_info("ncghl %s listening on http://%s:%d (%zu tenants from %s%s)", NCGHL_VERSION,
             a.cfg.host, a.cfg.port, tenants_count(a.tenants), a.cfg.tenants_dir,
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
  /* A file-size limit (RLIMIT_FSIZE) reached by a write must fail that
   * write (EFBIG: the store's "cannot write", webhooks 503) as a full disk
   * does, not kill the process with SIGXFSZ. */
  signal(SIGXFSZ, SIG_IGN);
  const char *cmd = argv[1];
  if (strcmp(cmd, "serve") == 0) {
    unsetenv("NCGHL_TENANT"); /* serve runs every tenant */
    return cmd_serve(argc - 2, argv + 2);
  }
  /* --tenant NAME, anywhere after the command: the command works on that
   * tenant's configuration and store (config.h). */
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--tenant") != 0)
      continue;
    if (i + 1 >= argc) {
      fprintf(stderr, "ncghl %s: --tenant needs a tenant's name\n", cmd);
      return 2;
    }
    setenv("NCGHL_TENANT", argv[i + 1], 1);
    memmove(argv + i, argv + i + 2, (size_t)(argc - i - 2 + 1) * sizeof *argv);
    argc -= 2;
    break;
  }
  /* The commands on one agency's store or accounts need a tenant when there
   * are tenants (config_load says so, naming them); the mapping tools work
   * on MAPPINGS_DIR and need none. */
  static const char *const per_agency[] = {"events", "replay", "conflicts", "backfill",
                                           "doctor", "subscribe", "unsubscribe"};
  const char *given = getenv("NCGHL_TENANT");
  if (!given || !*given)
    for (size_t k = 0; k < sizeof per_agency / sizeof *per_agency; k++)
      if (strcmp(cmd, per_agency[k]) == 0)
        setenv("NCGHL_TENANT", CONFIG_TENANT_NEEDED, 1);
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
