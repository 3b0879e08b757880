/*
 * restore_records.c — what a restore writes into the local database's new
 * state, so that replication reads the restored file as this node's own:
 * the "restored" marker (when replication may continue the restored
 * generation), the "previous", "earlier" and "aside" records
 * (localstate.h), the database id; and the before-rename callbacks that
 * move the local database aside and put it back (rs_aside_ctx). A record
 * that cannot be written is logged and costs a new generation, never the
 * restore; only the "aside" record is a condition of replacing the file.
 */
#include "replication/restore_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "replication/localstate.h"
#include "common/banned.h"

/*
 * Does candidate c hold more of generation pos->generation than pos? 1 yes,
 * 0 no (or not that generation at all), -1 unknown (why says so). Its end
 * is exact when its plan is that generation's, measured; else its catalog
 * gives the last object, and a last segment starting before pos's offset in
 * pos's index is downloaded to measure where it ends.
 */
static int holds_more(struct rs_cand *c, const struct wal_pos *pos, int64_t wait_ms, char *why,
		      size_t len)
{
	const struct cat_generation *g = NULL;
	for (size_t i = 0; i < c->ngens; i++)
		if (!strcmp(c->gens[i].id, pos->generation))
			g = &c->gens[i];
	if (!g)
		return 0;
	if (c->has_data && !c->plan.end_open && !strcmp(c->plan.generation, pos->generation))
		return wal_pos_cmp(&c->plan.end, pos) > 0;
	uint32_t last = 0;
	for (size_t i = 0; i < g->nsnapshots; i++)
		last = g->snapshots[i].index > last ? g->snapshots[i].index : last;
	for (size_t i = 0; i < g->nsegments; i++)
		last = g->segments[i].index > last ? g->segments[i].index : last;
	if (last != pos->index)
		return last > pos->index;
	const struct cat_segment *seg = NULL;
	for (size_t i = 0; i < g->nsegments; i++)
		if (g->segments[i].index == pos->index)
			seg = &g->segments[i];
	if (!seg)
		return 0; /* a snapshot at pos's index: (index, 0) is no more than pos */
	if (seg->offset >= pos->offset)
		return 1;
	uint64_t end;
	char err[300];
	if (rs_index_end(c, pos->generation, pos->index, wait_ms, &end, err, sizeof(err)) < 0) {
		snprintf(why, len, "cannot measure where %s's index %08x ends: %.200s", c->name, pos->index,
			 err);
		return -1;
	}
	return end > pos->offset;
}

/* Does a candidate that answered hold a closed mark of pos's generation at pos? */
bool rs_closed_somewhere(const struct session *s, const struct wal_pos *pos)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct rs_cand *c = &s->c[i];
		for (size_t k = 0; c->state == RC_OK && k < c->ngens; k++)
			if (!strcmp(c->gens[k].id, pos->generation) &&
			    catalog_closed_at(&c->gens[k], pos))
				return true;
	}
	return false;
}

/*
 * May replication continue the restored generation? Only when the node that
 * wrote it closed it at the restored position (a closed mark on any replica
 * that answered, catalog.h): a node still running, still stopping, or dead
 * before its final flush may write more into it, under the same names as
 * ours, and no tool could restore the mix. Not when a replica it writes to
 * holds more of it than was restored (a stale source won while the fresher
 * one was out of reach): continuing would write our history under the same
 * names as the one already there, and the mix, whose end lies ahead, would
 * win every later restore with the other's data. Nor when such a replica did
 * not answer: it may. why says which.
 */
static bool may_continue(struct session *s, const struct wal_pos *pos, char *why, size_t len)
{
	for (size_t r = 0; r < s->db->nreplicas; r++) {
		const struct cfg_replica *rep = &s->db->replicas[r];
		const char *name = rep->name ? rep->name : "replica";
		struct rs_cand *c = NULL;
		if (rep->restore_only)
			continue; /* never written to */
		for (size_t i = 0; i < s->n; i++)
			if (s->c[i].rep == rep)
				c = &s->c[i];
		if (!c || c->state != RC_OK) {
			snprintf(why, len, "%s %s: it may hold more of generation %s", name,
				 !c ? "was not asked" : "did not answer", pos->generation);
			return false;
		}
		int more = holds_more(c, pos, rs_probe_wait_ms(s->cfg), why, len);
		if (more < 0)
			return false;
		if (more) {
			snprintf(why, len, "%s holds more of generation %s than was restored", name,
				 pos->generation);
			return false;
		}
	}
	if (rs_closed_somewhere(s, pos))
		return true;
	snprintf(why, len, "no replica shows generation %s closed where it was restored: the node "
		 "that wrote it may still be running or stopping, or it died before its final flush",
		 pos->generation);
	return false;
}

