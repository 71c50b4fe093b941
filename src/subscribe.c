/* The subscribe and unsubscribe commands (see subscribe.h).
 *
 * NowCerts documents the endpoints (POST Zapier/Subscribe and
 * Zapier/Unsubscribe, body {"target_url","event"}) and the event numbers
 * (ZapierEventType), but not the answer, the delivery payload, retries or any
 * signature (ref/nowcerts/NOTES.md §6). So this file only relies on the HTTP
 * status and NowCerts' "status":0 convention, both handled by upstream.c;
 * turning a delivery into an event is the Lua normaliser's job. */
#include "subscribe.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "httpc.h"
#include "json.h"
#include "log.h"
#include "store.h"
#include "upstream.h"

#define HOOKS_KEY "nowcerts.rest_hooks"
#define HOOK_PATH "/api/v1/webhooks/nowcerts?hook="
#define MAX_HOOKS 64

/* The events ncghl maps (ZapierEventType, ref/nowcerts/enums.json). */
static const struct {
  const char *name;
  int event;
} events[] = {
    {"CreateInsured", 0},
    {"UpdateInsured", 32},
    {"CreateProspect", 3},
    {"UpdateProspect", 33},
    {"ConvertProspectToInsured", 30},
    {"CreatePolicy", 1},
    {"UpdatePolicy", 4},
    {"CreateQuote", 2},
    {"UpdateQuote", 5},
};
#define EVENT_COUNT ((int)(sizeof events / sizeof events[0]))

struct hook {
  char *name;
  int event;
  char *target_url;
};

struct sub {
  struct config cfg;
  struct event_base *base;
  struct httpc *http;
  struct upstream *up;
  struct store *store;
  bool subscribe;
  /* What the store remembers as registered. */
  struct hook known[MAX_HOOKS];
  int nknown;
  /* The work list: hooks to register or remove, one request at a time. */
  struct hook todo[MAX_HOOKS];
  int ntodo, next;
  int done, failed;
};

static void hook_clear(struct hook *h) {
  free(h->name);
  free(h->target_url);
  memset(h, 0, sizeof *h);
}

static int hook_set(struct hook *h, const char *name, int event, const char *url) {
  h->name = strdup(name);
  h->event = event;
  h->target_url = strdup(url);
  return h->name && h->target_url ? 0 : -1;
}

static void known_load(struct sub *s) {
  char *v = store_kv_get(s->store, HOOKS_KEY);
  if (!v)
    return;
  char err[128];
  struct json *root = json_parse(v, strlen(v), err, sizeof err);
  for (size_t i = 0; root && i < json_len(root) && s->nknown < MAX_HOOKS; i++) {
    const struct json *h = json_at(root, i);
    const char *name = json_str(json_get(h, "name"));
    const char *url = json_str(json_get(h, "target_url"));
    const struct json *ev = json_get(h, "event");
    if (name && url && ev && json_type(ev) == JSON_NUMBER &&
        hook_set(&s->known[s->nknown], name, (int)json_num(ev), url) == 0)
      s->nknown++;
  }
  json_free(root);
  free(v);
}

static int known_save(struct sub *s) {
  if (s->nknown == 0)
    return store_kv_put(s->store, HOOKS_KEY, NULL);
  struct buf b;
  buf_init(&b, 0);
  int rc = buf_putc(&b, '[');
  for (int i = 0; i < s->nknown; i++) {
    const struct hook *h = &s->known[i];
    rc |= buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
    rc |= buf_json_str(&b, h->name, strlen(h->name));
    rc |= buf_printf(&b, ",\"event\":%d,\"target_url\":", h->event);
    rc |= buf_json_str(&b, h->target_url, strlen(h->target_url));
    rc |= buf_putc(&b, '}');
  }
  rc |= buf_putc(&b, ']');
  if (rc == 0)
    rc = store_kv_put(s->store, HOOKS_KEY, b.p);
  buf_free(&b);
  return rc ? -1 : 0;
}

static int known_find(const struct sub *s, int event, const char *url) {
  for (int i = 0; i < s->nknown; i++)
    if (s->known[i].event == event && strcmp(s->known[i].target_url, url) == 0)
      return i;
  return -1;
}

