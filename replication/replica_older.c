/*
 * replica_older.c — the "older database" gate: before any replica of a
 * database writes, each that may hold another node's newer data looks at
 * it once (replica_look.c), and one that finds the database older than
 * that data refuses it (restore.existing: newest-wins): a new generation
 * from an older file would win every later restore and hide the newer data.
 * The others wait for those looks, for REPLICA_OLDER_WAIT_MS at most.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/engine_int.h"
#include "replication/replica_history_int.h"
#include "replication/replica_older_int.h"
#include "common/banned.h"

/*
 * How long the replicas wait for each other's first look (every replica's
 * under restore.existing newest-wins; else those holding a closed record or
 * named by the restored marker). As long as a restore's probe gives
 * a replica to answer (its connect timeout, a listing or two): one that takes longer is slow or not
 * answering (a blackholed server retries its listing for half a minute),
 * and holding every healthy replica for it lost the commits of a run
 * stopped meanwhile (QA22). Its look goes on, and still stops the
 * database if it finds it older.
 */
#define REPLICA_OLDER_WAIT_MS 3000

void replica_count_closed_records(struct eng_db *d)
{
	struct wal_pos at;
	struct restored_marker m;
	/* a replica the restored marker names looks for a newer generation too (QA87 F3) */
	bool marker = d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS &&
		      localstate_read_restored(d->dir, &m) == 0;
	/*
	 * Any replica may find the database older (its previous record, a
	 * generation written after its last object:
	 * replica_history_newer_elsewhere), not only those its records name:
	 * while one has not looked, a new generation
	 * written to another hid the newer data the refusal protects, and won
	 * the next restore (QA104 D7). Not at a first start (no generation, no
	 * previous record in the state): a new generation, listed nowhere, is
	 * older than nothing, and a replica down then held the others 3 s.
	 */
	bool newest = d->eng->cfg && d->eng->cfg->restore.existing == EXISTING_NEWEST_WINS;
	/* with no history in the state (a first start), a new generation: nothing to refuse */
	char gen[LAYOUT_GEN_LEN + 1];
	bool history = localstate_read_generation(d->dir, gen) == 0 ||
		       localstate_read_previous(d->dir, &at, NULL) == 0;
	d->older_pending = 0;
	for (size_t i = 0; i < d->nreplicas; i++) {
		struct eng_replica *r = &d->replicas[i];
		bool closed = r->st && replica_history_read_closed(r, &at) == 0;
		r->older_check = r->st && (closed || (newest && history));
		if (r->st && !closed && errno == EXDEV)
			log_info("replica", "the closed record of this replica was written for "
				 "another location: not used to tell whether another node went on",
				 "db=%s replica=%s location=\"%s\"", d->stat.name, r->stat.name,
				 r->st->description ? r->st->description : "");
		for (size_t k = 0; marker && r->st && k < m.nreplicas; k++)
			if (!strcmp(m.replicas[k], r->stat.name))
				r->older_check = true;
		if (r->older_check)
			d->older_pending++;
	}
	d->older_deadline_mono = INT64_MAX; /* from when the replicas may look */
	d->older_clock_started = false;
}

void replica_older_clock_start(struct eng_db *d)
{
	if (d->older_clock_started)
		return;
	d->older_clock_started = true;
	d->older_deadline_mono = clock_mono_ns() + REPLICA_OLDER_WAIT_MS * NS_PER_MS;
}

/* r has looked at its replica once (whatever it found): one fewer to wait for. */
void replica_older_checked(struct eng_replica *r)
{
	struct eng_db *d = r->db;
	pthread_mutex_lock(&d->mu);
	if (r->older_check) {
		r->older_check = false;
		if (d->older_pending > 0 && --d->older_pending == 0)
			pthread_cond_broadcast(&d->cond);
	}
	pthread_mutex_unlock(&d->mu);
}

