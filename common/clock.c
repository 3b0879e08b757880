/* clock.c — monotonic and wall clocks, RFC 3339 formatting and parsing. */
#include "common/clock.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/banned.h"

static int64_t ts_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

int64_t clock_mono_ns(void) { return ts_ns(CLOCK_MONOTONIC); }
int64_t clock_mono_ms(void) { return ts_ns(CLOCK_MONOTONIC) / NS_PER_MS; }
int64_t clock_wall_ns(void) { return ts_ns(CLOCK_REALTIME); }

char *clock_rfc3339_exact(int64_t wall_ns, char *buf, unsigned long len)
{
	time_t secs = (time_t)(wall_ns / NS_PER_SEC);
	int64_t ns = wall_ns % NS_PER_SEC;
	struct tm tm;
	char frac[16] = "";

	if (ns < 0) {
		ns += NS_PER_SEC;
		secs -= 1;
	}
	if (ns % 1000000 == 0 && ns)
		snprintf(frac, sizeof(frac), ".%03d", (int)(ns / 1000000));
	else if (ns % 1000 == 0 && ns)
		snprintf(frac, sizeof(frac), ".%06d", (int)(ns / 1000));
	else if (ns)
		snprintf(frac, sizeof(frac), ".%09d", (int)ns);
	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
	return buf;
}

char *clock_rfc3339(int64_t wall_ns, char *buf, unsigned long len)
{
	time_t secs = (time_t)(wall_ns / NS_PER_SEC);
	int ms = (int)((wall_ns % NS_PER_SEC) / NS_PER_MS);
	struct tm tm;

	if (ms < 0) {
		ms += 1000;
		secs -= 1;
	}
	gmtime_r(&secs, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	return buf;
}

/* Read exactly n digits at *p; returns -1 if any is not a digit. */
static int digits(const char **p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)**p))
			return -1;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	return v;
}

static bool leap_year(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

int clock_parse_rfc3339(const char *s, int64_t *wall_ns)
{
	const char *p = s;
	struct tm tm;
	int64_t frac = 0, secs, ns;
	long off = 0;

	memset(&tm, 0, sizeof(tm));
	if ((tm.tm_year = digits(&p, 4)) < 0 || *p++ != '-' ||
	    (tm.tm_mon = digits(&p, 2)) < 1 || *p++ != '-' ||
	    (tm.tm_mday = digits(&p, 2)) < 1 || (*p != 'T' && *p != 't') ||
	    (p++, (tm.tm_hour = digits(&p, 2)) < 0) || *p++ != ':' ||
	    (tm.tm_min = digits(&p, 2)) < 0 || *p++ != ':' ||
	    (tm.tm_sec = digits(&p, 2)) < 0)
		return -1;
	/*
	 * timegm() would quietly turn 2025-02-29 into March 1st, and second 60
	 * into the next minute's 0 (Unix time has no leap second: Go's parser,
	 * Litestream's, refuses it too)
	 */
	if (tm.tm_mon > 12 || tm.tm_mday > days_in_month(tm.tm_year, tm.tm_mon) ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
		return -1;
	if (*p == '.') {
		int64_t scale = NS_PER_SEC;
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p)) {
			scale /= 10;
			frac += (*p - '0') * scale;
			p++;
		}
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1;
		int hh = digits(&p, 2), mm;
		if (hh < 0 || hh > 23 || *p++ != ':' || (mm = digits(&p, 2)) < 0 || mm > 59)
			return -1;
		off = sign * (hh * 3600L + mm * 60L);
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	errno = 0;
	time_t t = timegm(&tm);
	if (t == (time_t)-1 && errno)
		return -1;
	/* int64 nanoseconds end in 2262: a wrapped value would name a time long past */
	secs = (int64_t)t - off;
	if (secs < 0 && frac > 0) { /* so that the earliest time, in 1677, fits too */
		secs += 1;
		frac -= NS_PER_SEC;
	}
	if (__builtin_mul_overflow(secs, NS_PER_SEC, &ns) || __builtin_add_overflow(ns, frac, &ns))
		return -2;
	*wall_ns = ns;
	return 0;
}

void clock_sleep_ms(int64_t ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * NS_PER_MS };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}
