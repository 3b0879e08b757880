/*
 * watch.h — wake the database monitor when its files change.
 *
 * inotify on the database's directory (the -wal file may not exist yet, or be
 * deleted and re-created), filtered on the database's own file names, so a
 * commit is noticed within milliseconds at no idle cost. When inotify is not
 * available (limits, some filesystems) it degrades to polling at the
 * monitor-interval. watch_wake() lets other threads (flush, replicas asking
 * for a checkpoint, shutdown) interrupt the wait.
 */
#ifndef LITEVISOR_WATCH_H
#define LITEVISOR_WATCH_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

struct watch {
	int ifd;             /* inotify, -1 when polling */
	int wd;              /* the directory's watch in ifd */
	bool lost;           /* the directory was removed or moved: watch again by path */
	int efd;             /* eventfd for watch_wake */
	char base[NAME_MAX + 1]; /* database file name */
	char dir[PATH_MAX];      /* its directory (the watch's mask is changed by path) */
};

/* Set up for the database at path. Returns 0, or -1 (logged) when even the eventfd fails. */
int watch_init(struct watch *w, const char *path);

/* What ended a watch_wait. */
enum watch_event {
	WATCH_TIMEOUT = 0,
	WATCH_FILES = 1, /* a file of the database changed */
	WATCH_WOKEN = 2, /* watch_wake() was called (whether or not a file changed too) */
};

/*
 * Wait until a file of the database changes, watch_wake() is called, or
 * timeout_ms passes. A wake-up is reported as WATCH_WOKEN even when files
 * changed as well: somebody wants an answer now (a flush, a checkpoint
 * request, shutdown), so the caller must not gather commits first.
 */
enum watch_event watch_wait(struct watch *w, int64_t timeout_ms);

/*
 * Sleep up to timeout_ms, woken only by watch_wake(); file events meanwhile
 * are discarded at the end (the caller is about to look at the files anyway).
 * Used to gather commits without a wake-up per commit. Meanwhile there is no
 * watch at all: every write(2) to a file in a watched directory pays, in the
 * writer's own system call, for queueing an event (IN_MODIFY: 0.5-1 us a
 * write here) or at least for looking at the directory's marks (0.35 us with
 * a mask without IN_MODIFY), several times per commit of the app's. The
 * caller looks at the files right after, so nothing goes unnoticed.
 */
void watch_sleep(struct watch *w, int64_t timeout_ms);

/*
 * 1 when file events are being delivered, so a long wait misses nothing; 0
 * while polling, or while the watched directory is gone (watch_wait watches
 * it again by path as soon as it exists).
 */
int watch_active(const struct watch *w);

/* Interrupt watch_wait (any thread). */
void watch_wake(struct watch *w);

void watch_release(struct watch *w);

#endif
