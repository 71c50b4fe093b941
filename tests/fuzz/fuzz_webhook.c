/* Fuzz target: the checks a webhook passes before it is stored
 * (server_check_webhook: strict parse, the route's required fields, the
 * REST-hook wrapper, the canonical form and the event id). The first byte
 * picks the route, the rest is the body. An accepted body must get a
 * well-formed id, the same one twice, and a non-empty type. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "fuzz.h"
#include "server.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

static const struct {
  const char *path, *hook, *source;
} routes[] = {
    {"/api/v1/webhooks/nowcerts", NULL, "nowcerts"},
    {"/api/v1/webhooks/ghl", NULL, "ghl"},
    {"/api/v1/sync/manual", NULL, "manual"},
    {"/api/v1/webhooks/nowcerts", "CreateInsured", "nowcerts"},
    {"/api/v1/webhooks/nowcerts", "UpdatePolicy", "nowcerts"},
    {"/api/v1/webhooks/nowcerts", "NoSuchHook", "nowcerts"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t r = data[0] % (sizeof routes / sizeof *routes);
  const char *body = (const char *)data + 1;
  size_t len = size - 1;
  char type[256], id[EVENT_ID_MAX], type2[256], id2[EVENT_ID_MAX];
  int code = server_check_webhook(routes[r].path, routes[r].hook, body, len, type, sizeof type, id);
  int code2 =
      server_check_webhook(routes[r].path, routes[r].hook, body, len, type2, sizeof type2, id2);
  if (code != code2)
    abort();
  if (code != 0) {
    if (code != 400 && code != 422)
      abort(); /* 404 cannot happen for these paths; 500 is out of memory */
    if (routes[r].hook && strcmp(routes[r].hook, "NoSuchHook") == 0 && code != 422)
      abort();
    return 0;
  }
  if (routes[r].hook && strcmp(routes[r].hook, "NoSuchHook") == 0)
    abort(); /* an unknown hook name must never be stored */
  size_t sl = strlen(routes[r].source);
  if (strncmp(id, routes[r].source, sl) != 0 || id[sl] != '_' || strlen(id) != sl + 1 + 64)
    abort();
  for (size_t i = sl + 1; id[i]; i++)
    if (!isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i]))
      abort();
  if (strcmp(id, id2) != 0 || strcmp(type, type2) != 0)
    abort();
  return 0;
}
