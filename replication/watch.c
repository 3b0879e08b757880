/* watch.c — inotify on the database's directory, polling fallback. See watch.h. */
#include "replication/watch.h"

#include <errno.h>
#include <libgen.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/banned.h"

/*
 * The monitor's idle wait is long (a safety net): a database renamed away
 * (IN_MOVED_FROM) or its directory removed/moved (the *_SELF events) must
 * wake it as surely as a commit does.
 */
#define WATCH_MASK (IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | \
		    IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF)

int watch_init(struct watch *w, const char *path)
{
	char dir[PATH_MAX], base[PATH_MAX];

	w->ifd = -1;
	w->wd = -1;
	w->lost = false;
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0) {
		log_error("watch", "eventfd failed", "err=\"%s\"", strerror(errno));
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	snprintf(base, sizeof(base), "%s", path);
	snprintf(w->base, sizeof(w->base), "%s", basename(base));
	snprintf(w->dir, sizeof(w->dir), "%s", dirname(dir));
	w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ifd >= 0 && (w->wd = inotify_add_watch(w->ifd, w->dir, WATCH_MASK)) < 0) {
		if (errno == ENOENT) {
			/* inotify works; the directory is still to come: watch_wait() tries again */
			log_info("watch", "the database's directory does not exist yet: polling at "
				 "monitor-interval until it does", "dir=\"%s\"", w->dir);
			w->lost = true;
			return 0;
		}
		close(w->ifd);
		w->ifd = -1;
	}
	if (w->ifd < 0)
		log_warn("watch", "inotify unavailable, polling at monitor-interval", "path=\"%s\" err=\"%s\"",
			 path, strerror(errno));
	return 0;
}

/* Drain the inotify queue; 1 if an event concerned one of the database's files. */
static int drain(struct watch *w)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	size_t blen = strlen(w->base);
	int hit = 0;
	for (;;) {
		ssize_t n = read(w->ifd, buf, sizeof(buf));
		if (n <= 0)
			return hit;
		for (char *p = buf; p < buf + n; p += sizeof(struct inotify_event) +
						((struct inotify_event *)p)->len) {
			struct inotify_event *ev = (struct inotify_event *)p;
			/* the end of a watch watch_sleep removed itself (IN_Q_OVERFLOW has wd -1) */
			if ((ev->mask & IN_IGNORED) && ev->wd != w->wd)
				continue;
			/* <db>, <db>-wal, <db>-shm, <db>-journal */
			if (ev->len && strncmp(ev->name, w->base, blen) == 0 &&
			    strcmp(ev->name + blen, "-shm") != 0)
				hit = 1;
			if (ev->mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
				hit = 1;
			/* the watch no longer covers the path: a new directory there needs a new one */
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED))
				w->lost = true;
		}
	}
}

int watch_active(const struct watch *w)
{
	return w->ifd >= 0 && !w->lost;
}

enum watch_event watch_wait(struct watch *w, int64_t timeout_ms)
{
	if (w->ifd >= 0 && w->lost && (w->wd = inotify_add_watch(w->ifd, w->dir, WATCH_MASK)) >= 0)
		w->lost = false;
	struct pollfd p[2] = { { .fd = w->efd, .events = POLLIN }, { .fd = w->ifd, .events = POLLIN } };
	int n = w->ifd >= 0 ? 2 : 1;
	if (timeout_ms < 0)
		timeout_ms = 0;
	if (timeout_ms > 60000)
		timeout_ms = 60000;
	int64_t end = clock_mono_ms() + timeout_ms;
	/* other files in the directory (an app's logs) must not wake us each time */
	for (int64_t left = timeout_ms; left >= 0; left = end - clock_mono_ms()) {
		int rc = poll(p, (nfds_t)n, (int)left);
		if (rc <= 0)
			return WATCH_TIMEOUT;
		bool woken = false, files = false;
		if (p[0].revents) {
			uint64_t v;
			woken = read(w->efd, &v, sizeof(v)) > 0;
		}
		if (n == 2 && p[1].revents)
			files = drain(w);
		if (woken)
			return WATCH_WOKEN;
		if (files)
			return WATCH_FILES;
	}
	return WATCH_TIMEOUT;
}

void watch_sleep(struct watch *w, int64_t timeout_ms)
{
	struct pollfd p = { .fd = w->efd, .events = POLLIN };
	bool removed = w->ifd >= 0 && !w->lost && timeout_ms > 0 && inotify_rm_watch(w->ifd, w->wd) == 0;
	if (timeout_ms > 0 && poll(&p, 1, (int)timeout_ms) > 0) {
		uint64_t v;
		if (read(w->efd, &v, sizeof(v)) > 0)
			watch_wake(w); /* keep it pending for the caller's next wait */
	}
	/*
	 * Watch again before the drain: a write after this point either
	 * precedes the caller's look at the files or queues an event for its
	 * next wait, so none goes unnoticed.
	 */
	if (removed) {
		int wd = inotify_add_watch(w->ifd, w->dir, WATCH_MASK);
		if (wd >= 0) {
			w->wd = wd;
		} else if (errno == ENOENT) {
			w->lost = true; /* the directory went away meanwhile: watch_wait retries by path */
		} else {
			log_warn("watch", "cannot watch again, polling at monitor-interval",
				 "dir=\"%s\" err=\"%s\"", w->dir, strerror(errno));
			close(w->ifd);
			w->ifd = -1;
		}
	}
	if (w->ifd >= 0)
		drain(w);
}

void watch_wake(struct watch *w)
{
	uint64_t one = 1;
	if (w->efd >= 0 && write(w->efd, &one, sizeof(one)) < 0)
		return; /* already signalled (counter full): the wait ends anyway */
}

void watch_release(struct watch *w)
{
	if (w->ifd >= 0)
		close(w->ifd);
	if (w->efd >= 0)
		close(w->efd);
	w->ifd = w->efd = -1;
}
