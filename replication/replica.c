/*
 * replica.c — one thread per replica: find where the replica stands, take
 * snapshots, ship shadow WAL segments, enforce retention, each on this
 * replica's own schedule so a slow or unreachable replica never delays another.
 *
 * Schedule: sync-interval > 0 starts at most one upload per interval, and
 * each ships everything committed before it started; sync-interval 0 keeps
 * one upload in flight and, as soon as it ends, ships everything committed
 * meanwhile. Failures back off (0.5 s doubling to 10 s); a final flush skips
 * both waits.
 */
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
#include "replication/lineage.h"
#include "replication/lz4io.h"
#include "common/banned.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 10000

void replica_target(struct eng_db *d, struct wal_pos *pos)
{
	memset(pos, 0, sizeof(*pos));
	memcpy(pos->generation, d->gen, sizeof(pos->generation));
	pos->index = d->index;
	pos->offset = (uint32_t)(d->size > d->eng->max_offset ? d->eng->max_offset : d->size);
}

/*
 * Index index of gen grew past what a segment's name can say (one
 * transaction of gigabytes: a bulk import, a VACUUM of a big database).
 * Nothing more of it can be shipped: the replica takes a snapshot at the next
 * index, which the monitor starts itself once its checkpoint has backfilled
 * the WAL, and its history has a gap there (as after a backlog drop).
 * Returns -1 (noted: the replica is failing until then).
 */
static int oversize(struct eng_replica *r, const char *gen, uint32_t index, uint64_t end)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	bool first = !r->oversize || r->oversize_index != index;
	r->oversize = true;
	r->oversize_index = index;
	r->need_snapshot = true;
	r->gap = true;
	monitor_request_restart(d);
	pthread_mutex_unlock(&d->mu);
	if (first)
		log_error("replica", "WAL index past the largest offset a segment name can hold: "
			  "the replica takes a snapshot at the next index instead", "db=%s replica=%s "
			  "generation=%s index=%u end=%llu max=%llu", d->stat.name, r->stat.name, gen,
			  index, (unsigned long long)end, (unsigned long long)d->eng->max_offset);
	replica_note_error(r, "WAL index too large for the format", "waiting for a new index");
	return -1;
}

/* Seconds since the oldest commit past pos that the shadow holds. */
static double shadow_lag(const struct eng_db *d, const struct wal_pos *pos, int64_t now)
{
	if (strcmp(pos->generation, d->gen) != 0)
		return d->gen_start_mono ? (double)(now - d->gen_start_mono) / NS_PER_SEC : 0;
	int64_t t = lagring_oldest_past(d->lag, d->lag_n, pos->index, pos->offset);
	return t ? (double)(now - t) / NS_PER_SEC : 0;
}

void replica_lag_caught_up(struct eng_replica *r)
{
	if (r->behind_since_mono && r->behind_until.generation[0] &&
	    !strcmp(r->pos.generation, r->behind_until.generation) &&
	    wal_pos_cmp(&r->pos, &r->behind_until) >= 0) {
		r->behind_since_mono = 0;
		memset(&r->behind_until, 0, sizeof(r->behind_until));
	}
}

double replica_lag_seconds(const struct eng_db *d, const struct eng_replica *r, int64_t now)
{
	double lag = 0;
	/* lacked before a restart: whether or not the database is open again yet */
	if (r->carried && (double)(now - r->carried_since_mono) / NS_PER_SEC > lag)
		lag = (double)(now - r->carried_since_mono) / NS_PER_SEC;
	if (!d->ready)
		return lag;
	double shadow = shadow_lag(d, &r->pos, now);
	if (shadow > lag)
		lag = shadow;
	/* commits the shadow could not take since then reach no replica either */
	if (d->stat.sync_failing_since_mono_ns && (double)(now - d->stat.sync_failing_since_mono_ns) / NS_PER_SEC > lag)
		lag = (double)(now - d->stat.sync_failing_since_mono_ns) / NS_PER_SEC;
	/* its backlog dropped, or a new generation began: what it lacks is older than the
	 * shadow remembers (QA123 D2) */
	if (r->behind_since_mono &&
	    (double)(now - r->behind_since_mono) / NS_PER_SEC > lag)
		lag = (double)(now - r->behind_since_mono) / NS_PER_SEC;
	return lag;
}

/* Size of a shadow file, -1 if absent (gen copied under mu: the monitor may move on). */
static int64_t shadow_size(const struct eng_db *d, const char *gen, uint32_t index)
{
	char path[PATH_MAX + 64];
	struct stat st;
	if (stat(localstate_shadow_path(d->dir, gen, index, path, sizeof(path)), &st) < 0)
		return -1;
	return st.st_size;
}

static ssize_t range_read(void *ctx, void *buf, size_t len)
{
	struct range_src *r = ctx;
	if (r->pos >= r->end)
		return 0;
	if (len > r->end - r->pos)
		len = (size_t)(r->end - r->pos);
	ssize_t n = pread(r->fd, buf, len, (off_t)r->pos);
	if (n > 0)
		r->pos += (uint64_t)n;
	else if (n == 0) {
		errno = EIO; /* the shadow file is shorter than published: never expected */
		return -1;
	}
	return n;
}

static int range_rewind(void *ctx)
{
	struct range_src *r = ctx;
	r->pos = r->start;
	return 0;
}

static int range_seek(void *ctx, int64_t off)
{
	struct range_src *r = ctx;
	if (off < 0 || (uint64_t)off > r->end - r->start) {
		errno = EINVAL;
		return -1;
	}
	r->pos = r->start + (uint64_t)off;
	return 0;
}

void range_src_init(struct st_source *src, struct range_src *r, int fd, uint64_t start,
		    uint64_t end)
{
	r->fd = fd;
	r->start = r->pos = start;
	r->end = end;
	*src = (struct st_source){ range_read, range_rewind, r, (int64_t)(end - start), range_seek, NULL };
}

void replica_call_for(struct eng_replica *r, struct st_call *call, bool flush)
{
	/*
	 * No overall deadline outside a final flush: a snapshot of a large
	 * database over a slow link may take minutes and must not be cut at a
	 * fixed time, again at every try. A request that stops moving is ended
	 * by the storage client's idle timeout and stall rule instead.
	 */
	memset(call, 0, sizeof(*call));
	if (flush) {
		int64_t left = (r->db->flush_deadline_ns - clock_mono_ns()) / NS_PER_MS;
		call->deadline_ms = left > 1 ? left : 1;
	}
}

int replica_close(struct eng_replica *r, const struct wal_pos *at)
{
	struct st_mem_source m;
	struct st_source src;
	struct st_error err = { 0 };
	struct st_call call;
	char key[LAYOUT_KEY_MAX];

	replica_call_for(r, &call, true);
	st_mem_source_init(&src, &m, "", 0);
	layout_closed_key(key, at->generation, at->index, at->offset);
	if (storage_put(r->st, key, &src, &call, &err) < 0) {
		log_warn("replica", "cannot mark the generation closed: a node restoring it will "
			 "start a new one", "db=%s replica=%s err=\"%s\"", r->db->stat.name,
			 r->stat.name, err.message);
		return -1;
	}
	log_info("replica", "generation closed", "db=%s replica=%s position=%s/%08x/%08x",
		 r->db->stat.name, r->stat.name, at->generation, at->index, at->offset);
	uid_t uid;
	gid_t gid;
	localstate_owner(r->db->cfg, &uid, &gid);
	if (localstate_write_closed(r->db->dir, r->stat.name, r->st->location, at, uid, gid) < 0)
		log_warn("replica", "cannot record the closed mark locally: if another node takes "
			 "the generation over, a restart here cannot tell", "db=%s replica=%s "
			 "error=\"%s\"", r->db->stat.name, r->stat.name, strerror(errno));
	return 0;
}

bool replica_holds(const struct eng_replica *r, const struct wal_pos *target, bool whole)
{
	return r->pos_known && !(whole && r->need_snapshot) &&
	       strcmp(r->pos.generation, target->generation) == 0 &&
	       wal_pos_cmp(&r->pos, target) >= 0;
}

/*
 * The final flush's closed mark is this thread's to write, once the replica
 * holds the flush target and between two uploads: written from the engine's
 * thread it could land while this one still shipped commits made after the
 * flush began (`replicate` beside a running app), a segment after the mark,
 * and the same node refused its own replica at the next start (QA40). Each
 * replica's thread writes its own, so a slow one holds up no other's.
 * mu held; dropped for the PUT.
 */
static bool close_due(const struct eng_replica *r)
{
	return r->db->flush_closing && !r->closed && replica_holds(r, &r->db->flush_target, true);
}

static void close_now(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	struct wal_pos at = r->pos;
	r->closed = true;
	log_info("engine", "final flush done", "db=%s replica=%s position=%s/%08x/%08x",
		 d->stat.name, r->stat.name, at.generation, at.index, at.offset);
	pthread_mutex_unlock(&d->mu);
	replica_close(r, &at);
	pthread_mutex_lock(&d->mu);
	r->close_done = true;
	pthread_cond_broadcast(&d->cond);
}

int replica_database_id(struct eng_db *d, const char *adopt, char id[LAYOUT_DBID_LEN + 1])
{
	int rc = 0;
	/* id_mu, not mu: choosing writes a file, and two replicas must not both choose */
	pthread_mutex_lock(&d->id_mu);
	pthread_mutex_lock(&d->mu);
	memcpy(id, d->dbid, LAYOUT_DBID_LEN + 1);
	pthread_mutex_unlock(&d->mu);
	if (id[0])
		goto out;
	const char *how = "adopted from the generation it continues";
	if (adopt && layout_database_id_valid(adopt)) {
		memcpy(id, adopt, LAYOUT_DBID_LEN + 1);
	} else if (layout_database_id_new(id) == 0) {
		how = "new";
	} else {
		log_error("engine", "cannot draw a database id", "db=%s err=\"%s\"", d->stat.name,
			  strerror(errno));
		id[0] = '\0';
		rc = -1;
		goto out;
	}
	uid_t uid;
	gid_t gid;
	localstate_owner(d->cfg, &uid, &gid);
	if (localstate_write_database_id(d->dir, id, uid, gid) < 0)
		log_warn("engine", "cannot write the database id to the local state: chosen again "
			 "at the next start", "db=%s dir=\"%s\" err=\"%s\"", d->stat.name, d->dir,
			 strerror(errno));
	log_info("engine", "database id chosen", "db=%s database_id=%s how=%s", d->stat.name, id,
		 how);
	pthread_mutex_lock(&d->mu);
	memcpy(d->dbid, id, LAYOUT_DBID_LEN + 1);
	pthread_mutex_unlock(&d->mu);
out:
	pthread_mutex_unlock(&d->id_mu);
	return rc;
}

int replica_label(struct eng_replica *r, const char *gen, const struct st_call *call,
		  struct st_error *err)
{
	char id[LAYOUT_DBID_LEN + 1], key[LAYOUT_KEY_MAX];
	struct st_mem_source m;
	struct st_source src;

	if (!strcmp(r->labelled_gen, gen))
		return 0;
	if (replica_database_id(r->db, NULL, id) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "no database id to label generation %s with", gen);
		return ST_PERMANENT;
	}
	st_mem_source_init(&src, &m, "", 0);
	int rc = storage_put(r->st, layout_database_key(key, gen, id), &src, call, err);
	if (rc < 0)
		return rc;
	log_debug("replica", "generation labelled", "db=%s replica=%s generation=%s "
		  "database_id=%s", r->db->stat.name, r->stat.name, gen, id);
	snprintf(r->labelled_gen, sizeof(r->labelled_gen), "%s", gen);
	return 0;
}