/*
 * Replication will start a new generation from the restored file: its
 * "previous" record says where the file stood in the restored one, as if
 * the engine had left it (localstate.h). Without it the restored generation
 * was nobody's past: its objects in the same whole second as this node's
 * later closed mark read as another node going on, and this node refused
 * its own file at its next start (QA88 F1). A generation not closed right
 * there (its node killed, or alive and writing: a handover-wait that ran
 * out) is recorded "open": it may go on past pos with no fault of this
 * file's, a generation of this node's own then, as replication.md says, not
 * a refusal; only its times tell whether that was after this node's stop.
 */
static void note_left(const struct session *s, const char *dir, const struct wal_pos *pos,
		      uid_t uid, gid_t gid)
{
	if (!pos->generation[0])
		return;
	bool open = !rs_closed_somewhere(s, pos);
	if (localstate_ensure(s->db, dir) < 0 ||
	    localstate_write_restored_previous(dir, pos, open, uid, gid) < 0)
		log_warn("restore", "cannot record where the restored file stands in the restored "
			 "generation", "db=\"%s\" dir=\"%s\" err=\"%s\"", s->dbname, dir,
			 strerror(errno));
}

/*
 * The generations the restore weighed and ranked below the one it restored
 * (pos), which a replica holding both lists as written after it (its
 * newest object later, or in the same whole second): each goes into the
 * new state's "earlier" records at its end then (the furthest any
 * candidate held). Replication measured "written after the restore" from
 * each replica's own copy alone: two killed forks that two servers ordered
 * each its own way made it refuse whichever the restore took, at every
 * start (QA103 D1). Recorded, such a generation is older, unless a replica
 * holds it past that end: another node went on in it since.
 */
static void note_weighed(struct session *s, const char *dir, const struct wal_pos *pos,
			 uid_t uid, gid_t gid)
{
	char seen[LOCALSTATE_EARLIER_MAX][LAYOUT_GEN_LEN + 1];
	size_t nseen = 0;
	for (size_t i = 0; i < s->n && nseen < LOCALSTATE_EARLIER_MAX; i++) {
		const struct rs_cand *c = &s->c[i];
		const struct cat_generation *w = NULL;
		for (size_t k = 0; c->state == RC_OK && k < c->ngens; k++)
			if (!strcmp(c->gens[k].id, pos->generation))
				w = &c->gens[k];
		for (size_t k = 0; w && k < c->ngens && nseen < LOCALSTATE_EARLIER_MAX; k++) {
			const struct cat_generation *g = &c->gens[k];
			bool dup = false;
			for (size_t j = 0; j < nseen && !dup; j++)
				dup = !strcmp(seen[j], g->id);
			if (g == w || dup || !catalog_written_after(g, w->max_ns))
				continue;
			memcpy(seen[nseen++], g->id, sizeof(seen[0]));
			struct wal_pos end = { 0 }, e;
			bool known = false, open = true;
			char err[300];
			for (size_t j = 0; j < s->n; j++) {
				struct rs_cand *o = &s->c[j];
				if (o->state != RC_OK || rs_gen_end(o, g->id, rs_probe_wait_ms(s->cfg), &e, err,
								     sizeof(err)) < 0)
					continue;
				if (!known || wal_pos_cmp(&e, &end) > 0)
					end = e;
				known = true;
				for (size_t x = 0; x < o->ngens; x++)
					if (!strcmp(o->gens[x].id, g->id) &&
					    catalog_closed_at_end(&o->gens[x]))
						open = false;
			}
			if (!known)
				continue;
			if (localstate_ensure(s->db, dir) < 0 ||
			    localstate_add_earlier(dir, &end, open, uid, gid) < 0)
				log_warn("restore", "cannot record a generation the restore ranked below the "
					 "restored one: replication may take it for another node's writing "
					 "since", "db=\"%s\" generation=%s err=\"%s\"", s->dbname, g->id,
					 strerror(errno));
			else
				log_info("restore", "recorded a generation ranked below the restored one, "
					 "where it ends", "db=\"%s\" generation=%s index=%08x offset=%08x",
					 s->dbname, g->id, end.index, end.offset);
		}
	}
}

