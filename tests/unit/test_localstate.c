/*
 * Unit tests for the records of a file's past in the state directory
 * (replication/localstate.c): "previous" and the "earlier" list it feeds.
 */
#include "tests/unit/unit.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "common/fsutil.h"
#include "replication/localstate.h"

static void tmpdir(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/lv-localstate-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
}

static struct wal_pos pos(const char *gen, uint32_t index, uint32_t offset)
{
	struct wal_pos p = { .index = index, .offset = offset };
	snprintf(p.generation, sizeof(p.generation), "%s", gen);
	return p;
}

static void rm_dir(const char *dir)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

/* Each new "previous" record moves the one it replaces to the front of "earlier". */
TEST(previous_records_replaced_go_to_earlier_newest_first)
{
	char dir[64];
	tmpdir(dir, sizeof(dir));
	struct wal_pos g1 = pos("1111111111111111", 0, 0x1038);
	struct wal_pos g2 = pos("2222222222222222", 1, 0x20);
	struct wal_pos g3 = pos("3333333333333333", 2, 0);
	struct wal_pos at[LOCALSTATE_EARLIER_MAX], p;
	bool open[LOCALSTATE_EARLIER_MAX], o = false;

	CHECK_INT(localstate_read_earlier(dir, at, open, LOCALSTATE_EARLIER_MAX), 0);
	CHECK_INT(localstate_write_previous(dir, &g1, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_earlier(dir, at, open, LOCALSTATE_EARLIER_MAX), 0);
	CHECK_INT(localstate_write_restored_previous(dir, &g2, true, getuid(), getgid()), 0);
	CHECK_INT(localstate_write_previous(dir, &g3, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_previous(dir, &p, &o), 0);
	CHECK(!strcmp(p.generation, g3.generation) && p.index == 2 && !o);
	CHECK_INT(localstate_read_earlier(dir, at, open, LOCALSTATE_EARLIER_MAX), 2);
	CHECK(!strcmp(at[0].generation, g2.generation) && at[0].index == 1 &&
	      at[0].offset == 0x20 && open[0]);
	CHECK(!strcmp(at[1].generation, g1.generation) && at[1].offset == 0x1038 && !open[1]);
	/* max bounds what is read */
	CHECK_INT(localstate_read_earlier(dir, at, open, 1), 1);
	/* the same generation written again moves nothing */
	CHECK_INT(localstate_write_previous(dir, &g3, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_earlier(dir, at, open, LOCALSTATE_EARLIER_MAX), 2);
	rm_dir(dir);
}

/* The list keeps the newest LOCALSTATE_EARLIER_MAX. */
TEST(earlier_keeps_the_newest_records)
{
	char dir[64], gen[17];
	tmpdir(dir, sizeof(dir));
	for (int i = 0; i < LOCALSTATE_EARLIER_MAX + 4; i++) {
		snprintf(gen, sizeof(gen), "%016x", i + 1);
		struct wal_pos p = pos(gen, (uint32_t)i, 0);
		CHECK_INT(localstate_write_previous(dir, &p, false, getuid(), getgid()), 0);
	}
	struct wal_pos at[LOCALSTATE_EARLIER_MAX + 2];
	bool open[LOCALSTATE_EARLIER_MAX + 2];
	CHECK_INT(localstate_read_earlier(dir, at, open, LOCALSTATE_EARLIER_MAX + 2),
		  LOCALSTATE_EARLIER_MAX);
	for (int k = 0; k < LOCALSTATE_EARLIER_MAX; k++)
		CHECK_INT(at[k].index, LOCALSTATE_EARLIER_MAX + 2 - k);
	rm_dir(dir);
}

/* A corrupt "previous" is not carried over; a malformed line ends the list. */
TEST(corrupt_records_are_not_carried)
{
	char dir[64], path[128];
	tmpdir(dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/previous", dir);
	CHECK_INT(fs_write_atomic(path, "not a record\n", 13, 0640, getuid(), getgid()), 0);
	struct wal_pos g1 = pos("1111111111111111", 0, 0), at[4];
	bool open[4];
	CHECK_INT(localstate_write_previous(dir, &g1, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_earlier(dir, at, open, 4), 0);
	snprintf(path, sizeof(path), "%s/earlier", dir);
	const char *text = "2222222222222222 00000001 00000000 open\nbad\n"
			   "3333333333333333 00000001 00000000\n";
	CHECK_INT(fs_write_atomic(path, text, strlen(text), 0640, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_earlier(dir, at, open, 4), 1);
	CHECK(open[0]);
	struct wal_pos g4 = pos("4444444444444444", 0, 0);
	CHECK_INT(localstate_write_previous(dir, &g4, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_earlier(dir, at, open, 4), 2);
	CHECK(!strcmp(at[0].generation, g1.generation));
	CHECK(!strcmp(at[1].generation, "2222222222222222"));
	rm_dir(dir);
}

/* One record per generation: a generation put again replaces its older record. */
TEST(earlier_keeps_one_record_per_generation)
{
	char dir[64];
	tmpdir(dir, sizeof(dir));
	struct wal_pos g1 = pos("1111111111111111", 0, 0x10), g2 = pos("2222222222222222", 0, 0);
	struct wal_pos g1b = pos("1111111111111111", 1, 0x20), at[4];
	bool open[4];
	CHECK_INT(localstate_add_earlier(dir, &g1, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_add_earlier(dir, &g2, false, getuid(), getgid()), 0);
	CHECK_INT(localstate_add_earlier(dir, &g1b, true, getuid(), getgid()), 0);
	CHECK_INT(localstate_read_earlier(dir, at, open, 4), 2);
	CHECK(!strcmp(at[0].generation, g1.generation) && at[0].index == 1 && open[0]);
	CHECK(!strcmp(at[1].generation, g2.generation));
	rm_dir(dir);
}

UNIT_MAIN(T(previous_records_replaced_go_to_earlier_newest_first),
	  T(earlier_keeps_the_newest_records), T(corrupt_records_are_not_carried),
	  T(earlier_keeps_one_record_per_generation))
