/* httpc: libcurl's multi interface on a libevent loop (see httpc.h).
 *
 * The mechanism is curl's "multi_socket" API as in its hiperfifo example:
 * curl tells us which sockets to watch (socket callback) and when to wake it
 * (timer callback); libevent tells curl when either happened
 * (curl_multi_socket_action); then finished transfers are drained with
 * curl_multi_info_read. One multi handle serves every request, so its
 * connection cache keeps upstream connections alive between calls.
 *
 * Callbacks to the caller are only made from the event handlers, after curl
 * has returned, from a list of finished requests held in the struct. So a
 * callback may start new requests, free its own user data, or even free the
 * whole httpc, and no callback ever runs inside httpc_send.
 *
 * curl_global_init is the program's job (main calls it once, before any
 * thread could exist); nothing here touches curl's global state. */
#include "httpc.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "pace.h"

/* Connections to one host at once, unless the service asks for more
 * (httpc_set_host_connections); the cache keeps twice that open. */
#define MAX_HOST_CONNECTIONS 64
/* Easy handles kept for reuse: curl_easy_reset is cheaper than init. */
#define EASY_POOL_MAX 32
/* Header lists kept for reuse: one per upstream and credential in use (a
 * token refresh makes a new one; the oldest unused goes). */
#define HLIST_MAX 8

/* A header list curl reads while transfers run, kept for the next request
 * with the same headers so that each request does not build and free it. */
struct hlist {
  struct hlist *next;
  struct curl_slist *list;
  char *key;            /* the headers, each followed by '\n' */
  size_t keylen;
  int users;            /* transfers using it now */
  unsigned long used;   /* h->hlist_uses when last taken */
  bool kept;            /* in h->hlists; else freed with its last user */
};

struct hreq {
  CURL *easy;
  struct hlist *headers;
  struct buf body;
  httpc_cb cb;
  void *ud;
  double started_ms;
  bool too_big;
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
  double retry_after;
  long rl_remaining, rl_max, rl_interval;
  int sends;       /* times curl was about to send it (on_prereq) */
  struct hreq *prev, *next; /* in flight, or finished and not yet called back */
};

struct hsock {
  struct httpc *h;
  curl_socket_t fd;
  struct event *ev;
  struct hsock *prev, *next;
};

struct httpc {
  struct event_base *base;
  CURLM *multi;
  struct event *timer;
  struct event *now; /* curl's 0 ms timeout: run in this loop turn */
  size_t max_body;
  struct hreq *running;  /* transfers curl is working on */
  struct hreq *finished; /* done, waiting for dispatch to call back */
  struct hreq *finished_tail;
  struct hsock *socks; /* sockets curl asked us to watch */
  int active;
  CURL *pool[EASY_POOL_MAX];
  int pooled;
  struct hlist *hlists;
  int nhlists;
  unsigned long hlist_uses;
  bool dispatching, dead;
  struct pace *pace; /* charged for the time of every callback; may be NULL */
};

static void list_remove(struct hreq **head, struct hreq *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    *head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->prev = r->next = NULL;
}

static void list_push(struct hreq **head, struct hreq *r) {
  r->prev = NULL;
  r->next = *head;
  if (*head)
    (*head)->prev = r;
  *head = r;
}

static void release_easy(struct httpc *h, CURL *easy) {
  if (!easy)
    return;
  if (h->pooled < EASY_POOL_MAX) {
    curl_easy_reset(easy);
    h->pool[h->pooled++] = easy;
  } else {
    curl_easy_cleanup(easy);
  }
}

static void hlist_free(struct hlist *l) {
  curl_slist_free_all(l->list);
  free(l->key);
  free(l);
}

/* Whether `hl` holds exactly these headers, in this order. */
static bool hlist_is(const struct hlist *l, const char *const *headers) {
  size_t at = 0;
  for (const char *const *p = headers; p && *p; p++) {
    size_t n = strlen(*p);
    if (at + n + 1 > l->keylen || memcmp(l->key + at, *p, n) != 0 || l->key[at + n] != '\n')
      return false;
    at += n + 1;
  }
  return at == l->keylen;
}

/* The list for these headers (plus "Expect:", below): a kept one when the
 * same headers were sent before, else a new one, kept in place of the
 * oldest list no transfer uses. NULL when out of memory. */
