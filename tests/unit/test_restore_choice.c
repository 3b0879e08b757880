/* Unit tests for restore's plan (restore_plan.c) and decision rule (restore_choose.c). */
#include "tests/unit/unit.h"

#include "common/log.h"
#include "replication/restore_int.h"

#define S(ns) ((int64_t)(ns) * 1000000000LL)

static struct cat_generation gen(const char *id, const uint32_t *snaps, size_t ns,
				 const uint32_t (*segs)[2], size_t nseg, int64_t t0)
{
	struct cat_generation g = { 0 };
	snprintf(g.id, sizeof(g.id), "%s", id);
	g.snapshots = calloc(ns + 1, sizeof(*g.snapshots));
	g.segments = calloc(nseg + 1, sizeof(*g.segments));
	int64_t t = t0;
	for (size_t i = 0; i < ns; i++) {
		g.snapshots[i] = (struct cat_snapshot){ snaps[i], 100, t };
		t += S(10);
	}
	for (size_t i = 0; i < nseg; i++) {
		g.segments[i] = (struct cat_segment){ segs[i][0], segs[i][1], 50, t };
		t += S(10);
	}
	g.nsnapshots = ns;
	g.nsegments = nseg;
	g.min_ns = t0;
	g.max_ns = t - S(10);
	return g;
}

static const uint32_t snaps01[] = { 0, 1 };
static const uint32_t segs[][2] = { { 0, 0 }, { 0, 100 }, { 1, 0 }, { 1, 200 }, { 2, 0 } };

TEST(plan_newest_snapshot_and_following_segments)
{
	struct cat_generation g = gen("0123456789abcdef", snaps01, 2, segs, 5, S(1000));
	struct rs_target t = { 0 };
	struct rs_plan p;
	char why[160];
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), 1);
	CHECK_INT(p.snapshot.index, 1);
	CHECK_INT(p.nsegments, 3); /* 1/0, 1/200, 2/0 */
	CHECK_INT(p.segments[0].index, 1);
	CHECK(!p.truncated);
	CHECK_INT(p.end.index, 2);
	rs_plan_release(&p);
}

TEST(plan_index_bounds_and_past_the_end)
{
	struct cat_generation g = gen("0123456789abcdef", snaps01, 2, segs, 5, S(1000));
	struct rs_target t = { .has_index = true, .index = 0 };
	struct rs_plan p;
	char why[160];
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), 1);
	CHECK_INT(p.snapshot.index, 0);
	CHECK_INT(p.nsegments, 2);
	rs_plan_release(&p);
	t.index = 3;
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), -1);
	CHECK(strstr(why, "past the end") != NULL);
	rs_plan_release(&p);
}

TEST(plan_timestamp_picks_snapshot_and_stops)
{
	/* times: snap0 1000, snap1 1010, segs 1020, 1030, 1040, 1050, 1060 */
	struct cat_generation g = gen("0123456789abcdef", snaps01, 2, segs, 5, S(1000));
	struct rs_target t = { .timestamp_ns = S(1005) };
	struct rs_plan p;
	char why[160];
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), 1);
	CHECK_INT(p.snapshot.index, 0);
	CHECK_INT(p.nsegments, 0);
	rs_plan_release(&p);
	t.timestamp_ns = S(1045);
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), 1);
	CHECK_INT(p.snapshot.index, 1);
	CHECK_INT(p.nsegments, 1); /* 1/0 at 1040; 1/200 at 1050 is after the timestamp */
	rs_plan_release(&p);
	t.timestamp_ns = S(999);
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), 0);
	rs_plan_release(&p);
}

TEST(plan_notes_a_hole)
{
	static const uint32_t holed[][2] = { { 1, 0 }, { 1, 200 }, { 3, 0 } };
	struct cat_generation g = gen("0123456789abcdef", snaps01, 2, holed, 3, S(1000));
	struct rs_target t = { 0 };
	struct rs_plan p;
	char why[160];
	CHECK_INT(rs_plan_build(&g, 1, &t, &p, why, sizeof(why)), 1);
	CHECK(p.truncated);
	CHECK(strstr(p.note, "gap") != NULL);
	CHECK_INT(p.nsegments, 3); /* kept: applying fails at the hole and falls back */
	rs_plan_release(&p);
}

