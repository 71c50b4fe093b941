/* Masking is one pass over the text. Three recognisers, most specific first:
 * a field whose name says what it holds (its value is masked whatever it
 * looks like), an e-mail address (found at its "@", the local part already
 * copied is taken back), a phone number. Percent-encoded text is read as
 * what it decodes to, because attempt URLs carry OData filters encoded. */
#include "pii.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct out {
  char *p;
  size_t n, cap;
};

static void put(struct out *o, const char *s, size_t n) {
  for (size_t i = 0; i < n && o->n + 1 < o->cap; i++)
    o->p[o->n++] = s[i];
}

static void putc1(struct out *o, char c) { put(o, &c, 1); }

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The character at s[i] (reading "%XX" as the byte it encodes) and how many
 * bytes it takes; 0 at the end. */
static size_t unit_at(const char *s, size_t len, size_t i, int *c) {
  if (i >= len)
    return 0;
  if (s[i] == '%' && i + 2 < len && hexval((unsigned char)s[i + 1]) >= 0 &&
      hexval((unsigned char)s[i + 2]) >= 0) {
    *c = hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]);
    return 3;
  }
  *c = (unsigned char)s[i];
  return 1;
}

/* The same, reading backwards: the unit that ends just before s[i]. */
static size_t unit_before(const char *s, size_t i, int *c) {
  if (i == 0)
    return 0;
  if (i >= 3 && s[i - 3] == '%' && hexval((unsigned char)s[i - 2]) >= 0 &&
      hexval((unsigned char)s[i - 1]) >= 0) {
    *c = hexval((unsigned char)s[i - 2]) * 16 + hexval((unsigned char)s[i - 1]);
    return 3;
  }
  *c = (unsigned char)s[i - 1];
  return 1;
}

static bool local_char(int c) {
  return isalnum(c) || c == '.' || c == '_' || c == '+' || c == '-';
}

static bool domain_char(int c) { return isalnum(c) || c == '.' || c == '-'; }

static bool word_char(int c) { return isalnum(c) || c == '_'; }

/* Writes the masked form of the e-mail address local SEP domain. */
static void put_email(struct out *o, const char *local, size_t ll, const char *sep, size_t sl,
                      const char *dom, size_t dl) {
  int c;
  put(o, local, unit_at(local, ll, 0, &c));
  put(o, "***", 3);
  put(o, sep, sl);
  put(o, dom, unit_at(dom, dl, 0, &c));
  put(o, "***", 3);
  for (size_t i = dl; i > 0; i--)
    if (dom[i - 1] == '.') {
      put(o, dom + i - 1, dl - (i - 1));
      return;
    }
}

/* The end of the domain that starts at s[i]: domain characters, encoded
 * or not, without a trailing dot. Sets *dot when it holds a dot. */
static size_t domain_end(const char *s, size_t len, size_t i, bool *dot) {
  size_t j = i;
  int c;
  size_t u;
  *dot = false;
  while ((u = unit_at(s, len, j, &c)) > 0 && domain_char(c)) {
    if (c == '.' && u == 1)
      *dot = true;
    j += u;
  }
  while (j > i && s[j - 1] == '.')
    j--;
  *dot = *dot && memchr(s + i, '.', j - i) != NULL;
  return j;
}

/* At an "@" (or "%40") in the input: when the output ends with a local part
 * and a dotted domain follows, takes the local part back and writes the
 * masked address. Returns the input bytes consumed, 0 when it is no
 * address. */
