#include "conflicts_cmd.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "log.h"
#include "store.h"

struct printer {
  bool json;
  int n;
  struct buf line;
};

/* Tabs and line breaks inside a value would break the one-line-a-row form. */
static void put_value(struct buf *b, const char *s) {
  if (!s || !*s) {
    buf_puts(b, "(empty)");
    return;
  }
  for (; *s; s++)
    buf_putc(b, (*s == '\t' || *s == '\n' || *s == '\r') ? ' ' : *s);
}

static int print_one(void *ud, const struct store_conflict *c) {
  struct printer *p = ud;
  struct buf *b = &p->line;
  buf_reset(b);
  if (p->json) {
    store_conflict_json(b, c);
  } else {
    char when[32];
    time_t t = (time_t)c->at;
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    buf_printf(b, "%s\t%s\t%s\t%s\t", when, c->kind, c->nowcerts_id, c->ghl_id ? c->ghl_id : "-");
    put_value(b, c->field);
    buf_puts(b, "\tnowcerts=");
    put_value(b, c->nowcerts_value);
    buf_puts(b, "\tghl=");
    put_value(b, c->ghl_value);
    buf_puts(b, "\tbase=");
    put_value(b, c->base);
    buf_printf(b, "\twinner=%s\t%s", c->winner, c->event_id ? c->event_id : "-");
  }
  if (b->p)
    puts(b->p);
  p->n++;
  return 0;
}

int conflicts_main(int argc, char **argv) {
  struct store_sync_filter f = {.limit = 100};
  struct printer p = {0};
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      p.json = true;
    } else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
      char *end;
      long n = strtol(argv[++i], &end, 10);
      if (*end || n <= 0 || n > 100000) {
        fprintf(stderr, "ncghl conflicts: --limit wants a whole number from 1 to 100000\n");
        return 2;
      }
      f.limit = (int)n;
    } else {
      fprintf(stderr, "ncghl conflicts: unknown option '%s'\n"
                      "usage: ncghl conflicts [--limit N] [--json]\n", argv[i]);
      return 2;
    }
  }
  struct config cfg;
  char err[1024];
  if (config_load(&cfg, NULL, false, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  if (!store_exists(config_store(&cfg))) {
    fprintf(stderr, "ncghl conflicts: no store at %s (%s): nothing has been synced yet\n",
            cfg.store_label, config_store_var(&cfg));
    config_free(&cfg);
    return 1;
  }
  struct store *s = store_open(config_store(&cfg), err, sizeof err);
  if (!s) {
    fprintf(stderr, "ncghl conflicts: %s\n", err);
    config_free(&cfg);
    return 1;
  }
  buf_init(&p.line, 0);
  int rc = store_conflict_list(s, &f, print_one, &p) == 0 ? 0 : 1;
  if (rc == 0 && p.n == 0 && !p.json)
    fprintf(stderr, "ncghl conflicts: none recorded\n");
  buf_free(&p.line);
  store_close(s);
  config_free(&cfg);
  log_close();
  return rc;
}