static void start_next(struct sub *s);

static void on_done(void *ud, const struct up_result *r) {
  struct sub *s = ud;
  struct hook *h = &s->todo[s->next++];
  if (!r->ok) {
    s->failed++;
    fprintf(stderr, "ncghl %s: %s (event %d) failed: %s\n",
            s->subscribe ? "subscribe" : "unsubscribe", h->name, h->event,
            r->error ? r->error : "no answer");
  } else if (s->subscribe) {
    s->done++;
    printf("registered %-25s (event %2d) -> %s\n", h->name, h->event, h->target_url);
    if (s->nknown < MAX_HOOKS &&
        hook_set(&s->known[s->nknown], h->name, h->event, h->target_url) == 0)
      s->nknown++;
  } else {
    s->done++;
    printf("removed    %-25s (event %2d) -> %s\n", h->name, h->event, h->target_url);
    int i = known_find(s, h->event, h->target_url);
    if (i >= 0) {
      hook_clear(&s->known[i]);
      s->known[i] = s->known[--s->nknown];
      memset(&s->known[s->nknown], 0, sizeof s->known[s->nknown]);
    }
  }
  fflush(stdout);
  /* Saved after every answer: an interrupted run still remembers what
   * NowCerts now has. */
  if (r->ok && known_save(s) != 0)
    fprintf(stderr, "ncghl: cannot remember the REST hooks in %s\n", s->cfg.store_label);
  start_next(s);
}

static void start_next(struct sub *s) {
  if (s->next >= s->ntodo) {
    event_base_loopbreak(s->base);
    return;
  }
  const struct hook *h = &s->todo[s->next];
  struct buf body;
  buf_init(&body, 0);
  int rc = buf_puts(&body, "{\"target_url\":");
  rc |= buf_json_str(&body, h->target_url, strlen(h->target_url));
  rc |= buf_printf(&body, ",\"event\":%d}", h->event);
  struct up_call call = {.service = UP_NOWCERTS,
                         .method = "POST",
                         .path = s->subscribe ? "/Zapier/Subscribe" : "/Zapier/Unsubscribe",
                         .body = body.p,
                         .body_len = body.len};
  if (rc != 0 || up_start(s->up, &call, NULL, on_done, s) != 0) {
    fprintf(stderr, "ncghl: cannot start a request to NowCerts (out of memory)\n");
    s->failed += s->ntodo - s->next;
    s->next = s->ntodo;
    event_base_loopbreak(s->base);
  }
  buf_free(&body);
}

/* Builds the work list. Returns 0, or the exit status to stop with. */
static int plan(struct sub *s, const char *public_url) {
  if (s->subscribe) {
    for (int i = 0; i < EVENT_COUNT; i++) {
      struct buf url;
      buf_init(&url, 0);
      buf_printf(&url, "%s" HOOK_PATH "%s", public_url, events[i].name);
      if (!url.p)
        return 1;
      if (known_find(s, events[i].event, url.p) >= 0) {
        printf("already    %-25s (event %2d) -> %s\n", events[i].name, events[i].event, url.p);
        s->done++;
      } else if (hook_set(&s->todo[s->ntodo++], events[i].name, events[i].event, url.p) != 0) {
        buf_free(&url);
        return 1;
      }
      buf_free(&url);
    }
    return 0;
  }
  if (s->nknown > 0) {
    for (int i = 0; i < s->nknown; i++)
      if (hook_set(&s->todo[s->ntodo++], s->known[i].name, s->known[i].event,
                   s->known[i].target_url) != 0)
        return 1;
    return 0;
  }
  if (!public_url) {
    printf("nothing to remove: no REST hooks were registered from %s and PUBLIC_URL is not set\n",
           s->cfg.store_label);
    return -1;
  }
  /* Nothing remembered (another store, or registered by hand): remove what
   * subscribe would have registered for this PUBLIC_URL. */
  printf("no REST hooks remembered in %s; removing those of %s\n", s->cfg.store_label, public_url);
  for (int i = 0; i < EVENT_COUNT; i++) {
    struct buf url;
    buf_init(&url, 0);
    buf_printf(&url, "%s" HOOK_PATH "%s", public_url, events[i].name);
    int rc = url.p ? hook_set(&s->todo[s->ntodo++], events[i].name, events[i].event, url.p) : -1;
    buf_free(&url);
    if (rc != 0)
      return 1;
  }
  return 0;
}

