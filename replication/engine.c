/*
 * engine.c — the replication engine's lifecycle, the per-database monitor
 * thread (WAL → shadow WAL, generations, checkpoints, shadow cleanup), the
 * final flush and status copies. Uploads are replica.c's. See engine.h and
 * docs/replication.md.
 */
#include "replication/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "common/banned.h"

#define CLEANUP_EVERY_NS (1 * NS_PER_SEC)
#define CKPT_RETRY_NS (1 * NS_PER_SEC)

static void db_set_state(struct eng_db *d, bool replicating, const char *state)
{
	pthread_mutex_lock(&d->mu);
	if (strcmp(d->stat.state, state) != 0)
		log_info("engine", "database state", "db=%s state=\"%s\"", d->stat.name, state);
	d->stat.replicating = replicating;
	snprintf(d->stat.state, sizeof(d->stat.state), "%s", state);
	pthread_mutex_unlock(&d->mu);
}

static void wake_replicas(struct eng_db *d)
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

/* Publish the shadow's position to the replicas (monitor thread). */
static void publish(struct eng_db *d, uint64_t grew)
{
	int64_t now = clock_mono_ns();
	pthread_mutex_lock(&d->mu);
	snprintf(d->gen, sizeof(d->gen), "%s", d->sh.gen);
	d->index = d->sh.index;
	d->size = d->sh.fd >= 0 ? d->sh.size : 0;
	memcpy(d->stat.pos.generation, d->gen, sizeof(d->gen));
	d->stat.pos.index = d->index;
	d->stat.pos.offset = (uint32_t)d->size;
	if (grew) {
		if (d->lag_n == ENG_LAG_RING) {
			/* full: extend the newest entry (its time stays: lag errs on the high side) */
			d->lag[d->lag_n - 1].index = d->index;
			d->lag[d->lag_n - 1].end = d->size;
		} else {
			d->lag[d->lag_n++] = (struct lag_entry){ d->index, d->size, now };
		}
		wake_replicas(d);
	}
	d->ready = true;
	pthread_mutex_unlock(&d->mu);
}

static int start_generation(struct eng_db *d, const char *reason)
{
	char gen[17];
	struct stat st;

	if (layout_generation_new(gen) < 0 || shadow_start(&d->sh, gen, 0) < 0)
		return -1;
	log_info("engine", "new generation", "db=%s generation=%s reason=\"%s\"", d->stat.name, gen,
		 reason);
	pthread_mutex_lock(&d->mu);
	d->gen_epoch++;
	d->stat.generations_total++;
	d->lag_n = 0;
	d->gen_start_mono = clock_mono_ns();
	d->min_index = 0;
	if (stat(d->cfg->path, &st) == 0) {
		d->dev = st.st_dev;
		d->ino = st.st_ino;
	}
	pthread_mutex_unlock(&d->mu);
	/* the hold taken before this call protects the current WAL from its first byte */
	d->continuous = true;
	publish(d, 0);
	pthread_mutex_lock(&d->mu);
	wake_replicas(d);
	pthread_mutex_unlock(&d->mu);
	return 0;
}

