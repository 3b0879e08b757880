/* metrics.c — Prometheus text exposition (see metrics.h). */
#include "supervisor/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/utf8.h"
#include "replication/storage.h"
#include "common/version.h"
#include "common/banned.h"

int metrics_proc_read(struct metrics_proc *p)
{
	char buf[1024];
	memset(p, 0, sizeof(*p));
	p->open_fds = -1;
	if (fs_read_text("/proc/self/stat", buf, sizeof(buf)) < 0)
		return -1;
	/* Fields after "(comm)": 3 state … 14 utime 15 stime … 20 num_threads … 23 vsize 24 rss. */
	char *s = strrchr(buf, ')');
	if (!s)
		return -1;
	s += 2;
	unsigned long long f[25] = { 0 };
	int field = 3;
	char *save = NULL;
	for (char *tok = strtok_r(s, " ", &save); tok && field <= 24;
	     tok = strtok_r(NULL, " ", &save), field++)
		f[field] = strtoull(tok, NULL, 10);
	long tck = sysconf(_SC_CLK_TCK);
	long page = sysconf(_SC_PAGESIZE);
	p->cpu_seconds = (double)(f[14] + f[15]) / (double)(tck > 0 ? tck : 100);
	p->threads = (int64_t)f[20];
	p->vsize_bytes = (int64_t)f[23];
	p->rss_bytes = (int64_t)f[24] * (page > 0 ? page : 4096);
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		int64_t count = 0;
		struct dirent *de;
		while ((de = readdir(d)))
			if (de->d_name[0] != '.')
				count++;
		closedir(d);
		p->open_fds = count - 1; /* the directory stream itself */
	}
	return 0;
}

void metrics_label_value(struct text *out, const char *s)
{
	size_t n = s ? strlen(s) : 0;
	for (size_t i = 0, k; i < n; i += k ? k : 1) {
		k = utf8_char_len(s + i, n - i);
		if (s[i] == '\\')
			text_append(out, "\\\\", 2);
		else if (s[i] == '"')
			text_append(out, "\\\"", 2);
		else if (s[i] == '\n')
			text_append(out, "\\n", 2);
		else if (k)
			text_append(out, s + i, k);
		else /* not UTF-8: Prometheus would refuse the whole scrape */
			text_append(out, UTF8_REPLACEMENT, sizeof(UTF8_REPLACEMENT) - 1);
	}
}

