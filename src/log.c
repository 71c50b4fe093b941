/* Log records are one line each: time, level, then the message. Redaction
 * replaces every registered secret before the line leaves the process, so a
 * careless format string elsewhere still cannot leak a token. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#define LOG_LINE_MAX 8192
#define LOG_SECRETS_MAX 64

/* Process-wide by nature (stderr is too); the one deliberate global. */
static struct {
  enum log_level level;
  FILE *file;
  char *secrets[LOG_SECRETS_MAX];
} logger = {LOGL_INFO, NULL, {0}};

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

int log_init(enum log_level level, const char *file) {
  logger.level = level;
  if (logger.file) {
    fclose(logger.file);
    logger.file = NULL;
  }
  if (file && *file) {
    logger.file = fopen(file, "a");
    if (!logger.file)
      return -1;
    setvbuf(logger.file, NULL, _IOLBF, 0);
  }
  return 0;
}

void log_close(void) {
  if (logger.file)
    fclose(logger.file);
  logger.file = NULL;
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

/* In-place replacement of every secret by "***" (never longer than a
 * secret, since secrets are at least 4 bytes). */
static void redact(char *line) {
  for (int i = 0; i < LOG_SECRETS_MAX; i++) {
    const char *s = logger.secrets[i];
    if (!s)
      continue;
    size_t n = strlen(s);
    char *p;
    while ((p = strstr(line, s)) != NULL) {
      memcpy(p, "***", 3);
      memmove(p + 3, p + n, strlen(p + n) + 1);
    }
  }
}

void log_msg(enum log_level level, const char *fmt, ...) {
  if (!log_enabled(level))
    return;
  char line[LOG_LINE_MAX];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ %s ", (int)(tv.tv_usec / 1000),
                log_level_name(level));
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  /* One record, one line: a newline inside a payload would forge records. */
  for (char *p = line + n; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  redact(line);
  fprintf(stderr, "%s\n", line);
  if (logger.file)
    fprintf(logger.file, "%s\n", line);
}
