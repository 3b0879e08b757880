/*
 * monitor.c — one thread per database: wait for it, open our connections,
 * keep the read hold, copy committed WAL frames into the shadow WAL, follow
 * WAL restarts into new indexes, start new generations when the history
 * breaks, run the safe checkpoint. See engine_int.h and docs/replication.md.
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
#include "common/banned.h"

#define CLEANUP_EVERY_NS (1 * NS_PER_SEC)
#define CKPT_RETRY_NS (1 * NS_PER_SEC)
/* An exclusive lock held this long is said once, at WARN (a schema being created takes less). */
#define LOCKED_WARN_NS (30 * NS_PER_SEC)
/*
 * With inotify every commit wakes the monitor, so an idle database needs no
 * look every monitor-interval: only a safety check this often (a missed
 * event, the backlog's cleanup), and the checkpoint-interval's deadline.
 */
#define IDLE_CHECK_MS 10000
/* a copy into the shadow that keeps failing for the same cause is logged this often */
#define SYNC_LOG_EVERY_NS (60 * NS_PER_SEC)
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
/* how long a session that followed with a salt-1 jump may wait for check_commits() to vouch for it */
#define UNPROVEN_MAX_NS (10 * NS_PER_SEC)

#define STATE_HELD "waiting: state directory in use by another litevisor process"

static void db_set_state(struct eng_db *d, bool replicating, const char *state)
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

static bool stopping(struct eng_db *d)
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
static void publish(struct eng_db *d, uint64_t grew)
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
static void shadow_start_failed(struct eng_db *d)
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
 * What start_generation and copy_wal return when an owed generation's try
 * waits for its second (owed_too_soon): nothing was tried, so nothing
 * failed again. Counted as a failure, sync_errors_total grew with every
 * pass, 5 to 20 a second, for one try a second (QA121 O4).
 */
#define GEN_WAITS (-2)

/*
 * Start a new generation for reason. Returns 0, -1 when the state
 * directory refused it (it is owed from then on), or GEN_WAITS.
 */
