/*
 * engine.c — the replication engine's lifecycle (threads: monitor.c per
 * database, replica.c per replica), the final flush and status copies.
 * See engine.h and docs/replication.md.
 */
#include "replication/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/age.h"
#include "replication/catalog.h"
#include "replication/engine_int.h"
#include "replication/opstats.h"
#include "replication/statelock.h"
#include "common/banned.h"

/* Condition variables wait on the monotonic clock (deadlines are monotonic). */
static void cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
}

/*
 * A database whose replicas are all restore-only (a config change: its job
 * moved to the node hosting its only store) is backed up nowhere, though it
 * replicates "fine": say so at the start and in its status (health warns).
 */
static void note_no_writable_replica(struct eng_db *d)
{
	const struct config *cfg = d->eng->cfg;
	char *w = d->stat.no_writable_replica;
	size_t len = sizeof(d->stat.no_writable_replica), at;

	if (d->nreplicas == 0)
		return; /* none configured: nothing was meant to be backed up */
	for (size_t j = 0; j < d->nreplicas; j++)
		if (!d->replicas[j].cfg->restore_only)
			return;
	at = (size_t)snprintf(w, len, "no replica is written to, every one is restore-only:");
	for (size_t j = 0; j < d->nreplicas && at < len; j++) {
		const struct cfg_replica *rc = d->replicas[j].cfg;
		bool here = cfg->node && rc->node && strcmp(cfg->node, rc->node) == 0;
		int n = here ? snprintf(w + at, len - at, "%s %s on this node (%s)", j ? ";" : "",
					d->replicas[j].stat.name, rc->node)
			     : snprintf(w + at, len - at, "%s %s has restore-only: true", j ? ";" : "",
					d->replicas[j].stat.name);
		at += n > 0 ? (size_t)n : 0;
	}
	log_warn("engine", "the database is backed up nowhere: no replica is written to (a node "
		 "hosting its own store only restores from it)", "db=%s why=\"%s\"", d->stat.name, w);
}

struct engine *engine_new(const struct config *cfg)
{
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->cfg = cfg;
	const char *test_max = getenv("LITEVISOR_TEST_MAX_WAL_OFFSET");
	unsigned long long max = test_max ? strtoull(test_max, NULL, 10) : 0;
	e->max_offset = max >= 65536 && max < UINT32_MAX ? max : UINT32_MAX;
	e->dbs = calloc(cfg->ndbs ? cfg->ndbs : 1, sizeof(*e->dbs));
	if (!e->dbs)
		goto fail;
	e->ndbs = cfg->ndbs;
	for (size_t i = 0; i < cfg->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		d->eng = e;
		d->cfg = &cfg->dbs[i];
		d->wal_fd = -1;
		d->state_fd[0] = d->state_fd[1] = -1;
		d->sh.fd = -1;
		d->share.fd = -1;
		d->watch.ifd = d->watch.efd = -1;
		pthread_mutex_init(&d->mu, NULL);
		pthread_mutex_init(&d->id_mu, NULL);
		cond_init_mono(&d->cond);
	}
	for (size_t i = 0; i < cfg->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		const struct cfg_db *c = d->cfg;
		localstate_dir(c, d->dir, sizeof(d->dir));
		snprintf(d->stat.name, sizeof(d->stat.name), "%s", c->name ? c->name : c->path);
		snprintf(d->stat.path, sizeof(d->stat.path), "%s", c->path);
		snprintf(d->stat.state, sizeof(d->stat.state), "starting");
		d->replicas = calloc(c->nreplicas ? c->nreplicas : 1, sizeof(*d->replicas));
		if (!d->replicas)
			goto fail;
		d->nreplicas = c->nreplicas;
		for (size_t j = 0; j < c->nreplicas; j++)
			d->replicas[j].kept.fd = -1; /* engine_free closes it: not fd 0 (QA132 O1) */
		for (size_t j = 0; j < c->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			const struct cfg_replica *rc = &c->replicas[j];
			struct st_error err = { 0 };
			r->db = d;
			r->cfg = rc;
			cond_init_mono(&r->cond);
			pthread_mutex_init(&r->rec_mu, NULL);
			snprintf(r->stat.name, sizeof(r->stat.name), "%s", rc->name ? rc->name : "");
			snprintf(r->stat.type, sizeof(r->stat.type), "%s",
				 rc->type == REPLICA_S3 ? "s3" : "file");
			r->stat.restore_only = rc->restore_only;
			r->restore_ops = opstats_slot(c, rc);
			int64_t si = rc->sync_interval_ms;
			r->stat.max_lag_ms = (si * 3 > 2000 ? si * 3 : 2000) + d->cfg->monitor_interval_ms;
			if (rc->restore_only) {
				/* described as a written replica is (its server, bucket and path);
				 * opening one does no I/O */
				struct storage *st = storage_open(rc, &err);
				snprintf(r->stat.description, sizeof(r->stat.description), "%s",
					 st && st->description ? st->description
					 : rc->url ? rc->url : rc->path ? rc->path : "");
				storage_free(st);
				continue;
			}
			if (rc->age.set && rc->age.nrecipients == 0) {
				/* Litestream would write it unencrypted, then fail to read it back */
				log_error("engine", "cannot write to the replica: its age: has identities "
					  "but no recipients to encrypt for (add recipients:, or make it "
					  "restore-only)", "db=%s replica=%s", d->stat.name, r->stat.name);
				goto fail;
			}
			r->st = storage_open(rc, &err);
			if (!r->st) {
				log_error("engine", "cannot open replica", "db=%s replica=%s err=\"%s\"",
					  d->stat.name, r->stat.name, err.message);
				goto fail;
			}
			/* a file replica's objects as readable as the database, by its owner */
			if (storage_set_like(r->st, c->path) < 0) {
				log_error("engine", "cannot open replica", "db=%s replica=%s err=\"out of "
					  "memory\"", d->stat.name, r->stat.name);
				goto fail;
			}
			if (rc->age.set && !age_keys_read_back(&r->st->age)) {
				/* it could write, but not read its last segment back at the next start */
				log_error("engine", "cannot write to the replica: none of its age: "
					  "identities belongs to one of its recipients, so what it writes "
					  "could not be read back", "db=%s replica=%s", d->stat.name,
					  r->stat.name);
				goto fail;
			}
			snprintf(r->stat.description, sizeof(r->stat.description), "%s",
				 r->st->description ? r->st->description : "");
		}
		note_no_writable_replica(d);
		/* not at engine_start: the status shows it from its first copy (restore runs between) */
		failrec_load(d);
	}
	return e;
fail:
	engine_free(e);
	return NULL;
}

