/*
 * config_walk.c — the generic, table-driven walk over one YAML map: key
 * checks (unknown, misplaced, unsupported, duplicate), env expansion of
 * values, conversion to strings, booleans, durations, numbers, sizes and
 * enums. The tables themselves are in config_schema.c and config_replica.c.
 */
#include "common/config_walk.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/duration.h"
#include "common/envexpand.h"
#include "common/pathnorm.h"
#include "common/yamlquote.h"
#include "common/banned.h"

#define AT_MAX 64

void walk_path(char *buf, size_t len, const char *path, const char *key)
{
	if (path && *path)
		snprintf(buf, len, "%s.%s", path, key);
	else
		snprintf(buf, len, "%s", key);
}

const char *walk_kind_name(const struct cfg_node *n)
{
	switch (n->kind) {
	case CN_MAP:
		return "a map";
	case CN_SEQ:
		return "a list";
	default:
		return "a single value";
	}
}

/* Drop the spaces, tabs and line breaks that start or end s, in place. */
static void trim_blanks(char *s)
{
	size_t n = strlen(s), a = 0;
	while (n > 0 && strchr(" \t\r\n", s[n - 1]))
		n--;
	while (a < n && strchr(" \t\r\n", s[a]))
		a++;
	memmove(s, s + a, n - a);
	s[n - a] = '\0';
}

/*
 * The expanded value out of the scalar v starts with a quote a variable put
 * there (v's own text does not), as `docker run --env-file` keeps the quotes
 * of DB_PATH="/data/app.db".
 */
static bool from_env_in_quotes(const struct cfg_node *v, const char *out)
{
	return (out[0] == '"' || out[0] == '\'') && v->value[0] != out[0];
}

/*
 * Litestream expands before YAML reads the file: a plain value that expands
 * to a quoted string is that string's content there, and so here, rather
 * than a path under the working directory named with quotes (QA174 D1). A
 * quoted value whose variable brought quotes of its own is refused: YAML
 * fails on it in Litestream (or keeps them, in the other kind of quotes),
 * and no path, bucket or key is meant to be written with them.
 */
static int unquote_env_value(struct walk *w, const struct cfg_node *v, const char *path,
			     char *out)
{
	char why[120];
	size_t n = strlen(out);
	if (!v->plain) {
		if (n < 2 || out[n - 1] != out[0])
			return 0;
		cfg_error(w->e, v, path, "the value from the environment is in quotes of its own, "
			  "inside the quotes here: drop one pair (an env file for `docker run "
			  "--env-file` keeps its quotes)");
		return -1;
	}
	if (yaml_unquote(out, why, sizeof(why)) < 0) {
		cfg_error(w->e, v, path, "the value from the environment starts with a quote, so it is "
			  "read as YAML reads a quoted string (Litestream expands before YAML reads the "
			  "file), but %s", why);
		return -1;
	}
	w->unquoted = true;
	return 0;
}

