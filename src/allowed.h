/* allowed: a value checked against a fixed list of words (a route's enum, a
 * filter's statuses), and the FastAPI-style message that names the list, so
 * the webhook routes and the admin API refuse a wrong word the same way. */
#ifndef NCGHL_ALLOWED_H
#define NCGHL_ALLOWED_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s is one of allowed (NULL-terminated); false for s == NULL. */
bool allowed_has(const char *const *allowed, const char *s);
/* "unexpected value; permitted: 'a', 'b'" into msg (cut to len). */
void allowed_message(char *msg, size_t len, const char *const *allowed);

#endif
