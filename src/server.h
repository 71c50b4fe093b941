/* server: the HTTP interface (SPEC §5) on libevent's evhttp. It validates a
 * webhook, gives it its canonical id, hands it to the engine inside the
 * group commit, and answers only after that commit: 200 when the event ran
 * to its end within WEBHOOK_WAIT_MS, 202 while it still runs, and the
 * SPEC's answers for duplicates, bad bodies and failures. Around that: the
 * inbound rate limit, webhook signatures (GHL's keys, our NowCerts HMAC),
 * NowCerts REST-hook intake, /health, /metrics and /openapi.json; the admin
 * API's routes are admin.c's. Every answer but /metrics is JSON. Each
 * tenant's intake is a site of its own (its store, queue, engine, Lua);
 * the listener, its limits and GHL's keys are the process's. */
#ifndef NCGHL_SERVER_H
#define NCGHL_SERVER_H

#include <stddef.h>

struct event_base;
struct config;
struct store;
struct queue;
struct engine;
struct lrt;
struct metrics;
struct server;
struct server_site;
struct install;
struct pace;

/* The listener, on cfg's HOST:PORT, with the process's limits and GHL's
 * keys. It counts into registry m and serves it at GET /metrics (NULL: a
 * registry of its own). It answers nothing but /health, /metrics and
 * /openapi.json until a site is added. */
struct server *server_new(struct event_base *base, const struct config *cfg, struct metrics *m,
                          char *err, size_t errlen);
/* Adds one tenant's intake (tenant.h): its webhooks, admin API and /health
 * part go to these modules. tenant NULL is the single agency on the plain
 * routes (then no other site is added); a name is reached at
 * /t/<name>/api/v1/..., by ?tenant=<name> on the admin API, and by its
 * cfg's GHL_LOCATION_ID on the plain GHL route. Its webhook metrics and
 * ncghl_events{status} gauge count into m (a tenant's view, metrics.h).
 * NULL when out of memory. */
struct server_site *server_site_add(struct server *s, const char *tenant,
                                    const struct config *cfg, struct store *store,
                                    struct queue *queue, struct engine *engine, struct lrt *rt,
                                    struct metrics *m);
/* Its tenant restarts: from now on new events are answered 503 with
 * Retry-After (nothing stored), and answers still owed are sent 202 at
 * once; the site stays until server_site_remove. */
void server_site_pause(struct server_site *site);
/* Takes a site away: its answers still owed are sent 202 (their events are
 * stored and run when the tenant runs again). Before its modules go. */
void server_site_remove(struct server *s, struct server_site *site);
/* Serves the Marketplace install's routes (install.h) with in; the caller
 * keeps it and frees it before the server. Until then they answer 503. */
void server_set_install(struct server *s, struct install *in);
/* The loop's pace (pace.h), told of every answer owed to a webhook's sender
 * and of its sending: how the engines see a burst. p outlives s. */
void server_set_pace(struct server *s, struct pace *p);
/* From now on new requests are answered 503 (shutting down); answers still
 * owed are sent as their events end. */
void server_drain(struct server *s);
/* What the last doctor run found wrong for this site (doctor.h): with n >
 * 0, /health answers "status":"degraded" with these "reasons"; n == 0
 * clears it. The strings are copied. */
void server_site_set_degraded(struct server_site *site, const char *const *reasons, size_t n);
/* After the store failed (queue.h): takes the site's events that were
 * stored but answered 503 out of the file again, so a later copy is
 * accepted as new. Best effort, at exit; 0 when done or nothing to do. */
int server_site_undo_refused(struct server_site *site);
/* Answers still owed, every site's. */
int server_pending(const struct server *s);
void server_free(struct server *s);

/* The checks a webhook body passes before it is stored, without a request or
 * a store (for the fuzzer and tests): path is the route
 * ("/api/v1/webhooks/nowcerts", "/api/v1/webhooks/ghl", "/api/v1/sync/manual"),
 * hook the ?hook= name or NULL. Signatures, size and rate limits are not
 * checked here. Returns 0 when the service would store the event, with its
 * type in `type` and its id in `id` (EVENT_ID_MAX bytes); otherwise the
 * status it would answer (404, 400, 422, 500). */
int server_check_webhook(const char *path, const char *hook, const char *body, size_t len,
                         char *type, size_t typelen, char *id);

#endif
