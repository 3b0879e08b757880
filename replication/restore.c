/*
 * restore.c — the two ways in (restore_db_for_run for `run`,
 * restore_explicit for `litevisor restore`), the local database, the
 * fallback loop and the "restored" marker. The pieces are in restore_*.c
 * (see restore_int.h).
 */
#include "replication/restore_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "replication/db.h"
#include "replication/lineage.h"
#include "replication/localstate.h"
#include "replication/opstats.h"
#include "common/banned.h"

const char *restore_outcome_name(enum restore_outcome o)
{
	switch (o) {
	case RESTORE_RESTORED: return "restored";
	case RESTORE_EXISTS: return "exists";
	case RESTORE_EMPTY: return "empty";
	case RESTORE_NO_DATA: return "no-data";
	case RESTORE_UNREACHABLE: return "unreachable";
	case RESTORE_FAILED: return "failed";
	}
	return "?";
}

static const char *mode_name(enum restore_mode m)
{
	return m == RESTORE_ALL ? "all" : m == RESTORE_QUORUM ? "quorum" : "freshest-reachable";
}

static void result_set(struct restore_result *res, enum restore_outcome o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void result_set(struct restore_result *res, enum restore_outcome o, const char *fmt, ...)
{
	va_list ap;
	res->outcome = o;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
}

/*
 * The end of a record's generation on one replica, measured by downloading
 * its last segment (rs_gen_end), kept for the session's later probes (a
 * handover wait probes every second): the same last object (key, size,
 * time) ends at the same place.
 */
#define END_MEMO_MAX 32
struct end_memo {
	char replica[64];
	char generation[LAYOUT_GEN_LEN + 1];
	struct cat_segment last; /* the generation's last segment, or its snapshot's index alone */
	struct wal_pos end;
};

struct session {
	const struct config *cfg;
	const struct cfg_db *db;
	const char *dbname;
	/*
	 * The candidates: the one thing a session owns (session_release).
	 * session_again copies everything else; an owned field added here
	 * must be handled in both.
	 */
	struct rs_cand *c;
	size_t n;
	struct rs_target t;
	struct rs_choice ch;
	bool quiet;  /* re-probes of a handover wait: their decision blocks are not logged */
	const char *statedir; /* the local database's state, when it exists (rs_probe_opts) */
	struct rs_local_past past; /* its records, when its state is litevisor's */
	char superseded[400];      /* why that state ranks another generation above the local
				      file's: the newest of the others is restored (t.exclude) */
	char only_gen[LAYOUT_GEN_LEN + 1]; /* t.generation of a probe again for the winner's
					      generation alone (more_elsewhere) */
	struct end_memo memo[END_MEMO_MAX]; /* record generations' ends measured (past_end_of) */
	size_t nmemo;
	const struct rs_cand *applying; /* the candidate apply_with_fallback is restoring */
};

static void session_release(struct session *s)
{
	for (size_t i = 0; i < s->n; i++)
		rs_cand_release(&s->c[i]);
	free(s->c);
	s->c = NULL;
	s->n = 0;
}

/* A session over the same database, records and memo as s, with no candidates yet. */
static struct session session_again(const struct session *s)
{
	struct session o = *s;
	o.c = NULL;
	o.n = 0;
	o.applying = NULL;
	return o;
}

/* How many answers the mode needs before it settles: 0 for freshest-reachable. */
static size_t answers_needed(const struct session *s)
{
	const struct cfg_restore *rc = &s->cfg->restore;
	if (rc->mode == RESTORE_QUORUM)
		return (size_t)(rc->quorum > 0 ? rc->quorum : 1);
	return rc->mode == RESTORE_ALL ? s->n : 0;
}

/*
 * Open every candidate (optionally only the one named only), probe and choose;
 * measure_all: know every candidate's exact end (else only where it ranks). 0 or -1.
 */
static void log_decision(const struct session *s)
{
	rs_log_decision(s->c, s->n, &s->ch, s->cfg->restore.clock_skew_ms, s->dbname,
			mode_name(s->cfg->restore.mode));
	/* the local database's id against the chosen generation's label: the choice stays */
	char local[LAYOUT_DBID_LEN + 1];
	const struct rs_cand *w = s->ch.winner >= 0 ? &s->c[s->ch.winner] : NULL;
	if (w && w->has_data && w->plan.database_id[0] && s->statedir &&
	    localstate_read_database_id(s->statedir, local) == 0 &&
	    strcmp(local, w->plan.database_id) != 0)
		log_warn("restore", "the chosen generation is labelled with another database id than "
			 "the local database's: another database's replica may point at this location "
			 "(a path copied from another job's config?)", "db=\"%s\" replica=%s "
			 "generation=%s database_id=%s local_database_id=%s", s->dbname, w->name,
			 w->plan.generation, w->plan.database_id, local);
}

static void note_own_marks(struct session *s);

/*
 * The last segment of generation gen as candidate c lists it, or NULL; with
 * a point in time (t), the last one a restore to it could apply (at or
 * before its index or timestamp, as rs_plan_build reads them; for a
 * candidate the whole-second cut moved, at or before what it surely stored).
 */
static const struct cat_segment *last_segment(const struct rs_cand *c, const char *gen,
					      const struct rs_target *t)
{
	for (size_t k = 0; k < c->ngens; k++) {
		const struct cat_generation *g = &c->gens[k];
		if (strcmp(g->id, gen) != 0)
			continue;
		for (size_t i = g->nsegments; i-- > 0;) {
			const struct cat_segment *s = &g->segments[i];
			int64_t ts = c->cut_ns ? c->cut_ns : t->timestamp_ns;
			if ((t->has_index && s->index > t->index) ||
			    (ts && s->mtime_ns + g->clock_offset_ns > ts))
				continue;
			return s;
		}
		return NULL;
	}
	return NULL;
}

/*
 * Does a candidate whose plan is another generation list the winner's
 * generation past the winner's end (a segment starting there or later; at
 * an end only known as a lower bound, later), or a last segment starting
 * where the winner's does but of another size (one replica shipped more of
 * that segment before its node died: only its length tells)? With a point
 * in time, only segments a restore to it could apply count: those past it
 * would change nothing, and the probe again only said it did.
 */
static bool more_elsewhere(const struct session *s)
{
	const struct rs_cand *w = &s->c[s->ch.winner];
	const struct cat_segment *wl = last_segment(w, w->plan.generation, &s->t);
	for (size_t i = 0; i < s->n; i++) {
		const struct rs_cand *c = &s->c[i];
		if (c == w || c->state != RC_OK ||
		    (c->has_data && !strcmp(c->plan.generation, w->plan.generation)))
			continue;
		const struct cat_segment *l = last_segment(c, w->plan.generation, &s->t);
		if (!l)
			continue;
		struct wal_pos at = { .index = l->index, .offset = l->offset };
		memcpy(at.generation, w->plan.generation, sizeof(at.generation));
		int cmp = wal_pos_cmp(&at, &w->plan.end);
		if (cmp > 0 || (cmp == 0 && !w->plan.end_open))
			return true;
		if (wl && !rs_target_pit(&s->t) && wl->index == l->index && wl->offset == l->offset &&
		    wl->size != l->size)
			return true;
	}
	return false;
}

static int session_probe(struct session *s, const char *only, bool measure_all,
			 struct restore_result *res)
{
	const struct cfg_restore *rc = &s->cfg->restore;
	s->c = calloc(s->db->nreplicas + 1, sizeof(*s->c));
	if (!s->c) {
		result_set(res, RESTORE_FAILED, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < s->db->nreplicas; i++) {
		const struct cfg_replica *r = &s->db->replicas[i];
		const char *name = r->name ? r->name : "replica";
		if (only && strcmp(only, name) != 0)
			continue;
		struct rs_cand *c = &s->c[s->n++];
		struct st_error err = { 0 };
		c->rep = r;
		snprintf(c->name, sizeof(c->name), "%s", name);
		c->carried = opstats_slot(s->db, r);
		c->st = storage_open(r, &err);
		if (!c->st) {
			c->state = RC_ERROR;
			snprintf(c->error, sizeof(c->error), "%s", err.message);
		}
	}
	if (s->n == 0 && only) {
		result_set(res, RESTORE_FAILED, "no replica named \"%s\"", only);
		return -1;
	}
	if (s->n == 0) {
		/* none holds data, as Litestream reads it: -if-replica-exists passes */
		result_set(res, RESTORE_NO_DATA, "no replicas configured");
		return -1;
	}
	struct rs_probe_opts po = {
		.probe_timeout_ms = rc->probe_timeout_ms > 0 ? rc->probe_timeout_ms : 1000,
		.mode = rc->mode,
		.quorum = rc->quorum > 0 ? rc->quorum : 1,
		.wait_timeout_ms = rc->wait_timeout_ms,
		.target = &s->t,
		.statedir = s->statedir,
	};
	rs_probe_all(s->c, s->n, &po);
	if (rs_plans_whole_second_cut(s->c, s->n, &s->t) && !s->quiet)
		log_info("restore", "-timestamp: replicas keeping whole-second times are read only "
			 "up to what they surely stored by it (a second before), since another keeps "
			 "finer times and cuts exactly there", "db=\"%s\"", s->dbname);
	if (!restore_aborted())
		rs_measure_ends(s->c, s->n, measure_all, &po);
	if (restore_aborted()) { /* a stop while probing: nothing written yet */
		result_set(res, RESTORE_FAILED, "interrupted before writing anything");
		return -1;
	}
	note_own_marks(s);
	rs_choose(s->c, s->n, rc->clock_skew_ms, s->t.timestamp_ns,
		  s->past.current[0] ? &s->past : NULL, s->dbname, mode_name(rc->mode),
		  answers_needed(s), &s->ch);
	/*
	 * A candidate whose own newest is another generation may hold more of the
	 * winner's than the winner does: planned on its own newest, its copy was
	 * never weighed, and the restore took less than there is (and replication
	 * then found the rest written "after" it). Probed again for that
	 * generation alone, every copy of it counts.
	 */
	if (s->ch.winner >= 0 && !s->t.generation && more_elsewhere(s)) {
		memcpy(s->only_gen, s->c[s->ch.winner].plan.generation, sizeof(s->only_gen));
		log_info("restore", "another candidate holds more of the newest generation than "
			 "the one that listed it newest: weighing every copy of it", "db=\"%s\" "
			 "generation=%s", s->dbname, s->only_gen);
		session_release(s);
		s->t.generation = s->only_gen;
		int rc2 = session_probe(s, only, measure_all, res);
		s->t.generation = NULL;
		return rc2;
	}
	if (!s->quiet)
		log_decision(s);
	return 0;
}

/* Did enough candidates answer for the mode to settle on "nothing there"? */
static bool enough_answered(const struct session *s)
{
	if (s->cfg->restore.mode == RESTORE_QUORUM)
		return s->ch.answered >= answers_needed(s);
	return s->ch.answered == s->n;
}

/* Quorum mode settled on "nothing there": a quorum answered, none holds data. */
static bool quorum_says_empty(const struct session *s)
{
	return s->cfg->restore.mode == RESTORE_QUORUM && s->ch.winner < 0 &&
	       s->ch.with_data == 0 && s->ch.unfinished == 0 && s->ch.data_failing == 0 &&
	       enough_answered(s);
}

/*
 * What not settling for want of candidates is: a temporary failure, unless
 * every one of them answered and its newest data failed for good (a corrupt
 * last segment): the restore fails, as applying that segment would have
 * (QA128 D2: -dry-run, or two replicas of the generation, said 111 for what
 * a restore from one said 1).
 */
static enum restore_outcome unreachable_outcome(const struct session *s)
{
	return s->ch.corrupt > 0 && s->ch.corrupt == s->ch.unreachable ? RESTORE_FAILED
									: RESTORE_UNREACHABLE;
}

/* Strict modes refuse to settle on data while too few candidates answered. */
static bool strict_unsettled(const struct session *s)
{
	if (s->cfg->restore.mode == RESTORE_FRESHEST_REACHABLE)
		return false;
	return !enough_answered(s);
}

/* The first user error a candidate reported (e.g. -index past the end), or NULL. */
static const char *plan_error(const struct session *s)
{
	if (s->ch.blocked >= 0 && strstr(s->c[s->ch.blocked].nodata, "past the end"))
		return s->c[s->ch.blocked].nodata;
	for (size_t i = 0; i < s->n; i++)
		if (s->c[i].state == RC_OK && !s->c[i].has_data && strstr(s->c[i].nodata, "past the end"))
			return s->c[i].nodata;
	return NULL;
}

/*
 * Why a candidate's newer generation blocked the winner (rs_choice.blocked);
 * else, for a restore asked for a generation or a point: why the first
 * candidate that answered has nothing for it ("generation G has no snapshot
 * …"), or NULL. Without such a request, none has data is the first deploy's
 * plain case.
 */
static const char *no_data_why(const struct session *s)
{
	if (s->ch.blocked >= 0)
		return s->c[s->ch.blocked].nodata;
	if (!s->t.generation && !rs_target_pit(&s->t))
		return NULL;
	for (size_t i = 0; i < s->n; i++)
		if (s->c[i].state == RC_OK && !s->c[i].has_data && s->c[i].nodata[0])
			return s->c[i].nodata;
	return NULL;
}

/*
 * The replica's own closed mark of the generation restored lies past what it
 * holds: its writer stopped cleanly having stored more there, and objects
 * were lost since (a server that did not keep a PUT, a hand clean-up). The
 * restore is the most that is left; say so (QA128 O1).
 */
static void warn_closed_past(const struct rs_cand *c, const struct wal_pos *end)
{
	for (size_t k = 0; k < c->ngens; k++) {
		const struct cat_generation *g = &c->gens[k];
		if (strcmp(g->id, end->generation) != 0 || !g->nclosed)
			continue;
		const struct cat_closed *m = &g->closed[g->nclosed - 1];
		struct wal_pos at = { .index = m->index, .offset = m->offset };
		/* (index + 1, 0) is where index ends: no more */
		if (wal_pos_cmp(&at, end) > 0 && !(m->offset == 0 && m->index == end->index + 1))
			log_warn("restore", "the replica holds less of the generation than its writer "
				 "stored there when it stopped cleanly (its closed mark): objects were "
				 "lost since; restored what is left", "replica=%s generation=%s "
				 "restored_to=%08x/%08x closed_at=%08x/%08x", c->name, g->id,
				 end->index, end->offset, m->index, m->offset);
		return;
	}
}

/* Try the winner, then each candidate holding the same data. Fills res. 0 or -1. */
static int apply_with_fallback(struct session *s, struct rs_apply_opts *ao,
			       struct restore_result *res)
{
	char err[512] = "", first[512] = "";
	bool all_transient = true;
	int tried = 0;

	for (int rank = 0;; rank++) {
		struct rs_cand *c = NULL;
		for (size_t i = 0; i < s->n; i++)
			if (s->c[i].rank == rank && (rank == 0 || s->c[i].fallback_ok))
				c = &s->c[i];
		if (!c)
			break;
		if (tried)
			log_warn("restore", "falling back to the next candidate with the same data",
				 "replica=%s previous_error=\"%s\"", c->name, err);
		tried++;
		ao->last_candidate = true;
		for (size_t i = 0; i < s->n; i++)
			if (s->c[i].rank > rank && s->c[i].fallback_ok)
				ao->last_candidate = false;
		enum rs_cause cause;
		s->applying = c;
		if (rs_apply(c, ao, &res->pos, err, sizeof(err), &cause) == 0) {
			/* applying found the end exactly (the marker compares with it) */
			c->plan.end = res->pos;
			c->plan.end_open = false;
			if (!rs_target_pit(&s->t))
				warn_closed_past(c, &res->pos);
			snprintf(res->source, sizeof(res->source), "%s", c->name);
			result_set(res, RESTORE_RESTORED, "restored from %s%s", c->name,
				   tried > 1 ? " after falling back" : "");
			return 0;
		}
		log_error("restore", "restore from candidate failed", "replica=%s err=\"%s\"",
			  c->name, err);
		if (cause == RS_CAUSE_LOCAL) {
			/* no other candidate can help: say it is ours, not the replica's */
			result_set(res, RESTORE_FAILED, "cannot restore into %s: %s", ao->target, err);
			return -1;
		}
		if (!first[0])
			snprintf(first, sizeof(first), "%s", err);
		all_transient = all_transient && cause == RS_CAUSE_NETWORK;
	}
	result_set(res, RESTORE_FAILED, "%d candidate(s) with the newest data failed (first: %s)%s",
		   tried, first, "; candidates with less data are not used without -replica");
	res->temporary = all_transient;
	return -1;
}

/* How long a download made while probing may take (as rs_measure_ends allows). */
static int64_t probe_wait_ms(const struct config *cfg)
{
	int64_t p = cfg->restore.probe_timeout_ms > 0 ? cfg->restore.probe_timeout_ms : 1000;
	return cfg->restore.wait_timeout_ms > p ? cfg->restore.wait_timeout_ms : p;
}

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
static bool closed_somewhere(const struct session *s, const struct wal_pos *pos)
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
		int more = holds_more(c, pos, probe_wait_ms(s->cfg), why, len);
		if (more < 0)
			return false;
		if (more) {
			snprintf(why, len, "%s holds more of generation %s than was restored", name,
				 pos->generation);
			return false;
		}
	}
	if (closed_somewhere(s, pos))
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
	bool open = !closed_somewhere(s, pos);
	if (localstate_ensure(s->db, dir) < 0 ||
	    localstate_write_restored_previous(dir, pos, open, uid, gid) < 0)
		log_warn("restore", "cannot record where the restored file stands in the restored "
			 "generation", "db=\"%s\" dir=\"%s\" err=\"%s\"", s->dbname, dir,
			 strerror(errno));
}

