/* doctor: the preflight of SPEC section 12, against the live accounts (or
 * the fakes): NowCerts login, GHL token and location, the pipelines, stages
 * and custom fields the mappings name, the routes, the poller's watermarks,
 * the store and PUBLIC_URL. Each check ends as one line, ✓ or ✗ with the
 * fix. `ncghl doctor` prints them; `serve` runs the same checks at start and
 * after each reload, logs every ✗ as a warning and shows them in /health. */
#ifndef NCGHL_DOCTOR_H
#define NCGHL_DOCTOR_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;
struct upstream;
struct store;
struct lrt;
struct doctor;

struct doctor_line {
  bool ok;
  char *text; /* what was checked and what was found */
  char *fix;  /* for a ✗: what to do; NULL for a ✓ */
};

/* Called once, on the loop, when every check has ended. */
typedef void (*doctor_done_cb)(void *ud, struct doctor *d);

/* Starts the checks on base; their upstream calls go through up. store and
 * rt may be NULL (that check then says why it could not run). Everything
 * passed must outlive the doctor. NULL when out of memory. */
struct doctor *doctor_start(struct event_base *base, const struct config *cfg, struct upstream *up,
                            struct store *store, struct lrt *rt, doctor_done_cb done, void *ud);
/* Only after done was called, or after up_free (which ends its calls
 * without calling back). */
void doctor_free(struct doctor *d);
/* The lines so far, in the order of the checks. */
const struct doctor_line *doctor_lines(const struct doctor *d, size_t *n);
/* How many lines are ✗. */
int doctor_failures(const struct doctor *d);

/* `ncghl doctor [--env FILE] [--sandbox]` (argv after the command name).
 * Returns the exit status: 0 all ✓, 1 any ✗, 2 bad usage. */
int doctor_main(int argc, char **argv);

#endif
