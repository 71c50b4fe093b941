/* store_backend: what a store backend (store_sqlite.c, store_pg.c) gives the
 * dispatch in store.c. Private to the store: the rest of ncghl sees only
 * store.h. Each backend's own struct starts with a struct store, whose ops
 * table routes every call of store.h to it; the members after ops are kept
 * by the backends alike (owner, counts) and read by store.c. */
#ifndef NCGHL_STORE_BACKEND_H
#define NCGHL_STORE_BACKEND_H

#include "store.h"

struct store_ops {
  void (*close)(struct store *s);
  int (*begin)(struct store *s);
  int (*set_full_sync)(struct store *s, bool full);
  const char *(*path)(struct store *s);
  int (*commit)(struct store *s);
  int (*rollback)(struct store *s);
  bool (*in_txn)(struct store *s);
  bool (*writable)(struct store *s);
  int (*schema_version)(struct store *s);
  int (*event_put)(struct store *s, const char *id, const char *source, const char *type,
                   const char *payload, size_t payload_len, enum ev_status initial, double now,
                   double ttl, enum store_put *result, enum ev_status *existing);
  int (*event_get)(struct store *s, const char *id, struct store_event *out);
  int (*event_claim)(struct store *s, const char *id, double now);
  int (*claim_due)(struct store *s, double now, int max, struct store_event *out, int *n);
  int (*event_finish)(struct store *s, const char *id, enum ev_status st_new, double next_at,
                      const char *last_error, const char *result, double now);
  int (*event_requeue)(struct store *s, const char *id, double now);
  int (*recover_running)(struct store *s, int *n);
  double (*next_due)(struct store *s);
  int (*event_list)(struct store *s, const char *status, int limit,
                    int (*cb)(void *ud, const struct store_event *e), void *ud);
  int (*count_by_status)(struct store *s, long counts[EV_STATUS_COUNT]);
  int (*attempt_add_io)(struct store *s, const char *event_id, int event_attempt,
                        const char *service, const char *method, const char *url, int status,
                        const char *error, double duration_ms, double at, const char *request,
                        size_t request_len, const char *answer, size_t answer_len);
  int (*attempt_list)(struct store *s, const char *event_id,
                      int (*cb)(void *ud, const struct store_attempt *a), void *ud);
  int (*link_put)(struct store *s, const char *kind, const char *nowcerts_id, const char *ghl_id,
                  double now);
  char *(*link_ghl)(struct store *s, const char *kind, const char *nowcerts_id);
  char *(*link_nowcerts)(struct store *s, const char *kind, const char *ghl_id);
  int (*link_delete)(struct store *s, const char *kind, const char *nowcerts_id);
  int (*snapshot_put)(struct store *s, const char *kind, const char *nowcerts_id,
                      const char *ghl_id, const char *json, double now);
  char *(*snapshot_get)(struct store *s, const char *kind, const char *nowcerts_id);
  int (*conflict_add)(struct store *s, const struct store_conflict *c);
  long long (*conflict_count)(struct store *s);
  int (*change_add)(struct store *s, const struct store_change *c);
  int (*conflict_list)(struct store *s, const struct store_sync_filter *f,
                       int (*cb)(void *ud, const struct store_conflict *c), void *ud);
  int (*change_list)(struct store *s, const struct store_sync_filter *f,
                     int (*cb)(void *ud, const struct store_change *c), void *ud);
  int (*kv_put)(struct store *s, const char *key, const char *value);
  char *(*kv_get)(struct store *s, const char *key);
  void (*set_busy_timeout)(struct store *s, int ms);
  enum store_fault (*last_fault)(struct store *s);
  void (*clear_fault)(struct store *s);
  long long (*total_changes)(struct store *s);
  int (*running_list)(struct store *s,
                      int (*cb)(void *ud, const char *id, const char *owner, double updated_at),
                      void *ud);
  int (*event_release)(struct store *s, const char *id, double now);
  int (*event_forget)(struct store *s, const char *id);
  int (*set_autocheckpoint)(struct store *s, int pages);
  int (*checkpoint)(struct store *s, int *wal_pages, int *copied);
  int (*retention_batch)(struct store *s, double cutoff, int batch, int *deleted);
  int (*reload_add)(struct store *s, double at, bool ok, const char *version, const char *message);
  int (*reload_list)(struct store *s, int limit, int (*cb)(void *ud, const struct store_reload *r),
                     void *ud);
  int (*event_count_since)(struct store *s, double since, long *n);
  int (*event_search)(struct store *s, const struct store_event_filter *f, int limit,
                      int (*cb)(void *ud, const struct store_event *e), void *ud);
  int (*event_people)(struct store *s, const char *event_id, int (*cb)(void *ud, const char *term),
                      void *ud);
  const char *(*wal_file)(struct store *s);
  int (*rate_take)(struct store *s, const char *key, int limit, double window, double now,
                   double *wait);
  /* Sets key to value if it holds old (NULL: if it is absent): 1 done, 0
   * not, -1 error. */
  int (*kv_swap)(struct store *s, const char *key, const char *old, const char *value);
  /* Optional (NULL: one process per store, nothing to do); see
   * store_keys_lock. */
  int (*keys_lock)(struct store *s, const char *const *keys, int n);
  void (*keys_unlock)(struct store *s, const char *const *keys, int n);
};

struct store {
  const struct store_ops *ops;
  char owner[160]; /* what running rows this connection claims are marked with */
  /* Events by status: committed counts, and the changes of the open
   * transaction (kept apart until its COMMIT, dropped on ROLLBACK). */
  long counts[EV_STATUS_COUNT];
  long delta[EV_STATUS_COUNT];
  long saved_delta[EV_STATUS_COUNT]; /* at the open savepoint */
  long count_queries;
  bool shared; /* several nodes may use this store at once (PostgreSQL) */
};

/* Sets ops and the owner ("<host>:<pid>:<start time>"), zeroes the rest. */
void store_base_init(struct store *s, const struct store_ops *ops);
/* Writes a one-line reason to err (and the log). */
void store_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct store *store_sqlite_open(const char *path, char *err, size_t errlen);
struct store *store_pg_open(const char *url, char *err, size_t errlen);
bool store_pg_exists(const char *url);

/* The person filter of an event search (store_event_filter.person) split
 * into at most STORE_TERMS_MAX words, lower-cased, each cut to
 * STORE_SEARCH_MAX bytes: the first picks the events through the index,
 * each further one must name the same event. Returns how many. */
#define STORE_TERMS_MAX 4
int store_person_words(const char *person, char words[][STORE_SEARCH_MAX + 1]);

/* qsort order of claimed events: oldest first, then by id. */
int store_event_age_cmp(const void *a, const void *b);

#endif
