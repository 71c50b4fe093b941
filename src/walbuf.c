/* walbuf: SQLite writes each WAL frame as two pwrites, its 24-byte header
 * and then its page, so every page of a commit costs two system calls and,
 * the frames being 24 bytes longer than a page, touches three page-cache
 * pages where one would do. At intake that was six pwrites an event
 * (docs/performance.md, "Writing the WAL in one go"). Here a WAL file's
 * writes that follow each other are gathered and go out as one pwrite when
 * the commit frame's page arrives, before SQLite publishes the commit in
 * its shared index, so a reader in another connection or process, and the
 * group commit's fdatasync (queue.c), see exactly what they saw before.
 * Anything that reads, sizes, syncs, truncates or closes the file writes
 * the gathered bytes first. */
#include "walbuf.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define WALBUF_NAME "ncghl-walbuf"
#define FRAME_HEADER 24
/* A commit larger than this goes out in pieces of this size: memory stays
 * bounded, and such a commit is rare (a backfill, a migration). */
#define GATHER_MAX (4u << 20)
/* The default VFS writes at most 128 KiB - 1 bytes a call (os_unix.c masks
 * the length with 0x1ffff and reports the rest as a full disk). */
#define WRITE_MAX (124u << 10)
/* The first buffer of a file that has written nothing yet. */
#define FIRST_CAP (16u << 10)
/* walbuf_flush's request, passed down by sqlite3_file_control: above the
 * range SQLite's own opcodes use (they stop below 100). */
#define FCNTL_WALBUF_FLUSH 0x6e630001

struct wal_file {
  sqlite3_file base; /* pMethods: wal_methods */
  sqlite3_file *real; /* the default VFS's file, just after this struct */
  unsigned char *buf;
  size_t len, cap;
  size_t last; /* what the last write out held: the next buffer's size */
  sqlite3_int64 at; /* the file offset of buf[0] */
  bool commit_page_next; /* the last write was a commit frame's header */
};

static sqlite3_vfs walbuf;
static sqlite3_io_methods wal_methods;
static pthread_once_t walbuf_once = PTHREAD_ONCE_INIT;
static bool walbuf_ok;

static sqlite3_vfs *real_vfs(void) { return (sqlite3_vfs *)walbuf.pAppData; }

/* The buffer is freed once written: a node keeps a WAL open per tenant,
 * and 500 tenants each keeping their first commit's buffer (the
 * migrations') held 32 MiB. The next one is allocated at the size this one
 * needed, so a steady load does not grow it again every commit. */
static int gathered_write(struct wal_file *f) {
  if (f->len == 0)
    return SQLITE_OK;
  int rc = SQLITE_OK;
  for (size_t done = 0; done < f->len && rc == SQLITE_OK; done += WRITE_MAX) {
    size_t n = f->len - done < WRITE_MAX ? f->len - done : WRITE_MAX;
    rc = f->real->pMethods->xWrite(f->real, f->buf + done, (int)n, f->at + (sqlite3_int64)done);
  }
  f->last = f->len;
  f->len = 0;
  free(f->buf);
  f->buf = NULL;
  f->cap = 0;
  return rc;
}

static bool gather_room(struct wal_file *f, size_t need) {
  if (need <= f->cap)
    return true;
  size_t cap = f->cap ? f->cap * 2 : f->last > FIRST_CAP ? f->last : FIRST_CAP;
  while (cap < need)
    cap *= 2;
  unsigned char *b = realloc(f->buf, cap);
  if (!b)
    return false;
  f->buf = b;
  f->cap = cap;
  return true;
}

/* A frame header's bytes 4-7 hold the database's size in pages after the
 * commit for a commit frame, zero for any other (the WAL file format). */
static bool is_commit_header(const unsigned char *h) { return (h[4] | h[5] | h[6] | h[7]) != 0; }

static int wal_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off) {
  struct wal_file *f = (struct wal_file *)file;
  size_t n = (size_t)amt;
  bool commit_page = f->commit_page_next;
  f->commit_page_next = amt == FRAME_HEADER && is_commit_header(data);
  if (f->len > 0 && off >= f->at && (size_t)(off - f->at) + n <= f->len) {
    /* Over bytes still gathered: a page written twice in one commit. */
    memcpy(f->buf + (off - f->at), data, n);
  } else if (f->len > 0 && off == f->at + (sqlite3_int64)f->len && f->len + n <= GATHER_MAX &&
             gather_room(f, f->len + n)) {
    memcpy(f->buf + f->len, data, n);
    f->len += n;
  } else {
    int rc = gathered_write(f);
    if (rc != SQLITE_OK)
      return rc;
    if (n > GATHER_MAX || !gather_room(f, n))
      return f->real->pMethods->xWrite(f->real, data, amt, off);
    memcpy(f->buf, data, n);
    f->len = n;
    f->at = off;
  }
  return commit_page ? gathered_write(f) : SQLITE_OK;
}

static int wal_close(sqlite3_file *file) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  free(f->buf); /* a zero-length write's, which SQLite never makes */
  f->buf = NULL;
  int crc = f->real->pMethods->xClose(f->real);
  return rc != SQLITE_OK ? rc : crc;
}

/* The calls below see the file as written: the gathered bytes go first. */

static int wal_read(sqlite3_file *file, void *data, int amt, sqlite3_int64 off) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, data, amt, off);
}

