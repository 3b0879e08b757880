/*
 * snapshot.c — a replica's snapshot of its database, compressed once for
 * every replica that needs the same one.
 *
 * LZ4 is most of a snapshot's CPU. When a replica needs a snapshot and other
 * replicas of the database will need one in the same generation (a new
 * generation: all of them at once), the first one compresses the database
 * into an unnamed file in the state directory and publishes it ("the
 * share"); the others upload that file instead of reading and compressing
 * the database again. A replica alone in needing a snapshot compresses it
 * into such a file too, for itself ("spooled"), so that its read transaction
 * ends before any call to the replica: held through a hung or slow upload,
 * it kept every checkpoint from completing and the WAL from restarting, for
 * every replica (QA127 D1). Only when that file cannot be written is the
 * database streamed straight to the storage ("direct").
 *
 * The share holds the database as of (generation, shadow index). While it
 * exists it keeps that index's shadow WAL from being deleted (backlog.c), so
 * every replica that took it can ship from there. It is closed when no
 * replica still needs a snapshot in its generation (a replica that took it,
 * or was dropped by the backlog cap, no longer does), when the generation
 * changes, and when the engine stops. If it cannot be written (a full disk
 * in the state directory), its builder streams directly instead.
 *
 * The builder holds its read transaction only while compressing into the
 * local file, not while uploading: a slow replica no longer keeps the WAL
 * from restarting for the length of its upload.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "replication/lz4io.h"
#include "replication/wal.h"
#include "common/banned.h"

#define SPOOL_CHUNK (64 * 1024)
/* room a local snapshot file leaves free beyond the database's size (spool_build) */
#define SPOOL_MARGIN (64 << 20)

/* A source over the database file, read through SQLite's own handle (db.h). */
struct dbfile_src {
	sqlite3 *conn;
	int64_t pos, size;
	bool torn; /* page 1 counts more pages than size holds */
};

/*
 * Does page 1 (its first 100 bytes at h) count more pages than size bytes
 * hold? A checkpoint grew the file and rewrote page 1 after its size was
 * taken: an image of the database at no one moment (QA155 D4). The count
 * is trusted only where SQLite says it is valid (version-valid-for equal to
 * the change counter).
 */
static bool header_past(const uint8_t *h, int64_t size)
{
	uint32_t ps = (uint32_t)h[16] << 8 | h[17];
	if (ps == 1)
		ps = 65536;
	uint32_t pages = wal_get32(h + 28);
	return ps >= 512 && pages && wal_get32(h + 92) == wal_get32(h + 24) &&
	       (int64_t)pages * ps > size;
}

/* How long page 1 is read again while it counts past the size. */
#define TORN_WAIT_MS 500

static ssize_t dbfile_read(void *ctx, void *buf, size_t want)
{
	struct dbfile_src *s = ctx;
	int64_t give_up = 0;
	for (;;) {
		if (s->pos >= s->size)
			return 0;
		size_t len = want;
		if ((int64_t)len > s->size - s->pos)
			len = (size_t)(s->size - s->pos);
		if (len > 1 << 20)
			len = 1 << 20;
		/* short: a checkpoint shrank the file; the zeroes lie past the last commit's size */
		if (db_file_read(s->conn, buf, (int)len, s->pos) < 0) {
			errno = EIO;
			return -1;
		}
		if (!(s->pos == 0 && len >= 100 && header_past(buf, s->size))) {
			s->pos += (int64_t)len;
			return (ssize_t)len;
		}
		/*
		 * A checkpoint grew the file after its size was taken, page 1
		 * first: take the size again once it is done, before a byte is
		 * passed on. It copies no commit past our read mark, so the larger
		 * image holds none the snapshot's WAL would not replay anyway.
		 * Still torn after half a second: this try fails (snapshot_take
		 * then streams nothing directly: the same read would fail again).
		 * Timed, not counted: while the checkpoint still grows the file,
		 * the size changes at every look, and fifty tries took a
		 * millisecond (QA165 D1).
		 */
		int64_t size = db_file_size(s->conn);
		if (size < 0) {
			errno = EIO;
			return -1;
		}
		int64_t now = clock_mono_ms();
		if (!give_up)
			give_up = now + TORN_WAIT_MS;
		if (now >= give_up) {
			s->torn = true;
			errno = EAGAIN;
			return -1;
		}
		clock_sleep_ms(size == s->size ? 10 : 1);
		s->size = size;
	}
}

