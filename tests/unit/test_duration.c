/* Unit tests for common/duration.c and common/clock.c's RFC 3339 parser. */
#include "tests/unit/unit.h"

#include "common/clock.h"
#include "common/duration.h"

static int64_t dur(const char *s)
{
	int64_t ms = -42;
	char why[128];
	if (duration_parse(s, &ms, why, sizeof(why)) < 0)
		FAIL("duration \"%s\" rejected: %s", s, why);
	return ms;
}

static void dur_bad(const char *s, const char *want)
{
	int64_t ms;
	char why[128] = "";
	if (duration_parse(s, &ms, why, sizeof(why)) == 0)
		FAIL("duration \"%s\" accepted", s);
	if (!strstr(why, want))
		FAIL("duration \"%s\": error \"%s\" lacks \"%s\"", s, why, want);
}

TEST(go_durations)
{
	CHECK_INT(dur("500ms"), 500);
	CHECK_INT(dur("5s"), 5000);
	CHECK_INT(dur("1m"), 60000);
	CHECK_INT(dur("1m30s"), 90000);
	CHECK_INT(dur("1.5h"), 5400000);
	CHECK_INT(dur("168h"), 7LL * 86400000);
	CHECK_INT(dur("7d"), 7LL * 86400000);
	CHECK_INT(dur("0"), 0);
	CHECK_INT(dur("0s"), 0);
	CHECK_INT(dur("2000us"), 2);
	CHECK_INT(dur("1h0m0s"), 3600000);
}

TEST(bad_durations)
{
	dur_bad("", "empty");
	dur_bad("5", "unit");
	dur_bad("5x", "unit");
	dur_bad("-5s", "negative");
	dur_bad("s", "expected a number");
	dur_bad("10ns", "resolution");
	dur_bad("1s5", "unit");
}

TEST(format_round_trip)
{
	char buf[32];
	CHECK_STR(duration_format(0, buf, sizeof(buf)), "0s");
	CHECK_STR(duration_format(500, buf, sizeof(buf)), "500ms");
	CHECK_STR(duration_format(90000, buf, sizeof(buf)), "1m30s");
	CHECK_STR(duration_format(1500, buf, sizeof(buf)), "1.5s");
	CHECK_STR(duration_format(1050, buf, sizeof(buf)), "1.05s");
	CHECK_STR(duration_format(61005, buf, sizeof(buf)), "1m1.005s");
	CHECK_STR(duration_format(7LL * 86400000, buf, sizeof(buf)), "168h0m0s");
	CHECK_INT(dur(duration_format(5400500, buf, sizeof(buf))), 5400500);
}

TEST(sizes)
{
	int64_t b;
	char why[128];
	CHECK_INT(size_parse("64MiB", &b, why, sizeof(why)), 0);
	CHECK_INT(b, 64LL << 20);
	CHECK_INT(size_parse("1GB", &b, why, sizeof(why)), 0);
	CHECK_INT(b, 1000000000LL);
	CHECK_INT(size_parse("4096", &b, why, sizeof(why)), 0);
	CHECK_INT(b, 4096);
	CHECK_INT(size_parse("1.5K", &b, why, sizeof(why)), 0);
	CHECK_INT(b, 1536);
	CHECK_INT(size_parse("12parsecs", &b, why, sizeof(why)), -1);
	CHECK(strstr(why, "unknown unit"));
}

