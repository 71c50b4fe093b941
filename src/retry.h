/* retry: when and how long to wait before trying again. Pure functions and
 * a small rate-limit window, no I/O, so the schedule is unit-tested exactly.
 * Two levels: call retries inside one run of an event (the source design's
 * MAX_RETRIES with exponential backoff), and event retries (retry_wait) on a
 * schedule of minutes to hours before an event is declared dead. */
#ifndef NCGHL_RETRY_H
#define NCGHL_RETRY_H

#include <stdbool.h>

struct retry_policy {
  int max_retries;      /* retries after the first try */
  double initial_delay; /* seconds */
  double factor;
  double jitter;        /* fraction, e.g. 0.1 = up to +10% */
};

/* Retryable: 5xx, 429, or no answer at all (status 0: connection error,
 * time-out). Never other 4xx. */
bool retry_is_retryable(int status);
/* Delay before retry number `attempt` (0 = the first retry):
 * initial * factor^attempt, plus jitter * rand01 of that; a Retry-After
 * (seconds, >= 0) wins when larger. */
double retry_delay(const struct retry_policy *p, int attempt, double retry_after, double rand01);

/* Event level: delay before run number `runs`+1 after `runs` failed runs, or
 * -1 when the event should now be dead. Schedule: 1 min, 5 min, 30 min, 2 h,
 * 6 h, then dead. */
double retry_event_delay(int runs);

/* A sliding window limiter: at most `limit` requests per `window` seconds,
 * and steered by an upstream's own X-RateLimit-* headers. limit 0 = off. */
#define RATELIMIT_HOLDS 64
struct ratelimit {
  int limit;
  double window;
  double *stamps; /* ring of the last `limit` send times */
  int head, count;
  double blocked_until; /* set when the upstream says none remain */
  /* Sends promised to writes that follow a read (ratelimit_take_pair):
   * each is room kept in the window until it is used or expires. */
  double holds[RATELIMIT_HOLDS]; /* expiry times */
  int nholds;
};
int ratelimit_init(struct ratelimit *r, int limit, double window);
void ratelimit_free(struct ratelimit *r);
/* 0 if a request may go now (and it is counted), else seconds to wait. */
double ratelimit_take(struct ratelimit *r, double now);
/* The same answer without counting anything: for a caller that must ask
 * another limiter (the store's, shared by the nodes) before it sends. */
double ratelimit_peek(const struct ratelimit *r, double now);
/* The same for k sends at once. */
double ratelimit_peek_n(const struct ratelimit *r, double now, int k);
/* A read that a write of the same record follows: 0 when both fit in the
 * window now (the read is counted, and room for the write is held for
 * hold_s seconds: *held true), else seconds to wait. With a limit below 2,
 * or every hold taken, it is a plain ratelimit_take (*held false). So the
 * record is read after any wait, right before its write, never before. */
double ratelimit_take_pair(struct ratelimit *r, double now, double hold_s, bool *held);
/* A send that uses room held by ratelimit_take_pair (the soonest to expire);
 * with none left, the same as ratelimit_take. */
double ratelimit_take_held(struct ratelimit *r, double now);
/* Upstream said `remaining` requests are left in an interval of interval_ms;
 * remaining 0 blocks until the interval has passed. -1 values are ignored. */
void ratelimit_observe(struct ratelimit *r, long remaining, long interval_ms, double now);

#endif
