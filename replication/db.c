/* db.c — our SQLite connections: WAL mode, the read hold, checkpoints. See db.h. */
#include "replication/db.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/banned.h"

#define BUSY_MS_HOLD 1000 /* a read BEGIN in WAL mode only waits on recovery */

sqlite3 *db_open_conn(const char *path, int busy_ms)
{
	sqlite3 *db = NULL;
	int persist = 1;
	int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		log_error("db", "cannot open database", "path=\"%s\" err=\"%s\"", path,
			  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		return NULL;
	}
	sqlite3_busy_timeout(db, busy_ms);
	/*
	 * Leave the WAL as it is when we close: a checkpoint here would make the
	 * app's next write restart the WAL while we are not watching, which
	 * costs a new generation at our next start.
	 */
	sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
	sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
	/* our connections never checkpoint by themselves */
	sqlite3_exec(db, "PRAGMA wal_autocheckpoint = 0", NULL, NULL, NULL);
	return db;
}

static int journal_mode(sqlite3 *db, const char *sql, char *out, size_t len)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

/* Locked by another connection (the app): a state that passes. */
static bool busy(int rc)
{
	return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/*
 * SQLite's message for conn's last error, with the system's when it kept one:
 * "disk I/O error (No space left on device)".
 */
static const char *conn_err(sqlite3 *conn, char *buf, size_t len)
{
	int e = sqlite3_system_errno(conn);
	snprintf(buf, len, "%s%s%s%s", sqlite3_errmsg(conn), e ? " (" : "", e ? strerror(e) : "",
		 e ? ")" : "");
	return buf;
}

int db_conns_open(struct db_conns *c, const char *path, char *why, size_t whylen)
{
	char mode[32] = "";
	int rc;

	memset(c, 0, sizeof(*c));
	c->cur = -1;
	c->shm_fd = -1;
	snprintf(c->path, sizeof(c->path), "%s", path);
	why[0] = '\0';
	if (!(c->ck = db_open_conn(path, 0))) {
		snprintf(why, whylen, "cannot open the database (see above)");
		goto fail;
	}
	rc = journal_mode(c->ck, "PRAGMA journal_mode", mode, sizeof(mode));
	if (rc != SQLITE_OK) {
		/* the app creating its schema holds the lock: normal at start, tried again */
		char e[300];
		snprintf(why, whylen, "cannot read the journal mode: %s",
			 conn_err(c->ck, e, sizeof(e)));
		db_conns_close(c);
		return busy(rc) ? -3 : -2;
	}
	if (strcmp(mode, "wal") != 0) {
		rc = journal_mode(c->ck, "PRAGMA journal_mode = wal", mode, sizeof(mode));
		if (rc != SQLITE_OK || strcmp(mode, "wal") != 0) {
			char e[300];
			snprintf(why, whylen, "cannot put the database in WAL mode yet: %s",
				 rc != SQLITE_OK ? conn_err(c->ck, e, sizeof(e)) : mode);
			db_conns_close(c);
			return -2;
		}
		log_info("db", "database put in WAL mode (it was not)", "path=\"%s\"", path);
	}
	/* a read in WAL mode opens ck's WAL, and with it the shared memory slot1_fence() uses */
	if (db_read_begin(c->ck) == 0) {
		c->ck_shm = db_conn_is_wal(c->ck) == 1;
		db_txn_end(c->ck);
	}
	for (int i = 0; i < 2; i++)
		if (!(c->hold[i] = db_open_conn(path, BUSY_MS_HOLD))) {
			snprintf(why, whylen, "cannot open the database (see above)");
			goto fail;
		}
	return 0;
fail:
	db_conns_close(c);
	return -1;
}

void db_conns_close(struct db_conns *c)
{
	db_hold_release(c);
	for (int i = 0; i < 2; i++)
		sqlite3_close(c->hold[i]);
	sqlite3_close(c->ck);
	c->hold[0] = c->hold[1] = c->ck = NULL;
	c->cur = -1;
	c->ck_shm = false;
	c->shm_fd = -1; /* SQLite closed it with its last connection */
}

void db_txn_end(sqlite3 *conn)
{
	if (conn && !sqlite3_get_autocommit(conn))
		sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
}

int db_read_begin(sqlite3 *conn)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL);
	/* reading page 1 starts the WAL read transaction; nothing of ours exists in the schema */
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(conn, "SELECT 1 FROM sqlite_master LIMIT 1", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW || rc == SQLITE_DONE)
			rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK) {
		char why[300];
		const char *file = sqlite3_db_filename(conn, "main");
		log_warn("db", "cannot begin read transaction", "path=\"%s\" err=\"%s\"", file ? file : "",
			 conn_err(conn, why, sizeof(why)));
		db_txn_end(conn);
		return -1;
	}
	return 0;
}

