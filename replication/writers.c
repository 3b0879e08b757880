/*
 * writers.c — noticing that another process writes the same database to a
 * replica.
 *
 * Two nodes may run one job at once: a Nomad client cut off from its servers
 * keeps its task while a replacement starts elsewhere. The replacement waits
 * (restore.handover-wait), then starts a generation of its own, so the two
 * histories never mix; but each node goes on writing, and the history
 * written last wins the next restore. Nothing in the data can prevent that
 * (there is no lock between nodes); what can be done is to say so, loudly,
 * on the node that would lose: a generation that appeared on the replica
 * after this process started writing it, and that this process did not
 * write, is another writer's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "common/banned.h"

/*
 * A generation without a label or segments whose newest object is younger
 * than this (by our clock) may be waiting for its label (it follows the
 * first snapshot): it is looked at again at the next check before it is
 * reported.
 */
#define LABEL_WAIT_NS (5 * NS_PER_SEC)

static bool seen(const struct eng_replica *r, const char *id)
{
	for (size_t i = 0; i < r->writers_nseen; i++)
		if (!strcmp(r->writers_seen[i], id))
			return true;
	return false;
}

/* Remember id; false when out of memory (it is then looked at again next time). */
static bool remember(struct eng_replica *r, const char *id)
{
	char (*v)[17] = realloc(r->writers_seen, (r->writers_nseen + 1) * sizeof(*v));
	if (!v)
		return false;
	r->writers_seen = v;
	memcpy(v[r->writers_nseen++], id, 17);
	return true;
}

void writers_prime(struct eng_replica *r, char (*ids)[17], size_t n)
{
	if (r->writers_primed)
		return; /* a later listing (a new start of the position) is no baseline */
	for (size_t i = 0; i < n; i++)
		if (!seen(r, ids[i]) && !remember(r, ids[i]))
			return; /* not primed: the next listing tries again */
	r->writers_primed = true;
}

void writers_note_own(struct eng_db *d, const char *gen)
{
	if (!gen[0])
		return;
	if (d->own_n == ENG_OWN_GENS) {
		memmove(d->own_gens, d->own_gens + 1, (ENG_OWN_GENS - 1) * sizeof(d->own_gens[0]));
		d->own_n--;
	}
	snprintf(d->own_gens[d->own_n++], sizeof(d->own_gens[0]), "%s", gen);
}

static bool own(struct eng_db *d, const char *id)
{
	bool yes = !strcmp(d->gen, id);
	for (size_t i = 0; i < d->own_n && !yes; i++)
		yes = !strcmp(d->own_gens[i], id);
	return yes;
}

/* r lost objects of generation gen (why): a new generation, said loudly. */
static void lost(struct eng_replica *r, const char *gen, const char *why)
{
	log_warn("engine", "the replica lost this generation's objects (emptied or unmounted under "
		 "us, or a server that answered a write it did not keep?): starting a new "
		 "generation, so that it is restorable again", "db=%s "
		 "replica=%s why=\"%s\"", r->db->stat.name, r->stat.name, why);
	replica_leave_generation(r, gen, why);
}

/*
 * The replica lost what this process wrote of the current generation (a NAS
 * share remounted empty, a bucket prefix cleaned): its segments would go on
 * into a generation with no snapshot, restorable by neither tool, and a
 * snapshot at this index would not mend an index whose start is gone. Its
 * newest snapshot must answer a stat (read-after-write consistent where
 * listings may lag: QA60); missing at two looks in a row, r leaves the
 * generation for a new one. When a newer snapshot came since the last look
 * (a periodic one), the one seen then must answer too, or the listing
 * decides whether an index lost its start (catalog_continuable: Litestream
 * refuses the whole generation for one; retention deletes an index's start
 * last). Only once r wrote a snapshot of it.
 */
