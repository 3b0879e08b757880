/*
 * storage_file.c — a replica in a local (or mounted) directory.
 *
 * The directory tree mirrors the keys: key "a/b/c" is the file <root>/a/b/c.
 * Writes are atomic and durable: "<file>.tmp-<random>" → fsync → rename →
 * fsync the directory, and every directory created on the way is fsynced into
 * its parent. Listings skip those temporary files, so a put in progress is
 * never seen half-written. Deletes remove directories left empty, up to (not
 * including) the root, so a listing with a delimiter shows the same common
 * prefixes S3 would.
 *
 * No state besides the root path: every operation is safe from many threads.
 * st_call deadlines and retries do not apply: local I/O either works or fails
 * at once (a hung network mount cannot be interrupted from here anyway).
 */
#include "replication/storage.h"
#include "common/fsutil.h"
#include "common/pathnorm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/banned.h"

#define FILE_IO_CHUNK (64 * 1024)
#define TMP_SUFFIX ".tmp-"
#define TMP_SUFFIX_LEN 11 /* ".tmp-" + the 6 characters mkostemp fills in */
/* a temporary file untouched this long belongs to a writer that died (a put writes it steadily) */
#define TMP_STALE_S 600

struct file_storage {
	struct storage base;
	char *root;
};

static const char *root_of(struct storage *st)
{
	return ((struct file_storage *)st)->root;
}

/* How an errno maps to a storage class. */
static enum st_status classify(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return ST_NOT_FOUND;
	case EACCES:
	case EPERM:
	case EROFS:
		return ST_AUTH;
	case ENOSPC:
	case EDQUOT:
	case EIO:
	case EINTR:
	case EAGAIN:
	case ENOMEM:
	case EMFILE:
	case ENFILE:
	case ESTALE:
	case ETIMEDOUT:
		return ST_TRANSIENT;
	default:
		return ST_PERMANENT;
	}
}

/* Fill err from errno e for operation op on key (path is where it happened). Returns the status. */
static int sys_fail(struct st_error *err, int e, const char *op, const char *key, const char *path)
{
	char buf[128];
	const char *why = strerror_r(e, buf, sizeof(buf));
	enum st_status s = classify(e);
	if (e == ENOSPC || e == EDQUOT)
		st_error_set(err, s, 0, "%s %s: replica disk full: %s (%s)", op, key, why, path);
	else if (e == EIO)
		st_error_set(err, s, 0, "%s %s: replica disk I/O error: %s (%s)", op, key, why, path);
	else
		st_error_set(err, s, 0, "%s %s: %s (%s)", op, key, why, path);
	return s;
}

/*
 * Keys are relative, '/'-separated, with no empty, "." or ".." component, so
 * a key can never name anything outside the root. Returns 0 or -1.
 */
static int key_valid(const char *key, bool allow_trailing_slash)
{
	const char *p = key;
	if (!*p)
		return allow_trailing_slash ? 0 : -1; /* "" is only a valid prefix */
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0)
			return slash || !allow_trailing_slash || p == key ? -1 : 0;
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return -1;
		if (!slash)
			return 0;
		p = slash + 1;
		if (!*p)
			return allow_trailing_slash ? 0 : -1;
	}
}

/* <root>/<key> into buf. Returns 0, or -1 if it does not fit. */
static int join(char *buf, size_t len, const char *root, const char *key)
{
	int n = snprintf(buf, len, "%s/%s", root, key);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int check_key(struct st_error *err, const char *op, const char *key)
{
	if (key_valid(key, false) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "%s \"%s\": invalid key (empty, absolute, or with an empty, \".\" or \"..\" part)",
			     op, key);
		return ST_PERMANENT;
	}
	return 0;
}

static bool is_tmp_name(const char *name)
{
	size_t n = strlen(name);
	return n > TMP_SUFFIX_LEN && memcmp(name + n - TMP_SUFFIX_LEN, TMP_SUFFIX, strlen(TMP_SUFFIX)) == 0;
}

/* Parent directory of path into buf ("." if none). */
static void parent_of(char *buf, size_t len, const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		snprintf(buf, len, ".");
		return;
	}
	size_t n = slash == path ? 1 : (size_t)(slash - path);
	if (n >= len)
		n = len - 1;
	memcpy(buf, path, n);
	buf[n] = '\0';
}

/* What the objects a put creates take after (storage.h, like): 0 none, else its stat. */
struct owner {
	bool ok;
	struct stat file;
	mode_t umask;
};