/*
 * This node's closed record for r, if it was written for the location r now
 * points at (a url changed and changed back must not make a mark written
 * elsewhere read as one this location lost). 0, or -1 (none usable).
 */
static int read_closed(const struct eng_replica *r, struct wal_pos *at)
{
	return localstate_read_closed(r->db->dir, r->stat.name, r->st ? r->st->location : NULL,
				      r->st ? r->st->description : NULL, at);
}

/*
 * This node's closed record for r names generation gen: *at is where it
 * closed it there, and it has not written into it since (the record goes
 * when it does).
 */
static bool closed_here(const struct eng_replica *r, const char *gen, struct wal_pos *at)
{
	return read_closed(r, at) == 0 &&
	       !strcmp(at->generation, gen);
}

/*
 * Litestream replicated this very database into generation g after this
 * node's last clean stop (a switch back to Litestream and then to litevisor
 * again): its state directory names g, and the replica holds no more of g
 * than that state says this file has. Then g continues this file, not
 * another node's history. With meta-path set, that directory is litevisor's
 * own: Litestream may have gone on in the generation litevisor closed. (A
 * state litevisor wrote itself names a generation on the replica only if
 * this node wrote it: a restore moves the closed record aside with the old
 * state.) 1 yes, 0 no, or a negative st_status (the end of g could not be
 * read). The state is Litestream's as it stood when the engine opened it.
 */
static int litestream_wrote_here(struct eng_replica *r, const struct cat_generation *g,
				 const struct st_call *call, struct st_error *err)
{
	struct eng_db *d = r->db;
	struct wal_pos local, end;
	/* as the monitor found it before writing there (monitor.c, capture_litestream_state) */
	pthread_mutex_lock(&d->mu);
	bool known = d->ls_captured && d->ls_rc == 0;
	local = d->ls_pos;
	pthread_mutex_unlock(&d->mu);
	if (!known || strcmp(local.generation, g->id) != 0)
		return 0;
	int rc = catalog_end_position(r->st, g, &end, call, err);
	if (rc == ST_NOT_FOUND)
		return 1; /* nothing of it there yet */
	if (rc < 0 && err->foreign_form)
		return 0; /* other age: settings wrote it: cannot tell, so not proven ours */
	if (rc < 0)
		return rc;
	return !wal_pos_past(&end, &local);
}

/* The time of g's closed mark at at, or 0 if it has none there. */
static int64_t mark_time(const struct cat_generation *g, const struct wal_pos *at)
{
	for (size_t i = 0; i < g->nclosed; i++)
		if (g->closed[i].index == at->index && g->closed[i].offset == at->offset)
			return g->closed[i].mtime_ns;
	return 0;
}

/*
 * Does g on r, ending at end, hold data past *at? As wal_pos_past, and also
 * when it ends at (at's next index, 0) having more of at's index than *at:
 * another node went on in that index (a generation that ended on its
 * snapshot, continued at the snapshot's own index), then moved to the next
 * one (QA81 D2). 1, 0, or a negative st_status.
 */
static int past_mark(struct eng_replica *r, const struct cat_generation *g,
		     const struct wal_pos *end, const struct wal_pos *at,
		     const struct st_call *call, struct st_error *err)
{
	if (wal_pos_past(end, at))
		return 1;
	if (at->index == UINT32_MAX || end->index != at->index + 1 || end->offset != 0)
		return 0;
	uint32_t e;
	int rc = catalog_index_end(r->st, g, at->index, &e, call, err);
	/*
	 * Its segments gone (another node's retention, past its snapshot at the
	 * next index): what was written there cannot be measured. With this
	 * node's mark gone too, another node reopened the generation and may
	 * have: not proven nothing (QA82 D5).
	 */
	if (rc == ST_NOT_FOUND)
		return !mark_time(g, at);
	return rc < 0 ? rc : e > at->offset;
}

/*
 * g, listed, is the generation the database left for one of its own, its
 * file standing at *prev there (its "previous" record; how: "it left it for
 * a new one", or for the "aside" record "a restore moved it aside"). Does r
 * hold g past *prev? Then another node went on in it (nothing of this
 * node's went there past its file's end). 1 (why set), 0, or a negative
 * st_status.
 */
static int went_on_from(struct eng_replica *r, const struct cat_generation *g,
			const struct wal_pos *prev, const char *how, char *why, size_t len,
			const struct st_call *call, struct st_error *err)
{
	struct wal_pos end;
	int rc = catalog_end_position(r->st, g, &end, call, err);
	if (rc == ST_NOT_FOUND || (rc < 0 && err->foreign_form))
		return 0;
	if (rc < 0)
		return rc;
	if (!wal_pos_past(&end, prev))
		return 0;
	snprintf(why, len, "this database's file stood at %08x/%08x of generation %s when %s, "
		 "and the replica holds that generation up to %08x/%08x: another node went on in "
		 "it", prev->index, prev->offset, prev->generation, how, end.index, end.offset);
	return 1;
}

static int left_went_on(struct eng_replica *r, const struct cat_generation *g,
			const struct wal_pos *prev, char *why, size_t len,
			const struct st_call *call, struct st_error *err)
{
	return went_on_from(r, g, prev, "it left it for a new one", why, len, call, err);
}

/*
 * Is g a generation this node's file descends from by a record other than
 * "previous", which the callers weigh themselves: its "aside" record (a
 * restore moved its file aside from g) or an "earlier" one (it left g
 * before the generation "previous" names, QA101 D2, or a restore ranked g
 * below the one it restored, QA103 D1; localstate.h)? 1: this
 * node's own past, ending where the file stood there: no other node's
 * writing, whatever its times; 2 (why set): r holds it past there and it
 * was closed there: another node went on in it; 0: none of those, or left
 * open and gone on (its times tell, as for any other); or a negative
 * st_status.
 */
static int recorded_past(struct eng_replica *r, const struct cat_generation *g, char *why,
			 size_t len, const struct st_call *call, struct st_error *err)
{
	struct wal_pos at[1 + LOCALSTATE_EARLIER_MAX];
	bool open[1 + LOCALSTATE_EARLIER_MAX] = { false };
	size_t asides = localstate_read_aside(r->db->dir, &at[0], &open[0]) == 0 ? 1 : 0;
	size_t n = asides + localstate_read_earlier(r->db->dir, &at[asides], &open[asides],
						    LOCALSTATE_EARLIER_MAX);
	for (size_t k = 0; k < n; k++) {
		if (strcmp(at[k].generation, g->id) != 0)
			continue;
		int past = went_on_from(r, g, &at[k], k < asides ? "a restore moved it aside" :
				       "it was left, or ranked older by a restore (its earlier "
				       "records)", why, len, call, err);
		if (past < 0)
			return past;
		return !past ? 1 : open[k] ? 0 : 2;
	}
	return 0;
}

/*
 * Without a closed record that applies here (the replica respelled, or moved
 * to another path of the same place): the database left generation
 * prev->generation, its file standing at *prev there (its "previous"
 * record), for one of its own, as when its app wrote while nothing watched.
 * Does r hold that generation past *prev? Then another node went on in it
 * (nothing of this node's went there past its file's end). 1 (why set), 0,
 * or a negative st_status.
 */
static int went_on_past(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
			const struct wal_pos *prev, char *why, size_t len,
			const struct st_call *call, struct st_error *err)
{
	bool listed = false;
	for (size_t i = 0; i < n && !listed; i++)
		listed = !strcmp(ids[i], prev->generation);
	if (!listed)
		return 0;
	struct cat_generation g = { 0 };
	int rc = catalog_load(r->st, prev->generation, &g, call, err);
	if (rc < 0)
		return rc;
	rc = left_went_on(r, &g, prev, why, len, call, err);
	catalog_generation_release(&g);
	return rc;
}

/*
 * Every one of the n generations ids[] of r, listed (catalog_load_many), and
 * *own: the one named base, or NULL. Returns the array (release each, then
 * free it), or NULL with *rc a negative st_status (err set).
 */
