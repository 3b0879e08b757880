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
}

UNIT_MAIN(T(go_durations), T(bad_durations), T(format_round_trip), T(sizes), T(rfc3339))
