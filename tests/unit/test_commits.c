/* test_commits.c — the commit count check behind the hold (replication/commits.h). */
#include "unit.h"

#include "replication/commits.h"

/* The index ends where the shadow does: 3 frames of the shadow's session. */
static struct commit_look at_end(uint32_t change, uint64_t commits)
{
	return (struct commit_look){ .change = change, .index_frames = 3, .index_is_shadow = true,
				     .shadow_frames = 3, .file_is_shadow = true, .commits = commits };
}

/* The WAL checkpointed and restarted: an empty index, the file empty too. */
static struct commit_look emptied(uint32_t change, uint64_t commits)
{
	return (struct commit_look){ .change = change, .shadow_frames = 3, .commits = commits };
}

TEST(every_commit_copied_is_ok_and_moves_the_anchor)
{
	struct commit_anchor a = { 0 };
	struct commit_look l = at_end(10, 4);
	uint32_t lost = 99;
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK);
	CHECK_INT(lost, 0);
	CHECK(a.set && a.change == 10 && a.commits == 4);
	l = emptied(15, 9); /* 5 more counted, 5 more copied */
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK);
	CHECK(a.change == 15 && a.commits == 9);
}

TEST(a_session_checkpointed_away_unseen_is_lost)
{
	struct commit_anchor a = { 0 };
	struct commit_look l = at_end(10, 4);
	uint32_t lost;
	commits_check(&a, &l, &lost);
	l = emptied(13, 5); /* SQLite counted 3, one was copied */
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_LOST);
	CHECK_INT(lost, 2);
	CHECK(!a.set);
	/* the next session is caught where it ends, too */
	l = at_end(20, 5);
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK); /* a new anchor first */
	l = at_end(22, 6);
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_LOST);
	CHECK_INT(lost, 1);
}

TEST(nothing_is_judged_before_the_first_anchor)
{
	struct commit_anchor a = { 0 };
	struct commit_look l = emptied(1000, 0);
	uint32_t lost;
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK);
	CHECK(a.set && a.change == 1000);
}

TEST(commits_on_their_way_prove_nothing)
{
	struct commit_anchor a = { 0 };
	struct commit_look l = at_end(10, 4);
	uint32_t lost;
	commits_check(&a, &l, &lost);
	/* the index has frames the shadow has not copied yet */
	l = at_end(12, 4);
	l.index_frames = 5;
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_WAIT);
	/* another session in the index than in the shadow */
	l = at_end(12, 4);
	l.index_is_shadow = false;
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_WAIT);
	/* a commit copied from the file before SQLite wrote it into the empty index */
	l = emptied(10, 5);
	l.file_is_shadow = true;
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_WAIT);
	CHECK(a.change == 10 && a.commits == 4);
	/* with nothing of that session in the shadow, an empty index does agree */
	l = emptied(10, 4);
	l.shadow_frames = 0;
	l.file_is_shadow = true;
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK);
}

TEST(the_count_wraps_at_32_bits)
{
	struct commit_anchor a = { 0 };
	struct commit_look l = at_end(0xfffffffeu, 100);
	uint32_t lost;
	commits_check(&a, &l, &lost);
	l = at_end(3, 105); /* 5 commits later, across the wrap */
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK);
	l = at_end(10, 106);
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_LOST);
	CHECK_INT(lost, 6);
}

TEST(a_rebuilt_index_counting_less_starts_over)
{
	struct commit_anchor a = { 0 };
	struct commit_look l = at_end(500, 40);
	uint32_t lost;
	commits_check(&a, &l, &lost);
	l = at_end(2, 41);
	CHECK_INT(commits_check(&a, &l, &lost), COMMITS_OK);
	CHECK(a.change == 2 && a.commits == 41);
}

UNIT_MAIN(T(every_commit_copied_is_ok_and_moves_the_anchor), T(a_session_checkpointed_away_unseen_is_lost),
	  T(nothing_is_judged_before_the_first_anchor), T(commits_on_their_way_prove_nothing),
	  T(the_count_wraps_at_32_bits), T(a_rebuilt_index_counting_less_starts_over))
