/* statelock.c — one litevisor process per state directory (see statelock.h). */
#include "replication/statelock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/pathnorm.h"
#include "common/log.h"
#include "replication/localstate.h"
#include "common/banned.h"

/* "pid 123 on host h" from the holder's "123 h\n" (what it wrote may not be there yet). */
static void read_holder(int fd, char *holder, size_t len)
{
	char buf[320];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	long pid = 0;
	char host[300] = "";

	holder[0] = '\0';
	if (n <= 0)
		return;
	buf[n] = '\0';
	if (sscanf(buf, "%ld %299s", &pid, host) >= 1 && pid > 0)
		snprintf(holder, len, host[0] ? "pid %ld on host %s" : "pid %ld", pid, host);
}

/*
 * flock the lock file f (exclusive, no wait). STATELOCK_TAKEN, STATELOCK_HELD
 * (f closed, holder read from it) or STATELOCK_ERROR (f closed, logged).
 */
static enum statelock_result lock_fd(int f, const char *path, char *holder, size_t holderlen)
{
	if (flock(f, LOCK_EX | LOCK_NB) == 0)
		return STATELOCK_TAKEN;
	int e = errno;
	if (e == EWOULDBLOCK) {
		read_holder(f, holder, holderlen);
		close(f);
		return STATELOCK_HELD;
	}
	log_error("state", "cannot lock the state directory", "path=\"%s\" err=\"%s\"", path,
		  strerror(e));
	close(f);
	return STATELOCK_ERROR;
}

/* ours: say who holds it (best effort, the lock is what counts), with the database's owner */
static void mark_holder(const struct cfg_db *db, int f, const char *path)
{
	char host[256] = "", line[320];
	struct stat st;
	uid_t uid;
	gid_t gid;

	gethostname(host, sizeof(host) - 1);
	int n = snprintf(line, sizeof(line), "%ld %s\n", (long)getpid(), host[0] ? host : "-");
	if (ftruncate(f, 0) < 0 || fs_pwrite_all(f, line, (size_t)n, 0) < 0)
		log_warn("state", "cannot write the lock file", "path=\"%s\" err=\"%s\"", path,
			 strerror(errno));
	localstate_owner(db, &uid, &gid);
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fstat(f, &st) == 0 &&
	    (st.st_uid != uid || st.st_gid != gid) && fchown(f, uid, gid) < 0)
		log_warn("state", "cannot chown the lock file", "path=\"%s\" err=\"%s\"", path,
			 strerror(errno));
}

/* Do d and f (each -1 when not held) still hold what dir and file name? */
static bool still_named(int d, const char *dir, int f, const char *file)
{
	struct stat a, b;
	if (d >= 0 && (fstat(d, &a) < 0 || stat(dir, &b) < 0 || a.st_dev != b.st_dev ||
		       a.st_ino != b.st_ino))
		return false;
	if (f >= 0 && (fstat(f, &a) < 0 || lstat(file, &b) < 0 || a.st_nlink == 0 ||
		       a.st_dev != b.st_dev || a.st_ino != b.st_ino))
		return false;
	return true;
}

