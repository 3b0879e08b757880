/*
 * clockshift.c — an LD_PRELOAD library that moves the wall clock, so tests
 * can check that a clock stepped while litevisor runs (NTP on a node that
 * booted with a wrong clock, a hand-set date) changes no pause or deadline.
 *
 *   CLOCKSHIFT_S    seconds added to CLOCK_REALTIME (and gettimeofday, time);
 *                   negative steps it back
 *   CLOCKSHIFT_ARM  optional file: the shift applies only while it exists,
 *                   so a test can step the clock in the middle of a run
 *
 * The monotonic clocks are left alone: they are what a step must not reach.
 * Only calls that go through the symbols are shifted (the kernel's own
 * CLOCK_REALTIME, as a futex with an absolute real-time timeout sees it, is
 * not), which is what makes a pause computed from the shifted clock wrong.
 * Test-only: never installed, never linked into litevisor.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The shift now, in seconds: 0 while not armed. */
static long shift(void)
{
	const char *s = getenv("CLOCKSHIFT_S"), *arm = getenv("CLOCKSHIFT_ARM");
	if (!s || (arm && access(arm, F_OK) < 0))
		return 0;
	return atol(s);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	static int (*real)(clockid_t, struct timespec *);
	if (!real)
		real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
	int rc = real(id, ts);
	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec += shift();
	return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	static int (*real)(struct timeval *restrict, void *restrict);
	if (!real)
		real = (int (*)(struct timeval *restrict, void *restrict))dlsym(RTLD_NEXT, "gettimeofday");
	int rc = real(tv, tz);
	if (rc == 0)
		tv->tv_sec += shift();
	return rc;
}

time_t time(time_t *out)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (out)
		*out = ts.tv_sec;
	return ts.tv_sec;
}