static void owner_of(const struct storage *st, struct owner *o)
{
	memset(o, 0, sizeof(*o));
	if (!st->like)
		return;
	o->ok = stat(st->like, &o->file) == 0 && S_ISREG(o->file.st_mode);
	o->umask = o->ok ? fs_umask() : 0;
}

/*
 * Give the new object fd the database's read bits (less the umask, the
 * owner's always) and owner, as Litestream gives the database's mode and
 * owner, but read-only: an object is never written again (a new one is
 * renamed over it), so the app's user, owning it, cannot rewrite its backups;
 * deleting needs the directories, which stay ours. Best effort, as
 * Litestream's: a filesystem without modes (vfat, some CIFS mounts) keeps its
 * own. Only root gives a file away; another user gives it the database's
 * group if it is a member, else no group bits.
 */
static void take_after(int fd, const struct owner *o)
{
	const struct stat *like = &o->file;
	mode_t mode = (like->st_mode & 0444 & ~o->umask) | 0400;
	bool root = geteuid() == 0;
	if (root && (like->st_uid != geteuid() || like->st_gid != getegid()))
		(void)!fchown(fd, like->st_uid, like->st_gid);
	else if (!root && like->st_gid != getegid() && fchown(fd, (uid_t)-1, like->st_gid) < 0)
		mode &= ~(mode_t)0070;
	(void)!fchmod(fd, mode);
}

/*
 * mkdir -p for dir; every directory created is fsynced into its parent so the
 * file about to be renamed into it survives a crash. Returns 0 or -1 (errno).
 */
static int make_dirs(const char *dir)
{
	char buf[PATH_MAX], parent[PATH_MAX];
	size_t n = strlen(dir);
	if (n >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0755) == 0) {
			parent_of(parent, sizeof(parent), buf);
			if (fs_fsync_dir(parent) < 0)
				return -1;
		} else if (errno != EEXIST) {
			return -1;
		}
		buf[i] = c;
	}
	return 0;
}

/*
 * Put the complete temp file tmp in place at path: rename(2), or for a
 * create-only put link(2), which never replaces (the temp name is then
 * removed). A filesystem without hard links (a FAT or SMB mount) gets a
 * look first, then the rename: not atomic, but a key seen taken is never
 * replaced. 0, or -1 with errno (EEXIST: create-only and path is taken).
 */
static int place(const char *tmp, const char *path, bool create_only)
{
	if (!create_only)
		return rename(tmp, path);
	if (link(tmp, path) == 0) {
		unlink(tmp);
		return 0;
	}
	if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP && errno != ENOSYS &&
	    errno != EMLINK)
		return -1;
	struct stat st;
	if (lstat(path, &st) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(tmp, path);
}

/* The error of a failed place(): a taken key is ST_EXISTS, not an I/O error. */
static int place_fail(struct st_error *err, int e, const char *key, const char *path)
{
	if (e != EEXIST)
		return sys_fail(err, e, "put", key, path);
	st_error_set(err, ST_EXISTS, 0, "put %s: %s exists (create-only put)", key, path);
	return ST_EXISTS;
}

/*
 * Give the unnamed file wfd (size bytes) the name tmp, then make it durable
 * under path (another replica may have linked it in already: the file is
 * never written again). 0 done; 1 not possible here (another filesystem, an
 * unlinkable file, no /proc): the caller copies; <0 failed (err set).
 */
static int link_unnamed(int wfd, int64_t size, const char *path, char *tmp, size_t tmplen,
			const char *dir, const char *key, bool create_only, const struct owner *o,
			struct st_error *err)
{
	char proc[64];
	struct stat sb;
	if (fstat(wfd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size != size)
		return 1;
	/* the file is shared with the other replicas, which take it as it is */
	if (o->ok)
		take_after(wfd, o);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", wfd);
	for (int attempt = 0;; attempt++) {
		/* not random(): unseeded, every process named its temp files alike */
		uint32_t x;
		if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x))
			x = (uint32_t)random() ^ (uint32_t)getpid();
		snprintf(tmp, tmplen, "%s" TMP_SUFFIX "%06lx", path, (unsigned long)(x & 0xffffff));
		if (linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) == 0)
			break;
		if (errno != EEXIST || attempt >= 5)
			return 1;
	}
	if (fdatasync(wfd) < 0) {
		int rc = sys_fail(err, errno, "put", key, tmp);
		unlink(tmp);
		return rc;
	}
	if (place(tmp, path, create_only) < 0) {
		int rc = place_fail(err, errno, key, path);
		unlink(tmp);
		return rc;
	}
	/*
	 * A retry after a failed directory fsync finds path a link of this very
	 * file already, and rename(2) of one link onto another of the same file
	 * does nothing: tmp stayed in the replica (QA115 D3).
	 */
	struct stat tb;
	if (lstat(tmp, &tb) == 0 && tb.st_ino == sb.st_ino && tb.st_dev == sb.st_dev)
		(void)unlink(tmp);
	if (fs_fsync_dir(dir) < 0)
		return sys_fail(err, errno, "put", key, dir);
	return 0;
}

