/* s3_buf.c — capped growable buffer. */
#include "replication/s3_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

int s3_buf_add(struct s3_buf *b, const void *p, size_t len)
{
	if (len > b->cap || b->len > b->cap - len) {
		b->overflow = true;
		return -1;
	}
	if (b->len + len + 1 > b->alloc) {
		size_t want = b->alloc ? b->alloc : 256;
		while (want < b->len + len + 1)
			want *= 2;
		if (want > b->cap + 1)
			want = b->cap + 1;
		char *d = realloc(b->data, want);
		if (!d)
			return -1;
		b->data = d;
		b->alloc = want;
	}
	if (len)
		memcpy(b->data + b->len, p, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int s3_buf_adds(struct s3_buf *b, const char *s)
{
	return s3_buf_add(b, s, strlen(s));
}

int s3_buf_addf(struct s3_buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	if ((size_t)n < sizeof(small))
		return s3_buf_add(b, small, (size_t)n);
	char *big = malloc((size_t)n + 1);
	if (!big)
		return -1;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	int rc = s3_buf_add(b, big, (size_t)n);
	free(big);
	return rc;
}

const char *s3_buf_str(const struct s3_buf *b)
{
	return b->data ? b->data : "";
}

void s3_buf_reset(struct s3_buf *b)
{
	b->len = 0;
	b->overflow = false;
	if (b->data)
		b->data[0] = '\0';
}

void s3_buf_release(struct s3_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
	b->overflow = false;
}
