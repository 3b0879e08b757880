/*
 * restore_apply.c — turn one candidate's plan into a database file.
 *
 *   snapshot ──get──▶ lz4_dec ──▶ <target>.litevisor-restore        (main thread)
 *   WAL index i ──get (parallel workers)──▶ <tmp>-%08x.lz4 (compressed, as stored)
 *       (the workers start once the snapshot's bytes come: see let_workers_go)
 *   for each index in order: decompress its segments ──▶ <tmp>-wal, validated
 *       by wal_reader (salts, checksum chain, offsets contiguous), then
 *       SQLite checkpoints it (PASSIVE must see every validated frame, then TRUNCATE)
 *   PRAGMA journal_mode=DELETE (one file, no -wal/-shm), quick_check (the
 *   file's data synced meanwhile by another thread), chown/chmod, fsync,
 *   rename (never replacing a file), fsync the directory.
 *
 * Why the workers store compressed bytes: decompression buffers are up to
 * 8 MiB per stream with Litestream's 4 MiB LZ4 blocks, so only two streams
 * are ever decompressed at once (the snapshot, then the WAL applier), and
 * memory stays flat whatever the parallelism or the database size.
 *
 * Any error removes every temp file; nothing is left at the target. One
 * restore at a time per target: an flock(2) on <tmp>.lock (take_lock), and
 * restore_abort() stops the ones in progress (restore.h).
 */
#include "replication/restore_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "replication/filewriter.h"
#include "replication/lz4io.h"
#include "replication/ravfs.h"
#include "replication/wal.h"
#include "replication/xxh32.h"
#include "common/banned.h"

#define PROGRESS_EVERY_MS 3000
#define IO_CHUNK (64 * 1024)

/*
 * The snapshot is decompressed straight into a ring of SNAP_BUFS buffers that
 * a second thread hashes (the frame's XXH32) and writes (filewriter.h), so
 * decompression, checksum and the kernel's copy into the page cache run on
 * two cores. A buffer holds a whole 4 MiB block (Litestream's block size) so
 * LZ4F decodes into it without a copy. Every WRITEBACK_STEP bytes the disk
 * starts writing, and a third thread is asked to flush the file (requests
 * made during a flush are merged into the next), so the final fsync finds
 * little left to do (500 MB from S3: the fsync after the last byte took
 * 0.25 s without those flushes, 0.02 s with one every 64 MiB; every 8 MiB,
 * a 15 MB restore's final fsync fell from 18 to 10 ms, 500 MB unchanged).
 */
#define SNAP_BUFS 2
#define SNAP_BUF_SIZE (4u << 20)
#define WRITEBACK_STEP (8u << 20)
#define FLUSH_STEP WRITEBACK_STEP

/*
 * A service waits for the restore: a transfer stalled for 10 s (under 1 KiB/s)
 * fails and is retried, then the restore falls back to the next candidate,
 * instead of waiting out the 30 s that suits uploads to a busy server.
 */
static const struct st_call transfer_call = { .stall_s = 10 };

enum job_state { JOB_PENDING = 0, JOB_RUNNING, JOB_DONE, JOB_FAILED };

/* One WAL index: all its segments, downloaded back to back into one file. */
struct idx_job {
	uint32_t index;
	size_t first, count;        /* segments of the plan */
	uint64_t *lens;             /* compressed length of each */
	enum job_state state;
};

struct apply {
	struct rs_cand *c;
	const struct rs_apply_opts *o;
	char tmp[PATH_MAX], tmp_wal[PATH_MAX + 8], tmp_shm[PATH_MAX + 8];

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct idx_job *jobs;
	size_t njobs, next;
	bool abort, done;
	bool snap_flowing;           /* the snapshot's bytes are coming (or its GET ended) */
	char err[512];
	enum rs_cause cause;

	atomic_uint_fast64_t bytes;  /* compressed bytes downloaded */
	uint64_t total;
	int64_t t0_ms;
	int64_t snap_ms, wal_ms, verify_ms, install_ms; /* phase timings for the log */
};

/* Where job j's compressed segments go (not stored per job: there may be thousands). */
static char *job_path(const struct apply *a, const struct idx_job *j, char *buf, size_t len)
{
	snprintf(buf, len, "%s-%08x.lz4", a->tmp, j->index);
	return buf;
}

char *rs_temp_path(const char *target, char *buf, size_t len)
{
	snprintf(buf, len, "%s.litevisor-restore", target);
	return buf;
}

