/*
 * clock.h — time sources.
 *
 * Deadlines, intervals and latencies use the monotonic clock (never the wall
 * clock, which NTP may step). Wall time is only for logs and object times.
 */
#ifndef LITEVISOR_CLOCK_H
#define LITEVISOR_CLOCK_H

#include <stdint.h>

#define NS_PER_MS  1000000LL
#define NS_PER_SEC 1000000000LL

/* The range of a wall time in int64 nanoseconds since the epoch. */
#define CLOCK_NS_MIN_TEXT "1677-09-21T00:12:43.145224192Z"
#define CLOCK_NS_MAX_TEXT "2262-04-11T23:47:16.854775807Z"

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC). */
int64_t clock_mono_ns(void);

/* Monotonic time in milliseconds. */
int64_t clock_mono_ms(void);

/* Wall-clock time in nanoseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_wall_ns(void);

/*
 * Format a wall time (ns since epoch) as UTC RFC 3339 with milliseconds,
 * e.g. "2026-11-22T06:27:38.123Z", into buf (at least 32 bytes).
 * Returns buf.
 */
char *clock_rfc3339(int64_t wall_ns, char *buf, unsigned long len);

/*
 * The same with every fractional digit the time has (none, 3, 6 or 9), so
 * the text parses back to exactly wall_ns: what a listing prints for a
 * user to pass to `restore -timestamp` (milliseconds would cut an object
 * stamped 12:00:10.5123 to a time before it). Returns buf.
 */
char *clock_rfc3339_exact(int64_t wall_ns, char *buf, unsigned long len);

/*
 * Parse an RFC 3339 timestamp ("2026-11-22T06:27:38Z", fractional seconds
 * and numeric offsets allowed) into ns since the epoch. Calendar dates are
 * checked (2025-02-29 is not one, 2024-02-29 is).
 * Returns 0, -1 if the text is not RFC 3339 or names no date, -2 if the time
 * is outside what int64 nanoseconds hold (CLOCK_NS_MIN_TEXT to CLOCK_NS_MAX_TEXT).
 */
int clock_parse_rfc3339(const char *s, int64_t *wall_ns);

/* Sleep for ms milliseconds (restarted on EINTR). */
void clock_sleep_ms(int64_t ms);

#endif