TEST(plan_timestamp_in_a_generation_whose_covering_snapshot_is_gone)
{
	/* a: snapshot 0 at 1000, segment 0/0 at 1010 */
	static const uint32_t a0[] = { 0 }, b5[] = { 5 };
	static const uint32_t aseg[][2] = { { 0, 0 } }, bseg[][2] = { { 5, 0 }, { 5, 100 } };
	struct cat_generation g[2];
	g[0] = gen("aaaaaaaaaaaaaaaa", a0, 1, aseg, 1, S(1000));
	/* b: its WAL from 1900 on, its only snapshot (taken later) at 2000 */
	g[1] = gen("bbbbbbbbbbbbbbbb", b5, 1, bseg, 2, S(1900));
	g[1].snapshots[0].mtime_ns = S(2000);
	g[1].segments[0].mtime_ns = S(1900);
	g[1].segments[1].mtime_ns = S(1950);
	g[1].max_ns = S(2000);
	struct rs_target t = { .timestamp_ns = S(1960) };
	struct rs_plan p;
	char why[512];
	/* the database was in b at 1960: a's end is not the state then */
	CHECK_INT(rs_plan_build(g, 2, &t, &p, why, sizeof(why)), 0); /* gone for good: no match */
	CHECK(strstr(why, "bbbbbbbbbbbbbbbb") != NULL);
	CHECK(strstr(why, "-generation aaaaaaaaaaaaaaaa") != NULL);
	rs_plan_release(&p);
	/* before b began: a's end is right */
	t.timestamp_ns = S(1500);
	CHECK_INT(rs_plan_build(g, 2, &t, &p, why, sizeof(why)), 1);
	CHECK(strcmp(p.generation, "aaaaaaaaaaaaaaaa") == 0);
	rs_plan_release(&p);
	/* after b's snapshot: b */
	t.timestamp_ns = S(2001);
	CHECK_INT(rs_plan_build(g, 2, &t, &p, why, sizeof(why)), 1);
	CHECK(strcmp(p.generation, "bbbbbbbbbbbbbbbb") == 0);
	rs_plan_release(&p);
	for (int i = 0; i < 2; i++)
		catalog_generation_release(&g[i]);
}

TEST(plan_same_second_generations_the_closed_one_is_older)
{
	struct cat_generation g[2];
	struct cat_closed mark = { 2, 300, S(1060) };
	/* both end in the same (whole) second; the first one's writer closed it */
	g[0] = gen("ffffffffffffffff", snaps01, 2, segs, 5, S(1000));
	g[0].closed = &mark;
	g[0].nclosed = 1;
	g[1] = gen("0000000000000000", snaps01, 1, segs, 0, S(1060));
	g[1].max_ns = g[0].max_ns;
	struct rs_target t = { 0 };
	struct rs_plan p;
	char why[300];
	CHECK_INT(rs_plan_build(g, 2, &t, &p, why, sizeof(why)), 1);
	CHECK(strcmp(p.generation, "0000000000000000") == 0);
	rs_plan_release(&p);
	/* neither closed: the one that started later */
	g[0].nclosed = 0;
	CHECK_INT(rs_plan_build(g, 2, &t, &p, why, sizeof(why)), 1);
	CHECK(strcmp(p.generation, "0000000000000000") == 0);
	rs_plan_release(&p);
	g[0].closed = NULL;
	for (int i = 0; i < 2; i++)
		catalog_generation_release(&g[i]);
}

/*
 * A killed node's generation (open) and the one a node that took it over wrote and
 * closed, both ending in one whole second: the successor started later and is the
 * newer; closed-is-older first picked the killed one and hid its rows (QA95 D2).
 */
TEST(plan_same_second_a_killed_generation_loses_to_the_closed_successor)
{
	struct cat_generation g[2];
	struct cat_closed mark = { 2, 300, S(1060) };
	g[0] = gen("0000000000000000", snaps01, 2, segs, 5, S(1000)); /* the killed one */
	g[1] = gen("ffffffffffffffff", snaps01, 1, segs, 0, S(1059)); /* its successor */
	g[1].closed = &mark;
	g[1].nclosed = 1;
	g[1].max_ns = g[0].max_ns;
	struct rs_target t = { 0 };
	struct rs_plan p;
	char why[300];
	CHECK_INT(rs_plan_build(g, 2, &t, &p, why, sizeof(why)), 1);
	CHECK(strcmp(p.generation, "ffffffffffffffff") == 0);
	CHECK(catalog_gen_order(&g[1], &g[0]) > 0);
	rs_plan_release(&p);
	g[1].closed = NULL;
	for (int i = 0; i < 2; i++)
		catalog_generation_release(&g[i]);
}

