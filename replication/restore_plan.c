/*
 * restore_plan.c — from one replica's catalog, the objects a restore would
 * apply: generation, snapshot, then WAL segments in (index, offset) order.
 *
 * Rules (Litestream v0.3 semantics, minus its bugs, see docs/restore.md):
 * - generation: the one asked for, else the newest (rs_gen_order_at: with
 *   -timestamp, by its newest object at or before it; a full tie: the one
 *   ending at the highest position, then the greater name, so the pick never
 *   depends on listing order) among those that started (have a snapshot) at
 *   or before the timestamp; others whose time is within the clock-skew
 *   margin of its own are noted as tied (a copied replica: every object has
 *   the copy's time);
 *   a newer generation without a snapshot, or (with -timestamp) one written
 *   later by that time, holding WAL from before it but only later snapshots,
 *   makes the data asked for unrestorable: an error, not a silent restore of
 *   older data (p->blocked names it, so that another replica's older
 *   generation does not win instead either);
 * - snapshot: the highest index <= -index whose time is <= -timestamp,
 *   and at most one past the generation's newest WAL index (neither tool
 *   writes one further: a misnamed object, which Litestream ignores too);
 * - segments: from the snapshot's index on, stopping at -index or at the
 *   first object newer than -timestamp (for a whole-second replica beside a
 *   finer one, rs_plans_whole_second_cut, at the first one also not held
 *   by the finer one by then: finer_stored);
 * - an -index past the generation's last index is an error, not a silent
 *   restore to the end;
 * - every index must start at offset 0 and follow the previous one; a gap
 *   is noted in the plan (the candidate ranks after complete ones holding
 *   the same position) and applying stops there with "missing segment", so
 *   the restore falls back instead of silently replaying around a hole. A
 *   lost last segment of an index followed by another index cannot be seen
 *   from names alone (nor by Litestream).
 */
#include "replication/restore_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/banned.h"

void rs_plan_release(struct rs_plan *p)
{
	free(p->segments);
	memset(p, 0, sizeof(*p));
}

/* Does g have a snapshot usable for target t? */
static bool gen_usable(const struct cat_generation *g, const struct rs_target *t)
{
	for (size_t i = 0; i < g->nsnapshots; i++)
		if (!t->timestamp_ns || g->snapshots[i].mtime_ns + g->clock_offset_ns <= t->timestamp_ns)
			return true;
	return false;
}

static uint32_t last_index(const struct cat_generation *g)
{
	uint32_t m = 0;
	if (g->nsnapshots)
		m = g->snapshots[g->nsnapshots - 1].index;
	if (g->nsegments && g->segments[g->nsegments - 1].index > m)
		m = g->segments[g->nsegments - 1].index;
	return m;
}

/* Where g ends as its names tell: its last segment's start, else its last snapshot. */
static struct wal_pos named_end(const struct cat_generation *g)
{
	struct wal_pos p = { 0 };
	if (g->nsnapshots)
		p.index = g->snapshots[g->nsnapshots - 1].index;
	if (g->nsegments) {
		const struct cat_segment *s = &g->segments[g->nsegments - 1];
		if (s->index >= p.index) {
			p.index = s->index;
			p.offset = s->offset;
		}
	}
	return p;
}

/* The time of g's newest object at or before ts (the server's clock), 0 if none. */
static int64_t newest_by(const struct cat_generation *g, int64_t ts)
{
	int64_t m = 0;
	for (size_t i = 0; i < g->nsnapshots; i++) {
		int64_t at = g->snapshots[i].mtime_ns + g->clock_offset_ns;
		if (at <= ts && at > m)
			m = at;
	}
	for (size_t i = 0; i < g->nsegments; i++) {
		int64_t at = g->segments[i].mtime_ns + g->clock_offset_ns;
		if (at <= ts && at > m)
			m = at;
	}
	return m;
}

int64_t rs_gen_time_at(const struct cat_generation *g, int64_t ts)
{
	if (!ts)
		return g->max_ns;
	int64_t m = newest_by(g, ts);
	return m ? m - g->clock_offset_ns : 0;
}

