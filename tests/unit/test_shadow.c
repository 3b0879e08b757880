/*
 * Unit tests for the shadow WAL (replication/shadow.c) and our read hold
 * (replication/db.c), against WAL files SQLite itself writes.
 */
#include "tests/unit/unit.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "replication/db.h"
#include "replication/localstate.h"
#include "replication/shadow.h"
#include "replication/xxh32.h"

#define GEN "0123456789abcdef"

struct fixture {
	char dir[256], db[300], wal[310], state[300];
	sqlite3 *app;
};

static void exec(sqlite3 *db, const char *sql)
{
	char *err = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		FAIL("%s: %s", sql, err);
}

static void setup(struct fixture *f)
{
	snprintf(f->dir, sizeof(f->dir), "/tmp/lv-shadow-XXXXXX");
	CHECK(mkdtemp(f->dir) != NULL);
	snprintf(f->db, sizeof(f->db), "%s/app.db", f->dir);
	snprintf(f->wal, sizeof(f->wal), "%s-wal", f->db);
	snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
	mkdir(f->state, 0750); /* the state directory exists, made and locked by the engine */
	CHECK_INT(sqlite3_open(f->db, &f->app), SQLITE_OK);
	exec(f->app, "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;"
		     "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)");
}

static void teardown(struct fixture *f)
{
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	CHECK_INT(system(cmd), 0);
}

static void insert(sqlite3 *db, int n)
{
	for (int i = 0; i < n; i++)
		exec(db, "INSERT INTO t(b) VALUES (hex(randomblob(200)))");
}

static int64_t fsize(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void check_prefix(const struct shadow *s, const char *wal)
{
	char path[4400];
	snprintf(path, sizeof(path), "%s/generations/%s/wal/%08x.wal", s->dir, s->gen, s->index);
	int a = open(path, O_RDONLY), b = open(wal, O_RDONLY);
	CHECK(a >= 0 && b >= 0);
	CHECK_INT(fsize(path), s->size);
	static unsigned char x[1 << 16], y[1 << 16];
	for (uint64_t off = 0; off < s->size;) {
		ssize_t n = pread(a, x, sizeof(x), (off_t)off);
		CHECK(n > 0);
		CHECK_INT(pread(b, y, (size_t)n, (off_t)off), n);
		CHECK_MEM(x, y, (size_t)n);
		off += (uint64_t)n;
	}
	close(a);
	close(b);
}

TEST(copies_committed_frames_as_a_byte_exact_prefix)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[128];

	setup(&f);
	insert(f.app, 10);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK(wal >= 0);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK_INT(s.size, fsize(f.wal));
	CHECK_INT(grew, s.size);
	check_prefix(&s, f.wal);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NONE);
	insert(f.app, 5);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK_INT(s.size, fsize(f.wal));
	check_prefix(&s, f.wal);
	/* an uncommitted transaction's frames are not copied */
	exec(f.app, "PRAGMA cache_size=10; BEGIN");
	for (int i = 0; i < 300; i++) /* more than the page cache spills to the WAL */
		exec(f.app, "INSERT INTO t(b) VALUES (hex(randomblob(2000)))");
	uint64_t before = s.size;
	CHECK(fsize(f.wal) > (int64_t)before);
	enum shadow_result r = shadow_sync(&s, wal, &grew, why, sizeof(why));
	CHECK(r == SHADOW_NONE);
	CHECK_INT(s.size, before);
	exec(f.app, "COMMIT");
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK_INT(s.size, fsize(f.wal));
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

