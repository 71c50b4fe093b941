/* faultshim: an LD_PRELOAD library for the fault tests, never part of the
 * service. It stands between SQLite (and ncghl's own sync thread) and the C
 * library for the store's WAL file only (a path ending in "-wal"):
 *
 *   NCGHL_SHIM_SYNC_LOG=FILE   appends "sync <CLOCK_MONOTONIC ns>" to FILE
 *                              for every successful fsync/fdatasync of it;
 *   NCGHL_SHIM_FAIL_SYNC=FILE  while FILE exists, those syncs fail with EIO;
 *   NCGHL_SHIM_FAIL_WRITE=FILE while FILE exists, writes to it fail with EIO;
 *   NCGHL_SHIM_SLOW_SYNC_MS=N  each of those syncs takes N ms more (a slow
 *                              disk: answers owed pile up, a burst);
 *   NCGHL_SHIM_CLOCK_JUMP=FILE FILE holds "K S": the shim removes it at
 *                              the next HTTP request read, and at the K-th
 *                              from there on the monotonic clocks start
 *                              reading S seconds later: a long wait for
 *                              whatever was timed before, without waiting.
 *
 * With no variable set it only passes calls through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int is_wal(int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n < 4)
    return 0;
  path[n] = 0;
  return strcmp(path + n - 4, "-wal") == 0;
}

static int exists(const char *var) {
  const char *p = getenv(var);
  return p && *p && access(p, F_OK) == 0;
}

static void log_sync(void) {
  const char *p = getenv("NCGHL_SHIM_SYNC_LOG");
  if (!p || !*p)
    return;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  char line[64];
  int n = snprintf(line, sizeof line, "sync %lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd >= 0) {
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
  }
}

static int do_sync(int fd, const char *name) {
  int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, name);
  if (!is_wal(fd))
    return real(fd);
  if (exists("NCGHL_SHIM_FAIL_SYNC")) {
    errno = EIO;
    return -1;
  }
  const char *slow = getenv("NCGHL_SHIM_SLOW_SYNC_MS");
  if (slow && *slow)
    usleep((useconds_t)atoi(slow) * 1000);
  int rc = real(fd);
  if (rc == 0)
    log_sync();
  return rc;
}

int fsync(int fd) { return do_sync(fd, "fsync"); }
int fdatasync(int fd) { return do_sync(fd, "fdatasync"); }

static int write_fails(int fd) { return exists("NCGHL_SHIM_FAIL_WRITE") && is_wal(fd); }

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  static ssize_t (*real)(int, const void *, size_t, off_t);
  if (!real)
    real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
  if (write_fails(fd)) {
    errno = EIO;
    return -1;
  }
  return real(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
  static ssize_t (*real)(int, const void *, size_t, off_t);
  if (!real)
    real = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
  if (write_fails(fd)) {
    errno = EIO;
    return -1;
  }
  return real(fd, buf, n, off);
}

/* Nanoseconds added to the monotonic clocks; only ever grows, so they never
 * go back. Written on the loop's thread (at a request), read by every one. */
static long long jump_ns;
static int jump_in = -1;     /* requests left before the jump; -1: none armed */
static double jump_by;

static void count_request(void) {
  const char *p = getenv("NCGHL_SHIM_CLOCK_JUMP");
  if (!p || !*p)
    return;
  FILE *f = fopen(p, "r");
  if (f) {
    int k = 0;
    double sec = 0;
    if (fscanf(f, "%d %lf", &k, &sec) == 2 && k > 0 && sec > 0 && unlink(p) == 0) {
      jump_in = k;
      jump_by = sec;
    }
    fclose(f);
  }
  if (jump_in > 0 && --jump_in == 0) {
    __atomic_add_fetch(&jump_ns, (long long)(jump_by * 1e9), __ATOMIC_SEQ_CST);
    jump_in = -1;
  }
}

/* The service reads each HTTP request with one readv (libevent's buffers);
 * its outbound calls and the store read otherwise. */
ssize_t readv(int fd, const struct iovec *iov, int n) {
  static ssize_t (*real)(int, const struct iovec *, int);
  if (!real)
    real = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "readv");
  ssize_t rc = real(fd, iov, n);
  if (rc > 0)
    count_request();
  return rc;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
  static int (*real)(clockid_t, struct timespec *);
  if (!real)
    real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
  int rc = real(id, ts);
  long long j = __atomic_load_n(&jump_ns, __ATOMIC_SEQ_CST);
  if (rc == 0 && j &&
      (id == CLOCK_MONOTONIC || id == CLOCK_MONOTONIC_RAW || id == CLOCK_MONOTONIC_COARSE ||
       id == CLOCK_BOOTTIME)) {
    long long ns = (long long)ts->tv_nsec + j % 1000000000LL;
    ts->tv_sec += (time_t)(j / 1000000000LL + ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
  }
  return rc;
}
