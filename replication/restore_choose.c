/*
 * restore_choose.c — which candidate to restore from, in what order to fall
 * back, and the one readable decision block in the log.
 *
 * The rule (docs/restore.md):
 * 1. Only candidates that answered and hold a plan count.
 * 2. The newest generation wins. The local database's own state first
 *    (struct rs_local_past), as replication's refusal rules read it (else
 *    the restore kept a file replication then refused at every start): the
 *    generation its file left for its current one, or was moved aside from,
 *    is newer than that one exactly when a candidate holds it past where
 *    the file stood (QA95 D3); one written after this node's clean stop of
 *    the current one, on the same server, is newer (QA95 D1).
 *    Otherwise: object times come from each server's own
 *    clock, so across servers a generation is newer only if its newest
 *    object is later by more than the clock-skew margin. Within the margin
 *    the order is ambiguous: a candidate that holds both generations orders
 *    them with its own (single) clock (servers holding both that disagree:
 *    the one that started later, if they agree on that); failing that, the
 *    later time still wins and the decision says it was ambiguous. So does
 *    a winner whose own replica holds generations it could not tell apart
 *    from it by time (rs_plan.tied: a replica copied object by object).
 *    With -timestamp, a generation's time is its newest object at or before
 *    it (rs_gen_time_at), and a replica holding both orders them so too.
 *    A candidate whose generation newer than the winner's cannot serve the
 *    request (rs_plan.blocked: -index past its end, no snapshot by the
 *    -timestamp) means no winner: the data asked for is in that generation.
 * 3. Within that generation, the highest end position (index, offset) wins.
 * 4. Among equal positions, a replica without holes (missing segments)
 *    first, then the lowest round-trip time, then the configuration order.
 * Fallbacks are the other candidates holding exactly the winner's position
 * (same data); a candidate with less data is never used silently. No winner
 * while a candidate known to hold more could not be read (its last segment
 * stalled) or was still listing when the wait ended: it may hold the newest.
 */
#include "replication/restore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/banned.h"

char *rs_pos_text(const struct wal_pos *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%08x/%08x", p->generation[0] ? p->generation : "-", p->index,
		 p->offset);
	return buf;
}

/* A plan's end; "+" after it: at least there (its last segment's length not measured). */
static char *end_text(const struct rs_plan *p, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%08x/%08x%s", p->end.generation[0] ? p->end.generation : "-",
		 p->end.index, p->end.offset, p->end_open ? "+" : "");
	return buf;
}

/* Generation gen as candidate c lists it, or NULL if it does not hold it. */
static const struct cat_generation *gen_on(const struct rs_cand *c, const char *gen)
{
	for (size_t i = 0; c->state == RC_OK && i < c->ngens; i++)
		if (strcmp(c->gens[i].id, gen) == 0)
			return &c->gens[i];
	return NULL;
}

/* Generation gen as the first candidate holding it lists it, or NULL. */
static const struct cat_generation *gen_any(const struct rs_cand *c, size_t n, const char *gen)
{
	const struct cat_generation *g = NULL;
	for (size_t i = 0; i < n && !g; i++)
		g = gen_on(&c[i], gen);
	return g;
}

const char *rs_past_how(size_t k)
{
	return k == 0 ? "left" : k == 1 ? "was moved aside from" : "had left, before the last it "
								    "left,";
}

/*
 * Does a candidate hold generation at->generation, the one of the local
 * state's record k, past *at? Its end as replication measures it
 * (rs_cand.past_end: wal_pos_past, as replica_history.c's went_on_from); unmeasured
 * (the download failed), its listing, erring towards "past": a segment
 * starting at or past at, a snapshot two indexes on.
 */
static bool held_past(const struct rs_cand *c, size_t n, const struct wal_pos *at, size_t rec)
{
	for (size_t i = 0; i < n; i++) {
		const struct cat_generation *g = gen_on(&c[i], at->generation);
		if (!g)
			continue;
		if (c[i].past_known[rec]) {
			if (wal_pos_past(&c[i].past_end[rec], at))
				return true;
			continue;
		}
		for (size_t k = 0; k < g->nsegments; k++)
			if (g->segments[k].index > at->index ||
			    (g->segments[k].index == at->index && g->segments[k].offset >= at->offset))
				return true;
		for (size_t k = 0; k < g->nsnapshots; k++)
			if (g->snapshots[k].index > at->index + 1)
				return true;
	}
	return false;
}

/*
 * Does a candidate hold the local file's generation past where the file
 * stands (its measured end, or a segment starting there or later)?
 */