static int file_put(struct storage *st, const char *key, const struct st_source *src,
		    const struct st_call *call, struct st_error *err)
{
	char path[PATH_MAX], tmp[PATH_MAX + TMP_SUFFIX_LEN + 1], dir[PATH_MAX];
	unsigned char *buf = NULL;
	int fd = -1, rc;
	int64_t total = 0;

	if ((rc = check_key(err, "put", key)) != 0)
		return rc;
	if (join(path, sizeof(path), root_of(st), key) < 0)
		return sys_fail(err, ENAMETOOLONG, "put", key, root_of(st));
	parent_of(dir, sizeof(dir), path);
	struct owner o;
	owner_of(st, &o);
	int wfd = src->unnamed_file ? src->unnamed_file(src->ctx) : -1;
	if (wfd >= 0) {
		if (make_dirs(dir) < 0)
			return sys_fail(err, errno, "put", key, dir);
		rc = link_unnamed(wfd, src->size, path, tmp, sizeof(tmp), dir, key,
				  call && call->create_only, &o, err);
		if (rc <= 0)
			return rc;
	}
	buf = malloc(FILE_IO_CHUNK);
	if (!buf) {
		rc = sys_fail(err, ENOMEM, "put", key, path);
		goto out;
	}
	/* A concurrent delete may prune the directory between mkdir and open: retry. */
	for (int attempt = 0; fd < 0; attempt++) {
		if (make_dirs(dir) < 0) {
			rc = sys_fail(err, errno, "put", key, dir);
			goto out;
		}
		snprintf(tmp, sizeof(tmp), "%s" TMP_SUFFIX "XXXXXX", path);
		fd = mkostemp(tmp, O_CLOEXEC);
		if (fd < 0 && (errno != ENOENT || attempt >= 5)) {
			rc = sys_fail(err, errno, "put", key, dir);
			goto out;
		}
	}
	if (o.ok)
		take_after(fd, &o);
	for (;;) {
		ssize_t n = src->read(src->ctx, buf, FILE_IO_CHUNK);
		if (n < 0) {
			char eb[128];
			rc = ST_PERMANENT;
			st_error_set(err, rc, 0, "put %s: reading the source: %s", key,
				     strerror_r(errno, eb, sizeof(eb)));
			goto fail;
		}
		if (n == 0)
			break;
		if (st_fd_sink_write(&fd, buf, (size_t)n) < 0) {
			rc = sys_fail(err, errno, "put", key, tmp);
			goto fail;
		}
		total += n;
	}
	if (src->size >= 0 && total != src->size) {
		rc = ST_PERMANENT;
		st_error_set(err, rc, 0, "put %s: source gave %lld bytes, expected %lld", key,
			     (long long)total, (long long)src->size);
		goto fail;
	}
	int sync_rc = fsync(fd), e = errno;
	int close_rc = close(fd); /* whatever fsync said: a leaked fd would pin the deleted temp */
	fd = -1;
	if (sync_rc < 0 || close_rc < 0) {
		rc = sys_fail(err, sync_rc < 0 ? e : errno, "put", key, tmp);
		goto fail;
	}
	if (place(tmp, path, call && call->create_only) < 0) {
		rc = place_fail(err, errno, key, path);
		goto fail;
	}
	if (fs_fsync_dir(dir) < 0) {
		rc = sys_fail(err, errno, "put", key, dir);
		goto out;
	}
	rc = 0;
	goto out;
fail:
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static int file_get(struct storage *st, const char *key, const struct st_sink *sink,
		    const struct st_call *call, struct st_error *err)
{
	char path[PATH_MAX];
	unsigned char *buf = NULL;
	int fd = -1, rc;
	struct stat sb;

	if ((rc = check_key(err, "get", key)) != 0)
		return rc;
	if (join(path, sizeof(path), root_of(st), key) < 0)
		return sys_fail(err, ENAMETOOLONG, "get", key, root_of(st));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = sys_fail(err, errno, "get", key, path);
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		rc = sys_fail(err, errno, "get", key, path);
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) { /* a directory is a key prefix, not an object */
		rc = sys_fail(err, ENOENT, "get", key, path);
		goto out;
	}
	buf = malloc(FILE_IO_CHUNK);
	if (!buf) {
		rc = sys_fail(err, ENOMEM, "get", key, path);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf, FILE_IO_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = sys_fail(err, errno, "get", key, path);
			goto out;
		}
		if (n == 0)
			break;
		if (sink->write(sink->ctx, buf, (size_t)n) < 0) {
			rc = ST_PERMANENT;
			st_error_set(err, rc, 0, "get %s: the destination refused the data", key);
			goto out;
		}
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static int file_stat(struct storage *st, const char *key, struct st_object *out,
		     const struct st_call *call, struct st_error *err)
{
	char path[PATH_MAX];
	struct stat sb;
	int rc;

	if ((rc = check_key(err, "head", key)) != 0)
		return rc;
	if (join(path, sizeof(path), root_of(st), key) < 0)
		return sys_fail(err, ENAMETOOLONG, "head", key, root_of(st));
	if (stat(path, &sb) < 0)
		return sys_fail(err, errno, "head", key, path);
	if (!S_ISREG(sb.st_mode))
		return sys_fail(err, ENOENT, "head", key, path);
	out->size = (int64_t)sb.st_size;
	out->mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
	return 0;
}

/*
 * Remove from dir the temporary files of writers that died mid-put (killed;
 * untouched for TMP_STALE_S: a live put writes on, and renames within
 * seconds of its last write). Left alone they would hold their space for
 * ever (a killed snapshot's: the database's size) and keep their directory,
 * and a generation made of it, alive. Called for each directory a delete
 * touches, whatever else it still holds.
 */
static void remove_stale_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	struct stat sb;
	time_t now = time(NULL);
	if (!d)
		return;
	while ((e = readdir(d)) != NULL)
		if (is_tmp_name(e->d_name) && fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
		    S_ISREG(sb.st_mode) && now - sb.st_mtime >= TMP_STALE_S)
			(void)unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

/* Remove directories left empty above path, stopping at the root or at the first non-empty one. */
static void prune_dirs(const char *root, const char *path)
{
	char dir[PATH_MAX];
	size_t rootlen = strlen(root);
	parent_of(dir, sizeof(dir), path);
	while (strlen(dir) > rootlen && strncmp(dir, root, rootlen) == 0) {
		if (rmdir(dir) < 0) {
			if (errno != ENOTEMPTY && errno != EEXIST)
				return; /* already gone, or cannot be removed */
			remove_stale_tmp(dir);
			if (rmdir(dir) < 0)
				return; /* not empty: nothing more to prune */
		}
		char up[PATH_MAX];
		parent_of(up, sizeof(up), dir);
		memcpy(dir, up, strlen(up) + 1);
	}
}

static int file_del(struct storage *st, const char *const *keys, size_t nkeys,
		    const struct st_call *call, struct st_error *err)
{
	char path[PATH_MAX], dir[PATH_MAX];
	int rc;

	for (size_t i = 0; i < nkeys; i++) {
		if ((rc = check_key(err, "delete", keys[i])) != 0)
			return rc;
		if (join(path, sizeof(path), root_of(st), keys[i]) < 0)
			return sys_fail(err, ENAMETOOLONG, "delete", keys[i], root_of(st));
		if (unlink(path) < 0) {
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			return sys_fail(err, errno, "delete", keys[i], path);
		}
		st_moved(st);
		parent_of(dir, sizeof(dir), path);
		if (fs_fsync_dir(dir) < 0 && errno != ENOENT)
			return sys_fail(err, errno, "delete", keys[i], dir);
		/* once per directory of a run of keys (sorted, as retention lists them) */
		const char *slash = strrchr(keys[i], '/');
		size_t plen = slash ? (size_t)(slash - keys[i]) + 1 : 0;
		if (i + 1 < nkeys && strncmp(keys[i + 1], keys[i], plen) == 0 &&
		    !strchr(keys[i + 1] + plen, '/'))
			continue;
		remove_stale_tmp(dir);
		prune_dirs(root_of(st), path);
	}
	return 0;
}

/*
 * How deep a listing descends below its directory. Ours go at most three
 * levels down (generations/<gen>/wal/<object>); the cap keeps the frames'
 * path buffers (8 KiB each) within a probe thread's 256 KiB stack, which 28
 * nested directories overflowed (QA128 D1).
 */
#define WALK_MAX_DEPTH 12

/* The directories a walk is inside, innermost first (walk, has_object). */
struct walk_up {
	dev_t dev;
	ino_t ino;
	const struct walk_up *up;
};

/*
 * A directory to descend into: one not already on the walk's path. A
 * symbolic link may lead anywhere, and is followed (a generation's wal/ or
 * snapshots/ linked elsewhere is read, as Litestream reads it by path), but
 * one pointing back up is a loop the walk followed to its depth cap, past
 * the stack (QA128 D1, QA131 D1).
 */
static bool descend(const struct stat *sb, const struct walk_up *up, int depth)
{
	if (!S_ISDIR(sb->st_mode) || depth >= WALK_MAX_DEPTH)
		return false;
	for (; up; up = up->up)
		if (up->dev == sb->st_dev && up->ino == sb->st_ino)
			return false;
	return true;
}

/* Where a walk of d is: d, inside up. */
static struct walk_up walk_here(DIR *d, const struct walk_up *up)
{
	struct stat sb;
	struct walk_up me = { 0, 0, up };
	if (fstat(dirfd(d), &sb) == 0) {
		me.dev = sb.st_dev;
		me.ino = sb.st_ino;
	}
	return me;
}

/* True if dir holds at least one object somewhere below it (a common prefix S3 would show). */
static bool has_object(const char *dir, const struct walk_up *up, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	bool found = false;
	if (!d)
		return false;
	struct walk_up me = walk_here(d, up);
	while (!found && (e = readdir(d)) != NULL) {
		char child[PATH_MAX];
		struct stat sb;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_tmp_name(e->d_name))
			continue;
		if (fstatat(dirfd(d), e->d_name, &sb, 0) < 0)
			continue;
		if (S_ISREG(sb.st_mode))
			found = true;
		else if (descend(&sb, &me, depth) && join(child, sizeof(child), dir, e->d_name) == 0)
			found = has_object(child, &me, depth + 1);
	}
	closedir(d);
	return found;
}