static void close_db(struct eng_db *d)
{
	if (d->sh.fd >= 0 && fdatasync(d->sh.fd) < 0)
		log_warn("engine", "cannot sync shadow WAL", "db=%s err=\"%s\"", d->stat.name,
			 strerror(errno));
	shadow_close(&d->sh);
	db_conns_close(&d->conns);
	if (d->wal_fd >= 0)
		close(d->wal_fd);
	d->wal_fd = -1;
	d->open = false;
	d->continuous = false;
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

	if (!db_file_ready(d->cfg->path)) {
		db_set_state(d, false, "waiting for database");
		return 1;
	}
	int rc = db_conns_open(&d->conns, d->cfg->path);
	if (rc < 0) {
		db_set_state(d, false, rc == -2 ? "waiting: cannot set WAL mode" : "error: cannot open");
		return 1;
	}
	localstate_owner(d->cfg, &uid, &gid);
	fix_owner(d, uid, gid);
	if (localstate_ensure(d->cfg, d->dir) < 0)
		goto fail;
	if (stat(d->cfg->path, &st) < 0)
		goto fail;
	pthread_mutex_lock(&d->mu);
	d->dev = st.st_dev;
	d->ino = st.st_ino;
	pthread_mutex_unlock(&d->mu);
	shadow_init(&d->sh, d->dir, uid, gid);
	d->wal_fd = -1;
	if (db_hold_rotate(&d->conns) < 0)
		goto fail;
	d->open = true;
	d->last_ckpt_mono = clock_mono_ns();

	if (!fresh && localstate_read_restored(d->dir, &m) == 0) {
		/* continue the restored generation at the next index (see localstate.h) */
		if (shadow_start(&d->sh, m.pos.generation, m.pos.index + 1) < 0)
			goto fail;
		log_info("engine", "continuing restored generation", "db=%s generation=%s index=%u",
			 d->stat.name, m.pos.generation, m.pos.index + 1);
		pthread_mutex_lock(&d->mu);
		d->marker = m;
		d->have_marker = true;
		d->marker_pending = 0;
		for (size_t i = 0; i < d->nreplicas; i++)
			if (d->replicas[i].st)
				d->marker_pending++;
		d->gen_epoch++;
		d->gen_start_mono = clock_mono_ns();
		d->min_index = m.pos.index + 1;
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
		pthread_mutex_unlock(&d->mu);
		/* not continuous: the WAL must prove it still continues the shadow */
		d->continuous = false;
		publish(d, 0);
	} else if (start_generation(d, fresh ? "database file replaced" : "no usable local state") < 0) {
		goto fail;
	}
	db_set_state(d, true, "replicating");
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
		if (stat(path, &a) == 0 && fstat(d->wal_fd, &b) == 0 && a.st_ino == b.st_ino)
			return 0;
		close(d->wal_fd);
		d->wal_fd = -1;
	}
	d->wal_fd = open(path, O_RDONLY | O_CLOEXEC);
	return d->wal_fd >= 0 ? 0 : -1;
}

/* Copy everything committed into the shadow, following index changes. Returns 0 or -1. */
static int copy_wal(struct eng_db *d)
{
	char why[128];

	if (wal_open(d) < 0) {
		/* no WAL file (yet): nothing committed since the last checkpoint */
		if (!d->continuous && d->sh.fd >= 0)
			return start_generation(d, "wal missing, cannot verify position");
		return 0;
	}
	for (int round = 0; round < 8; round++) {
		uint64_t grew = 0;
		enum shadow_result res = shadow_sync(&d->sh, d->wal_fd, &grew, why, sizeof(why));
		switch (res) {
		case SHADOW_GREW:
			d->continuous = true;
			publish(d, grew);
			continue; /* drain a WAL that grew while copying */
		case SHADOW_NONE:
			if (!d->continuous && d->sh.fd >= 0) {
				struct stat st;
				/* an empty or header-less WAL proves nothing after a restart */
				if (fstat(d->wal_fd, &st) == 0 && (uint64_t)st.st_size < d->sh.size)
					return start_generation(d, "wal truncated while not watching");
			}
			d->continuous = true;
			return 0;
		case SHADOW_NEW_SESSION:
			if (!d->continuous) {
				if (start_generation(d, "wal header changed while not watching") < 0)
					return -1;
				continue;
			}
			/* the hold guaranteed every frame of the old session was copied */
			shadow_next_index(&d->sh);
			publish(d, 0);
			continue;
		case SHADOW_BROKEN:
			if (start_generation(d, why) < 0)
				return -1;
			continue;
		case SHADOW_ERROR:
			return -1;
		}
	}
	return 0;
}

static int copy_cb(void *ctx)
{
	return copy_wal(ctx);
}

/* Replicas' lowest index still needed (UINT32_MAX: none known). Under mu. */
static uint32_t needed_index(struct eng_db *d, bool *unknown)
{
	uint32_t min = UINT32_MAX;
	*unknown = false;
	for (size_t i = 0; i < d->nreplicas; i++) {
		struct eng_replica *r = &d->replicas[i];
		if (!r->st || r->dropped)
			continue;
		if (!r->pos_known) {
			*unknown = true;
			continue;
		}
		if (strcmp(r->pos.generation, d->gen) != 0)
			continue;
		if (r->pos.index < min)
			min = r->pos.index;
	}
	return min;
}

