/* lua_rt: the Lua side of ncghl. Loads the engine's library (lua/ncghl/) and
 * an agency's mappings (MAPPINGS_DIR) into a sandboxed Lua 5.4 state, and runs
 * each event as a coroutine that yields on every upstream call and is resumed
 * by the event loop when the answer (after retries and tokens) is in.
 *
 * Guarantees: no os/io/debug, no binary chunks, no C modules; an instruction
 * budget per event and a memory cap per state, each failing that event and
 * never the service; events that run on a state keep it alive, so a reload
 * can swap in a new state while they finish on the old one. */
#ifndef NCGHL_LUA_RT_H
#define NCGHL_LUA_RT_H

#include <stdbool.h>
#include <stddef.h>

#include "upstream.h"

struct event_base;
struct config;
struct store;
struct queue;
struct lrt;

/* How the runtime reaches the world. `start` defaults to up_start on `up`;
 * the offline runner (ncghl test/map) puts fixtures there instead. */
struct lrt_host {
  struct event_base *base;
  const struct config *cfg;
  struct upstream *up;
  struct store *store;
  struct queue *queue; /* store writes join its group commit */
  int (*start)(void *start_ud, const struct up_call *call, up_attempt_cb on_attempt,
               up_done_cb done, void *ud);
  void *start_ud;
};

struct lrt_event {
  const char *id;
  const char *source;  /* "nowcerts", "ghl", "manual" */
  const char *type;    /* as stored at intake */
  const char *payload; /* the raw JSON body */
  size_t payload_len;
  int run;             /* 1 for the first run of this event, 2 for the next, ... */
};

enum lrt_outcome {
  LRT_DONE,      /* handled (including "skipped", e.g. an echo) */
  LRT_IGNORED,   /* no route handles this event type */
  LRT_RETRY,     /* failed in a way worth trying again later */
  LRT_FAILED     /* failed for good: a 4xx, a script error, a budget */
};

struct lrt_result {
  enum lrt_outcome outcome;
  const char *message; /* human sentence for the answer and the log */
  const char *data;    /* JSON the route returned ("{}" if none) */
  const char *error;   /* for RETRY/FAILED: one line, "file:line: message" for script errors */
};

/* Lives only during the callback. Called exactly once per lrt_run that
 * returned 0, never from inside lrt_run. */
typedef void (*lrt_done_cb)(void *ud, const struct lrt_result *r);

/* Builds the first state from cfg->lua_dir and cfg->mappings_dir. On a broken
 * script returns NULL with "file:line: message" in err. */
struct lrt *lrt_new(const struct lrt_host *host, char *err, size_t errlen);
/* Frees the current state; events still running must have finished. */
void lrt_free(struct lrt *rt);
int lrt_run(struct lrt *rt, const struct lrt_event *ev, lrt_done_cb done, void *ud);
/* Loads the scripts again into a fresh state; only if that works does it
 * become current (running events finish on the old one, freed after the
 * last). On failure the old state stays and err says why. */
int lrt_reload(struct lrt *rt, char *err, size_t errlen);
/* Short hash of the loaded scripts' bytes, for /health. */
const char *lrt_version(const struct lrt *rt);
int lrt_running(const struct lrt *rt);

#endif