/* 1 when conn's WAL index shows every frame backfilled (*mx gets the last frame), 0 not, -1 unknown. */
static int wal_backfilled(sqlite3 *conn, uint32_t *mx)
{
	struct db_wal_index wi;
	if (!conn || db_wal_index(conn, &wi) < 0)
		return -1;
	*mx = wi.max_frame;
	return wi.backfilled == wi.max_frame;
}

static sqlite3_file *file_of(sqlite3 *conn)
{
	sqlite3_file *f = NULL;
	if (sqlite3_file_control(conn, "main", SQLITE_FCNTL_FILE_POINTER, &f) != SQLITE_OK)
		return NULL;
	return f && f->pMethods ? f : NULL;
}

/*
 * Keep our reads off SQLite's first read-mark slot. A read that finds frames
 * newer than every mark takes the first slot it can lock exclusively, trying
 * slot 1 first; so does the app's every commit. With our hold sitting on
 * slot 1, each of the app's commits first fails that lock (one fcntl(2),
 * 1.2 us here: about one commit in two failed it, as the hold alternated
 * between slots 1 and 2). While ck holds slot 1 shared, a read of ours that
 * begins takes slot 2, 3 or 4 instead. Shared, not exclusive: if every other
 * slot is taken, the read shares slot 1 as it would have anyway, instead of
 * waiting on us. Holding slot 1 for these microseconds only keeps the app's
 * checkpoints from backfilling past its mark meanwhile, as any reader does.
 * A read that begins while slot 1's mark is the newest (right inside a
 * commit of the app's, or after a checkpoint set it) still shares slot 1:
 * db_hold_rotate() then begins again (see shares_slot1()).
 * Returns the file to pass to slot1_unfence(), or NULL (nothing held).
 */
#define SHM_READ_SLOT1 4 /* SQLite's WAL_READ_LOCK(1) */

static sqlite3_file *slot1_fence(struct db_conns *c)
{
	sqlite3_file *f = c->ck_shm ? file_of(c->ck) : NULL;
	volatile void *map = NULL;
	if (!f || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap || !f->pMethods->xShmLock)
		return NULL;
	/* xShmLock needs the shared memory open: ck's WAL opened it, this only finds it */
	if (f->pMethods->xShmMap(f, 0, 32768, 0, &map) != SQLITE_OK || !map)
		return NULL;
	if (f->pMethods->xShmLock(f, SHM_READ_SLOT1, 1, SQLITE_SHM_LOCK | SQLITE_SHM_SHARED) != SQLITE_OK)
		return NULL; /* somebody is setting slot 1's mark right now: no matter */
	return f;
}

static void slot1_unfence(sqlite3_file *f)
{
	if (f)
		f->pMethods->xShmLock(f, SHM_READ_SLOT1, 1, SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED);
}

/*
 * A busy wait that lifts the fence while it sleeps: slot 1 is held only while
 * SQLite tries, so an app's checkpoint that needs slot 1 never waits on our
 * wait.
 */
struct fenced_wait {
	struct db_conns *c;
	sqlite3_file *fence;
	int tries;     /* busy retries before giving up */
	long sleep_ns; /* between them */
};

static int fenced_busy(void *ctx, int count)
{
	struct fenced_wait *w = ctx;
	if (count >= w->tries)
		return 0;
	slot1_unfence(w->fence);
	struct timespec ts = { 0, w->sleep_ns };
	nanosleep(&ts, NULL);
	w->fence = slot1_fence(w->c);
	return 1;
}

/* begin(conn) behind the fence, with the fenced busy wait; conn gets its usual timeout back. */
static int fenced_begin(struct db_conns *c, sqlite3 *conn, int tries, long sleep_ns,
			int (*begin)(sqlite3 *))
{
	struct fenced_wait w = { c, slot1_fence(c), tries, sleep_ns };
	sqlite3_busy_handler(conn, fenced_busy, &w);
	int rc = begin(conn);
	sqlite3_busy_timeout(conn, BUSY_MS_HOLD);
	slot1_unfence(w.fence);
	return rc;
}

