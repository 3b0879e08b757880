/* test_secret.c — credentials inline or from a file that is re-read when it changes. */
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/secret.h"
#include "tests/unit/unit.h"

static char dir[64];

static void tmpdir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/lvsecretXXXXXX");
	CHECK(mkdtemp(dir) != NULL);
}

static void done(const char *path)
{
	char tmp[256];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	unlink(path);
	rmdir(dir);
}

static void write_file(const char *path, const char *content)
{
	char tmp[256];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	CHECK(f != NULL);
	fputs(content, f);
	CHECK_INT(fclose(f), 0);
	CHECK_INT(rename(tmp, path), 0); /* how Nomad templates and kubelet replace a secret */
}

static void expect(const struct cfg_secret *s, const char *want)
{
	char out[256], err[256] = "";
	if (secret_get(s, out, sizeof(out), err, sizeof(err)) != 0)
		FAIL("secret_get: %s", err);
	CHECK_STR(out, want);
}

TEST(inline_and_unset)
{
	struct cfg_secret s = { .value = (char *)"AKIAINLINE" };
	CHECK(secret_is_set(&s));
	expect(&s, "AKIAINLINE");
	struct cfg_secret none = { 0 };
	CHECK(!secret_is_set(&none));
	expect(&none, "");
	char small[4], err[128];
	CHECK_INT(secret_get(&s, small, sizeof(small), err, sizeof(err)), -1);
	CHECK_STR(small, "");
	CHECK(strstr(err, "AKIA") == NULL);
}

TEST(file_newline_stripped)
{
	char path[128];
	tmpdir();
	snprintf(path, sizeof(path), "%s/key", dir);
	struct cfg_secret s = { .file = path };
	write_file(path, "s3cr3t\n");
	expect(&s, "s3cr3t");
	secret_cache_clear();
	write_file(path, "crlf\r\n");
	expect(&s, "crlf");
	secret_cache_clear();
	/* only the final newline goes: a value of two lines (a blank one after it) is refused,
	 * as it would end the header it is sent in (QA110 O5) */
	write_file(path, "two\n\n");
	char out[64], err[256];
	CHECK(secret_get(&s, out, sizeof(out), err, sizeof(err)) < 0);
	CHECK(strstr(err, "more than one line") != NULL);
	CHECK(strstr(err, "two") == NULL); /* never the content */
	done(path);
}

TEST(file_reread_after_rotation)
{
	char path[128];
	tmpdir();
	snprintf(path, sizeof(path), "%s/key", dir);
	struct cfg_secret s = { .file = path };
	write_file(path, "first\n");
	expect(&s, "first");
	expect(&s, "first");
	/* Replaced by rename: a new inode. */
	write_file(path, "second-longer\n");
	expect(&s, "second-longer");
	/* Rewritten in place with the same size: only the mtime tells. */
	FILE *f = fopen(path, "r+");
	CHECK(f != NULL);
	fputs("SECOND-LONGER\n", f);
	fclose(f);
	struct timespec ts[2] = { { .tv_sec = 1000000000, .tv_nsec = 0 }, { .tv_sec = 1000000000, .tv_nsec = 0 } };
	CHECK_INT(utimensat(AT_FDCWD, path, ts, 0), 0);
	expect(&s, "SECOND-LONGER");
	done(path);
}

TEST(cached_between_changes)
{
	char path[128];
	tmpdir();
	snprintf(path, sizeof(path), "%s/key", dir);
	struct cfg_secret s = { .file = path };
	write_file(path, "cached\n");
	expect(&s, "cached");
	/* Made unreadable but otherwise unchanged: the cached value still answers. */
	CHECK_INT(chmod(path, 0), 0);
	if (access(path, R_OK) != 0) /* as root permissions do not bite: nothing to show */
		expect(&s, "cached");
	done(path);
}

TEST(errors_name_the_file_not_the_content)
{
	char path[128], out[64], err[256];
	tmpdir();
	snprintf(path, sizeof(path), "%s/key", dir);
	struct cfg_secret s = { .file = path };
	CHECK_INT(secret_get(&s, out, sizeof(out), err, sizeof(err)), -1);
	char want[256];
	snprintf(want, sizeof(want), "secret file \"%s\": cannot read: No such file or directory", path);
	CHECK_STR(err, want);
	write_file(path, "\n");
	CHECK_INT(secret_get(&s, out, sizeof(out), err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "secret file \"%s\" is empty", path);
	CHECK_STR(err, want);
	write_file(path, "hunter2-but-far-too-long-for-the-buffer-we-give-it-here-really\n");
	CHECK_INT(secret_get(&s, out, 16, err, sizeof(err)), -1);
	CHECK_STR(out, "");
	CHECK(strstr(err, "hunter2") == NULL);
	CHECK(strstr(err, path) != NULL);
	/* Deleted after a good read: the error comes back, no stale value. */
	write_file(path, "ok\n");
	expect(&s, "ok");
	unlink(path);
	CHECK_INT(secret_get(&s, out, sizeof(out), err, sizeof(err)), -1);
	CHECK_STR(out, "");
	done(path);
}

/*
 * A FIFO with no writer would block open(2) for good, a device read forever:
 * both are refused at once, naming what the file is. alarm() turns a hang
 * into a failure.
 */
TEST(file_that_is_not_regular_is_refused_at_once)
{
	char path[128], out[64], err[256], want[256];
	tmpdir();
	snprintf(path, sizeof(path), "%s/key.fifo", dir);
	CHECK_INT(mkfifo(path, 0600), 0);
	alarm(10);
	struct cfg_secret s = { .file = path };
	CHECK_INT(secret_get(&s, out, sizeof(out), err, sizeof(err)), -1);
	snprintf(want, sizeof(want),
		 "secret file \"%s\": cannot read: not a regular file but a FIFO (named pipe)", path);
	CHECK_STR(err, want);
	struct cfg_secret dev = { .file = (char *)"/dev/zero" };
	CHECK_INT(secret_get(&dev, out, sizeof(out), err, sizeof(err)), -1);
	CHECK_STR(err, "secret file \"/dev/zero\": cannot read: not a regular file but a character device");
	alarm(0);
	done(path);
}

struct reader {
	const struct cfg_secret *s;
	int bad;
};

static void *read_loop(void *arg)
{
	struct reader *r = arg;
	char out[64], err[256];
	for (int i = 0; i < 2000; i++) {
		if (secret_get(r->s, out, sizeof(out), err, sizeof(err)) != 0 ||
		    (strcmp(out, "aaaa") != 0 && strcmp(out, "bbbbbbbb") != 0))
			r->bad++;
	}
	return NULL;
}

/* Readers on several threads always see one whole value while the file rotates. */
TEST(threads_see_whole_values)
{
	char path[128];
	tmpdir();
	snprintf(path, sizeof(path), "%s/key", dir);
	struct cfg_secret s = { .file = path };
	write_file(path, "aaaa\n");
	pthread_t t[4];
	struct reader r[4];
	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){ .s = &s };
		CHECK_INT(pthread_create(&t[i], NULL, read_loop, &r[i]), 0);
	}
	for (int i = 0; i < 200; i++)
		write_file(path, i % 2 ? "aaaa\n" : "bbbbbbbb\n");
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_INT(r[i].bad, 0);
	}
	secret_cache_clear();
	done(path);
}

UNIT_MAIN(T(inline_and_unset), T(file_newline_stripped), T(file_reread_after_rotation),
	  T(cached_between_changes), T(errors_name_the_file_not_the_content),
	  T(file_that_is_not_regular_is_refused_at_once),
	  T(threads_see_whole_values))
