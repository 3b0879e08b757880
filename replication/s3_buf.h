/*
 * s3_buf.h — a growable byte buffer with a hard cap (curl's dynbuf idea).
 *
 * Used for the S3 client's small texts: canonical requests, XML request
 * bodies, error and listing responses. It refuses to grow past its cap, so a
 * hostile or broken server can never make us hold an unbounded answer.
 * The content is always NUL-terminated. S3_BUF_INIT(cap) gives an empty,
 * valid buffer; release it with s3_buf_release.
 */
#ifndef LITEVISOR_S3_BUF_H
#define LITEVISOR_S3_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct s3_buf {
	char *data;   /* NULL until the first append */
	size_t len;
	size_t alloc;
	size_t cap;   /* maximum len */
	bool overflow; /* an append was refused because of the cap */
};

#define S3_BUF_INIT(c) { NULL, 0, 0, (c), false }

/* Append len bytes. Returns 0, or -1 (cap reached or out of memory; overflow set if cap). */
int s3_buf_add(struct s3_buf *b, const void *p, size_t len);
int s3_buf_adds(struct s3_buf *b, const char *s);
int s3_buf_addf(struct s3_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The content ("" if empty); owned by the buffer. */
const char *s3_buf_str(const struct s3_buf *b);

/* Forget the content, keep the memory. */
void s3_buf_reset(struct s3_buf *b);

/* Free the memory; the buffer is empty and reusable (same cap). */
void s3_buf_release(struct s3_buf *b);

#endif