int db_hold_begin(struct db_conns *c, int i)
{
	uint32_t mx0 = 0, mx1 = 0;
	/* any connection of ours that has read maps the index; the current hold has */
	int before = wal_backfilled(c->cur >= 0 ? c->hold[c->cur] : c->hold[i], &mx0);
	c->db_only = false;
	if (fenced_begin(c, c->hold[i], BUSY_MS_HOLD, 1000 * 1000, db_read_begin) < 0)
		return -1;
	c->db_only = before == 1 && wal_backfilled(c->hold[i], &mx1) == 1 && mx0 == mx1;
	return 0;
}

/*
 * Whether the read conn just began probably shares slot 1: slot 1's mark is
 * the end of the WAL and no other slot's is, so SQLite gave it slot 1, fence
 * or not. That happens when it began right inside a commit of the app's,
 * whose read had just set slot 1's mark. Racy both ways (a commit since
 * hides it; an app's read setting slot 1's mark since fakes it): a wrong
 * answer costs one retry too many or too few, nothing else.
 */
static bool shares_slot1(sqlite3 *conn)
{
	struct db_wal_index wi;
	/* a WAL fully backfilled is read from slot 0 */
	if (db_wal_index(conn, &wi) < 0 || wi.read_mark[1] != wi.max_frame ||
	    wi.backfilled == wi.max_frame)
		return false;
	for (int k = 2; k < 5; k++)
		if (wi.read_mark[k] == wi.max_frame)
			return false;
	return true;
}

#define HOLD_SLOT1_RETRIES 3

int db_hold_rotate(struct db_conns *c, bool keep_wal)
{
	int next = c->cur == 0 ? 1 : 0;
	bool was_db_only = c->db_only;
	uint32_t mx;
	for (int retry = 0;; retry++) {
		if (db_hold_begin(c, next) < 0) {
			c->db_only = was_db_only; /* the current hold goes on as it was */
			return -1;
		}
		if (c->cur < 0 || c->db_only || retry == HOLD_SLOT1_RETRIES ||
		    !shares_slot1(c->hold[next]))
			break;
		/* the current hold still holds, so ending the new one leaves no gap */
		db_txn_end(c->hold[next]);
		struct timespec ts = { 0, 200 * 1000 }; /* the app's commit ends meanwhile */
		nanosleep(&ts, NULL);
	}
	/*
	 * Frames not copied yet, and the new hold may sit on read slot 0: it
	 * took it if every frame was backfilled at its BEGIN, and then nothing
	 * of ours would keep the app's next write from restarting the WAL over
	 * them once the current hold ends. The index showing frames not
	 * backfilled after the BEGIN rules that out (or they came after it,
	 * and a hold on slot 0 pins them: db_hold_begin()).
	 */
	if (keep_wal && c->cur >= 0 && wal_backfilled(c->hold[next], &mx) != 0) {
		db_txn_end(c->hold[next]);
		c->db_only = was_db_only;
		return 1;
	}
	if (c->cur >= 0)
		db_txn_end(c->hold[c->cur]);
	c->cur = next;
	return 0;
}

void db_hold_release(struct db_conns *c)
{
	for (int i = 0; i < 2; i++)
		db_txn_end(c->hold[i]);
	c->cur = -1;
	c->db_only = false;
}

int db_wal_index(sqlite3 *conn, struct db_wal_index *out)
{
	sqlite3_file *f = file_of(conn);
	volatile void *map = NULL;
	if (!f || f->pMethods->iVersion < 2 || !f->pMethods->xShmMap)
		return -1;
	/* region 0 is mapped by any connection that has read in WAL mode; never extend it */
	if (f->pMethods->xShmMap(f, 0, 32768, 0, &map) != SQLITE_OK || !map)
		return -1;
	const volatile uint32_t *w = map;
	uint32_t h1[12], h2[12];
	/* SQLite writes the second copy, then the first: read them the other way round */
	for (int k = 0; k < 12; k++)
		h1[k] = w[k];
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	for (int k = 0; k < 12; k++)
		h2[k] = w[12 + k];
	out->consistent = memcmp(h1, h2, sizeof(h1)) == 0;
	out->change = h1[2];          /* WalIndexHdr.iChange */
	memcpy(out->salts, &h1[8], 8); /* WalIndexHdr.aSalt: the header's bytes */
	out->max_frame = h1[4];       /* WalIndexHdr.mxFrame */
	out->backfilled = w[24];      /* WalCkptInfo.nBackfill, after the two 48-byte headers */
	for (int k = 0; k < 5; k++)
		out->read_mark[k] = w[25 + k]; /* WalCkptInfo.aReadMark[] */
	return 0;
}