/*
 * Add the entries of dir (whose key prefix is keydir, "" or ending in '/')
 * that start with match to out; recurse into subdirectories unless a
 * delimiter folds them into common prefixes. Returns 0 or a status.
 */
static int walk(struct storage *st, const char *dir, const char *keydir, const char *match,
		bool delim, struct st_list *out, struct st_error *err, const struct walk_up *up,
		int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t mlen = match ? strlen(match) : 0;
	int rc = 0;

	if (!d) /* gone since we saw it (a concurrent delete): nothing to list */
		return errno == ENOENT || errno == ENOTDIR ? 0 : sys_fail(err, errno, "list", keydir, dir);
	struct walk_up me = walk_here(d, up);
	while (rc == 0 && (e = readdir(d)) != NULL) {
		char child[PATH_MAX], key[PATH_MAX];
		struct stat sb;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_tmp_name(e->d_name))
			continue;
		if (mlen && strncmp(e->d_name, match, mlen) != 0)
			continue;
		if (fstatat(dirfd(d), e->d_name, &sb, 0) < 0)
			continue; /* removed while listing */
		st_moved(st);
		if (join(child, sizeof(child), dir, e->d_name) < 0 ||
		    snprintf(key, sizeof(key), "%s%s", keydir, e->d_name) >= (int)sizeof(key)) {
			rc = sys_fail(err, ENAMETOOLONG, "list", keydir, dir);
			break;
		}
		if (S_ISREG(sb.st_mode)) {
			int64_t mt = (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
			if (st_list_add_object(out, key, (int64_t)sb.st_size, mt) < 0)
				rc = sys_fail(err, ENOMEM, "list", keydir, dir);
		} else if (S_ISDIR(sb.st_mode)) {
			size_t kl = strlen(key);
			if (kl + 1 >= sizeof(key)) {
				rc = sys_fail(err, ENAMETOOLONG, "list", keydir, dir);
				break;
			}
			key[kl] = '/';
			key[kl + 1] = '\0';
			if (delim) {
				/* a link back up is no prefix: the walk below it lists nothing */
				if (descend(&sb, &me, depth) && has_object(child, &me, 0) &&
				    st_list_add_prefix(out, key) < 0)
					rc = sys_fail(err, ENOMEM, "list", keydir, dir);
			} else if (descend(&sb, &me, depth)) {
				rc = walk(st, child, key, NULL, false, out, err, &me, depth + 1);
			}
		}
	}
	closedir(d);
	return rc;
}

