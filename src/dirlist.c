/* One sorted listing shared by the runtime's script loader and the offline
 * runner's case finder. */
#include "dirlist.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int dirlist_read(const char *dir, char ***names, size_t *n) {
  *names = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (!d)
    return -1;
  char **v = NULL;
  size_t len = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.')
      continue;
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 32;
      char **nv = realloc(v, ncap * sizeof *nv);
      if (!nv)
        goto oom;
      v = nv;
      cap = ncap;
    }
    if (!(v[len] = strdup(de->d_name)))
      goto oom;
    len++;
  }
  closedir(d);
  if (len)
    qsort(v, len, sizeof *v, cmp_names);
  *names = v;
  *n = len;
  return 0;
oom:
  closedir(d);
  dirlist_free(v, len);
  errno = ENOMEM;
  return -1;
}

void dirlist_free(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}