void rs_note_state_id(struct session *s, const char *statedir)
{
	if (localstate_read_database_id(statedir, s->kept_id) < 0)
		s->kept_id[0] = '\0';
	if (localstate_read_generation(statedir, s->kept_gen) < 0)
		s->kept_gen[0] = '\0';
}

/* Generation gen in candidate c's listing, or NULL. */
static const struct cat_generation *listed(const struct rs_cand *c, const char *gen)
{
	for (size_t k = 0; c->state == RC_OK && k < c->ngens; k++)
		if (!strcmp(c->gens[k].id, gen))
			return &c->gens[k];
	return NULL;
}

/*
 * The id for restored generation gen, which has no label (Litestream's, an
 * older litevisor's), or NULL: docs/replication.md, "Database id". The
 * replicas' labels decide, not the local state: a state directory left at
 * this path may be another database's (QA172 O2). One id labelled on the
 * answering replicas is taken when gen was written before every generation
 * labelled there (its last write before their first, on each replica
 * holding gen, by its clock): a Litestream generation from before
 * litevisor took the replica over. Written after one,
 * it may be another database's writing here: the id is taken only when the
 * state moved aside names it too (a generation of labels alone, its data
 * deleted, is not ordered). With no label anywhere, the state's id is
 * taken when a replica holds the generation that state recorded. Labels
 * naming two ids: none.
 */
static const char *unlabelled_id(const struct session *s, const char *gen)
{
	const char *x = NULL; /* the one id the labels name */
	bool two = false, state_gen = false, compared = false, before = true;
	for (size_t i = 0; i < s->n; i++) {
		const struct rs_cand *c = &s->c[i];
		const struct cat_generation *r = listed(c, gen);
		for (size_t k = 0; c->state == RC_OK && k < c->ngens; k++) {
			const struct cat_generation *g = &c->gens[k];
			if (s->kept_gen[0] && !strcmp(g->id, s->kept_gen))
				state_gen = true;
			for (size_t l = 0; l < g->nlabels; l++) {
				if (!x)
					x = g->labels[l];
				else if (strcmp(x, g->labels[l]) != 0)
					two = true;
			}
			/* a label alone (its data deleted by hand) has no time to order by */
			if (!g->nlabels || !r || g == r || !g->max_ns)
				continue;
			compared = true;
			/* all of r before g began: its last write before g's first (QA177 D1: by
			 * last writes, a generation written during g counted as before it) */
			if (!g->min_ns || !r->max_ns || r->max_ns >= g->min_ns ||
			    catalog_written_after(r, g->min_ns))
				before = false;
		}
	}
	if (two) {
		log_warn("restore", "the replicas hold generations labelled with more than one "
			 "database id (two databases at one location?): the restored generation has "
			 "no label, and no id is kept for it; replication draws a new one",
			 "db=\"%s\" generation=%s", s->dbname, gen);
		return NULL;
	}
	if (x && compared && before)
		return x;
	if (x && s->kept_id[0] && !strcmp(x, s->kept_id))
		return x;
	if (x) {
		log_warn("restore", "the restored generation has no label and is not older than "
			 "every generation labelled with a database id this node's state does not "
			 "name: whose it is cannot be told, and no id is kept for it; replication "
			 "draws a new one, and the labelled generations are another database's",
			 "db=\"%s\" generation=%s labelled=%s", s->dbname, gen, x);
		return NULL;
	}
	return s->kept_id[0] && state_gen ? s->kept_id : NULL;
}

/*
 * The restored generation's label names this database from now on
 * (localstate.h), whether or not replication continues that generation: its
 * next generations carry the same id, and retention never takes the older
 * ones for another database's, nor a node holding an older copy the replica
 * for another database's. A generation with no label: unlabelled_id.
 */
