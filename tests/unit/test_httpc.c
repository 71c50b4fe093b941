/* Unit tests for httpc.c and upstream.c against a tiny evhttp server that
 * runs in the same event loop: GET and POST, header parsing, transport
 * errors, 50 concurrent requests, re-entrant and freeing callbacks; then
 * upstream's headers, retries, NowCerts' token and "status":0 handling. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "config.h"
#include "httpc.h"
#include "log.h"
#include "upstream.h"

/* ---- the test server ------------------------------------------------------------ */

struct srv {
  struct event_base *base;
  struct evhttp *http;
  int port;
  int hits;            /* every request */
  int fail_hits;       /* /ghl/fail503 */
  int flaky_left;      /* /ghl/flaky answers 503 while > 0 */
  int nc_logins, nc_refreshes;
  int nc_seq;
  char nc_token[64];   /* the NowCerts access token currently valid */
  char nc_refresh[64]; /* the latest NowCerts refresh token */
  char last_auth[128];
  char last_version[64];
  char last_ctype[128];
  int last_peer_port;  /* the client's port: tells whether a connection was reused */
  int held, held_max;  /* /hold: requests held open now, and at most */
};

/* /hold answers after 50 ms, so requests sent together overlap. */
struct held_req {
  struct srv *s;
  struct evhttp_request *req;
};

static void reply(struct evhttp_request *req, int code, const char *body);

static void on_hold_done(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  struct held_req *h = arg;
  h->s->held--;
  reply(h->req, 200, "held");
  free(h);
}

static void reply(struct evhttp_request *req, int code, const char *body) {
  struct evbuffer *b = evbuffer_new();
  evbuffer_add(b, body, strlen(body));
  evhttp_send_reply(req, code, code == 200 ? "OK" : "Status", b);
  evbuffer_free(b);
}

static void header(struct evhttp_request *req, const char *name, const char *value) {
  evhttp_add_header(evhttp_request_get_output_headers(req), name, value);
}

static char *body_of(struct evhttp_request *req) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  char *s = malloc(n + 1);
  evbuffer_copyout(in, s, n);
  s[n] = '\0';
  return s;
}

static const char *in_header(struct evhttp_request *req, const char *name) {
  const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
  return v ? v : "";
}

static void nc_token(struct srv *s, struct evhttp_request *req) {
  char *body = body_of(req);
  struct evkeyvalq kv;
  evhttp_parse_query_str(body, &kv);
  const char *grant = evhttp_find_header(&kv, "grant_type");
  const char *client = evhttp_find_header(&kv, "client_id");
  bool ok = false;
  if (grant && client && strcmp(client, "ngAuthApp") == 0) {
    if (strcmp(grant, "password") == 0) {
      const char *u = evhttp_find_header(&kv, "username");
      const char *p = evhttp_find_header(&kv, "password");
      ok = u && p && strcmp(u, "agent@example.com") == 0 && strcmp(p, "pa ss&word") == 0;
      s->nc_logins += ok;
    } else if (strcmp(grant, "refresh_token") == 0) {
      const char *r = evhttp_find_header(&kv, "refresh_token");
      ok = r && strcmp(r, s->nc_refresh) == 0;
      s->nc_refreshes += ok;
    }
  }
  evhttp_clear_headers(&kv);
  free(body);
  if (!ok) {
    reply(req, 400, "{\"error\":\"invalid_grant\",\"error_description\":\"bad credentials\"}");
    return;
  }
  s->nc_seq++;
  snprintf(s->nc_token, sizeof s->nc_token, "nc-access-%d", s->nc_seq);
  snprintf(s->nc_refresh, sizeof s->nc_refresh, "nc-refresh-%d", s->nc_seq);
  char out[512];
  snprintf(out, sizeof out,
           "{\"access_token\":\"%s\",\"token_type\":\"bearer\",\"expires_in\":86400,"
           "\"refresh_token\":\"%s\",\"userId\":\"user-guid-1\"}",
           s->nc_token, s->nc_refresh);
  reply(req, 200, out);
}

