/*
 * duration.h — Go-style durations and human sizes.
 *
 * Durations: a sequence of <number><unit>, units ns us µs ms s m h and d
 * (24h), fractions allowed: "500ms", "5s", "1m30s", "1.5h", "7d", "168h".
 * A bare "0" is zero. Negative values are rejected. Results are milliseconds;
 * a non-zero duration under 1ms is rejected rather than rounded to 0 ("off").
 *
 * Sizes: a number with an optional unit B, KB/MB/GB/TB (powers of 1000) or
 * KiB/MiB/GiB/TiB (powers of 1024), also K/M/G/T as binary: "64MiB", "1GB".
 */
#ifndef LITEVISOR_DURATION_H
#define LITEVISOR_DURATION_H

#include <stddef.h>
#include <stdint.h>

/* Parse a duration into *ms. Returns 0, or -1 with a reason in why. */
int duration_parse(const char *s, int64_t *ms, char *why, size_t whylen);

/* Parse a size into *bytes. Returns 0, or -1 with a reason in why. */
int size_parse(const char *s, int64_t *bytes, char *why, size_t whylen);

/* Format ms as a Go-style duration ("1h30m0s", "500ms", "0s") into buf. Returns buf. */
char *duration_format(int64_t ms, char *buf, size_t len);

#endif