static int dbfile_rewind(void *ctx)
{
	((struct dbfile_src *)ctx)->pos = 0;
	return 0;
}

/* The database pinned for a snapshot by a read transaction, and where it stands. */
struct snap_db {
	sqlite3 *conn;
	struct dbfile_src fsrc;
	struct st_source plain;
	char gen[17];
	uint32_t index;
	uint32_t page_size;
	struct wal_pos covers;
	struct wal_pos sure; /* what the file's bytes surely hold (sure_of) */
	int64_t covers_mono; /* pin_covers began then: every commit past covers came later */
	int ckpt_index;      /* the shadow index at the PASSIVE checkpoint, -1 unknown */
	int ckpt_frames;     /* ... and the frames it had backfilled, -1 unknown */
};

static void snap_db_close(struct snap_db *s)
{
	if (s->conn) {
		db_txn_end(s->conn);
		sqlite3_close(s->conn);
		s->conn = NULL;
	}
}

#define COVERS_WAIT_MS 5000 /* for the monitor's pass after our read transaction began */

/*
 * Where the WAL the snapshot may reach ends: a checkpoint (ours, the app's)
 * can copy into the file every frame our read transaction sees, and no
 * further, while we read it. Those frames may not be in the shadow yet, so
 * have the monitor copy the WAL once more, from a pass that starts now, and
 * take the shadow's end after it. That copy must have worked: if it failed
 * (a full state disk), the file may hold frames no segment will ever carry,
 * and the snapshot, alone, would be a mix no restore can use; the newest on
 * the replica, it hid the whole older generation (QA97 D1). Returns 0, or
 * -1 with msg set.
 */
static int pin_covers(struct eng_db *d, struct snap_db *s, bool flush, char *msg, size_t len)
{
	s->covers_mono = clock_mono_ns();
	int64_t end = s->covers_mono + COVERS_WAIT_MS * NS_PER_MS;
	pthread_mutex_lock(&d->mu);
	if (flush && d->flush_deadline_ns < end)
		end = d->flush_deadline_ns;
	uint64_t want = d->sync_seq + 2; /* a whole pass that starts after this call */
	if (d->sync_req < want)
		d->sync_req = want;
	watch_wake(&d->watch);
	/* a stop ends the wait: the monitor makes no more passes (QA107 D3: each database's
	 * first snapshot held engine_free for the whole wait) */
	while (d->sync_seq < want && !d->eng->stop && clock_mono_ns() < end) {
		struct timespec ts = { .tv_sec = end / NS_PER_SEC, .tv_nsec = end % NS_PER_SEC };
		pthread_cond_timedwait(&d->cond, &d->mu, &ts);
	}
	bool done = d->sync_seq >= want;
	bool failing = d->stat.sync_failing_since_mono_ns != 0;
	char err[sizeof(d->stat.sync_error)];
	memcpy(err, d->stat.sync_error, sizeof(err));
	replica_target(d, &s->covers);
	pthread_mutex_unlock(&d->mu);
	if (!done && d->eng->stop) {
		snprintf(msg, len, "replication stopped before the WAL was copied");
		return -1;
	}
	if (!done) {
		snprintf(msg, len, "the WAL was not copied within %d ms of the snapshot's start",
			 COVERS_WAIT_MS);
		return -1;
	}
	if (failing) {
		snprintf(msg, len, "new commits cannot be copied into the state directory (%.200s): "
			 "a snapshot now could not be made whole", err);
		return -1;
	}
	return 0;
}

/*
 * What the file's bytes surely hold, in s->sure: covers, but for the WAL
 * frames of covers' index the PASSIVE checkpoint had not copied into the
 * file (an app's last commits, a reader holding the WAL), which only the
 * WAL segments carry; the index's start when that is not known. Offsets
 * are the WAL file's, as the shadow's are.
 */