/* SQLite's descriptor of <path>-shm in this process, or -1. */
static int find_shm_fd(const char *path)
{
	char want[PATH_MAX + 8], real[PATH_MAX], link[PATH_MAX + 8], name[300];
	if (!realpath(path, real))
		return -1;
	snprintf(want, sizeof(want), "%s-shm", real);
	DIR *dir = opendir("/proc/self/fd");
	if (!dir)
		return -1;
	int found = -1;
	struct dirent *e;
	while (found < 0 && (e = readdir(dir))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(name, sizeof(name), "/proc/self/fd/%s", e->d_name);
		ssize_t n = readlink(name, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = '\0';
		if (strcmp(link, want) == 0)
			found = (int)strtol(e->d_name, NULL, 10);
	}
	closedir(dir);
	return found;
}

/* The process holding byte 120+n of the -shm (SQLite's WAL lock n) against a write lock, or 0. */
static pid_t shm_lock_holder(int fd, int n)
{
	/* UNIX_SHM_BASE in SQLite's unix VFS: WAL_WRITE_LOCK is n 0, WAL_CKPT_LOCK n 1 */
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 120 + n,
			    .l_len = 1 };
	if (fcntl(fd, F_GETLK, &fl) < 0)
		return -1;
	return fl.l_type == F_UNLCK ? 0 : fl.l_pid;
}

int db_foreign_blocking_checkpoint(struct db_conns *c)
{
	if (c->shm_fd < 0 && (c->shm_fd = find_shm_fd(c->path)) < 0)
		return -1;
	pid_t ck = shm_lock_holder(c->shm_fd, 1);
	if (ck <= 0)
		return ck < 0 ? -1 : 0;
	pid_t wr = shm_lock_holder(c->shm_fd, 0);
	if (wr < 0)
		return -1;
	return wr == ck;
}

int db_foreign_reader(struct db_conns *c)
{
	if (c->shm_fd < 0 && (c->shm_fd = find_shm_fd(c->path)) < 0)
		return -1;
	/* WAL_READ_LOCK(1..4) are n 4..7 */
	for (int n = 4; n <= 7; n++) {
		pid_t p = shm_lock_holder(c->shm_fd, n);
		if (p != 0)
			return p < 0 ? -1 : 1;
	}
	return 0;
}

int db_file_read(sqlite3 *conn, void *buf, int len, int64_t off)
{
	sqlite3_file *f = file_of(conn);
	if (!f)
		return -1;
	int rc = f->pMethods->xRead(f, buf, len, off);
	if (rc == SQLITE_IOERR_SHORT_READ)
		return 1;
	return rc == SQLITE_OK ? 0 : -1;
}

int64_t db_file_size(sqlite3 *conn)
{
	sqlite3_file *f = file_of(conn);
	sqlite3_int64 size = -1;
	if (!f || f->pMethods->xFileSize(f, &size) != SQLITE_OK)
		return -1;
	return size;
}

int db_conn_is_wal(sqlite3 *conn)
{
	unsigned char h[100];
	if (db_file_read(conn, h, sizeof(h), 0) != 0 || memcmp(h, "SQLite format 3", 16) != 0)
		return -1;
	return h[18] == 2 && h[19] == 2;
}

int db_file_is_wal(const char *path)
{
	sqlite3 *db = NULL;
	int rc = -1;
	/* SQLite's own connection: closing it never drops another connection's locks */
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK)
		rc = db_conn_is_wal(db);
	sqlite3_close(db);
	return rc;
}