static void cand(struct rs_cand *c, const char *name, const char *g, uint32_t idx, uint32_t off,
		 int64_t newest, int64_t rtt_us)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->state = RC_OK;
	c->has_data = true;
	c->rtt_us = rtt_us;
	snprintf(c->plan.generation, sizeof(c->plan.generation), "%s", g);
	c->plan.end = (struct wal_pos){ .index = idx, .offset = off };
	snprintf(c->plan.end.generation, sizeof(c->plan.end.generation), "%s", g);
	c->plan.newest_ns = newest;
}

TEST(choose_newest_then_fastest)
{
	struct rs_cand c[4];
	struct rs_choice ch;
	log_configure(LOG_ERROR, false);
	cand(&c[0], "stale", "0123456789abcdef", 2, 100, S(2000), 10);
	cand(&c[1], "slow", "0123456789abcdef", 3, 50, S(1990), 9000);
	cand(&c[2], "fast", "0123456789abcdef", 3, 50, S(1990), 300);
	cand(&c[3], "down", "", 0, 0, 0, 0);
	c[3].state = RC_PENDING;
	c[3].timed_out = true;
	c[3].has_data = false;
	rs_choose(c, 4, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 2);
	CHECK_INT(c[1].rank, 1);
	CHECK(c[1].fallback_ok);
	CHECK(!c[0].fallback_ok);
	CHECK(c[0].rank > 1);
	CHECK_INT(ch.unreachable, 1);
	CHECK(strstr(c[3].verdict, "UNREACHABLE") != NULL);
	/* mode all, one short of its answers: still ranked, but never called the winner */
	rs_choose(c, 4, 10000, 0, NULL, "db", "all", 4, &ch);
	CHECK_INT(ch.winner, 2);
	CHECK(strstr(c[2].verdict, "WINNER") == NULL);
	CHECK(strstr(c[2].verdict, "not used: mode all needs 4") != NULL);
	CHECK(strstr(ch.why, "not settled") != NULL);
	rs_choose(c, 4, 10000, 0, NULL, "db", "quorum", 3, &ch);
	CHECK(strstr(c[2].verdict, "WINNER") != NULL);
}

TEST(choose_generation_by_time_beyond_skew_only)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	log_configure(LOG_ERROR, false);
	/* b is newer by 60 s: beyond a 10 s margin, so its generation wins despite a lower position */
	cand(&c[0], "a", "0123456789abcdef", 9, 0, S(1000), 10);
	cand(&c[1], "b", "fedcba9876543210", 0, 32, S(1060), 10);
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(!ch.ambiguous);
	/* within the margin: ambiguous, still the later one, and said so */
	c[1].plan.newest_ns = S(1005);
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK(ch.ambiguous);
	CHECK_INT(ch.winner, 1);
}

TEST(choose_generation_by_a_server_holding_both_whatever_the_margin)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	struct cat_generation ga[1], gb[2];
	log_configure(LOG_ERROR, false);
	/* a's clock runs an hour ahead: its old generation G1 looks an hour newer */
	cand(&c[0], "a", "1111111111111111", 0, 64, S(1000 + 3600), 10);
	cand(&c[1], "b", "2222222222222222", 0, 64, S(1010), 10);
	ga[0] = (struct cat_generation){ .id = "1111111111111111", .max_ns = S(1000 + 3600) };
	gb[0] = (struct cat_generation){ .id = "1111111111111111", .max_ns = S(1000) };
	gb[1] = (struct cat_generation){ .id = "2222222222222222", .max_ns = S(1010) };
	c[0].gens = ga;
	c[0].ngens = 1;
	c[1].gens = gb;
	c[1].ngens = 2;
	/* b holds both and orders them with one clock: G2 is newer */
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(!ch.ambiguous);
	c[0].gens = c[1].gens = NULL;
}

TEST(choose_same_second_on_two_servers_by_what_the_listings_tell)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	struct cat_generation ga[1], gb[1];
	struct cat_closed mark = { 0, 64, S(1000) };
	log_configure(LOG_ERROR, false);
	/* a's generation was closed by its writer; b's, in the same second, is open */
	cand(&c[0], "a", "ffffffffffffffff", 0, 64, S(1000), 10);
	cand(&c[1], "b", "0000000000000000", 0, 64, S(1000), 10);
	ga[0] = (struct cat_generation){ .id = "ffffffffffffffff", .max_ns = S(1000),
					 .min_ns = S(990), .closed = &mark, .nclosed = 1 };
	gb[0] = (struct cat_generation){ .id = "0000000000000000", .max_ns = S(1000),
					 .min_ns = S(990) };
	c[0].gens = ga;
	c[0].ngens = 1;
	c[1].gens = gb;
	c[1].ngens = 1;
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(ch.ambiguous);
	/* but a closed one that started later is the successor of an open one (QA95 D2) */
	ga[0].min_ns = S(995);
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 0);
	c[0].gens = c[1].gens = NULL;
}

