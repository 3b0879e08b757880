/*
 * restore_existing.c — an existing local database against the replicas
 * (run, restore.existing: newest-wins): where it stands (litevisor's or
 * Litestream's state, else its file's time), what this node's own closed
 * marks and records say of each candidate (rs_note_own_marks, for
 * rs_choose), and whether the winner holds newer data than it
 * (rs_replica_newer), read by the same rules replication refuses the file
 * on (replica_history.c). Reads only: nothing here moves or writes a file.
 */
#include "replication/restore_int.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/lineage.h"
#include "replication/localstate.h"
#include "common/banned.h"

/* This node's closed record for candidate c (its last clean stop there), into *at. */
static bool own_closed(const struct session *s, const struct rs_cand *c, struct wal_pos *at)
{
	return s->statedir &&
	       localstate_read_closed(s->statedir, c->name, c->st ? c->st->location : NULL,
				      c->st ? c->st->description : NULL, at) == 0;
}

/*
 * The time of this node's closed mark for generation gl on candidate c: its
 * closed record there (written at its last clean stop) names gl and the
 * mark is still listed. 0 when not (no record, another generation, the
 * mark gone).
 */
static int64_t own_mark_time(const struct session *s, const struct rs_cand *c,
			     const struct cat_generation *gl)
{
	struct wal_pos at;
	if (!own_closed(s, c, &at) || strcmp(at.generation, gl->id) != 0)
		return 0;
	for (size_t i = 0; i < gl->nclosed; i++)
		if (gl->closed[i].index == at.index && gl->closed[i].offset == at.offset)
			return gl->closed[i].mtime_ns;
	return 0;
}

/*
 * Where candidate c's generation gen ends (rs_gen_end), from the session's
 * memo when its last object is the one measured before. 0 or -1 (err set).
 */
static int past_end_of(struct session *s, struct rs_cand *c, const char *gen,
		       struct wal_pos *end, char *err, size_t len)
{
	struct cat_segment last = { 0 };
	for (size_t g = 0; g < c->ngens; g++) {
		const struct cat_generation *cg = &c->gens[g];
		if (strcmp(cg->id, gen) != 0)
			continue;
		if (cg->nsegments)
			last = cg->segments[cg->nsegments - 1];
		if (cg->nsnapshots && cg->snapshots[cg->nsnapshots - 1].index > last.index)
			last = (struct cat_segment){ .index = cg->snapshots[cg->nsnapshots - 1].index,
						     .size = -1 };
	}
	for (size_t i = 0; i < s->nmemo && i < END_MEMO_MAX; i++) {
		const struct end_memo *m = &s->memo[i];
		if (!strcmp(m->replica, c->name) && !strcmp(m->generation, gen) &&
		    m->last.index == last.index && m->last.offset == last.offset &&
		    m->last.size == last.size && m->last.mtime_ns == last.mtime_ns) {
			*end = m->end;
			return 0;
		}
	}
	if (rs_gen_end(c, gen, rs_probe_wait_ms(s->cfg), end, err, len) < 0)
		return -1;
	log_debug("restore", "measured where a generation the local state records ends",
		  "db=\"%s\" replica=%s generation=%s index=%08x offset=%08x", s->dbname, c->name,
		  gen, end->index, end->offset);
	struct end_memo *m = &s->memo[s->nmemo++ % END_MEMO_MAX];
	snprintf(m->replica, sizeof(m->replica), "%s", c->name);
	snprintf(m->generation, sizeof(m->generation), "%s", gen);
	m->last = last;
	m->end = *end;
	return 0;
}

/*
 * What rs_choose weighs the local state's records with, for each candidate
 * (rs_local_past): rs_cand.own_end_ns of the local file's generation, where
 * replication's refusal rules measure "written after this node" from
 * (replica_history_continued_since with a closed record, replica_history_newer_elsewhere without
 * one), and rs_cand.past_end, where each record's generation ends there, as
 * they measure it (went_on_from).
 */
