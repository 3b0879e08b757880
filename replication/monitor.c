/*
 * monitor.c — one thread per database: wait for it, open our connections,
 * keep the read hold, copy committed WAL frames into the shadow WAL, follow
 * WAL restarts into new indexes, start new generations when the history
 * breaks. Opening and closing the database: monitor_open.c; the safe
 * checkpoint and yielding to another process's: monitor_checkpoint.c (what
 * they share: monitor_int.h). See engine_int.h and docs/replication.md.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "replication/monitor_int.h"
#include "common/banned.h"

#define CLEANUP_EVERY_NS (1 * NS_PER_SEC)
/*
 * With inotify every commit wakes the monitor, so an idle database needs no
 * look every monitor-interval: only a safety check this often (a missed
 * event, the backlog's cleanup), and the checkpoint-interval's deadline.
 */
#define IDLE_CHECK_MS 10000
/* a copy into the shadow that keeps failing for the same cause is logged this often */
#define SYNC_LOG_EVERY_NS (60 * NS_PER_SEC)
/* how long a session that followed a salt-1 jump may wait for monitor_check_commits to vouch for it */
#define UNPROVEN_MAX_NS (10 * NS_PER_SEC)

void monitor_db_set_state(struct eng_db *d, bool replicating, const char *state)
{
	pthread_mutex_lock(&d->mu);
	if (strcmp(d->stat.state, state) != 0)
		log_event(strncmp(state, "error", 5) ? LOG_INFO : LOG_ERROR, "engine", "database state",
			  "db=%s state=\"%s\"", d->stat.name, state);
	d->stat.replicating = replicating;
	snprintf(d->stat.state, sizeof(d->stat.state), "%s", state);
	bool stuck = !replicating && strcmp(state, ENG_STATE_WAITING) != 0 &&
		     strcmp(state, STATE_HELD) != 0;
	if (!stuck)
		d->stat.stuck_since_mono_ns = 0;
	else if (!d->stat.stuck_since_mono_ns)
		d->stat.stuck_since_mono_ns = clock_mono_ns();
	pthread_mutex_unlock(&d->mu);
}

void monitor_wake_replicas(struct eng_db *d)
{
	for (size_t i = 0; i < d->nreplicas; i++) {
		d->replicas[i].wake = true;
		pthread_cond_signal(&d->replicas[i].cond);
	}
}

bool monitor_stopping(struct eng_db *d)
{
	pthread_mutex_lock(&d->mu);
	bool s = d->eng->stop;
	pthread_mutex_unlock(&d->mu);
	return s;
}

/* Publish the shadow's position to the replicas (monitor thread, under mu). */
static void publish_locked(struct eng_db *d, uint64_t grew, int64_t now)
{
	/* replicas sleep until told: any move of the position (a new index too) is news */
	bool moved = strcmp(d->gen, d->sh.gen) != 0 || d->index != d->sh.index ||
		     d->size != (d->sh.fd >= 0 ? d->sh.size : 0);
	if (strcmp(d->gen, d->sh.gen) != 0)
		writers_note_own(d, d->sh.gen);
	snprintf(d->gen, sizeof(d->gen), "%s", d->sh.gen);
	d->index = d->sh.index;
	d->size = d->sh.fd >= 0 ? d->sh.size : 0;
	d->prev_end = d->sh.prev_end;
	memcpy(d->stat.pos.generation, d->gen, sizeof(d->gen));
	d->stat.pos.index = d->index;
	d->stat.pos.offset = (uint32_t)(d->size > UINT32_MAX ? UINT32_MAX : d->size);
	if (!d->ready || moved)
		monitor_wake_replicas(d); /* they wait for the first position */
	if (grew) {
		lagring_add(d->lag, &d->lag_n, (struct lag_entry){ d->index, d->size, now });
		monitor_wake_replicas(d);
	}
	d->ready = true;
	if (!d->resume_pending)
		replica_older_clock_start(d);
}

/* Publish the shadow's position to the replicas (monitor thread). */
void monitor_publish(struct eng_db *d, uint64_t grew)
{
	int64_t now = clock_mono_ns();
	pthread_mutex_lock(&d->mu);
	publish_locked(d, grew, now);
	pthread_mutex_unlock(&d->mu);
}

/*
 * A failed shadow_start (d->sh.err), logged when its cause changes and every
 * SYNC_LOG_EVERY_NS: the start is tried again at every pass, and a full
 * state disk logged an ERROR each time, 20 a second (QA115 D5).
 */