TEST(rfc3339)
{
	int64_t ns;
	char buf[40];
	CHECK_INT(clock_parse_rfc3339("2026-11-22T06:27:38Z", &ns), 0);
	CHECK_INT(ns, 1795328858LL * 1000000000LL);
	CHECK_STR(clock_rfc3339(ns + 123000000, buf, sizeof(buf)), "2026-11-22T06:27:38.123Z");
	CHECK_INT(clock_parse_rfc3339("2026-11-22T07:27:38.5+01:00", &ns), 0);
	CHECK_INT(ns, 1795328858LL * 1000000000LL + 500000000LL);
	CHECK_INT(clock_parse_rfc3339("2026-11-22 06:27:38", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("yesterday", &ns), -1);
	/* second 60 named the next minute's first (QA83): no leap second in Unix time */
	CHECK_INT(clock_parse_rfc3339("2026-12-06T08:00:60Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-12-31T23:59:60Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-12-06T08:00:59Z", &ns), 0);
}

/* what a listing prints parses back to the very time (QA17: milliseconds cut it short) */
TEST(rfc3339_exact_round_trip)
{
	int64_t base = 1795328858LL * 1000000000LL, back;
	char buf[40];
	CHECK_STR(clock_rfc3339_exact(base, buf, sizeof(buf)), "2026-11-22T06:27:38Z");
	CHECK_STR(clock_rfc3339_exact(base + 500000000, buf, sizeof(buf)), "2026-11-22T06:27:38.500Z");
	CHECK_STR(clock_rfc3339_exact(base + 512345000, buf, sizeof(buf)),
		  "2026-11-22T06:27:38.512345Z");
	static const int64_t frac[] = { 0, 1, 999, 1000, 512345678, 999999999 };
	for (size_t i = 0; i < sizeof(frac) / sizeof(frac[0]); i++) {
		CHECK_INT(clock_parse_rfc3339(clock_rfc3339_exact(base + frac[i], buf, sizeof(buf)),
					      &back), 0);
		CHECK_INT(back, base + frac[i]);
	}
	CHECK_INT(clock_parse_rfc3339(clock_rfc3339_exact(-1, buf, sizeof(buf)), &back), 0);
	CHECK_INT(back, -1);
}

/* dates that do not exist are errors, never normalised into the next month */
TEST(rfc3339_calendar)
{
	int64_t ns;
	CHECK_INT(clock_parse_rfc3339("2024-02-29T00:00:00Z", &ns), 0);
	CHECK_INT(clock_parse_rfc3339("2000-02-29T00:00:00Z", &ns), 0); /* every 400 years */
	CHECK_INT(clock_parse_rfc3339("2025-02-29T00:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("1900-02-29T00:00:00Z", &ns), -1); /* not every 100 */
	CHECK_INT(clock_parse_rfc3339("2026-02-30T00:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-04-31T00:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-12-31T23:59:59Z", &ns), 0);
	CHECK_INT(clock_parse_rfc3339("2026-13-01T00:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-00-01T00:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-01-00T00:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-01-01T24:00:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-01-01T00:60:00Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-01-01T00:00:00+24:00", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-01-01T00:00:00.Z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-01-01T00:00:00Zjunk", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-1-01T00:00:00Z", &ns), -1);
	/* lower case, and offsets west of UTC */
	CHECK_INT(clock_parse_rfc3339("2026-11-22t01:27:38-05:00z", &ns), -1);
	CHECK_INT(clock_parse_rfc3339("2026-11-22t01:27:38-05:00", &ns), 0);
	CHECK_INT(ns, 1795328858LL * 1000000000LL);
	CHECK_INT(clock_parse_rfc3339("2026-11-22t06:27:38z", &ns), 0);
	CHECK_INT(ns, 1795328858LL * 1000000000LL);
}

/* the whole int64-nanosecond range, and nothing beyond it (no wrap into the past) */
TEST(rfc3339_range)
{
	int64_t ns;
	CHECK_INT(clock_parse_rfc3339(CLOCK_NS_MAX_TEXT, &ns), 0);
	CHECK(ns == INT64_MAX);
	CHECK_INT(clock_parse_rfc3339("2262-04-11T23:47:16.854775808Z", &ns), -2);
	CHECK_INT(clock_parse_rfc3339("2262-04-12T00:00:00Z", &ns), -2);
	CHECK_INT(clock_parse_rfc3339("9999-12-31T23:59:59Z", &ns), -2);
	CHECK_INT(clock_parse_rfc3339(CLOCK_NS_MIN_TEXT, &ns), 0);
	CHECK(ns == INT64_MIN);
	CHECK_INT(clock_parse_rfc3339("1677-09-21T00:12:43.145224191Z", &ns), -2);
	CHECK_INT(clock_parse_rfc3339("0001-01-01T00:00:00Z", &ns), -2);
	/* at and before the epoch are times like any other */
	CHECK_INT(clock_parse_rfc3339("1970-01-01T00:00:00Z", &ns), 0);
	CHECK_INT(ns, 0);
	CHECK_INT(clock_parse_rfc3339("1969-12-31T23:59:59.5Z", &ns), 0);
	CHECK_INT(ns, -500000000LL);
	CHECK_INT(clock_parse_rfc3339("1970-01-01T01:00:00+01:00", &ns), 0);
	CHECK_INT(ns, 0);
}

UNIT_MAIN(T(go_durations), T(bad_durations), T(format_round_trip), T(sizes), T(rfc3339),
	  T(rfc3339_exact_round_trip),
	  T(rfc3339_calendar), T(rfc3339_range))
