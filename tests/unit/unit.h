/*
 * unit.h — a minimal unit-test harness (one binary per tests/unit/test_*.c).
 *
 *   TEST(parses_seconds) { CHECK_INT(f(1), 2); }
 *   UNIT_MAIN(T(parses_seconds), T(...))
 *
 * `./test_x --list` prints the test names (pytest collects them, see
 * tests/test_unit.py); `./test_x NAME…` runs those; no argument runs all and
 * prints "N passed, N failed". A failed CHECK prints file:line and ends that
 * test; tests run in forked children so one crash does not hide the others.
 */
#ifndef LITEVISOR_UNIT_H
#define LITEVISOR_UNIT_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct unit_test {
	const char *name;
	void (*fn)(void);
};

#define TEST(name) static void name(void)
#define T(name) { #name, name }

#define FAIL(...)                                                   \
	do {                                                        \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);     \
		fprintf(stderr, __VA_ARGS__);                       \
		fprintf(stderr, "\n");                              \
		exit(1);                                            \
	} while (0)
#define CHECK(c)                                                    \
	do {                                                        \
		if (!(c))                                           \
			FAIL("check failed: %s", #c);               \
	} while (0)
#define CHECK_INT(a, b)                                                          \
	do {                                                                     \
		long long a_ = (long long)(a), b_ = (long long)(b);              \
		if (a_ != b_)                                                    \
			FAIL("%s == %lld, expected %s == %lld", #a, a_, #b, b_); \
	} while (0)
#define CHECK_STR(a, b)                                                          \
	do {                                                                     \
		const char *a_ = (a), *b_ = (b);                                 \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                           \
			FAIL("%s is \"%s\", expected \"%s\"", #a, a_ ? a_ : "(null)", \
			     b_ ? b_ : "(null)");                                \
	} while (0)
#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

static inline int unit_run_one(const struct unit_test *t)
{
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		t->fn();
		fflush(NULL);
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
	printf("%s %s", ok ? "ok  " : "FAIL", t->name);
	if (WIFSIGNALED(st))
		printf(" (signal %d)", WTERMSIG(st));
	printf("\n");
	return ok;
}

static inline int unit_run(const struct unit_test *tests, size_t n, int argc, char **argv)
{
	size_t passed = 0, failed = 0;
	if (argc > 1 && strcmp(argv[1], "--list") == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%s\n", tests[i].name);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		int want = argc <= 1;
		for (int a = 1; a < argc; a++)
			if (strcmp(argv[a], tests[i].name) == 0)
				want = 1;
		if (!want)
			continue;
		if (unit_run_one(&tests[i]))
			passed++;
		else
			failed++;
	}
	printf("%zu passed, %zu failed\n", passed, failed);
	return failed ? 1 : (passed ? 0 : 2);
}

#define UNIT_MAIN(...)                                                             \
	int main(int argc, char **argv)                                            \
	{                                                                          \
		static const struct unit_test tests_[] = { __VA_ARGS__ };           \
		return unit_run(tests_, sizeof(tests_) / sizeof(tests_[0]), argc, argv); \
	}

#endif