static void sure_of(struct snap_db *s)
{
	s->sure = s->covers;
	int64_t copied = -1;
	if (s->ckpt_index >= 0 && (uint32_t)s->ckpt_index == s->covers.index && s->ckpt_frames >= 0)
		copied = WAL_HEADER_SIZE + (int64_t)s->ckpt_frames * (int64_t)wal_frame_size(s->page_size);
	if (copied < 0)
		s->sure.offset = 0;
	else if ((int64_t)s->sure.offset > copied)
		s->sure.offset = (uint32_t)copied;
}

/* Open d's database under a read transaction. Returns 0, or -1 with msg set. */
static int snap_db_open(struct eng_db *d, struct snap_db *s, bool flush, char *msg, size_t len)
{
	struct stat st;

	memset(s, 0, sizeof(*s));
	if (!(s->conn = db_open_conn(d->cfg->path, 1000))) {
		snprintf(msg, len, "cannot open database");
		return -1;
	}
	/* PASSIVE first so the file is recent; then a read transaction pins it */
	int log = -1, ckpt = -1;
	pthread_mutex_lock(&d->mu);
	s->ckpt_index = (int)d->index;
	pthread_mutex_unlock(&d->mu);
	if (db_checkpoint(s->conn, DB_CKPT_PASSIVE, &log, &ckpt) < 0)
		ckpt = -1;
	s->ckpt_frames = ckpt;
	if (db_read_begin(s->conn) < 0) {
		snprintf(msg, len, "cannot begin read transaction");
		goto fail;
	}
	pthread_mutex_lock(&d->mu);
	memcpy(s->gen, d->gen, sizeof(s->gen));
	s->index = d->index;
	if ((uint32_t)s->ckpt_index != s->index)
		s->ckpt_index = -1; /* a new index meanwhile: which WAL it checkpointed is unknown */
	ino_t ino = d->ino;
	dev_t dev = d->dev;
	bool ready = d->ready;
	pthread_mutex_unlock(&d->mu);
	if (!ready || !s->gen[0]) {
		snprintf(msg, len, "database not ready");
		goto fail;
	}
	/* our connection opened the file before the generation was read: same inode */
	if (stat(d->cfg->path, &st) < 0 || st.st_ino != ino || st.st_dev != dev) {
		snprintf(msg, len, "database file replaced during snapshot");
		goto fail;
	}
	s->fsrc.conn = s->conn;
	s->fsrc.size = db_file_size(s->conn);
	if (s->fsrc.size < 0) {
		snprintf(msg, len, "cannot size database file");
		goto fail;
	}
	uint8_t h[18];
	if (db_file_read(s->conn, h, sizeof(h), 0) < 0) {
		snprintf(msg, len, "cannot read the database header");
		goto fail;
	}
	s->page_size = (uint32_t)h[16] << 8 | h[17];
	if (s->page_size == 1)
		s->page_size = 65536; /* how the header writes it */
	s->plain = (struct st_source){ dbfile_read, dbfile_rewind, &s->fsrc, s->fsrc.size, NULL, NULL };
	if (pin_covers(d, s, flush, msg, len) < 0)
		goto fail;
	sure_of(s);
	return 0;
fail:
	snap_db_close(s);
	return -1;
}

/* Does o still need a snapshot in d's generation? Under mu. */
static bool needs_snapshot(const struct eng_db *d, const struct eng_replica *o)
{
	return o->st && !o->dropped &&
	       (!o->pos_known || o->need_snapshot || strcmp(o->pos.generation, d->gen) != 0);
}

/* Forget the share; returns its descriptor for the caller to close outside mu. */
static int share_drop(struct snap_share *sh)
{
	int fd = sh->fd;
	sh->fd = -1;
	sh->state = SHARE_NONE;
	return fd;
}

int snapshot_share_settle(struct eng_db *d)
{
	struct snap_share *sh = &d->share;
	if (sh->state != SHARE_READY)
		return -1;
	bool wanted = false;
	for (size_t i = 0; i < d->nreplicas && !wanted; i++)
		wanted = needs_snapshot(d, &d->replicas[i]);
	if (!wanted || strcmp(sh->gen, d->gen) != 0 || sh->index < d->min_index)
		return share_drop(sh);
	return -1;
}