static int start_generation(struct eng_db *d, const char *reason)
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
	 * writing (replica_history.c, continued_since; QA84 N1).
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
		shadow_start_failed(d);
		/* owed until it starts (copy_wal): its cause may not be seen again */
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
 * The database's files and the shadow's end as one line: written at a clean
 * stop, compared at the next start. Equal means nothing touched the WAL in
 * between, so the generation continues even where the WAL alone proves
 * nothing (emptied by the app's TRUNCATE on close, uptime-kuma).
 */
static int files_state(struct eng_db *d, char *buf, size_t len)
{
	if (!d->sh.gen[0])
		return -1;
	int k = snprintf(buf, len, "%s %08x %llu ", d->sh.gen, d->sh.index,
			 (unsigned long long)d->sh.size);
	if (k < 0 || (size_t)k >= len)
		return -1;
	return localstate_files_line(d->cfg->path, buf + k, len - (size_t)k);
}

static void clean_path(struct eng_db *d, char *buf, size_t len)
{
	snprintf(buf, len, "%s/clean", d->dir);
}

/* The shadow copy works (again): no failure to report (under mu). */
static void clear_sync_failure(struct eng_db *d)
{
	d->stat.sync_failing_since_mono_ns = 0;
	d->stat.sync_failing_since_ns = 0;
	d->stat.sync_error[0] = '\0';
	d->gave_up_hold = false;
}

static void close_db(struct eng_db *d)
{
	shadow_drop_unproven(&d->sh); /* never published: nothing may ship it later */
	d->unproven_mono = 0;
	if (d->sh.fd >= 0 && fdatasync(d->sh.fd) < 0)
		log_warn("engine", "cannot sync shadow WAL", "db=%s err=\"%s\"", d->stat.name,
			 strerror(errno));
	shadow_close(&d->sh);
	db_conns_close(&d->conns);
	if (d->wal_fd >= 0)
		close(d->wal_fd);
	d->wal_fd = -1;
	d->open = false;
	d->gen_owed[0] = '\0'; /* the next open decides afresh */
	d->side_known = false;
	d->commits.set = false;
	d->continuous = false;
	/* a copy failing into these files is over with them */
	pthread_mutex_lock(&d->mu);
	clear_sync_failure(d);
	pthread_mutex_unlock(&d->mu);
	d->sync_logged[0] = '\0';
}

/*
 * The shadow this process writes, deleted under it (its state directory
 * removed by a cleaner or a hand): replicas read it by name, so nothing
 * written into it would reach them. Why, in why; false while it is there.
 */
static bool shadow_gone(const struct eng_db *d, char *why, size_t len)
{
	struct stat st;
	char dir[PATH_MAX + 64];
	if (!d->sh.gen[0])
		return false;
	if (d->sh.fd >= 0) {
		if (fstat(d->sh.fd, &st) < 0 || st.st_nlink > 0)
			return false;
		snprintf(why, len, "the shadow WAL of index %08x was deleted while in use (was the "
			 "state directory %.150s removed?)", d->sh.index, d->sh.dir);
		return true;
	}
	snprintf(dir, sizeof(dir), "%s/generations/%s/wal", d->sh.dir, d->sh.gen);
	if (stat(dir, &st) == 0 || errno != ENOENT)
		return false;
	snprintf(why, len, "the shadow directory %.150s was deleted (was the state directory "
		 "removed?)", dir);
	return true;
}

static enum shadow_result note_index(struct eng_db *d, char *why, size_t len);

/* Close at shutdown, recording the files' state for the next start. */
static void close_db_clean(struct eng_db *d)
{
	char line[512], path[PATH_MAX + 16];
	char gone[200];
	/*
	 * A shadow deleted under us is no history to resume: the next start must
	 * not trust it. Nor one holding frames SQLite never published (shadow.h):
	 * the files' state cannot tell whether the app dropped them meanwhile (a
	 * TRUNCATE on close empties the WAL); the WAL itself must prove it then.
	 */
	(void)note_index(d, gone, sizeof(gone));
	bool ok = d->continuous && d->sh.gen[0] && !d->sh.unproven && !d->gen_owed[0] &&
		  !shadow_unpublished(&d->sh) && !shadow_gone(d, gone, sizeof(gone));
	uid_t uid = d->sh.uid;
	gid_t gid = d->sh.gid;
	/* our connections change nothing when closed */
	if (ok && d->sh.fd >= 0 && fdatasync(d->sh.fd) < 0)
		ok = false;
	db_conns_close(&d->conns);
	if (ok && files_state(d, line, sizeof(line)) == 0) {
		clean_path(d, path, sizeof(path));
		if (fs_write_atomic(path, line, strlen(line), 0640, uid, gid) < 0)
			log_warn("engine", "cannot record clean stop", "path=\"%s\" err=\"%s\"", path,
				 strerror(errno));
	}
	close_db(d);
}

/* Give what we created beside the database (-wal, -shm) the database's owner. */
static void fix_owner(struct eng_db *d, uid_t uid, gid_t gid)
{
	static const char *const sfx[] = { "-wal", "-shm" };
	char path[PATH_MAX + 8];
	if (uid == (uid_t)-1 && gid == (gid_t)-1)
		return;
	for (size_t i = 0; i < 2; i++) {
		struct stat st;
		snprintf(path, sizeof(path), "%s%s", d->cfg->path, sfx[i]);
		if (stat(path, &st) == 0 && (st.st_uid != uid || st.st_gid != gid) &&
		    chown(path, uid, gid) < 0)
			log_warn("engine", "cannot chown", "path=\"%s\" err=\"%s\"", path, strerror(errno));
	}
}

static const char *const side_sfx[2] = { "-wal", "-shm" };

/* Remember which -wal and -shm our connections use (both exist once the hold reads). */
static void note_side_files(struct eng_db *d)
{
	char path[PATH_MAX + 8];
	struct stat st;
	d->side_known = false;
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s%s", d->cfg->path, side_sfx[i]);
		if (stat(path, &st) < 0)
			return;
		d->side_dev[i] = st.st_dev;
		d->side_ino[i] = st.st_ino;
	}
	d->side_known = true;
}

/*
 * Was the -wal or -shm our connections use deleted or replaced? SQLite never
 * does either while a connection has them open (only the last one to close
 * deletes them, and ours holds the database): another process removed them
 * behind SQLite's back, as a "restore from backup" that copies a file over
 * the database and deletes its -wal/-shm does. What our connections see is
 * then no longer the database the app writes.
 */
static bool side_files_changed(struct eng_db *d)
{
	char path[PATH_MAX + 8];
	struct stat st;
	if (!d->side_known)
		return false;
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s%s", d->cfg->path, side_sfx[i]);
		if (stat(path, &st) < 0 || st.st_ino != d->side_ino[i] || st.st_dev != d->side_dev[i])
			return true;
	}
	return false;
}

