/* Unit tests for walbuf: a commit's WAL frames reach the file as one write
 * (counted by a VFS placed under it), before the commit returns, so another
 * connection and a process killed right after the commit see every row;
 * spilled and oversized transactions, pages written twice, and a failing
 * write that makes the commit fail and leaves the file whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "walbuf.h"

/* ---- a counting VFS, registered as the default before walbuf wraps it -- */

static struct {
  int wal_writes; /* writes that reached a WAL file */
  int largest;    /* the largest of them, in bytes */
  int fail_next;  /* the next WAL write fails with SQLITE_IOERR_WRITE */
} seen;

static sqlite3_vfs counting;
static sqlite3_io_methods counting_wal_methods;
static const sqlite3_io_methods *unix_wal_methods;

static int counting_write(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off) {
  if (seen.fail_next) {
    seen.fail_next = 0;
    return SQLITE_IOERR_WRITE;
  }
  seen.wal_writes++;
  if (amt > seen.largest)
    seen.largest = amt;
  return unix_wal_methods->xWrite(f, data, amt, off);
}

static int counting_open(sqlite3_vfs *v, sqlite3_filename name, sqlite3_file *f, int flags,
                         int *out) {
  sqlite3_vfs *real = v->pAppData;
  int rc = real->xOpen(real, name, f, flags, out);
  if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL)) {
    /* The same file with its write counted: a copy of its methods. */
    unix_wal_methods = f->pMethods;
    counting_wal_methods = *f->pMethods;
    counting_wal_methods.xWrite = counting_write;
    f->pMethods = &counting_wal_methods;
  }
  return rc;
}

static int install_counting_vfs(void **state) {
  (void)state;
  sqlite3_vfs *unix_vfs = sqlite3_vfs_find(NULL);
  counting = *unix_vfs;
  counting.zName = "counting";
  counting.pAppData = unix_vfs;
  counting.xOpen = counting_open;
  counting.pNext = NULL;
  /* Default from now on: walbuf, registered at its first use below, wraps
   * whatever is the default then. */
  return sqlite3_vfs_register(&counting, 1) == SQLITE_OK && walbuf_vfs() ? 0 : -1;
}

/* ---- helpers ---------------------------------------------------------- */

static char dir[] = "/tmp/ncghl-walbuf-XXXXXX";
static char path[256];

