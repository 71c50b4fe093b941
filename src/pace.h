/* pace: shares the loop between intake and the processing nobody waits on.
 * While senders wait for answers, processing gets PACE_SHARE of the loop's
 * time plus every moment the loop would sit idle; runs beyond that wait
 * their turn in the store. So under a burst acknowledgements are not held
 * behind a backlog and the backlog still drains, and on a quiet loop nothing
 * changes (SPEC 8: intake ahead of processing). */
#ifndef NCGHL_PACE_H
#define NCGHL_PACE_H

/* Processing's guaranteed share of a loop kept busy by intake. */
#define PACE_SHARE 0.1
/* Answers owed at once from which intake counts as under pressure: one
 * sender waiting is enough, the idle moments keep a light load unpaced. */
#define PACE_PRESSURE 1

struct pace;

/* Seconds on some clock; only differences are read. */
typedef double (*pace_clock)(void *ud);

/* Reads CLOCK_MONOTONIC and the calling thread's CPU time: every call must
 * come from the loop's thread. */
struct pace *pace_new(void);
/* The same on given clocks (tests): `mono` is wall time, `cpu` the loop's
 * busy time. */
struct pace *pace_new_clocks(pace_clock mono, pace_clock cpu, void *ud);
void pace_free(struct pace *p);

/* Bracket processing work done on the loop (outbound HTTP callbacks, a Lua
 * run starting, a claim): its time is what the share is charged. Nested
 * brackets count once. */
double pace_begin(struct pace *p);
void pace_end(struct pace *p, double stamp);

/* An answer is owed to a sender (+1), or was sent (-1). */
void pace_owed(struct pace *p, int delta);
/* How many runs nobody waits on may start now: unlimited (a large number)
 * without pressure, else a few per millisecond while processing is within
 * its share plus the loop's idle time, else 0. */
int pace_room(struct pace *p);
void pace_started(struct pace *p, int n);
/* Seconds until pace_room may be more than 0 again. */
double pace_wait(struct pace *p);

/* Every function accepts p == NULL: nothing is paced. */

#endif