static struct cat_generation *load_all(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1],
				       size_t n, const char *base,
				       const struct cat_generation **own, int *rc,
				       const struct st_call *call, struct st_error *err)
{
	struct cat_generation *gens = calloc(n, sizeof(*gens));
	*own = NULL;
	if (!gens) {
		st_error_set(err, ST_PERMANENT, 0, "out of memory");
		*rc = ST_PERMANENT;
		return NULL;
	}
	*rc = catalog_load_many(r->st, ids, n, gens, CATALOG_MAX_PARALLEL, call, err);
	if (*rc < 0) {
		free(gens);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		if (!strcmp(gens[i].id, base))
			*own = &gens[i];
	return gens;
}

/*
 * Without a closed record (this node was killed, or never stopped cleanly
 * here): has another node gone on in a generation of its own since this node
 * last wrote generation base? Yes when another generation holds an object
 * newer than base's newest (one server, one clock; the same whole second
 * counts, catalog_written_after), unless it is current
 * (this node's own, when it left base for it), left (one this node left,
 * ending where its file stood there: its past, whatever the times; "" for
 * none) or Litestream wrote it here from this file. A node that restored
 * base after this node's kill started a new generation (base was not
 * closed), which base continued, or a new generation from this older file,
 * would hide from every restore (QA81 D1).
 * restored: base is the generation this file was restored from, to its end
 * (the restored marker): the restore took the newest there was, so one
 * written later is another node's since (QA86 D1); its ties were weighed
 * then, so a later object only counts, not one in the same whole second.
 * restored_at: where the restore left the file in base (a restore's
 * "previous" record), or NULL: a replica holding less of base than that
 * (the restore took it from another) had its objects written where its
 * clock did not see; it cannot tell what came after the restore, and says
 * nothing (QA104 D6: a fresh node refused at every start on the replica
 * whose copy was cut short).
 * 1 (why set), 0, or a negative st_status.
 */
static int newer_elsewhere(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
			   const char *base, const char *current, const char *left, bool restored,
			   const struct wal_pos *restored_at, char *why, size_t len,
			   const struct st_call *call, struct st_error *err)
{
	bool listed = false;
	for (size_t i = 0; i < n && !listed; i++)
		listed = !strcmp(ids[i], base);
	if (!listed || n < 2)
		return 0;
	const struct cat_generation *own;
	int rc, found = 0;
	struct cat_generation *gens = load_all(r, ids, n, base, &own, &rc, call, err);
	if (!gens)
		return rc;
	if (own && restored_at) {
		struct wal_pos end;
		int e = catalog_end_position(r->st, own, &end, call, err);
		if (e == 0 && wal_pos_cmp(&end, restored_at) < 0) {
			log_info("replica", "this replica holds less of the restored generation than was "
				 "restored (from another replica): its times cannot tell what came after "
				 "the restore", "db=%s replica=%s generation=%s end=%08x/%08x "
				 "restored=%08x/%08x", r->db->stat.name, r->stat.name, base, end.index,
				 end.offset, restored_at->index, restored_at->offset);
			own = NULL;
		} else if (e < 0 && e != ST_NOT_FOUND && !err->foreign_form) {
			rc = e;
		}
	}
	for (size_t i = 0; own && i < n && rc == 0 && !found; i++) {
		bool after = restored ? gens[i].max_ns > own->max_ns
				      : catalog_written_after(&gens[i], own->max_ns);
		if (&gens[i] == own || !after || !strcmp(gens[i].id, current) ||
		    !strcmp(gens[i].id, left))
			continue;
		int aside = recorded_past(r, &gens[i], why, len, call, err);
		if (aside) {
			rc = aside < 0 ? aside : 0;
			found = aside == 2;
			continue;
		}
		int here = litestream_wrote_here(r, &gens[i], call, err);
		if (here < 0) {
			rc = here;
		} else if (!here && restored) {
			snprintf(why, len, "this database was restored from generation %s, and "
				 "generation %s was written after it: another node went on since the "
				 "restore", base, gens[i].id);
			found = 1;
		} else if (!here) {
			snprintf(why, len, "generation %s, where this database last stood (written or "
				 "restored here), has no clean stop of this node's since, and generation "
				 "%s was written after it: another node went on", base, gens[i].id);
			found = 1;
		}
	}
	for (size_t i = 0; i < n; i++)
		catalog_generation_release(&gens[i]);
	free(gens);
	return rc < 0 ? rc : found;
}

/*
 * Does g on r hold more of index than the `had` bytes this node's file held
 * of it when it went on to the next index (its index record)? 1 (why set),
 * 0 (no, or its segments are gone), or a negative st_status.
 */
static int index_grew(struct eng_replica *r, const struct cat_generation *g, uint32_t index,
		      int64_t had, char *why, size_t len, const struct st_call *call,
		      struct st_error *err)
{
	uint32_t e;
	int rc = catalog_index_end(r->st, g, index, &e, call, err);
	if (rc == ST_NOT_FOUND)
		return 0;
	if (rc < 0)
		return rc;
	if ((int64_t)e <= had)
		return 0;
	snprintf(why, len, "it holds index %08x of generation %s up to offset %08x, and this "
		 "node's file had %lld bytes of it when it went on to the next index: another "
		 "node wrote into it since", index, g->id, e, (long long)had);
	return 1;
}

/*
 * This node closed g at *at, the start of an index it never wrote to (a
 * restore's, an idle run's), and its mark is gone: another node reopened g.
 * Its file stood where the index before ended, which its "previous" record
 * says when the database has left g since (its app wrote while nothing
 * watched). g on r ending past that, in that index, is the other node's
 * writing: a new generation from this file would hide it from every
 * restore (QA84 N1). 1 (why set), 0, or a negative st_status.
 */
static int past_previous(struct eng_replica *r, const struct cat_generation *g,
			 const struct wal_pos *end, const struct wal_pos *at, char *why, size_t len,
			 const struct st_call *call, struct st_error *err)
{
	struct wal_pos prev;
	if (localstate_read_previous(r->db->dir, &prev, NULL) < 0 ||
	    strcmp(prev.generation, at->generation) != 0 || prev.index + 1 != at->index ||
	    end->index != prev.index || end->offset <= prev.offset)
		return 0;
	int ls = litestream_wrote_here(r, g, call, err);
	if (ls != 0)
		return ls < 0 ? ls : 0;
	snprintf(why, len, "this node closed generation %s at %08x/%08x, where its file stood at "
		 "%08x/%08x, and the replica holds that index up to %08x/%08x: another node "
		 "continued it since", at->generation, at->index, at->offset, prev.index,
		 prev.offset, end->index, end->offset);
	return 1;
}

/*
 * This node shipped all of its database to r at its last clean stop and
 * closed generation at->generation there at *at (its closed record). Has
 * another node written to r since? 1 (why set) when that generation now
 * ends past *at; when another generation holds an object newer than that
 * closed mark (the other node went on in a generation of its own: one
 * server, one clock; the same whole second counts, catalog_written_after);
 * or when it is gone while others remain (only another
 * node's retention deletes a generation it did not write last). 0, or a
 * negative st_status. Whatever generation the database is in now: after the
 * stop its files may have changed and the monitor started a new one, built
 * on the older data all the same.
 */
static int continued_since(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
			   const struct wal_pos *at, char *why, size_t len, const struct st_call *call,
			   struct st_error *err)
{
	if (!n)
		return 0;
	const struct cat_generation *own;
	int rc, found = 0;
	struct cat_generation *gens = load_all(r, ids, n, at->generation, &own, &rc, call, err);
	if (!gens)
		return rc;
	if (!own) {
		/*
		 * Deleted by a retention: another node's, unless every generation
		 * left is Litestream's, written here from this database (its
		 * retention deleted the one litevisor closed). Each on its own: one
		 * that is not proven ours may be another node's.
		 */
		int ours = 1;
		for (size_t i = 0; i < n && ours > 0; i++)
			ours = litestream_wrote_here(r, &gens[i], call, err);
		if (ours < 0) {
			rc = ours;
		} else if (ours) {
			log_info("replica", "the generation this node closed is gone, and what the "
				 "replica holds is Litestream's, from this database: not another node's",
				 "db=%s replica=%s closed=%s", r->db->stat.name, r->stat.name,
				 at->generation);
		} else {
			snprintf(why, len, "this node closed generation %s at its last clean stop, and "
				 "the replica no longer holds it but holds %zu other generation(s): "
				 "another node went on, and its retention deleted it", at->generation, n);
			found = 1;
		}
	} else {
		struct wal_pos end;
		int64_t closed_ns = mark_time(own, at);
		rc = catalog_end_position(r->st, own, &end, call, err);
		if (rc == ST_NOT_FOUND) {
			rc = 0;
		} else if (rc < 0 && err->foreign_form) {
			/*
			 * Written with other age: settings than r has now (init_position
			 * starts a new generation for that): its end cannot be read, so
			 * ask the listing. A node that went on in it removed the closed
			 * mark (reopen_generation) and wrote objects after it.
			 */
			rc = 0;
			if (!closed_ns || own->max_ns > closed_ns) {
				snprintf(why, len, "this node closed generation %s at %08x/%08x at its "
					 "last clean stop, and the replica's listing shows it written "
					 "since (%s): another node continued it", at->generation,
					 at->index, at->offset, closed_ns ? "objects newer than the "
					 "closed mark" : "the closed mark is gone");
				found = 1;
			}
		} else if (rc == 0 && !closed_ns && at->offset == 0 && at->index > 0 &&
			   (rc = past_previous(r, own, &end, at, why, len, call, err)) != 0) {
			found = rc > 0;
			rc = rc > 0 ? 0 : rc;
		} else if (rc == 0 && (rc = past_mark(r, own, &end, at, call, err)) > 0) {
			rc = 0;
			/* Litestream sharing the meta-path went on in it, from this file */
			int ls = litestream_wrote_here(r, own, call, err);
			if (ls > 0) {
				log_info("replica", "generation continued after this node's closed mark "
					 "by Litestream, from this database: not another node's",
					 "db=%s replica=%s generation=%s", r->db->stat.name,
					 r->stat.name, own->id);
			} else if (ls < 0) {
				rc = ls;
			} else {
				snprintf(why, len, "this node closed generation %s at %08x/%08x at its "
					 "last clean stop, and the replica holds it up to %08x/%08x: "
					 "another node continued it since", at->generation, at->index,
					 at->offset, end.index, end.offset);
				found = 1;
			}
		}
		/* the generation this node left for the one it closed: its own */
		struct wal_pos prev;
		bool open = false;
		bool left = localstate_read_previous(r->db->dir, &prev, &open) == 0 &&
			    strcmp(prev.generation, at->generation) != 0;
		for (size_t i = 0; i < n && rc == 0 && !found && closed_ns; i++) {
			if (&gens[i] == own)
				continue;
			if (left && !strcmp(gens[i].id, prev.generation)) {
				/*
				 * Written before this node's mark, whatever the times
				 * say (its objects may share the mark's whole second,
				 * QA85 D1): another node's only past where the file
				 * stood there. rs_replica_newer (restore_existing.c) reads it so.
				 */
				int past = left_went_on(r, &gens[i], &prev, why, len, call, err);
				if (past < 0)
					rc = past;
				if (past <= 0 || !open) {
					found = past > 0;
					continue;
				}
				/*
				 * Left open at a restore and gone on past there: its
				 * node may have written on beside this one
				 * (localstate.h): the times tell, as for any other.
				 */
			}
			/* rs_replica_newer (restore_existing.c) reads "after" by the same rule */
			if (!catalog_written_after(&gens[i], closed_ns))
				continue;
			int aside = recorded_past(r, &gens[i], why, len, call, err);
			if (aside) {
				rc = aside < 0 ? aside : 0;
				found = aside == 2;
				continue;
			}
			int here = litestream_wrote_here(r, &gens[i], call, err);
			if (here < 0) {
				rc = here;
			} else if (here) {
				log_info("replica", "generation written after this node's closed mark "
					 "was Litestream's, from this database: not another node's",
					 "db=%s replica=%s generation=%s", r->db->stat.name,
					 r->stat.name, gens[i].id);
			} else {
				snprintf(why, len, "this node closed generation %s at its last clean "
					 "stop, and generation %s was written after its closed mark: "
					 "another node went on", at->generation, gens[i].id);
				found = 1;
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		catalog_generation_release(&gens[i]);
	free(gens);
	return rc < 0 ? rc : found;
}

/*
 * Remove the closed marks of g from r before writing into g again: from now
 * on this node writes there, and another node restoring g must not take it
 * for finished. Returns 0 or a negative st_status.
 */
static int reopen_generation(struct eng_replica *r, const struct cat_generation *g,
			     const struct st_call *call, struct st_error *err)
{
	char keys[8][LAYOUT_KEY_MAX];
	const char *ptrs[8];
	size_t n = 0;

	for (size_t i = 0; i < g->nclosed; i++) {
		ptrs[n] = layout_closed_key(keys[n], g->id, g->closed[i].index, g->closed[i].offset);
		if (++n == 8 || i + 1 == g->nclosed) {
			int rc = storage_delete(r->st, ptrs, n, call, err);
			if (rc < 0 && rc != ST_NOT_FOUND)
				return rc;
			n = 0;
		}
	}
	return 0;
}

void replica_note_error(struct eng_replica *r, const char *what, const char *msg)
{
	struct eng_db *d = r->db;
	int64_t now = clock_wall_ns();
	log_warn("replica", what, "db=%s replica=%s err=\"%s\"", d->stat.name, r->stat.name, msg);
	pthread_mutex_lock(&d->mu);
	r->stat.sync_errors_total++;
	r->stat.last_error_ns = now;
	r->failed_here = true;
	bool first = !r->stat.failing_since_ns;
	if (first) {
		r->stat.failing_since_ns = now;
		r->stat.failing_since_mono_ns = clock_mono_ns();
	}
	snprintf(r->stat.last_error, sizeof(r->stat.last_error), "%s: %s", what, msg);
	pthread_mutex_unlock(&d->mu);
	failrec_note(r, first);
}

/* Compress plain into one LZ4 frame stored at key. Returns 0 or a negative st_status. */
int replica_put_lz4(struct eng_replica *r, const char *key, const struct st_source *plain,
		    enum lz4_blocks blocks, const struct st_call *call, uint64_t *plain_bytes,
		    struct st_error *err)
{
	struct lz4_enc enc;
	struct st_source src;
	if (lz4_enc_init(&enc, &src, plain, blocks) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "out of memory");
		return ST_PERMANENT;
	}
	int rc = storage_put(r->st, key, &src, call, err);
	*plain_bytes = enc.plain_bytes;
	lz4_enc_release(&enc);
	return rc;
}

/*
 * How long the replicas wait for each other's first look (every replica's
 * under restore.existing newest-wins; else those holding a closed record or
 * named by the restored marker). As long as a restore's probe gives
 * a replica to answer (its connect timeout, a listing or two): one that takes longer is slow or not
 * answering (a blackholed server retries its listing for half a minute),
 * and holding every healthy replica for it lost the commits of a run
 * stopped meanwhile (QA22). Its look goes on, and still stops the
 * database if it finds it older.
 */
#define REPLICA_OLDER_WAIT_MS 3000

void replica_count_closed_records(struct eng_db *d)
{
	struct wal_pos at;
	struct restored_marker m;
	/* a replica the restored marker names looks for a newer generation too (QA87 F3) */
	bool marker = d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS &&
		      localstate_read_restored(d->dir, &m) == 0;
	/*
	 * Any replica may find the database older (its previous record, a
	 * generation written after its last object: newer_elsewhere), not only
	 * those its records name: while one has not looked, a new generation
	 * written to another hid the newer data the refusal protects, and won
	 * the next restore (QA104 D7). Not at a first start (no generation, no
	 * previous record in the state): a new generation, listed nowhere, is
	 * older than nothing, and a replica down then held the others 3 s.
	 */
	bool newest = d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS;
	/* with no history in the state (a first start), a new generation: nothing to refuse */
	char gen[LAYOUT_GEN_LEN + 1];
	bool history = localstate_read_generation(d->dir, gen) == 0 ||
		       localstate_read_previous(d->dir, &at, NULL) == 0;
	d->older_pending = 0;
	for (size_t i = 0; i < d->nreplicas; i++) {
		struct eng_replica *r = &d->replicas[i];
		bool closed = r->st && read_closed(r, &at) == 0;
		r->older_check = r->st && (closed || (newest && history));
		if (r->st && !closed && errno == EXDEV)
			log_info("replica", "the closed record of this replica was written for "
				 "another location: not used to tell whether another node went on",
				 "db=%s replica=%s location=\"%s\"", d->stat.name, r->stat.name,
				 r->st->description ? r->st->description : "");
		for (size_t k = 0; marker && r->st && k < m.nreplicas; k++)
			if (!strcmp(m.replicas[k], r->stat.name))
				r->older_check = true;
		if (r->older_check)
			d->older_pending++;
	}
	d->older_deadline_mono = INT64_MAX; /* from when the replicas may look */
	d->older_clock_started = false;
}

void replica_older_clock_start(struct eng_db *d)
{
	if (d->older_clock_started)
		return;
	d->older_clock_started = true;
	d->older_deadline_mono = clock_mono_ns() + REPLICA_OLDER_WAIT_MS * NS_PER_MS;
}

/* r has looked at its replica once (whatever it found): one fewer to wait for. */
static void older_checked(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	if (r->older_check) {
		r->older_check = false;
		if (d->older_pending > 0 && --d->older_pending == 0)
			pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->mu);
}

/* Under mu: the names of the replicas that have not looked yet, comma-separated. */
static void pending_names(const struct eng_db *d, char *names, size_t len)
{
	size_t used = 0;
	names[0] = '\0';
	for (size_t i = 0; i < d->nreplicas && used < len; i++)
		if (d->replicas[i].older_check)
			used += (size_t)snprintf(names + used, len - used, "%s%s", used ? "," : "",
						 d->replicas[i].stat.name);
}

/*
 * Under mu: must r wait for another replica's first look before writing?
 * Never in a final flush: the run's commits would stay on this disk only
 * (a database found older has older_req set, and its flush ships nothing).
 */
static bool older_gate(struct eng_replica *r, bool flush)
{
	struct eng_db *d = r->db;
	if (d->older_req)
		return true;
	if (d->older_pending == 0 || flush)
		return false;
	if (clock_mono_ns() >= d->older_deadline_mono) {
		if (!d->older_late_logged) {
			char names[512];
			pending_names(d, names, sizeof(names));
			d->older_late_logged = true;
			log_warn("replica", "left-behind check: a replica has not looked at its "
				 "data yet; the others replicate without its look",
				 "db=%s waited_ms=%d pending=%zu replicas=\"%s\"", d->stat.name,
				 REPLICA_OLDER_WAIT_MS, d->older_pending, names);
		}
		return false;
	}
	if (!d->older_wait_logged) {
		d->older_wait_logged = true;
		log_info("replica", "replicas wait for the left-behind check: each replica looks "
			 "at its data first",
			 "db=%s pending=%zu max_ms=%d", d->stat.name, d->older_pending,
			 REPLICA_OLDER_WAIT_MS);
	}
	return true;
}

/*
 * The database is older than what the replica holds of its generation (this
 * node shipped all of it at its clean stop, and another node continued the
 * generation since) and restore.existing is newest-wins: replicating it
 * would start a new generation that wins every later restore. The database
 * is not replicated by this process any more (monitor_request_stop_older):
 * it must be restored first, or the policy say keep-local. record: also for
 * the later starts (localstate_write_refused).
 */
static void refuse_older_as(struct eng_replica *r, const char *why, bool record)
{
	log_error("replica", "this database is older than the replica's data: another node "
		  "continued its generation since this node last wrote it. Not replicating it: a "
		  "new generation from it would hide the newer data from every restore. Restore "
		  "it: start it under `litevisor run`, whose restore step moves it aside and "
		  "restores, or stop the app, move the database and its -wal/-shm aside and run "
		  "`litevisor restore` (it never overwrites a database); or set "
		  "restore.existing: keep-local to start a new generation from it",
		  "db=%s replica=%s why=\"%s\"",
		  r->db->stat.name, r->stat.name, why);
	replica_note_error(r, "database older than the replica", why);
	/*
	 * For the next starts too: by then the state may have moved on, the file
	 * has not. Written by the first replica to refuse, under id_mu as the
	 * clearing in init_position is: two refusing at once raced on one temp
	 * file, and a clearing one could delete what a refusing one had just
	 * written (QA87 F6).
	 */
	struct eng_db *d = r->db;
	uid_t uid;
	gid_t gid;
	localstate_owner(d->cfg, &uid, &gid);
	pthread_mutex_lock(&d->id_mu);
	pthread_mutex_lock(&d->mu);
	bool first = !d->older_req;
	pthread_mutex_unlock(&d->mu);
	if (record && first && localstate_write_refused(d->dir, d->cfg->path, why, uid, gid) < 0)
		log_warn("replica", "cannot record the refusal locally: a restart may not refuse "
			 "the file again", "db=%s error=\"%s\"", d->stat.name, strerror(errno));
	pthread_mutex_lock(&d->mu);
	r->refused = true; /* once: no more listings, no more of these lines */
	monitor_request_stop_older(d);
	pthread_mutex_unlock(&d->mu);
	pthread_mutex_unlock(&d->id_mu);
}

static void refuse_older(struct eng_replica *r, const char *why)
{
	refuse_older_as(r, why, true);
}

void replica_leave_generation(struct eng_replica *r, const char *gen, const char *why)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	memcpy(r->await_gen, gen, sizeof(r->await_gen));
	r->pos_known = false;
	monitor_request_generation(d, gen, why);
	pthread_mutex_unlock(&d->mu);
	(void)localstate_clear_closed(d->dir, r->stat.name);
}

/*
 * The replica holds generation gen, the database's current one, in another
 * form than r's age: settings write now (encryption turned on or off, or the
 * keys rotated without keeping an identity for the old objects), as err
 * found reading one of its objects. Plain and encrypted objects never mix
 * in one generation (an age: replica refuses plain objects), so instead of
 * writing into gen, ask the monitor for a new generation, as for another
 * node's history: every replica gets a snapshot of it, and gen's objects
 * stay as they are, readable with the settings that wrote them, until
 * retention removes them with the other older generations. Logged once:
 * the replica then waits for the new generation and reads gen no more.
 */
static void form_changed(struct eng_replica *r, const char *gen, const struct st_error *err)
{
	struct eng_db *d = r->db;
	char why[400];
	log_warn("replica", "the replica's age: settings changed since it wrote this generation: "
		 "starting a new generation in the new form (plain and encrypted objects never mix "
		 "in one generation); the old generation stays as it is, readable with the settings "
		 "that wrote it, until retention removes it", "db=%s replica=%s generation=%s "
		 "encrypted=%s found=\"%s\"", d->stat.name, r->stat.name, gen,
		 r->cfg->age.set ? "yes" : "no", err->message);
	snprintf(why, sizeof(why), "replica %.60s: the age: settings changed (%.290s)", r->stat.name,
		 err->message);
	replica_leave_generation(r, gen, why);
}


/*
 * The replica holds generation g past this database's index cur, which ends
 * at cur_size bytes here: is all it holds past it a snapshot at cur + 1 of
 * data this file holds? Yes when g ends at (cur + 1, 0) closed there (the
 * node that went on stopped cleanly, having shipped whatever it wrote:
 * nothing, as no segment lies past cur) and its index cur is this node's own
 * session (lineage) ending no further than this node has of it. That node
 * restored this data and only snapshotted it: a new generation from this
 * file hides nothing (QA75 D2; run's restore step keeps the file for the
 * same reason, restore_existing.c rs_replica_newer). 1 (why set), 0, or a negative
 * st_status.
 */
static int snapshot_of_ours(struct eng_replica *r, const struct cat_generation *g,
			    const struct wal_pos *end, uint32_t cur, uint64_t cur_size, char *why,
			    size_t len, const struct st_call *call, struct st_error *err)
{
	uint32_t at;
	char lw[300];
	if (cur == UINT32_MAX || end->index != cur + 1 || end->offset != 0 ||
	    !catalog_closed_at(g, end))
		return 0;
	int rc = catalog_index_end(r->st, g, cur, &at, call, err);
	if (rc == ST_NOT_FOUND)
		return 0;
	if (rc < 0)
		return rc;
	if (at > cur_size)
		return 0;
	rc = lineage_check(r->st, g, cur, r->db->dir, lw, sizeof(lw), call, err);
	if (rc < 0)
		return rc;
	if (rc != LINEAGE_SAME)
		return 0;
	snprintf(why, len, "the replica's only data past this database is a snapshot at "
		 "%08x/00000000 of generation %s, taken where its index %08x ends (%08x, this "
		 "node has %08llx bytes of it): another node restored this data and only "
		 "snapshotted it", end->index, g->id, cur, at, (unsigned long long)cur_size);
	return 1;
}

/* Where does the replica stand? Sets pos/need_snapshot. Returns 0 or -1 (noted). */
static int init_position(struct eng_replica *r, int64_t *next_snapshot)
{
	struct eng_db *d = r->db;
	char (*ids)[LAYOUT_GEN_LEN + 1] = NULL;
	struct cat_generation g = { 0 };
	struct st_error err = { 0 };
	struct st_call call;
	struct wal_pos pos = { 0 }, end = { 0 };
	char gen[17], why[400];
	bool need = true, in_marker = false;
	int64_t local_has = -1; /* bytes this node has of the replica's end index (-1: unknown) */
	size_t n = 0;
	int rc;

	replica_call_for(r, &call, false);
	pthread_mutex_lock(&d->mu);
	memcpy(gen, d->gen, sizeof(gen));
	uint32_t min_index = d->min_index, cur = d->index;
	uint64_t cur_size = d->size;
	int64_t prev_end = d->prev_end;
	struct restored_marker m = d->marker;
	if (d->have_marker && !strcmp(m.pos.generation, gen))
		for (size_t i = 0; i < m.nreplicas; i++)
			if (!strcmp(m.replicas[i], r->stat.name))
				in_marker = true;
	pthread_mutex_unlock(&d->mu);

	rc = catalog_generations(r->st, &ids, &n, &call, &err);
	if (rc < 0)
		goto fail;
	writers_prime(r, ids, n);
	struct wal_pos closed_at, prev;
	bool prev_open = false, prev_restored = false;
	bool newest_wins = !in_marker && d->eng->cfg &&
			   d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS;
	int old = 0;
	char before[300];
	/* (a replica holding nothing has nothing to hide: it may be written again) */
	if (newest_wins && n > 0 &&
	    localstate_read_refused(d->dir, d->cfg->path, before, sizeof(before)) == 0) {
		/*
		 * Refused at an earlier start and not restored since: the state
		 * may have moved on meanwhile (a new local generation, written
		 * nowhere), which hid the refusal's cause from every check below,
		 * and the older file was replicated at the next start (QA86 D2).
		 */
		snprintf(why, sizeof(why), "refused at an earlier start and not restored since: %s",
			 before);
		refuse_older_as(r, why, false);
		free(ids);
		return -1;
	}
	if (newest_wins && read_closed(r, &closed_at) == 0)
		old = continued_since(r, ids, n, &closed_at, why, sizeof(why), &call, &err);
	else if (newest_wins && localstate_read_previous_by(d->dir, &prev, &prev_open, &prev_restored) == 0 &&
		 strcmp(prev.generation, gen) != 0) {
		/*
		 * The generation this node left, gone on past where its file
		 * stood there: another node's writing. Unless the restore left
		 * it open: its node, if alive, writes on in it beside this one
		 * (replication.md), and only its times tell, below.
		 */
		int past = went_on_past(r, ids, n, &prev, why, sizeof(why), &call, &err);
		/*
		 * Newer than what this node wrote last: its current generation
		 * once the replica holds it (it was killed in it), else the one
		 * it left. The one it left alone made a generation written
		 * beside it, before its own last commits, newer (QA94 D1). The
		 * one it left, ending where its file stood, is its own past
		 * whatever its times (QA96 D1).
		 */
		bool cur_listed = false;
		for (size_t i = 0; i < n && !cur_listed; i++)
			cur_listed = !strcmp(ids[i], gen);
		/*
		 * A restore's record, measured from the generation restored (its
		 * ties weighed by the restore): only a strictly later object is
		 * another node's since (QA99 D1, D2), as after a restored marker.
		 */
		if (past < 0 || (past > 0 && !prev_open))
			old = past;
		else
			old = newer_elsewhere(r, ids, n, cur_listed ? gen : prev.generation, gen,
					      past ? "" : prev.generation,
					      prev_restored && !cur_listed && !past,
					      prev_restored && !cur_listed && !past ? &prev : NULL, why,
					      sizeof(why), &call, &err);
	} else if (newest_wins) {
		old = newer_elsewhere(r, ids, n, gen, gen, "", false, NULL, why, sizeof(why), &call,
				      &err);
	} else if (in_marker && d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS) {
		/* restored to its end: continued there, unless another node went on since */
		old = newer_elsewhere(r, ids, n, gen, "", "", true, NULL, why, sizeof(why), &call,
				      &err);
	}
	if (old < 0) {
		rc = old;
		goto fail;
	}
	if (old) {
		refuse_older(r, why);
		free(ids);
		return -1;
	}
	bool found = false;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ids[i], gen))
			found = true;
	if (found) {
		rc = catalog_load(r->st, gen, &g, &call, &err);
		if (rc < 0)
			goto fail;
		rc = catalog_end_position(r->st, &g, &pos, &call, &err);
		if (rc < 0 && err.foreign_form)
			goto form;
		if (rc < 0 && rc != ST_NOT_FOUND)
			goto fail;
		/*
		 * An end read from a segment proved its form; one from the newest
		 * snapshot alone (nothing written since it, e.g. an idle app) did not,
		 * and what comes next must not go into gen in another form.
		 */
		if (rc == 0 && g.nsnapshots > 0 &&
		    (g.nsegments == 0 || g.segments[g.nsegments - 1].index <
					 g.snapshots[g.nsnapshots - 1].index)) {
			rc = catalog_snapshot_form(r->st, gen, g.snapshots[g.nsnapshots - 1].index,
						   &call, &err);
			if (rc < 0 && err.foreign_form)
				goto form;
			if (rc < 0)
				goto fail;
		}
		end = pos;
		/*
		 * Restored to m.pos, and the replica holds the generation past it:
		 * the other node resumed it since and wrote on; a snapshot of this
		 * older file there would hide that (QA87 F2).
		 */
		if (rc == 0 && in_marker && wal_pos_past(&end, &m.pos)) {
			snprintf(why, sizeof(why), "this database was restored from generation %s at "
				 "%08x/%08x, and the replica holds it up to %08x/%08x: another node "
				 "continued it since the restore", gen, m.pos.index, m.pos.offset,
				 end.index, end.offset);
			catalog_generation_release(&g);
			if (d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS) {
				refuse_older(r, why);
				free(ids);
				return -1;
			}
			log_warn("replica", "replica holds more of the restored generation: starting a "
				 "new generation rather than writing into it (keep-local)", "db=%s "
				 "replica=%s why=\"%s\"", d->stat.name, r->stat.name, why);
			replica_leave_generation(r, gen, why);
			free(ids);
			return 0;
		}
		/*
		 * Objects deleted under this generation (the replica emptied, then
		 * written into again; a hand): a snapshot at this index would sit on
		 * an index whose first segments are gone, restorable by neither tool.
		 */
		if (rc == 0 && !in_marker && !catalog_continuable(&g, why, sizeof(why))) {
			log_warn("replica", "the replica's copy of this generation cannot be restored "
				 "(objects deleted under it?): starting a new generation", "db=%s "
				 "replica=%s why=\"%s\"", d->stat.name, r->stat.name, why);
			replica_leave_generation(r, gen, why);
			free(ids);
			catalog_generation_release(&g);
			return 0;
		}
		if (rc == 0 && g.nsnapshots > 0) {
			const struct cat_snapshot *last = &g.snapshots[g.nsnapshots - 1];
			int64_t age_ms = (clock_wall_ns() - last->mtime_ns) / NS_PER_MS;
			/* a server clock ahead of ours must not put the next one off past an
			 * interval (QA48 D6), nor one behind bring it before now */
			if (age_ms < 0)
				age_ms = 0;
			if (age_ms > r->cfg->snapshot_interval_ms)
				age_ms = r->cfg->snapshot_interval_ms;
			if (r->cfg->snapshot_interval_ms > 0)
				*next_snapshot = clock_mono_ns() +
						 (r->cfg->snapshot_interval_ms - age_ms) * NS_PER_MS;
			if (in_marker) {
				if (pos.index == m.pos.index && pos.offset == m.pos.offset) {
					pos.index = localstate_next_index(&m.pos);
					pos.offset = 0;
					need = false;
				}
			} else if (pos.index + 1 == cur && prev_end >= 0 &&
				   pos.offset == (uint64_t)prev_end) {
				/* it ends where our index cur-1 ended (files gone or never made) */
				pos.index = cur;
				pos.offset = 0;
				need = false;
			} else if (pos.index < cur) {
				/* the local shadow must still hold everything after pos */
				int64_t sz = shadow_size(d, gen, pos.index);
				if (pos.index >= min_index && sz >= 0)
					local_has = sz;
				else if (pos.index + 1 == cur && prev_end >= 0)
					/*
					 * Its shadow gone (a restore's index): the index record
					 * says where it ended. Bytes past that are another
					 * node's, which went on in that index after this node
					 * had left it; a snapshot of this file at cur would
					 * hide them from every restore (QA81 D4).
					 */
					local_has = prev_end;
				need = !(pos.index >= min_index && sz >= 0 && (uint64_t)sz >= pos.offset);
			} else if (pos.index == cur) {
				local_has = (int64_t)cur_size;
				need = pos.offset > cur_size;
			}
		}
		rc = 0;
		/* positions compare within a generation, but are they our history? */
		if (!in_marker && (g.nsnapshots > 0 || g.nsegments > 0)) {
			int lin = LINEAGE_UNKNOWN;
			struct wal_pos at;
			bool mine = closed_here(r, gen, &at), ahead = false;
			if (mine && (wal_pos_past(&end, &at) || !catalog_closed_at(&g, &end))) {
				/*
				 * Litestream sharing the meta-path went on in it from this
				 * file (continued_since said so): this file's history, whose
				 * position the checks below compare as any other.
				 */
				int ls = litestream_wrote_here(r, &g, &call, &err);
				if (ls < 0) {
					rc = ls;
					goto fail;
				}
				mine = ls == 0;
			}
			if (mine && wal_pos_past(&end, &at)) {
				/* continued elsewhere since our clean stop (keep-local: see above) */
				snprintf(why, sizeof(why), "this node closed generation %s at %08x/%08x and "
					 "the replica holds it up to %08x/%08x: another node continued it",
					 gen, at.index, at.offset, end.index, end.offset);
				lin = LINEAGE_DIVERGED;
			} else if (mine && !catalog_closed_at(&g, &end)) {
				/* reopened elsewhere: that node may be writing it now, or died before */
				snprintf(why, sizeof(why), "this node closed generation %s at %08x/%08x, "
					 "and the replica's end %08x/%08x is not closed: another node took "
					 "the generation over", gen, at.index, at.offset, end.index,
					 end.offset);
				lin = LINEAGE_DIVERGED;
			} else if (pos.index > cur) {
				snprintf(why, sizeof(why), "it holds index %08x of generation %s, "
					 "past the local %08x: the generation was continued elsewhere",
					 pos.index, gen, cur);
				lin = LINEAGE_DIVERGED;
				ahead = true;
			} else if (pos.index == cur && cur > 0 && prev_end >= 0 &&
				   (lin = index_grew(r, &g, cur - 1, prev_end, why, sizeof(why),
						     &call, &err)) != 0) {
				/*
				 * It ends where this node is, but holds more of the index
				 * before than this node's file had when it went on from
				 * it: another node went on in that index behind this
				 * node's mark, and a snapshot of its took the end to the
				 * very position of that mark (QA86 D5).
				 */
				if (lin > 0) {
					lin = LINEAGE_DIVERGED;
					ahead = true;
				}
			} else if (local_has >= 0 && pos.offset > (uint64_t)local_has) {
				/*
				 * Bytes of an index this node never had cannot be its own
				 * (what it ships comes from that shadow file, which keeps
				 * them): another node wrote them, even when no closed record
				 * of ours applies here (the replica renamed or respelled).
				 * Written into, the generation would hold two histories.
				 */
				snprintf(why, sizeof(why), "it holds index %08x of generation %s up to "
					 "offset %08x, and this node has %lld bytes of that index: the "
					 "generation was continued elsewhere", pos.index, gen, pos.offset,
					 (long long)local_has);
				lin = LINEAGE_DIVERGED;
				ahead = true;
			} else {
				lin = lineage_check(r->st, &g, pos.index, d->dir, why, sizeof(why),
						    &call, &err);
			}
			/*
			 * The replica holds more of the generation than this file ever
			 * had, and the file is as this node left it (else the monitor
			 * would be in a generation of its own by now): another node went
			 * on from it, as the closed record tells when one applies (not
			 * when the replica was renamed or its location respelled). Under
			 * newest-wins a new generation from the older file would hide
			 * that node's data from every restore (QA18), unless all the
			 * replica holds past it is a snapshot of this very data.
			 */
			bool of_ours = false;
			if (ahead && d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS) {
				int ours = snapshot_of_ours(r, &g, &end, cur, cur_size, why, sizeof(why),
							    &call, &err);
				if (ours == 0) {
					refuse_older(r, why);
					free(ids);
					catalog_generation_release(&g);
					return -1;
				}
				of_ours = ours > 0;
				if (ours < 0)
					lin = ours;
				/*
				 * Not before every other replica holding this node's closed
				 * mark has looked: one that cannot be read yet may show the
				 * other node went on there, and a new generation would hide
				 * that from every restore (QA80 D1). The deadline that lets
				 * a continuation go on without a silent replica's look does
				 * not apply here: this replica waits, failing, until then.
				 */
				/*
				 * This look succeeded: it counts, whatever comes of it. Else
				 * two replicas that both hold the snapshot waited for each
				 * other for good (QA82 D1).
				 */
				older_checked(r);
				pthread_mutex_lock(&d->mu);
				size_t others = d->older_pending;
				char names[512];
				pending_names(d, names, sizeof(names));
				bool stopped = d->older_req;
				if (of_ours && stopped)
					r->refused = true; /* another replica's look stopped it */
				pthread_mutex_unlock(&d->mu);
				if (of_ours && stopped) {
					free(ids);
					catalog_generation_release(&g);
					return -1;
				}
				if (of_ours && others > 0) {
					st_error_set(&err, ST_TRANSIENT, 0, "the replica's snapshot at the "
						     "next index holds this data, but %zu other replica(s) "
						     "have not looked at their data yet "
						     "(%s): no new generation before they have (a replica "
						     "that cannot be read must be fixed or removed from "
						     "the config)", others, names);
					rc = ST_TRANSIENT;
					goto fail;
				}
			}
			if (lin < 0 && err.foreign_form)
				goto form;
			if (lin < 0) {
				rc = lin;
				goto fail;
			}
			if (lin == LINEAGE_DIVERGED) {
				if (of_ours)
					log_info("replica", "the replica's snapshot at the next index holds "
						 "this data: starting a new generation from this database "
						 "(nothing of the other node's is hidden)", "db=%s replica=%s "
						 "why=\"%s\"", d->stat.name, r->stat.name, why);
				else
					log_warn("replica", "replica holds another history of this "
						 "generation: starting a new generation rather than writing "
						 "into it", "db=%s replica=%s why=\"%s\"", d->stat.name,
						 r->stat.name, why);
				replica_leave_generation(r, gen, why);
				free(ids);
				catalog_generation_release(&g);
				return 0;
			}
		}
	}
	if (found && g.nclosed > 0) {
		rc = reopen_generation(r, &g, &call, &err);
		if (rc < 0)
			goto fail;
	}
	/*
	 * The generation this node continues names the database it belongs to
	 * (a restore on another node wrote no local id, or this node's state
	 * predates ids: its label, if any, is ours). One without our label gets
	 * it at this sync (label_current), once the replicas may write.
	 */
	char dbid[LAYOUT_DBID_LEN + 1];
	if (replica_database_id(d, found ? g.database_id : NULL, dbid) < 0) {
		st_error_set(&err, ST_PERMANENT, 0, "no database id");
		rc = ST_PERMANENT;
		goto fail;
	}
	bool labelled = false;
	for (size_t i = 0; found && i < g.nlabels && !labelled; i++)
		labelled = !strcmp(g.labels[i], dbid);
	r->labelled_gen[0] = '\0';
	if (labelled)
		snprintf(r->labelled_gen, sizeof(r->labelled_gen), "%s", gen);
	/* from now on this node writes here: its closed record is history, a refusal too,
	 * unless another replica refused the database meanwhile (refuse_older_as) */
	pthread_mutex_lock(&d->id_mu);
	pthread_mutex_lock(&d->mu);
	bool refused = d->older_req;
	pthread_mutex_unlock(&d->mu);
	if (!refused && localstate_clear_refused(d->dir) < 0)
		log_warn("replica", "cannot remove the local refusal record", "db=%s error=\"%s\"",
			 d->stat.name, strerror(errno));
	pthread_mutex_unlock(&d->id_mu);
	if (localstate_clear_closed(d->dir, r->stat.name) < 0)
		log_warn("replica", "cannot remove the local closed record", "db=%s replica=%s "
			 "error=\"%s\"", d->stat.name, r->stat.name, strerror(errno));
	pthread_mutex_lock(&d->mu);
	if (d->have_marker && d->marker_pending > 0 && --d->marker_pending == 0)
		d->have_marker = false;
	memcpy(pos.generation, gen, sizeof(gen));
	r->snap_known = found && g.nsnapshots > 0;
	if (r->snap_known) {
		memcpy(r->snap_gen, gen, sizeof(gen));
		r->snap_index = g.snapshots[g.nsnapshots - 1].index;
		r->snap_covers.generation[0] = '\0'; /* another process's: unknown */
		/* the one it holds, by the replica's clock: not "never" after a restart */
		if (!r->stat.last_snapshot_ns)
			r->stat.last_snapshot_ns = g.snapshots[g.nsnapshots - 1].mtime_ns;
	}
	r->pos = found ? pos : (struct wal_pos){ 0 };
	/* dropped over the backlog cap while it looked: the WAL since its end is gone (QA113 D1) */
	need = need || r->dropped;
	r->need_snapshot = need;
	r->gap = need && found;
	r->pos_known = true;
	r->segs_in_index = 0;
	pthread_mutex_unlock(&d->mu);
	log_info("replica", need ? "replica needs a snapshot" : "replica continues generation",
		 "db=%s replica=%s generation=%s index=%u offset=%u", d->stat.name, r->stat.name, gen,
		 pos.index, pos.offset);
	free(ids);
	catalog_generation_release(&g);
	return 0;
form:
	form_changed(r, gen, &err);
	free(ids);
	catalog_generation_release(&g);
	return 0;
fail:
	replica_note_error(r, "cannot read replica position", err.message);
	free(ids);
	catalog_generation_release(&g);
	return -1;
}