static sqlite3 *open_db(const char *vfs) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                   SQLITE_OK);
  assert_int_equal(sqlite3_exec(db,
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                                "PRAGMA wal_autocheckpoint = 0;"
                                "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB);"
                                "CREATE INDEX IF NOT EXISTS t_v ON t (v);",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  return db;
}

static int fresh_db(void **state) {
  (void)state;
  strcpy(dir, "/tmp/ncghl-walbuf-XXXXXX");
  if (!mkdtemp(dir))
    return -1;
  snprintf(path, sizeof path, "%s/t.db", dir);
  return 0;
}

static int remove_db(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static sqlite3_int64 one_int(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  sqlite3_int64 v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Rows whose values spread over many pages of the table and its index. */
static int insert_rows(sqlite3 *db, int first, int n, int size) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO t (k, v) VALUES (?1, randomblob(?2))", -1,
                                      &st, NULL),
                   SQLITE_OK);
  int rc = SQLITE_DONE;
  for (int i = 0; i < n && rc == SQLITE_DONE; i++) {
    sqlite3_bind_int(st, 1, first + i);
    sqlite3_bind_int(st, 2, size);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void assert_whole(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
}

/* ---- tests ------------------------------------------------------------ */

static void test_a_commit_is_one_write(void **state) {
  (void)state;
  sqlite3 *plain = open_db("counting");
  seen.wal_writes = 0;
  assert_int_equal(sqlite3_exec(plain, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(insert_rows(plain, 1, 60, 250), SQLITE_OK);
  assert_int_equal(sqlite3_exec(plain, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  int pages = (int)one_int(plain, "PRAGMA page_count");
  int plain_writes = seen.wal_writes;
  /* SQLite alone: a header and a page per frame (and the WAL's header). */
  assert_true(plain_writes >= 2 * 6);
  sqlite3_close(plain);

  sqlite3 *db = open_db("ncghl-walbuf");
  /* A WAL that starts over writes its own header and syncs it first. */
  assert_int_equal(sqlite3_exec(db, "INSERT INTO t (k, v) VALUES (999, x'00')", NULL, NULL, NULL),
                   SQLITE_OK);
  seen.wal_writes = 0;
  assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(insert_rows(db, 1001, 60, 250), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(seen.wal_writes, 1);
  assert_true(seen.largest <= 0x1ffff);
  assert_true(one_int(db, "PRAGMA page_count") > pages);
  /* A one-row commit: one write too. */
  seen.wal_writes = 0;
  assert_int_equal(sqlite3_exec(db, "INSERT INTO t (k, v) VALUES (5000, x'00')", NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(seen.wal_writes, 1);
  assert_int_equal(walbuf_flush(db), SQLITE_OK);
  assert_int_equal(seen.wal_writes, 1); /* nothing was left behind */
  sqlite3_close(db);
}

/* Another connection reads the WAL through the shared index SQLite updates
 * after writing the frames: were any still in memory, it would read pages
 * that are not there. */
static void test_another_connection_sees_every_commit(void **state) {
  (void)state;
  sqlite3 *db = open_db("ncghl-walbuf");
  sqlite3 *reader = open_db("unix");
  int total = 0;
  srand(7);
  for (int round = 0; round < 120; round++) {
    int n = 1 + rand() % 60, size = 16 + rand() % 3000;
    assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(insert_rows(db, 10000 + total, n, size), SQLITE_OK);
    if (round % 7 == 3) /* pages written twice in one commit */
      assert_int_equal(sqlite3_exec(db, "UPDATE t SET v = randomblob(200) WHERE k % 5 = 0", NULL,
                                    NULL, NULL),
                       SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    total += n;
    assert_int_equal(one_int(reader, "SELECT count(*) FROM t"), total);
    if (round % 40 == 39) { /* the WAL starts over after a checkpoint */
      assert_int_equal(sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                       SQLITE_OK);
    }
  }
  assert_whole(reader);
  sqlite3_close(reader);
  sqlite3_close(db);
}

/* A transaction larger than the page cache writes frames before its commit
 * and reads some back; one larger than what is gathered goes out in pieces,
 * each within the default VFS's limit on a write. */
static void test_spilled_and_oversized_transactions(void **state) {
  (void)state;
  sqlite3 *db = open_db("ncghl-walbuf");
  assert_int_equal(sqlite3_exec(db, "PRAGMA cache_size = 20", NULL, NULL, NULL), SQLITE_OK);
  seen.largest = 0;
  assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(insert_rows(db, 1, 3000, 2500), SQLITE_OK); /* ~8 MiB */
  assert_int_equal(sqlite3_exec(db, "UPDATE t SET v = randomblob(100) WHERE k % 3 = 0", NULL, NULL,
                                NULL),
                   SQLITE_OK);
  assert_int_equal(one_int(db, "SELECT count(*) FROM t WHERE length(v) = 100"), 1000);
  assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  assert_true(seen.largest <= 0x1ffff);
  sqlite3 *reader = open_db("unix");
  assert_int_equal(one_int(reader, "SELECT count(*) FROM t"), 3000);
  assert_int_equal(one_int(reader, "SELECT sum(length(v)) FROM t"), 1000 * 100 + 2000 * 2500);
  assert_whole(reader);
  sqlite3_close(reader);
  sqlite3_close(db);
}

/* A process killed right after its commits returned: every one of them is
 * in the file (no fsync is needed for that, only the write). */
static void test_killed_after_commit_loses_nothing(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    sqlite3 *db = open_db("ncghl-walbuf");
    for (int i = 0; i < 300; i++) {
      if (insert_rows(db, i * 10, 10, 700) != SQLITE_OK)
        _exit(2);
      int done = (i + 1) * 10;
      if (write(fds[1], &done, sizeof done) != sizeof done)
        _exit(3);
    }
    for (;;)
      pause(); /* killed here, the connection open */
  }
  close(fds[1]);
  int done = 0, got;
  while (done < 3000 && read(fds[0], &got, sizeof got) == sizeof got)
    done = got;
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  close(fds[0]);
  assert_int_equal(done, 3000);
  sqlite3 *db = open_db("unix");
  assert_int_equal(one_int(db, "SELECT count(*) FROM t"), 3000);
  assert_whole(db);
  sqlite3_close(db);
}

/* The write of a commit fails: the commit fails, nothing of it is seen,
 * and the next commit is whole. */
static void test_a_failed_write_fails_the_commit(void **state) {
  (void)state;
  sqlite3 *db = open_db("ncghl-walbuf");
  assert_int_equal(insert_rows(db, 1, 5, 100), SQLITE_OK);
  assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(insert_rows(db, 100, 50, 500), SQLITE_OK);
  seen.fail_next = 1;
  assert_int_not_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  if (!sqlite3_get_autocommit(db))
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3 *reader = open_db("unix");
  assert_int_equal(one_int(reader, "SELECT count(*) FROM t"), 5);
  assert_int_equal(insert_rows(db, 200, 20, 500), SQLITE_OK);
  assert_int_equal(one_int(reader, "SELECT count(*) FROM t"), 25);
  assert_whole(reader);
  sqlite3_close(reader);
  sqlite3_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_a_commit_is_one_write, fresh_db, remove_db),
      cmocka_unit_test_setup_teardown(test_another_connection_sees_every_commit, fresh_db,
                                      remove_db),
      cmocka_unit_test_setup_teardown(test_spilled_and_oversized_transactions, fresh_db, remove_db),
      cmocka_unit_test_setup_teardown(test_killed_after_commit_loses_nothing, fresh_db, remove_db),
      cmocka_unit_test_setup_teardown(test_a_failed_write_fails_the_commit, fresh_db, remove_db),
  };
  return cmocka_run_group_tests(tests, install_counting_vfs, NULL);
}