static bool current_went_on(const struct rs_cand *c, size_t n, const struct rs_local_past *lp)
{
	if (!lp->local.generation[0])
		return false;
	for (size_t i = 0; i < n; i++) {
		if (c[i].has_data && !strcmp(c[i].plan.generation, lp->current) &&
		    wal_pos_past(&c[i].plan.end, &lp->local))
			return true;
		const struct cat_generation *g = gen_on(&c[i], lp->current);
		for (size_t k = 0; g && k < g->nsegments; k++)
			if (g->segments[k].index > lp->local.index + 1 ||
			    (g->segments[k].index == lp->local.index &&
			     g->segments[k].offset >= lp->local.offset && lp->local.offset > 0))
				return true;
	}
	return false;
}

/*
 * Is generation gen written after this node's own end of the local file's
 * generation (rs_cand.own_end_ns) on a candidate that holds both? 1 yes on
 * one, 0 no on every one that can tell, -1 none can tell.
 */
static int after_own_end(const struct rs_cand *c, size_t n, const char *gen)
{
	int r = -1;
	for (size_t i = 0; i < n; i++) {
		const struct cat_generation *g = c[i].own_end_ns ? gen_on(&c[i], gen) : NULL;
		if (!g)
			continue;
		if (catalog_written_after(g, c[i].own_end_ns))
			return 1;
		r = 0;
	}
	return r;
}

/*
 * The local records' order of a and b (struct rs_local_past): >0 a is the
 * newer, <0 b, 0 they do not tell (not two they name; left open and gone
 * on: the times decide). Explains itself in why when they tell. The
 * "previous" record (k 0) is another node's newer writing whenever a
 * candidate holds it past where the file stood; the others ("aside",
 * "earlier") only when that was written after this node's own end of the
 * local generation, as replication reads them (replica_history.c, recorded_past,
 * asked only of a generation written after it): gone on before, the file
 * went on after it, and replication keeps it (QA104 D5).
 */
static int record_order(const struct rs_cand *c, size_t n, const struct rs_local_past *lp,
			const char *a, const char *b, char *why, size_t len)
{
	for (size_t k = 0; lp && lp->current[0] && k < RS_PAST_MAX; k++) {
		const struct rs_past *p = &lp->past[k];
		if (!p->at.generation[0] || !strcmp(p->at.generation, lp->current))
			continue;
		bool a_past = !strcmp(a, p->at.generation) && !strcmp(b, lp->current);
		if (!a_past && !(!strcmp(b, p->at.generation) && !strcmp(a, lp->current)))
			continue;
		bool went_on = held_past(c, n, &p->at, k);
		if (went_on && p->open)
			return 0;
		/*
		 * Another node went on in the file's own generation too (it
		 * restored it and wrote on): that is no fork of this file's any
		 * more, and the record does not order the two (QA102 D1).
		 */
		if (went_on && current_went_on(c, n, lp))
			return 0;
		bool before = false;
		if (went_on && k > 0) {
			int after = after_own_end(c, n, p->at.generation);
			if (after < 0)
				return 0;
			before = !after;
			went_on = after;
		}
		char at[64], what[200];
		snprintf(what, sizeof(what), "%s generation %s at %s for %s", rs_past_how(k),
			 p->at.generation,
			 rs_pos_text(&p->at, at, sizeof(at)), lp->current);
		snprintf(why, len, "the local database %s, and %s", what,
			 went_on ? "a candidate holds it past that: another node went on in it, "
				   "newer" : before ? "another node went on in it before this node's "
				   "last stop of the local one: older" : "no candidate holds it past "
				   "that: it is this database's own past");
		return went_on == a_past ? 1 : -1;
	}
	return 0;
}

/*
 * This node's clean stop of the local file's generation (its closed mark),
 * or its last object there when this node was killed in it
 * (rs_cand.own_end_ns): another generation written after that on the same
 * server, the same whole second counting (catalog_written_after), is the
 * newer, as replication reads it (replica_history_continued_since and
 * replica_history_newer_elsewhere): else the restore kept a file replication then refused
 * at every start (QA95 D1). >0 a, <0 b, 0 no candidate tells.
 */
