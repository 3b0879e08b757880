/*
 * restore_local.c — the files already at (or beside) the restore target:
 * stray -wal/-shm, an existing database and its litevisor state, and the
 * owner and mode a restored file gets. Nothing here is ever deleted: files
 * that must make way are moved aside (fs_move_aside) and the move is logged.
 */
#include "replication/restore_int.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "replication/localstate.h"
#include "replication/statelock.h"
#include "common/banned.h"

void rs_owner_for(const struct config *cfg, const char *target, uid_t *uid, gid_t *gid,
		  mode_t *mode)
{
	char dir[PATH_MAX];
	struct stat st;

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	*mode = 0644 & ~fs_umask();
	if (geteuid() != 0)
		return; /* we can only create files as ourselves */
	if (cfg && cfg->supervisor.user) {
		struct passwd pw, *pr = NULL;
		struct group gr, *gq = NULL;
		char buf[4096];
		char *end;
		unsigned long n = strtoul(cfg->supervisor.user, &end, 10);
		if (*end == '\0') {
			*uid = (uid_t)n;
		} else if (getpwnam_r(cfg->supervisor.user, &pw, buf, sizeof(buf), &pr) == 0 && pr) {
			*uid = pr->pw_uid;
			*gid = pr->pw_gid;
		}
		if (cfg->supervisor.group) {
			n = strtoul(cfg->supervisor.group, &end, 10);
			if (*end == '\0')
				*gid = (gid_t)n;
			else if (getgrnam_r(cfg->supervisor.group, &gr, buf, sizeof(buf), &gq) == 0 && gq)
				*gid = gq->gr_gid;
		}
		if (*uid != (uid_t)-1) {
			*mode = 0640;
			return;
		}
		log_warn("restore", "configured user not found; using the directory's owner",
			 "user=%s", cfg->supervisor.user);
	}
	/*
	 * The nearest directory that exists: the directories restore creates on
	 * the way take its owner (restore_target.c), so the file comes out as it would
	 * in an existing directory of that owner.
	 */
	snprintf(dir, sizeof(dir), "%s", target);
	for (char *d = dirname(dir);; d = dirname(d)) {
		if (stat(d, &st) == 0) {
			*uid = st.st_uid;
			*gid = st.st_gid;
			*mode = 0640;
			return;
		}
		if (errno != ENOENT || !strcmp(d, "/") || !strcmp(d, "."))
			return;
	}
}

/*
 * Move path aside if it exists and log where it went. 0 = moved or absent;
 * -1 with errno set and nothing logged, for the caller to try otherwise.
 */
static int aside_or_errno(const char *path, const char *tag, const char *why, char *moved,
			  size_t mlen)
{
	char *to = NULL;
	if (fs_move_aside(path, tag, &to) < 0)
		return errno == ENOENT ? 0 : -1;
	log_warn("restore", "moved aside (kept, not deleted)", "path=\"%s\" to=\"%s\" why=\"%s\"",
		 path, to ? to : "?", why);
	if (moved && mlen && to && moved[0] == '\0')
		snprintf(moved, mlen, "%s", to);
	free(to);
	return 0;
}

static int aside_failed(const char *path)
{
	int e = errno;
	log_error("restore", "cannot move a file aside", "path=\"%s\" err=\"%s\"", path,
		  strerror(e));
	errno = e;
	return -1;
}

/* Move path aside if it exists; log where it went. 0 = moved or absent, -1 = error (logged). */
static int aside(const char *path, const char *tag, const char *why, char *moved, size_t mlen)
{
	return aside_or_errno(path, tag, why, moved, mlen) == 0 ? 0 : aside_failed(path);
}

