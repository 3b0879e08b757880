/*
 * restore_db.c — the temp database of a restore (restore_apply_int.h): each
 * WAL index applied, validated by wal_reader and checkpointed by SQLite,
 * then the file finished (journal_mode=DELETE, quick_check while another
 * thread syncs it) and installed (owner, mode, fsync, rename without
 * replacing, fsync of the directory). SQLite's failures name their cause:
 * our disk (FULL, IOERR, …) or the data we were given.
 */
#include "replication/restore_apply_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "replication/lz4io.h"
#include "replication/ravfs.h"
#include "replication/wal.h"
#include "common/banned.h"

/* ---- applying one index ---- */

struct wal_out {
	int fd;
	struct wal_reader r;
	uint64_t n;
	int werr;      /* errno of a failed write: our disk, not the replica */
	/* a segment that starts before n: its first bytes must equal what is there */
	int rfd;       /* the temp WAL, read back */
	uint64_t cmp_at, skip;
	uint64_t seen; /* bytes the current segment decompressed to */
	bool differs;
};

/* Compare up to len bytes of the overlap with the temp WAL; returns how many matched, or -1. */
static ssize_t overlap_check(struct wal_out *w, const unsigned char *buf, size_t len)
{
	unsigned char have[4096];
	size_t k = len < w->skip ? len : (size_t)w->skip;
	if (k > sizeof(have))
		k = sizeof(have);
	ssize_t r = pread(w->rfd, have, k, (off_t)w->cmp_at);
	if (r < 0) {
		w->werr = errno;
		return -1;
	}
	if ((size_t)r != k || memcmp(have, buf, k) != 0) {
		w->differs = true;
		return -1;
	}
	w->cmp_at += k;
	w->skip -= k;
	return (ssize_t)k;
}

static int wal_out_write(void *ctx, const void *buf, size_t len)
{
	struct wal_out *w = ctx;
	w->seen += len;
	while (w->skip > 0 && len > 0) {
		ssize_t k = overlap_check(w, buf, len);
		if (k < 0)
			return -1;
		buf = (const unsigned char *)buf + k;
		len -= (size_t)k;
	}
	if (len == 0)
		return 0;
	wal_reader_feed(&w->r, buf, len); /* failure is checked after each segment */
	if (st_fd_sink_write(&w->fd, buf, len) < 0) {
		w->werr = errno;
		return -1;
	}
	w->n += len;
	return 0;
}

/* An SQLite failure on the temp database: our disk or memory, or the data we wrote. */
static enum rs_cause sqlite_cause(int code)
{
	switch (code) {
	case SQLITE_FULL: case SQLITE_IOERR: case SQLITE_CANTOPEN: case SQLITE_READONLY:
	case SQLITE_NOMEM: case SQLITE_PERM:
		return RS_CAUSE_LOCAL;
	default:
		return RS_CAUSE_REPLICA;
	}
}

/*
 * Run a one-row pragma; copies the first column as text into out. Returns 0,
 * or SQLite's primary result code (see sqlite_cause()).
 */
static int pragma_row(sqlite3 *db, const char *sql, int64_t cols[3], char *out, size_t outlen,
		      char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	(void)ravfs_take_read_errno();
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		int read_err = ravfs_take_read_errno();
		int e = read_err ? read_err : sqlite3_system_errno(db);
		/* SQLite keeps no errno for a full disk: say which file system (QA115 O1) */
		const char *file = sqlite3_db_filename(db, "main");
		if (!e && (rc & 0xff) == SQLITE_FULL)
			snprintf(err, errlen, "%s: %s (No space left on device: the file system of "
				 "%s)", sql, sqlite3_errmsg(db), file && *file ? file : "the target");
		else
			snprintf(err, errlen, "%s: %s%s%s%s", sql, sqlite3_errmsg(db), e ? " (" : "",
				 e ? strerror(e) : "", e ? ")" : "");
		sqlite3_finalize(st);
		/* "malformed" after a failed read of our file is our disk's error (ravfs.h) */
		return read_err ? SQLITE_IOERR : rc == SQLITE_DONE ? SQLITE_ERROR : rc & 0xff;
	}
	if (cols)
		for (int i = 0; i < 3; i++)
			cols[i] = sqlite3_column_int64(st, i);
	if (out) {
		const unsigned char *t = sqlite3_column_text(st, 0);
		snprintf(out, outlen, "%s", t ? (const char *)t : "");
	}
	sqlite3_finalize(st);
	return 0;
}