static size_t try_email(struct out *o, const char *s, size_t len, size_t i) {
  int c;
  size_t sl = unit_at(s, len, i, &c);
  if (sl == 0 || c != '@')
    return 0;
  size_t start = o->n, u;
  while ((u = unit_before(o->p, start, &c)) > 0 && local_char(c))
    start -= u;
  if (start == o->n)
    return 0;
  bool dot;
  size_t dend = domain_end(s, len, i + sl, &dot);
  if (!dot)
    return 0;
  /* user@127.0.0.1 is a URL's user at an address, not a mailbox: masked,
   * it hid where a connection went. */
  size_t k = i + sl;
  while (k < dend && (isdigit((unsigned char)s[k]) || s[k] == '.'))
    k++;
  if (k == dend)
    return 0;
  size_t ll = o->n - start;
  char local[256];
  if (ll >= sizeof local)
    ll = sizeof local - 1;
  memcpy(local, o->p + start, ll);
  o->n = start;
  put_email(o, local, ll, s + i, sl, s + i + sl, dend - (i + sl));
  return dend - i;
}

/* Phones are told from the other numbers of a log line by their edges and
 * their shape. A number inside a word (hex ids, "nowcerts_649d..."), or
 * one of the dotted or dashed runs that addresses, dates, versions and
 * UUIDs are written in, is never one: it may not start after a word
 * character, "." or "-", nor end before a word character or a "." or "-"
 * that goes on ("6543." ends a sentence, "6543.25" is a decimal). Read
 * decoded, so "%27" and "%20" are the quote and space they stand for; a
 * start inside such an escape is none. */
static bool phone_may_start(const char *s, size_t i) {
  int c;
  if (unit_before(s, i, &c) == 0)
    return true;
  return !word_char(c) && c != '.' && c != '-' && s[i - 1] != '%';
}

static bool phone_may_end(const char *s, size_t len, size_t j) {
  int c, next;
  size_t u = unit_at(s, len, j, &c);
  if (u == 0)
    return true;
  if (c == '.' || c == '-')
    return unit_at(s, len, j + u, &next) == 0 || !word_char(next);
  return !word_char(c);
}

/* Steps over n raw digits at *j. */
static bool digits_at(const char *s, size_t len, size_t *j, size_t n) {
  for (size_t k = 0; k < n; k++, (*j)++)
    if (*j >= len || !isdigit((unsigned char)s[*j]))
      return false;
  return true;
}

/* Steps over the unit at *j when it is one of set. */
static bool unit_in(const char *s, size_t len, size_t *j, const char *set) {
  int c;
  size_t u = unit_at(s, len, *j, &c);
  if (u == 0 || c == 0 || !strchr(set, c))
    return false;
  *j += u;
  return true;
}

#define PHONE_SEPS " -."

/* The end of a US number at s[i], 0 when none: 555-987-6543, 555.987.6543,
 * 555 987 6543, (555) 987-6543, each also after "1" and a separator, or
 * 10 digits (11 with a leading 1) in one run. A run has no separators to
 * tell it from an id or a count, so it must look like a US number: its
 * area code starts with 2-9, which also leaves Unix times (1733615043)
 * alone; longer and shorter runs are ids, sizes or counts. */
static size_t us_phone_end(const char *s, size_t len, size_t i) {
  size_t run = 0;
  while (i + run < len && isdigit((unsigned char)s[i + run]))
    run++;
  if (run == 10 || (run == 11 && s[i] == '1'))
    return s[i + run - 10] >= '2' ? i + run : 0;
  size_t j = i;
  if (run == 1 && s[i] == '1') {
    j++;
    unit_in(s, len, &j, PHONE_SEPS);
  } else if (run != 0 && run != 3) {
    return 0;
  }
  if (unit_in(s, len, &j, "(")) {
    if (!digits_at(s, len, &j, 3) || !unit_in(s, len, &j, ")"))
      return 0;
    unit_in(s, len, &j, PHONE_SEPS);
  } else if (!digits_at(s, len, &j, 3) || !unit_in(s, len, &j, PHONE_SEPS)) {
    return 0;
  }
  if (!digits_at(s, len, &j, 3) || !unit_in(s, len, &j, PHONE_SEPS) || !digits_at(s, len, &j, 4))
    return 0;
  return j;
}

/* The end of an international number after its "+" at s[j], 0 when none:
 * 7-15 digits in groups of any shape. A run of more than two separators
 * ends it, so a text of brackets or spaces is not read again from each. */