static int end_order(const struct rs_cand *c, size_t n, const struct rs_local_past *lp,
		      const char *a, const char *b, char *why, size_t len)
{
	if (!lp || !lp->current[0])
		return 0;
	const char *x = !strcmp(a, lp->current) ? b : !strcmp(b, lp->current) ? a : NULL;
	for (size_t i = 0; x && i < n; i++) {
		const struct cat_generation *g = c[i].own_end_ns ? gen_on(&c[i], x) : NULL;
		if (!g || !catalog_written_after(g, c[i].own_end_ns))
			continue;
		snprintf(why, len, "%s holds generation %s written after this node's %s of the local "
			 "%s (within its whole second on a server that keeps no more)", c[i].name, x,
			 c[i].own_killed ? "last object" : "clean stop", lp->current);
		return x == a ? 1 : -1;
	}
	return 0;
}

/*
 * Do one server's times order ga and gb (at ts: rs_gen_time_at), rather than
 * tie: different, and not in one whole second where either is a whole
 * second (S3 keeps no more: both objects were stored within that second)?
 */
static bool by_time(const struct cat_generation *ga, const struct cat_generation *gb, int64_t ts)
{
	int64_t x = rs_gen_time_at(ga, ts), y = rs_gen_time_at(gb, ts);
	if (x == y)
		return false;
	bool whole = x % NS_PER_SEC == 0 || y % NS_PER_SEC == 0;
	return !whole || x / NS_PER_SEC != y / NS_PER_SEC;
}

/*
 * Is generation a newer than b (times ta, tb: rs_gen_time_at by ts, a
 * -timestamp or 0)? Sets *ambiguous when the clocks could not tell; why
 * when the local record (lp) told.
 */
static bool gen_newer(const struct rs_cand *c, size_t n, const char *a, int64_t ta, const char *b,
		      int64_t tb, int64_t ts, int64_t skew_ns, const struct rs_local_past *lp,
		      bool *ambiguous, char *why, size_t len)
{
	int r = ts ? 0 : record_order(c, n, lp, a, b, why, len);
	if (!r && !ts)
		r = end_order(c, n, lp, a, b, why, len);
	if (r)
		return r > 0;
	/*
	 * A server holding both orders them with one clock, whatever the margin:
	 * a server whose clock runs an hour ahead makes its old generation look
	 * an hour newer than another server's new one.
	 */
	int votes[2] = { 0, 0 }, starts[2] = { 0, 0 }, timed[2] = { 0, 0 };
	for (size_t i = 0; i < n; i++) {
		const struct cat_generation *ga = gen_on(&c[i], a), *gb = gen_on(&c[i], b);
		if (!ga || !gb)
			continue;
		int o = rs_gen_order_at(ga, gb, ts);
		if (o)
			votes[o > 0]++;
		if (o && by_time(ga, gb, ts))
			timed[o > 0]++;
		if (ga->min_ns != gb->min_ns)
			starts[ga->min_ns > gb->min_ns]++;
	}
	if (votes[0] + votes[1] > 0 && (!votes[0] || !votes[1]))
		return votes[1] > 0;
	/*
	 * They disagree, but those whose clocks could tell (not a tie to the
	 * second on a server keeping no more) agree: they decide. A tie broken by
	 * the listing's other signs (catalog_gen_order) is no measurement, and
	 * replication, counting the same whole second as "after" and a later
	 * nanosecond as later, refused the pick that followed it (QA99 D2).
	 */
	if (timed[0] + timed[1] > 0 && (!timed[0] || !timed[1])) {
		*ambiguous = true;
		return timed[1] > 0;
	}
	/*
	 * Servers holding both disagree (one got the older generation's tail
	 * late, after the newer one began): the one that started later is the
	 * successor, if they agree on that.
	 */
	if (votes[0] && votes[1]) {
		*ambiguous = true;
		if (starts[0] + starts[1] > 0 && (!starts[0] || !starts[1]))
			return starts[1] > 0;
	}
	int64_t d = ta - tb;
	if (d > skew_ns)
		return true;
	if (d < -skew_ns)
		return false;
	*ambiguous = true;
	/*
	 * Within one second, where either time is a whole second (S3 keeps no
	 * more: the object was stored up to a second later), the times do not
	 * order them: what the listings tell (the one that started later is
	 * the newer, then closed at its end is the older: catalog_gen_order).
	 */
	bool whole = ta % NS_PER_SEC == 0 || tb % NS_PER_SEC == 0;
	if (ta != tb && !(whole && d < NS_PER_SEC && d > -NS_PER_SEC))
		return ta > tb;
	const struct cat_generation *ga = gen_any(c, n, a), *gb = gen_any(c, n, b);
	if (ga && gb) {
		if (ga->min_ns != gb->min_ns)
			return ga->min_ns > gb->min_ns;
		bool ca = catalog_closed_at_end(ga), cb = catalog_closed_at_end(gb);
		if (ca != cb)
			return cb;
	}
	if (ta != tb)
		return ta > tb;
	return strcmp(a, b) > 0;
}