void snapshot_share_close(struct eng_db *d)
{
	int fd = share_drop(&d->share);
	if (fd >= 0)
		close(fd);
}

enum snap_how { SNAP_DIRECT, SNAP_BUILD, SNAP_USE, SNAP_SPOOLED, SNAP_KEPT };

void snapshot_kept_release(struct eng_replica *r)
{
	if (r->kept.fd >= 0)
		close(r->kept.fd);
	r->kept.fd = -1;
}

void snapshot_kept_check(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	if (r->kept.fd < 0)
		return;
	pthread_mutex_lock(&d->mu);
	bool current = !strcmp(r->kept.gen, d->gen) && r->kept.index == d->index;
	pthread_mutex_unlock(&d->mu);
	if (!current)
		snapshot_kept_release(r);
}

/*
 * r's own snapshot file kept from a failed try (struct eng_replica.kept),
 * moved into u, when the database is still at its index; else it is let go.
 */
static bool kept_again(struct eng_replica *r, struct snap_file *u)
{
	snapshot_kept_check(r);
	if (r->kept.fd < 0)
		return false;
	*u = r->kept;
	r->kept.fd = -1;
	return true;
}


/*
 * How r takes its snapshot: from the share (u filled, u->fd r's own), by
 * building the share (others will need it), or directly. A share being
 * built for this generation is waited for: it is a local compression.
 * A share is never replaced while it is READY: it goes when settled.
 */
static enum snap_how share_acquire(struct eng_replica *r, struct snap_file *u)
{
	struct eng_db *d = r->db;
	struct snap_share *sh = &d->share;
	enum snap_how how = SNAP_DIRECT;

	pthread_mutex_lock(&d->mu);
	while (sh->state == SHARE_BUILDING && !strcmp(sh->gen, d->gen) && !d->eng->stop)
		pthread_cond_wait(&d->cond, &d->mu);
	int stale = snapshot_share_settle(d);
	/* one past an oversize index must be past it (its WAL cannot be shipped) */
	bool too_early = r->oversize && sh->index <= r->oversize_index;
	/* an older share restarts a replica that needs one; a scheduled snapshot must be current */
	if (sh->state == SHARE_READY && !too_early &&
	    (needs_snapshot(d, r) || sh->index == d->index)) {
		u->fd = fcntl(sh->fd, F_DUPFD_CLOEXEC, 0);
		if (u->fd >= 0) {
			memcpy(u->gen, sh->gen, sizeof(u->gen));
			u->index = sh->index;
			u->packed = sh->packed;
			u->plain = sh->plain;
			u->page_size = sh->page_size;
			u->covers = sh->covers;
			u->sure = sh->sure;
			u->covers_mono = sh->covers_mono;
			how = SNAP_USE;
		}
	} else if (sh->state == SHARE_NONE) {
		for (size_t i = 0; i < d->nreplicas && how == SNAP_DIRECT; i++)
			if (&d->replicas[i] != r && needs_snapshot(d, &d->replicas[i]))
				how = SNAP_BUILD;
		if (how == SNAP_BUILD) {
			sh->state = SHARE_BUILDING;
			memcpy(sh->gen, d->gen, sizeof(sh->gen));
		}
	}
	pthread_mutex_unlock(&d->mu);
	if (stale >= 0)
		close(stale);
	return how;
}

/* End the build: fd (the share's from now on) or -1 if it failed. */
static void share_publish(struct eng_db *d, int fd, const struct snap_db *s, int64_t packed,
			  uint64_t plain)
{
	struct snap_share *sh = &d->share;
	pthread_mutex_lock(&d->mu);
	if (fd >= 0) {
		sh->state = SHARE_READY;
		sh->fd = fd;
		memcpy(sh->gen, s->gen, sizeof(sh->gen));
		sh->index = s->index;
		sh->packed = packed;
		sh->plain = plain;
		sh->page_size = s->page_size;
		sh->covers = s->covers;
		sh->sure = s->sure;
		sh->covers_mono = s->covers_mono;
	} else {
		sh->state = SHARE_NONE;
	}
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->mu);
}

