/*
 * restore_lock.c — one restore at a time per target, the leftovers of a
 * killed one, and stopping the restores in progress (restore_abort,
 * restore_abandon: restore.h). See restore_apply_int.h.
 */
#include "replication/restore_apply_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/banned.h"

/*
 * Leftovers of a restore that was killed: our temp names (the lock held, so
 * no other restore owns them), including WAL files of indexes this plan
 * does not have (the killed one may have had another plan).
 */
void rs_remove_leftovers(struct apply *a)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(a->tmp, '/'), *base = slash ? slash + 1 : a->tmp;
	size_t blen = strlen(base);

	rs_cleanup(a);
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == a->tmp)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - a->tmp), a->tmp);
	DIR *d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		const char *n = e->d_name;
		/* <tmp>-%08x.lz4 only: never the lock file beside them */
		if (strncmp(n, base, blen) != 0 || n[blen] != '-' || strlen(n + blen) != 13 ||
		    strspn(n + blen + 1, "0123456789abcdef") != 8 || strcmp(n + blen + 9, ".lz4") != 0)
			continue;
		if (unlinkat(dirfd(d), n, 0) == 0)
			log_info("restore", "removed a leftover of an interrupted restore",
				 "dir=\"%s\" file=\"%s\"", dir, n);
	}
	closedir(d);
}


static pthread_mutex_t active_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rs_active *active_list;
static bool abort_requested;
static char abort_why[128];

void restore_abort(const char *why)
{
	pthread_mutex_lock(&active_mu);
	if (!abort_requested)
		snprintf(abort_why, sizeof(abort_why), "%s", why ? why : "aborted");
	abort_requested = true;
	/* the sinks then refuse the next bytes and the workers stop (see counting_write) */
	for (struct rs_active *n = active_list; n; n = n->next)
		rs_fail(n->a, RS_CAUSE_LOCAL, "interrupted (%s)", abort_why);
	pthread_mutex_unlock(&active_mu);
}

bool restore_aborted(void)
{
	pthread_mutex_lock(&active_mu);
	bool b = abort_requested;
	pthread_mutex_unlock(&active_mu);
	return b;
}

void restore_abandon(void)
{
	pthread_mutex_lock(&active_mu);
	for (struct rs_active *n = active_list; n; n = n->next) {
		if (n->lock_fd < 0)
			continue; /* not ours yet: the files may be another restore's */
		rs_cleanup(n->a);
		unlink(n->lock);
	}
	pthread_mutex_unlock(&active_mu);
}

/* The pid a lock holder wrote in the lock file, or 0 (it may not have written it yet). */
static long lock_holder(int fd)
{
	char buf[32];
	for (int tries = 0; tries < 20; tries++) {
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		if (n > 0) {
			buf[n] = '\0';
			return strtol(buf, NULL, 10);
		}
		clock_sleep_ms(5);
	}
	return 0;
}

/*
 * The holder removes the lock file before it lets go; so a taker checks that
 * the name still leads to the file it locked, else the lock it got is on a
 * removed file and it tries again. A killed holder's lock ends with it, and
 * its file is reused.
 */
int rs_lock_take(struct apply *a, struct rs_active *n)
{
	snprintf(n->lock, sizeof(n->lock), "%s.lock", a->tmp);
	for (int tries = 0; tries < 100; tries++) {
		struct stat fs, ps;
		bool made = true;
		int fd = open(n->lock, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST) {
			made = false;
			fd = open(n->lock, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0 && errno == ENOENT)
				continue; /* its holder removed it meanwhile */
		}
		if (fd < 0) {
			rs_fail(a, RS_CAUSE_LOCAL, "create %s: %s", n->lock, strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;
			long pid = e == EWOULDBLOCK ? lock_holder(fd) : 0;
			close(fd);
			/* a lock that cannot be taken at all (EIO, NFS's ENOLCK): not left behind */
			if (e != EWOULDBLOCK && made)
				(void)unlink(n->lock);
			if (e != EWOULDBLOCK)
				rs_fail(a, RS_CAUSE_LOCAL, "lock %s: %s", n->lock, strerror(e));
			else if (pid > 0)
				rs_fail(a, RS_CAUSE_LOCAL, "another restore to %s is running (pid %ld)",
				     a->o->target, pid);
			else
				rs_fail(a, RS_CAUSE_LOCAL, "another restore to %s is running (lock %s)",
				     a->o->target, n->lock);
			return -1;
		}
		if (fstat(fd, &fs) == 0 && stat(n->lock, &ps) == 0 && fs.st_dev == ps.st_dev &&
		    fs.st_ino == ps.st_ino) {
			char pid[32];
			int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
			if (ftruncate(fd, 0) < 0 || fs_pwrite_all(fd, pid, (size_t)len, 0) < 0) {
				rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", n->lock, strerror(errno));
				unlink(n->lock);
				close(fd);
				return -1;
			}
			pthread_mutex_lock(&active_mu);
			n->lock_fd = fd;
			pthread_mutex_unlock(&active_mu);
			return 0;
		}
		close(fd); /* its holder removed it meanwhile */
	}
	rs_fail(a, RS_CAUSE_LOCAL, "lock %s: it keeps being replaced", n->lock);
	return -1;
}

void rs_lock_drop(struct rs_active *n)
{
	pthread_mutex_lock(&active_mu);
	int fd = n->lock_fd;
	n->lock_fd = -1;
	pthread_mutex_unlock(&active_mu);
	if (fd < 0)
		return;
	rs_unlink(n->lock);
	close(fd);
}

int rs_active_add(struct rs_active *n)
{
	int rc = 0;
	pthread_mutex_lock(&active_mu);
	if (abort_requested) {
		rs_fail(n->a, RS_CAUSE_LOCAL, "interrupted (%s)", abort_why);
		rc = -1;
	} else {
		n->next = active_list;
		active_list = n;
	}
	pthread_mutex_unlock(&active_mu);
	return rc;
}

void rs_active_remove(struct rs_active *n)
{
	pthread_mutex_lock(&active_mu);
	for (struct rs_active **pp = &active_list; *pp; pp = &(*pp)->next)
		if (*pp == n) {
			*pp = n->next;
			break;
		}
	pthread_mutex_unlock(&active_mu);
}