/*
 * Label the generation r continues if it holds data of it but not our label
 * (written by a litevisor without database ids, or by Litestream): at the
 * first sync, even with nothing else to write. A new generation is labelled
 * by its first snapshot instead. Returns 0 or -1 (noted).
 */
static int label_current(struct eng_replica *r, bool flush)
{
	struct eng_db *d = r->db;
	struct st_error err = { 0 };
	struct st_call call;
	char gen[17];

	pthread_mutex_lock(&d->mu);
	memcpy(gen, r->pos.generation, sizeof(gen));
	bool holds = r->pos_known && gen[0] && !strcmp(gen, d->gen) && r->snap_known &&
		     !strcmp(r->snap_gen, gen);
	pthread_mutex_unlock(&d->mu);
	if (!holds || !strcmp(r->labelled_gen, gen))
		return 0;
	replica_call_for(r, &call, flush);
	if (replica_label(r, gen, &call, &err) < 0) {
		replica_note_error(r, "cannot label the generation", err.message);
		return -1;
	}
	return 0;
}

/* Is (gen, index, from) the key of the segment whose upload last failed? */
static bool is_unsure(const struct eng_replica *r, const char *gen, uint32_t index, uint64_t from)
{
	return r->unsure.gen[0] && !strcmp(r->unsure.gen, gen) && r->unsure.index == index &&
	       r->unsure.from == from;
}

