#include "hash.h"

#include <string.h>

uint32_t hash_add(uint32_t h, const void *bytes, size_t n) {
  const unsigned char *p = bytes;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 16777619u;
  return h;
}

uint32_t hash_str(const char *s) {
  return hash_add(HASH_SEED, s, strlen(s));
}

static struct hash_node **bucket(const struct hash_table *t, const char *key) {
  return &t->buckets[hash_str(key) % t->nbuckets];
}

void hash_init(struct hash_table *t, struct hash_node **buckets, size_t nbuckets) {
  t->buckets = buckets;
  t->nbuckets = nbuckets;
  memset(buckets, 0, nbuckets * sizeof *buckets);
}

struct hash_node *hash_find(const struct hash_table *t, const char *key) {
  for (struct hash_node *n = *bucket(t, key); n; n = n->next)
    if (strcmp(n->key, key) == 0)
      return n;
  return NULL;
}

void hash_insert(struct hash_table *t, struct hash_node *n) {
  struct hash_node **b = bucket(t, n->key);
  n->next = *b;
  *b = n;
}

bool hash_remove(struct hash_table *t, struct hash_node *n) {
  for (struct hash_node **p = bucket(t, n->key); *p; p = &(*p)->next)
    if (*p == n) {
      *p = n->next;
      n->next = NULL;
      return true;
    }
  return false;
}

struct hash_node *hash_any(const struct hash_table *t) {
  for (size_t i = 0; i < t->nbuckets; i++)
    if (t->buckets[i])
      return t->buckets[i];
  return NULL;
}