/*
 * Was the -wal cut short in place (truncate -s 0 app.db-wal)? SQLite writes a
 * commit's frames before the WAL index counts them, and empties the index
 * before it truncates the file, so a file shorter than the frames the index
 * counts was cut by someone else: the connections that keep that index (ours)
 * make every reader fail (I/O error) until they close. The index is read on
 * both sides of the look at the file, so a restart meanwhile is no alarm.
 */
static bool wal_cut_short(struct eng_db *d)
{
	struct db_wal_index a, b;
	struct stat st;
	if (!d->open || d->conns.cur < 0 || d->sh.fd < 0 || d->wal_fd < 0)
		return false;
	/* the usual case, a WAL holding at least what we copied of it: no more to look at */
	if (fstat(d->wal_fd, &st) < 0 || (uint64_t)st.st_size >= d->sh.size)
		return false;
	sqlite3 *conn = d->conns.hold[d->conns.cur];
	if (db_wal_index(conn, &a) < 0 || !a.consistent || a.max_frame == 0 ||
	    memcmp(a.salts, d->sh.hdr_raw + 16, 8) != 0 || fstat(d->wal_fd, &st) < 0 ||
	    db_wal_index(conn, &b) < 0 || !b.consistent || b.max_frame != a.max_frame ||
	    memcmp(b.salts, a.salts, 8) != 0)
		return false;
	uint64_t want = WAL_HEADER_SIZE + (uint64_t)a.max_frame * wal_frame_size(d->sh.hdr.page_size);
	return (uint64_t)st.st_size < want;
}

/*
 * Take d's state directory unless held already (engine_lock took those that
 * existed at the start). 0: held, or no directory yet; 1: another process
 * holds it (said once, state set); -1: error (logged, state set).
 */
static int take_state(struct eng_db *d)
{
	char holder[320];
	int taken = eng_take_state(d, holder, sizeof(holder));
	if (taken > 0) {
		if (!d->state_held_logged)
			log_error("engine", "the database's state directory is in use by another litevisor "
				  "process: not replicating it until that one stops", "db=%s dir=\"%s\" "
				  "holder=\"%s\"", d->stat.name, d->dir, holder[0] ? holder : "unknown");
		d->state_held_logged = true;
		db_set_state(d, false, STATE_HELD);
	} else if (taken < 0) {
		db_set_state(d, false, "error: local state");
	}
	return taken;
}

/*
 * A failure to open the database or its state: said at level while it is a
 * new one, at debug while it stays the same (open_db runs again at every
 * poll, and a directory this user cannot write stays so: QA59 #4).
 */
static void open_failed(struct eng_db *d, enum log_level level, const char *what, const char *why)
{
	char line[sizeof(d->open_why)];
	snprintf(line, sizeof(line), "%s: %s", what, why);
	bool again = strcmp(line, d->open_why) == 0;
	log_event(again ? LOG_DEBUG : level, "engine", what, "db=%s err=\"%s\"", d->stat.name, why);
	memcpy(d->open_why, line, sizeof(line));
}

/*
 * Where Litestream's state directory stood before this process wrote into
 * it: with meta-path the directory is litevisor's own too, and a new
 * generation's state replaced the one Litestream had gone on in, so a
 * replica's first look took Litestream's going on, from this very file, for
 * another node's (QA92 D1; replica_history.c, litestream_wrote_here). Once per
 * engine: a reopen finds this process's own state there.
 */
static void capture_litestream_state(struct eng_db *d)
{
	char lsdir[PATH_MAX];
	struct wal_pos pos;
	if (d->ls_captured)
		return;
	memset(&pos, 0, sizeof(pos));
	localstate_litestream_dir(d->cfg, lsdir, sizeof(lsdir));
	int rc = localstate_position(lsdir, &pos);
	pthread_mutex_lock(&d->mu);
	d->ls_captured = true;
	d->ls_rc = rc < 0 ? -1 : 0;
	d->ls_pos = pos;
	pthread_mutex_unlock(&d->mu);
}

/*
 * Open the database and local state. Returns 0 when replicating, 1 to try
 * again later (waiting for the database), -1 on a local error.
 */