/* st_source.unnamed_file of the shared file: its descriptor (the range covers all of it). */
static int share_unnamed_file(void *ctx)
{
	return ((struct range_src *)ctx)->fd;
}

/*
 * Compress the database into an unnamed file in the state directory.
 * Returns its descriptor, or -1 with msg set. Not tried when the state
 * directory's file system has less room than the database's size (what
 * the file may take) and a margin: writing until ENOSPC would take the room
 * the app's WAL and the shadow need meanwhile (QA129 O3).
 */
static int spool_build(struct eng_db *d, struct snap_db *s, int64_t *packed, uint64_t *plain,
		       char *msg, size_t len)
{
	struct lz4_enc enc;
	struct st_source src;
	struct statvfs vs;
	unsigned char *buf = NULL;
	int64_t off = 0;
	int fd = -1;
	bool enc_ok = false;

	if (statvfs(d->dir, &vs) == 0 &&
	    (uint64_t)vs.f_bavail * vs.f_frsize < (uint64_t)s->fsrc.size + SPOOL_MARGIN) {
		snprintf(msg, len, "%.200s has %llu bytes free, less than the database's %lld and "
			 "a margin of %d MiB", d->dir,
			 (unsigned long long)vs.f_bavail * vs.f_frsize, (long long)s->fsrc.size,
			 SPOOL_MARGIN >> 20);
		return -1;
	}
	buf = malloc(SPOOL_CHUNK);
	fd = fs_open_unnamed(d->dir, "snapshot-");
	if (fd < 0) {
		snprintf(msg, len, "cannot create a file in %.200s: %s", d->dir, strerror(errno));
		goto fail;
	}
	if (!buf || lz4_enc_init(&enc, &src, &s->plain, LZ4_BLOCKS_INDEPENDENT) < 0) {
		snprintf(msg, len, "out of memory");
		goto fail;
	}
	enc_ok = true;
	for (;;) {
		ssize_t n = src.read(src.ctx, buf, SPOOL_CHUNK);
		if (n < 0) {
			snprintf(msg, len, "reading the database: %s", s->fsrc.torn ?
				 "a checkpoint kept growing it while it was read" : strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(fd, buf + done, (size_t)(n - done), off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				snprintf(msg, len, "writing a file in %.200s: %s", d->dir, strerror(errno));
				goto fail;
			}
			done += w;
			off += w;
		}
	}
	*packed = off;
	*plain = enc.plain_bytes;
	lz4_enc_release(&enc);
	free(buf);
	return fd;
fail:
	if (enc_ok)
		lz4_enc_release(&enc);
	if (fd >= 0)
		close(fd);
	free(buf);
	return -1;
}

/*
 * r's snapshot is at (gen, index), reaching covers (pinned at covers_mono),
 * its bytes surely holding sure: move its position there and count it.
 */
static void snapshot_done(struct eng_replica *r, const char *gen, uint32_t index,
			  const struct wal_pos *covers, const struct wal_pos *sure,
			  int64_t covers_mono, uint64_t plain_bytes)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	bool same = r->pos_known && !strcmp(r->pos.generation, gen);
	bool gap = same && r->gap && r->pos.index < index;
	/*
	 * In the same generation with no gap, the replica keeps shipping from where
	 * it is; otherwise it restarts at this snapshot's index. Either way its
	 * older objects stay until retention takes them: a restore to a time
	 * before a gap still works (with either tool), a restore of the latest
	 * starts at this snapshot, and one aimed into the gap stops at it
	 * ("missing segment").
	 */
	if (!same || gap) {
		memset(&r->pos, 0, sizeof(r->pos));
		memcpy(r->pos.generation, gen, sizeof(r->pos.generation));
		r->pos.index = index;
		r->segs_in_index = 0;
	}
	r->pos_known = true;
	r->need_snapshot = false;
	bool was_dropped = r->dropped;
	r->snap_known = true;
	memcpy(r->snap_gen, gen, sizeof(r->snap_gen));
	r->snap_index = index;
	r->snap_covers = *sure;
	r->snap_wait = false;
	r->oversize = false;
	/*
	 * Dropped by the cap on its way (a hung mount, QA124 D1): the shadow
	 * after its index may be gone, which replica_ship finds (a snapshot
	 * then, at a later index: this one is not replaced, QA125); if not,
	 * the replica goes on from it.
	 */
	r->dropped = false;
	/*
	 * Behind no more, unless the replica lacks commits whose times are gone:
	 * the database left this generation while the snapshot was on its way
	 * (QA125), or the cap dropped the replica, and the lag ring let go of
	 * what every other replica held meanwhile (QA126 D1). It lacks every
	 * commit past covers, all made after covers was pinned: its lag counts
	 * from then, until its snapshot of the new generation, or until it has
	 * shipped what the shadow holds now (later commits the ring keeps).
	 */
	bool left = strcmp(gen, d->gen) != 0;
	if ((left || was_dropped) && (r->behind_since_mono || r->carried)) {
		if (r->behind_since_mono < covers_mono)
			r->behind_since_mono = covers_mono;
		if (left) {
			memset(&r->behind_until, 0, sizeof(r->behind_until));
		} else {
			replica_target(d, &r->behind_until);
			/* already there (the snapshot reaches the shadow's end): nothing to wait
			 * for, or an idle database's lag grew for nothing (QA129 D1) */
			replica_lag_caught_up(r);
		}
	} else {
		r->behind_since_mono = 0;
	}
	r->gap = false;
	r->snap_failing = false;
	int64_t since = replica_end_outage(r); /* it took a snapshot: it answers again */
	r->carried = false;           /* ... and holds the database (note_ok drops its record) */
	r->stat.snapshots_total++;
	r->stat.snapshot_bytes_total += plain_bytes;
	r->stat.last_snapshot_ns = r->snap_written_ns = clock_wall_ns();
	r->snap_written_mono = clock_mono_ns();
	int unused = snapshot_share_settle(d);
	pthread_mutex_unlock(&d->mu);
	if (unused >= 0)
		close(unused);
	/* as note_ok() does, which finds nothing failing after this (QA161 D4: the record too) */
	replica_outage_over(r, since);
}