void rs_write_database_id(struct session *s, const struct wal_pos *pos)
{
	char dir[PATH_MAX];
	uid_t uid;
	gid_t gid;

	localstate_dir(s->db, dir, sizeof(dir));
	localstate_owner(s->db, &uid, &gid);
	const char *id = NULL;
	for (size_t i = 0; i < s->n && !id; i++) {
		const struct rs_cand *c = &s->c[i];
		if (c->state == RC_OK && c->has_data && c->plan.database_id[0] &&
		    strcmp(c->plan.generation, pos->generation) == 0)
			id = c->plan.database_id;
	}
	for (size_t i = 0; i < s->n && !id; i++) {
		const struct cat_generation *g = listed(&s->c[i], pos->generation);
		if (g && g->database_id[0])
			id = g->database_id;
	}
	if (!id && pos->generation[0])
		id = unlabelled_id(s, pos->generation);
	if (s->kept_id[0] && (!id || strcmp(id, s->kept_id) != 0))
		log_warn("restore", "the database id the state moved aside named is not kept: no "
			 "replica confirms it (no generation labelled with it, nor the generation it "
			 "recorded), or the restored generation's label names another",
			 "db=\"%s\" state_id=%s kept_id=%s", s->dbname, s->kept_id,
			 id ? id : "-");
	if (id && (localstate_ensure(s->db, dir) < 0 ||
		   localstate_write_database_id(dir, id, uid, gid) < 0))
		log_warn("restore", "cannot write the database id to the local state: "
			 "replication labels its generations with a new one", "db=\"%s\" "
			 "dir=\"%s\" err=\"%s\"", s->dbname, dir, strerror(errno));
}

/*
 * Let replication continue the restored generation where it may: a marker
 * naming the candidates holding exactly pos, when it may continue the
 * generation at all; else no marker, and replication starts a new
 * generation. A marker that cannot be written costs a new generation (one
 * snapshot), never the restore: the database is in place and right.
 */
bool rs_write_marker(struct session *s, const struct wal_pos *pos)
{
	char dir[PATH_MAX], why[400];
	struct restored_marker m = { .pos = *pos };
	uid_t uid;
	gid_t gid;

	/* the state directory is new (the old one went aside): nothing older stands in for it */
	rs_write_database_id(s, pos);
	localstate_dir(s->db, dir, sizeof(dir));
	localstate_owner(s->db, &uid, &gid);
	note_weighed(s, dir, pos, uid, gid);
	if (!may_continue(s, pos, why, sizeof(why))) {
		log_warn("restore", "replication will not continue the restored generation: it "
			 "starts a new one", "db=\"%s\" why=\"%s\"", s->dbname, why);
		note_left(s, dir, pos, uid, gid);
		return false;
	}
	for (size_t i = 0; i < s->n && m.nreplicas < LOCALSTATE_MAX_REPLICAS; i++) {
		const struct rs_cand *c = &s->c[i];
		if (c->state == RC_OK && c->has_data && wal_pos_cmp(&c->plan.end, pos) == 0 &&
		    strcmp(c->plan.generation, pos->generation) == 0)
			snprintf(m.replicas[m.nreplicas++], sizeof(m.replicas[0]), "%s", c->name);
	}
	if (localstate_ensure(s->db, dir) < 0 || localstate_write_restored(dir, &m, uid, gid) < 0) {
		int e = errno;
		localstate_clear_restored(dir); /* no older one may stand in for it */
		log_warn("restore", "cannot write the restored marker: replication will start a new "
			 "generation", "db=\"%s\" dir=\"%s\" err=\"%s\"", s->dbname, dir, strerror(e));
		note_left(s, dir, pos, uid, gid);
		return false;
	}
	return true;
}

/*
 * The restore replaces a file of this node's own (its state in from) that
 * stood at *lpos in another generation: that generation is now the past of
 * the file restored, and the new state's "aside" record says so. A replica
 * holding it newer than its own copy of the restored generation (this
 * node's fork there, which the restore ranked older) made replication
 * refuse the restored file at every start (QA95 D1, D3). It stays another
 * node's, and newer, if a replica holds it past *lpos. Written once the old
 * state is aside and before the restored file takes its place: written
 * after, a crash or a full state disk lost it, replication refused the
 * restored file, and the next start restored this node's stale fork (QA104
 * D2). 0 (*wrote: a record was written), or -1 (errno set).
 */
