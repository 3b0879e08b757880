/*
 * restore.c — the restore session: probe the candidates, decide (settle,
 * wait for a handover), apply the winner with fallback to those holding
 * the same data; and the two ways in (restore_db_for_run for `run`,
 * restore_explicit for `litevisor restore`). The pieces are in restore_*.c
 * (see restore_int.h): the existing database's comparison in
 * restore_existing.c, the marker and records in restore_records.c, the
 * target's directory in restore_target.c.
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
#include "common/duration.h"
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

void rs_result_set(struct restore_result *res, enum restore_outcome o, const char *fmt, ...)
{
	va_list ap;
	res->outcome = o;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof(res->message), fmt, ap);
	va_end(ap);
}

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
 * Does candidate c list a snapshot of generation gen that a restore to t
 * could start from (at or before its index and timestamp, as rs_plan_build
 * reads them; for a candidate the whole-second cut moved, at or before what
 * it surely stored)? One that does not cannot restore gen at t, whatever
 * segments of it it holds.
 */
static bool starts_by(const struct rs_cand *c, const char *gen, const struct rs_target *t)
{
	int64_t ts = c->cut_ns ? c->cut_ns : t->timestamp_ns;
	for (size_t k = 0; k < c->ngens; k++) {
		const struct cat_generation *g = &c->gens[k];
		if (strcmp(g->id, gen) != 0)
			continue;
		for (size_t i = 0; i < g->nsnapshots; i++) {
			const struct cat_snapshot *sn = &g->snapshots[i];
			if ((!t->has_index || sn->index <= t->index) &&
			    (!ts || sn->mtime_ns + g->clock_offset_ns <= ts))
				return true;
		}
		return false;
	}
	return false;
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
		/*
		 * Probed again for gen alone, one with no snapshot of it to start
		 * from (a finer replica whose snapshot was rewritten after the
		 * timestamp, its WAL from before kept) still has no data: its
		 * segments would only cost every replica a second listing
		 * (QA159 D3).
		 */
		if (!starts_by(c, w->plan.generation, &s->t))
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
		rs_result_set(res, RESTORE_FAILED, "out of memory");
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
		rs_result_set(res, RESTORE_FAILED, "no replica named \"%s\"", only);
		return -1;
	}
	if (s->n == 0) {
		/* none holds data, as Litestream reads it: -if-replica-exists passes */
		rs_result_set(res, RESTORE_NO_DATA, "no replicas configured");
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
			 "up to what they surely stored by it (objects stamped a second before it, and "
			 "segments another replica keeping finer times stored by it), since that one "
			 "holds some of the generation by then", "db=\"%s\"", s->dbname);
	if (!restore_aborted())
		rs_measure_ends(s->c, s->n, measure_all, &po);
	if (restore_aborted()) { /* a stop while probing: nothing written yet */
		rs_result_set(res, RESTORE_FAILED, "interrupted before writing anything");
		return -1;
	}
	rs_note_own_marks(s);
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
			rs_result_set(res, RESTORE_RESTORED, "restored from %s%s", c->name,
				      tried > 1 ? " after falling back" : "");
			return 0;
		}
		log_error("restore", "restore from candidate failed", "replica=%s err=\"%s\"",
			  c->name, err);
		if (cause == RS_CAUSE_LOCAL) {
			/* no other candidate can help: say it is ours, not the replica's */
			rs_result_set(res, RESTORE_FAILED, "cannot restore into %s: %s", ao->target, err);
			return -1;
		}
		if (!first[0])
			snprintf(first, sizeof(first), "%s", err);
		all_transient = all_transient && cause == RS_CAUSE_NETWORK;
	}
	/*
	 * A candidate that did not answer, and is not known to be damaged, may
	 * hold this data whole: a temporary failure, as a -dry-run that found the
	 * damage while probing says (unreachable_outcome; QA133 D2).
	 */
	bool another = s->ch.unreachable > s->ch.corrupt;
	rs_result_set(res, RESTORE_FAILED, "%d candidate(s) with the newest data failed (first: %s)%s%s",
		      tried, first, "; candidates with less data are not used without -replica",
		      another && !all_transient ? "; a candidate that did not answer may hold it: "
		      "try again once it answers" : "");
	res->temporary = all_transient || another;
	return -1;
}

