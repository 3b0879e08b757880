/*
 * restore_probe.c — ask every candidate, in parallel and under a deadline,
 * what it holds: reachability, round-trip time, generations, and the
 * position its plan would restore to.
 *
 * One thread per candidate. Each storage call gets the time left before the
 * candidate's deadline and no retry, so a server that accepts TCP and never
 * answers costs the probe timeout, not the storage client's retry budget.
 * Reachability is the first request answering within the probe timeout; a
 * candidate that did may take up to the wait timeout to finish (listing many
 * objects, measuring a large last segment), since it may hold the newest data
 * (quorum mode too), and is tried again meanwhile if it is cut off; one still
 * listing when that ends is "unfinished", not unreachable, and rs_choose
 * refuses to restore without it. The caller waits on a condition variable,
 * never longer than the deadline
 * (plus a small grace): a thread still stuck after that is abandoned and
 * frees its own results when it finally returns (the probe set is reference
 * counted for that reason).
 *
 * Where a replica's data ends within its last WAL segment is only known by
 * downloading that segment: rs_measure_ends does it afterwards, for the
 * candidates whose exact end decides something.
 */
#include "replication/restore_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/lineage.h"
#include "replication/localstate.h"
#include "replication/opstats.h"
#include "common/banned.h"

#define PROBE_GRACE_MS 150   /* waiting beyond the deadline for threads to report */
#define PROBE_RETRY_MS 300   /* all/quorum modes: pause between attempts */
#define PROBE_LISTINGS 4     /* generations listed at once per candidate */

struct probe_set {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	bool closed;
	size_t finished;
	size_t ok;
	struct rs_cand *c;       /* the caller's array; written only while !closed */
	size_t n;
	struct rs_probe_opts o;
	struct rs_target t;
	char generation[LAYOUT_GEN_LEN + 1];
	int64_t start_ms, wait_end_ms;
	int64_t measure_end_ms;  /* freshest mode: how long an answering candidate may take */
	size_t measuring;        /* answered the first request, not finished yet */
	int64_t *answered_us;    /* per candidate: its current attempt's first request
				    answered in this many us; -1 while it has not */
};

struct probe_arg {
	struct probe_set *s;
	size_t i;
	struct rs_cand local;
};

/* Threads left running after a decision; joined later (restore_probes_wait). */
static pthread_mutex_t abandoned_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t abandoned[64];
static size_t nabandoned;

static int probes_reap(void)
{
	pthread_mutex_lock(&abandoned_mu);
	for (size_t i = 0; i < nabandoned;) {
		if (pthread_tryjoin_np(abandoned[i], NULL) == 0)
			abandoned[i] = abandoned[--nabandoned];
		else
			i++;
	}
	int n = (int)nabandoned;
	pthread_mutex_unlock(&abandoned_mu);
	return n;
}

int restore_probes_wait(int64_t max_ms)
{
	int64_t end = clock_mono_ms() + max_ms;
	int n;
	while ((n = probes_reap()) > 0 && clock_mono_ms() < end)
		clock_sleep_ms(20);
	return n;
}

static void abandon(pthread_t th)
{
	probes_reap(); /* the ones done since last time */
	pthread_mutex_lock(&abandoned_mu);
	if (nabandoned < sizeof(abandoned) / sizeof(abandoned[0]))
		abandoned[nabandoned++] = th;
	else
		pthread_detach(th); /* pathological: stop tracking, let it clean up alone */
	pthread_mutex_unlock(&abandoned_mu);
}

void rs_cand_release(struct rs_cand *c)
{
	for (size_t i = 0; i < c->ngens; i++)
		catalog_generation_release(&c->gens[i]);
	free(c->gens);
	c->gens = NULL;
	c->ngens = 0;
	rs_plan_release(&c->plan);
	if (c->st)
		opstats_add(c->carried, c->st->stats);
	storage_free(c->st);
	c->st = NULL;
}

/*
 * The call may use what is left until end_ms, retrying within it: a single
 * 503 or reset must not make a replica "unreachable" (a stale one would
 * win the restore); the deadline still bounds a peer that never answers.
 * A refused connection is not retried: nobody listens there now.
 */
static void set_remaining(struct st_call *call, int64_t end_ms)
{
	int64_t left = end_ms - clock_mono_ms();
	call->deadline_ms = left > 1 ? left : 1;
	call->no_retry = false;
	call->fail_refused = true;
}