TEST(a_restart_is_a_new_session_and_resume_continues)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[128];

	setup(&f);
	insert(f.app, 10);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	uint64_t first = s.size;
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)");
	insert(f.app, 3); /* fully backfilled WAL: this write restarts it */
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NEW_SESSION);
	shadow_next_index(&s);
	CHECK_INT(s.index, 1);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	check_prefix(&s, f.wal);
	CHECK_INT(shadow_file_size(&s, 0), first);
	uint64_t size = s.size;
	shadow_close(&s);

	/* a torn tail after a crash is cut when the shadow is reopened */
	char path[512];
	snprintf(path, sizeof(path), "%s/generations/%s/wal/00000001.wal", f.state, GEN);
	int fd = open(path, O_WRONLY | O_APPEND);
	CHECK(write(fd, "garbage-garbage-garbage", 23) == 23);
	close(fd);
	struct shadow r;
	shadow_init(&r, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_resume(&r, GEN), 0);
	CHECK_INT(r.index, 1);
	CHECK_INT(r.size, size);
	insert(f.app, 2);
	CHECK_INT(shadow_sync(&r, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	check_prefix(&r, f.wal);
	close(wal);
	shadow_close(&r);
	sqlite3_close(f.app);
	teardown(&f);
}

TEST(an_index_entered_with_no_file_is_resumed_from_its_record)
{
	struct fixture f;
	struct shadow s, r;
	uint64_t grew;
	char why[128];

	setup(&f);
	insert(f.app, 10);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	uint64_t first = s.size;
	/* the session is finished (as after our checkpoint) but still the real WAL's */
	shadow_next_index(&s);
	CHECK_INT(s.prev_end, (int64_t)first);
	shadow_close(&s);
	/* what a restore compares: the data is index 0's end, not "index 1" */
	struct wal_pos lp;
	char wal0[512];
	snprintf(wal0, sizeof(wal0), "%s/generations/%s/wal/00000000.wal", f.state, GEN);
	CHECK_INT(unlink(wal0), 0); /* shipped and removed */
	CHECK_INT(localstate_position(f.state, &lp), 0);
	CHECK_INT(lp.index, 0);
	CHECK_INT(lp.offset, first);
	/* a shadow WAL past 4 GiB is as far as an offset goes, not its size wrapped */
	char wal1[512];
	snprintf(wal1, sizeof(wal1), "%s/generations/%s/wal/00000001.wal", f.state, GEN);
	int big = open(wal1, O_WRONLY | O_CREAT, 0600);
	CHECK(big >= 0);
	CHECK_INT(ftruncate(big, ((off_t)5 << 30) + 4096), 0);
	close(big);
	CHECK_INT(localstate_position(f.state, &lp), 0);
	CHECK_INT(lp.index, 1);
	CHECK(lp.offset == UINT32_MAX);
	CHECK_INT(unlink(wal1), 0);

	shadow_init(&r, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_resume(&r, GEN), 0);
	CHECK_INT(r.index, 1);
	CHECK(r.fd < 0);
	CHECK_INT(r.size, 0);
	CHECK_INT(r.prev_end, (int64_t)first);
	/* its frames are index 0's: not copied again into index 1 */
	CHECK_INT(shadow_sync(&r, wal, &grew, why, sizeof(why)), SHADOW_NONE);
	CHECK(shadow_file_size(&r, 1) < 0);
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)");
	insert(f.app, 3); /* restarts the WAL: the new session is index 1 */
	CHECK_INT(shadow_sync(&r, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK_INT(r.index, 1);
	check_prefix(&r, f.wal);
	shadow_close(&r);

	/* a record of an index alone (older form) reads with nothing known before it */
	struct index_record rec;
	char path[512];
	snprintf(path, sizeof(path), "%s/generations/%s/index", f.state, GEN);
	FILE *fp = fopen(path, "w");
	CHECK(fp != NULL);
	fputs("00000002\n", fp);
	fclose(fp);
	CHECK_INT(localstate_read_index(f.state, GEN, &rec), 0);
	CHECK_INT(rec.index, 2);
	CHECK_INT(rec.prev_end, -1);
	CHECK(!rec.have_prev_hdr);
	fp = fopen(path, "w");
	fputs("00000002 0000zz00 -\n", fp);
	fclose(fp);
	CHECK_INT(localstate_read_index(f.state, GEN, &rec), -1);
	close(wal);
	sqlite3_close(f.app);
	teardown(&f);
}

TEST(overwritten_frames_are_detected)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[128];

	setup(&f);
	insert(f.app, 4);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	/* someone rewrote the last frame's header in place */
	int w = open(f.wal, O_WRONLY);
	off_t at = (off_t)(s.size - wal_frame_size(s.hdr.page_size)) + 16;
	CHECK(pwrite(w, "\xde\xad\xbe\xef", 4, at) == 4);
	close(w);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_BROKEN);
	CHECK_STR(why, "wal overwritten by another process");
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

/* Tell s what the WAL index of f's database publishes now, as the monitor does. */
static enum shadow_result note_index(struct shadow *s, struct fixture *f, int wal, char *why,
				     size_t whylen)
{
	struct db_wal_index wi;
	exec(f->app, "SELECT count(*) FROM t");
	CHECK_INT(db_wal_index(f->app, &wi), 0);
	CHECK(wi.consistent);
	return shadow_note_index(s, wal, wi.salts, wi.max_frame, why, whylen);
}

/*
 * Leave in f's WAL the frames of a commit the WAL index never publishes, as
 * a writer killed between its fsync and its index update does: the commit
 * is made in a copy, its frames appended to the live WAL. Returns how many.
 */
static uint64_t leave_unpublished_commit(struct fixture *f, int rows)
{
	char cmd[1400], copy[330], cwal[340];
	sqlite3 *c;
	snprintf(copy, sizeof(copy), "%s/copy.db", f->dir);
	snprintf(cwal, sizeof(cwal), "%s-wal", copy);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && cp '%s' '%s'", f->db, copy, f->wal, cwal);
	CHECK_INT(system(cmd), 0);
	int64_t live = fsize(f->wal);
	CHECK_INT(sqlite3_open(copy, &c), SQLITE_OK);
	exec(c, "PRAGMA wal_autocheckpoint=0");
	insert(c, rows);
	int64_t theirs = fsize(cwal);
	CHECK(theirs > live);
	static unsigned char buf[1 << 20];
	CHECK(theirs - live <= (int64_t)sizeof(buf));
	int from = open(cwal, O_RDONLY), to = open(f->wal, O_WRONLY);
	CHECK(from >= 0 && to >= 0);
	CHECK_INT(pread(from, buf, (size_t)(theirs - live), live), theirs - live);
	CHECK_INT(pwrite(to, buf, (size_t)(theirs - live), live), theirs - live);
	close(from);
	close(to);
	sqlite3_close(c);
	return (uint64_t)(theirs - live);
}

/*
 * Frames copied before SQLite published them are held as unpublished until
 * a look at the WAL index proves them; frames a killed writer left, which
 * the index never publishes, stay so, and the app's next commit written over
 * them is told, however short (QA68 #1).
 */
TEST(frames_the_index_never_published_are_told_when_written_over)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[256];

	setup(&f);
	insert(f.app, 10);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	/* a look before the copy proves what the copy reads */
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_NONE);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK(!shadow_unpublished(&s));
	/* copied before it was published (as if): a later look proves it */
	insert(f.app, 3);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK(shadow_unpublished(&s));
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_NONE);
	CHECK(!shadow_unpublished(&s));
	uint64_t published = s.size;

	uint64_t left = leave_unpublished_commit(&f, 8);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK_INT(grew, left);
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_NONE);
	CHECK(shadow_unpublished(&s));
	CHECK_INT(s.published, published);
	/* the app's next commit starts at the index's last frame, over them */
	insert(f.app, 1);
	CHECK_INT(fsize(f.wal), (int64_t)s.size); /* shorter: the last frame still matches */
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NONE);
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_BROKEN);
	CHECK(strstr(why, "written over") != NULL);
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