void rs_note_own_marks(struct session *s)
{
	for (size_t i = 0; i < s->n; i++) {
		struct rs_cand *c = &s->c[i];
		struct wal_pos at;
		char err[300];
		c->own_end_ns = 0;
		c->own_killed = false;
		for (size_t k = 0; k < RS_PAST_MAX; k++) {
			const struct wal_pos *p = &s->past.past[k].at;
			c->past_known[k] = false;
			if (!s->past.current[0] || !p->generation[0] || c->state != RC_OK)
				continue;
			if (c->has_data && !strcmp(c->plan.generation, p->generation) &&
			    !c->plan.end_open) {
				c->past_end[k] = c->plan.end;
				c->past_known[k] = true;
			} else if (past_end_of(s, c, p->generation, &c->past_end[k], err,
					       sizeof(err)) == 0) {
				c->past_known[k] = true;
			}
		}
		for (size_t k = 0; s->past.current[0] && c->state == RC_OK && k < c->ngens; k++) {
			if (strcmp(c->gens[k].id, s->past.current) != 0)
				continue;
			/* no closed record here and not closed at its end: killed in it */
			c->own_killed = !own_closed(s, c, &at) &&
					!catalog_closed_at_end(&c->gens[k]);
			c->own_end_ns = c->own_killed ? c->gens[k].max_ns
						      : own_mark_time(s, c, &c->gens[k]);
		}
	}
}

/*
 * Did this node close generation gl (its closed record for candidate c, at
 * *at), and does c hold a segment of gl from there on (another node's
 * writing: this node's data ended at its mark)?
 */
static bool closed_here_then_continued(const struct session *s, const struct rs_cand *c,
				       const struct cat_generation *gl, struct wal_pos *at)
{
	if (!own_closed(s, c, at) || strcmp(at->generation, gl->id) != 0)
		return false;
	for (size_t k = 0; k < gl->nsegments; k++) {
		const struct cat_segment *g = &gl->segments[k];
		if (g->index > at->index || (g->index == at->index && g->offset >= at->offset))
			return true;
	}
	return false;
}

/*
 * Does the winner hold newer data than the local database at lpos (written at
 * lt_ns; its shadow files in lsdir, "" if none)?
 */
