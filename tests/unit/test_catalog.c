/* test_catalog.c — catalog_load_many over a fake storage: order, parallelism, failure, deadline. */
#include "tests/unit/unit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "replication/catalog.h"

/*
 * A storage whose listing of "generations/<id>/" takes 20 ms and holds one
 * snapshot and one segment with times that depend on the id; ids listed in
 * `failing` answer a transient error instead. It records how many listings
 * ran at once and the smallest deadline it was given.
 */
struct fake {
	struct storage st;
	const char *failing[4];
	int fail_after_ms[4];   /* how long a failing listing takes (0: 20 ms) */
	atomic_int in_flight, max_in_flight, calls;
	atomic_llong min_deadline_ms;
};

static int fake_list(struct storage *st, const char *prefix, const char *delimiter,
		     struct st_list *out, const struct st_call *call, struct st_error *err)
{
	struct fake *f = (struct fake *)st;
	(void)delimiter;
	int now = atomic_fetch_add(&f->in_flight, 1) + 1;
	int seen = atomic_load(&f->max_in_flight);
	while (now > seen && !atomic_compare_exchange_weak(&f->max_in_flight, &seen, now))
		;
	atomic_fetch_add(&f->calls, 1);
	if (call && call->deadline_ms > 0) {
		long long d = atomic_load(&f->min_deadline_ms);
		while (call->deadline_ms < d &&
		       !atomic_compare_exchange_weak(&f->min_deadline_ms, &d, call->deadline_ms))
			;
	}
	const char *id = prefix + strlen("generations/");
	int ms = 20, fail = -1;
	for (int i = 0; i < 4 && f->failing[i]; i++)
		if (strncmp(id, f->failing[i], LAYOUT_GEN_LEN) == 0) {
			fail = i;
			ms = f->fail_after_ms[i] ? f->fail_after_ms[i] : ms;
		}
	nanosleep(&(struct timespec){ .tv_nsec = ms * 1000L * 1000L }, NULL);
	atomic_fetch_sub(&f->in_flight, 1);
	if (fail >= 0) {
		st_error_set(err, ST_TRANSIENT, 503, "listing %s failed", f->failing[fail]);
		return ST_TRANSIENT;
	}
	char key[LAYOUT_KEY_MAX];
	int64_t t = (int64_t)strtoll(id + LAYOUT_GEN_LEN - 4, NULL, 16) * 1000000000LL;
	snprintf(key, sizeof(key), "%ssnapshots/00000000.snapshot.lz4", prefix);
	CHECK_INT(st_list_add_object(out, key, 100, t), 0);
	snprintf(key, sizeof(key), "%swal/00000000_00000000.wal.lz4", prefix);
	CHECK_INT(st_list_add_object(out, key, 10, t + 1), 0);
	return 0;
}

static const struct storage_ops fake_ops = { .list = fake_list };

static void fake_init(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	f->st.ops = &fake_ops;
	f->st.type = "fake";
	f->st.description = "fake";
	atomic_store(&f->min_deadline_ms, (long long)1 << 40);
}

/* n ids "000000000000000<i in hex>" (16 hex digits). */
static char (*make_ids(size_t n))[LAYOUT_GEN_LEN + 1]
{
	char (*ids)[LAYOUT_GEN_LEN + 1] = calloc(n, sizeof(*ids));
	for (size_t i = 0; i < n; i++)
		snprintf(ids[i], sizeof(ids[i]), "%016zx", i + 1);
	return ids;
}

