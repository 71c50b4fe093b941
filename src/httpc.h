/* httpc: outbound HTTP on the event loop, libcurl's multi interface driven by
 * libevent (socket and timer callbacks, as in curl's hiperfifo example). No
 * call ever blocks the loop; each request ends in exactly one callback.
 * curl_global_init must be called once by the program (main) before
 * httpc_new; httpc never touches curl's global state. */
#ifndef NCGHL_HTTPC_H
#define NCGHL_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct httpc;
struct pace;

struct httpc_request {
  const char *method;          /* "GET", "POST", "PUT", ... */
  const char *url;             /* absolute */
  const char *const *headers;  /* "Name: value" strings, NULL-terminated; may be NULL */
  const char *body;            /* may be NULL */
  size_t body_len;
  long timeout_ms;             /* whole transfer; 0 = none (do not use) */
  /* Never sent twice by curl itself: curl re-sends a request on its own
   * when a reused connection turns out closed before any answer, which for
   * a create that did reach the server makes the record twice. For such a
   * request that re-send is refused, and it fails as a transport error (no
   * answer). */
  bool no_resend;
};

struct httpc_response {
  int status;               /* HTTP status; 0 when no answer came (transport error) */
  const char *body;         /* NUL-terminated, "" if none */
  size_t body_len;
  const char *error;        /* transport error text (curl's), NULL if an answer came */
  bool timed_out;
  double retry_after;       /* seconds from Retry-After (delta or HTTP date), -1 if absent */
  long ratelimit_remaining; /* X-RateLimit-Remaining, -1 if absent */
  long ratelimit_max;       /* X-RateLimit-Max, -1 if absent */
  long ratelimit_interval_ms; /* X-RateLimit-Interval-Milliseconds, -1 if absent */
  double duration_ms;
};

/* The response and everything it points to live only during the callback. */
typedef void (*httpc_cb)(void *ud, const struct httpc_response *resp);

/* max_body: responses larger than this fail as a transport error. */
struct httpc *httpc_new(struct event_base *base, size_t max_body);
/* At most n connections to one host at once (64 by default); requests
 * beyond wait in curl's queue for one to free, their time-out running. */
void httpc_set_host_connections(struct httpc *h, int n);
/* The time of every callback (curl's work and the completions it runs) is
 * processing's, charged to p (pace.h); p outlives h. */
void httpc_set_pace(struct httpc *h, struct pace *p);
/* Cancels what is in flight without calling back. */
void httpc_free(struct httpc *h);
/* Returns 0 when queued (cb will be called exactly once, never from inside
 * httpc_send), -1 if the request could not be set up. */
int httpc_send(struct httpc *h, const struct httpc_request *req, httpc_cb cb, void *ud);
/* Drops every request whose user data is ud, without calling back.
 * Returns how many were dropped. */
int httpc_cancel(struct httpc *h, const void *ud);
/* Requests in flight. */
int httpc_active(const struct httpc *h);

#endif