static int open_db(struct eng_db *d, bool fresh)
{
	struct restored_marker m;
	char gen[17];
	uid_t uid;
	gid_t gid;
	struct stat st;

	char why[sizeof(d->stat.state)];
	int ready = db_file_check(d->cfg->path, why, sizeof(why));
	if (ready <= 0) {
		/* an unusable path is said once, loudly; it is looked at again, it may be fixed */
		db_set_state(d, false, ready < 0 ? why : d->removed ? ENG_STATE_REMOVED
							       : ENG_STATE_WAITING);
		return 1;
	}
	d->removed = false;
	/*
	 * A state directory that did not exist at the start was not taken then
	 * (engine_lock): before we touch anything; looked at again each round,
	 * the other process may stop.
	 */
	if (take_state(d) != 0)
		return 1;
	/*
	 * Before we touch it (setting WAL mode writes the header). Its ctime, not
	 * only its mtime: `cp -p`, `rsync -a` or a rename put back an old mtime,
	 * never an old ctime.
	 */
	int64_t db_touched = 0;
	if (stat(d->cfg->path, &st) == 0) {
		int64_t mt = st.st_mtim.tv_sec * NS_PER_SEC + st.st_mtim.tv_nsec;
		int64_t ct = st.st_ctim.tv_sec * NS_PER_SEC + st.st_ctim.tv_nsec;
		db_touched = mt > ct ? mt : ct;
	}
	char owhy[300];
	int rc = db_conns_open(&d->conns, d->cfg->path, owhy, sizeof(owhy));
	if (rc == -3) {
		/* a moment is normal (an app creating its schema); for good it is an exclusive lock */
		int64_t now = clock_mono_ns();
		if (!d->locked_since)
			d->locked_since = now;
		bool long_ = now - d->locked_since >= LOCKED_WARN_NS;
		if (long_ && !d->locked_warned) {
			log_warn("engine", "the database has been locked by another process for 30 s: "
				 "nothing of it can be replicated (an app using locking_mode=EXCLUSIVE "
				 "keeps it so for as long as it runs)", "db=%s", d->stat.name);
			d->locked_warned = true;
		}
		db_set_state(d, false, long_ ? "waiting: database locked by another process "
					       "(locking_mode=EXCLUSIVE?)"
					     : "waiting: database locked by another process");
		return 1;
	}
	d->locked_since = 0;
	d->locked_warned = false;
	if (rc < 0) {
		/* SQLite makes the -wal and -shm beside the database: its directory must be writable */
		const char *hint = strstr(owhy, "readonly") || strstr(owhy, "Permission denied") ||
					   strstr(owhy, "unable to open")
					   ? " (SQLite creates the -wal and -shm beside the database: can "
					     "this user write to its directory?)" : "";
		/* ... or it has no room for them (SQLite reports no ENOSPC then, QA97 O2) */
		char dir[PATH_MAX];
		struct statvfs vfs;
		snprintf(dir, sizeof(dir), "%s", d->cfg->path);
		char *slash = strrchr(dir, '/');
		if (slash)
			*(slash == dir ? slash + 1 : slash) = '\0';
		bool no_inode = false, no_space = false;
		if (*hint && statvfs(slash ? dir : ".", &vfs) == 0) {
			/* (a filesystem without inode counts, btrfs, shows 0 of 0) */
			no_inode = vfs.f_files > 0 && vfs.f_favail == 0;
			no_space = vfs.f_blocks > 0 && vfs.f_bavail == 0;
		}
		if (no_inode || no_space)
			hint = no_inode ? " (SQLite creates the -wal and -shm beside the "
						   "database, and its filesystem has no free inode)"
						 : " (SQLite creates the -wal and -shm beside the "
						   "database, and its filesystem has no free space)";
		char full[sizeof(owhy) + 120];
		snprintf(full, sizeof(full), "%s%s", owhy, hint);
		open_failed(d, LOG_WARN, rc == -2 ? "cannot use the database in WAL mode"
						  : "cannot open the database", full);
		char state[sizeof(d->stat.state)];
		snprintf(state, sizeof(state), "%s: %.200s", rc == -2 ? "waiting" : "error", owhy);
		db_set_state(d, false, state);
		return 1;
	}
	localstate_owner(d->cfg, &uid, &gid);
	fix_owner(d, uid, gid);
	if (localstate_ensure(d->cfg, d->dir) < 0) {
		char e[PATH_MAX + 80];
		snprintf(e, sizeof(e), "%s: %s", d->dir, strerror(errno));
		open_failed(d, LOG_ERROR, "cannot create the state directory", e);
		goto fail;
	}
	/* a state directory that was missing above exists now: take it before reading it */
	int taken = take_state(d);
	if (taken > 0) {
		close_db(d);
		return 1;
	}
	if (taken < 0 || (d->state_fd[0] < 0 && d->state_fd[1] < 0))
		goto fail;
	capture_litestream_state(d);
	if (stat(d->cfg->path, &st) < 0)
		goto fail;
	/* the id a restore wrote, or this node chose before (replica_database_id) */
	char dbid[LAYOUT_DBID_LEN + 1];
	bool have_id = localstate_read_database_id(d->dir, dbid) == 0;
	pthread_mutex_lock(&d->mu);
	if (have_id)
		memcpy(d->dbid, dbid, sizeof(dbid));
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	pthread_mutex_unlock(&d->mu);
	shadow_init(&d->sh, d->dir, uid, gid);
	d->wal_fd = -1;
	if (db_hold_rotate(&d->conns) < 0) {
		/*
		 * The database cannot be read yet: a file just renamed over it beside
		 * the old -wal/-shm, which the app deletes a moment later (I/O error).
		 * Look again at the next pass; the cause was logged (db.c).
		 */
		db_conns_close(&d->conns);
		db_set_state(d, false, "waiting: the database cannot be read yet");
		return 1;
	}
	note_side_files(d);
	d->open = true;
	d->last_ckpt_mono = clock_mono_ns();

	bool marker = !fresh && localstate_read_restored(d->dir, &m) == 0;
	if (marker) {
		/*
		 * Trust it only for the very file restore wrote: a database changed
		 * since (checkpointed by an app that ran meanwhile, or another copy
		 * put in its place) may hold changes no WAL we can still read has.
		 * restore writes the marker after its rename, so the file it
		 * installed was last touched no later than the marker.
		 */
		char mpath[PATH_MAX + 16];
		snprintf(mpath, sizeof(mpath), "%s/restored", d->dir);
		if (stat(mpath, &st) < 0 ||
		    db_touched > st.st_mtim.tv_sec * NS_PER_SEC + st.st_mtim.tv_nsec) {
			log_warn("engine", "database changed since it was restored (its file is newer than "
				 "the restore, in content or metadata: a chown counts): not continuing that "
				 "generation, a new one starts", "db=%s", d->stat.name);
			/* it leaves the restored generation where the restore put it (QA88 F1) */
			if (m.pos.generation[0] &&
			    localstate_write_restored_previous(d->dir, &m.pos, false, uid, gid) < 0)
				log_warn("engine", "cannot record where the file stood in the generation "
					 "it leaves", "db=%s err=\"%s\"", d->stat.name, strerror(errno));
			localstate_clear_restored(d->dir);
			marker = false;
		}
	}
	if (marker) {
		/* continue the restored generation (see localstate.h) */
		uint32_t next = localstate_next_index(&m.pos);
		if (shadow_start(&d->sh, m.pos.generation, next,
				 next == m.pos.index ? -1 : (int64_t)m.pos.offset) < 0) {
			shadow_start_failed(d);
			goto fail;
		}
		log_info("engine", "continuing restored generation", "db=%s generation=%s index=%u",
			 d->stat.name, m.pos.generation, next);
		pthread_mutex_lock(&d->mu);
		d->marker = m;
		d->have_marker = true;
		d->resume_pending = false;
		d->marker_pending = 0;
		for (size_t i = 0; i < d->nreplicas; i++)
			if (d->replicas[i].st)
				d->marker_pending++;
		d->gen_epoch++;
		d->gen_start_mono = clock_mono_ns();
		d->min_index = next;
		pthread_mutex_unlock(&d->mu);
		/*
		 * Consumed now: the replicas read the copy in memory. Were it kept, a
		 * restart would rewind to the restored position and drop the shadow.
		 */
		if (localstate_clear_restored(d->dir) < 0)
			log_warn("engine", "cannot remove restore marker", "dir=\"%s\" err=\"%s\"", d->dir,
				 strerror(errno));
		d->continuous = true;
		publish(d, 0);
	} else if (!fresh && localstate_read_generation(d->dir, gen) == 0 &&
		   shadow_resume(&d->sh, gen) == 0) {
		log_info("engine", "resuming generation", "db=%s generation=%s index=%u offset=%llu",
			 d->stat.name, gen, d->sh.index, (unsigned long long)d->sh.size);
		pthread_mutex_lock(&d->mu);
		d->gen_epoch++;
		d->gen_start_mono = clock_mono_ns();
		d->min_index = shadow_lowest_index(&d->sh);
		pthread_mutex_unlock(&d->mu);
		/* not continuous: the WAL must prove it still continues the shadow ... */
		d->continuous = false;
		char path[PATH_MAX + 16], now[512], *was = NULL;
		clean_path(d, path, sizeof(path));
		if (fs_read_small(path, sizeof(now), &was, NULL) == 0 &&
		    files_state(d, now, sizeof(now)) == 0 && strcmp(was, now) == 0) {
			/* ... unless nothing touched the files since our clean stop, which
			 * held no frame SQLite had not published (close_db_clean) */
			d->continuous = true;
			d->sh.published = d->sh.size;
			log_info("engine", "clean restart: files unchanged since the last stop", "db=%s",
				 d->stat.name);
		}
		free(was);
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("engine", "cannot remove clean-stop record", "path=\"%s\"", path);
		if (!d->continuous && d->sh.fd < 0) {
			/* an index with no file yet: only the clean stop's record could vouch for it */
			if (start_generation(d, "files changed since the last stop, no shadow file "
						"to compare the WAL with") < 0)
				goto fail;
		} else {
			/*
			 * Not yet proven, the replicas wait (resume_pending) until
			 * copy_wal() sees the WAL go on from the shadow. One that looked
			 * first reopened the generation (its closed mark deleted), and the
			 * WAL then disowned it: left unclosed by a node that wrote nothing
			 * there, it looked live to retention and to other nodes.
			 */
			pthread_mutex_lock(&d->mu);
			d->resume_pending = !d->continuous;
			pthread_mutex_unlock(&d->mu);
			publish(d, 0);
		}
	} else if (start_generation(d, fresh ? "database file replaced" : "no usable local state") < 0) {
		goto fail;
	}
	db_set_state(d, true, "replicating");
	if (d->open_why[0])
		log_info("engine", "the database opens again", "db=%s", d->stat.name);
	d->open_why[0] = '\0';
	return 0;
fail:
	close_db(d);
	db_set_state(d, false, "error: local state");
	return -1;
}

