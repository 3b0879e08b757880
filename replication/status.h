/*
 * status.h — a point-in-time copy of what replication and restore are doing,
 * for the health and metrics endpoints (supervisor/) and for logs.
 *
 * The engine keeps its live state private; engine_status_get() copies it into
 * these plain structs under a short lock, so readers (the HTTP thread) never
 * wait on the data path. Times are wall-clock ns since the epoch (0 = never);
 * durations are ms.
 */
#ifndef LITEVISOR_STATUS_H
#define LITEVISOR_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include "replication/storage.h"

struct wal_pos {
	char generation[17];  /* 16 hex digits, or "" when none */
	uint32_t index;
	uint32_t offset;
};

struct replica_status {
	char name[64];
	char type[8];              /* "file", "s3" */
	char description[256];     /* where it is, no credentials */
	bool restore_only;         /* not replicated to (e.g. the store on this node) */
	struct wal_pos pos;        /* what the replica holds */
	int64_t last_sync_ns;      /* last successful sync */
	int64_t last_snapshot_ns;  /* last snapshot written, or at start the replica's newest
				    * in the generation it continues (its object time); 0 none */
	int64_t failing_since_ns;  /* first failure of the current run of failures, 0 if healthy */
	int64_t failing_since_mono_ns; /* the same on the monotonic clock, for how long it has
					* failed: a step of the wall clock moves neither */
	int64_t last_error_ns;
	char last_error[256];      /* "" if none */
	double lag_seconds;        /* age of the oldest commit not yet on this replica (0 = caught up) */
	int64_t max_lag_ms;        /* allowed lag before it counts as behind (derived from sync-interval) */
	uint64_t syncs_total, sync_errors_total, snapshots_total;
	uint64_t wal_bytes_total, snapshot_bytes_total;
	uint64_t retention_deleted_total;
	/* generations labelled with another database id, kept by retention (last check) */
	uint64_t foreign_generations;
	char other_writer[17];     /* a generation another process writes here, "" if none seen */
	int64_t other_writer_ns;   /* when it was first seen */
	struct st_op_stats_copy {
		uint64_t count, errors, answered, bytes, latency_ns;
	} ops[ST_OP__COUNT];              /* the engine's calls and the restore's (opstats.h) */
};

struct db_status {
	char name[64];
	char path[512];
	bool replicating;          /* engine running for it (false: waiting for the file, stopped) */
	char state[256];           /* "waiting for database", "replicating", "stopped: not in WAL mode", … */
	/* Since when (monotonic) it has not replicated for a reason that does not pass by
	 * itself (an error, stopped, WAL mode or a lock it cannot get), 0 otherwise: this
	 * counts as failing for health.fail-after. Waiting for the file to exist, or for
	 * another litevisor that holds its state directory, does not. */
	int64_t stuck_since_mono_ns;
	/*
	 * Replication stopped for good: the database is older than what a replica
	 * holds of its generation (replica_older_refuse). Nothing passes it but
	 * a restore, so health fails at once, whatever fail-after says.
	 */
	bool stopped_older;
	struct wal_pos pos;        /* local position (shadow WAL) */
	int64_t db_size, wal_size;
	uint64_t checkpoints_total[3];      /* PASSIVE, RESTART, TRUNCATE */
	uint64_t checkpoint_errors_total;
	/* passes of the monitor: copy new commits, checkpoint when due (Litestream's Sync) */
	uint64_t syncs_total;
	int64_t sync_ns_total;              /* time they took, summed */
	uint64_t shadow_bytes_total;        /* WAL bytes copied into the shadow WAL */
	/*
	 * Copying new commits into the shadow WAL (local state) fails: the
	 * replicas then get nothing new, whatever their own health.
	 */
	int64_t sync_failing_since_ns;      /* first failure of the current run, 0 if fine */
	int64_t sync_failing_since_mono_ns; /* the same on the monotonic clock (for durations);
					     * it counts as lag for every replica */
	char sync_error[256];               /* its cause, "" if fine */
	uint64_t sync_errors_total;
	uint64_t generations_total;         /* generations started by this process */
	/*
	 * Why no replica is written to, "" when one is: every replica is
	 * restore-only (its node is this node, or restore-only: true), so
	 * nothing of the database is backed up. A warning, never an error: a
	 * node hosting its own store may rightly only restore from it.
	 */
	char no_writable_replica[256];
	int64_t backlog_bytes;              /* local state kept for replicas that are behind */

	/* restore that preceded replication (0/"" if none ran) */
	char restore_source[64];
	char restore_result[32];   /* "restored", "empty", "kept-local", "failed", "skipped" */
	int64_t restore_duration_ms;
	struct wal_pos restore_pos;

	struct replica_status *replicas;
	size_t nreplicas;
};

struct engine_status {
	int64_t taken_ns;
	struct db_status *dbs;
	size_t ndbs;
};

/* Free the arrays an engine_status owns and zero it. */
void engine_status_release(struct engine_status *s);

#endif
