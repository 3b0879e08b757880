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
 * Any error removes every temp file; nothing is left at the target. The
 * temp database's steps are in restore_db.c; one restore per target and
 * restore_abort() in restore_lock.c (restore_apply_int.h).
 */
#include "replication/restore_apply_int.h"

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
/* blocks allocated ahead of the writes (filewriter.h: fw_opts.prealloc_step) */
#define PREALLOC_STEP (64u << 20)

char *rs_job_path(const struct apply *a, const struct idx_job *j, char *buf, size_t len)
{
	snprintf(buf, len, "%s-%08x.lz4", a->tmp, j->index);
	return buf;
}

char *rs_temp_path(const char *target, char *buf, size_t len)
{
	snprintf(buf, len, "%s.litevisor-restore", target);
	return buf;
}

void rs_fail(struct apply *a, enum rs_cause cause, const char *fmt, ...)
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
	if (a->live_db)
		sqlite3_interrupt(a->live_db);
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

bool rs_aborted(struct apply *a)
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
	int64_t limit; /* the most written: the size the listing gave (0: not a byte);
			  INT64_MAX would be no bound */
	bool over;     /* the server sent more than that */
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
	if (rs_aborted(k->a)) /* stop a doomed download early */
		return -1;
	if (k->lets_workers_go) {
		k->lets_workers_go = false;
		let_workers_go(k->a);
	}
	atomic_fetch_add(&k->a->bytes, len);
	return k->inner->write(k->inner->ctx, buf, len);
}

/*
 * The most a stored placeholder (wal.h: a WAL header alone, LZ4-framed: 43
 * bytes) may take; encrypted with age it grows by about 100 bytes per
 * recipient of the writer's, which a restore does not know.
 */
#define PLACEHOLDER_MAX 1024
/* What a segment that may be a placeholder replaced after the listing may bring. */
#define REPLACED_MAX (256LL << 20)

