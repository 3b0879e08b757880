/* dbs.c — restore, replicate and flush every database for `run` (see dbs.h). */
#include "supervisor/dbs.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/bounded.h"
#include "common/clock.h"
#include "common/log.h"
#include "replication/engine.h"
#include "replication/restore.h"
#include "supervisor/lifecycle.h"
#include "common/banned.h"

struct restore_job {
	struct sup_dbs *d;
	size_t index;
	pthread_t thread;
	bool started;
	int rc;
	struct restore_result res;
};

struct sup_dbs {
	const struct config *cfg;
	pthread_mutex_t mu;      /* engine, against dbs_status's readers while dbs_reset */
	struct engine *engine;   /* NULL when no database is configured */
	struct restore_job *jobs;
	atomic_size_t left;
	int efd;
	int64_t t0;
	bool replicating;
	bool abandoned;          /* an engine dbs_reset could not free in time: _exit only */
	int64_t any_age_ms;      /* dbs_restore_start's: wait for any open generation */
};

struct sup_dbs *dbs_open(const struct config *cfg)
{
	struct sup_dbs *d = calloc(1, sizeof(*d));
	if (!d) {
		log_error("supervisor", "out of memory", NULL);
		return NULL;
	}
	d->cfg = cfg;
	pthread_mutex_init(&d->mu, NULL);
	d->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->efd < 0) {
		log_error("supervisor", "eventfd failed", "error=\"%s\"", strerror(errno));
		pthread_mutex_destroy(&d->mu);
		free(d);
		return NULL;
	}
	if (cfg->ndbs > 0) {
		d->engine = engine_new(cfg);
		d->jobs = calloc(cfg->ndbs, sizeof(*d->jobs));
		if (!d->engine || !d->jobs) {
			dbs_free(d);
			return NULL;
		}
	}
	return d;
}

int dbs_lock(struct sup_dbs *d)
{
	return d->engine ? engine_lock(d->engine) : 0;
}

static void *restore_main(void *arg)
{
	struct restore_job *j = arg;
	struct sup_dbs *d = j->d;
	j->rc = restore_db_for_run(d->cfg, &d->cfg->dbs[j->index], d->any_age_ms, &j->res);
	if (atomic_fetch_sub(&d->left, 1) == 1) {
		uint64_t one = 1;
		ssize_t n = write(d->efd, &one, sizeof(one));
		(void)n;
	}
	return NULL;
}

int dbs_restore_start(struct sup_dbs *d, int64_t any_age_ms)
{
	d->any_age_ms = any_age_ms;
	/* a restore step again (dbs_reset): the last one's count must not fire at once */
	uint64_t v;
	while (read(d->efd, &v, sizeof(v)) == sizeof(v))
		;
	d->t0 = clock_mono_ms();
	atomic_store(&d->left, d->cfg->ndbs);
	if (d->cfg->ndbs == 0) {
		uint64_t one = 1;
		return write(d->efd, &one, sizeof(one)) == sizeof(one) ? 0 : -1;
	}
	for (size_t i = 0; i < d->cfg->ndbs; i++) {
		struct restore_job *j = &d->jobs[i];
		j->d = d;
		j->index = i;
		log_info("restore", "restoring database", "db=%s path=\"%s\"", d->cfg->dbs[i].name,
			 d->cfg->dbs[i].path);
		int rc = pthread_create(&j->thread, NULL, restore_main, j);
		if (rc != 0) {
			log_error("restore", "cannot start restore thread", "error=\"%s\"", strerror(rc));
			/* Account for the jobs that will never run so the fd still fires. */
			if (atomic_fetch_sub(&d->left, d->cfg->ndbs - i) == d->cfg->ndbs - i) {
				uint64_t one = 1;
				ssize_t n = write(d->efd, &one, sizeof(one));
				(void)n;
			}
			return -1;
		}
		j->started = true;
	}
	return 0;
}

int dbs_restore_fd(const struct sup_dbs *d)
{
	return d->efd;
}

void dbs_restore_abort(const char *why)
{
	restore_abort(why);
}

void dbs_restore_abandon(void)
{
	restore_abandon();
}

