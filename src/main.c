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
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "engine.h"
#include "httpc.h"
#include "log.h"
#include "lua_rt.h"
#include "presence.h"
#include "queue.h"
#include "sandbox.h"
#include "server.h"
#include "store.h"
#include "upstream.h"

#define SHUTDOWN_GRACE_SECONDS 10

static const char usage[] =
    "usage: ncghl <command> [options]\n"
    "\n"
    "  serve [--env FILE] [--sandbox]   run the service (--sandbox: with fake NowCerts and GHL)\n"
    "  events [--status S] [--limit N] [--json]\n"
    "                                   list stored events: id, source, type, status, attempts,\n"
    "                                   last error (tab-separated; --json: one object a line)\n"
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
  struct event *sig_term, *sig_int, *sig_hup, *drain_timer;
  double drain_deadline;
  pid_t fakes;
};

static void on_drain_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct app *a = arg;
  struct timeval now;
  evutil_gettimeofday(&now, NULL);
  double t = (double)now.tv_sec + now.tv_usec / 1e6;
  int running = engine_running(a->engine);
  if (running == 0 || t >= a->drain_deadline) {
    if (running)
      log_warn("stopping with %d events still running; they run again at the next start", running);
    event_base_loopexit(a->base, NULL);
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
  engine_stop(a->engine);
  struct timeval now;
  evutil_gettimeofday(&now, NULL);
  a->drain_deadline = (double)now.tv_sec + now.tv_usec / 1e6 + SHUTDOWN_GRACE_SECONDS;
  a->drain_timer = event_new(a->base, -1, EV_PERSIST, on_drain_tick, a);
  struct timeval tick = {0, 50000};
  event_add(a->drain_timer, &tick);
  on_drain_tick(-1, 0, a);
}

static void on_hup(evutil_socket_t sig, short what, void *arg) {
  (void)sig;
  (void)what;
  struct app *a = arg;
  char err[512];
  if (lrt_reload(a->rt, err, sizeof err) == 0)
    log_info("mappings reloaded (version %s)", lrt_version(a->rt));
  else
    log_error("mappings reload failed, keeping version %s: %s", lrt_version(a->rt), err);
}

static int up_start_hook(void *ud, const struct up_call *call, up_attempt_cb on_attempt,
                         up_done_cb done, void *done_ud) {
  return up_start(ud, call, on_attempt, done, done_ud);
}

static void app_free(struct app *a) {
  if (a->server)
    server_free(a->server);
  if (a->presence)
    presence_stop(a->presence);
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
  config_free(&a->cfg);
}

static int load_config(struct config *cfg, const char *env_file, bool sandbox) {
  char err[512];
  if (config_load(cfg, env_file, sandbox, err, sizeof err) != 0) {
    fprintf(stderr, "ncghl: configuration error: %s\n", err);
    return -1;
  }
  if (log_init(cfg->log_level, cfg->log_file) != 0) {
    fprintf(stderr, "ncghl: configuration error: LOG_FILE: cannot open %s\n", cfg->log_file);
    config_free(cfg);
    return -1;
  }
  return 0;
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
  a.store = a.base ? store_open(a.cfg.db_path, err, sizeof err) : NULL;
  if (!a.store) {
    log_error("DB_PATH: cannot open the store %s: %s", a.cfg.db_path, a.base ? err : "no event base");
    goto out;
  }
  int recovered = 0;
  if (store_recover_running(a.store, &recovered) != 0)
    goto out;
  if (recovered)
    log_warn("%d events were running when the service last stopped; they run again", recovered);
  a.queue = queue_new(a.base, a.store);
  a.http = httpc_new(a.base, 16 * 1024 * 1024);
  a.up = a.http ? up_new(a.base, &a.cfg, a.http) : NULL;
  if (!a.queue || !a.up) {
    log_error("cannot set up outbound HTTP");
    goto out;
  }
  struct lrt_host host = {a.base, &a.cfg, a.up, a.store, a.queue, up_start_hook, a.up};
  a.rt = lrt_new(&host, err, sizeof err);
  if (!a.rt) {
    log_error("mappings: %s", err);
    goto out;
  }
  a.engine = engine_new(a.base, &a.cfg, a.store, a.queue, a.rt);
  if (!a.engine)
    goto out;
  a.server = server_new(a.base, &a.cfg, a.store, a.queue, a.engine, a.rt, err, sizeof err);
  if (!a.server) {
    log_error("%s", err);
    goto out;
  }
  a.presence = presence_start(a.base, a.store, a.queue);
  a.sig_term = evsignal_new(a.base, SIGTERM, on_stop_signal, &a);
  a.sig_int = evsignal_new(a.base, SIGINT, on_stop_signal, &a);
  a.sig_hup = evsignal_new(a.base, SIGHUP, on_hup, &a);
  event_add(a.sig_term, NULL);
  event_add(a.sig_int, NULL);
  event_add(a.sig_hup, NULL);
  log_info("ncghl %s listening on http://%s:%d (store %s, mappings %s version %s%s)", NCGHL_VERSION,
           a.cfg.host, a.cfg.port, a.cfg.db_path, a.cfg.mappings_dir, lrt_version(a.rt),
           sandbox ? ", sandbox" : "");
  event_base_dispatch(a.base);
  log_info("stopped");
  rc = 0;
out:
  app_free(&a);
  curl_global_cleanup();
  log_close();
  return rc;
}

