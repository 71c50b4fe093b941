/* ascase: `ncghl events --as-case ID` turns a stored event into the
 * skeleton of a mapping test case (docs/mapping-guide.md, "Test cases"):
 * its body as a Lua table, the requests its last run made as the expected
 * requests, and its outcome, for an agency to complete with the upstream's
 * answers and save under MAPPINGS_DIR/tests. */
#ifndef NCGHL_ASCASE_H
#define NCGHL_ASCASE_H

#include <stdio.h>

struct config;
struct store;

/* Writes the case file for event `id` of store s to out. Returns 0, 1 when
 * there is no such event, -1 when the store cannot be read. */
int ascase_write(FILE *out, const struct config *cfg, struct store *s, const char *id);

#endif