/* Open (or re-open after the app re-created it) the -wal file. */
static int wal_open(struct eng_db *d)
{
	char path[PATH_MAX + 8];
	struct stat a, b;
	snprintf(path, sizeof(path), "%s-wal", d->cfg->path);
	if (d->wal_fd >= 0) {
		/*
		 * While our connections have the -wal open, another one in its place
		 * is no re-creation to follow but a replacement: side_files_changed()
		 * (each pass, each checkpoint) looks and reopens everything.
		 */
		if (d->side_known)
			return 0;
		if (stat(path, &a) == 0 && fstat(d->wal_fd, &b) == 0 && a.st_ino == b.st_ino)
			return 0;
		close(d->wal_fd);
		d->wal_fd = -1;
	}
	d->wal_fd = open(path, O_RDONLY | O_CLOEXEC);
	return d->wal_fd >= 0 ? 0 : -1;
}

/*
 * Tell the shadow what SQLite's WAL index publishes (shadow_note_index). A
 * torn read (a writer mid-update) is tried again; still torn, or no mapping
 * yet, no look this time (SHADOW_NONE). Else what shadow_note_index says.
 */
static enum shadow_result note_index(struct eng_db *d, char *why, size_t len)
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
 * The look copy_wal takes before each copy, so that it proves what the copy
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
	if (note_index(d, why, sizeof(why)) != SHADOW_BROKEN)
		return 0;
	return start_generation(d, why);
}