/* ... and a restart that leaves them behind ends a session that holds them. */
TEST(a_session_that_ends_with_unpublished_frames_says_so)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[256];

	setup(&f);
	insert(f.app, 10);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_NONE);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	leave_unpublished_commit(&f, 8);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_NONE);
	CHECK(shadow_unpublished(&s));
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)");
	insert(f.app, 1); /* fully backfilled as far as the index goes: a restart */
	CHECK_INT(note_index(&s, &f, wal, why, sizeof(why)), SHADOW_NONE);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NEW_SESSION);
	CHECK(shadow_unpublished(&s));
	/* the next session, copied after a look, is published as far as the look saw */
	shadow_next_index(&s);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK(!shadow_unpublished(&s));
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

/*
 * A write into the shadow file that fails half-way (a full disk; here the
 * file size limit, which cuts a write the same way) must not leave part of a
 * frame at its end: replicas ship a finished index up to its file's length.
 */
/*
 * Two WAL restarts between two copies (the app's commit, checkpoint and next
 * commit while nothing pinned the WAL): the session in between was never
 * copied, and salt-1 says so. One restart is the next index. A TRUNCATE of
 * an empty WAL adds one to salt-1 too, so the session is copied but marked
 * unproven: the monitor decides with SQLite's commit count (commits.h).
 */
