/* s3_xml.c — a small, strict XML reader for S3 responses. */
#include "replication/s3_xml.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

#define XML_MAX_DEPTH 32
#define XML_MAX_PATH 1024
#define XML_MAX_TEXT (1024 * 1024)

struct parser {
	const char *p, *end;
	char path[XML_MAX_PATH];
	size_t pathlen;
	size_t stack[XML_MAX_DEPTH]; /* path length before each open element */
	int depth;
	struct s3_buf text;
	char *why;
	size_t whylen;
};

static int malformed(struct parser *x, const char *what)
{
	if (x->why)
		snprintf(x->why, x->whylen, "malformed XML: %s", what);
	return -1;
}

/* Position of needle at or after p, or NULL. */
static const char *find(const char *p, const char *end, const char *needle)
{
	size_t n = strlen(needle);
	for (; p + n <= end; p++)
		if (memcmp(p, needle, n) == 0)
			return p;
	return NULL;
}

/* Encodes code point cp as UTF-8 into the text. */
static int add_utf8(struct s3_buf *b, unsigned long cp)
{
	unsigned char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xC0 | (cp >> 6));
		u[1] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xE0 | (cp >> 12));
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xF0 | (cp >> 18));
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	return s3_buf_add(b, u, n);
}

/* Decode character data [p, end) into the current text. */
static int add_text(struct parser *x, const char *p, const char *end)
{
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if (x->depth == 0) {
			for (const char *q = p; q < stop; q++)
				if (*q != ' ' && *q != '\t' && *q != '\r' && *q != '\n')
					return malformed(x, "text outside the root element");
		} else if (s3_buf_add(&x->text, p, (size_t)(stop - p)) < 0) {
			return malformed(x, "text too long");
		}
		if (!amp)
			break;
		const char *semi = memchr(amp, ';', (size_t)(end - amp));
		if (!semi)
			return malformed(x, "unterminated entity");
		if (semi - amp > 12)
			return malformed(x, "entity name too long");
		size_t n = (size_t)(semi - amp - 1);
		const char *name = amp + 1;
		char c = 0;
		unsigned long cp = 0;
		if (n == 2 && !memcmp(name, "lt", 2))
			c = '<';
		else if (n == 2 && !memcmp(name, "gt", 2))
			c = '>';
		else if (n == 3 && !memcmp(name, "amp", 3))
			c = '&';
		else if (n == 4 && !memcmp(name, "quot", 4))
			c = '"';
		else if (n == 4 && !memcmp(name, "apos", 4))
			c = '\'';
		else if (n >= 2 && name[0] == '#') {
			char num[12], *e;
			bool hex = name[1] == 'x' || name[1] == 'X';
			size_t off = hex ? 2 : 1;
			if (n - off == 0 || n - off >= sizeof(num))
				return malformed(x, "bad character reference");
			memcpy(num, name + off, n - off);
			num[n - off] = '\0';
			cp = strtoul(num, &e, hex ? 16 : 10);
			if (*e || cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
				return malformed(x, "bad character reference");
		} else {
			return malformed(x, "unknown entity");
		}
		if (x->depth > 0) {
			int rc = c ? s3_buf_add(&x->text, &c, 1) : add_utf8(&x->text, cp);
			if (rc < 0)
				return malformed(x, "text too long");
		}
		p = semi + 1;
	}
	return 0;
}

static bool name_char(char c)
{
	return c && !strchr(" \t\r\n/>=\"'<", c);
}

/* Parse "<name ...>" or "<name .../>" at x->p (just after '<'). */
static int open_tag(struct parser *x, s3_xml_cb cb, void *ctx)
{
	const char *n0 = x->p, *n1 = x->p;
	while (n1 < x->end && name_char(*n1))
		n1++;
	if (n1 == n0)
		return malformed(x, "empty tag name");
	const char *colon = memchr(n0, ':', (size_t)(n1 - n0));
	const char *local = colon ? colon + 1 : n0;
	/* skip attributes, honouring quotes (a '>' may sit inside a value) */
	const char *q = n1;
	char quote = 0;
	for (; q < x->end; q++) {
		if (quote) {
			if (*q == quote)
				quote = 0;
		} else if (*q == '"' || *q == '\'') {
			quote = *q;
		} else if (*q == '>') {
			break;
		}
	}
	if (q >= x->end)
		return malformed(x, "unterminated tag");
	bool empty = q > n1 && q[-1] == '/';
	size_t llen = (size_t)(n1 - local);
	if (x->depth >= XML_MAX_DEPTH)
		return malformed(x, "nested too deep");
	if (x->pathlen + llen + 2 >= XML_MAX_PATH)
		return malformed(x, "path too long");
	x->stack[x->depth++] = x->pathlen;
	if (x->pathlen)
		x->path[x->pathlen++] = '/';
	memcpy(x->path + x->pathlen, local, llen);
	x->pathlen += llen;
	x->path[x->pathlen] = '\0';
	s3_buf_reset(&x->text);
	x->p = q + 1;
	int rc = cb(ctx, S3_XML_OPEN, x->path, "", 0);
	if (rc)
		return rc;
	if (empty) {
		rc = cb(ctx, S3_XML_CLOSE, x->path, "", 0);
		x->pathlen = x->stack[--x->depth];
		x->path[x->pathlen] = '\0';
	}
	return rc;
}