/*
 * After a snapshot at index past a gap in r's history of the generation,
 * the placeholder of index (wal.h), so Litestream can restore the replica
 * before the index's first real segment replaces it. A failure is only
 * logged: that first segment mends it too. Create-only: a placeholder PUT
 * given up on but landing late must not replace that first segment (a hole
 * at the index's start), on a server that honours If-None-Match.
 */
static void put_placeholder(struct eng_replica *r, const char *gen, uint32_t index,
			    uint32_t page_size, const struct st_call *call)
{
	uint8_t hdr[WAL_HEADER_SIZE];
	struct st_mem_source m;
	struct st_source src;
	struct st_error err = { 0 };
	char key[LAYOUT_KEY_MAX];
	uint64_t plain = 0;

	struct st_call once = *call;
	once.create_only = true;
	wal_header_placeholder(hdr, page_size);
	st_mem_source_init(&src, &m, hdr, sizeof(hdr));
	layout_wal_key(key, gen, index, 0);
	int rc = replica_put_lz4(r, key, &src, LZ4_BLOCKS_INDEPENDENT, &once, &plain, &err);
	if (rc == ST_EXISTS)
		log_debug("replica", "the snapshot's index has its first segment already", "db=%s "
			  "replica=%s key=%s", r->db->stat.name, r->stat.name, key);
	else if (rc < 0)
		log_warn("replica", "cannot write the placeholder of the snapshot's index: "
			 "Litestream cannot restore this replica until the index's first segment",
			 "db=%s replica=%s key=%s err=\"%s\"", r->db->stat.name, r->stat.name, key,
			 err.message);
}