void engine_note_restore(struct engine *e, size_t db_index, const char *source,
			 const char *result, int64_t duration_ms, const struct wal_pos *pos)
{
	if (!e || db_index >= e->ndbs)
		return;
	struct eng_db *d = &e->dbs[db_index];
	pthread_mutex_lock(&d->mu);
	snprintf(d->stat.restore_source, sizeof(d->stat.restore_source), "%s", source ? source : "");
	snprintf(d->stat.restore_result, sizeof(d->stat.restore_result), "%s", result ? result : "");
	d->stat.restore_duration_ms = duration_ms;
	if (pos)
		d->stat.restore_pos = *pos;
	pthread_mutex_unlock(&d->mu);
}

int eng_take_state(struct eng_db *d, char *holder, size_t holderlen)
{
	if (d->state_fd[0] >= 0 || d->state_fd[1] >= 0)
		return 0;
	switch (statelock_take(d->cfg, d->dir, d->state_fd, holder, holderlen)) {
	case STATELOCK_TAKEN:
	case STATELOCK_NO_DIR:
		return 0;
	case STATELOCK_HELD:
		return 1;
	default:
		return -1;
	}
}

int engine_lock(struct engine *e)
{
	int64_t end = clock_mono_ns() + ENG_LOCK_WAIT_MS * NS_PER_MS;
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		char holder[320];
		int rc = eng_take_state(d, holder, sizeof(holder));
		/*
		 * The holder may be on its way out: a hand-over on one host (the next
		 * writer gets the Consul lock after the last one's flush, before its
		 * threads have stopped and it has exited). Give it that long.
		 */
		while (rc > 0 && clock_mono_ns() < end) {
			usleep(100 * 1000);
			rc = eng_take_state(d, holder, sizeof(holder));
		}
		if (rc > 0)
			log_error("engine", "the database's state directory is in use by another litevisor "
				  "process (two jobs with one meta-path, or a second litevisor on this "
				  "database): not restoring or replicating it", "db=%s dir=\"%s\" "
				  "holder=\"%s\"", d->stat.name, d->dir, holder[0] ? holder : "unknown");
		if (rc != 0)
			return -1;
	}
	return 0;
}

