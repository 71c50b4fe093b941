/* Log records are one line each: time, level, then the message (or one JSON
 * object with the same). Redaction replaces every registered secret before
 * the line leaves the process, so a careless format string elsewhere still
 * cannot leak a token; personal data is masked the same way (pii.h).
 *
 * The event loop never writes: a line goes into a bounded queue that one
 * writer thread empties into stderr and LOG_FILE. A stalled reader (a full
 * pipe, a FIFO nobody reads, a slow disk) stalls that thread only; once the
 * queue is full, new lines are dropped and counted (log_dropped). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pii.h"

#define LOG_LINE_MAX 8192
#define LOG_SECRETS_MAX 64
#define QUEUE_LINES 4096
#define QUEUE_BYTES (4u << 20)
/* How long log_close waits for a stalled writer before leaving it behind. */
#define CLOSE_WAIT_MS 2000
#define JSON_FIELDS_MAX 16

/* Process-wide by nature (stderr is too); the one deliberate global. */
static struct {
  enum log_level level;
  bool json;
  bool pii_shown;
  int fd; /* LOG_FILE, -1 for none */
  char *secrets[LOG_SECRETS_MAX];

  pthread_mutex_t mu;
  pthread_cond_t more, drained;
  char *q[QUEUE_LINES];
  size_t head, count, bytes;
  bool writing;   /* the writer holds a line it is writing */
  bool thread_on; /* a writer thread empties the queue */
  bool stop;
  unsigned gen; /* a writer left behind by log_close exits when it changes */
  pthread_t thread;
  unsigned long long dropped;
  bool atexit_set;
} logger = {.level = LOGL_INFO,
            .fd = -1,
            .mu = PTHREAD_MUTEX_INITIALIZER,
            .more = PTHREAD_COND_INITIALIZER,
            .drained = PTHREAD_COND_INITIALIZER};

static const char *level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

int log_parse_level(const char *name) {
  if (!name)
    return -1;
  for (int i = 0; i < 4; i++)
    if (strcasecmp(name, level_names[i]) == 0)
      return i;
  if (strcasecmp(name, "WARN") == 0)
    return LOGL_WARNING;
  return -1;
}

const char *log_level_name(enum log_level l) {
  return (unsigned)l < 4 ? level_names[l] : "?";
}

/* ------------------------------------------------------------------------ */
/* The writer                                                               */

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere left to report it */
    }
    p += w;
    n -= (size_t)w;
  }
}

static void *writer_main(void *arg) {
  unsigned gen = (unsigned)(size_t)arg;
  pthread_mutex_lock(&logger.mu);
  for (;;) {
    while (logger.count == 0 && !logger.stop && logger.gen == gen)
      pthread_cond_wait(&logger.more, &logger.mu);
    if (logger.gen != gen || logger.count == 0)
      break;
    char *line = logger.q[logger.head];
    logger.head = (logger.head + 1) % QUEUE_LINES;
    logger.count--;
    size_t n = strlen(line);
    logger.bytes -= n;
    logger.writing = true;
    int fd = logger.fd;
    pthread_mutex_unlock(&logger.mu);
    write_all(STDERR_FILENO, line, n);
    if (fd >= 0)
      write_all(fd, line, n);
    free(line);
    pthread_mutex_lock(&logger.mu);
    if (logger.gen != gen)
      break; /* left behind by log_close: the flags belong to a newer writer */
    logger.writing = false;
    if (logger.count == 0)
      pthread_cond_broadcast(&logger.drained);
  }
  pthread_cond_broadcast(&logger.drained);
  pthread_mutex_unlock(&logger.mu);
  return NULL;
}

/* Takes the line (malloc'd, newline included). Never blocks on the writer. */
static void enqueue(char *line) {
  size_t n = strlen(line);
  pthread_mutex_lock(&logger.mu);
  if (!logger.thread_on) {
    /* No writer (before log_init, or it could not start): write here. */
    int fd = logger.fd;
    pthread_mutex_unlock(&logger.mu);
    write_all(STDERR_FILENO, line, n);
    if (fd >= 0)
      write_all(fd, line, n);
    free(line);
    return;
  }
  if (logger.count == QUEUE_LINES || logger.bytes + n > QUEUE_BYTES) {
    logger.dropped++;
    pthread_mutex_unlock(&logger.mu);
    free(line);
    return;
  }
  logger.q[(logger.head + logger.count) % QUEUE_LINES] = line;
  logger.count++;
  logger.bytes += n;
  pthread_cond_signal(&logger.more);
  pthread_mutex_unlock(&logger.mu);
}

