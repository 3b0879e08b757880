/* commits.c — were all of SQLite's commits copied? See commits.h. */
#include "replication/commits.h"

#include "common/banned.h"

enum commit_verdict commits_check(struct commit_anchor *a, const struct commit_look *l,
				  uint32_t *lost)
{
	bool agree = l->index_frames > 0
			     ? l->index_is_shadow && l->shadow_frames == l->index_frames
			     : !(l->shadow_frames > 0 && l->file_is_shadow);
	*lost = 0;
	if (!agree)
		return COMMITS_WAIT;
	uint32_t want = a->change + (uint32_t)(l->commits - a->commits);
	/* iChange is 32 bits and wraps: compare as a signed distance */
	int32_t ahead = (int32_t)(l->change - want);
	if (a->set && ahead > 0) {
		*lost = (uint32_t)ahead;
		a->set = false;
		return COMMITS_LOST;
	}
	/* fewer than copied: SQLite rebuilt its index (a writer crashed); count from here */
	a->set = true;
	a->change = l->change;
	a->commits = l->commits;
	return COMMITS_OK;
}
