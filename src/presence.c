/* A heartbeat rather than only a pid: a pid can be reused after a crash,
 * and a stale row must not make `ncghl replay` promise a pick-up that will
 * never come. Both must hold: the pid is alive and it beat lately. */
#include "presence.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "queue.h"
#include "store.h"

#define PRESENCE_BEAT 2
#define PRESENCE_STALE 10

struct presence {
  struct store *store;
  struct queue *queue;
  struct event *timer;
};

static void beat(struct presence *p) {
  char v[64];
  snprintf(v, sizeof v, "%ld %ld", (long)getpid(), (long)clock_wall());
  if (queue_join(p->queue) == 0)
    store_kv_put(p->store, "service.presence", v);
}

static void on_beat(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  beat(arg);
}

struct presence *presence_start(struct event_base *base, struct store *store, struct queue *queue) {
  struct presence *p = calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->store = store;
  p->queue = queue;
  p->timer = event_new(base, -1, EV_PERSIST, on_beat, p);
  if (!p->timer) {
    free(p);
    return NULL;
  }
  struct timeval tv = {PRESENCE_BEAT, 0};
  event_add(p->timer, &tv);
  beat(p);
  return p;
}

void presence_stop(struct presence *p) {
  if (!p)
    return;
  event_free(p->timer);
  queue_flush(p->queue);
  store_kv_put(p->store, "service.presence", NULL);
  free(p);
}

bool presence_running(struct store *store, long *pid) {
  char *v = store_kv_get(store, "service.presence");
  long who = 0, at = 0;
  bool ok = v && sscanf(v, "%ld %ld", &who, &at) == 2;
  free(v);
  if (!ok || who <= 0)
    return false;
  long now = (long)clock_wall();
  bool alive = kill((pid_t)who, 0) == 0 || errno == EPERM;
  if (pid)
    *pid = who;
  return alive && now - at <= PRESENCE_STALE;
}