enum statelock_result statelock_take(const struct cfg_db *db, const char *dir, int fds[2],
				     char *holder, size_t holderlen)
{
	char path[PATH_MAX + 8], phys[PATH_MAX], inner[PATH_MAX + 16];
	struct stat st;
	enum statelock_result rc;

	fds[0] = fds[1] = -1;
	if (holderlen)
		holder[0] = '\0';
	/* a meta-path through a symlink and its target are one directory: one lock file */
	if (pathnorm_resolve(dir, phys, sizeof(phys)) < 0)
		snprintf(phys, sizeof(phys), "%s", dir);
	if ((size_t)snprintf(path, sizeof(path), "%s.lock", phys) >= sizeof(path)) {
		log_error("state", "state directory path too long for its lock file", "dir=\"%s\"", dir);
		return STATELOCK_ERROR;
	}
	/*
	 * No state directory yet: nobody uses it, and no lock file is left
	 * beside a database that was never replicated (a stopped restore leaves
	 * its directory as it found it). Whoever creates it takes it then.
	 */
	if (stat(phys, &st) < 0 && (errno == ENOENT || errno == ENOTDIR))
		return STATELOCK_NO_DIR;
	const char *fpath = path;
	int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (f < 0 && (errno == ENOENT || errno == ENOTDIR))
		return STATELOCK_NO_DIR; /* removed meanwhile */
	if (f < 0 && errno != EACCES && errno != EPERM && errno != EROFS) {
		log_error("state", "cannot open the state directory's lock file", "path=\"%s\" err=\"%s\"",
			  path, strerror(errno));
		return STATELOCK_ERROR;
	}
	if (f >= 0) {
		if ((rc = lock_fd(f, path, holder, holderlen)) != STATELOCK_TAKEN)
			return rc;
		mark_holder(db, f, path);
	}
	/* f < 0: a volume mounted at the meta-path, a parent the service user cannot write */
	int beside_err = f < 0 ? errno : 0;
	int d = open(phys, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d < 0) {
		int e = errno;
		if (f >= 0)
			close(f);
		if (e == ENOENT || e == ENOTDIR)
			return STATELOCK_NO_DIR;
		log_error("state", "cannot open the state directory", "path=\"%s\" err=\"%s\"", phys,
			  strerror(e));
		return STATELOCK_ERROR;
	}
	int e = flock(d, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
	if (e && e != EWOULDBLOCK && f >= 0) {
		/*
		 * NFS takes flock as a POSIX lock, which needs a descriptor open for
		 * writing, and a directory's never is: the file's lock is the one.
		 */
		log_info("state", "the state directory itself cannot be locked here: its lock file "
			 "alone keeps other processes out", "path=\"%s\" err=\"%s\"", phys,
			 strerror(e));
		close(d);
		d = -1;
	} else if (e && e != EWOULDBLOCK) {
		/*
		 * Neither a file beside it nor the directory itself (NFS, its parent
		 * not writable): a file inside it, which a state directory that
		 * cannot be renamed keeps in place when it goes aside (restore_local.c)
		 */
		close(d);
		d = -1;
		snprintf(inner, sizeof(inner), "%s/" STATELOCK_INNER, phys);
		f = open(inner, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
		fpath = inner;
		if (f < 0) {
			log_error("state", "cannot lock the state directory, nor make a lock file beside "
				  "it or in it", "path=\"%s\" err=\"%s\" flock_err=\"%s\"", phys,
				  strerror(errno), strerror(e));
			return STATELOCK_ERROR;
		}
		if ((rc = lock_fd(f, inner, holder, holderlen)) != STATELOCK_TAKEN)
			return rc;
		mark_holder(db, f, inner);
		log_info("state", "the state directory is locked by a file in it: none can be made "
			 "beside it, nor the directory itself be locked here", "path=\"%s\" err=\"%s\" "
			 "flock_err=\"%s\"", inner, strerror(beside_err), strerror(e));
	} else if (e) {
		if (f >= 0)
			close(f);
		close(d);
		return STATELOCK_HELD;
	}
	/*
	 * Locked what the names held when opened: a state directory removed (and
	 * maybe made again) meanwhile leaves the locks on unlinked inodes, which
	 * keep nobody out (QA162 D1). Verified only now, after the flocks.
	 */
	if (!still_named(d, phys, f, fpath)) {
		if (f >= 0)
			close(f);
		if (d >= 0)
			close(d);
		return STATELOCK_NO_DIR;
	}
	if (beside_err && d >= 0)
		log_info("state", "no lock file beside the state directory (its directory is not "
			 "writable): locking the state directory alone", "path=\"%s\" err=\"%s\"", path,
			 strerror(beside_err));
	fds[0] = f;
	fds[1] = d;
	return STATELOCK_TAKEN;
}
