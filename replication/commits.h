/*
 * commits.h — were all of SQLite's commits copied? The check behind the hold.
 *
 * SQLite counts commits in the WAL index header (iChange: one per commit,
 * shared by every connection, kept across restarts of the WAL). The monitor
 * counts the commit frames it copies into the shadow WAL. At a look where the
 * two agree on where the WAL stands, every commit SQLite counted since the
 * previous such look must have been copied. More means a WAL session was
 * written and checkpointed away before it was seen (the hold was not there,
 * or something held it wrongly): its pages are in the database file only,
 * and later sessions do not apply to what the replica holds.
 *
 * They agree when the index ends exactly where the shadow does (the same
 * session's salts and last frame), or when the index is empty (checkpointed
 * and restarted) and the WAL file holds no session the shadow has frames of.
 * A commit reaches the WAL file before the index, so a shadow ahead of an
 * empty index proves nothing yet. Pure logic, no I/O.
 */
#ifndef LITEVISOR_COMMITS_H
#define LITEVISOR_COMMITS_H

#include <stdbool.h>
#include <stdint.h>

/* One look, taken right after a copy under the hold. */
struct commit_look {
	uint32_t change;            /* the index's iChange */
	uint32_t index_frames;      /* the index's last frame (mxFrame), 0: empty */
	bool index_is_shadow;       /* the index's salts are the shadow session's */
	uint64_t shadow_frames;     /* frames in the shadow's current session, 0: none */
	bool file_is_shadow;        /* the WAL file's header is the shadow session's */
	uint64_t commits;           /* commit frames copied so far (ever growing) */
};

/* Where SQLite's count and ours last agreed; zeroed: none yet. */
struct commit_anchor {
	bool set;
	uint32_t change;
	uint64_t commits;
};

enum commit_verdict {
	COMMITS_WAIT = 0, /* the look proves nothing (commits on their way) */
	COMMITS_OK,       /* all copied; the anchor moved here */
	COMMITS_LOST,     /* *lost commits were never copied; the anchor is cleared */
};

enum commit_verdict commits_check(struct commit_anchor *a, const struct commit_look *l,
				  uint32_t *lost);

#endif