/*
 * Bring r to u->covers before its snapshot is stored. Restoring the snapshot
 * with only the segments r held before would replay older frames of its
 * index over pages the file already holds newer: a mix of two moments that
 * no check is sure to catch (QA20; Litestream has the same window). Only
 * where r continues its history in the snapshot's generation (an older
 * snapshot there keeps every moment restorable meanwhile). A new generation,
 * or one past a gap, gets its snapshot first, as before: its segments first
 * would leave the generation unrestorable ("WAL but no snapshot") for the
 * whole upload, for good if the node dies meanwhile, and every restore would
 * fail where the older generation is whole (QA21). Returns 0, or -1 with msg
 * set.
 */
static int wal_first(struct eng_replica *r, const struct snap_file *u, bool flush, char *msg,
		     size_t len)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	bool continues = r->pos_known && !strcmp(r->pos.generation, u->gen) && r->snap_known &&
			 !strcmp(r->snap_gen, u->gen) && !(r->gap && r->pos.index < u->index);
	pthread_mutex_unlock(&d->mu);
	if (!continues)
		return 0;
	if (replica_ship(r, flush) < 0) {
		snprintf(msg, len, "the WAL the snapshot reaches could not be shipped before it");
		return -1;
	}
	pthread_mutex_lock(&d->mu);
	struct wal_pos at = r->pos;
	bool there = !strcmp(at.generation, u->covers.generation) &&
		     wal_pos_cmp(&at, &u->covers) >= 0;
	pthread_mutex_unlock(&d->mu);
	if (!there)
		snprintf(msg, len, "the replica is at %s/%08x/%08x, short of %s/%08x/%08x, the WAL "
			 "the snapshot reaches: no snapshot before it", at.generation, at.index,
			 at.offset, u->covers.generation, u->covers.index, u->covers.offset);
	return there ? 0 : -1;
}