int rs_move_strays(const char *target)
{
	char p[PATH_MAX];
	int rc = 0;
	snprintf(p, sizeof(p), "%s-wal", target);
	rc |= aside(p, "stray", "a -wal without its database is never replayed onto a restore",
		    NULL, 0);
	snprintf(p, sizeof(p), "%s-shm", target);
	rc |= aside(p, "stray", "a -shm without its database", NULL, 0);
	snprintf(p, sizeof(p), "%s-journal", target);
	rc |= aside(p, "stray", "a rollback journal without its database", NULL, 0);
	return rc ? -1 : 0;
}

bool rs_no_db_file_at(const char *path, char *why, size_t len)
{
	struct stat l, st;
	if (lstat(path, &l) < 0)
		return false;
	if (stat(path, &st) < 0) {
		int e = errno;
		char to[PATH_MAX];
		ssize_t n = S_ISLNK(l.st_mode) ? readlink(path, to, sizeof(to) - 1) : -1;
		to[n > 0 ? n : 0] = '\0';
		if (e == ENOENT && n > 0)
			snprintf(why, len, "%s is a symlink to %s, which does not exist: give %s "
				 "itself (SQLite keeps the -wal and -shm beside it)", path, to, to);
		else
			snprintf(why, len, "%s: %s", path, strerror(e));
		return true;
	}
	if (S_ISDIR(st.st_mode))
		snprintf(why, len, "%s is a directory, not a database", path);
	else if (!S_ISREG(st.st_mode))
		snprintf(why, len, "%s is not a regular file, not a database", path);
	else
		return false;
	return true;
}