static size_t intl_phone_end(const char *s, size_t len, size_t j, char last4[5]) {
  int digits = 0, seps = 0, c;
  size_t end = 0, u;
  char ring[4];
  while ((u = unit_at(s, len, j, &c)) > 0) {
    if (isdigit(c) && u == 1) {
      if (++digits > 15)
        return 0;
      ring[(digits - 1) % 4] = (char)c;
      seps = 0;
      end = j + 1;
    } else if (!strchr(PHONE_SEPS "()", c) || c == 0 || ++seps > 2) {
      break;
    }
    j += u;
  }
  if (digits < 7)
    return 0;
  for (int k = 0; k < 4; k++)
    last4[k] = ring[(digits + k) % 4];
  return end;
}

/* A phone number at s[i]: "+" (also "%2B") and an international number,
 * or a US one. Returns its length and its last four digits in last4. */
static size_t phone_len(const char *s, size_t len, size_t i, char last4[5]) {
  if (!phone_may_start(s, i))
    return 0;
  int c = 0;
  size_t u = unit_at(s, len, i, &c), end;
  if (c == '+') {
    end = intl_phone_end(s, len, i + u, last4);
  } else {
    end = us_phone_end(s, len, i);
    if (end)
      memcpy(last4, s + end - 4, 4);
  }
  if (end == 0 || !phone_may_end(s, len, end))
    return 0;
  last4[4] = 0;
  return end - i;
}

enum kind { K_NONE, K_NAME, K_PHONE, K_EMAIL };

/* Field names as compared: lower case, without underscores. */
static const struct {
  const char *name;
  unsigned char len;
  unsigned char kind;
} keys[] = {
#define KEY(s, k) {s, sizeof s - 1, k}
    KEY("firstname", K_NAME),      KEY("lastname", K_NAME),        KEY("middlename", K_NAME),
    KEY("fullname", K_NAME),       KEY("contactname", K_NAME),     KEY("insuredname", K_NAME),
    KEY("phone", K_PHONE),         KEY("phonenumber", K_PHONE),    KEY("cellphone", K_PHONE),
    KEY("mobile", K_PHONE),        KEY("mobilephone", K_PHONE),    KEY("homephone", K_PHONE),
    KEY("workphone", K_PHONE),     KEY("businessphone", K_PHONE),  KEY("fax", K_PHONE),
    KEY("sms", K_PHONE),           KEY("email", K_EMAIL),          KEY("emailaddress", K_EMAIL),
    KEY("email2", K_EMAIL),        KEY("email3", K_EMAIL),
    /* GHL's lower-case copies, in every contact it answers. */
    KEY("firstnamelowercase", K_NAME), KEY("lastnamelowercase", K_NAME),
    KEY("fullnamelowercase", K_NAME),
#undef KEY
};
/* Longer than any name above, so a name added there is never cut. Most
 * words of a request or an answer are told apart by their length before
 * any compare (this runs on every word of every attempt's excerpts: 3 % of
 * processing when it compared each word with every name). */
#define KEY_MAX 31

static enum kind key_kind(const char *s, size_t n) {
  char k[KEY_MAX];
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '_')
      continue;
    if (m == KEY_MAX)
      return K_NONE;
    k[m++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  }
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (keys[i].len == m && memcmp(k, keys[i].name, m) == 0)
      return (enum kind)keys[i].kind;
  return K_NONE;
}

/* Skips spaces, also encoded ("%20", "+" in a query string). */
static size_t skip_spaces(const char *s, size_t len, size_t j) {
  int c;
  size_t u;
  while ((u = unit_at(s, len, j, &c)) > 0 && (c == ' ' || (c == '+' && u == 1)))
    j += u;
  return j;
}