TEST(choose_servers_holding_both_that_disagree_by_which_started_later)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	struct cat_generation ga[2], gb[2];
	log_configure(LOG_ERROR, false);
	/* G1 ran 1000-1050, G2 from 1040 on; "peer" got G1's tail late, at 1100 */
	cand(&c[0], "peer", "1111111111111111", 0, 64, S(1100), 10);
	cand(&c[1], "nas", "2222222222222222", 0, 64, S(1100), 10);
	ga[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(1000), .max_ns = S(1100) };
	ga[1] = (struct cat_generation){ .id = "2222222222222222", .min_ns = S(1040), .max_ns = S(1090) };
	gb[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(1000), .max_ns = S(1050) };
	gb[1] = (struct cat_generation){ .id = "2222222222222222", .min_ns = S(1040), .max_ns = S(1100) };
	c[0].gens = ga;
	c[0].ngens = 2;
	c[1].gens = gb;
	c[1].ngens = 2;
	/* the first in the configuration no longer decides: G2 started later */
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(ch.ambiguous);
	c[0].gens = c[1].gens = NULL;
}

TEST(choose_by_the_local_record_where_it_names_both_generations)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	struct cat_generation ga[1], gb[2];
	struct cat_segment on = { 0, 64, 50, S(1100) };
	struct rs_local_past lp = { .current = "2222222222222222",
				    .past = { { .at = { "1111111111111111", 0, 64 } } } };
	log_configure(LOG_ERROR, false);
	/*
	 * The file left G1 at 0/64 for its own G2 (on "file"); "s3" holds G1 gone on
	 * past that, written last, but "file", holding both, ranks G2 newer (QA95 D3)
	 */
	cand(&c[0], "s3", "1111111111111111", 0, 128, S(1100), 10);
	cand(&c[1], "file", "2222222222222222", 0, 64, S(1050), 10);
	ga[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(1000),
					 .max_ns = S(1100), .segments = &on, .nsegments = 1 };
	gb[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(1000),
					 .max_ns = S(1000) };
	gb[1] = (struct cat_generation){ .id = "2222222222222222", .min_ns = S(1040),
					 .max_ns = S(1050) };
	c[0].gens = ga;
	c[0].ngens = 1;
	c[1].gens = gb;
	c[1].ngens = 2;
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1); /* by "file"'s one clock */
	rs_choose(c, 2, 10000, 0, &lp, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 0); /* gone on past where the file left it: newer */
	CHECK(strstr(ch.by_record, "another node went on") != NULL);
	/* measured as replication measures it: a placeholder past it holds nothing */
	c[0].past_known[0] = true;
	c[0].past_end[0] = (struct wal_pos){ "1111111111111111", 0, 64 };
	rs_choose(c, 2, 10000, 0, &lp, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	c[0].past_known[0] = false;
	/* ending where the file stood (its plan measured, no segment past it): its own past */
	c[0].plan.end.offset = 64;
	ga[0].nsegments = 0;
	ga[0].max_ns = S(2000);
	rs_choose(c, 2, 10000, 0, &lp, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(strstr(ch.by_record, "own past") != NULL);
	/* left open and gone on (measured: restore_existing.c takes a plan's end): the times decide */
	c[0].plan.end.offset = 128;
	c[0].past_known[0] = true;
	c[0].past_end[0] = c[0].plan.end;
	lp.past[0].open = true;
	rs_choose(c, 2, 10000, 0, &lp, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(ch.by_record[0] == '\0');
	c[0].gens = c[1].gens = NULL;
}

TEST(local_newer_finds_a_generation_in_the_second_of_this_nodes_last_object)
{
	struct rs_cand c[1];
	struct cat_generation g[2];
	struct cat_snapshot snap = { 0, 100, S(990) };
	struct rs_local_past lp = { .current = "2222222222222222" };
	char gen[LAYOUT_GEN_LEN + 1], why[400];
	log_configure(LOG_ERROR, false);
	/* whole seconds: G1 ends in the second of this node's last object of G2 (killed) */
	cand(&c[0], "s3", "2222222222222222", 0, 64, S(1000), 10);
	g[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(990),
					.max_ns = S(1000), .snapshots = &snap, .nsnapshots = 1 };
	g[1] = (struct cat_generation){ .id = "2222222222222222", .min_ns = S(995),
					.max_ns = S(1000) };
	c[0].gens = g;
	c[0].ngens = 2;
	CHECK(!rs_local_newer(c, 1, &lp, gen, why, sizeof(why))); /* no end of its own known */
	c[0].own_end_ns = S(1000);
	c[0].own_killed = true;
	CHECK(rs_local_newer(c, 1, &lp, gen, why, sizeof(why)));
	CHECK(!strcmp(gen, "1111111111111111"));
	CHECK(strstr(why, "last object") != NULL);
	/* G1 its own past by the previous record (not gone on): not newer */
	lp.past[0].at = (struct wal_pos){ "1111111111111111", 0, 0 };
	CHECK(!rs_local_newer(c, 1, &lp, gen, why, sizeof(why)));
	CHECK(rs_local_order(c, 1, &lp, "1111111111111111") < 0); /* never restored over it */
	CHECK(rs_local_order(c, 1, &lp, "2222222222222222") == 0);
	/* newer, but nothing to restore it from (no snapshot): not offered */
	lp.past[0].at.generation[0] = '\0';
	g[0].nsnapshots = 0;
	CHECK(!rs_local_newer(c, 1, &lp, gen, why, sizeof(why)));
	c[0].gens = NULL;
}

TEST(choose_by_the_server_whose_clock_can_tell_over_a_tie_to_the_second)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	struct cat_generation ga[2], gb[2];
	log_configure(LOG_ERROR, false);
	/* "s3": both end in second 1000, G2 started later; "file": G1 ends 0.5 s after G2 */
	cand(&c[0], "s3", "2222222222222222", 0, 64, S(1000), 10);
	cand(&c[1], "file", "1111111111111111", 0, 64, S(1000) + 800000000, 10);
	ga[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(990), .max_ns = S(1000) };
	ga[1] = (struct cat_generation){ .id = "2222222222222222", .min_ns = S(995), .max_ns = S(1000) };
	gb[0] = (struct cat_generation){ .id = "1111111111111111", .min_ns = S(990) + 100000000,
					 .max_ns = S(1000) + 800000000 };
	gb[1] = (struct cat_generation){ .id = "2222222222222222", .min_ns = S(995) + 100000000,
					 .max_ns = S(1000) + 300000000 };
	c[0].gens = ga;
	c[0].ngens = 2;
	c[1].gens = gb;
	c[1].ngens = 2;
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1); /* "file"'s clock, not "s3"'s tie-break (QA99 D2) */
	CHECK(ch.ambiguous);
	/* both clocks telling, and disagreeing: the one that started later */
	ga[1].max_ns = S(1001);
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 0);
	c[0].gens = c[1].gens = NULL;
}