/* Expand one scalar; *unset gets the first unset variable (malloc'd) or NULL. */
static int expand(struct walk *w, const struct cfg_node *v, const char *path, bool secret,
		  bool words, char **out, char **unset)
{
	char why[160];
	*out = NULL;
	*unset = NULL;
	w->unquoted = false;
	if (v->kind != CN_SCALAR) {
		cfg_error(w->e, v, path, "expected a single value, got %s", walk_kind_name(v));
		return -1;
	}
	if (cfg_node_is_null(v))
		return 0;
	/* `litevisor config` output loaded back as it is: a credential would be that text */
	if (strcmp(v->value, CFG_REDACTED) == 0 || strstr(v->value, "://" CFG_REDACTED "@")) {
		cfg_error(w->e, v, path, "\"%s\" is what `litevisor config` prints in place of a "
			  "secret: put the real value back before loading it",
			  CFG_REDACTED);
		return -1;
	}
	if (w->opt && w->opt->no_expand_env) {
		*out = strdup(v->value);
	} else if ((words ? envexpand_words : envexpand)(v->value, w->lookup, w->lookup_ctx, out,
							 unset, why, sizeof(why)) < 0) {
		if (secret)
			cfg_error(w->e, v, path, "%s (value redacted)", why);
		else
			cfg_error(w->e, v, path, "%s in \"%s\"", why, v->value);
		return -1;
	}
	if (!*out) {
		cfg_error(w->e, v, path, "out of memory");
		return -1;
	}
	/*
	 * Litestream expands the whole file before YAML reads it, and YAML trims
	 * the blanks and line breaks around a plain scalar: a value taken from a
	 * file or an env file ("bkt\n", "/data/app.db\r") means the same here.
	 * A quoted value keeps what it holds.
	 */
	if (v->plain && !words)
		trim_blanks(*out);
	if (!words && !(w->opt && w->opt->no_expand_env) && from_env_in_quotes(v, *out) &&
	    unquote_env_value(w, v, path, *out) < 0) {
		free(*out);
		*out = NULL;
		return -1;
	}
	/* an exec of blanks only ("$APP_CMD" from a CRLF env file) is none, as an empty one */
	if (v->plain && words && !(*out)[strspn(*out, " \t\r\n")])
		(*out)[0] = '\0';
	return 0;
}

/* Remember that v named an unset variable, for a later "missing …" message. */
static void note_unset(struct walk *w, const struct cfg_node *v, char *name)
{
	if (!name)
		return;
	if (w->nunset == w->capunset) {
		size_t cap = w->capunset ? w->capunset * 2 : 8;
		struct walk_unset *u = realloc(w->unset, cap * sizeof(*u));
		if (!u) {
			free(name);
			return; /* only a hint is lost */
		}
		w->unset = u;
		w->capunset = cap;
	}
	w->unset[w->nunset].node = v;
	w->unset[w->nunset].name = name;
	w->nunset++;
}

const char *walk_unset_var(const struct walk *w, const struct cfg_node *v)
{
	for (size_t i = 0; v && i < w->nunset; i++)
		if (w->unset[i].node == v)
			return w->unset[i].name;
	return NULL;
}

const char *walk_unset_phrase(char *buf, size_t len, const char *names)
{
	bool several = strchr(names, ',') != NULL;
	size_t total = 1;
	for (const char *p = names; (p = strstr(p, ", ")); p += 2)
		total++;
	/* as many whole names as fit, then how many more: never a name cut short */
	int k = snprintf(buf, len, "environment variable%s ", several ? "s" : "");
	size_t used = k > 0 ? (size_t)k : 0, shown = 0;
	const char *p = names;
	while (*p && used < len) {
		const char *e = strstr(p, ", ");
		size_t n = e ? (size_t)(e - p) : strlen(p);
		if (used + n + 2 + 40 > len && shown > 0)
			break;
		k = snprintf(buf + used, len - used, "%s%.*s", shown ? ", " : "", (int)n, p);
		used += k > 0 ? (size_t)k : 0;
		shown++;
		p = e ? e + 2 : p + n;
	}
	if (used < len && shown < total)
		snprintf(buf + used, len - used, " and %zu more are not set", total - shown);
	else if (used < len)
		snprintf(buf + used, len - used, several ? " are not set" : " is not set");
	return buf;
}

void walk_unset_note(char *buf, size_t len, const struct walk *w, const struct cfg_node *const *nodes,
		     size_t n)
{
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const char *name = walk_unset_var(w, nodes[i]);
		if (name) {
			char phrase[256];
			size_t room = len > 3 ? len - 3 : 1; /* " (" and ")" */
			snprintf(buf, len, " (%s)", walk_unset_phrase(phrase, room < sizeof(phrase) ? room
									       : sizeof(phrase), name));
			return;
		}
	}
}

static bool name_byte_bad(unsigned char c)
{
	return c == '"' || c == '\\' || c < 0x20 || c == 0x7f;
}