static void put_field(struct buf *b, const char *s) {
  for (; s && *s; s++)
    buf_putc(b, (*s == '\t' || *s == '\n' || *s == '\r') ? ' ' : *s);
}

struct list_opts {
  bool json;
  struct buf line;
};

static int print_event(void *ud, const struct store_event *e) {
  struct list_opts *o = ud;
  struct buf *b = &o->line;
  buf_reset(b);
  if (o->json) {
    buf_puts(b, "{\"id\":");
    buf_json_str(b, e->id, strlen(e->id));
    buf_puts(b, ",\"source\":");
    buf_json_str(b, e->source, strlen(e->source));
    buf_puts(b, ",\"type\":");
    buf_json_str(b, e->type ? e->type : "", e->type ? strlen(e->type) : 0);
    buf_printf(b, ",\"status\":\"%s\",\"attempts\":%d,\"last_error\":", store_status_name(e->status),
               e->attempts);
    if (e->last_error)
      buf_json_str(b, e->last_error, strlen(e->last_error));
    else
      buf_puts(b, "null");
    buf_printf(b, ",\"created_at\":%.3f,\"updated_at\":%.3f,\"next_at\":%.3f}", e->created_at,
               e->updated_at, e->next_at);
  } else {
    buf_printf(b, "%s\t%s\t", e->id, e->source);
    put_field(b, e->type);
    buf_printf(b, "\t%s\t%d\t", store_status_name(e->status), e->attempts);
    put_field(b, e->last_error);
  }
  if (b->p)
    puts(b->p);
  return 0;
}

static int cmd_events(int argc, char **argv) {
  const char *status = NULL;
  int limit = 100;
  struct list_opts o = {false, {0}};
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      o.json = true;
    else if (strcmp(argv[i], "--status") == 0 && i + 1 < argc)
      status = argv[++i];
    else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
      char *end;
      limit = (int)strtol(argv[++i], &end, 10);
      if (*end || limit <= 0) {
        fprintf(stderr, "ncghl events: --limit wants a positive whole number\n");
        return 2;
      }
    } else {
      fprintf(stderr, "ncghl events: unknown option '%s'\n%s", argv[i], usage);
      return 2;
    }
  }
  if (status && store_status_parse(status) < 0) {
    fprintf(stderr, "ncghl events: unknown status '%s' (pending, running, done, retry_wait, dead)\n",
            status);
    return 2;
  }
  struct config cfg;
  if (load_config(&cfg, NULL, false) != 0)
    return 1;
  struct stat st;
  if (stat(cfg.db_path, &st) != 0) {
    fprintf(stderr, "ncghl events: no store at %s (DB_PATH): nothing has been received yet\n",
            cfg.db_path);
    config_free(&cfg);
    return 1;
  }
  char err[512];
  struct store *s = store_open(cfg.db_path, err, sizeof err);
  if (!s) {
    fprintf(stderr, "ncghl events: %s\n", err);
    config_free(&cfg);
    return 1;
  }
  buf_init(&o.line, 0);
  int rc = store_event_list(s, status, limit, print_event, &o) == 0 ? 0 : 1;
  buf_free(&o.line);
  store_close(s);
  config_free(&cfg);
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
    return cmd_events(argc - 2, argv + 2);
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
