/*
 * backlog.c — what the replicas still need from the shadow WAL: delete shadow
 * files below every live replica's index, enforce the backlog cap, trim the
 * commit-time ring of the lag gauge. Runs on the database's monitor thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/layout.h"
#include "common/banned.h"

/*
 * A first look at a replica under way this long counts as failed for the
 * cap; so does a replica whose calls have moved nothing for as long (a hard
 * NFS mount whose server went away: a write that never returns, QA114 D5).
 */
#define LOOK_SLOW_NS (10 * NS_PER_SEC)

/* Replicas' lowest index still needed (UINT32_MAX: none known). Under mu. */
static uint32_t needed_index(struct eng_db *d, bool *unknown)
{
	uint32_t min = UINT32_MAX;
	*unknown = false;
	for (size_t i = 0; i < d->nreplicas; i++) {
		struct eng_replica *r = &d->replicas[i];
		if (!r->st || r->dropped)
			continue;
		/* a snapshot on its way restarts the replica at its index (a slow upload) */
		if (!strcmp(r->snap_hold_gen, d->gen) && r->snap_hold_index < min)
			min = r->snap_hold_index;
		if (!r->pos_known) {
			*unknown = true;
			continue;
		}
		if (strcmp(r->pos.generation, d->gen) != 0)
			continue;
		if (r->pos.index < min)
			min = r->pos.index;
	}
	/* the replicas taking the shared snapshot will ship from its index */
	if (d->share.state == SHARE_READY && !strcmp(d->share.gen, d->gen) && d->share.index < min)
		min = d->share.index;
	return min;
}

/* Bytes of shadow WAL a replica at pos still has to ship (monitor thread). */
static int64_t behind_bytes(struct eng_db *d, const struct wal_pos *pos, uint32_t cur)
{
	int64_t n = 0;
	for (uint32_t i = pos->index; i <= cur; i++) {
		int64_t sz = shadow_file_size(&d->sh, i);
		if (sz > 0)
			n += sz;
		if (i == pos->index)
			n -= sz > (int64_t)pos->offset ? (int64_t)pos->offset : (sz > 0 ? sz : 0);
		if (i == UINT32_MAX)
			break;
	}
	return n;
}

/*
 * Drop r's backlog (under mu): it gets a fresh snapshot when reached. The
 * commit times of what it lacks go with the shadow files, so its lag is kept
 * counting from the oldest of them until that snapshot (engine status).
 */
static void drop_backlog(struct eng_db *d, struct eng_replica *r)
{
	int64_t now = clock_mono_ns();
	double lag = replica_lag_seconds(d, r, now);
	r->behind_since_mono = now - (int64_t)(lag * NS_PER_SEC);
	memset(&r->behind_until, 0, sizeof(r->behind_until)); /* until a snapshot */
	r->dropped = true;
	r->need_snapshot = true;
	r->gap = true; /* its next snapshot comes first, before any WAL (QA126 O3) */
}

/* Say that r, which is behind by bytes, had its backlog dropped, and why. */
static void log_dropped(const struct eng_db *d, const struct eng_replica *r, int64_t bytes,
			const char *why)
{
	log_error("engine", "replica backlog over the cap: dropping its backlog; when back, it goes on from a snapshot it stored, or takes a fresh one",
		  "db=%s replica=%s backlog_bytes=%lld cap=%lld why=\"%s\"", d->stat.name,
		  r->cfg->name, (long long)bytes, (long long)d->cfg->max_backlog_bytes, why);
}