static void put_value(struct out *o, enum kind k, const char *v, size_t vl) {
  if (vl == 0)
    return;
  int c;
  if (k == K_EMAIL) {
    for (size_t i = 0; i < vl; i += unit_at(v, vl, i, &c)) {
      unit_at(v, vl, i, &c);
      if (c == '@' && i > 0) {
        size_t sl = unit_at(v, vl, i, &c);
        put_email(o, v, i, v + i, sl, v + i + sl, vl - i - sl);
        return;
      }
    }
  }
  if (k == K_PHONE) {
    char last[4];
    int d = 0;
    for (size_t i = 0; i < vl; i++)
      if (isdigit((unsigned char)v[i]))
        last[d++ % 4] = v[i];
    put(o, "***", 3);
    if (d >= 4)
      for (int i = 0; i < 4; i++)
        putc1(o, last[(d + i) % 4]);
    return;
  }
  put(o, v, unit_at(v, vl, 0, &c));
  put(o, "***", 3);
}

/* A field named for personal data at s[i] (a word start): copies the key
 * and what separates it from its value, writes the value masked. Returns
 * the bytes consumed, 0 when this is no such field. */
static size_t try_field(struct out *o, const char *s, size_t len, size_t i) {
  size_t j = i;
  while (j < len && word_char((unsigned char)s[j]))
    j++;
  enum kind k = key_kind(s + i, j - i);
  if (k == K_NONE)
    return 0;
  size_t vs, ve;
  int c;
  size_t u;
  if (j < len && s[j] == '"') { /* "key" : "value" */
    size_t p = j + 1;
    while (p < len && s[p] == ' ')
      p++;
    if (p >= len || s[p] != ':')
      return 0;
    p++;
    while (p < len && s[p] == ' ')
      p++;
    if (p >= len || s[p] != '"')
      return 0;
    vs = p + 1;
    ve = vs;
    while (ve < len && s[ve] != '"')
      ve += s[ve] == '\\' && ve + 1 < len ? 2 : 1;
  } else if (j < len && s[j] == '=') { /* key=value */
    vs = j + 1;
    ve = vs;
    while (ve < len && !strchr("& ,;\"'", s[ve]))
      ve++;
  } else { /* key eq 'value' (OData) */
    size_t p = skip_spaces(s, len, j);
    if (p == j || p + 2 > len || strncasecmp(s + p, "eq", 2) != 0)
      return 0;
    size_t q = skip_spaces(s, len, p + 2);
    if (q == p + 2 || (u = unit_at(s, len, q, &c)) == 0 || c != '\'')
      return 0;
    vs = q + u;
    ve = vs;
    while ((u = unit_at(s, len, ve, &c)) > 0 && c != '\'')
      ve += u;
  }
  put(o, s + i, vs - i);
  put_value(o, k, s + vs, ve - vs);
  return ve - i;
}

size_t pii_mask(const char *in, size_t len, char *outbuf, size_t outcap) {
  struct out o = {outbuf, 0, outcap};
  if (outcap == 0)
    return 0;
  size_t i = 0;
  while (i < len && o.n + 1 < o.cap) {
    int c = (unsigned char)in[i];
    bool word_start = i == 0 || !word_char((unsigned char)in[i - 1]);
    size_t used = 0;
    char last4[5];
    if (word_start && isalpha(c))
      used = try_field(&o, in, len, i);
    if (!used && (c == '@' || c == '%'))
      used = try_email(&o, in, len, i);
    if (!used && (c == '+' || c == '(' || c == '%' || isdigit(c))) {
      size_t n = phone_len(in, len, i, last4);
      if (n > 0) {
        put(&o, "***", 3);
        put(&o, last4, 4);
        used = n;
      }
    }
    if (!used) {
      putc1(&o, (char)c);
      used = 1;
    }
    i += used;
  }
  o.p[o.n] = 0;
  return o.n;
}

char *pii_mask_dup(const char *in) {
  size_t len = strlen(in);
  /* Masking never lengthens a datum by more than a few bytes; leave room
   * for many. */
  size_t cap = len * 2 + 64;
  char *out = malloc(cap);
  if (out)
    pii_mask(in, len, out, cap);
  return out;
}
