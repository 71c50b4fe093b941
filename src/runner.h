/* runner: mapping test cases, run offline (SPEC section 1, "mappings are
 * testable offline"). A case is a webhook body, the upstream answers the
 * mapping gets (fixtures; anything else gets a default answer that finds
 * nothing and lets writes succeed) and what should happen: the outcome, the
 * requests in order, the route's data. Cases run on the real runtime (the
 * same sandbox, coroutines and yields as the service) with no network, no
 * store and no event loop: links and fingerprints live in memory, calls are
 * answered from inside ncghl.call and the runtime is drained synchronously.
 *
 * It backs `ncghl check`, `ncghl test`, `ncghl map` and the check that
 * lrt_reload runs before it swaps in new scripts. The case format is in
 * docs/mapping-guide.md. */
#ifndef NCGHL_RUNNER_H
#define NCGHL_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;
struct event_base;
struct lrt;
struct lrt_host;
struct runner;

/* Makes the runtime a runner uses, on the host the runner hands it (its
 * fixtures as `start`, no store). NULL means lrt_new, which reads the
 * scripts from cfg's directories; lrt_reload passes one that builds from the
 * bytes it already read. */
typedef struct lrt *(*runner_build_fn)(void *ud, const struct lrt_host *host, char *err,
                                       size_t errlen);

/* base may be NULL (the runner makes its own; it never runs a loop on it).
 * On a broken script returns NULL with "file:line: message" in err. cfg must
 * outlive the runner. */
struct runner *runner_new(const struct config *cfg, struct event_base *base, runner_build_fn build,
                          void *build_ud, char *err, size_t errlen);
void runner_free(struct runner *r);
/* The version (hash) of the scripts the runner loaded. */
const char *runner_version(const struct runner *r);

/* Loads the cases of one file. Returns how many, or -1 with
 * "file:line: message" (a syntax error, a case that is not well formed). */
int runner_load_file(struct runner *r, const char *path, char *err, size_t errlen);
/* Every *.lua under dir, recursively, in name order. A directory that does
 * not exist holds no cases (0). Returns how many cases, or -1 as above. */
int runner_load_dir(struct runner *r, const char *dir, char *err, size_t errlen);
int runner_case_count(const struct runner *r);

struct runner_report {
  int passed, failed; /* of the first round */
  long runs;          /* cases run in all rounds */
  double seconds;     /* wall time of all rounds */
};

/* Runs every loaded case `rounds` times (>= 1). When out is not NULL it gets,
 * for the first round, "ok   <file>: <name>" or "FAIL <file>: <name>" and the
 * diff (expected against actual) per case. first (may be NULL) gets the first
 * failure as one line: "file:line: case "name": the first difference".
 * Returns 0 when every run of every case passed, 1 otherwise. */
int runner_run(struct runner *r, int rounds, FILE *out, struct runner_report *rep, char *first,
               size_t firstlen);

/* A dry run of one webhook body from `source` ("nowcerts", "ghl" or
 * "manual"): prints, as indented JSON, the requests the mapping makes (with
 * the answers it got), the outcome, the data and, for every field map
 * applied, which source field filled which target field. fixtures_path (may
 * be NULL) is a case file whose first case lends its answers, links and
 * fingerprints. Returns 0, or -1 with a one-line reason. */
int runner_map(struct runner *r, const char *source, const char *body, size_t len,
               const char *fixtures_path, FILE *out, char *err, size_t errlen);

/* The mapping lint (lua/ncghl/lint.lua) over the loaded scripts and cases:
 * prints "file:line: message" for each map target the upstream does not
 * accept (with a did-you-mean) and "file:line: warning: message" for each
 * source path no case body has. Returns how many targets were wrong;
 * *warnings (may be NULL) gets how many paths. */
int runner_lint(struct runner *r, FILE *out, int *warnings);

/* lrt_reload's check: a runner on the runtime `build` makes, with every case
 * under cfg->mappings_dir/tests. 0 when they all pass (*ncases gets how many;
 * no case directory means none), else -1 with the first problem in err. */
int runner_check(const struct config *cfg, struct event_base *base, runner_build_fn build,
                 void *build_ud, int *ncases, char *err, size_t errlen);

/* The command line: ncghl check / test / map (argv after the command name).
 * They return the process's exit code. */
int runner_cmd_check(int argc, char **argv);
int runner_cmd_test(int argc, char **argv);
int runner_cmd_map(int argc, char **argv);

#endif