int walk_check_name(struct walk *w, const struct cfg_node *at, const char *path, const char *name)
{
	char kp[300];
	walk_path(kp, sizeof(kp), path, "name");
	if (strlen(name) > CFG_NAME_MAX) {
		cfg_error(w->e, at, kp, "longer than %d bytes", CFG_NAME_MAX);
		return -1;
	}
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (name_byte_bad(*p)) {
			cfg_error(w->e, at, kp, "\"%s\" holds a '\"', a '\\' or a control character: "
				  "names appear in logs and metric labels", name);
			return -1;
		}
	return 0;
}

void cfg_name_fit(char *name)
{
	for (unsigned char *p = (unsigned char *)name; *p; p++)
		if (name_byte_bad(*p))
			*p = '_';
	size_t n = strlen(name);
	if (n <= CFG_NAME_MAX)
		return;
	n = CFG_NAME_MAX;
	while (n > 0 && ((unsigned char)name[n] & 0xC0) == 0x80) /* not inside a UTF-8 character */
		n--;
	name[n] = '\0';
}

void walk_release(struct walk *w)
{
	for (size_t i = 0; i < w->nunset; i++)
		free(w->unset[i].name);
	free(w->unset);
	w->unset = NULL;
	w->nunset = w->capunset = 0;
}

int walk_scalar(struct walk *w, const struct cfg_node *v, const char *path, bool secret, char **out)
{
	char *unset = NULL;
	int rc = expand(w, v, path, secret, false, out, &unset);
	if (rc == 0)
		note_unset(w, v, unset);
	else
		free(unset);
	return rc;
}

int walk_words(struct walk *w, const struct cfg_node *v, const char *path, char **out)
{
	char *unset = NULL;
	if (expand(w, v, path, false, true, out, &unset) < 0) {
		free(unset);
		return -1;
	}
	note_unset(w, v, unset);
	/* an empty value (e.g. from an unset variable) means "not set", as in Litestream */
	if (*out && !**out) {
		free(*out);
		*out = NULL;
	}
	return 0;
}

int walk_required(struct walk *w, const struct cfg_node *v, const char *path, char **out)
{
	return walk_required_ex(w, v, path, false, out);
}

int walk_required_ex(struct walk *w, const struct cfg_node *v, const char *path, bool secret,
		     char **out)
{
	char *unset = NULL;
	if (expand(w, v, path, secret, false, out, &unset) < 0)
		return -1;
	if (!*out || !**out) {
		char phrase[256];
		if (unset)
			cfg_error(w->e, v, path, "empty: %s", walk_unset_phrase(phrase, sizeof(phrase), unset));
		else
			cfg_error(w->e, v, path, "must not be empty");
		free(unset);
		free(*out);
		*out = NULL;
		return -1;
	}
	note_unset(w, v, unset); /* for the checks of the value that follow */
	return 0;
}

/* YAML 1.1's plain null, as a value a variable expanded to */
static bool is_null_text(const char *s)
{
	return strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
	       strcmp(s, "NULL") == 0;
}

int walk_optional(struct walk *w, const struct cfg_node *v, const char *path, char **out)
{
	/*
	 * Null ("retention:", "null", "~") leaves Litestream's *time.Duration or
	 * *int nil: the default. So does a plain value that expands to nothing
	 * (an unset $RETENTION), or to YAML's null ("~", "null"): Litestream
	 * expands before parsing, leaving a null. A quoted "" stays an error
	 * there (yaml.v2 cannot parse it) and here, also when a variable brings
	 * it (RETENTION="" in an env file: w->unquoted).
	 */
	*out = NULL;
	if (v->kind == CN_SCALAR && cfg_node_is_null(v))
		return 1;
	if (v->kind == CN_SCALAR && v->plain) {
		if (walk_scalar(w, v, path, false, out) < 0)
			return -1;
		if (*out && !**out && w->unquoted) {
			cfg_error(w->e, v, path, "must not be empty (the environment gives it as a "
				  "quoted empty string)");
			free(*out);
			*out = NULL;
			return -1;
		}
		if (!*out || !**out || (!w->unquoted && is_null_text(*out))) {
			free(*out);
			*out = NULL;
			return 1;
		}
		return 0;
	}
	return walk_required(w, v, path, out) < 0 ? -1 : 0;
}

