/* Unit tests for json (strict parsing, lookups, the canonical form) and
 * digest (SHA-256 vectors, event ids), plus a fuzz-style loop that must never
 * crash or leak (run it under ASan). */
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "digest.h"
#include "json.h"

static struct json *parse_ok(const char *text) {
  char err[128];
  struct json *j = json_parse(text, strlen(text), err, sizeof err);
  if (!j)
    fail_msg("parse of <%s> failed: %s", text, err);
  return j;
}

/* Canonical form of text, as a malloc'd string. */
static char *canon_of(const char *text) {
  struct json *j = parse_ok(text);
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(json_canonical(j, &b), 0);
  json_free(j);
  return buf_steal(&b);
}

static void canon_is(const char *text, const char *want) {
  char *got = canon_of(text);
  assert_string_equal(got, want);
  free(got);
}

static void test_valid_corpus(void **state) {
  static const char *const ok[] = {
      "{}", "[]", "0", "-0", "1", "-1", "0.5", "-0.0e-0", "1E+10", "123456789012345678901234567890",
      "1e400", "true", "false", "null", "\"\"", "\"x\"", " \t\r\n{ \"a\" : [ 1 , 2 ] }\n ",
      "[[[[[]]]]]", "{\"\":0}", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\u00e9\\uD83D\\uDE00\"",
      "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"", "\"\x7f\"", "[1,\"a\",null,true,{}]",
      "{\"a\":{\"b\":{\"c\":[{}]}}}",
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    json_free(parse_ok(ok[i]));
}

struct bad {
  const char *text;
  size_t len; /* 0: strlen(text) */
  const char *msg;
};

static void test_invalid_corpus(void **state) {
  static const struct bad bad[] = {
      {"", 0, "unexpected end of input at byte 0"},
      {"   ", 0, "unexpected end of input at byte 3"},
      {"[1,2,]", 0, "expected value at byte 5"},
      {"{\"a\":1,}", 0, "expected string at byte 7"},
      {"{'a':1}", 0, "expected string or '}' at byte 1"},
      {"'x'", 0, "expected value at byte 0"},
      {"01", 0, "leading zero in number at byte 0"},
      {"[-012]", 0, "leading zero in number at byte 2"},
      {"+1", 0, "expected value at byte 0"},
      {".5", 0, "expected value at byte 0"},
      {"1.", 0, "expected digit at byte 2"},
      {"1.e5", 0, "expected digit at byte 2"},
      {"1e", 0, "expected digit at byte 2"},
      {"1e+", 0, "expected digit at byte 3"},
      {"-", 0, "expected digit at byte 1"},
      {"-x", 0, "expected digit at byte 1"},
      {"NaN", 0, "expected value at byte 0"},
      {"Infinity", 0, "expected value at byte 0"},
      {"-Infinity", 0, "expected digit at byte 1"},
      {"tru", 0, "invalid literal at byte 0"},
      {"nul", 0, "invalid literal at byte 0"},
      {"True", 0, "expected value at byte 0"},
      {"[true false]", 0, "expected ',' or ']' at byte 6"},
      {"{\"a\" 1}", 0, "expected ':' at byte 5"},
      {"{\"a\":1 \"b\":2}", 0, "expected ',' or '}' at byte 7"},
      {"{\"a\":1", 0, "unexpected end of input at byte 6"},
      {"[1", 0, "unexpected end of input at byte 2"},
      {"{1:2}", 0, "expected string or '}' at byte 1"},
      {"{} x", 0, "unexpected data after value at byte 3"},
      {"1 2", 0, "unexpected data after value at byte 2"},
      {"[]]", 0, "unexpected data after value at byte 2"},
      {"\"abc", 0, "unterminated string at byte 0"},
      {"\"abc\\\"", 0, "unterminated string at byte 0"},
      {"\"a\tb\"", 0, "control character in string at byte 2"},
      {"\"a\nb\"", 0, "control character in string at byte 2"},
      {"\"\\x\"", 0, "invalid escape at byte 1"},
      {"\"\\'\"", 0, "invalid escape at byte 1"},
      {"\"\\u12\"", 0, "invalid \\u escape at byte 1"},
      {"\"\\u12G4\"", 0, "invalid \\u escape at byte 1"},
      {"\"ab\\uD800\"", 0, "lone surrogate at byte 3"},
      {"\"\\uDC00\"", 0, "lone surrogate at byte 1"},
      {"\"\\uD800\\u0041\"", 0, "lone surrogate at byte 1"},
      {"\"\\uD800\\uD800\"", 0, "lone surrogate at byte 1"},
      {"\"\\u0000\"", 0, "NUL in string at byte 1"},
      {"\"a\0b\"", 5, "control character in string at byte 2"},
      {"\"\xff\"", 0, "invalid UTF-8 at byte 1"},
      {"\"x\xc3\"", 0, "invalid UTF-8 at byte 2"},
      {"\"\xc0\xaf\"", 0, "invalid UTF-8 at byte 1"},             /* overlong '/' */
      {"\"\xe0\x80\xaf\"", 0, "invalid UTF-8 at byte 1"},         /* overlong, 3 bytes */
      {"\"\xf0\x80\x80\xaf\"", 0, "invalid UTF-8 at byte 1"},     /* overlong, 4 bytes */
      {"\"\xed\xa0\x80\"", 0, "invalid UTF-8 at byte 1"},         /* UTF-8 encoded surrogate */
      {"\"\xf4\x90\x80\x80\"", 0, "invalid UTF-8 at byte 1"},     /* above U+10FFFF */
      {"\"\x80\"", 0, "invalid UTF-8 at byte 1"},                 /* lone continuation */
      {"\"\xe2\x82x\"", 0, "invalid UTF-8 at byte 1"},            /* truncated sequence */
      {"\xef\xbb\xbf{}", 0, "expected value at byte 0"},          /* BOM */
      {"{\"a\xff\":1}", 0, "invalid UTF-8 at byte 3"},            /* keys too */
      {"[1]\0", 4, "unexpected data after value at byte 3"},
  };
  size_t n = sizeof bad / sizeof bad[0];
  assert_true(n >= 30);
  for (size_t i = 0; i < n; i++) {
    char err[128];
    size_t len = bad[i].len ? bad[i].len : strlen(bad[i].text);
    memset(err, 'Z', sizeof err);
    struct json *j = json_parse(bad[i].text, len, err, sizeof err);
    if (j) {
      json_free(j);
      fail_msg("case %zu <%s> parsed", i, bad[i].text);
    }
    if (strcmp(err, bad[i].msg) != 0)
      fail_msg("case %zu <%s>: got \"%s\", want \"%s\"", i, bad[i].text, err, bad[i].msg);
  }
}

static char *nested(int depth) {
  char *s = malloc((size_t)depth * 2 + 1);
  assert_non_null(s);
  for (int i = 0; i < depth; i++) {
    s[i] = '[';
    s[depth + i] = ']';
  }
  s[depth * 2] = '\0';
  return s;
}

static void test_depth_limit(void **state) {
  char err[128];
  char *s = nested(256);
  struct json *j = json_parse(s, strlen(s), err, sizeof err);
  assert_non_null(j);
  json_free(j);
  free(s);

  s = nested(257);
  assert_null(json_parse(s, strlen(s), err, sizeof err));
  assert_string_equal(err, "nesting deeper than 256 at byte 256");
  free(s);

  s = nested(300);
  assert_null(json_parse(s, strlen(s), err, sizeof err));
  assert_string_equal(err, "nesting deeper than 256 at byte 256");
  free(s);

  /* Objects count too, mixed with arrays. */
  struct buf b;
  buf_init(&b, 0);
  for (int i = 0; i < 150; i++)
    assert_int_equal(buf_puts(&b, "{\"k\":["), 0);
  assert_null(json_parse(b.p, b.len, err, sizeof err));
  assert_string_equal(err, "nesting deeper than 256 at byte 768");
  buf_free(&b);
}

static void test_error_buffer_handling(void **state) {
  /* No error buffer at all, and one too small for the message. */
  assert_null(json_parse("[", 1, NULL, 0));
  char err[8];
  assert_null(json_parse("[", 1, err, sizeof err));
  assert_string_equal(err, "unexpec");
  assert_null(json_parse(NULL, 0, err, sizeof err));
}

static void test_lookups(void **state) {
  struct json *j = parse_ok("{\"event_type\":\"INSURED_UPDATE\",\"status\":0,\"ok\":true,\"no\":false,"
                            "\"n\":null,\"data\":{\"id\":\"x-1\",\"premium\":1250.75},\"list\":[10,\"b\",[]]}");
  assert_int_equal(json_type(j), JSON_OBJECT);
  assert_string_equal(json_type_name(json_type(j)), "object");
  assert_int_equal(json_len(j), 7);
  assert_string_equal(json_key_at(j, 0), "event_type");
  assert_string_equal(json_key_at(j, 6), "list");
  assert_null(json_key_at(j, 7));
  assert_string_equal(json_str(json_get(j, "event_type")), "INSURED_UPDATE");
  assert_int_equal(json_type(json_get(j, "status")), JSON_NUMBER);
  assert_true(json_num(json_get(j, "status")) == 0.0);
  assert_true(json_bool(json_get(j, "ok")));
  assert_false(json_bool(json_get(j, "no")));
  assert_int_equal(json_type(json_get(j, "no")), JSON_BOOL);
  assert_int_equal(json_type(json_get(j, "n")), JSON_NULL);
  assert_non_null(json_get(j, "n"));
  assert_null(json_get(j, "missing"));
  assert_null(json_get(j, "even")); /* a prefix of a key is not the key */
  assert_null(json_get(j, "event_type2"));
  const struct json *data = json_get(j, "data");
  assert_string_equal(json_str(json_get(data, "id")), "x-1");
  assert_true(json_num(json_get(data, "premium")) == 1250.75);
  assert_ptr_equal(json_at(j, 5), data);
  const struct json *list = json_get(j, "list");
  assert_int_equal(json_type(list), JSON_ARRAY);
  assert_int_equal(json_len(list), 3);
  assert_true(json_num(json_at(list, 0)) == 10.0);
  assert_string_equal(json_str(json_at(list, 1)), "b");
  assert_int_equal(json_len(json_at(list, 2)), 0);
  assert_null(json_at(list, 3));
  assert_null(json_key_at(list, 0));
  /* Wrong types give the neutral answer, and NULL chains safely. */
  assert_null(json_str(json_get(j, "status")));
  assert_null(json_get(list, "x"));
  assert_null(json_get(json_get(j, "nope"), "deeper"));
  assert_true(json_num(json_get(j, "event_type")) == 0.0);
  assert_false(json_bool(json_get(j, "status")));
  assert_int_equal(json_len(json_get(j, "event_type")), 0);
  assert_null(json_at(json_get(j, "status"), 0));
  json_free(j);

  assert_string_equal(json_type_name(JSON_NULL), "null");
  assert_string_equal(json_type_name(JSON_BOOL), "boolean");
  assert_string_equal(json_type_name(JSON_NUMBER), "number");
  assert_string_equal(json_type_name(JSON_STRING), "string");
  assert_string_equal(json_type_name(JSON_ARRAY), "array");
}

static void test_string_decoding(void **state) {
  struct json *j = parse_ok("[\"\\u00e9\", \"\\uD83D\\uDE00\", \"a\\/b\\n\\\"\", \"\\u20AC\", \"\xc3\xa9\"]");
  assert_string_equal(json_str(json_at(j, 0)), "\xc3\xa9");
  assert_string_equal(json_str(json_at(j, 1)), "\xf0\x9f\x98\x80");
  assert_string_equal(json_str(json_at(j, 2)), "a/b\n\"");
  assert_string_equal(json_str(json_at(j, 3)), "\xe2\x82\xac");
  assert_string_equal(json_str(json_at(j, 4)), "\xc3\xa9");
  json_free(j);
}

static void test_numbers(void **state) {
  struct json *j = parse_ok("[0, -0, 42, -17, 1.5, 2.5e3, 1E-2, 123456789012345, 12345678901234567890, 1e400, -1e400]");
  assert_true(json_num(json_at(j, 0)) == 0.0);
  assert_true(signbit(json_num(json_at(j, 1))));
  assert_true(json_num(json_at(j, 2)) == 42.0);
  assert_true(json_num(json_at(j, 3)) == -17.0);
  assert_true(json_num(json_at(j, 4)) == 1.5);
  assert_true(json_num(json_at(j, 5)) == 2500.0);
  assert_true(json_num(json_at(j, 6)) == 0.01);
  assert_true(json_num(json_at(j, 7)) == 123456789012345.0);
  assert_true(json_num(json_at(j, 8)) == 12345678901234567890.0);
  assert_true(isinf(json_num(json_at(j, 9))) && json_num(json_at(j, 9)) > 0);
  assert_true(isinf(json_num(json_at(j, 10))) && json_num(json_at(j, 10)) < 0);
  json_free(j);
  /* The canonical form keeps every lexeme as written. */
  canon_is("[1.0, 1E+2, -0, 0.10, 12345678901234567890, 1e400]", "[1.0,1E+2,-0,0.10,12345678901234567890,1e400]");
}

static void test_numbers_under_decimal_comma_locale(void **state) {
  const char *locales[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  const char *set = NULL;
  for (size_t i = 0; i < 4 && !set; i++)
    set = setlocale(LC_NUMERIC, locales[i]);
  if (!set || strcmp(localeconv()->decimal_point, ",") != 0) {
    setlocale(LC_NUMERIC, "C");
    skip(); /* no decimal-comma locale installed on this machine */
  }
  struct json *j = parse_ok("[1.5, 2.25e1]");
  double a = json_num(json_at(j, 0)), b = json_num(json_at(j, 1));
  json_free(j);
  setlocale(LC_NUMERIC, "C");
  assert_true(a == 1.5);
  assert_true(b == 22.5);
}

static void test_duplicate_keys(void **state) {
  struct json *j = parse_ok("{\"a\":1,\"b\":2,\"a\":3}");
  assert_true(json_num(json_get(j, "a")) == 3.0);
  assert_int_equal(json_len(j), 3); /* the document as written */
  json_free(j);
  canon_is("{\"a\":1,\"b\":2,\"a\":3}", "{\"a\":3,\"b\":2}");
  canon_is("{\"a\":1,\"a\":2,\"a\":{\"z\":0,\"z\":[]}}", "{\"a\":{\"z\":[]}}");

  /* A big object takes the sorted lookup path: same answers. */
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(buf_putc(&b, '{'), 0);
  for (int i = 0; i < 40; i++)
    assert_int_equal(buf_printf(&b, "\"k%02d\":%d,", i % 20, i), 0);
  assert_int_equal(buf_puts(&b, "\"\":-1}"), 0);
  j = parse_ok(b.p);
  for (int i = 0; i < 20; i++) {
    char key[16];
    snprintf(key, sizeof key, "k%02d", i);
    assert_true(json_num(json_get(j, key)) == 20.0 + i);
  }
  assert_true(json_num(json_get(j, "")) == -1.0);
  assert_null(json_get(j, "k20"));
  assert_null(json_get(j, "k0"));
  assert_null(json_get(j, "k000"));
  buf_reset(&b);
  assert_int_equal(json_canonical(j, &b), 0);
  json_free(j);
  struct buf want;
  buf_init(&want, 0);
  assert_int_equal(buf_puts(&want, "{\"\":-1"), 0);
  for (int i = 0; i < 20; i++)
    assert_int_equal(buf_printf(&want, ",\"k%02d\":%d", i, 20 + i), 0);
  assert_int_equal(buf_putc(&want, '}'), 0);
  assert_string_equal(b.p, want.p);
  buf_free(&want);
  buf_free(&b);
}

static void test_canonical_known(void **state) {
  canon_is("{\"b\":1,\"a\":[3,{\"d\":\"x\",\"c\":null}]}", "{\"a\":[3,{\"c\":null,\"d\":\"x\"}],\"b\":1}");
  canon_is(" [ ] ", "[]");
  canon_is("{ }", "{}");
  canon_is("\"x\"", "\"x\"");
  canon_is("true", "true");
  /* Bytewise order: upper case before lower, a prefix before its
   * extensions, UTF-8 after ASCII. */
  canon_is("{\"b\":0,\"\xc3\xa9\":0,\"B\":0,\"ab\":0,\"a\":0,\"\":0}",
           "{\"\":0,\"B\":0,\"a\":0,\"ab\":0,\"b\":0,\"\xc3\xa9\":0}");
}

static void test_canonical_ignores_order_and_space(void **state) {
  const char *one = "{\"event_type\":\"POLICY_UPDATE\",\"timestamp\":\"2024-05-01T10:00:00Z\","
                    "\"data\":{\"policyNumber\":\"POL-123\",\"premium\":1250.50,\"tags\":[\"a\",\"b\"],"
                    "\"insured\":{\"firstName\":\"Ana\",\"lastName\":\"P\\u00e9rez\",\"email\":null}}}";
  const char *two = "{\n  \"data\" : {\n    \"insured\" : { \"email\" : null, \"lastName\" : \"P\xc3\xa9rez\",\n"
                    "      \"firstName\" : \"Ana\" },\n    \"tags\" : [ \"a\" , \"b\" ],\n"
                    "    \"premium\" : 1250.50,\t\"policyNumber\" : \"POL-123\"\r\n  },\n"
                    "  \"timestamp\" : \"2024-05-01T10:00:00Z\", \"event_type\" : \"POLICY_UPDATE\"\n}\n";
  char *c1 = canon_of(one), *c2 = canon_of(two);
  assert_string_equal(c1, c2);
  assert_string_equal(c1, "{\"data\":{\"insured\":{\"email\":null,\"firstName\":\"Ana\",\"lastName\":\"P\xc3\xa9rez\"},"
                          "\"policyNumber\":\"POL-123\",\"premium\":1250.50,\"tags\":[\"a\",\"b\"]},"
                          "\"event_type\":\"POLICY_UPDATE\",\"timestamp\":\"2024-05-01T10:00:00Z\"}");
  char id1[EVENT_ID_MAX], id2[EVENT_ID_MAX];
  digest_event_id("nowcerts", c1, strlen(c1), id1);
  digest_event_id("nowcerts", c2, strlen(c2), id2);
  assert_string_equal(id1, id2);
  /* Array order is significant. */
  char *c3 = canon_of("{\"data\":{\"tags\":[\"b\",\"a\"]}}");
  char *c4 = canon_of("{\"data\":{\"tags\":[\"a\",\"b\"]}}");
  assert_string_not_equal(c3, c4);
  free(c1);
  free(c2);
  free(c3);
  free(c4);
}

static void test_canonical_escaping(void **state) {
  char *a = canon_of("\"\\u00e9\"");
  char *b = canon_of("\"\xc3\xa9\"");
  assert_string_equal(a, b);
  assert_string_equal(a, "\"\xc3\xa9\"");
  free(a);
  free(b);
  canon_is("\"\\u001f\"", "\"\\u001f\"");
  canon_is("\"\\u001F\\u0001\\u007f\"", "\"\\u001f\\u0001\x7f\"");
  canon_is("\"/\"", "\"/\"");
  canon_is("\"\\/\"", "\"/\"");
  canon_is("\"\\\"\\\\\"", "\"\\\"\\\\\"");
  canon_is("\"\\u0008\\u000c\\u000A\\u000d\\u0009\"", "\"\\b\\f\\n\\r\\t\"");
  canon_is("\"\\uD83D\\uDE00\"", "\"\xf0\x9f\x98\x80\"");
  canon_is("{\"\\u0061\\n\":1}", "{\"a\\n\":1}");
}

static void test_canonical_respects_buffer_limit(void **state) {
  struct json *j = parse_ok("{\"b\":[1,2,3],\"a\":\"some longer text\"}");
  struct buf b;
  buf_init(&b, 20);
  assert_int_equal(buf_puts(&b, "pre:"), 0);
  assert_int_equal(json_canonical(j, &b), -1);
  assert_int_equal(b.len, 4);
  assert_string_equal(b.p, "pre:");
  buf_free(&b);
  buf_init(&b, 38);
  assert_int_equal(json_canonical(j, &b), 0);
  assert_string_equal(b.p, "{\"a\":\"some longer text\",\"b\":[1,2,3]}");
  buf_free(&b);
  assert_int_equal(json_canonical(NULL, &b), -1);
  json_free(j);
}

static void test_sha256_vectors(void **state) {
  char hex[DIGEST_HEX_LEN + 1];
  digest_sha256_hex("abc", 3, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  digest_sha256_hex("", 0, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_event_id(void **state) {
  char *c = canon_of("{\"b\":1,\"a\":[3,{\"d\":\"x\",\"c\":null}]}");
  char id[EVENT_ID_MAX];
  digest_event_id("nowcerts", c, strlen(c), id);
  /* sha256("nowcerts\n" + canonical), computed independently with Python. */
  assert_string_equal(id, "nowcerts_e8073d2ce1fba42d3aeccbae8cd72754559d378bc233a0a64c57e57c6e35868c");
  /* ^source_[0-9a-f]{64}$ */
  digest_event_id("ghl", c, strlen(c), id);
  assert_int_equal(strlen(id), 4 + 64);
  assert_memory_equal(id, "ghl_", 4);
  for (size_t i = 4; i < 68; i++)
    assert_non_null(strchr("0123456789abcdef", id[i]));
  /* The source is part of the hash, not only of the prefix. */
  assert_string_not_equal(id + 4, "e8073d2ce1fba42d3aeccbae8cd72754559d378bc233a0a64c57e57c6e35868c");
  free(c);

  /* A source that would not fit is refused, not truncated. */
  char longsrc[40];
  memset(longsrc, 's', sizeof longsrc - 1);
  longsrc[sizeof longsrc - 1] = '\0';
  digest_event_id(longsrc, "{}", 2, id);
  assert_string_equal(id, "");
  longsrc[EVENT_ID_MAX - DIGEST_HEX_LEN - 2] = '\0';
  digest_event_id(longsrc, "{}", 2, id);
  assert_int_equal(strlen(id), EVENT_ID_MAX - 1);
}

static uint64_t rng_next(uint64_t *s) {
  /* xorshift64*: deterministic, so a failure reproduces. */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 2685821657736338717ULL;
}

/* Whatever parses must canonicalise, and the canonical form must parse back
 * to itself (the form is a fixed point). */
static void check_roundtrip(const char *text, size_t len) {
  char err[128];
  struct json *j = json_parse(text, len, err, sizeof err);
  if (!j) {
    assert_non_null(strstr(err, " at byte ")); /* every parse error names its offset */
    return;
  }
  struct buf a, b;
  buf_init(&a, 0);
  buf_init(&b, 0);
  assert_int_equal(json_canonical(j, &a), 0);
  assert_true(a.len <= len); /* canonical never grows a document */
  json_free(j);
  j = json_parse(a.p, a.len, err, sizeof err);
  if (!j)
    fail_msg("canonical form did not parse: %s", err);
  assert_int_equal(json_canonical(j, &b), 0);
  assert_int_equal(a.len, b.len);
  assert_memory_equal(a.p, b.p, a.len);
  json_free(j);
  buf_free(&a);
  buf_free(&b);
}

static void test_fuzz(void **state) {
  static const char *const seeds[] = {
      "{\"event_type\":\"INSURED_INSERT\",\"data\":{\"firstName\":\"Jos\\u00e9\",\"tags\":[1,-2.5e3,true,null],"
      "\"x\":{\"b\":\"\\uD83D\\uDE00\\n\",\"a\":{}}},\"data\":[]}",
      "[\"\xc3\xa9\xe2\x82\xac\",{\"k\":\"\\\"\\\\/\"},[[[0]]],\"\xf0\x9f\x98\x80\"]",
  };
  const char alphabet[] = "{}[]\",:\\u0123456789abcdefABCDEFtrunlsE+-. \n\t\x01\x7f\xc3\xa9\xed\xa0\x80\xf0\x9f";
  uint64_t rng = 0x9E3779B97F4A7C15ULL;
  char buf[512];
  for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
    const char *seed = seeds[s];
    size_t n = strlen(seed);
    check_roundtrip(seed, n);
    /* Every truncation. */
    for (size_t cut = 0; cut <= n; cut++) {
      memcpy(buf, seed, cut);
      check_roundtrip(buf, cut);
    }
    /* Byte mutations, insertions and deletions. */
    for (int round = 0; round < 20000; round++) {
      memcpy(buf, seed, n);
      size_t len = n;
      int edits = 1 + (int)(rng_next(&rng) % 3);
      for (int e = 0; e < edits; e++) {
        size_t at = (size_t)(rng_next(&rng) % (len + 1));
        unsigned kind = (unsigned)(rng_next(&rng) % 3);
        char c = rng_next(&rng) % 4 == 0 ? (char)(rng_next(&rng) & 0xFF)
                                          : alphabet[rng_next(&rng) % (sizeof alphabet - 1)];
        if (kind == 0 && at < len) {
          buf[at] = c;
        } else if (kind == 1 && len + 1 < sizeof buf) {
          memmove(buf + at + 1, buf + at, len - at);
          buf[at] = c;
          len++;
        } else if (at < len) {
          memmove(buf + at, buf + at + 1, len - at - 1);
          len--;
        }
      }
      check_roundtrip(buf, len);
    }
  }
  /* Pure noise from the JSON alphabet, and arbitrary bytes. */
  for (int round = 0; round < 20000; round++) {
    size_t len = (size_t)(rng_next(&rng) % 64);
    bool raw = round % 2;
    for (size_t i = 0; i < len; i++)
      buf[i] = raw ? (char)(rng_next(&rng) & 0xFF) : alphabet[rng_next(&rng) % (sizeof alphabet - 1)];
    check_roundtrip(buf, len);
  }
}

static void test_large_documents(void **state) {
  /* Enough nodes to need several arena blocks and a heap child stack. */
  struct buf b;
  buf_init(&b, 0);
  assert_int_equal(buf_putc(&b, '['), 0);
  for (int i = 0; i < 20000; i++)
    assert_int_equal(buf_printf(&b, "%s%d", i ? "," : "", i % 10), 0);
  assert_int_equal(buf_puts(&b, ",{\"z\":[],\"y\":\"end\"}]"), 0);
  struct json *j = parse_ok(b.p);
  assert_int_equal(json_len(j), 20001);
  assert_true(json_num(json_at(j, 19999)) == 9.0);
  assert_string_equal(json_str(json_get(json_at(j, 20000), "y")), "end");
  struct buf c;
  buf_init(&c, 0);
  assert_int_equal(json_canonical(j, &c), 0);
  const char *tail = "7,8,9,{\"y\":\"end\",\"z\":[]}]";
  assert_true(c.len > strlen(tail));
  assert_string_equal(c.p + c.len - strlen(tail), tail);
  json_free(j);
  buf_free(&b);
  buf_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_corpus),
      cmocka_unit_test(test_invalid_corpus),
      cmocka_unit_test(test_depth_limit),
      cmocka_unit_test(test_error_buffer_handling),
      cmocka_unit_test(test_lookups),
      cmocka_unit_test(test_string_decoding),
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_numbers_under_decimal_comma_locale),
      cmocka_unit_test(test_duplicate_keys),
      cmocka_unit_test(test_canonical_known),
      cmocka_unit_test(test_canonical_ignores_order_and_space),
      cmocka_unit_test(test_canonical_escaping),
      cmocka_unit_test(test_canonical_respects_buffer_limit),
      cmocka_unit_test(test_sha256_vectors),
      cmocka_unit_test(test_event_id),
      cmocka_unit_test(test_fuzz),
      cmocka_unit_test(test_large_documents),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
