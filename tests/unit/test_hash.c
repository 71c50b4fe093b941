/* Unit tests for hash: FNV-1a against published test vectors, incremental
 * hashing equal to whole-string hashing, and the intrusive table: find,
 * duplicates, removal from anywhere in a chain, and emptying. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "hash.h"

struct item {
  int value;
  struct hash_node node;
  char key[16];
};

static void test_fnv1a_vectors(void **state) {
  assert_int_equal(hash_str(""), 0x811c9dc5u);
  assert_int_equal(hash_str("a"), 0xe40c292cu);
  assert_int_equal(hash_str("foobar"), 0xbf9cf968u);
  /* Bytes past 0x7f count as unsigned. */
  assert_int_equal(hash_add(HASH_SEED, "\xff", 1), (0x811c9dc5u ^ 0xffu) * 16777619u);
}

static void test_add_in_pieces_is_the_whole(void **state) {
  uint32_t h = hash_add(HASH_SEED, "foo", 3);
  h = hash_add(h, "bar", 3);
  assert_int_equal(h, hash_str("foobar"));
  assert_int_equal(hash_add(HASH_SEED, "x", 0), HASH_SEED);
}

static void fill(struct item *items, int n, struct hash_table *t) {
  for (int i = 0; i < n; i++) {
    items[i].value = i;
    snprintf(items[i].key, sizeof items[i].key, "key-%d", i);
    items[i].node.key = items[i].key;
    hash_insert(t, &items[i].node);
  }
}

/* One bucket: every entry in the same chain, the worst case for removal. */
static void test_one_bucket_chain(void **state) {
  struct hash_node *buckets[1] = {(struct hash_node *)&buckets}; /* garbage: init empties */
  struct hash_table t;
  hash_init(&t, buckets, 1);
  assert_null(hash_any(&t));
  assert_null(hash_find(&t, "key-0"));
  struct item items[5];
  fill(items, 5, &t);
  for (int i = 0; i < 5; i++) {
    struct hash_node *n = hash_find(&t, items[i].key);
    assert_non_null(n);
    assert_int_equal(HASH_ENTRY(n, struct item, node)->value, i);
  }
  assert_null(hash_find(&t, "key-5"));
  assert_null(hash_find(&t, "key-"));
  /* The middle, the head (last inserted) and the tail of the chain. */
  assert_true(hash_remove(&t, &items[2].node));
  assert_true(hash_remove(&t, &items[4].node));
  assert_true(hash_remove(&t, &items[0].node));
  assert_false(hash_remove(&t, &items[2].node));
  assert_null(hash_find(&t, "key-2"));
  assert_null(hash_find(&t, "key-4"));
  assert_null(hash_find(&t, "key-0"));
  assert_ptr_equal(hash_find(&t, "key-1"), &items[1].node);
  assert_ptr_equal(hash_find(&t, "key-3"), &items[3].node);
}

static void test_duplicate_keys_newest_first(void **state) {
  struct hash_node *buckets[7];
  struct hash_table t;
  hash_init(&t, buckets, 7);
  struct item a = {.value = 1, .key = "same"}, b = {.value = 2, .key = "same"};
  a.node.key = a.key;
  b.node.key = b.key;
  hash_insert(&t, &a.node);
  hash_insert(&t, &b.node);
  assert_ptr_equal(hash_find(&t, "same"), &b.node);
  assert_true(hash_remove(&t, &b.node));
  assert_ptr_equal(hash_find(&t, "same"), &a.node);
  assert_true(hash_remove(&t, &a.node));
  assert_null(hash_find(&t, "same"));
}

static void test_many_buckets_and_emptying(void **state) {
  struct hash_node *buckets[16];
  struct hash_table t;
  hash_init(&t, buckets, 16);
  struct item items[200];
  fill(items, 200, &t);
  for (int i = 0; i < 200; i++)
    assert_ptr_equal(hash_find(&t, items[i].key), &items[i].node);
  bool seen[200] = {0};
  int removed = 0;
  for (struct hash_node *n; (n = hash_any(&t));) {
    struct item *it = HASH_ENTRY(n, struct item, node);
    assert_false(seen[it->value]);
    seen[it->value] = true;
    assert_true(hash_remove(&t, n));
    removed++;
  }
  assert_int_equal(removed, 200);
  for (int i = 0; i < 200; i++)
    assert_null(hash_find(&t, items[i].key));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fnv1a_vectors),
      cmocka_unit_test(test_add_in_pieces_is_the_whole),
      cmocka_unit_test(test_one_bucket_chain),
      cmocka_unit_test(test_duplicate_keys_newest_first),
      cmocka_unit_test(test_many_buckets_and_emptying),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
