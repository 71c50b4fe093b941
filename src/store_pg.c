#include "store_backend.h"
struct store *store_pg_open(const char *url, char *err, size_t errlen) {
  store_set_err(err, errlen, "%s", "not yet");
  (void)url;
  return NULL;
}