/*
 * Let replication continue the restored generation where it may: a marker
 * naming the candidates holding exactly pos, when it may continue the
 * generation at all; else no marker, and replication starts a new
 * generation. A marker that cannot be written costs a new generation (one
 * snapshot), never the restore: the database is in place and right.
 */
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
				if (o->state != RC_OK || rs_gen_end(o, g->id, probe_wait_ms(s->cfg), &e, err,
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

static bool write_marker(struct session *s, const struct wal_pos *pos)
{
	char dir[PATH_MAX], why[400];
	struct restored_marker m = { .pos = *pos };
	uid_t uid;
	gid_t gid;

	/*
	 * The restored generation's label names this database from now on
	 * (localstate.h), whether or not replication continues that generation:
	 * its next generations carry the same id, and retention here never takes
	 * the older ones for another database's. The state directory is new (the
	 * old one went aside), so nothing older stands in for it.
	 */
	localstate_dir(s->db, dir, sizeof(dir));
	localstate_owner(s->db, &uid, &gid);
	for (size_t i = 0; i < s->n; i++) {
		const struct rs_cand *c = &s->c[i];
		if (c->state != RC_OK || !c->has_data || !c->plan.database_id[0] ||
		    strcmp(c->plan.generation, pos->generation) != 0)
			continue;
		if (localstate_ensure(s->db, dir) < 0 ||
		    localstate_write_database_id(dir, c->plan.database_id, uid, gid) < 0)
			log_warn("restore", "cannot write the database id to the local state: "
				 "replication labels its generations with a new one", "db=\"%s\" "
				 "dir=\"%s\" err=\"%s\"", s->dbname, dir, strerror(errno));
		break;
	}
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
	    localstate_write_aside(dir, lpos, !closed_somewhere(s, lpos), uid, gid) < 0)
		return -1;
	*wrote = true;
	return 0;
}

struct aside_ctx {
	const char *target, *statedir;
	char *moved, *smoved;
	size_t mlen, slen;
	const struct session *s;
	const struct wal_pos *lpos; /* the local database's position */
	const char *from;           /* the state it came from (local_position) */
	bool wrote_aside;           /* the new state's "aside" record (note_set_aside) */
};

/* The "aside" record written for a restore that did not take place: gone again. */
static void unnote_set_aside(struct aside_ctx *x)
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
static int move_local_cb(void *p, const char *tmp, char *why, size_t len)
{
	struct aside_ctx *x = p;
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
static void put_local_back_cb(void *p)
{
	struct aside_ctx *x = p;
	unnote_set_aside(x);
	rs_put_local_back(x->target, x->moved, x->statedir, x->smoved,
			  "the restored database could not take its place");
	x->moved[0] = x->smoved[0] = '\0';
}

static void apply_opts_init(struct rs_apply_opts *ao, const struct config *cfg, const char *target,
			    int parallelism)
{
	memset(ao, 0, sizeof(*ao));
	ao->target = target;
	ao->parallelism = parallelism > 0 ? parallelism
					  : (cfg->restore.parallelism > 0 ? cfg->restore.parallelism : 8);
	ao->verify = cfg->restore.verify;
	rs_owner_for(cfg, target, &ao->uid, &ao->gid, &ao->mode);
}

/*
 * Split the directory of target at the nearest ancestor that exists: its
 * path in anc, its stat in *st, and where the missing part starts in dir
 * (a copy of target's directory; *missing is "" when it exists). 0, or -1
 * (errno set, anc names what could not be looked at).
 */
static int nearest_ancestor(const char *target, char *dir, size_t dlen, char *anc, size_t alen,
			    char **missing, struct stat *st)
{
	snprintf(dir, dlen, "%s", target);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, dlen, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	size_t n = strlen(dir);
	for (;;) {
		snprintf(anc, alen, "%.*s", (int)n, dir);
		if (stat(anc, st) == 0) {
			*missing = dir + n + (dir[n] == '/');
			while (**missing == '/')
				(*missing)++;
			return 0;
		}
		if (errno != ENOENT && errno != ENOTDIR) /* ENOTDIR: look for the file on the way */
			return -1;
		while (n > 0 && dir[n - 1] != '/') /* up one component */
			n--;
		if (n == 0) { /* a relative path: "." exists */
			snprintf(anc, alen, ".");
			*missing = dir;
			return stat(anc, st);
		}
		while (n > 1 && dir[n - 1] == '/')
			n--;
	}
}

/*
 * Can target's directory be made? A parent that is a file (-o afile/x.db) is
 * an error naming it, found before anything is probed or written. 0 or -1.
 */
static int check_parent(const char *target, struct restore_result *res)
{
	char dir[PATH_MAX], anc[PATH_MAX];
	char *missing;
	struct stat st;
	if (nearest_ancestor(target, dir, sizeof(dir), anc, sizeof(anc), &missing, &st) < 0) {
		result_set(res, RESTORE_FAILED, "cannot restore to %s: %s: %s", target, anc,
			   strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		result_set(res, RESTORE_FAILED, "cannot restore to %s: %s is not a directory (%s)",
			   target, anc, strerror(ENOTDIR));
		return -1;
	}
	return 0;
}

/*
 * Create the directories that will hold target (a fresh disk has none).
 * Each one gets the owner the file gets (the configured user, else, as root,
 * the owner of the nearest existing directory: see rs_owner_for) and that
 * directory's permissions, so the file and its directories come out as they
 * would in an existing directory of that owner and mode. Never
 * world-writable nor sticky: a shared place like /tmp is no model for a
 * database's directory. Created 0700, then given away through the open
 * directory (never by name: its parent may belong to another user).
 * made_top gets the first directory created ("" if none) for undo_parent().
 */
static int ensure_parent(const struct rs_apply_opts *ao, struct restore_result *res,
			 char made_top[PATH_MAX])
{
	char dir[PATH_MAX], anc[PATH_MAX];
	char *missing;
	struct stat st;
	int pfd = -1, rc = -1;

	made_top[0] = '\0';
	if (nearest_ancestor(ao->target, dir, sizeof(dir), anc, sizeof(anc), &missing, &st) < 0) {
		result_set(res, RESTORE_FAILED, "cannot create directory %s: %s: %s", dir, anc,
			   strerror(errno));
		return -1;
	}
	if (!*missing)
		return 0;
	mode_t mode = st.st_mode & (S_ISGID | 0777) & ~(mode_t)S_IWOTH;
	if ((pfd = open(anc, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		result_set(res, RESTORE_FAILED, "cannot create directory %s: %s: %s", dir, anc,
			   strerror(errno));
		return -1;
	}
	for (char *p = missing; *p;) {
		char *end = p + strcspn(p, "/");
		char c = *end;
		*end = '\0';
		bool made = mkdirat(pfd, p, 0700) == 0;
		int fd = made || errno == EEXIST
				 ? openat(pfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
		if (fd < 0 ||
		    (made && (ao->uid != (uid_t)-1 || ao->gid != (gid_t)-1) &&
		     fchown(fd, ao->uid, ao->gid) < 0) ||
		    (made && (fchmod(fd, mode) < 0 || fsync(pfd) < 0))) {
			result_set(res, RESTORE_FAILED, "cannot create directory %s: %s", dir,
				   strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		if (made && !made_top[0])
			snprintf(made_top, PATH_MAX, "%s", dir);
		if (made)
			log_info("restore", "created directory", "path=\"%s\" uid=%ld gid=%ld mode=%04o",
				 dir, (long)(ao->uid == (uid_t)-1 ? geteuid() : ao->uid),
				 (long)(ao->gid == (gid_t)-1 ? getegid() : ao->gid), (unsigned)mode);
		close(pfd);
		pfd = fd;
		*end = c;
		p = end;
		while (*p == '/')
			p++;
	}
	rc = 0;
out:
	if (pfd >= 0)
		close(pfd);
	return rc;
}

/*
 * A failed restore leaves nothing behind: remove the directories
 * ensure_parent() created for target, deepest first, up to made_top. rmdir
 * only: a directory something else wrote into since stays.
 */
static void undo_parent(const char *target, const char *made_top)
{
	char dir[PATH_MAX];
	if (!made_top[0] || snprintf(dir, sizeof(dir), "%s", target) >= (int)sizeof(dir))
		return;
	for (;;) {
		char *slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			return;
		*slash = '\0';
		if (rmdir(dir) < 0 && errno != ENOENT) { /* ENOENT: made no deeper than this */
			log_warn("restore", "cannot remove a directory made for the failed restore",
				 "path=\"%s\" error=\"%s\"", dir, strerror(errno));
			return;
		}
		if (strcmp(dir, made_top) == 0)
			return;
	}
}

/* ensure_parent(), then apply_with_fallback(); a failure takes the directories back. */
static int apply_in_place(struct session *s, struct rs_apply_opts *ao,
			  struct restore_result *res)
{
	char made_top[PATH_MAX];
	if (ensure_parent(ao, res, made_top) < 0) {
		undo_parent(ao->target, made_top);
		return -1;
	}
	if (apply_with_fallback(s, ao, res) < 0) {
		undo_parent(ao->target, made_top);
		return -1;
	}
	return 0;
}

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
	if (rs_gen_end(c, gen, probe_wait_ms(s->cfg), end, err, len) < 0)
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
 * (replica.c: continued_since with a closed record, newer_elsewhere without
 * one), and rs_cand.past_end, where each record's generation ends there, as
 * they measure it (went_on_from).
 */
static void note_own_marks(struct session *s)
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
static bool replica_newer(const struct session *s, const struct wal_pos *lpos, int64_t lt_ns,
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
			if (rs_index_end(w, lpos->generation, lpos->index, probe_wait_ms(s->cfg), &end,
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
					     probe_wait_ms(s->cfg), lw, sizeof(lw));
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
			 * (catalog_written_after; replica.c, continued_since). Keeping
			 * the file there left the service with replication stopped
			 * at every start (QA84 D3); the file goes aside, kept.
			 */
			bool ours = s->statedir && !strcmp(lsdir, s->statedir);
			/*
			 * The winner is the generation this node left for the local
			 * one (its "previous" record): written before, whatever its
			 * times say (a copy restamps every object, QA85 D2), and
			 * newer only where another node went on in it past where
			 * this file stood: as the engine reads it (continued_since).
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
			 * reads it (continued_since). That node's later generation is
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
	 * (replica.c, continued_since). Times cannot overrule that; kept, the
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
static void local_position(const struct cfg_db *db, const char *statedir, struct wal_pos *lpos,
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

/*
 * Nothing to restore from (no winner), or a strict mode short of answers:
 * may the service start on what is there (nothing: EMPTY; the existing
 * database: EXISTS), or not (UNREACHABLE)? Only when every candidate
 * answered (or a quorum did, in quorum mode) and none holds data, or when
 * allow-empty-when-unreachable says so: a candidate that did not answer may
 * hold newer data than an existing database as much as it may hold data at
 * all. Returns 0 (may start) or -1, with res set.
 */
static int settle_unrestored(struct session *s, bool exists, struct restore_result *res)
{
	const struct cfg_restore *rc = &s->cfg->restore;
	enum restore_outcome ok = exists ? RESTORE_EXISTS : RESTORE_EMPTY;
	const char *what = exists ? "keeping the existing database" : "starting empty";
	/*
	 * One still listing when the wait ended answered: it is no "unreachable"
	 * to start without. Nor is one that listed data whose last segment failed
	 * (QA131 D2: allow-empty-when-unreachable started empty beside it).
	 */
	bool none = s->ch.winner < 0 && s->ch.with_data == 0 && s->ch.unfinished == 0 &&
		    s->ch.data_failing == 0;

	if (none && s->ch.unreachable == 0) {
		result_set(res, ok, "%severy candidate answered, none holds data; %s",
			   exists ? "" : "first deploy: ", what);
		return 0;
	}
	if (quorum_says_empty(s)) {
		result_set(res, ok, "a quorum (%zu) answered and none holds data; %s",
			   s->ch.answered, what);
		return 0;
	}
	if (none && rc->allow_empty_unreachable) {
		result_set(res, ok, "%zu of %zu candidates unreachable, none reachable holds data; "
			   "%s (allow-empty-when-unreachable)", s->ch.unreachable, s->n, what);
		return 0;
	}
	result_set(res, unreachable_outcome(s), "%zu of %zu candidates unreachable or failing%s%s",
		   s->ch.unreachable, s->n,
		   s->ch.winner >= 0 ? " (mode needs more answers)"
				     : exists ? "; they might hold newer data than the existing "
						"database: not starting on it; "
					      : "; they might hold data: not starting empty; ",
		   s->ch.winner >= 0 ? "" : s->ch.why);
	for (size_t i = 0; i < s->n; i++)
		if (s->c[i].state == RC_ERROR && s->c[i].foreign_form) {
			log_error("restore", exists ?
				  "a replica's age: settings changed since its newest generation was "
				  "written (encryption turned on or off, or keys rotated without the "
				  "old identity), and this node is not the one that last stopped "
				  "writing it cleanly, so where it ends is unknown: it might hold newer "
				  "data than the local database. Start once with the settings that "
				  "wrote it and stop cleanly (its generation is then closed where this "
				  "node stopped, and the new settings start a new one from there), or "
				  "keep the old identity under identities:; if the local database is "
				  "current, start once with restore.existing: keep-local (replication "
				  "then starts a new generation in the new form)" :
				  "a replica's age: settings changed since its newest generation was "
				  "written (encryption turned on or off, or keys rotated without the "
				  "old identity): it cannot be read with them. Restore with the "
				  "settings that wrote it (litevisor restore -config OLD.yml), or keep "
				  "the old identity under identities:", "db=\"%s\" replica=%s",
				  s->dbname, s->c[i].name);
			break;
		}
	return -1;
}

/*
 * Is the winner's generation still being written, for all we know? Not
 * closed where it ends (its end measured if need be) and written to less
 * than `window_ms` ago, give or take restore.clock-skew: its time is the
 * server's clock, the age our clock minus it, and a server running behind
 * would make a generation written a moment ago look quiet (QA18). *age_ms
 * gets how long ago.
 */
static bool winner_open(struct session *s, int64_t window_ms, const char *statedir,
			int64_t *age_ms)
{
	struct rs_cand *w = &s->c[s->ch.winner];
	struct wal_pos end = w->plan.end;
	char why[400];
	*age_ms = (clock_wall_ns() - w->plan.newest_ns) / NS_PER_MS;
	if (*age_ms >= window_ms + s->cfg->restore.clock_skew_ms)
		return false;
	if (w->plan.end_open) {
		uint64_t off;
		char err[300];
		if (rs_index_end(w, w->plan.generation, end.index, probe_wait_ms(s->cfg), &off, err,
				 sizeof(err)) < 0)
			return true; /* unknown: ask again */
		end.offset = (uint32_t)off;
	}
	if (closed_somewhere(s, &end))
		return false;
	/* its last index is this node's own session (it died before closing): no one to wait for */
	return !(statedir && rs_lineage(w, w->plan.generation, end.index, statedir,
					probe_wait_ms(s->cfg), why, sizeof(why)) == LINEAGE_SAME);
}

/* The newest data a probe of a handover wait saw, and who held it. */
struct seen {
	bool set;
	char generation[LAYOUT_GEN_LEN + 1];
	struct wal_pos end;
	int64_t newest_ns;   /* its generation's newest object, by its server's clock */
	char name[64];
};

static bool seen_lost(const struct session *s, const struct seen *v);

/* Note the probe's winner, unless this probe lost what an earlier one saw. */
static void seen_note(struct seen *v, const struct session *s)
{
	if (s->ch.winner < 0 || seen_lost(s, v))
		return;
	const struct rs_cand *w = &s->c[s->ch.winner];
	if (v->set && !strcmp(v->generation, w->plan.generation) &&
	    wal_pos_cmp(&w->plan.end, &v->end) <= 0)
		return;
	v->set = true;
	snprintf(v->generation, sizeof(v->generation), "%s", w->plan.generation);
	v->end = w->plan.end;
	v->newest_ns = w->plan.newest_ns;
	snprintf(v->name, sizeof(v->name), "%s", w->name);
}

/*
 * Did the last probe lose what an earlier one of this wait saw: the
 * candidate that held it no longer answers, and the winner now holds less
 * of that generation, or another generation written no later than it
 * (decision rule 2)? Restoring that would start the
 * service on older data than is known to exist, and its new generation
 * would hide the newer one from every later restore (QA26).
 */
static bool seen_lost(const struct session *s, const struct seen *v)
{
	if (!v->set)
		return false;
	if (s->ch.winner >= 0) {
		const struct rs_cand *w = &s->c[s->ch.winner];
		bool same = !strcmp(w->plan.generation, v->generation);
		if (same && wal_pos_cmp(&w->plan.end, &v->end) >= 0)
			return false;
		if (!same && w->plan.newest_ns > v->newest_ns)
			return false; /* written since: the newer one, as rule 2 has it (even within
					 the clock-skew margin, where the later time wins) */
	}
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->c[i].name, v->name))
			return s->c[i].state != RC_OK; /* still answering: its own data decided */
	return true;
}

/*
 * The node that wrote the newest generation may still be stopping: a drain
 * starts the new task before the old one has finished, and its last
 * commits, then its closed mark, come within its stop budget. Restoring now
 * would start this node on data a few seconds stale, beside a generation
 * that is still growing. While the winner's generation is open and was
 * written to less than restore.handover-wait ago, ask every candidate again
 * each second, for at most that long. statedir: the local database's state,
 * if it has one (its own last session is never waited for). 0, or -1 (res
 * set): interrupted, or a new probe failed.
 */
static int await_handover(struct session *s, bool measure_all, const char *statedir,
			  struct restore_result *res)
{
	int64_t window = s->cfg->restore.handover_wait_ms, age = 0, t0 = clock_mono_ms();
	bool waited = false;
	struct seen seen = { 0 };

	/* and while a probe lost what an earlier one saw: its holder may answer again */
	while (window > 0 && ((s->ch.winner >= 0 && winner_open(s, window, statedir, &age)) ||
			      seen_lost(s, &seen))) {
		seen_note(&seen, s);
		if (clock_mono_ms() - t0 >= window && seen_lost(s, &seen)) {
			char pos[64];
			log_decision(s);
			result_set(res, RESTORE_UNREACHABLE, "%s held newer data (%s) when this restore "
				   "began waiting for the handover, and did not answer again within "
				   "restore.handover-wait: not restoring older data", seen.name,
				   rs_pos_text(&seen.end, pos, sizeof(pos)));
			return -1;
		}
		if (clock_mono_ms() - t0 >= window) {
			log_warn("restore", "the newest generation's node did not close it in time: "
				 "restoring what it holds, replication starts a new generation. If it "
				 "is still being written, its node still runs: both write until one stops",
				 "db=\"%s\" waited_ms=%lld written_ms_ago=%lld", s->dbname,
				 (long long)(clock_mono_ms() - t0), (long long)age);
			if (waited)
				log_decision(s);
			return 0;
		}
		if (!waited)
			log_warn("restore", "the newest generation is not closed and was written to "
				 "recently: waiting for its node to finish stopping",
				 "db=\"%s\" generation=%s written_ms_ago=%lld handover_wait_ms=%lld",
				 s->dbname, s->c[s->ch.winner].plan.generation, (long long)age,
				 (long long)window);
		waited = true;
		for (int i = 0; i < 10 && !restore_aborted(); i++)
			clock_sleep_ms(100);
		if (restore_aborted()) {
			result_set(res, RESTORE_FAILED, "interrupted before writing anything");
			return -1;
		}
		session_release(s);
		/* one decision block per database: the re-probes' blocks are the same but for times */
		s->quiet = true;
		int rc = session_probe(s, NULL, measure_all, res);
		s->quiet = false;
		if (rc < 0)
			return -1;
	}
	/* closed, or quiet for handover-wait: whether replication continues it is said below */
	if (waited) {
		log_info("restore", "done waiting for the newest generation's node: restoring",
			 "db=\"%s\" waited_ms=%lld", s->dbname, (long long)(clock_mono_ms() - t0));
		log_decision(s);
	}
	return 0;
}

/*
 * A first deploy starts empty: the service creates the database, but one
 * running as another user cannot create its directory where only root may
 * (a fresh /data). The directories are made as a restore would make them
 * (ensure_parent: the configured user's). A failure is only logged: the
 * service may not need them, and says so itself if it does.
 */
static void parent_for_service(const struct config *cfg, const char *path)
{
	struct rs_apply_opts ao;
	struct restore_result tmp = { 0 };
	char made_top[PATH_MAX];
	apply_opts_init(&ao, cfg, path, 0);
	if (ensure_parent(&ao, &tmp, made_top) < 0)
		log_warn("restore", "cannot create the database's directory for the service",
			 "path=\"%s\" err=\"%s\"", path, tmp.message);
}

/*
 * The winner's only news is a snapshot at the next index, taken where the
 * local database ends: another node continued the generation and wrote
 * nothing but that. The same data, so the database stays; but replication
 * must go on at that index, as after a restore to it. Resumed at its own
 * index, it would find the generation continued elsewhere and stop for good,
 * with the service running on (QA72 D1). So the database is left as a
 * restore to that snapshot leaves it: its WAL checkpointed into the file
 * (the service has not started), the old state aside, and the marker naming
 * the replicas that hold the snapshot. 0, or -1 (logged): the caller
 * restores the snapshot instead.
 */
static int continue_at_snapshot(struct session *s, const char *statedir,
				struct restore_result *res, bool *marked)
{
	char err[400];
	/*
	 * Only the very files this node left at its clean stop are the data at
	 * the local position: a write since (an operator's sqlite3, a migration)
	 * is not in that snapshot, and the marker written after our checkpoint
	 * would make replication build on it over the other node's snapshot.
	 */
	if (!localstate_clean_unchanged(statedir, s->db->path)) {
		log_info("restore", "the local database is not as this node's clean stop left it: "
			 "restoring the replica's snapshot of the same position instead", "db=\"%s\"",
			 s->dbname);
		return -1;
	}
	if (rs_checkpoint_whole(s->db->path, err, sizeof(err)) < 0) {
		log_warn("restore", "cannot checkpoint the local database to continue the replica's "
			 "snapshot: restoring that snapshot instead", "db=\"%s\" err=\"%s\"",
			 s->dbname, err);
		return -1;
	}
	if (rs_move_state_aside(statedir, "state of a database another node continued",
				res->state_moved_aside, sizeof(res->state_moved_aside)) < 0) {
		log_warn("restore", "cannot move the state directory aside to continue the replica's "
			 "snapshot: restoring that snapshot instead", "db=\"%s\" dir=\"%s\"",
			 s->dbname, statedir);
		return -1;
	}
	res->pos = s->c[s->ch.winner].plan.end;
	*marked = write_marker(s, &res->pos);
	return 0;
}

int restore_db_for_run(const struct config *cfg, const struct cfg_db *db,
		       struct restore_result *res)
{
	struct session s = { .cfg = cfg, .db = db };
	char statedir[PATH_MAX], why[400];
	struct stat st;
	int64_t t0 = clock_mono_ms();
	int rc = -1;

	memset(res, 0, sizeof(*res));
	s.dbname = db->name ? db->name : db->path;
	localstate_dir(db, statedir, sizeof(statedir));
	if (db->nreplicas > 0 && rs_move_empty_aside(db->path) < 0) {
		result_set(res, RESTORE_FAILED, "cannot move the empty file at %s aside", db->path);
		goto out;
	}
	bool exists = lstat(db->path, &st) == 0;
	char bad[PATH_MAX + 100];
	/* with no replicas there is nothing to restore: the service decides what it opens */
	if (exists && db->nreplicas > 0 && db_file_check(db->path, bad, sizeof(bad)) < 0) {
		/*
		 * A directory (Docker's bind mount of a missing host file), a FIFO,
		 * a file that is no SQLite database: "current" by its time, the
		 * service started with no database (QA115 D2). Nothing moved.
		 */
		result_set(res, RESTORE_FAILED, "%s: nothing restored over it; move it away",
			   !strncmp(bad, "error: ", 7) ? bad + 7 : bad);
		goto out;
	}

	if (db->nreplicas == 0) {
		/* nothing to restore from: the service runs on what is there */
		result_set(res, exists ? RESTORE_EXISTS : RESTORE_EMPTY, "no replicas configured");
		if (!exists)
			parent_for_service(cfg, db->path);
		rc = 0;
		goto out;
	}
	if (exists) {
		struct wal_pos lpos;
		int64_t lt;
		char from[PATH_MAX];
		if (cfg->restore.existing == EXISTING_KEEP_LOCAL) {
			result_set(res, RESTORE_EXISTS, "database exists; policy keep-local");
			rc = 0;
			goto out;
		}
		local_position(db, statedir, &lpos, &lt, from);
		s.statedir = statedir;
		/* the local generation's past, as replication will read it (rs_local_past) */
		if (!strcmp(from, statedir) && lpos.generation[0]) {
			memcpy(s.past.current, lpos.generation, sizeof(s.past.current));
			s.past.local = lpos;
			(void)localstate_read_previous(statedir, &s.past.past[0].at,
						       &s.past.past[0].open);
			(void)localstate_read_aside(statedir, &s.past.past[1].at,
						    &s.past.past[1].open);
			struct wal_pos at[LOCALSTATE_EARLIER_MAX];
			bool open[LOCALSTATE_EARLIER_MAX];
			size_t n = localstate_read_earlier(statedir, at, open, LOCALSTATE_EARLIER_MAX);
			for (size_t k = 0; k < n; k++)
				s.past.past[2 + k] = (struct rs_past){ .at = at[k], .open = open[k] };
		}
		if (lt == 0)
			lt = rs_file_mtime_ns(db->path);
		/*
		 * The local position is compared with the winner's: its end must be
		 * exact. The state it came from is the one whose last session a
		 * handover wait never waits for.
		 */
		if (session_probe(&s, NULL, true, res) < 0 ||
		    await_handover(&s, true, from[0] ? from : statedir, res) < 0)
			goto out;
		/*
		 * The replicas rank the local file's generation newest, but this
		 * node's own state, as replication reads it, ranks another one
		 * they list above it: the local one is superseded and the newest
		 * of the others is restored, or replication refused the file kept
		 * at every start (QA95 D1, QA100 D1, D2).
		 */
		char over[LAYOUT_GEN_LEN + 1];
		if (s.ch.winner >= 0 && s.past.current[0] &&
		    !strcmp(s.c[s.ch.winner].plan.generation, s.past.current) &&
		    rs_local_newer(s.c, s.n, &s.past, over, s.superseded, sizeof(s.superseded))) {
			log_warn("restore", "the replicas rank the local generation newest, but this "
				 "node's own state ranks another above it, as replication reads it: "
				 "restoring the newest of the others", "db=\"%s\" local=%s above=%s "
				 "why=\"%s\"", s.dbname, s.past.current, over, s.superseded);
			/* a session of its own, which replaces the first one's result */
			struct session o = session_again(&s);
			o.t.exclude = s.past.current;
			/* the newest of the others, written seconds ago, gets its handover wait too */
			if (session_probe(&o, NULL, true, res) < 0 ||
			    await_handover(&o, true, from[0] ? from : statedir, res) < 0) {
				session_release(&o);
				goto out;
			}
			/*
			 * ... if it ranks above the file (rs_local_outranked_by): by
			 * time across servers it may be the file's own past, or
			 * another node's older fork, neither of which replication
			 * takes over the file (QA101 D2, QA104 D3). Then the one the
			 * state ranks above the file is restored itself.
			 */
			if (o.ch.winner >= 0 &&
			    !rs_local_outranked_by(o.c, o.n, &o.past, o.c[o.ch.winner].plan.generation)) {
				log_warn("restore", "the newest of the others does not rank above the local "
					 "generation: restoring the one this node's state ranks above it",
					 "db=\"%s\" newest=%s restoring=%s", s.dbname,
					 o.c[o.ch.winner].plan.generation, over);
				session_release(&o);
				o.t.exclude = NULL;
				o.t.generation = over;
				if (session_probe(&o, NULL, true, res) < 0 ||
				    await_handover(&o, true, from[0] ? from : statedir, res) < 0) {
					session_release(&o);
					goto out;
				}
				o.t.generation = NULL;
			}
			session_release(&s);
			s = o;
		}
		if (s.ch.winner < 0 || strict_unsettled(&s)) {
			rc = settle_unrestored(&s, true, res);
			goto out;
		}
		bool at_next, marked = false;
		bool newer = replica_newer(&s, &lpos, lt, from, &at_next, why, sizeof(why));
		if (!newer && at_next && continue_at_snapshot(&s, statedir, res, &marked) < 0)
			newer = true; /* the same data, restored: replication then goes on there */
		/*
		 * Kept on what litevisor's own state does not say (a file put in its
		 * place while stopped, or Litestream's newer state): that state, left
		 * where it is, would make replication resume a generation the file
		 * is not, find its closed record overtaken and stop for good with the
		 * service running on (QA75 D4, D6). Aside, replication starts a new
		 * generation from the file kept.
		 */
		/*
		 * A state of nothing but a database id (a hand restore of a
		 * generation not closed: no marker) names this very file's
		 * database: kept, or replication labelled it with a new id and
		 * the other node's run refused its own database as another's
		 * at every start (QA86 D3).
		 */
		char gen_id[17], dbid[33];
		bool id_only = localstate_read_generation(statedir, gen_id) < 0 &&
			       localstate_read_database_id(statedir, dbid) == 0;
		if (!newer && !at_next && strcmp(from, statedir) != 0 &&
		    rs_move_state_aside(statedir, "state that does not describe the database kept",
					res->state_moved_aside, sizeof(res->state_moved_aside)) < 0) {
			result_set(res, RESTORE_FAILED, "cannot move the state directory %s aside (it "
				   "does not describe the database kept)", statedir);
			goto out;
		}
		if (!newer && !at_next && strcmp(from, statedir) != 0 && id_only) {
			uid_t uid;
			gid_t gid;
			localstate_owner(db, &uid, &gid);
			if (localstate_ensure(db, statedir) < 0 ||
			    localstate_write_database_id(statedir, dbid, uid, gid) < 0)
				log_warn("restore", "cannot keep the database id of the state moved "
					 "aside: replication labels its generations with a new one",
					 "db=\"%s\" err=\"%s\"", s.dbname, strerror(errno));
		}
		if (!newer) {
			result_set(res, RESTORE_EXISTS, "local database is current (%s)%s", why,
				   !at_next ? "" : marked ? "; replication goes on at that snapshot"
							: "; replication starts a new generation from it");
			rc = 0;
			goto out;
		}
		log_warn("restore", "a replica holds newer data than the local database",
			 "db=\"%s\" why=\"%s\"", s.dbname, why);
		struct aside_ctx ax = { db->path, statedir, res->moved_aside,
					res->state_moved_aside, sizeof(res->moved_aside),
					sizeof(res->state_moved_aside), &s, &lpos, from, false };
		struct rs_apply_opts ao;
		apply_opts_init(&ao, cfg, db->path, 0);
		ao.before_rename = move_local_cb;
		ao.rename_failed = put_local_back_cb;
		ao.before_ctx = &ax;
		if (apply_with_fallback(&s, &ao, res) < 0)
			goto out;
		write_marker(&s, &res->pos);
		rc = 0;
		goto out;
	}

	/* no database: whatever is beside it belongs to no database any more */
	if (check_parent(db->path, res) < 0)
		goto out;
	if (rs_move_strays(db->path) < 0) {
		result_set(res, RESTORE_FAILED, "cannot move stray files beside %s aside", db->path);
		goto out;
	}
	/* its name kept, so that keep-replaced never deletes the copy just made */
	if (rs_move_state_aside(statedir, "state of a database that is gone",
				res->state_moved_aside, sizeof(res->state_moved_aside)) < 0) {
		result_set(res, RESTORE_FAILED, "cannot move the state directory %s aside (its "
			   "database is gone)", statedir);
		goto out;
	}
	if (session_probe(&s, NULL, false, res) < 0 || await_handover(&s, false, NULL, res) < 0)
		goto out;
	if (s.ch.winner >= 0 && !strict_unsettled(&s)) {
		struct rs_apply_opts ao;
		apply_opts_init(&ao, cfg, db->path, 0);
		if (apply_in_place(&s, &ao, res) < 0)
			goto out;
		write_marker(&s, &res->pos);
		rc = 0;
	} else {
		rc = settle_unrestored(&s, false, res);
		if (rc == 0)
			parent_for_service(cfg, db->path);
	}
out:
	res->duration_ms = clock_mono_ms() - t0;
	/* the line a user greps for after a move says when a fresher copy may have been passed over */
	bool passed_over = rc == 0 && s.ch.unreachable > 0 &&
			   (res->outcome == RESTORE_RESTORED || res->outcome == RESTORE_EXISTS);
	if (passed_over) {
		size_t len = strlen(res->message);
		snprintf(res->message + len, sizeof(res->message) - len,
			 "; %zu of %zu candidates did not answer: they might hold newer data",
			 s.ch.unreachable, s.n);
	}
	log_event(rc != 0 ? LOG_ERROR : passed_over ? LOG_WARN : LOG_INFO, "restore", "restore step done",
		  "db=\"%s\" outcome=%s source=%s ms=%lld message=\"%s\"%s%s%s", s.dbname,
		  restore_outcome_name(res->outcome), res->source[0] ? res->source : "-",
		  (long long)res->duration_ms, res->message,
		  res->moved_aside[0] ? " moved_aside=\"" : "", res->moved_aside,
		  res->moved_aside[0] ? "\"" : "");
	if (rc == 0)
		rs_prune_aside(db->path, statedir, cfg->restore.keep_replaced, res->moved_aside,
			       res->state_moved_aside);
	session_release(&s);
	return rc;
}

int restore_explicit(const struct config *cfg, const struct cfg_db *db,
		     const struct restore_opts *opt, struct restore_result *res)
{
	struct session s = { .cfg = cfg, .db = db };
	const char *out_path = opt->output ? opt->output : db->path;
	struct stat st;
	int64_t t0 = clock_mono_ms();
	int rc = -1;

	memset(res, 0, sizeof(*res));
	s.dbname = db->name ? db->name : db->path;
	s.t.generation = opt->generation;
	s.t.has_index = opt->has_index;
	s.t.index = opt->index;
	s.t.timestamp_ns = opt->timestamp_ns;
	s.t.skew_ns = RS_COPY_TIE_NS;

	char bad[PATH_MAX * 2 + 200];
	if (rs_no_db_file_at(out_path, bad, sizeof(bad))) {
		/* no database there, nor room for one: skipped, an app made an empty one (QA115 D1) */
		result_set(res, RESTORE_FAILED, "%s", bad);
		goto out;
	}
	if (lstat(out_path, &st) == 0) {
		if (opt->if_db_not_exists) {
			result_set(res, RESTORE_EXISTS, "database already exists, skipping (%s)", out_path);
			rc = 0;
		} else {
			result_set(res, RESTORE_FAILED, "output %s already exists; not overwriting it",
				   out_path);
		}
		goto out;
	}
	if (check_parent(out_path, res) < 0)
		goto out;
	if (session_probe(&s, opt->replica, opt->dry_run, res) < 0)
		goto out;
	if (opt->dry_run)
		rs_print_decision(s.c, s.n, &s.ch, out_path);
	for (size_t i = 0; i < s.n; i++)
		res->held_data |= (s.c[i].state == RC_OK || s.c[i].measure_failed) &&
				  s.c[i].ngens > 0;
	if (s.ch.winner < 0 || strict_unsettled(&s)) {
		const char *pe = plan_error(&s);
		if (pe)
			result_set(res, RESTORE_NO_DATA, "%s", pe);
		else if (s.ch.answered == 0 ||
			 (s.ch.unreachable && s.ch.winner < 0 && !quorum_says_empty(&s)) ||
			 strict_unsettled(&s))
			result_set(res, unreachable_outcome(&s), "%zu of %zu candidates unreachable or failing; %s",
				   s.ch.unreachable, s.n, s.ch.why);
		else if (no_data_why(&s))
			result_set(res, RESTORE_NO_DATA, "no matching backups found (%s)", no_data_why(&s));
		else
			result_set(res, RESTORE_NO_DATA, "no matching backups found");
		goto out;
	}
	if (opt->dry_run && s.c[s.ch.winner].plan.truncated) {
		/* the restore itself would fail at the hole: so does its dry run */
		result_set(res, RESTORE_FAILED, "dry run: %s, but it has a hole: %s (missing segment)",
			   s.ch.why, s.c[s.ch.winner].plan.note);
		goto out;
	}
	if (opt->dry_run) {
		result_set(res, RESTORE_RESTORED, "dry run: %s", s.ch.why);
		rc = 0;
		goto out;
	}
	if (rs_move_strays(out_path) < 0) {
		result_set(res, RESTORE_FAILED, "cannot move stray files beside %s aside", out_path);
		goto out;
	}
	struct rs_apply_opts ao;
	apply_opts_init(&ao, cfg, out_path, opt->parallelism);
	if (apply_in_place(&s, &ao, res) < 0)
		goto out;
	rc = 0;
	if (!opt->output && !rs_target_pit(&s.t) && !opt->generation) {
		/* the db's own path restored to the end: replication may continue the generation */
		char statedir[PATH_MAX];
		localstate_dir(db, statedir, sizeof(statedir));
		rs_move_state_aside(statedir, "state of a database that was not there", NULL, 0);
		write_marker(&s, &res->pos);
	}
out:
	res->duration_ms = clock_mono_ms() - t0;
	session_release(&s);
	return rc;
}
