/*
 * retention.c — retention per replica: every moment of the last `retention`
 * stays restorable, and nothing is deleted before it is older than
 * retention + retention-grace.
 *
 * In each generation, the newest snapshot taken at or before the cut
 * (now - retention) is the one a restore to the cut starts from: it and
 * everything after it are kept, what lies below its index may go. (Litestream
 * 0.3 keeps only snapshots younger than retention and prunes below the
 * earliest of them: once a new one was taken, the moments between the cut and
 * it were lost.) A generation that is not the current one and whose objects
 * are all older than retention + retention-grace goes whole; one its writer
 * did not close at its end (another node's, maybe alive and idle: it
 * snapshots again within a retention check of its own) only once older than
 * that by the longer of retention, the check interval and a day as well. A
 * current one left without any snapshot there gets a new one. The current one,
 * when none of its snapshots is younger than retention, asks for a new one
 * (*need_snapshot), so that its older history can go once that one covers the
 * cut. The grace lets a restore that picked an object a moment ago finish
 * reading it (#1307). A generation labelled with another database id than
 * ours (layout.h) is never touched: another database's history at this
 * location, or ours from before a lost local state; only a person can tell.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "common/banned.h"

#define DELETE_BATCH 256
#define RETENTION_UNCLOSED_MIN_MS (24 * 3600 * 1000LL)
/* Behind by less is an upload's own time, not worth a word. */
#define RETENTION_SKEW_LOG_NS (60 * NS_PER_SEC)

struct batch {
	char keys[DELETE_BATCH][LAYOUT_KEY_MAX];
	const char *ptrs[DELETE_BATCH];
	size_t n;
	uint64_t deleted;
};

static int flush_batch(struct eng_replica *r, struct batch *b, struct st_error *err)
{
	if (b->n == 0)
		return 0;
	for (size_t i = 0; i < b->n; i++)
		b->ptrs[i] = b->keys[i];
	int rc = storage_delete(r->st, b->ptrs, b->n, NULL, err);
	if (rc == 0)
		b->deleted += b->n;
	b->n = 0;
	return rc;
}

static int add_key(struct eng_replica *r, struct batch *b, const char *key, struct st_error *err)
{
	memcpy(b->keys[b->n++], key, LAYOUT_KEY_MAX);
	return b->n == DELETE_BATCH ? flush_batch(r, b, err) : 0;
}

/*
 * Delete objects of g with index < below (UINT32_MAX: all) and older than
 * cutoff. An index's segments go all together or not at all, lowest index
 * first, stopping at the first that cannot go whole: Litestream's restore
 * rejects a generation in which any index lacks its offset-0 segment, or
 * in which an index is missing between others. So that a process killed
 * midway leaves neither, every other segment goes in requests before those
 * of the offset-0 segments (a batch delete's order within one request is
 * the server's).
 */
static int prune(struct eng_replica *r, const struct cat_generation *g, uint32_t below,
		 int64_t cutoff, struct batch *b, struct st_error *err)
{
	char key[LAYOUT_KEY_MAX];
	uint32_t stop = below;
	size_t upto = 0; /* segments [0, upto) go */

	while (upto < g->nsegments) {
		size_t j = upto;
		bool old = true;
		uint32_t idx = g->segments[upto].index;
		for (; j < g->nsegments && g->segments[j].index == idx; j++)
			old = old && g->segments[j].mtime_ns < cutoff;
		if (below != UINT32_MAX && idx >= below)
			break;
		if (!old) {
			stop = idx;
			break;
		}
		upto = j;
	}
	/* segments first: a snapshot never outlives the segments its restore needs */
	for (int first = 0; first < 2; first++) {
		for (size_t i = 0; i < upto; i++) {
			const struct cat_segment *s = &g->segments[i];
			if ((s->offset == 0) == (first == 1) &&
			    add_key(r, b, layout_wal_key(key, g->id, s->index, s->offset), err) < 0)
				return -1;
		}
		if (flush_batch(r, b, err) < 0)
			return -1;
	}
	for (size_t i = 0; i < g->nsnapshots; i++) {
		const struct cat_snapshot *s = &g->snapshots[i];
		if ((stop == UINT32_MAX || s->index < stop) && s->mtime_ns < cutoff &&
		    add_key(r, b, layout_snapshot_key(key, g->id, s->index), err) < 0)
			return -1;
	}
	/*
	 * A whole generation's marks go whatever their age: a mark is no data
	 * (its generation was chosen by its data's age), and one left alone (a
	 * node that took the generation over idle closed it after its data)
	 * kept the generation listed, so the node that wrote it, back with its
	 * older file, wrote into it again instead of finding it deleted by
	 * another node's retention (QA86 D6).
	 */
	for (size_t i = 0; i < g->nclosed; i++) {
		const struct cat_closed *c = &g->closed[i];
		if ((stop == UINT32_MAX || (c->index < stop && c->mtime_ns < cutoff)) &&
		    add_key(r, b, layout_closed_key(key, g->id, c->index, c->offset), err) < 0)
			return -1;
	}
	/* a whole generation's labels go last, in the same batch or after it */
	for (size_t i = 0; below == UINT32_MAX && stop == UINT32_MAX && i < g->nlabels; i++)
		if (add_key(r, b, layout_database_key(key, g->id, g->labels[i]), err) < 0)
			return -1;
	return flush_batch(r, b, err);
}

