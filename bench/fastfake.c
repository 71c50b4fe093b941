/* A minimal, fast stand-in for GHL (and NowCerts' token endpoint) used only
 * by the benchmark: the Python fakes answer a few thousand requests a second,
 * which would measure the fakes, not ncghl. It answers every call the
 * contact sync makes (search, create, read, partial update, tags added and
 * removed), at once, after --latency-ms, or never (--hang, which stalls the
 * service's processing for the "intake with processing paused" row), and
 * counts them by route and by status so the bench can show that every event
 * was answered. It is not a test double: tests/fakes/ is, with all the quirks. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum route {
  R_SEARCH,
  R_CREATE,
  R_GET,
  R_UPDATE,
  R_TAGS_ADD,
  R_TAGS_REMOVE,
  R_NC_TOKEN,
  R_NC_LIST,
  R_UNKNOWN,
  R_COUNT
};

static const char *const route_names[R_COUNT] = {
    "search", "create", "get", "update", "tags_add", "tags_remove", "nc_token", "nc_list", "unknown",
};

struct fake {
  struct event_base *base;
  long latency_ms;
  bool hang;
  unsigned long requests;
  unsigned long routes[R_COUNT];
  unsigned long s2xx, s4xx;
  unsigned long held; /* --hang: requests never answered */
};

struct delayed {
  struct evhttp_request *req;
  int code;
  char body[256];
  struct event *timer;
};

static void reply(struct evhttp_request *req, int code, const char *body) {
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
  evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
  evhttp_send_reply(req, code, NULL, NULL);
}

static void on_delay(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct delayed *d = arg;
  reply(d->req, d->code, d->body);
  event_free(d->timer);
  free(d);
}

static void answer(struct fake *f, struct evhttp_request *req, int code, const char *body) {
  if (code < 300)
    f->s2xx++;
  else
    f->s4xx++;
  if (f->hang) {
    /* Left open: the client's own timeout is the only way out. */
    f->held++;
    return;
  }
  if (f->latency_ms <= 0) {
    reply(req, code, body);
    return;
  }
  struct delayed *d = calloc(1, sizeof *d);
  if (!d) {
    reply(req, 503, "{\"message\":\"fake out of memory\"}");
    return;
  }
  d->req = req;
  d->code = code;
  snprintf(d->body, sizeof d->body, "%s", body);
  d->timer = evtimer_new(f->base, on_delay, d);
  struct timeval tv = {f->latency_ms / 1000, (f->latency_ms % 1000) * 1000};
  evtimer_add(d->timer, &tv);
}

/* "/contacts/{id}" or "/contacts/{id}/tags": copies the id (up to 63
 * characters, no query) and says whether /tags follows it. */
static bool contact_path(const char *uri, char *id, size_t idlen, bool *tags) {
  id[0] = '\0';
  *tags = false;
  if (strncmp(uri, "/contacts/", 10) != 0)
    return false;
  const char *p = uri + 10;
  size_t n = strcspn(p, "/?");
  if (n == 0 || n >= idlen)
    return false;
  memcpy(id, p, n);
  id[n] = '\0';
  if (strcmp(id, "search") == 0) {
    id[0] = '\0';
    return false;
  }
  *tags = strncmp(p + n, "/tags", 5) == 0;
  return true;
}

static void stats(struct fake *f, struct evhttp_request *req) {
  char body[512];
  int n = snprintf(body, sizeof body, "{\"requests\":%lu,\"2xx\":%lu,\"4xx\":%lu,\"held\":%lu",
                   f->requests, f->s2xx, f->s4xx, f->held);
  for (int i = 0; i < R_COUNT && n > 0 && (size_t)n < sizeof body; i++)
    n += snprintf(body + n, sizeof body - (size_t)n, ",\"%s\":%lu", route_names[i], f->routes[i]);
  if (n > 0 && (size_t)n < sizeof body - 1)
    snprintf(body + n, sizeof body - (size_t)n, "}");
  reply(req, 200, body);
}

