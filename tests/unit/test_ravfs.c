/* test_ravfs.c — the read-ahead VFS: same answers as SQLite's own, far fewer reads. */
#include "tests/unit/unit.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replication/ravfs.h"

/* A database of n rows of ~1 KiB, inserted in a scrambled order, with an index. */
static void make_db(const char *path, int n)
{
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB);"
				   "CREATE INDEX tk ON t(k); BEGIN", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_stmt *st = NULL;
	CHECK_INT(sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, printf('k%08d', ?), randomblob(1000 + ? % 97))",
				     -1, &st, NULL), SQLITE_OK);
	for (int i = 0; i < n; i++) {
		int id = (int)(((unsigned)i * 7919u) % (unsigned)n) + 1;
		sqlite3_bind_int(st, 1, id);
		sqlite3_bind_int(st, 2, (id * 31) % n);
		sqlite3_bind_int(st, 3, id);
		CHECK_INT(sqlite3_step(st), SQLITE_DONE);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	CHECK_INT(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_close(db), SQLITE_OK);
}

static sqlite3 *open_with(const char *path, const char *vfs)
{
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, vfs), SQLITE_OK);
	return db;
}

/* The first column of the one-row answer to sql, as text (static buffer). */
static const char *one(sqlite3 *db, const char *sql)
{
	static char out[256];
	sqlite3_stmt *st = NULL;
	CHECK_INT(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_step(st), SQLITE_ROW);
	const unsigned char *t = sqlite3_column_text(st, 0);
	snprintf(out, sizeof(out), "%s", t ? (const char *)t : "");
	sqlite3_finalize(st);
	return out;
}

/* read(2)-family system calls made by this process so far (/proc/self/io "syscr"). */
static long long read_calls(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	CHECK(f != NULL);
	char line[128];
	long long n = -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "syscr: %lld", &n) == 1)
			break;
	fclose(f);
	CHECK(n >= 0);
	return n;
}

static const char *SUMMARY = "SELECT count(*) || ':' || sum(id * length(v)) || ':' || "
			     "sum(length(k)) || ':' || hex(max(v)) FROM t";

TEST(registers_once)
{
	const char *a = ravfs_name(), *b = ravfs_name();
	CHECK(a != NULL);
	CHECK(a == b);
	CHECK(sqlite3_vfs_find(a) != NULL);
	CHECK(sqlite3_vfs_find(NULL) != sqlite3_vfs_find(a)); /* never the default */
}

/* read calls of a quick_check as the first statement of a fresh connection */
static long long check_reads(const char *path, const char *vfs)
{
	sqlite3 *db = open_with(path, vfs);
	long long r0 = read_calls();
	CHECK_STR(one(db, "PRAGMA quick_check"), "ok");
	long long n = read_calls() - r0;
	CHECK_INT(sqlite3_close(db), SQLITE_OK);
	return n;
}

TEST(same_answers_and_fewer_reads)
{
	char dir[] = "/tmp/litevisor-ravfs-XXXXXX", path[64], want[256];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/db", dir);
	make_db(path, 6000);

	/* rows inserted out of order: pages far from b-tree order, little to read ahead */
	long long plain = check_reads(path, NULL), ra = check_reads(path, ravfs_name());
	CHECK(plain > 1000); /* ~1,900 pages: about one read each */
	CHECK(ra <= plain + plain / 20);

	sqlite3 *db = open_with(path, NULL);
	snprintf(want, sizeof(want), "%s", one(db, SUMMARY));
	CHECK_INT(sqlite3_exec(db, "VACUUM", NULL, NULL, NULL), SQLITE_OK); /* b-tree order on disk */
	CHECK_INT(sqlite3_close(db), SQLITE_OK);
	plain = check_reads(path, NULL);
	ra = check_reads(path, ravfs_name());
	CHECK(plain > 1000);
	CHECK(ra * 8 < plain);

	db = open_with(path, ravfs_name());
	CHECK_STR(one(db, "PRAGMA integrity_check"), "ok");
	CHECK_STR(one(db, SUMMARY), want);
	CHECK_STR(one(db, "SELECT count(*) FROM t INDEXED BY tk WHERE k >= 'k00003000'"),
		  one(db, "SELECT count(*) FROM t NOT INDEXED WHERE k >= 'k00003000'"));
	CHECK_INT(sqlite3_close(db), SQLITE_OK);
	unlink(path);
	rmdir(dir);
}

TEST(writes_through_it_are_read_back)
{
	char dir[] = "/tmp/litevisor-ravfs-XXXXXX", path[64], want[256];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/db", dir);
	make_db(path, 3000);
	sqlite3 *ra = open_with(path, ravfs_name());
	CHECK_STR(one(ra, "PRAGMA quick_check"), "ok"); /* fills the window */
	CHECK_INT(sqlite3_exec(ra, "UPDATE t SET v = zeroblob(50) WHERE id % 3 = 0;"
				   "DELETE FROM t WHERE id % 5 = 0; VACUUM", NULL, NULL, NULL), SQLITE_OK);
	CHECK_STR(one(ra, "PRAGMA integrity_check"), "ok");
	snprintf(want, sizeof(want), "%s", one(ra, SUMMARY));
	CHECK_INT(sqlite3_close(ra), SQLITE_OK);
	/* SQLite's own VFS sees the same, smaller file */
	sqlite3 *plain = open_with(path, NULL);
	CHECK_STR(one(plain, SUMMARY), want);
	CHECK_STR(one(plain, "PRAGMA integrity_check"), "ok");
	CHECK_STR(one(plain, "SELECT count(*) FROM t"), "2400");
	CHECK_INT(sqlite3_close(plain), SQLITE_OK);
	unlink(path);
	rmdir(dir);
}

UNIT_MAIN(T(registers_once), T(same_answers_and_fewer_reads), T(writes_through_it_are_read_back))