struct head_only {
	uint8_t hdr[WAL_HEADER_SIZE];
	size_t n;
	bool longer; /* refused: more than a header */
};

/* A sink that keeps a WAL header and refuses anything longer. */
static int head_only_write(void *ctx, const void *buf, size_t len)
{
	struct head_only *h = ctx;
	if (len > sizeof(h->hdr) - h->n) {
		h->longer = true;
		return -1;
	}
	memcpy(h->hdr + h->n, buf, len);
	h->n += len;
	return 0;
}

/*
 * Is segment (gen, index, 0) on r the index's placeholder (snapshot.c): a WAL
 * header alone? 1 yes, 0 no, or a negative st_status (err set) when it could
 * not be read: that is no sign of another writer (QA114 O9).
 */
static int holds_placeholder(struct eng_replica *r, const char *gen, uint32_t index,
			     const struct st_call *call, struct st_error *err)
{
	struct head_only h = { .n = 0 };
	struct st_sink sink = { head_only_write, &h };
	struct st_error e = { 0 };
	int rc = catalog_read_segment(r->st, gen, index, 0, &sink, call, &e);
	if (rc < 0 && !h.longer && rc != ST_NOT_FOUND) {
		char key[LAYOUT_KEY_MAX];
		layout_wal_key(key, gen, index, 0);
		st_error_set(err, e.status, e.http_status, "cannot read %s to see whether it is "
			     "the index's placeholder: %s", key, e.message);
		return rc;
	}
	return rc == 0 && h.n == WAL_HEADER_SIZE && wal_header_is_placeholder(h.hdr);
}