int rs_gen_order_at(const struct cat_generation *a, const struct cat_generation *b, int64_t ts)
{
	if (ts) {
		int64_t na = rs_gen_time_at(a, ts), nb = rs_gen_time_at(b, ts);
		if (na != nb)
			return na > nb ? 1 : -1;
		/* written in the same second (S3 keeps whole seconds): the successor started later */
		if (a->min_ns != b->min_ns)
			return a->min_ns > b->min_ns ? 1 : -1;
	}
	return catalog_gen_order(a, b);
}

/* rs_gen_order_at, and a total order where it ties: more data, then the name. */
static int gen_order(const struct cat_generation *a, const struct cat_generation *b,
		     const struct rs_target *t)
{
	int o = rs_gen_order_at(a, b, t->timestamp_ns);
	if (o)
		return o;
	struct wal_pos ea = named_end(a), eb = named_end(b);
	if (ea.index != eb.index)
		return ea.index > eb.index ? 1 : -1;
	if (ea.offset != eb.offset)
		return ea.offset > eb.offset ? 1 : -1;
	o = strcmp(a->id, b->id);
	return o > 0 ? 1 : o < 0 ? -1 : 0;
}

/* Note in p the generations other than g whose times cannot be told from g's. */
static void note_tied(const struct cat_generation *gens, size_t ngens,
		      const struct cat_generation *g, const struct rs_target *t, struct rs_plan *p)
{
	for (size_t i = 0; i < ngens; i++) {
		const struct cat_generation *h = &gens[i];
		int64_t d = rs_gen_time_at(h, t->timestamp_ns) - rs_gen_time_at(g, t->timestamp_ns);
		if (h == g || !gen_usable(h, t) || d > t->skew_ns || d < -t->skew_ns)
			continue;
		if (p->ntied++ < 3) {
			size_t l = strlen(p->tied);
			snprintf(p->tied + l, sizeof(p->tied) - l, "%s%s", l ? "," : "", h->id);
		}
	}
}

/*
 * Did the writer leave h for g? h has no snapshot at all, began before g and
 * ends in g's last second: the segments shipped into a replica emptied under
 * the writer, which then started g (replica_leave_generation), both ending
 * in one whole second on S3 (QA63 #4). A generation still uploading its
 * first snapshot began after the one before it.
 */
static bool left_for(const struct cat_generation *h, const struct cat_generation *g)
{
	int64_t d = h->max_ns - g->max_ns;
	return !h->nsnapshots && h->min_ns < g->min_ns && d < NS_PER_SEC && d > -NS_PER_SEC;
}

/*
 * Did the finer-clocked replica of t (rs_plans_whole_second_cut) store
 * segment s of generation g by t->finer_ts, the timestamp the cut moved
 * back from? Its times are exact, and one writer ships the same frames of
 * a generation under one name: the same name and size there is the same
 * segment, stored by then, whatever this replica's whole second says. A
 * copy of that segment holding more frames (another sync schedule, a
 * writer that died mid-upload) differs in size and is not taken (the size
 * tells them apart as more_elsewhere in restore.c reads it), nor is one
 * in another form (encrypted on one replica only): those stay cut.
 */
static bool finer_stored(const struct rs_target *t, const struct cat_generation *g,
			 const struct cat_segment *s)
{
	const struct cat_generation *f = t->finer;
	if (!f || strcmp(f->id, g->id) != 0)
		return false;
	size_t lo = 0, hi = f->nsegments; /* sorted by (index, offset) */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct cat_segment *o = &f->segments[mid];
		if (o->index < s->index || (o->index == s->index && o->offset < s->offset)) {
			lo = mid + 1;
		} else if (o->index == s->index && o->offset == s->offset) {
			return o->size == s->size && o->mtime_ns + f->clock_offset_ns <= t->finer_ts;
		} else {
			hi = mid;
		}
	}
	return false;
}