static int count_write(void *ctx, const void *buf, size_t len)
{
	(void)buf;
	*(uint64_t *)ctx += len;
	return 0;
}

/* Decompressed length of one segment (downloads it). Returns 0 or a negative st_status. */
/* Where an index ends whose last segment is s, len bytes long. */
static uint64_t segment_end(const struct cat_segment *s, uint64_t len)
{
	/* a WAL header alone (a placeholder, wal.h) holds nothing: the index ends at 0 */
	return s->offset == 0 && len == WAL_HEADER_SIZE ? 0 : s->offset + len;
}

static int segment_length(struct storage *st, const char *gen, const struct cat_segment *s,
			  uint64_t *len, const struct st_call *call, struct st_error *err)
{
	struct st_sink counter = { count_write, len };
	*len = 0;
	return catalog_read_segment(st, gen, s->index, s->offset, &counter, call, err);
}

/* Candidate i's attempt answered its first request in rtt_us: it is measured, not dropped. */
static void mark_answered(struct probe_set *s, size_t i, int64_t rtt_us, bool *live)
{
	pthread_mutex_lock(&s->mu);
	if (!*live)
		s->measuring++;
	s->answered_us[i] = rtt_us;
	pthread_mutex_unlock(&s->mu);
	*live = true;
}

/* A new attempt of candidate i: it has not answered yet. */
static void mark_attempt(struct probe_set *s, size_t i)
{
	pthread_mutex_lock(&s->mu);
	s->answered_us[i] = -1;
	pthread_mutex_unlock(&s->mu);
}

/*
 * Candidate c answered its first request, then did not finish its listings
 * before the decision's deadline (many objects, a slow server): it is alive
 * and may hold the newest data, so it is not "unreachable" (rs_choose then
 * refuses to restore older data).
 */
static void mark_unfinished(struct rs_cand *c, int64_t rtt_us, int64_t waited_ms)
{
	char why[sizeof(c->error)];
	snprintf(why, sizeof(why), "%s", c->error);
	c->unfinished = true;
	c->no_answer = false;
	c->rtt_us = rtt_us;
	snprintf(c->error, sizeof(c->error), "answered in %.1f ms, but its listings did not finish "
		 "within %lld ms%s%.400s%s", rtt_us / 1000.0, (long long)waited_ms,
		 why[0] ? " (" : "", why, why[0] ? ")" : "");
}

/*
 * One attempt at probing c. The first request must answer before end_ms
 * (reachability); the rest (listings, measuring the last segment, which
 * may be large) may run until measure_end_ms. Returns 0 (answered) or -1
 * (error in c->error).
 */
static int probe_once(struct probe_set *ps, size_t idx, struct rs_cand *c,
		      const struct rs_target *t, int64_t end_ms, int64_t measure_end_ms, bool *live)
{
	struct st_call call = { 0 };
	struct st_error err = { 0 };
	char (*ids)[LAYOUT_GEN_LEN + 1] = NULL;
	size_t n = 0;
	int rc;

	for (size_t i = 0; i < c->ngens; i++)
		catalog_generation_release(&c->gens[i]);
	free(c->gens);
	c->gens = NULL;
	c->ngens = 0;
	rs_plan_release(&c->plan);
	c->has_data = false;
	c->unfinished = false;
	c->net_fail = false;
	c->nodata[0] = '\0';

	int64_t t0 = clock_mono_ns();
	set_remaining(&call, end_ms);
	rc = catalog_generations(c->st, &ids, &n, &call, &err);
	c->rtt_us = (clock_mono_ns() - t0) / 1000;
	if (rc < 0)
		goto fail;
	mark_answered(ps, idx, c->rtt_us, live);
	end_ms = measure_end_ms > end_ms ? measure_end_ms : end_ms;
	if (n) {
		c->gens = calloc(n, sizeof(*c->gens));
		if (!c->gens) {
			st_error_set(&err, ST_PERMANENT, 0, "out of memory");
			goto fail;
		}
	}
	set_remaining(&call, end_ms);
	rc = catalog_load_many(c->st, ids, n, c->gens, PROBE_LISTINGS, &call, &err);
	if (rc < 0)
		goto fail;
	c->ngens = n;
	/* the last segment's length, when needed, is measured after all have answered */
	rc = rs_plan_build(c->gens, c->ngens, t, &c->plan, c->nodata, sizeof(c->nodata));
	c->has_data = rc == 1;
	free(ids);
	if (rc == -2) {
		snprintf(c->error, sizeof(c->error), "%s", c->nodata);
		return -1;
	}
	return 0;
fail:
	free(ids);
	snprintf(c->error, sizeof(c->error), "%s: %s", st_status_name(err.status), err.message);
	/* no HTTP answer at all (a timeout, a stall, a cut connection): slow, not failing */
	c->net_fail = err.status == ST_TRANSIENT && err.http_status == 0;
	return -1;
}