static struct hlist *hlist_take(struct httpc *h, const char *const *headers) {
  for (struct hlist *l = h->hlists; l; l = l->next)
    if (hlist_is(l, headers)) {
      l->users++;
      l->used = ++h->hlist_uses;
      return l;
    }
  struct hlist *l = calloc(1, sizeof *l);
  if (!l)
    return NULL;
  size_t len = 0;
  for (const char *const *p = headers; p && *p; p++)
    len += strlen(*p) + 1;
  l->key = malloc(len + 1);
  bool ok = l->key != NULL;
  for (const char *const *p = headers; ok && p && *p; p++) {
    size_t n = strlen(*p);
    memcpy(l->key + l->keylen, *p, n);
    l->key[l->keylen + n] = '\n';
    l->keylen += n + 1;
    struct curl_slist *next = curl_slist_append(l->list, *p);
    ok = next != NULL;
    if (next)
      l->list = next;
  }
  /* Without this curl waits for "100 Continue" before larger bodies: a
   * round trip for nothing against APIs that never ask for it. */
  struct curl_slist *next = ok ? curl_slist_append(l->list, "Expect:") : NULL;
  if (!next) {
    hlist_free(l);
    return NULL;
  }
  l->list = next;
  l->users = 1;
  l->used = ++h->hlist_uses;
  if (h->nhlists == HLIST_MAX) {
    struct hlist **oldest = NULL;
    for (struct hlist **pp = &h->hlists; *pp; pp = &(*pp)->next)
      if ((*pp)->users == 0 && (!oldest || (*pp)->used < (*oldest)->used))
        oldest = pp;
    if (!oldest)
      return l; /* all in use: this one goes with its request */
    struct hlist *gone = *oldest;
    *oldest = gone->next;
    hlist_free(gone);
    h->nhlists--;
  }
  l->kept = true;
  l->next = h->hlists;
  h->hlists = l;
  h->nhlists++;
  return l;
}

static void hlist_release(struct hlist *l) {
  if (l && --l->users == 0 && !l->kept)
    hlist_free(l);
}

static void hreq_free(struct httpc *h, struct hreq *r) {
  if (r->easy)
    release_easy(h, r->easy);
  hlist_release(r->headers);
  buf_free(&r->body);
  free(r);
}

/* curl sends a request again by itself when a reused connection turns out
 * closed before any answer, and it passes here again before doing so: for a
 * no_resend request that second pass is refused, and the transfer fails
 * with no answer. (A body read through a callback that cannot rewind stops
 * the re-send too, but curl then writes it apart from its headers: one more
 * write and loop turn per create, 16 % of the full path.) */
static int on_prereq(void *userp, char *ip, char *local_ip, int port, int local_port) {
  (void)ip, (void)local_ip, (void)port, (void)local_port;
  struct hreq *r = userp;
  return r->sends++ == 0 ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
}

/* ---- headers and body ---------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *userp) {
  struct hreq *r = userp;
  size_t len = size * n;
  if (buf_append(&r->body, data, len) != 0) {
    r->too_big = true;
    return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
  }
  return len;
}

/* Value of header line `line` if its name is `name` (case-insensitive),
 * copied without surrounding white space into out; false otherwise. */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t outlen) {
  size_t nl = strlen(name);
  if (len <= nl || line[nl] != ':' || strncasecmp(line, name, nl) != 0)
    return false;
  const char *v = line + nl + 1;
  const char *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
    end--;
  size_t vl = (size_t)(end - v);
  if (vl >= outlen)
    vl = outlen - 1;
  memcpy(out, v, vl);
  out[vl] = '\0';
  return true;
}

static long parse_long(const char *s) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || v < 0)
    return -1;
  return v;
}

