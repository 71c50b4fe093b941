/* A heartbeat rather than only a pid: a pid can be reused after a crash,
 * and a stale row must not make `ncghl replay` promise a pick-up that will
 * never come. Both must hold: the pid is alive and it beat lately. The
 * record names the host too: on a store several machines share
 * (PostgreSQL) a pid means nothing on another host, so there the
 * heartbeat alone decides, and a node stopping clears only its own. */
#include "presence.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void this_host(char *host, size_t n) {
  if (gethostname(host, n) != 0 || !host[0])
    snprintf(host, n, "%s", "localhost");
  host[n - 1] = '\0';
  host[strcspn(host, " ")] = '\0';
}

static void beat(struct presence *p) {
  char v[160], host[64];
  this_host(host, sizeof host);
  snprintf(v, sizeof v, "%ld %ld %s", (long)getpid(), (long)clock_wall(), host);
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
  char *v = store_kv_get(p->store, "service.presence");
  char host[64], who_host[64] = "";
  this_host(host, sizeof host);
  long who = 0, at = 0;
  bool mine = v && sscanf(v, "%ld %ld %63s", &who, &at, who_host) >= 2 &&
              who == (long)getpid() &&
              (!who_host[0] || strcmp(who_host, host) == 0);
  free(v);
  if (mine)
    store_kv_put(p->store, "service.presence", NULL);
  free(p);
}

bool presence_running(struct store *store, long *pid) {
  char *v = store_kv_get(store, "service.presence");
  long who = 0, at = 0;
  char who_host[64] = "", host[64];
  bool ok = v && sscanf(v, "%ld %ld %63s", &who, &at, who_host) >= 2;
  free(v);
  if (!ok || who <= 0)
    return false;
  long now = (long)clock_wall();
  this_host(host, sizeof host);
  bool here = !who_host[0] || strcmp(who_host, host) == 0;
  bool alive = !here || kill((pid_t)who, 0) == 0 || errno == EPERM;
  if (pid)
    *pid = who;
  return alive && now - at <= PRESENCE_STALE;
}
