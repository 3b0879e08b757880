/*
 * config_yaml.c — YAML text → a tree of cfg_node, with libyaml's event API.
 *
 * Only what a config needs: maps, sequences, scalars, anchors and aliases.
 * Tags are ignored (values are typed by the schema). A second document in
 * the stream is an error rather than silently ignored. Every event is
 * deleted exactly once, and a parser error ends the loop, so a bad file
 * can neither leak nor spin.
 */
#include "common/config_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "common/banned.h"

struct anchor {
	char *name;
	struct cfg_node *node;
};

struct builder {
	struct cfg_doc *doc;
	struct cfg_node *stack[CFG_MAX_DEPTH];
	int depth;
	struct anchor *anchors;
	size_t nanchors, capanchors;
	int docs;
	yaml_mark_t extra; /* where the second document starts */
};

static struct cfg_node *node_new(struct cfg_doc *doc, enum cfg_node_kind kind, const yaml_mark_t *m)
{
	struct cfg_node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->kind = kind;
	n->line = (int)m->line + 1;
	n->column = (int)m->column + 1;
	n->next_alloc = doc->arena;
	doc->arena = n;
	return n;
}

static int node_push_item(struct cfg_node *parent, struct cfg_node *child)
{
	if (parent->nitems == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 8;
		struct cfg_node **items = realloc(parent->items, cap * sizeof(*items));
		if (!items)
			return -1;
		parent->items = items;
		parent->cap = cap;
	}
	parent->items[parent->nitems++] = child;
	return 0;
}

