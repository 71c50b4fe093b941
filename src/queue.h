/* queue: group commit on the event loop. Every store write made while the
 * loop runs joins one open transaction; the transaction commits once, at the
 * end of the loop turn, or, while an fsync is in flight, the moment it ends
 * (batches grow with the load, no timer); only then are the callbacks
 * waiting on it run. That is how many concurrent webhooks share one fsync,
 * while each answer still goes out after the commit that holds its event.
 * A batch of plain writes only (queue_join: outcomes, attempts, links) stays
 * open 1 ms for the next ones, so a stream of runs ending one by one does not
 * commit turn by turn; a durable write, or one someone waits on
 * (queue_join_now), joining it ends the wait. */
#ifndef NCGHL_QUEUE_H
#define NCGHL_QUEUE_H

#include <stdbool.h>

struct event_base;
struct store;
struct queue;

/* Intake outranks processing: the loop has two priorities, and the HTTP
 * connections and the group commit run at QUEUE_PRIO_INTAKE, everything else
 * (Lua runs, outbound HTTP, timers) at the default, lower one. Under a burst,
 * webhooks are acknowledged durably first and processed as the CPU allows;
 * nothing waits in memory only. main calls event_base_priority_init(base,
 * QUEUE_PRIORITIES) before creating any event. */
#define QUEUE_PRIORITIES 2
#define QUEUE_PRIO_INTAKE 0

typedef void (*queue_commit_cb)(void *ud, bool committed);

struct queue *queue_new(struct event_base *base, struct store *store);
/* Commits what is open, runs the waiting callbacks, frees. */
void queue_free(struct queue *q);
/* Opens the batch transaction if none is open and schedules its commit.
 * Returns 0, or -1 if no transaction could be started. Every batch commits
 * safe against a crash of the process. A plain join is for writes that may
 * be lost with the machine: run outcomes, links, fingerprints, cursors (a
 * re-run after a power cut redoes them harmlessly); its batch's callbacks run
 * right after the COMMIT. */
int queue_join(struct queue *q);
/* The same for writes something is acknowledged on (an accepted webhook, a
 * replay): the batch's callbacks run only once an fsync of the WAL that
 * began after its COMMIT has finished. The fsync runs on a thread of the
 * queue's own, never on the loop. queue_new switches the store to commits
 * without their own sync (synchronous=NORMAL) for this reason. */
int queue_join_durable(struct queue *q);
/* A plain write someone is waiting on (a run's outcome a webhook's answer
 * waits for): the batch commits at the end of this loop turn, not after the
 * plain batches' 1 ms; no fsync is owed for it. */
int queue_join_now(struct queue *q);
/* How long a batch of plain writes only stays open (1 ms unless set; the
 * tests make it long, to see the hold without racing a clock). */
void queue_set_plain_hold(struct queue *q, long usec);
/* cb(ud, true) after the open batch commits; cb(ud, false) if it failed and
 * was rolled back. With no open batch, one is opened first. */
void queue_after_commit(struct queue *q, queue_commit_cb cb, void *ud);
/* Commits now and waits for every fsync owed, running the callbacks (used
 * at shutdown). */
int queue_flush(struct queue *q);

/* Faults. Every commit, durable or not, gets its fsync within about half a
 * second, even with no webhook to carry it. A batch that finds the write
 * lock held by another process is committed again from a timer, its
 * waiters still waiting; queue_join itself then fails at once (the loop
 * never sleeps in SQLite's busy handler) and queue_busy says why: the
 * caller registers with queue_when_writable, whose cb(ud, true) runs once a
 * batch is open again (cb(ud, false) if the queue failed meanwhile).
 * A failed COMMIT that is not a full disk, or a failed fsync, fails the
 * queue for good: every join fails from then on, queue_failed gives the
 * reason and the queue_on_fail callback runs once. A full disk only rolls
 * its batch back (its waiters hear false). */
bool queue_busy(struct queue *q);
void queue_when_writable(struct queue *q, queue_commit_cb cb, void *ud);
const char *queue_failed(const struct queue *q);
/* The last batch was rolled back on a full disk and none has committed
 * since: the store cannot be written (/health says so). */
bool queue_disk_full(const struct queue *q);
void queue_on_fail(struct queue *q, void (*cb)(void *ud, const char *reason), void *ud);
/* Last words of a failed queue (at exit): one transaction of fn's writes,
 * committed and synced on the loop, whatever the queue's state. 0 when it
 * reached the disk. */
int queue_undo(struct queue *q, int (*fn)(void *ud, struct store *s), void *ud);

#endif