/* Retry-After is either delta-seconds or an HTTP date (RFC 9110 10.2.3). */
static double parse_retry_after(const char *s) {
  if (*s >= '0' && *s <= '9') {
    char *end;
    double v = strtod(s, &end);
    return end != s && v >= 0 ? v : -1;
  }
  time_t t = curl_getdate(s, NULL);
  if (t == -1)
    return -1;
  double d = difftime(t, time(NULL));
  return d > 0 ? d : 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp) {
  struct hreq *r = userp;
  size_t len = size * n;
  char v[128];
  /* A new status line starts a new header block (e.g. after a 100
   * Continue): only the final response's headers count. */
  if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
    r->retry_after = -1;
    r->rl_remaining = r->rl_max = r->rl_interval = -1;
  } else if (header_value(data, len, "Retry-After", v, sizeof v)) {
    r->retry_after = parse_retry_after(v);
  } else if (header_value(data, len, "X-RateLimit-Remaining", v, sizeof v)) {
    r->rl_remaining = parse_long(v);
  } else if (header_value(data, len, "X-RateLimit-Max", v, sizeof v)) {
    r->rl_max = parse_long(v);
  } else if (header_value(data, len, "X-RateLimit-Interval-Milliseconds", v, sizeof v)) {
    r->rl_interval = parse_long(v);
  }
  return len;
}

/* ---- completion ------------------------------------------------------------ */

static void httpc_destroy(struct httpc *h);

/* Calls back every finished request, oldest first. */
static void dispatch(struct httpc *h) {
  if (h->dispatching)
    return;
  h->dispatching = true;
  struct hreq *r;
  while ((r = h->finished) != NULL) {
    h->finished = r->next;
    if (!h->finished)
      h->finished_tail = NULL;
    r->next = NULL;

    struct httpc_response resp = {0};
    long code = 0;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
    resp.duration_ms = clock_mono() * 1e3 - r->started_ms;
    resp.retry_after = r->retry_after;
    resp.ratelimit_remaining = r->rl_remaining;
    resp.ratelimit_max = r->rl_max;
    resp.ratelimit_interval_ms = r->rl_interval;
    char msg[CURL_ERROR_SIZE + 64];
    if (r->result == CURLE_OK && code > 0) {
      resp.status = (int)code;
    } else {
      /* A partial answer is no answer: the caller may retry it. */
      resp.status = 0;
      resp.timed_out = r->result == CURLE_OPERATION_TIMEDOUT;
      if (r->too_big || r->result == CURLE_FILESIZE_EXCEEDED)
        snprintf(msg, sizeof msg, "response body larger than %zu bytes", h->max_body);
      else if (r->result == CURLE_ABORTED_BY_CALLBACK && r->sends > 1)
        snprintf(msg, sizeof msg, "connection closed with no answer; not sent again");
      else
        snprintf(msg, sizeof msg, "%s", r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
      resp.error = msg;
    }
    resp.body = r->body.p ? r->body.p : "";
    resp.body_len = r->body.len;
    if (resp.status == 0 && r->too_big) {
      resp.body = "";
      resp.body_len = 0;
    }

    httpc_cb cb = r->cb;
    void *ud = r->ud;
    h->active--;
    cb(ud, &resp);
    hreq_free(h, r);
    if (h->dead) {
      httpc_destroy(h);
      return;
    }
  }
  h->dispatching = false;
}

/* Moves every transfer curl reports as done to the finished list. */
static void drain(struct httpc *h) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE)
      continue;
    char *priv = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    struct hreq *r = (struct hreq *)priv;
    CURLcode result = m->data.result;
    curl_multi_remove_handle(h->multi, m->easy_handle); /* m is invalid from here */
    if (!r)
      continue;
    r->result = result;
    list_remove(&h->running, r);
    if (h->finished_tail)
      h->finished_tail->next = r;
    else
      h->finished = r;
    h->finished_tail = r;
  }
}

static void after_action(struct httpc *h) {
  drain(h);
  dispatch(h);
}

/* ---- curl's callbacks and libevent's ------------------------------------- */

static void on_socket_event(evutil_socket_t fd, short what, void *arg) {
  struct hsock *s = arg;
  struct httpc *h = s->h;
  int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
               ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
  int running = 0;
  /* h itself may be gone after after_action (freed from a callback). */
  struct pace *pace = h->pace;
  double stamp = pace_begin(pace);
  curl_multi_socket_action(h->multi, fd, action, &running);
  /* s may be gone now: curl can close the socket inside socket_action. */
  after_action(h);
  pace_end(pace, stamp);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  struct httpc *h = arg;
  int running = 0;
  struct pace *pace = h->pace;
  double stamp = pace_begin(pace);
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  after_action(h);
  pace_end(pace, stamp);
}

