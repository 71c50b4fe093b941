#include "allowed.h"

#include <stdio.h>
#include <string.h>

bool allowed_has(const char *const *allowed, const char *s) {
  for (int i = 0; s && allowed[i]; i++)
    if (strcmp(s, allowed[i]) == 0)
      return true;
  return false;
}

void allowed_message(char *msg, size_t len, const char *const *allowed) {
  snprintf(msg, len, "unexpected value; permitted: ");
  for (int i = 0; allowed[i]; i++) {
    size_t used = strlen(msg);
    snprintf(msg + used, len - used, "%s'%s'", i ? ", " : "", allowed[i]);
  }
}
