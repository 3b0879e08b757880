/* words.c — shell-words splitting without a shell (see words.h). */
#include "common/words.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int words_split(const char *s, char ***argv, char *err, size_t errlen)
{
	size_t n = strlen(s);
	/* No word is longer than the input; the words never exceed n/2+1. */
	char *word = malloc(n + 1);
	char **out = calloc(n / 2 + 2, sizeof(*out));
	int count = 0;
	*argv = NULL;
	if (!word || !out) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	const char *p = s;
	for (;;) {
		while (is_blank(*p))
			p++;
		if (!*p)
			break;
		size_t len = 0;
		while (*p && !is_blank(*p)) {
			if (*p == '\'') {
				const char *q = strchr(p + 1, '\'');
				if (!q) {
					snprintf(err, errlen, "unterminated single quote");
					goto fail;
				}
				memcpy(word + len, p + 1, (size_t)(q - p - 1));
				len += (size_t)(q - p - 1);
				p = q + 1;
			} else if (*p == '"') {
				p++;
				while (*p && *p != '"') {
					if (*p == '\\' && p[1] && strchr("\"\\$`\n", p[1])) {
						if (p[1] != '\n')
							word[len++] = p[1];
						p += 2;
					} else {
						word[len++] = *p++;
					}
				}
				if (*p != '"') {
					snprintf(err, errlen, "unterminated double quote");
					goto fail;
				}
				p++;
			} else if (*p == '\\') {
				if (!p[1]) {
					snprintf(err, errlen, "trailing backslash");
					goto fail;
				}
				if (p[1] != '\n')
					word[len++] = p[1];
				p += 2;
			} else {
				word[len++] = *p++;
			}
		}
		out[count] = malloc(len + 1);
		if (!out[count]) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		memcpy(out[count], word, len);
		out[count][len] = '\0';
		count++;
	}
	free(word);
	*argv = out;
	return count;
fail:
	free(word);
	words_free(out);
	return -1;
}

static bool is_bare(const char *w)
{
	if (!*w)
		return false;
	for (; *w; w++)
		if (!((*w >= 'a' && *w <= 'z') || (*w >= 'A' && *w <= 'Z') || (*w >= '0' && *w <= '9') ||
		      strchr("_./:=@%+,-", *w)))
			return false;
	return true;
}

char *words_quote(char *const *argv)
{
	size_t len = 1;
	for (char *const *a = argv; *a; a++)
		len += strlen(*a) * 4 + 3; /* each ' becomes '\'' (4 bytes), plus quotes and a space */
	char *out = malloc(len), *w = out;
	if (!out)
		return NULL;
	for (char *const *a = argv; *a; a++) {
		if (a != argv)
			*w++ = ' ';
		if (is_bare(*a)) {
			size_t n = strlen(*a);
			memcpy(w, *a, n);
			w += n;
			continue;
		}
		*w++ = '\'';
		for (const char *c = *a; *c; c++) {
			if (*c == '\'') {
				memcpy(w, "'\\''", 4);
				w += 4;
			} else {
				*w++ = *c;
			}
		}
		*w++ = '\'';
	}
	*w = '\0';
	return out;
}

void words_free(char **argv)
{
	if (!argv)
		return;
	for (char **a = argv; *a; a++)
		free(*a);
	free(argv);
}
