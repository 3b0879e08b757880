/*
 * replica.c — one thread per replica: find where the replica stands, take
 * snapshots, ship shadow WAL segments, enforce retention, each on this
 * replica's own schedule so a slow or unreachable replica never delays another.
 * Here: the thread, its waits and flushes, and shipping; its first look at
 * the replica is replica_look.c (with the history checks, replica_history.c),
 * the gate that holds writes until the replicas have looked replica_older.c.
 *
 * Schedule: sync-interval > 0 starts at most one upload per interval, and
 * each ships everything committed before it started; sync-interval 0 keeps
 * one upload in flight and, as soon as it ends, ships everything committed
 * meanwhile. Failures back off (0.5 s doubling to 10 s); a final flush skips
 * both waits.
 */
#include <ctype.h>
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
#include "replication/lz4io.h"
#include "replication/replica_look_int.h"
#include "replication/replica_older_int.h"
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
int64_t replica_shadow_size(const struct eng_db *d, const char *gen, uint32_t index)
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

/* The same failure again is said at WARN this often; in between at debug. */
#define ERROR_REPEAT_NS (300 * NS_PER_SEC)

/*
 * A failure's text with what changes from one try to the next masked: a
 * run of hex digits starting with a digit (curl's "after 1003 ms", sizes, a
 * segment's index and offset, ports; not an HTTP status) as '#', and a
 * temporary file's random suffix (".tmp-OGDyAh") as '*'. Compared raw, a
 * NAS that does not answer or a full replica disk was a new failure at
 * every retry (QA148 D1).
 */
static void failure_shape(const char *in, char *out, size_t cap)
{
	size_t o = 0;
	while (*in && o + 1 < cap) {
		if (!strncmp(in, ".tmp-", 5)) {
			for (const char *c = ".tmp-*"; *c && o + 1 < cap; c++)
				out[o++] = *c;
			for (in += 5; isalnum((unsigned char)*in); in++)
				;
		} else if (!strncmp(in, "HTTP ", 5)) { /* a status is the failure itself */
			for (int k = 0; k < 5 && o + 1 < cap; k++)
				out[o++] = *in++;
			while (isdigit((unsigned char)*in) && o + 1 < cap)
				out[o++] = *in++;
		} else if (isdigit((unsigned char)*in)) {
			out[o++] = '#';
			while (isxdigit((unsigned char)*in))
				in++;
		} else {
			out[o++] = *in++;
		}
	}
	out[o] = '\0';
}

/*
 * A hash (FNV-1a) of the shape of the failure "what: msg": the same failure
 * again hashes alike. The whole text, not last_error's first 255 bytes: a
 * long replica path would push the HTTP status out of them.
 */
static uint64_t failure_hash(const char *what, const char *msg)
{
	char text[1024], shape[1024];
	uint64_t h = 1469598103934665603ULL;
	snprintf(text, sizeof(text), "%s: %s", what, msg);
	failure_shape(text, shape, sizeof(shape));
	for (const unsigned char *c = (const unsigned char *)shape; *c; c++)
		h = (h ^ *c) * 1099511628211ULL;
	return h;
}