int rs_local_order(const struct rs_cand *c, size_t n, const struct rs_local_past *past,
		   const char *gen)
{
	char why[400];
	if (!past || !past->current[0] || !strcmp(gen, past->current))
		return 0;
	int r = record_order(c, n, past, gen, past->current, why, sizeof(why));
	return r ? r : end_order(c, n, past, gen, past->current, why, sizeof(why));
}

#define ABOVE_MAX 32

/* Is gen among the n ids of above? */
static bool among(char (*above)[LAYOUT_GEN_LEN + 1], size_t n, const char *gen)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(above[i], gen))
			return true;
	return false;
}

bool rs_local_outranked_by(const struct rs_cand *c, size_t n, const struct rs_local_past *past,
			   const char *gen)
{
	char above[ABOVE_MAX][LAYOUT_GEN_LEN + 1];
	size_t na = 0;
	if (!past || !past->current[0])
		return false;
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; c[i].state == RC_OK && k < c[i].ngens && na < ABOVE_MAX; k++) {
			const char *x = c[i].gens[k].id;
			if (strcmp(x, past->current) != 0 && !among(above, na, x) &&
			    rs_local_order(c, n, past, x) > 0)
				memcpy(above[na++], x, sizeof(above[0]));
		}
	/* and upwards, one server's clock at a time, until nothing more is added */
	for (bool grew = true; grew && na < ABOVE_MAX;) {
		grew = false;
		for (size_t i = 0; i < n && na < ABOVE_MAX; i++)
			for (size_t k = 0; c[i].state == RC_OK && k < c[i].ngens && na < ABOVE_MAX; k++) {
				const struct cat_generation *g = &c[i].gens[k];
				if (!strcmp(g->id, past->current) || among(above, na, g->id))
					continue;
				for (size_t j = 0; j < c[i].ngens; j++)
					if (among(above, na, c[i].gens[j].id) &&
					    rs_gen_order_at(g, &c[i].gens[j], 0) > 0) {
						memcpy(above[na++], g->id, sizeof(above[0]));
						grew = true;
						break;
					}
			}
	}
	return among(above, na, gen);
}

bool rs_local_newer(const struct rs_cand *c, size_t n, const struct rs_local_past *past,
		    char gen[LAYOUT_GEN_LEN + 1], char *why, size_t len)
{
	for (size_t i = 0; past && past->current[0] && i < n; i++) {
		for (size_t k = 0; c[i].state == RC_OK && k < c[i].ngens; k++) {
			const char *x = c[i].gens[k].id;
			if (!strcmp(x, past->current))
				continue;
			int r = record_order(c, n, past, x, past->current, why, len);
			if (r == 0)
				r = end_order(c, n, past, x, past->current, why, len);
			if (r <= 0)
				continue;
			/* restorable there: a plan for it */
			struct rs_target t = { .generation = x, .skew_ns = RS_COPY_TIE_NS };
			struct rs_plan p;
			char nodata[512];
			int ok = rs_plan_build(c[i].gens, c[i].ngens, &t, &p, nodata, sizeof(nodata));
			rs_plan_release(&p);
			if (ok == 1) {
				memcpy(gen, x, LAYOUT_GEN_LEN + 1);
				return true;
			}
		}
	}
	return false;
}

/* Candidate order within the winning generation: position desc, rtt asc, config order. */
static bool better(const struct rs_cand *x, size_t xi, const struct rs_cand *y, size_t yi)
{
	int pc = wal_pos_cmp(&x->plan.end, &y->plan.end);
	if (pc != 0)
		return pc > 0;
	if (x->plan.truncated != y->plan.truncated)
		return !x->plan.truncated; /* a replica with a hole only as a last resort */
	if (x->rtt_us != y->rtt_us)
		return x->rtt_us < y->rtt_us;
	return xi < yi;
}

static const char *state_text(const struct rs_cand *c)
{
	if (c->unfinished)
		return "listing";
	if (c->timed_out || c->no_answer)
		return "unreachable";
	if (c->state == RC_ERROR)
		return "error";
	return c->has_data ? "ok" : "no-data";
}

/* The first candidate that answered with an error (not a timeout), or NULL. */
static const struct rs_cand *first_error(const struct rs_cand *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (c[i].state == RC_ERROR && !c[i].timed_out && !c[i].no_answer && c[i].error[0])
			return &c[i];
	return NULL;
}