void monitor_shadow_start_failed(struct eng_db *d)
{
	int64_t now = clock_mono_ns();
	/* by step and errno: each try names a new generation's directory (QA118 D2) */
	if (!strcmp(d->start_err_logged, d->sh.err_key) && now - d->start_err_mono < SYNC_LOG_EVERY_NS)
		return;
	snprintf(d->start_err_logged, sizeof(d->start_err_logged), "%s", d->sh.err_key);
	d->start_err_mono = now;
	log_error("engine", "cannot start a generation in the state directory", "db=%s error=\"%s\"",
		  d->stat.name, d->sh.err);
}

/*
 * The resumed generation is the database's (the WAL goes on from the shadow,
 * every commit copied), or a new one started: the replicas may look now.
 */
static void resume_settled(struct eng_db *d)
{
	pthread_mutex_lock(&d->mu);
	if (d->resume_pending) {
		d->resume_pending = false;
		replica_older_clock_start(d);
		monitor_wake_replicas(d);
	}
	pthread_mutex_unlock(&d->mu);
}

/*
 * Is an owed generation's next try to wait? Once a second at most: each try
 * makes and removes a directory (QA120 O2), whoever asks (QA121 O3). A
 * final flush's passes try at once: else a state directory that takes it
 * again in the second before a stop kept every commit made while it was
 * owed off the replicas (QA121 D2).
 */
static bool owed_too_soon(struct eng_db *d)
{
	if (!d->gen_owed[0])
		return false;
	pthread_mutex_lock(&d->mu);
	bool urgent = d->sync_seq < d->urgent_seq;
	pthread_mutex_unlock(&d->mu);
	return !urgent && clock_mono_ns() - d->gen_owed_mono < NS_PER_SEC;
}

/*
 * Start a new generation for reason. Returns 0, -1 when the state
 * directory refused it (it is owed from then on), or GEN_WAITS.
 */
int monitor_start_generation(struct eng_db *d, const char *reason)
{
	char gen[17];
	struct stat st;
	char both[sizeof(d->gen_owed) + 320];

	if (owed_too_soon(d))
		return GEN_WAITS;
	d->gen_owed_mono = clock_mono_ns();
	/* the first cause is kept: a later one (a writer check) may be what starts it (QA121 O2) */
	if (d->gen_owed[0] && strcmp(reason, d->gen_owed) != 0) {
		snprintf(both, sizeof(both), "%.300s; owed since: %s", reason, d->gen_owed);
		reason = both;
	}

	/* where the file stood in the generation it leaves (localstate.h, "previous") */
	/* (an index with no shadow file yet holds nothing of this file's) */
	struct wal_pos left = { .index = d->sh.index,
				.offset = d->sh.fd >= 0 ? (uint32_t)d->sh.size : 0 };
	/*
	 * An index entered with nothing in it (a restore's, an idle run's): the
	 * file stood where the index before ended, as localstate_position says.
	 * Said so, a replica holding more of that index is another node's
	 * writing (replica_history_continued_since; QA84 N1).
	 */
	if (d->sh.fd < 0 && d->sh.index > 0 && d->sh.prev_end >= 0 && d->sh.prev_end <= UINT32_MAX) {
		left.index = d->sh.index - 1;
		left.offset = (uint32_t)d->sh.prev_end;
	}
	memcpy(left.generation, d->sh.gen, sizeof(left.generation));
	bool size_ok = d->sh.size <= UINT32_MAX;
	if (layout_generation_new(gen) < 0)
		return -1;
	if (shadow_start(&d->sh, gen, 0, -1) < 0) {
		monitor_shadow_start_failed(d);
		/* owed until it starts (monitor_copy_wal): its cause may not be seen again */
		if (!d->gen_owed[0])
			snprintf(d->gen_owed, sizeof(d->gen_owed), "%.*s",
				 (int)sizeof(d->gen_owed) - 1, reason);
		return -1;
	}
	d->gen_owed[0] = '\0';
	/*
	 * Once it has left: recorded before, a refused start (a full state
	 * disk) named as left the generation the file stayed in (QA120 D1).
	 */
	if (left.generation[0] && size_ok) {
		uid_t uid;
		gid_t gid;
		localstate_owner(d->cfg, &uid, &gid);
		if (localstate_write_previous(d->dir, &left, false, uid, gid) < 0)
			log_warn("engine", "cannot record where the file stood in the generation it "
				 "leaves", "db=%s err=\"%s\"", d->stat.name, strerror(errno));
	}
	d->start_err_logged[0] = '\0';
	log_info("engine", "new generation", "db=%s generation=%s reason=\"%s\"", d->stat.name, gen,
		 reason);
	pthread_mutex_lock(&d->mu);
	/*
	 * The commit times go with the generation left: a replica that lacked
	 * some of them keeps its lag counting from the oldest (replica.c), or
	 * a replica down since long read as lagging since the new generation
	 * began (QA123 D2).
	 */
	int64_t now = clock_mono_ns();
	for (size_t i = 0; i < d->nreplicas; i++) {
		struct eng_replica *r = &d->replicas[i];
		double lag = r->st && !r->behind_since_mono ? replica_lag_seconds(d, r, now) : 0;
		if (lag > 0)
			r->behind_since_mono = now - (int64_t)(lag * NS_PER_SEC);
		/* until its snapshot of the new generation: not an old segment landing late
		 * past an old-generation mark (QA129 O1) */
		if (r->behind_since_mono)
			memset(&r->behind_until, 0, sizeof(r->behind_until));
	}
	d->gen_epoch++;
	d->stat.generations_total++;
	d->commits.set = false;
	d->unproven_mono = 0;
	d->lag_n = 0;
	d->gen_start_mono = clock_mono_ns();
	d->min_index = 0;
	if (stat(d->cfg->path, &st) == 0) {
		d->dev = st.st_dev;
		d->ino = st.st_ino;
	}
	/*
	 * The new generation is the database's in the same hold of mu as the
	 * lag ring's reset: a snapshot of the old one stored in between read
	 * it as the current generation's and ended its replica's lag, whose
	 * commit times were just let go (QA129 O2).
	 */
	publish_locked(d, 0, now);
	monitor_wake_replicas(d);
	pthread_mutex_unlock(&d->mu);
	/* the hold taken before this call protects the current WAL from its first byte */
	d->continuous = true;
	resume_settled(d); /* a resume the WAL disowned ends here */
	return 0;
}

