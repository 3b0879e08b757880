/* lagring.c — the commit times behind the lag gauge (lagring.h). */
#include "replication/lagring.h"

#include "common/banned.h"

/*
 * The pair to merge in a full ring: the one whose merge errs least for a
 * replica inside it, relative to that replica's lag: the gap between the
 * two times over the age of the newer one. Old entries close in time go
 * first; the recent ones, where replicas that keep up are, stay whole.
 */
static size_t pair_to_merge(const struct lag_entry *ring, size_t n, int64_t now)
{
	size_t best = 0;
	double least = -1;
	for (size_t i = 0; i + 1 < n; i++) {
		double gap = (double)(ring[i + 1].mono_ns - ring[i].mono_ns);
		double age = (double)(now - ring[i + 1].mono_ns) + 1e6;
		double err = gap / (age > 1e6 ? age : 1e6);
		if (least < 0 || err < least) {
			least = err;
			best = i;
		}
	}
	return best;
}

void lagring_add(struct lag_entry *ring, size_t *n, struct lag_entry e)
{
	if (*n == LAG_RING) {
		size_t i = pair_to_merge(ring, *n, e.mono_ns);
		int64_t older = ring[i].mono_ns;
		ring[i] = ring[i + 1];
		ring[i].mono_ns = older;
		for (size_t k = i + 1; k + 1 < *n; k++)
			ring[k] = ring[k + 1];
		(*n)--;
	}
	ring[(*n)++] = e;
}

int64_t lagring_oldest_past(const struct lag_entry *ring, size_t n, uint32_t index, uint64_t offset)
{
	for (size_t i = 0; i < n; i++)
		if (ring[i].index > index || (ring[i].index == index && ring[i].end > offset))
			return ring[i].mono_ns;
	return 0;
}
