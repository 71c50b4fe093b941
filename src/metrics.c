/* Families keep their label sets in an array in first-use order (which is
 * also the order they are rendered in). A lookup compares a hash of the
 * values before any string, so counting an existing series is a short scan
 * of integers and no allocation; the families ncghl has carry a few dozen
 * label sets at most, which is why no hash table is needed. */
#include "metrics.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "hash.h"

/* Webhook answers are mostly a few milliseconds (the commit) or as long as
 * the mapping's upstream calls take, up to WEBHOOK_WAIT_MS. */
const double metrics_webhook_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5};
const int metrics_webhook_nbuckets =
    (int)(sizeof metrics_webhook_buckets / sizeof metrics_webhook_buckets[0]);
/* One upstream attempt: loopback fakes answer in a millisecond, the real
 * APIs in tens to hundreds, a time-out after UPSTREAM_TIMEOUT. */
const double metrics_upstream_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                           0.5,   1,    2.5,   5,    10,  30};
const int metrics_upstream_nbuckets =
    (int)(sizeof metrics_upstream_buckets / sizeof metrics_upstream_buckets[0]);

#define MAX_LABELS 8

/* NULL label values mean none; a compound literal would die with its block. */
static const char *const no_labels[] = {NULL};

struct series {
  uint32_t hash;
  char **values;     /* one per label name */
  double value;      /* counter, gauge */
  double sum;        /* histogram */
  uint64_t count;    /* histogram */
  uint64_t *buckets; /* histogram: nbounds + 1 counts, not cumulative */
};

struct metric {
  char *name, *help;
  enum metric_type type;
  int nlabels;
  char **labels;
  double *bounds;
  int nbounds;
  struct series **series;
  size_t nseries, cap;
  /* A view's handle (metrics_view): counts into target, a family of the
   * root, with `bound` as its first label value. */
  struct metric *target;
  char *bound;
};

struct metrics {
  struct metric **families; /* a view's: its handles */
  size_t n, cap;
  struct metrics *root; /* a view's registry; NULL for a registry */
  char *label, *value;
};