void rs_choose(struct rs_cand *c, size_t n, int64_t skew_ms, int64_t ts,
	       const struct rs_local_past *past, const char *dbname, const char *mode, size_t need,
	       struct rs_choice *out)
{
	int64_t skew_ns = skew_ms * NS_PER_MS;
	const char *best_gen = NULL;
	int64_t best_t = 0;

	memset(out, 0, sizeof(*out));
	out->winner = -1;
	out->blocked = -1;
	for (size_t i = 0; i < n; i++) {
		c[i].rank = -1;
		c[i].fallback_ok = false;
		c[i].verdict[0] = '\0';
		if (c[i].state == RC_OK)
			out->answered++;
		else
			out->unreachable++;
		if (c[i].state != RC_OK && c[i].unfinished)
			out->unfinished++;
		if (c[i].state == RC_ERROR && c[i].measure_failed && c[i].measure_corrupt)
			out->corrupt++;
		if (c[i].state == RC_ERROR && c[i].measure_failed)
			out->data_failing++;
		if (c[i].state == RC_OK && c[i].has_data)
			out->with_data++;
	}

	/* 2. the newest generation among the candidates' plans */
	for (size_t i = 0; i < n; i++) {
		if (c[i].state != RC_OK || !c[i].has_data)
			continue;
		const char *g = c[i].plan.generation;
		int64_t t = c[i].plan.newest_ns;
		if (best_gen && strcmp(g, best_gen) == 0) {
			if (t > best_t)
				best_t = t;
			continue;
		}
		char told[sizeof(out->by_record)];
		if (!best_gen || gen_newer(c, n, g, t, best_gen, best_t, ts, skew_ns, past,
					   &out->ambiguous, told, sizeof(told))) {
			best_gen = g;
			best_t = t;
		}
	}
	/*
	 * The local state's word on the winner against the local file's
	 * generation (by_record: only where it ordered the winner): the winner
	 * above it (local_newer), or, the winner being it, above another plan's.
	 */
	for (size_t i = 0; best_gen && past && !ts && i < n && !out->by_record[0]; i++) {
		bool won = strcmp(best_gen, past->current) != 0;
		const char *x = won ? best_gen : c[i].plan.generation;
		if (!won && (c[i].state != RC_OK || !c[i].has_data || !strcmp(x, past->current)))
			continue;
		int r = record_order(c, n, past, x, past->current, out->by_record,
				     sizeof(out->by_record));
		if (!r)
			r = end_order(c, n, past, x, past->current, out->by_record,
				      sizeof(out->by_record));
		if (won && r > 0)
			memcpy(out->local_newer, best_gen, sizeof(out->local_newer));
		if (r == 0 || (r > 0) != won)
			out->by_record[0] = '\0'; /* it did not order the winner so */
		if (won)
			break;
	}
	/*
	 * A candidate whose newest generation for the target cannot serve it
	 * (an -index past its end, no snapshot by the -timestamp) tells where
	 * the data asked for is: an older generation elsewhere is not it.
	 */
	for (size_t i = 0; best_gen && i < n; i++) {
		const struct rs_plan *p = &c[i].plan;
		bool ignored = false;
		char told[sizeof(out->by_record)];
		/* an RC_ERROR one too: its newest generation has WAL but no snapshot (yet) */
		if (!c[i].has_data && p->blocked[0] &&
		    strcmp(p->blocked, best_gen) != 0 &&
		    gen_newer(c, n, p->blocked, p->blocked_ns, best_gen, best_t, ts, skew_ns, past,
			      &ignored, told, sizeof(told))) {
			out->blocked = (int)i;
			break;
		}
	}

	/* 3 and 4: order the candidates on that generation */
	size_t ranked = 0;
	for (;;) {
		int pick = -1;
		for (size_t i = 0; i < n; i++) {
			if (c[i].rank >= 0 || c[i].state != RC_OK || !c[i].has_data ||
			    strcmp(c[i].plan.generation, best_gen) != 0)
				continue;
			if (pick < 0 || better(&c[i], i, &c[pick], (size_t)pick))
				pick = (int)i;
		}
		if (pick < 0)
			break;
		c[pick].rank = (int)ranked++;
	}

	const struct rs_cand *w = NULL;
	size_t same = 0;
	for (size_t i = 0; i < n; i++)
		if (c[i].rank == 0) {
			out->winner = (int)i;
			w = &c[i];
		}
	if (w) {
		memcpy(out->generation, w->plan.generation, sizeof(out->generation));
		for (size_t i = 0; i < n; i++)
			if (c[i].rank >= 0 && wal_pos_cmp(&c[i].plan.end, &w->plan.end) == 0)
				same++;
		/* its own replica could not tell its generation from others by time */
		if (w->plan.ntied)
			out->ambiguous = true;
	}

