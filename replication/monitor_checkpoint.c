/*
 * monitor_checkpoint.c — the monitor's checkpoints (the safe checkpoint
 * under our writer lock, the TRUNCATE of a large backfilled WAL), and how
 * its read hold gives way: to another process's checkpoint that waits for
 * it, and when copies into the shadow have failed too long. See
 * monitor_int.h and docs/replication.md.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/engine_int.h"
#include "replication/monitor_int.h"
#include "common/banned.h"

/* how long to look for another process's checkpoint after the WAL or the database file changed */
#define FOLLOW_NS (2 * NS_PER_SEC)
#define FOLLOW_STEP_MAX_MS 50
/* yielding to one: how often to look whether it is done, and for how long at most */
#define YIELD_POLL_NS (1000 * 1000)
#define YIELD_MAX_NS (30 * NS_PER_SEC)
/*
 * ... and how long its backfill may wait, with our hold at the WAL's end and
 * no reader of the app's, before we let go: SQLite's busy handler retries at
 * least every 100 ms, so a wait longer than that is for us.
 */
#define YIELD_STUCK_NS (250 * 1000 * 1000)
/*
 * How long copies into the shadow may keep failing (a full state disk)
 * before the read hold stops keeping the WAL for them: held, the app's WAL
 * is never restarted and grows without bound (50-100 MB in a minute of a
 * busy app), larger than the state disk, so the copy could never catch up
 * once there is room again (QA97 D1). Let go, the app's checkpoints restart
 * it; the frames not copied are lost to the replicas, and the first copy
 * that works again, finding a new WAL session, starts a new generation.
 */
#define SYNC_GIVE_UP_NS (10 * NS_PER_SEC)

static int copy_cb(void *ctx)
{
	return monitor_copy_wal(ctx);
}

/*
 * The TRUNCATE step once the WAL is fully backfilled and very large. The hold
 * stays where db_safe_checkpoint() took it again: on read slot 0, which lets
 * the truncation through (it waits for slots 1..N only) but blocks the
 * backfill of a commit that slipped in since our copy, so our TRUNCATE then
 * fails busy instead of dropping that commit. A hold elsewhere pins the WAL:
 * no truncation this time. (Ending the hold for it, as before, let such a
 * commit be truncated uncopied: a new generation had to start.)
 */
static void truncate_wal(struct eng_db *d)
{
	if (!d->conns.db_only)
		return;
	if (db_checkpoint(d->conns.ck, DB_CKPT_TRUNCATE, NULL, NULL) != 0)
		return;
	pthread_mutex_lock(&d->mu);
	d->stat.checkpoints_total[DB_CKPT_TRUNCATE]++;
	pthread_mutex_unlock(&d->mu);
	log_info("engine", "WAL truncated", "db=%s index=%u", d->stat.name, d->sh.index);
	/* our copy under the writer lock saw the index's last word: frames past it are gone now */
	if (shadow_unpublished(&d->sh)) {
		if (monitor_start_generation(d, DROPPED_WHY) < 0)
			d->continuous = false;
		return;
	}
	shadow_next_index(&d->sh);
	monitor_publish(d, 0);
}

/*
 * Fully backfilled already at about this size: the app's next write restarts
 * the WAL, unless that write had begun (and was waiting for our writer lock)
 * before the backfill ended, or an app reader holds the WAL. Worth another
 * checkpoint only once it grew by a quarter of the threshold, not at every
 * pass; the threshold is max-checkpoint-page-count when that is the lower
 * (a max of 30 under the default min of 1000 would otherwise let a WAL whose
 * restart was missed grow to 280 frames before the next try).
 */
bool monitor_ckpt_settled(const struct eng_db *d, uint64_t frames)
{
	int64_t threshold = d->cfg->min_checkpoint_page_count;
	if (d->cfg->max_checkpoint_page_count > 0 && d->cfg->max_checkpoint_page_count < threshold)
		threshold = d->cfg->max_checkpoint_page_count;
	/* at least one frame: a threshold under 4 would checkpoint an unchanged WAL at every pass */
	int64_t slack = threshold / 4 > 0 ? threshold / 4 : 1;
	return d->ckpt_done && d->ckpt_done_epoch == d->gen_epoch &&
	       d->ckpt_done_index == d->sh.index &&
	       (int64_t)(frames - d->ckpt_done_frames) < slack;
}

