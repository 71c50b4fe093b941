/* A stored event as a test case skeleton (see ascase.h). */
#include "ascase.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "json.h"
#include "store.h"

static void put_indent(FILE *out, int depth) {
  for (int i = 0; i < depth; i++)
    fputs("  ", out);
}

/* A Lua string literal that reads back as exactly s. */
static void put_string(FILE *out, const char *s) {
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(out, "\\%c", *p);
    else if (*p == '\n')
      fputs("\\n", out);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(out, "\\%03d", *p);
    else
      fputc(*p, out);
  }
  fputc('"', out);
}

static bool is_name(const char *k) {
  static const char *const words[] = {"and",   "break", "do",     "else", "elseif", "end",
                                      "false", "for",   "function", "goto", "if",   "in",
                                      "local", "nil",   "not",    "or",   "repeat", "return",
                                      "then",  "true",  "until",  "while"};
  if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || *k == '_'))
    return false;
  for (const char *p = k; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          *p == '_'))
      return false;
  for (size_t i = 0; i < sizeof words / sizeof *words; i++)
    if (strcmp(k, words[i]) == 0)
      return false;
  return true;
}

/* JSON as a Lua table constructor; null is nil (a case body leaves the
 * field out, which is what a map makes of a null anyway). */
static void put_value(FILE *out, const struct json *v, int depth) {
  switch (json_type(v)) {
  case JSON_NULL:
    fputs("nil", out);
    break;
  case JSON_BOOL:
    fputs(json_bool(v) ? "true" : "false", out);
    break;
  case JSON_NUMBER: {
    double d = json_num(v);
    if (d == (double)(long long)d && d > -9e15 && d < 9e15)
      fprintf(out, "%lld", (long long)d);
    else
      fprintf(out, "%.17g", d);
    break;
  }
  case JSON_STRING:
    put_string(out, json_str(v));
    break;
  case JSON_ARRAY:
  case JSON_OBJECT: {
    size_t n = json_len(v);
    bool obj = json_type(v) == JSON_OBJECT;
    if (n == 0) {
      fputs("{}", out);
      break;
    }
    fputs("{\n", out);
    for (size_t i = 0; i < n; i++) {
      put_indent(out, depth + 1);
      if (obj) {
        const char *k = json_key_at(v, i);
        if (is_name(k))
          fputs(k, out);
        else {
          fputc('[', out);
          put_string(out, k);
          fputc(']', out);
        }
        fputs(" = ", out);
      }
      put_value(out, json_at(v, i), depth + 1);
      fputs(",\n", out);
    }
    put_indent(out, depth);
    fputc('}', out);
    break;
  }
  }
}

struct requests {
  FILE *out;
  const struct config *cfg;
  int run; /* the event's last run: only its requests are the story */
  char last[2048];
  bool last_failed; /* the last request got no answer, a 429 or a 5xx */
};

/* The part of url the case format compares: the path after the service's
 * base URL, without the query. */
static void path_of(const struct config *cfg, const char *service, const char *url, char *out,
                    size_t n) {
  const char *base = strcmp(service, "nowcerts") == 0 ? cfg->nowcerts_base_url : cfg->ghl_base_url;
  const char *p = url;
  size_t bl = base ? strlen(base) : 0;
  while (bl > 0 && base[bl - 1] == '/')
    bl--;
  if (bl && strncmp(url, base, bl) == 0)
    p = url + bl;
  else if ((p = strstr(url, "://")) && (p = strchr(p + 3, '/')) == NULL)
    p = "/";
  if (!p)
    p = url;
  size_t len = strcspn(p, "?");
  snprintf(out, n, "%.*s", (int)len, p);
}