/*
 * Tell the shadow what SQLite's WAL index publishes (shadow_note_index). A
 * torn read (a writer mid-update) is tried again; still torn, or no mapping
 * yet, no look this time (SHADOW_NONE). Else what shadow_note_index says.
 */
enum shadow_result monitor_note_index(struct eng_db *d, char *why, size_t len)
{
	struct db_wal_index wi = { 0 };
	sqlite3 *look = d->conns.cur >= 0 ? d->conns.hold[d->conns.cur] : d->conns.ck;
	for (int tries = 0; tries < 3 && !wi.consistent; tries++)
		if (!look || d->wal_fd < 0 || db_wal_index(look, &wi) < 0)
			return SHADOW_NONE;
	if (!wi.consistent)
		return SHADOW_NONE;
	return shadow_note_index(&d->sh, d->wal_fd, wi.salts, wi.max_frame, why, len);
}

/*
 * The look monitor_copy_wal takes before each copy, so that it proves what the copy
 * reads, and after the last one. Taken right after the hold began, it sees
 * every frame published before the hold. A frame published after it cannot
 * be backfilled while the hold stays (a hold on slot 1..N bounds the
 * backfill at its mark; one on slot 0 makes the checkpoint's lock of slot 0
 * fail), and SQLite restarts the WAL only once it backfilled every frame it
 * published; db_hold_rotate() takes the new hold before the old one ends. So
 * at the end of a session, the frames no look saw published were never
 * published (shadow_unpublished()). Frames SQLite published over frames the
 * shadow holds: a new generation. Returns 0, or -1 when it could not start.
 */
static int look_at_index(struct eng_db *d)
{
	char why[200];
	if (monitor_note_index(d, why, sizeof(why)) != SHADOW_BROKEN)
		return 0;
	return monitor_start_generation(d, why);
}

/*
 * A new generation started in a state directory made again after its
 * deletion: its records back (the database id), and what the waits said is
 * over (QA62 #4).
 */
static void gone_recovered(struct eng_db *d)
{
	char id[sizeof(d->dbid)];
	uid_t uid;
	gid_t gid;
	pthread_mutex_lock(&d->mu);
	memcpy(id, d->dbid, sizeof(id));
	pthread_mutex_unlock(&d->mu);
	localstate_owner(d->cfg, &uid, &gid);
	if (id[0] && localstate_write_database_id(d->dir, id, uid, gid) < 0)
		log_warn("engine", "cannot write the database id to the local state again",
			 "db=%s dir=\"%s\" err=\"%s\"", d->stat.name, d->dir, strerror(errno));
	d->gone_said = false;
	d->open_why[0] = '\0';
	d->state_held_logged = false;
	monitor_db_set_state(d, true, "replicating");
}

/*
 * Copy everything committed into the shadow, following index changes.
 * Returns 0, -1 with the cause in d->sync_why, or GEN_WAITS (an owed
 * generation's next try waits for its second: nothing copied).
 */