/* Parse "</name>" at x->p (just after "</"). */
static int close_tag(struct parser *x, s3_xml_cb cb, void *ctx)
{
	const char *gt = memchr(x->p, '>', (size_t)(x->end - x->p));
	if (!gt)
		return malformed(x, "unterminated closing tag");
	const char *n1 = gt;
	while (n1 > x->p && (n1[-1] == ' ' || n1[-1] == '\t' || n1[-1] == '\r' || n1[-1] == '\n'))
		n1--;
	const char *colon = memchr(x->p, ':', (size_t)(n1 - x->p));
	const char *local = colon ? colon + 1 : x->p;
	size_t llen = (size_t)(n1 - local);
	if (x->depth == 0)
		return malformed(x, "closing tag without an open one");
	size_t start = x->stack[x->depth - 1] + (x->depth > 1 ? 1 : 0);
	if (x->pathlen - start != llen || memcmp(x->path + start, local, llen) != 0)
		return malformed(x, "mismatched closing tag");
	int rc = cb(ctx, S3_XML_CLOSE, x->path, s3_buf_str(&x->text), x->text.len);
	s3_buf_reset(&x->text);
	x->pathlen = x->stack[--x->depth];
	x->path[x->pathlen] = '\0';
	x->p = gt + 1;
	return rc;
}

int s3_xml_parse(const char *xml, size_t len, s3_xml_cb cb, void *ctx, char *why, size_t whylen)
{
	struct parser x = { .p = xml, .end = xml + len, .text = S3_BUF_INIT(XML_MAX_TEXT),
			    .why = why, .whylen = whylen };
	bool seen_root = false;
	int rc = 0;

	if (len >= 3 && !memcmp(xml, "\xEF\xBB\xBF", 3)) /* UTF-8 byte order mark */
		x.p += 3;
	while (rc == 0 && x.p < x.end) {
		const char *lt = memchr(x.p, '<', (size_t)(x.end - x.p));
		if (!lt) {
			rc = add_text(&x, x.p, x.end);
			x.p = x.end;
			break;
		}
		if ((rc = add_text(&x, x.p, lt)) != 0)
			break;
		x.p = lt + 1;
		const char *skip_to = NULL;
		if (x.p < x.end && *x.p == '?') {
			skip_to = "?>";
		} else if (x.end - x.p >= 3 && !memcmp(x.p, "!--", 3)) {
			skip_to = "-->";
		} else if (x.end - x.p >= 8 && !memcmp(x.p, "![CDATA[", 8)) {
			const char *e = find(x.p + 8, x.end, "]]>");
			if (!e) {
				rc = malformed(&x, "unterminated CDATA");
				break;
			}
			if (x.depth == 0) {
				rc = malformed(&x, "CDATA outside the root element");
				break;
			}
			if (s3_buf_add(&x.text, x.p + 8, (size_t)(e - x.p - 8)) < 0) {
				rc = malformed(&x, "text too long");
				break;
			}
			x.p = e + 3;
			continue;
		} else if (x.p < x.end && *x.p == '!') {
			skip_to = ">";
		}
		if (skip_to) {
			const char *e = find(x.p, x.end, skip_to);
			if (!e) {
				rc = malformed(&x, "unterminated declaration or comment");
				break;
			}
			x.p = e + strlen(skip_to);
			continue;
		}
		if (x.p < x.end && *x.p == '/') {
			x.p++;
			rc = close_tag(&x, cb, ctx);
		} else {
			if (x.depth == 0 && seen_root) {
				rc = malformed(&x, "a second root element");
				break;
			}
			seen_root = true;
			rc = open_tag(&x, cb, ctx);
		}
	}
	if (rc == 0 && (x.depth != 0 || !seen_root))
		rc = malformed(&x, seen_root ? "unclosed element" : "no element");
	s3_buf_release(&x.text);
	return rc;
}

static int whole_cb(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	(void)ctx, (void)ev, (void)path, (void)text, (void)len;
	return 0;
}

