/*
 * lagring.h — when the shadow WAL reached each position: the commit times
 * behind the replicas' lag gauge (litevisor_replica_lag_seconds).
 *
 * A ring of at most LAG_RING entries, oldest first, one per monitor pass
 * that grew the shadow: (index, end) reached at mono_ns, so the commits
 * between the previous entry's end and this one's landed by then. The
 * engine drops the entries every replica holds (backlog.c); a replica's lag
 * is the age of the first entry ending past its position.
 */
#ifndef LITEVISOR_LAGRING_H
#define LITEVISOR_LAGRING_H

#include <stddef.h>
#include <stdint.h>

#define LAG_RING 64

struct lag_entry {
	uint32_t index;
	uint64_t end;
	int64_t mono_ns;
};

/*
 * Append e to ring[0..*n). A full ring first merges one pair of neighbours
 * into one entry, with the older time and the newer end: the pair whose
 * merge errs least for a replica inside it, relative to that replica's lag
 * (their time gap over the newer one's age). A replica's lag then reads high
 * by a bounded fraction of itself: old entries close in time merge first,
 * the recent ones (replicas keeping up) stay whole, and the oldest entry
 * keeps its time (a replica that is down). (Merging always the two oldest
 * let the first entry's end run ahead of a replica a few hundred passes
 * behind, its time never renewed: a lag growing a second every second while
 * the replica kept up, QA67 D1. Extending the newest entry made every
 * replica's lag grow while one was down.)
 */
void lagring_add(struct lag_entry *ring, size_t *n, struct lag_entry e);

/* mono_ns of the first entry ending past (index, offset), or 0 when none does. */
int64_t lagring_oldest_past(const struct lag_entry *ring, size_t n, uint32_t index, uint64_t offset);

#endif