/* Close a connection open_tmp() gave, after rs_fail can no longer interrupt it. */
static int close_tmp(struct apply *a, sqlite3 *db)
{
	pthread_mutex_lock(&a->mu);
	if (a->live_db == db)
		a->live_db = NULL;
	pthread_mutex_unlock(&a->mu);
	return sqlite3_close(db);
}

/*
 * Open the temp database through ravfs (its read-ahead serves the check, its
 * read errors tell our disk from the replica). synchronous=OFF: SQLite's own
 * fsyncs (each checkpoint, the switch to journal_mode=DELETE) are wasted on
 * a file that rs_install() fsyncs once before the rename and that is
 * discarded if we crash.
 */
/*
 * Why SQLite could not make the temp database's -wal or -shm when the
 * filesystem is full: its read-only retry leaves ENOENT as the error, for a
 * file that is there (QA59 #5). "" when the filesystem has room.
 */
static const char *full_fs(const char *path)
{
	char dir[PATH_MAX];
	struct statvfs v;
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	if (statvfs(dir, &v) < 0)
		return "";
	if (v.f_files > 0 && v.f_ffree == 0)
		return "; its filesystem has no free inodes left (No space left on device)";
	if (v.f_blocks > 0 && v.f_bfree == 0) /* ramfs and some FUSE count no blocks at all */
		return "; its filesystem is full (No space left on device)";
	return "";
}

/*
 * What SQLite's CORRUPT or NOTADB on the temp database says of the replica:
 * its objects validated one by one, but together they are no database; name
 * them, not only the temp files SQLite read (QA79). "" for other codes.
 * index: how far the WAL was applied (UINT32_MAX: only the snapshot).
 */
static void damaged_note(const struct apply *a, int code, uint32_t index, char *buf, size_t len)
{
	buf[0] = '\0';
	if (code != SQLITE_CORRUPT && code != SQLITE_NOTADB)
		return;
	char upto[32] = "";
	if (index != UINT32_MAX)
		snprintf(upto, sizeof(upto), " up to index %08x", index);
	snprintf(buf, len, " (generation %s from %s%s is no database: its snapshot or a segment "
		 "is damaged)", a->c->plan.generation, a->c->name, upto);
}