/* Bytes of shadow WAL a replica at pos still has to ship (monitor thread). */
static int64_t behind_bytes(struct eng_db *d, const struct wal_pos *pos, uint32_t cur)
{
	int64_t n = 0;
	for (uint32_t i = pos->index; i <= cur; i++) {
		int64_t sz = shadow_file_size(&d->sh, i);
		if (sz > 0)
			n += sz;
		if (i == pos->index)
			n -= sz > (int64_t)pos->offset ? (int64_t)pos->offset : (sz > 0 ? sz : 0);
		if (i == UINT32_MAX)
			break;
	}
	return n;
}

/* Delete shadow files nobody needs; enforce the backlog cap. */
static void cleanup(struct eng_db *d)
{
	bool unknown;
	int64_t backlog = 0;
	struct eng_replica *worst = NULL;
	struct wal_pos pos[LOCALSTATE_MAX_REPLICAS];
	size_t n = 0;

	pthread_mutex_lock(&d->mu);
	uint32_t min = needed_index(d, &unknown);
	uint32_t cur = d->index;
	for (size_t i = 0; i < d->nreplicas && n < LOCALSTATE_MAX_REPLICAS; i++) {
		struct eng_replica *r = &d->replicas[i];
		if (r->st && !r->dropped && r->pos_known && !strcmp(r->pos.generation, d->gen))
			pos[n++] = r->pos;
	}
	pthread_mutex_unlock(&d->mu);
	if (min > cur)
		min = cur;
	/* the backlog is what the replica furthest behind still needs */
	int64_t worst_bytes = -1;
	struct wal_pos worst_pos = { 0 };
	for (size_t i = 0; i < n; i++) {
		int64_t b = behind_bytes(d, &pos[i], cur);
		if (b > worst_bytes) {
			worst_bytes = b;
			worst_pos = pos[i];
		}
	}
	backlog = worst_bytes > 0 ? worst_bytes : 0;
	if (unknown) {
		/* a replica never reached yet holds everything back since we started */
		struct wal_pos from = { .index = d->min_index };
		int64_t all = behind_bytes(d, &from, cur);
		if (all > backlog)
			backlog = all;
	}
	pthread_mutex_lock(&d->mu);
	if (unknown && backlog > d->cfg->max_backlog_bytes && d->cfg->max_backlog_bytes > 0) {
		for (size_t i = 0; i < d->nreplicas; i++) {
			struct eng_replica *r = &d->replicas[i];
			if (r->st && !r->dropped && !r->pos_known) {
				r->dropped = true;
				r->need_snapshot = true;
				log_error("engine", "unreachable replica over the backlog cap: it gets a fresh snapshot when reached",
					  "db=%s replica=%s backlog_bytes=%lld cap=%lld", d->stat.name,
					  r->cfg->name, (long long)backlog,
					  (long long)d->cfg->max_backlog_bytes);
			}
		}
		worst_bytes = -1; /* those were the cause; re-evaluate the others next round */
	}
	d->stat.backlog_bytes = backlog;
	if (worst_bytes > d->cfg->max_backlog_bytes && d->cfg->max_backlog_bytes > 0) {
		/* drop the replica furthest behind: it gets a fresh snapshot when it is back */
		for (size_t i = 0; i < d->nreplicas && !worst; i++) {
			struct eng_replica *r = &d->replicas[i];
			if (r->st && !r->dropped && r->pos_known && !strcmp(r->pos.generation, d->gen) &&
			    wal_pos_cmp(&r->pos, &worst_pos) == 0)
				worst = r;
		}
		if (worst) {
			worst->dropped = true;
			worst->need_snapshot = true;
			worst->gap = true;
			log_error("engine", "replica backlog over the cap: dropping its backlog, it gets a fresh snapshot when back",
				  "db=%s replica=%s backlog_bytes=%lld cap=%lld", d->stat.name,
				  worst->cfg->name, (long long)backlog,
				  (long long)d->cfg->max_backlog_bytes);
		}
	}
	/* commits every live replica holds no longer matter for the lag gauge */
	size_t drop = 0;
	for (; drop < d->lag_n; drop++) {
		bool all = true;
		for (size_t i = 0; i < d->nreplicas && all; i++) {
			struct eng_replica *r = &d->replicas[i];
			if (!r->st || r->dropped)
				continue;
			struct wal_pos p = { .index = d->lag[drop].index, .offset = (uint32_t)d->lag[drop].end };
			if (!r->pos_known || strcmp(r->pos.generation, d->gen) != 0 ||
			    wal_pos_cmp(&r->pos, &p) < 0)
				all = false;
		}
		if (!all)
			break;
	}
	if (drop) {
		memmove(d->lag, d->lag + drop, (d->lag_n - drop) * sizeof(d->lag[0]));
		d->lag_n -= drop;
	}
	pthread_mutex_unlock(&d->mu);
	if (!unknown && min > d->min_index) {
		shadow_remove_below(&d->sh, min);
		pthread_mutex_lock(&d->mu);
		d->min_index = min;
		pthread_mutex_unlock(&d->mu);
	}
}