TEST(a_session_overwritten_before_it_was_copied_is_detected)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[160];

	setup(&f);
	insert(f.app, 3);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	exec(f.app, "PRAGMA wal_checkpoint(RESTART)");
	insert(f.app, 2); /* one restart: the next session */
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NEW_SESSION);
	shadow_next_index(&s);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK(!s.unproven);
	exec(f.app, "PRAGMA wal_checkpoint(RESTART)");
	insert(f.app, 2); /* a session nobody copies */
	exec(f.app, "PRAGMA wal_checkpoint(RESTART)");
	insert(f.app, 2);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NEW_SESSION);
	shadow_next_index(&s);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	CHECK(s.unproven);
	CHECK(strstr(s.unproven_why, "salt-1") != NULL);
	/* dropped, not kept, when the monitor closes without vouching for it */
	uint32_t idx = s.index;
	shadow_drop_unproven(&s);
	CHECK(!s.unproven && s.fd < 0 && s.size == 0);
	CHECK_INT(shadow_file_size(&s, idx), -1);
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

TEST(a_write_that_fails_half_way_leaves_no_torn_frame)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[128];
	struct rlimit was, lim;

	setup(&f);
	insert(f.app, 4);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	uint64_t before = s.size;
	insert(f.app, 40);
	char path[4400];
	snprintf(path, sizeof(path), "%s/generations/%s/wal/%08x.wal", s.dir, s.gen, s.index);
	CHECK(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
	CHECK_INT(getrlimit(RLIMIT_FSIZE, &was), 0);
	lim = was;
	lim.rlim_cur = before + 3 * wal_frame_size(s.hdr.page_size) / 2;
	CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
	enum shadow_result r = shadow_sync(&s, wal, &grew, why, sizeof(why));
	CHECK_INT(setrlimit(RLIMIT_FSIZE, &was), 0);
	CHECK(r == SHADOW_ERROR);
	CHECK(strstr(why, strerror(EFBIG)) != NULL);
	CHECK_INT(s.size, before);
	CHECK_INT(fsize(path), before);
	/* with room again it copies everything, and finishing the index keeps its length */
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	check_prefix(&s, f.wal);
	uint64_t end = s.size;
	shadow_next_index(&s);
	CHECK_INT(fsize(path), end);
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

TEST(the_read_hold_blocks_a_wal_restart)
{
	struct fixture f;
	struct db_conns c;
	char why[300];

	setup(&f);
	insert(f.app, 5);
	CHECK_INT(db_conns_open(&c, f.db, why, sizeof(why)), 0);
	CHECK_INT(db_hold_rotate(&c, false), 0);
	insert(f.app, 5); /* the hold's mark is now behind the end of the WAL */
	CHECK_INT(db_hold_rotate(&c, false), 0);
	int log = -1, ck = -1;
	/* the app's own TRUNCATE cannot reset the WAL under our hold */
	int rc = sqlite3_wal_checkpoint_v2(f.app, "main", SQLITE_CHECKPOINT_TRUNCATE, &log, &ck);
	CHECK_INT(rc, SQLITE_BUSY);
	CHECK(fsize(f.wal) > 0);
	/* the database's own header, read through SQLite's handle */
	CHECK_INT(db_conn_is_wal(c.ck), 1);
	db_conns_close(&c);
	sqlite3_close(f.app);
	teardown(&f);
}

/*
 * The hold on read slot 0 (taken while the WAL is fully backfilled) lets a
 * restart through but pins what is written after it: a checkpoint backfills
 * only while it holds slot 0 exclusively, and an unbackfilled WAL is never
 * restarted. The monitor relies on it when it yields to an app's checkpoint.
 */
TEST(a_hold_on_slot_0_pins_what_is_written_after_it)
{
	struct fixture f;
	struct db_conns c;
	char why[300];

	setup(&f);
	insert(f.app, 5);
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)");
	CHECK_INT(db_conns_open(&c, f.db, why, sizeof(why)), 0);
	CHECK_INT(db_hold_rotate(&c, false), 0);
	CHECK(c.db_only);
	insert(f.app, 3); /* restarts the WAL: slot 0 does not keep it */
	int log = -1, ck = -1;
	int rc = sqlite3_wal_checkpoint_v2(f.app, "main", SQLITE_CHECKPOINT_TRUNCATE, &log, &ck);
	CHECK_INT(rc, SQLITE_BUSY);
	CHECK_INT(log, 3);
	CHECK_INT(ck, 0); /* not one frame backfilled */
	CHECK(fsize(f.wal) > 0);
	CHECK_INT(db_hold_rotate(&c, false), 0); /* off slot 0: now it may */
	CHECK(!c.db_only);
	db_hold_release(&c);
	rc = sqlite3_wal_checkpoint_v2(f.app, "main", SQLITE_CHECKPOINT_TRUNCATE, &log, &ck);
	CHECK_INT(rc, SQLITE_OK);
	db_conns_close(&c);
	sqlite3_close(f.app);
	teardown(&f);
}