/* Why a session that ended with frames no look saw published cannot be followed. */
#define DROPPED_WHY "the WAL moved on without frames SQLite never published, which were " \
		    "copied (a writer killed inside its commit?)"

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
	db_set_state(d, true, "replicating");
}

/*
 * Copy everything committed into the shadow, following index changes.
 * Returns 0, -1 with the cause in d->sync_why, or GEN_WAITS (an owed
 * generation's next try waits for its second: nothing copied).
 */
static int copy_wal(struct eng_db *d)
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
	bool gone = (d->continuous || d->gen_owed[0]) && shadow_gone(d, why, sizeof(why));
	if (d->gen_owed[0] && !gone) {
		snprintf(why, sizeof(why), "%s", d->gen_owed);
		int sr = start_generation(d, why);
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
			open_failed(d, LOG_ERROR, "cannot create the state directory", e);
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
		if (take_state(d) != 0) {
			rc = -1;
			goto out;
		}
		if ((rc = start_generation(d, why)) < 0)
			goto out;
		gone_recovered(d);
	}
	if (wal_open(d) < 0) {
		/* no WAL file (yet): nothing committed since the last checkpoint */
		if (!d->continuous && d->sh.fd >= 0)
			rc = start_generation(d, "wal missing, cannot verify position");
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
				publish(d, grew); /* else once check_commits() vouches for it */
				resume_settled(d);
			}
			continue; /* drain a WAL that grew while copying */
		case SHADOW_NONE:
			if (!d->continuous && d->sh.fd >= 0) {
				struct stat st;
				/* an empty or header-less WAL proves nothing after a restart */
				if (fstat(d->wal_fd, &st) == 0 && (uint64_t)st.st_size < d->sh.size) {
					rc = start_generation(d, "wal truncated while not watching");
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
				if ((rc = start_generation(d, "wal header changed while not watching")) < 0)
					goto out;
				continue;
			}
			if (d->sh.unproven) {
				/* it ended before a look could vouch for it: a new generation */
				char gwhy[160];
				snprintf(gwhy, sizeof(gwhy), "a WAL session may never have been copied: %s",
					 d->sh.unproven_why);
				if ((rc = start_generation(d, gwhy)) < 0)
					goto out;
				continue;
			}
			if (shadow_unpublished(&d->sh)) {
				/* the replica holds a commit the database never got */
				if ((rc = start_generation(d, DROPPED_WHY)) < 0)
					goto out;
				continue;
			}
			/* the hold guaranteed every frame of the old session was copied */
			shadow_next_index(&d->sh);
			publish(d, 0);
			continue;
		case SHADOW_BROKEN:
			if ((rc = start_generation(d, why)) < 0)
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
			snprintf(d->sync_why, sizeof(d->sync_why), "%s", why);
			return -1;
		}
	}
