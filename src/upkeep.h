/* upkeep: the store's disk work that can wait, on a thread of its own with
 * its own SQLite connection, so none of it runs on the event loop: WAL
 * checkpoints (the loop's connection has them off), retention (done events
 * older than RETENTION_DAYS, in small transactions), and a recount of the
 * events by status now and then for the in-memory counts /metrics reads. */
#ifndef NCGHL_UPKEEP_H
#define NCGHL_UPKEEP_H

struct event_base;
struct store;
struct upkeep;

/* loop_store is the loop's connection (its counts are adjusted on the loop,
 * never from the thread); db_path is opened again by the thread. NULL if the
 * thread cannot start (logged; the service runs on without upkeep). */
struct upkeep *upkeep_start(struct event_base *base, struct store *loop_store, const char *db_path,
                            int retention_days);
/* Stops and joins the thread (waits for its current small transaction). */
void upkeep_stop(struct upkeep *u);

#endif