static sqlite3 *open_tmp(struct apply *a)
{
	sqlite3 *db = NULL;
	(void)ravfs_take_read_errno();
	if (sqlite3_open_v2(a->tmp, &db, SQLITE_OPEN_READWRITE, ravfs_name()) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL) != SQLITE_OK) {
		int read_err = ravfs_take_read_errno();
		int e = read_err ? read_err : db ? sqlite3_system_errno(db) : 0;
		/* a snapshot that is no database (NOTADB, CORRUPT) is the replica's fault,
		 * unless one of our reads failed */
		const char *full = full_fs(a->tmp);
		char damaged[200] = "";
		if (db && !read_err && !full[0])
			damaged_note(a, sqlite3_errcode(db) & 0xff, UINT32_MAX, damaged,
				     sizeof(damaged));
		rs_fail(a, db && !read_err && !full[0] ? sqlite_cause(sqlite3_errcode(db) & 0xff)
						       : RS_CAUSE_LOCAL,
			"open %s%s: %s%s%s%s%s%s", a->tmp,
			a->c->plan.nsegments ? " and read its -wal" : "",
			db ? sqlite3_errmsg(db) : "out of memory", e ? " (" : "", e ? strerror(e) : "",
			e ? ")" : "", full, damaged);
		sqlite3_close(db);
		return NULL;
	}
	pthread_mutex_lock(&a->mu);
	bool stopped = a->abort;
	if (!stopped)
		a->live_db = db; /* from here a failure or a stop interrupts what it runs */
	pthread_mutex_unlock(&a->mu);
	if (stopped) {
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

static int checkpoint_index(struct apply *a, uint32_t index, uint64_t frames)
{
	sqlite3 *db = NULL;
	char err[300];
	int64_t r[3];
	int rc = -1, code;

	if (!(db = open_tmp(a)))
		goto out;
	/* PASSIVE first: SQLite must see every frame the validator accepted */
	if ((code = pragma_row(db, "PRAGMA wal_checkpoint(PASSIVE)", r, NULL, 0, err, sizeof(err)))) {
		char damaged[200];
		damaged_note(a, code, index, damaged, sizeof(damaged));
		rs_fail(a, sqlite_cause(code), "checkpoint of %s into %s: %s%s", a->tmp_wal, a->tmp,
			err, damaged);
		goto out;
	}
	if (r[0] != 0 || (uint64_t)r[1] != frames || r[2] != r[1]) {
		rs_fail(a, RS_CAUSE_REPLICA, "checkpoint of %s applied %lld of %llu frames (busy=%lld)",
		     a->tmp_wal, (long long)r[2], (unsigned long long)frames, (long long)r[0]);
		goto out;
	}
	if ((code = pragma_row(db, "PRAGMA wal_checkpoint(TRUNCATE)", r, NULL, 0, err,
			       sizeof(err))) || r[0] != 0) {
		rs_fail(a, code ? sqlite_cause(code) : RS_CAUSE_REPLICA, "checkpoint(TRUNCATE) of %s: %s",
		     a->tmp, code ? err : "busy");
		goto out;
	}
	rc = 0;
out:
	if (db)
		close_tmp(a, db);
	return rc;
}

int rs_apply_index(struct apply *a, struct idx_job *j, uint32_t page_size, struct wal_pos *pos)
{
	struct wal_out w = { .fd = -1, .rfd = -1 };
	unsigned char *buf = NULL;
	char path[PATH_MAX + 16];
	int in = -1, rc = -1;

	rs_job_path(a, j, path, sizeof(path));
	if (wal_reader_init(&w.r) < 0 || !(buf = malloc(RS_IO_CHUNK))) {
		rs_fail(a, RS_CAUSE_LOCAL, "out of memory");
		goto out;
	}
	in = open(path, O_RDONLY | O_CLOEXEC);
	w.fd = open(a->tmp_wal, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (w.fd >= 0)
		w.rfd = open(a->tmp_wal, O_RDONLY | O_CLOEXEC);
	if (in < 0 || w.fd < 0 || w.rfd < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "open %s: %s", in < 0 ? path : a->tmp_wal, strerror(errno));
		goto out;
	}
	for (size_t k = 0; k < j->count; k++) {
		const struct cat_segment *s = &a->c->plan.segments[j->first + k];
		char key[LAYOUT_KEY_MAX];
		struct st_sink wsink = { wal_out_write, &w }, dsink;
		struct lz4_dec dec;
		layout_wal_key(key, a->c->plan.generation, s->index, s->offset);
		/*
		 * A segment may overlap the one before it (Litestream re-sends
		 * bytes after some restarts): the overlap must be the same bytes,
		 * then only the rest is new. One that starts past the end is a gap.
		 */
		if (s->offset > w.n || (k == 0 && s->offset != 0)) {
			rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s starts at offset %u, expected %llu "
			     "(missing segment)", key, a->c->name, s->offset, (unsigned long long)w.n);
			goto out;
		}
		w.cmp_at = s->offset;
		w.skip = w.n - s->offset;
		w.seen = 0;
		if (lz4_dec_init(&dec, &dsink, &wsink) < 0) {
			rs_fail(a, RS_CAUSE_LOCAL, "out of memory");
			goto out;
		}
		uint64_t left = j->lens[k];
		bool ok = true;
		while (left > 0 && ok) {
			ssize_t r = read(in, buf, left < RS_IO_CHUNK ? left : RS_IO_CHUNK);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				rs_fail(a, RS_CAUSE_LOCAL, "read %s: %s", path, r ? strerror(errno) : "short");
				ok = false;
				break;
			}
			left -= (uint64_t)r;
			if (dsink.write(dsink.ctx, buf, (size_t)r) < 0)
				ok = false;
		}
		if (ok && lz4_dec_finish(&dec) < 0)
			ok = false;
		if (!ok && w.differs)
			rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s overlaps the one before it with "
				"other bytes (at offset %llu): two histories of one index", key,
				a->c->name, (unsigned long long)w.cmp_at);
		else if (!ok && w.werr)
			rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp_wal, strerror(w.werr));
		else if (!ok && !rs_aborted(a))
			rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: %s", key, a->c->name,
			     dec.error[0] ? dec.error : "write failed");
		lz4_dec_release(&dec);
		if (!ok)
			goto out;
		if (w.r.failed) {
			rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: %s", key, a->c->name, w.r.error);
			goto out;
		}
		/*
		 * Neither tool uploads a segment without WAL bytes: an empty one
		 * lost its content (an empty or skippable LZ4 frame in its place).
		 * Taken as "nothing more", the index would end early, silently.
		 */
		if (w.seen == 0) {
			rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: it holds no WAL bytes",
				key, a->c->name);
			goto out;
		}
		if (w.r.have_header && w.r.hdr.page_size != page_size) {
			rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s: page size %u, database has %u", key,
			     a->c->name, w.r.hdr.page_size, page_size);
			goto out;
		}
	}
	/*
	 * Both tools upload whole frames only, so an index whose segments end
	 * inside a frame lost bytes: a truncated object. SQLite would drop the
	 * partial frame and its transaction with it, silently.
	 */
	if (wal_reader_partial(&w.r)) {
		const struct cat_segment *s = &a->c->plan.segments[j->first + j->count - 1];
		char key[LAYOUT_KEY_MAX];
		layout_wal_key(key, a->c->plan.generation, s->index, s->offset);
		rs_fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: it ends %zu bytes into a frame "
		     "(truncated)", key, a->c->name, wal_reader_partial(&w.r));
		goto out;
	}
	if (close(w.fd) < 0) {
		w.fd = -1;
		rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp_wal, strerror(errno));
		goto out;
	}
	w.fd = -1;
	uint64_t frames = w.r.commit_end > WAL_HEADER_SIZE
				  ? (w.r.commit_end - WAL_HEADER_SIZE) / wal_frame_size(page_size)
				  : 0;
	if (checkpoint_index(a, j->index, frames) < 0)
		goto out;
	pos->index = j->index;
	/* a WAL header alone (a placeholder, wal.h) holds nothing: the index ends at 0 */
	pos->offset = w.n == WAL_HEADER_SIZE ? 0 : (uint32_t)w.n;
	rc = 0;
