/* buf: growable byte buffer with a hard size limit (see buf.h).
 *
 * `max` bounds the bytes in use (len), not the allocation: the allocation is
 * at most max + 1 so the terminator always fits. Every multi-step append
 * (printf, JSON strings) remembers where it started and rolls back on
 * failure, so a failed call leaves the buffer exactly as it was. */
#include "buf.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN_CAP 64

void buf_init(struct buf *b, size_t max) {
  b->p = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

void buf_free(struct buf *b) {
  free(b->p);
  buf_init(b, b->max);
}

void buf_reset(struct buf *b) {
  b->len = 0;
  if (b->p)
    b->p[0] = '\0';
}

/* Makes room for `extra` more bytes plus the terminator. Doubling keeps
 * appends amortised O(1); the last step is clamped to max + 1 so a buffer
 * that is allowed max bytes can really hold them. */
static int buf_grow(struct buf *b, size_t extra) {
  if (extra > SIZE_MAX - 1 - b->len)
    return -1;
  size_t need = b->len + extra + 1;
  if (b->max && need - 1 > b->max)
    return -1;
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) {
      cap = need;
      break;
    }
    cap *= 2;
  }
  if (b->max && cap > b->max + 1)
    cap = b->max + 1;
  char *p = realloc(b->p, cap);
  if (!p)
    return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

/* Undoes a partly written append. */
static int buf_rollback(struct buf *b, size_t len) {
  b->len = len;
  if (b->p)
    b->p[len] = '\0';
  return -1;
}

int buf_append(struct buf *b, const void *data, size_t n) {
  if (n == 0)
    return 0;
  /* Fast path first: this is called per token by the canonical writer. */
  bool room = b->p && n < b->cap - b->len && (!b->max || b->len + n <= b->max);
  if (!room && buf_grow(b, n) != 0)
    return -1;
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

int buf_puts(struct buf *b, const char *s) {
  return buf_append(b, s, strlen(s));
}

int buf_putc(struct buf *b, char c) {
  if (!b->p || b->len + 1 >= b->cap || (b->max && b->len >= b->max))
    return buf_append(b, &c, 1);
  b->p[b->len++] = c;
  b->p[b->len] = '\0';
  return 0;
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap) {
  size_t start = b->len;
  if (!b->p && buf_grow(b, 0) != 0)
    return -1;
  va_list ap2;
  va_copy(ap2, ap);
  /* Most formats fit in the room already there: try once in place, and only
   * format a second time when vsnprintf says how much more it needs. */
  size_t room = b->cap - b->len;
  int r = vsnprintf(b->p + b->len, room, fmt, ap);
  if (r < 0) {
    va_end(ap2);
    return buf_rollback(b, start);
  }
  size_t n = (size_t)r;
  if (n >= room) {
    if (buf_grow(b, n) != 0) {
      va_end(ap2);
      return buf_rollback(b, start);
    }
    r = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap2);
    if (r < 0 || (size_t)r != n) {
      va_end(ap2);
      return buf_rollback(b, start);
    }
  } else if (b->max && b->len + n > b->max) {
    /* cap is clamped to max + 1, so this only catches a caller that lowered
     * max after the buffer had grown. */
    va_end(ap2);
    return buf_rollback(b, start);
  }
  va_end(ap2);
  b->len += n;
  return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int r = buf_vprintf(b, fmt, ap);
  va_end(ap);
  return r;
}

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF) starting at s, or 0 if there is none. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  if (c >= 0xC2 && c <= 0xDF)
    return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || (s[2] & 0xC0) != 0x80)
      return 0;
    unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return s[1] >= lo && s[1] <= hi ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
      return 0;
    unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return s[1] >= lo && s[1] <= hi ? 4 : 0;
  }
  return 0;
}

/* The canonical escaping (json.h): only '"', '\\' and C0 controls are
 * escaped; everything else, including DEL and non-ASCII UTF-8, goes out raw.
 * Bytes that are not well-formed UTF-8 cannot come from json_parse, but other
 * callers pass upstream bodies and error texts: each such byte becomes
 * U+FFFD so that the result is always valid JSON. */
int buf_json_str(struct buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *u = (const unsigned char *)s;
  size_t start = b->len;
  /* Typical strings need no escaping: reserve for that case up front, and
   * if the string is plain printable ASCII it is a single copy. */
  if (n > SIZE_MAX - 2 || buf_grow(b, n + 2) != 0)
    return -1;
  size_t plain = 0;
  while (plain < n && u[plain] >= 0x20 && u[plain] < 0x80 && u[plain] != '"' && u[plain] != '\\')
    plain++;
  b->p[b->len++] = '"';
  if (plain) {
    memcpy(b->p + b->len, u, plain);
    b->len += plain;
  }
  if (plain == n) {
    b->p[b->len++] = '"';
    b->p[b->len] = '\0';
    return 0;
  }
  size_t i = plain;
  while (i < n) {
    size_t run = i;
    for (;;) {
      while (run < n && u[run] >= 0x20 && u[run] < 0x80 && u[run] != '"' && u[run] != '\\')
        run++;
      size_t k = run < n && u[run] >= 0x80 ? utf8_seq_len(u + run, n - run) : 0;
      if (k == 0)
        break;
      run += k;
    }
    if (run > i && buf_append(b, u + i, run - i) != 0)
      return buf_rollback(b, start);
    i = run;
    if (i == n)
      break;
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    size_t elen = 2;
    unsigned char c = u[i];
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      if (c < 0x20) {
        memcpy(esc + 1, "u00", 3);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        elen = 6;
      } else { /* a byte of ill-formed UTF-8 */
        memcpy(esc, "\xEF\xBF\xBD", 3);
        elen = 3;
      }
    }
    if (buf_append(b, esc, elen) != 0)
      return buf_rollback(b, start);
    i++;
  }
  if (buf_append(b, "\"", 1) != 0)
    return buf_rollback(b, start);
  return 0;
}

char *buf_steal(struct buf *b) {
  char *p = b->p;
  if (!p) {
    p = malloc(1);
    if (!p)
      return NULL;
    p[0] = '\0';
  }
  buf_init(b, b->max);
  return p;
}
