/* log: levelled, one-line, key=value log records to stderr and LOG_FILE,
 * as text or one JSON object per line. Redaction lives here: every secret
 * the process knows (passwords, tokens, API keys, as they are configured or
 * issued) is registered and replaced by "***" in every line, whatever code
 * wrote it, at every level, also URL- or JSON-encoded and when a long line
 * is cut; personal data is masked (pii.h) unless LOG_PII. Lines are written
 * by a thread of their own: logging never blocks the caller. */
#ifndef NCGHL_LOG_H
#define NCGHL_LOG_H

#include <stdbool.h>

enum log_level { LOGL_DEBUG = 0, LOGL_INFO, LOGL_WARNING, LOGL_ERROR };

/* Returns -1 for an unknown name; accepts DEBUG, INFO, WARNING, WARN, ERROR
 * in any case. */
int log_parse_level(const char *name);
const char *log_level_name(enum log_level l);
/* file may be NULL (stderr only). Returns -1 if the file cannot be opened
 * (also a FIFO that nobody reads). Starts the writer thread. */
int log_init(enum log_level level, const char *file);
/* Lets the writer finish what is queued (waiting at most 2 s for a stalled
 * one) and forgets the secrets. Also runs at exit. */
void log_close(void);
/* LOG_FORMAT=json: one JSON object per line (ts, level, msg and the
 * key=value fields the message carries). */
void log_set_format(bool json);
/* LOG_PII=true: personal data is printed as it is. */
void log_set_pii(bool shown);
bool log_pii_shown(void);
/* Lines dropped because the queue to the writer was full. */
unsigned long long log_dropped(void);
bool log_enabled(enum log_level level);
/* A value that must never be printed; short values (< 4 bytes) are ignored. */
void log_add_secret(const char *secret);
void log_forget_secret(const char *secret);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_enabled(LOGL_DEBUG)) log_msg(LOGL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...) log_msg(LOGL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOGL_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOGL_ERROR, __VA_ARGS__)

#endif