static void set_release(struct probe_set *s)
{
	bool last;
	pthread_mutex_lock(&s->mu);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (last) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
		free(s->answered_us);
		free(s);
	}
}

static bool is_closed(struct probe_set *s)
{
	pthread_mutex_lock(&s->mu);
	bool closed = s->closed;
	pthread_mutex_unlock(&s->mu);
	return closed;
}

static void *probe_thread(void *p)
{
	struct probe_arg *a = p;
	struct probe_set *s = a->s;
	struct rs_cand *c = &a->local;
	int64_t t0 = clock_mono_ms();
	bool retry = s->o.mode != RESTORE_FRESHEST_REACHABLE;
	bool again = false; /* freshest mode: trying again one that answered, then was cut off */
	bool live = false;

	if (!c->st) {
		c->state = RC_ERROR; /* could not be opened: the caller set c->error */
	} else {
		for (;;) {
			/*
			 * Each attempt's first request gets the probe timeout (reachability);
			 * all/quorum retry until the wait ends, so an attempt never outlives
			 * the decision by more than one probe timeout.
			 */
			int64_t end = retry || again ? clock_mono_ms() + s->o.probe_timeout_ms
						     : s->start_ms + s->o.probe_timeout_ms;
			int64_t measure_end = retry ? s->wait_end_ms : s->measure_end_ms;
			if (end > measure_end)
				end = measure_end;
			if (retry)
				mark_attempt(s, a->i);
			if (probe_once(s, a->i, c, &s->t, end, measure_end, &live) == 0) {
				c->state = RC_OK;
				c->no_answer = false;
				break;
			}
			c->state = RC_ERROR;
			/*
			 * Failing at its deadline is no answer, whichever fired first, the
			 * call's deadline or the decision's: say so the same way in every mode.
			 */
			c->no_answer = clock_mono_ms() + 5 >= end; /* curl's clock rounds */
			pthread_mutex_lock(&s->mu);
			int64_t answered = s->answered_us[a->i];
			pthread_mutex_unlock(&s->mu);
			/*
			 * Freshest mode too gives one that answered the wait to finish:
			 * cut off without an answer (connections reset, timeouts), it is
			 * tried again while the wait lasts, as all/quorum try everyone.
			 */
			if (!retry && live && c->net_fail &&
			    clock_mono_ms() + PROBE_RETRY_MS < measure_end && !is_closed(s)) {
				again = true;
				clock_sleep_ms(PROBE_RETRY_MS);
				if (!is_closed(s))
					continue;
			}
			/*
			 * Answered, then its listings were cut by the wait's end, or timed
			 * out page after page (each past the idle timeout, the retries spent
			 * before the wait ended): a slow server, not a failing one.
			 */
			if (answered >= 0 && (clock_mono_ms() + 5 >= measure_end || c->net_fail)) {
				mark_unfinished(c, answered, clock_mono_ms() - t0);
			} else if (c->no_answer) {
				char why[sizeof(c->error)];
				snprintf(why, sizeof(why), "%s", c->error);
				snprintf(c->error, sizeof(c->error), "no answer within %lld ms (%.500s)",
					 (long long)(clock_mono_ms() - t0), why);
			}
			if (!retry || clock_mono_ms() + PROBE_RETRY_MS >= s->wait_end_ms ||
			    is_closed(s))
				break;
			clock_sleep_ms(PROBE_RETRY_MS);
			if (is_closed(s))
				break;
		}
	}
	c->probe_ms = clock_mono_ms() - t0;

	pthread_mutex_lock(&s->mu);
	if (!s->closed) {
		s->c[a->i] = *c;    /* hand everything over, storage included */
		s->finished++;
		if (live)
			s->measuring--;
		if (c->state == RC_OK)
			s->ok++;
		pthread_cond_broadcast(&s->cv);
		c = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	if (c) {
		log_debug("restore", "late probe finished after the decision", "replica=%s",
			  c->name);
		rs_cand_release(c);
	}
	free(a);
	set_release(s);
	return NULL;
}

/* Should the caller stop waiting? Called with s->mu held. */
static bool settled(const struct probe_set *s, int64_t now)
{
	if (s->finished == s->n)
		return true;
	switch (s->o.mode) {
	case RESTORE_FRESHEST_REACHABLE:
		/* the unreachable are left behind; the ones that answered are measured */
		if (now >= s->measure_end_ms + PROBE_GRACE_MS)
			return true;
		return now >= s->start_ms + s->o.probe_timeout_ms + PROBE_GRACE_MS &&
		       s->measuring == 0;
	case RESTORE_QUORUM:
		/*
		 * A quorum settles it, but not without the ones still listing: they
		 * answered and may hold the newest data (a slow peer is measured,
		 * only a silent one is dropped), up to the wait timeout.
		 */
		if (s->ok >= (size_t)s->o.quorum && now >= s->start_ms + s->o.probe_timeout_ms &&
		    s->measuring == 0)
			return true;
		return now >= s->wait_end_ms + PROBE_GRACE_MS;
	case RESTORE_ALL:
		return now >= s->wait_end_ms + PROBE_GRACE_MS;
	}
	return true;
}

void rs_probe_all(struct rs_cand *c, size_t n, const struct rs_probe_opts *o)
{
	struct probe_set *s = calloc(1, sizeof(*s));
	if (!s) {
		for (size_t i = 0; i < n; i++) {
			c[i].state = RC_ERROR;
			snprintf(c[i].error, sizeof(c[i].error), "out of memory");
		}
		return;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
	s->refs = 1;
	s->c = c;
	s->n = n;
	s->answered_us = malloc((n ? n : 1) * sizeof(*s->answered_us));
	if (!s->answered_us) {
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cv);
		free(s);
		for (size_t i = 0; i < n; i++) {
			c[i].state = RC_ERROR;
			snprintf(c[i].error, sizeof(c[i].error), "out of memory");
		}
		return;
	}
	for (size_t i = 0; i < n; i++)
		s->answered_us[i] = -1;
	s->o = *o;
	s->t = *o->target;
	if (o->target->generation) {
		snprintf(s->generation, sizeof(s->generation), "%s", o->target->generation);
		s->t.generation = s->generation;
	}
	s->o.target = &s->t;
	s->start_ms = clock_mono_ms();
	s->measure_end_ms = s->start_ms + (o->wait_timeout_ms > o->probe_timeout_ms
						   ? o->wait_timeout_ms : o->probe_timeout_ms);
	s->wait_end_ms = s->start_ms + (o->mode == RESTORE_FRESHEST_REACHABLE
					? o->probe_timeout_ms
					: (o->wait_timeout_ms > o->probe_timeout_ms ? o->wait_timeout_ms
										    : o->probe_timeout_ms));

	pthread_t *th = calloc(n + 1, sizeof(*th));
	bool *started = calloc(n + 1, sizeof(*started));
	for (size_t i = 0; i < n; i++) {
		struct probe_arg *a = th && started ? calloc(1, sizeof(*a)) : NULL;
		pthread_attr_t attr;
		if (!a) {
			c[i].state = RC_ERROR;
			snprintf(c[i].error, sizeof(c[i].error), "out of memory");
			s->finished++;
			continue;
		}
		a->s = s;
		a->i = i;
		a->local = c[i];
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		pthread_mutex_lock(&s->mu);
		s->refs++;
		pthread_mutex_unlock(&s->mu);
		int e = pthread_create(&th[i], &attr, probe_thread, a);
		pthread_attr_destroy(&attr);
		started[i] = e == 0;
		if (e) {
			pthread_mutex_lock(&s->mu);
			s->refs--;
			s->finished++;
			pthread_mutex_unlock(&s->mu);
			free(a);
			c[i].state = RC_ERROR;
			snprintf(c[i].error, sizeof(c[i].error), "cannot start a probe thread: %s",
				 strerror(e));
		}
	}

	pthread_mutex_lock(&s->mu);
	for (;;) {
		int64_t now = clock_mono_ms();
		/* a stop (restore_abort) does not wait out the probe deadline */
		if (settled(s, now) || restore_aborted())
			break;
		struct timespec ts;
		int64_t wake = now + 50;
		ts.tv_sec = wake / 1000;
		ts.tv_nsec = (wake % 1000) * 1000000;
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	s->closed = true;
	/* threads still running own their candidate's storage now */
	for (size_t i = 0; i < n; i++) {
		if (c[i].state == RC_PENDING) {
			c[i].st = NULL;
			c[i].timed_out = true;
			c[i].probe_ms = clock_mono_ms() - s->start_ms;
			c[i].error[0] = '\0';
			if (s->answered_us[i] >= 0)
				mark_unfinished(&c[i], s->answered_us[i], c[i].probe_ms);
			else
				snprintf(c[i].error, sizeof(c[i].error), "no answer within %lld ms",
					 (long long)(c[i].probe_ms));
		}
	}
	pthread_mutex_unlock(&s->mu);
	/*
	 * Threads that reported are finishing: join them, so their thread-local
	 * state (curl, OpenSSL) is gone before the caller moves on or exits. The
	 * ones still stuck end by their call deadline and are joined later.
	 */
	for (size_t i = 0; i < n; i++) {
		if (!started || !started[i])
			continue;
		if (c[i].timed_out)
			abandon(th[i]);
		else
			pthread_join(th[i], NULL);
	}
	free(th);
	free(started);
	set_release(s);
}

struct measure_arg {
	struct rs_cand *c;
	int64_t end_ms;
	const char *statedir;
	pthread_t th;
	bool started;
};

/*
 * c's last segment is in another form than its age: settings read now: does
 * this node's closed record say where it ends? Only if the generation's
 * listing ends in a closed mark at exactly that position: this node stopped
 * there cleanly, and a node that wrote the generation since would have
 * removed the mark before (replica_look.c, reopen_generation). Sets *end.
 */
static bool end_by_closed_record(const struct rs_cand *c, const char *statedir,
				 struct wal_pos *end)
{
	struct wal_pos at;
	if (!statedir ||
	    localstate_read_closed(statedir, c->name, c->st ? c->st->location : NULL,
				   c->st ? c->st->description : NULL, &at) < 0 ||
	    strcmp(at.generation, c->plan.generation) != 0)
		return false;
	for (size_t g = 0; g < c->ngens; g++) {
		const struct cat_generation *gen = &c->gens[g];
		if (strcmp(gen->id, at.generation) != 0 || !catalog_closed_at_end(gen))
			continue;
		const struct cat_closed *last = &gen->closed[gen->nclosed - 1];
		if (last->index != at.index || last->offset != at.offset)
			return false;
		*end = at;
		return true;
	}
	return false;
}

static void *measure_one(void *p)
{
	struct measure_arg *a = p;
	struct rs_cand *c = a->c;
	const struct cat_segment *last = &c->plan.segments[c->plan.nsegments - 1];
	/* a stall drops this candidate rather than hold the decision up to wait-timeout */
	struct st_call call = { .stall_s = RS_STALL_S };
	struct st_error err = { 0 };
	uint64_t len;

	set_remaining(&call, a->end_ms);
	if (segment_length(c->st, c->plan.generation, last, &len, &call, &err) < 0) {
		c->foreign_form = err.foreign_form;
		if (err.foreign_form && end_by_closed_record(c, a->statedir, &c->plan.end)) {
			log_info("restore", "the replica's age: settings changed since it wrote its "
				 "last segment: it ends where this node stopped writing it cleanly "
				 "(its closed mark)", "replica=%s position=%s/%08x/%08x err=\"%s\"",
				 c->name, c->plan.end.generation, c->plan.end.index,
				 c->plan.end.offset, err.message);
			c->end_by_mark = true;
			c->plan.end_open = false;
			return NULL;
		}
		c->measure_failed = true;
		c->measure_answered = !(err.status == ST_TRANSIENT && err.http_status == 0);
		c->measure_corrupt = err.status == ST_PERMANENT;
		c->lower = c->plan.end; /* rs_choose: a candidate past it may not be passed over */
		c->state = RC_ERROR;
		c->has_data = false;
		snprintf(c->error, sizeof(c->error), "%s: %s", st_status_name(err.status),
			 err.message);
		return NULL;
	}
	c->plan.end.offset = (uint32_t)segment_end(last, len);
	c->plan.end_open = false;
	return NULL;
}

int rs_gen_end(struct rs_cand *c, const char *gen, int64_t timeout_ms, struct wal_pos *end,
	       char *err, size_t errlen)
{
	struct st_call call = { 0 };
	struct st_error e = { 0 };
	for (size_t g = 0; c->st && g < c->ngens; g++) {
		if (strcmp(c->gens[g].id, gen) != 0)
			continue;
		set_remaining(&call, clock_mono_ms() + timeout_ms);
		if (catalog_end_position(c->st, &c->gens[g], end, &call, &e) < 0) {
			snprintf(err, errlen, "%s: %s", st_status_name(e.status), e.message);
			return -1;
		}
		return 0;
	}
	snprintf(err, errlen, "%s does not hold generation %s", c->name, gen);
	return -1;
}

int rs_index_end(struct rs_cand *c, const char *gen, uint32_t index, int64_t timeout_ms,
		 uint64_t *end, char *err, size_t errlen)
{
	const struct cat_segment *last = NULL;
	struct st_call call = { 0 };
	struct st_error e = { 0 };
	uint64_t len;

	for (size_t g = 0; g < c->ngens; g++)
		if (!strcmp(c->gens[g].id, gen))
			for (size_t i = 0; i < c->gens[g].nsegments; i++)
				if (c->gens[g].segments[i].index == index)
					last = &c->gens[g].segments[i];
	if (!last || !c->st) {
		snprintf(err, errlen, "%s holds no segment of index %08x", c->name, index);
		return -1;
	}
	set_remaining(&call, clock_mono_ms() + timeout_ms);
	if (segment_length(c->st, gen, last, &len, &call, &e) < 0) {
		snprintf(err, errlen, "%s: %s", st_status_name(e.status), e.message);
		return -1;
	}
	*end = segment_end(last, len);
	return 0;
}

int rs_lineage(struct rs_cand *c, const char *gen, uint32_t index, const char *statedir,
	       int64_t timeout_ms, char *why, size_t len)
{
	struct st_call call = { 0 };
	struct st_error e = { 0 };
	for (size_t g = 0; g < c->ngens && c->st; g++) {
		if (strcmp(c->gens[g].id, gen) != 0)
			continue;
		set_remaining(&call, clock_mono_ms() + timeout_ms);
		int rc = lineage_check(c->st, &c->gens[g], index, statedir, why, len, &call, &e);
		if (rc < 0)
			snprintf(why, len, "%s: %s", st_status_name(e.status), e.message);
		return rc < 0 ? -1 : rc;
	}
	return LINEAGE_UNKNOWN;
}

/* Must candidate i's end be measured? (See rs_measure_ends.) */
static bool must_measure(const struct rs_cand *c, size_t n, size_t i, bool all)
{
	const struct rs_cand *x = &c[i];
	if (x->state != RC_OK || !x->has_data || !x->plan.end_open || !x->st)
		return false;
	for (size_t j = 0; j < n && !all; j++)
		all = j != i && c[j].state == RC_OK && c[j].has_data &&
		      !strcmp(c[j].plan.generation, x->plan.generation);
	return all;
}

void rs_measure_ends(struct rs_cand *c, size_t n, bool all, const struct rs_probe_opts *o)
{
	int64_t wait = o->wait_timeout_ms > o->probe_timeout_ms ? o->wait_timeout_ms
								 : o->probe_timeout_ms;
	int64_t end_ms = clock_mono_ms() + wait;
	struct measure_arg *m = calloc(n + 1, sizeof(*m));
	size_t need = 0;

	for (size_t i = 0; i < n; i++) {
		if (!must_measure(c, n, i, all))
			continue;
		if (!m) {
			c[i].state = RC_ERROR; /* unknown end: never ranked on a guess */
			c[i].has_data = false;
			snprintf(c[i].error, sizeof(c[i].error), "out of memory");
			continue;
		}
		m[need].c = &c[i];
		m[need].statedir = o->statedir;
		m[need++].end_ms = end_ms;
	}
	/* one (the usual case) is measured here; several in parallel */
	for (size_t k = 0; need > 1 && k < need; k++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		m[k].started = pthread_create(&m[k].th, &attr, measure_one, &m[k]) == 0;
		pthread_attr_destroy(&attr);
	}
	for (size_t k = 0; k < need; k++) {
		if (m[k].started)
			pthread_join(m[k].th, NULL);
		else
			measure_one(&m[k]);
	}
	free(m);
}
