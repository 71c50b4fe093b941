/* upstream: one logical call to NowCerts or GHL, with everything that makes
 * it trustworthy: the base URL and headers (GHL's Bearer token, Version and
 * JSON; NowCerts' bearer token from tokens.c), the outbound rate limit, the
 * retry policy with Retry-After, a forced token refresh and one retry on 401,
 * and NowCerts' HTTP 200 with "status":0 counted as the failure it is.
 * Every attempt is reported to the caller so it can be stored. */
#ifndef NCGHL_UPSTREAM_H
#define NCGHL_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;
struct httpc;
struct upstream;

enum up_service { UP_NOWCERTS = 0, UP_GHL = 1 };
const char *up_service_name(enum up_service s); /* "nowcerts", "ghl" */
int up_service_parse(const char *name);         /* -1 if unknown */

struct up_call {
  enum up_service service;
  const char *method;       /* "GET", "POST", "PUT", "DELETE" */
  const char *path;         /* relative to the service's base URL, query included; starts with '/' */
  const char *body;         /* NULL for none */
  size_t body_len;
  const char *content_type; /* NULL: application/json when there is a body */
  /* A create: when an attempt gets no answer (a time-out, a reset) it may
   * still have made the record, so the retry policy does not send it again;
   * the call ends retryable and the caller searches before it creates again
   * (SPEC 10, "creates survive crashes"). An answer (5xx, 429) is retried as
   * usual (SPEC 6). curl never re-sends it by itself when a reused
   * connection turns out closed (httpc's no_resend). */
  bool once;
  /* GHL only: a read that a write of the same record follows (then_write)
   * is sent only when the rate limit (the node's, and the nodes' shared
   * one) has room for both, and room for the write is held a few seconds;
   * that write (use_held) goes on the held room without waiting. So the
   * record is read right before its write, not before a wait for the
   * limit, and an agent's edit made during that wait is seen (SPEC 10). */
  bool then_write;
  bool use_held;
};

struct up_attempt {
  enum up_service service;
  const char *method;
  const char *url;    /* full URL; never holds a secret */
  int status;         /* 0: no answer */
  const char *error;  /* NULL on success */
  double duration_ms;
  const char *request; /* the body sent, NULL if none */
  size_t request_len;
  const char *answer;  /* the body answered, "" if none */
  size_t answer_len;
};

struct up_result {
  bool ok;            /* 2xx, and not NowCerts' "status":0 */
  bool retryable;     /* when !ok: the failure was retryable (retries are used up) */
  int status;         /* last HTTP status, 0 if no answer */
  const char *body;   /* last response body, "" if none */
  size_t body_len;
  const char *error;  /* when !ok: one line, e.g. "HTTP 400: {...}" or "status 0: message" */
  int attempts;       /* HTTP attempts made */
  bool held;          /* a then_write call that holds room for its write */
};

typedef void (*up_attempt_cb)(void *ud, const struct up_attempt *a);
/* The result lives only during the callback. */
typedef void (*up_done_cb)(void *ud, const struct up_result *r);

struct upstream *up_new(struct event_base *base, const struct config *cfg, struct httpc *http);
/* Must run before httpc_free: calls in flight live in the httpc. */
void up_free(struct upstream *u);
/* Returns 0 when started (done is called exactly once, never from inside
 * up_start), -1 on bad arguments. on_attempt may be NULL. */
int up_start(struct upstream *u, const struct up_call *call, up_attempt_cb on_attempt,
             up_done_cb done, void *ud);
/* The NowCerts user id from the last token response (for skipping our own
 * changes), NULL before the first login. */
const char *up_nowcerts_user_id(const struct upstream *u);
/* The tokens object of a service (tokens.h), NULL when not configured:
 * for the Marketplace install, which hands a location new GHL tokens. */
struct tokens;
struct tokens *up_tokens(struct upstream *u, enum up_service svc);
/* Calls in flight, retries waiting included. */
int up_active(const struct upstream *u);
/* Keeps GHL OAuth tokens in the store (kv "ghl_oauth"): restores the ones
 * an earlier run stored, unless GHL_REFRESH_TOKEN was changed since (a new
 * seed wins), and stores every rotation and install from now on. Call
 * before the first up_start. Nothing happens without GHL OAuth (client id
 * and secret) configured. */
struct store;
void up_set_store(struct upstream *u, struct store *s);
/* The GHL OAuth tokens, for a Marketplace install (tokens_install); NULL
 * when GHL is not OAuth (no client id and secret). */
struct tokens;
struct tokens *up_ghl_oauth(struct upstream *u);
/* Counts into m from now on: ncghl_upstream_requests_total{service,status} and
 * ncghl_upstream_duration_seconds{service} per HTTP attempt (status "0": no
 * answer), ncghl_retries_total{service}, ncghl_token_refreshes_total{service,result}. */
struct metrics;
void up_set_metrics(struct upstream *u, struct metrics *m);

#endif