	/*
	 * A candidate whose listing showed a last segment starting at or past the
	 * winner's end holds more than it, even though reading that segment
	 * failed (a stall): the newest data is known to exist and to have failed,
	 * and older data is never used silently (a retry may read it).
	 */
	const struct rs_cand *lost = NULL;
	for (size_t i = 0; i < n && w; i++)
		if (c[i].measure_failed && !strcmp(c[i].lower.generation, w->plan.generation) &&
		    wal_pos_cmp(&c[i].lower, &w->plan.end) >= 0)
			lost = &c[i];
	/*
	 * A candidate that answered and was still listing its objects when the
	 * wait ended is alive and may hold more than any other: the same rule.
	 */
	const struct rs_cand *listing = NULL;
	for (size_t i = 0; i < n && !lost && !listing; i++)
		if (c[i].state != RC_OK && c[i].unfinished)
			listing = &c[i];
	if (lost || listing || out->blocked >= 0)
		out->winner = -1;
	const struct rs_cand *blocker = out->blocked >= 0 ? &c[out->blocked] : NULL;

	char pos[64], wpos[64], when[40];
	for (size_t i = 0; i < n; i++) {
		struct rs_cand *x = &c[i];
		if (x == lost) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "NEWEST DATA, failing: its last segment starts at %s/%08x/%08x, past "
				 "every readable end", x->lower.generation, x->lower.index,
				 x->lower.offset);
		} else if (lost && x->rank >= 0) {
			snprintf(x->verdict, sizeof(x->verdict), "not used: %s holds newer data",
				 lost->name);
		} else if (x->state != RC_OK && x->unfinished) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "ANSWERED, listings not finished in %lld ms: it might hold newer data",
				 (long long)x->probe_ms);
		} else if (blocker && x->rank >= 0) {
			snprintf(x->verdict, sizeof(x->verdict), "not used: %s holds a newer "
				 "generation (%s) that cannot serve this restore", blocker->name,
				 blocker->plan.blocked);
		} else if (listing && x->rank >= 0) {
			snprintf(x->verdict, sizeof(x->verdict), "not used: %s might hold newer data",
				 listing->name);
		} else if (x->timed_out || x->no_answer) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "UNREACHABLE (no answer in %lld ms): it might hold newer data",
				 (long long)x->probe_ms);
		} else if (x->state == RC_ERROR && x->foreign_form) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "UNREADABLE with its age: settings (they changed since it was "
				 "written): it might hold newer data");
		} else if (x->state == RC_ERROR && x->measure_failed && x->measure_answered) {
			/* it answered; reading its last segment failed (corrupt, refused) */
			snprintf(x->verdict, sizeof(x->verdict),
				 "FAILING (its last segment could not be read): it might hold newer "
				 "data");
		} else if (x->state == RC_ERROR) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "UNREACHABLE or failing: it might hold newer data");
		} else if (!x->has_data) {
			snprintf(x->verdict, sizeof(x->verdict), "no usable data: %s", x->nodata);
		} else if (x->rank == 0 && out->answered < need) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "newest of those that answered, not used: mode %s needs %zu answer(s)",
				 mode, need);
		} else if (x->rank == 0) {
			if (same > 1)
				snprintf(x->verdict, sizeof(x->verdict),
					 "WINNER: newest data, fastest of %zu holding it", same);
			else if (ranked > 1 || out->answered > 1)
				snprintf(x->verdict, sizeof(x->verdict), "WINNER: newest data");
			else
				snprintf(x->verdict, sizeof(x->verdict), "WINNER: the only candidate with data");
		} else if (x->rank > 0 && wal_pos_cmp(&x->plan.end, &w->plan.end) == 0) {
			x->fallback_ok = true;
			if (x->plan.truncated != w->plan.truncated)
				snprintf(x->verdict, sizeof(x->verdict),
					 "fallback #%d: same data, but with a hole", x->rank);
			else if (x->rtt_us != w->rtt_us)
				snprintf(x->verdict, sizeof(x->verdict),
					 "fallback #%d: same data, slower (rtt %.2f ms vs %.2f ms)",
					 x->rank, x->rtt_us / 1000.0, w->rtt_us / 1000.0);
			else
				snprintf(x->verdict, sizeof(x->verdict),
					 "fallback #%d: same data, as fast, later in the configuration",
					 x->rank);
		} else if (x->rank > 0) {
			snprintf(x->verdict, sizeof(x->verdict), "stale: behind the winner (%s < %s)",
				 end_text(&x->plan, pos, sizeof(pos)),
				 end_text(&w->plan, wpos, sizeof(wpos)));
		} else if (out->by_record[0] && past && !strcmp(out->generation, past->current) !=
							!strcmp(x->plan.generation, past->current)) {
			snprintf(x->verdict, sizeof(x->verdict),
				 "older generation by the local database's own state (newest object "
				 "%s)", clock_rfc3339(x->plan.newest_ns, when, sizeof(when)));
		} else {
			snprintf(x->verdict, sizeof(x->verdict),
				 "older generation (newest object %s%s)",
				 clock_rfc3339(x->plan.newest_ns, when, sizeof(when)),
				 out->ambiguous ? ", within the clock-skew margin" : "");
		}
	}

	if (lost)
		snprintf(out->why, sizeof(out->why), "%s holds newer data than the candidates that "
			 "could be read (%s at %s), but reading it failed: not restoring older data",
			 lost->name, w->name, end_text(&w->plan, wpos, sizeof(wpos)));
	else if (blocker)
		snprintf(out->why, sizeof(out->why), "%s holds a newer generation than %s's (%s): %s; "
			 "not restoring an older one", blocker->name, w->name, w->plan.generation,
			 blocker->nodata);
	else if (listing)
		snprintf(out->why, sizeof(out->why), "%s answered but could not finish listing its "
			 "objects in %lld ms (its error above; restore.wait-timeout bounds how long a "
			 "replica that answered may take, idle-timeout how long one page may stall): "
			 "it might hold newer data than %s, not restoring without it", listing->name,
			 (long long)listing->probe_ms, w ? w->name : "the others");
	else if (w && out->answered < need)
		snprintf(out->why, sizeof(out->why), "not settled: mode %s needs %zu answer(s), "
			 "%zu answered (newest among them: %s at %s)", mode, need, out->answered,
			 w->name, end_text(&w->plan, wpos, sizeof(wpos)));
	else if (w)
		/* not "restore from": an existing database may yet be kept (restore.c) */
		snprintf(out->why, sizeof(out->why), "newest data: %s at %s", w->name,
			 end_text(&w->plan, wpos, sizeof(wpos)));
	else if (out->answered == 0 && first_error(c, n))
		snprintf(out->why, sizeof(out->why), "no candidate answered without an error "
			 "(%s: %.300s)", first_error(c, n)->name, first_error(c, n)->error);
	else if (out->answered == 0)
		snprintf(out->why, sizeof(out->why), "no candidate answered");
	else
		snprintf(out->why, sizeof(out->why), "no candidate holds matching data");

}