static void check_ours(struct eng_replica *r, const struct st_call *call)
{
	struct eng_db *d = r->db;
	char gen[17], key[LAYOUT_KEY_MAX], prev[LAYOUT_KEY_MAX], why[300];
	struct st_object o = { 0 };
	struct st_error err = { 0 };
	pthread_mutex_lock(&d->mu);
	bool wrote = r->pos_known && r->snap_known && !strcmp(r->snap_gen, d->gen) &&
		     !strcmp(r->pos.generation, d->gen) && !r->await_gen[0];
	memcpy(gen, d->gen, sizeof(gen));
	uint32_t index = r->snap_index;
	pthread_mutex_unlock(&d->mu);
	memcpy(prev, r->snap_looked, sizeof(prev));
	r->snap_looked[0] = '\0';
	if (!wrote) {
		r->snap_missing[0] = '\0';
		return;
	}
	layout_snapshot_key(key, gen, index);
	memcpy(r->snap_looked, key, sizeof(r->snap_looked));
	int rc = storage_stat(r->st, key, &o, call, &err);
	free(o.key);
	o.key = NULL;
	if (rc != ST_NOT_FOUND) {
		r->snap_missing[0] = '\0'; /* there, or no answer: the next check looks again */
		/* the same generation's snapshot of the last look, when a newer one came since */
		bool newer = rc == 0 && prev[0] && strcmp(prev, key) && strstr(prev, gen);
		if (!newer || storage_stat(r->st, prev, &o, call, &err) != ST_NOT_FOUND) {
			free(o.key);
			return;
		}
		struct cat_generation g = { 0 };
		if (catalog_load(r->st, gen, &g, call, &err) < 0)
			return;
		bool whole = catalog_continuable(&g, why, sizeof(why));
		catalog_generation_release(&g);
		if (!whole)
			lost(r, gen, why);
		return;
	}
	if (strcmp(r->snap_missing, key) != 0) {
		log_debug("engine", "the replica's newest snapshot did not answer a stat: looked at "
			  "again at the next check", "db=%s replica=%s key=%s", d->stat.name,
			  r->stat.name, key);
		snprintf(r->snap_missing, sizeof(r->snap_missing), "%s", key);
		return;
	}
	r->snap_missing[0] = '\0';
	snprintf(why, sizeof(why), "the replica no longer holds snapshot %s", key);
	lost(r, gen, why);
}

void writers_note_segment(struct eng_replica *r, const char *gen, uint32_t index, uint32_t offset)
{
	if (r->cfg->writer_check_interval_ms <= 0)
		return; /* no look will come: the full list would shift at every segment */
	if (strcmp(r->shipped_gen, gen) != 0) {
		snprintf(r->shipped_gen, sizeof(r->shipped_gen), "%s", gen);
		r->nshipped = 0;
	}
	if (r->nshipped == ENG_SHIPPED_MAX) {
		memmove(r->shipped, r->shipped + 1, (ENG_SHIPPED_MAX - 1) * sizeof(r->shipped[0]));
		r->nshipped--;
	}
	r->shipped[r->nshipped].index = index;
	r->shipped[r->nshipped++].offset = offset;
}

