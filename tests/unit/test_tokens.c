/* Unit tests for tokens.c, driven by a fake transport (requests are kept
 * until the test answers them) and a fake clock (plain numbers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "tokens.h"

/* ---- fake transport --------------------------------------------------------- */

#define MAX_REQ 16

struct fake_req {
  char url[256];
  char form[512];
  tokens_reply_fn reply;
  void *req_ud;
  bool open; /* sent, not yet answered or cancelled */
  bool cancelled;
};

struct fake_io {
  struct fake_req req[MAX_REQ];
  int n;
  bool refuse; /* post fails */
};

static void *fake_post(void *io_ud, const char *url, const char *form, size_t form_len,
                       tokens_reply_fn reply, void *req_ud) {
  struct fake_io *io = io_ud;
  if (io->refuse || io->n == MAX_REQ)
    return NULL;
  struct fake_req *r = &io->req[io->n++];
  snprintf(r->url, sizeof r->url, "%s", url);
  assert_true(form_len < sizeof r->form);
  assert_int_equal(strlen(form), form_len);
  memcpy(r->form, form, form_len + 1);
  r->reply = reply;
  r->req_ud = req_ud;
  r->open = true;
  return r;
}

static void fake_cancel(void *io_ud, void *request) {
  struct fake_req *r = request;
  assert_true(r->open);
  r->open = false;
  r->cancelled = true;
}

static int open_count(const struct fake_io *io) {
  int n = 0;
  for (int i = 0; i < io->n; i++)
    n += io->req[i].open;
  return n;
}

/* Answers the latest request. */
static void answer(struct fake_io *io, int status, const char *body) {
  assert_true(io->n > 0);
  struct fake_req *r = &io->req[io->n - 1];
  assert_true(r->open);
  r->open = false;
  r->reply(r->req_ud, status, body, strlen(body), status == 0 ? "Connection refused" : NULL);
}

static const char *last_form(const struct fake_io *io) {
  assert_true(io->n > 0);
  return io->req[io->n - 1].form;
}

/* ---- waiters ------------------------------------------------------------------ */

struct got {
  int calls;
  char token[128];
  int status;
  char error[400];
};

static void on_token(void *ud, const char *token, int status, const char *error) {
  struct got *g = ud;
  g->calls++;
  snprintf(g->token, sizeof g->token, "%s", token ? token : "");
  g->status = status;
  snprintf(g->error, sizeof g->error, "%s", error ? error : "");
}

static const char *login_ok(const char *access, const char *refresh, int expires) {
  static char body[512];
  snprintf(body, sizeof body,
           "{\"access_token\":\"%s\",\"token_type\":\"bearer\",\"expires_in\":%d,"
           "\"refresh_token\":\"%s\",\"as:client_id\":\"ngAuthApp\",\"userName\":\"agent\","
           "\"userId\":\"8a1c2b3d-0000-4000-8000-00000000beef\"}",
           access, expires, refresh);
  return body;
}

static struct tokens *nowcerts(struct fake_io *io, double margin) {
  struct tokens_params p = {.kind = TOKENS_NOWCERTS,
                            .base_url = "https://api.example.test/api/",
                            .username = "agent@example.com",
                            .password = "p&ss w=rd+1",
                            .refresh_margin = margin};
  struct tokens_io tio = {.post = fake_post, .cancel = fake_cancel, .io_ud = io};
  struct tokens *tk = tokens_new(&p, &tio);
  assert_non_null(tk);
  return tk;
}

/* A GHL OAuth token source (Marketplace app keys and a refresh token); *p
 * and *tio are kept for the tests that build a second one from them. */
