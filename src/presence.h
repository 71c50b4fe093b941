/* presence: lets a command run beside the service (replay, backfill) know
 * whether a service is working on the same store, so it can say whether its
 * events will be picked up now or wait for the next start. The service
 * writes its pid and a heartbeat into the store's key/value table. */
#ifndef NCGHL_PRESENCE_H
#define NCGHL_PRESENCE_H

#include <stdbool.h>

struct event_base;
struct store;
struct queue;
struct presence;

/* Service side: records this process and refreshes the heartbeat every
 * PRESENCE_BEAT seconds through the group commit. */
struct presence *presence_start(struct event_base *base, struct store *store, struct queue *queue);
/* Clears the record (a clean stop), then frees. */
void presence_stop(struct presence *p);
/* Command side: true when a service process is alive and beat recently;
 * *pid (may be NULL) gets its pid. */
bool presence_running(struct store *store, long *pid);

#endif