static int wal_truncate(sqlite3_file *file, sqlite3_int64 size) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wal_sync(sqlite3_file *file, int flags) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wal_file_size(sqlite3_file *file, sqlite3_int64 *size) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wal_file_control(sqlite3_file *file, int op, void *arg) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  if (op == FCNTL_WALBUF_FLUSH || rc != SQLITE_OK)
    return rc;
  return f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wal_lock(sqlite3_file *file, int level) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xLock(f->real, level);
}

static int wal_unlock(sqlite3_file *file, int level) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = gathered_write(f);
  int urc = f->real->pMethods->xUnlock(f->real, level);
  return rc != SQLITE_OK ? rc : urc;
}

static int wal_check_reserved(sqlite3_file *file, int *out) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wal_sector_size(sqlite3_file *file) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xSectorSize(f->real);
}

static int wal_device(sqlite3_file *file) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* Only the WAL is wrapped; every other file is the default VFS's own, in
 * the space SQLite gave for ours, with its own methods. */
static int walbuf_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                       int *out_flags) {
  (void)vfs;
  sqlite3_vfs *real = real_vfs();
  if (!(flags & SQLITE_OPEN_WAL))
    return real->xOpen(real, name, file, flags, out_flags);
  struct wal_file *f = (struct wal_file *)file;
  memset(f, 0, sizeof *f);
  f->real = (sqlite3_file *)(f + 1);
  int rc = real->xOpen(real, name, f->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    if (f->real->pMethods)
      f->real->pMethods->xClose(f->real);
    file->pMethods = NULL;
    return rc;
  }
  file->pMethods = &wal_methods;
  return SQLITE_OK;
}

static int walbuf_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
  (void)v;
  return real_vfs()->xDelete(real_vfs(), name, sync_dir);
}

static int walbuf_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return real_vfs()->xAccess(real_vfs(), name, flags, out);
}

static int walbuf_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
  (void)v;
  return real_vfs()->xFullPathname(real_vfs(), name, n, out);
}

static void *walbuf_dlopen(sqlite3_vfs *v, const char *name) {
  (void)v;
  return real_vfs()->xDlOpen(real_vfs(), name);
}

static void walbuf_dlerror(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  real_vfs()->xDlError(real_vfs(), n, out);
}

static void (*walbuf_dlsym(sqlite3_vfs *v, void *lib, const char *sym))(void) {
  (void)v;
  return real_vfs()->xDlSym(real_vfs(), lib, sym);
}

static void walbuf_dlclose(sqlite3_vfs *v, void *lib) {
  (void)v;
  real_vfs()->xDlClose(real_vfs(), lib);
}

static int walbuf_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real_vfs()->xRandomness(real_vfs(), n, out);
}

static int walbuf_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return real_vfs()->xSleep(real_vfs(), us);
}

static int walbuf_current_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return real_vfs()->xCurrentTime(real_vfs(), out);
}

static int walbuf_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real_vfs()->xGetLastError(real_vfs(), n, out);
}

static int walbuf_current_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return real_vfs()->xCurrentTimeInt64(real_vfs(), out);
}

static void walbuf_register(void) {
  sqlite3_vfs *real = sqlite3_vfs_find(NULL);
  /* Version 2 is what the methods below cover; the system-call overrides
   * of version 3 are for tests of SQLite itself. */
  if (!real || real->iVersion < 2)
    return;
  wal_methods = (sqlite3_io_methods){
      .iVersion = 1, /* a WAL file is never memory-mapped and has no shm */
      .xClose = wal_close,
      .xRead = wal_read,
      .xWrite = wal_write,
      .xTruncate = wal_truncate,
      .xSync = wal_sync,
      .xFileSize = wal_file_size,
      .xLock = wal_lock,
      .xUnlock = wal_unlock,
      .xCheckReservedLock = wal_check_reserved,
      .xFileControl = wal_file_control,
      .xSectorSize = wal_sector_size,
      .xDeviceCharacteristics = wal_device,
  };
  int sz = (int)sizeof(struct wal_file) + real->szOsFile;
  walbuf = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = sz > real->szOsFile ? sz : real->szOsFile,
      .mxPathname = real->mxPathname,
      .zName = WALBUF_NAME,
      .pAppData = real,
      .xOpen = walbuf_open,
      .xDelete = walbuf_delete,
      .xAccess = walbuf_access,
      .xFullPathname = walbuf_full_pathname,
      .xDlOpen = walbuf_dlopen,
      .xDlError = walbuf_dlerror,
      .xDlSym = walbuf_dlsym,
      .xDlClose = walbuf_dlclose,
      .xRandomness = walbuf_randomness,
      .xSleep = walbuf_sleep,
      .xCurrentTime = walbuf_current_time,
      .xGetLastError = walbuf_last_error,
      .xCurrentTimeInt64 = walbuf_current_time64,
  };
  walbuf_ok = sqlite3_vfs_register(&walbuf, 0) == SQLITE_OK;
}

const char *walbuf_vfs(void) {
  pthread_once(&walbuf_once, walbuf_register);
  return walbuf_ok ? WALBUF_NAME : NULL;
}

int walbuf_flush(sqlite3 *db) {
  sqlite3_file *wal = NULL;
  if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK || !wal ||
      wal->pMethods != &wal_methods)
    return SQLITE_OK; /* no WAL open, or not one of ours */
  return wal_file_control(wal, FCNTL_WALBUF_FLUSH, NULL);
}