static struct tokens *ghl_oauth(struct fake_io *io, struct tokens_params *p, struct tokens_io *tio,
                                const char *secret, const char *refresh) {
  *p = (struct tokens_params){.kind = TOKENS_GHL_OAUTH,
                              .base_url = "https://services.example.test",
                              .client_id = "client-1",
                              .client_secret = secret,
                              .refresh_token = refresh,
                              .refresh_margin = 300};
  *tio = (struct tokens_io){.post = fake_post, .cancel = fake_cancel, .io_ud = io};
  struct tokens *tk = tokens_new(p, tio);
  assert_non_null(tk);
  return tk;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_login_then_reuse_while_fresh(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  assert_null(tokens_fresh(tk, 0));
  assert_null(tokens_user_id(tk));

  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), 0);
  assert_int_equal(io.n, 1);
  assert_int_equal(g.calls, 0); /* never from inside tokens_wait */
  assert_string_equal(io.req[0].url, "https://api.example.test/api/token");
  assert_string_equal(io.req[0].form,
                      "grant_type=password&username=agent%40example.com"
                      "&password=p%26ss%20w%3Drd%2B1&client_id=ngAuthApp");

  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 3600));
  assert_int_equal(g.calls, 1);
  assert_string_equal(g.token, "ACCESS-1");
  assert_int_equal(g.status, 200);
  assert_string_equal(tokens_user_id(tk), "8a1c2b3d-0000-4000-8000-00000000beef");

  /* Fresh until `margin` before expiry, with no request at all. */
  assert_string_equal(tokens_fresh(tk, 1), "ACCESS-1");
  assert_string_equal(tokens_fresh(tk, 3299), "ACCESS-1");
  assert_int_equal(io.n, 1);
  assert_int_equal(tokens_requests(tk), 1);
  tokens_free(tk);
}

static void test_refresh_inside_margin_and_rotation(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 1000, on_token, &g), 0);
  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 3600));

  /* 299 s left: inside the margin. */
  assert_null(tokens_fresh(tk, 1000 + 3301));
  assert_int_equal(tokens_wait(tk, 1000 + 3301, on_token, &g), 0);
  assert_int_equal(io.n, 2);
  assert_string_equal(last_form(&io),
                      "grant_type=refresh_token&refresh_token=REFRESH-1&client_id=ngAuthApp");
  assert_string_equal(io.req[1].url, "https://api.example.test/api/token");
  answer(&io, 200, login_ok("ACCESS-2", "REFRESH-2", 3600));
  assert_int_equal(g.calls, 2);
  assert_string_equal(g.token, "ACCESS-2");
  assert_string_equal(tokens_fresh(tk, 4400), "ACCESS-2");

  /* The next refresh carries the rotated refresh token. */
  double t = 4301 + 3301;
  assert_null(tokens_fresh(tk, t));
  assert_int_equal(tokens_wait(tk, t, on_token, &g), 0);
  assert_string_equal(last_form(&io),
                      "grant_type=refresh_token&refresh_token=REFRESH-2&client_id=ngAuthApp");
  answer(&io, 200, login_ok("ACCESS-3", "REFRESH-3", 3600));
  assert_string_equal(g.token, "ACCESS-3");
  assert_int_equal(tokens_requests(tk), 3);
  tokens_free(tk);
}

static void test_refresh_failure_falls_back_to_login(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g = {0};
  tokens_wait(tk, 0, on_token, &g);
  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 3600));

  assert_int_equal(tokens_wait(tk, 3400, on_token, &g), 0);
  assert_int_equal(io.n, 2);
  assert_non_null(strstr(last_form(&io), "grant_type=refresh_token"));
  answer(&io, 400, "{\"error\":\"invalid_grant\"}");
  /* Not called yet: a password login is under way for the same waiter. */
  assert_int_equal(g.calls, 1);
  assert_int_equal(io.n, 3);
  assert_non_null(strstr(last_form(&io), "grant_type=password"));
  answer(&io, 200, login_ok("ACCESS-2", "REFRESH-2", 3600));
  assert_int_equal(g.calls, 2);
  assert_string_equal(g.token, "ACCESS-2");

  /* A refresh that gets no answer at all is replaced by a login too. */
  assert_int_equal(tokens_wait(tk, 3400 + 3400, on_token, &g), 0);
  assert_non_null(strstr(last_form(&io), "refresh_token=REFRESH-2"));
  answer(&io, 0, "");
  assert_non_null(strstr(last_form(&io), "grant_type=password"));
  answer(&io, 200, login_ok("ACCESS-3", "REFRESH-3", 3600));
  assert_string_equal(g.token, "ACCESS-3");
  tokens_free(tk);
}

