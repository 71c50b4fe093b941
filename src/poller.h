/* poller: the dependable path from NowCerts, which documents no webhook of
 * its own. Every NOWCERTS_POLL_INTERVAL seconds it pages through
 * InsuredDetailList and PolicyDetailList for the records changed since its
 * watermark (less an overlap) and hands each to the engine exactly as the
 * HTTP intake hands it a webhook: same queue, same idempotency, same
 * mappings. A page's watermark is written in the same group commit as the
 * page's events, so a restart at any moment neither skips nor repeats one. */
#ifndef NCGHL_POLLER_H
#define NCGHL_POLLER_H

#include <stdbool.h>

#include "buf.h"
#include "digest.h"

struct event_base;
struct config;
struct store;
struct queue;
struct engine;
struct upstream;
struct json;
struct poller;

/* Records per list request ($top). */
#define POLLER_PAGE 100
/* Each window starts this long before the watermark. It covers a change
 * whose changeDate was stamped before it became visible in the list, and
 * NowCerts' minute-precision dates; a record read twice is the same event
 * id, so the overlap costs a lookup, never a second sync. */
#define POLLER_OVERLAP_SECONDS 120

/* The lists read by changeDate (POLLER_LISTS of them), and NowCerts'
 * DeletedInsuredList, which has no date: it is read whole, every
 * NOWCERTS_DELETED_POLL_INTERVAL, and a deleted insured that is linked to a
 * GHL contact becomes an INSURED_DELETE event. */
enum poller_list { POLLER_INSUREDS = 0, POLLER_POLICIES = 1, POLLER_DELETED = 2 };
#define POLLER_LISTS 2

/* True when the service should poll: NowCerts credentials are set and
 * NOWCERTS_POLL_INTERVAL > 0. */
bool poller_wanted(const struct config *cfg);
/* Starts polling (the first cycle at once, then one every interval after the
 * last one ended). tenant: the tenant whose NowCerts it reads (its log lines
 * start "tenant <name>: ", as its events' do), or NULL for the single
 * agency. NULL only when out of memory. */
struct poller *poller_new(struct event_base *base, const char *tenant, const struct config *cfg,
                          struct store *store, struct queue *queue, struct engine *engine,
                          struct upstream *up);
/* No new cycle or page from now on (the service is stopping). */
void poller_stop(struct poller *p);
/* A request or a page's commit may still be outstanding: free only after
 * queue_free and up_free, which end both without calling back. */
void poller_free(struct poller *p);

/* ---- shared with `ncghl backfill`, which reads the same lists ---- */

/* "InsuredDetailList" or "PolicyDetailList"; "insureds" or "policies". */
const char *poller_list_path_name(enum poller_list l);
const char *poller_list_name(enum poller_list l);
/* The list request: "/<List>?$filter=changeDate ge <since>&$orderby=changeDate
 * asc, id asc&$top=100&$skip=<skip>&$count=true" (no filter when since is
 * NULL), percent-encoded. Returns 0, or -1 when out of memory. */
int poller_list_request(enum poller_list l, const char *since, long skip, struct buf *out);
/* The event type a list record stands for: INSURED_INSERT when createDate
 * equals changeDate (the record has not changed since it was created), else
 * INSURED_UPDATE; policies the same as POLICY_* or, with isQuote, QUOTE_*. */
const char *poller_event_type(enum poller_list l, const struct json *rec);
/* The event for a record, exactly as a relayed webhook would carry it:
 * body = {"data":<record>,"event_type":<type>,"timestamp":<changeDate>} in
 * canonical form, and its id (source "nowcerts"). The same record read
 * again, unchanged, gives the same id. Returns 0 or -1. */
int poller_event(enum poller_list l, const struct json *rec, struct buf *body,
                 char id[EVENT_ID_MAX], const char **type);
/* A record's id ("id", else "databaseId"), NULL if it has none. */
const char *poller_record_id(const struct json *rec);
/* ISO-8601 ("2024-05-01", "2024-05-01T10:00", "...:00Z", "...:00.703-05:00")
 * to unix seconds; a date or time without an offset is UTC. 0 or -1. */
int poller_parse_time(const char *s, double *t);
/* Unix seconds to "YYYY-MM-DDTHH:MM:SSZ", rounded down to the second. */
void poller_format_time(double t, char out[32]);

#endif
