/*
 * failrec.c — a replica's failure carried over a restart of litevisor.
 *
 * The lag ring and failing_since live in memory: a new process would count
 * a replica down for days as failing since its own start, with a lag from
 * its own start, so a task restarted more often than health.fail-after (a
 * crash loop, a credential rotation) never trips it. The replica's failure
 * record (localstate.h) keeps both: written when a run of failures starts
 * (and once more when the replica is first found lacking a commit during
 * it), removed when the replica syncs again. Never at each sync; a crash
 * loses at most what the last write did not know.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/engine_int.h"
#include "common/banned.h"

/*
 * Under mu: the monotonic time of the oldest commit r is known to lack, 0
 * if none. With its position known, its lag says it. Before that (a
 * replica failing since the start of this process) the lag counts from the
 * start of the generation, which is no commit: what it surely lacks is
 * every commit of this process, the oldest in the ring (kept while a
 * replica's position is unknown, backlog.c), and what it lacked before.
 */
/*
 * What a replica's record is filed under: its location, so the record follows the
 * replica when unnamed ones are reordered (their default names are positions) or
 * one is renamed; the name where it has none.
 */
static const char *rec_key(const struct eng_replica *r)
{
	/* whole: the status copy is cut at 255 bytes, and two long ones may share those */
	if (r->st && r->st->description && r->st->description[0])
		return r->st->description;
	return r->stat.description[0] ? r->stat.description : r->stat.name;
}

static int64_t lacks_since(const struct eng_db *d, const struct eng_replica *r, int64_t now)
{
	int64_t t = 0;
	if (r->pos_known) {
		double lag = replica_lag_seconds(d, r, now);
		return lag > 0 ? now - (int64_t)(lag * NS_PER_SEC) : 0;
	}
	if (d->ready && d->lag_n)
		t = d->lag[0].mono_ns;
	if (d->stat.sync_failing_since_mono_ns && (!t || d->stat.sync_failing_since_mono_ns < t))
		t = d->stat.sync_failing_since_mono_ns;
	if (r->behind_since_mono && (!t || r->behind_since_mono < t))
		t = r->behind_since_mono;
	if (r->carried && (!t || r->carried_since_mono < t))
		t = r->carried_since_mono;
	return t;
}

static void note_locked(struct eng_replica *r, bool first)
{
	struct eng_db *d = r->db;
	struct failure_record rec = { 0 };
	int64_t wall = clock_wall_ns(), mono = clock_mono_ns();

	pthread_mutex_lock(&d->mu);
	int64_t lacks = lacks_since(d, r, mono);
	rec.failing_since_ns = r->stat.failing_since_ns;
	pthread_mutex_unlock(&d->mu);
	rec.behind_since_ns = lacks ? wall - (mono - lacks) : 0;
	/* once per run of failures, and once more for the first commit it lacks */
	if (!first && r->failure_recorded && (r->recorded_behind_ns || !rec.behind_since_ns))
		return;
	uid_t uid;
	gid_t gid;
	localstate_owner(d->cfg, &uid, &gid);
	if (localstate_write_failure(d->dir, rec_key(r), &rec, uid, gid) < 0) {
		log_warn("replica", "cannot record the failure locally: a restart would count its "
			 "failure and lag from the restart", "db=%s replica=%s error=\"%s\"",
			 d->stat.name, r->stat.name, strerror(errno));
		return;
	}
	r->failure_recorded = true;
	r->recorded_behind_ns = rec.behind_since_ns;
}

void failrec_note(struct eng_replica *r, bool first)
{
	pthread_mutex_lock(&r->rec_mu);
	note_locked(r, first);
	pthread_mutex_unlock(&r->rec_mu);
}

void failrec_note_flush_failed(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	bool first = !r->stat.failing_since_ns;
	if (first) {
		r->stat.failing_since_ns = r->flush_failed_ns;
		r->stat.failing_since_mono_ns = clock_mono_ns();
	}
	pthread_mutex_unlock(&d->mu);
	failrec_note(r, first);
}

static void clear_locked(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	if (!r->failure_recorded)
		return;
	if (localstate_clear_failure(d->dir, rec_key(r)) < 0) {
		log_warn("replica", "cannot remove the failure record: a restart would count the "
			 "replica as failing until its first sync", "db=%s replica=%s error=\"%s\"",
			 d->stat.name, r->stat.name, strerror(errno));
		return;
	}
	r->failure_recorded = false;
	r->recorded_behind_ns = 0;
}

void failrec_clear(struct eng_replica *r)
{
	pthread_mutex_lock(&r->rec_mu);
	clear_locked(r);
	pthread_mutex_unlock(&r->rec_mu);
}

void failrec_load(struct eng_db *d)
{
	const char **names = calloc(d->nreplicas ? d->nreplicas : 1, sizeof(*names));
	size_t n = 0;
	int64_t wall = clock_wall_ns(), mono = clock_mono_ns();

	/* without the list (out of memory), keep them all: pruning is only tidying */
	for (size_t i = 0; names && i < d->nreplicas; i++)
		if (d->replicas[i].st)
			names[n++] = rec_key(&d->replicas[i]);
	int gone = names ? localstate_prune_failures(d->dir, names, n) : 0;
	free(names);
	if (gone > 0)
		log_info("replica", "removed failure records of replicas no longer configured",
			 "db=%s records=%d", d->stat.name, gone);
	for (size_t i = 0; i < d->nreplicas; i++) {
		struct eng_replica *r = &d->replicas[i];
		struct failure_record rec;
		if (!r->st)
			continue;
		if (localstate_read_failure(d->dir, rec_key(r), &rec) < 0) {
			/* none; or no state directory (ENOTDIR: the monitor says what is wrong) */
			if (errno == ENOENT || errno == ENOTDIR)
				continue;
			bool garbage = errno == EINVAL || errno == EFBIG;
			log_warn("replica", garbage ? "ignoring a garbled failure record: the replica's "
				 "failure and lag count from now" : "cannot read the failure record: the "
				 "replica's failure and lag count from now", "db=%s replica=%s dir=\"%s\" "
				 "error=\"%s\"", d->stat.name, r->stat.name, d->dir, strerror(errno));
			if (garbage)
				(void)localstate_clear_failure(d->dir, rec_key(r));
			continue;
		}
		/* a wall clock stepped back since: never a time in the future, nor a negative lag */
		if (rec.failing_since_ns > wall)
			rec.failing_since_ns = wall;
		if (rec.behind_since_ns > wall)
			rec.behind_since_ns = wall;
		pthread_mutex_lock(&d->mu);
		r->stat.failing_since_ns = rec.failing_since_ns;
		r->stat.failing_since_mono_ns = mono - (wall - rec.failing_since_ns);
		r->carried = rec.behind_since_ns > 0;
		r->carried_since_mono = r->carried ? mono - (wall - rec.behind_since_ns) : 0;
		pthread_mutex_unlock(&d->mu);
		r->failure_recorded = true;
		r->recorded_behind_ns = rec.behind_since_ns;
		char since[40];
		log_info("replica", "replica was failing when replication last stopped (a restart, "
			 "or a restore again before the service starts): its failure and lag go on",
			 "db=%s replica=%s failing_since=%s lag_s=%.1f", d->stat.name, r->stat.name,
			 clock_rfc3339(rec.failing_since_ns, since, sizeof(since)),
			 rec.behind_since_ns ? (double)(wall - rec.behind_since_ns) / NS_PER_SEC : 0.0);
	}
}