static void test_concurrent_waiters_share_one_request(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g[10] = {0};
  for (int i = 0; i < 10; i++)
    assert_int_equal(tokens_wait(tk, 5, on_token, &g[i]), 0);
  assert_int_equal(io.n, 1);
  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 3600));
  for (int i = 0; i < 10; i++) {
    assert_int_equal(g[i].calls, 1);
    assert_string_equal(g[i].token, "ACCESS-1");
  }
  assert_int_equal(tokens_requests(tk), 1);
  tokens_free(tk);
}

static void test_401_forces_one_refresh(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g = {0};
  tokens_wait(tk, 0, on_token, &g);
  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 3600));

  /* Two calls in flight with ACCESS-1 both get 401. */
  assert_true(tokens_invalid(tk, "ACCESS-1"));
  assert_null(tokens_fresh(tk, 10));
  struct got a = {0}, b = {0};
  assert_int_equal(tokens_wait(tk, 10, on_token, &a), 0);
  assert_true(tokens_invalid(tk, "ACCESS-1"));
  assert_int_equal(tokens_wait(tk, 10, on_token, &b), 0);
  assert_int_equal(io.n, 2); /* one refresh for both */
  assert_non_null(strstr(last_form(&io), "refresh_token=REFRESH-1"));
  answer(&io, 200, login_ok("ACCESS-2", "REFRESH-2", 3600));
  assert_string_equal(a.token, "ACCESS-2");
  assert_string_equal(b.token, "ACCESS-2");

  /* A 401 for a token that was already replaced: no extra refresh, the
   * newer token is used. */
  assert_true(tokens_invalid(tk, "ACCESS-1"));
  assert_string_equal(tokens_fresh(tk, 11), "ACCESS-2");
  assert_int_equal(io.n, 2);
  assert_int_equal(tokens_requests(tk), 2);
  tokens_free(tk);
}

static void test_login_failure_reaches_every_waiter(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g[3] = {0};
  for (int i = 0; i < 3; i++)
    tokens_wait(tk, 0, on_token, &g[i]);
  assert_int_equal(io.n, 1);
  answer(&io, 400,
         "{\"error\":\"invalid_grant\",\"error_description\":\"The user name or password is "
         "incorrect.\"}");
  for (int i = 0; i < 3; i++) {
    assert_int_equal(g[i].calls, 1);
    assert_string_equal(g[i].token, "");
    assert_int_equal(g[i].status, 400);
    assert_non_null(strstr(g[i].error, "HTTP 400"));
    assert_non_null(strstr(g[i].error, "password is incorrect"));
  }
  assert_null(tokens_fresh(tk, 1));
  assert_int_equal(io.n, 1); /* no login loop */

  /* No answer at all: status 0, and the next wait tries again. */
  struct got h = {0};
  assert_int_equal(tokens_wait(tk, 2, on_token, &h), 0);
  answer(&io, 0, "");
  assert_int_equal(h.status, 0);
  assert_non_null(strstr(h.error, "Connection refused"));

  /* A 200 without a token is a failure too. */
  assert_int_equal(tokens_wait(tk, 3, on_token, &h), 0);
  answer(&io, 200, "{\"status\":0,\"message\":\"nope\"}");
  assert_int_equal(h.calls, 2);
  assert_string_equal(h.token, "");
  assert_non_null(strstr(h.error, "access_token"));
  tokens_free(tk);
}

static void test_post_failure_and_free_in_flight(void **state) {
  struct fake_io io = {.refuse = true};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), -1);
  io.refuse = false;
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), 0);
  assert_int_equal(open_count(&io), 1);
  /* Freed with a request in flight: it is cancelled, nobody is called. */
  tokens_free(tk);
  assert_true(io.req[0].cancelled);
  assert_int_equal(g.calls, 0);
}

struct freeing_waiter {
  struct tokens *tk;
  int calls;
};

static void free_on_token(void *ud, const char *token, int status, const char *error) {
  struct freeing_waiter *f = ud;
  f->calls++;
  tokens_free(f->tk);
}

static void test_free_from_inside_a_waiter(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct freeing_waiter f = {.tk = tk};
  struct got later = {0};
  tokens_wait(tk, 0, free_on_token, &f);
  tokens_wait(tk, 0, on_token, &later);
  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 3600));
  assert_int_equal(f.calls, 1);
  /* The owner went away: its other waiters are dropped, not called. */
  assert_int_equal(later.calls, 0);
}