void rs_log_decision(const struct rs_cand *c, size_t n, const struct rs_choice *out,
		     int64_t skew_ms, const char *dbname, const char *mode)
{
	char pos[64], ts[40];

	/* the decision block: a header, one line per candidate, the result */
	log_info("restore", "decision", "db=\"%s\" mode=%s candidates=%zu answered=%zu with_data=%zu "
		 "clock_skew_ms=%lld", dbname, mode, n, out->answered, out->with_data,
		 (long long)skew_ms);
	for (size_t i = 0; i < n; i++) {
		const struct rs_cand *x = &c[i];
		enum log_level lvl = (x->state == RC_OK) ? LOG_INFO : LOG_WARN;
		if (x->state == RC_OK && x->has_data)
			log_event(lvl, "restore", "  candidate",
				  "db=\"%s\" name=%s state=%s pos=%s newest=%s rtt_ms=%.1f probe_ms=%lld "
				  "bytes=%llu%s%s%s%s%s%s%s%s verdict=\"%s\"",
				  dbname, x->name, state_text(x), end_text(&x->plan, pos, sizeof(pos)),
				  clock_rfc3339(x->plan.newest_ns, ts, sizeof(ts)), x->rtt_us / 1000.0,
				  (long long)x->probe_ms, (unsigned long long)x->plan.bytes,
				  x->plan.database_id[0] ? " database_id=" : "", x->plan.database_id,
				  x->plan.truncated ? " hole=\"" : "",
				  x->plan.truncated ? x->plan.note : "", x->plan.truncated ? "\"" : "",
				  x->plan.ignored[0] ? " ignored=\"" : "", x->plan.ignored,
				  x->plan.ignored[0] ? "\"" : "", x->verdict);
		else if (x->timed_out || x->no_answer) /* no round trip to show */
			log_event(lvl, "restore", "  candidate",
				  "db=\"%s\" name=%s state=%s probe_ms=%lld error=\"%s\" verdict=\"%s\"",
				  dbname, x->name, state_text(x), (long long)x->probe_ms, x->error,
				  x->verdict);
		else
			log_event(lvl, "restore", "  candidate",
				  "db=\"%s\" name=%s state=%s rtt_ms=%.1f probe_ms=%lld%s%s%s "
				  "verdict=\"%s\"", dbname, x->name, state_text(x), x->rtt_us / 1000.0,
				  (long long)x->probe_ms, x->state == RC_OK ? "" : " error=\"",
				  x->state == RC_OK ? "" : x->error, x->state == RC_OK ? "" : "\"",
				  x->verdict);
	}
	/* object times are on our clock (the S3 client reads each server's Date): one still
	 * in the future was stamped by a clock that has stepped back since */
	int64_t now = clock_wall_ns();
	for (size_t i = 0; i < n; i++)
		if (c[i].state == RC_OK && c[i].has_data &&
		    c[i].plan.newest_ns - now > skew_ms * NS_PER_MS)
			log_warn("restore", "a candidate's newest object is dated in the future: the "
				 "clock that stamped it is ahead of ours (a file replica's filesystem, "
				 "such as a NAS, is not corrected) or has stepped back since, and the "
				 "order of generations by time may be wrong there",
				 "db=\"%s\" name=%s ahead_s=%.0f",
				 dbname, c[i].name, (double)(c[i].plan.newest_ns - now) / NS_PER_SEC);
	const struct rs_cand *w = out->winner >= 0 ? &c[out->winner] : NULL;
	if (w && w->plan.ntied)
		log_warn("restore", "the replica's generations cannot be told apart by their object "
			 "times (within a second on its one clock: a replica copied object by object "
			 "gets the copy's times): which is newest is ambiguous", "db=\"%s\" replica=%s "
			 "picked=%s tied=%s%s rule=\"newest object, then started later, then not "
			 "closed at its end, then the highest position, then the greater name\"", dbname,
			 w->name, w->plan.generation, w->plan.tied, w->plan.ntied > 3 ? ",..." : "");
	if (out->by_record[0])
		log_info("restore", "generations ordered by the local database's own state, as "
			 "replication reads it", "db=\"%s\" why=\"%s\"", dbname, out->by_record);
	log_event(out->ambiguous ? LOG_WARN : LOG_INFO, "restore", "decided",
		  "db=\"%s\" result=\"%s\"%s", dbname, out->why,
		  out->ambiguous ? " warning=\"an ambiguous order: generations whose times cannot "
				   "be told apart\"" : "");
}

