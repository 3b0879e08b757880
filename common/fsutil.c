/* fsutil.c — durable, atomic file operations (temp → fsync → rename → fsync dir). */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/banned.h"

int fs_pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	const unsigned char *p = buf;
	while (len > 0) {
		ssize_t w = pwrite(fd, p, len, off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		if (w == 0) { /* no progress and no error: report it, do not spin */
			errno = EIO;
			return -1;
		}
		p += w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

int fs_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

int fs_fsync_parent(const char *path)
{
	char buf[PATH_MAX];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return fs_fsync_dir(dirname(buf));
}

/* mkdir -p of the directories path names past its first `from` bytes (>= 1). */
static int mkdir_from(const char *path, size_t from, mode_t mode, uid_t uid, gid_t gid)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf) || from > len) {
		errno = len && from <= len ? ENAMETOOLONG : ENOENT;
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (char *p = buf + from;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, mode) == 0) {
			if ((uid != (uid_t)-1 || gid != (gid_t)-1) && chown(buf, uid, gid) < 0)
				return -1;
			if (fs_fsync_parent(buf) < 0)
				return -1;
		} else if (errno != EEXIST) {
			return -1;
		}
		*p = c;
		if (c == '\0')
			break;
	}
	struct stat st;
	if (stat(path, &st) < 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

int fs_mkdir_p(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	return mkdir_from(path, 1, mode, uid, gid);
}

int fs_mkdir_below(const char *base, const char *rel, mode_t mode, uid_t uid, gid_t gid)
{
	char path[PATH_MAX];
	if (!rel[0]) {
		errno = EINVAL; /* base itself: never made here */
		return -1;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", base, rel) >= sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return mkdir_from(path, strlen(base) + 1, mode, uid, gid);
}

int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
		    gid_t gid)
{
	char tmp[PATH_MAX];
	const char *p = data;
	int fd = -1, e = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fchmod(fd, mode) < 0)
		goto fail;
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0)
		goto fail;
	if (fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto fail;
	return fs_fsync_parent(path);
fail:
	e = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = e;
	return -1;
}

static const char *kind_name(mode_t m)
{
	return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO (named pipe)"
	     : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
	     : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

int fs_open_regular(const char *path, char *why, size_t whylen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), fl;

	if (fd < 0) {
		int e = errno;
		char to[PATH_MAX];
		ssize_t n;
		/* a socket cannot be opened (ENXIO): say what it is */
		if (e == ENXIO && stat(path, &st) == 0 && !S_ISREG(st.st_mode))
			snprintf(why, whylen, "not a regular file but %s", kind_name(st.st_mode));
		else if (e == ENOENT && (n = readlink(path, to, sizeof(to) - 1)) > 0)
			snprintf(why, whylen, "a symbolic link to %.*s, which does not exist", (int)n,
				 to);
		else
			snprintf(why, whylen, "%s", strerror(e));
		errno = e;
		return -1;
	}
	if (fstat(fd, &st) < 0 || (fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		close(fd);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a regular file but %s", kind_name(st.st_mode));
		close(fd);
		errno = EINVAL;
		return -1;
	}
	return fd;
}

mode_t fs_umask(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[128];
	mode_t m = 022;
	if (!f)
		return m;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Umask:", 6) == 0)
			m = (mode_t)strtoul(line + 6, NULL, 8);
	fclose(f);
	return m;
}

ssize_t fs_read_text(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return n;
}

int fs_read_small(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf = NULL;
	size_t n = 0;
	int e;

	*out = NULL;
	if (fd < 0)
		return -1;
	buf = malloc(max + 1);
	if (!buf) {
		e = ENOMEM;
		goto fail;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, max + 1 - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			e = errno;
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			e = EFBIG;
			goto fail;
		}
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return 0;
fail:
	close(fd);
	free(buf);
	errno = e;
	return -1;
}

int fs_move_aside(const char *path, const char *tag, char **moved_to)
{
	char dst[PATH_MAX], ts[40];
	struct stat st;

	if (moved_to)
		*moved_to = NULL;
	if (lstat(path, &st) < 0)
		return -1;
	clock_rfc3339(clock_wall_ns(), ts, sizeof(ts));
	for (int i = 0; i < 1000; i++) {
		int n = i ? snprintf(dst, sizeof(dst), "%s.%s-%s.%d", path, tag, ts, i)
			  : snprintf(dst, sizeof(dst), "%s.%s-%s", path, tag, ts);
		if (n >= (int)sizeof(dst)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (lstat(dst, &st) < 0 && errno == ENOENT)
			break;
	}
	if (rename(path, dst) < 0)
		return -1;
	if (fs_fsync_parent(path) < 0) {
		/* a move that may not outlive a crash is taken back: the caller sees it as not
		 * made, and the file stays where it is known to be */
		int e = errno;
		if (rename(dst, path) == 0) {
			(void)fs_fsync_parent(path);
			errno = e;
			return -1;
		}
	}
	if (moved_to)
		*moved_to = strdup(dst);
	return 0;
}

int fs_open_unnamed(const char *dir, const char *prefix)
{
	char path[PATH_MAX];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd;
	if (snprintf(path, sizeof(path), "%s/%sXXXXXX", dir, prefix) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mkostemp(path, O_CLOEXEC);
	if (fd >= 0)
		unlink(path);
	return fd;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

int fs_remove_tree(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	return nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS) < 0 ? -1 : 0;
}
