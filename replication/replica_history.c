/*
 * replica_history.c — reading a replica's history at its first look: did
 * another node write to it since this node last did? The closed record
 * (this node's clean stop), the "previous", "aside" and "earlier" records
 * (generations this file left), the times of the objects listed (one
 * server, one clock), and Litestream's own state (what it wrote here from
 * this very file, which is no other node's writing).
 *
 * Only reads: replica_look.c and replica_older.c decide what follows.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "replication/replica_history_int.h"
#include "common/banned.h"

/*
 * This node's closed record for r, if it was written for the location r now
 * points at (a url changed and changed back must not make a mark written
 * elsewhere read as one this location lost). 0, or -1 (none usable).
 */
int replica_history_read_closed(const struct eng_replica *r, struct wal_pos *at)
{
	return localstate_read_closed(r->db->dir, r->stat.name, r->st ? r->st->location : NULL,
				      r->st ? r->st->description : NULL, at);
}

/*
 * This node's closed record for r names generation gen: *at is where it
 * closed it there, and it has not written into it since (the record goes
 * when it does).
 */
bool replica_history_closed_here(const struct eng_replica *r, const char *gen, struct wal_pos *at)
{
	return replica_history_read_closed(r, at) == 0 &&
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
int replica_history_litestream_wrote_here(struct eng_replica *r, const struct cat_generation *g,
					  const struct st_call *call, struct st_error *err)
{
	struct eng_db *d = r->db;
	struct wal_pos local, end;
	/* as the monitor found it before writing there (monitor_open.c, capture_litestream_state) */
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
int replica_history_went_on_past(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
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
int replica_history_newer_elsewhere(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1],
				    size_t n, const char *base, const char *current,
				    const char *left, bool restored,
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
		int here = replica_history_litestream_wrote_here(r, &gens[i], call, err);
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
int replica_history_index_grew(struct eng_replica *r, const struct cat_generation *g,
			       uint32_t index, int64_t had, char *why, size_t len,
			       const struct st_call *call, struct st_error *err)
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
	int ls = replica_history_litestream_wrote_here(r, g, call, err);
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
int replica_history_continued_since(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1],
				    size_t n, const struct wal_pos *at, char *why, size_t len,
				    const struct st_call *call, struct st_error *err)
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
			ours = replica_history_litestream_wrote_here(r, &gens[i], call, err);
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
			 * Written with other age: settings than r has now
			 * (replica_look_init_position starts a new generation for
			 * that): its end cannot be read, so ask the listing. A node
			 * that went on in it removed the closed mark
			 * (replica_look.c, reopen_generation) and wrote objects
			 * after it.
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
			int ls = replica_history_litestream_wrote_here(r, own, call, err);
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
			int here = replica_history_litestream_wrote_here(r, &gens[i], call, err);
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