/* Checkpoint when due. Returns true when it ran one (the database file may have been written). */
bool monitor_maybe_checkpoint(struct eng_db *d)
{
	const struct cfg_db *c = d->cfg;
	int64_t now = clock_mono_ns();

	if (!d->continuous || d->sh.fd < 0)
		return false;
	pthread_mutex_lock(&d->mu);
	bool req = d->ckpt_req;
	bool restart = d->restart_req && d->ckpt_req_index == d->sh.index;
	pthread_mutex_unlock(&d->mu);
	uint64_t frames = monitor_shadow_frames(d);
	if (monitor_ckpt_settled(d, frames)) {
		/* backfilled, and the new index cannot wait for the app: start it ourselves */
		if (restart && now - d->last_ckpt_mono >= CKPT_RETRY_NS / 10) {
			d->last_ckpt_mono = now;
			truncate_wal(d);
		}
		return false;
	}
	/*
	 * The app's own autocheckpoint fires at 1000 frames (SQLite's default, and
	 * Litestream's min-checkpoint-page-count): past it, while our read hold keeps
	 * the WAL from restarting, every one of the app's commits tries a checkpoint
	 * (an fsync now and then, measured: 4-5x the app's fdatasyncs) and ours
	 * collides with them. So check in before the WAL gets there: when it would
	 * cross the threshold before the next pass, growing as it did since the last.
	 */
	uint64_t grow = d->seen_index == d->sh.index && frames > d->seen_frames
				? frames - d->seen_frames : 0;
	d->seen_index = d->sh.index;
	d->seen_frames = frames;
	bool soon = frames >= (uint64_t)c->min_checkpoint_page_count / 2 &&
		    frames + grow >= (uint64_t)c->min_checkpoint_page_count;
	/* retry soon when asked or when the WAL is past max-checkpoint-page-count */
	bool forced = c->max_checkpoint_page_count > 0 &&
		      (int64_t)frames >= c->max_checkpoint_page_count;
	bool urgent = req || forced;
	/* urgent is due even below the minimum (a max under min: Litestream checks max first) */
	bool due = urgent || soon || (int64_t)frames >= c->min_checkpoint_page_count ||
		   (c->checkpoint_interval_ms > 0 && frames > 1 &&
		    now - d->last_ckpt_mono >= c->checkpoint_interval_ms * NS_PER_MS);
	if (!due || now - d->last_ckpt_mono < (urgent ? CKPT_RETRY_NS / 10 : CKPT_RETRY_NS))
		return false;
	/* never write the frames of a WAL that was deleted under us into whatever is there now */
	if (monitor_side_files_changed(d) || monitor_wal_cut_short(d))
		return false;
	d->last_ckpt_mono = now;
	bool full = false;
	int rc = db_safe_checkpoint(&d->conns, copy_cb, d, &full);
	if (d->conns.cur < 0)
		d->continuous = false;
	pthread_mutex_lock(&d->mu);
	/*
	 * Counted by what Litestream runs at that point, so its dashboards read the
	 * same: past max-checkpoint-page-count a RESTART. Ours is the PASSIVE one
	 * under the writer lock above, to the same end: the WAL restarts at the
	 * app's next write (no RESTART, which would wait on the app's readers).
	 */
	if (rc == 0)
		d->stat.checkpoints_total[forced ? DB_CKPT_RESTART : DB_CKPT_PASSIVE]++;
	else if (rc < 0)
		d->stat.checkpoint_errors_total++;
	pthread_mutex_unlock(&d->mu);
	log_debug("engine", "checkpoint", "db=%s rc=%d full=%d index=%u frames=%llu requested=%d",
		  d->stat.name, rc, full, d->sh.index, (unsigned long long)frames, req);
	if (rc != 0 || !full)
		return true; /* even a busy one ran its first PASSIVE step */
	d->ckpt_done = true;
	d->ckpt_done_epoch = d->gen_epoch;
	d->ckpt_done_index = d->sh.index;
	d->ckpt_done_frames = frames;
	pthread_mutex_lock(&d->mu);
	d->ckpt_req = false; /* served: the restart is up to the app's next write */
	pthread_mutex_unlock(&d->mu);
	struct stat st;
	if (restart || (c->truncate_page_count > 0 && d->wal_fd >= 0 && fstat(d->wal_fd, &st) == 0 &&
			(uint64_t)st.st_size >= WAL_HEADER_SIZE + (uint64_t)c->truncate_page_count *
								  wal_frame_size(d->sh.hdr.page_size)))
		truncate_wal(d);
	return true;
}

/*
 * While yielding, no pass runs, and a pass asked for (a snapshot pinning
 * what it reaches, a replica's tick, the final flush) would wait for the
 * yield's end: up to YIELD_MAX_NS, and a snapshot whose own read
 * transaction is what the checkpoint waits for gave up first (its 5 s),
 * every time. The yield copies the WAL whenever its end moves, so serve
 * them here: when a look taken after the request finds the WAL index as it
 * was before the last good copy (seen; NULL: none yet, or that copy left a
 * session unproven or commits unaccounted: monitor_check_commits() has the pass
 * after the yield settle it), not one commit came since, and the shadow
 * holds everything committed. The look needs no hold: it reads SQLite's
 * header, not the WAL.
 */
