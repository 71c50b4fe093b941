#include "events_cmd.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ascase.h"
#include "buf.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "presence.h"
#include "store.h"

/* The same loading as `serve` (config_load_for_command). */
static int load_config(struct config *cfg, const char *env_file, bool sandbox) {
  return config_load_for_command(cfg, env_file, sandbox);
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
    buf_putc(b, '{');
    store_event_json_fields(b, e);
    buf_putc(b, '}');
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

int events_main(int argc, char **argv, const char *usage) {
  const char *status = NULL;
  int limit = 100;
  struct list_opts o = {false, {0}};
  const char *as_case = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--as-case") == 0 && i + 1 < argc)
      as_case = argv[++i];
    else if (strcmp(argv[i], "--json") == 0)
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
    } else if (i + 1 == argc && (strcmp(argv[i], "--as-case") == 0 ||
                                 strcmp(argv[i], "--status") == 0 ||
                                 strcmp(argv[i], "--limit") == 0)) {
      fprintf(stderr, "ncghl events: %s needs a value\n%s", argv[i], usage);
      return 2;
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
  if (!store_exists(config_store(&cfg))) {
    fprintf(stderr, "ncghl events: no store at %s (%s): nothing has been received yet\n",
            cfg.store_label, config_store_var(&cfg));
    config_free(&cfg);
    return 1;
  }
  char err[1024];
  struct store *s = store_open(config_store(&cfg), err, sizeof err);
  if (!s) {
    fprintf(stderr, "ncghl events: %s\n", err);
    config_free(&cfg);
    return 1;
  }
  if (as_case) {
    int got = ascase_write(stdout, &cfg, s, as_case);
    if (got != 0)
      fprintf(stderr, "ncghl events: %s %s in %s (DB_PATH)\n",
              got > 0 ? "no event" : "cannot read event", as_case, cfg.store_label);
    store_close(s);
    config_free(&cfg);
    log_close();
    return got == 0 ? 0 : 1;
  }
  buf_init(&o.line, 0);
  int rc = store_event_list(s, status, limit, print_event, &o) == 0 ? 0 : 1;
  buf_free(&o.line);
  store_close(s);
  config_free(&cfg);
  log_close();
  return rc;
}

struct id_list {
  char (*ids)[EVENT_ID_MAX];
  size_t n, cap;
  bool oom; /* the list stopped early: replay nothing rather than part */
};

static int collect_id(void *ud, const struct store_event *e) {
  struct id_list *l = ud;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    char(*ids)[EVENT_ID_MAX] = realloc(l->ids, cap * sizeof *ids);
    if (!ids) {
      l->oom = true;
      return -1;
    }
    l->ids = ids;
    l->cap = cap;
  }
  snprintf(l->ids[l->n++], EVENT_ID_MAX, "%s", e->id);
  return 0;
}

/* Puts events back in the queue of the same store, keeping their ids and
 * attempt history. The service's once-a-second poll picks them up; with no
 * service running they wait for its next start, and this says so. */
int replay_main(int argc, char **argv, const char *usage) {
  if (argc != 1 || (argv[0][0] == '-' && strcmp(argv[0], "--dead") != 0)) {
    fprintf(stderr, "ncghl replay: give one event id or --dead\n%s", usage);
    return 2;
  }
  bool all_dead = strcmp(argv[0], "--dead") == 0;
  struct config cfg;
  if (load_config(&cfg, NULL, false) != 0)
    return 1;
  char err[1024];
  struct store *s = NULL;
  int rc = 1;
  struct id_list l = {0};
  if (!store_exists(config_store(&cfg))) {
    fprintf(stderr, "ncghl replay: no store at %s (%s): nothing has been received yet\n",
            cfg.store_label, config_store_var(&cfg));
    goto out;
  }
  if (!(s = store_open(config_store(&cfg), err, sizeof err))) {
    fprintf(stderr, "ncghl replay: %s\n", err);
    goto out;
  }
  if (all_dead) {
    if (store_event_list(s, "dead", 0, collect_id, &l) != 0 || l.oom) {
      fprintf(stderr, "ncghl replay: cannot read the dead events from %s\n", cfg.store_label);
      goto out;
    }
    if (l.n == 0) {
      printf("no dead events in %s: nothing to replay\n", cfg.store_label);
      rc = 0;
      goto out;
    }
  } else {
    struct store_event e;
    int got = store_event_get(s, argv[0], &e);
    if (got != 0) {
      fprintf(stderr, "ncghl replay: %s %s in %s (DB_PATH)\n",
              got > 0 ? "no event" : "cannot read event", argv[0], cfg.store_label);
      goto out;
    }
    enum ev_status was = e.status;
    store_event_free(&e);
    if (was == EV_RUNNING) {
      fprintf(stderr, "ncghl replay: event %s is running now; replay it once it has ended\n",
              argv[0]);
      goto out;
    }
    if (!(l.ids = malloc(sizeof *l.ids)))
      goto out;
    snprintf(l.ids[0], EVENT_ID_MAX, "%s", argv[0]);
    l.n = 1;
  }
  double now = clock_wall();
  size_t done = 0;
  if (l.n == 0 || store_begin(s) != 0)
    goto out;
  for (size_t i = 0; i < l.n; i++) {
    int r = store_event_requeue(s, l.ids[i], now);
    if (r < 0) {
      store_rollback(s);
      fprintf(stderr, "ncghl replay: cannot write to %s; nothing was replayed\n", cfg.store_label);
      goto out;
    }
    done += (size_t)r;
  }
  if (store_commit(s) != 0) {
    fprintf(stderr, "ncghl replay: cannot write to %s; nothing was replayed\n", cfg.store_label);
    goto out;
  }
  if (all_dead)
    printf("%zu dead event%s put back in the queue (ids and attempt history kept)\n", done,
           done == 1 ? "" : "s");
  else
    printf("event %s put back in the queue (id and attempt history kept)\n", l.ids[0]);
  long pid = 0;
  if (presence_running(s, &pid))
    printf("a service is running on %s (pid %ld): it will be picked up within about a second\n",
           cfg.store_label, pid);
  else
    printf("no service is running on %s: it will run at the next start\n", cfg.store_label);
  rc = 0;
out:
  free(l.ids);
  store_close(s);
  config_free(&cfg);
  log_close();
  return rc;
}