/* The WAL file's salts (header bytes 16..23): they change when the WAL restarts. */
static uint64_t wal_salts(const char *wal)
{
	uint64_t salts = 0;
	int fd = open(wal, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_INT(pread(fd, &salts, sizeof(salts), 16), (ssize_t)sizeof(salts));
	close(fd);
	return salts;
}

/*
 * A copy failed, so the WAL holds frames the shadow lacks, and the app's
 * checkpoint backfilled all of them: a hold begun now takes read slot 0,
 * which keeps nothing from restarting the WAL over them. keep_wal keeps the
 * current hold instead (QA173 D1); without it, the app's next write restarts
 * the WAL.
 */
TEST(a_hold_kept_for_frames_not_copied_never_moves_to_slot_0)
{
	struct fixture f;
	struct db_conns c;
	char why[300];

	setup(&f);
	insert(f.app, 5);
	CHECK_INT(db_conns_open(&c, f.db, why, sizeof(why)), 0);
	CHECK_INT(db_hold_rotate(&c, false), 0);
	CHECK(!c.db_only);
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)"); /* up to the hold's mark: all of it */
	uint64_t salts = wal_salts(f.wal);
	CHECK_INT(db_hold_rotate(&c, true), 1); /* kept: the new one would read slot 0 */
	CHECK(!c.db_only);
	CHECK_INT(db_hold_rotate(&c, true), 1);
	insert(f.app, 3);
	CHECK(wal_salts(f.wal) == salts); /* appended, not restarted */
	CHECK_INT(db_hold_rotate(&c, true), 0); /* frames not backfilled: it may move */
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)");
	CHECK_INT(db_hold_rotate(&c, false), 0); /* as before: onto slot 0 */
	CHECK(c.db_only);
	insert(f.app, 1);
	CHECK(wal_salts(f.wal) != salts); /* restarted */
	db_conns_close(&c);
	sqlite3_close(f.app);
	teardown(&f);
}

/*
 * pread(2) with a hook: run once, just before reading `hook_at` of `hook_fd`
 * (this definition wins over libc's for the whole test binary).
 */
static int hook_fd = -1;
static off_t hook_at;
static void (*hook)(void);

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	static ssize_t (*next)(int, void *, size_t, off_t);
	if (!next)
		next = (ssize_t (*)(int, void *, size_t, off_t))dlsym(RTLD_NEXT, "pread");
	if (hook && fd == hook_fd && off == hook_at) {
		void (*h)(void) = hook;
		hook = NULL;
		h();
	}
	return next(fd, buf, n, off);
}

static sqlite3 *hook_app;