TEST(choose_prefers_replica_without_holes)
{
	struct rs_cand c[2];
	struct rs_choice ch;
	log_configure(LOG_ERROR, false);
	cand(&c[0], "holed", "0123456789abcdef", 3, 50, S(1000), 10);
	c[0].plan.truncated = true;
	cand(&c[1], "whole", "0123456789abcdef", 3, 50, S(1000), 5000);
	rs_choose(c, 2, 10000, 0, NULL, "db", "freshest-reachable", 0, &ch);
	CHECK_INT(ch.winner, 1);
	CHECK(c[0].fallback_ok);
}

UNIT_MAIN(T(plan_newest_snapshot_and_following_segments),
	  T(choose_by_the_local_record_where_it_names_both_generations),
	  T(local_newer_finds_a_generation_in_the_second_of_this_nodes_last_object),
	  T(choose_by_the_server_whose_clock_can_tell_over_a_tie_to_the_second), T(plan_index_bounds_and_past_the_end),
	  T(plan_timestamp_picks_snapshot_and_stops), T(plan_notes_a_hole),
	  T(plan_timestamp_in_a_generation_whose_covering_snapshot_is_gone),
	  T(plan_same_second_generations_the_closed_one_is_older),
	  T(plan_same_second_a_killed_generation_loses_to_the_closed_successor),
	  T(choose_newest_then_fastest), T(choose_generation_by_time_beyond_skew_only),
	  T(choose_generation_by_a_server_holding_both_whatever_the_margin),
	  T(choose_same_second_on_two_servers_by_what_the_listings_tell),
	  T(choose_servers_holding_both_that_disagree_by_which_started_later),
	  T(choose_prefers_replica_without_holes))