static void on_request(struct evhttp_request *req, void *arg) {
  struct srv *s = arg;
  s->hits++;
  char *peer_addr = NULL;
  ev_uint16_t peer_port = 0;
  evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer_addr, &peer_port);
  s->last_peer_port = peer_port;
  const char *uri = evhttp_request_get_uri(req);
  char path[256];
  snprintf(path, sizeof path, "%s", uri);
  char *q = strchr(path, '?');
  if (q)
    *q = '\0';
  snprintf(s->last_auth, sizeof s->last_auth, "%s", in_header(req, "Authorization"));
  snprintf(s->last_version, sizeof s->last_version, "%s", in_header(req, "Version"));
  snprintf(s->last_ctype, sizeof s->last_ctype, "%s", in_header(req, "Content-Type"));

  if (strcmp(path, "/hold") == 0) {
    struct held_req *h = malloc(sizeof *h);
    h->s = s;
    h->req = req;
    if (++s->held > s->held_max)
      s->held_max = s->held;
    struct timeval tv = {0, 50 * 1000};
    event_base_once(s->base, -1, EV_TIMEOUT, on_hold_done, h, &tv);
    return;
  }
  if (strcmp(path, "/get") == 0) {
    const char *i = q ? q + 1 : "";
    char out[128];
    snprintf(out, sizeof out, "hello %s", i);
    reply(req, 200, out);
  } else if (strcmp(path, "/echo") == 0) {
    char *body = body_of(req);
    struct buf_out {
      char s[4096];
    } *o = malloc(sizeof *o);
    const char *m = "?";
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: m = "GET"; break;
    case EVHTTP_REQ_POST: m = "POST"; break;
    case EVHTTP_REQ_PUT: m = "PUT"; break;
    case EVHTTP_REQ_DELETE: m = "DELETE"; break;
    default: break;
    }
    snprintf(o->s, sizeof o->s, "%s|%s|%s", m, in_header(req, "X-Test"), body);
    reply(req, 200, o->s);
    free(o);
    free(body);
  } else if (strcmp(path, "/headers") == 0) {
    header(req, "retry-after", "7");
    header(req, "X-RATELIMIT-REMAINING", "5");
    header(req, "x-ratelimit-max", "100");
    header(req, "X-RateLimit-Interval-Milliseconds", "10000");
    reply(req, 429, "{\"message\":\"slow down\"}");
  } else if (strcmp(path, "/date") == 0) {
    char date[64];
    time_t t = time(NULL) + 120;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    header(req, "Retry-After", date);
    reply(req, 503, "busy");
  } else if (strcmp(path, "/big") == 0) {
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    reply(req, 200, big);
  } else if (strcmp(path, "/hang") == 0 || strcmp(path, "/ghl/hang") == 0) {
    /* Never answered: the client's time-out ends it. */
  } else if (strncmp(path, "/ghl/", 5) == 0) {
    if (strcmp(s->last_auth, "Bearer pit-test-token") != 0) {
      reply(req, 401, "{\"statusCode\":401,\"message\":\"Invalid token\"}");
      return;
    }
    if (strcmp(s->last_version, "2021-07-28") != 0) {
      reply(req, 400, "{\"statusCode\":400,\"message\":\"version header missing\"}");
      return;
    }
    if (strcmp(path, "/ghl/contacts/") == 0) {
      char *body = body_of(req);
      reply(req, 201, body);
      free(body);
    } else if (strcmp(path, "/ghl/fail503") == 0) {
      s->fail_hits++;
      header(req, "Retry-After", "0");
      reply(req, 503, "{\"message\":\"down\nfor maintenance\"}");
    } else if (strcmp(path, "/ghl/flaky") == 0) {
      if (s->flaky_left > 0) {
        s->flaky_left--;
        reply(req, 502, "bad gateway");
      } else {
        reply(req, 200, "{\"ok\":true}");
      }
    } else if (strcmp(path, "/ghl/bad") == 0) {
      reply(req, 422, "{\"statusCode\":422,\"message\":[\"property gender should not exist\"]}");
    } else {
      reply(req, 404, "{}");
    }
  } else if (strcmp(path, "/nc/token") == 0) {
    nc_token(s, req);
  } else if (strncmp(path, "/nc/", 4) == 0) {
    char want[128];
    snprintf(want, sizeof want, "Bearer %s", s->nc_token);
    if (!s->nc_token[0] || strcmp(s->last_auth, want) != 0) {
      reply(req, 401, "{\"message\":\"Authorization has been denied for this request.\"}");
      return;
    }
    if (strcmp(path, "/nc/Insured/Insert") == 0)
      reply(req, 200, "{\"status\":0,\"message\":\"At least CommercialName or FirstName and "
                      "LastName or Id should be entered\"}");
    else
      reply(req, 200, "{\"status\":1,\"value\":[]}");
  } else {
    reply(req, 404, "{}");
  }
}

static int bound_port(int fd) {
  struct sockaddr_in a;
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  return ntohs(a.sin_port);
}

/* A port where nothing listens: bound once, then closed. */
static int dead_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, (struct sockaddr *)&a, sizeof a);
  int port = bound_port(fd);
  close(fd);
  return port;
}

struct fixture {
  struct srv srv;
  struct event_base *base;
  struct httpc *h;
  struct event *guard;
  bool hung;
};