/* A fork copies the lock but not the writer thread: taken around the fork,
 * the child's copy is never held by a thread it lacks, and the child writes
 * its own lines itself, leaving the parent's queue to the parent. (A test
 * that forked while the writer held the lock hung its child at its first
 * line.) */
static void fork_prepare(void) { pthread_mutex_lock(&logger.mu); }

static void fork_parent(void) { pthread_mutex_unlock(&logger.mu); }

static void fork_child(void) {
  while (logger.count > 0) {
    free(logger.q[logger.head]);
    logger.q[logger.head] = NULL;
    logger.head = (logger.head + 1) % QUEUE_LINES;
    logger.count--;
  }
  logger.bytes = 0;
  logger.writing = false;
  logger.thread_on = false;
  logger.gen++;
  pthread_mutex_unlock(&logger.mu);
}

static void register_atfork(void) { pthread_atfork(fork_prepare, fork_parent, fork_child); }

static void start_writer(void) {
  static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
  pthread_once(&atfork_once, register_atfork);
  pthread_mutex_lock(&logger.mu);
  if (!logger.thread_on) {
    logger.stop = false;
    logger.gen++;
    if (pthread_create(&logger.thread, NULL, writer_main, (void *)(size_t)logger.gen) == 0)
      logger.thread_on = true;
  }
  pthread_mutex_unlock(&logger.mu);
}

/* With the lock held: waits until the writer has written everything queued,
 * for at most CLOSE_WAIT_MS. Returns whether it has. */
static bool drain_locked(void) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += CLOSE_WAIT_MS / 1000;
  until.tv_nsec += (long)(CLOSE_WAIT_MS % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  int rc = 0;
  while (logger.thread_on && (logger.count > 0 || logger.writing) && rc == 0)
    rc = pthread_cond_timedwait(&logger.drained, &logger.mu, &until);
  return logger.count == 0 && !logger.writing;
}

/* Lets the writer finish what is queued, for at most CLOSE_WAIT_MS; a writer
 * still stuck then is left behind (it exits when its write returns). */
static void stop_writer(void) {
  pthread_mutex_lock(&logger.mu);
  if (!logger.thread_on) {
    pthread_mutex_unlock(&logger.mu);
    return;
  }
  logger.stop = true;
  pthread_cond_signal(&logger.more);
  bool stuck = !drain_locked();
  logger.thread_on = false;
  logger.gen++;
  /* Whatever is still queued is dropped: the writer cannot take it. */
  while (logger.count > 0) {
    free(logger.q[logger.head]);
    logger.q[logger.head] = NULL;
    logger.head = (logger.head + 1) % QUEUE_LINES;
    logger.count--;
    logger.dropped++;
  }
  logger.bytes = 0;
  pthread_cond_broadcast(&logger.more);
  pthread_mutex_unlock(&logger.mu);
  if (stuck)
    pthread_detach(logger.thread);
  else
    pthread_join(logger.thread, NULL);
}

unsigned long long log_dropped(void) {
  pthread_mutex_lock(&logger.mu);
  unsigned long long n = logger.dropped;
  pthread_mutex_unlock(&logger.mu);
  return n;
}

/* ------------------------------------------------------------------------ */
/* Set-up                                                                   */

static void close_at_exit(void) { log_close(); }

int log_init(enum log_level level, const char *file) {
  logger.level = level;
  int fd = -1;
  if (file && *file) {
    /* Non-blocking open: a FIFO without a reader fails here instead of
     * hanging start-up; the writer thread then writes in blocking mode. */
    fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0644);
    if (fd < 0)
      return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  }
  pthread_mutex_lock(&logger.mu);
  /* Lines logged before belong in the old file. */
  bool idle = drain_locked();
  if (logger.fd >= 0 && fd >= 0) {
    /* Should the writer still be inside a write on the old file, the
     * descriptor is replaced in place rather than closed under its feet. */
    dup2(fd, logger.fd);
    close(fd);
  } else if (logger.fd >= 0) {
    if (idle)
      close(logger.fd);
    logger.fd = -1;
  } else {
    logger.fd = fd;
  }
  pthread_mutex_unlock(&logger.mu);
  if (!logger.atexit_set) {
    logger.atexit_set = true;
    atexit(close_at_exit);
  }
  start_writer();
  return 0;
}

void log_set_format(bool json) { logger.json = json; }

void log_set_pii(bool shown) { logger.pii_shown = shown; }

bool log_pii_shown(void) { return logger.pii_shown; }

