/* envexpand.c — $VAR, ${VAR}, ${VAR:-default} (nested too) and $$ in config values. */
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

/* Defaults nest ("${A:-${B:-x}}"); deeper than this is an error, so the stack stays bounded. */
#define MAX_NESTING 8

/*
 * The '}' that ends a default starting at p, or NULL: a nested "${…}" is
 * skipped whole, and "$$" is one literal dollar (so "$$}" still ends it).
 * quotes (exec's words, an unquoted reference): a '}' inside '…' or "…" or
 * after a backslash is the default's, as in a shell: ${T:-"a}b"} is a}b.
 * Cut at that '}', the default left a quote open for the rest of the line,
 * which then read later variables' values as shell text (QA137 D1).
 */
#define QUOTE_SLOTS (MAX_NESTING + 2)

/* The quote slot of nesting level depth; deeper than the slots, the last one (expand_span
 * refuses such a nesting anyway, saying so, where "unterminated" would mislead). */
static char *quote_slot(char *qs, int depth)
{
	return qs + (depth < QUOTE_SLOTS ? depth : QUOTE_SLOTS - 1);
}

static const char *default_end(const char *p, bool quotes)
{
	int depth = 0;
	char qs[QUOTE_SLOTS] = { 0 }, *q = qs; /* per nesting level, the quote open there */
	for (; *p; p++) {
		if (quotes && *q == '\'') {
			*q = *p == '\'' ? 0 : *q;
			continue;
		}
		if (quotes && *p == '\\' && p[1]) {
			p++;
			continue;
		}
		if (quotes && (*p == '"' || (*p == '\'' && !*q))) {
			*q = *q == *p ? 0 : *p;
			continue;
		}
		if (p[0] == '$' && (p[1] == '$' || p[1] == '{')) {
			if (p[1] == '{') {
				q = quote_slot(qs, ++depth);
				*q = 0;
			}
			p++;
		} else if (*p == '}' && !*q) {
			if (depth == 0)
				return p;
			q = quote_slot(qs, --depth);
		}
	}
	return NULL;
}

/*
 * Parse a reference after its '$' at *pp: 1 a variable (name, and its default
 * text when def is set), 0 not a variable (the '$' is literal: "$$" consumed as one
 * "$", anything else left for the caller), -1 a syntax error (why).
 */
static int parse_ref(const char **pp, bool quotes, char *name, size_t namelen,
		     const char **def, size_t *deflen, char *why, size_t whylen)
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
		const char *q = p + 1, *close;
		if (!strchr(q, '}')) {
			snprintf(why, whylen, "unterminated \"${\" (write \"$$\" for a literal \"$\")");
			return -1;
		}
		while (name_char(*q))
			q++;
		nlen = (size_t)(q - (p + 1));
		if (nlen == 0 || !name_start(p[1])) {
			snprintf(why, whylen, "bad variable name in \"${…}\" (use letters, digits and _)");
			return -1;
		}
		if (q[0] == '}') {
			close = q;
		} else if (q[0] == ':' && q[1] == '-') {
			*def = q + 2;
			if (!(close = default_end(*def, quotes))) {
				snprintf(why, whylen, "unterminated \"${\" (write \"$$\" for a literal \"$\")");
				return -1;
			}
			*deflen = (size_t)(close - *def);
		} else {
			snprintf(why, whylen,
				 "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
			return -1;
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

/* Add name to the ", "-separated list l unless it is there already. */
static int note_unset(struct sbuf *l, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = l->p; p && *p;) {
		const char *e = strstr(p, ", ");
		size_t k = e ? (size_t)(e - p) : strlen(p);
		if (k == n && !memcmp(p, name, n))
			return 0;
		p = e ? e + 2 : p + k;
	}
	if (l->len && sb_add(l, ", ", 2))
		return -1;
	return sb_add(l, name, n);
}

/* One expansion: the output, and what the value and its nested defaults share. */
struct xp {
	struct sbuf b;
	envexpand_lookup lookup;
	void *ctx;
	bool words;
	struct sbuf unset; /* the unset variables' names, ", "-separated, each once */
	char *why;
	size_t whylen;
};

/*
 * Expand [p, end). depth 0 is the value itself: its text is copied as
 * written (and, for words, its quotes followed). depth > 0 is a default,
 * which is a value like a variable's: its text is added as one, in the
 * context c of the reference. For words, a default of an unquoted
 * reference is shell text, as the value is: its quotes and backslashes
 * are followed (${T:-"My Site"} is one word, as /bin/sh makes it); inside
 * "…" it stays data. Returns 0, or -1 with x->why set.
 */
static int expand_span(struct xp *x, const char *p, const char *end, enum ctx c, int depth)
{
	char name[256];
	bool top = depth == 0, words = x->words && (top || c == BARE);

	while (p < end) {
		if (words && c == BARE && *p == '\'') {
			/* single quotes: nothing inside is expanded, as in a shell */
			const char *q = memchr(p + 1, '\'', (size_t)(end - p - 1));
			size_t n = q ? (size_t)(q - p) + 1 : (size_t)(end - p);
			if (sb_add(&x->b, p, n))
				goto oom;
			p += n;
			continue;
		}
		if (words && *p == '"') {
			c = c == DQUOTE ? BARE : DQUOTE;
			if (sb_add(&x->b, p++, 1))
				goto oom;
			continue;
		}
		if (words && *p == '\\' && p + 1 < end) {
			/* an escaped character is literal: "\$HOME" is not a variable */
			if (sb_add(&x->b, p, 2))
				goto oom;
			p += 2;
			continue;
		}
		if (*p != '$') {
			if (top ? sb_add(&x->b, p++, 1) : add_value(&x->b, p++, 1, c))
				goto oom;
			continue;
		}
		p++;
		const char *def;
		size_t deflen;
		int r = parse_ref(&p, words && c == BARE, name, sizeof(name), &def, &deflen, x->why,
				  x->whylen);
		if (r < 0)
			return -1;
		if (r == 0) {
			if (top ? sb_add(&x->b, "$", 1) : add_value(&x->b, "$", 1, c))
				goto oom;
			continue;
		}
		const char *v = do_lookup(x->lookup, x->ctx, name);
		if (def && (!v || !*v)) {
			if (depth + 1 > MAX_NESTING) {
				snprintf(x->why, x->whylen, "\"${…:-…}\" nested more than %d deep",
					 MAX_NESTING);
				return -1;
			}
			if (expand_span(x, def, def + deflen, c, depth + 1) < 0)
				return -1;
		} else if (v) {
			if (add_value(&x->b, v, strlen(v), c))
				goto oom;
		} else if (note_unset(&x->unset, name) < 0) {
			goto oom;
		}
	}
	return 0;
oom:
	snprintf(x->why, x->whylen, "out of memory");
	return -1;
}

static int expand(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
		  char *why, size_t whylen, bool words)
{
	struct xp x = { .lookup = lookup, .ctx = ctx, .words = words, .why = why, .whylen = whylen };
	int rc = -1;

	*out = NULL;
	if (unset)
		*unset = NULL;
	if (sb_add(&x.b, "", 0)) {
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	if (expand_span(&x, s, s + strlen(s), words ? BARE : RAW, 0) < 0)
		goto out;
	*out = x.b.p;
	x.b.p = NULL;
	if (unset) {
		*unset = x.unset.p;
		x.unset.p = NULL;
	}
	rc = 0;
out:
	free(x.b.p);
	free(x.unset.p);
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
