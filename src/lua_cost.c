/* The pattern bound follows the matcher of Lua's string library: a
 * backtracking matcher tries every start position (unless the pattern is
 * anchored with "^") and, for each repeated item, every length it could
 * take. An item can take at most as many characters as the longest run of
 * subject characters its class matches, which a linear scan finds, so the
 * bound is tight for the hostile case (".-.-.-b" over a long string) and
 * small for the usual one ("%s*(.-)%s*$" over a field value). */
#include "lua_cost.h"

#include <ctype.h>

#include <lua.h>

static bool class_match(int c, int cl) {
  bool res;
  switch (tolower(cl)) {
  case 'a': res = isalpha(c); break;
  case 'c': res = iscntrl(c); break;
  case 'd': res = isdigit(c); break;
  case 'g': res = isgraph(c); break;
  case 'l': res = islower(c); break;
  case 'p': res = ispunct(c); break;
  case 's': res = isspace(c); break;
  case 'u': res = isupper(c); break;
  case 'w': res = isalnum(c); break;
  case 'x': res = isxdigit(c); break;
  default: return cl == c;
  }
  return isupper(cl) ? !res : res;
}

/* p points at "[", ec at its closing "]". */
static bool set_match(int c, const char *p, const char *ec) {
  bool sig = true;
  if (p[1] == '^') {
    sig = false;
    p++;
  }
  while (++p < ec) {
    if (*p == '%' && p + 1 < ec) {
      p++;
      if (class_match(c, (unsigned char)*p))
        return sig;
    } else if (p + 2 < ec && p[1] == '-') {
      if ((unsigned char)*p <= c && c <= (unsigned char)p[2])
        return sig;
      p += 2;
    } else if ((unsigned char)*p == c) {
      return sig;
    }
  }
  return !sig;
}

/* The end of the single-character class that starts at p; NULL when the
 * pattern is malformed (the string library then reports it itself). */
static const char *class_end(const char *p, const char *pe) {
  if (p >= pe)
    return NULL;
  if (*p == '%')
    return p + 1 < pe ? p + 2 : NULL;
  if (*p == '[') {
    const char *q = p + 1;
    if (q < pe && *q == '^')
      q++;
    do {
      if (q >= pe)
        return NULL;
      if (*q == '%')
        q++;
      q++;
    } while (q < pe && *q != ']');
    return q < pe ? q + 1 : NULL;
  }
  return p + 1;
}

static bool single_match(int c, const char *p, const char *ep) {
  if (*p == '.')
    return true;
  if (*p == '%')
    return class_match(c, (unsigned char)p[1]);
  if (*p == '[')
    return set_match(c, p, ep - 1);
  return (unsigned char)*p == c;
}

static double longest_run(const char *s, size_t sl, const char *p, const char *ep) {
  size_t best = 0, run = 0;
  for (size_t i = 0; i < sl; i++) {
    if (single_match((unsigned char)s[i], p, ep)) {
      if (++run > best)
        best = run;
    } else {
      run = 0;
    }
  }
  return (double)best;
}

double lcost_pattern(const char *s, size_t sl, const char *p, size_t pl) {
  const char *pe = p + pl;
  double n = (double)sl;
  double starts = n + 1;
  if (p < pe && *p == '^') {
    starts = 1;
    p++;
  }
  double work = 1;
  while (p < pe && work < 1e300) {
    if (*p == '(' || *p == ')') {
      p++;
      continue;
    }
    if (*p == '$' && p + 1 == pe)
      break;
    if (*p == '%' && p + 1 < pe) {
      if (p[1] == 'b') { /* %bxy scans up to the whole subject */
        work *= n + 1;
        p += 4;
        continue;
      }
      if (p[1] == 'f') {
        const char *e = class_end(p + 2, pe);
        if (!e)
          break;
        p = e;
        continue;
      }
      if (isdigit((unsigned char)p[1])) { /* a back-reference compares up to n */
        work *= n + 1;
        p += 2;
        continue;
      }
    }
    const char *ep = class_end(p, pe);
    if (!ep)
      break;
    if (ep < pe && (*ep == '*' || *ep == '+' || *ep == '-')) {
      /* The last item (captures closing at most after it) never
       * backtracks: whatever length it takes, the match is over. */
      const char *rest = ep + 1;
      while (rest < pe && *rest == ')')
        rest++;
      if (rest < pe)
        work *= longest_run(s, sl, p, ep) + 1;
      p = ep + 1;
    } else if (ep < pe && *ep == '?') {
      work *= 2;
      p = ep + 1;
    } else {
      p = ep;
    }
  }
  return starts * work + n;
}

static void json_walk(lua_State *L, int idx, int depth, double limit, double *total) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    *total += (double)lua_rawlen(L, idx) + 2;
    return;
  case LUA_TTABLE:
    break;
  default:
    *total += 24; /* a number, a boolean, null */
    return;
  }
  *total += 2;
  /* cjson refuses tables nested deeper than this; so does the count. */
  if (depth > 1000 || !lua_checkstack(L, 3))
    return;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (*total <= limit && lua_next(L, idx) != 0) {
    *total += 1 + (lua_type(L, -2) == LUA_TSTRING ? (double)lua_rawlen(L, -2) + 3 : 0);
    json_walk(L, -1, depth + 1, limit, total);
    lua_pop(L, 1);
  }
  if (*total > limit)
    lua_pop(L, 1); /* the key lua_next left when the walk stopped early */
}

double lcost_json(lua_State *L, int idx, double limit) {
  double total = 0;
  json_walk(L, idx, 0, limit, &total);
  return total;
}