void log_close(void) {
  stop_writer();
  pthread_mutex_lock(&logger.mu);
  int fd = logger.fd;
  logger.fd = -1;
  /* A writer left behind may still use the descriptor; it is closed with
   * the process then. */
  bool busy = logger.writing;
  logger.writing = false;
  pthread_mutex_unlock(&logger.mu);
  if (fd >= 0 && !busy)
    close(fd);
  for (int i = 0; i < LOG_SECRETS_MAX; i++) {
    free(logger.secrets[i]);
    logger.secrets[i] = NULL;
  }
}

bool log_enabled(enum log_level level) { return level >= logger.level; }

void log_add_secret(const char *secret) {
  if (!secret || strlen(secret) < 4)
    return;
  int free_slot = -1;
  for (int i = 0; i < LOG_SECRETS_MAX; i++) {
    if (logger.secrets[i] && strcmp(logger.secrets[i], secret) == 0)
      return;
    if (!logger.secrets[i] && free_slot < 0)
      free_slot = i;
  }
  /* When full, the oldest rotating token makes room: configured secrets are
   * registered first and tokens rotate, so slot 0.. are never the victims
   * in practice; still, never silently drop the new one. */
  if (free_slot < 0) {
    free(logger.secrets[LOG_SECRETS_MAX - 1]);
    free_slot = LOG_SECRETS_MAX - 1;
  }
  logger.secrets[free_slot] = strdup(secret);
}

void log_forget_secret(const char *secret) {
  if (!secret)
    return;
  for (int i = 0; i < LOG_SECRETS_MAX; i++)
    if (logger.secrets[i] && strcmp(logger.secrets[i], secret) == 0) {
      free(logger.secrets[i]);
      logger.secrets[i] = NULL;
    }
}

/* ------------------------------------------------------------------------ */
/* Redaction                                                                */