/*
 * Generation gen is labelled with another database id than ours: say so
 * once per generation in this process (it is kept, and counted at every
 * check in the replica's foreign_generations).
 */
static void warn_foreign(struct eng_replica *r, const char *gen, const char *theirs,
			 const char *ours)
{
	for (size_t i = 0; i < r->foreign_nwarned; i++)
		if (!strcmp(r->foreign_warned[i], gen))
			return;
	char (*v)[17] = realloc(r->foreign_warned, (r->foreign_nwarned + 1) * sizeof(*v));
	if (v) { /* out of memory: said again next time */
		r->foreign_warned = v;
		memcpy(v[r->foreign_nwarned++], gen, 17);
	}
	log_warn("retention", "the replica holds a generation of another database id: retention "
		 "keeps it. Either another database's replica points at this location (give one "
		 "of them another path), or this database's local state (meta-path) was lost: "
		 "then these are its own older generations, to delete by hand once not needed",
		 "db=%s replica=%s location=\"%s\" generation=%s database_id=%s ours=%s",
		 r->db->stat.name, r->stat.name, r->st->description ? r->st->description : "", gen,
		 theirs, ours);
}

/*
 * The cuts are our clock's; the object times the replica's (the server's, or a
 * NAS's for a file replica). Where the replica's clock is behind, its objects
 * look that much older and their history would go early. An object this
 * process wrote in g (its last WAL segment, else its last snapshot), by its
 * object time against ours of writing it, tells by how much (at least: the
 * upload's own time adds to it, which keeps more), and the cuts move back by
 * that. Ours of writing it is read at the check, as the wall clock then less
 * the monotonic time since the write: a step of our wall clock in between (a
 * wrong NTP source, a hand-set date) moves it as far as the cuts, so no cut
 * moves against the replica's object times. (Read once at the write, a step
 * forward made a file replica's objects look that much older, and each check
 * deleted as much of its window: QA166 D1.) A replica ahead keeps more, and is
 * left so. Returns false when g holds no object this process wrote (a check
 * right after a start, before any upload): the replica's clock is then
 * unknown, and nothing is deleted yet.
 */
struct written {
	int64_t snap_mono, seg_mono;  /* by the monotonic clock, 0 none */
	char snap_gen[17], seg_gen[17];
	uint32_t snap_index, seg_index, seg_offset;
};

/* What r wrote last, taken before the listing, so the listing holds it. */
static void written_get(struct eng_replica *r, struct written *w)
{
	pthread_mutex_lock(&r->db->mu);
	w->snap_mono = r->snap_known && r->snap_written_ns ? r->snap_written_mono : 0;
	memcpy(w->snap_gen, r->snap_gen, sizeof(w->snap_gen));
	w->snap_index = r->snap_index;
	w->seg_mono = r->seg_written_ns ? r->seg_written_mono : 0;
	memcpy(w->seg_gen, r->seg_written_gen, sizeof(w->seg_gen));
	w->seg_index = r->seg_written_index;
	w->seg_offset = r->seg_written_offset;
	pthread_mutex_unlock(&r->db->mu);
}

/* now and mono: the wall and the monotonic clock, read together at the check. */
static bool behind_shift(struct eng_replica *r, const struct written *w,
			 const struct cat_generation *g, int64_t now, int64_t mono,
			 int64_t *keep_cut, int64_t *del_cut)
{
	struct eng_db *d = r->db;
	int64_t snap_mono = !strcmp(w->snap_gen, g->id) ? w->snap_mono : 0;
	uint32_t snap_index = w->snap_index;
	int64_t seg_mono = !strcmp(w->seg_gen, g->id) ? w->seg_mono : 0;
	uint32_t seg_index = w->seg_index, seg_offset = w->seg_offset;
	int64_t at = 0, theirs = 0; /* at: the write, by the monotonic clock */
	/* a segment first: one PUT, where a multipart snapshot's time is when it began */
	for (size_t k = 0; seg_mono && k < g->nsegments; k++)
		if (g->segments[k].index == seg_index && g->segments[k].offset == seg_offset) {
			at = seg_mono;
			theirs = g->segments[k].mtime_ns;
		}
	for (size_t k = 0; !at && snap_mono && k < g->nsnapshots; k++)
		if (g->snapshots[k].index == snap_index) {
			at = snap_mono;
			theirs = g->snapshots[k].mtime_ns;
		}
	if (!at)
		return false;
	int64_t ours = now - (mono - at), behind;
	if (__builtin_sub_overflow(ours, theirs, &behind))
		behind = INT64_MAX; /* an object time near the earliest: keep everything */
	if (behind <= 0)
		return true;
	if (__builtin_sub_overflow(*keep_cut, behind, keep_cut))
		*keep_cut = INT64_MIN;
	if (__builtin_sub_overflow(*del_cut, behind, del_cut))
		*del_cut = INT64_MIN;
	if (behind >= RETENTION_SKEW_LOG_NS && !r->skew_warned) {
		log_warn("retention", "the replica's clock is behind ours: retention keeps that "
			 "much more history", "db=%s replica=%s behind_s=%.0f", d->stat.name,
			 r->stat.name, (double)behind / NS_PER_SEC);
		r->skew_warned = true;
	}
	return true;
}