/* The TRUNCATE step once the WAL is fully backfilled and very large. */
static void truncate_wal(struct eng_db *d, int64_t before)
{
	db_hold_release(&d->conns);
	int rc = db_checkpoint(d->conns.ck, DB_CKPT_TRUNCATE, NULL, NULL);
	int64_t after = db_data_version(d->conns.ck);
	if (db_hold_rotate(&d->conns) < 0)
		d->continuous = false;
	if (rc != 0)
		return;
	pthread_mutex_lock(&d->mu);
	d->stat.checkpoints_total[DB_CKPT_TRUNCATE]++;
	pthread_mutex_unlock(&d->mu);
	log_info("engine", "WAL truncated", "db=%s index=%u", d->stat.name, d->sh.index);
	if (before != after) {
		/* a commit slipped in between our copy and the truncation: it may be lost */
		start_generation(d, "commit raced a TRUNCATE checkpoint");
		return;
	}
	shadow_next_index(&d->sh);
	publish(d, 0);
}

static void maybe_checkpoint(struct eng_db *d)
{
	const struct cfg_db *c = d->cfg;
	int64_t now = clock_mono_ns();

	if (!d->continuous || d->sh.fd < 0)
		return;
	pthread_mutex_lock(&d->mu);
	bool req = d->ckpt_req;
	pthread_mutex_unlock(&d->mu);
	uint64_t frames = (d->sh.size - WAL_HEADER_SIZE) / wal_frame_size(d->sh.hdr.page_size);
	/*
	 * Fully backfilled already: the app's next write restarts the WAL. Try
	 * again only if it grew by another threshold meanwhile (an app reader kept
	 * the restart from happening).
	 */
	if (d->ckpt_done && d->ckpt_done_epoch == d->gen_epoch && d->ckpt_done_index == d->sh.index &&
	    (int64_t)(frames - d->ckpt_done_frames) < c->min_checkpoint_page_count)
		return;
	bool due = req || (int64_t)frames >= c->min_checkpoint_page_count ||
		   (c->checkpoint_interval_ms > 0 && frames > 1 &&
		    now - d->last_ckpt_mono >= c->checkpoint_interval_ms * NS_PER_MS);
	/* retry soon when asked or when the WAL is past max-checkpoint-page-count */
	bool urgent = req || (c->max_checkpoint_page_count > 0 &&
			      (int64_t)frames >= c->max_checkpoint_page_count);
	if (!due || now - d->last_ckpt_mono < (urgent ? CKPT_RETRY_NS / 10 : CKPT_RETRY_NS))
		return;
	d->last_ckpt_mono = now;
	bool full = false;
	int64_t dv = -1;
	int rc = db_safe_checkpoint(&d->conns, copy_cb, d, &full, &dv);
	if (d->conns.cur < 0)
		d->continuous = false;
	pthread_mutex_lock(&d->mu);
	if (rc == 0)
		d->stat.checkpoints_total[DB_CKPT_PASSIVE]++;
	else if (rc < 0)
		d->stat.checkpoint_errors_total++;
	pthread_mutex_unlock(&d->mu);
	log_debug("engine", "checkpoint", "db=%s rc=%d full=%d index=%u frames=%llu requested=%d",
		  d->stat.name, rc, full, d->sh.index, (unsigned long long)frames, req);
	if (rc != 0 || !full)
		return;
	d->ckpt_done = true;
	d->ckpt_done_epoch = d->gen_epoch;
	d->ckpt_done_index = d->sh.index;
	d->ckpt_done_frames = frames;
	pthread_mutex_lock(&d->mu);
	d->ckpt_req = false; /* served: the restart is up to the app's next write */
	pthread_mutex_unlock(&d->mu);
	struct stat st;
	if (c->truncate_page_count > 0 && d->wal_fd >= 0 && fstat(d->wal_fd, &st) == 0 &&
	    (uint64_t)st.st_size >= WAL_HEADER_SIZE + (uint64_t)c->truncate_page_count *
							      wal_frame_size(d->sh.hdr.page_size))
		truncate_wal(d, dv);
}

