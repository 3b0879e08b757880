/* test_catalog.c — catalog_load_many over a fake storage: order, parallelism, failure, deadline;
 * the closed marks of a generation. */
#include "tests/unit/unit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "common/clock.h"
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
	/* the mark of a clean stop where that segment ends, written last */
	snprintf(key, sizeof(key), "%sclosed/00000000_00001038", prefix);
	CHECK_INT(st_list_add_object(out, key, 0, t + 5), 0);
	snprintf(key, sizeof(key), "%sclosed/00000000_1038", prefix);
	CHECK_INT(st_list_add_object(out, key, 0, t + 5), 0); /* not a mark's name: skipped */
	/* labels: generation 2 has one, 3 has two naming different databases */
	if (!strncmp(id, "0000000000000002/", 17) || !strncmp(id, "0000000000000003/", 17)) {
		snprintf(key, sizeof(key), "%sdatabase/00112233445566778899aabbccddeeff", prefix);
		CHECK_INT(st_list_add_object(out, key, 0, t + 9), 0);
		snprintf(key, sizeof(key), "%sdatabase/00112233445566778899AABBCCDDEEFF", prefix);
		CHECK_INT(st_list_add_object(out, key, 0, t + 9), 0); /* not an id: skipped */
	}
	if (!strncmp(id, "0000000000000003/", 17)) {
		snprintf(key, sizeof(key), "%sdatabase/ffeeddccbbaa99887766554433221100", prefix);
		CHECK_INT(st_list_add_object(out, key, 0, t + 9), 0);
	}
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

/* A fake storage, n ids "000000000000000<i in hex>" (16 hex digits), room for n generations. */
struct fixture {
	struct fake f;
	size_t n;
	char (*ids)[LAYOUT_GEN_LEN + 1];
	struct cat_generation *g;
	struct st_error err;
};

static void setup(struct fixture *x, size_t n)
{
	memset(x, 0, sizeof(*x));
	fake_init(&x->f);
	x->n = n;
	x->ids = calloc(n, sizeof(*x->ids));
	x->g = calloc(n, sizeof(*x->g));
	CHECK(x->ids && x->g);
	for (size_t i = 0; i < n; i++)
		snprintf(x->ids[i], sizeof(x->ids[i]), "%016zx", i + 1);
}

static int load(struct fixture *x, size_t parallel, const struct st_call *call)
{
	return catalog_load_many(&x->f.st, x->ids, x->n, x->g, parallel, call, &x->err);
}

static void teardown(struct fixture *x)
{
	for (size_t i = 0; i < x->n; i++)
		catalog_generation_release(&x->g[i]);
	free(x->g);
	free(x->ids);
}

TEST(loads_every_generation_in_order_several_at_once)
{
	struct fixture x;
	setup(&x, 10);
	CHECK_INT(load(&x, 4, NULL), 0);
	CHECK_INT(atomic_load(&x.f.calls), 10);
	CHECK(atomic_load(&x.f.max_in_flight) > 1);
	CHECK(atomic_load(&x.f.max_in_flight) <= 4);
	for (size_t i = 0; i < x.n; i++) {
		CHECK_STR(x.g[i].id, x.ids[i]);
		CHECK_INT(x.g[i].nsnapshots, 1);
		CHECK_INT(x.g[i].nsegments, 1);
		CHECK_INT(x.g[i].min_ns, (int64_t)(i + 1) * 1000000000LL);
		CHECK_INT(x.g[i].max_ns, (int64_t)(i + 1) * 1000000000LL + 1);
	}
	teardown(&x);
}

TEST(closed_marks_are_listed_apart_and_say_where_the_writer_stopped)
{
	struct fixture x;
	setup(&x, 1);
	CHECK_INT(load(&x, 1, NULL), 0);
	const struct cat_generation *g = &x.g[0];
	CHECK_INT(g->nsnapshots, 1);
	CHECK_INT(g->nsegments, 1);
	CHECK_INT(g->nclosed, 1);
	CHECK_INT(g->closed[0].index, 0);
	CHECK_INT(g->closed[0].offset, 0x1038);
	/* a mark is not data: it does not make the generation look newer */
	CHECK_INT(g->max_ns, g->segments[0].mtime_ns);
	struct wal_pos at = { .index = 0, .offset = 0x1038 };
	CHECK(catalog_closed_at(g, &at));
	at.offset = 0x2070; /* the replica went on after the mark: not closed there */
	CHECK(!catalog_closed_at(g, &at));
	/* a writer that entered index 1 and wrote nothing into it marks (1, 0) */
	x.g[0].closed[0] = (struct cat_closed){ .index = 1, .offset = 0 };
	at.offset = 0x1038;
	CHECK(catalog_closed_at(g, &at));
	at.index = 1;
	at.offset = 0x20;
	CHECK(!catalog_closed_at(g, &at));
	teardown(&x);
}