static bool name_ok(const char *s, bool colon) {
  if (!s || !*s)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
    if (!alpha && !(p != s && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

static void series_free(struct series *s, int nlabels) {
  if (!s)
    return;
  for (int i = 0; s->values && i < nlabels; i++)
    free(s->values[i]);
  free(s->values);
  free(s->buckets);
  free(s);
}

static void family_free(struct metric *f) {
  if (!f)
    return;
  for (size_t i = 0; i < f->nseries; i++)
    series_free(f->series[i], f->nlabels);
  free(f->series);
  for (int i = 0; f->labels && i < f->nlabels; i++)
    free(f->labels[i]);
  free(f->labels);
  free(f->bounds);
  free(f->bound);
  free(f->name);
  free(f->help);
  free(f);
}

struct metrics *metrics_new(void) { return calloc(1, sizeof(struct metrics)); }

void metrics_free(struct metrics *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n; i++)
    family_free(m->families[i]);
  free(m->families);
  free(m->label);
  free(m->value);
  free(m);
}

struct metrics *metrics_view(struct metrics *root, const char *label, const char *value) {
  if (!root || root->root || !name_ok(label, false) || !value)
    return NULL;
  struct metrics *v = calloc(1, sizeof *v);
  if (!v)
    return NULL;
  v->root = root;
  v->label = strdup(label);
  v->value = strdup(value);
  if (!v->label || !v->value) {
    metrics_free(v);
    return NULL;
  }
  return v;
}

static int add_family(struct metrics *m, struct metric *f) {
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct metric **fs = realloc(m->families, cap * sizeof *fs);
    if (!fs)
      return -1;
    m->families = fs;
    m->cap = cap;
  }
  m->families[m->n++] = f;
  return 0;
}

/* A view's handle counts into its root family with its own value first:
 * values becomes tmp, which holds MAX_LABELS + 2 pointers. */
static struct metric *bind(struct metric *f, const char *const **values, const char **tmp) {
  if (!f || !f->target)
    return f;
  const char *const *v = *values ? *values : no_labels;
  int n = 0;
  tmp[n++] = f->bound;
  for (int i = 0; v[i] && n <= MAX_LABELS; i++)
    tmp[n++] = v[i];
  tmp[n] = NULL;
  *values = tmp;
  return f->target;
}

static int count_list(const char *const *l) {
  int n = 0;
  while (l && l[n])
    n++;
  return n;
}

static bool same_family(const struct metric *f, enum metric_type type, const char *const *labels,
                        int nlabels, const double *bounds, int nbounds) {
  if (f->type != type || f->nlabels != nlabels)
    return false;
  for (int i = 0; i < nlabels; i++)
    if (strcmp(f->labels[i], labels[i]) != 0)
      return false;
  if (type == METRIC_HISTOGRAM) {
    if (f->nbounds != nbounds)
      return false;
    for (int i = 0; i < nbounds; i++)
      if (f->bounds[i] != bounds[i])
        return false;
  }
  return true;
}

static struct metric *family(struct metrics *m, enum metric_type type, const char *name,
                             const char *help, const char *const *labels, const double *bounds,
                             int nbounds) {
  if (!m || !name_ok(name, true))
    return NULL;
  if (m->root) {
    const char *all[MAX_LABELS + 2] = {m->label};
    int n = 1;
    for (int i = 0; labels && labels[i] && n <= MAX_LABELS; i++)
      all[n++] = labels[i];
    all[n] = NULL;
    struct metric *target = family(m->root, type, name, help, all, bounds, nbounds);
    struct metric *h = target ? calloc(1, sizeof *h) : NULL;
    if (!h)
      return NULL;
    h->type = type;
    h->target = target;
    h->bound = strdup(m->value);
    if (!h->bound || add_family(m, h) != 0) {
      family_free(h);
      return NULL;
    }
    return h;
  }
  int nlabels = count_list(labels);
  if (nlabels > MAX_LABELS)
    return NULL;
  for (int i = 0; i < nlabels; i++)
    if (!name_ok(labels[i], false) || (type == METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0))
      return NULL;
  if (type == METRIC_HISTOGRAM) {
    if (nbounds < 0 || (nbounds > 0 && !bounds))
      return NULL;
    for (int i = 0; i < nbounds; i++)
      if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
        return NULL;
  } else {
    nbounds = 0;
  }
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->families[i]->name, name) == 0)
      return same_family(m->families[i], type, labels, nlabels, bounds, nbounds) ? m->families[i]
                                                                                  : NULL;
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct metric **fs = realloc(m->families, cap * sizeof *fs);
    if (!fs)
      return NULL;
    m->families = fs;
    m->cap = cap;
  }
  struct metric *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  f->type = type;
  f->name = strdup(name);
  f->help = strdup(help ? help : "");
  f->labels = calloc((size_t)nlabels + 1, sizeof *f->labels);
  bool ok = f->name && f->help && f->labels;
  for (int i = 0; ok && i < nlabels; i++) {
    f->labels[i] = strdup(labels[i]);
    ok = f->labels[i] != NULL;
    f->nlabels = i + 1; /* what family_free must free */
  }
  if (ok && nbounds > 0) {
    f->bounds = malloc((size_t)nbounds * sizeof *f->bounds);
    ok = f->bounds != NULL;
    if (ok)
      memcpy(f->bounds, bounds, (size_t)nbounds * sizeof *bounds);
  }
  f->nbounds = nbounds;
  if (!ok) {
    family_free(f);
    return NULL;
  }
  f->nlabels = nlabels;
  m->families[m->n++] = f;
  return f;
}

struct metric *metrics_counter(struct metrics *m, const char *name, const char *help,
                               const char *const *labels) {
  return family(m, METRIC_COUNTER, name, help, labels, NULL, 0);
}

struct metric *metrics_gauge(struct metrics *m, const char *name, const char *help,
                             const char *const *labels) {
  return family(m, METRIC_GAUGE, name, help, labels, NULL, 0);
}

struct metric *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                 const char *const *labels, const double *bounds, int nbounds) {
  return family(m, METRIC_HISTOGRAM, name, help, labels, bounds, nbounds);
}

