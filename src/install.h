/* install: GHL's Marketplace install (OAuth authorization code grant for
 * one location). GET /oauth/callback?code= exchanges the code at GHL's
 * token endpoint and hands the tokens to the tokens object of the tenant
 * that serves the location, which uses and stores them at once (no
 * restart); GET /oauth/install sends the browser to GHL's chooselocation
 * page. A failed or untrustworthy exchange changes nothing. Answers are
 * small HTML pages for the installing person's browser (docs/install.md). */
#ifndef NCGHL_INSTALL_H
#define NCGHL_INSTALL_H

#include <stdbool.h>

#include <event2/http.h>

struct config;
struct httpc;
struct tokens;
struct install;

/* The tenant that serves location_id: its GHL OAuth tokens (which keep
 * themselves in that tenant's store through their saver) and a name for
 * the page and the log. Returns false when this deployment does not serve
 * that location (the install is refused with 403); true with tokens NULL
 * when it does, but not through OAuth (a static token: refused with 409). */
struct queue;
struct install_target {
  struct tokens *tokens;
  const char *name;    /* may be NULL */
  struct queue *queue; /* the tenant's group commit: the page waits for it; NULL: none */
};
typedef bool (*install_find_fn)(void *ud, const char *location_id, struct install_target *out);

/* cfg gives GHL_BASE_URL, GHL_CLIENT_ID/SECRET, GHL_REDIRECT_URI,
 * GHL_OAUTH_SCOPES, GHL_MARKETPLACE_URL and UPSTREAM_TIMEOUT; without
 * client id and secret every install route answers 503 saying so. NULL
 * when out of memory. */
struct install *install_new(const struct config *cfg, struct httpc *http, install_find_fn find,
                            void *find_ud);
/* Answers exchanges still in flight 503 and cancels them, while the loop
 * can still write the pages out (the end of a graceful stop). */
void install_stop(struct install *in);
/* install_stop, then frees; before httpc_free and the HTTP server. */
void install_free(struct install *in);
/* Whether path (without a trailing '/') is one of this module's routes, so
 * the server can rate-limit it before install_handle. */
bool install_owns(const char *path);
/* Answers req (a path install_owns), now or when GHL's token endpoint has. */
void install_handle(struct install *in, struct evhttp_request *req, const char *path,
                    const char *query, enum evhttp_cmd_type cmd);
/* Exchanges in flight: a graceful stop waits for them, since GHL may
 * already have spent their codes. */
int install_pending(const struct install *in);

#endif