TEST(a_label_names_the_database_two_names_none)
{
	struct fixture x;
	setup(&x, 3);
	CHECK_INT(load(&x, 2, NULL), 0);
	CHECK_STR(x.g[0].database_id, "");
	CHECK_INT(x.g[0].nlabels, 0);
	CHECK_STR(x.g[1].database_id, "00112233445566778899aabbccddeeff");
	CHECK_INT(x.g[1].nlabels, 1);
	/* a label is not data either */
	CHECK_INT(x.g[1].max_ns, x.g[1].segments[0].mtime_ns);
	/* two databases claim it: nobody's in particular, both kept for deleting */
	CHECK_STR(x.g[2].database_id, "");
	CHECK_INT(x.g[2].nlabels, 2);
	teardown(&x);
}

TEST(one_at_a_time_when_asked)
{
	struct fixture x;
	setup(&x, 3);
	CHECK_INT(load(&x, 1, NULL), 0);
	CHECK_INT(atomic_load(&x.f.max_in_flight), 1);
	teardown(&x);
}

TEST(a_failed_listing_fails_the_whole_and_frees_the_rest)
{
	struct fixture x;
	setup(&x, 12);
	/* both in the first wave; the higher index fails first, the lower is reported */
	x.f.failing[0] = x.ids[2];
	x.f.fail_after_ms[0] = 5;
	x.f.failing[1] = x.ids[1];
	x.f.fail_after_ms[1] = 60;
	x.f.failing[2] = x.ids[9];
	CHECK_INT(load(&x, 3, NULL), ST_TRANSIENT);
	CHECK(strstr(x.err.message, x.ids[1]) != NULL);
	/* the failure stops new listings: the first wave and at most one more per worker */
	CHECK(atomic_load(&x.f.calls) < (int)x.n);
	for (size_t i = 0; i < x.n; i++) {
		CHECK(x.g[i].snapshots == NULL);
		CHECK(x.g[i].segments == NULL);
	}
	teardown(&x);
}

TEST(later_listings_get_what_is_left_of_the_deadline)
{
	struct fixture x;
	setup(&x, 6);
	struct st_call call = { .deadline_ms = 5000, .no_retry = true };
	CHECK_INT(load(&x, 2, &call), 0);
	/* the third listing starts after a 20 ms one ended */
	CHECK(atomic_load(&x.f.min_deadline_ms) <= 5000 - 15);
	CHECK(atomic_load(&x.f.min_deadline_ms) > 0);
	teardown(&x);
}

TEST(no_generation_is_nothing_to_do)
{
	struct fake f;
	fake_init(&f);
	struct st_error err = { 0 };
	CHECK_INT(catalog_load_many(&f.st, NULL, 0, NULL, 4, NULL, &err), 0);
	CHECK_INT(atomic_load(&f.calls), 0);
}

/* catalog_written_after: the one reading of "after this node's clean stop" (QA84 D3, D5) */
TEST(written_after_a_mark_counts_the_same_whole_second)
{
	struct cat_generation g = { 0 };
	const int64_t s = 1700000000LL * NS_PER_SEC;
	/* exact times (a file replica, MinIO's milliseconds): strictly later only */
	g.max_ns = s + 500 * NS_PER_MS;
	CHECK(catalog_written_after(&g, s + 400 * NS_PER_MS));
	CHECK(!catalog_written_after(&g, s + 500 * NS_PER_MS));
	CHECK(!catalog_written_after(&g, s + 600 * NS_PER_MS));
	/* whole seconds (s3rver): the same second cannot be ordered, so it counts */
	g.max_ns = s;
	CHECK(catalog_written_after(&g, s));
	CHECK(!catalog_written_after(&g, s + NS_PER_SEC));
	CHECK(catalog_written_after(&g, s - NS_PER_SEC));
	/* one whole, one exact: the whole one's second holds the other */
	CHECK(catalog_written_after(&g, s + 700 * NS_PER_MS));
	CHECK(!catalog_written_after(&g, s + NS_PER_SEC + 1));
	/* unknown times order nothing */
	CHECK(!catalog_written_after(&g, 0));
	g.max_ns = 0;
	CHECK(!catalog_written_after(&g, s));
}

UNIT_MAIN(T(loads_every_generation_in_order_several_at_once), T(one_at_a_time_when_asked),
	  T(a_failed_listing_fails_the_whole_and_frees_the_rest),
	  T(later_listings_get_what_is_left_of_the_deadline), T(no_generation_is_nothing_to_do),
	  T(closed_marks_are_listed_apart_and_say_where_the_writer_stopped),
	  T(a_label_names_the_database_two_names_none),
	  T(written_after_a_mark_counts_the_same_whole_second))
