/* text.c — capped growable text buffer (see text.h). */
#include "supervisor/text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

/* Make room for `more` bytes plus the NUL; 0 or -1 (overflow set). */
static int reserve(struct text *t, size_t more)
{
	if (t->overflow)
		return -1;
	if (more > t->max || t->len > t->max - more) {
		t->overflow = true;
		return -1;
	}
	size_t need = t->len + more + 1;
	if (need <= t->cap)
		return 0;
	size_t cap = t->cap ? t->cap : 256;
	while (cap < need)
		cap *= 2;
	if (cap > t->max + 1)
		cap = t->max + 1;
	char *p = realloc(t->buf, cap);
	if (!p) {
		t->overflow = true;
		return -1;
	}
	t->buf = p;
	t->cap = cap;
	return 0;
}

int text_append(struct text *t, const char *s, size_t len)
{
	if (reserve(t, len) < 0)
		return -1;
	memcpy(t->buf + t->len, s, len);
	t->len += len;
	t->buf[t->len] = '\0';
	return 0;
}

int text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	char small[512];
	va_start(ap, fmt);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0) {
		t->overflow = true;
		return -1;
	}
	if ((size_t)n < sizeof(small))
		return text_append(t, small, (size_t)n);
	if (reserve(t, (size_t)n) < 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	t->len += (size_t)n;
	return 0;
}

bool text_ok(const struct text *t)
{
	return !t->overflow;
}

char *text_detach(struct text *t, size_t *len)
{
	if (t->overflow)
		return NULL;
	if (!t->buf && reserve(t, 0) < 0)
		return NULL;
	char *p = t->buf;
	if (len)
		*len = t->len;
	t->buf = NULL;
	t->len = t->cap = 0;
	return p;
}

void text_release(struct text *t)
{
	free(t->buf);
	t->buf = NULL;
	t->len = t->cap = 0;
	t->overflow = false;
}
