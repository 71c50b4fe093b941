/* url: see url.h. */
#include "url.h"

#include <stdio.h>
#include <string.h>

bool url_password(const char *url, const char **p, size_t *n) {
  const char *auth = url ? strstr(url, "://") : NULL;
  if (!auth)
    return false;
  auth += 3;
  size_t end = strcspn(auth, "/?#"); /* the authority */
  const char *at = memchr(auth, '@', end);
  const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
  if (!colon || at - colon < 2)
    return false;
  *p = colon + 1;
  *n = (size_t)(at - colon - 1);
  return true;
}

void url_display(const char *url, char *out, size_t outlen) {
  const char *p;
  size_t n;
  if (!outlen)
    return;
  if (!url_password(url, &p, &n))
    snprintf(out, outlen, "%s", url ? url : "");
  else
    snprintf(out, outlen, "%.*s***%s", (int)(p - url), url, p + n);
}
