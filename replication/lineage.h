/*
 * lineage.h — does a replica's history of a generation continue the local one?
 *
 * Two nodes can both continue one generation from the same point: node A
 * committed more than it shipped (it died, or its replica was out of reach),
 * node B restored the replica and went on writing into it. Positions in the
 * generation still compare, but they belong to different histories: B's
 * index R is not A's index R, and A's frames appended after B's would break
 * every later restore. Each WAL session starts with a header whose salts the
 * writing SQLite draws at random, so the header that starts the replica's
 * last index tells whose session it is.
 *
 * Used by restore (an existing database: keep it, or restore the replica?)
 * and by the engine (may a replica's objects be continued?).
 */
#ifndef LITEVISOR_LINEAGE_H
#define LITEVISOR_LINEAGE_H

#include <stddef.h>

#include "replication/catalog.h"

enum lineage {
	LINEAGE_UNKNOWN = 0, /* nothing to compare: no local file or no replica segment */
	LINEAGE_SAME,        /* the replica's last index is the local session */
	LINEAGE_DIVERGED,    /* another session: why says which */
};

/*
 * Compare the WAL header that starts index `index` of generation g on the
 * replica (st) with the local shadow file of that index in statedir (a
 * litevisor or Litestream state directory). Returns an enum lineage, or a
 * negative st_status (err set) when the replica could not be read.
 */
int lineage_check(struct storage *st, const struct cat_generation *g, uint32_t index,
		  const char *statedir, char *why, size_t len, const struct st_call *call,
		  struct st_error *err);

#endif
