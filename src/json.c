/* json: strict RFC 8259 parser into an arena, and the canonical form.
 *
 * A parsed document is one allocation holding the root node and a first
 * arena region sized from the input; nodes, decoded strings and number
 * lexemes are bump-allocated from it (more regions are chained only for
 * node-heavy inputs), so json_free is a walk over a handful of blocks.
 * Container children are collected on a scratch stack while they are parsed
 * and copied into the arena as one contiguous array when the container
 * closes, which keeps json_at O(1).
 *
 * Objects also get, at parse time, an array of member pointers sorted by
 * (key bytes, position). The canonical form, which every webhook needs for
 * its event id, then sorts nothing, and "last duplicate wins" is simply the
 * last entry of a run of equal keys.
 *
 * Strictness choices worth knowing:
 * - error offsets are 0-based byte offsets into the input, and messages never
 *   quote input bytes (they go back to API clients in 422 answers);
 * - decoded strings may not contain NUL (from "\u0000"): json_str() hands out
 *   C strings, and a NUL would silently cut them, so it is an error;
 * - numbers outside double range are accepted (the lexeme is what the
 *   canonical form uses); json_num() then gives +-HUGE_VAL;
 * - a byte order mark is not white space, so it is rejected. */
#include "json.h"

#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 256
#define JSON_STACK_INLINE 32

struct json {
  const char *key; /* member name when inside an object, else NULL */
  union {
    const char *s;     /* string: decoded bytes; number: the lexeme */
    struct json *kids; /* array elements / object members, document order */
  } u;
  union {
    double d;             /* number value */
    struct json **sorted; /* object of >= 2 members: by (key, position) */
  } x;
  uint32_t n;    /* string bytes, lexeme bytes, or number of children */
  uint32_t klen; /* key bytes */
  unsigned char type;
  bool b;
  bool plain;  /* string: printable ASCII without '"' or '\\', so the
                * canonical form is the bytes between two quotes */
  bool kplain; /* the same for the key */
};

struct arena_block {
  struct arena_block *next;
  size_t cap; /* the region follows the header */
};

struct json_doc {
  struct json root; /* first member: a root pointer is a doc pointer */
  struct arena_block *blocks;
};

struct parser {
  const unsigned char *s;
  size_t len, pos;
  char *cur; /* arena bump pointer and bytes left behind it */
  size_t left;
  size_t next_block;
  struct json_doc *doc;
  struct json *stk; /* children of the containers being parsed: on the C */
  size_t nstk;      /* stack until they outgrow it, then on the heap */
  size_t capstk;
  bool stk_heap;
  char *err;
  size_t errlen;
};

static int fail(struct parser *p, size_t at, const char *what) {
  if (p->errlen)
    snprintf(p->err, p->errlen, "%s at byte %zu", what, at);
  return -1;
}

static int fail_oom(struct parser *p) {
  if (p->errlen)
    snprintf(p->err, p->errlen, "out of memory");
  return -1;
}

/* Nodes need pointer alignment; strings take any byte. */
static void *arena_alloc(struct parser *p, size_t size, bool align) {
  size_t pad = align ? (size_t)(-(uintptr_t)p->cur & (sizeof(void *) - 1)) : 0;
  if (size > p->left || pad > p->left - size) {
    size_t cap = p->next_block;
    if (cap < size)
      cap = size;
    if (cap > SIZE_MAX - sizeof(struct arena_block))
      return NULL;
    struct arena_block *blk = malloc(sizeof *blk + cap);
    if (!blk)
      return NULL;
    blk->cap = cap;
    blk->next = p->doc->blocks;
    p->doc->blocks = blk;
    p->cur = (char *)(blk + 1);
    p->left = cap;
    pad = 0; /* malloc'd, and the header is two words */
    if (cap <= SIZE_MAX / 2)
      p->next_block = cap * 2;
  }
  void *r = p->cur + pad;
  p->cur += pad + size;
  p->left -= pad + size;
  return r;
}