static void test_short_lifetime_does_not_renew_every_call(void **state) {
  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g = {0};
  tokens_wait(tk, 0, on_token, &g);
  answer(&io, 200, login_ok("ACCESS-1", "REFRESH-1", 100));
  /* Lifetime under the margin: renewed at half-life, not at once. */
  assert_string_equal(tokens_fresh(tk, 49), "ACCESS-1");
  assert_null(tokens_fresh(tk, 50));
  /* Lifetime counts from when the request was sent. */
  tokens_wait(tk, 60, on_token, &g);
  answer(&io, 200, login_ok("ACCESS-2", "REFRESH-2", 1000));
  assert_string_equal(tokens_fresh(tk, 60 + 699), "ACCESS-2");
  assert_null(tokens_fresh(tk, 60 + 700));
  tokens_free(tk);
}

static void test_ghl_static(void **state) {
  struct tokens_params p = {.kind = TOKENS_GHL_STATIC, .static_token = "pit-1234-abcd"};
  struct tokens *tk = tokens_new(&p, NULL);
  assert_non_null(tk);
  assert_string_equal(tokens_fresh(tk, 0), "pit-1234-abcd");
  assert_string_equal(tokens_fresh(tk, 1e9), "pit-1234-abcd");
  assert_false(tokens_can_renew(tk));
  /* A 401 with a static token is final. */
  assert_false(tokens_invalid(tk, "pit-1234-abcd"));
  assert_string_equal(tokens_fresh(tk, 1), "pit-1234-abcd");
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), -1);
  tokens_free(tk);

  struct tokens_params none = {.kind = TOKENS_GHL_STATIC};
  assert_null(tokens_new(&none, NULL));
}

static void test_ghl_oauth_refresh_rotates(void **state) {
  struct fake_io io = {0};
  struct tokens_params p;
  struct tokens_io tio;
  struct tokens *tk = ghl_oauth(&io, &p, &tio, "s3cret/+=", "GHL-REFRESH-0");
  assert_true(tokens_can_renew(tk));
  assert_null(tokens_fresh(tk, 0));
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), 0);
  assert_string_equal(io.req[0].url, "https://services.example.test/oauth/token");
  assert_string_equal(io.req[0].form,
                      "grant_type=refresh_token&refresh_token=GHL-REFRESH-0&client_id=client-1"
                      "&client_secret=s3cret%2F%2B%3D&user_type=Location");
  answer(&io, 200,
         "{\"access_token\":\"GHL-ACCESS-1\",\"token_type\":\"Bearer\",\"expires_in\":86399,"
         "\"refresh_token\":\"GHL-REFRESH-1\",\"userType\":\"Location\",\"userId\":\"u1\"}");
  assert_string_equal(g.token, "GHL-ACCESS-1");

  assert_true(tokens_invalid(tk, "GHL-ACCESS-1"));
  assert_int_equal(tokens_wait(tk, 5, on_token, &g), 0);
  assert_non_null(strstr(last_form(&io), "refresh_token=GHL-REFRESH-1&"));
  /* A failed OAuth refresh cannot fall back to a login: waiters hear it. */
  answer(&io, 401, "{\"error\":\"invalid_grant\"}");
  assert_int_equal(g.calls, 2);
  assert_int_equal(g.status, 401);
  assert_int_equal(io.n, 2);
  tokens_free(tk);

  /* With a first access token configured too, it is used until refused. */
  struct fake_io io2 = {0};
  tio.io_ud = &io2;
  p.static_token = "GHL-ACCESS-0";
  tk = tokens_new(&p, &tio);
  assert_string_equal(tokens_fresh(tk, 1e6), "GHL-ACCESS-0");
  tokens_invalid(tk, "GHL-ACCESS-0");
  assert_null(tokens_fresh(tk, 1e6));
  tokens_free(tk);
  assert_int_equal(io2.n, 0);
}