int walk_parse_bool(const char *s, bool *out)
{
	/* YAML 1.1's booleans, as Litestream's yaml.v2 reads them ("y" and "n" too) */
	static const char *const yes[] = { "true", "yes", "on", "y" },
			  *const no[] = { "false", "no", "off", "n" };
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

/* s (digits of base, nothing else) into *out. Returns 0, or -1. */
static int parse_digits(const char *s, int base, bool neg, long long *out)
{
	char *end;
	if (!*s || *s == '+' || *s == '-' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	unsigned long long u = strtoull(s, &end, base);
	if (*end || errno || u > (unsigned long long)LLONG_MAX + neg)
		return -1;
	*out = neg ? (long long)(0 - u) : (long long)u;
	return 0;
}

int walk_parse_int(const char *s, long long *out)
{
	char buf[64], *d = buf;
	for (; *s; s++) /* yaml.v2 drops every '_' first */
		if (*s != '_') {
			if (d == buf + sizeof(buf) - 1)
				return -1;
			*d++ = *s;
		}
	*d = '\0';
	bool neg = buf[0] == '-';
	const char *p = buf + (buf[0] == '-' || buf[0] == '+');
	if (p[0] == '0' && p[1] && strchr("xXoObB", p[1]))
		return parse_digits(p + 2, strchr("xX", p[1]) ? 16 : strchr("oO", p[1]) ? 8 : 2, neg, out);
	if (p[0] == '0' && p[1] && parse_digits(p, 8, neg, out) == 0)
		return 0; /* a leading zero is octal, as Go's ParseInt(s, 0) reads it */
	if (parse_digits(p, 10, neg, out) == 0)
		return 0;
	/* else a float that is a whole number ("1e4", "09", "1000.0"), as yaml.v2 sets an int */
	if (!(isdigit((unsigned char)p[0]) || p[0] == '.') || p[strspn(p, "0123456789.eE+-")])
		return -1;
	char *end;
	errno = 0;
	double f = strtod(p, &end);
	if (*end || errno || end == p || f >= 9.2e18 || f != (double)(long long)f)
		return -1;
	*out = neg ? -(long long)f : (long long)f;
	return 0;
}

/* Set one field from v. Returns 0, 1 when v gives no value (the default stays), -1 on error. */
static int set_value(struct walk *w, const struct field *f, const struct cfg_node *v,
		     const char *path, void *target)
{
	char *s = NULL, why[200];
	char *dst = (char *)target + f->off;
	int rc = -1;

	if (f->kind == F_CUSTOM)
		return f->fn(w, f, v, path, target);
	if (f->kind == F_STR || f->kind == F_SECRET || f->kind == F_SECRET_FILE) {
		char *unset = NULL;
		if (expand(w, v, path, f->kind == F_SECRET, false, &s, &unset) < 0) {
			free(unset);
			return -1;
		}
		note_unset(w, v, unset);
		char **slot = (char **)(void *)dst;
		free(*slot);
		/* An empty value (e.g. from an unset variable) means "not set", as in Litestream. */
		if (s && !*s) {
			free(s);
			s = NULL;
		}
		*slot = s;
		return 0;
	}
	if ((rc = walk_optional(w, v, path, &s)) != 0)
		return rc;
	rc = -1;
	switch (f->kind) {
	case F_BOOL:
		if (walk_parse_bool(s, (bool *)(void *)dst) < 0) {
			cfg_error(w->e, v, path, "invalid boolean \"%s\" (use true or false)", s);
			goto out;
		}
		break;
	case F_DUR:
		if (duration_parse(s, (int64_t *)(void *)dst, why, sizeof(why)) < 0) {
			cfg_error(w->e, v, path, "%s", why);
			goto out;
		}
		/* min marks durations where 0 would mean a busy loop or an instant timeout. */
		if (*(int64_t *)(void *)dst < f->min) {
			cfg_error(w->e, v, path, "must be more than 0%s%s%s", f->why ? " (" : "",
				  f->why ? f->why : "", f->why ? ")" : "");
			goto out;
		}
		break;
	case F_SIZE:
		if (size_parse(s, (int64_t *)(void *)dst, why, sizeof(why)) < 0) {
			cfg_error(w->e, v, path, "%s", why);
			goto out;
		}
		break;
	case F_INT:
	case F_INT64: {
		long long n;
		if (walk_parse_int(s, &n) < 0) {
			cfg_error(w->e, v, path, "invalid number \"%s\"", s);
			goto out;
		}
		/* yaml.v2 refuses a quoted number; a quoted leading zero is no clear octal either */
		char bare[64] = "", *b = bare; /* s without its '_', as yaml.v2 reads it */
		for (const char *c = s; *c && b < bare + sizeof(bare) - 1; c++)
			if (*c != '_')
				*b++ = *c;
		*b = '\0';
		const char *digits = bare + (bare[0] == '-' || bare[0] == '+');
		if (!v->plain && digits[0] == '0' && isdigit((unsigned char)digits[1])) {
			cfg_error(w->e, v, path,
				  "quoted number \"%s\" has a leading zero: unquoted, Litestream reads "
				  "it as %lld; write it unquoted, or without the zero", s, n);
			goto out;
		}
		if (n < f->min || n > f->max) {
			if (f->max == INT_MAX || f->max == INT64_MAX)
				cfg_error(w->e, v, path, "%lld is out of range (at least %lld)", n,
					  (long long)f->min);
			else
				cfg_error(w->e, v, path, "%lld is out of range (%lld to %lld)", n,
					  (long long)f->min, (long long)f->max);
			goto out;
		}
		if (f->kind == F_INT)
			*(int *)(void *)dst = (int)n;
		else
			*(int64_t *)(void *)dst = n;
		break;
	}
	case F_ENUM: {
		size_t i;
		for (i = 0; f->names[i]; i++)
			if (strcmp(s, f->names[i]) == 0)
				break;
		if (!f->names[i]) {
			char list[200] = "";
			size_t used = 0;
			for (size_t j = 0; f->names[j]; j++) {
				int k = snprintf(list + used, sizeof(list) - used, "%s%s", j ? ", " : "",
						 f->names[j]);
				if (k < 0 || (size_t)k >= sizeof(list) - used)
					break;
				used += (size_t)k;
			}
			const char *hint = NULL;
			for (size_t j = 0; f->names[j] && !hint; j++)
				if (cfg_edit_distance(s, f->names[j], 2) <= 2 ||
				    (strlen(s) >= 3 && strncmp(f->names[j], s, strlen(s)) == 0))
					hint = f->names[j];
			if (hint)
				cfg_error(w->e, v, path, "invalid value \"%s\"; did you mean \"%s\"?", s, hint);
			else
				cfg_error(w->e, v, path, "invalid value \"%s\" (one of: %s)", s, list);
			goto out;
		}
		*(int *)(void *)dst = (int)i;
		break;
	}
	default:
		cfg_error(w->e, v, path, "internal error: bad field kind");
		goto out;
	}
	rc = 0;
out:
	free(s);
	return rc;
}

/* Is node n written after key k (not a node an alias of k's value refers back to)? */
static bool after(const struct cfg_node *n, const struct cfg_node *k)
{
	return n->line > k->line || (n->line == k->line && n->column > k->column);
}

/* Does the value v of key k hold, within itself, a node an alias uses elsewhere?
 * (x-defaults: &d {…}, or x-creds: {key: &k …}.) Nodes an alias in it refers back
 * to, written before k, are not looked into. */
static bool holds_anchor(const struct cfg_node *v, const struct cfg_node *k)
{
	if (!after(v, k))
		return false;
	if (v->aliased)
		return true;
	for (size_t i = 0; (v->kind == CN_MAP || v->kind == CN_SEQ) && i < v->nitems; i++)
		if (holds_anchor(v->items[i], k))
			return true;
	return false;
}

/* Whether text reads like a name (every key is a short lower-case one, few digits):
 * else it is most likely a value, perhaps a secret or token, never repeated in an
 * error unless it is a near miss of a key (walk_map). */
static bool key_like(const char *text)
{
	size_t n = strlen(text), digits = 0;
	if (n == 0 || n > 32)
		return false;
	for (const char *p = text; *p; p++) {
		if (isdigit((unsigned char)*p))
			digits++;
		else if (!islower((unsigned char)*p) && !strchr("-_. ", *p))
			return false;
	}
	return digits <= 4;
}

/* The closest valid key within a small edit distance, or NULL. */
static const char *suggest(const char *key, const struct field *tab, size_t n, unsigned where)
{
	const char *best = NULL;
	int bestd = 3;
	char low[80];
	size_t i;
	for (i = 0; key[i] && i + 1 < sizeof(low); i++)
		low[i] = key[i] == '_' ? '-' : (char)tolower((unsigned char)key[i]);
	low[i] = '\0';
	for (i = 0; i < n; i++) {
		if (tab[i].where && !(tab[i].where & where))
			continue;
		if (tab[i].kind == F_UNSUPPORTED)
			continue;
		int d = cfg_edit_distance(low, tab[i].key, 2);
		if (d < bestd) {
			bestd = d;
			best = tab[i].key;
		}
	}
	return best;
}

int walk_map(struct walk *w, const struct cfg_node *m, const char *path, const struct field *tab,
	     size_t n, unsigned where, void *target, const struct cfg_node **at)
{
	char kp[320];
	const struct cfg_node *local[AT_MAX] = { 0 };

	if (n > AT_MAX) {
		cfg_error(w->e, m, path, "internal error: table too large");
		return -1;
	}
	if (!at)
		at = local;
	if (cfg_node_is_null(m))
		return 0;
	if (m->kind != CN_MAP) {
		cfg_error(w->e, m, path, "expected a map of \"key: value\" lines, got %s",
			  walk_kind_name(m));
		return -1;
	}
	/*
	 * YAML merge keys ("<<: *defaults", or a list of them) first, so the
	 * map's own keys override them; an earlier map in a list wins over a later one.
	 */
	for (size_t i = 0; i + 1 < m->nitems; i += 2) {
		const struct cfg_node *k = m->items[i], *v = m->items[i + 1];
		if (k->kind != CN_SCALAR || strcmp(k->value, "<<") != 0 || !k->plain)
			continue;
		walk_path(kp, sizeof(kp), path, "<<");
		/* Aliases share nodes, so nested merges could fan out exponentially: cap them. */
		if (w->merge_depth >= 8 || ++w->merges > 1000) {
			cfg_error(w->e, k, kp, "merge keys nested too deeply or used too often");
			return -1;
		}
		size_t nm = v->kind == CN_SEQ ? v->nitems : 1;
		for (size_t j = nm; j-- > 0;) {
			const struct cfg_node *src = v->kind == CN_SEQ ? v->items[j] : v;
			if (src->kind != CN_MAP) {
				cfg_error(w->e, src, kp, "a merge key takes a map (or a list of maps), got %s",
					  walk_kind_name(src));
				return -1;
			}
			w->merge_depth++;
			int rc = walk_map(w, src, path, tab, n, where, target, at);
			w->merge_depth--;
			if (rc < 0)
				return -1;
		}
	}
	for (size_t i = 0; i + 1 < m->nitems; i += 2) {
		const struct cfg_node *k = m->items[i], *v = m->items[i + 1];
		if (k->kind == CN_SCALAR && k->plain && strcmp(k->value, "<<") == 0)
			continue;
		if (k->kind != CN_SCALAR) {
			cfg_error(w->e, k, path, "a key must be a plain name, got %s", walk_kind_name(k));
			return -1;
		}
		if (k->value[0] == '$' && k->plain) {
			walk_path(kp, sizeof(kp), path, k->value);
			cfg_error(w->e, k, kp, "a variable where a key belongs: keys are not expanded, "
				  "only values (Litestream expands the whole file); write the key");
			return -1;
		}
		if (!key_like(k->value) && !suggest(k->value, tab, n, where) &&
		    !cfg_other_place(k->value, tab)) {
			/* never echoed: a value where a key belongs may be a secret (a second
			 * age identity after "identities: KEY1, " without brackets) */
			walk_path(kp, sizeof(kp), path, "…");
			cfg_error(w->e, k, kp, "a value where a key belongs (not shown: it may be a "
				  "secret); several values make a list: [a, b], or lines starting with \"- \"");
			return -1;
		}
		walk_path(kp, sizeof(kp), path, k->value);
		for (size_t j = 0; j < i; j += 2) {
			const struct cfg_node *pk = m->items[j];
			if (pk->kind == CN_SCALAR && strcmp(pk->value, k->value) == 0) {
				cfg_error(w->e, k, kp, "duplicate key (first at line %d, column %d)",
					  pk->line, pk->column);
				return -1;
			}
		}
		size_t f;
		for (f = 0; f < n; f++)
			if (strcmp(tab[f].key, k->value) == 0)
				break;
		if (f < n && tab[f].where && !(tab[f].where & where)) {
			if (where == ON_STORE)
				cfg_error(w->e, k, kp,
					  "not allowed in a store (set it on each replica that uses the store)");
			else
				cfg_error(w->e, k, kp, "not allowed here");
			return -1;
		}
		/* A top-level value that is there for its anchor (x-defaults: &d {…}, used as
		 * <<: *d or *d below) is no setting: Litestream ignores such a key too. Only
		 * the key that holds it: an alias shares the node, which it finds defined
		 * before itself (a misspelt key given *d is still unknown). */
		if (f == n && !path[0] && holds_anchor(v, k))
			continue;
		if (f == n) {
			const char *hint = suggest(k->value, tab, n, where);
			const char *elsewhere = hint ? NULL : cfg_other_place(k->value, tab);
			if (hint)
				cfg_error(w->e, k, kp, "unknown key; did you mean \"%s\"?", hint);
			else if (elsewhere)
				cfg_error(w->e, k, kp, "not valid here; it belongs under %s", elsewhere);
			else
				cfg_error(w->e, k, kp, "unknown key (docs/config.md lists the keys)");
			return -1;
		}
		if (tab[f].kind == F_UNSUPPORTED) {
			cfg_error(w->e, k, kp, "not supported by litevisor (%s)", tab[f].why);
			return -1;
		}
		const struct cfg_node *before = at[f];
		at[f] = v;
		int rc = set_value(w, &tab[f], v, kp, target);
		if (rc < 0)
			return -1;
		if (rc > 0)
			at[f] = before; /* no value: as if the key were absent */
	}
	return 0;
}

/* The value of key in map m, or NULL. */
const struct cfg_node *walk_map_get(const struct cfg_node *m, const char *key)
{
	if (m->kind != CN_MAP)
		return NULL;
	for (size_t i = 0; i + 1 < m->nitems; i += 2)
		if (m->items[i]->kind == CN_SCALAR && strcmp(m->items[i]->value, key) == 0)
			return m->items[i + 1];
	return NULL;
}

/*
 * The working directory as Go's os.Getwd gives it: $PWD when it is absolute
 * and names this directory (a path through a symlink stays as the shell
 * has it), else getcwd's.
 */
static char *working_dir(char *buf, size_t len)
{
	const char *pwd = getenv("PWD");
	struct stat a, b;
	if (pwd && pwd[0] == '/' && strlen(pwd) < len && stat(pwd, &a) == 0 && stat(".", &b) == 0 &&
	    a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
		snprintf(buf, len, "%s", pwd);
		return buf;
	}
	return getcwd(buf, len);
}

/*
 * "~": the password file's home for our uid, else $HOME, as Litestream's
 * expand() finds it (Go's user.Current() reads the password file and falls
 * back to $HOME for a uid it does not list). $HOME first sent the same
 * litestream.yml to another database and replica wherever it differs (an
 * image's ENV HOME, su without -: QA92 D2). NULL when neither names one.
 */
static const char *home_dir(void)
{
	struct passwd *pw = getpwuid(getuid());
	if (pw && pw->pw_dir && *pw->pw_dir)
		return pw->pw_dir;
	const char *home = getenv("HOME");
	return home && *home ? home : NULL;
}

char *cfg_abs_path(const char *p)
{
	char buf[4096];
	int n;
	if (p[0] == '/') {
		n = snprintf(buf, sizeof(buf), "%s", p);
	} else if (p[0] == '~' && (p[1] == '/' || !p[1])) {
		const char *home = home_dir();
		if (!home)
			return NULL;
		n = snprintf(buf, sizeof(buf), "%s%s", home, p + 1);
	} else {
		char cwd[2048];
		if (!working_dir(cwd, sizeof(cwd)))
			return NULL;
		n = snprintf(buf, sizeof(buf), "%s/%s", cwd, p);
	}
	if (n < 0 || (size_t)n >= sizeof(buf))
		return NULL;
	/* As Litestream's filepath.Abs: "a//b/./c/../" is "a/b". */
	pathnorm_clean(buf);
	return strdup(buf);
}

char *config_abs_path(const char *p, char *err, size_t errlen)
{
	if (!*p) {
		snprintf(err, errlen, "empty path");
		return NULL;
	}
	if (p[0] == '~' && (p[1] == '/' || !p[1]) && !home_dir()) {
		snprintf(err, errlen, "cannot expand \"~\" in \"%s\": the password file names no "
			 "home for uid %u and $HOME is not set", p, (unsigned)getuid());
		return NULL;
	}
	errno = 0;
	char *abs = cfg_abs_path(p);
	if (!abs)
		snprintf(err, errlen, "cannot make \"%s\" an absolute path: %s", p,
			 errno == ERANGE || errno == 0 ? "too long" : strerror(errno));
	return abs;
}

int config_db_name_check(const char *path, char *why, size_t len)
{
	const char *base = strrchr(path, '/');
	size_t n = strlen(base ? base + 1 : path);
	if (n + CONFIG_DB_NAME_ROOM <= NAME_MAX)
		return 0;
	snprintf(why, len, "the file name of %s is %zu bytes, too long: the files beside it "
		 "(its -journal, and a copy moved aside, \"….replaced-<time>.<n>\") add up to %zu "
		 "bytes to it, within the file system's limit of %d; at most %zu", path, n,
		 (size_t)CONFIG_DB_NAME_ROOM, NAME_MAX, (size_t)(NAME_MAX - CONFIG_DB_NAME_ROOM));
	return -1;
}

int config_db_path_check(const char *path, char *why, size_t len)
{
	struct stat st;
	if (config_db_name_check(path, why, len) < 0)
		return -1;
	if (lstat(path, &st) < 0 || !S_ISLNK(st.st_mode))
		return 0;
	char real[PATH_MAX];
	if (!realpath(path, real)) {
		/* dangling: SQLite would create the file at the link's target */
		ssize_t n = readlink(path, real, sizeof(real) - 1);
		real[n > 0 ? n : 0] = '\0';
	}
	snprintf(why, len, "%s is a symlink to %s: SQLite keeps the database's -wal and -shm "
		 "beside %s, where litevisor would not look; give %s as the path", path, real,
		 real, real);
	return -1;
}

int walk_string_list(struct walk *w, const struct cfg_node *v, const char *path, const char *what,
		     char ***slot)
{
	char ip[340];
	if (cfg_node_is_null(v))
		return 0;
	if (v->kind != CN_SEQ) {
		cfg_error(w->e, v, path, "expected %s, got %s", what, walk_kind_name(v));
		return -1;
	}
	char **l = calloc(v->nitems + 1, sizeof(*l));
	if (!l) {
		cfg_error(w->e, v, path, "out of memory");
		return -1;
	}
	if (*slot) /* set before through a merge key */
		for (char **o = *slot; *o; o++)
			free(*o);
	free(*slot);
	*slot = l;
	for (size_t i = 0; i < v->nitems; i++) {
		snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
		if (walk_required(w, v->items[i], ip, &l[i]) < 0)
			return -1;
	}
	return 0;
}