static void on_guard(evutil_socket_t fd, short what, void *arg) {
  struct fixture *f = arg;
  f->hung = true;
  event_base_loopbreak(f->base);
}

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof *f);
  /* Configured as the service's loop is (main.c): epoll changes batched. */
  struct event_config *c = event_config_new();
  event_config_set_flag(c, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  f->base = event_base_new_with_config(c);
  event_config_free(c);
  assert_non_null(f->base);
  f->srv.base = f->base;
  f->srv.http = evhttp_new(f->base);
  struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(f->srv.http, "127.0.0.1", 0);
  assert_non_null(bs);
  f->srv.port = bound_port(evhttp_bound_socket_get_fd(bs));
  evhttp_set_gencb(f->srv.http, on_request, &f->srv);
  f->h = httpc_new(f->base, 1000);
  assert_non_null(f->h);
  f->guard = evtimer_new(f->base, on_guard, f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  if (f->h)
    httpc_free(f->h);
  event_free(f->guard);
  evhttp_free(f->srv.http);
  event_base_free(f->base);
  free(f);
  return 0;
}

/* Runs the loop until *done reaches want. The guard only catches a hang;
 * no test depends on how fast anything is. */
static void run_until(struct fixture *f, const int *done, int want) {
  struct timeval tv = {10, 0};
  evtimer_add(f->guard, &tv);
  while (*done < want && !f->hung)
    event_base_loop(f->base, EVLOOP_ONCE);
  evtimer_del(f->guard);
  assert_false(f->hung);
}

static void url(struct fixture *f, char *out, size_t n, const char *path) {
  snprintf(out, n, "http://127.0.0.1:%d%s", f->srv.port, path);
}

/* ---- httpc ------------------------------------------------------------------------ */

struct result {
  int calls;
  int status;
  char body[4096];
  char error[256];
  bool timed_out;
  double retry_after;
  long rl_remaining, rl_max, rl_interval;
  bool called_inside_send;
  int *done;
};

static bool in_send;

static void on_resp(void *ud, const struct httpc_response *r) {
  struct result *x = ud;
  x->calls++;
  x->called_inside_send |= in_send;
  x->status = r->status;
  snprintf(x->body, sizeof x->body, "%s", r->body);
  snprintf(x->error, sizeof x->error, "%s", r->error ? r->error : "");
  x->timed_out = r->timed_out;
  x->retry_after = r->retry_after;
  x->rl_remaining = r->ratelimit_remaining;
  x->rl_max = r->ratelimit_max;
  x->rl_interval = r->ratelimit_interval_ms;
  if (x->done)
    (*x->done)++;
}

static int hsend(struct fixture *f, const char *method, const char *path, const char *body,
                const char *const *headers, long timeout_ms, struct result *x) {
  char u[256];
  url(f, u, sizeof u, path);
  struct httpc_request req = {.method = method, .url = u, .headers = headers, .body = body,
                              .body_len = body ? strlen(body) : 0, .timeout_ms = timeout_ms};
  in_send = true;
  int rc = httpc_send(f->h, &req, on_resp, x);
  in_send = false;
  return rc;
}

static void test_get(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result x = {.done = &done};
  assert_int_equal(hsend(f, "GET", "/get?7", NULL, NULL, 5000, &x), 0);
  assert_int_equal(httpc_active(f->h), 1);
  run_until(f, &done, 1);
  assert_int_equal(x.calls, 1);
  assert_false(x.called_inside_send);
  assert_int_equal(x.status, 200);
  assert_string_equal(x.body, "hello 7");
  assert_string_equal(x.error, "");
  assert_true(x.retry_after < 0);
  assert_int_equal(x.rl_remaining, -1);
  assert_int_equal(httpc_active(f->h), 0);

  /* The next request rides the same kept-alive connection. */
  int first_port = f->srv.last_peer_port;
  struct result y = {.done = &done};
  assert_int_equal(hsend(f, "GET", "/get?8", NULL, NULL, 5000, &y), 0);
  run_until(f, &done, 2);
  assert_string_equal(y.body, "hello 8");
  assert_int_equal(f->srv.last_peer_port, first_port);
}

static void test_post_body_and_headers(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result a = {.done = &done}, b = {.done = &done}, c = {.done = &done};
  const char *hdrs[] = {"X-Test: yes", "Content-Type: application/json", NULL};
  /* The body is copied: the caller's buffer may go away at once. */
  char *body = strdup("{\"firstName\":\"Ana\"}");
  assert_int_equal(hsend(f, "POST", "/echo", body, hdrs, 5000, &a), 0);
  memset(body, 'Z', strlen(body));
  free(body);
  assert_int_equal(hsend(f, "PUT", "/echo", "put-body", hdrs, 5000, &b), 0);
  assert_int_equal(hsend(f, "DELETE", "/echo", NULL, NULL, 5000, &c), 0);
  run_until(f, &done, 3);
  assert_string_equal(a.body, "POST|yes|{\"firstName\":\"Ana\"}");
  assert_string_equal(b.body, "PUT|yes|put-body");
  assert_string_equal(c.body, "DELETE||");
  assert_string_equal(f->srv.last_ctype, "");
}

/* Requests one after another reuse the same pooled easy handle: none may
 * carry the previous one's method, header or body. */
static void test_reused_handle_carries_nothing_over(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result a = {.done = &done}, b = {.done = &done}, c = {.done = &done},
                d = {.done = &done};
  const char *hdrs[] = {"X-Test: first", "Content-Type: application/json", NULL};
  assert_int_equal(hsend(f, "POST", "/echo", "first-body", hdrs, 5000, &a), 0);
  run_until(f, &done, 1);
  assert_string_equal(a.body, "POST|first|first-body");
  assert_string_equal(f->srv.last_ctype, "application/json");

  assert_int_equal(hsend(f, "DELETE", "/echo", NULL, NULL, 5000, &b), 0);
  run_until(f, &done, 2);
  assert_string_equal(b.body, "DELETE||");
  assert_string_equal(f->srv.last_ctype, "");

  assert_int_equal(hsend(f, "PUT", "/echo", "third", NULL, 5000, &c), 0);
  run_until(f, &done, 3);
  assert_string_equal(c.body, "PUT||third");

  assert_int_equal(hsend(f, "GET", "/echo", NULL, NULL, 5000, &d), 0);
  run_until(f, &done, 4);
  assert_int_equal(d.status, 200);
  assert_string_equal(d.body, "GET||");
  assert_string_equal(f->srv.last_ctype, "");
}

/* Header lists are kept for the next request with the same headers: every
 * request must still carry exactly its own, whether its list is a kept one,
 * a new one replacing the oldest, or (more distinct sets in flight at once
 * than are kept) one of its own. */
static void test_header_lists_follow_the_headers_sent(void **state) {
  struct fixture *f = *state;
  int done = 0, want_done = 0;
  static const char *const one[] = {"X-Test: one", NULL};
  static const char *const two[] = {"X-Test: two", "Accept: application/json", NULL};
  const char *const *seq[] = {one, two, one, NULL, two, one};
  const char *want[] = {"POST|one|b", "POST|two|b", "POST|one|b",
                        "POST||b",    "POST|two|b", "POST|one|b"};
  for (int i = 0; i < 6; i++) {
    struct result x = {.done = &done};
    assert_int_equal(hsend(f, "POST", "/echo", "b", seq[i], 5000, &x), 0);
    run_until(f, &done, ++want_done);
    assert_string_equal(x.body, want[i]);
  }
  /* Thirty distinct sets at once (more than are kept), then thirty more one
   * after another, each evicting the oldest. */
  enum { N = 30 };
  struct result *x = calloc(N, sizeof *x);
  char val[N][32];
  const char *hdrs[N][2];
  for (int round = 0; round < 2; round++) {
    for (int i = 0; i < N; i++) {
      snprintf(val[i], sizeof val[i], "X-Test: r%d-%d", round, i);
      hdrs[i][0] = val[i];
      hdrs[i][1] = NULL;
      memset(&x[i], 0, sizeof x[i]);
      x[i].done = &done;
      assert_int_equal(hsend(f, "POST", "/echo", "b", hdrs[i], 5000, &x[i]), 0);
      if (round == 1)
        run_until(f, &done, ++want_done);
    }
    if (round == 0)
      run_until(f, &done, want_done += N);
    for (int i = 0; i < N; i++) {
      char w[64];
      snprintf(w, sizeof w, "POST|r%d-%d|b", round, i);
      assert_string_equal(x[i].body, w);
    }
  }
  free(x);
}

static void test_retry_after_and_ratelimit_headers(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result a = {.done = &done}, b = {.done = &done};
  hsend(f, "GET", "/headers", NULL, NULL, 5000, &a);
  hsend(f, "GET", "/date", NULL, NULL, 5000, &b);
  run_until(f, &done, 2);
  assert_int_equal(a.status, 429);
  assert_true(a.retry_after == 7.0);
  assert_int_equal(a.rl_remaining, 5);
  assert_int_equal(a.rl_max, 100);
  assert_int_equal(a.rl_interval, 10000);
  assert_string_equal(a.body, "{\"message\":\"slow down\"}");
  assert_int_equal(b.status, 503);
  /* An HTTP date 120 s ahead (second granularity on both ends). */
  assert_true(b.retry_after >= 115 && b.retry_after <= 121);
}

static void test_connection_refused(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result x = {.done = &done};
  char u[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/", dead_port());
  struct httpc_request req = {.method = "GET", .url = u, .timeout_ms = 5000};
  in_send = true;
  assert_int_equal(httpc_send(f->h, &req, on_resp, &x), 0);
  in_send = false;
  assert_int_equal(x.calls, 0);
  run_until(f, &done, 1);
  assert_false(x.called_inside_send);
  assert_int_equal(x.status, 0);
  assert_false(x.timed_out);
  assert_true(strlen(x.error) > 0);
  assert_string_equal(x.body, "");

  /* A scheme curl will not speak fails through the loop as well. */
  struct result y = {.done = &done};
  struct httpc_request bad = {.method = "GET", .url = "ftp://127.0.0.1/x", .timeout_ms = 5000};
  in_send = true;
  int rc = httpc_send(f->h, &bad, on_resp, &y);
  in_send = false;
  if (rc == 0) {
    run_until(f, &done, 2);
    assert_false(y.called_inside_send);
    assert_int_equal(y.status, 0);
  }
}

static void test_timeout_and_body_limit(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result a = {.done = &done}, b = {.done = &done};
  hsend(f, "GET", "/hang", NULL, NULL, 150, &a);
  hsend(f, "GET", "/big", NULL, NULL, 5000, &b);
  run_until(f, &done, 2);
  assert_int_equal(a.status, 0);
  assert_true(a.timed_out);
  assert_int_equal(b.status, 0);
  assert_false(b.timed_out);
  assert_non_null(strstr(b.error, "larger than 1000 bytes"));
  assert_string_equal(b.body, "");
}

static void test_fifty_concurrent(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct result *x = calloc(50, sizeof *x);
  for (int i = 0; i < 50; i++) {
    char p[32];
    snprintf(p, sizeof p, "/get?%d", i);
    x[i].done = &done;
    assert_int_equal(hsend(f, "GET", p, NULL, NULL, 5000, &x[i]), 0);
  }
  assert_int_equal(httpc_active(f->h), 50);
  run_until(f, &done, 50);
  for (int i = 0; i < 50; i++) {
    char want[32];
    snprintf(want, sizeof want, "hello %d", i);
    assert_int_equal(x[i].calls, 1);
    assert_int_equal(x[i].status, 200);
    assert_string_equal(x[i].body, want);
  }
  assert_int_equal(httpc_active(f->h), 0);
  assert_int_equal(f->srv.hits, 50);
  free(x);
}

/* Connections to one host stop at the number set: the other requests wait
 * in curl's queue for one to free, and every one is answered. */
static void test_host_connections_bound_what_is_in_flight(void **state) {
  struct fixture *f = *state;
  httpc_set_host_connections(f->h, 3);
  int done = 0;
  struct result *x = calloc(9, sizeof *x);
  for (int i = 0; i < 9; i++) {
    x[i].done = &done;
    assert_int_equal(hsend(f, "GET", "/hold", NULL, NULL, 5000, &x[i]), 0);
  }
  run_until(f, &done, 9);
  for (int i = 0; i < 9; i++)
    assert_int_equal(x[i].status, 200);
  assert_int_equal(f->srv.held_max, 3);

  /* More allowed: the nine overlap. */
  httpc_set_host_connections(f->h, 16);
  done = 0;
  f->srv.held_max = 0;
  memset(x, 0, 9 * sizeof *x);
  for (int i = 0; i < 9; i++) {
    x[i].done = &done;
    assert_int_equal(hsend(f, "GET", "/hold", NULL, NULL, 5000, &x[i]), 0);
  }
  run_until(f, &done, 9);
  assert_int_equal(f->srv.held_max, 9);
  free(x);
}

/* A chain: each callback sends the next request and frees its own ud. */
struct chain {
  struct fixture *f;
  int left;
  int *done;
  int *statuses;
};

static void on_chain(void *ud, const struct httpc_response *r) {
  struct chain *c = ud;
  assert_false(in_send);
  c->statuses[c->left] = r->status;
  (*c->done)++;
  if (c->left > 0) {
    struct chain *next = malloc(sizeof *next);
    *next = *c;
    next->left--;
    char u[128];
    url(c->f, u, sizeof u, "/get?chain");
    struct httpc_request req = {.method = "GET", .url = u, .timeout_ms = 5000};
    in_send = true;
    assert_int_equal(httpc_send(c->f->h, &req, on_chain, next), 0);
    in_send = false;
  }
  free(c);
}

static void test_reentrant_callbacks(void **state) {
  struct fixture *f = *state;
  int done = 0;
  int statuses[4] = {0};
  struct chain *c = malloc(sizeof *c);
  *c = (struct chain){.f = f, .left = 3, .done = &done, .statuses = statuses};
  char u[128];
  url(f, u, sizeof u, "/get?chain");
  struct httpc_request req = {.method = "GET", .url = u, .timeout_ms = 5000};
  assert_int_equal(httpc_send(f->h, &req, on_chain, c), 0);
  run_until(f, &done, 4);
  for (int i = 0; i < 4; i++)
    assert_int_equal(statuses[i], 200);
  assert_int_equal(httpc_active(f->h), 0);
}

/* A call sent from the callback of the one before starts in the same loop
 * turn (curl's 0 ms timeout runs at once) on the connection just freed;
 * the time-out curl sets for it right after must still be kept. */
struct then_hang {
  struct fixture *f;
  struct result first, second;
  int first_port;
  int *done;
};

static void on_then_hang(void *ud, const struct httpc_response *r) {
  struct then_hang *t = ud;
  on_resp(&t->first, r);
  t->first_port = t->f->srv.last_peer_port;
  struct result *x = &t->second;
  x->done = t->done;
  assert_int_equal(hsend(t->f, "GET", "/hang", NULL, NULL, 150, x), 0);
}

static void test_a_call_sent_from_a_callback_keeps_its_timeout(void **state) {
  struct fixture *f = *state;
  int done = 0;
  struct then_hang t = {.f = f, .done = &done};
  char u[128];
  url(f, u, sizeof u, "/get?first");
  struct httpc_request req = {.method = "GET", .url = u, .timeout_ms = 5000};
  assert_int_equal(httpc_send(f->h, &req, on_then_hang, &t), 0);
  run_until(f, &done, 1);
  assert_int_equal(t.first.status, 200);
  assert_int_equal(t.second.calls, 1);
  assert_true(t.second.timed_out);
  assert_int_equal(t.second.status, 0);
  /* the hanging call went out on the first call's connection */
  assert_int_equal(f->srv.last_peer_port, t.first_port);
  assert_int_equal(httpc_active(f->h), 0);
}

static void free_httpc_cb(void *ud, const struct httpc_response *r) {
  struct fixture *f = ud;
  f->srv.fail_hits++; /* reused as a call counter */
  httpc_free(f->h);
  f->h = NULL;
}

static void test_free_in_flight_and_from_callback(void **state) {
  struct fixture *f = *state;
  /* Freed with requests in flight: nobody is called, nothing leaks. */
  int done = 0;
  struct result x = {.done = &done};
  hsend(f, "GET", "/hang", NULL, NULL, 5000, &x);
  hsend(f, "GET", "/get?1", NULL, NULL, 5000, &x);
  httpc_free(f->h);
  f->h = httpc_new(f->base, 1000);
  struct timeval tv = {0, 50000};
  event_base_loopexit(f->base, &tv);
  event_base_dispatch(f->base);
  assert_int_equal(x.calls, 0);

  /* Freed from inside a callback while others are pending. */
  char u[128];
  url(f, u, sizeof u, "/get?x");
  struct httpc_request req = {.method = "GET", .url = u, .timeout_ms = 5000};
  for (int i = 0; i < 5; i++)
    assert_int_equal(httpc_send(f->h, &req, free_httpc_cb, f), 0);
  f->srv.fail_hits = 0;
  run_until(f, &f->srv.fail_hits, 1);
  assert_null(f->h);
  tv.tv_usec = 50000;
  event_base_loopexit(f->base, &tv);
  event_base_dispatch(f->base);
  assert_int_equal(f->srv.fail_hits, 1);
}

/* ---- upstream ---------------------------------------------------------------------- */

struct ufix {
  struct fixture *f;
  struct config cfg;
  char nc_base[128], ghl_base[128];
  struct upstream *u;
};

struct uresult {
  int calls;
  bool ok, retryable;
  int status;
  char body[1024];
  char error[512];
  int attempts;
  int attempt_calls;
  int attempt_status[8];
  char attempt_url[256];
  int active_in_done;
  struct upstream *u;
  int *done;
};

static bool in_start;

static void on_attempt(void *ud, const struct up_attempt *a) {
  struct uresult *r = ud;
  if (r->attempt_calls < 8)
    r->attempt_status[r->attempt_calls] = a->status;
  r->attempt_calls++;
  snprintf(r->attempt_url, sizeof r->attempt_url, "%s", a->url);
}

static void on_done(void *ud, const struct up_result *res) {
  struct uresult *r = ud;
  assert_false(in_start);
  r->calls++;
  r->ok = res->ok;
  r->retryable = res->retryable;
  r->status = res->status;
  snprintf(r->body, sizeof r->body, "%s", res->body);
  snprintf(r->error, sizeof r->error, "%s", res->error ? res->error : "");
  r->attempts = res->attempts;
  r->active_in_done = up_active(r->u);
  (*r->done)++;
}

static void ufix_init(struct ufix *x, struct fixture *f, int nc_port, int ghl_port) {
  memset(x, 0, sizeof *x);
  x->f = f;
  snprintf(x->nc_base, sizeof x->nc_base, "http://127.0.0.1:%d/nc/", nc_port);
  snprintf(x->ghl_base, sizeof x->ghl_base, "http://127.0.0.1:%d/ghl", ghl_port);
  x->cfg.nowcerts_base_url = x->nc_base;
  x->cfg.nowcerts_username = "agent@example.com";
  x->cfg.nowcerts_password = "pa ss&word";
  x->cfg.ghl_base_url = x->ghl_base;
  x->cfg.ghl_api_key = "pit-test-token";
  x->cfg.max_retries = 3;
  x->cfg.retry_initial_delay = 0.001;
  x->cfg.retry_backoff_factor = 2.0;
  x->cfg.upstream_timeout = 5;
  x->cfg.token_refresh_margin = 300;
  x->cfg.ghl_rate_limit = 100;
  x->u = up_new(f->base, &x->cfg, f->h);
  assert_non_null(x->u);
}

static int start(struct ufix *x, enum up_service svc, const char *method, const char *path,
                 const char *body, struct uresult *r) {
  struct up_call c = {.service = svc, .method = method, .path = path, .body = body,
                      .body_len = body ? strlen(body) : 0};
  r->u = x->u;
  in_start = true;
  int rc = up_start(x->u, &c, on_attempt, on_done, r);
  in_start = false;
  return rc;
}

static void test_up_ghl_headers_and_body(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, f->srv.port);
  int done = 0;
  struct uresult r = {.done = &done};
  assert_int_equal(start(&x, UP_GHL, "POST", "/contacts/", "{\"email\":\"a@b.c\"}", &r), 0);
  assert_int_equal(up_active(x.u), 1);
  run_until(f, &done, 1);
  assert_true(r.ok);
  assert_int_equal(r.status, 201);
  assert_string_equal(r.body, "{\"email\":\"a@b.c\"}");
  assert_string_equal(r.error, "");
  assert_int_equal(r.attempts, 1);
  assert_int_equal(r.attempt_calls, 1);
  assert_int_equal(r.active_in_done, 0);
  assert_string_equal(f->srv.last_auth, "Bearer pit-test-token");
  assert_string_equal(f->srv.last_version, "2021-07-28");
  assert_string_equal(f->srv.last_ctype, "application/json");
  char want[256];
  snprintf(want, sizeof want, "http://127.0.0.1:%d/ghl/contacts/", f->srv.port);
  assert_string_equal(r.attempt_url, want);

  assert_int_equal(start(&x, UP_GHL, "GET", "no-slash", NULL, &r), -1);
  assert_int_equal(start(&x, (enum up_service)7, "GET", "/x", NULL, &r), -1);
  up_free(x.u);
}

static void test_up_retries(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, f->srv.port);
  int done = 0;
  struct uresult always = {.done = &done}, flaky = {.done = &done}, bad = {.done = &done};
  f->srv.flaky_left = 2;
  start(&x, UP_GHL, "GET", "/fail503", NULL, &always);
  start(&x, UP_GHL, "GET", "/flaky", NULL, &flaky);
  start(&x, UP_GHL, "PUT", "/bad", "{}", &bad);
  assert_int_equal(up_active(x.u), 3);
  run_until(f, &done, 3);

  /* 5xx: MAX_RETRIES retries, then a retryable failure. */
  assert_false(always.ok);
  assert_true(always.retryable);
  assert_int_equal(always.attempts, 4);
  assert_int_equal(always.attempt_calls, 4);
  assert_int_equal(f->srv.fail_hits, 4);
  assert_int_equal(always.status, 503);
  /* One line, the body's newline flattened. */
  assert_string_equal(always.error, "HTTP 503: {\"message\":\"down for maintenance\"}");

  assert_true(flaky.ok);
  assert_int_equal(flaky.attempts, 3);
  assert_int_equal(flaky.attempt_status[0], 502);
  assert_int_equal(flaky.attempt_status[2], 200);

  /* Other 4xx: never retried. */
  assert_false(bad.ok);
  assert_false(bad.retryable);
  assert_int_equal(bad.attempts, 1);
  assert_int_equal(bad.status, 422);
  assert_non_null(strstr(bad.error, "HTTP 422: {\"statusCode\":422"));
  assert_int_equal(up_active(x.u), 0);
  up_free(x.u);
}