static void test_tokens_are_redacted_in_logs(void **state) {
  char path[] = "/tmp/test_tokens_logXXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(log_init(LOGL_DEBUG, path), 0);

  struct fake_io io = {0};
  struct tokens *tk = nowcerts(&io, 300);
  struct got g = {0};
  tokens_wait(tk, 0, on_token, &g);
  answer(&io, 200, login_ok("ACCESS-SECRET-1", "REFRESH-SECRET-1", 3600));
  tokens_wait(tk, 3400, on_token, &g);
  answer(&io, 500, "{\"error\":\"server_error\"}"); /* refresh fails, login follows */
  answer(&io, 200, login_ok("ACCESS-SECRET-2", "REFRESH-SECRET-2", 3600));
  /* Careless code elsewhere still cannot print them. */
  log_info("leak attempt %s %s %s", g.token, "REFRESH-SECRET-2", "p&ss w=rd+1");
  tokens_free(tk);
  log_init(LOGL_INFO, NULL);

  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char text[16384];
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  unlink(path);
  assert_non_null(strstr(text, "leak attempt *** *** ***"));
  assert_null(strstr(text, "SECRET"));
  assert_null(strstr(text, "p&ss"));
  assert_null(strstr(text, "p%26ss"));
  assert_non_null(strstr(text, "logging in again")); /* the fallback was logged */
}

static void test_form_escape(void **state) {
  char out[64];
  assert_int_equal(tokens_form_escape("aZ09-._~", out, sizeof out), 8);
  assert_string_equal(out, "aZ09-._~");
  assert_int_equal(tokens_form_escape("a b&c=d+e/é", out, sizeof out), 26);
  assert_string_equal(out, "a%20b%26c%3Dd%2Be%2F%C3%A9");
  assert_int_equal(tokens_form_escape("", out, sizeof out), 0);
  assert_string_equal(out, "");
  char tiny[4];
  assert_int_equal(tokens_form_escape("abc", tiny, sizeof tiny), 3);
  assert_int_equal(tokens_form_escape("abcd", tiny, sizeof tiny), -1);
  assert_int_equal(tokens_form_escape("a&", tiny, sizeof tiny), -1);
}

static void test_missing_parameters(void **state) {
  struct fake_io io = {0};
  struct tokens_io tio = {.post = fake_post, .cancel = fake_cancel, .io_ud = &io};
  struct tokens_params p = {.kind = TOKENS_NOWCERTS, .base_url = "http://x", .username = "u"};
  assert_null(tokens_new(&p, &tio));
  p.password = "";
  assert_null(tokens_new(&p, &tio));
  struct tokens_params o = {.kind = TOKENS_GHL_OAUTH, .base_url = "http://x", .client_id = "c"};
  assert_null(tokens_new(&o, &tio));
  /* Client id and secret without a refresh token: a deployment waiting for
   * its Marketplace install, with nothing to send until then. */
  o.client_secret = "s";
  struct tokens *tk = tokens_new(&o, &tio);
  assert_non_null(tk);
  assert_false(tokens_has_grant(tk));
  assert_null(tokens_fresh(tk, 0));
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), -1);
  assert_int_equal(io.n, 0);
  tokens_free(tk);
}


struct saved {
  int calls;
  char refresh[64], access[64];
  double lifetime;
};

static int saver(void *ud, const char *refresh, const char *access, double lifetime) {
  struct saved *s = ud;
  s->calls++;
  snprintf(s->refresh, sizeof s->refresh, "%s", refresh);
  snprintf(s->access, sizeof s->access, "%s", access ? access : "");
  s->lifetime = lifetime;
  return 0;
}

/* A rotated GHL refresh token is handed to the saver, and tokens restored
 * from an earlier run are used instead of the configured seed. */
