/*
 * metrics.h — /metrics in the Prometheus text format 0.0.4.
 *
 * Naming (prometheus.io/docs/practices/naming): every name starts with
 * litevisor_, values are in base units (_seconds, _bytes), counters end in
 * _total, each family has exactly one HELP and one TYPE line followed by all
 * of its series; labels are db, replica, operation, mode, source, phase.
 * Alongside, from the same copies, the series of Litestream v0.3.13 whose
 * meaning litevisor has, under Litestream's names, labels and units (db is
 * the database's path there), so dashboards built on it keep working.
 * Rendering reads only copies (sup_snapshot, engine_status) and a sample of
 * /proc/self taken by metrics_proc_read, so it never waits on the data path.
 */
#ifndef LITEVISOR_SUP_METRICS_H
#define LITEVISOR_SUP_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "replication/status.h"
#include "supervisor/state.h"
#include "supervisor/text.h"

/* The body's Content-Type. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct metrics_proc {
	double cpu_seconds;       /* user + system */
	int64_t rss_bytes;
	int64_t vsize_bytes;
	int64_t open_fds;         /* -1 if unknown */
	int64_t threads;
};

/* Sample /proc/self (stat, fd). Returns 0, or -1 (fields left at 0/-1). */
int metrics_proc_read(struct metrics_proc *p);

struct metrics_view {
	const struct sup_snapshot *sup;
	const struct engine_status *eng;  /* NULL when no engine runs */
	const struct metrics_proc *proc;
	uint64_t orphans_total;
	int ready;                        /* 1 ready, 0 not */
	bool no_service;                  /* `replicate` without one: no litevisor_service_* */
};

/* Append the whole exposition to out. Returns 0, or -1 if out overflowed. */
int metrics_render(const struct metrics_view *v, struct text *out);

/* Append s to out as a label value (escaping \\, \" and newlines). */
void metrics_label_value(struct text *out, const char *s);

#endif