bool rs_replica_newer(const struct session *s, const struct wal_pos *lpos, int64_t lt_ns,
		      const char *lsdir, bool *at_next, char *why, size_t len)
{
	struct rs_cand *w = &s->c[s->ch.winner];
	char a[64], b[64], err[300], before[200];
	*at_next = false;
	/* replication refused this very file at an earlier start: the engine would again */
	if (s->statedir && !strcmp(lsdir, s->statedir) &&
	    localstate_read_refused(s->statedir, s->db->path, before, sizeof(before)) == 0) {
		snprintf(why, len, "replication refused this database as older than the replica's "
			 "data at an earlier start (%s); %s holds %s", before, w->name,
			 rs_pos_text(&w->plan.end, a, sizeof(a)));
		return true;
	}
	if (strcmp(w->plan.generation, lpos->generation) == 0) {
		int cmp = wal_pos_cmp(&w->plan.end, lpos);
		snprintf(why, len, "%s holds %s, local %s", w->name,
			 rs_pos_text(&w->plan.end, a, sizeof(a)), rs_pos_text(lpos, b, sizeof(b)));
		/*
		 * A snapshot at the next index with nothing after it (another node
		 * continued from here and only snapshotted) is this very data when
		 * the replica's index ends where the local one does.
		 */
		uint64_t end;
		if (cmp > 0 && w->plan.end.offset == 0 && !w->plan.end_open &&
		    w->plan.end.index == lpos->index + 1 && lpos->offset > 0) {
			if (rs_index_end(w, lpos->generation, lpos->index, rs_probe_wait_ms(s->cfg), &end,
					 err, sizeof(err)) == 0 && end == lpos->offset) {
				snprintf(why, len, "%s holds a snapshot at %s taken where the local "
					 "database ends (%s)", w->name,
					 rs_pos_text(&w->plan.end, a, sizeof(a)),
					 rs_pos_text(lpos, b, sizeof(b)));
				*at_next = true;
				return false;
			}
		}
		/* an end from this node's own closed mark is its own history (end_by_mark) */
		if (cmp <= 0 && lsdir[0] && !w->end_by_mark) {
			/* not ahead by position: but is its last index our session at all? */
			char lw[300] = "";
			int lin = rs_lineage(w, lpos->generation, w->plan.end.index, lsdir,
					     rs_probe_wait_ms(s->cfg), lw, sizeof(lw));
			if (lin == LINEAGE_DIVERGED) {
				snprintf(why, len, "%s holds %s, local %s, but %s", w->name,
					 rs_pos_text(&w->plan.end, a, sizeof(a)),
					 rs_pos_text(lpos, b, sizeof(b)), lw);
				return true;
			}
			if (lin < 0)
				log_warn("restore", "cannot tell whether the replica continues the local "
					 "history; comparing positions only", "replica=%s err=\"%s\"",
					 w->name, lw);
		}
		return cmp > 0;
	}
	/* another generation: was it written after the local one? */
	if (s->superseded[0] && strcmp(w->plan.generation, lpos->generation) != 0) {
		snprintf(why, len, "the local generation is superseded by this node's own state: %.320s",
			 s->superseded);
		return true;
	}
	if (!strcmp(s->ch.local_newer, w->plan.generation)) {
		/* by the local state, as replication reads it (rs_choose: rs_local_past) */
		snprintf(why, len, "%s", s->ch.by_record);
		return true;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct rs_cand *c = &s->c[i];
		const struct cat_generation *gw = NULL, *gl = NULL;
		for (size_t g = 0; c->state == RC_OK && g < c->ngens; g++) {
			if (strcmp(c->gens[g].id, w->plan.generation) == 0)
				gw = &c->gens[g];
			if (strcmp(c->gens[g].id, lpos->generation) == 0)
				gl = &c->gens[g];
		}
		if (gw && gl) {
			/*
			 * This node stopped cleanly in gl and its mark is there: the
			 * winner's generation is newer when it was written after that
			 * stop, by the rule the engine refuses this file on
			 * (catalog_written_after; replica_history_continued_since). Keeping
			 * the file there left the service with replication stopped
			 * at every start (QA84 D3); the file goes aside, kept.
			 */
			bool ours = s->statedir && !strcmp(lsdir, s->statedir);
			/*
			 * The winner is the generation this node left for the local
			 * one (its "previous" record): written before, whatever its
			 * times say (a copy restamps every object, QA85 D2), and
			 * newer only where another node went on in it past where
			 * this file stood: as the engine reads it (replica_history_continued_since).
			 */
			for (size_t k = 0; ours && k < RS_PAST_MAX; k++) {
				const struct rs_past *p = &s->past.past[k];
				bool past = false;
				if (!strcmp(s->past.current, gl->id) &&
				    !strcmp(p->at.generation, gw->id) &&
				    (!(past = wal_pos_past(&w->plan.end, &p->at)) || !p->open)) {
					snprintf(why, len, "%s holds generation %s, which the local "
						 "database %s for %s at %s, %s", c->name, gw->id,
						 rs_past_how(k), gl->id,
						 rs_pos_text(&p->at, a, sizeof(a)),
						 past ? "continued since: another node went on in it"
						      : "and no further");
					return past;
				}
			}
			/*
			 * Left open at the restore (its node may have written on
			 * beside this one, replication.md) and gone on past where
			 * this file stood: newer only if written after this node's
			 * stop, which the rules below tell.
			 */
			/*
			 * This node closed the local generation at `at` and the
			 * replica holds a segment of it from there on: another node
			 * continued it (its marks replaced this node's), as the engine
			 * reads it (replica_history_continued_since). That node's later generation is
			 * newer whatever the times; the copy tie below kept the stale
			 * file, and replication refused it (QA88 F2).
			 */
			struct wal_pos at;
			if (ours && closed_here_then_continued(s, c, gl, &at)) {
				snprintf(why, len, "%s holds generation %s, which this node closed at "
					 "%s, continued past that by another node, and %s after it",
					 c->name, gl->id, rs_pos_text(&at, a, sizeof(a)), gw->id);
				return true;
			}
			int64_t mark = ours ? own_mark_time(s, c, gl) : 0;
			if (mark) {
				bool after = catalog_written_after(gw, mark);
				snprintf(why, len, "%s holds generation %s, written %s this node's "
					 "clean stop of the local %s (its closed mark)", c->name,
					 w->plan.generation, after ? "after" : "before",
					 lpos->generation);
				return after;
			}
			/*
			 * One server, one clock, but newest objects closer than
			 * RS_COPY_TIE_NS cannot be told apart (a replica copied object
			 * by object gives every object the copy's time, in whatever
			 * order it went). Tied, and both generations closed at their
			 * end (the local one by this node's clean stop, which a copy
			 * keeps): an ambiguous order, which never replaces the
			 * database. A local generation left open (this node died) or
			 * another still open (a node that took over) is the usual
			 * order: the later wins.
			 */
			int64_t d = gw->max_ns - gl->max_ns;
			if (d <= RS_COPY_TIE_NS && d >= -RS_COPY_TIE_NS && catalog_closed_at_end(gl) &&
			    catalog_closed_at_end(gw)) {
				snprintf(why, len, "%s holds generation %s and the local %s, both closed, "
					 "with newest objects %+.3f s apart: which is newer is ambiguous "
					 "(a copied replica?), keeping the local database", c->name,
					 w->plan.generation, lpos->generation, (double)d / 1e9);
				log_warn("restore", "the replica's generations cannot be told apart by "
					 "their object times: not replacing the local database on an "
					 "ambiguous order", "replica=%s generation=%s local=%s "
					 "diff_s=%+.3f", c->name, w->plan.generation, lpos->generation,
					 (double)d / 1e9);
				return false;
			}
			/* a tie to the second: catalog_gen_order */
			bool newer = catalog_gen_order(gw, gl) > 0;
			snprintf(why, len, "%s holds generation %s written %s the local %s",
				 c->name, w->plan.generation, newer ? "after" : "no later than",
				 lpos->generation);
			return newer;
		}
	}
	/*
	 * This node stopped cleanly in the local generation, and the replica its
	 * closed record is for holds it no more but holds others: another node
	 * went on, and its retention deleted it, as the engine reads it
	 * (replica_history_continued_since). Times cannot overrule that; kept, the
	 * file was refused by replication (QA86 D7).
	 */
	bool own_state = s->statedir && !strcmp(lsdir, s->statedir);
	for (size_t i = 0; own_state && lpos->generation[0] && i < s->n; i++) {
		const struct rs_cand *c = &s->c[i];
		struct wal_pos at;
		bool held = false;
		for (size_t g = 0; g < c->ngens && !held; g++)
			held = !strcmp(c->gens[g].id, lpos->generation);
		if (c->state != RC_OK || !c->ngens || held || !own_closed(s, c, &at) ||
		    strcmp(at.generation, lpos->generation) != 0)
			continue;
		snprintf(why, len, "this node closed generation %s at its last clean stop, and %s "
			 "no longer holds it but holds %zu other generation(s): another node went "
			 "on, and its retention deleted it", lpos->generation, c->name, c->ngens);
		return true;
	}
	/*
	 * The replica's server clock against ours: within the clock-skew margin
	 * the order is ambiguous and, as between replicas (section 2 of
	 * docs/restore.md), the later time still wins. Keeping the file there
	 * dropped what another node committed and shipped in the seconds after
	 * this file's last write; restoring keeps the file aside.
	 */
	int64_t skew = s->cfg->restore.clock_skew_ms * NS_PER_MS;
	int64_t d = w->plan.newest_ns - lt_ns;
	bool close = d <= skew && d >= -skew;
	snprintf(why, len, "%s holds generation %s (newest object %+.1f s from the local write%s), "
		 "local %s", w->name, w->plan.generation, (double)d / 1e9,
		 close ? ", within the clock-skew margin: the later wins" : "",
		 lpos->generation[0] ? lpos->generation : "unknown (no state)");
	if (close)
		log_warn("restore", "the local database and the replica's newest data are within the "
			 "clock-skew margin: the later time wins", "replica=%s diff_s=%+.1f margin_s=%.1f",
			 w->name, (double)d / 1e9, (double)skew / 1e9);
	return d > 0;
}

