/* lua_rt: the Lua side of ncghl. Loads the engine's library (lua/ncghl/) and
 * an agency's mappings (MAPPINGS_DIR) into a sandboxed Lua 5.4 state, and runs
 * each event as a coroutine that yields on every upstream call and is resumed
 * by the event loop when the answer (after retries and tokens) is in.
 *
 * Guarantees: no os/io/debug, no binary chunks, no C modules; per event an
 * instruction budget, a memory cap and a time limit that also bounds the C
 * functions scripts call (patterns, string.rep, JSON), each failing that
 * event and never the service; a state-wide memory cap whose pressure on an
 * event within its own cap is a retry, not a failure; events that run on a state keep it alive, so a reload
 * can swap in a new state while they finish on the old one, and a reload
 * only swaps in scripts whose mapping test cases pass (runner.h). */
#ifndef NCGHL_LUA_RT_H
#define NCGHL_LUA_RT_H

#include <stdbool.h>
#include <stddef.h>

#include "upstream.h"

struct event_base;
struct lua_State;
struct config;
struct store;
struct queue;
struct lrt;

/* How the runtime reaches the world. `start` defaults to up_start on `up`;
 * the offline runner (ncghl test/map) puts fixtures there instead. A `start`
 * may call `done` synchronously, from inside itself: the answer is then
 * delivered through the loop (or lrt_drain), never into the C call that
 * started it.
 *
 * `store` may be NULL: links and write fingerprints are then kept in memory
 * (per Lua state) and upstream attempts are not recorded. `queue` may be
 * NULL: each store write then commits on its own. */
struct lrt_host {
  struct event_base *base;
  const struct config *cfg;
  struct upstream *up;
  struct store *store;
  struct queue *queue; /* store writes join its group commit */
  int (*start)(void *start_ud, const struct up_call *call, up_attempt_cb on_attempt,
               up_done_cb done, void *ud);
  void *start_ud;
  struct metric *conflicts; /* counter {kind, winner}; NULL: not counted */
  struct metric *ignored;   /* counter {reason}; NULL: not counted */
  struct lrt_texts *texts;  /* where script bytes are shared; NULL: kept per runtime */
};

/* Script bytes shared by the runtimes of one process: the engine's library
 * and the shipped mappings are the same bytes for every tenant, so they are
 * kept once (looked up by content), each runtime holding references. Used
 * on the loop's thread only. */
struct lrt_texts;
struct lrt_texts *lrt_texts_new(void);
/* After every runtime that used it; one still holding texts keeps it. */
void lrt_texts_free(struct lrt_texts *tx);

struct lrt_event {
  const char *id;
  const char *source;  /* "nowcerts", "ghl", "manual" */
  const char *type;    /* as stored at intake */
  const char *payload; /* the raw JSON body */
  size_t payload_len;
  int run;             /* 1 for the first run of this event, 2 for the next, ... */
  const char *last_error; /* how the run before this one ended, NULL if it did not
                             end (a crash) or there was none */
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
  double retry_in;     /* for RETRY: seconds the script asked to wait (ncghl.fail's
                          retry_in, e.g. an upstream's indexing delay); 0: the schedule */
};

/* Lives only during the callback. Called exactly once per lrt_run that
 * returned 0, never from inside lrt_run. */
typedef void (*lrt_done_cb)(void *ud, const struct lrt_result *r);

/* Builds the first state from cfg->lua_dir and cfg->mappings_dir. On a broken
 * script returns NULL with "file:line: message" in err. */
struct lrt *lrt_new(const struct lrt_host *host, char *err, size_t errlen);
/* Pushes the chunk of module `name` (read from lua_dir or mappings_dir at
 * load) as a function, not yet run: for code of ncghl's own that takes
 * arguments (the offline runner's harness). LUA_OK, or an error code with
 * the message pushed instead. */
int lrt_load_module(struct lua_State *L, const char *name);
/* Frees the current state; events still running must have finished. */
void lrt_free(struct lrt *rt);
int lrt_run(struct lrt *rt, const struct lrt_event *ev, lrt_done_cb done, void *ud);
/* Loads the scripts again into a fresh state and runs every mapping test
 * case (MAPPINGS_DIR/tests, see runner.h) against the same script bytes,
 * through the check lrt_set_check gave it; only if both work does the new
 * state become current (running events finish on the old one, freed after
 * the last). On failure the old state stays and err
 * says why: "file:line: message" for a script, the case file, line and first
 * difference for a failing case. Runs on the loop and blocks it while it
 * works (15-25 ms for the shipped mappings and their 50 cases on the 2-core
 * development machine). Called from a libevent signal event (main.c), a
 * SIGHUP that arrives meanwhile is only recorded by libevent's handler, and
 * the callback runs again after this one returns: it is never lost. */