/* Delete shadow files nobody needs; enforce the backlog cap. */
void backlog_cleanup(struct eng_db *d)
{
	bool unknown;
	int64_t backlog = 0;
	struct eng_replica *worst = NULL;
	struct wal_pos pos[LOCALSTATE_MAX_REPLICAS];
	bool failing[LOCALSTATE_MAX_REPLICAS];
	size_t n = 0;
	int64_t now = clock_mono_ns();

	pthread_mutex_lock(&d->mu);
	int unused_share = snapshot_share_settle(d);
	uint32_t min = needed_index(d, &unknown);
	uint32_t cur = d->index;
	for (size_t i = 0; i < d->nreplicas && n < LOCALSTATE_MAX_REPLICAS; i++) {
		struct eng_replica *r = &d->replicas[i];
		if (r->st && !r->dropped && r->pos_known && !strcmp(r->pos.generation, d->gen)) {
			/* failing in this process: a record carried from the last run says
			 * nothing of a replica catching up now (QA112 D1) */
			failing[n] = r->failed_here || storage_stalled(r->st, now, LOOK_SLOW_NS);
			pos[n++] = r->pos;
		}
	}
	pthread_mutex_unlock(&d->mu);
	if (unused_share >= 0)
		close(unused_share);
	if (min > cur)
		min = cur;
	/*
	 * The backlog is what the replica furthest behind still needs. Only a
	 * failing replica is dropped for it: one that answers is catching up (a
	 * fresh snapshot restarts at its index, whose WAL may be large), and
	 * dropping it again would loop snapshot after snapshot.
	 */
	int64_t worst_bytes = -1; /* of the failing replica furthest behind */
	struct wal_pos worst_pos = { 0 };
	for (size_t i = 0; i < n; i++) {
		int64_t b = behind_bytes(d, &pos[i], cur);
		if (b > backlog)
			backlog = b;
		if (failing[i] && b > worst_bytes) {
			worst_bytes = b;
			worst_pos = pos[i];
		}
	}
	if (unknown) {
		/* a replica never reached yet holds everything back since we started */
		struct wal_pos from = { .index = d->min_index };
		int64_t all = behind_bytes(d, &from, cur);
		if (all > backlog)
			backlog = all;
	}
	pthread_mutex_lock(&d->mu);
	if (unknown && backlog > d->cfg->max_backlog_bytes && d->cfg->max_backlog_bytes > 0) {
		for (size_t i = 0; i < d->nreplicas; i++) {
			struct eng_replica *r = &d->replicas[i];
			/*
			 * One that has not looked yet (a start) is not unreachable: it may
			 * answer at once; nor is one failing only by the record of the last
			 * run (QA111 D1). One whose look has gone on for LOOK_SLOW_NS is:
			 * a server that never answers takes its retries' half minute to
			 * fail, a hung hard NFS mount for ever (QA112 O4).
			 */
			bool slow = r->st && ((r->look_since_mono &&
					       now - r->look_since_mono > LOOK_SLOW_NS) ||
					      storage_stalled(r->st, now, LOOK_SLOW_NS));
			if (r->st && !r->dropped && !r->pos_known && (r->failed_here || slow)) {
				drop_backlog(d, r);
				log_error("engine", "unreachable replica over the backlog cap: it gets a fresh snapshot when reached",
					  "db=%s replica=%s backlog_bytes=%lld cap=%lld why=\"%s\"",
					  d->stat.name, r->cfg->name, (long long)backlog,
					  (long long)d->cfg->max_backlog_bytes, r->failed_here ?
					  "a call to it failed, and its position is not known" :
					  "its look at its position has gone on for 10 s, or its calls "
					  "have moved nothing for as long");
			}
		}
		worst_bytes = -1; /* those were the cause; re-evaluate the others next round */
	}
	/*
	 * A snapshot on its way keeps the shadow from its index (needed_index),
	 * also one into a new generation, where its replica's position is not
	 * yet: stalled for 10 s (a hung mount), it counts like a failing
	 * replica's backlog (QA124 D1).
	 */
	for (size_t i = 0; i < d->nreplicas && d->cfg->max_backlog_bytes > 0; i++) {
		struct eng_replica *r = &d->replicas[i];
		if (!r->st || r->dropped || strcmp(r->snap_hold_gen, d->gen) != 0 ||
		    !storage_stalled(r->st, now, LOOK_SLOW_NS))
			continue;
		struct wal_pos from = { .index = r->snap_hold_index };
		pthread_mutex_unlock(&d->mu);
		int64_t held = behind_bytes(d, &from, cur);
		pthread_mutex_lock(&d->mu);
		if (held > backlog)
			backlog = held;
		if (held <= d->cfg->max_backlog_bytes || r->dropped || !r->snap_hold_gen[0])
			continue;
		drop_backlog(d, r);
		log_dropped(d, r, held, "a snapshot to it has moved nothing for 10 s (a mount that hangs?)");
	}
	d->stat.backlog_bytes = backlog;
	if (worst_bytes > d->cfg->max_backlog_bytes && d->cfg->max_backlog_bytes > 0) {
		/* drop the replica furthest behind: it gets a fresh snapshot when it is back */
		for (size_t i = 0; i < d->nreplicas && !worst; i++) {
			struct eng_replica *r = &d->replicas[i];
			if (r->st && !r->dropped && r->pos_known && !strcmp(r->pos.generation, d->gen) &&
			    (r->failed_here || storage_stalled(r->st, now, LOOK_SLOW_NS)) &&
			    wal_pos_cmp(&r->pos, &worst_pos) == 0)
				worst = r;
		}
		if (worst) {
			drop_backlog(d, worst);
			log_dropped(d, worst, backlog, worst->failed_here ? "a call to it failed" :
				    "a call to it has moved nothing for 10 s (a mount that hangs?)");
		}
	}
	/* commits every live replica holds no longer matter for the lag gauge */
	size_t drop = 0;
	for (; drop < d->lag_n; drop++) {
		bool all = true;
		for (size_t i = 0; i < d->nreplicas && all; i++) {
			struct eng_replica *r = &d->replicas[i];
			if (!r->st || r->dropped)
				continue;
			struct wal_pos p = { .index = d->lag[drop].index, .offset = (uint32_t)d->lag[drop].end };
			if (!r->pos_known || strcmp(r->pos.generation, d->gen) != 0 ||
			    wal_pos_cmp(&r->pos, &p) < 0)
				all = false;
		}
		if (!all)
			break;
	}
	if (drop) {
		memmove(d->lag, d->lag + drop, (d->lag_n - drop) * sizeof(d->lag[0]));
		d->lag_n -= drop;
	}
	pthread_mutex_unlock(&d->mu);
	if (!unknown && min > d->min_index) {
		shadow_remove_below(&d->sh, min);
		pthread_mutex_lock(&d->mu);
		d->min_index = min;
		pthread_mutex_unlock(&d->mu);
	}
}
