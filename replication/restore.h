/*
 * restore.h — bring each database back from the freshest replica that can be
 * reached, fastest first, with fallback and verification.
 *
 * Used by `litevisor restore` (one database, CLI flags) and by `run` (every
 * configured database, before the service starts). Candidates are probed in
 * parallel; the winner is the one holding the newest data, ties going to the
 * fastest; a failed or corrupt download falls back to the next candidate that
 * holds the same or newer data. The result is a single, checkpointed database
 * file renamed into place; a failed restore leaves nothing at the target.
 */
#ifndef LITEVISOR_RESTORE_H
#define LITEVISOR_RESTORE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "replication/status.h"

enum restore_outcome {
	RESTORE_RESTORED = 0,  /* restored from a replica */
	RESTORE_EXISTS,        /* the database is there and current (or policy keep-local): untouched */
	RESTORE_EMPTY,         /* first deploy: every candidate answered, none holds data */
	RESTORE_NO_DATA,       /* no backup matched the request (explicit restore) */
	RESTORE_UNREACHABLE,   /* no candidate could be reached (temporary failure) */
	RESTORE_FAILED,        /* every usable candidate failed, or a local error */
};

struct restore_result {
	enum restore_outcome outcome;
	char source[64];       /* name of the replica restored from, or "" */
	struct wal_pos pos;    /* position restored to */
	int64_t duration_ms;
	char message[512];     /* why, for logs and status */
	bool temporary;        /* RESTORE_FAILED only: every failure looked transient (network) */
	char moved_aside[512]; /* where an existing local database was moved, or "" */
	char state_moved_aside[512]; /* where its state went, or "" */
	bool held_data;        /* a replica that answered lists a generation (RESTORE_NO_DATA:
				* the request matched none of it) */
};

/*
 * An explicit restore (`litevisor restore`). Zero it, then set what the user
 * asked for; unset fields mean "as configured" / "newest".
 */
struct restore_opts {
	const char *output;      /* where to write; NULL: the db's path */
	const char *generation;  /* only this generation; NULL: the newest */
	bool has_index;          /* stop after this WAL index (an index past the end is an error) */
	uint32_t index;
	int64_t timestamp_ns;    /* >0: the state as of this wall time (object times) */
	const char *replica;     /* only the replica of this name; NULL: every candidate */
	int parallelism;         /* >0: overrides cfg restore.parallelism */
	bool dry_run;            /* probe and print the decision, write nothing */
	bool if_db_not_exists;   /* the output exists: outcome RESTORE_EXISTS, not an error */
};

/*
 * Restore db (a configured database, or one built from a replica URL) as
 * asked in opt. Never overwrites an existing output: that is RESTORE_FAILED
 * ("exists") unless opt->if_db_not_exists (then RESTORE_EXISTS). The
 * "restored" marker is written only when restoring the db's own path
 * (output NULL) to the end of a generation (a point-in-time restore starts a
 * new generation); the database id whenever restoring the db's own path.
 * A dry run prints the decision on stdout. Returns 0 when restored (or a dry
 * run found a source, or EXISTS), -1 otherwise; *res says what happened.
 */
int restore_explicit(const struct config *cfg, const struct cfg_db *db,
		     const struct restore_opts *opt, struct restore_result *res);

/* "restored", "exists", "empty", "no-data", "unreachable", "failed". */
const char *restore_outcome_name(enum restore_outcome o);

/*
 * Restore the database db of cfg if needed (missing, or older than the
 * freshest replica under the newest-wins policy), as `run` does.
 * any_age_ms > 0: the newest generation's writer may still be stopping
 * however long ago it last wrote (it lost its writer lock rather than
 * releasing it): the handover wait is for any generation not closed, not
 * only one written to within restore.handover-wait, and lasts that long,
 * or any_age_ms if longer (unless handover-wait is 0: no wait). 0: the
 * plain handover wait. Returns 0 when the service may start on this
 * database (restored, exists, empty), -1 otherwise; *res says what happened.
 */
int restore_db_for_run(const struct config *cfg, const struct cfg_db *db, int64_t any_age_ms,
		       struct restore_result *res);

/*
 * Stop the restores in progress in this process, soon: their downloads end
 * at the next bytes that come (a sink refusing them fails the transfer), the
 * WAL workers stop, the temp files are removed and each returns
 * RESTORE_FAILED "cannot restore into <target>: interrupted (why)". Restores
 * started afterwards fail the same way before writing anything. A restore
 * that is already renaming its file into place finishes. Takes a mutex: call
 * it from the thread that reads signals (a signalfd), never from a handler.
 * (Defined in restore_apply.c, beside the restores it stops.)
 */
void restore_abort(const char *why);

/* Whether restore_abort() was called. */
bool restore_aborted(void);

/*
 * The last resort for a process about to _exit() because a restore did not
 * end soon after restore_abort() (a peer that sends nothing: no sink is
 * called until bytes come): removes the temp files and the lock of every
 * restore in progress. Their threads keep running on removed files, so
 * never return to them; the target is never half-written (only a rename
 * puts a file there).
 */
void restore_abandon(void);

/*
 * Probe threads left behind: a candidate that did not answer before the
 * decision keeps its thread until its own call deadline (at most about one
 * probe timeout later). Waits up to max_ms (0: not at all) for them to end,
 * joining them; returns how many still run. A command about to exit while
 * some still run must leave with _exit(): they may be inside libcurl or
 * OpenSSL, whose atexit cleanup would run under them.
 */
int restore_probes_wait(int64_t max_ms);

#endif
