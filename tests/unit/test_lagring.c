/* test_lagring.c — the commit times behind the lag gauge (replication/lagring.h). */
#include "unit.h"

#include "replication/lagring.h"

#define MS 1000000LL

/* Drop what the replica holds, as backlog.c does for every replica. */
static void drop_held(struct lag_entry *ring, size_t *n, uint64_t pos)
{
	size_t k = 0;
	while (k < *n && ring[k].end <= pos)
		k++;
	for (size_t i = k; i < *n; i++)
		ring[i - k] = ring[i];
	*n -= k;
}

TEST(a_replica_a_few_hundred_passes_behind_keeps_a_bounded_lag)
{
	/*
	 * A pass every millisecond (commits back to back, the coalescing off),
	 * an upload every 300 passes taking everything up to where it began:
	 * the replica is never more than two uploads (0.6 s) behind.
	 */
	struct lag_entry ring[LAG_RING];
	size_t n = 0;
	uint64_t pos = 0, upload_from = 0;
	int64_t worst = 0;
	for (int64_t pass = 1; pass <= 20000; pass++) {
		int64_t now = pass * MS;
		lagring_add(ring, &n, (struct lag_entry){ 0, (uint64_t)pass * 100, now });
		if (pass % 300 == 0) {
			pos = upload_from;
			upload_from = (uint64_t)pass * 100;
			drop_held(ring, &n, pos);
		}
		int64_t t = lagring_oldest_past(ring, n, 0, pos);
		CHECK(t > 0);
		/* the oldest commit it lacks landed at the pass after its position */
		int64_t truth = now - ((int64_t)pos / 100 + 1) * MS;
		CHECK(now - t >= truth);
		CHECK(now - t <= truth + truth / 4 + 5 * MS);
		if (now - t > worst)
			worst = now - t;
	}
	CHECK(worst <= 700 * MS);
}

TEST(a_replica_that_is_down_keeps_its_oldest_commit)
{
	struct lag_entry ring[LAG_RING];
	size_t n = 0;
	for (int64_t pass = 1; pass <= 5000; pass++)
		lagring_add(ring, &n, (struct lag_entry){ (uint32_t)(pass / 1000), (uint64_t)pass, pass * MS });
	CHECK_INT(lagring_oldest_past(ring, n, 0, 0), 1 * MS);
	/* one that keeps up reads the newest entries as they were */
	CHECK_INT(lagring_oldest_past(ring, n, 5, 4999), 5000 * MS);
	CHECK_INT(lagring_oldest_past(ring, n, 5, 5000), 0);
	CHECK(n <= LAG_RING);
}

TEST(entries_stay_in_order_across_indexes)
{
	struct lag_entry ring[LAG_RING];
	size_t n = 0;
	for (int i = 0; i < 3 * LAG_RING; i++)
		lagring_add(ring, &n, (struct lag_entry){ (uint32_t)(i / 10), (uint64_t)(i % 10 + 1), i });
	for (size_t i = 1; i < n; i++) {
		CHECK(ring[i].mono_ns > ring[i - 1].mono_ns);
		CHECK(ring[i].index > ring[i - 1].index ||
		      (ring[i].index == ring[i - 1].index && ring[i].end > ring[i - 1].end));
	}
}

UNIT_MAIN(T(a_replica_a_few_hundred_passes_behind_keeps_a_bounded_lag),
	  T(a_replica_that_is_down_keeps_its_oldest_commit), T(entries_stay_in_order_across_indexes))