int monitor_copy_wal(struct eng_db *d)
{
	char why[sizeof(d->sync_why)];
	int rc = 0;

	/*
	 * A new generation owed since a start the state directory refused: its
	 * cause (commits lost, the WAL overwritten) is not seen again once the
	 * WAL moved on, and the old generation went on with the gap (QA120 O1).
	 * Nothing more is copied into it until the new one starts.
	 */
	/* also once the WAL is no longer followed while a generation is owed (QA125 D3) */
	bool gone = (d->continuous || d->gen_owed[0]) && monitor_shadow_gone(d, why, sizeof(why));
	if (d->gen_owed[0] && !gone) {
		snprintf(why, sizeof(why), "%s", d->gen_owed);
		int sr = monitor_start_generation(d, why);
		if (sr == GEN_WAITS)
			return GEN_WAITS;
		if (sr < 0) {
			snprintf(d->sync_why, sizeof(d->sync_why), "cannot start a new generation in "
				 "the state directory (see the error above)");
			return -1;
		}
		/* owed since the directory was deleted, and no longer followed (a hold
		 * given up while refused): its recovery ends here too (QA124 D3) */
		if (d->gone_said)
			gone_recovered(d);
		return 0;
	}

	/*
	 * Before an owed generation's own try (QA121 D1): one owed since the
	 * directory was deleted (its start refused), or deleted while one was
	 * owed, is started here, with the directory's records made again.
	 */
	if (gone) {
		/* the local history is lost: a new generation, from a snapshot, in a state
		 * directory made again with the records it had (where the file stood, its id) */
		/* said once: until it succeeds, each pass tries again (QA62 #3) */
		if (!d->gone_said)
			log_error("engine", "the local history was deleted: starting a new generation",
				  "db=%s why=\"%s\"", d->stat.name, why);
		d->gone_said = true;
		if (owed_too_soon(d))
			return GEN_WAITS;
		if (localstate_ensure(d->cfg, d->dir) < 0) {
			char e[PATH_MAX + 80];
			snprintf(e, sizeof(e), "%s: %s", d->dir, strerror(errno));
			monitor_open_failed(d, LOG_ERROR, "cannot create the state directory", e);
			rc = -1;
			goto out;
		}
		/* the lock went with the deleted files: taken again on the new ones, or another
		 * process that took them meanwhile is left alone (QA60 #2) */
		for (int k = 0; k < 2; k++) {
			if (d->state_fd[k] >= 0)
				close(d->state_fd[k]);
			d->state_fd[k] = -1;
		}
		if (monitor_take_state(d) != 0) {
			rc = -1;
			goto out;
		}
		/* removed again meanwhile (STATELOCK_NO_DIR): no lock, nothing made; next pass */
		if (d->state_fd[0] < 0 && d->state_fd[1] < 0) {
			snprintf(d->sync_why, sizeof(d->sync_why), "the state directory %.150s was "
				 "removed again while it was being locked: made again at the next pass",
				 d->dir);
			return -1;
		}
		if ((rc = monitor_start_generation(d, why)) < 0)
			goto out;
		gone_recovered(d);
	}
	if (monitor_wal_open(d) < 0) {
		/* no WAL file (yet): nothing committed since the last checkpoint */
		if (!d->continuous && d->sh.fd >= 0)
			rc = monitor_start_generation(d, "wal missing, cannot verify position");
		goto out;
	}
	for (int round = 0; round < 8; round++) {
		uint64_t grew = 0, epoch = d->gen_epoch;
		if ((rc = look_at_index(d)) < 0)
			goto out;
		if (d->gen_epoch != epoch)
			continue; /* a new generation: copy into it */
		enum shadow_result res = shadow_sync(&d->sh, d->wal_fd, &grew, why, sizeof(why));
		switch (res) {
		case SHADOW_GREW:
			d->continuous = true;
			pthread_mutex_lock(&d->mu);
			d->stat.shadow_bytes_total += grew;
			pthread_mutex_unlock(&d->mu);
			if (!d->sh.unproven) {
				monitor_publish(d, grew); /* else once monitor_check_commits() vouches for it */
				resume_settled(d);
			}
			continue; /* drain a WAL that grew while copying */
		case SHADOW_NONE:
			if (!d->continuous && d->sh.fd >= 0) {
				struct stat st;
				/* an empty or header-less WAL proves nothing after a restart */
				if (fstat(d->wal_fd, &st) == 0 && (uint64_t)st.st_size < d->sh.size) {
					rc = monitor_start_generation(d, "wal truncated while not watching");
					goto out;
				}
			}
			d->continuous = true;
			if (!d->sh.unproven)
				resume_settled(d);
			/* the last look: the index may have published frames over ours since */
			if ((rc = look_at_index(d)) < 0 || d->gen_epoch == epoch)
				goto out;
			continue;
		case SHADOW_NEW_SESSION:
			if (!d->continuous) {
				if ((rc = monitor_start_generation(
					     d, "wal header changed while not watching")) < 0)
					goto out;
				continue;
			}
			if (d->sh.unproven) {
				/* it ended before a look could vouch for it: a new generation */
				char gwhy[160];
				snprintf(gwhy, sizeof(gwhy), "a WAL session may never have been copied: %s",
					 d->sh.unproven_why);
				if ((rc = monitor_start_generation(d, gwhy)) < 0)
					goto out;
				continue;
			}
			if (shadow_unpublished(&d->sh)) {
				/* the replica holds a commit the database never got */
				if ((rc = monitor_start_generation(d, DROPPED_WHY)) < 0)
					goto out;
				continue;
			}
			/* the hold guaranteed every frame of the old session was copied */
			shadow_next_index(&d->sh);
			monitor_publish(d, 0);
			continue;
		case SHADOW_BROKEN:
			if ((rc = monitor_start_generation(d, why)) < 0)
				goto out;
			continue;
		case SHADOW_ERROR:
			/*
			 * The hold taken for this copy may read the database file
			 * only (the app had backfilled everything): then it does not
			 * keep the WAL from restarting over frames we could not copy.
			 * Only a later copy that finds the same session proves none
			 * was lost; a new session means a new generation.
			 */
			d->continuous = false;
			/* until a copy works, the hold must keep what it could not copy */
			d->copy_behind = true;
			snprintf(d->sync_why, sizeof(d->sync_why), "%s", why);
			return -1;
		}
	}
out:
	if (rc == 0)
		d->copy_behind = false;
	if (rc == GEN_WAITS)
		return rc; /* a start owed, whose try waits: see the first branch */
	if (rc < 0)
		snprintf(d->sync_why, sizeof(d->sync_why),
			 "cannot start a new generation in the state directory (see the error above)");
	return rc;
}