/* Has the database file been replaced or left WAL mode? 1 replaced, 2 not WAL, 0 fine. */
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
	return db_conn_is_wal(d->conns.ck) == 0 ? 2 : 0;
}

static void *monitor_thread(void *arg)
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

	while (!stopping(d)) {
		if (!stopped && !d->open) {
			int rc = open_db(d, fresh);
			if (rc == 0)
				fresh = false;
		}
		if (d->open) {
			int ch = db_file_changed(d);
			if (ch == 1) {
				log_warn("engine", "database file replaced or removed", "db=%s", d->stat.name);
				close_db(d);
				fresh = true;
				db_set_state(d, false, "waiting for database");
				continue;
			}
			if (ch == 2) {
				log_error("engine", "database left WAL mode: replication stopped for it",
					  "db=%s path=\"%s\"", d->stat.name, d->cfg->path);
				close_db(d);
				stopped = true;
				db_set_state(d, false, "stopped: not in WAL mode");
			}
		}
		if (d->open) {
			/* the new hold is taken before reading: see db_hold_rotate() */
			if (db_hold_rotate(&d->conns) < 0)
				d->continuous = false;
			if (copy_wal(d) < 0) {
				log_warn("engine", "sync failed", "db=%s", d->stat.name);
			}
			if (d->conns.cur < 0)
				d->continuous = false;
			maybe_checkpoint(d);
			pthread_mutex_lock(&d->mu);
			if (d->ckpt_req && d->index != d->ckpt_req_index)
				d->ckpt_req = false;
			pthread_mutex_unlock(&d->mu);
			int64_t now = clock_mono_ns();
			if (now - d->last_cleanup_mono >= CLEANUP_EVERY_NS) {
				d->last_cleanup_mono = now;
				cleanup(d);
			}
			struct stat st;
			pthread_mutex_lock(&d->mu);
			if (stat(d->cfg->path, &st) == 0)
				d->stat.db_size = st.st_size;
			if (d->wal_fd >= 0 && fstat(d->wal_fd, &st) == 0)
				d->stat.wal_size = st.st_size;
			pthread_mutex_unlock(&d->mu);
		}
		pthread_mutex_lock(&d->mu);
		d->sync_seq++;
		pthread_cond_broadcast(&d->cond);
		bool again = d->sync_req > d->sync_seq;
		pthread_mutex_unlock(&d->mu);
		if (again)
			continue;
		if (watch_wait(&d->watch, poll_ms) && coalesce_ms > 0) {
			/* gather commits for a while: no replica wants them sooner */
			pthread_mutex_lock(&d->mu);
			bool urgent = d->sync_req > d->sync_seq || d->ckpt_req;
			pthread_mutex_unlock(&d->mu);
			if (!urgent)
				watch_sleep(&d->watch, coalesce_ms);
		}
	}
	if (d->open)
		close_db(d);
	return NULL;
}

void engine_request_checkpoint(struct eng_db *d)
{
	/* under mu */
	if (!d->ckpt_req) {
		d->ckpt_req = true;
		d->ckpt_req_index = d->index;
		watch_wake(&d->watch);
	}
}

/* Condition variables wait on the monotonic clock (deadlines are monotonic). */
static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