/* Note in p that generation g, the newest for t here, cannot serve t. */
static void block(struct rs_plan *p, const struct cat_generation *g, const struct rs_target *t)
{
	memcpy(p->blocked, g->id, sizeof(p->blocked));
	p->blocked_ns = rs_gen_time_at(g, t->timestamp_ns);
}

int rs_plan_build(const struct cat_generation *gens, size_t ngens, const struct rs_target *t,
		  struct rs_plan *p, char *nodata, size_t len)
{
	const struct cat_generation *g = NULL;

	memset(p, 0, sizeof(*p));
	nodata[0] = '\0';
	for (size_t i = 0; i < ngens; i++) {
		if (t->generation) {
			if (strcmp(gens[i].id, t->generation) == 0)
				g = &gens[i];
			continue;
		}
		if (!gen_usable(&gens[i], t) || (t->exclude && !strcmp(gens[i].id, t->exclude)))
			continue;
		if (!g || gen_order(&gens[i], g, t) > 0)
			g = &gens[i];
	}
	if (g && !t->generation)
		note_tied(gens, ngens, g, t, p);
	/*
	 * A newer generation that holds WAL but no snapshot cannot be restored
	 * (its snapshot was deleted, or is still being uploaded); nor can one
	 * written later by -timestamp, whose WAL reaches back before it but whose
	 * snapshots are all later (retention removed the one that covered it, or
	 * Litestream's snapshot-interval replaced it under its name): the
	 * database was in that generation then. Restoring an older one instead
	 * would silently bring back stale data.
	 */
	for (size_t i = 0; i < ngens && !t->generation; i++) {
		const struct cat_generation *h = &gens[i];
		if (gen_usable(h, t) || !h->nsegments || (t->exclude && !strcmp(h->id, t->exclude)) ||
		    (g && rs_gen_order_at(h, g, t->timestamp_ns) <= 0) ||
		    (t->timestamp_ns && h->min_ns + h->clock_offset_ns > t->timestamp_ns) ||
		    (g && left_for(h, g)))
			continue;
		int k;
		if (h->nsnapshots)
			k = snprintf(nodata, len, "generation %s, the one written at the timestamp, "
				     "holds WAL from before it but no snapshot at or before it "
				     "(retention removed it, or a later snapshot replaced it under its "
				     "name): the state at the timestamp is not restorable", h->id);
		else
			k = snprintf(nodata, len, "newest generation %s has WAL but no snapshot "
				     "(deleted, or still uploading): not restorable", h->id);
		if (g && k > 0 && (size_t)k < len)
			snprintf(nodata + k, len - (size_t)k, "; for the generation written before "
				 "it: -generation %s", g->id);
		block(p, h, t);
		/*
		 * Gone for good: nothing here matches the timestamp (exit 1, as
		 * Litestream), not a failing replica that a later try may find
		 * whole (111). One without any snapshot may still be uploading it.
		 */
		return h->nsnapshots ? 0 : -2;
	}
	if (!g) {
		if (t->generation)
			snprintf(nodata, len, "no generation %s", t->generation);
		else if (t->timestamp_ns && ngens)
			snprintf(nodata, len, "no snapshot at or before the timestamp");
		else
			snprintf(nodata, len, ngens ? "no snapshot in any generation" : "no generations");
		return 0;
	}
	if (t->has_index && t->index > last_index(g)) {
		snprintf(nodata, len, "index %08x is past the end of generation %s (last index %08x)",
			 t->index, g->id, last_index(g));
		if (!t->generation)
			block(p, g, t);
		return -1;
	}

