/* envexpand.c — $VAR, ${VAR}, ${VAR:-default} and $$ in config values. */
#include "common/envexpand.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

/* A bounded-by-input growable string: the result is never longer than needed. */
struct sbuf {
	char *p;
	size_t len, cap;
};

static int sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static bool name_start(char c)
{
	return isalpha((unsigned char)c) || c == '_';
}

static bool name_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

static const char *do_lookup(envexpand_lookup lookup, void *ctx, const char *name)
{
	return lookup ? lookup(name, ctx) : getenv(name);
}

int envexpand(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
	      char *why, size_t whylen)
{
	struct sbuf b = { 0 };
	char *first_unset = NULL;
	char name[256];
	int rc = -1;

	*out = NULL;
	if (unset)
		*unset = NULL;
	if (sb_add(&b, "", 0))
		goto oom;
	for (const char *p = s; *p;) {
		const char *dollar = strchr(p, '$');
		if (!dollar) {
			if (sb_add(&b, p, strlen(p)))
				goto oom;
			break;
		}
		if (sb_add(&b, p, (size_t)(dollar - p)))
			goto oom;
		p = dollar + 1;
		if (*p == '$') {
			if (sb_add(&b, "$", 1))
				goto oom;
			p++;
			continue;
		}
		const char *def = NULL;
		size_t deflen = 0, nlen = 0;
		if (*p == '{') {
			const char *q = p + 1, *close = strchr(q, '}');
			if (!close) {
				snprintf(why, whylen, "unterminated \"${\" (write \"$$\" for a literal \"$\")");
				goto out;
			}
			while (q < close && name_char(*q))
				q++;
			nlen = (size_t)(q - (p + 1));
			if (nlen == 0 || !name_start(p[1])) {
				snprintf(why, whylen, "bad variable name in \"${…}\" (use letters, digits and _)");
				goto out;
			}
			if (q < close) {
				if (q + 1 < close + 1 && q[0] == ':' && q[1] == '-') {
					def = q + 2;
					deflen = (size_t)(close - def);
				} else {
					snprintf(why, whylen,
						 "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
					goto out;
				}
			}
			if (nlen >= sizeof(name)) {
				snprintf(why, whylen, "variable name too long");
				goto out;
			}
			memcpy(name, p + 1, nlen);
			name[nlen] = '\0';
			p = close + 1;
		} else if (name_start(*p)) {
			const char *q = p;
			while (name_char(*q))
				q++;
			nlen = (size_t)(q - p);
			if (nlen >= sizeof(name)) {
				snprintf(why, whylen, "variable name too long");
				goto out;
			}
			memcpy(name, p, nlen);
			name[nlen] = '\0';
			p = q;
		} else {
			/* Not a variable: keep the dollar as written. */
			if (sb_add(&b, "$", 1))
				goto oom;
			continue;
		}
		const char *v = do_lookup(lookup, ctx, name);
		if (def && (!v || !*v)) {
			if (sb_add(&b, def, deflen))
				goto oom;
		} else if (v) {
			if (sb_add(&b, v, strlen(v)))
				goto oom;
		} else if (!first_unset) {
			first_unset = strdup(name);
			if (!first_unset)
				goto oom;
		}
	}
	*out = b.p;
	b.p = NULL;
	if (unset) {
		*unset = first_unset;
		first_unset = NULL;
	}
	rc = 0;
	goto out;
oom:
	snprintf(why, whylen, "out of memory");
out:
	free(b.p);
	free(first_unset);
	return rc;
}