void replica_note_error(struct eng_replica *r, const char *what, const char *msg)
{
	struct eng_db *d = r->db;
	int64_t now = clock_wall_ns(), mono = clock_mono_ns();
	uint64_t h = failure_hash(what, msg);
	pthread_mutex_lock(&d->mu);
	/*
	 * Once per failure, then every five minutes while it lasts: a retry every
	 * 10 s wrote a WARN line each, 360 an hour per replica down (QA143 D1),
	 * where the docs promise an outage of an hour is a few lines. Each of the
	 * last few failures said is remembered, not just the last: an outage
	 * alternates between its look, its snapshot and its segments, and a
	 * server down at start, or a snapshot due, said each try (QA154 D1).
	 */
	if (!r->stat.failing_since_ns)
		memset(r->said, 0, sizeof(r->said)); /* a new outage */
	size_t slot = SIZE_MAX, oldest = 0;
	for (size_t i = 0; i < sizeof(r->said) / sizeof(r->said[0]); i++) {
		if (r->said[i].mono && r->said[i].shape == h)
			slot = i;
		if (r->said[i].mono < r->said[oldest].mono)
			oldest = i;
	}
	bool same = slot != SIZE_MAX;
	bool again = same && mono - r->said[slot].mono < ERROR_REPEAT_NS;
	if (!again) {
		if (!same)
			slot = oldest;
		r->said[slot].shape = h;
		r->said[slot].mono = mono;
	}
	int64_t failing_s = r->stat.failing_since_mono_ns ?
		(mono - r->stat.failing_since_mono_ns) / NS_PER_SEC : 0;
	pthread_mutex_unlock(&d->mu);
	if (same && !again) /* the five-minute repeat says how long it lasts */
		log_warn("replica", what, "db=%s replica=%s failing_s=%lld err=\"%s\"", d->stat.name,
			 r->stat.name, (long long)failing_s, msg);
	else
		log_event(again ? LOG_DEBUG : LOG_WARN, "replica", what, "db=%s replica=%s err=\"%s\"",
			  d->stat.name, r->stat.name, msg);
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
	r->seg_written_mono = clock_mono_ns();
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
			int64_t sz = replica_shadow_size(d, pos.generation, pos.index);
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

int64_t replica_end_outage(struct eng_replica *r)
{
	int64_t since = r->stat.failing_since_ns ? r->stat.failing_since_mono_ns : 0;
	r->stat.failing_since_ns = r->stat.failing_since_mono_ns = 0;
	r->failed_here = false;
	return since;
}

void replica_outage_over(struct eng_replica *r, int64_t since)
{
	failrec_clear(r);
	/* the failures were logged: say when they end, and how long it took */
	if (since)
		log_info("replica", "replica recovered", "db=%s replica=%s failing_s=%.1f",
			 r->db->stat.name, r->stat.name,
			 (double)(clock_mono_ns() - since) / NS_PER_SEC);
}

static void note_ok(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	int64_t now = clock_wall_ns();
	pthread_mutex_lock(&d->mu);
	r->stat.syncs_total++;
	r->stat.last_sync_ns = now;
	/*
	 * A snapshot it owes still failing (one the schedule or retention wants,
	 * refused while segments are stored): the outage goes on until one is
	 * stored; it answers, for the backlog cap (QA114 D4).
	 */
	r->carried = false; /* it holds everything the shadow held, older commits with it */
	if (r->snap_failing) {
		r->failed_here = false;
		pthread_mutex_unlock(&d->mu);
		return;
	}
	int64_t since = replica_end_outage(r);
	pthread_mutex_unlock(&d->mu);
	replica_outage_over(r, since);
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
	/*
	 * Nothing written here yet: an earlier process's last objects (its
	 * final flush) came before this one started. A restart within their
	 * second began a generation tied with theirs on S3's whole seconds, and
	 * a restore then picked the older one (QA155 D1).
	 */
	if (!has_one && !last && r->others_listed)
		last = r->thread_started_ns;
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
	/*
	 * A snapshot only wanted (the schedule's, retention's) that failed is
	 * tried again after its own backoff, while segments go on at the sync
	 * interval: one the replica refuses (a quota, a size limit) held them
	 * back with it, up to 10 s, and each try's stored segments ended the
	 * outage the next try began again (QA158 D3).
	 */
	int64_t snap_retry = 0, snap_backoff_ms = BACKOFF_MIN_MS;
	bool periodic_waits = false; /* the periodic snapshot waits for a new WAL index */
	uint64_t seen_flush = 0;
	int64_t sync_ns = c->sync_interval_ms * NS_PER_MS;
	r->thread_started_ns = clock_wall_ns(); /* before any look: mu not needed */
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
		bool snap_may = now >= snap_retry;
		/*
		 * A wanted snapshot a sync takes (snap_wait) that is owed now: the
		 * periodic one that waited for a new index, at once, not a
		 * sync-interval on; one that failed, once its backoff is over. A
		 * reason to run of its own, with nothing to ship too: an idle
		 * database left it failing until the next interval or retention
		 * check (QA161 D2, D3).
		 */
		bool snap_owed = r->snap_wait && r->pos_known && !flush &&
				 (periodic_waits || r->snap_failing);
		bool snap_due = snap_owed && snap_may && !at_snap_index(r);
		bool do_sync = ready && may && ((b && (flush || now >= next_sync)) || snap_due);
		/*
		 * Neither retention nor a periodic snapshot in a final flush: an
		 * upload with no deadline held the closed mark past it (QA114 D2)
		 */
		bool do_ret = ready && may && !flush && r->pos_known && next_retention &&
			      now >= next_retention;
		bool do_snap = ready && may && snap_may && !flush && r->pos_known &&
			       c->snapshot_interval_ms > 0 && next_snapshot && now >= next_snapshot;
		bool do_writers = may && !flush && !d->eng->stop && next_writers && now >= next_writers;
		if (!do_sync && !do_ret && !do_snap && !do_writers) {
			int64_t until = now + IDLE_WAKE_NS;
			if (b && next_sync > now && next_sync < until)
				until = next_sync;
			if (b && next_retry > now && next_retry < until)
				until = next_retry;
			if (snap_owed && snap_retry > now && snap_retry < until)
				until = snap_retry;
			/*
			 * the retention and snapshot schedules (retried after a failure's
			 * backoff); none once closed: a schedule that came due then would
			 * wake this thread at once, forever, holding mu (QA17 D1)
			 */
			int64_t at = next_retry > now ? next_retry : now;
			int64_t snap_at = snap_retry > at ? snap_retry : at;
			bool sched = !r->closed && !r->refused;
			if (sched && ready && r->pos_known && next_retention && next_retention < until)
				until = next_retention > at ? next_retention : at;
			/* never later than it was: a snapshot's backoff holds no sync back (QA161 D1) */
			int64_t snap_next = next_snapshot > snap_at ? next_snapshot : snap_at;
			if (sched && ready && r->pos_known && c->snapshot_interval_ms > 0 &&
			    next_snapshot && snap_next < until)
				until = snap_next;
			if (sched && next_writers && next_writers < until)
				until = next_writers > at ? next_writers : at;
			if (r->refused)
				snapshot_kept_release(r); /* it writes nothing more (QA133 O4) */
			r->wake = false;
			wait_until(r, until);
			continue;
		}
		if (do_sync && !flush && sync_ns > 0)
			copy_before_tick(r);
		uint64_t fseq = d->eng->flush_seq;
		pthread_mutex_unlock(&d->mu);
		/* at every turn: a look that keeps failing never reaches replica_ship's (QA133 D1) */
		snapshot_kept_check(r);

		int rc = 0, snap_rc = 0; /* snap_rc: a wanted snapshot's, which holds nothing else back */
		int64_t started = clock_mono_ns();
		if (do_sync) {
			if (!r->pos_known) {
				pthread_mutex_lock(&d->mu);
				r->look_since_mono = clock_mono_ns();
				pthread_mutex_unlock(&d->mu);
				rc = replica_look_init_position(r, &next_snapshot);
				/* a look that failed (a server refusing) has not looked (QA77 D1) */
				if (rc == 0)
					replica_older_checked(r);
			}
			pthread_mutex_lock(&d->mu);
			r->look_since_mono = 0;
			/* another replica's first look may yet find the database older: write nothing */
			if (rc == 0 && replica_older_gate(r, flush)) {
				int64_t end = clock_mono_ns() + 100 * NS_PER_MS;
				struct timespec ts = { .tv_sec = end / NS_PER_SEC,
						       .tv_nsec = end % NS_PER_SEC };
				pthread_cond_timedwait(&d->cond, &d->mu, &ts);
				continue;
			}
			/* one only retention or the schedule wants (snap_wait) waits past a final flush */
			bool needed = r->pos_known && (r->need_snapshot ||
						       strcmp(r->pos.generation, d->gen));
			bool snap = needed || (r->pos_known && r->snap_wait && !flush && snap_may &&
					       !at_snap_index(r));
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
				int src = snapshot_take(r, flush);
				/* the periodic one that waited for a new index keeps its cadence */
				if (src == 0 && c->snapshot_interval_ms > 0 && !periodic_waits)
					next_snapshot = clock_mono_ns() + c->snapshot_interval_ms * NS_PER_MS;
				if (src == 0)
					periodic_waits = false;
				/* one only wanted: the segments go on without it */
				if (needed)
					rc = src;
				else
					snap_rc = src;
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
					snap_rc = snapshot_take(r, false);
			} else {
				log_debug("replica", "periodic snapshot waits for a new WAL index",
					  "db=%s replica=%s index=%u", d->stat.name, r->stat.name,
					  r->snap_index);
			}
			if (snap_rc == 0 && !skip)
				next_snapshot = snapshot_next(next_snapshot, c->snapshot_interval_ms);
			periodic_waits = snap_rc == 0 && same;
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
				/* one failing: a sync takes it after its backoff, not this turn again */
				bool later = !same && (snap_rc < 0 || !snap_may);
				if (later)
					r->snap_wait = true;
				pthread_mutex_unlock(&d->mu);
				if (!same && !later) {
					snapshot_past_the_left_second(r, false);
					if (!flush_came(r, fseq))
						snap_rc = snapshot_take(r, false);
					/* failed: a sync takes it after its backoff, not the next check */
					if (snap_rc < 0) {
						pthread_mutex_lock(&d->mu);
						r->snap_wait = true;
						pthread_mutex_unlock(&d->mu);
					}
				} else if (same) {
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
		if (snap_rc < 0) {
			snap_retry = clock_mono_ns() + snap_backoff_ms * NS_PER_MS;
			snap_backoff_ms = snap_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
									: snap_backoff_ms * 2;
		} else if (snap_rc == 0 && snap_retry && !r->snap_failing) {
			snap_retry = 0; /* stored (mu not needed: only this thread writes it) */
			snap_backoff_ms = BACKOFF_MIN_MS;
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
