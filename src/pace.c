/* A token bucket of loop time. Processing earns PACE_SHARE of every second
 * plus every moment the loop sat idle, and spends what its callbacks take;
 * while the balance is negative and intake is under pressure, no new run starts
 * (runs already going are never held: their sockets would time out). Starts
 * are also spread, a few per millisecond, because a run's cost shows only
 * later, as its answers come in: a hundred starts at once would overdraw the
 * bucket before the first charge. */
#include "pace.h"

#include <limits.h>
#include <stdlib.h>

#include "clock.h"

/* The balance's bounds: a full bucket is a few runs ahead of their charge;
 * the deepest debt holds new runs back PACE_DEBT / PACE_SHARE (half a second
 * on a loop kept busy by intake). */
#define PACE_BURST 0.005
#define PACE_DEBT 0.05
#define PACE_TICK 0.001
#define PACE_PER_TICK 4
#define PACE_LOOK_AGAIN 0.005

struct pace {
  pace_clock mono, cpu;
  void *ud;
  double at, cpu_at;   /* when the balance was last brought up to date */
  double balance;      /* seconds of loop time processing may still take */
  double spent;        /* processing time since then */
  int owed;            /* answers owed to senders */
  double tick;         /* start of the current tick */
  int starts;          /* runs started in it */
  int depth;           /* nested pace_begin */
};

static double real_mono(void *ud) {
  (void)ud;
  return clock_mono();
}

static double real_cpu(void *ud) {
  (void)ud;
  return clock_thread();
}

struct pace *pace_new_clocks(pace_clock mono, pace_clock cpu, void *ud) {
  struct pace *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->mono = mono;
  p->cpu = cpu;
  p->ud = ud;
  p->at = mono(ud);
  p->cpu_at = cpu(ud);
  p->balance = PACE_BURST;
  p->tick = p->at;
  return p;
}

struct pace *pace_new(void) { return pace_new_clocks(real_mono, real_cpu, NULL); }

void pace_free(struct pace *p) { free(p); }

double pace_begin(struct pace *p) {
  if (!p)
    return 0;
  return p->depth++ == 0 ? p->mono(p->ud) : 0;
}

void pace_end(struct pace *p, double stamp) {
  if (!p || p->depth == 0)
    return;
  if (--p->depth == 0) {
    double d = p->mono(p->ud) - stamp;
    if (d > 0)
      p->spent += d;
  }
}

void pace_owed(struct pace *p, int delta) {
  if (p)
    p->owed += delta;
}

static double refill(struct pace *p) {
  double now = p->mono(p->ud), cpu = p->cpu(p->ud);
  double dt = now - p->at, busy = cpu - p->cpu_at;
  if (dt > 0) {
    double idle = dt - busy;
    p->balance += PACE_SHARE * dt + (idle > 0 ? idle : 0) - p->spent;
    p->spent = 0;
    if (p->balance > PACE_BURST)
      p->balance = PACE_BURST;
    if (p->balance < -PACE_DEBT)
      p->balance = -PACE_DEBT;
    p->at = now;
    p->cpu_at = cpu;
  }
  if (now - p->tick >= PACE_TICK) {
    p->tick = now;
    p->starts = 0;
  }
  return now;
}

int pace_room(struct pace *p) {
  if (!p)
    return INT_MAX;
  refill(p);
  if (p->owed < PACE_PRESSURE)
    return INT_MAX;
  if (p->balance <= 0 || p->starts >= PACE_PER_TICK)
    return 0;
  return PACE_PER_TICK - p->starts;
}

void pace_started(struct pace *p, int n) {
  if (p && n > 0)
    p->starts += n;
}

double pace_wait(struct pace *p) {
  if (!p)
    return 0;
  double now = refill(p);
  if (p->owed < PACE_PRESSURE)
    return 0;
  /* The pressure may end any moment (nothing reports it): look again soon. */
  double w = p->balance <= 0 ? -p->balance / PACE_SHARE : PACE_TICK - (now - p->tick);
  if (w < PACE_TICK)
    w = PACE_TICK;
  return w < PACE_LOOK_AGAIN ? w : PACE_LOOK_AGAIN;
}
