/*
 * db.h — litevisor's own SQLite connections to an application database.
 *
 * The engine never writes to the application's schema. What it needs from
 * SQLite it gets from locks alone:
 *
 *  - a read transaction held at all times ("the hold"), alternating between
 *    two connections so there is never a moment without one. While a reader
 *    holds a WAL read mark, SQLite cannot restart (overwrite) the WAL, so no
 *    committed frame can vanish before the shadow copy has seen it. The app's
 *    own PASSIVE checkpoints still backfill freely (backfilling loses nothing:
 *    the frames stay in the WAL until a restart). The hold keeps off SQLite's
 *    first read-mark slot, the one each of the app's commits tries first.
 *  - the writer lock (BEGIN IMMEDIATE, writes nothing) for the short moment
 *    in which the tail of the WAL is copied and a PASSIVE checkpoint on a
 *    second connection backfills everything, so the app's next write restarts
 *    the WAL with every frame already shadowed.
 *
 * Every connection: wal_autocheckpoint=0, SQLITE_FCNTL_PERSIST_WAL=1 (closing
 * ours never deletes the app's -wal), a short busy timeout.
 * Not thread-safe: one thread (the database's monitor) owns a struct db_conns.
 */
#ifndef LITEVISOR_DB_H
#define LITEVISOR_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

enum db_ckpt_mode { DB_CKPT_PASSIVE = 0, DB_CKPT_RESTART = 1, DB_CKPT_TRUNCATE = 2 };

struct db_conns {
	sqlite3 *hold[2];  /* read-hold connections, used alternately */
	sqlite3 *ck;       /* checkpoints */
	int cur;           /* index of hold[] holding the read transaction, -1 none */
	bool db_only;      /* the hold surely reads the database file only: see db_hold_begin() */
	bool ck_shm;       /* ck has read in WAL mode: its WAL (and shared memory) is open */
	int shm_fd;        /* SQLite's own descriptor of the -shm file, -1 not known yet */
	char path[4096];
};

/*
 * Open one connection of ours to path (must exist) with the settings above.
 * Returns a handle, or NULL (logged).
 */
sqlite3 *db_open_conn(const char *path, int busy_ms);

/*
 * Open all of the engine's connections and put the database in WAL mode if it
 * is not (logged). Returns 0; -1 on error; -2 when WAL mode cannot be set
 * right now (why says what failed, for the caller to log); -3 when the database cannot even be read, another process
 * holding it locked (an app creating its schema, or one in
 * locking_mode=EXCLUSIVE): try again later.
 */
int db_conns_open(struct db_conns *c, const char *path, char *why, size_t whylen);
void db_conns_close(struct db_conns *c);

/*
 * Move the hold forward: begin a read transaction on the idle hold connection
 * while the current one still holds, then end the current one. Call it just
 * before copying the WAL: the new mark is either at or below what the copy
 * will reach, or the WAL was fully backfilled (then everything in it had
 * already been copied), so no frame can be lost in between. keep_wal: the
 * caller could not copy everything the WAL holds (its last copy failed), so
 * that last clause does not hold: a new hold that may read the database
 * file only (read slot 0, which keeps no WAL from restarting) is ended
 * again and the current one kept, which still keeps the WAL. Returns 0
 * (moved), 1 (kept), or -1 (logged; the caller must then treat its
 * history as broken).
 */
int db_hold_rotate(struct db_conns *c, bool keep_wal);

/*
 * Begin the hold's read transaction on hold[i] and set c->db_only. A read
 * that begins while the WAL is fully backfilled reads the database file only
 * (SQLite's read slot 0): it no longer keeps the WAL from restarting, so it
 * lets an app's RESTART/TRUNCATE checkpoint finish, but it still pins the
 * frames written after it began: a checkpoint backfills only while it holds
 * slot 0 exclusively, and an unbackfilled WAL is never restarted. (Frames
 * there when it began were all backfilled: copied under the previous hold.)
 * An app's checkpoint of newer frames waits for this hold until the next
 * rotation, which their write triggers. db_only is set when the WAL
 * index showed "fully backfilled", with the same last frame, both before and
 * after the BEGIN; false means "probably pins the WAL" (a race can only make
 * it false wrongly, never true wrongly). Returns 0 or -1 (logged).
 */
int db_hold_begin(struct db_conns *c, int i);