static void test_up_no_answer(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, dead_port());
  int done = 0;
  struct uresult r = {.done = &done};
  start(&x, UP_GHL, "GET", "/contacts/abc", NULL, &r);
  run_until(f, &done, 1);
  assert_false(r.ok);
  assert_true(r.retryable);
  assert_int_equal(r.status, 0);
  assert_int_equal(r.attempts, 4);
  assert_non_null(strstr(r.error, "connection error: "));
  up_free(x.u);

  /* A time-out, no retries configured. */
  ufix_init(&x, f, f->srv.port, f->srv.port);
  up_free(x.u);
  x.cfg.upstream_timeout = 0.15;
  x.cfg.max_retries = 0;
  x.u = up_new(f->base, &x.cfg, f->h);
  struct uresult t = {.done = &done};
  start(&x, UP_GHL, "GET", "/hang", NULL, &t);
  run_until(f, &done, 2);
  assert_false(t.ok);
  assert_true(t.retryable);
  assert_int_equal(t.attempts, 1);
  assert_string_equal(t.error, "timeout after 0.15 s");
  up_free(x.u);
}

static void test_up_static_token_401_is_final(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, f->srv.port);
  up_free(x.u);
  x.cfg.ghl_api_key = "pit-wrong-token";
  x.u = up_new(f->base, &x.cfg, f->h);
  int done = 0;
  struct uresult r = {.done = &done};
  start(&x, UP_GHL, "GET", "/contacts/1", NULL, &r);
  run_until(f, &done, 1);
  assert_false(r.ok);
  assert_false(r.retryable);
  assert_int_equal(r.status, 401);
  assert_int_equal(r.attempts, 1);
  up_free(x.u);

  /* No GHL token at all: a clear, final error. */
  x.cfg.ghl_api_key = NULL;
  x.u = up_new(f->base, &x.cfg, f->h);
  struct uresult n = {.done = &done};
  start(&x, UP_GHL, "GET", "/contacts/1", NULL, &n);
  assert_int_equal(n.calls, 0);
  run_until(f, &done, 2);
  assert_false(n.ok);
  assert_false(n.retryable);
  assert_int_equal(n.attempts, 0);
  assert_non_null(strstr(n.error, "GHL_API_KEY"));
  up_free(x.u);
}

