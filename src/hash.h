/* hash: FNV-1a over bytes and strings, and a string-keyed chained hash
 * table whose nodes live inside the caller's own structs (intrusive), so
 * inserting and removing never allocate. The bucket array is the caller's
 * too, sized once: the tables here hold a bounded number of entries. */
#ifndef NCGHL_HASH_H
#define NCGHL_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* FNV-1a: start from HASH_SEED and feed bytes with hash_add, or hash a
 * whole NUL-terminated string with hash_str. */
#define HASH_SEED 2166136261u
uint32_t hash_add(uint32_t h, const void *bytes, size_t n);
uint32_t hash_str(const char *s);

/* Put one in the struct that the table holds, and set `key` to a string that
 * lives as long as the entry is in the table. */
struct hash_node {
  struct hash_node *next;
  const char *key;
};

struct hash_table {
  struct hash_node **buckets;
  size_t nbuckets;
};

/* The struct a node is in: HASH_ENTRY(n, struct job, node). */
#define HASH_ENTRY(n, type, member) ((type *)(void *)((char *)(n) - offsetof(type, member)))

/* Uses `buckets` (nbuckets > 0 of them, emptied here) for the table. */
void hash_init(struct hash_table *t, struct hash_node **buckets, size_t nbuckets);
/* The most recently inserted node with this key, or NULL. */
struct hash_node *hash_find(const struct hash_table *t, const char *key);
/* Adds n (its key set); a key may be in the table more than once. */
void hash_insert(struct hash_table *t, struct hash_node *n);
/* Takes n out of the table; false if it was not in it. */
bool hash_remove(struct hash_table *t, struct hash_node *n);
/* Some node of the table, or NULL when it is empty: for emptying it. */
struct hash_node *hash_any(const struct hash_table *t);

#endif
