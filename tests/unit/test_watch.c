/*
 * test_watch.c — what ends the monitor's wait: the database's files, a
 * wake-up from another thread, or the timeout; other files in the directory
 * never do. A wake-up must be told apart from file events even when both
 * happened: the monitor gathers commits after file events, and a shutdown or
 * flush that waited for that (250 ms at sync-interval 1s) would be late.
 */
#include "tests/unit/unit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <stdbool.h>
#include <time.h>

#include "replication/watch.h"

static char dir[64];
static char db[96];

static void setup(struct watch *w)
{
	snprintf(dir, sizeof(dir), "/tmp/lv-watch-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	snprintf(db, sizeof(db), "%s/app.db", dir);
	CHECK_INT(watch_init(w, db), 0);
	CHECK_INT(watch_active(w), 1);
}

static void append(const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	CHECK(fd >= 0);
	CHECK_INT(write(fd, "x", 1), 1);
	close(fd);
}

static void teardown(struct watch *w)
{
	watch_release(w);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_INT(system(cmd), 0);
}

TEST(wal_write_is_a_file_event)
{
	struct watch w;
	setup(&w);
	append("app.db-wal");
	CHECK_INT(watch_wait(&w, 2000), WATCH_FILES);
	CHECK_INT(watch_wait(&w, 20), WATCH_TIMEOUT); /* drained */
	teardown(&w);
}

TEST(other_files_do_not_wake)
{
	struct watch w;
	setup(&w);
	append("app.log");
	append("app.db-shm");
	append("other.db-wal");
	CHECK_INT(watch_wait(&w, 50), WATCH_TIMEOUT);
	teardown(&w);
}

TEST(wake_is_reported_as_wake)
{
	struct watch w;
	setup(&w);
	watch_wake(&w);
	CHECK_INT(watch_wait(&w, 2000), WATCH_WOKEN);
	CHECK_INT(watch_wait(&w, 20), WATCH_TIMEOUT);
	teardown(&w);
}

TEST(wake_wins_over_file_events)
{
	struct watch w;
	setup(&w);
	append("app.db-wal");
	append("app.db");
	watch_wake(&w);
	CHECK_INT(watch_wait(&w, 2000), WATCH_WOKEN);
	teardown(&w);
}

TEST(sleep_ends_early_on_wake_and_keeps_it)
{
	struct watch w;
	setup(&w);
	watch_wake(&w);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	watch_sleep(&w, 10000);
	clock_gettime(CLOCK_MONOTONIC, &b);
	CHECK(b.tv_sec - a.tv_sec < 5);
	/* the wake-up stays pending for the caller's next wait */
	CHECK_INT(watch_wait(&w, 2000), WATCH_WOKEN);
	teardown(&w);
}

TEST(a_directory_that_comes_later_is_watched_once_it_is_there)
{
	struct watch w;
	snprintf(dir, sizeof(dir), "/tmp/lv-watch-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	CHECK_INT(rmdir(dir), 0);
	snprintf(db, sizeof(db), "%s/app.db", dir);
	CHECK_INT(watch_init(&w, db), 0);
	CHECK_INT(watch_active(&w), 0); /* polling meanwhile */
	CHECK_INT(watch_wait(&w, 20), WATCH_TIMEOUT);
	CHECK_INT(mkdir(dir, 0700), 0);
	CHECK_INT(watch_wait(&w, 20), WATCH_TIMEOUT); /* this look sets the watch up */
	CHECK_INT(watch_active(&w), 1);
	append("app.db");
	CHECK_INT(watch_wait(&w, 2000), WATCH_FILES);
	teardown(&w);
}

UNIT_MAIN(T(wal_write_is_a_file_event), T(other_files_do_not_wake), T(wake_is_reported_as_wake),
	  T(wake_wins_over_file_events), T(sleep_ends_early_on_wake_and_keeps_it),
	  T(a_directory_that_comes_later_is_watched_once_it_is_there))
