/* Fuzz target: the .env parser and the validation of every value
 * (config_load with --env FILE). The input is written to a file and loaded
 * as an operator's .env would be. It must either load or fail with one
 * non-empty line naming the problem, and never crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

#ifndef NCGHL_SOURCE_DIR
#define NCGHL_SOURCE_DIR "."
#endif

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  /* Relative defaults (mappings, lua, keys/) resolve as in a checkout, and
   * nothing in the fuzzer's own environment decides a value. */
  if (chdir(NCGHL_SOURCE_DIR) != 0)
    abort();
  static const char *const vars[] = {"HOST", "PORT", "LOG_LEVEL", "LOG_FILE", "DB_PATH",
                                     "MAPPINGS_DIR", "LUA_DIR", "DEBUG", NULL};
  for (int i = 0; vars[i]; i++)
    unsetenv(vars[i]);
  snprintf(path, sizeof path, "/tmp/ncghl-fuzz-env-%ld", (long)getpid());
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f)
    abort();
  if (size && fwrite(data, 1, size, f) != size)
    abort();
  fclose(f);
  struct config c;
  char err[512] = "";
  int rc = config_load(&c, path, false, err, sizeof err);
  if (rc != 0 && (!*err || strchr(err, '\n'))) {
    fprintf(stderr, "fuzz_env: a failure without one clear line: '%s'\n", err);
    abort();
  }
  if (rc == 0) {
    if (c.port < 1 || c.port > 65535 || c.max_retries < 0 || c.retry_initial_delay < 0 ||
        !c.db_path || !c.mappings_dir)
      abort();
  }
  config_free(&c);
  unlink(path);
  return 0;
}