/* Under mu: the names of the replicas that have not looked yet, comma-separated. */
void replica_older_pending_names(const struct eng_db *d, char *names, size_t len)
{
	size_t used = 0;
	names[0] = '\0';
	for (size_t i = 0; i < d->nreplicas && used < len; i++)
		if (d->replicas[i].older_check)
			used += (size_t)snprintf(names + used, len - used, "%s%s", used ? "," : "",
						 d->replicas[i].stat.name);
}

/*
 * Under mu: must r wait for another replica's first look before writing?
 * Never in a final flush: the run's commits would stay on this disk only
 * (a database found older has older_req set, and its flush ships nothing).
 */
bool replica_older_gate(struct eng_replica *r, bool flush)
{
	struct eng_db *d = r->db;
	if (d->older_req)
		return true;
	if (d->older_pending == 0 || flush)
		return false;
	if (clock_mono_ns() >= d->older_deadline_mono) {
		if (!d->older_late_logged) {
			char names[512];
			replica_older_pending_names(d, names, sizeof(names));
			d->older_late_logged = true;
			log_warn("replica", "left-behind check: a replica has not looked at its "
				 "data yet; the others replicate without its look",
				 "db=%s waited_ms=%d pending=%zu replicas=\"%s\"", d->stat.name,
				 REPLICA_OLDER_WAIT_MS, d->older_pending, names);
		}
		return false;
	}
	if (!d->older_wait_logged) {
		d->older_wait_logged = true;
		log_info("replica", "replicas wait for the left-behind check: each replica looks "
			 "at its data first",
			 "db=%s pending=%zu max_ms=%d", d->stat.name, d->older_pending,
			 REPLICA_OLDER_WAIT_MS);
	}
	return true;
}

/*
 * The database is older than what the replica holds of its generation (this
 * node shipped all of it at its clean stop, and another node continued the
 * generation since) and restore.existing is newest-wins: replicating it
 * would start a new generation that wins every later restore. The database
 * is not replicated by this process any more (monitor_request_stop_older):
 * it must be restored first, or the policy say keep-local. record: also for
 * the later starts (localstate_write_refused).
 */
void replica_older_refuse_as(struct eng_replica *r, const char *why, bool record)
{
	log_error("replica", "this database is older than the replica's data: another node "
		  "continued its generation since this node last wrote it. Not replicating it: a "
		  "new generation from it would hide the newer data from every restore. Restore "
		  "it: start it under `litevisor run`, whose restore step moves it aside and "
		  "restores, or stop the app, move the database and its -wal/-shm aside and run "
		  "`litevisor restore` (it never overwrites a database); or set "
		  "restore.existing: keep-local to start a new generation from it",
		  "db=%s replica=%s why=\"%s\"",
		  r->db->stat.name, r->stat.name, why);
	replica_note_error(r, "database older than the replica", why);
	/*
	 * For the next starts too: by then the state may have moved on, the file
	 * has not. Written by the first replica to refuse, under id_mu as the
	 * clearing in replica_look_init_position is: two refusing at once
	 * raced on one temp file, and a clearing one could delete what a
	 * refusing one had just written (QA87 F6).
	 */
	struct eng_db *d = r->db;
	uid_t uid;
	gid_t gid;
	localstate_owner(d->cfg, &uid, &gid);
	pthread_mutex_lock(&d->id_mu);
	pthread_mutex_lock(&d->mu);
	bool first = !d->older_req;
	pthread_mutex_unlock(&d->mu);
	if (record && first && localstate_write_refused(d->dir, d->cfg->path, why, uid, gid) < 0)
		log_warn("replica", "cannot record the refusal locally: a restart may not refuse "
			 "the file again", "db=%s error=\"%s\"", d->stat.name, strerror(errno));
	pthread_mutex_lock(&d->mu);
	r->refused = true; /* once: no more listings, no more of these lines */
	monitor_request_stop_older(d);
	pthread_mutex_unlock(&d->mu);
	pthread_mutex_unlock(&d->id_mu);
}

void replica_older_refuse(struct eng_replica *r, const char *why)
{
	replica_older_refuse_as(r, why, true);
}
