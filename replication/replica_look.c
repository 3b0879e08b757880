/*
 * replica_look.c — a replica's first look at its storage: where it stands
 * in the database's current generation (its end, its newest snapshot),
 * whether that is this node's history (lineage, the closed record, what
 * this node's file holds), and whether another node went on since
 * (replica_history.c), which refuses the database as older
 * (replica_older.c) or starts a new generation. Also a generation written
 * in another form (age: settings changed): a new generation too.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "replication/lineage.h"
#include "replication/replica_history_int.h"
#include "replication/replica_look_int.h"
#include "replication/replica_older_int.h"
#include "common/banned.h"

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
int replica_look_init_position(struct eng_replica *r, int64_t *next_snapshot)
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
	bool besides = false;
	for (size_t i = 0; i < n; i++)
		besides = besides || strcmp(ids[i], gen) != 0;
	pthread_mutex_lock(&d->mu);
	r->others_listed = besides; /* snapshot_past_the_left_second */
	pthread_mutex_unlock(&d->mu);
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
		replica_older_refuse_as(r, why, false);
		free(ids);
		return -1;
	}
	if (newest_wins && replica_history_read_closed(r, &closed_at) == 0)
		old = replica_history_continued_since(r, ids, n, &closed_at, why, sizeof(why), &call,
						      &err);
	else if (newest_wins && localstate_read_previous_by(d->dir, &prev, &prev_open, &prev_restored) == 0 &&
		 strcmp(prev.generation, gen) != 0) {
		/*
		 * The generation this node left, gone on past where its file
		 * stood there: another node's writing. Unless the restore left
		 * it open: its node, if alive, writes on in it beside this one
		 * (replication.md), and only its times tell, below.
		 */
		int past = replica_history_went_on_past(r, ids, n, &prev, why, sizeof(why), &call,
						       &err);
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
			old = replica_history_newer_elsewhere(r, ids, n,
							      cur_listed ? gen : prev.generation,
							      gen, past ? "" : prev.generation,
							      prev_restored && !cur_listed && !past,
							      prev_restored && !cur_listed && !past
							      ? &prev : NULL, why, sizeof(why),
							      &call, &err);
	} else if (newest_wins) {
		old = replica_history_newer_elsewhere(r, ids, n, gen, gen, "", false, NULL, why,
						      sizeof(why), &call, &err);
	} else if (in_marker && d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS) {
		/* restored to its end: continued there, unless another node went on since */
		old = replica_history_newer_elsewhere(r, ids, n, gen, "", "", true, NULL, why,
						      sizeof(why), &call, &err);
	}
	if (old < 0) {
		rc = old;
		goto fail;
	}
	if (old) {
		replica_older_refuse(r, why);
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
				replica_older_refuse(r, why);
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
				int64_t sz = replica_shadow_size(d, gen, pos.index);
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
			bool mine = replica_history_closed_here(r, gen, &at), ahead = false;
			if (mine && (wal_pos_past(&end, &at) || !catalog_closed_at(&g, &end))) {
				/*
				 * Litestream sharing the meta-path went on in it from this
				 * file (replica_history_continued_since said so): this
				 * file's history, whose position the checks below compare
				 * as any other.
				 */
				int ls = replica_history_litestream_wrote_here(r, &g, &call, &err);
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
				   (lin = replica_history_index_grew(r, &g, cur - 1, prev_end, why,
								     sizeof(why), &call, &err)) != 0) {
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
					replica_older_refuse(r, why);
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
				replica_older_checked(r);
				pthread_mutex_lock(&d->mu);
				size_t others = d->older_pending;
				char names[512];
				replica_older_pending_names(d, names, sizeof(names));
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
	 * unless another replica refused the database meanwhile (replica_older_refuse_as) */
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