/* The first element's name ("" when the text ends before one), in out. */
static void first_element(const char *xml, size_t len, char *out, size_t outlen)
{
	const char *p = xml, *end = xml + len;
	out[0] = '\0';
	while (p < end && (p = memchr(p, '<', (size_t)(end - p)))) {
		p++;
		if (p < end && (*p == '?' || *p == '!'))
			continue; /* a declaration, comment or doctype */
		size_t n = 0;
		while (p + n < end && n + 1 < outlen &&
		       (isalnum((unsigned char)p[n]) || strchr("_:.-", p[n])))
			n++;
		if (p + n == end)
			return; /* cut inside the name: nothing to tell by */
		if (n == 0)
			n = 1; /* "</", "< ": no document of ours; its one character names it */
		memcpy(out, p, n);
		out[n] = '\0';
		return;
	}
}

bool s3_xml_cut_short(const char *xml, size_t len, const char *root)
{
	/* what the parser says when the text ends inside a construct */
	static const char *const at_end[] = {
		"unclosed element", "no element", "unterminated tag", "unterminated closing tag",
		"unterminated CDATA", "unterminated declaration or comment", "unterminated entity",
	};
	char first[64], why[128] = "";
	if (!xml || !len)
		return true; /* nothing yet */
	if (s3_xml_parse(xml, len, whole_cb, NULL, why, sizeof(why)) == 0)
		return false;
	const char *what = strncmp(why, "malformed XML: ", 15) ? why : why + 15;
	bool ended = false;
	for (size_t i = 0; i < sizeof(at_end) / sizeof(at_end[0]) && !ended; i++)
		ended = !strcmp(what, at_end[i]);
	/* or it ends inside a tag that had barely begun ("<", "</", "<Na": other messages) */
	const char *gt = xml + len;
	while (gt > xml && gt[-1] != '>')
		gt--;
	ended = ended || memchr(gt, '<', (size_t)(xml + len - gt)) != NULL;
	if (!ended)
		return false; /* whole, and malformed: the caller's error */
	first_element(xml, len, first, sizeof(first));
	return !first[0] || !strcmp(first, root) || !strcmp(first, "Error");
}

struct error_ctx {
	char *code, *msg;
	size_t codelen, msglen;
	bool is_error;
};

static void copy_text(char *dst, size_t dstlen, const char *text, size_t len)
{
	if (!dstlen)
		return;
	if (len >= dstlen)
		len = dstlen - 1;
	memcpy(dst, text, len);
	dst[len] = '\0';
}

static int error_cb(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	struct error_ctx *e = ctx;
	if (ev == S3_XML_OPEN && !strcmp(path, "Error"))
		e->is_error = true;
	if (ev != S3_XML_CLOSE)
		return 0;
	if (!strcmp(path, "Error/Code"))
		copy_text(e->code, e->codelen, text, len);
	else if (!strcmp(path, "Error/Message"))
		copy_text(e->msg, e->msglen, text, len);
	return 0;
}

int s3_xml_error(const char *xml, size_t len, char *code, size_t codelen, char *msg, size_t msglen)
{
	struct error_ctx e = { code, msg, codelen, msglen, false };
	if (codelen)
		code[0] = '\0';
	if (msglen)
		msg[0] = '\0';
	if (!xml || !len || s3_xml_parse(xml, len, error_cb, &e, NULL, 0) != 0 || !e.is_error)
		return -1;
	return 0;
}

/* The first element's name: the root's. */
static int root_cb(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	const char **want = ctx;
	(void)text;
	(void)len;
	if (ev != S3_XML_OPEN)
		return 0;
	return strcmp(path, *want) == 0 ? 1 : 2;
}

bool s3_xml_root_is(const char *xml, size_t len, const char *root)
{
	return xml && len && s3_xml_parse(xml, len, root_cb, &root, NULL, 0) == 1;
}

int s3_xml_escape(struct s3_buf *b, const char *s)
{
	for (; *s; s++) {
		int rc;
		switch (*s) {
		case '&': rc = s3_buf_adds(b, "&amp;"); break;
		case '<': rc = s3_buf_adds(b, "&lt;"); break;
		case '>': rc = s3_buf_adds(b, "&gt;"); break;
		case '"': rc = s3_buf_adds(b, "&quot;"); break;
		case '\'': rc = s3_buf_adds(b, "&apos;"); break;
		case '\r': rc = s3_buf_adds(b, "&#13;"); break;
		case '\n': rc = s3_buf_adds(b, "&#10;"); break;
		case '\t': rc = s3_buf_adds(b, "&#9;"); break;
		default: rc = s3_buf_add(b, s, 1); break;
		}
		if (rc < 0)
			return -1;
	}
	return 0;
}