/* The shadow copy works (again): no failure to report (under mu). */
void monitor_clear_sync_failure(struct eng_db *d)
{
	d->stat.sync_failing_since_mono_ns = 0;
	d->stat.sync_failing_since_ns = 0;
	d->stat.sync_error[0] = '\0';
	d->gave_up_hold = false;
}

/*
 * After a pass's copy (rc from monitor_copy_wal): a failure is the database's, not a
 * replica's (each would report itself caught up with a shadow that stopped
 * growing), so it goes into the database's status and its replicas' lag.
 * Logged when it starts, when its cause changes and every SYNC_LOG_EVERY_NS.
 */
void monitor_note_sync(struct eng_db *d, int rc)
{
	if (rc == GEN_WAITS)
		return; /* nothing tried: the failure stands as it was, counted once */
	int64_t now = clock_mono_ns();
	pthread_mutex_lock(&d->mu);
	int64_t since = d->stat.sync_failing_since_mono_ns;
	if (rc == 0) {
		monitor_clear_sync_failure(d);
	} else {
		d->stat.sync_errors_total++;
		if (!since) {
			d->stat.sync_failing_since_mono_ns = now;
			d->stat.sync_failing_since_ns = clock_wall_ns();
		}
		snprintf(d->stat.sync_error, sizeof(d->stat.sync_error), "%s", d->sync_why);
	}
	pthread_mutex_unlock(&d->mu);
	if (rc == 0) {
		if (since)
			log_info("engine", "copying new commits works again", "db=%s failing_s=%.1f",
				 d->stat.name, (double)(now - since) / NS_PER_SEC);
		d->sync_logged[0] = '\0';
		return;
	}
	if (since && strcmp(d->sync_logged, d->sync_why) == 0 &&
	    now - d->sync_logged_mono < SYNC_LOG_EVERY_NS)
		return;
	log_error("engine", since ? "still cannot copy new commits into the shadow WAL"
				  : "cannot copy new commits into the shadow WAL: no replica gets them "
				    "until this is fixed",
		  "db=%s failing_s=%.1f error=\"%s\"", d->stat.name,
		  since ? (double)(now - since) / NS_PER_SEC : 0.0, d->sync_why);
	snprintf(d->sync_logged, sizeof(d->sync_logged), "%s", d->sync_why);
	d->sync_logged_mono = now;
}

