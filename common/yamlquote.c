/*
 * yamlquote.c — read a value that is itself one YAML quoted scalar
 * (common/yamlquote.h).
 */
#include "common/yamlquote.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/banned.h"

static int hex_value(const char *p, int digits, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < digits; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		*v = *v * 16 + (uint32_t)d;
	}
	return 0;
}

/* Write code point cp as UTF-8 at *w; -1 if it is none (a surrogate, past U+10FFFF, 0). */
static int put_utf8(char **w, uint32_t cp)
{
	unsigned char *o = (unsigned char *)*w;
	if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return -1;
	if (cp < 0x80) {
		*o++ = (unsigned char)cp;
	} else if (cp < 0x800) {
		*o++ = (unsigned char)(0xC0 | cp >> 6);
		*o++ = (unsigned char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*o++ = (unsigned char)(0xE0 | cp >> 12);
		*o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		*o++ = (unsigned char)(0x80 | (cp & 0x3F));
	} else {
		*o++ = (unsigned char)(0xF0 | cp >> 18);
		*o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
		*o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		*o++ = (unsigned char)(0x80 | (cp & 0x3F));
	}
	*w = (char *)o;
	return 0;
}

/* One escape after the backslash at *r (r points past it); written at *w, never longer. */
static int escape(const char **r, char **w, char *why, size_t whylen)
{
	static const char simple[] = "\\\\\"\"//a\ab\bt\tn\nv\vf\fr\re\x1b  ";
	char c = **r;
	if (c == '\0') {
		snprintf(why, whylen, "it ends in a backslash");
		return -1;
	}
	for (size_t i = 0; simple[i]; i += 2)
		if (simple[i] == c) {
			*(*w)++ = simple[i + 1];
			(*r)++;
			return 0;
		}
	int digits = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
	uint32_t cp;
	if (c == '0') {
		snprintf(why, whylen, "\\0 would put a NUL byte in it");
		return -1;
	}
	if (!digits) {
		snprintf(why, whylen, "\\%c is no escape YAML knows", c > ' ' && c < 127 ? c : '?');
		return -1;
	}
	if (strnlen(*r + 1, (size_t)digits) < (size_t)digits || hex_value(*r + 1, digits, &cp) < 0 ||
	    put_utf8(w, cp) < 0) {
		snprintf(why, whylen, "\\%c needs %d hex digits naming a character", c, digits);
		return -1;
	}
	*r += 1 + digits;
	return 0;
}

int yaml_unquote(char *s, char *why, size_t whylen)
{
	char q = s[0];
	const char *r = s + 1;
	char *w = s; /* the content is never longer than its quoted form */
	for (;;) {
		if (*r == '\0') {
			snprintf(why, whylen, "its %s quote is never closed", q == '"' ? "double" : "single");
			return -1;
		}
		if (*r == q) {
			if (q == '\'' && r[1] == '\'') { /* '' is one quote */
				*w++ = '\'';
				r += 2;
				continue;
			}
			r++;
			break;
		}
		if (q == '"' && *r == '\\') {
			r++;
			if (escape(&r, &w, why, whylen) < 0)
				return -1;
			continue;
		}
		*w++ = *r++;
	}
	if (*r != '\0') {
		snprintf(why, whylen, "text follows its closing quote");
		return -1;
	}
	*w = '\0';
	return 0;
}
