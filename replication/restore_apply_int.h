/*
 * restore_apply_int.h — what the files applying one candidate's plan share
 * (not for other modules): one restore's state and its failure, cleanup and
 * lock helpers.
 *
 *   restore_apply.c   rs_apply(): the snapshot into the temp file, the WAL
 *                     indexes by download workers, then the steps below
 *   restore_db.c      the temp database: each WAL index applied (validated,
 *                     checkpointed), then finished (one file, checked,
 *                     synced) and installed (renamed into place)
 *   restore_lock.c    one restore per target (flock), leftovers of killed
 *                     ones, restore_abort() / restore_abandon()
 */
#ifndef LITEVISOR_RESTORE_APPLY_INT_H
#define LITEVISOR_RESTORE_APPLY_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "replication/restore_int.h"

#define RS_IO_CHUNK (64 * 1024)

enum job_state { JOB_PENDING = 0, JOB_RUNNING, JOB_DONE, JOB_FAILED };

/* One WAL index: all its segments, downloaded back to back into one file. */
struct idx_job {
	uint32_t index;
	size_t first, count;        /* segments of the plan */
	uint64_t *lens;             /* compressed length of each */
	enum job_state state;
};

struct apply {
	struct rs_cand *c;
	const struct rs_apply_opts *o;
	struct st_call transfer;     /* the downloads' call: how a stall ends (rs_apply_opts) */
	char tmp[PATH_MAX], tmp_wal[PATH_MAX + 8], tmp_shm[PATH_MAX + 8];

	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct idx_job *jobs;
	size_t njobs, next;
	bool abort, done;
	bool snap_flowing;           /* the snapshot's bytes are coming (or its GET ended) */
	char err[512];
	enum rs_cause cause;
	sqlite3 *live_db;            /* the temp database's open connection: rs_fail interrupts it */

	atomic_uint_fast64_t bytes;  /* compressed bytes downloaded */
	uint64_t total;
	int64_t t0_ms;
	int64_t snap_ms, wal_ms, verify_ms, install_ms; /* phase timings for the log */
};

/* Where job j's compressed segments go (not stored per job: there may be thousands). */
char *rs_job_path(const struct apply *a, const struct idx_job *j, char *buf, size_t len);

/*
 * Record the first error (later ones are consequences) and stop the restore,
 * interrupting the temp database's SQLite call in progress (a checkpoint or a
 * check of gigabytes). Locks a->mu.
 */
void rs_fail(struct apply *a, enum rs_cause cause, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Whether the restore was stopped (a failure, or restore_abort()). */
bool rs_aborted(struct apply *a);

/* Remove every temp file of this restore (the temp database, its -wal/-shm/-journal, the jobs'). */
void rs_cleanup(struct apply *a);

/* Remove one of restore's own temp files; a failure (other than "not there") is logged. */
void rs_unlink(const char *path);

/* restore_db.c: apply index j (its downloaded segments) to the temp database; *pos gets its end. 0 or -1 (failed). */
int rs_apply_index(struct apply *a, struct idx_job *j, uint32_t page_size, struct wal_pos *pos);

/* restore_db.c: one self-contained file (journal_mode=DELETE), checked as asked, synced. 0 or -1. */
int rs_finish_db(struct apply *a);

/* restore_db.c: owner and mode, fsync, rename without replacing, fsync the directory. 0 or -1. */
int rs_install(struct apply *a);

/*
 * restore_lock.c. A restore in progress in this process, for restore_abort()
 * and restore_abandon() (restore.h): one node each, on its rs_apply()'s stack.
 */
struct rs_active {
	struct apply *a;
	char lock[PATH_MAX + 8];
	int lock_fd;                 /* -1 until the lock is ours */
	struct rs_active *next;
};

/* List n (n->a set). 0, or -1 when restore_abort() came first (a then failed). */
int rs_active_add(struct rs_active *n);

/* Unlist n (after rs_lock_drop). */
void rs_active_remove(struct rs_active *n);

/*
 * One restore at a time to a target: an flock(2) on <tmp>.lock, taken before
 * the leftovers are removed. 0, or -1 (a failed: another restore runs, or
 * the lock file could not be made).
 */
int rs_lock_take(struct apply *a, struct rs_active *n);

/* Remove the lock file, then let go. */
void rs_lock_drop(struct rs_active *n);

/* Under the lock: remove the temp files a killed restore to the same target left. */
void rs_remove_leftovers(struct apply *a);

#endif
