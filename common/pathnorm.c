/* pathnorm.c — lexical path cleaning (Go's path.Clean) and symlink resolution. */
#include "common/pathnorm.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

/*
 * Go's path.Clean, in place: every byte written stands for at least one
 * byte already read, so writing never overtakes reading.
 */
void pathnorm_clean(char *p)
{
	size_t n = strlen(p), r = 0, w = 0, dotdot = 0;
	bool rooted = n > 0 && p[0] == '/';

	if (n == 0)
		return;
	if (rooted)
		r = w = dotdot = 1;
	while (r < n) {
		if (p[r] == '/') {
			r++;
		} else if (p[r] == '.' && (r + 1 == n || p[r + 1] == '/')) {
			r++;
		} else if (p[r] == '.' && p[r + 1] == '.' && (r + 2 == n || p[r + 2] == '/')) {
			r += 2;
			if (w > dotdot) {
				/* Back up to the '/' before the last element (or to dotdot). */
				w--;
				while (w > dotdot && p[w] != '/')
					w--;
			} else if (!rooted) {
				/* A leading ".." of a relative path stays. */
				if (w > 0)
					p[w++] = '/';
				p[w++] = '.';
				p[w++] = '.';
				dotdot = w;
			}
		} else {
			if ((rooted && w != 1) || (!rooted && w != 0))
				p[w++] = '/';
			while (r < n && p[r] != '/')
				p[w++] = p[r++];
		}
	}
	if (w == 0)
		p[w++] = '.';
	p[w] = '\0';
}

int pathnorm_resolve(const char *abs, char *buf, size_t len)
{
	char head[PATH_MAX], real[PATH_MAX];
	size_t cut;

	if (len == 0)
		return -1;
	if (abs[0] != '/' || strlen(abs) >= sizeof(head)) {
		snprintf(buf, len, "%s", strlen(abs) < len ? abs : "");
		return -1;
	}
	snprintf(head, sizeof(head), "%s", abs);
	cut = strlen(head);
	/* Shorten head one element at a time until what is left exists. */
	for (;;) {
		if (realpath(head, real))
			break;
		char *slash = strrchr(head, '/');
		if (!slash || slash == head) {
			snprintf(real, sizeof(real), "/");
			cut = 0;
			break;
		}
		*slash = '\0';
		cut = (size_t)(slash - head);
	}
	const char *rest = abs + cut; /* "" or "/elem/…" */
	bool root = strcmp(real, "/") == 0;
	int n = snprintf(buf, len, "%s%s", root && *rest ? "" : real, rest);
	if (n < 0 || (size_t)n >= len) {
		snprintf(buf, len, "%s", strlen(abs) < len ? abs : "");
		return -1;
	}
	pathnorm_clean(buf);
	return 0;
}
