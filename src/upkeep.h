/* upkeep: the store's disk work that can wait, off the event loop, with a
 * SQLite connection of its own: WAL checkpoints (the loop's connection has
 * them off), retention (done events older than RETENTION_DAYS, in small
 * transactions), and a recount of the events by status now and then for the
 * in-memory counts /metrics reads. One thread (struct upkeep_pool) does it
 * for every store of the process, one after another.
 *
 * A store registered with `always` keeps its connection and gets a passive
 * checkpoint every second (the single agency, as it always had). Otherwise
 * (a tenant among many) the connection is open only while the store is
 * busy: once its WAL grows, and until its checkpoints have found little to
 * copy for a while; a quiet store gets its checkpoint, retention and
 * recount on a short visit once a minute. */
#ifndef NCGHL_UPKEEP_H
#define NCGHL_UPKEEP_H

#include <stdbool.h>

struct event_base;
struct store;
struct upkeep;
struct upkeep_pool;

/* The thread, shared by every upkeep_start given it. NULL if it cannot
 * start (logged; the service then runs on without upkeep). */
struct upkeep_pool *upkeep_pool_new(void);
/* Stops and joins the thread; every upkeep on it must be stopped first. */
void upkeep_pool_free(struct upkeep_pool *p);

/* loop_store is the loop's connection (its counts are adjusted on the loop,
 * never from the thread); db_path is opened again on the thread. NULL if
 * pool is NULL or out of memory (logged; the service runs on without
 * upkeep). */
struct upkeep *upkeep_start(struct upkeep_pool *pool, struct event_base *base,
                            struct store *loop_store, const char *db_path,
                            int retention_days, bool always);
/* Whether the thread holds a connection to the store now (waits for its
 * visit in progress): for tests. */
bool upkeep_connected(struct upkeep *u);
/* Takes the store off the thread (waiting for its current small
 * transaction), then checkpoints it once more and closes its connection. */
void upkeep_stop(struct upkeep *u);

#endif
