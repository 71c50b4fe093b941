/* digest: SHA-256 and event ids, through OpenSSL. */
#ifndef NCGHL_DIGEST_H
#define NCGHL_DIGEST_H

#include <stddef.h>

#define DIGEST_HEX_LEN 64
/* An event id: "<source>_" + 64 hex digits; sources are short names. */
#define EVENT_ID_MAX 96

void digest_sha256_hex(const void *data, size_t len, char out[DIGEST_HEX_LEN + 1]);
/* id = source + "_" + hex(sha256(source + "\n" + canonical_payload)). */
void digest_event_id(const char *source, const char *canonical, size_t len, char out[EVENT_ID_MAX]);

#endif
