/* url: the part of a URL that must never be shown. Base URLs and store URLs
 * may carry a password in their user-info (scheme://user:password@host);
 * messages show it masked and the log takes it as a secret. */
#ifndef NCGHL_URL_H
#define NCGHL_URL_H

#include <stdbool.h>
#include <stddef.h>

/* The password of url's user-info: true with *p (inside url) and *n set;
 * false when it has none (no user-info, no ':' in it, or an empty one). An
 * '@' after the authority (in the path or query) is not user-info. */
bool url_password(const char *url, const char **p, size_t *n);
/* url as a message may show it: that password as "***". */
void url_display(const char *url, char *out, size_t outlen);

#endif