static void serve_sync_requests(struct eng_db *d, const struct db_wal_index *seen)
{
	if (!seen || d->sh.unproven)
		return;
	pthread_mutex_lock(&d->mu);
	if (d->sync_req > d->sync_seq) {
		struct db_wal_index now;
		sqlite3 *look = d->conns.cur >= 0 ? d->conns.hold[d->conns.cur] : d->conns.ck;
		if (db_wal_index(look, &now) == 0 && now.consistent && now.change == seen->change &&
		    now.max_frame == seen->max_frame && !memcmp(now.salts, seen->salts, 8)) {
			d->sync_seq = d->sync_req;
			pthread_cond_broadcast(&d->cond);
		}
	}
	pthread_mutex_unlock(&d->mu);
}

/*
 * Another process's checkpoint. A FULL, RESTART or TRUNCATE one (uptime-kuma
 * runs wal_checkpoint(TRUNCATE) on close) holds the writer lock and waits
 * (busy handler) for readers twice: for each reader whose mark is below the
 * end of the WAL before it backfills, and for every reader of slots 1..N to
 * leave before it restarts the WAL. Our hold is such a reader, and nothing
 * in the files changes while the app waits, so no event wakes us. So after
 * the WAL grew or the database file changed, the monitor looks often (1, 2,
 * 4 … 50 ms, for FOLLOW_NS) whether such a checkpoint runs, and yields to
 * it, looking every millisecond while it runs:
 *  1. move the hold to the end of the WAL (then copy, as a pass does): the
 *     backfill no longer waits for its mark. Again whenever the WAL grew:
 *     the app may commit and start its next checkpoint between two looks;
 *  2. once everything is backfilled, move it to read slot 0, which the
 *     restart does not wait for, but which still blocks the backfill of
 *     what is written next: the app's next session stays in the WAL until
 *     copied;
 *  3. if the backfill still waits after YIELD_STUCK_NS in which no reader of
 *     the app's held a read slot (else it is what the checkpoint waits for:
 *     letting go would only open a gap), let go until it is done: SQLite
 *     retries the lock of the slot whose mark it found stale, and when the
 *     app's reader left it, a hold moved to the end of the WAL may share
 *     that very slot (its mark is the end now), for as long as we hold
 *     anything. The hold is taken again as soon as the backfill is done or
 *     the WAL grows.
 * Only in step 3 can an app's session (a commit, a full checkpoint and the
 * next commit) pass before the hold is back; monitor_check_commits() then starts a
 * new generation. Letting go in every yield, as an earlier version did, lost
 * whole sessions of an app that checkpoints after each commit.
 * A PASSIVE checkpoint (the app's autocheckpoint) waits for nobody, but once
 * it has backfilled everything, a hold taken again reads the database file
 * only and lets the app's next write restart the WAL.
 */
static void yield_to_checkpoint(struct eng_db *d)
{
	int64_t t0 = clock_mono_ns(), alone_since = 0;
	uint32_t at = 0;
	bool moved = false, let_go = false;
	struct db_wal_index seen = { 0 }; /* the look before the last good copy */
	bool copied = false;
	struct timespec ts = { 0, YIELD_POLL_NS };
	while (!monitor_stopping(d) && clock_mono_ns() - t0 < YIELD_MAX_NS &&
	       db_foreign_blocking_checkpoint(&d->conns) == 1) {
		struct db_wal_index wi;
		sqlite3 *look = d->conns.cur >= 0 ? d->conns.hold[d->conns.cur] : d->conns.ck;
		bool have = db_wal_index(look, &wi) == 0;
		bool backfilled = have && wi.backfilled == wi.max_frame;
		if (!moved || backfilled || (have && wi.max_frame != at)) {
			/*
			 * As a pass does: the new hold first, then the copy (db_hold_rotate()).
			 * Onto slot 0 even with frames not copied (copy_behind): the app's
			 * checkpoint holds its writer lock while it waits for us; the frames
			 * it may restart the WAL over cost a new generation.
			 */
			if (db_hold_rotate(&d->conns, false) < 0) {
				d->continuous = false;
				return;
			}
			uint64_t epoch = d->gen_epoch;
			int crc = monitor_copy_wal(d);
			monitor_note_sync(d, crc);
			if (crc == 0)
				/* as a pass does: a session slipped past is no copy */
				monitor_check_commits(d);
			copied = crc == 0 && have && wi.consistent && d->continuous && !d->sh.unproven &&
				 d->gen_epoch == epoch;
			seen = wi;
			moved = true;
			let_go = false;
			alone_since = 0;
			at = have ? wi.max_frame : 0;
			if (d->conns.db_only)
				break; /* the restart waits for nothing of ours */
		} else if (!let_go) {
			/* since when the hold is at the WAL's end and no app reader holds a slot */
			int64_t now = clock_mono_ns();
			if (db_foreign_reader(&d->conns) != 0)
				alone_since = 0;
			else if (!alone_since)
				alone_since = now;
			if (alone_since && now - alone_since >= YIELD_STUCK_NS && monitor_copy_wal(d) == 0) {
				db_hold_release(&d->conns);
				let_go = true;
			}
		}
		serve_sync_requests(d, copied ? &seen : NULL);
		nanosleep(&ts, NULL);
	}
	if (d->conns.cur < 0) {
		if (db_hold_rotate(&d->conns, false) < 0)
			d->continuous = false;
		else
			monitor_note_sync(d, monitor_copy_wal(d));
	}
	log_debug("engine", "yielded to another process's checkpoint",
		  "db=%s ms=%lld slot0=%d let_go=%d", d->stat.name,
		  (long long)((clock_mono_ns() - t0) / NS_PER_MS), d->conns.db_only, let_go);
}