struct engine *engine_new(const struct config *cfg)
{
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->cfg = cfg;
	e->dbs = calloc(cfg->ndbs ? cfg->ndbs : 1, sizeof(*e->dbs));
	if (!e->dbs)
		goto fail;
	e->ndbs = cfg->ndbs;
	for (size_t i = 0; i < cfg->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		d->eng = e;
		d->cfg = &cfg->dbs[i];
		d->wal_fd = -1;
		d->sh.fd = -1;
		d->watch.ifd = d->watch.efd = -1;
		pthread_mutex_init(&d->mu, NULL);
		cond_init_mono(&d->cond);
	}
	for (size_t i = 0; i < cfg->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		const struct cfg_db *c = d->cfg;
		localstate_dir(c, d->dir, sizeof(d->dir));
		snprintf(d->stat.name, sizeof(d->stat.name), "%s", c->name ? c->name : c->path);
		snprintf(d->stat.path, sizeof(d->stat.path), "%s", c->path);
		snprintf(d->stat.state, sizeof(d->stat.state), "starting");
		d->replicas = calloc(c->nreplicas ? c->nreplicas : 1, sizeof(*d->replicas));
		if (!d->replicas)
			goto fail;
		d->nreplicas = c->nreplicas;
		for (size_t j = 0; j < c->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			const struct cfg_replica *rc = &c->replicas[j];
			struct st_error err = { 0 };
			r->db = d;
			r->cfg = rc;
			cond_init_mono(&r->cond);
			snprintf(r->stat.name, sizeof(r->stat.name), "%s", rc->name ? rc->name : "");
			snprintf(r->stat.type, sizeof(r->stat.type), "%s",
				 rc->type == REPLICA_S3 ? "s3" : "file");
			r->stat.restore_only = rc->restore_only;
			int64_t si = rc->sync_interval_ms;
			r->stat.max_lag_ms = (si * 3 > 2000 ? si * 3 : 2000) + d->cfg->monitor_interval_ms;
			if (rc->restore_only) {
				snprintf(r->stat.description, sizeof(r->stat.description), "%s",
					 rc->url ? rc->url : rc->path ? rc->path : "");
				continue;
			}
			r->st = storage_open(rc, &err);
			if (!r->st) {
				log_error("engine", "cannot open replica", "db=%s replica=%s err=\"%s\"",
					  d->stat.name, r->stat.name, err.message);
				goto fail;
			}
			snprintf(r->stat.description, sizeof(r->stat.description), "%s",
				 r->st->description ? r->st->description : "");
		}
	}
	return e;
fail:
	engine_free(e);
	return NULL;
}

void engine_note_restore(struct engine *e, size_t db_index, const char *source,
			 const char *result, int64_t duration_ms, const struct wal_pos *pos)
{
	if (!e || db_index >= e->ndbs)
		return;
	struct eng_db *d = &e->dbs[db_index];
	pthread_mutex_lock(&d->mu);
	snprintf(d->stat.restore_source, sizeof(d->stat.restore_source), "%s", source ? source : "");
	snprintf(d->stat.restore_result, sizeof(d->stat.restore_result), "%s", result ? result : "");
	d->stat.restore_duration_ms = duration_ms;
	if (pos)
		d->stat.restore_pos = *pos;
	pthread_mutex_unlock(&d->mu);
}

int engine_start(struct engine *e)
{
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		if (watch_init(&d->watch, d->cfg->path) < 0)
			return -1;
		if (pthread_create(&d->thread, NULL, monitor_thread, d) != 0) {
			log_error("engine", "cannot start thread", "db=%s", d->stat.name);
			return -1;
		}
		d->started = true;
		for (size_t j = 0; j < d->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			if (!r->st)
				continue;
			if (pthread_create(&r->thread, NULL, replica_thread, r) != 0) {
				log_error("engine", "cannot start thread", "db=%s replica=%s", d->stat.name,
					  r->stat.name);
				return -1;
			}
			r->started = true;
		}
	}
	e->started = true;
	return 0;
}

static int64_t remaining_ms(int64_t end_ns)
{
	int64_t left = (end_ns - clock_mono_ns()) / NS_PER_MS;
	return left > 0 ? left : 0;
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ms > 100)
		ms = 100; /* re-check often: the condition may be signalled on another cond */
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(c, m, &ts);
}