out:
	if (in >= 0)
		close(in);
	if (w.fd >= 0)
		close(w.fd);
	if (w.rfd >= 0)
		close(w.rfd);
	wal_reader_release(&w.r);
	free(buf);
	unlink(path);
	return rc;
}

/* ---- finishing ---- */

/* The data sync of the finished temp file, run beside the integrity check. */
struct bg_sync {
	pthread_t thread;
	int fd;
	int err;      /* 0, or the errno of fdatasync */
};

static void *bg_sync_thread(void *p)
{
	struct bg_sync *b = p;
	if (fdatasync(b->fd) < 0)
		b->err = errno;
	return NULL;
}

int rs_finish_db(struct apply *a)
{
	sqlite3 *db = NULL;
	char err[300], text[300];
	int rc = -1;
	struct bg_sync bg = { .fd = -1 };
	bool bg_started = false;

	if (!(db = open_tmp(a)))
		goto out;
	/*
	 * quick_check reads each page about once, in b-tree order, revisiting
	 * only the path from the root: SQLite's default 2 MB cache would be
	 * malloc'd and faulted in a page at a time for nothing (15 MB database:
	 * check 14 ms -> 6 ms; 500 MB: unchanged). integrity_check looks rows
	 * up in every index and keeps the default.
	 */
	if (a->o->verify == VERIFY_QUICK)
		(void)sqlite3_exec(db, "PRAGMA cache_size=32", NULL, NULL, NULL);
	/* one self-contained file: no -wal/-shm beside it (vaultwarden #4418) */
	int code = pragma_row(db, "PRAGMA journal_mode=DELETE", NULL, text, sizeof(text), err,
			      sizeof(err));
	if (code || strcmp(text, "delete") != 0) {
		rs_fail(a, code ? sqlite_cause(code) : RS_CAUSE_REPLICA, "journal_mode=DELETE: %s",
		     code ? err : text);
		goto out;
	}
	/*
	 * The file's content is final: the check only reads it, so the disk can
	 * take the data meanwhile (rs_install()'s fsync then finds it clean). Our
	 * descriptor is closed only after SQLite's connection: closing any
	 * descriptor of a file drops the process's POSIX locks on it, the
	 * connection's included.
	 */
	if (a->o->verify != VERIFY_NONE && (bg.fd = open(a->tmp, O_RDONLY | O_CLOEXEC)) >= 0)
		bg_started = pthread_create(&bg.thread, NULL, bg_sync_thread, &bg) == 0;
	if (a->o->verify != VERIFY_NONE) {
		const char *sql = a->o->verify == VERIFY_INTEGRITY ? "PRAGMA integrity_check"
								   : "PRAGMA quick_check";
		int64_t t0 = clock_mono_ms();
		if ((code = pragma_row(db, sql, NULL, text, sizeof(text), err, sizeof(err)))) {
			rs_fail(a, sqlite_cause(code), "%s: %s", sql, err);
			goto out;
		}
		if (strcmp(text, "ok") != 0) {
			for (char *nl = text; (nl = strchr(nl, '\n')); ) /* one line in the log */
				*nl = ' ';
			int read_err = ravfs_take_read_errno();
			if (read_err)
				rs_fail(a, RS_CAUSE_LOCAL, "%s of %s: read: %s (%s)", sql, a->tmp,
					strerror(read_err), text);
			else
				rs_fail(a, RS_CAUSE_REPLICA, "%s of the restored database failed: %s", sql,
					text);
			goto out;
		}
		log_info("restore", "verified", "check=%s ms=%lld", sql + 7,
			 (long long)(clock_mono_ms() - t0));
	}
	rc = 0;
out:
	if (bg_started) {
		pthread_join(bg.thread, NULL);
		if (bg.err && rc == 0) {
			rs_fail(a, RS_CAUSE_LOCAL, "fsync %s: %s", a->tmp, strerror(bg.err));
			rc = -1;
		}
	}
	if (db && close_tmp(a, db) != SQLITE_OK && rc == 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "close %s", a->tmp);
		rc = -1;
	}
	if (bg.fd >= 0)
		close(bg.fd);
	return rc;
}