	const struct cat_snapshot *snap = NULL;
	uint32_t wal_last = g->nsegments ? g->segments[g->nsegments - 1].index : 0;
	for (size_t i = 0; i < g->nsnapshots; i++) {
		const struct cat_snapshot *s = &g->snapshots[i];
		if (t->has_index && s->index > t->index)
			continue;
		if (t->timestamp_ns && s->mtime_ns + g->clock_offset_ns > t->timestamp_ns)
			continue;
		if (g->nsegments && s->index > wal_last + 1) {
			snprintf(p->ignored, sizeof(p->ignored), "snapshot %08x: past the generation's "
				 "newest WAL index %08x", s->index, wal_last);
			continue;
		}
		snap = s;
	}
	if (!snap) {
		snprintf(nodata, len, "generation %s has no snapshot at or before the %s", g->id,
			 t->has_index ? "index" : t->timestamp_ns ? "timestamp" : "end");
		return 0;
	}

	memcpy(p->generation, g->id, sizeof(p->generation));
	memcpy(p->database_id, g->database_id, sizeof(p->database_id));
	p->snapshot = *snap;
	p->bytes = (uint64_t)snap->size;
	p->newest_ns = rs_gen_time_at(g, t->timestamp_ns);
	p->oldest_ns = g->min_ns;
	p->end.index = snap->index;
	p->end.offset = 0;
	memcpy(p->end.generation, g->id, sizeof(p->end.generation));
	p->segments = calloc(g->nsegments + 1, sizeof(*p->segments));
	if (!p->segments) {
		snprintf(nodata, len, "out of memory");
		return 0;
	}

	uint32_t cur = snap->index;
	bool started = false; /* saw offset 0 of index cur */
	for (size_t i = 0; i < g->nsegments; i++) {
		const struct cat_segment *s = &g->segments[i];
		if (s->index < snap->index)
			continue;
		if (t->has_index && s->index > t->index)
			break;
		if (t->timestamp_ns && s->mtime_ns + g->clock_offset_ns > t->timestamp_ns) {
			if (!finer_stored(t, g, s))
				break;
			if (s->mtime_ns > p->newest_ns) /* the newest object it applies */
				p->newest_ns = s->mtime_ns;
		}
		/* a gap is noted, not skipped: applying fails there and falls back */
		if (!p->truncated) {
			if (s->index == cur && !started && s->offset != 0) {
				p->truncated = true;
				snprintf(p->note, sizeof(p->note), "index %08x has no segment at offset 0",
					 cur);
			} else if (s->index != cur && !started) {
				p->truncated = true;
				snprintf(p->note, sizeof(p->note),
					 "index %08x (the snapshot's) has no segments", cur);
			} else if (s->index != cur && (s->index != cur + 1 || s->offset != 0)) {
				p->truncated = true;
				snprintf(p->note, sizeof(p->note),
					 "gap before segment %08x/%08x (expected index %08x at offset 0)",
					 s->index, s->offset, cur + 1);
			}
		}
		if (s->index != cur)
			cur = s->index;
		started = true;
		p->segments[p->nsegments++] = *s;
		p->bytes += (uint64_t)s->size;
		p->end.index = s->index;
		p->end.offset = s->offset; /* the last segment's length is added when measured */
		p->end_open = true;
	}
	return 1;
}

/* 1: every object time of c is a whole second (the server's own), 0: one is finer, -1: none */
static int whole_seconds(const struct rs_cand *c)
{
	int r = -1;
	for (size_t i = 0; i < c->ngens; i++) {
		const struct cat_generation *g = &c->gens[i];
		for (size_t k = 0; k < g->nsnapshots; k++) {
			if (g->snapshots[k].mtime_ns % NS_PER_SEC)
				return 0;
			r = 1;
		}
		for (size_t k = 0; k < g->nsegments; k++) {
			if (g->segments[k].mtime_ns % NS_PER_SEC)
				return 0;
			r = 1;
		}
	}
	return r;
}

/* Does a candidate keeping finer times than whole seconds restore generation gen at t? */
static bool finer_holds(const struct rs_cand *c, size_t n, const char *gen)
{
	for (size_t i = 0; i < n; i++)
		if (c[i].state == RC_OK && c[i].has_data && whole_seconds(&c[i]) == 0 &&
		    !strcmp(c[i].plan.generation, gen))
			return true;
	return false;
}