int lrt_reload(struct lrt *rt, char *err, size_t errlen);
/* lrt_reload's test of new scripts before they become current, passed in
 * by the host (main.c: runner_check, runner.h) so that the runtime does not
 * depend on the runner, which depends on it. It gets a `build` that makes a
 * runtime from the bytes the reload read, on the host it is given, and
 * returns 0 when the scripts may go live (*ncases: how many cases ran), else
 * -1 with the first problem in err. Without one (the default) a reload runs
 * no test cases. */
typedef struct lrt *(*lrt_build_fn)(void *ud, const struct lrt_host *host, char *err,
                                    size_t errlen);
typedef int (*lrt_check_fn)(const struct config *cfg, struct event_base *base,
                            lrt_build_fn build, void *build_ud, int *ncases, char *err,
                            size_t errlen);
void lrt_set_check(struct lrt *rt, lrt_check_fn check);
/* Runs that check's test cases against the scripts loaded at start, as a
 * reload would. A failure changes nothing in force (there is no older
 * version to keep): it is what lrt_last_reload says, and err says why.
 * 0 when they pass (or no check is set), -1 when one fails. */
int lrt_check_loaded(struct lrt *rt, char *err, size_t errlen);
/* Short hash of the loaded scripts' bytes, for /health. */
const char *lrt_version(const struct lrt *rt);
/* The last load or reload, for /health: *ok whether it took, *when (Unix
 * seconds) when it ended. Returns a sentence valid until the next reload: the
 * reason of a failure, or for a success the version, the test cases that
 * passed and the time it took. Either pointer may be NULL. */
const char *lrt_last_reload(const struct lrt *rt, bool *ok, double *when);
int lrt_running(const struct lrt *rt);

/* Idle release (many tenants in one process): once no event has run on the
 * current state for `seconds`, the state is closed, and the next lrt_run
 * (or lrt_lua_state) builds it again from the same bytes, the ones that
 * were checked at load or reload, never the files as they are now. What
 * a release forgets is only what scripts cached in the state (GHL's
 * pipelines and custom fields, read again when needed), as after a reload.
 * A state is never released while an event runs on it. 0 (the default):
 * kept. -1 for a host without a store, whose links live in the state. */
int lrt_set_idle(struct lrt *rt, double seconds);
/* Releases the state now if idle release is on and no event runs; whether
 * it did. (At start, once the load was checked, an idle tenant needs none.) */
bool lrt_release(struct lrt *rt);
/* Whether a state is built now, and how many were built again after a
 * release: for tests and the debug log. */
bool lrt_loaded(const struct lrt *rt);
unsigned long lrt_builds(const struct lrt *rt);

/* For the offline runner (ncghl test/check/map, the reload check); not for
 * the service. */

/* Runs, right now and without the event loop, every event that is ready,
 * until none is: with a `start` that answers synchronously, an lrt_run
 * followed by lrt_drain has ended (its done callback called). Returns how
 * many events are still running (parked on an answer that has not come).
 * A done callback must not free the runtime while it drains. */
int lrt_drain(struct lrt *rt);
/* lua_pcall on the current state's main thread (the function and its nargs
 * arguments on its stack), under an instruction budget and the memory cap
 * as an event's code is: for the runner's calls into code an agency wrote
 * (test case files, mapping code). Also safe from inside an event. Returns
 * a LUA_* status; on an error, its message is on the stack. */
int lrt_pcall(struct lrt *rt, int nargs, int nresults);
/* No log line per failed or retried event (the runner reports outcomes
 * itself, and a reload's check must not fill the service's log). */
void lrt_set_quiet(struct lrt *rt, bool quiet);
/* The current state's main thread, for the runner's own Lua (loading test
 * cases, answering calls with fixtures, comparing). NULL if none. */
struct lua_State *lrt_lua_state(struct lrt *rt);

#endif
