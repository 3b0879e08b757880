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

/*
 * Parse a reference after its '$' at *pp: 1 a variable (name, and its default
 * when def is set), 0 not a variable (the '$' is literal: "$$" consumed as one
 * "$", anything else left for the caller), -1 a syntax error (why).
 */
static int parse_ref(const char **pp, char *name, size_t namelen, const char **def,
		     size_t *deflen, char *why, size_t whylen)
{
	const char *p = *pp;
	size_t nlen;
	*def = NULL;
	*deflen = 0;
	if (*p == '$') {
		*pp = p + 1;
		return 0;
	}
	if (*p == '{') {
		const char *q = p + 1, *close = strchr(q, '}');
		if (!close) {
			snprintf(why, whylen, "unterminated \"${\" (write \"$$\" for a literal \"$\")");
			return -1;
		}
		while (q < close && name_char(*q))
			q++;
		nlen = (size_t)(q - (p + 1));
		if (nlen == 0 || !name_start(p[1])) {
			snprintf(why, whylen, "bad variable name in \"${…}\" (use letters, digits and _)");
			return -1;
		}
		if (q < close) {
			if (q[0] == ':' && q[1] == '-') {
				*def = q + 2;
				*deflen = (size_t)(close - *def);
			} else {
				snprintf(why, whylen,
					 "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
				return -1;
			}
		}
		if (nlen >= namelen) {
			snprintf(why, whylen, "variable name too long");
			return -1;
		}
		memcpy(name, p + 1, nlen);
		name[nlen] = '\0';
		*pp = close + 1;
		return 1;
	}
	if (!name_start(*p))
		return 0; /* not a variable: the dollar stays as written */
	const char *q = p;
	while (name_char(*q))
		q++;
	nlen = (size_t)(q - p);
	if (nlen >= namelen) {
		snprintf(why, whylen, "variable name too long");
		return -1;
	}
	memcpy(name, p, nlen);
	name[nlen] = '\0';
	*pp = q;
	return 1;
}

/* Where a value lands in shell words: outside quotes, or inside "…". */
enum ctx { RAW, BARE, DQUOTE };

/* Append v (n bytes) so that words_split reads it back as the same text (see envexpand_words). */
static int add_value(struct sbuf *b, const char *v, size_t n, enum ctx c)
{
	const char *special = c == DQUOTE ? "\"\\$`" : c == BARE ? "\\'\"" : "";
	for (size_t i = 0; i < n; i++) {
		if (c != RAW && strchr(special, v[i]) && v[i] && sb_add(b, "\\", 1))
			return -1;
		if (sb_add(b, v + i, 1))
			return -1;
	}
	return 0;
}

static int expand(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
		  char *why, size_t whylen, bool words)
{
	struct sbuf b = { 0 };
	char *first_unset = NULL;
	char name[256];
	int rc = -1;
	enum ctx c = words ? BARE : RAW;

	*out = NULL;
	if (unset)
		*unset = NULL;
	if (sb_add(&b, "", 0))
		goto oom;
	for (const char *p = s; *p;) {
		if (words && c == BARE && *p == '\'') {
			/* single quotes: nothing inside is expanded, as in a shell */
			const char *q = strchr(p + 1, '\'');
			size_t n = q ? (size_t)(q - p) + 1 : strlen(p);
			if (sb_add(&b, p, n))
				goto oom;
			p += n;
			continue;
		}
		if (words && *p == '"') {
			c = c == DQUOTE ? BARE : DQUOTE;
			if (sb_add(&b, p++, 1))
				goto oom;
			continue;
		}
		if (words && *p == '\\' && p[1]) {
			/* an escaped character is literal: "\$HOME" is not a variable */
			if (sb_add(&b, p, 2))
				goto oom;
			p += 2;
			continue;
		}
		if (*p != '$') {
			if (sb_add(&b, p++, 1))
				goto oom;
			continue;
		}
		p++;
		const char *def;
		size_t deflen;
		int r = parse_ref(&p, name, sizeof(name), &def, &deflen, why, whylen);
		if (r < 0)
			goto out;
		if (r == 0) {
			if (sb_add(&b, "$", 1))
				goto oom;
			continue;
		}
		const char *v = do_lookup(lookup, ctx, name);
		if (def && (!v || !*v)) {
			if (add_value(&b, def, deflen, c))
				goto oom;
		} else if (v) {
			if (add_value(&b, v, strlen(v), c))
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

int envexpand(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
	      char *why, size_t whylen)
{
	return expand(s, lookup, ctx, out, unset, why, whylen, false);
}

int envexpand_words(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
		    char *why, size_t whylen)
{
	return expand(s, lookup, ctx, out, unset, why, whylen, true);
}