int snapshot_take(struct eng_replica *r, bool flush)
{
	static const char *const how_name[] = { "direct", "shared-built", "shared-reused",
						"spooled", "spooled-reused" };
	struct eng_db *d = r->db;
	struct st_error err = { 0 };
	struct st_call call;
	struct snap_db s = { 0 };
	struct snap_file u = { .fd = -1 };
	char key[LAYOUT_KEY_MAX], msg[600] = "";
	int64_t t0 = clock_mono_ns();
	int rc = -1;

	replica_call_for(r, &call, flush);
	enum snap_how how = share_acquire(r, &u);
	if (how == SNAP_DIRECT && kept_again(r, &u))
		how = SNAP_KEPT;
	else
		snapshot_kept_release(r); /* a share serves it: the kept file would stay (QA132 D1) */
	if (how != SNAP_USE && how != SNAP_KEPT) {
		if (snap_db_open(d, &s, flush, msg, sizeof(msg)) < 0) {
			if (how == SNAP_BUILD)
				share_publish(d, -1, NULL, 0, 0);
			goto out;
		}
		memcpy(u.gen, s.gen, sizeof(u.gen));
		u.index = s.index;
		u.page_size = s.page_size;
		u.covers = s.covers;
		u.sure = s.sure;
		u.covers_mono = s.covers_mono;
	}
	pthread_mutex_lock(&d->mu);
	memcpy(r->snap_hold_gen, u.gen, sizeof(r->snap_hold_gen));
	r->snap_hold_index = u.index;
	pthread_mutex_unlock(&d->mu);
	if (how == SNAP_BUILD) {
		char why[300] = "";
		int fd = spool_build(d, &s, &u.packed, &u.plain, why, sizeof(why));
		u.fd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
		share_publish(d, fd, &s, u.packed, u.plain);
		if (u.fd >= 0) {
			snap_db_close(&s); /* the local copy holds it now */
		} else if (s.fsrc.torn) {
			snprintf(msg, sizeof(msg), "%s", why); /* read directly, it would be again */
			goto out;
		} else {
			log_warn("replica", "cannot share the snapshot, streaming it directly",
				 "db=%s replica=%s err=\"%s\"", d->stat.name, r->stat.name,
				 fd < 0 ? why : strerror(errno));
			how = SNAP_DIRECT;
			dbfile_rewind(&s.fsrc);
		}
	} else if (how == SNAP_DIRECT) {
		/*
		 * Alone in needing it: compress into a private unnamed file too, so the
		 * read transaction (which keeps every checkpoint from completing and the
		 * WAL from restarting) ends before any call to the replica, which may
		 * hang (QA127 D1). Streamed directly only if that file cannot be made.
		 */
		char why[300] = "";
		int fd = spool_build(d, &s, &u.packed, &u.plain, why, sizeof(why));
		if (fd >= 0) {
			u.fd = fd;
			snap_db_close(&s);
			how = SNAP_SPOOLED;
		} else if (s.fsrc.torn) {
			snprintf(msg, sizeof(msg), "%s", why);
			goto out;
		} else {
			log_warn("replica", "cannot spool the snapshot, streaming it directly (the WAL "
				 "cannot restart until it is uploaded)",
				  "db=%s replica=%s err=\"%s\"", d->stat.name, r->stat.name, why);
			dbfile_rewind(&s.fsrc);
		}
	}
	if (wal_first(r, &u, flush, msg, sizeof(msg)) < 0)
		goto out;
	layout_snapshot_key(key, u.gen, u.index);
	if (how == SNAP_DIRECT) {
		rc = replica_put_lz4(r, key, &s.plain, LZ4_BLOCKS_INDEPENDENT, &call, &u.plain, &err);
	} else {
		struct range_src rs;
		struct st_source src;
		range_src_init(&src, &rs, u.fd, 0, (uint64_t)u.packed);
		src.unnamed_file = share_unnamed_file; /* READY: never written again */
		rc = storage_put(r->st, key, &src, &call, &err);
	}
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", err.message);
		rc = -1;
		goto out;
	}
	log_info("replica", "snapshot written", "db=%s replica=%s key=%s bytes=%llu ms=%lld how=%s",
		 d->stat.name, r->stat.name, key, (unsigned long long)u.plain,
		 (long long)((clock_mono_ns() - t0) / NS_PER_MS), how_name[how]);
	/*
	 * Read now, not before the upload: the cap may have dropped r while it
	 * hung, marking the gap snapshot_done restarts r's position at (QA137 O4).
	 * Only this thread moves r's position; wal_first moved it past the gap's
	 * index if it shipped.
	 */
	pthread_mutex_lock(&d->mu);
	bool past_gap = r->pos_known && !strcmp(r->pos.generation, u.gen) && r->gap &&
			r->pos.index < u.index;
	pthread_mutex_unlock(&d->mu);
	if (past_gap)
		put_placeholder(r, u.gen, u.index, u.page_size, &call);
	/*
	 * The label right after the generation's first snapshot, not before:
	 * the generation is restorable from its first object on (QA21), and a
	 * label alone would only be a generation without data. Failing here
	 * costs no snapshot: the next segment's upload labels it first.
	 */
	if (replica_label(r, u.gen, &call, &err) < 0)
		log_warn("replica", "cannot label the generation with the database id: tried again "
			 "before its next segment", "db=%s replica=%s generation=%s err=\"%s\"",
			 d->stat.name, r->stat.name, u.gen, err.message);
	snapshot_done(r, u.gen, u.index, &u.covers, &u.sure, u.covers_mono, u.plain);
	rc = 0;
out:
	pthread_mutex_lock(&d->mu);
	r->snap_hold_gen[0] = '\0';
	pthread_mutex_unlock(&d->mu);
	if (u.fd >= 0 && rc < 0 && (how == SNAP_SPOOLED || how == SNAP_KEPT) && !d->eng->stop) {
		if (r->kept.fd >= 0)
			close(r->kept.fd);
		r->kept = u; /* for the next try (kept_again) */
	} else if (u.fd >= 0) {
		close(u.fd);
	}
	snap_db_close(&s);
	if (rc < 0 && d->eng->stop && !flush) /* cut short by the stop: no failure of r's */
		log_debug("replica", "snapshot given up: replication stops", "db=%s replica=%s "
			  "err=\"%s\"", d->stat.name, r->stat.name, msg);
	else if (rc < 0)
		replica_note_error(r, "snapshot failed", msg);
	if (rc < 0 && !(d->eng->stop && !flush)) {
		pthread_mutex_lock(&d->mu);
		r->snap_failing = true;
		pthread_mutex_unlock(&d->mu);
	}
	return rc;
}
