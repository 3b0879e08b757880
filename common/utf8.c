/* utf8.c — UTF-8 well-formedness (see utf8.h). */
#include "common/utf8.h"

#include <string.h>

#include "common/banned.h"

size_t utf8_char_len(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	if (n == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */
	if (p[0] >= 0xC2 && p[0] <= 0xDF) {
		len = 2;
	} else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
		len = 3;
		if (p[0] == 0xE0)
			lo = 0xA0; /* overlong */
		else if (p[0] == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
		len = 4;
		if (p[0] == 0xF0)
			lo = 0x90; /* overlong */
		else if (p[0] == 0xF4)
			hi = 0x8F; /* past U+10FFFF */
	} else {
		return 0; /* a continuation byte, an overlong lead (C0, C1) or F5-FF */
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

bool utf8_valid(const char *s)
{
	size_t n = strlen(s);
	for (size_t i = 0, k; i < n; i += k)
		if (!(k = utf8_char_len(s + i, n - i)))
			return false;
	return true;
}

char *utf8_repair(const char *s, char *out, size_t outlen)
{
	size_t n = strlen(s), o = 0;
	for (size_t i = 0; i < n;) {
		size_t k = utf8_char_len(s + i, n - i);
		const char *c = k ? s + i : UTF8_REPLACEMENT;
		size_t clen = k ? k : sizeof(UTF8_REPLACEMENT) - 1;
		if (o + clen >= outlen)
			break;
		memcpy(out + o, c, clen);
		o += clen;
		i += k ? k : 1;
	}
	out[o] = '\0';
	return out;
}