int engine_start(struct engine *e)
{
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		if (watch_init(&d->watch, d->cfg->path) < 0)
			return -1;
		replica_count_closed_records(d);
		int rc = pthread_create(&d->thread, NULL, monitor_thread, d);
		if (rc != 0) {
			log_error("engine", "cannot start thread", "db=%s err=\"%s\"", d->stat.name,
				  strerror(rc));
			return -1;
		}
		d->started = true;
		for (size_t j = 0; j < d->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			if (!r->st)
				continue;
			if ((rc = pthread_create(&r->thread, NULL, replica_thread, r)) != 0) {
				log_error("engine", "cannot start thread", "db=%s replica=%s err=\"%s\"",
					  d->stat.name, r->stat.name, strerror(rc));
				return -1;
			}
			r->started = true;
		}
	}
	e->started = true;
	return 0;
}

static int64_t remaining_ms(int64_t end_ns)
{
	int64_t left = (end_ns - clock_mono_ns()) / NS_PER_MS;
	return left > 0 ? left : 0;
}

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ms > 100)
		ms = 100; /* re-check often: the condition may be signalled on another cond */
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_cond_timedwait(c, m, &ts);
}

bool engine_wait_looked(struct engine *e, int64_t timeout_ms)
{
	int64_t end = clock_mono_ns() + timeout_ms * NS_PER_MS;
	bool all = true;
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		if (!d->started)
			continue;
		pthread_mutex_lock(&d->mu);
		while (!d->looked && remaining_ms(end) > 0)
			timed_wait(&d->cond, &d->mu, remaining_ms(end));
		all = all && d->looked;
		pthread_mutex_unlock(&d->mu);
	}
	return all;
}

bool engine_wait_checked(struct engine *e, int64_t timeout_ms)
{
	int64_t end = clock_mono_ns() + timeout_ms * NS_PER_MS;
	bool refused = false;
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		if (!d->started)
			continue;
		pthread_mutex_lock(&d->mu);
		while (d->ready && d->older_pending > 0 && !d->older_req &&
		       clock_mono_ns() < d->older_deadline_mono && remaining_ms(end) > 0)
			timed_wait(&d->cond, &d->mu, remaining_ms(end));
		refused = refused || d->older_req;
		pthread_mutex_unlock(&d->mu);
	}
	return refused;
}

/* How often a final flush looks at every database while it waits (ms). */
#define FLUSH_POLL_MS 50

/*
 * Is d's WAL being shipped, so its replicas can be brought to its end? An
 * error is logged and *rc set when not (mu held).
 */
static bool flush_shippable(struct eng_db *d, int *rc)
{
	if (!d->ready) {
		/* nothing to ship is fine only when there is no database yet */
		if (strcmp(d->stat.state, ENG_STATE_WAITING) != 0) {
			log_error("engine", "final flush incomplete: the database was not being "
				  "replicated", "db=%s state=\"%s\"", d->stat.name, d->stat.state);
			*rc = -1;
		}
		return false;
	}
	if (!d->stat.replicating && strcmp(d->stat.state, ENG_STATE_WAITING) != 0) {
		/*
		 * Replication of it stopped (it left WAL mode, say) while the
		 * database lives on: what it holds since is on no replica, and
		 * no replica may be marked closed at where it stopped.
		 */
		log_error("engine", "final flush incomplete: replication of the database had "
			  "stopped; its replicas hold it only up to where it stopped",
			  "db=%s state=\"%s\"", d->stat.name, d->stat.state);
		*rc = -1;
		return false;
	}
	return true;
}

/*
 * Has the final flush settled r (mu held)? Its own thread writes the closed
 * mark (replica.c) and says when it has; where no mark is due (the shadow's
 * end is not the database's) holding the target is enough.
 */
static bool flush_settled(struct eng_db *d, struct eng_replica *r)
{
	if (d->flush_closing)
		return r->close_done;
	if (!replica_holds(r, &d->flush_target, true))
		return false;
	const struct wal_pos *t = &d->flush_target;
	/* the shadow's end is not the database's: no closed mark (a hand-over) here */
	log_warn("engine", "final flush: the replica holds all that was copied, not "
		 "the commits that could not be", "db=%s replica=%s position=%s/%08x/%08x",
		 d->stat.name, r->stat.name, t->generation, t->index, t->offset);
	return true;
}