static void on_request(struct evhttp_request *req, void *arg) {
  struct fake *f = arg;
  const char *uri = evhttp_request_get_uri(req);
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  char body[256], id[64] = "";
  bool tags = false;
  if (strncmp(uri, "/_stats", 7) == 0) {
    stats(f, req);
    return;
  }
  f->requests++;
  if (cmd == EVHTTP_REQ_POST && strncmp(uri, "/contacts/search", 16) == 0) {
    /* Every bench person is new (unique e-mail and phone): nobody matches. */
    f->routes[R_SEARCH]++;
    answer(f, req, 200, "{\"contacts\":[],\"total\":0}");
  } else if (cmd == EVHTTP_REQ_POST && (strcmp(uri, "/contacts/") == 0 || strcmp(uri, "/contacts") == 0)) {
    f->routes[R_CREATE]++;
    snprintf(body, sizeof body, "{\"contact\":{\"id\":\"bench%08lu\"}}", f->routes[R_CREATE]);
    answer(f, req, 201, body);
  } else if (contact_path(uri, id, sizeof id, &tags) && tags && cmd == EVHTTP_REQ_POST) {
    f->routes[R_TAGS_ADD]++;
    answer(f, req, 201, "{\"tags\":[]}");
  } else if (tags && cmd == EVHTTP_REQ_DELETE) {
    f->routes[R_TAGS_REMOVE]++;
    answer(f, req, 200, "{\"tags\":[]}");
  } else if (!tags && id[0] && cmd == EVHTTP_REQ_GET) {
    f->routes[R_GET]++;
    snprintf(body, sizeof body, "{\"contact\":{\"id\":\"%s\",\"tags\":[]}}", id);
    answer(f, req, 200, body);
  } else if (!tags && id[0] && cmd == EVHTTP_REQ_PUT) {
    f->routes[R_UPDATE]++;
    snprintf(body, sizeof body, "{\"succeded\":true,\"contact\":{\"id\":\"%s\"}}", id);
    answer(f, req, 200, body);
  } else if (cmd == EVHTTP_REQ_POST && strstr(uri, "/token")) {
    f->routes[R_NC_TOKEN]++;
    answer(f, req, 200,
           "{\"access_token\":\"bench-access-token\",\"token_type\":\"bearer\",\"expires_in\":86400,"
           "\"refresh_token\":\"bench-refresh-token\",\"userId\":\"bench-user\"}");
  } else if (cmd == EVHTTP_REQ_GET && (strstr(uri, "/InsuredDetailList?") ||
                                       strstr(uri, "/PolicyDetailList?") ||
                                       strstr(uri, "/DeletedInsuredList?"))) {
    /* A poller's page (bench/tenants.sh: 500 pollers): nothing changed. */
    f->routes[R_NC_LIST]++;
    answer(f, req, 200, "{\"@odata.count\":0,\"value\":[]}");
  } else {
    f->routes[R_UNKNOWN]++;
    fprintf(stderr, "fastfake: not answered: %d %s\n", (int)cmd, uri);
    answer(f, req, 404, "{\"statusCode\":404,\"message\":\"not in the bench fake\"}");
  }
}

int main(int argc, char **argv) {
  int port = 9202;
  struct fake f = {0};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
      port = atoi(argv[++i]);
    else if (strcmp(argv[i], "--latency-ms") == 0 && i + 1 < argc)
      f.latency_ms = atol(argv[++i]);
    else if (strcmp(argv[i], "--hang") == 0)
      f.hang = true;
    else {
      fprintf(stderr, "usage: %s [--port N] [--latency-ms N] [--hang]\n", argv[0]);
      return 2;
    }
  }
  signal(SIGPIPE, SIG_IGN);
  f.base = event_base_new();
  struct evhttp *http = evhttp_new(f.base);
  evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                       EVHTTP_REQ_DELETE);
  evhttp_set_gencb(http, on_request, &f);
  if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)port) != 0) {
    fprintf(stderr, "fastfake: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  printf("READY ghl=%d\n", port);
  fflush(stdout);
  event_base_dispatch(f.base);
  return 0;
}