static void sock_free(struct httpc *h, struct hsock *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    h->socks = s->next;
  if (s->next)
    s->next->prev = s->prev;
  event_free(s->ev);
  free(s);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
  struct httpc *h = userp;
  struct hsock *s = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (s)
      sock_free(h, s);
    return 0;
  }
  short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
               ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s)
      return -1;
    s->h = h;
    s->fd = fd;
    s->ev = event_new(h->base, fd, kind, on_socket_event, s);
    if (!s->ev) {
      free(s);
      return -1;
    }
    s->next = h->socks;
    if (h->socks)
      h->socks->prev = s;
    h->socks = s;
    curl_multi_assign(h->multi, fd, s);
  } else {
    event_del(s->ev);
    event_assign(s->ev, h->base, fd, kind, on_socket_event, s);
  }
  return event_add(s->ev, NULL) == 0 ? 0 : -1;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  struct httpc *h = userp;
  if (timeout_ms < 0) {
    evtimer_del(h->timer);
    return 0;
  }
  /* A 0 ms timeout still goes through the loop: curl wants to be called
   * "as soon as possible", and never from inside its own callback. It is
   * run in the same loop turn (an active event, not a timer due now): the
   * call an event makes right after its last one then reuses the
   * connection before the loop polls again, so the socket's removal and
   * its new watch cancel out in libevent's change list instead of costing
   * two epoll_ctl calls (docs/performance.md). A separate event, so a
   * later timeout curl asks for meanwhile is kept in h->timer. */
  if (timeout_ms == 0) {
    evtimer_del(h->timer);
    event_active(h->now, EV_TIMEOUT, 0);
    return 0;
  }
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  return evtimer_add(h->timer, &tv) == 0 ? 0 : -1;
}

/* ---- API ----------------------------------------------------------------- */

struct httpc *httpc_new(struct event_base *base, size_t max_body) {
  struct httpc *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->base = base;
  h->max_body = max_body;
  h->multi = curl_multi_init();
  h->timer = evtimer_new(base, on_timer, h);
  h->now = event_new(base, -1, 0, on_timer, h);
  if (!h->multi || !h->timer || !h->now) {
    httpc_destroy(h);
    return NULL;
  }
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  httpc_set_host_connections(h, MAX_HOST_CONNECTIONS);
  return h;
}

void httpc_set_host_connections(struct httpc *h, int n) {
  if (n < 1)
    n = 1;
  curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)n);
  curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 2L * n);
}

void httpc_set_pace(struct httpc *h, struct pace *p) { h->pace = p; }

/* Drops every request without calling back. */
static void cancel_all(struct httpc *h) {
  struct hreq *r;
  while ((r = h->running) != NULL) {
    list_remove(&h->running, r);
    curl_multi_remove_handle(h->multi, r->easy);
    hreq_free(h, r);
  }
  while ((r = h->finished) != NULL) {
    h->finished = r->next;
    hreq_free(h, r);
  }
  h->finished_tail = NULL;
  h->active = 0;
}

static void httpc_destroy(struct httpc *h) {
  if (h->multi)
    cancel_all(h);
  for (int i = 0; i < h->pooled; i++)
    curl_easy_cleanup(h->pool[i]);
  h->pooled = 0;
  /* Cleaning up the multi closes the cached connections; curl may or may
   * not report their sockets removed first, so the list is swept after. */
  if (h->multi)
    curl_multi_cleanup(h->multi);
  /* Whatever curl did not hand back during cleanup. */
  while (h->socks)
    sock_free(h, h->socks);
  while (h->hlists) {
    struct hlist *l = h->hlists;
    h->hlists = l->next;
    hlist_free(l);
  }
  if (h->timer)
    event_free(h->timer);
  if (h->now)
    event_free(h->now);
  free(h);
}

void httpc_free(struct httpc *h) {
  if (!h || h->dead)
    return;
  if (h->dispatching) {
    /* Called from a callback: the dispatch loop still holds h. Drop what
     * is pending now; the loop frees the rest when the callback returns. */
    cancel_all(h);
    h->dead = true;
    return;
  }
  httpc_destroy(h);
}