/* Whether the listing l holds key (l is sorted by key). */
static bool listed(const struct st_list *l, const char *key)
{
	size_t lo = 0, hi = l->nobjects;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(l->objects[mid].key, key);
		if (c == 0)
			return true;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

/*
 * Check the segments of one WAL index, r->shipped[from, to), against a
 * listing of that index's keys (a few dozen at most:
 * ENG_MAX_SEGMENTS_PER_INDEX). A key the listing lacks must answer a stat:
 * listings may lag behind writes. Those still unsure (no answer) are kept at
 * r->shipped[*keep...]. Returns false when one is gone (why says which).
 */
/* Should a look give way to the replica's own work: a stop, or a final flush asked for? */
static bool give_way(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	bool yes = d->eng->stop || d->eng->flush_seq != r->flush_seq;
	pthread_mutex_unlock(&d->mu);
	return yes;
}

static bool index_there(struct eng_replica *r, size_t from, size_t to, size_t *keep,
			int *stats, const struct st_call *call, char *why, size_t len)
{
	char key[LAYOUT_KEY_MAX];
	struct st_list l = { 0 };
	struct st_error err = { 0 };
	layout_wal_key(key, r->shipped_gen, r->shipped[from].index, 0);
	*strrchr(key, '_') = '\0';
	int rc = storage_list(r->st, key, NULL, &l, call, &err);
	bool ok = true;
	for (size_t k = from; k < to; k++) {
		struct eng_seg_ref s = r->shipped[k];
		layout_wal_key(key, r->shipped_gen, s.index, s.offset);
		if (rc == 0 && listed(&l, key))
			continue;
		/*
		 * No listing (the server down or failing): nothing known, looked for
		 * again next time. Its -1 was read as ST_NOT_FOUND: an outage at the
		 * look made "a server that answered a write it did not keep", and a
		 * new generation each time (QA123 D1).
		 */
		if ((rc != 0 && rc != ST_NOT_FOUND) || *stats == 0 || give_way(r)) {
			r->shipped[(*keep)++] = s; /* the next look's */
			continue;
		}
		(*stats)--;
		struct st_object o = { 0 };
		int src = storage_stat(r->st, key, &o, call, &err);
		free(o.key);
		if (src == ST_NOT_FOUND) {
			snprintf(why, len, "segment %s was written (the server answered) but the "
				 "replica does not hold it", key);
			ok = false;
			break;
		}
		if (src < 0)
			r->shipped[(*keep)++] = s; /* no answer: looked for again next time */
	}
	st_list_release(&l);
	return ok;
}

/*
 * The segments this process wrote since the last look must be there. A
 * server that answered a PUT and did not keep it left a hole that every
 * restore of the generation fails on, Litestream's too, until the next
 * snapshot (QA105 D2); a new generation starts one at once. Segments below
 * the index of the newest snapshot r wrote are needed by no restore any more
 * (and retention may take them). At most CHECK_INDEXES indexes are listed and
 * CHECK_STATS keys the listings leave out looked at each time (one after the
 * other on the replica's thread, which ships nothing meanwhile: a listing
 * lagging behind every key cost 9-12 s of shipping per look, and a stop
 * then missed its flush, QA111 D4); the others wait for the next look, as
 * they do for a stop or a final flush.
 */
#define CHECK_INDEXES 8
#define CHECK_STATS 8
static void check_segments(struct eng_replica *r, const struct st_call *call)
{
	struct eng_db *d = r->db;
	char why[LAYOUT_KEY_MAX + 80];
	pthread_mutex_lock(&d->mu);
	bool same = !strcmp(r->shipped_gen, d->gen) && !r->await_gen[0] &&
		    (!r->pos_known || !strcmp(r->pos.generation, d->gen));
	bool current = same && r->pos_known;
	uint32_t below = r->snap_known && !strcmp(r->snap_gen, d->gen) ? r->snap_index : 0;
	pthread_mutex_unlock(&d->mu);
	if (!current) {
		/* a position being read again keeps what is left to look for (QA114 O1) */
		if (!same)
			r->nshipped = 0;
		return;
	}
	size_t keep = 0, looked = 0;
	int stats = CHECK_STATS;
	for (size_t i = 0, end; i < r->nshipped; i = end) {
		for (end = i; end < r->nshipped && r->shipped[end].index == r->shipped[i].index;)
			end++;
		if (r->shipped[i].index < below)
			continue;
		if (looked++ == CHECK_INDEXES || give_way(r)) {
			memmove(r->shipped + keep, r->shipped + i, (r->nshipped - i) * sizeof(r->shipped[0]));
			keep += r->nshipped - i;
			break;
		}
		if (!index_there(r, i, end, &keep, &stats, call, why, sizeof(why))) {
			r->nshipped = 0;
			lost(r, r->shipped_gen, why);
			return;
		}
	}
	r->nshipped = keep;
}

void writers_check(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	char (*ids)[LAYOUT_GEN_LEN + 1] = NULL;
	struct st_error err = { 0 };
	struct st_call call;
	size_t n = 0;

	if (!r->writers_primed)
		return; /* the replica's position is not known yet: nothing to compare with */
	replica_call_for(r, &call, false);
	check_ours(r, &call);
	check_segments(r, &call);
	if (catalog_generations(r->st, &ids, &n, &call, &err) < 0) {
		log_debug("engine", "cannot list generations to look for another writer",
			  "db=%s replica=%s err=\"%s\"", d->stat.name, r->stat.name, err.message);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		if (seen(r, ids[i]))
			continue;
		pthread_mutex_lock(&d->mu);
		bool mine = own(d, ids[i]);
		char writing[17];
		memcpy(writing, d->gen, sizeof(writing));
		pthread_mutex_unlock(&d->mu);
		/* its label tells another database from another node of this one */
		struct cat_generation g;
		char theirs[LAYOUT_DBID_LEN + 1] = "", ours[LAYOUT_DBID_LEN + 1];
		if (!mine && catalog_load(r->st, ids[i], &g, &call, &err) == 0) {
			memcpy(theirs, g.database_id, sizeof(theirs));
			int64_t age = clock_wall_ns() - g.max_ns;
			/*
			 * Our label goes up right after a generation's first snapshot,
			 * and before its first segment: one with segments and none is
			 * written by a tool without labels (Litestream), never waited for
			 */
			bool young = g.nlabels == 0 && g.nsegments == 0 && g.max_ns &&
				     age > -LABEL_WAIT_NS && age < LABEL_WAIT_NS;
			catalog_generation_release(&g);
			/* its label follows its first snapshot: look again next time */
			if (young)
				continue;
		}
		if (!remember(r, ids[i]))
			break;
		if (mine)
			continue;
		pthread_mutex_lock(&d->mu);
		memcpy(ours, d->dbid, sizeof(ours));
		pthread_mutex_unlock(&d->mu);
		if (theirs[0] && ours[0] && strcmp(theirs, ours) != 0)
			log_error("engine", "another writer: another database writes to this replica "
				  "location (its generation is labelled with another database id): two "
				  "databases' replicas point at one location, a path copied from another "
				  "job's config? Give one of them another path", "db=%s replica=%s "
				  "generation=%s database_id=%s ours=%s writing=%s", d->stat.name,
				  r->stat.name, ids[i], theirs, ours, writing);
		else
			log_error("engine", "another writer: a generation this process did not write "
				  "appeared on the replica; two processes replicate this database (a node "
				  "cut off from its orchestrator, a second task?). The history written "
				  "last wins the next restore: stop one of them", "db=%s replica=%s "
				  "generation=%s writing=%s", d->stat.name, r->stat.name, ids[i], writing);
		pthread_mutex_lock(&d->mu);
		memcpy(r->stat.other_writer, ids[i], sizeof(r->stat.other_writer));
		r->stat.other_writer_ns = clock_wall_ns();
		pthread_mutex_unlock(&d->mu);
	}
	free(ids);
}