/* How long a download made while probing may take (as rs_measure_ends allows). */
int64_t rs_probe_wait_ms(const struct config *cfg)
{
	int64_t p = cfg->restore.probe_timeout_ms > 0 ? cfg->restore.probe_timeout_ms : 1000;
	return cfg->restore.wait_timeout_ms > p ? cfg->restore.wait_timeout_ms : p;
}

/* rs_ensure_parent(), then apply_with_fallback(); a failure takes the directories back. */
static int apply_in_place(struct session *s, struct rs_apply_opts *ao,
			  struct restore_result *res)
{
	char made_top[PATH_MAX];
	if (rs_ensure_parent(ao, res, made_top) < 0) {
		rs_undo_parent(ao->target, made_top);
		return -1;
	}
	if (apply_with_fallback(s, ao, res) < 0) {
		rs_undo_parent(ao->target, made_top);
		return -1;
	}
	return 0;
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
		rs_result_set(res, ok, "%severy candidate answered, none holds data; %s",
			      exists ? "" : "first deploy: ", what);
		return 0;
	}
	if (quorum_says_empty(s)) {
		rs_result_set(res, ok, "a quorum (%zu) answered and none holds data; %s",
			      s->ch.answered, what);
		return 0;
	}
	if (none && rc->allow_empty_unreachable) {
		rs_result_set(res, ok, "%zu of %zu candidates unreachable, none reachable holds data; "
			      "%s (allow-empty-when-unreachable)", s->ch.unreachable, s->n, what);
		return 0;
	}
	rs_result_set(res, unreachable_outcome(s), "%zu of %zu candidates unreachable or failing%s%s",
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
	if (!s->any_age_ms && *age_ms >= window_ms + s->cfg->restore.clock_skew_ms)
		return false;
	if (w->plan.end_open) {
		uint64_t off;
		char err[300];
		if (rs_index_end(w, w->plan.generation, end.index, rs_probe_wait_ms(s->cfg), &off, err,
				 sizeof(err)) < 0)
			return true; /* unknown: ask again */
		end.offset = (uint32_t)off;
	}
	if (rs_closed_somewhere(s, &end))
		return false;
	/* its last index is this node's own session (it died before closing): no one to wait for */
	return !(statedir && rs_lineage(w, w->plan.generation, end.index, statedir,
					rs_probe_wait_ms(s->cfg), why, sizeof(why)) == LINEAGE_SAME);
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
	if (window > 0 && s->any_age_ms > window)
		window = s->any_age_ms; /* the old holder's time to learn of its loss and stop */
	bool waited = false;
	struct seen seen = { 0 };

	/* and while a probe lost what an earlier one saw: its holder may answer again */
	while (window > 0 && ((s->ch.winner >= 0 && winner_open(s, window, statedir, &age)) ||
			      seen_lost(s, &seen))) {
		seen_note(&seen, s);
		if (clock_mono_ms() - t0 >= window && seen_lost(s, &seen)) {
			char pos[64], w[32];
			log_decision(s);
			rs_result_set(res, RESTORE_UNREACHABLE, "%s held newer data (%s) when this restore "
				      "began waiting for the handover, and did not answer again within "
				      "the handover wait (%s): not restoring older data", seen.name,
				      rs_pos_text(&seen.end, pos, sizeof(pos)),
				      duration_format(window, w, sizeof(w)));
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
			rs_result_set(res, RESTORE_FAILED, "interrupted before writing anything");
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
	rs_note_state_id(s, statedir);
	if (rs_move_state_aside(statedir, "state of a database another node continued",
				res->state_moved_aside, sizeof(res->state_moved_aside)) < 0) {
		log_warn("restore", "cannot move the state directory aside to continue the replica's "
			 "snapshot: restoring that snapshot instead", "db=\"%s\" dir=\"%s\"",
			 s->dbname, statedir);
		return -1;
	}
	res->pos = s->c[s->ch.winner].plan.end;
	*marked = rs_write_marker(s, &res->pos);
	return 0;
}

int restore_db_for_run(const struct config *cfg, const struct cfg_db *db, int64_t any_age_ms,
		       struct restore_result *res)
{
	struct session s = { .cfg = cfg, .db = db, .any_age_ms = any_age_ms };
	char statedir[PATH_MAX], why[400];
	struct stat st;
	int64_t t0 = clock_mono_ms();
	int rc = -1;

	memset(res, 0, sizeof(*res));
	s.dbname = db->name ? db->name : db->path;
	localstate_dir(db, statedir, sizeof(statedir));
	if (db->nreplicas > 0 && rs_move_empty_aside(db->path) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot move the empty file at %s aside", db->path);
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
		rs_result_set(res, RESTORE_FAILED, "%s: nothing restored over it; move it away",
			      !strncmp(bad, "error: ", 7) ? bad + 7 : bad);
		goto out;
	}

	if (db->nreplicas == 0) {
		/* nothing to restore from: the service runs on what is there */
		rs_result_set(res, exists ? RESTORE_EXISTS : RESTORE_EMPTY, "no replicas configured");
		if (!exists)
			rs_parent_for_service(cfg, db->path);
		rc = 0;
		goto out;
	}
	if (exists) {
		struct wal_pos lpos;
		int64_t lt;
		char from[PATH_MAX];
		if (cfg->restore.existing == EXISTING_KEEP_LOCAL) {
			rs_result_set(res, RESTORE_EXISTS, "database exists; policy keep-local");
			rc = 0;
			goto out;
		}
		rs_existing_position(db, statedir, &lpos, &lt, from);
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
		bool newer = rs_replica_newer(&s, &lpos, lt, from, &at_next, why, sizeof(why));
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
			rs_result_set(res, RESTORE_FAILED, "cannot move the state directory %s aside (it "
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
			rs_result_set(res, RESTORE_EXISTS, "local database is current (%s)%s", why,
				      !at_next ? "" : marked ? "; replication goes on at that snapshot"
							   : "; replication starts a new generation from it");
			rc = 0;
			goto out;
		}
		log_warn("restore", "a replica holds newer data than the local database",
			 "db=\"%s\" why=\"%s\"", s.dbname, why);
		struct rs_aside_ctx ax = { db->path, statedir, res->moved_aside,
					res->state_moved_aside, sizeof(res->moved_aside),
					sizeof(res->state_moved_aside), &s, &lpos, from, false };
		struct rs_apply_opts ao;
		rs_apply_opts_init(&ao, cfg, db->path, 0);
		ao.before_rename = rs_move_local_cb;
		ao.rename_failed = rs_put_local_back_cb;
		ao.before_ctx = &ax;
		rs_note_state_id(&s, statedir); /* it goes aside with the file (rs_move_local_cb) */
		if (apply_with_fallback(&s, &ao, res) < 0)
			goto out;
		rs_write_marker(&s, &res->pos);
		rc = 0;
		goto out;
	}

	/* no database: whatever is beside it belongs to no database any more */
	if (rs_check_parent(db->path, res) < 0)
		goto out;
	if (rs_move_strays(db->path) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot move stray files beside %s aside", db->path);
		goto out;
	}
	/* its id kept where the replicas confirm it (rs_write_database_id) */
	rs_note_state_id(&s, statedir);
	/* its name kept, so that keep-replaced never deletes the copy just made */
	if (rs_move_state_aside(statedir, "state of a database that is gone",
				res->state_moved_aside, sizeof(res->state_moved_aside)) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot move the state directory %s aside (its "
			      "database is gone)", statedir);
		goto out;
	}
	if (session_probe(&s, NULL, false, res) < 0 || await_handover(&s, false, NULL, res) < 0)
		goto out;
	if (s.ch.winner >= 0 && !strict_unsettled(&s)) {
		struct rs_apply_opts ao;
		rs_apply_opts_init(&ao, cfg, db->path, 0);
		if (apply_in_place(&s, &ao, res) < 0)
			goto out;
		rs_write_marker(&s, &res->pos);
		rc = 0;
	} else {
		rc = settle_unrestored(&s, false, res);
		if (rc == 0)
			rs_parent_for_service(cfg, db->path);
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
		rs_result_set(res, RESTORE_FAILED, "%s", bad);
		goto out;
	}
	if (lstat(out_path, &st) == 0) {
		if (opt->if_db_not_exists) {
			rs_result_set(res, RESTORE_EXISTS, "database already exists, skipping (%s)", out_path);
			rc = 0;
		} else {
			rs_result_set(res, RESTORE_FAILED, "output %s already exists; not overwriting it",
				      out_path);
		}
		goto out;
	}
	if (rs_check_parent(out_path, res) < 0)
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
			rs_result_set(res, RESTORE_NO_DATA, "%s", pe);
		else if (s.ch.answered == 0 ||
			 (s.ch.unreachable && s.ch.winner < 0 && !quorum_says_empty(&s)) ||
			 strict_unsettled(&s))
			rs_result_set(res, unreachable_outcome(&s), "%zu of %zu candidates unreachable or failing; %s",
				      s.ch.unreachable, s.n, s.ch.why);
		else if (no_data_why(&s))
			rs_result_set(res, RESTORE_NO_DATA, "no matching backups found (%s)", no_data_why(&s));
		else
			rs_result_set(res, RESTORE_NO_DATA, "no matching backups found");
		goto out;
	}
	if (opt->dry_run && s.c[s.ch.winner].plan.truncated) {
		/* the restore itself would fail at the hole: so does its dry run */
		rs_result_set(res, RESTORE_FAILED, "dry run: %s, but it has a hole: %s (missing segment)",
			      s.ch.why, s.c[s.ch.winner].plan.note);
		goto out;
	}
	if (opt->dry_run) {
		rs_result_set(res, RESTORE_RESTORED, "dry run: %s", s.ch.why);
		rc = 0;
		goto out;
	}
	if (rs_move_strays(out_path) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot move stray files beside %s aside", out_path);
		goto out;
	}
	char statedir[PATH_MAX] = "";
	if (!opt->output) {
		/*
		 * The db's own path: its state directory is a database file's that
		 * was not there (maybe another database's, with another id): aside
		 * (QA169 D3), its id kept for a generation with no label of its own
		 * where the replicas confirm it (QA170 D2, QA172 O2:
		 * rs_write_database_id). Before the restore: one that cannot go aside
		 * fails it, nothing written. Written into, the restore was mixed with
		 * what it holds; left as it was beside the restored file, replication
		 * took its id, another database's maybe (QA177 D2).
		 */
		localstate_dir(db, statedir, sizeof(statedir));
		rs_note_state_id(&s, statedir);
		if (rs_move_state_aside(statedir, "state of a database file that was not there",
					res->state_moved_aside, sizeof(res->state_moved_aside)) < 0) {
			rs_result_set(res, RESTORE_FAILED, "cannot move the state directory %.300s aside "
				      "(see the error above); move it away by hand", statedir);
			goto out;
		}
	}
	struct rs_apply_opts ao;
	rs_apply_opts_init(&ao, cfg, out_path, opt->parallelism);
	if (apply_in_place(&s, &ao, res) < 0)
		goto out;
	rc = 0;
	if (!opt->output) {
		/*
		 * To the end: replication may continue the generation. Rolled back
		 * (a point in time, a chosen generation): it starts a new one, but
		 * of the same database. Under a new id every earlier generation was
		 * another database's: kept for ever by retention, and a node holding
		 * an older copy refused to start (QA166 D2).
		 */
		if (!rs_target_pit(&s.t) && !opt->generation)
			rs_write_marker(&s, &res->pos);
		else
			rs_write_database_id(&s, &res->pos);
		/* restore.keep-replaced bounds the copies, as after run's restore step; the
		 * one just made is kept */
		rs_prune_aside(db->path, statedir, cfg->restore.keep_replaced, NULL,
			       res->state_moved_aside);
	}
out:
	res->duration_ms = clock_mono_ms() - t0;
	session_release(&s);
	return rc;
}