/*
 * After a failed copy: once copies have failed for SYNC_GIVE_UP_NS, the hold
 * taken for each copy is let go after it, so the app's checkpoints can
 * restart its WAL (SYNC_GIVE_UP_NS says why). Said once per failure.
 */
void monitor_give_up_hold(struct eng_db *d)
{
	pthread_mutex_lock(&d->mu);
	int64_t since = d->stat.sync_failing_since_mono_ns;
	pthread_mutex_unlock(&d->mu);
	if (!since || clock_mono_ns() - since < SYNC_GIVE_UP_NS || d->conns.cur < 0)
		return;
	if (!d->gave_up_hold)
		log_warn("engine", "copying new commits has failed too long: no longer keeping the "
			 "WAL for it, so the app's checkpoints can restart it; the commits not "
			 "copied are lost to the replicas, and replication goes on in a new "
			 "generation once copying works again", "db=%s failing_s=%.0f err=\"%s\"",
			 d->stat.name, (double)(clock_mono_ns() - since) / NS_PER_SEC, d->sync_why);
	d->gave_up_hold = true;
	db_hold_release(&d->conns);
	d->continuous = false;
}

/*
 * Called after each pass (grew: the pass copied something). Returns true
 * when a pass should run now (to take the hold again); otherwise *wait is
 * shortened while following.
 */
bool monitor_follow_checkpoint(struct eng_db *d, int64_t mtime_ns, bool grew, int64_t *wait)
{
	int64_t now = clock_mono_ns();
	if (mtime_ns != d->db_mtime_ns || grew) {
		d->db_mtime_ns = mtime_ns;
		d->follow_until = now + FOLLOW_NS;
		d->follow_step_ms = 1;
		d->follow_backfilled = UINT32_MAX;
	}
	if (!d->follow_until || d->conns.cur < 0)
		return false;
	if (now >= d->follow_until) {
		d->follow_until = 0;
		return false;
	}
	struct db_wal_index wi;
	bool have = db_wal_index(d->conns.hold[d->conns.cur], &wi) == 0;
	if (d->conns.db_only) {
		/*
		 * A hold on read slot 0 blocks no restart, but it blocks the
		 * backfill of every frame written since it began. Such frames
		 * woke the pass that took it, but their commit reached the WAL
		 * index after its look: an app's checkpoint that waits for us
		 * now gets no file event. Move the hold off slot 0 for it (not
		 * for every commit: a pass right inside the app's commits makes
		 * the hold share read slot 1 more often, see db.c).
		 */
		if (have && wi.max_frame != wi.backfilled && wi.max_frame != d->follow_backfilled &&
		    db_foreign_blocking_checkpoint(&d->conns) == 1) {
			d->follow_backfilled = wi.max_frame; /* once per state: never a busy loop */
			return true;
		}
	} else {
		if (db_foreign_blocking_checkpoint(&d->conns) == 1) {
			yield_to_checkpoint(d);
			return true; /* a pass right away: its copy and the hold's next place */
		}
		if (have && wi.backfilled == wi.max_frame && wi.max_frame != d->follow_backfilled) {
			d->follow_backfilled = wi.max_frame; /* once per state: never a busy loop */
			return true;
		}
	}
	if (*wait > d->follow_step_ms)
		*wait = d->follow_step_ms;
	if (d->follow_step_ms < FOLLOW_STEP_MAX_MS)
		d->follow_step_ms *= 2;
	return false;
}