int engine_flush(struct engine *e, int64_t deadline_ms)
{
	int64_t end = clock_mono_ns() + deadline_ms * NS_PER_MS;
	int rc = 0;

	if (!e || !e->started)
		return 0;
	/*
	 * 1. one more sync of every WAL. A database with no replicas has
	 * nothing to flush, whatever its state (a directory where it should be
	 * is said at the start, not as a flush incomplete at every stop).
	 */
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		if (d->nreplicas == 0)
			continue;
		pthread_mutex_lock(&d->mu);
		uint64_t want = d->sync_seq + 2; /* a full pass that started after this call */
		d->sync_req = want;
		d->urgent_seq = want;
		watch_wake(&d->watch);
		while (d->sync_seq < want && remaining_ms(end) > 0)
			timed_wait(&d->cond, &d->mu, remaining_ms(end));
		d->flush_unsynced = d->sync_seq < want;
		if (d->flush_unsynced) {
			log_error("engine", "final flush: the WAL could not be synced in time", "db=%s",
				  d->stat.name);
			rc = -1;
		} else if (d->stat.sync_failing_since_mono_ns) {
			/* the replicas can reach the shadow's end, but that is not the WAL's */
			log_error("engine", "final flush incomplete: new commits could not be copied into "
				  "the shadow WAL, no replica has them", "db=%s error=\"%s\"",
				  d->stat.name, d->stat.sync_error);
			rc = -1;
		}
		pthread_mutex_unlock(&d->mu);
	}
	/*
	 * 2. every replica ships up to that point, in parallel (each its own
	 * thread), and then, where the shadow's end is the database's, writes its
	 * closed mark (replica.c: not from here, where it could land before a
	 * segment still on its way)
	 */
	atomic_fetch_add(&e->flush_seq, 1);
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		pthread_mutex_lock(&d->mu);
		d->flush_deadline_ns = end;
		d->flush_skip = d->nreplicas == 0 || !flush_shippable(d, &rc);
		if (!d->flush_skip)
			replica_target(d, &d->flush_target);
		d->flush_closing = !d->flush_skip && !d->stat.sync_failing_since_mono_ns && !d->flush_unsynced;
		for (size_t j = 0; j < d->nreplicas; j++)
			d->replicas[j].flush_handled = !d->replicas[j].st;
		monitor_wake_replicas(d);
		pthread_mutex_unlock(&d->mu);
	}
	/* 3. wait for every replica of every database, until the deadline */
	for (;;) {
		struct eng_db *wait_on = NULL;
		for (size_t i = 0; i < e->ndbs; i++) {
			struct eng_db *d = &e->dbs[i];
			if (d->flush_skip)
				continue;
			pthread_mutex_lock(&d->mu);
			for (size_t j = 0; j < d->nreplicas; j++) {
				struct eng_replica *r = &d->replicas[j];
				if (!r->flush_handled && !(r->flush_handled = flush_settled(d, r)))
					wait_on = wait_on ? wait_on : d;
			}
			pthread_mutex_unlock(&d->mu);
		}
		if (!wait_on || remaining_ms(end) <= 0)
			break;
		/* woken by its replicas; another database's are looked at within the slice */
		int64_t slice = remaining_ms(end);
		pthread_mutex_lock(&wait_on->mu);
		timed_wait(&wait_on->cond, &wait_on->mu, slice < FLUSH_POLL_MS ? slice : FLUSH_POLL_MS);
		pthread_mutex_unlock(&wait_on->mu);
	}
	/*
	 * 4. at the deadline: a replica that holds every commit but was still
	 * busy (a snapshot it owed) has them all and no mark; one whose mark is
	 * on its way reports its own outcome; the others lack commits
	 */
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		if (d->flush_skip)
			continue;
		pthread_mutex_lock(&d->mu);
		for (size_t j = 0; j < d->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			const struct wal_pos *t = &d->flush_target;
			if (r->flush_handled || r->closed)
				continue;
			if (replica_holds(r, t, false)) {
				log_warn("engine", "final flush: the replica holds every commit, but no "
					 "closed mark could be written in time", "db=%s replica=%s "
					 "position=%s/%08x/%08x", d->stat.name, r->stat.name,
					 r->pos.generation, r->pos.index, r->pos.offset);
				continue;
			}
			char have[64] = "nothing", busy[120], none[160];
			if (r->pos_known && r->pos.generation[0])
				snprintf(have, sizeof(have), "%s/%08x/%08x", r->pos.generation,
					 r->pos.index, r->pos.offset);
			/* not failing, but stuck in a call (its retries said at debug): which (QA167 O2) */
			if (r->st && storage_under_way(r->st, clock_mono_ns(), busy, sizeof(busy)))
				snprintf(none, sizeof(none), "none (not failing: out of time; %s)", busy);
			else
				snprintf(none, sizeof(none), "none (not failing: out of time)");
			/* its failure may have been said minutes ago, or at debug (QA148 O3); one it
			 * recovered from is no cause (QA150 O5) */
			log_error("engine", "final flush incomplete", "db=%s replica=%s have=%s "
				  "want=%s/%08x/%08x last_error=\"%s\"", d->stat.name, r->stat.name, have,
				  t->generation, t->index, t->offset,
				  r->stat.failing_since_ns && r->stat.last_error[0] ? r->stat.last_error :
				  none);
			r->flush_failed_ns = clock_wall_ns();
			rc = -1;
		}
		pthread_mutex_unlock(&d->mu);
		/* now, not in engine_free: the exit may not wait for a thread stuck in a request */
		for (size_t j = 0; j < d->nreplicas; j++)
			if (d->replicas[j].flush_failed_ns)
				failrec_note_flush_failed(&d->replicas[j]);
	}
	return rc;
}