static int hexv(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* One character of s at i as it may appear encoded in a line: itself,
 * percent-encoded ("%3D", any case), a JSON escape ("\/", "\"", "\\",
 * "\u0041"). Returns the bytes it takes and the byte it stands for in *c;
 * 0 at the end of s; -1 when s ends inside an escape (a cut line). */
static int decode_at(const char *s, size_t len, size_t i, int *c) {
  if (i >= len)
    return 0;
  unsigned char ch = (unsigned char)s[i];
  if (ch == '%') {
    if (i + 2 >= len)
      return i + 1 == len || hexv((unsigned char)s[i + 1]) >= 0 ? -1 : 1;
    int h = hexv((unsigned char)s[i + 1]), l = hexv((unsigned char)s[i + 2]);
    if (h >= 0 && l >= 0) {
      *c = h * 16 + l;
      return 3;
    }
  } else if (ch == '\\') {
    if (i + 1 >= len)
      return -1;
    char e = s[i + 1];
    if (e == '/' || e == '"' || e == '\\') {
      *c = e;
      return 2;
    }
    if (e == 'u') {
      int v = 0;
      for (int k = 0; k < 4; k++) {
        if (i + 2 + (size_t)k >= len)
          return -1;
        int h = hexv((unsigned char)s[i + 2 + k]);
        if (h < 0)
          goto plain;
        v = v * 16 + h;
      }
      if (v < 0x80) {
        *c = v;
        return 6;
      }
    }
  }
plain:
  *c = ch;
  return 1;
}

/* Whether the secret starts at line[i], in any mix of the encodings above
 * (and "+" for a space, as in a form body). Returns the bytes it takes; 0
 * when it is not there; with *partial set when the line ends before it
 * does (a cut line ending in the secret's first part). */
static size_t match_secret(const char *line, size_t len, size_t i, const char *secret,
                           bool *partial) {
  size_t j = i;
  *partial = false;
  for (const char *p = secret; *p; p++) {
    int c = 0;
    int n = decode_at(line, len, j, &c);
    if (n == 0 || n < 0) {
      *partial = j > i || n < 0;
      return 0;
    }
    bool same = c == (unsigned char)*p || (*p == ' ' && n == 1 && c == '+');
    if (!same)
      return 0;
    j += (size_t)n;
  }
  return j - i;
}

/* Returns a new string with every secret replaced by "***". When cut (the
 * line was shortened to fit), a tail that may be the first part of a secret
 * is replaced too, so a secret straddling the cut is never half-printed. */
static char *redact(const char *line, size_t len, bool cut) {
  char *out = malloc(len + 4);
  if (!out)
    return NULL;
  size_t o = 0, i = 0;
  while (i < len) {
    size_t n = 0;
    for (int k = 0; k < LOG_SECRETS_MAX && n == 0; k++) {
      const char *s = logger.secrets[k];
      bool partial;
      if (!s)
        continue;
      n = match_secret(line, len, i, s, &partial);
      if (n == 0 && partial && cut) {
        memcpy(out + o, "***", 3);
        o += 3;
        out[o] = 0;
        return out;
      }
    }
    if (n > 0) {
      memcpy(out + o, "***", 3);
      o += 3;
      i += n;
    } else {
      out[o++] = line[i++];
    }
  }
  out[o] = 0;
  return out;
}

/* ------------------------------------------------------------------------ */
/* Lines                                                                    */

struct sb {
  char *p;
  size_t n, cap;
  bool oom;
};

static void sb_put(struct sb *b, const char *s, size_t n) {
  if (b->oom)
    return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (b->n + n + 1 > cap)
      cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void sb_str(struct sb *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_json_string(struct sb *b, const char *s, size_t n) {
  sb_put(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      sb_put(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      sb_put(b, esc, 6);
    } else {
      sb_put(b, (const char *)&c, 1);
    }
  }
  sb_put(b, "\"", 1);
}

/* The key=value pairs a message carries ("lua event=abc failed") become
 * fields of its JSON object; the first of a name wins. */
static void json_fields(struct sb *b, const char *msg) {
  const char *seen[JSON_FIELDS_MAX];
  size_t seen_len[JSON_FIELDS_MAX];
  int nseen = 0;
  for (const char *p = msg; *p && nseen < JSON_FIELDS_MAX; p++) {
    if (p != msg && p[-1] != ' ')
      continue;
    const char *k = p;
    while ((*p >= 'a' && *p <= 'z') || *p == '_' || (p > k && *p >= '0' && *p <= '9'))
      p++;
    size_t kl = (size_t)(p - k);
    if (kl == 0 || *p != '=') {
      p = k;
      continue;
    }
    const char *v = p + 1;
    const char *e = v;
    while (*e && *e != ' ')
      e++;
    bool dup = (kl == 2 && strncmp(k, "ts", 2) == 0) || (kl == 3 && strncmp(k, "msg", 3) == 0) ||
               (kl == 5 && strncmp(k, "level", 5) == 0);
    for (int i = 0; i < nseen && !dup; i++)
      dup = seen_len[i] == kl && strncmp(seen[i], k, kl) == 0;
    if (!dup) {
      seen[nseen] = k;
      seen_len[nseen++] = kl;
      sb_put(b, ",", 1);
      sb_json_string(b, k, kl);
      sb_put(b, ":", 1);
      sb_json_string(b, v, (size_t)(e - v));
    }
    p = e > p ? e - 1 : p;
  }
}

void log_msg(enum log_level level, const char *fmt, ...) {
  if (!log_enabled(level))
    return;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  int tn = (int)strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + tn, sizeof ts - (size_t)tn, ".%03dZ", (int)(tv.tv_usec / 1000));

  /* The whole message is formatted and redacted before it is cut, so the
   * cut never splits a secret that redaction would have found. */
  char small[1024];
  char *msg = small;
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0)
    n = 0;
  if ((size_t)n >= sizeof small) {
    msg = malloc((size_t)n + 1);
    if (msg)
      vsnprintf(msg, (size_t)n + 1, fmt, ap2);
    else {
      msg = small;
      n = (int)sizeof small - 1;
    }
  }
  va_end(ap2);
  /* One record, one line: a newline inside a payload would forge records. */
  for (char *p = msg; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';

  char *clean = redact(msg, (size_t)n, false);
  if (msg != small)
    free(msg);
  if (!clean)
    return;
  size_t cl = strlen(clean);
  if (!logger.pii_shown) {
    char *masked = pii_mask_dup(clean);
    if (masked) {
      free(clean);
      clean = masked;
      cl = strlen(clean);
    }
  }
  size_t room = LOG_LINE_MAX - 64;
  if (cl > room) {
    /* Cut, then take back a tail that could be the start of a secret. */
    clean[room] = 0;
    char *again = redact(clean, room, true);
    free(clean);
    if (!again)
      return;
    clean = again;
    cl = strlen(clean);
  }

  struct sb b = {0};
  if (logger.json) {
    sb_str(&b, "{\"ts\":\"");
    sb_str(&b, ts);
    sb_str(&b, "\",\"level\":\"");
    sb_str(&b, log_level_name(level));
    sb_str(&b, "\",\"msg\":");
    sb_json_string(&b, clean, cl);
    json_fields(&b, clean);
    sb_str(&b, "}\n");
  } else {
    sb_str(&b, ts);
    sb_str(&b, " ");
    sb_str(&b, log_level_name(level));
    sb_str(&b, " ");
    sb_put(&b, clean, cl);
    sb_str(&b, "\n");
  }
  free(clean);
  if (b.oom) {
    free(b.p);
    return;
  }
  enqueue(b.p);
}
