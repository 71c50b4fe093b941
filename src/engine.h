/* engine: runs the durable queue. It starts events when they are accepted or
 * when they fall due (pending, or retry_wait whose time has come, including
 * rows put there by another process), runs each through the Lua runtime,
 * writes the outcome (done, retry_wait with its next time, dead), and tells
 * whoever is waiting for that event, always after the commit. Rows it marks
 * running carry its lease, renewed every 10 s; running rows whose owner's
 * lease lapsed (a crash) or that have no job here (a failed commit) are
 * queued again within about a minute. A backlog stays in the store: events
 * waiting for a slot hold no payload in memory. */
#ifndef NCGHL_ENGINE_H
#define NCGHL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "lua_rt.h"
#include "store.h"

struct event_base;
struct config;
struct queue;
struct engine;
struct engine_watch;
struct pace;

struct engine_outcome {
  enum ev_status status;     /* EV_DONE, EV_RETRY_WAIT or EV_DEAD */
  enum lrt_outcome outcome;  /* what the mapping said */
  const char *message;
  const char *data;          /* JSON, "{}" if none */
  const char *error;         /* NULL unless it failed */
};

/* Lives only during the callback. */
typedef void (*engine_watch_cb)(void *ud, const struct engine_outcome *o);

/* pace (may be NULL): the loop's share (pace.h). With WEBHOOK_WAIT_MS=0 no
 * answer waits for a run, so runs start as the pace allows: under a stream
 * of webhooks the events wait in the store, pending, for processing's share
 * of the loop. With a wait, every run starts at once, as someone waits.
 * tenant (may be NULL) names the tenant in the engine's log lines. */
struct engine *engine_new(struct event_base *base, const struct config *cfg, struct store *store,
                          struct queue *queue, struct lrt *rt, struct pace *pace, const char *tenant);
void engine_free(struct engine *e);

/* Intake: stores the event inside the queue's open batch (joining it) and,
 * when the batch commits, starts it if it is new or requeued. *put says what
 * happened; *existing is the status of a duplicate. Returns 0, or -1 if the
 * store failed (answer 503). */
int engine_submit(struct engine *e, const char *id, const char *source, const char *type,
                  const char *payload, size_t len, enum store_put *put, enum ev_status *existing);
/* Calls cb when the current run of event `id` ends (after its outcome is
 * committed). Returns NULL if that event is not queued or running here. */
struct engine_watch *engine_watch(struct engine *e, const char *id, engine_watch_cb cb, void *ud);
void engine_unwatch(struct engine *e, struct engine_watch *w);
/* Look for due events now (another process may have queued some). */
void engine_kick(struct engine *e);
int engine_running(const struct engine *e);
/* Stops starting events; returns how many are still running. */
int engine_stop(struct engine *e);

#endif