int rs_move_empty_aside(const char *target)
{
	char wal[PATH_MAX];
	struct stat st, ws;
	if (lstat(target, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 0)
		return 0;
	snprintf(wal, sizeof(wal), "%s-wal", target);
	if (stat(wal, &ws) == 0 && ws.st_size > 0)
		return 0; /* a WAL never checkpointed holds the whole database */
	if (aside(target, "empty", "an empty file holds no data: restoring as for a missing "
		  "database", NULL, 0) < 0)
		return -1;
	return 1;
}

/*
 * Entries of sub back into statedir, where none of that name is (rollback).
 * Returns how many went back; *left (may be NULL) is true when some could
 * not (sub then stays, holding them, kept).
 */
static size_t move_back(const char *sub, const char *statedir, bool *left)
{
	char from[PATH_MAX], to[PATH_MAX];
	struct stat st;
	size_t n = 0;
	DIR *d = opendir(sub);
	if (!d) {
		if (left)
			*left = errno != ENOENT; /* what it holds cannot be known: said to stay */
		return 0;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if ((size_t)snprintf(from, sizeof(from), "%s/%s", sub, e->d_name) < sizeof(from) &&
		    (size_t)snprintf(to, sizeof(to), "%s/%s", statedir, e->d_name) < sizeof(to) &&
		    lstat(to, &st) < 0 && errno == ENOENT && rename(from, to) == 0)
			n++;
	}
	closedir(d);
	/* empty unless something could not go back: then it stays, kept */
	bool stays = rmdir(sub) < 0 && errno != ENOENT;
	if (fs_fsync_dir(statedir) < 0)
		log_warn("restore", "cannot sync the state directory after moving its state back: "
			 "the move back may not outlive a crash", "path=\"%s\" err=\"%s\"", statedir,
			 strerror(errno));
	if (left)
		*left = stays;
	return n;
}

/* A new "<statedir>/.old-<ts>[.k]": never one that exists (two moves within a ms). */
static int make_sub(const char *statedir, const char *ts, char *sub, size_t len)
{
	for (int k = 0; k < 10; k++) {
		int w = k ? snprintf(sub, len, "%s/.old-%s.%d", statedir, ts, k)
			  : snprintf(sub, len, "%s/.old-%s", statedir, ts);
		if (w < 0 || (size_t)w >= len) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (mkdir(sub, 0750) == 0)
			return 0;
		if (errno != EEXIST)
			return -1;
	}
	return -1;
}

/*
 * A state directory that cannot be renamed (a volume mounted at the
 * meta-path; a parent the service user cannot write): litevisor's own
 * entries in it (localstate_is_own_entry) go into "<statedir>/.old-<time>"
 * instead, where nothing reads them. Anything else stays where it is: a
 * volume's lost+found, a user's files, another database's meta-path, the
 * lock file, earlier copies. All of them or none: a move that fails half way
 * is undone. *moved gets the new directory ("" when nothing was there).
 * 0, or -1 (logged).
 */
static int aside_within(const char *statedir, const char *why, int rename_errno, char *moved,
			size_t mlen, bool *left)
{
	char ts[40], sub[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
	size_t n = 0;
	int rc = 0;
	bool made = false;
	clock_rfc3339(clock_wall_ns(), ts, sizeof(ts));
	DIR *d = opendir(statedir);
	if (!d) {
		rc = -1;
		goto out;
	}
	struct dirent *e;
	while (rc == 0 && (e = readdir(d))) {
		if (!localstate_is_own_entry(e->d_name))
			continue;
		/* made for the first entry: nothing of litevisor's, no copy */
		if (!made && make_sub(statedir, ts, sub, sizeof(sub)) < 0) {
			rc = -1;
			break;
		}
		made = true;
		if ((size_t)snprintf(from, sizeof(from), "%s/%s", statedir, e->d_name) >= sizeof(from) ||
		    (size_t)snprintf(to, sizeof(to), "%s/%s", sub, e->d_name) >= sizeof(to) ||
		    rename(from, to) < 0)
			rc = -1;
		else
			n++;
	}
	closedir(d);
	if (rc == 0 && n && (fs_fsync_dir(sub) < 0 || fs_fsync_dir(statedir) < 0))
		rc = -1;
out:
	if (rc < 0) {
		int e2 = errno;
		bool stays = false;
		size_t back = n ? move_back(sub, statedir, &stays) : 0;
		if (n == 0 && made)
			(void)rmdir(sub); /* an empty copy would count as one, and push a real one out */
		log_error("restore", "cannot move the state directory aside, nor its state within it",
			  "path=\"%s\" err=\"%s\" rename_err=\"%s\" moved_back=%zu moved=%zu%s%s%s",
			  statedir, strerror(e2), strerror(rename_errno), back, n,
			  stays ? " left_in=\"" : "", stays ? sub : "", stays ? "\"" : "");
		if (left)
			*left = stays;
		errno = e2;
		return -1;
	}
	if (n == 0)
		return 0; /* nothing of litevisor's in it */
	log_warn("restore", "moved aside within the state directory (kept, not deleted): it cannot "
		 "be renamed", "path=\"%s\" to=\"%s\" entries=%zu rename_err=\"%s\" why=\"%s\"",
		 statedir, sub, n, strerror(rename_errno), why);
	if (moved && mlen)
		snprintf(moved, mlen, "%s", sub);
	return 0;
}

/* rs_move_state_aside; *left: a failed move within left some state where it went. */
static int move_state_aside(const char *statedir, const char *why, char *moved, size_t mlen,
			    bool *left)
{
	struct stat st;
	*left = false;
	if (moved && mlen)
		moved[0] = '\0';
	if (lstat(statedir, &st) < 0 || aside_or_errno(statedir, "old", why, moved, mlen) == 0)
		return 0;
	int e = errno;
	if (S_ISDIR(st.st_mode) && (e == EBUSY || e == EACCES || e == EPERM || e == EXDEV || e == EROFS))
		return aside_within(statedir, why, e, moved, mlen, left);
	return aside_failed(statedir);
}

int rs_move_state_aside(const char *statedir, const char *why, char *moved, size_t mlen)
{
	bool left;
	return move_state_aside(statedir, why, moved, mlen, &left);
}

/*
 * Move target's companion target<suffix> ("-wal", "-shm") to to<suffix>,
 * beside the database moved to `to`, where SQLite opening that copy finds it
 * (a WAL under another name is ignored, and the copy looks empty or old).
 * Under a name of its own if that one is taken. 0 = moved or absent, -1 = error.
 */
static int aside_beside(const char *target, const char *to, const char *suffix, const char *why)
{
	char from[PATH_MAX], dst[PATH_MAX];
	struct stat st;
	snprintf(from, sizeof(from), "%s%s", target, suffix);
	if (lstat(from, &st) < 0)
		return errno == ENOENT ? 0 : aside(from, "replaced", why, NULL, 0);
	if (!to[0] || snprintf(dst, sizeof(dst), "%s%s", to, suffix) >= (int)sizeof(dst) ||
	    lstat(dst, &st) == 0)
		return aside(from, "replaced", why, NULL, 0);
	if (rename(from, dst) < 0 || fs_fsync_parent(from) < 0) {
		int e = errno;
		log_error("restore", "cannot move a file aside", "path=\"%s\" err=\"%s\"", from,
			  strerror(e));
		errno = e;
		return -1;
	}
	log_warn("restore", "moved aside (kept, not deleted)", "path=\"%s\" to=\"%s\" why=\"%s\"",
		 from, dst, why);
	return 0;
}

/*
 * The database moved aside as to, and its -wal/-shm beside it, back at
 * target: neither a path without a database nor a database without its WAL
 * or the state that makes its replica's history its own (the next start
 * would compare tables, and could refuse that history for good).
 */
/* base+sfx renamed to dst+sfx; absent is fine. false (logged) when it could not go. */
static bool move_one(const char *base, const char *dst, const char *sfx)
{
	char from[PATH_MAX], to[PATH_MAX];
	snprintf(from, sizeof(from), "%s%s", base, sfx);
	snprintf(to, sizeof(to), "%s%s", dst, sfx);
	if (rename(from, to) == 0 || errno == ENOENT)
		return true;
	log_error("restore", "cannot move a file back", "path=\"%s\" to=\"%s\" err=\"%s\"", from,
		  to, strerror(errno));
	return false;
}

static bool put_back(const char *target, const char *to, const char *why, bool with_state)
{
	/* its -wal first: the database never goes back without it (its last commits) */
	bool all = move_one(to, target, "-wal");
	if (all) {
		(void)move_one(to, target, "-shm"); /* an index SQLite rebuilds: no data in it */
		all = move_one(to, target, "");
		if (!all) /* the -wal goes back beside it */
			(void)move_one(target, to, "-wal");
	}
	if (!all) {
		log_error("restore", "the local database stays where it was moved aside, with its "
			  "-wal: put it back by hand", "path=\"%s\" at=\"%s\"", target, to);
		return false;
	}
	if (fs_fsync_parent(target) < 0)
		log_warn("restore", "cannot sync the directory after moving the database back: the "
			 "move back may not outlive a crash", "path=\"%s\" err=\"%s\"", target,
			 strerror(errno));
	log_warn("restore", with_state ? "moved back: the local database stays in place with its "
		 "state, nothing restored" : "moved back: the local database stays in place, nothing "
		 "restored, but its state could not be put back (see above)", "path=\"%s\" "
		 "from=\"%s\" why=\"%s\"", target, to, why);
	return true;
}

int rs_move_local_aside(const char *target, const char *statedir, char *moved, size_t mlen,
			char *smoved, size_t slen)
{
	char to[PATH_MAX] = "";
	const char *why = "a replica holds newer data";
	if (moved && mlen)
		moved[0] = '\0';
	if (aside(target, "replaced", why, to, sizeof(to)) < 0)
		return -1;
	const char *fail = NULL;
	bool left = false;
	if (aside_beside(target, to, "-wal", why) < 0 || aside_beside(target, to, "-shm", why) < 0)
		fail = "its -wal or -shm could not be moved aside with it";
	else if (statedir && move_state_aside(statedir, "it described the database moved aside",
					      smoved, slen, &left) < 0)
		fail = "its state directory could not be moved aside";
	if (fail) {
		int e = errno;
		(void)put_back(target, to, fail, !left);
		errno = e;
		return -1;
	}
	if (moved && mlen)
		snprintf(moved, mlen, "%s", to);
	return 0;
}

void rs_put_local_back(const char *target, const char *moved, const char *statedir,
			const char *smoved, const char *why)
{
	size_t n = statedir ? strlen(statedir) : 0;
	bool state_ok = true;
	if (statedir && smoved && smoved[0]) {
		bool left = false;
		if (!strncmp(smoved, statedir, n) && smoved[n] == '/') {
			(void)move_back(smoved, statedir, &left); /* moved within: its entries go back */
			if (left)
				log_error("restore", "cannot move the state back: some of it stays where it "
					  "was moved", "path=\"%s\" to=\"%s\"", smoved, statedir);
		} else if (rename(smoved, statedir) < 0) {
			left = true;
			log_error("restore", "cannot move the state directory back", "path=\"%s\" "
				  "to=\"%s\" err=\"%s\"", smoved, statedir, strerror(errno));
		} else if (fs_fsync_parent(statedir) < 0) {
			log_warn("restore", "cannot sync the directory after moving the state back: "
				 "the move back may not outlive a crash", "path=\"%s\" err=\"%s\"",
				 statedir, strerror(errno));
		}
		state_ok = !left;
	}
	if (moved && moved[0])
		(void)put_back(target, moved, why, state_ok);
}

/* When statedir was last written: t or one of its records, whichever is newer. */
static int64_t state_written_ns(const char *statedir, int64_t t)
{
	static const char *const records[] = { "generation", "restored", "clean" };
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", statedir, records[i]);
		int64_t r = rs_file_mtime_ns(path);
		if (r > t)
			t = r;
	}
	return t;
}

int rs_local_position(const char *statedir, struct wal_pos *pos, int64_t *mtime_ns,
		      int64_t *state_ns)
{
	char path[PATH_MAX];
	struct restored_marker m;

	*mtime_ns = 0;
	if (localstate_position(statedir, pos) == 0) {
		localstate_shadow_path(statedir, pos->generation, pos->index, path, sizeof(path));
		*mtime_ns = rs_file_mtime_ns(path);
	} else if (localstate_read_restored(statedir, &m) == 0) {
		*pos = m.pos;
		snprintf(path, sizeof(path), "%s/restored", statedir);
		*mtime_ns = rs_file_mtime_ns(path);
	} else {
		return -1;
	}
	if (state_ns)
		*state_ns = state_written_ns(statedir, *mtime_ns);
	return 0;
}

int rs_checkpoint_whole(const char *target, char *err, size_t len)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char wal[PATH_MAX + 8];
	struct stat sb;
	int rc = -1;

	if (sqlite3_open_v2(target, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		snprintf(err, len, "open %s: %s", target, db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(db, 1000);
	if (sqlite3_prepare_v2(db, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		snprintf(err, len, "checkpoint of %s: %s", target, sqlite3_errmsg(db));
		goto out;
	}
	if (sqlite3_column_int(st, 0) != 0) {
		snprintf(err, len, "checkpoint of %s: busy (another process holds the database)",
			 target);
		goto out;
	}
	snprintf(wal, sizeof(wal), "%s-wal", target);
	if (stat(wal, &sb) == 0 && sb.st_size > 0) {
		snprintf(err, len, "checkpoint of %s left %lld bytes in its WAL", target,
			 (long long)sb.st_size);
		goto out;
	}
	rc = 0;
out:
	sqlite3_finalize(st);
	if (db && sqlite3_close(db) != SQLITE_OK && rc == 0) {
		snprintf(err, len, "close %s: %s", target, sqlite3_errmsg(db));
		rc = -1;
	}
	return rc;
}

int64_t rs_file_mtime_ns(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return 0;
	return (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}