/* Add the counters st[0..ST_OP__COUNT) (NULL: none) to rs's. */
static void add_ops(struct replica_status *rs, const struct st_op_stats *st)
{
	for (int k = 0; st && k < ST_OP__COUNT; k++) {
		rs->ops[k].count += atomic_load(&st[k].count);
		rs->ops[k].errors += atomic_load(&st[k].errors);
		rs->ops[k].answered += atomic_load(&st[k].answered);
		rs->ops[k].bytes += atomic_load(&st[k].bytes);
		rs->ops[k].latency_ns += atomic_load(&st[k].latency_ns);
	}
}

int engine_status_get(struct engine *e, struct engine_status *out)
{
	memset(out, 0, sizeof(*out));
	out->taken_ns = clock_wall_ns();
	if (!e)
		return 0;
	out->dbs = calloc(e->ndbs ? e->ndbs : 1, sizeof(*out->dbs));
	if (!out->dbs)
		return -1;
	out->ndbs = e->ndbs;
	int64_t now = clock_mono_ns();
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		struct db_status *o = &out->dbs[i];
		struct replica_status *reps = calloc(d->nreplicas ? d->nreplicas : 1, sizeof(*reps));
		if (!reps) {
			engine_status_release(out);
			return -1;
		}
		pthread_mutex_lock(&d->mu);
		*o = d->stat;
		for (size_t j = 0; j < d->nreplicas; j++) {
			struct eng_replica *r = &d->replicas[j];
			reps[j] = r->stat;
			reps[j].pos = r->pos;
			if (r->st)
				reps[j].lag_seconds = replica_lag_seconds(d, r, now);
			add_ops(&reps[j], r->st ? r->st->stats : NULL);
			add_ops(&reps[j], r->restore_ops);
		}
		pthread_mutex_unlock(&d->mu);
		o->replicas = reps;
		o->nreplicas = d->nreplicas;
	}
	return 0;
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	atomic_store(&e->stop, true);
	for (size_t i = 0; i < e->ndbs; i++) {
		pthread_mutex_lock(&e->dbs[i].mu);
		monitor_wake_replicas(&e->dbs[i]);
		pthread_cond_broadcast(&e->dbs[i].cond); /* waits for a monitor pass (pin_covers) */
		pthread_mutex_unlock(&e->dbs[i].mu);
		watch_wake(&e->dbs[i].watch);
	}
	for (size_t i = 0; i < e->ndbs; i++) {
		struct eng_db *d = &e->dbs[i];
		for (size_t j = 0; j < d->nreplicas; j++)
			if (d->replicas[j].started)
				pthread_join(d->replicas[j].thread, NULL);
		if (d->started)
			pthread_join(d->thread, NULL);
		for (size_t j = 0; j < d->nreplicas; j++) {
			storage_free(d->replicas[j].st);
			snapshot_kept_release(&d->replicas[j]);
			free(d->replicas[j].writers_seen);
			free(d->replicas[j].foreign_warned);
			pthread_cond_destroy(&d->replicas[j].cond);
			pthread_mutex_destroy(&d->replicas[j].rec_mu);
		}
		snapshot_share_close(d);
		for (int k = 0; k < 2; k++)
			if (d->state_fd[k] >= 0)
				close(d->state_fd[k]); /* the lock goes with it */
		free(d->replicas);
		watch_release(&d->watch);
		pthread_cond_destroy(&d->cond);
		pthread_mutex_destroy(&d->mu);
		pthread_mutex_destroy(&d->id_mu);
	}
	free(e->dbs);
	free(e);
}
