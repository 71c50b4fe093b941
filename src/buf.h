/* buf: a growable byte buffer that knows its own limit.
 * Every append either fits under `max` or fails cleanly (-1) without
 * touching what is already there, so an oversized input never eats memory. */
#ifndef NCGHL_BUF_H
#define NCGHL_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
  char *p;    /* NUL-terminated once anything was appended; NULL before */
  size_t len; /* bytes used, excluding the terminator */
  size_t cap; /* bytes allocated */
  size_t max; /* 0 = no limit */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b); /* len = 0, keeps the allocation */
int buf_append(struct buf *b, const void *data, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes included. */
int buf_json_str(struct buf *b, const char *s, size_t n);
/* Hands the bytes to the caller (always NUL-terminated, "" if empty). */
char *buf_steal(struct buf *b);

#endif