static int note_set_aside(const struct session *s, const struct wal_pos *lpos, const char *from,
			  bool *wrote)
{
	char dir[PATH_MAX];
	uid_t uid;
	gid_t gid;
	*wrote = false;
	if (!lpos->generation[0] || !s->statedir || strcmp(from, s->statedir) != 0 ||
	    !strcmp(lpos->generation, s->ch.generation))
		return 0;
	localstate_dir(s->db, dir, sizeof(dir));
	localstate_owner(s->db, &uid, &gid);
	if (localstate_ensure(s->db, dir) < 0 ||
	    localstate_write_aside(dir, lpos, !rs_closed_somewhere(s, lpos), uid, gid) < 0)
		return -1;
	*wrote = true;
	return 0;
}

/* The "aside" record written for a restore that did not take place: gone again. */
static void unnote_set_aside(struct rs_aside_ctx *x)
{
	char path[PATH_MAX];
	if (!x->wrote_aside)
		return;
	snprintf(path, sizeof(path), "%s/aside", x->statedir);
	(void)unlink(path);
	(void)rmdir(x->statedir); /* made for it (not a mount point, nothing else in it) */
	x->wrote_aside = false;
}

/* Before the rename: the restored file must be this database; then the local one goes aside. */
int rs_move_local_cb(void *p, const char *tmp, char *why, size_t len)
{
	struct rs_aside_ctx *x = p;
	char how[400] = "";
	/*
	 * The replica's data continues the local database's own generation: its
	 * history, whatever its app did to the schema since (an upgrade on the
	 * other node that added full-text tables, a new application_id).
	 */
	const struct rs_cand *c = x->s->applying;
	bool own = c && x->lpos->generation[0] && !strcmp(c->plan.generation, x->lpos->generation);
	/* the generation's label against the local database's id (layout.h): the same id is
	 * the same database; another one, most likely another database's */
	char local_id[LAYOUT_DBID_LEN + 1];
	bool ids = c && c->plan.database_id[0] &&
		   localstate_read_database_id(x->statedir, local_id) == 0;
	if (ids && !strcmp(local_id, c->plan.database_id))
		own = true;
	int same = own ? 1 : rs_same_database(x->target, tmp, ids ? c->plan.database_id : NULL,
					      how, sizeof(how));
	if (same == 0) {
		snprintf(why, len, "the replica's database is not this database: %s. Two databases "
			 "must not share a replica location (a path copied from another database's "
			 "config?): the local database is kept and nothing is restored", how);
		return -1;
	}
	if (same < 0)
		log_warn("restore", "cannot compare the replica's database with the local one; "
			 "replacing it", "db=\"%s\" error=\"%s\"", x->target, how);
	if (rs_move_local_aside(x->target, x->statedir, x->moved, x->mlen, x->smoved, x->slen) < 0) {
		snprintf(why, len, "could not make room at %s: moving the local database aside "
			 "failed: %s", x->target, strerror(errno));
		return -2;
	}
	if (note_set_aside(x->s, x->lpos, x->from, &x->wrote_aside) < 0) {
		snprintf(why, len, "cannot record in %s where the database moved aside stood (%s): "
			 "without it, replication would take that generation for another node's and "
			 "refuse the restored file; the local database is put back", x->statedir,
			 strerror(errno));
		x->wrote_aside = true; /* it may be in place all the same (its directory's sync failed) */
		unnote_set_aside(x);
		rs_put_local_back(x->target, x->moved, x->statedir, x->smoved,
				  "the state directory could not take a record");
		x->moved[0] = x->smoved[0] = '\0';
		return -2;
	}
	return 0;
}

/* The restored file could not take the local database's place: the local one goes back. */
void rs_put_local_back_cb(void *p)
{
	struct rs_aside_ctx *x = p;
	unnote_set_aside(x);
	rs_put_local_back(x->target, x->moved, x->statedir, x->smoved,
			  "the restored database could not take its place");
	x->moved[0] = x->smoved[0] = '\0';
}