static uint32_t hash_values(const char *const *values, int n) {
  uint32_t h = HASH_SEED; /* with a separator between values */
  for (int i = 0; i < n; i++) {
    h = hash_add(h, values[i], strlen(values[i]));
    h = hash_add(h, "\xff", 1);
  }
  return h;
}

/* The series for these values, created on first use; NULL when the values
 * do not fit the family or memory runs out. */
static struct series *lookup(struct metric *f, const char *const *values) {
  if (!f)
    return NULL;
  if (!values)
    values = no_labels;
  int n = 0;
  while (n <= f->nlabels && values[n])
    n++;
  if (n != f->nlabels)
    return NULL;
  uint32_t h = hash_values(values, n);
  for (size_t i = 0; i < f->nseries; i++) {
    struct series *s = f->series[i];
    if (s->hash != h)
      continue;
    int k = 0;
    while (k < n && strcmp(s->values[k], values[k]) == 0)
      k++;
    if (k == n)
      return s;
  }
  if (f->nseries == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 8;
    struct series **ss = realloc(f->series, cap * sizeof *ss);
    if (!ss)
      return NULL;
    f->series = ss;
    f->cap = cap;
  }
  struct series *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->hash = h;
  s->values = calloc((size_t)n + 1, sizeof *s->values);
  bool ok = s->values != NULL;
  for (int i = 0; ok && i < n; i++)
    ok = (s->values[i] = strdup(values[i])) != NULL;
  if (ok && f->type == METRIC_HISTOGRAM)
    ok = (s->buckets = calloc((size_t)f->nbounds + 1, sizeof *s->buckets)) != NULL;
  if (!ok) {
    series_free(s, n);
    return NULL;
  }
  f->series[f->nseries++] = s;
  return s;
}

void metric_add(struct metric *f, const char *const *values, double v) {
  const char *tmp[MAX_LABELS + 2];
  f = bind(f, &values, tmp);
  if (!f || f->type == METRIC_HISTOGRAM)
    return;
  /* A counter only goes up; a negative step would break rate(). */
  if (f->type == METRIC_COUNTER && !(v >= 0))
    return;
  struct series *s = lookup(f, values);
  if (s)
    s->value += v;
}

void metric_inc(struct metric *f, const char *const *values) { metric_add(f, values, 1); }

void metric_set(struct metric *f, const char *const *values, double v) {
  const char *tmp[MAX_LABELS + 2];
  f = bind(f, &values, tmp);
  if (!f || f->type != METRIC_GAUGE)
    return;
  struct series *s = lookup(f, values);
  if (s)
    s->value = v;
}

void metric_observe(struct metric *f, const char *const *values, double v) {
  const char *tmp[MAX_LABELS + 2];
  f = bind(f, &values, tmp);
  if (!f || f->type != METRIC_HISTOGRAM || isnan(v))
    return;
  struct series *s = lookup(f, values);
  if (!s)
    return;
  /* Few bounds: a linear scan beats a binary search's branches. */
  int i = 0;
  while (i < f->nbounds && v > f->bounds[i])
    i++;
  s->buckets[i]++;
  s->count++;
  s->sum += v;
}

double metric_value(struct metric *f, const char *const *values) {
  const char *tmp[MAX_LABELS + 2];
  f = bind(f, &values, tmp);
  if (!f)
    return 0;
  if (!values)
    values = no_labels;
  int n = 0;
  while (n <= f->nlabels && values[n])
    n++;
  if (n != f->nlabels)
    return 0;
  /* Read-only: a series that does not exist yet is not created. */
  uint32_t h = hash_values(values, n);
  for (size_t i = 0; i < f->nseries; i++) {
    const struct series *s = f->series[i];
    int k = 0;
    while (s->hash == h && k < n && strcmp(s->values[k], values[k]) == 0)
      k++;
    if (s->hash == h && k == n)
      return f->type == METRIC_HISTOGRAM ? (double)s->count : s->value;
  }
  return 0;
}

/* ---- rendering ------------------------------------------------------------ */

