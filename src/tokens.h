/* tokens: the bearer tokens ncghl sends upstream and their lifecycles, as a
 * state machine with no I/O of its own: NowCerts' password login with
 * rotating refresh tokens, GHL's static Private Integration token, or GHL's
 * OAuth refresh. Time and the form POST are passed in, so every transition
 * is unit-tested with a fake clock and a fake transport. At most one token
 * request is in flight per instance; everyone who needs a token meanwhile
 * waits for that one. Tokens are registered with the logger's redaction
 * the moment they are known; GHL OAuth tokens are handed to a saver so a
 * rotated refresh token survives a restart (tokens_set_saver). */
#ifndef NCGHL_TOKENS_H
#define NCGHL_TOKENS_H

#include <stdbool.h>
#include <stddef.h>

struct tokens;

enum tokens_kind {
  TOKENS_NOWCERTS = 0, /* password login at <base>/token, refresh_token grant */
  TOKENS_GHL_STATIC,   /* a fixed token (Private Integration token) */
  TOKENS_GHL_OAUTH     /* refresh_token grant at <base>/oauth/token; without a
                        * refresh token it waits for a Marketplace install */
};

struct tokens_params {
  enum tokens_kind kind;
  const char *base_url;      /* NowCerts REST base ("/api" included) or GHL base */
  const char *username;      /* NowCerts */
  const char *password;      /* NowCerts */
  const char *client_id;     /* GHL OAuth */
  const char *client_secret; /* GHL OAuth */
  const char *refresh_token; /* GHL OAuth: the configured (first) refresh token;
                              * NULL: none until tokens_install */
  const char *static_token;  /* GHL static; with OAuth: an optional first access
                              * token, used until it is refused */
  double refresh_margin;     /* seconds before expiry to renew (NowCerts, OAuth) */
};

/* Called exactly once per request the transport accepted, never from inside
 * post(). status 0 and error set: no answer. body is NUL-terminated. */
typedef void (*tokens_reply_fn)(void *req_ud, int status, const char *body, size_t len,
                                const char *error);

/* The one piece of I/O the module needs: a form-encoded POST. post returns
 * an opaque request handle (NULL if it could not be sent); cancel drops a
 * request so that reply is never called. url and form are only valid
 * during post. The form holds secrets: a transport must never log it. */
struct tokens_io {
  void *(*post)(void *io_ud, const char *url, const char *form, size_t form_len,
                tokens_reply_fn reply, void *req_ud);
  void (*cancel)(void *io_ud, void *request);
  void *io_ud;
};

/* token is NULL on failure; then status is the token endpoint's HTTP status
 * (0: no answer) and error one line without secrets (for a GHL refresh
 * refused with a 4xx, one that says to install the app again). */
typedef void (*tokens_cb)(void *ud, const char *token, int status, const char *error);

/* NULL when a parameter the kind needs is missing or memory runs out.
 * Registers the configured password, secret and tokens with the logger. */
struct tokens *tokens_new(const struct tokens_params *p, const struct tokens_io *io);
/* Cancels the request in flight and drops waiters without calling them. */
void tokens_free(struct tokens *tk);

/* The token to use at `now` without any I/O, or NULL when one must be
 * fetched (none yet, inside the refresh margin, or refused by a 401). The
 * string stays valid until the next call into this module. */
const char *tokens_fresh(struct tokens *tk, double now);
/* Waits for a token: joins the request in flight or starts one (refresh if
 * possible, else login). cb is called exactly once, never from inside
 * tokens_wait. Returns 0, or -1 when no request could be started (cb will
 * not be called). */
int tokens_wait(struct tokens *tk, double now, tokens_cb cb, void *ud);
/* The upstream answered 401 to `token`. If it is still the current token it
 * is dropped, so the next tokens_fresh returns NULL and tokens_wait renews
 * it; if it was already replaced, nothing happens and the newer one is used.
 * Returns true when a renewed token can be tried (false for a static token:
 * a 401 there is final). */
bool tokens_invalid(struct tokens *tk, const char *token);
/* Whether this kind can renew tokens at all (false for a static token). */
bool tokens_can_renew(const struct tokens *tk);
/* NowCerts' userId from the last token response, NULL before the first. */
const char *tokens_user_id(const struct tokens *tk);
/* Token requests made so far (logins and refreshes). */
long tokens_requests(const struct tokens *tk);

/* Told of the end of every token request (login or refresh), e.g. to count
 * it in a metric; called before any waiter hears of it. fn NULL: none. */
typedef void (*tokens_observer_fn)(void *ud, bool ok);
void tokens_set_observer(struct tokens *tk, tokens_observer_fn fn, void *ud);

/* GHL OAuth keeps its tokens across restarts: a refresh token is usable
 * once, so the one GHL handed out last is the only one that works. The
 * owner stores what the saver is given and restores it at the next start,
 * before the first call; the configured refresh token is only the seed.
 * lifetime: seconds from the response on (or left, for restore); <= 0 for
 * an access token that is no longer usable. Restored tokens are registered
 * with the logger. Both do nothing for other kinds. */
typedef int (*tokens_saver_fn)(void *ud, const char *refresh, const char *access,
                               double lifetime); /* 0: stored */
void tokens_set_saver(struct tokens *tk, tokens_saver_fn fn, void *ud);
int tokens_restore(struct tokens *tk, const char *refresh, const char *access, double lifetime,
                   double now);

/* A Marketplace install (an authorization code exchanged by install.c)
 * replaces both GHL OAuth tokens at once, without a restart: the next
 * tokens_fresh returns `access`, the next refresh presents `refresh`. A
 * refresh in flight is dropped (its answer belongs to the replaced grant)
 * and its waiters get the new access token. The pair goes to the saver.
 * Returns 0 when in use and stored, 1 when in use but the saver failed
 * (or there is none), -1 when nothing changed (not OAuth, empty token,
 * lifetime <= 0, out of memory). */
int tokens_install(struct tokens *tk, const char *refresh, const char *access, double lifetime,
                   double now);
/* Whether there is anything to authenticate with yet: false for GHL OAuth
 * configured without a refresh token, before its install. */
bool tokens_has_grant(const struct tokens *tk);

/* application/x-www-form-urlencoded value encoding into out (NUL-terminated,
 * at most outlen bytes). Returns the length, or -1 when out is too small. */
long tokens_form_escape(const char *s, char *out, size_t outlen);
/* Appends "&name=value" to a form body ("name=value" when it is empty),
 * the value form-encoded; the encoded copy is wiped (it is as secret as
 * the value). 0, or -1 out of memory. */
struct buf;
int tokens_form_add(struct buf *b, const char *name, const char *value);
/* A token answer's lifetime in seconds: its expires_in (a number, or a
 * number as text), or an hour when it has none that makes sense. */
struct json;
double tokens_lifetime(const struct json *root);

#endif