int db_file_check(const char *path, char *why, size_t len)
{
	struct stat st;
	sqlite3 *db = NULL;
	int rc = 0;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT) /* the app has not created it yet */
			return 0;
		snprintf(why, len, "error: %s: %s", path, strerror(errno));
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		snprintf(why, len, "error: %s is a directory, not a database", path);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, len, "error: %s is not a regular file", path);
		return -1;
	}
	if (st.st_size == 0) /* being created */
		return 0;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(why, len, "error: cannot open %s: %s", path,
			 db ? sqlite3_errmsg(db) : "out of memory");
		rc = -1;
	} else if (db_conn_is_wal(db) >= 0) {
		rc = 1;
	} else if (st.st_size >= 100) {
		/* a whole header that is not SQLite's: not a half-written new database */
		unsigned char h[16] = { 0 };
		if (db_file_read(db, h, sizeof(h), 0) == 0 && memcmp(h, "SQLite format 3", 16) != 0) {
			snprintf(why, len, "error: %s is not an SQLite database", path);
			rc = -1;
		}
	}
	sqlite3_close(db);
	return rc;
}

int db_checkpoint(sqlite3 *conn, enum db_ckpt_mode mode, int *log, int *ckpt)
{
	static const int modes[] = { SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_RESTART,
				     SQLITE_CHECKPOINT_TRUNCATE };
	int l = -1, k = -1;
	/* no busy handler: RESTART/TRUNCATE must never wait on readers holding the writer lock */
	sqlite3_busy_timeout(conn, 0);
	int rc = sqlite3_wal_checkpoint_v2(conn, "main", modes[mode], &l, &k);
	if (log)
		*log = l;
	if (ckpt)
		*ckpt = k;
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
		return 1;
	if (rc != SQLITE_OK) {
		static const char *const names[] = { "PASSIVE", "RESTART", "TRUNCATE" };
		char why[300];
		const char *file = sqlite3_db_filename(conn, "main");
		log_warn("db", "checkpoint failed", "path=\"%s\" mode=%s err=\"%s\"", file ? file : "",
			 names[mode], conn_err(conn, why, sizeof(why)));
		return -1;
	}
	return 0;
}

static int begin_immediate(sqlite3 *conn)
{
	return sqlite3_exec(conn, "BEGIN IMMEDIATE", NULL, NULL, NULL);
}

/*
 * Take the writer lock (BEGIN IMMEDIATE) on conn, one of c's hold
 * connections. 0, 1 busy, -1 error (logged). SQLite's default busy handler
 * sleeps 1, 2, 5, 10… ms between attempts; an app that commits back to back
 * releases the writer lock for microseconds only, so it would never be won.
 * Poll every 50 us instead, for up to ~100 ms: waiting costs the app
 * nothing, only holding the lock does.
 */
static int writer_lock(struct db_conns *c, sqlite3 *conn)
{
	int rc = fenced_begin(c, conn, 2000, 50 * 1000, begin_immediate);
	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
		return 1;
	if (rc != SQLITE_OK) {
		log_warn("db", "cannot take the writer lock", "err=\"%s\"", sqlite3_errmsg(conn));
		return -1;
	}
	return 0;
}

int db_safe_checkpoint(struct db_conns *c, int (*copy)(void *ctx), void *ctx, bool *full)
{
	int log = -1, ck = -1, rc;
	int idle = c->cur == 0 ? 1 : 0;

	*full = false;
	/* most of the backfill happens here, without any lock the app could notice */
	if (db_checkpoint(c->ck, DB_CKPT_PASSIVE, NULL, NULL) < 0)
		return -1;
	/* fenced: the hold taken below shares this transaction's read mark */
	rc = writer_lock(c, c->hold[idle]);
	if (rc != 0)
		return rc;
	/* nobody can append now: the tail is stable */
	if (copy(ctx) < 0) {
		db_txn_end(c->hold[idle]);
		return -1;
	}
	/* our writer transaction's own read mark is the end of the WAL, all of it copied */
	if (c->cur >= 0)
		db_txn_end(c->hold[c->cur]);
	rc = db_checkpoint(c->ck, DB_CKPT_PASSIVE, &log, &ck);
	*full = rc == 0 && log >= 0 && log == ck;
	int hold = c->cur >= 0 ? c->cur : (idle == 0 ? 1 : 0);
	int hrc = db_hold_begin(c, hold);
	db_txn_end(c->hold[idle]);
	c->cur = hrc == 0 ? hold : -1;
	if (hrc < 0)
		return -1;
	return rc < 0 ? -1 : 0;
}
