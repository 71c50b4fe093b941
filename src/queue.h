/* queue: group commit on the event loop. Every store write made while the
 * loop runs joins one open transaction; the transaction commits once, at the
 * end of the loop turn, and only then are the callbacks waiting on it run.
 * That is how many concurrent webhooks share one fsync, while each answer
 * still goes out after the commit that holds its event. */
#ifndef NCGHL_QUEUE_H
#define NCGHL_QUEUE_H

#include <stdbool.h>

struct event_base;
struct store;
struct queue;

typedef void (*queue_commit_cb)(void *ud, bool committed);

struct queue *queue_new(struct event_base *base, struct store *store);
/* Commits what is open, runs the waiting callbacks, frees. */
void queue_free(struct queue *q);
/* Opens the batch transaction if none is open and schedules its commit.
 * Returns 0, or -1 if no transaction could be started. */
int queue_join(struct queue *q);
/* cb(ud, true) after the open batch commits; cb(ud, false) if it failed and
 * was rolled back. With no open batch, one is opened first. */
void queue_after_commit(struct queue *q, queue_commit_cb cb, void *ud);
/* Commits now (used before blocking work and at shutdown). */
int queue_flush(struct queue *q);

#endif
