/* The corpus replay driver: runs a fuzz target's LLVMFuzzerTestOneInput once
 * on every file named on the command line (a directory: every file in it),
 * so the ordinary gcc suite checks each corpus without libFuzzer. Exits 0
 * when every input ran; a crash is the target's own. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return -1;
  }
  size_t cap = 4096, len = 0;
  uint8_t *data = malloc(cap);
  size_t n;
  while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) {
      uint8_t *bigger = realloc(data, cap *= 2);
      if (!bigger)
        free(data);
      data = bigger;
    }
  }
  fclose(f);
  if (!data) {
    fprintf(stderr, "replay: out of memory reading %s\n", path);
    return -1;
  }
  /* An exact-size copy, so ASan sees a read past the input's end. */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) {
    free(data);
    return -1;
  }
  memcpy(exact, data, len);
  free(data);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files in sorted order, so a failure reproduces the same way each run. */
static int run_dir(const char *dir, int *count) {
  DIR *d = opendir(dir);
  if (!d)
    return -1;
  char **names = NULL;
  size_t n = 0;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.')
      continue;
    char **more = realloc(names, (n + 1) * sizeof *names);
    if (!more) {
      rc = -1;
      break;
    }
    names = more;
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp);
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (rc == 0 && run_file(path) != 0)
      rc = -1;
    (*count)++;
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
    return 2;
  }
  LLVMFuzzerInitialize(&argc, &argv);
  int count = 0, rc = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: %s: no such file or directory\n", argv[i]);
      rc = 1;
    } else if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &count) != 0 : (count++, run_file(argv[i]) != 0)) {
      rc = 1;
    }
  }
  /* An empty corpus would make this check pass without checking anything. */
  if (count == 0) {
    fprintf(stderr, "replay: no inputs found\n");
    rc = 1;
  }
  printf("replay: %d inputs, %s\n", count, rc ? "FAILED" : "ok");
  return rc;
}