/* End every transaction of ours (before close, or when the hold is given up). */
void db_hold_release(struct db_conns *c);

/*
 * The safe checkpoint: PASSIVE first (no lock), then take the writer lock on
 * the idle hold connection (busy: return 1, try later), call copy(ctx) to
 * copy the now-stable tail of the WAL, release the read hold, PASSIVE again
 * on the checkpoint connection (which needs no writer lock), re-take the hold
 * and release the writer lock. *full is set when the WAL ended up entirely
 * backfilled, so the app's next write restarts it (the hold is then taken
 * again on read slot 0, see db_hold_begin()). The writer lock is held only
 * for the tail copy and one PASSIVE checkpoint.
 * Returns 0, 1 (busy, nothing done), -1 (error, logged; hold re-taken if possible).
 */
int db_safe_checkpoint(struct db_conns *c, int (*copy)(void *ctx), void *ctx, bool *full);

/*
 * The database file is only ever read through a SQLite connection's own file
 * handle, never open()ed by us: closing any descriptor of a file drops every
 * POSIX lock this process holds on it, SQLite's included
 * (https://www.sqlite.org/howtocorrupt.html §2.2).
 */

struct db_wal_index {
	bool consistent;       /* both copies of SQLite's header agreed (a writer was not mid-update) */
	uint32_t change;       /* WalIndexHdr.iChange: commits, counted across restarts */
	uint8_t salts[8];      /* the current session's salts, as in its WAL header */
	uint32_t max_frame;    /* last valid frame of the WAL */
	uint32_t backfilled;   /* frames already copied into the database file */
	uint32_t read_mark[5]; /* SQLite's read marks, slot 0..4 (0xffffffff: unused) */
};

/*
 * Read the WAL index's header through conn's own shared-memory mapping (the
 * VFS xShmMap, so no descriptor of ours is opened or closed). Values are a
 * racy snapshot, good for deciding when to look again. 0, or -1 if conn has
 * no mapping (not in WAL mode, or never read).
 */
int db_wal_index(sqlite3 *conn, struct db_wal_index *out);

/*
 * 1 when another process holds both the WAL's checkpoint lock and its writer
 * lock, as SQLite's FULL, RESTART and TRUNCATE checkpoints do for their whole
 * run (the writer lock keeps every writer out meanwhile); 0 when not; -1 when
 * it cannot be told. Asked with F_GETLK on SQLite's own descriptor of the
 * -shm file, found once in /proc/self/fd: no descriptor is opened or closed
 * (a close would drop the process's POSIX locks on the file, SQLite's
 * included). Our own locks are never reported.
 */
int db_foreign_blocking_checkpoint(struct db_conns *c);

/*
 * 1 when another process holds any of the WAL's read-mark slots 1..4 (an
 * app's read transaction on the WAL), 0 when none, -1 when it cannot be
 * told; asked the same way.
 */
int db_foreign_reader(struct db_conns *c);

/* Read len bytes at off of conn's database file. 0, 1 if short (rest zeroed), -1 on error. */
int db_file_read(sqlite3 *conn, void *buf, int len, int64_t off);

/* Size of conn's database file in bytes, or -1. */
int64_t db_file_size(sqlite3 *conn);

/* Header check (bytes 18/19 == 2 is WAL): 1 WAL, 0 not, -1 unreadable. */
int db_conn_is_wal(sqlite3 *conn);

/* The same for the file at path, through a short-lived read-only connection (no lock taken). */
int db_file_is_wal(const char *path);

/*
 * Can path be replicated? 1: a file with a complete SQLite header (read via
 * a short-lived connection); 0: not yet (missing, empty, header still being
 * written); -1: never as it is (a directory, not a regular file, a path
 * under a file, unreadable, not an SQLite database): why gets "error: ...".
 */
int db_file_check(const char *path, char *why, size_t len);

/*
 * PRAGMA wal_checkpoint(mode) on conn with no busy wait. *log and *ckpt get
 * SQLite's frame counts. Returns 0, 1 if busy, -1 on error (logged).
 */
int db_checkpoint(sqlite3 *conn, enum db_ckpt_mode mode, int *log, int *ckpt);

/* End whatever transaction conn has (ROLLBACK; nothing was written). */
void db_txn_end(sqlite3 *conn);

/* Begin a read transaction on conn. 0 or -1 (logged). */
int db_read_begin(sqlite3 *conn);

#endif