static int put_value(struct buf *b, double v) {
  if (isnan(v))
    return buf_puts(b, "NaN");
  if (isinf(v))
    return buf_puts(b, v > 0 ? "+Inf" : "-Inf");
  /* Whole numbers (every counter) print without an exponent or a fraction. */
  if (v == floor(v) && fabs(v) < 1e15)
    return buf_printf(b, "%.0f", v);
  /* The shortest of 15 or 17 digits that reads back as the same double. */
  char tmp[40];
  snprintf(tmp, sizeof tmp, "%.15g", v);
  if (strtod(tmp, NULL) != v)
    snprintf(tmp, sizeof tmp, "%.17g", v);
  return buf_puts(b, tmp);
}

/* HELP text escapes backslash and newline; label values also the quote. */
static int put_escaped(struct buf *b, const char *s, bool quote) {
  int rc = 0;
  for (; *s && rc == 0; s++) {
    if (*s == '\\')
      rc = buf_puts(b, "\\\\");
    else if (*s == '\n')
      rc = buf_puts(b, "\\n");
    else if (quote && *s == '"')
      rc = buf_puts(b, "\\\"");
    else
      rc = buf_putc(b, *s);
  }
  return rc;
}

/* {a="x",b="y"} with an optional extra le="..." (NULL: none); nothing at
 * all for a series without labels. */
static int put_labels(struct buf *b, const struct metric *f, const struct series *s,
                      const char *le) {
  if (f->nlabels == 0 && !le)
    return 0;
  int rc = buf_putc(b, '{');
  for (int i = 0; i < f->nlabels; i++) {
    rc |= buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
    rc |= put_escaped(b, s->values[i], true);
    rc |= buf_putc(b, '"');
  }
  if (le)
    rc |= buf_printf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
  rc |= buf_putc(b, '}');
  return rc;
}

static int render_histogram(struct buf *b, const struct metric *f, const struct series *s) {
  int rc = 0;
  uint64_t cum = 0;
  for (int i = 0; i <= f->nbounds; i++) {
    cum += s->buckets[i];
    char le[32];
    if (i < f->nbounds)
      snprintf(le, sizeof le, "%g", f->bounds[i]);
    else
      snprintf(le, sizeof le, "+Inf");
    rc |= buf_printf(b, "%s_bucket", f->name);
    rc |= put_labels(b, f, s, le);
    rc |= buf_printf(b, " %llu\n", (unsigned long long)cum);
  }
  rc |= buf_printf(b, "%s_sum", f->name);
  rc |= put_labels(b, f, s, NULL);
  rc |= buf_putc(b, ' ');
  rc |= put_value(b, s->sum);
  rc |= buf_printf(b, "\n%s_count", f->name);
  rc |= put_labels(b, f, s, NULL);
  rc |= buf_printf(b, " %llu\n", (unsigned long long)s->count);
  return rc;
}

int metrics_render(const struct metrics *m, struct buf *out) {
  if (!m)
    return 0;
  static const char *const type_names[] = {"counter", "gauge", "histogram"};
  int rc = 0;
  for (size_t i = 0; i < m->n && rc == 0; i++) {
    const struct metric *f = m->families[i];
    if (f->target)
      continue; /* a view's handle: its root renders it */
    rc |= buf_printf(out, "# HELP %s ", f->name);
    rc |= put_escaped(out, f->help, false);
    rc |= buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    for (size_t k = 0; k < f->nseries && rc == 0; k++) {
      const struct series *s = f->series[k];
      if (f->type == METRIC_HISTOGRAM) {
        rc |= render_histogram(out, f, s);
        continue;
      }
      rc |= buf_puts(out, f->name);
      rc |= put_labels(out, f, s, NULL);
      rc |= buf_putc(out, ' ');
      rc |= put_value(out, s->value);
      rc |= buf_putc(out, '\n');
    }
    /* A family without labels always shows its (zero) value. */
    if (f->nseries == 0 && f->nlabels == 0 && f->type != METRIC_HISTOGRAM)
      rc |= buf_printf(out, "%s 0\n", f->name);
  }
  return rc ? -1 : 0;
}
