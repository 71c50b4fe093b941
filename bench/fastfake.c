/* A minimal, fast stand-in for GHL (and NowCerts' token endpoint) used only
 * by the benchmark: the Python fakes answer a few thousand requests a second,
 * which would measure the fakes, not ncghl. It answers the calls the default
 * contact mapping makes, at once or after --latency-ms, and counts them.
 * It is not a test double: tests/fakes/ is, with all the quirks. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fake {
  struct event_base *base;
  long latency_ms;
  unsigned long requests, creates, searches;
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
  if (f->latency_ms <= 0) {
    reply(req, code, body);
    return;
  }
  struct delayed *d = calloc(1, sizeof *d);
  d->req = req;
  d->code = code;
  snprintf(d->body, sizeof d->body, "%s", body);
  d->timer = evtimer_new(f->base, on_delay, d);
  struct timeval tv = {f->latency_ms / 1000, (f->latency_ms % 1000) * 1000};
  evtimer_add(d->timer, &tv);
}

static void on_request(struct evhttp_request *req, void *arg) {
  struct fake *f = arg;
  const char *uri = evhttp_request_get_uri(req);
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  char body[256];
  if (strncmp(uri, "/_stats", 7) == 0) {
    snprintf(body, sizeof body, "{\"requests\":%lu,\"creates\":%lu,\"searches\":%lu}", f->requests,
             f->creates, f->searches);
    reply(req, 200, body);
    return;
  }
  f->requests++;
  if (cmd == EVHTTP_REQ_POST && strncmp(uri, "/contacts/search", 16) == 0) {
    f->searches++;
    answer(f, req, 200, "{\"contacts\":[],\"total\":0}");
  } else if (cmd == EVHTTP_REQ_POST && strncmp(uri, "/contacts", 9) == 0) {
    f->creates++;
    snprintf(body, sizeof body, "{\"contact\":{\"id\":\"bench%08lu\"}}", f->creates);
    answer(f, req, 201, body);
  } else if (cmd == EVHTTP_REQ_PUT && strncmp(uri, "/contacts/", 10) == 0) {
    answer(f, req, 200, "{\"succeded\":true,\"contact\":{}}");
  } else if (cmd == EVHTTP_REQ_POST && strstr(uri, "/token")) {
    answer(f, req, 200,
           "{\"access_token\":\"bench-access-token\",\"token_type\":\"bearer\",\"expires_in\":86400,"
           "\"refresh_token\":\"bench-refresh-token\",\"userId\":\"bench-user\"}");
  } else {
    answer(f, req, 404, "{\"statusCode\":404,\"message\":\"not in the bench fake\"}");
  }
}

int main(int argc, char **argv) {
  int port = 9202;
  struct fake f = {0};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--port") == 0)
      port = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--latency-ms") == 0)
      f.latency_ms = atol(argv[i + 1]);
  }
  signal(SIGPIPE, SIG_IGN);
  f.base = event_base_new();
  struct evhttp *http = evhttp_new(f.base);
  evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT);
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