TEST(loads_every_generation_in_order_several_at_once)
{
	struct fake f;
	fake_init(&f);
	size_t n = 10;
	char (*ids)[LAYOUT_GEN_LEN + 1] = make_ids(n);
	struct cat_generation *g = calloc(n, sizeof(*g));
	struct st_error err = { 0 };
	CHECK_INT(catalog_load_many(&f.st, ids, n, g, 4, NULL, &err), 0);
	CHECK_INT(atomic_load(&f.calls), 10);
	CHECK(atomic_load(&f.max_in_flight) > 1);
	CHECK(atomic_load(&f.max_in_flight) <= 4);
	for (size_t i = 0; i < n; i++) {
		CHECK_STR(g[i].id, ids[i]);
		CHECK_INT(g[i].nsnapshots, 1);
		CHECK_INT(g[i].nsegments, 1);
		CHECK_INT(g[i].min_ns, (int64_t)(i + 1) * 1000000000LL);
		CHECK_INT(g[i].max_ns, (int64_t)(i + 1) * 1000000000LL + 1);
		catalog_generation_release(&g[i]);
	}
	free(g);
	free(ids);
}

TEST(one_at_a_time_when_asked)
{
	struct fake f;
	fake_init(&f);
	size_t n = 3;
	char (*ids)[LAYOUT_GEN_LEN + 1] = make_ids(n);
	struct cat_generation g[3];
	struct st_error err = { 0 };
	CHECK_INT(catalog_load_many(&f.st, ids, n, g, 1, NULL, &err), 0);
	CHECK_INT(atomic_load(&f.max_in_flight), 1);
	for (size_t i = 0; i < n; i++)
		catalog_generation_release(&g[i]);
	free(ids);
}

TEST(a_failed_listing_fails_the_whole_and_frees_the_rest)
{
	struct fake f;
	fake_init(&f);
	size_t n = 12;
	char (*ids)[LAYOUT_GEN_LEN + 1] = make_ids(n);
	/* both in the first wave; the higher index fails first, the lower is reported */
	f.failing[0] = ids[2];
	f.fail_after_ms[0] = 5;
	f.failing[1] = ids[1];
	f.fail_after_ms[1] = 60;
	f.failing[2] = ids[9];
	struct cat_generation *g = calloc(n, sizeof(*g));
	struct st_error err = { 0 };
	CHECK_INT(catalog_load_many(&f.st, ids, n, g, 3, NULL, &err), ST_TRANSIENT);
	CHECK(strstr(err.message, ids[1]) != NULL);
	/* the failure stops new listings: the first wave and at most one more per worker */
	CHECK(atomic_load(&f.calls) < (int)n);
	for (size_t i = 0; i < n; i++) {
		CHECK(g[i].snapshots == NULL);
		CHECK(g[i].segments == NULL);
	}
	free(g);
	free(ids);
}

TEST(later_listings_get_what_is_left_of_the_deadline)
{
	struct fake f;
	fake_init(&f);
	size_t n = 6;
	char (*ids)[LAYOUT_GEN_LEN + 1] = make_ids(n);
	struct cat_generation g[6];
	struct st_error err = { 0 };
	struct st_call call = { .deadline_ms = 5000, .no_retry = true };
	CHECK_INT(catalog_load_many(&f.st, ids, n, g, 2, &call, &err), 0);
	/* the third listing starts after a 20 ms one ended */
	CHECK(atomic_load(&f.min_deadline_ms) <= 5000 - 15);
	CHECK(atomic_load(&f.min_deadline_ms) > 0);
	for (size_t i = 0; i < n; i++)
		catalog_generation_release(&g[i]);
	free(ids);
}

TEST(no_generation_is_nothing_to_do)
{
	struct fake f;
	fake_init(&f);
	struct st_error err = { 0 };
	CHECK_INT(catalog_load_many(&f.st, NULL, 0, NULL, 4, NULL, &err), 0);
	CHECK_INT(atomic_load(&f.calls), 0);
}

UNIT_MAIN(T(loads_every_generation_in_order_several_at_once), T(one_at_a_time_when_asked),
	  T(a_failed_listing_fails_the_whole_and_frees_the_rest),
	  T(later_listings_get_what_is_left_of_the_deadline), T(no_generation_is_nothing_to_do))