int retention_enforce(struct eng_replica *r, bool *need_snapshot)
{
	struct eng_db *d = r->db;
	const struct cfg_replica *c = r->cfg;
	char (*ids)[LAYOUT_GEN_LEN + 1] = NULL;
	struct st_error err = { 0 };
	struct batch *b = NULL;
	size_t n = 0;
	char cur[17], dbid[LAYOUT_DBID_LEN + 1];
	uint64_t foreign = 0;
	int rc = -1;

	*need_snapshot = false;
	if (c->retention_ms <= 0)
		return 0;
	/* "100000d" means forever: cuts saturate at the earliest time instead of wrapping */
	int64_t now = clock_wall_ns(), mono = clock_mono_ns(), keep_cut, del_cut, span;
	if (__builtin_mul_overflow(c->retention_ms, NS_PER_MS, &span) ||
	    __builtin_sub_overflow(now, span, &keep_cut))
		keep_cut = INT64_MIN;
	if (__builtin_mul_overflow(c->retention_grace_ms, NS_PER_MS, &span) ||
	    __builtin_sub_overflow(keep_cut, span, &del_cut))
		del_cut = INT64_MIN;
	/*
	 * An unclosed generation's extra time: the longer of retention and its
	 * check interval, and a day at least: its writer's retention (and so
	 * when it snapshots again, idle) may be longer than ours (QA26).
	 */
	int64_t live_ms = c->retention_check_interval_ms > c->retention_ms
				  ? c->retention_check_interval_ms : c->retention_ms, live_ns;
	if (live_ms < RETENTION_UNCLOSED_MIN_MS)
		live_ms = RETENTION_UNCLOSED_MIN_MS;
	if (__builtin_mul_overflow(live_ms, NS_PER_MS, &live_ns))
		live_ns = INT64_MAX;
	pthread_mutex_lock(&d->mu);
	memcpy(cur, d->gen, sizeof(cur));
	memcpy(dbid, d->dbid, sizeof(dbid));
	pthread_mutex_unlock(&d->mu);

	if (!(b = calloc(1, sizeof(*b))))
		goto out;
	struct written wr;
	written_get(r, &wr);
	if (catalog_generations(r->st, &ids, &n, NULL, &err) < 0)
		goto fail;
	bool cur_has_snapshot = false;
	char broken[300] = ""; /* why our generation can no longer be continued here, or "" */
	size_t ci = n; /* the current generation first: it tells the replica's clock */
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ids[i], cur))
			ci = i;
	if (ci == n)
		del_cut = INT64_MIN; /* nothing of ours there to tell its clock by */
	for (size_t step = 0; step < n; step++) {
		size_t i = ci == n ? step : step == 0 ? ci : step <= ci ? step - 1 : step;
		struct cat_generation g;
		if (catalog_load(r->st, ids[i], &g, NULL, &err) < 0)
			goto fail;
		if (i == ci && !behind_shift(r, &wr, &g, now, mono, &keep_cut, &del_cut)) {
			log_debug("retention", "no object of this process on the replica yet: its clock "
				  "is unknown, nothing deleted in this check", "db=%s replica=%s",
				  d->stat.name, r->stat.name);
			del_cut = INT64_MIN;
		}
		/* the newest snapshot at or before the cut: a restore to the cut starts there */
		uint32_t cover = UINT32_MAX;
		bool young = false;
		for (size_t k = 0; k < g.nsnapshots; k++) {
			const struct cat_snapshot *s = &g.snapshots[k];
			if (s->mtime_ns > keep_cut)
				young = true;
			else if (cover == UINT32_MAX || s->index > cover)
				cover = s->index;
		}
		int prc = 0;
		bool current = !strcmp(ids[i], cur);
		if (!current && g.database_id[0] && dbid[0] && strcmp(g.database_id, dbid) != 0) {
			/* another database's history, or ours from before a lost local state */
			foreign++;
			warn_foreign(r, ids[i], g.database_id, dbid);
			catalog_generation_release(&g);
			continue;
		}
		cur_has_snapshot |= current && g.nsnapshots > 0;
		if (current && catalog_continuable(&g, broken, sizeof(broken)))
			broken[0] = '\0';
		/*
		 * A new snapshot, so the older history can go once it covers the cut.
		 * (A replica whose clock is behind does not ask for one at every check:
		 * behind_shift moved the cut back by at least that much.)
		 */
		if (!young && current && g.nsnapshots > 0)
			*need_snapshot = true;
		/*
		 * Not closed at its end, another node may still be writing it,
		 * idle: it snapshots again within a retention check of its newest
		 * snapshot growing older than retention, so it gets that much more.
		 */
		int64_t cut = del_cut;
		if (!catalog_closed_at_end(&g) && __builtin_sub_overflow(del_cut, live_ns, &cut))
			cut = INT64_MIN;
		if (!current && g.max_ns < cut) {
			log_info("retention", "deleting generation", "db=%s replica=%s generation=%s",
				 d->stat.name, r->stat.name, ids[i]);
			prc = prune(r, &g, UINT32_MAX, del_cut, b, &err);
		} else if (cover != UINT32_MAX && cover > 0) {
			prc = prune(r, &g, cover, del_cut, b, &err);
		}
		catalog_generation_release(&g);
		if (prc < 0)
			goto fail;
	}
	/*
	 * Our generation has no snapshot there any more (another writer's
	 * retention took it, or a hand): whatever this process ships into it
	 * restores nowhere until a new one is taken.
	 */
	pthread_mutex_lock(&d->mu);
	bool ours = d->ready && r->pos_known && !strcmp(r->pos.generation, cur);
	pthread_mutex_unlock(&d->mu);
	if (ours && broken[0]) {
		/* objects deleted under it (the replica emptied while we wrote): no snapshot at
		 * this index mends an index whose first segments are gone */
		log_warn("retention", "this generation cannot be restored from the replica any more "
			 "(objects deleted under it?): starting a new generation", "db=%s replica=%s "
			 "why=\"%s\"", d->stat.name, r->stat.name, broken);
		replica_leave_generation(r, cur, broken);
		rc = 0;
		goto out;
	}
	pthread_mutex_lock(&d->mu);
	bool lost = d->ready && r->pos_known && !strcmp(r->pos.generation, cur) && !cur_has_snapshot;
	bool mine = lost && r->snap_known && !strcmp(r->snap_gen, cur);
	uint32_t snap_index = r->snap_index;
	r->stat.foreign_generations = foreign;
	pthread_mutex_unlock(&d->mu);
	/*
	 * The listing alone may lag behind the writes (some S3 gateways): the
	 * snapshot this process wrote is looked at first, as the writers check
	 * does. Taken again from the listing alone, under its own name, it moved
	 * that name's time on, and a -timestamp before it found no snapshot
	 * (QA105 D3).
	 */
	if (mine) {
		char key[LAYOUT_KEY_MAX];
		struct st_object o = { 0 };
		layout_snapshot_key(key, cur, snap_index);
		int src = storage_stat(r->st, key, &o, NULL, &err);
		free(o.key);
		if (src != ST_NOT_FOUND) {
			log_debug("retention", "the listing shows no snapshot of this generation, but "
				  "the one this process wrote is there (or did not answer): the listing "
				  "lags", "db=%s replica=%s key=%s", d->stat.name, r->stat.name, key);
			lost = false;
		}
	}
	if (lost) {
		pthread_mutex_lock(&d->mu);
		r->snap_known = false; /* none to overwrite: taken at once, at this very index */
		pthread_mutex_unlock(&d->mu);
	}
	if (lost) {
		log_warn("retention", "this generation has no snapshot on the replica any more "
			 "(deleted by another writer's retention?): taking a new one",
			 "db=%s replica=%s generation=%s", d->stat.name, r->stat.name, cur);
		*need_snapshot = true;
	}
	rc = 0;
	goto out;
fail:
	log_warn("retention", "retention check failed", "db=%s replica=%s err=\"%s\"", d->stat.name,
		 r->stat.name, err.message);
out:
	if (b && b->deleted) {
		log_info("retention", "objects deleted", "db=%s replica=%s count=%llu", d->stat.name,
			 r->stat.name, (unsigned long long)b->deleted);
		pthread_mutex_lock(&d->mu);
		r->stat.retention_deleted_total += b->deleted;
		pthread_mutex_unlock(&d->mu);
	}
	free(b);
	free(ids);
	return rc;
}