static int file_list(struct storage *st, const char *prefix, const char *delimiter,
		     struct st_list *out, const struct st_call *call, struct st_error *err)
{
	char dir[PATH_MAX], keydir[PATH_MAX];
	struct stat sb;
	const char *root = root_of(st);
	const char *slash = strrchr(prefix, '/');
	size_t dlen = slash ? (size_t)(slash - prefix) + 1 : 0;

	if (delimiter && strcmp(delimiter, "/") != 0) {
		st_error_set(err, ST_PERMANENT, 0, "list %s: the file backend only supports the delimiter \"/\"", prefix);
		return ST_PERMANENT;
	}
	int r = stat(root, &sb);
	if (r < 0 && errno == ENOENT) {
		/* a first deploy: empty, as for Litestream */
		st_error_set(err, ST_NOT_FOUND, 0, "list %s: replica directory %s does not exist", prefix, root);
		return ST_NOT_FOUND;
	}
	if (r < 0 && errno != ENOTDIR)
		return sys_fail(err, errno, "list", prefix, root);
	if (r < 0 || !S_ISDIR(sb.st_mode)) {
		/* something else is where the replica should be: that is no empty replica */
		st_error_set(err, ST_PERMANENT, 0, "list %s: replica path %s is not a directory",
			     prefix, root);
		return ST_PERMANENT;
	}
	if (dlen >= sizeof(keydir))
		return sys_fail(err, ENAMETOOLONG, "list", prefix, root);
	memcpy(keydir, prefix, dlen);
	keydir[dlen] = '\0';
	if (dlen && key_valid(keydir, true) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "list \"%s\": invalid prefix", prefix);
		return ST_PERMANENT;
	}
	if (join(dir, sizeof(dir), root, keydir) < 0)
		return sys_fail(err, ENAMETOOLONG, "list", prefix, root);
	return walk(st, dir, keydir, prefix + dlen, delimiter != NULL, out, err, NULL, 0);
}