static int anchor_add(struct builder *b, const char *name, struct cfg_node *n)
{
	if (b->nanchors == b->capanchors) {
		size_t cap = b->capanchors ? b->capanchors * 2 : 8;
		struct anchor *a = realloc(b->anchors, cap * sizeof(*a));
		if (!a)
			return -1;
		b->anchors = a;
		b->capanchors = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return -1;
	/* A redefined anchor shadows the earlier one, as YAML says. */
	b->anchors[b->nanchors].name = copy;
	b->anchors[b->nanchors].node = n;
	b->nanchors++;
	return 0;
}

static struct cfg_node *anchor_find(const struct builder *b, const char *name)
{
	for (size_t i = b->nanchors; i-- > 0;)
		if (strcmp(b->anchors[i].name, name) == 0)
			return b->anchors[i].node;
	return NULL;
}

/* Attach n to the current parent (or make it the root). */
static int attach(struct builder *b, struct cfg_node *n)
{
	if (b->depth == 0) {
		b->doc->root = n;
		return 0;
	}
	return node_push_item(b->stack[b->depth - 1], n);
}

static void err_at(struct cfg_err *e, const yaml_mark_t *m, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void err_at(struct cfg_err *e, const yaml_mark_t *m, const char *fmt, ...)
{
	int n = snprintf(e->buf, e->len, "%s:%d:%d: ", e->name, (int)m->line + 1, (int)m->column + 1);
	if (n < 0 || (size_t)n >= e->len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->buf + n, e->len - (size_t)n, fmt, ap);
	va_end(ap);
}

/* Handle one event. Returns 1 at stream end, 0 to go on, -1 on error. */
static int on_event(struct builder *b, const yaml_event_t *ev, struct cfg_err *e)
{
	struct cfg_node *n = NULL;
	const char *anchor = NULL;

	/*
	 * Litestream (yaml.v2 Unmarshal) reads the first document only. An empty
	 * one after it (a trailing "---") changes nothing; one with content would
	 * be ignored there, so it is refused here.
	 */
	if (b->docs > 1 && (ev->type == YAML_SCALAR_EVENT || ev->type == YAML_ALIAS_EVENT ||
			    ev->type == YAML_SEQUENCE_START_EVENT || ev->type == YAML_MAPPING_START_EVENT)) {
		const char *v = (const char *)ev->data.scalar.value;
		if (ev->type == YAML_SCALAR_EVENT && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
		    !ev->data.scalar.anchor && (!*v || !strcmp(v, "~") || !strcmp(v, "null") ||
						!strcmp(v, "Null") || !strcmp(v, "NULL")))
			return 0;
		err_at(e, &b->extra, "a second YAML document (\"---\") is not allowed in a config file "
		       "(Litestream v0.3.13 would ignore it: it reads the first only)");
		return -1;
	}
	switch (ev->type) {
	case YAML_STREAM_END_EVENT:
		return 1;
	case YAML_DOCUMENT_START_EVENT:
		if (++b->docs == 2)
			b->extra = ev->start_mark;
		return 0;
	case YAML_STREAM_START_EVENT:
	case YAML_DOCUMENT_END_EVENT:
	case YAML_NO_EVENT:
		return 0;
	case YAML_ALIAS_EVENT: {
		const char *name = (const char *)ev->data.alias.anchor;
		n = anchor_find(b, name);
		if (!n) {
			err_at(e, &ev->start_mark, "unknown alias \"*%s\"", name);
			return -1;
		}
		for (int i = 0; i < b->depth; i++) {
			if (b->stack[i] == n) {
				err_at(e, &ev->start_mark, "alias \"*%s\" refers to itself", name);
				return -1;
			}
		}
		n->aliased = true;
		return attach(b, n) ? (err_at(e, &ev->start_mark, "out of memory"), -1) : 0;
	}
	case YAML_SCALAR_EVENT:
		n = node_new(b->doc, CN_SCALAR, &ev->start_mark);
		if (!n)
			break;
		n->value = malloc(ev->data.scalar.length + 1);
		if (!n->value)
			break;
		memcpy(n->value, ev->data.scalar.value, ev->data.scalar.length);
		n->value[ev->data.scalar.length] = '\0';
		if (strlen(n->value) != ev->data.scalar.length) {
			err_at(e, &ev->start_mark, "a NUL character is not allowed in a value");
			return -1;
		}
		n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		anchor = (const char *)ev->data.scalar.anchor;
		if (attach(b, n))
			break;
		if (anchor && anchor_add(b, anchor, n))
			break;
		return 0;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT:
		if (b->depth >= CFG_MAX_DEPTH) {
			err_at(e, &ev->start_mark, "nested deeper than %d levels", CFG_MAX_DEPTH);
			return -1;
		}
		n = node_new(b->doc, ev->type == YAML_MAPPING_START_EVENT ? CN_MAP : CN_SEQ,
			     &ev->start_mark);
		if (!n)
			break;
		anchor = ev->type == YAML_MAPPING_START_EVENT
				 ? (const char *)ev->data.mapping_start.anchor
				 : (const char *)ev->data.sequence_start.anchor;
		if (attach(b, n))
			break;
		if (anchor && anchor_add(b, anchor, n))
			break;
		b->stack[b->depth++] = n;
		return 0;
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		if (b->depth > 0)
			b->depth--;
		return 0;
	}
	err_at(e, &ev->start_mark, "out of memory");
	return -1;
}

/* Does the line holding byte at of text contain "${"? */
static bool line_has_brace_var(const char *text, size_t len, size_t at)
{
	if (at > len)
		return false;
	size_t a = at, z = at;
	while (a > 0 && text[a - 1] != '\n')
		a--;
	while (z < len && text[z] != '\n')
		z++;
	for (size_t i = a; i + 1 < z; i++)
		if (text[i] == '$' && text[i + 1] == '{')
			return true;
	return false;
}

/*
 * Litestream expands variables over the whole text before YAML reads it;
 * here each value is expanded after (config.h), so in a flow collection
 * ("[...]", "{...}") the braces of an unquoted ${VAR} are YAML's own.
 */
static const char *flow_brace_hint(const yaml_parser_t *p, const char *text, size_t len)
{
	if (!p->context || !strstr(p->context, "flow") ||
	    (!line_has_brace_var(text, len, p->problem_mark.index) &&
	     !line_has_brace_var(text, len, p->context_mark.index)))
		return "";
	return " (inside [ ] or { } write a variable as \"${VAR}\" or $VAR: variables are "
	       "expanded after the YAML is read, not before as in Litestream)";
}

int cfg_yaml_parse(const char *text, size_t len, struct cfg_doc *doc, struct cfg_err *e)
{
	yaml_parser_t parser;
	struct builder b = { .doc = doc };
	int rc = -1;

	if (!yaml_parser_initialize(&parser)) {
		snprintf(e->buf, e->len, "%s: cannot initialise the YAML parser", e->name);
		return -1;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	for (;;) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&parser, &ev)) {
			const yaml_mark_t *m = parser.problem_mark.line || parser.problem_mark.column
						       ? &parser.problem_mark
						       : &parser.context_mark;
			/* The commonest cause by far deserves its own words. */
			bool tab = m->index < len && text[m->index] == '\t';
			if (parser.context)
				err_at(e, m, "invalid YAML: %s %s%s%s",
				       parser.problem ? parser.problem : "error", parser.context,
				       tab ? " (YAML does not allow tabs for indentation)" : "",
				       flow_brace_hint(&parser, text, len));
			else
				err_at(e, m, "invalid YAML: %s%s", parser.problem ? parser.problem : "error",
				       tab ? " (YAML does not allow tabs for indentation)" : "");
			goto out;
		}
		int r = on_event(&b, &ev, e);
		if (ev.type == YAML_SCALAR_EVENT && ev.data.scalar.value)
			explicit_bzero(ev.data.scalar.value, ev.data.scalar.length);
		yaml_event_delete(&ev);
		if (r < 0)
			goto out;
		if (r > 0)
			break;
	}
	rc = 0;
out:
	for (size_t i = 0; i < b.nanchors; i++)
		free(b.anchors[i].name);
	free(b.anchors);
	/* libyaml's copies of the text: secrets (age identities, S3 keys) are wiped, not just freed */
	if (parser.buffer.start)
		explicit_bzero(parser.buffer.start, (size_t)(parser.buffer.end - parser.buffer.start));
	if (parser.raw_buffer.start)
		explicit_bzero(parser.raw_buffer.start,
			       (size_t)(parser.raw_buffer.end - parser.raw_buffer.start));
	yaml_parser_delete(&parser);
	return rc;
}

