/* duration.c — Go-style durations (plus days) and human-readable sizes. */
#include "common/duration.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/banned.h"

static const struct unit {
	const char *name;
	double ns;
} duration_units[] = {
	/* longest names first so "ms" is not read as "m" */
	{ "ns", 1 }, { "us", 1e3 }, { "\xc2\xb5s", 1e3 }, { "\xce\xbcs", 1e3 }, { "ms", 1e6 },
	{ "s", 1e9 }, { "m", 60e9 }, { "h", 3600e9 }, { "d", 86400e9 },
};

int duration_parse(const char *s, int64_t *ms, char *why, size_t whylen)
{
	const char *p = s;
	double total_ns = 0;

	if (!s || !*s) {
		snprintf(why, whylen, "empty duration");
		return -1;
	}
	if (*s == '-') {
		snprintf(why, whylen, "invalid duration \"%s\": must not be negative", s);
		return -1;
	}
	if (*s == '+')
		p++;
	if (strcmp(p, "0") == 0) {
		*ms = 0;
		return 0;
	}
	/*
	 * Go's yaml reads a bare number into a time.Duration as nanoseconds: to
	 * Litestream v0.3.13 "sync-interval: 10" is a 10ns busy loop, surely not
	 * what was meant. Say so rather than guess a unit.
	 */
	if (*p && strspn(p, "0123456789") == strlen(p)) {
		snprintf(why, whylen,
			 "invalid duration \"%s\": a number needs a unit, e.g. \"%ss\" (Litestream v0.3.13 "
			 "reads a bare number as nanoseconds)", s, p);
		return -1;
	}
	while (*p) {
		const char *num = p;
		double v = 0, scale = 1;
		int have_digits = 0;
		while (isdigit((unsigned char)*p)) {
			v = v * 10 + (*p++ - '0');
			have_digits = 1;
		}
		if (*p == '.') {
			p++;
			while (isdigit((unsigned char)*p)) {
				scale /= 10;
				v += (*p++ - '0') * scale;
				have_digits = 1;
			}
		}
		if (!have_digits) {
			snprintf(why, whylen, "invalid duration \"%s\": expected a number at \"%s\"", s, num);
			return -1;
		}
		size_t best = 0;
		const struct unit *u = NULL;
		for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
			size_t n = strlen(duration_units[i].name);
			if (strncmp(p, duration_units[i].name, n) == 0 && n > best) {
				best = n;
				u = &duration_units[i];
			}
		}
		if (!u) {
			snprintf(why, whylen,
				 "invalid duration \"%s\": missing or unknown unit (use ms, s, m, h or d, e.g. \"5s\")",
				 s);
			return -1;
		}
		p += best;
		total_ns += v * u->ns;
	}
	if (total_ns > 9.2e18) {
		snprintf(why, whylen, "invalid duration \"%s\": too large", s);
		return -1;
	}
	if (total_ns > 0 && total_ns < 1e6) {
		/* Litestream would tick that often: a busy loop for an interval */
		snprintf(why, whylen,
			 "invalid duration \"%s\": below litevisor's 1ms resolution (Litestream v0.3.13 "
			 "would run that often, close to a busy loop); write \"1ms\" or more", s);
		return -1;
	}
	*ms = (int64_t)llround(total_ns / 1e6);
	return 0;
}

int size_parse(const char *s, int64_t *bytes, char *why, size_t whylen)
{
	static const struct { const char *name; double mult; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 1024.0 }, { "KiB", 1024.0 }, { "KB", 1e3 }, { "kB", 1e3 },
		{ "M", 1048576.0 }, { "MiB", 1048576.0 }, { "MB", 1e6 },
		{ "G", 1073741824.0 }, { "GiB", 1073741824.0 }, { "GB", 1e9 },
		{ "T", 1099511627776.0 }, { "TiB", 1099511627776.0 }, { "TB", 1e12 },
	};
	const char *p = s;
	double v = 0, scale = 1;
	int have = 0;

	if (!s || !*s) {
		snprintf(why, whylen, "empty size");
		return -1;
	}
	while (isdigit((unsigned char)*p)) {
		v = v * 10 + (*p++ - '0');
		have = 1;
	}
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p)) {
			scale /= 10;
			v += (*p++ - '0') * scale;
			have = 1;
		}
	}
	if (!have) {
		snprintf(why, whylen, "invalid size \"%s\": expected a number such as \"64MiB\"", s);
		return -1;
	}
	while (*p == ' ')
		p++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(p, units[i].name) == 0) {
			double b = v * units[i].mult;
			if (b > 9.2e18) {
				snprintf(why, whylen, "invalid size \"%s\": too large", s);
				return -1;
			}
			*bytes = (int64_t)llround(b);
			return 0;
		}
	}
	/* the hint lists the table, so it names every unit that is accepted */
	char hint[128] = "";
	size_t k = 0;
	for (size_t i = 1; i < sizeof(units) / sizeof(units[0]) && k < sizeof(hint); i++)
		k += (size_t)snprintf(hint + k, sizeof(hint) - k, "%s%s", i > 1 ? ", " : "", units[i].name);
	snprintf(why, whylen, "invalid size \"%s\": unknown unit \"%s\" (use %s)", s, p, hint);
	return -1;
}

char *duration_format(int64_t ms, char *buf, size_t len)
{
	if (ms == 0) {
		snprintf(buf, len, "0s");
	} else if (ms < 1000) {
		snprintf(buf, len, "%lldms", (long long)ms);
	} else {
		int64_t h = ms / 3600000, m = (ms / 60000) % 60, s = (ms / 1000) % 60, r = ms % 1000;
		char sec[32];
		if (r) {
			/* Go's form: 1.5s, 1.05s, 1.005s (no trailing zeros) */
			char frac[4];
			snprintf(frac, sizeof(frac), "%03lld", (long long)r);
			for (int i = 2; i > 0 && frac[i] == '0'; i--)
				frac[i] = '\0';
			snprintf(sec, sizeof(sec), "%lld.%ss", (long long)s, frac);
		} else
			snprintf(sec, sizeof(sec), "%llds", (long long)s);
		if (h)
			snprintf(buf, len, "%lldh%lldm%s", (long long)h, (long long)m, sec);
		else if (m)
			snprintf(buf, len, "%lldm%s", (long long)m, sec);
		else
			snprintf(buf, len, "%s", sec);
	}
	return buf;
}
