/* server: the HTTP interface (SPEC §5) on libevent's evhttp. It validates a
 * webhook, gives it its canonical id, hands it to the engine inside the
 * group commit, and answers only after that commit: 200 when the event ran
 * to its end within WEBHOOK_WAIT_MS, 202 while it still runs, and the
 * SPEC's answers for duplicates, bad bodies and failures. Around that: the
 * inbound rate limit, webhook signatures (GHL's keys, our NowCerts HMAC),
 * NowCerts REST-hook intake, /health, /metrics and /openapi.json; the admin
 * API's routes are admin.c's. Every answer but /metrics is JSON. */
#ifndef NCGHL_SERVER_H
#define NCGHL_SERVER_H

#include <stddef.h>

struct event_base;
struct config;
struct store;
struct queue;
struct engine;
struct lrt;
struct server;

struct server *server_new(struct event_base *base, const struct config *cfg, struct store *store,
                          struct queue *queue, struct engine *engine, struct lrt *rt, char *err,
                          size_t errlen);
/* Counts webhook answers (ncghl_webhook_requests_total, ncghl_webhook_duration_seconds)
 * into m and serves m at GET /metrics, with the ncghl_events{status} gauge
 * from the counts the store keeps in memory (no query per scrape). Until then the server counts into a
 * registry of its own. */
struct metrics;
void server_set_metrics(struct server *s, struct metrics *m);
/* Serves the Marketplace install's routes (install.h) with in; the caller
 * keeps it and frees it before the server. Until then they answer 503. */
struct install;
void server_set_install(struct server *s, struct install *in);
/* From now on new requests are answered 503 (shutting down); answers still
 * owed are sent as their events end. */
void server_drain(struct server *s);
/* What the last doctor run found wrong (doctor.h): with n > 0, /health
 * answers "status":"degraded" with these "reasons"; n == 0 clears it. The
 * strings are copied. */
void server_set_degraded(struct server *s, const char *const *reasons, size_t n);
/* After the store failed (queue.h): takes the events that were stored but
 * answered 503 out of the file again, so a later copy is accepted as new.
 * Best effort, at exit; 0 when done or nothing to do. */
int server_undo_refused(struct server *s);
/* Answers still owed. */
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