static void family(struct text *t, const char *name, const char *type, const char *help)
{
	text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A value: integers exactly, others in the fewest digits that read back as the same double. */
static void value(struct text *t, double v)
{
	char buf[40];
	if (v == (double)(int64_t)v && v < 9e15 && v > -9e15) {
		text_printf(t, " %" PRId64 "\n", (int64_t)v);
		return;
	}
	snprintf(buf, sizeof(buf), "%.15g", v);
	if (strtod(buf, NULL) != v)
		snprintf(buf, sizeof(buf), "%.17g", v);
	text_printf(t, " %s\n", buf);
}

static void sample0(struct text *t, const char *name, double v)
{
	text_printf(t, "%s", name);
	value(t, v);
}

/* name{db="…"[,replica="…"][,extra="…"]} v */
static void sample(struct text *t, const char *name, const char *db, const char *replica,
		   const char *extra_name, const char *extra, double v)
{
	text_printf(t, "%s{", name);
	const char *sep = "";
	if (db) {
		text_printf(t, "db=\"");
		metrics_label_value(t, db);
		text_printf(t, "\"");
		sep = ",";
	}
	if (replica) {
		text_printf(t, "%sreplica=\"", sep);
		metrics_label_value(t, replica);
		text_printf(t, "\"");
		sep = ",";
	}
	if (extra_name) {
		text_printf(t, "%s%s=\"", sep, extra_name);
		metrics_label_value(t, extra);
		text_printf(t, "\"");
	}
	text_printf(t, "}");
	value(t, v);
}

static double seconds(int64_t wall_ns)
{
	return (double)wall_ns / 1e9;
}

static void render_process(const struct metrics_view *v, struct text *t)
{
	const struct sup_snapshot *s = v->sup;
	family(t, "litevisor_build_info", "gauge", "Version of litevisor (always 1).");
	text_printf(t, "litevisor_build_info{version=\"");
	metrics_label_value(t, litevisor_version());
	text_printf(t, "\"} 1\n");
	family(t, "litevisor_start_time_seconds", "gauge", "When litevisor started, seconds since the epoch.");
	sample0(t, "litevisor_start_time_seconds", seconds(s->started_wall_ns));
	family(t, "litevisor_process_cpu_seconds_total", "counter", "CPU time used by litevisor (user and system).");
	sample0(t, "litevisor_process_cpu_seconds_total", v->proc->cpu_seconds);
	family(t, "litevisor_process_resident_memory_bytes", "gauge", "Resident memory of litevisor.");
	sample0(t, "litevisor_process_resident_memory_bytes", (double)v->proc->rss_bytes);
	family(t, "litevisor_process_virtual_memory_bytes", "gauge", "Virtual memory size of litevisor.");
	sample0(t, "litevisor_process_virtual_memory_bytes", (double)v->proc->vsize_bytes);
	if (v->proc->open_fds >= 0) {
		family(t, "litevisor_process_open_fds", "gauge", "Open file descriptors of litevisor.");
		sample0(t, "litevisor_process_open_fds", (double)v->proc->open_fds);
	}
	family(t, "litevisor_process_threads", "gauge", "Threads of litevisor.");
	sample0(t, "litevisor_process_threads", (double)v->proc->threads);

	family(t, "litevisor_phase", "gauge", "Supervisor phase (1 for the current one).");
	for (int p = SUP_STARTING; p <= SUP_EXITING; p++)
		sample(t, "litevisor_phase", NULL, NULL, "phase", sup_phase_name((enum sup_phase)p),
		       s->phase == (enum sup_phase)p);
	family(t, "litevisor_ready", "gauge", "1 when /readyz answers 200.");
	sample0(t, "litevisor_ready", v->ready);
	/*
	 * No service to be up (`replicate` without one): no series. A constant 0
	 * fired the shipped LitevisorServiceDown for every healthy such process
	 * (QA136 D1).
	 */
	if (!v->no_service) {
		family(t, "litevisor_service_up", "gauge", "1 while the service process runs.");
		sample0(t, "litevisor_service_up", s->service_pid > 0);
		family(t, "litevisor_service_restarts_total", "counter", "Service restarts by the restart policy.");
		sample0(t, "litevisor_service_restarts_total", (double)s->restarts);
	}
	if (s->service_started_wall_ns > 0) {
		family(t, "litevisor_service_start_time_seconds", "gauge", "Last (re)start of the service, seconds since the epoch.");
		sample0(t, "litevisor_service_start_time_seconds", seconds(s->service_started_wall_ns));
	}
	if (s->last_exit_code >= 0) {
		family(t, "litevisor_service_last_exit_code", "gauge", "Exit code of the service's last run (128+signal when killed).");
		sample0(t, "litevisor_service_last_exit_code", s->last_exit_code);
	}
	family(t, "litevisor_orphans_reaped_total", "counter", "Re-parented orphan processes reaped.");
	sample0(t, "litevisor_orphans_reaped_total", (double)v->orphans_total);
	if (s->probe != SUP_PROBE_NONE) {
		family(t, "litevisor_probe_up", "gauge", "1 when the service's own readiness probe passes.");
		sample0(t, "litevisor_probe_up", s->probe == SUP_PROBE_OK);
		family(t, "litevisor_probe_duration_seconds", "gauge", "Duration of the last probe.");
		sample0(t, "litevisor_probe_duration_seconds", (double)s->probe_latency_ms / 1000.0);
	}
	if (s->lock != SUP_LOCK_NONE) {
		family(t, "litevisor_consul_lock_held", "gauge", "1 while this process holds the Consul writer lock (consul.lock.key); 0 while it waits for it or after it was lost.");
		sample0(t, "litevisor_consul_lock_held", s->lock == SUP_LOCK_HELD);
	}
	family(t, "litevisor_restore_seconds", "gauge", "Duration of the whole restore step before the service started.");
	sample0(t, "litevisor_restore_seconds", (double)s->restore_duration_ms / 1000.0);
}

/* Per-database gauges and counters; one family at a time across all databases. */
#define DB_FAMILY(NAME_, TYPE_, HELP_, EXPR_)                                       \
	do {                                                                    \
		family(t, NAME_, TYPE_, HELP_);                                    \
		for (size_t i = 0; i < e->ndbs; i++) {                          \
			const struct db_status *d = &e->dbs[i];                 \
			sample(t, NAME_, d->name, NULL, NULL, NULL, (double)(EXPR_)); \
		}                                                               \
	} while (0)

#define REPLICA_FAMILY(NAME_, TYPE_, HELP_, EXPR_)                                             \
	do {                                                                               \
		family(t, NAME_, TYPE_, HELP_);                                               \
		for (size_t i = 0; i < e->ndbs; i++)                                       \
			for (size_t j = 0; j < e->dbs[i].nreplicas; j++) {                 \
				const struct replica_status *r = &e->dbs[i].replicas[j];   \
				if (!r->restore_only)                                      \
					sample(t, NAME_, e->dbs[i].name, r->name, NULL,    \
					       NULL, (double)(EXPR_));                     \
			}                                                                  \
	} while (0)

#define OP_FAMILY(NAME_, HELP_, FIELD_, SCALE_)                                                   \
	do {                                                                                  \
		family(t, NAME_, "counter", HELP_);                                             \
		for (size_t i = 0; i < e->ndbs; i++)                                          \
			for (size_t j = 0; j < e->dbs[i].nreplicas; j++)                      \
				for (int op = 0; op < ST_OP__COUNT; op++) {                   \
					const struct replica_status *r = &e->dbs[i].replicas[j]; \
					text_printf(t, "%s{db=\"", NAME_);                     \
					metrics_label_value(t, e->dbs[i].name);               \
					text_printf(t, "\",replica=\"");                      \
					metrics_label_value(t, r->name);                      \
					text_printf(t, "\",operation=\"%s\"}",                \
						    st_op_name((enum st_op)op));              \
					value(t, (double)r->ops[op].FIELD_ / (SCALE_));         \
				}                                                             \
	} while (0)

static size_t writable_replicas(const struct db_status *d)
{
	size_t n = 0;
	for (size_t j = 0; j < d->nreplicas; j++)
		n += !d->replicas[j].restore_only;
	return n;
}

static void render_engine(const struct engine_status *e, struct text *t)
{
	static const char *const modes[3] = { "passive", "restart", "truncate" };

	family(t, "litevisor_restore_duration_seconds", "gauge", "Duration of each database's restore, by source replica.");
	for (size_t i = 0; i < e->ndbs; i++) {
		const struct db_status *d = &e->dbs[i];
		sample(t, "litevisor_restore_duration_seconds", d->name, NULL, "source",
		       d->restore_source[0] ? d->restore_source : "none",
		       (double)d->restore_duration_ms / 1000.0);
	}
	family(t, "litevisor_restore_info", "gauge", "Outcome of each database's restore (always 1).");
	for (size_t i = 0; i < e->ndbs; i++) {
		const struct db_status *d = &e->dbs[i];
		text_printf(t, "litevisor_restore_info{db=\"");
		metrics_label_value(t, d->name);
		text_printf(t, "\",source=\"");
		metrics_label_value(t, d->restore_source[0] ? d->restore_source : "none");
		text_printf(t, "\",result=\"");
		metrics_label_value(t, d->restore_result[0] ? d->restore_result : "none");
		text_printf(t, "\"} 1\n");
	}
	DB_FAMILY("litevisor_db_replicating", "gauge", "1 while replication runs for the database.", d->replicating);
	DB_FAMILY("litevisor_db_stuck", "gauge", "1 while the database is not replicated for a reason that does not pass by itself (error, stopped, WAL mode, a lock; /healthz: not replicating for N s).", d->stuck_since_mono_ns > 0);
	DB_FAMILY("litevisor_db_replicas", "gauge", "Replicas configured for the database, restore-only ones included (0: none was meant to be written to).", d->nreplicas);
	DB_FAMILY("litevisor_db_writable_replicas", "gauge", "Replicas the database is written to (restore-only ones do not count): 0 with some configured = backed up nowhere.", writable_replicas(d));
	DB_FAMILY("litevisor_db_size_bytes", "gauge", "Size of the database file.", d->db_size);
	DB_FAMILY("litevisor_db_wal_size_bytes", "gauge", "Size of the database's WAL file.", d->wal_size);
	DB_FAMILY("litevisor_db_wal_index", "gauge", "Local shadow WAL index.", d->pos.index);
	DB_FAMILY("litevisor_db_wal_offset_bytes", "gauge", "Local shadow WAL offset.", d->pos.offset);
	DB_FAMILY("litevisor_db_backlog_bytes", "gauge", "Local state kept for replicas that are behind.", d->backlog_bytes);
	DB_FAMILY("litevisor_db_generations_total", "counter", "Generations started by this process.", d->generations_total);
	DB_FAMILY("litevisor_db_checkpoint_errors_total", "counter", "Failed checkpoints.", d->checkpoint_errors_total);
	DB_FAMILY("litevisor_db_sync_failing", "gauge", "1 while copying new commits into the local shadow WAL fails (no replica gets them).", d->sync_failing_since_ns > 0);
	DB_FAMILY("litevisor_db_sync_errors_total", "counter", "Failed copies of new commits into the local shadow WAL.", d->sync_errors_total);
	family(t, "litevisor_db_checkpoints_total", "counter", "Checkpoints run, by mode.");
	for (size_t i = 0; i < e->ndbs; i++)
		for (int m = 0; m < 3; m++)
			sample(t, "litevisor_db_checkpoints_total", e->dbs[i].name, NULL, "mode", modes[m],
			       (double)e->dbs[i].checkpoints_total[m]);

	/* every replica; the series below only for those written to (a restore-only one
	 * would read as caught up at 0/0) */
	family(t, "litevisor_replica_restore_only", "gauge", "1 for a replica only restored from (on this node, or restore-only: true): it is never written, and has none of the litevisor_replica_ series below.");
	for (size_t i = 0; i < e->ndbs; i++)
		for (size_t j = 0; j < e->dbs[i].nreplicas; j++)
			sample(t, "litevisor_replica_restore_only", e->dbs[i].name,
			       e->dbs[i].replicas[j].name, NULL, NULL, e->dbs[i].replicas[j].restore_only);
	REPLICA_FAMILY("litevisor_replica_lag_seconds", "gauge", "Age of the oldest commit not yet on the replica (0 = caught up).", r->lag_seconds);
	REPLICA_FAMILY("litevisor_replica_max_lag_seconds", "gauge", "Lag allowed before the replica counts as behind.", (double)r->max_lag_ms / 1000.0);
	REPLICA_FAMILY("litevisor_replica_failing", "gauge", "1 while the replica's syncs fail.", r->failing_since_ns > 0);
	REPLICA_FAMILY("litevisor_replica_other_writer", "gauge", "1 once a generation this process did not write appeared on the replica: another process replicates this database there.", r->other_writer[0] != 0);
	REPLICA_FAMILY("litevisor_replica_wal_index", "gauge", "WAL index the replica holds.", r->pos.index);
	REPLICA_FAMILY("litevisor_replica_wal_offset_bytes", "gauge", "WAL offset the replica holds.", r->pos.offset);
	REPLICA_FAMILY("litevisor_replica_last_sync_timestamp_seconds", "gauge", "Last sync that shipped something, seconds since the epoch (0 = never); it stands still while nothing is written: alert on litevisor_replica_lag_seconds.", seconds(r->last_sync_ns));
	REPLICA_FAMILY("litevisor_replica_last_snapshot_timestamp_seconds", "gauge", "Newest snapshot of the replica's generation (written, or found at start), seconds since the epoch (0 = none).", seconds(r->last_snapshot_ns));
	REPLICA_FAMILY("litevisor_replica_syncs_total", "counter", "Successful syncs.", r->syncs_total);
	REPLICA_FAMILY("litevisor_replica_sync_errors_total", "counter", "Failed syncs.", r->sync_errors_total);
	REPLICA_FAMILY("litevisor_replica_snapshots_total", "counter", "Snapshots written.", r->snapshots_total);
	REPLICA_FAMILY("litevisor_replica_wal_bytes_total", "counter", "WAL bytes shipped (before compression).", r->wal_bytes_total);
	REPLICA_FAMILY("litevisor_replica_snapshot_bytes_total", "counter", "Snapshot bytes shipped (before compression).", r->snapshot_bytes_total);
	REPLICA_FAMILY("litevisor_replica_retention_deleted_total", "counter", "Objects deleted by retention.", r->retention_deleted_total);
	REPLICA_FAMILY("litevisor_replica_foreign_generations", "gauge", "Generations labelled with another database id, which retention keeps: another database's replica points at this location, or this database lost its local state (meta-path). Counted at each retention check.", r->foreign_generations);

	OP_FAMILY("litevisor_storage_operations_total", "Storage calls, by operation.", count, 1.0);
	OP_FAMILY("litevisor_storage_operation_errors_total", "Storage calls that failed (an answer that the object or replica is not there is no failure, nor a download its reader stopped).", errors, 1.0);
	OP_FAMILY("litevisor_storage_operation_bytes_total", "Payload bytes moved by storage calls.", bytes, 1.0);
	OP_FAMILY("litevisor_storage_operation_seconds_total", "Time spent in storage calls.", latency_ns, 1e9);
}

/* name{k1="v1"[,k2="v2"][,k3="v3"]} v, for Litestream's label names. */
static void lsample(struct text *t, const char *name, const char *k1, const char *v1,
		    const char *k2, const char *v2, const char *k3, const char *v3, double v)
{
	const char *k[3] = { k1, k2, k3 }, *val[3] = { v1, v2, v3 };
	text_printf(t, "%s{", name);
	for (int i = 0; i < 3 && k[i]; i++) {
		text_printf(t, "%s%s=\"", i ? "," : "", k[i]);
		metrics_label_value(t, val[i]);
		text_printf(t, "\"");
	}
	text_printf(t, "}");
	value(t, v);
}

#define LS_DB_FAMILY(NAME_, TYPE_, HELP_, EXPR_)                                          \
	do {                                                                              \
		family(t, NAME_, TYPE_, HELP_);                                           \
		for (size_t i = 0; i < e->ndbs; i++) {                                    \
			const struct db_status *d = &e->dbs[i];                           \
			lsample(t, NAME_, "db", d->path, NULL, NULL, NULL, NULL, (double)(EXPR_)); \
		}                                                                         \
	} while (0)

#define LS_REPLICA_FAMILY(NAME_, TYPE_, HELP_, EXPR_)                                      \
	do {                                                                              \
		family(t, NAME_, TYPE_, HELP_);                                           \
		for (size_t i = 0; i < e->ndbs; i++)                                      \
			for (size_t j = 0; j < e->dbs[i].nreplicas; j++) {                \
				const struct replica_status *r = &e->dbs[i].replicas[j];  \
				if (!r->restore_only)                                     \
					lsample(t, NAME_, "db", e->dbs[i].path, "name",   \
						r->name, NULL, NULL, (double)(EXPR_));    \
			}                                                                 \
	} while (0)

/*
 * Litestream's storage counters are per replica type, summed over databases,
 * with upper-case operation names; they count operations that succeeded (here:
 * calls that were answered, "not there" included), none for HEAD, which it
 * never makes, and payload bytes for GET and PUT only.
 */
static void render_litestream_ops(const struct engine_status *e, struct text *t, bool bytes)
{
	static const enum st_op ops[] = { ST_OP_GET, ST_OP_PUT, ST_OP_DELETE, ST_OP_LIST };
	static const char *const names[] = { "GET", "PUT", "DELETE", "LIST" };
	const char *name = bytes ? "litestream_replica_operation_bytes" : "litestream_replica_operation_total";
	family(t, name, "counter", bytes ? "Payload bytes of replica operations (GET, PUT), by replica type."
					 : "Replica operations answered, by replica type.");
	const char *types[8]; /* "file", "s3" */
	size_t ntypes = 0;
	for (size_t i = 0; i < e->ndbs; i++)
		for (size_t j = 0; j < e->dbs[i].nreplicas; j++) {
			const char *type = e->dbs[i].replicas[j].type;
			size_t n = 0;
			while (n < ntypes && strcmp(types[n], type) != 0)
				n++;
			if (n == ntypes && ntypes < sizeof(types) / sizeof(types[0]))
				types[ntypes++] = type;
		}
	for (size_t n = 0; n < ntypes; n++)
		for (size_t k = 0; k < (bytes ? 2 : 4); k++) {
			uint64_t sum = 0;
			for (size_t i = 0; i < e->ndbs; i++)
				for (size_t j = 0; j < e->dbs[i].nreplicas; j++) {
					const struct st_op_stats_copy *o = &e->dbs[i].replicas[j].ops[ops[k]];
					if (strcmp(e->dbs[i].replicas[j].type, types[n]) == 0)
						sum += bytes ? o->bytes : o->answered;
				}
			lsample(t, name, "replica_type", types[n], "operation", names[k], NULL, NULL,
				(double)sum);
		}
}

/*
 * The series of Litestream v0.3.13 whose meaning litevisor has, under its
 * names, labels and units, so dashboards built on it keep working; the ones
 * left out are listed in docs/supervisor.md. Label db is the database's path.
 */
static void render_litestream(const struct engine_status *e, struct text *t)
{
	static const char *const modes[3] = { "PASSIVE", "RESTART", "TRUNCATE" };
	static const char *const validation[2] = { "ok", "error" };

	LS_DB_FAMILY("litestream_db_size", "gauge", "Size of the database file, in bytes.", d->db_size);
	LS_DB_FAMILY("litestream_wal_size", "gauge", "Size of the WAL file, in bytes.", d->wal_size);
	LS_DB_FAMILY("litestream_total_wal_bytes", "counter", "Bytes copied into the shadow WAL.", d->shadow_bytes_total);
	LS_DB_FAMILY("litestream_shadow_wal_index", "gauge", "Index of the current shadow WAL.", d->pos.index);
	LS_DB_FAMILY("litestream_sync_count", "counter", "Syncs (copy new commits into the shadow WAL, checkpoint when due).", d->syncs_total);
	LS_DB_FAMILY("litestream_sync_error_count", "counter", "Syncs that failed to copy new commits into the shadow WAL.", d->sync_errors_total);
	LS_DB_FAMILY("litestream_sync_seconds", "counter", "Time spent in syncs, in seconds.", seconds(d->sync_ns_total));
	family(t, "litestream_checkpoint_count", "counter", "Checkpoints run, by mode.");
	for (size_t i = 0; i < e->ndbs; i++)
		for (int m = 0; m < 3; m++)
			lsample(t, "litestream_checkpoint_count", "db", e->dbs[i].path, "mode", modes[m],
				NULL, NULL, (double)e->dbs[i].checkpoints_total[m]);

	LS_REPLICA_FAMILY("litestream_replica_wal_bytes", "counter", "WAL bytes shipped to the replica (before compression).", r->wal_bytes_total);
	LS_REPLICA_FAMILY("litestream_replica_wal_index", "gauge", "WAL index the replica holds.", r->pos.index);
	LS_REPLICA_FAMILY("litestream_replica_wal_offset", "gauge", "WAL offset the replica holds.", r->pos.offset);
	/* validation-interval is accepted only as 0: Litestream then shows both at 0 too */
	family(t, "litestream_replica_validation_total", "counter", "Validations run (none: validation-interval is 0).");
	for (size_t i = 0; i < e->ndbs; i++)
		for (size_t j = 0; j < e->dbs[i].nreplicas; j++)
			for (int k = 0; k < 2 && !e->dbs[i].replicas[j].restore_only; k++)
				lsample(t, "litestream_replica_validation_total", "db", e->dbs[i].path,
					"name", e->dbs[i].replicas[j].name, "status", validation[k], 0);
	render_litestream_ops(e, t, false);
	render_litestream_ops(e, t, true);
}

int metrics_render(const struct metrics_view *v, struct text *out)
{
	render_process(v, out);
	if (v->eng && v->eng->ndbs) {
		render_engine(v->eng, out);
		render_litestream(v->eng, out);
	}
	return text_ok(out) ? 0 : -1;
}