/* Record the first error (later ones are consequences). Locks a->mu. */
static void fail(struct apply *a, enum rs_cause cause, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void fail(struct apply *a, enum rs_cause cause, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&a->mu);
	if (!a->abort) {
		va_start(ap, fmt);
		vsnprintf(a->err, sizeof(a->err), fmt, ap);
		va_end(ap);
		a->cause = cause;
		a->abort = true;
	}
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static bool aborted(struct apply *a)
{
	pthread_mutex_lock(&a->mu);
	bool b = a->abort;
	pthread_mutex_unlock(&a->mu);
	return b;
}

/* ---- sinks ---- */

struct fd_count {
	struct apply *a;
	int fd;
	uint64_t n;
	int werr;      /* errno of a failed write: our disk, not the replica */
};

/* Downloaded (compressed) bytes: count them for progress, pass them on. */
struct counting {
	struct apply *a;
	const struct st_sink *inner;
	bool lets_workers_go; /* the snapshot's: its first bytes start the WAL downloads */
};

/*
 * The WAL download workers wait for this. The probe left a warm connection
 * in the candidate's pool (each handle keeps its own), and the snapshot's
 * GET, the restore's critical path, must be the one to take it: over TLS to
 * a far server a new connection costs a handshake or more first. Once the
 * snapshot's bytes come, the workers open theirs alongside.
 */
static void let_workers_go(struct apply *a)
{
	pthread_mutex_lock(&a->mu);
	a->snap_flowing = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static int counting_write(void *ctx, const void *buf, size_t len)
{
	struct counting *k = ctx;
	if (aborted(k->a)) /* stop a doomed download early */
		return -1;
	if (k->lets_workers_go) {
		k->lets_workers_go = false;
		let_workers_go(k->a);
	}
	atomic_fetch_add(&k->a->bytes, len);
	return k->inner->write(k->inner->ctx, buf, len);
}

static int fd_count_write(void *ctx, const void *buf, size_t len)
{
	struct fd_count *f = ctx;
	if (st_fd_sink_write(&f->fd, buf, len) < 0) {
		f->werr = errno;
		return -1;
	}
	f->n += len;
	return 0;
}

/* ---- progress ---- */

static void *progress_thread(void *p)
{
	struct apply *a = p;
	int64_t last = clock_mono_ms();
	pthread_mutex_lock(&a->mu);
	while (!a->done && !a->abort) {
		struct timespec ts;
		int64_t wake = clock_mono_ms() + 250;
		ts.tv_sec = wake / 1000;
		ts.tv_nsec = (wake % 1000) * 1000000;
		pthread_cond_timedwait(&a->cv, &a->mu, &ts);
		int64_t now = clock_mono_ms();
		if (a->done || a->abort || now - last < PROGRESS_EVERY_MS)
			continue;
		last = now;
		uint64_t b = atomic_load(&a->bytes);
		double secs = (double)(now - a->t0_ms) / 1000.0;
		double rate = secs > 0 ? (double)b / secs : 0;
		double eta = rate > 0 && a->total > b ? (double)(a->total - b) / rate : 0;
		log_info("restore", "progress",
			 "replica=%s bytes=%llu total=%llu pct=%.1f rate_mib_s=%.1f eta_s=%.0f",
			 a->c->name, (unsigned long long)b, (unsigned long long)a->total,
			 a->total ? 100.0 * (double)b / (double)a->total : 100.0,
			 rate / (1024 * 1024), eta);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* ---- WAL download workers ---- */

static int download_job(struct apply *a, struct idx_job *j)
{
	struct storage *st = a->c->st;
	const char *gen = a->c->plan.generation;
	struct st_error err = { 0 };
	char key[LAYOUT_KEY_MAX], path[PATH_MAX + 16];
	int fd = open(job_path(a, j, path, sizeof(path)), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		      0600);
	if (fd < 0) {
		fail(a, RS_CAUSE_LOCAL, "create %s: %s", path, strerror(errno));
		return -1;
	}
	for (size_t k = 0; k < j->count; k++) {
		const struct cat_segment *s = &a->c->plan.segments[j->first + k];
		struct fd_count f = { a, fd, 0, 0 };
		struct st_sink fsink = { fd_count_write, &f };
		struct counting cnt = { a, &fsink, false };
		struct st_sink sink = { counting_write, &cnt };
		layout_wal_key(key, gen, s->index, s->offset);
		if (storage_get(st, key, &sink, &transfer_call, &err) < 0) {
			close(fd);
			if (f.werr)
				fail(a, RS_CAUSE_LOCAL, "write %s: %s", path, strerror(f.werr));
			else if (!aborted(a))
				fail(a, err.status == ST_TRANSIENT ? RS_CAUSE_NETWORK : RS_CAUSE_REPLICA,
				     "download %s from %s: %s", key, a->c->name, err.message);
			return -1;
		}
		j->lens[k] = f.n;
	}
	if (close(fd) < 0) {
		fail(a, RS_CAUSE_LOCAL, "write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static void *worker(void *p)
{
	struct apply *a = p;
	pthread_mutex_lock(&a->mu);
	while (!a->abort && !a->done && !a->snap_flowing) /* see let_workers_go() */
		pthread_cond_wait(&a->cv, &a->mu);
	while (!a->abort && a->next < a->njobs) {
		struct idx_job *j = &a->jobs[a->next++];
		j->state = JOB_RUNNING;
		pthread_mutex_unlock(&a->mu);
		int rc = download_job(a, j);
		pthread_mutex_lock(&a->mu);
		j->state = rc == 0 ? JOB_DONE : JOB_FAILED;
		pthread_cond_broadcast(&a->cv);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

/* ---- snapshot ---- */

/* glue: the decoder's zero-copy output is the file writer's ring */
static unsigned char *ring_reserve(void *ctx, size_t *cap)
{
	return fw_reserve(ctx, cap);
}

static int ring_commit(void *ctx, size_t n)
{
	return fw_commit(ctx, n);
}

static void hash_plain(void *ctx, const void *buf, size_t len)
{
	xxh32_update(ctx, buf, len);
}

static int fetch_snapshot(struct apply *a, uint32_t *page_size)
{
	struct st_error err = { 0 };
	char key[LAYOUT_KEY_MAX];
	struct lz4_dec dec;
	struct st_sink dsink;
	struct xxh32 hash;
	int rc = -1, fd = open(a->tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fail(a, RS_CAUSE_LOCAL, "create %s: %s", a->tmp, strerror(errno));
		return -1;
	}
	xxh32_init(&hash, 0);
	struct fw_opts fo = { .nbufs = SNAP_BUFS, .bufsize = SNAP_BUF_SIZE,
			      .writeback_step = WRITEBACK_STEP, .flush_step = FLUSH_STEP,
			      .inspect = hash_plain,
			      .inspect_ctx = &hash };
	struct fwriter *fw = fw_start(fd, &fo, NULL);
	if (!fw) {
		close(fd);
		fail(a, RS_CAUSE_LOCAL, "cannot start the snapshot writer: %s", strerror(errno));
		return -1;
	}
	struct lz4_out ring = { ring_reserve, ring_commit, fw };
	if (lz4_dec_init_direct(&dec, &dsink, &ring) < 0) {
		fw_free(fw);
		close(fd);
		fail(a, RS_CAUSE_LOCAL, "out of memory");
		return -1;
	}
	lz4_dec_defer_checksum(&dec);
	struct counting cnt = { a, &dsink, true };
	struct st_sink sink = { counting_write, &cnt };
	layout_snapshot_key(key, a->c->plan.generation, a->c->plan.snapshot.index);
	if (storage_get(a->c->st, key, &sink, &transfer_call, &err) < 0) {
		int werr = fw_error(fw);
		if (werr) /* our disk, not the replica: e.g. ENOSPC */
			fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(werr));
		else if (dec.failed)
			fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is corrupt: %s", key, a->c->name, dec.error);
		else if (!aborted(a))
			fail(a, err.status == ST_TRANSIENT ? RS_CAUSE_NETWORK : RS_CAUSE_REPLICA,
			     "download %s from %s: %s", key, a->c->name, err.message);
		goto out;
	}
	if (lz4_dec_finish(&dec) < 0) {
		fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is corrupt: %s", key, a->c->name, dec.error);
		goto out;
	}
	if (fw_finish(fw) < 0) {
		fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(errno));
		goto out;
	}
	if (dec.checksum_deferred && xxh32_digest(&hash) != dec.content_checksum) {
		fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is corrupt: LZ4 content checksum mismatch "
		     "(%08x, frame says %08x)", key, a->c->name, xxh32_digest(&hash),
		     dec.content_checksum);
		goto out;
	}
	uint8_t hdr[100];
	if (pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) || fw_bytes(fw) < sizeof(hdr) ||
	    memcmp(hdr, "SQLite format 3", 16) != 0) {
		fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is not an SQLite database", key, a->c->name);
		goto out;
	}
	*page_size = (uint32_t)hdr[16] << 8 | hdr[17];
	if (*page_size == 1)
		*page_size = 65536;
	/* SQLite reads a -wal only for a database marked WAL (header bytes 18-19 = 2) */
	if (a->c->plan.nsegments && (hdr[18] != 2 || hdr[19] != 2)) {
		uint8_t two[2] = { 2, 2 };
		if (pwrite(fd, two, 2, 18) != 2) {
			fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	lz4_dec_release(&dec);
	fw_free(fw);
	if (close(fd) < 0 && rc == 0) {
		fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(errno));
		rc = -1;
	}
	return rc;
}

/* ---- applying one index ---- */

struct wal_out {
	int fd;
	struct wal_reader r;
	uint64_t n;
	int werr;      /* errno of a failed write: our disk, not the replica */
};

static int wal_out_write(void *ctx, const void *buf, size_t len)
{
	struct wal_out *w = ctx;
	wal_reader_feed(&w->r, buf, len); /* failure is checked after each segment */
	if (st_fd_sink_write(&w->fd, buf, len) < 0) {
		w->werr = errno;
		return -1;
	}
	w->n += len;
	return 0;
}

/*
 * Run a one-row pragma; copies the first column as text into out. Returns 0,
 * or SQLite's primary result code (see sqlite_cause()).
 */
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

static int pragma_row(sqlite3 *db, const char *sql, int64_t cols[3], char *out, size_t outlen,
		      char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		int e = sqlite3_system_errno(db);
		snprintf(err, errlen, "%s: %s%s%s%s", sql, sqlite3_errmsg(db), e ? " (" : "",
			 e ? strerror(e) : "", e ? ")" : "");
		sqlite3_finalize(st);
		return rc == SQLITE_DONE ? SQLITE_ERROR : rc & 0xff;
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

/*
 * Open the temp database. synchronous=OFF: SQLite's own fsyncs (each
 * checkpoint, the switch to journal_mode=DELETE) are wasted on a file that
 * install() fsyncs once before the rename and that is discarded if we crash.
 */
static sqlite3 *open_tmp(struct apply *a, const char *vfs)
{
	sqlite3 *db = NULL;
	if (sqlite3_open_v2(a->tmp, &db, SQLITE_OPEN_READWRITE, vfs) != SQLITE_OK ||
	    sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL) != SQLITE_OK) {
		int e = db ? sqlite3_system_errno(db) : 0;
		fail(a, RS_CAUSE_LOCAL, "open %s: %s%s%s%s", a->tmp,
		     db ? sqlite3_errmsg(db) : "out of memory", e ? " (" : "", e ? strerror(e) : "",
		     e ? ")" : "");
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

static int checkpoint_index(struct apply *a, uint64_t frames)
{
	sqlite3 *db = NULL;
	char err[300];
	int64_t r[3];
	int rc = -1, code;

	if (!(db = open_tmp(a, NULL)))
		goto out;
	/* PASSIVE first: SQLite must see every frame the validator accepted */
	if ((code = pragma_row(db, "PRAGMA wal_checkpoint(PASSIVE)", r, NULL, 0, err, sizeof(err)))) {
		fail(a, sqlite_cause(code), "checkpoint: %s", err);
		goto out;
	}
	if (r[0] != 0 || (uint64_t)r[1] != frames || r[2] != r[1]) {
		fail(a, RS_CAUSE_REPLICA, "checkpoint of %s applied %lld of %llu frames (busy=%lld)",
		     a->tmp_wal, (long long)r[2], (unsigned long long)frames, (long long)r[0]);
		goto out;
	}
	if ((code = pragma_row(db, "PRAGMA wal_checkpoint(TRUNCATE)", r, NULL, 0, err,
			       sizeof(err))) || r[0] != 0) {
		fail(a, code ? sqlite_cause(code) : RS_CAUSE_REPLICA, "checkpoint(TRUNCATE): %s",
		     code ? err : "busy");
		goto out;
	}
	rc = 0;
out:
	sqlite3_close(db);
	return rc;
}

static int apply_index(struct apply *a, struct idx_job *j, uint32_t page_size, struct wal_pos *pos)
{
	struct wal_out w = { .fd = -1 };
	unsigned char *buf = NULL;
	char path[PATH_MAX + 16];
	int in = -1, rc = -1;

	job_path(a, j, path, sizeof(path));
	if (wal_reader_init(&w.r) < 0 || !(buf = malloc(IO_CHUNK))) {
		fail(a, RS_CAUSE_LOCAL, "out of memory");
		goto out;
	}
	in = open(path, O_RDONLY | O_CLOEXEC);
	w.fd = open(a->tmp_wal, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (in < 0 || w.fd < 0) {
		fail(a, RS_CAUSE_LOCAL, "open %s: %s", in < 0 ? path : a->tmp_wal, strerror(errno));
		goto out;
	}
	for (size_t k = 0; k < j->count; k++) {
		const struct cat_segment *s = &a->c->plan.segments[j->first + k];
		char key[LAYOUT_KEY_MAX];
		struct st_sink wsink = { wal_out_write, &w }, dsink;
		struct lz4_dec dec;
		layout_wal_key(key, a->c->plan.generation, s->index, s->offset);
		if (s->offset != w.n) {
			fail(a, RS_CAUSE_REPLICA, "segment %s from %s starts at offset %u, expected %llu "
			     "(missing segment)", key, a->c->name, s->offset, (unsigned long long)w.n);
			goto out;
		}
		if (lz4_dec_init(&dec, &dsink, &wsink) < 0) {
			fail(a, RS_CAUSE_LOCAL, "out of memory");
			goto out;
		}
		uint64_t left = j->lens[k];
		bool ok = true;
		while (left > 0 && ok) {
			ssize_t r = read(in, buf, left < IO_CHUNK ? left : IO_CHUNK);
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				fail(a, RS_CAUSE_LOCAL, "read %s: %s", path, r ? strerror(errno) : "short");
				ok = false;
				break;
			}
			left -= (uint64_t)r;
			if (dsink.write(dsink.ctx, buf, (size_t)r) < 0)
				ok = false;
		}
		if (ok && lz4_dec_finish(&dec) < 0)
			ok = false;
		if (!ok && w.werr)
			fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp_wal, strerror(w.werr));
		else if (!ok && !aborted(a))
			fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: %s", key, a->c->name,
			     dec.error[0] ? dec.error : "write failed");
		lz4_dec_release(&dec);
		if (!ok)
			goto out;
		if (w.r.failed) {
			fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: %s", key, a->c->name, w.r.error);
			goto out;
		}
		if (w.r.have_header && w.r.hdr.page_size != page_size) {
			fail(a, RS_CAUSE_REPLICA, "segment %s from %s: page size %u, database has %u", key,
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
		fail(a, RS_CAUSE_REPLICA, "segment %s from %s is corrupt: it ends %zu bytes into a frame "
		     "(truncated)", key, a->c->name, wal_reader_partial(&w.r));
		goto out;
	}
	if (close(w.fd) < 0) {
		w.fd = -1;
		fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp_wal, strerror(errno));
		goto out;
	}
	w.fd = -1;
	uint64_t frames = w.r.commit_end > WAL_HEADER_SIZE
				  ? (w.r.commit_end - WAL_HEADER_SIZE) / wal_frame_size(page_size)
				  : 0;
	if (checkpoint_index(a, frames) < 0)
		goto out;
	pos->index = j->index;
	pos->offset = (uint32_t)w.n;
	rc = 0;
out:
	if (in >= 0)
		close(in);
	if (w.fd >= 0)
		close(w.fd);
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

static int finish_db(struct apply *a)
{
	sqlite3 *db = NULL;
	char err[300], text[300];
	int rc = -1;
	struct bg_sync bg = { .fd = -1 };
	bool bg_started = false;

	/* the check reads the whole file: read ahead instead of a pread(2) per page */
	if (!(db = open_tmp(a, ravfs_name())))
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
		fail(a, code ? sqlite_cause(code) : RS_CAUSE_REPLICA, "journal_mode=DELETE: %s",
		     code ? err : text);
		goto out;
	}
	/*
	 * The file's content is final: the check only reads it, so the disk can
	 * take the data meanwhile (install()'s fsync then finds it clean). Our
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
			fail(a, sqlite_cause(code), "%s: %s", sql, err);
			goto out;
		}
		if (strcmp(text, "ok") != 0) {
			for (char *nl = text; (nl = strchr(nl, '\n')); ) /* one line in the log */
				*nl = ' ';
			fail(a, RS_CAUSE_REPLICA, "%s of the restored database failed: %s", sql, text);
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
			fail(a, RS_CAUSE_LOCAL, "fsync %s: %s", a->tmp, strerror(bg.err));
			rc = -1;
		}
	}
	if (sqlite3_close(db) != SQLITE_OK && rc == 0) {
		fail(a, RS_CAUSE_LOCAL, "close %s", a->tmp);
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
	return unlink(from);
}

static int install(struct apply *a)
{
	int fd = open(a->tmp, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fail(a, RS_CAUSE_LOCAL, "open %s: %s", a->tmp, strerror(errno));
		return -1;
	}
	if ((a->o->uid != (uid_t)-1 || a->o->gid != (gid_t)-1) &&
	    fchown(fd, a->o->uid, a->o->gid) < 0) {
		fail(a, RS_CAUSE_LOCAL, "chown %s: %s", a->tmp, strerror(errno));
		close(fd);
		return -1;
	}
	if (fchmod(fd, a->o->mode) < 0 || fsync(fd) < 0) {
		fail(a, RS_CAUSE_LOCAL, "fsync %s: %s", a->tmp, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	if (a->o->before_rename && a->o->before_rename(a->o->before_ctx) < 0) {
		fail(a, RS_CAUSE_LOCAL, "could not make room at %s", a->o->target);
		return -1;
	}
	if (rename_noreplace(a->tmp, a->o->target) < 0) {
		fail(a, RS_CAUSE_LOCAL, "rename %s to %s: %s", a->tmp, a->o->target, strerror(errno));
		return -1;
	}
	if (fs_fsync_parent(a->o->target) < 0) {
		fail(a, RS_CAUSE_LOCAL, "fsync the directory of %s: %s", a->o->target, strerror(errno));
		return -1;
	}
	return 0;
}

static void cleanup(struct apply *a)
{
	unlink(a->tmp);
	unlink(a->tmp_wal);
	unlink(a->tmp_shm);
	char j[PATH_MAX + 16];
	snprintf(j, sizeof(j), "%s-journal", a->tmp);
	unlink(j);
	for (size_t i = 0; i < a->njobs; i++)
		unlink(job_path(a, &a->jobs[i], j, sizeof(j)));
}

/*
 * Leftovers of a restore that was killed: our temp names (the lock held, so
 * no other restore owns them), including WAL files of indexes this plan
 * does not have (the killed one may have had another plan).
 */
static void remove_leftovers(struct apply *a)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(a->tmp, '/'), *base = slash ? slash + 1 : a->tmp;
	size_t blen = strlen(base);

	cleanup(a);
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

/*
 * The restores in progress in this process, for restore_abort() and
 * restore_abandon() (restore.h): one node each, on its rs_apply()'s stack.
 */
struct active {
	struct apply *a;
	char lock[PATH_MAX + 8];
	int lock_fd;                 /* -1 until the lock is ours */
	struct active *next;
};

static pthread_mutex_t active_mu = PTHREAD_MUTEX_INITIALIZER;
static struct active *active_list;
static bool abort_requested;
static char abort_why[128];

void restore_abort(const char *why)
{
	pthread_mutex_lock(&active_mu);
	if (!abort_requested)
		snprintf(abort_why, sizeof(abort_why), "%s", why ? why : "aborted");
	abort_requested = true;
	/* the sinks then refuse the next bytes and the workers stop (see counting_write) */
	for (struct active *n = active_list; n; n = n->next)
		fail(n->a, RS_CAUSE_LOCAL, "interrupted (%s)", abort_why);
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
	for (struct active *n = active_list; n; n = n->next) {
		if (n->lock_fd < 0)
			continue; /* not ours yet: the files may be another restore's */
		cleanup(n->a);
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
 * One restore at a time to a target: an flock(2) on <tmp>.lock, taken before
 * the leftovers are removed (they would be the other restore's files). The
 * holder removes the file before it lets go; so a taker checks that the name
 * still leads to the file it locked, else the lock it got is on a removed
 * file and it tries again. A killed holder's lock ends with it, and its file
 * is reused. Returns 0, or -1 (failed).
 */
static int take_lock(struct apply *a, struct active *n)
{
	snprintf(n->lock, sizeof(n->lock), "%s.lock", a->tmp);
	for (int tries = 0; tries < 100; tries++) {
		struct stat fs, ps;
		int fd = open(n->lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0) {
			fail(a, RS_CAUSE_LOCAL, "create %s: %s", n->lock, strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int e = errno;
			long pid = e == EWOULDBLOCK ? lock_holder(fd) : 0;
			close(fd);
			if (e != EWOULDBLOCK)
				fail(a, RS_CAUSE_LOCAL, "lock %s: %s", n->lock, strerror(e));
			else if (pid > 0)
				fail(a, RS_CAUSE_LOCAL, "another restore to %s is running (pid %ld)",
				     a->o->target, pid);
			else
				fail(a, RS_CAUSE_LOCAL, "another restore to %s is running (lock %s)",
				     a->o->target, n->lock);
			return -1;
		}
		if (fstat(fd, &fs) == 0 && stat(n->lock, &ps) == 0 && fs.st_dev == ps.st_dev &&
		    fs.st_ino == ps.st_ino) {
			char pid[32];
			int len = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
			if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
				fail(a, RS_CAUSE_LOCAL, "write %s: %s", n->lock, strerror(errno));
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
	fail(a, RS_CAUSE_LOCAL, "lock %s: it keeps being replaced", n->lock);
	return -1;
}

/* Remove the lock file, then let go (see take_lock). */
static void drop_lock(struct active *n)
{
	pthread_mutex_lock(&active_mu);
	int fd = n->lock_fd;
	n->lock_fd = -1;
	pthread_mutex_unlock(&active_mu);
	if (fd < 0)
		return;
	unlink(n->lock);
	close(fd);
}

/* Split the plan's segments into one job per index. */
static int make_jobs(struct apply *a)
{
	const struct rs_plan *p = &a->c->plan;
	size_t n = 0;
	for (size_t i = 0; i < p->nsegments; i++)
		if (i == 0 || p->segments[i].index != p->segments[i - 1].index)
			n++;
	a->jobs = calloc(n + 1, sizeof(*a->jobs));
	if (!a->jobs)
		return -1;
	for (size_t i = 0; i < p->nsegments; i++) {
		if (i == 0 || p->segments[i].index != p->segments[i - 1].index) {
			struct idx_job *j = &a->jobs[a->njobs++];
			j->index = p->segments[i].index;
			j->first = i;
		}
		a->jobs[a->njobs - 1].count++;
	}
	for (size_t i = 0; i < a->njobs; i++)
		if (!(a->jobs[i].lens = calloc(a->jobs[i].count, sizeof(uint64_t))))
			return -1;
	return 0;
}

int rs_apply(struct rs_cand *c, const struct rs_apply_opts *o, struct wal_pos *restored,
	     char *errbuf, size_t errlen, enum rs_cause *cause)
{
	struct apply a = { .c = c, .o = o };
	struct active node = { .a = &a, .lock_fd = -1 };
	bool registered = false;
	struct stat tst;
	pthread_t workers[64], prog;
	size_t nworkers = 0;
	bool prog_started = false;
	uint32_t page_size = 0;
	int rc = -1;

	*cause = RS_CAUSE_REPLICA;
	errbuf[0] = '\0';
	pthread_mutex_init(&a.mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a.cv, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&a.bytes, 0);
	a.total = c->plan.bytes;
	a.t0_ms = clock_mono_ms();
	rs_temp_path(o->target, a.tmp, sizeof(a.tmp));
	snprintf(a.tmp_wal, sizeof(a.tmp_wal), "%s-wal", a.tmp);
	snprintf(a.tmp_shm, sizeof(a.tmp_shm), "%s-shm", a.tmp);
	memset(restored, 0, sizeof(*restored));
	memcpy(restored->generation, c->plan.generation, sizeof(restored->generation));
	restored->index = c->plan.snapshot.index;

	if (make_jobs(&a) < 0) {
		fail(&a, RS_CAUSE_LOCAL, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&active_mu);
	if (abort_requested) {
		fail(&a, RS_CAUSE_LOCAL, "interrupted (%s)", abort_why);
	} else {
		node.next = active_list;
		active_list = &node;
		registered = true;
	}
	pthread_mutex_unlock(&active_mu);
	if (!registered || take_lock(&a, &node) < 0)
		goto out;
	/* under the lock: a restore that just finished may have put the target there */
	if (!o->before_rename && lstat(o->target, &tst) == 0) {
		fail(&a, RS_CAUSE_LOCAL, "%s already exists (restored meanwhile?); not overwriting it",
		     o->target);
		goto out;
	}
	/* leftovers of an interrupted restore are ours (by name, under the lock): start clean */
	remove_leftovers(&a);
	log_info("restore", "restoring", "replica=%s generation=%s snapshot=%08x segments=%zu "
		 "indexes=%zu bytes=%llu target=\"%s\"", c->name, c->plan.generation,
		 c->plan.snapshot.index, c->plan.nsegments, a.njobs,
		 (unsigned long long)c->plan.bytes, o->target);

	if (pthread_create(&prog, NULL, progress_thread, &a) == 0)
		prog_started = true;
	size_t want = o->parallelism > 0 ? (size_t)o->parallelism : 1;
	if (want > sizeof(workers) / sizeof(workers[0]))
		want = sizeof(workers) / sizeof(workers[0]);
	if (want > a.njobs)
		want = a.njobs;
	for (size_t i = 0; i < want; i++)
		if (pthread_create(&workers[nworkers], NULL, worker, &a) == 0)
			nworkers++;
	if (a.njobs && nworkers == 0) {
		fail(&a, RS_CAUSE_LOCAL, "cannot start download threads");
		goto out;
	}

	int64_t tp = clock_mono_ms();
	int snap_rc = fetch_snapshot(&a, &page_size);
	let_workers_go(&a); /* whether or not a byte came: never leave them waiting */
	if (snap_rc < 0)
		goto out;
	a.snap_ms = clock_mono_ms() - tp;
	tp = clock_mono_ms();
	for (size_t i = 0; i < a.njobs; i++) {
		struct idx_job *j = &a.jobs[i];
		uint32_t want_index = i ? a.jobs[i - 1].index + 1 : c->plan.snapshot.index;
		if (j->index != want_index) {
			fail(&a, RS_CAUSE_REPLICA, "replica %s: WAL index %08x is missing (next is %08x): "
			     "missing segment", c->name, want_index, j->index);
			goto out;
		}
		pthread_mutex_lock(&a.mu);
		while (!a.abort && j->state != JOB_DONE && j->state != JOB_FAILED)
			pthread_cond_wait(&a.cv, &a.mu);
		bool go = !a.abort && j->state == JOB_DONE;
		pthread_mutex_unlock(&a.mu);
		if (!go || apply_index(&a, j, page_size, restored) < 0)
			goto out;
	}
	a.wal_ms = clock_mono_ms() - tp;
	tp = clock_mono_ms();
	if (finish_db(&a) < 0)
		goto out;
	a.verify_ms = clock_mono_ms() - tp;
	tp = clock_mono_ms();
	if (install(&a) < 0)
		goto out;
	a.install_ms = clock_mono_ms() - tp;
	rc = 0;
out:
	pthread_mutex_lock(&a.mu);
	if (rc < 0)
		a.abort = true;
	a.done = true;
	pthread_cond_broadcast(&a.cv);
	pthread_mutex_unlock(&a.mu);
	for (size_t i = 0; i < nworkers; i++)
		pthread_join(workers[i], NULL);
	if (prog_started)
		pthread_join(prog, NULL);
	if (rc < 0) {
		if (node.lock_fd >= 0) /* else the files may be another restore's */
			cleanup(&a);
		snprintf(errbuf, errlen, "%s", a.err[0] ? a.err : "restore failed");
		*cause = a.cause;
	} else {
		unlink(a.tmp_wal);
		unlink(a.tmp_shm);
		int64_t ms = clock_mono_ms() - a.t0_ms;
		uint64_t b = atomic_load(&a.bytes);
		log_info("restore", "restored", "replica=%s target=\"%s\" generation=%s index=%08x "
			 "offset=%08x bytes=%llu ms=%lld snapshot_ms=%lld wal_ms=%lld "
			 "finish_verify_ms=%lld fsync_rename_ms=%lld rate_mib_s=%.1f", c->name,
			 o->target, restored->generation, restored->index, restored->offset,
			 (unsigned long long)b, (long long)ms, (long long)a.snap_ms,
			 (long long)a.wal_ms, (long long)a.verify_ms, (long long)a.install_ms,
			 ms > 0 ? (double)b / (1024.0 * 1024.0) / ((double)ms / 1000.0) : 0.0);
	}
	drop_lock(&node);
	if (registered) {
		pthread_mutex_lock(&active_mu);
		for (struct active **pp = &active_list; *pp; pp = &(*pp)->next)
			if (*pp == &node) {
				*pp = node.next;
				break;
			}
		pthread_mutex_unlock(&active_mu);
	}
	for (size_t i = 0; i < a.njobs; i++)
		free(a.jobs[i].lens);
	free(a.jobs);
	pthread_mutex_destroy(&a.mu);
	pthread_cond_destroy(&a.cv);
	return rc;
}