static char *trimmed_url(const char *u) {
  if (!u || !*u)
    return NULL;
  size_t n = strlen(u);
  while (n > 0 && u[n - 1] == '/')
    n--;
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, u, n);
    s[n] = '\0';
  }
  return s;
}

int subscribe_main(int argc, char **argv, bool subscribe) {
  const char *cmd = subscribe ? "subscribe" : "unsubscribe";
  const char *env_file = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--env") == 0 && i + 1 < argc) {
      env_file = argv[++i];
    } else {
      fprintf(stderr, "ncghl %s: unknown option '%s'\nusage: ncghl %s [--env FILE]\n", cmd, argv[i],
              cmd);
      return 2;
    }
  }
  struct sub *s = calloc(1, sizeof *s);
  if (!s)
    return 1;
  s->subscribe = subscribe;
  char err[512];
  if (config_load(&s->cfg, env_file, false, err, sizeof err) != 0) {
    fprintf(stderr, "ncghl: configuration error: %s\n", err);
    free(s);
    return 1;
  }
  log_set_format(s->cfg.log_json);
  log_set_pii(s->cfg.log_pii);
  if (log_init(s->cfg.log_level, s->cfg.log_file) != 0) {
    fprintf(stderr, "ncghl: configuration error: LOG_FILE: cannot open %s\n", s->cfg.log_file);
    config_free(&s->cfg);
    free(s);
    return 1;
  }
  int rc = 1;
  char *public_url = trimmed_url(s->cfg.public_url);
  if (subscribe && !public_url) {
    fprintf(stderr, "ncghl subscribe: PUBLIC_URL is not set: it is the address where NowCerts can "
                    "reach this service (e.g. https://sync.example.com); NowCerts will POST to "
                    "PUBLIC_URL" HOOK_PATH "<EventName>\n");
    goto out;
  }
  if (!s->cfg.nowcerts_username || !*s->cfg.nowcerts_username || !s->cfg.nowcerts_password ||
      !*s->cfg.nowcerts_password) {
    fprintf(stderr, "ncghl %s: NOWCERTS_USERNAME and NOWCERTS_PASSWORD must be set\n", cmd);
    goto out;
  }
  signal(SIGPIPE, SIG_IGN);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "ncghl %s: cannot initialise libcurl\n", cmd);
    goto out;
  }
  s->store = store_open(config_store(&s->cfg), err, sizeof err);
  s->base = s->store ? event_base_new() : NULL;
  s->http = s->base ? httpc_new(s->base, 1024 * 1024) : NULL;
  s->up = s->http ? up_new(s->base, &s->cfg, s->http) : NULL;
  if (!s->store) {
    fprintf(stderr, "ncghl %s: %s: cannot open the store %s: %s\n", cmd, config_store_var(&s->cfg),
            s->cfg.store_label, err);
  } else if (!s->up) {
    fprintf(stderr, "ncghl %s: cannot set up outbound HTTP\n", cmd);
  } else {
    known_load(s);
    int p = plan(s, public_url);
    if (p < 0) {
      rc = 0;
    } else if (p == 0) {
      start_next(s);
      if (s->next < s->ntodo)
        event_base_dispatch(s->base);
      if (subscribe)
        printf("%d of %d REST hooks registered with NowCerts for %s" HOOK_PATH "<EventName>\n",
               s->done, EVENT_COUNT, public_url);
      else
        printf("%d REST hooks removed from NowCerts\n", s->done);
      rc = s->failed ? 1 : 0;
    }
  }
  if (s->up)
    up_free(s->up);
  if (s->http)
    httpc_free(s->http);
  if (s->base)
    event_base_free(s->base);
  if (s->store)
    store_close(s->store);
  curl_global_cleanup();
out:
  for (int i = 0; i < MAX_HOOKS; i++) {
    hook_clear(&s->known[i]);
    hook_clear(&s->todo[i]);
  }
  free(public_url);
  config_free(&s->cfg);
  log_close();
  free(s);
  return rc;
}