static void file_destroy(struct storage *st)
{
	struct file_storage *fs = (struct file_storage *)st;
	free(fs->root);
	free(fs->base.description);
	free(fs->base.location);
	free(fs);
}

static const struct storage_ops file_ops = {
	.list = file_list,
	.get = file_get,
	.put = file_put,
	.del = file_del,
	.stat = file_stat,
	.destroy = file_destroy,
};

/* No I/O: the root is created by the first put, so a replica on a missing mount fails then, clearly. */
struct storage *storage_file_open(const struct cfg_replica *r, struct st_error *err)
{
	struct file_storage *fs = NULL;
	size_t n;

	if (!r->path || !r->path[0]) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: file replica without a path",
			     r->name ? r->name : "file");
		return NULL;
	}
	fs = calloc(1, sizeof(*fs));
	if (!fs || !(fs->root = strdup(r->path)))
		goto oom;
	n = strlen(fs->root);
	while (n > 1 && fs->root[n - 1] == '/')
		fs->root[--n] = '\0';
	if (n + 2 >= PATH_MAX) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: path too long", r->name ? r->name : "file");
		file_destroy(&fs->base);
		return NULL;
	}
	if (asprintf(&fs->base.description, "file %s", fs->root) < 0) {
		fs->base.description = NULL;
		goto oom;
	}
	/* a symlinked mount and its target are one place (a relative root is left as is) */
	char real[PATH_MAX];
	if (asprintf(&fs->base.location, "file %s",
		     pathnorm_resolve(fs->root, real, sizeof(real)) == 0 ? real : fs->root) < 0) {
		fs->base.location = NULL;
		goto oom;
	}
	fs->base.ops = &file_ops;
	fs->base.type = "file";
	return &fs->base;
oom:
	if (fs)
		file_destroy(&fs->base);
	st_error_set(err, ST_PERMANENT, 0, "replica %s: out of memory", r->name ? r->name : "file");
	return NULL;
}