/*
 * Where the existing database stands: litevisor's state (shadow, index
 * record, restored marker) or Litestream's state directory (a node
 * migrating from it), whichever was written last, else nothing is known
 * but when the file was last written (lpos->generation ""): the replicas
 * are then compared by time, so a stale file is never kept just for lack
 * of state.
 */
void rs_existing_position(const struct cfg_db *db, const char *statedir, struct wal_pos *lpos,
			  int64_t *lt, char from[PATH_MAX])
{
	char lsdir[PATH_MAX], wal[PATH_MAX + 8];
	localstate_litestream_dir(db, lsdir, sizeof(lsdir));
	from[0] = '\0';
	dev_t dev;
	ino_t ino;
	struct stat st;
	bool other_file = localstate_clean_file_id(statedir, &dev, &ino) == 0 &&
			  stat(db->path, &st) == 0 && (st.st_dev != dev || st.st_ino != ino);
	if (other_file)
		/* its state describes the file that was there at the last stop, not this one */
		log_warn("restore", "the database file is not the one litevisor's state describes "
			 "(replaced while litevisor was stopped)", "db=\"%s\" statedir=\"%s\"",
			 db->path, statedir);
	struct wal_pos ls;
	int64_t ls_t = 0;
	bool have_ls = !other_file && strcmp(lsdir, statedir) != 0 &&
		       localstate_position(lsdir, &ls) == 0;
	if (have_ls) {
		char path[PATH_MAX + 64];
		ls_t = rs_file_mtime_ns(localstate_shadow_path(lsdir, ls.generation, ls.index, path,
							       sizeof(path)));
	}
	/*
	 * Both tools' states: the one written last describes the file (litevisor,
	 * then Litestream for a while, then litevisor again: Litestream's newer
	 * generation came from this very file, and litevisor's state predates it).
	 * litevisor's counts from its records too: one a restore just wrote has
	 * no shadow WAL yet (QA43 #3).
	 */
	int64_t state_t = 0;
	if (!other_file && rs_local_position(statedir, lpos, lt, &state_t) == 0 &&
	    !(have_ls && ls_t > state_t)) {
		snprintf(from, PATH_MAX, "%s", statedir);
		return;
	}
	if (have_ls) {
		bool newer = *lt > 0;
		*lpos = ls;
		*lt = ls_t;
		snprintf(from, PATH_MAX, "%s", lsdir);
		log_info("restore", newer ? "database exists; Litestream replicated it after "
			 "litevisor last did: comparing Litestream's position"
			 : "database exists with Litestream's state: comparing its position",
			 "db=\"%s\" generation=%s index=%08x offset=%08x", db->path, lpos->generation,
			 lpos->index, lpos->offset);
		return;
	}
	memset(lpos, 0, sizeof(*lpos));
	snprintf(wal, sizeof(wal), "%s-wal", db->path);
	int64_t a = rs_file_mtime_ns(db->path), b = rs_file_mtime_ns(wal);
	*lt = a > b ? a : b;
	/* a state there that cannot be read is said as such, naming it (QA115 O5) */
	char gpath[PATH_MAX + 16];
	struct stat gs;
	snprintf(gpath, sizeof(gpath), "%s/generation", statedir);
	if (!other_file && lstat(gpath, &gs) == 0)
		log_warn("restore", "database exists, but litevisor's state for it cannot be read "
			 "(its generation file names no generation with a shadow WAL: corrupt, or "
			 "cut short): comparing the replicas' newest data with the file's last write",
			 "db=\"%s\" file=\"%s\"", db->path, gpath);
	else
		log_warn("restore", "database exists without state to compare positions: comparing "
			 "the replicas' newest data with the file's last write",
			 "db=\"%s\" statedir=\"%s\"", db->path, statedir);
}