/* Upload one segment [from, to) of shadow index. Returns 0 or -1 (noted). */
static int put_segment(struct eng_replica *r, const char *gen, uint32_t index, uint64_t from,
		       uint64_t to, bool flush)
{
	struct eng_db *d = r->db;
	char path[PATH_MAX + 64], key[LAYOUT_KEY_MAX];
	struct st_error err = { 0 };
	struct st_call call;
	struct range_src rs;
	struct st_source plain;
	uint64_t plain_bytes = 0;

	replica_call_for(r, &call, flush);
	localstate_shadow_path(d->dir, gen, index, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		replica_note_error(r, "cannot open shadow WAL", strerror(errno));
		return -1;
	}
	range_src_init(&plain, &rs, fd, from, to);
	layout_wal_key(key, gen, index, (uint32_t)from);
	/* its snapshot went first and labelled it, unless that label's PUT failed */
	int rc = replica_label(r, gen, &call, &err);
	if (rc < 0) {
		close(fd);
		replica_note_error(r, "cannot label the generation", err.message);
		return -1;
	}
	/*
	 * Create-only: a key already there is a segment the replica holds that
	 * r's position did not know of (a listing lagging behind writes when the
	 * position was read, or another process writing it). Written again with
	 * other bounds, it left overlapping segments that Litestream restored to
	 * a malformed database, or without the newest commits (QA105 D1; at an
	 * index's start, QA107 D4). The one key an index's first segment
	 * replaces is its placeholder, looked at first.
	 */
	call.create_only = true;
	rc = replica_put_lz4(r, key, &plain, LZ4_BLOCKS_LINKED, &call, &plain_bytes, &err);
	int ph = rc == ST_EXISTS && from == 0 ? holds_placeholder(r, gen, index, &call, &err) : 0;
	if (ph < 0) {
		close(fd);
		replica_note_error(r, "segment upload failed", err.message);
		return -1;
	}
	if (ph) {
		call.create_only = false;
		if (plain.rewind(plain.ctx) < 0) {
			st_error_set(&err, ST_PERMANENT, 0, "cannot read the shadow WAL again: %s",
				     strerror(errno));
			rc = ST_PERMANENT;
		} else {
			rc = replica_put_lz4(r, key, &plain, LZ4_BLOCKS_LINKED, &call, &plain_bytes,
					     &err);
		}
	}
	close(fd);
	bool was_unsure = is_unsure(r, gen, index, from);
	if (rc == ST_EXISTS) {
		/*
		 * Not a failure of the replica: its position is read again at
		 * once, and the segments go on from where the replica really
		 * ends. Even after an upload of this key that may have landed
		 * (failed before, or sent whole and unanswered): the key may as
		 * well hold another segment with other bounds, and taking it for
		 * ours left the WAL between its end and ours on no object (QA107
		 * D1, D2). Expected then, so not a warning.
		 */
		bool expected = was_unsure || err.maybe_own;
		log_event(expected ? LOG_INFO : LOG_WARN, "replica", expected ?
			  "the replica holds a segment where an upload of this one may have "
			  "landed unanswered: reading its position again, nothing overwritten" :
			  "the replica already holds a segment where its position said it ends (a "
			  "listing that lagged behind, or another process writing it): reading its "
			  "position again, nothing overwritten", "db=%s replica=%s key=%s",
			  d->stat.name, r->stat.name, key);
		if (was_unsure)
			r->unsure.gen[0] = '\0';
		pthread_mutex_lock(&d->mu);
		r->pos_known = false;
		pthread_mutex_unlock(&d->mu);
		return -1;
	}
	if (rc < 0) {
		if (!was_unsure) {
			snprintf(r->unsure.gen, sizeof(r->unsure.gen), "%s", gen);
			r->unsure.index = index;
			r->unsure.from = from;
			r->unsure.to = to;
		}
		replica_note_error(r, "segment upload failed", err.message);
		return -1;
	}
	if (was_unsure)
		r->unsure.gen[0] = '\0';
	pthread_mutex_lock(&d->mu);
	if (!strcmp(r->pos.generation, gen)) {
		r->pos.index = index;
		r->pos.offset = (uint32_t)to;
		replica_lag_caught_up(r);
	}
	r->segs_in_index++;
	/* it answers: catching up, not failing, for the backlog cap (QA114 D4) */
	r->failed_here = false;
	r->stat.wal_bytes_total += plain_bytes;
	r->seg_written_ns = clock_wall_ns();
	memcpy(r->seg_written_gen, gen, sizeof(r->seg_written_gen));
	r->seg_written_index = index;
	r->seg_written_offset = (uint32_t)from;
	if (r->segs_in_index >= ENG_MAX_SEGMENTS_PER_INDEX && index == d->index)
		monitor_request_checkpoint(d);
	pthread_mutex_unlock(&d->mu);
	writers_note_segment(r, gen, index, (uint32_t)from);
	return 0;
}

