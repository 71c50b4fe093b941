/* retry: backoff arithmetic and the outbound rate-limit window. Everything
 * here is a pure function of its arguments (time and randomness are passed
 * in), so the exact schedule is unit-tested. */
#include "retry.h"

#include <math.h>
#include <stdlib.h>

bool retry_is_retryable(int status) {
  /* Status 0 means no answer at all (refused, reset, time-out): the request
   * may never have reached the upstream, so trying again is safe enough. */
  return status == 0 || status == 429 || (status >= 500 && status <= 599);
}

double retry_delay(const struct retry_policy *p, int attempt, double retry_after, double rand01) {
  if (attempt < 0)
    attempt = 0;
  if (rand01 < 0)
    rand01 = 0;
  if (rand01 > 1)
    rand01 = 1;
  double d = p->initial_delay * pow(p->factor, attempt);
  if (!isfinite(d) || d < 0)
    d = 0;
  /* Jitter only ever lengthens the wait, so the documented schedule
   * (1 s, 2 s, 4 s) is a floor that callers can rely on. */
  d += d * p->jitter * rand01;
  if (retry_after >= 0 && isfinite(retry_after) && retry_after > d)
    d = retry_after;
  return d;
}

double retry_event_delay(int runs) {
  static const double schedule[] = {60, 5 * 60, 30 * 60, 2 * 3600, 6 * 3600};
  const int n = (int)(sizeof schedule / sizeof schedule[0]);
  if (runs <= 0)
    return 0;
  if (runs > n)
    return -1;
  return schedule[runs - 1];
}

int ratelimit_init(struct ratelimit *r, int limit, double window) {
  r->limit = limit > 0 ? limit : 0;
  r->window = window > 0 ? window : 1;
  r->stamps = NULL;
  r->head = 0;
  r->count = 0;
  r->blocked_until = 0;
  r->nholds = 0;
  if (r->limit == 0)
    return 0;
  r->stamps = calloc((size_t)r->limit, sizeof *r->stamps);
  if (!r->stamps) {
    r->limit = 0;
    return -1;
  }
  return 0;
}

void ratelimit_free(struct ratelimit *r) {
  free(r->stamps);
  r->stamps = NULL;
  r->limit = 0;
  r->count = 0;
  r->head = 0;
}

/* The ring holds send times in the order they were taken, so the slot at
 * `head` is always the oldest; once full, a new stamp replaces it. */
static void ring_push(struct ratelimit *r, double now) {
  if (r->count < r->limit) {
    r->stamps[(r->head + r->count) % r->limit] = now;
    r->count++;
  } else {
    r->stamps[r->head] = now;
    r->head = (r->head + 1) % r->limit;
  }
}

static int ring_in_window(const struct ratelimit *r, double now) {
  int n = 0;
  for (int i = 0; i < r->count; i++)
    if (r->stamps[(r->head + i) % r->limit] > now - r->window)
      n++;
  return n;
}

/* Holds still in force; expired ones are dropped. */
static int holds_live(struct ratelimit *r, double now) {
  int n = 0;
  for (int i = 0; i < r->nholds; i++)
    if (r->holds[i] > now)
      r->holds[n++] = r->holds[i];
  r->nholds = n;
  return n;
}

/* Seconds until k more sends fit beside the window's sends and the holds. */
static double wait_for(const struct ratelimit *r, double now, int holds, int k) {
  if (r->limit == 0)
    return 0;
  if (r->blocked_until > now)
    return r->blocked_until - now;
  int live = ring_in_window(r, now);
  int over = live + holds + k - r->limit;
  if (over <= 0)
    return 0;
  if (over > live)
    return 0.05; /* held room: it is used or expires soon */
  /* The ring is oldest first, expired stamps ahead of live ones. */
  int idx = (r->head + (r->count - live) + (over - 1)) % r->limit;
  double w = r->stamps[idx] + r->window - now;
  return w > 0 ? w : 0.001;
}

double ratelimit_take(struct ratelimit *r, double now) {
  if (r->limit == 0)
    return 0;
  double w = wait_for(r, now, holds_live(r, now), 1);
  if (w <= 0)
    ring_push(r, now);
  return w;
}

double ratelimit_peek_n(const struct ratelimit *r, double now, int k) {
  int holds = 0;
  for (int i = 0; i < r->nholds; i++)
    holds += r->holds[i] > now;
  return wait_for(r, now, holds, k);
}

double ratelimit_peek(const struct ratelimit *r, double now) { return ratelimit_peek_n(r, now, 1); }

double ratelimit_take_pair(struct ratelimit *r, double now, double hold_s, bool *held) {
  *held = false;
  int holds = holds_live(r, now);
  if (r->limit < 2 || holds >= RATELIMIT_HOLDS)
    return ratelimit_take(r, now);
  double w = wait_for(r, now, holds, 2);
  if (w <= 0) {
    ring_push(r, now);
    r->holds[r->nholds++] = now + hold_s;
    *held = true;
  }
  return w;
}

double ratelimit_take_held(struct ratelimit *r, double now) {
  if (holds_live(r, now) > 0) {
    int soonest = 0;
    for (int i = 1; i < r->nholds; i++)
      if (r->holds[i] < r->holds[soonest])
        soonest = i;
    r->holds[soonest] = r->holds[--r->nholds];
  }
  return ratelimit_take(r, now);
}

void ratelimit_observe(struct ratelimit *r, long remaining, long interval_ms, double now) {
  if (r->limit == 0 || remaining < 0)
    return;
  if (remaining == 0) {
    double span = interval_ms >= 0 ? (double)interval_ms / 1000.0 : r->window;
    if (now + span > r->blocked_until)
      r->blocked_until = now + span;
    return;
  }
  /* The upstream counts requests we cannot see (another integration on the
   * same location, our own calls from before a restart). When it says fewer
   * remain than our window would still allow, fill the difference with
   * stamps taken now, so we slow down before it has to answer 429. A larger
   * figure is never trusted over our own count: answers arrive out of order. */
  int free_slots = r->limit - ring_in_window(r, now);
  for (long extra = (long)free_slots - remaining; extra > 0; extra--)
    ring_push(r, now);
}
