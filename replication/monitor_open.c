/*
 * monitor_open.c — the monitor opens the database and its local state
 * (continuing a restore, resuming the generation in the state directory, or
 * starting a new one) and closes it, recording a clean stop for the next
 * start; and it looks whether the -wal or -shm our connections use was
 * deleted, replaced or cut short under them. See monitor_int.h.
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
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "replication/monitor_int.h"
#include "common/banned.h"

/* An exclusive lock held this long is said once, at WARN (a schema being created takes less). */
#define LOCKED_WARN_NS (30 * NS_PER_SEC)

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

void monitor_close_db(struct eng_db *d)
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
	monitor_clear_sync_failure(d);
	pthread_mutex_unlock(&d->mu);
	d->sync_logged[0] = '\0';
}

/*
 * The shadow this process writes, deleted under it (its state directory
 * removed by a cleaner or a hand): replicas read it by name, so nothing
 * written into it would reach them. Why, in why; false while it is there.
 */
bool monitor_shadow_gone(const struct eng_db *d, char *why, size_t len)
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

/* Close at shutdown, recording the files' state for the next start. */
void monitor_close_db_clean(struct eng_db *d)
{
	char line[512], path[PATH_MAX + 16];
	char gone[200];
	/*
	 * A shadow deleted under us is no history to resume: the next start must
	 * not trust it. Nor one holding frames SQLite never published (shadow.h):
	 * the files' state cannot tell whether the app dropped them meanwhile (a
	 * TRUNCATE on close empties the WAL); the WAL itself must prove it then.
	 */
	(void)monitor_note_index(d, gone, sizeof(gone));
	bool ok = d->continuous && d->sh.gen[0] && !d->sh.unproven && !d->gen_owed[0] &&
		  !shadow_unpublished(&d->sh) && !monitor_shadow_gone(d, gone, sizeof(gone));
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
	monitor_close_db(d);
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
bool monitor_side_files_changed(struct eng_db *d)
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
bool monitor_wal_cut_short(struct eng_db *d)
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
int monitor_take_state(struct eng_db *d)
{
	char holder[320];
	int taken = eng_take_state(d, holder, sizeof(holder));
	if (taken > 0) {
		if (!d->state_held_logged)
			log_error("engine", "the database's state directory is in use by another litevisor "
				  "process: not replicating it until that one stops", "db=%s dir=\"%s\" "
				  "holder=\"%s\"", d->stat.name, d->dir, holder[0] ? holder : "unknown");
		d->state_held_logged = true;
		monitor_db_set_state(d, false, STATE_HELD);
	} else if (taken < 0) {
		monitor_db_set_state(d, false, "error: local state");
	}
	return taken;
}

/*
 * A failure to open the database or its state: said at level while it is a
 * new one, at debug while it stays the same (monitor_open_db runs again at every
 * poll, and a directory this user cannot write stays so: QA59 #4).
 */
void monitor_open_failed(struct eng_db *d, enum log_level level, const char *what, const char *why)
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
 * another node's (QA92 D1; replica_history_litestream_wrote_here). Once per
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
int monitor_open_db(struct eng_db *d, bool fresh)
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
		monitor_db_set_state(d, false, ready < 0 ? why : d->removed ? ENG_STATE_REMOVED
							       : ENG_STATE_WAITING);
		return 1;
	}
	d->removed = false;
	/*
	 * A state directory that did not exist at the start was not taken then
	 * (engine_lock): before we touch anything; looked at again each round,
	 * the other process may stop.
	 */
	if (monitor_take_state(d) != 0)
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
		monitor_db_set_state(d, false, long_ ? "waiting: database locked by another process "
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
		monitor_open_failed(d, LOG_WARN, rc == -2 ? "cannot use the database in WAL mode"
						  : "cannot open the database", full);
		char state[sizeof(d->stat.state)];
		snprintf(state, sizeof(state), "%s: %.200s", rc == -2 ? "waiting" : "error", owhy);
		monitor_db_set_state(d, false, state);
		return 1;
	}
	localstate_owner(d->cfg, &uid, &gid);
	fix_owner(d, uid, gid);
	if (localstate_ensure(d->cfg, d->dir) < 0) {
		char e[PATH_MAX + 80];
		snprintf(e, sizeof(e), "%s: %s", d->dir, strerror(errno));
		monitor_open_failed(d, LOG_ERROR, "cannot create the state directory", e);
		goto fail;
	}
	/* a state directory that was missing above exists now: take it before reading it */
	int taken = monitor_take_state(d);
	if (taken > 0) {
		monitor_close_db(d);
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
	if (db_hold_rotate(&d->conns, false) < 0) {
		/*
		 * The database cannot be read yet: a file just renamed over it beside
		 * the old -wal/-shm, which the app deletes a moment later (I/O error).
		 * Look again at the next pass; the cause was logged (db.c).
		 */
		db_conns_close(&d->conns);
		monitor_db_set_state(d, false, "waiting: the database cannot be read yet");
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
			monitor_shadow_start_failed(d);
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
		monitor_publish(d, 0);
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
			 * held no frame SQLite had not published (monitor_close_db_clean) */
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
			if (monitor_start_generation(d, "files changed since the last stop, no shadow file "
						"to compare the WAL with") < 0)
				goto fail;
		} else {
			/*
			 * Not yet proven, the replicas wait (resume_pending) until
			 * monitor_copy_wal() sees the WAL go on from the shadow. One that looked
			 * first reopened the generation (its closed mark deleted), and the
			 * WAL then disowned it: left unclosed by a node that wrote nothing
			 * there, it looked live to retention and to other nodes.
			 */
			pthread_mutex_lock(&d->mu);
			d->resume_pending = !d->continuous;
			pthread_mutex_unlock(&d->mu);
			monitor_publish(d, 0);
		}
	} else if (monitor_start_generation(d, fresh ? "database file replaced"
						  : "no usable local state") < 0) {
		goto fail;
	}
	monitor_db_set_state(d, true, "replicating");
	if (d->open_why[0])
		log_info("engine", "the database opens again", "db=%s", d->stat.name);
	d->open_why[0] = '\0';
	return 0;
fail:
	monitor_close_db(d);
	monitor_db_set_state(d, false, "error: local state");
	return -1;
}

/* Open (or re-open after the app re-created it) the -wal file. */
int monitor_wal_open(struct eng_db *d)
{
	char path[PATH_MAX + 8];
	struct stat a, b;
	snprintf(path, sizeof(path), "%s-wal", d->cfg->path);
	if (d->wal_fd >= 0) {
		/*
		 * While our connections have the -wal open, another one in its place
		 * is no re-creation to follow but a replacement: monitor_side_files_changed()
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