static void test_ghl_oauth_tokens_saved_and_restored(void **state) {
  (void)state;
  struct fake_io io = {0};
  struct tokens_params p;
  struct tokens_io tio;
  struct tokens *tk = ghl_oauth(&io, &p, &tio, "secret-1", "GHL-SEED");
  struct saved sv = {0};
  tokens_set_saver(tk, saver, &sv);
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), 0);
  answer(&io, 200,
         "{\"access_token\":\"GHL-ACCESS-1\",\"expires_in\":86399,"
         "\"refresh_token\":\"GHL-REFRESH-1\"}");
  assert_int_equal(sv.calls, 1);
  assert_string_equal(sv.refresh, "GHL-REFRESH-1");
  assert_string_equal(sv.access, "GHL-ACCESS-1");
  assert_true(sv.lifetime == 86399);
  /* A failed refresh saves nothing. */
  tokens_invalid(tk, "GHL-ACCESS-1");
  assert_int_equal(tokens_wait(tk, 5, on_token, &g), 0);
  answer(&io, 503, "{\"error\":\"temporarily_unavailable\"}");
  assert_int_equal(sv.calls, 1);
  tokens_free(tk);

  /* The next start: the seed is still configured, the stored pair wins. */
  struct fake_io io2 = {0};
  tio.io_ud = &io2;
  tk = tokens_new(&p, &tio);
  assert_int_equal(tokens_restore(tk, "GHL-REFRESH-1", "GHL-ACCESS-1", 1000, 50), 0);
  assert_string_equal(tokens_fresh(tk, 60), "GHL-ACCESS-1");
  /* Past its renewal time (lifetime minus the margin) it is refreshed with
   * the stored refresh token, never the seed. */
  assert_null(tokens_fresh(tk, 50 + 1000 - 299));
  assert_int_equal(tokens_wait(tk, 800, on_token, &g), 0);
  assert_non_null(strstr(last_form(&io2), "refresh_token=GHL-REFRESH-1&"));
  assert_null(strstr(last_form(&io2), "GHL-SEED"));
  tokens_free(tk);

  /* An expired stored access token: only the refresh token is taken. */
  struct fake_io io3 = {0};
  tio.io_ud = &io3;
  tk = tokens_new(&p, &tio);
  assert_int_equal(tokens_restore(tk, "GHL-REFRESH-2", "GHL-ACCESS-2", -5, 50), 0);
  assert_null(tokens_fresh(tk, 60));
  assert_int_equal(tokens_wait(tk, 60, on_token, &g), 0);
  assert_non_null(strstr(last_form(&io3), "refresh_token=GHL-REFRESH-2&"));
  tokens_free(tk);

  /* Other kinds have nothing to restore. */
  struct fake_io io4 = {0};
  struct tokens *nc = nowcerts(&io4, 300);
  assert_int_equal(tokens_restore(nc, "x-refresh", "x-access", 100, 0), -1);
  tokens_free(nc);
}

/* A Marketplace install replaces both tokens at once: calls waiting for a
 * refresh of the old grant get the installed token, the refresh's answer
 * is never applied, the pair is saved, and the next refresh presents the
 * installed refresh token. */
static void test_ghl_oauth_install(void **state) {
  (void)state;
  struct fake_io io = {0};
  struct tokens_params p;
  struct tokens_io tio;
  struct tokens *tk = ghl_oauth(&io, &p, &tio, "secret-1", "OLD-REFRESH");
  struct saved sv = {0};
  tokens_set_saver(tk, saver, &sv);
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), 0);
  assert_int_equal(open_count(&io), 1);

  assert_int_equal(tokens_install(tk, "NEW-REFRESH", "NEW-ACCESS", 86399, 10), 0);
  assert_int_equal(g.calls, 1);
  assert_string_equal(g.token, "NEW-ACCESS");
  assert_true(io.req[0].cancelled);
  assert_int_equal(sv.calls, 1);
  assert_string_equal(sv.refresh, "NEW-REFRESH");
  assert_string_equal(sv.access, "NEW-ACCESS");
  assert_string_equal(tokens_fresh(tk, 20), "NEW-ACCESS");

  /* Refused later: the refresh presents the installed refresh token. */
  assert_true(tokens_invalid(tk, "NEW-ACCESS"));
  assert_int_equal(tokens_wait(tk, 30, on_token, &g), 0);
  assert_non_null(strstr(last_form(&io), "refresh_token=NEW-REFRESH&"));
  tokens_free(tk);

  /* Nothing changes on bad input, and other kinds take no install. */
  struct fake_io io2 = {0};
  tio.io_ud = &io2;
  p.refresh_token = NULL;
  tk = tokens_new(&p, &tio);
  assert_int_equal(tokens_install(tk, "", "A", 100, 0), -1);
  assert_int_equal(tokens_install(tk, "R", NULL, 100, 0), -1);
  assert_int_equal(tokens_install(tk, "R", "A", 0, 0), -1);
  assert_false(tokens_has_grant(tk));
  /* No saver: in use, but reported as not stored. */
  assert_int_equal(tokens_install(tk, "R", "A", 100, 0), 1);
  assert_true(tokens_has_grant(tk));
  assert_string_equal(tokens_fresh(tk, 1), "A");
  tokens_free(tk);
  struct fake_io io3 = {0};
  struct tokens *nc = nowcerts(&io3, 300);
  assert_int_equal(tokens_install(nc, "R", "A", 100, 0), -1);
  tokens_free(nc);
}

