/* json: a small, strict JSON parser for the C side, and the canonical form
 * behind event ids. C only looks at a few fields (validation, ids, NowCerts'
 * "status":0); everything else about a payload is Lua's business. */
#ifndef NCGHL_JSON_H
#define NCGHL_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json; /* one parsed value; the root owns the whole tree */

/* Parses exactly one JSON value (RFC 8259, UTF-8, nesting depth <= 256).
 * On error returns NULL and writes a message with the byte offset to err. */
struct json *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(struct json *root);

enum json_type json_type(const struct json *v);
const char *json_type_name(enum json_type t); /* "object", "string", ... */
/* Member of an object by key (last one wins on duplicate keys); NULL if absent
 * or v is not an object. */
const struct json *json_get(const struct json *v, const char *key);
/* Decoded string value (NUL-terminated, may contain no NUL), NULL if not a string. */
const char *json_str(const struct json *v);
bool json_bool(const struct json *v);
double json_num(const struct json *v);
/* Arrays and objects: element count and the i-th element (or member value). */
size_t json_len(const struct json *v);
const struct json *json_at(const struct json *v, size_t i);
const char *json_key_at(const struct json *v, size_t i);
/* Byte lengths: of a string value (0 if not a string), and of the member
 * name of an object's member (0 if v is not one). */
size_t json_str_len(const struct json *v);
size_t json_key_len(const struct json *v);

/* Canonical form: object keys sorted by their UTF-8 bytes (duplicates: last
 * wins), no white space, strings re-escaped minimally (only '"', '\\' and
 * control characters, as \" \\ \b \f \n \r \t or \u00XX), numbers exactly as
 * written. The same document with keys in any order and any spacing gives
 * the same bytes. Returns 0, or -1 when out lets nothing more in. */
int json_canonical(const struct json *v, struct buf *out);

#endif