/* Frames in the current WAL session, as copied into the shadow. */
uint64_t monitor_shadow_frames(const struct eng_db *d)
{
	if (d->sh.fd < 0 || d->sh.size <= WAL_HEADER_SIZE || !d->sh.hdr.page_size)
		return 0;
	return (d->sh.size - WAL_HEADER_SIZE) / wal_frame_size(d->sh.hdr.page_size);
}

/* Were all of SQLite's commits copied (commits.h)? Monitor, after a copy under the hold. */
void monitor_check_commits(struct eng_db *d)
{
	struct db_wal_index wi;
	uint8_t hdr[WAL_HEADER_SIZE];
	uint32_t lost;
	if (!d->continuous || d->conns.cur < 0 ||
	    db_wal_index(d->conns.hold[d->conns.cur], &wi) < 0 || !wi.consistent)
		return;
	struct commit_look l = {
		.change = wi.change,
		.index_frames = wi.max_frame,
		.index_is_shadow = d->sh.fd >= 0 && memcmp(wi.salts, d->sh.hdr_raw + 16, 8) == 0,
		.shadow_frames = monitor_shadow_frames(d),
		.commits = d->sh.commits,
	};
	/* the WAL file's header matters only beside an empty index (commits.h): read it then */
	if (l.index_frames == 0 && l.shadow_frames > 0 && d->wal_fd >= 0)
		l.file_is_shadow = pread(d->wal_fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr) &&
				   memcmp(hdr, d->sh.hdr_raw, sizeof(hdr)) == 0;
	bool anchored = d->commits.set;
	enum commit_verdict v = commits_check(&d->commits, &l, &lost);
	char why[192];
	if (v == COMMITS_LOST) {
		snprintf(why, sizeof(why), "%u commit(s) were checkpointed away before they were copied",
			 lost);
	} else if (!d->sh.unproven) {
		return;
	} else if (v == COMMITS_OK && anchored) {
		/* every commit copied: the salt-1 jump was TRUNCATEs of an empty WAL */
		log_debug("engine", "a WAL session whose salt-1 jumped is vouched for", "db=%s %s",
			  d->stat.name, d->sh.unproven_why);
		d->sh.unproven = false;
		d->unproven_mono = 0;
		monitor_publish(d, d->sh.size);
		resume_settled(d);
		return;
	} else if (v == COMMITS_WAIT &&
		   (!d->unproven_mono || clock_mono_ns() - d->unproven_mono < UNPROVEN_MAX_NS)) {
		if (!d->unproven_mono)
			d->unproven_mono = clock_mono_ns();
		return;
	} else {
		/* nothing to count against (no look agreed since the last start), or too long */
		snprintf(why, sizeof(why), "a WAL session may never have been copied: %s",
			 d->sh.unproven_why);
	}
	d->unproven_mono = 0;
	if (monitor_start_generation(d, why) < 0)
		d->continuous = false;
}

/* Serve a replica's request for a new generation (monitor, after a copy under the hold). */
static void serve_generation_request(struct eng_db *d)
{
	char why[sizeof(d->gen_req_why)];
	if (!d->continuous || d->conns.cur < 0)
		return; /* the new generation needs the hold; the next pass */
	pthread_mutex_lock(&d->mu);
	bool want = d->gen_req[0] && strcmp(d->gen_req, d->gen) == 0;
	snprintf(why, sizeof(why), "%s", d->gen_req_why);
	d->gen_req[0] = '\0';
	pthread_mutex_unlock(&d->mu);
	/* refused by the state directory, it is owed (monitor_copy_wal tries it again: QA119 O3) */
	if (want)
		(void)monitor_start_generation(d, why);
}

/*
 * Has the database file been replaced or left WAL mode? 1 replaced, 2 not
 * WAL, 3 its -wal or -shm deleted, replaced or cut short under our
 * connections, 0 fine.
 */
static int db_file_changed(struct eng_db *d)
{
	struct stat st;
	if (stat(d->cfg->path, &st) < 0)
		return 1;
	pthread_mutex_lock(&d->mu);
	bool same = st.st_ino == d->ino && st.st_dev == d->dev;
	pthread_mutex_unlock(&d->mu);
	if (!same)
		return 1;
	if (monitor_side_files_changed(d) || monitor_wal_cut_short(d))
		return 3;
	return db_conn_is_wal(d->conns.ck) == 0 ? 2 : 0;
}