int dbs_restore_finish(struct sup_dbs *d, int64_t *duration_ms)
{
	int code = 0;
	for (size_t i = 0; i < d->cfg->ndbs; i++) {
		struct restore_job *j = &d->jobs[i];
		const struct cfg_db *db = &d->cfg->dbs[i];
		if (!j->started) {
			code = SUP_EXIT_TEMPFAIL;
			continue;
		}
		pthread_join(j->thread, NULL);
		j->started = false;
		const char *outcome = restore_outcome_name(j->res.outcome);
		engine_note_restore(d->engine, i, j->res.source, outcome, j->res.duration_ms,
				    &j->res.pos);
		if (j->rc == 0) {
			log_info("restore", "database ready", "db=%s outcome=%s source=%s duration_ms=%lld",
				 db->name, outcome, j->res.source[0] ? j->res.source : "none",
				 (long long)j->res.duration_ms);
		} else if (restore_aborted()) {
			/* stopped (the writer lock lost): nothing starts, whether optional or not */
			log_warn("restore", "database not restored: the restore step was stopped",
				 "db=%s outcome=%s error=\"%s\"", db->name, outcome, j->res.message);
			code = SUP_EXIT_TEMPFAIL;
		} else if (db->optional) {
			log_warn("restore", "optional database not restored; starting without it",
				 "db=%s outcome=%s error=\"%s\"", db->name, outcome, j->res.message);
		} else {
			log_error("restore", "required database not restored; not starting the service",
				  "db=%s outcome=%s error=\"%s\"", db->name, outcome, j->res.message);
			code = SUP_EXIT_TEMPFAIL;
		}
	}
	*duration_ms = clock_mono_ms() - d->t0;
	return code;
}

int dbs_start(struct sup_dbs *d)
{
	if (!d->engine)
		return 0;
	if (engine_start(d->engine) < 0)
		return -1;
	d->replicating = true;
	if (!engine_wait_looked(d->engine, DBS_LOOK_TIMEOUT_MS))
		log_warn("supervisor", "starting the service before replication has looked at every "
			 "database", "waited_ms=%d", DBS_LOOK_TIMEOUT_MS);
	return 0;
}

bool dbs_refused(struct sup_dbs *d)
{
	/* as long as the restore's probe gives a replica to answer: a slow one is not waited for */
	int64_t wait = d->cfg->restore.probe_timeout_ms > 0 ? d->cfg->restore.probe_timeout_ms : 1000;
	return d->engine && d->replicating && engine_wait_checked(d->engine, wait);
}

static void engine_free_main(void *e)
{
	engine_free(e);
}

int dbs_reset(struct sup_dbs *d)
{
	if (!d->engine)
		return 0;
	pthread_mutex_lock(&d->mu);
	struct engine *old = d->engine;
	d->engine = NULL;
	d->replicating = false;
	pthread_mutex_unlock(&d->mu);
	/* its locks go with it, and are taken again below; a replica stuck in a call is not waited for */
	if (bounded_run(engine_free_main, old, DBS_RESET_TIMEOUT_MS) < 0) {
		log_error("supervisor", "replication did not stop in time to restore again (a replica "
			  "that does not answer?): the refusal is recorded, the next start restores",
			  "waited_ms=%d", DBS_RESET_TIMEOUT_MS);
		d->abandoned = true;
		return -1;
	}
	struct engine *e = engine_new(d->cfg);
	if (!e)
		return -1;
	pthread_mutex_lock(&d->mu);
	d->engine = e;
	pthread_mutex_unlock(&d->mu);
	return engine_lock(e);
}

int dbs_status(void *ctx, struct engine_status *out)
{
	struct sup_dbs *d = ctx;
	pthread_mutex_lock(&d->mu);
	int rc = d->engine ? engine_status_get(d->engine, out) : 1;
	pthread_mutex_unlock(&d->mu);
	return rc;
}

int dbs_flush(struct sup_dbs *d, int64_t deadline_ms)
{
	if (!d->engine || !d->replicating)
		return 0;
	int64_t t0 = clock_mono_ms();
	int rc = engine_flush(d->engine, deadline_ms);
	log_event(rc == 0 ? LOG_INFO : LOG_WARN, "supervisor",
		  rc == 0 ? "final flush done" : "final flush incomplete",
		  "duration_ms=%lld deadline_ms=%lld", (long long)(clock_mono_ms() - t0),
		  (long long)deadline_ms);
	return rc;
}

void dbs_free(struct sup_dbs *d)
{
	if (!d)
		return;
	for (size_t i = 0; d->jobs && i < d->cfg->ndbs; i++)
		if (d->jobs[i].started)
			pthread_join(d->jobs[i].thread, NULL);
	/* a probe the restore decision left behind may still be inside OpenSSL: join it */
	restore_probes_wait(d->cfg->restore.probe_timeout_ms + 500);
	engine_free(d->engine);
	free(d->jobs);
	if (d->efd >= 0)
		close(d->efd);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

static void free_main(void *d)
{
	dbs_free(d);
}

int dbs_close(struct sup_dbs *d, int64_t deadline_ms)
{
	if (!d)
		return 0;
	if (d->abandoned)
		return -1;
	if (!d->engine) {
		dbs_free(d);
		return 0;
	}
	if (bounded_run(free_main, d, deadline_ms) < 0) {
		log_warn("supervisor", "replication threads did not stop in time; leaving them to the exit",
			 "waited_ms=%lld", (long long)deadline_ms);
		return -1;
	}
	return 0;
}