int replica_ship(struct eng_replica *r, bool flush)
{
	struct eng_db *d = r->db;
	struct wal_pos target;

	snapshot_kept_check(r); /* no use once the database left its index (QA132 D1) */

	/* up to what is committed now; what comes meanwhile is the next sync's */
	pthread_mutex_lock(&d->mu);
	replica_target(d, &target);
	uint64_t target_size = d->size; /* target.offset, unless past max_offset */
	pthread_mutex_unlock(&d->mu);
	for (;;) {
		pthread_mutex_lock(&d->mu);
		struct wal_pos pos = r->pos;
		uint32_t min_index = d->min_index;
		bool stop = d->eng->stop && !flush;
		pthread_mutex_unlock(&d->mu);
		if (stop || strcmp(pos.generation, target.generation) != 0)
			return 0;
		if (wal_pos_cmp(&pos, &target) >= 0)
			return 0;
		uint64_t end;
		if (pos.index < target.index) {
			int64_t sz = shadow_size(d, pos.generation, pos.index);
			/* a finished index always has its file: missing means deleted */
			if (pos.index < min_index || sz < 0 || (uint64_t)sz < pos.offset) {
				log_warn("replica", "local history no longer covers the replica: snapshot",
					 "db=%s replica=%s index=%u offset=%u", d->stat.name,
					 r->stat.name, pos.index, pos.offset);
				pthread_mutex_lock(&d->mu);
				r->need_snapshot = true;
				r->gap = true;
				pthread_mutex_unlock(&d->mu);
				return 0;
			}
			end = (uint64_t)sz;
			if (end <= pos.offset) {
				/* that index is complete here: the next one starts at offset 0 */
				pthread_mutex_lock(&d->mu);
				if (!strcmp(r->pos.generation, pos.generation)) {
					r->pos.index = pos.index + 1;
					r->pos.offset = 0;
					r->segs_in_index = 0;
					replica_lag_caught_up(r);
				}
				pthread_mutex_unlock(&d->mu);
				continue;
			}
		} else {
			end = target_size;
		}
		if (end > d->eng->max_offset)
			return oversize(r, pos.generation, pos.index, end);
		/* a failed upload of this key may still land: the same bytes again, then the rest */
		if (is_unsure(r, pos.generation, pos.index, pos.offset) && end > r->unsure.to)
			end = r->unsure.to;
		if (put_segment(r, pos.generation, pos.index, pos.offset, end, flush) < 0)
			return -1;
	}
}

static void note_ok(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	int64_t now = clock_wall_ns(), mono = clock_mono_ns(), since;
	pthread_mutex_lock(&d->mu);
	r->stat.syncs_total++;
	r->stat.last_sync_ns = now;
	since = r->stat.failing_since_ns ? r->stat.failing_since_mono_ns : 0;
	r->stat.failing_since_ns = r->stat.failing_since_mono_ns = 0;
	r->failed_here = false;
	r->carried = false; /* it holds everything the shadow held, older commits with it */
	pthread_mutex_unlock(&d->mu);
	failrec_clear(r);
	/* the failures were logged one by one: say when they end, and how long it took */
	if (since)
		log_info("replica", "replica recovered", "db=%s replica=%s failing_s=%.1f",
			 d->stat.name, r->stat.name, (double)(mono - since) / NS_PER_SEC);
}

/*
 * Under mu: is the database still at the index of r's newest snapshot?
 * Snapshots are named by their index: one more there would replace that one,
 * and its time with it, so a restore to a time before the new one would find
 * no snapshot (or an older generation's).
 */
static bool at_snap_index(const struct eng_replica *r)
{
	const struct eng_db *d = r->db;
	return r->snap_known && !strcmp(r->snap_gen, d->gen) && r->snap_index == d->index;
}

/*
 * Under mu: a snapshot is wanted while r's newest is at the database's index
 * (at_snap_index), where a new one would replace it. Ask the monitor for a
 * new index and take the snapshot at the first sync past it (snap_wait).
 * The app's next write starts that index after the checkpoint; but when the
 * database holds something that snapshot lacks (or what it reaches is
 * unknown), the monitor starts it itself: an app that wrote and then went
 * quiet would otherwise leave those commits out of every snapshot until its
 * next write, and a replica synced seldom without them for as long. A
 * database with nothing new gets no snapshot: there is nothing to capture.
 */
static void want_new_index(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	struct wal_pos t;
	replica_target(d, &t);
	bool news = strcmp(r->snap_covers.generation, d->gen) != 0 ||
		    wal_pos_cmp(&t, &r->snap_covers) > 0;
	r->snap_wait = true;
	if (news)
		monitor_request_restart(d);
	else
		monitor_request_checkpoint(d);
}

/* Under mu: is there anything to upload? */
static bool behind(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	struct wal_pos t;
	if (!d->ready)
		return false;
	if (r->await_gen[0]) {
		if (strcmp(r->await_gen, d->gen) == 0)
			return false; /* nothing may go into that generation */
		r->await_gen[0] = '\0';
	}
	if (!r->pos_known || r->need_snapshot)
		return true;
	replica_target(d, &t);
	return strcmp(r->pos.generation, t.generation) != 0 || wal_pos_cmp(&r->pos, &t) < 0;
}

/*
 * New WAL, a first position, a new generation, a flush and the stop all
 * signal r->cond (monitor_wake_replicas), so an idle replica sleeps until
 * its next deadline; this bounds the sleep as a safety net.
 */
#define IDLE_WAKE_NS (10 * NS_PER_SEC)

static void wait_until(struct eng_replica *r, int64_t until_ns)
{
	struct timespec ts;
	int64_t now = clock_mono_ns();
	if (until_ns - now > IDLE_WAKE_NS)
		until_ns = now + IDLE_WAKE_NS;
	if (until_ns <= now)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t t = (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec + (until_ns - now);
	ts.tv_sec = t / NS_PER_SEC;
	ts.tv_nsec = t % NS_PER_SEC;
	pthread_cond_timedwait(&r->cond, &r->db->mu, &ts);
}

/*
 * At its tick, a replica with a sync-interval ships everything committed
 * before the tick. The monitor gathers commits for up to a quarter of the
 * interval before it copies them to the shadow WAL, so without this the
 * commits of that last quarter would wait a whole interval more (lag p99
 * 1.18 s at sync-interval 1s). Ask the monitor for a pass that starts now and
 * wait for it, under mu, at most a quarter interval (250 ms): a monitor busy
 * elsewhere delays the tick no more than that, and what it has not copied
 * yet goes at the next tick.
 */
static void copy_before_tick(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	int64_t wait_ms = r->cfg->sync_interval_ms / 4 < 250 ? r->cfg->sync_interval_ms / 4 : 250;
	int64_t end = clock_mono_ns() + wait_ms * NS_PER_MS;
	uint64_t want = d->sync_seq + 2; /* a whole pass that starts after this call */

	if (d->sync_req < want)
		d->sync_req = want;
	watch_wake(&d->watch);
	while (d->sync_seq < want && !d->eng->stop && clock_mono_ns() < end) {
		struct timespec ts = { .tv_sec = end / NS_PER_SEC, .tv_nsec = end % NS_PER_SEC };
		pthread_cond_timedwait(&d->cond, &d->mu, &ts);
	}
}

/*
 * Before the first object of a new generation on an S3 replica: a whole
 * second past r's last object of another generation. S3 keeps whole
 * seconds: both stamped alike, the generation a clean stop closed ranked
 * below the one the app's replacement of the file had left, for litevisor
 * and Litestream alike (QA109 D1). At most a second, once per generation,
 * and never past a final flush's deadline. By any path that writes it: a
 * sync's, the periodic one, retention's (QA114 D1); and whatever made the
 * generation: the writer check finding the replica lost the last one forgot
 * its position, and Litestream then restored the lost one, tied to the
 * second (a flaky test).
 */
static void snapshot_past_the_left_second(struct eng_replica *r, bool flush)
{
	struct eng_db *d = r->db;
	if (r->cfg->type != REPLICA_S3)
		return;
	pthread_mutex_lock(&d->mu);
	/* only before the generation's first object here: once one is, the order is set (QA120 O3) */
	bool has_one = !strcmp(r->seg_written_gen, d->gen) || !strcmp(r->snap_gen, d->gen);
	int64_t last = !has_one && r->seg_written_gen[0] ? r->seg_written_ns : 0;
	if (!has_one && r->snap_gen[0] && r->snap_written_ns > last)
		last = r->snap_written_ns;
	int64_t left_ns = flush ? d->flush_deadline_ns - clock_mono_ns() - NS_PER_SEC : INT64_MAX;
	pthread_mutex_unlock(&d->mu);
	int64_t wait = last + NS_PER_SEC + 20 * NS_PER_MS - clock_wall_ns();
	if (!last || wait <= 0 || wait > NS_PER_SEC + 20 * NS_PER_MS || wait > left_ns)
		return;
	log_debug("replica", "the new generation's first object waits for the next whole second",
		  "db=%s replica=%s wait_ms=%lld", d->stat.name, r->stat.name,
		  (long long)(wait / NS_PER_MS));
	clock_sleep_ms(wait / NS_PER_MS + 1);
}

/* Has a final flush (or a stop) been asked for since this turn began (fseq)? */
static bool flush_came(struct eng_replica *r, uint64_t fseq)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	bool came = d->eng->flush_seq != fseq || d->eng->stop;
	pthread_mutex_unlock(&d->mu);
	return came;
}