static int rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* file systems without RENAME_NOREPLACE: link refuses an existing name too */
	if (link(from, to) < 0)
		return -1;
	if (unlink(from) < 0) {
		int e = errno;
		unlink(to); /* ours: link refused to replace anything */
		errno = e;
		return -1;
	}
	return 0;
}

int rs_install(struct apply *a)
{
	int fd = open(a->tmp, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "open %s: %s", a->tmp, strerror(errno));
		return -1;
	}
	if ((a->o->uid != (uid_t)-1 || a->o->gid != (gid_t)-1) &&
	    fchown(fd, a->o->uid, a->o->gid) < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "chown %s: %s", a->tmp, strerror(errno));
		close(fd);
		return -1;
	}
	if (fchmod(fd, a->o->mode) < 0 || fsync(fd) < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "fsync %s: %s", a->tmp, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	char why[512] = "";
	int brc = a->o->before_rename ? a->o->before_rename(a->o->before_ctx, a->tmp, why, sizeof(why)) : 0;
	if (brc < 0) {
		rs_fail(a, brc == -1 ? RS_CAUSE_REPLICA : RS_CAUSE_LOCAL, "%s", why);
		return -1;
	}
	if (rename_noreplace(a->tmp, a->o->target) < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "rename %s to %s: %s", a->tmp, a->o->target, strerror(errno));
		if (a->o->rename_failed)
			a->o->rename_failed(a->o->before_ctx);
		return -1;
	}
	if (fs_fsync_parent(a->o->target) < 0) {
		/* the rename may not outlive a crash: take it back, a failure leaves nothing there
		 * (or what was there before, put back) */
		int e = errno;
		unlink(a->o->target);
		rs_fail(a, RS_CAUSE_LOCAL, "fsync the directory of %s: %s", a->o->target, strerror(e));
		if (a->o->rename_failed)
			a->o->rename_failed(a->o->before_ctx);
		return -1;
	}
	return 0;
}

