/* Fuzz target: the strict JSON parser and the canonical form behind event
 * ids (src/json.c). Beyond "no crash", it checks the canonical form's own
 * promises: it parses again, and canonicalising it again changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "fuzz.h"
#include "json.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

/* Walks every accessor, as the server and upstream code do. */
static void walk(const struct json *v, int depth) {
  if (depth > 300)
    abort(); /* the parser promises nesting <= 256 */
  switch (json_type(v)) {
  case JSON_STRING:
    if (!json_str(v))
      abort();
    (void)strlen(json_str(v));
    break;
  case JSON_NUMBER:
    (void)json_num(v);
    break;
  case JSON_BOOL:
    (void)json_bool(v);
    break;
  case JSON_OBJECT:
    for (size_t i = 0; i < json_len(v); i++) {
      const char *k = json_key_at(v, i);
      if (!k || !json_get(v, k))
        abort();
      walk(json_at(v, i), depth + 1);
    }
    break;
  case JSON_ARRAY:
    for (size_t i = 0; i < json_len(v); i++)
      walk(json_at(v, i), depth + 1);
    break;
  case JSON_NULL:
    break;
  }
  (void)json_type_name(json_type(v));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[160];
  struct json *root = json_parse((const char *)data, size, err, sizeof err);
  if (!root) {
    if (!memchr(err, 0, sizeof err))
      abort();
    return 0;
  }
  walk(root, 0);
  struct buf c1, c2;
  buf_init(&c1, 0);
  buf_init(&c2, 0);
  if (json_canonical(root, &c1) != 0)
    abort();
  struct json *again = json_parse(c1.p ? c1.p : "", c1.len, err, sizeof err);
  if (!again) {
    fprintf(stderr, "canonical form does not parse: %s\n", err);
    abort();
  }
  if (json_canonical(again, &c2) != 0 || c1.len != c2.len || memcmp(c1.p, c2.p, c1.len) != 0) {
    fprintf(stderr, "canonical form is not stable\n");
    abort();
  }
  json_free(again);
  json_free(root);
  buf_free(&c1);
  buf_free(&c2);
  return 0;
}