int engine_flush(struct engine *e, int64_t deadline_ms)
{
	int64_t end = clock_mono_ns() + deadline_ms * NS_PER_MS;
	int rc = 0;

	if (!e || !e->started)
		return 0;
	/* 1. one more sync of every WAL */
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		pthread_mutex_lock(&d->mu);
		uint64_t want = d->sync_seq + 2; /* a full pass that started after this call */
		d->sync_req = want;
		watch_wake(&d->watch);
		while (d->sync_seq < want && remaining_ms(end) > 0)
			timed_wait(&d->cond, &d->mu, remaining_ms(end));
		if (d->sync_seq < want) {
			log_error("engine", "final flush: the WAL could not be synced in time", "db=%s",
				  d->stat.name);
			rc = -1;
		}
		pthread_mutex_unlock(&d->mu);
	}
	/* 2. every replica ships up to that point, in parallel (each its own thread) */
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		pthread_mutex_lock(&d->mu);
		e->flush_seq++;
		d->flush_deadline_ns = end;
		wake_replicas(d);
		pthread_mutex_unlock(&d->mu);
	}
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		pthread_mutex_lock(&d->mu);
		if (!d->ready) {
			pthread_mutex_unlock(&d->mu);
			continue;
		}
		struct wal_pos target;
		replica_target(d, &target);
		for (size_t j = 0; j < d->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			if (!r->st)
				continue;
			while (!(r->pos_known && !r->need_snapshot &&
				 strcmp(r->pos.generation, target.generation) == 0 &&
				 wal_pos_cmp(&r->pos, &target) >= 0) &&
			       remaining_ms(end) > 0)
				timed_wait(&d->cond, &d->mu, remaining_ms(end));
			if (!(r->pos_known && strcmp(r->pos.generation, target.generation) == 0 &&
			      wal_pos_cmp(&r->pos, &target) >= 0)) {
				log_error("engine", "final flush incomplete", "db=%s replica=%s have=%s/%08x/%08x want=%s/%08x/%08x",
					  d->stat.name, r->stat.name, r->pos.generation, r->pos.index,
					  r->pos.offset, target.generation, target.index, target.offset);
				rc = -1;
			} else {
				log_info("engine", "final flush done", "db=%s replica=%s position=%s/%08x/%08x",
					 d->stat.name, r->stat.name, target.generation, target.index,
					 target.offset);
			}
		}
		pthread_mutex_unlock(&d->mu);
	}
	return rc;
}

int engine_status_get(struct engine *e, struct engine_status *out)
{
	memset(out, 0, sizeof(*out));
	out->taken_ns = clock_wall_ns();
	if (!e)
		return 0;
	out->dbs = calloc(e->ndbs ? e->ndbs : 1, sizeof(*out->dbs));
	if (!out->dbs)
		return -1;
	out->ndbs = e->ndbs;
	int64_t now = clock_mono_ns();
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		struct db_status *o = &out->dbs[i];
		struct replica_status *reps = calloc(d->nreplicas ? d->nreplicas : 1, sizeof(*reps));
		if (!reps) {
			engine_status_release(out);
			return -1;
		}
		pthread_mutex_lock(&d->mu);
		*o = d->stat;
		for (size_t j = 0; j < d->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			reps[j] = r->stat;
			reps[j].pos = r->pos;
			if (r->st) {
				reps[j].lag_seconds = replica_lag_seconds(d, &r->pos, now);
				for (int k = 0; k < ST_OP__COUNT; k++) {
					reps[j].ops[k].count = r->st->stats[k].count;
					reps[j].ops[k].errors = r->st->stats[k].errors;
					reps[j].ops[k].bytes = r->st->stats[k].bytes;
					reps[j].ops[k].latency_ns = r->st->stats[k].latency_ns;
				}
			}
		}
		pthread_mutex_unlock(&d->mu);
		o->replicas = reps;
		o->nreplicas = d->nreplicas;
	}
	return 0;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->ndbs; i++) {
		pthread_mutex_lock(&e->dbs[i].mu);
		e->stop = true;
		wake_replicas(&e->dbs[i]);
		pthread_mutex_unlock(&e->dbs[i].mu);
		watch_wake(&e->dbs[i].watch);
	}
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		for (size_t j = 0; j < d->nreplicas; j++)
			if (d->replicas[j].started)
				pthread_join(d->replicas[j].thread, NULL);
		if (d->started)
			pthread_join(d->thread, NULL);
		for (size_t j = 0; j < d->nreplicas; j++) {
			storage_free(d->replicas[j].st);
			pthread_cond_destroy(&d->replicas[j].cond);
		}
		free(d->replicas);
		watch_release(&d->watch);
		pthread_cond_destroy(&d->cond);
		pthread_mutex_destroy(&d->mu);
	}
	free(e->dbs);
	free(e);
}