/* How long the monitor may wait for an event before looking anyway (ms). */
static int64_t wait_ms(struct eng_db *d, int64_t poll_ms)
{
	/* without inotify, or until the database is open and held, polling is the only way;
	 * an owed generation is tried again once a second, however idle the app (QA121 O1) */
	if (d->gen_owed[0])
		return poll_ms < 1000 ? poll_ms : 1000;
	if (!watch_active(&d->watch) || !d->open || !d->continuous)
		return poll_ms;
	int64_t wait = poll_ms > IDLE_CHECK_MS ? poll_ms : IDLE_CHECK_MS;
	const struct cfg_db *c = d->cfg;
	uint64_t frames = monitor_shadow_frames(d);
	if (c->checkpoint_interval_ms > 0 && frames > 1 && !monitor_ckpt_settled(d, frames)) {
		int64_t due = (d->last_ckpt_mono - clock_mono_ns()) / NS_PER_MS + c->checkpoint_interval_ms;
		if (due < CKPT_RETRY_NS / NS_PER_MS)
			due = CKPT_RETRY_NS / NS_PER_MS;
		if (due < wait)
			wait = due;
	}
	return wait;
}

void *monitor_thread(void *arg)
{
	struct eng_db *d = arg;
	bool fresh = false, stopped = false;
	int64_t poll_ms = d->cfg->monitor_interval_ms > 0 ? d->cfg->monitor_interval_ms : 1000;
	/*
	 * Copying each commit as it lands costs a sync per commit; replicas with
	 * a sync-interval only need the copy that often. Coalesce for a quarter
	 * of the shortest interval (at most 250 ms); sync-interval 0 copies at once.
	 */
	int64_t coalesce_ms = 250;
	for (size_t i = 0; i < d->nreplicas; i++)
		if (d->replicas[i].st && d->replicas[i].cfg->sync_interval_ms / 4 < coalesce_ms)
			coalesce_ms = d->replicas[i].cfg->sync_interval_ms / 4;

	bool older = false;
	while (!monitor_stopping(d)) {
		pthread_mutex_lock(&d->mu);
		bool stop_older = d->older_req && !older;
		pthread_mutex_unlock(&d->mu);
		if (stop_older) {
			/* for good: the database must be restored first (replica_older_refuse) */
			if (d->open)
				monitor_close_db(d);
			older = stopped = true;
			monitor_db_set_state(d, false, "stopped: the database is older than the replica's "
				     "data; restore it");
			pthread_mutex_lock(&d->mu);
			d->stat.stopped_older = true;
			pthread_mutex_unlock(&d->mu);
		}
		if (stopped && !older && db_file_is_wal(d->cfg->path) == 1) {
			/* the app put it back in WAL mode: what it wrote meanwhile is in no WAL */
			log_warn("engine", "database back in WAL mode: replicating it again (new "
				 "generation)", "db=%s", d->stat.name);
			stopped = false;
			fresh = true;
		}
		bool open_failed = false;
		if (!stopped && !d->open) {
			int rc = monitor_open_db(d, fresh);
			if (rc == 0)
				fresh = false;
			open_failed = rc < 0;
			if (!d->looked) {
				pthread_mutex_lock(&d->mu);
				d->looked = true;
				pthread_cond_broadcast(&d->cond);
				pthread_mutex_unlock(&d->mu);
			}
		}
		if (d->open) {
			int ch = db_file_changed(d);
			if (ch == 1 || ch == 3) {
				d->removed = ch == 1 && access(d->cfg->path, F_OK) < 0 &&
					     errno == ENOENT;
				if (ch == 1)
					log_warn("engine", "database file replaced or removed", "db=%s",
						 d->stat.name);
				else
					log_warn("engine", "the database's -wal or -shm was deleted, "
						 "replaced or cut short while SQLite had it open (a backup "
						 "copied over the database?): reopening it, new generation",
						 "db=%s", d->stat.name);
				monitor_close_db(d);
				fresh = true;
				monitor_db_set_state(d, false, d->removed ? ENG_STATE_REMOVED
										 : ENG_STATE_WAITING);
				continue;
			}
			if (ch == 2) {
				log_error("engine", "database left WAL mode: replication stopped for it "
					  "until it is back in WAL mode", "db=%s path=\"%s\"", d->stat.name,
					  d->cfg->path);
				monitor_close_db(d);
				stopped = true;
				monitor_db_set_state(d, false, "stopped: not in WAL mode");
			}
		}
		int64_t db_mtime = d->db_mtime_ns;
		uint32_t index0 = d->sh.index;
		uint64_t size0 = d->sh.size;
		if (d->open) {
			/* the new hold is taken before reading: see db_hold_rotate() */
			if (db_hold_rotate(&d->conns, d->copy_behind) < 0)
				d->continuous = false;
			int64_t pass0 = clock_mono_ns();
			int crc = monitor_copy_wal(d);
			monitor_note_sync(d, crc);
			if (crc == 0)
				monitor_check_commits(d);
			else
				monitor_give_up_hold(d);
			if (d->conns.cur < 0)
				d->continuous = false;
			serve_generation_request(d);
			bool ckpt = monitor_maybe_checkpoint(d);
			pthread_mutex_lock(&d->mu);
			d->stat.syncs_total++;
			d->stat.sync_ns_total += clock_mono_ns() - pass0;
			if (d->ckpt_req && d->index != d->ckpt_req_index)
				d->ckpt_req = false;
			if (d->restart_req && d->index != d->ckpt_req_index)
				d->restart_req = false;
			pthread_mutex_unlock(&d->mu);
			int64_t now = clock_mono_ns();
			if (now - d->last_cleanup_mono >= CLEANUP_EVERY_NS) {
				d->last_cleanup_mono = now;
				backlog_cleanup(d);
			}
			struct stat st;
			pthread_mutex_lock(&d->mu);
			if (stat(d->cfg->path, &st) == 0) {
				d->stat.db_size = st.st_size;
				db_mtime = st.st_mtim.tv_sec * NS_PER_SEC + st.st_mtim.tv_nsec;
				if (ckpt)
					d->db_mtime_ns = db_mtime; /* our own writes: nobody to follow */
			}
			if (d->wal_fd >= 0 && fstat(d->wal_fd, &st) == 0)
				d->stat.wal_size = st.st_size;
			pthread_mutex_unlock(&d->mu);
		}
		pthread_mutex_lock(&d->mu);
		d->sync_seq++;
		pthread_cond_broadcast(&d->cond);
		bool again = d->sync_req > d->sync_seq;
		pthread_mutex_unlock(&d->mu);
		int64_t wait = wait_ms(d, poll_ms);
		bool grew = d->sh.index != index0 || d->sh.size != size0;
		if (again || (d->open && monitor_follow_checkpoint(d, db_mtime, grew, &wait)))
			continue;
		if (open_failed) {
			/*
			 * Our own open and close of the database fire the watch: a
			 * failed open (a full state disk) is tried once a pass, not in
			 * a loop that took a core (QA118 D3). A wake-up still ends it.
			 */
			int64_t until = clock_mono_ns() + wait * NS_PER_MS;
			for (int64_t left = wait; left > 0 && !monitor_stopping(d);
			     left = (until - clock_mono_ns()) / NS_PER_MS)
				if (watch_wait(&d->watch, left) == WATCH_WOKEN)
					break;
			continue;
		}
		if (watch_wait(&d->watch, wait) == WATCH_FILES && coalesce_ms > 0) {
			/*
			 * Gather commits for a while: no replica wants them sooner.
			 * Not after a wake-up (a flush, shutdown, a replica's tick).
			 * Not while the hold is on read slot 0: the app's next
			 * checkpoint waits for it (its backfill takes slot 0).
			 */
			/*
			 * A checkpoint asked for is urgent only when its retry is due: one
			 * the app's readers keep from ending stays asked for, and every
			 * commit made a pass then (800-1,400 a second, QA67 D1).
			 */
			bool ckpt_due = clock_mono_ns() - d->last_ckpt_mono >= CKPT_RETRY_NS / 10;
			pthread_mutex_lock(&d->mu);
			bool urgent = d->sync_req > d->sync_seq || (d->ckpt_req && ckpt_due) ||
				      d->conns.db_only || d->eng->stop;
			pthread_mutex_unlock(&d->mu);
			if (!urgent)
				watch_sleep(&d->watch, coalesce_ms);
		}
	}
	if (d->open)
		monitor_close_db_clean(d);
	return NULL;
}

void monitor_request_stop_older(struct eng_db *d)
{
	/* under mu */
	d->older_req = true;
	watch_wake(&d->watch);
}

void monitor_request_generation(struct eng_db *d, const char *gen, const char *why)
{
	/* under mu */
	if (strcmp(d->gen, gen) != 0 || d->gen_req[0])
		return;
	snprintf(d->gen_req, sizeof(d->gen_req), "%s", gen);
	snprintf(d->gen_req_why, sizeof(d->gen_req_why), "%s", why);
	watch_wake(&d->watch);
}

void monitor_request_checkpoint(struct eng_db *d)
{
	/* under mu */
	if (!d->ckpt_req) {
		d->ckpt_req = true;
		d->ckpt_req_index = d->index;
		watch_wake(&d->watch);
	}
}

void monitor_request_restart(struct eng_db *d)
{
	/* under mu */
	monitor_request_checkpoint(d);
	if (!d->restart_req && d->ckpt_req_index == d->index) {
		d->restart_req = true;
		watch_wake(&d->watch);
	}
}