static void restart_with_more_frames(void)
{
	insert(hook_app, 6);
}

/*
 * A restart landing between the sync's read of the WAL header (still this
 * session's) and its read of the last frame copied (now the next session's)
 * is a new session, not "overwritten by another process": that started a
 * needless new generation (QA: 1 run in 14 of an app checkpointing after
 * every commit, under load).
 */
TEST(a_restart_between_two_reads_of_a_sync_is_a_new_session)
{
	struct fixture f;
	struct shadow s;
	uint64_t grew;
	char why[128];

	setup(&f);
	insert(f.app, 3);
	shadow_init(&s, f.state, (uid_t)-1, (gid_t)-1);
	CHECK_INT(shadow_start(&s, GEN, 0, -1), 0);
	int wal = open(f.wal, O_RDONLY);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	exec(f.app, "PRAGMA wal_checkpoint(PASSIVE)"); /* all backfilled: the next write restarts */
	hook_app = f.app;
	hook_fd = wal;
	hook_at = (off_t)(s.size - wal_frame_size(s.hdr.page_size));
	hook = restart_with_more_frames;
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_NEW_SESSION);
	CHECK(hook == NULL); /* it did run between the two reads */
	shadow_next_index(&s);
	CHECK_INT(shadow_sync(&s, wal, &grew, why, sizeof(why)), SHADOW_GREW);
	check_prefix(&s, f.wal);
	close(wal);
	shadow_close(&s);
	sqlite3_close(f.app);
	teardown(&f);
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *fp = fopen(path, "w");
	CHECK(fp != NULL);
	fputs(text, fp);
	fclose(fp);
}

TEST(a_failure_record_reads_back_and_garbage_is_refused)
{
	char dir[] = "/tmp/lv-failrec-XXXXXX", cmd[64];
	struct failure_record w = { 1764000000123456789LL, 1763999990000000000LL }, r;
	const char *keep[] = { "s3" };

	CHECK(mkdtemp(dir) != NULL);
	CHECK_INT(localstate_read_failure(dir, "s3", &r), -1);
	CHECK_INT(errno, ENOENT);
	CHECK_INT(localstate_write_failure(dir, "s3", &w, (uid_t)-1, (gid_t)-1), 0);
	CHECK_INT(localstate_read_failure(dir, "s3", &r), 0);
	CHECK_INT(r.failing_since_ns, w.failing_since_ns);
	CHECK_INT(r.behind_since_ns, w.behind_since_ns);
	/* another name is another file */
	CHECK_INT(localstate_read_failure(dir, "nas", &r), -1);
	CHECK_INT(errno, ENOENT);
	/* what is not a record is refused, never half read */
	static const char *bad[] = { "garbage\n", "", "12 34\n", "0 0 s3\n", "-5 0 s3\n",
				     "12 -1 s3\n", "12 34 s3", "12 34 s3x\n", "12x 34 s3\n",
				     "99999999999999999999 0 s3\n" };
	char name[32];
	snprintf(name, sizeof(name), "failing-%08x", xxh32("s3", 2, 0));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put(dir, name, bad[i]);
		CHECK(localstate_read_failure(dir, "s3", &r) == -1 && errno == EINVAL);
	}
	/* only records of names not configured go */
	CHECK_INT(localstate_write_failure(dir, "s3", &w, (uid_t)-1, (gid_t)-1), 0);
	CHECK_INT(localstate_write_failure(dir, "gone", &w, (uid_t)-1, (gid_t)-1), 0);
	put(dir, "closed-00000000", "x\n");
	CHECK_INT(localstate_prune_failures(dir, keep, 1), 1);
	CHECK_INT(localstate_read_failure(dir, "s3", &r), 0);
	CHECK_INT(localstate_read_failure(dir, "gone", &r), -1);
	CHECK_INT(localstate_clear_failure(dir, "s3"), 0);
	CHECK_INT(localstate_clear_failure(dir, "s3"), 0);
	CHECK_INT(localstate_read_failure(dir, "s3", &r), -1);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_INT(system(cmd), 0);
}

