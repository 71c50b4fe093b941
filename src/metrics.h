/* metrics: a per-process registry of counters, gauges and histograms with
 * labels, rendered in Prometheus' text format for GET /metrics. Modules get
 * the registry handed to them (there is no global one), look their families
 * up once, and count on the hot path without allocating once a label set
 * has been seen. Every function accepts NULL families, so code that runs
 * without a registry (unit tests, the offline runner) needs no checks. */
#ifndef NCGHL_METRICS_H
#define NCGHL_METRICS_H

#include <stddef.h>

struct buf;
struct metrics;
struct metric; /* one family: a name, its help text, type and label names */

enum metric_type { METRIC_COUNTER = 0, METRIC_GAUGE, METRIC_HISTOGRAM };

/* A NULL-terminated list of label names or values, e.g.
 * metric_inc(f, METRIC_LABELS("nowcerts", "200")). */
#define METRIC_LABELS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define METRIC_NO_LABELS ((const char *const[]){NULL})

/* Bucket upper bounds suited to a webhook answer (0.5 ms ... 5 s) and to
 * one upstream HTTP attempt (5 ms ... 30 s). */
extern const double metrics_webhook_buckets[];
extern const int metrics_webhook_nbuckets;
extern const double metrics_upstream_buckets[];
extern const int metrics_upstream_nbuckets;

struct metrics *metrics_new(void);
/* A view of registry root in which every family gets one more label, first:
 * label=value (a tenant's metrics: tenant="a"). Families registered through
 * it live in root (rendered there, with that label) and count with the
 * view's value put before the values given. metrics_free(view) frees the
 * view, not the series it counted. NULL when out of memory or misused. */
struct metrics *metrics_view(struct metrics *root, const char *label, const char *value);
void metrics_free(struct metrics *m);

/* Registers a family, or returns the one already registered under that name
 * when its type and label names are the same (so two modules may both ask
 * for it). NULL on a mismatch, a bad name, or out of memory. labels may be
 * NULL for none. For histograms, bounds are the finite upper bounds in
 * increasing order (+Inf is implied). */
struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
                               const char *const *labels);
struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
                             const char *const *labels);
struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                 const char *const *labels, const double *bounds, int nbounds);

/* values must give exactly one value per label name (else nothing happens).
 * The first use of a label set allocates it; later uses only look it up. */
void metric_add(struct metric *f, const char *const *values, double v); /* counters and gauges */
void metric_inc(struct metric *f, const char *const *values);
void metric_set(struct metric *f, const char *const *values, double v); /* gauges */
void metric_observe(struct metric *f, const char *const *values, double v); /* histograms */
/* The current value of a counter or gauge series (a histogram's count); 0
 * when that label set was never used. For tests and /health. */
double metric_value(struct metric *f, const char *const *values);

/* Appends the whole registry in Prometheus text format (version 0.0.4):
 * HELP and TYPE lines, escaped label values, histograms as cumulative
 * _bucket{le=...} lines with _sum and _count. Returns 0, or -1 when out
 * is full or memory runs out. */
int metrics_render(const struct metrics *m, struct buf *out);

#endif