static int push(struct parser *p, const struct json *v) {
  if (p->nstk == p->capstk) {
    if (p->capstk > SIZE_MAX / 2 / sizeof *p->stk)
      return fail_oom(p);
    size_t cap = p->capstk * 2;
    struct json *n;
    if (p->stk_heap) {
      n = realloc(p->stk, cap * sizeof *n);
    } else {
      n = malloc(cap * sizeof *n);
      if (n)
        memcpy(n, p->stk, p->nstk * sizeof *n);
    }
    if (!n)
      return fail_oom(p);
    p->stk = n;
    p->capstk = cap;
    p->stk_heap = true;
  }
  p->stk[p->nstk++] = *v;
  return 0;
}

static void skip_ws(struct parser *p) {
  while (p->pos < p->len) {
    unsigned char c = p->s[p->pos];
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
      break;
    p->pos++;
  }
}

/* 1 for the bytes a string can hold as they are and that the canonical form
 * writes as they are: printable ASCII but '"' and '\\' (the rest is 0). */
static const unsigned char plain_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static bool is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
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

static int hex_val(unsigned char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* The four hex digits after "\u" at s[i]; -1 if they are not there. */
static long hex4(const unsigned char *s, size_t i, size_t end) {
  if (end - i < 6 || s[i] != '\\' || s[i + 1] != 'u')
    return -1;
  long v = 0;
  for (size_t k = i + 2; k < i + 6; k++) {
    int h = hex_val(s[k]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  return v;
}

static size_t utf8_put(char *d, unsigned long cp) {
  if (cp < 0x80) {
    d[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    d[0] = (char)(0xC0 | (cp >> 6));
    d[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    d[0] = (char)(0xE0 | (cp >> 12));
    d[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    d[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  d[0] = (char)(0xF0 | (cp >> 18));
  d[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  d[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  d[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Escapes in s[i..end): writes the decoded bytes to d. Decoding never
 * lengthens a string (an escape is at least as long as what it stands for),
 * so d has room for end - i bytes. */
static int decode_escaped(struct parser *p, size_t i, size_t end, char *d, size_t *outlen) {
  const unsigned char *s = p->s;
  size_t o = 0;
  while (i < end) {
    unsigned char c = s[i];
    if (c < 0x80 && c != '\\') {
      d[o++] = (char)c;
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t k = utf8_seq_len(s + i, end - i);
      if (k == 0)
        return fail(p, i, "invalid UTF-8");
      memcpy(d + o, s + i, k);
      o += k;
      i += k;
      continue;
    }
    /* A backslash always has a byte after it before `end`: the scan that
     * found the closing quote skipped escaped characters. */
    char simple;
    switch (s[i + 1]) {
    case '"': simple = '"'; break;
    case '\\': simple = '\\'; break;
    case '/': simple = '/'; break;
    case 'b': simple = '\b'; break;
    case 'f': simple = '\f'; break;
    case 'n': simple = '\n'; break;
    case 'r': simple = '\r'; break;
    case 't': simple = '\t'; break;
    case 'u': simple = 0; break;
    default: return fail(p, i, "invalid escape");
    }
    if (simple) {
      d[o++] = simple;
      i += 2;
      continue;
    }
    long cp = hex4(s, i, end);
    if (cp < 0)
      return fail(p, i, "invalid \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      long lo = hex4(s, i + 6, end);
      if (lo < 0xDC00 || lo > 0xDFFF)
        return fail(p, i, "lone surrogate");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      i += 12;
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      return fail(p, i, "lone surrogate");
    } else {
      if (cp == 0)
        return fail(p, i, "NUL in string");
      i += 6;
    }
    o += utf8_put(d + o, (unsigned long)cp);
  }
  *outlen = o;
  return 0;
}

/* p->pos is on the opening quote. First find the closing quote (rejecting
 * raw control characters on the way); a string of plain ASCII, the common
 * case, is then one memcpy, anything else goes through the decoder. */
static int parse_string(struct parser *p, const char **out, uint32_t *outlen, bool *is_plain) {
  const unsigned char *s = p->s;
  size_t start = p->pos, i = start + 1;
  bool plain = true;
  for (;;) {
    while (i < p->len && plain_byte[s[i]])
      i++;
    if (i >= p->len)
      return fail(p, start, "unterminated string");
    unsigned char c = s[i];
    if (c == '"')
      break;
    if (c == '\\') {
      plain = false;
      i += 2;
    } else if (c < 0x20) {
      return fail(p, i, "control character in string");
    } else {
      plain = false;
      i++;
    }
  }
  size_t raw = i - start - 1;
  char *d = arena_alloc(p, raw + 1, false);
  if (!d)
    return fail_oom(p);
  size_t n = raw;
  if (plain)
    memcpy(d, s + start + 1, raw);
  else if (decode_escaped(p, start + 1, i, d, &n) != 0)
    return -1;
  d[n] = '\0';
  *out = d;
  *outlen = (uint32_t)n;
  *is_plain = plain;
  p->pos = i + 1;
  return 0;
}

/* strtod honours LC_NUMERIC; if the process (or a library) switched it to
 * a locale with a decimal comma, "1.5" would parse as 1. */
static double lexeme_to_double(const char *lex, size_t n) {
  const char *dp = localeconv()->decimal_point;
  const char *dot = memchr(lex, '.', n);
  if (!dot || (dp[0] == '.' && dp[1] == '\0'))
    return strtod(lex, NULL);
  size_t dplen = strlen(dp), need = n - 1 + dplen + 1;
  char small[128];
  char *tmp = need <= sizeof small ? small : malloc(need);
  if (!tmp)
    return strtod(lex, NULL);
  size_t at = (size_t)(dot - lex);
  memcpy(tmp, lex, at);
  memcpy(tmp + at, dp, dplen);
  memcpy(tmp + at + dplen, dot + 1, n - at); /* includes the NUL */
  double d = strtod(tmp, NULL);
  if (tmp != small)
    free(tmp);
  return d;
}

static int parse_number(struct parser *p, struct json *out) {
  const unsigned char *s = p->s;
  size_t start = p->pos, i = start;
  bool integral = true;
  if (s[i] == '-')
    i++;
  if (i >= p->len || !is_digit(s[i]))
    return fail(p, i, "expected digit");
  if (s[i] == '0') {
    i++;
    if (i < p->len && is_digit(s[i]))
      return fail(p, i - 1, "leading zero in number");
  } else {
    while (i < p->len && is_digit(s[i]))
      i++;
  }
  if (i < p->len && s[i] == '.') {
    integral = false;
    i++;
    if (i >= p->len || !is_digit(s[i]))
      return fail(p, i, "expected digit");
    while (i < p->len && is_digit(s[i]))
      i++;
  }
  if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
    integral = false;
    i++;
    if (i < p->len && (s[i] == '+' || s[i] == '-'))
      i++;
    if (i >= p->len || !is_digit(s[i]))
      return fail(p, i, "expected digit");
    while (i < p->len && is_digit(s[i]))
      i++;
  }
  size_t n = i - start;
  char *lex = arena_alloc(p, n + 1, false);
  if (!lex)
    return fail_oom(p);
  memcpy(lex, s + start, n);
  lex[n] = '\0';
  out->type = JSON_NUMBER;
  out->u.s = lex;
  out->n = (uint32_t)n;
  bool neg = lex[0] == '-';
  if (integral && n - neg <= 15) {
    /* Up to 15 digits is exact in a double: skip strtod for the usual ids
     * and amounts. */
    int64_t v = 0;
    for (size_t k = neg; k < n; k++)
      v = v * 10 + (lex[k] - '0');
    out->x.d = neg ? -(double)v : (double)v;
  } else {
    out->x.d = lexeme_to_double(lex, n);
  }
  p->pos = i;
  return 0;
}

static int parse_literal(struct parser *p, struct json *out, const char *word, size_t n) {
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
    return fail(p, p->pos, "invalid literal");
  p->pos += n;
  out->type = word[0] == 'n' ? JSON_NULL : JSON_BOOL;
  out->b = word[0] == 't';
  return 0;
}

static int key_cmp(const struct json *a, const char *key, size_t klen) {
  size_t m = a->klen < klen ? a->klen : klen;
  int c = memcmp(a->key, key, m);
  if (c)
    return c;
  return (a->klen > klen) - (a->klen < klen);
}

/* Members are contiguous in document order, so the address breaks ties
 * between duplicate keys: the last one sorts last. */
static int member_cmp(const struct json *a, const struct json *b) {
  int c = key_cmp(a, b->key, b->klen);
  if (c)
    return c;
  return (a > b) - (a < b);
}

static int member_qsort_cmp(const void *a, const void *b) {
  return member_cmp(*(struct json *const *)a, *(struct json *const *)b);
}

static void sort_members(struct json **m, size_t n) {
  if (n > 16) {
    qsort(m, n, sizeof *m, member_qsort_cmp);
    return;
  }
  /* Webhook objects are small, and often already in order. */
  for (size_t i = 1; i < n; i++) {
    struct json *v = m[i];
    size_t j = i;
    while (j > 0 && member_cmp(m[j - 1], v) > 0) {
      m[j] = m[j - 1];
      j--;
    }
    m[j] = v;
  }
}

/* Moves the children pushed since `base` into the arena. */
static int close_container(struct parser *p, struct json *out, size_t base) {
  size_t n = p->nstk - base;
  if (n > UINT32_MAX || n > SIZE_MAX / sizeof(struct json))
    return fail_oom(p);
  out->n = (uint32_t)n;
  if (n == 0)
    return 0;
  struct json *kids = arena_alloc(p, n * sizeof *kids, true);
  if (!kids)
    return fail_oom(p);
  memcpy(kids, p->stk + base, n * sizeof *kids);
  p->nstk = base;
  out->u.kids = kids;
  if (out->type == JSON_OBJECT && n >= 2) {
    struct json **sorted = arena_alloc(p, n * sizeof *sorted, true);
    if (!sorted)
      return fail_oom(p);
    for (size_t i = 0; i < n; i++)
      sorted[i] = &kids[i];
    sort_members(sorted, n);
    out->x.sorted = sorted;
  }
  return 0;
}

static int parse_value(struct parser *p, struct json *out, unsigned depth);

/* `depth` counts the containers around this one. */
static int parse_array(struct parser *p, struct json *out, unsigned depth) {
  if (depth >= JSON_MAX_DEPTH)
    return fail(p, p->pos, "nesting deeper than 256");
  p->pos++;
  out->type = JSON_ARRAY;
  size_t base = p->nstk;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == ']') {
    p->pos++;
    return close_container(p, out, base);
  }
  for (;;) {
    struct json child = {.key = NULL};
    if (parse_value(p, &child, depth + 1) != 0 || push(p, &child) != 0)
      return -1;
    skip_ws(p);
    if (p->pos >= p->len)
      return fail(p, p->pos, "unexpected end of input");
    unsigned char c = p->s[p->pos++];
    if (c == ']')
      break;
    if (c != ',')
      return fail(p, p->pos - 1, "expected ',' or ']'");
  }
  return close_container(p, out, base);
}

static int parse_object(struct parser *p, struct json *out, unsigned depth) {
  if (depth >= JSON_MAX_DEPTH)
    return fail(p, p->pos, "nesting deeper than 256");
  p->pos++;
  out->type = JSON_OBJECT;
  size_t base = p->nstk;
  skip_ws(p);
  if (p->pos < p->len && p->s[p->pos] == '}') {
    p->pos++;
    return close_container(p, out, base);
  }
  for (bool first = true;; first = false) {
    skip_ws(p);
    if (p->pos >= p->len)
      return fail(p, p->pos, "unexpected end of input");
    if (p->s[p->pos] != '"')
      return fail(p, p->pos, first ? "expected string or '}'" : "expected string");
    struct json child = {.key = NULL};
    if (parse_string(p, &child.key, &child.klen, &child.kplain) != 0)
      return -1;
    skip_ws(p);
    if (p->pos >= p->len)
      return fail(p, p->pos, "unexpected end of input");
    if (p->s[p->pos] != ':')
      return fail(p, p->pos, "expected ':'");
    p->pos++;
    if (parse_value(p, &child, depth + 1) != 0 || push(p, &child) != 0)
      return -1;
    skip_ws(p);
    if (p->pos >= p->len)
      return fail(p, p->pos, "unexpected end of input");
    unsigned char c = p->s[p->pos++];
    if (c == '}')
      break;
    if (c != ',')
      return fail(p, p->pos - 1, "expected ',' or '}'");
  }
  return close_container(p, out, base);
}

static int parse_value(struct parser *p, struct json *out, unsigned depth) {
  skip_ws(p);
  if (p->pos >= p->len)
    return fail(p, p->pos, "unexpected end of input");
  unsigned char c = p->s[p->pos];
  switch (c) {
  case '{':
    return parse_object(p, out, depth);
  case '[':
    return parse_array(p, out, depth);
  case '"':
    out->type = JSON_STRING;
    return parse_string(p, &out->u.s, &out->n, &out->plain);
  case 't':
    return parse_literal(p, out, "true", 4);
  case 'f':
    return parse_literal(p, out, "false", 5);
  case 'n':
    return parse_literal(p, out, "null", 4);
  default:
    if (c == '-' || is_digit(c))
      return parse_number(p, out);
    return fail(p, p->pos, "expected value");
  }
}

struct json *json_parse(const char *text, size_t len, char *err, size_t errlen) {
  if (!err)
    errlen = 0;
  if (errlen)
    err[0] = '\0';
  if (!text)
    len = 0;
  if (len > UINT32_MAX - 1 || len > (SIZE_MAX - 256 - sizeof(struct json_doc)) / 2) {
    if (errlen)
      snprintf(err, errlen, "document too large");
    return NULL;
  }
  /* One region that fits a typical payload (strings plus a node per ~20
   * bytes); node-dense inputs chain a few doubling blocks behind it. */
  size_t first = len * 2 + 256;
  struct json_doc *doc = malloc(sizeof *doc + first);
  if (!doc) {
    if (errlen)
      snprintf(err, errlen, "out of memory");
    return NULL;
  }
  memset(&doc->root, 0, sizeof doc->root);
  doc->blocks = NULL;
  struct json small[JSON_STACK_INLINE];
  struct parser p = {
      .s = (const unsigned char *)(text ? text : ""),
      .len = len,
      .cur = (char *)(doc + 1),
      .left = first,
      .next_block = first,
      .doc = doc,
      .stk = small,
      .capstk = JSON_STACK_INLINE,
      .err = err,
      .errlen = errlen,
  };

  int r = parse_value(&p, &doc->root, 0);
  if (r == 0) {
    skip_ws(&p);
    if (p.pos != p.len)
      r = fail(&p, p.pos, "unexpected data after value");
  }
  if (p.stk_heap)
    free(p.stk);
  if (r != 0) {
    json_free(&doc->root);
    return NULL;
  }
  return &doc->root;
}

void json_free(struct json *root) {
  if (!root)
    return;
  struct json_doc *doc = (struct json_doc *)root;
  struct arena_block *b = doc->blocks;
  while (b) {
    struct arena_block *next = b->next;
    free(b);
    b = next;
  }
  free(doc);
}

enum json_type json_type(const struct json *v) {
  return v ? (enum json_type)v->type : JSON_NULL;
}

const char *json_type_name(enum json_type t) {
  switch (t) {
  case JSON_NULL: return "null";
  case JSON_BOOL: return "boolean";
  case JSON_NUMBER: return "number";
  case JSON_STRING: return "string";
  case JSON_ARRAY: return "array";
  case JSON_OBJECT: return "object";
  }
  return "unknown";
}

const struct json *json_get(const struct json *v, const char *key) {
  if (!v || v->type != JSON_OBJECT || !key || v->n == 0)
    return NULL;
  size_t klen = strlen(key);
  if (v->n < 8) {
    for (size_t i = v->n; i-- > 0;)
      if (key_cmp(&v->u.kids[i], key, klen) == 0)
        return &v->u.kids[i];
    return NULL;
  }
  /* Upper bound of key in the sorted members; the entry before it is the
   * last duplicate if the key is there at all. */
  size_t lo = 0, hi = v->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (key_cmp(v->x.sorted[mid], key, klen) <= 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo > 0 && key_cmp(v->x.sorted[lo - 1], key, klen) == 0)
    return v->x.sorted[lo - 1];
  return NULL;
}

const char *json_str(const struct json *v) {
  return v && v->type == JSON_STRING ? v->u.s : NULL;
}

bool json_bool(const struct json *v) {
  return v && v->type == JSON_BOOL && v->b;
}

double json_num(const struct json *v) {
  return v && v->type == JSON_NUMBER ? v->x.d : 0.0;
}

size_t json_len(const struct json *v) {
  return v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) ? v->n : 0;
}

const struct json *json_at(const struct json *v, size_t i) {
  return i < json_len(v) ? &v->u.kids[i] : NULL;
}

const char *json_key_at(const struct json *v, size_t i) {
  return v && v->type == JSON_OBJECT && i < v->n ? v->u.kids[i].key : NULL;
}

size_t json_str_len(const struct json *v) {
  return v && v->type == JSON_STRING ? v->n : 0;
}

size_t json_key_len(const struct json *v) {
  return v && v->key ? v->klen : 0;
}

static int put_string(struct buf *out, const char *s, size_t n, bool plain) {
  if (!plain)
    return buf_json_str(out, s, n);
  return buf_putc(out, '"') || buf_append(out, s, n) || buf_putc(out, '"') ? -1 : 0;
}

static int canon(const struct json *v, struct buf *out) {
  switch ((enum json_type)v->type) {
  case JSON_NULL:
    return buf_append(out, "null", 4);
  case JSON_BOOL:
    return v->b ? buf_append(out, "true", 4) : buf_append(out, "false", 5);
  case JSON_NUMBER:
    return buf_append(out, v->u.s, v->n);
  case JSON_STRING:
    return put_string(out, v->u.s, v->n, v->plain);
  case JSON_ARRAY:
    if (buf_putc(out, '[') != 0)
      return -1;
    for (size_t i = 0; i < v->n; i++)
      if ((i && buf_putc(out, ',') != 0) || canon(&v->u.kids[i], out) != 0)
        return -1;
    return buf_putc(out, ']');
  case JSON_OBJECT: {
    if (buf_putc(out, '{') != 0)
      return -1;
    bool first = true;
    for (size_t i = 0; i < v->n; i++) {
      const struct json *m = v->n >= 2 ? v->x.sorted[i] : &v->u.kids[0];
      /* Of a run of equal keys only the last (the latest in the document)
       * is written. */
      if (i + 1 < v->n && key_cmp(v->x.sorted[i + 1], m->key, m->klen) == 0)
        continue;
      if ((!first && buf_putc(out, ',') != 0) || put_string(out, m->key, m->klen, m->kplain) != 0 ||
          buf_putc(out, ':') != 0 || canon(m, out) != 0)
        return -1;
      first = false;
    }
    return buf_putc(out, '}');
  }
  }
  return -1;
}

int json_canonical(const struct json *v, struct buf *out) {
  if (!v)
    return -1;
  size_t start = out->len;
  if (canon(v, out) == 0)
    return 0;
  /* Leave out as it was, like every other failed buf append. */
  out->len = start;
  if (out->p)
    out->p[start] = '\0';
  return -1;
}