out:
	if (rc == GEN_WAITS)
		return rc; /* a start owed, whose try waits: see the first branch */
	if (rc < 0)
		snprintf(d->sync_why, sizeof(d->sync_why),
			 "cannot start a new generation in the state directory (see the error above)");
	return rc;
}

/*
 * After a pass's copy (rc from copy_wal): a failure is the database's, not a
 * replica's (each would report itself caught up with a shadow that stopped
 * growing), so it goes into the database's status and its replicas' lag.
 * Logged when it starts, when its cause changes and every SYNC_LOG_EVERY_NS.
 */
static void note_sync(struct eng_db *d, int rc)
{
	if (rc == GEN_WAITS)
		return; /* nothing tried: the failure stands as it was, counted once */
	int64_t now = clock_mono_ns();
	pthread_mutex_lock(&d->mu);
	int64_t since = d->stat.sync_failing_since_mono_ns;
	if (rc == 0) {
		clear_sync_failure(d);
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
static uint64_t shadow_frames(const struct eng_db *d)
{
	if (d->sh.fd < 0 || d->sh.size <= WAL_HEADER_SIZE || !d->sh.hdr.page_size)
		return 0;
	return (d->sh.size - WAL_HEADER_SIZE) / wal_frame_size(d->sh.hdr.page_size);
}

/* Were all of SQLite's commits copied (commits.h)? Monitor, after a copy under the hold. */
static void check_commits(struct eng_db *d)
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
		.shadow_frames = shadow_frames(d),
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
		publish(d, d->sh.size);
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
	if (start_generation(d, why) < 0)
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
	/* refused by the state directory, it is owed (copy_wal tries it again: QA119 O3) */
	if (want)
		(void)start_generation(d, why);
}

static int copy_cb(void *ctx)
{
	return copy_wal(ctx);
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
		if (start_generation(d, DROPPED_WHY) < 0)
			d->continuous = false;
		return;
	}
	shadow_next_index(&d->sh);
	publish(d, 0);
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
static bool ckpt_settled(const struct eng_db *d, uint64_t frames)
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
static bool maybe_checkpoint(struct eng_db *d)
{
	const struct cfg_db *c = d->cfg;
	int64_t now = clock_mono_ns();

	if (!d->continuous || d->sh.fd < 0)
		return false;
	pthread_mutex_lock(&d->mu);
	bool req = d->ckpt_req;
	bool restart = d->restart_req && d->ckpt_req_index == d->sh.index;
	pthread_mutex_unlock(&d->mu);
	uint64_t frames = shadow_frames(d);
	if (ckpt_settled(d, frames)) {
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
	if (side_files_changed(d) || wal_cut_short(d))
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
	if (side_files_changed(d) || wal_cut_short(d))
		return 3;
	return db_conn_is_wal(d->conns.ck) == 0 ? 2 : 0;
}

/*
 * While yielding, no pass runs, and a pass asked for (a snapshot pinning
 * what it reaches, a replica's tick, the final flush) would wait for the
 * yield's end: up to YIELD_MAX_NS, and a snapshot whose own read
 * transaction is what the checkpoint waits for gave up first (its 5 s),
 * every time. The yield copies the WAL whenever its end moves, so serve
 * them here: when a look taken after the request finds the WAL index as it
 * was before the last good copy (seen; NULL: none yet, or that copy left a
 * session unproven or commits unaccounted: check_commits() has the pass
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
 * next commit) pass before the hold is back; check_commits() then starts a
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
	while (!stopping(d) && clock_mono_ns() - t0 < YIELD_MAX_NS &&
	       db_foreign_blocking_checkpoint(&d->conns) == 1) {
		struct db_wal_index wi;
		sqlite3 *look = d->conns.cur >= 0 ? d->conns.hold[d->conns.cur] : d->conns.ck;
		bool have = db_wal_index(look, &wi) == 0;
		bool backfilled = have && wi.backfilled == wi.max_frame;
		if (!moved || backfilled || (have && wi.max_frame != at)) {
			/* as a pass does: the new hold first, then the copy (db_hold_rotate()) */
			if (db_hold_rotate(&d->conns) < 0) {
				d->continuous = false;
				return;
			}
			uint64_t epoch = d->gen_epoch;
			int crc = copy_wal(d);
			note_sync(d, crc);
			if (crc == 0)
				check_commits(d); /* as a pass does: a session slipped past is no copy */
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
			if (alone_since && now - alone_since >= YIELD_STUCK_NS && copy_wal(d) == 0) {
				db_hold_release(&d->conns);
				let_go = true;
			}
		}
		serve_sync_requests(d, copied ? &seen : NULL);
		nanosleep(&ts, NULL);
	}
	if (d->conns.cur < 0) {
		if (db_hold_rotate(&d->conns) < 0)
			d->continuous = false;
		else
			note_sync(d, copy_wal(d));
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
static void give_up_hold(struct eng_db *d)
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
static bool follow_checkpoint(struct eng_db *d, int64_t mtime_ns, bool grew, int64_t *wait)
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
	uint64_t frames = shadow_frames(d);
	if (c->checkpoint_interval_ms > 0 && frames > 1 && !ckpt_settled(d, frames)) {
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
	while (!stopping(d)) {
		pthread_mutex_lock(&d->mu);
		bool stop_older = d->older_req && !older;
		pthread_mutex_unlock(&d->mu);
		if (stop_older) {
			/* for good: the database must be restored first (replica_older_refuse) */
			if (d->open)
				close_db(d);
			older = stopped = true;
			db_set_state(d, false, "stopped: the database is older than the replica's "
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
			int rc = open_db(d, fresh);
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
				close_db(d);
				fresh = true;
				db_set_state(d, false, d->removed ? ENG_STATE_REMOVED : ENG_STATE_WAITING);
				continue;
			}
			if (ch == 2) {
				log_error("engine", "database left WAL mode: replication stopped for it "
					  "until it is back in WAL mode", "db=%s path=\"%s\"", d->stat.name,
					  d->cfg->path);
				close_db(d);
				stopped = true;
				db_set_state(d, false, "stopped: not in WAL mode");
			}
		}
		int64_t db_mtime = d->db_mtime_ns;
		uint32_t index0 = d->sh.index;
		uint64_t size0 = d->sh.size;
		if (d->open) {
			/* the new hold is taken before reading: see db_hold_rotate() */
			if (db_hold_rotate(&d->conns) < 0)
				d->continuous = false;
			int64_t pass0 = clock_mono_ns();
			int crc = copy_wal(d);
			note_sync(d, crc);
			if (crc == 0)
				check_commits(d);
			else
				give_up_hold(d);
			if (d->conns.cur < 0)
				d->continuous = false;
			serve_generation_request(d);
			bool ckpt = maybe_checkpoint(d);
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
		if (again || (d->open && follow_checkpoint(d, db_mtime, grew, &wait)))
			continue;
		if (open_failed) {
			/*
			 * Our own open and close of the database fire the watch: a
			 * failed open (a full state disk) is tried once a pass, not in
			 * a loop that took a core (QA118 D3). A wake-up still ends it.
			 */
			int64_t until = clock_mono_ns() + wait * NS_PER_MS;
			for (int64_t left = wait; left > 0 && !stopping(d);
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
		close_db_clean(d);
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