/* A refused GHL refresh tells the agency to install again, keeps no trace
 * of the refusal (the same token is presented at the next wait: GHL may
 * take it again) and an install ends it. */
static void test_ghl_oauth_refused_refresh(void **state) {
  (void)state;
  struct fake_io io = {0};
  struct tokens_params p;
  struct tokens_io tio;
  struct tokens *tk = ghl_oauth(&io, &p, &tio, "secret-1", "GONE-REFRESH");
  struct got g = {0};
  assert_int_equal(tokens_wait(tk, 0, on_token, &g), 0);
  answer(&io, 400, "{\"error\":\"invalid_grant\",\"error_description\":\"token revoked\"}");
  assert_int_equal(g.calls, 1);
  assert_int_equal(g.status, 400);
  assert_string_equal(g.error, "GHL refused the refresh token (invalid_grant): install the app "
                               "again for this location (docs/install.md); token request: HTTP "
                               "400: token revoked");

  /* No OAuth error code in the answer: the status stands in for it. */
  assert_int_equal(tokens_wait(tk, 10, on_token, &g), 0);
  assert_non_null(strstr(last_form(&io), "refresh_token=GONE-REFRESH&"));
  answer(&io, 401, "{\"statusCode\":401,\"message\":\"Invalid grant\",\"error\":\"Unauthorized\"}");
  assert_int_equal(g.status, 401);
  assert_non_null(
      strstr(g.error, "GHL refused the refresh token (HTTP 401): install the app again"));

  /* Wrong keys are not the install's fault: the advice differs. */
  assert_int_equal(tokens_wait(tk, 20, on_token, &g), 0);
  answer(&io, 401, "{\"error\":\"invalid_client\"}");
  assert_non_null(strstr(g.error, "(invalid_client): check GHL_CLIENT_ID and GHL_CLIENT_SECRET"));

  /* A 5xx is no refusal. */
  assert_int_equal(tokens_wait(tk, 30, on_token, &g), 0);
  answer(&io, 503, "{\"error\":\"temporarily_unavailable\"}");
  assert_string_equal(g.error, "token request: HTTP 503: temporarily_unavailable");

  assert_int_equal(tokens_install(tk, "NEW-REFRESH", "NEW-ACCESS", 86399, 40), 1);
  assert_string_equal(tokens_fresh(tk, 41), "NEW-ACCESS");
  assert_int_equal(g.calls, 4);
  tokens_free(tk);

  /* NowCerts' refused login keeps its plain line. */
  struct fake_io io2 = {0};
  struct tokens *nc = nowcerts(&io2, 300);
  assert_int_equal(tokens_wait(nc, 0, on_token, &g), 0);
  answer(&io2, 400, "{\"error\":\"invalid_grant\"}");
  assert_string_equal(g.error, "token request: HTTP 400: invalid_grant");
  tokens_free(nc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_login_then_reuse_while_fresh),
      cmocka_unit_test(test_refresh_inside_margin_and_rotation),
      cmocka_unit_test(test_refresh_failure_falls_back_to_login),
      cmocka_unit_test(test_concurrent_waiters_share_one_request),
      cmocka_unit_test(test_401_forces_one_refresh),
      cmocka_unit_test(test_login_failure_reaches_every_waiter),
      cmocka_unit_test(test_post_failure_and_free_in_flight),
      cmocka_unit_test(test_free_from_inside_a_waiter),
      cmocka_unit_test(test_short_lifetime_does_not_renew_every_call),
      cmocka_unit_test(test_ghl_static),
      cmocka_unit_test(test_ghl_oauth_refresh_rotates),
      cmocka_unit_test(test_ghl_oauth_tokens_saved_and_restored),
      cmocka_unit_test(test_tokens_are_redacted_in_logs),
      cmocka_unit_test(test_form_escape),
      cmocka_unit_test(test_missing_parameters),
      cmocka_unit_test(test_ghl_oauth_install),
      cmocka_unit_test(test_ghl_oauth_refused_refresh),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