void cfg_doc_free(struct cfg_doc *doc)
{
	struct cfg_node *n = doc->arena;
	while (n) {
		struct cfg_node *next = n->next_alloc;
		if (n->value) /* values may be secrets */
			explicit_bzero(n->value, strlen(n->value));
		free(n->value);
		free(n->items);
		free(n);
		n = next;
	}
	doc->arena = NULL;
	doc->root = NULL;
}

bool cfg_node_is_null(const struct cfg_node *n)
{
	if (!n)
		return true;
	if (n->kind != CN_SCALAR || !n->plain)
		return false;
	return n->value[0] == '\0' || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
	       strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0;
}

void cfg_error(struct cfg_err *e, const struct cfg_node *n, const char *path, const char *fmt, ...)
{
	int k;
	e->at = n;
	if (n && path && *path)
		k = snprintf(e->buf, e->len, "%s:%d:%d: %s: ", e->name, n->line, n->column, path);
	else if (n)
		k = snprintf(e->buf, e->len, "%s:%d:%d: ", e->name, n->line, n->column);
	else if (path && *path)
		k = snprintf(e->buf, e->len, "%s: %s: ", e->name, path);
	else
		k = snprintf(e->buf, e->len, "%s: ", e->name);
	if (k < 0 || (size_t)k >= e->len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->buf + k, e->len - (size_t)k, fmt, ap);
	va_end(ap);
}

int cfg_edit_distance(const char *a, const char *b, int cap)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 64 || lb > 64)
		return cap + 1;
	int prev[65], cur[65];
	for (size_t j = 0; j <= lb; j++)
		prev[j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		cur[0] = (int)i;
		int rowmin = cur[0];
		for (size_t j = 1; j <= lb; j++) {
			int cost = a[i - 1] == b[j - 1] ? 0 : 1;
			int v = prev[j - 1] + cost;
			if (prev[j] + 1 < v)
				v = prev[j] + 1;
			if (cur[j - 1] + 1 < v)
				v = cur[j - 1] + 1;
			cur[j] = v;
			if (v < rowmin)
				rowmin = v;
		}
		if (rowmin > cap)
			return cap + 1;
		memcpy(prev, cur, (lb + 1) * sizeof(int));
	}
	return prev[lb] > cap ? cap + 1 : prev[lb];
}