/*
 * The refusal record holds for the very file it was written for: the same
 * device, inode and birth time. A file given the freed inode number again is
 * another (QA87 F7); a record from before birth times still matches.
 */
TEST(a_refusal_record_holds_for_its_file_only)
{
	char dir[] = "/tmp/lv-refused-XXXXXX", db[64], aside[80], why[128], text[256], cmd[64];
	struct statx sx;
	CHECK(mkdtemp(dir) != NULL);
	snprintf(db, sizeof(db), "%s/app.db", dir);
	snprintf(aside, sizeof(aside), "%s/app.db.aside", dir);
	put(dir, "app.db", "x");
	CHECK(localstate_read_refused(dir, db, why, sizeof(why)) == -1 && errno == ENOENT);
	CHECK_INT(localstate_write_refused(dir, db, "older\nthan B", (uid_t)-1, (gid_t)-1), 0);
	CHECK_INT(localstate_read_refused(dir, db, why, sizeof(why)), 0);
	CHECK_STR(why, "older than B");
	/* another file in its place */
	CHECK_INT(rename(db, aside), 0);
	put(dir, "app.db", "y");
	CHECK(localstate_read_refused(dir, db, why, sizeof(why)) == -1 && errno == ESTALE);
	CHECK_INT(rename(aside, db), 0);
	CHECK_INT(localstate_read_refused(dir, db, why, sizeof(why)), 0);
	CHECK_INT(statx(AT_FDCWD, db, 0, STATX_INO | STATX_BTIME, &sx), 0);
	unsigned long long dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
	if (sx.stx_mask & STATX_BTIME) {
		/* its device and inode, another birth: the inode number given again */
		snprintf(text, sizeof(text), "%llu %llu b%lld.%09u older\n", dev,
			 (unsigned long long)sx.stx_ino, (long long)sx.stx_btime.tv_sec - 5,
			 sx.stx_btime.tv_nsec);
		put(dir, "refused", text);
		CHECK(localstate_read_refused(dir, db, why, sizeof(why)) == -1 && errno == ESTALE);
	}
	/* a record written before birth times: device and inode decide */
	snprintf(text, sizeof(text), "%llu %llu refused at an earlier start\n", dev,
		 (unsigned long long)sx.stx_ino);
	put(dir, "refused", text);
	CHECK_INT(localstate_read_refused(dir, db, why, sizeof(why)), 0);
	CHECK_STR(why, "refused at an earlier start");
	/* written where statx was refused: device and inode decide */
	snprintf(text, sizeof(text), "%llu %llu - no birth time then\n", dev,
		 (unsigned long long)sx.stx_ino);
	put(dir, "refused", text);
	CHECK_INT(localstate_read_refused(dir, db, why, sizeof(why)), 0);
	CHECK_STR(why, "no birth time then");
	put(dir, "refused", "garbage\n");
	CHECK(localstate_read_refused(dir, db, why, sizeof(why)) == -1 && errno == EINVAL);
	CHECK_INT(localstate_clear_refused(dir), 0);
	CHECK(localstate_read_refused(dir, db, why, sizeof(why)) == -1 && errno == ENOENT);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_INT(system(cmd), 0);
}

UNIT_MAIN(T(copies_committed_frames_as_a_byte_exact_prefix),
	  T(a_failure_record_reads_back_and_garbage_is_refused),
	  T(a_refusal_record_holds_for_its_file_only),
	  T(a_restart_is_a_new_session_and_resume_continues),
	  T(an_index_entered_with_no_file_is_resumed_from_its_record),
	  T(overwritten_frames_are_detected),
	  T(frames_the_index_never_published_are_told_when_written_over),
	  T(a_session_that_ends_with_unpublished_frames_says_so),
	  T(a_write_that_fails_half_way_leaves_no_torn_frame),
	  T(a_session_overwritten_before_it_was_copied_is_detected),
	  T(the_read_hold_blocks_a_wal_restart), T(a_hold_on_slot_0_pins_what_is_written_after_it),
	  T(a_hold_kept_for_frames_not_copied_never_moves_to_slot_0),
	  T(a_restart_between_two_reads_of_a_sync_is_a_new_session))