static void test_up_nowcerts_tokens(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, f->srv.port);
  assert_null(up_nowcerts_user_id(x.u));
  int done = 0;
  /* Five calls before any token: one login serves them all. */
  struct uresult r[5];
  for (int i = 0; i < 5; i++) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].done = &done;
    assert_int_equal(start(&x, UP_NOWCERTS, "GET", "/InsuredDetailList?$top=1", NULL, &r[i]), 0);
  }
  run_until(f, &done, 5);
  for (int i = 0; i < 5; i++) {
    assert_true(r[i].ok);
    assert_int_equal(r[i].attempts, 1);
  }
  assert_int_equal(f->srv.nc_logins, 1);
  assert_string_equal(f->srv.last_auth, "Bearer nc-access-1");
  assert_string_equal(up_nowcerts_user_id(x.u), "user-guid-1");

  /* The server forgets the token: 401, one refresh, one retry, success;
   * the retry is not taken from MAX_RETRIES. */
  strcpy(f->srv.nc_token, "revoked");
  struct uresult a = {.done = &done};
  start(&x, UP_NOWCERTS, "GET", "/PolicyDetailList", NULL, &a);
  run_until(f, &done, 6);
  assert_true(a.ok);
  assert_int_equal(a.attempts, 2);
  assert_int_equal(a.attempt_status[0], 401);
  assert_int_equal(a.attempt_status[1], 200);
  assert_int_equal(f->srv.nc_refreshes, 1);
  assert_int_equal(f->srv.nc_logins, 1);
  assert_string_equal(f->srv.last_auth, "Bearer nc-access-2");

  /* HTTP 200 with "status":0 is a failure, and final. */
  struct uresult s0 = {.done = &done};
  start(&x, UP_NOWCERTS, "POST", "/Insured/Insert", "{}", &s0);
  run_until(f, &done, 7);
  assert_false(s0.ok);
  assert_false(s0.retryable);
  assert_int_equal(s0.status, 200);
  assert_int_equal(s0.attempts, 1);
  assert_string_equal(s0.error, "status 0: At least CommercialName or FirstName and LastName "
                                "or Id should be entered");
  up_free(x.u);
}