/* up_free relies on this to keep its promise that it never calls back. */
int httpc_cancel(struct httpc *h, const void *ud) {
  int n = 0;
  struct hreq *r = h->running;
  while (r) {
    struct hreq *next = r->next;
    if (r->ud == ud) {
      list_remove(&h->running, r);
      curl_multi_remove_handle(h->multi, r->easy);
      hreq_free(h, r);
      h->active--;
      n++;
    }
    r = next;
  }
  struct hreq **pp = &h->finished;
  struct hreq *last = NULL;
  while ((r = *pp) != NULL) {
    if (r->ud == ud) {
      *pp = r->next;
      hreq_free(h, r);
      h->active--;
      n++;
    } else {
      last = r;
      pp = &r->next;
    }
  }
  h->finished_tail = last;
  return n;
}

static bool method_is(const char *m, const char *want) { return strcasecmp(m, want) == 0; }

int httpc_send(struct httpc *h, const struct httpc_request *req, httpc_cb cb, void *ud) {
  if (!h || h->dead || !req || !req->url || !cb)
    return -1;
  const char *method = req->method ? req->method : "GET";
  struct hreq *r = calloc(1, sizeof *r);
  if (!r)
    return -1;
  r->cb = cb;
  r->ud = ud;
  r->retry_after = -1;
  r->rl_remaining = r->rl_max = r->rl_interval = -1;
  buf_init(&r->body, h->max_body);
  r->easy = h->pooled > 0 ? h->pool[--h->pooled] : curl_easy_init();
  if (!r->easy) {
    free(r);
    return -1;
  }
  CURL *e = r->easy;
  CURLcode rc = CURLE_OK;
#define SET(opt, val) \
  do {                \
    if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val); \
  } while (0)
  SET(CURLOPT_URL, req->url);
  SET(CURLOPT_PRIVATE, (void *)r);
  SET(CURLOPT_ERRORBUFFER, r->errbuf);
  SET(CURLOPT_WRITEFUNCTION, on_body);
  SET(CURLOPT_WRITEDATA, (void *)r);
  SET(CURLOPT_HEADERFUNCTION, on_header);
  SET(CURLOPT_HEADERDATA, (void *)r);
  SET(CURLOPT_NOSIGNAL, 1L);
  /* An http_proxy in the service's environment must not silently reroute
   * (and expose) calls that carry bearer tokens. */
  SET(CURLOPT_PROXY, "");
  SET(CURLOPT_TCP_NODELAY, 1L);
  SET(CURLOPT_TCP_KEEPALIVE, 1L);
  SET(CURLOPT_PROTOCOLS_STR, "http,https");
  if (req->no_resend) {
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, (void *)r);
  }
  if (h->max_body)
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)h->max_body);
  if (req->timeout_ms > 0)
    SET(CURLOPT_TIMEOUT_MS, req->timeout_ms);

  if (method_is(method, "GET") && !req->body) {
    SET(CURLOPT_HTTPGET, 1L);
  } else if (method_is(method, "HEAD")) {
    SET(CURLOPT_NOBODY, 1L);
  } else {
    if (!method_is(method, "POST"))
      SET(CURLOPT_CUSTOMREQUEST, method);
    if (req->body || method_is(method, "POST")) {
      /* Copied, so the caller's body may go away right after this call. */
      SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
      SET(CURLOPT_COPYPOSTFIELDS, req->body ? req->body : "");
    }
  }
#undef SET

  r->headers = hlist_take(h, req->headers);
  bool hdr_ok = r->headers != NULL;
  if (rc == CURLE_OK && hdr_ok)
    rc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers->list);

  if (rc != CURLE_OK || !hdr_ok) {
    log_warn("httpc: cannot set up %s request: %s", method,
             rc != CURLE_OK ? curl_easy_strerror(rc) : "out of memory");
    hreq_free(h, r);
    return -1;
  }
  r->started_ms = clock_mono() * 1e3;
  /* add_handle only arms the timer (at 0 ms): the transfer, and so the
   * callback, starts on the next turn of the loop. */
  CURLMcode mc = curl_multi_add_handle(h->multi, e);
  if (mc != CURLM_OK) {
    log_warn("httpc: cannot queue request: %s", curl_multi_strerror(mc));
    hreq_free(h, r);
    return -1;
  }
  list_push(&h->running, r);
  h->active++;
  return 0;
}

int httpc_active(const struct httpc *h) { return h ? h->active : 0; }