/*
 * Did a candidate that answered, keeping finer times than whole seconds,
 * store some of generation gen by t (the server's time, as t is read;
 * whatever it restores at t: its exact
 * times still say what was stored by then)? One whose objects of gen all
 * came later (a replica added since) tells nothing of t (QA125 D1).
 * Its listing of gen, of the one that stored the newest object by t when
 * several did (it saw the most), else NULL.
 */
static const struct cat_generation *finer_saw(const struct rs_cand *c, size_t n,
					      const char *gen, int64_t t)
{
	const struct cat_generation *best = NULL;
	int64_t best_at = 0;
	for (size_t i = 0; i < n; i++) {
		if (c[i].state != RC_OK || whole_seconds(&c[i]) != 0)
			continue;
		for (size_t k = 0; k < c[i].ngens; k++) {
			const struct cat_generation *g = &c[i].gens[k];
			if (strcmp(g->id, gen) != 0 || !g->min_ns ||
			    g->min_ns + g->clock_offset_ns > t)
				continue;
			int64_t at = newest_by(g, t);
			if (!best || at > best_at) {
				best = g;
				best_at = at;
			}
		}
	}
	return best;
}

size_t rs_plans_whole_second_cut(struct rs_cand *c, size_t n, const struct rs_target *t)
{
	size_t cut = 0;
	if (!t->timestamp_ns)
		return 0;
	/* stamped at s, stored before s + 1 s: surely by the timestamp when s + 1 s - 1 ns is */
	struct rs_target sure = *t;
	sure.timestamp_ns = t->timestamp_ns - NS_PER_SEC + 1;
	for (size_t i = 0; i < n; i++) {
		/*
		 * One with no data at t either: its objects of t's second are read as
		 * stored after it, like the others', when restore.c weighs whether it
		 * holds more of the winner's generation (QA129 D2).
		 */
		if (c[i].state == RC_OK && !c[i].has_data && whole_seconds(&c[i]) == 1)
			for (size_t k = 0; k < c[i].ngens && !c[i].cut_ns; k++)
				if (finer_holds(c, n, c[i].gens[k].id))
					c[i].cut_ns = sure.timestamp_ns;
		/*
		 * Only where the finer clock saw the same generation: of another
		 * (a handover within the second, QA66 D3) it tells nothing. Saw
		 * it, not planned it: one that has no data at t (a snapshot
		 * rewritten after it, its WAL from before kept) let a whole-second
		 * candidate restore commits made after the timestamp (QA155 D2).
		 */
		if (c[i].state != RC_OK || !c[i].has_data || whole_seconds(&c[i]) != 1)
			continue;
		const struct cat_generation *saw = finer_saw(c, n, c[i].plan.generation,
							     t->timestamp_ns);
		if (!saw && !finer_holds(c, n, c[i].plan.generation))
			continue;
		/*
		 * Cut by time, not by what the finer one knows, dropped up to a
		 * second of commits that its exact times prove were made before
		 * the timestamp (QA159 D4): the segments it stored by then, by
		 * name and size, still apply here. Nothing it did not store by
		 * the timestamp does, unless this one's own time proves it.
		 * Snapshots stay cut by time: a snapshot's name says where its
		 * index starts, not how far past that its read reached.
		 */
		struct rs_target own = sure;
		own.finer = saw;
		own.finer_ts = t->timestamp_ns;
		rs_plan_release(&c[i].plan);
		int rc = rs_plan_build(c[i].gens, c[i].ngens, &own, &c[i].plan, c[i].nodata,
				       sizeof(c[i].nodata));
		c[i].has_data = rc == 1;
		c[i].cut_ns = sure.timestamp_ns;
		/* its snapshot may be in the timestamp's second: "before the timestamp" alone misleads */
		if (!c[i].has_data) {
			size_t len = strlen(c[i].nodata);
			snprintf(c[i].nodata + len, sizeof(c[i].nodata) - len, " (read up to a second "
				 "before it: its times are whole seconds, another replica's finer)");
		}
		cut++;
	}
	return cut;
}
