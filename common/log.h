/*
 * log.h — one line per event on stderr.
 *
 * Text:  2026-11-22T06:27:38.123Z INFO  s3: request retried op=PUT key="a b" attempt=2
 * JSON:  {"time":"…","level":"INFO","component":"s3","msg":"request retried","op":"PUT",…}
 *
 * Context is a printf-style string of key=value pairs separated by spaces; a
 * value that may contain spaces or quotes is written as key="%s" (the JSON
 * form un-quotes it). Never pass a credential, a signed URL or a request
 * header to the logger.
 *
 * Thread-safe: each event is formatted into a bounded buffer and written with
 * one write(2), so lines from different threads never interleave.
 */
#ifndef LITEVISOR_LOG_H
#define LITEVISOR_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set the minimum level and output format (defaults: INFO, text). */
void log_configure(enum log_level level, bool json);

/* Parse "debug", "info", "warn"/"warning", "error" (any case). Returns 0 or -1. */
int log_parse_level(const char *s, enum log_level *out);

/* True if events at this level are written. */
bool log_enabled(enum log_level level);

/*
 * Write one event. component: short module name ("s3", "restore", …);
 * msg: fixed text; kvfmt: NULL or a printf format producing key=value pairs.
 */
void log_event(enum log_level level, const char *component, const char *msg,
	       const char *kvfmt, ...) __attribute__((format(printf, 4, 5)));
void log_eventv(enum log_level level, const char *component, const char *msg,
		const char *kvfmt, va_list ap);

#define log_debug(c, m, ...) log_event(LOG_DEBUG, c, m, __VA_ARGS__)
#define log_info(c, m, ...)  log_event(LOG_INFO, c, m, __VA_ARGS__)
#define log_warn(c, m, ...)  log_event(LOG_WARN, c, m, __VA_ARGS__)
#define log_error(c, m, ...) log_event(LOG_ERROR, c, m, __VA_ARGS__)

#endif