static int fd_count_write(void *ctx, const void *buf, size_t len)
{
	struct fd_count *f = ctx;
	if (f->n + len > (uint64_t)f->limit) {
		f->over = true;
		return -1;
	}
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
	int fd = open(rs_job_path(a, j, path, sizeof(path)), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		      0600);
	if (fd < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "create %s: %s", path, strerror(errno));
		return -1;
	}
	for (size_t k = 0; k < j->count; k++) {
		const struct cat_segment *s = &a->c->plan.segments[j->first + k];
		/*
		 * No more than the listing gave: a body that never ends (a broken
		 * server or proxy) filled the disk beside the target, the app's
		 * own volume under run (QA167 D2). Except an index's placeholder
		 * (wal.h), the one segment a writer replaces, at its next write in
		 * that index: taken up to REPLACED_MAX when that came after the
		 * listing (QA169 D2), whatever the writer's age recipients made
		 * of its size (QA170 D1). A segment past offset 0 listed with no
		 * bytes gets none: 0 was read as no bound (QA172 O2).
		 */
		bool placeholder = s->offset == 0 && (s->size <= PLACEHOLDER_MAX || st->age.set);
		int64_t limit = placeholder && s->size < REPLACED_MAX ? REPLACED_MAX
								    : s->size > 0 ? s->size : 0;
		struct fd_count f = { a, fd, 0, 0, limit, false };
		struct st_sink fsink = { fd_count_write, &f };
		struct counting cnt = { a, &fsink, false };
		struct st_sink sink = { counting_write, &cnt };
		layout_wal_key(key, gen, s->index, s->offset);
		if (storage_get(st, key, &sink, &a->transfer, &err) < 0) {
			close(fd);
			if (f.werr)
				rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", path, strerror(f.werr));
			else if (f.over && !rs_aborted(a))
				rs_fail(a, RS_CAUSE_REPLICA, "download %s from %s: the server sent more "
					"than %lld bytes, the listing gave %lld (the object changed since, "
					"or the server is broken)", key, a->c->name, (long long)limit,
					(long long)s->size);
			else if (!rs_aborted(a))
				rs_fail(a, err.status == ST_TRANSIENT ? RS_CAUSE_NETWORK : RS_CAUSE_REPLICA,
				     "download %s from %s: %s", key, a->c->name, err.message);
			return -1;
		}
		j->lens[k] = f.n;
		log_debug("restore", "downloaded", "replica=%s key=\"%s\" bytes=%llu", a->c->name, key,
			  (unsigned long long)f.n);
	}
	if (close(fd) < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", path, strerror(errno));
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
		rs_fail(a, RS_CAUSE_LOCAL, "create %s: %s", a->tmp, strerror(errno));
		return -1;
	}
	xxh32_init(&hash, 0);
	struct fw_opts fo = { .nbufs = SNAP_BUFS, .bufsize = SNAP_BUF_SIZE,
			      .writeback_step = WRITEBACK_STEP, .flush_step = FLUSH_STEP,
			      .prealloc_step = PREALLOC_STEP,
			      /* the WAL downloaded beside it meanwhile */
			      .prealloc_reserve = a->total > (uint64_t)a->c->plan.snapshot.size
							  ? a->total - (uint64_t)a->c->plan.snapshot.size
							  : 0,
			      .inspect = hash_plain,
			      .inspect_ctx = &hash };
	struct fwriter *fw = fw_start(fd, &fo, NULL);
	if (!fw) {
		close(fd);
		rs_fail(a, RS_CAUSE_LOCAL, "cannot start the snapshot writer: %s", strerror(errno));
		return -1;
	}
	struct lz4_out ring = { ring_reserve, ring_commit, fw };
	if (lz4_dec_init_direct(&dec, &dsink, &ring) < 0) {
		fw_free(fw);
		close(fd);
		rs_fail(a, RS_CAUSE_LOCAL, "out of memory");
		return -1;
	}
	lz4_dec_defer_checksum(&dec);
	struct counting cnt = { a, &dsink, true };
	struct st_sink sink = { counting_write, &cnt };
	layout_snapshot_key(key, a->c->plan.generation, a->c->plan.snapshot.index);
	if (storage_get(a->c->st, key, &sink, &a->transfer, &err) < 0) {
		int werr = fw_error(fw);
		if (werr) /* our disk, not the replica: e.g. ENOSPC */
			rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(werr));
		else if (dec.failed)
			rs_fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is corrupt: %s", key, a->c->name, dec.error);
		else if (!rs_aborted(a))
			rs_fail(a, err.status == ST_TRANSIENT ? RS_CAUSE_NETWORK : RS_CAUSE_REPLICA,
			     "download %s from %s: %s", key, a->c->name, err.message);
		goto out;
	}
	if (lz4_dec_finish(&dec) < 0) {
		rs_fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is corrupt: %s", key, a->c->name, dec.error);
		goto out;
	}
	if (fw_finish(fw) < 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(errno));
		goto out;
	}
	if (dec.checksum_deferred && xxh32_digest(&hash) != dec.content_checksum) {
		rs_fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is corrupt: LZ4 content checksum mismatch "
		     "(%08x, frame says %08x)", key, a->c->name, xxh32_digest(&hash),
		     dec.content_checksum);
		goto out;
	}
	uint8_t hdr[100];
	ssize_t got = fw_bytes(fw) < sizeof(hdr) ? 0 : pread(fd, hdr, sizeof(hdr), 0);
	if (got < 0) { /* our disk's error, not the replica's */
		rs_fail(a, RS_CAUSE_LOCAL, "read %s: %s", a->tmp, strerror(errno));
		goto out;
	}
	if (got != (ssize_t)sizeof(hdr) || memcmp(hdr, "SQLite format 3", 16) != 0) {
		rs_fail(a, RS_CAUSE_REPLICA, "snapshot %s from %s is not an SQLite database", key, a->c->name);
		goto out;
	}
	*page_size = (uint32_t)hdr[16] << 8 | hdr[17];
	if (*page_size == 1)
		*page_size = 65536;
	/* SQLite reads a -wal only for a database marked WAL (header bytes 18-19 = 2) */
	if (a->c->plan.nsegments && (hdr[18] != 2 || hdr[19] != 2)) {
		uint8_t two[2] = { 2, 2 };
		if (pwrite(fd, two, 2, 18) != 2) {
			rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	lz4_dec_release(&dec);
	fw_free(fw);
	if (close(fd) < 0 && rc == 0) {
		rs_fail(a, RS_CAUSE_LOCAL, "write %s: %s", a->tmp, strerror(errno));
		rc = -1;
	}
	return rc;
}

void rs_unlink(const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("restore", "cannot remove a temp file: it stays beside the target",
			 "path=\"%s\" err=\"%s\"", path, strerror(errno));
}

void rs_cleanup(struct apply *a)
{
	rs_unlink(a->tmp);
	rs_unlink(a->tmp_wal);
	rs_unlink(a->tmp_shm);
	char j[PATH_MAX + 16];
	snprintf(j, sizeof(j), "%s-journal", a->tmp);
	rs_unlink(j);
	for (size_t i = 0; i < a->njobs; i++)
		rs_unlink(rs_job_path(a, &a->jobs[i], j, sizeof(j)));
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
	/*
	 * A stall falls back to the next candidate; from the last one, it is
	 * resumed. So does a refused connection (its server went down mid-way),
	 * as the probe takes one: not after four retries, about 2 s (QA79).
	 */
	struct apply a = { .c = c, .o = o, .transfer = { .stall_s = o->last_candidate ? 0 : RS_STALL_S,
							 .fail_refused = !o->last_candidate } };
	struct rs_active node = { .a = &a, .lock_fd = -1 };
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
		rs_fail(&a, RS_CAUSE_LOCAL, "out of memory");
		goto out;
	}
	registered = rs_active_add(&node) == 0;
	if (!registered || rs_lock_take(&a, &node) < 0)
		goto out;
	/* under the lock: a restore that just finished may have put the target there */
	if (!o->before_rename && lstat(o->target, &tst) == 0) {
		rs_fail(&a, RS_CAUSE_LOCAL, "%s already exists (restored meanwhile?); not overwriting it",
		     o->target);
		goto out;
	}
	/* leftovers of an interrupted restore are ours (by name, under the lock): start clean */
	rs_remove_leftovers(&a);
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
		rs_fail(&a, RS_CAUSE_LOCAL, "cannot start download threads");
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
			rs_fail(&a, RS_CAUSE_REPLICA, "replica %s: WAL index %08x is missing (next is %08x): "
			     "missing segment", c->name, want_index, j->index);
			goto out;
		}
		pthread_mutex_lock(&a.mu);
		while (!a.abort && j->state != JOB_DONE && j->state != JOB_FAILED)
			pthread_cond_wait(&a.cv, &a.mu);
		bool go = !a.abort && j->state == JOB_DONE;
		pthread_mutex_unlock(&a.mu);
		if (!go || rs_apply_index(&a, j, page_size, restored) < 0)
			goto out;
	}
	a.wal_ms = clock_mono_ms() - tp;
	tp = clock_mono_ms();
	if (rs_aborted(&a) || rs_finish_db(&a) < 0)
		goto out;
	a.verify_ms = clock_mono_ms() - tp;
	tp = clock_mono_ms();
	if (rs_aborted(&a) || rs_install(&a) < 0)
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
			rs_cleanup(&a);
		snprintf(errbuf, errlen, "%s", a.err[0] ? a.err : "restore failed");
		*cause = a.cause;
	} else {
		rs_unlink(a.tmp_wal);
		rs_unlink(a.tmp_shm);
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
	rs_lock_drop(&node);
	if (registered)
		rs_active_remove(&node);
	for (size_t i = 0; i < a.njobs; i++)
		free(a.jobs[i].lens);
	free(a.jobs);
	pthread_mutex_destroy(&a.mu);
	pthread_cond_destroy(&a.cv);
	return rc;
}