/*
 * When the periodic snapshot after one due at due is: an interval later, on
 * the same cadence, or an interval from now when that is past already. Timed
 * from when each was written, every one that waited for a new WAL index (up
 * to a sync-interval) or took long to upload put the next off as much
 * (QA110 D1: 1 s snapshots with a 4 s sync-interval came every 5 s).
 */
static int64_t snapshot_next(int64_t due, int64_t interval_ms)
{
	int64_t now = clock_mono_ns(), next = due + interval_ms * NS_PER_MS;
	return next > now ? next : now + interval_ms * NS_PER_MS;
}

void *replica_thread(void *arg)
{
	struct eng_replica *r = arg;
	struct eng_db *d = r->db;
	const struct cfg_replica *c = r->cfg;
	int64_t next_sync = 0, next_retry = 0, backoff_ms = BACKOFF_MIN_MS;
	int64_t next_retention = 0, next_snapshot = 0;
	bool periodic_waits = false; /* the periodic snapshot waits for a new WAL index */
	uint64_t seen_flush = 0;
	int64_t sync_ns = c->sync_interval_ms * NS_PER_MS;
	int64_t writers_ns = c->writer_check_interval_ms * NS_PER_MS;
	int64_t next_writers = writers_ns > 0 ? clock_mono_ns() + writers_ns : 0;

	if (c->retention_ms > 0) {
		int64_t every = c->retention_check_interval_ms > 0 ? c->retention_check_interval_ms
								    : c->retention_ms;
		next_retention = clock_mono_ns() + every * NS_PER_MS;
	}
	pthread_mutex_lock(&d->mu);
	for (;;) {
		int64_t now = clock_mono_ns();
		/* a final flush skips the schedule and the backoff, until its deadline */
		bool flush = r->flush_seq != d->eng->flush_seq && now < d->flush_deadline_ns;
		if (flush && seen_flush != d->eng->flush_seq) {
			seen_flush = d->eng->flush_seq;
			next_retry = 0;
		}
		bool b = behind(r);
		/* nothing to ship (a database never opened has nothing either): served */
		if (flush && (r->refused || d->older_req ||
			      (!r->await_gen[0] && (!b || !replica_pos_ready(d))))) {
			r->flush_seq = d->eng->flush_seq;
			flush = false;
		}
		if (close_due(r)) {
			close_now(r);
			continue;
		}
		if (d->eng->stop && !flush)
			break;
		bool may = now >= next_retry && !r->closed && !r->refused;
		bool ready = replica_pos_ready(d);
		/* the periodic snapshot that waited for a new index: at once, not a sync-interval on */
		bool do_sync = ready && may && b && (flush || now >= next_sync ||
						     (periodic_waits && r->snap_wait && !at_snap_index(r)));
		/*
		 * Neither retention nor a periodic snapshot in a final flush: an
		 * upload with no deadline held the closed mark past it (QA114 D2)
		 */
		bool do_ret = ready && may && !flush && r->pos_known && next_retention &&
			      now >= next_retention;
		bool do_snap = ready && may && !flush && r->pos_known && c->snapshot_interval_ms > 0 &&
			       next_snapshot && now >= next_snapshot;
		bool do_writers = may && !flush && !d->eng->stop && next_writers && now >= next_writers;
		if (!do_sync && !do_ret && !do_snap && !do_writers) {
			int64_t until = now + IDLE_WAKE_NS;
			if (b && next_sync > now && next_sync < until)
				until = next_sync;
			if (b && next_retry > now && next_retry < until)
				until = next_retry;
			/*
			 * the retention and snapshot schedules (retried after a failure's
			 * backoff); none once closed: a schedule that came due then would
			 * wake this thread at once, forever, holding mu (QA17 D1)
			 */
			int64_t at = next_retry > now ? next_retry : now;
			bool sched = !r->closed && !r->refused;
			if (sched && ready && r->pos_known && next_retention && next_retention < until)
				until = next_retention > at ? next_retention : at;
			if (sched && ready && r->pos_known && c->snapshot_interval_ms > 0 &&
			    next_snapshot && next_snapshot < until)
				until = next_snapshot > at ? next_snapshot : at;
			if (sched && next_writers && next_writers < until)
				until = next_writers > at ? next_writers : at;
			r->wake = false;
			wait_until(r, until);
			continue;
		}
		if (do_sync && !flush && sync_ns > 0)
			copy_before_tick(r);
		uint64_t fseq = d->eng->flush_seq;
		pthread_mutex_unlock(&d->mu);

		int rc = 0;
		int64_t started = clock_mono_ns();
		if (do_sync) {
			if (!r->pos_known) {
				pthread_mutex_lock(&d->mu);
				r->look_since_mono = clock_mono_ns();
				pthread_mutex_unlock(&d->mu);
				rc = init_position(r, &next_snapshot);
				/* a look that failed (a server refusing) has not looked (QA77 D1) */
				if (rc == 0)
					older_checked(r);
			}
			pthread_mutex_lock(&d->mu);
			r->look_since_mono = 0;
			/* another replica's first look may yet find the database older: write nothing */
			if (rc == 0 && older_gate(r, flush)) {
				int64_t end = clock_mono_ns() + 100 * NS_PER_MS;
				struct timespec ts = { .tv_sec = end / NS_PER_SEC,
						       .tv_nsec = end % NS_PER_SEC };
				pthread_cond_timedwait(&d->cond, &d->mu, &ts);
				continue;
			}
			/* one only retention or the schedule wants (snap_wait) waits past a final flush */
			bool snap = r->pos_known && (r->need_snapshot || strcmp(r->pos.generation, d->gen) ||
						     (r->snap_wait && !flush && !at_snap_index(r)));
			/* past an oversize index, the snapshot waits for the checkpoint's new index */
			bool wait_index = snap && r->oversize && !strcmp(r->pos.generation, d->gen) &&
					  d->index <= r->oversize_index;
			if (wait_index)
				monitor_request_restart(d);
			pthread_mutex_unlock(&d->mu);
			if (rc == 0 && wait_index) {
				replica_note_error(r, "WAL index too large for the format",
						   "waiting for a new index");
				rc = -1;
			} else if (rc == 0 && snap) {
				snapshot_past_the_left_second(r, flush);
				rc = snapshot_take(r, flush);
				/* the periodic one that waited for a new index keeps its cadence */
				if (rc == 0 && c->snapshot_interval_ms > 0 && !periodic_waits)
					next_snapshot = clock_mono_ns() + c->snapshot_interval_ms * NS_PER_MS;
				if (rc == 0)
					periodic_waits = false;
			}
			if (rc == 0 && r->pos_known)
				rc = label_current(r, flush);
			if (rc == 0 && r->pos_known)
				rc = replica_ship(r, flush);
			if (rc == 0)
				note_ok(r);
			next_sync = started + sync_ns;
		}
		/* a final flush (or a stop) asked for while this sync ran: it comes first */
		if (!flush && (do_snap || do_ret) && flush_came(r, fseq))
			do_snap = do_ret = false;
		if (rc == 0 && do_snap) {
			/*
			 * Never at the index of the newest snapshot (at_snap_index):
			 * there, ask for a new index instead (want_new_index); the
			 * first sync past it takes the snapshot (snap_wait), as for
			 * retention, or else the next interval (waiting for the
			 * interval alone made it every other one on a busy database).
			 * A snapshot that failed stays due: it is tried again after
			 * the failure's backoff, not an interval later (QA101 O1: one
			 * refused while copies failed for a moment waited a whole
			 * snapshot-interval).
			 */
			pthread_mutex_lock(&d->mu);
			bool same = at_snap_index(r);
			if (same)
				want_new_index(r);
			pthread_mutex_unlock(&d->mu);
			bool skip = false;
			if (!same) {
				snapshot_past_the_left_second(r, false);
				/* nor one asked for in that wait (QA118 O2): the snapshot stays due */
				skip = flush_came(r, fseq);
				if (!skip)
					rc = snapshot_take(r, false);
			} else {
				log_debug("replica", "periodic snapshot waits for a new WAL index",
					  "db=%s replica=%s index=%u", d->stat.name, r->stat.name,
					  r->snap_index);
			}
			if (rc == 0 && !skip)
				next_snapshot = snapshot_next(next_snapshot, c->snapshot_interval_ms);
			periodic_waits = rc == 0 && same;
		}
		if (rc == 0 && do_ret) {
			bool need = false;
			int64_t every = c->retention_check_interval_ms > 0 ? c->retention_check_interval_ms
									    : c->retention_ms;
			if (retention_enforce(r, &need) < 0) {
				rc = -1;
			} else if (need) {
				/*
				 * Never at the newest snapshot's index either (at_snap_index):
				 * there, ask for a new index (want_new_index); the first sync
				 * past it takes the snapshot (snap_wait), not the
				 * next check, a retention-check-interval later. Until then
				 * the old snapshot still covers the window: nothing is lost.
				 */
				pthread_mutex_lock(&d->mu);
				bool same = at_snap_index(r);
				uint32_t at = r->snap_index;
				if (same)
					want_new_index(r);
				pthread_mutex_unlock(&d->mu);
				if (!same) {
					snapshot_past_the_left_second(r, false);
					if (!flush_came(r, fseq))
						rc = snapshot_take(r, false);
				} else {
					log_debug("replica", "retention's snapshot waits for a new WAL "
						  "index", "db=%s replica=%s index=%u", d->stat.name,
						  r->stat.name, at);
				}
			}
			next_retention = clock_mono_ns() + every * NS_PER_MS;
		}
		if (do_writers) {
			writers_check(r); /* its own failure is no sync failure: it tries again */
			next_writers = clock_mono_ns() + writers_ns;
		}
		if (rc < 0 && flush) {
			next_retry = clock_mono_ns() + 200 * NS_PER_MS;
		} else if (rc < 0) {
			next_retry = clock_mono_ns() + backoff_ms * NS_PER_MS;
			backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
		} else if (do_sync || do_ret || do_snap) { /* a writers check alone proves nothing */
			backoff_ms = BACKOFF_MIN_MS;
			next_retry = 0;
		}
		pthread_mutex_lock(&d->mu);
		if (flush && (rc == 0 || !behind(r)))
			r->flush_seq = fseq;
		pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}