static int put_request(void *ud, const struct store_attempt *a) {
  struct requests *r = ud;
  if (a->event_attempt != r->run)
    return 0;
  /* A retried call is one request of the case: the same request again
   * after one that failed as a retry would. The same request after one
   * that was answered is a second call (two searches by the same path, one
   * by e-mail and one by phone, differ only in their bodies). */
  char key[2048];
  snprintf(key, sizeof key, "%s %s %s", a->service, a->method, a->url);
  bool retry = r->last_failed && strcmp(key, r->last) == 0;
  snprintf(r->last, sizeof r->last, "%s", key);
  r->last_failed = a->status == 0 || a->status == 429 || a->status >= 500;
  if (retry)
    return 0;
  char path[1024];
  path_of(r->cfg, a->service, a->url, path, sizeof path);
  fprintf(r->out, "        { service = \"%s\", method = \"%s\", path = ", a->service, a->method);
  put_string(r->out, path);
  fprintf(r->out, " }, -- answered %d%s%s\n", a->status, a->error ? ": " : "",
          a->error ? a->error : "");
  return 0;
}

static int max_run(void *ud, const struct store_attempt *a) {
  int *run = ud;
  if (a->event_attempt > *run)
    *run = a->event_attempt;
  return 0;
}

int ascase_write(FILE *out, const struct config *cfg, struct store *s, const char *id) {
  struct store_event e;
  int got = store_event_get(s, id, &e);
  if (got != 0)
    return got > 0 ? 1 : -1;
  char err[256];
  struct json *body = json_parse(e.payload, e.payload_len, err, sizeof err);
  const char *status = store_status_name(e.status);
  const char *outcome = strcmp(status, "done") == 0         ? "done"
                        : strcmp(status, "dead") == 0       ? "failed"
                        : strcmp(status, "retry_wait") == 0 ? "retry"
                                                            : NULL;
  fprintf(out,
          "-- A test case made by `ncghl events --as-case` from the stored event\n"
          "-- %s (%s %s, %s after %d run%s).\n"
          "-- Complete it: add the upstream's `answers` (what each request got back;\n"
          "-- without them a search finds nobody and a write works), trim `expect`\n"
          "-- to what matters, and save it under MAPPINGS_DIR/tests/.\n"
          "return {\n"
          "  { name = ",
          e.id, e.source, e.type ? e.type : "?", status, e.attempts, e.attempts == 1 ? "" : "s");
  char name[256];
  snprintf(name, sizeof name, "%s %s %.12s", e.source, e.type ? e.type : "event",
           strchr(e.id, '_') ? strchr(e.id, '_') + 1 : e.id);
  put_string(out, name);
  fprintf(out, ",\n    source = \"%s\",\n    body = ", e.source);
  if (body)
    put_value(out, body, 2);
  else
    put_string(out, e.payload); /* the case format takes JSON text too */
  /* A GHL event is for one location: the case runs as that location's
   * service, not as the runner's made-up one (which would ignore it). */
  const char *loc = strcmp(e.source, "ghl") == 0 ? json_str(json_get(body, "locationId")) : NULL;
  if (loc) {
    fputs(",\n    config = { GHL_LOCATION_ID = ", out);
    put_string(out, loc);
    fputs(" }", out);
  }
  /* The example answer is from the side the event writes to. */
  if (strcmp(e.source, "ghl") == 0)
    fputs(",\n    answers = {\n"
          "      -- { service = \"nowcerts\", method = \"GET\", path = \"/InsuredDetailList\","
          " status = 200,\n"
          "      --   body = { value = {} } },\n",
          out);
  else
    fputs(",\n    answers = {\n"
          "      -- { service = \"ghl\", method = \"POST\", path = \"/contacts/search\", status = 200,\n"
          "      --   body = { contacts = {}, total = 0 } },\n",
          out);
  fputs("    },\n"
        "    expect = {\n",
        out);
  if (outcome)
    fprintf(out, "      outcome = \"%s\",\n", outcome);
  else
    fprintf(out, "      -- outcome = \"done\", -- the event is %s\n", status);
  fputs("      requests = {\n", out);
  struct requests r = {out, cfg, 0, "", false};
  int rc = store_attempt_list(s, e.id, max_run, &r.run);
  if (rc == 0)
    rc = store_attempt_list(s, e.id, put_request, &r);
  fputs("      },\n    } },\n}\n", out);
  json_free(body);
  store_event_free(&e);
  return rc == 0 ? 0 : -1;
}
