/* openapi: the service's own description (GET /openapi.json), kept as
 * src/openapi.json and compiled in at build time (scripts/embed.py), so the
 * binary needs nothing installed beside it and the document stays a JSON
 * file people can read and edit. */
#ifndef NCGHL_OPENAPI_H
#define NCGHL_OPENAPI_H

#include <stddef.h>

extern const char openapi_json[];     /* NUL-terminated, the version filled in */
extern const size_t openapi_json_len; /* without the NUL */

#endif