void rs_print_decision(const struct rs_cand *c, size_t n, const struct rs_choice *ch,
		       const char *output)
{
	char pos[64], ts[40];
	printf("%-16s %-12s %-36s %-24s %9s  %s\n", "candidate", "state", "position", "newest",
	       "rtt_ms", "verdict");
	for (size_t i = 0; i < n; i++) {
		const struct rs_cand *x = &c[i];
		bool data = x->state == RC_OK && x->has_data;
		printf("%-16s %-12s %-36s %-24s %9.1f  %s\n", x->name, state_text(x),
		       data ? end_text(&x->plan, pos, sizeof(pos)) : "-",
		       data ? clock_rfc3339(x->plan.newest_ns, ts, sizeof(ts)) : "-",
		       x->rtt_us / 1000.0, x->verdict);
	}
	/* which database each history is (its label), when it says */
	for (size_t i = 0; i < n; i++) {
		const struct rs_cand *x = &c[i];
		if (x->state == RC_OK && x->has_data && x->plan.database_id[0])
			printf("database id: %s generation %s: %s\n", x->name, x->plan.generation,
			       x->plan.database_id);
	}
	if (ch->winner >= 0) {
		const struct rs_cand *w = &c[ch->winner];
		printf("decision: %s\n", ch->why);
		if (w->plan.ntied)
			printf("ambiguous: generation %s cannot be told apart by time from %s%s "
			       "(within a second: a copied replica?)\n", w->plan.generation, w->plan.tied,
			       w->plan.ntied > 3 ? ",..." : "");
		printf("plan: snapshot %08x, %zu WAL segment(s), %llu bytes to download, into %s\n",
		       w->plan.snapshot.index, w->plan.nsegments,
		       (unsigned long long)w->plan.bytes, output);
		if (w->plan.truncated)
			printf("hole: %s: the restore would fail there (missing segment)\n",
			       w->plan.note[0] ? w->plan.note : "a segment is missing");
	} else {
		printf("decision: %s\n", ch->why);
	}
}
