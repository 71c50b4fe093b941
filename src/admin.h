/* admin: the admin API (SPEC §5, §12) under /api/v1 and the /ui page that
 * reads it: events (filtered, paged), one event's story, replay, the queue
 * at a glance, reload history, backfill progress. Every API route needs
 * Authorization: Bearer $ADMIN_TOKEN; every route, /ui too, is 404 while
 * ADMIN_TOKEN is unset, before anything else is looked at. */
#ifndef NCGHL_ADMIN_H
#define NCGHL_ADMIN_H

#include <stdbool.h>

#include <event2/http.h>

struct config;
struct store;
struct queue;
struct engine;
struct lrt;
struct admin;

struct admin *admin_new(const struct config *cfg, struct store *store, struct queue *queue,
                        struct engine *engine, struct lrt *rt);
void admin_free(struct admin *a);
/* Whether path is one of the admin routes (the API's and /ui's). */
bool admin_is_route(const char *path);
/* The admin API's gate alone: true when req carries ADMIN_TOKEN; else it
 * has been answered (404 without ADMIN_TOKEN, 401). */
bool admin_check_token(struct admin *a, struct evhttp_request *req);
/* From now on a replay is refused with 503 (shutting down). */
void admin_drain(struct admin *a);
/* Answers req when path (without a trailing '/') is an admin route and
 * returns true; returns false, having answered nothing, otherwise. */
bool admin_handle(struct admin *a, struct evhttp_request *req, const char *path, const char *query,
                  enum evhttp_cmd_type cmd);

#endif
