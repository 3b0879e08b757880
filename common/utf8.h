/*
 * utf8.h — well-formed UTF-8 for text that leaves the process in formats that
 * require it (health+json, Prometheus labels). File names are bytes, error
 * texts may quote a server's bytes, and a cut made by snprintf can end inside
 * a character: jansson refuses such a string (and the key with it) and
 * Prometheus rejects the whole scrape.
 */
#ifndef LITEVISOR_UTF8_H
#define LITEVISOR_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* The replacement for a byte that does not start a well-formed character: U+FFFD. */
#define UTF8_REPLACEMENT "\xEF\xBF\xBD"

/*
 * Length (1-4) of the well-formed character at s, of which n bytes are
 * available; 0 when the bytes there are not one (RFC 3629: no overlong forms,
 * no surrogates, nothing past U+10FFFF, no sequence cut short).
 */
size_t utf8_char_len(const char *s, size_t n);

/* True when all of the NUL-terminated s is well-formed. */
bool utf8_valid(const char *s);

/*
 * Copy NUL-terminated s into out (outlen > 0), every byte that does not
 * start a well-formed character replaced by U+FFFD, cut at a character
 * boundary where it does not fit. Returns out.
 */
char *utf8_repair(const char *s, char *out, size_t outlen);

#endif