static void test_up_bad_credentials(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, f->srv.port);
  up_free(x.u);
  x.cfg.nowcerts_password = "wrong";
  x.u = up_new(f->base, &x.cfg, f->h);
  int done = 0;
  struct uresult r = {.done = &done};
  start(&x, UP_NOWCERTS, "GET", "/InsuredDetailList", NULL, &r);
  run_until(f, &done, 1);
  assert_false(r.ok);
  assert_false(r.retryable);
  assert_int_equal(r.attempts, 0);
  assert_non_null(strstr(r.error, "token request: HTTP 400: bad credentials"));
  assert_null(strstr(r.error, "wrong"));
  up_free(x.u);
}

static void test_up_free_cancels_without_callback(void **state) {
  struct fixture *f = *state;
  struct ufix x;
  ufix_init(&x, f, f->srv.port, f->srv.port);
  int done = 0;
  struct uresult a = {.done = &done}, b = {.done = &done}, c = {.done = &done};
  x.cfg.retry_initial_delay = 5; /* not read again: up_new copied the policy */
  start(&x, UP_GHL, "GET", "/hang", NULL, &a);        /* in HTTP */
  start(&x, UP_NOWCERTS, "GET", "/x", NULL, &b);      /* waiting for a token */
  start(&x, UP_GHL, "GET", "/contacts/", NULL, &c);   /* in HTTP */
  assert_int_equal(up_active(x.u), 3);
  up_free(x.u);
  struct timeval tv = {0, 50000};
  event_base_loopexit(f->base, &tv);
  event_base_dispatch(f->base);
  assert_int_equal(done, 0);
  assert_int_equal(httpc_active(f->h), 0);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  log_init(LOGL_ERROR, NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_get, setup, teardown),
      cmocka_unit_test_setup_teardown(test_post_body_and_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reused_handle_carries_nothing_over, setup, teardown),
      cmocka_unit_test_setup_teardown(test_header_lists_follow_the_headers_sent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_retry_after_and_ratelimit_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout_and_body_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fifty_concurrent, setup, teardown),
      cmocka_unit_test_setup_teardown(test_host_connections_bound_what_is_in_flight, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reentrant_callbacks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_a_call_sent_from_a_callback_keeps_its_timeout, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_free_in_flight_and_from_callback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_ghl_headers_and_body, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_retries, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_no_answer, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_static_token_401_is_final, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_nowcerts_tokens, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_bad_credentials, setup, teardown),
      cmocka_unit_test_setup_teardown(test_up_free_cancels_without_callback, setup, teardown),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
