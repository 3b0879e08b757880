/*
 * text.h — a capped, growable text buffer for HTTP bodies (health JSON is
 * built by jansson; /metrics and plain answers are built here).
 *
 * TEXT_INIT(max) gives a valid empty buffer. Appending past `max` bytes sets
 * `overflow` and drops the rest, so memory stays bounded whatever the number
 * of databases and replicas; callers check `overflow` (or text_ok) once at
 * the end instead of after every append. Allocation failure counts as
 * overflow too.
 */
#ifndef LITEVISOR_SUP_TEXT_H
#define LITEVISOR_SUP_TEXT_H

#include <stdbool.h>
#include <stddef.h>

struct text {
	char *buf;      /* NUL-terminated when non-NULL */
	size_t len, cap, max;
	bool overflow;
};

#define TEXT_INIT(m) { NULL, 0, 0, (m), false }

/* Append printf-style text. Returns 0, or -1 once the buffer has overflowed. */
int text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append len bytes. Returns 0 or -1 (overflow). */
int text_append(struct text *t, const char *s, size_t len);

/* True when everything appended so far is in the buffer. */
bool text_ok(const struct text *t);

/* Take ownership of the buffer (caller frees; never NULL on success). NULL on overflow. */
char *text_detach(struct text *t, size_t *len);

/* Free the buffer and reset to empty (max kept). */
void text_release(struct text *t);

#endif
