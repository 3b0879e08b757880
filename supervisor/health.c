/* health.c — liveness, readiness and the health+json document (see health.h). */
#include "supervisor/health.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/utf8.h"
#include "common/version.h"
#include "common/banned.h"

/*
 * A JSON string of text that may not be well-formed UTF-8 (a file name, a
 * server's message cut by snprintf): jansson refuses those, and the key would
 * silently go missing with them. Bad bytes become U+FFFD.
 */
static json_t *jstr(const char *s)
{
	if (utf8_valid(s))
		return json_string(s);
	size_t len = strlen(s) * 3 + 1; /* each byte at most one 3-byte U+FFFD */
	char *fixed = malloc(len);
	json_t *j = fixed ? json_string(utf8_repair(s, fixed, len)) : NULL;
	free(fixed);
	return j;
}

const char *health_status_name(enum health_status s)
{
	return s == HEALTH_PASS ? "pass" : s == HEALTH_WARN ? "warn" : "fail";
}

bool health_alive(const struct sup_snapshot *s, int64_t now_mono_ns, char *why, size_t whylen)
{
	if (s->phase == SUP_RESTORING || s->phase == SUP_FLUSHING || s->phase == SUP_STARTING)
		return true;
	int64_t age_ms = (now_mono_ns - s->heartbeat_mono_ns) / NS_PER_MS;
	if (age_ms > HEALTH_STALE_MS) {
		snprintf(why, whylen, "supervisor loop stalled for %lld ms", (long long)age_ms);
		return false;
	}
	return true;
}

bool health_ready(const struct sup_snapshot *s, char *why, size_t whylen)
{
	if (s->phase != SUP_RUNNING) {
		snprintf(why, whylen, "%s", s->reason[0] ? s->reason : sup_phase_name(s->phase));
		return false;
	}
	if (!s->restore_done) {
		snprintf(why, whylen, "restore not done");
		return false;
	}
	if (s->service_pid <= 0) {
		snprintf(why, whylen, "service not running");
		return false;
	}
	if (s->probe == SUP_PROBE_UNKNOWN || s->probe == SUP_PROBE_FAIL) {
		snprintf(why, whylen, "service probe: %s",
			 s->probe_error[0] ? s->probe_error : "not passing");
		return false;
	}
	return true;
}

/* How long since a failure that began at since_mono (0 if that is in the future). */
static int64_t failed_ms(int64_t now_mono_ns, int64_t since_mono_ns)
{
	return now_mono_ns > since_mono_ns ? (now_mono_ns - since_mono_ns) / NS_PER_MS : 0;
}

enum health_status health_replica(const struct replica_status *r, int64_t fail_after_ms,
				  int64_t now_mono_ns, char *why, size_t whylen)
{
	if (why && whylen)
		why[0] = '\0';
	if (r->restore_only)
		return HEALTH_PASS;
	/*
	 * Failing too, the lag still counts: a request hung for half a minute
	 * made the replica fail on its lag, then "failing for 0 s" when it gave
	 * up, and /healthz went back to 200 for fail-after with nothing
	 * recovered (QA136 D4).
	 */
	bool lag_fails = fail_after_ms > 0 && r->max_lag_ms > 0 &&
			 r->lag_seconds * 1000.0 > (double)(r->max_lag_ms + fail_after_ms);
	if (r->failing_since_ns > 0) {
		int64_t for_ms = failed_ms(now_mono_ns, r->failing_since_mono_ns);
		/* the lag first: a long error would cut it off (QA141 O7) */
		char lag[48] = "";
		if (lag_fails)
			snprintf(lag, sizeof(lag), ", lag %.1f s", r->lag_seconds);
		snprintf(why, whylen, "failing for %lld s%s: %s", (long long)(for_ms / 1000), lag,
			 r->last_error[0] ? r->last_error : "sync errors");
		if (lag_fails || (fail_after_ms > 0 && for_ms >= fail_after_ms))
			return HEALTH_FAIL;
		return HEALTH_WARN;
	}
	if (r->other_writer[0]) {
		snprintf(why, whylen, "another writer: generation %s appeared on the replica (two "
			 "processes replicate this database)", r->other_writer);
		return HEALTH_WARN;
	}
	if (r->max_lag_ms > 0 && r->lag_seconds * 1000.0 > (double)r->max_lag_ms) {
		snprintf(why, whylen, "lag %.1f s beyond %.1f s", r->lag_seconds,
			 (double)r->max_lag_ms / 1000.0);
		if (fail_after_ms > 0 &&
		    r->lag_seconds * 1000.0 > (double)(r->max_lag_ms + fail_after_ms))
			return HEALTH_FAIL;
		return HEALTH_WARN;
	}
	return HEALTH_PASS;
}

static enum health_status worst(enum health_status a, enum health_status b)
{
	return a > b ? a : b;
}

static void set_time(json_t *o, const char *key, int64_t wall_ns)
{
	char buf[40];
	if (wall_ns > 0)
		json_object_set_new(o, key, jstr(clock_rfc3339(wall_ns, buf, sizeof(buf))));
}

static json_t *pos_json(const struct wal_pos *p)
{
	return json_pack("{s:s, s:I, s:I}", "generation", p->generation, "index",
			 (json_int_t)p->index, "offset", (json_int_t)p->offset);
}

/* Append one check object to checks[key]; checks NULL: only the status is wanted. */
static void add_check(json_t *checks, const char *key, json_t *entry)
{
	if (!checks) {
		json_decref(entry);
		return;
	}
	json_t *arr = json_object_get(checks, key);
	if (!arr) {
		arr = json_array();
		json_object_set_new(checks, key, arr);
	}
	json_array_append_new(arr, entry);
}

/*
 * The service's process: passes while it runs, whatever its probe says (the
 * probe has its own check; a running process shown as failed reads as a
 * crash). why: the reason litevisor is not ready, shown when it does not run.
 */
static json_t *service_check(const struct sup_snapshot *s, int64_t now_wall_ns, const char *why)
{
	bool running = s->phase == SUP_RUNNING && s->service_pid > 0;
	json_t *c = json_object();
	json_object_set_new(c, "componentType", jstr("system"));
	json_object_set_new(c, "status", jstr(running ? "pass" : "fail"));
	json_object_set_new(c, "phase", jstr(sup_phase_name(s->phase)));
	if (s->service_pid > 0)
		json_object_set_new(c, "pid", json_integer(s->service_pid));
	json_object_set_new(c, "restarts", json_integer((json_int_t)s->restarts));
	if (s->last_exit_code >= 0)
		json_object_set_new(c, "lastExitCode", json_integer(s->last_exit_code));
	set_time(c, "startedAt", s->service_started_wall_ns);
	set_time(c, "time", now_wall_ns);
	if (!running)
		json_object_set_new(c, "output", jstr(why[0] ? why : sup_phase_name(s->phase)));
	return c;
}

static json_t *probe_check(const struct sup_snapshot *s, int64_t now_wall_ns)
{
	bool ok = s->probe == SUP_PROBE_OK;
	json_t *c = json_object();
	json_object_set_new(c, "componentType", jstr("component"));
	json_object_set_new(c, "status", jstr(ok ? "pass" : "fail"));
	json_object_set_new(c, "observedValue", json_real((double)s->probe_latency_ms / 1000.0));
	json_object_set_new(c, "observedUnit", jstr("s"));
	set_time(c, "time", now_wall_ns);
	if (!ok)
		json_object_set_new(c, "output", jstr(s->probe_error));
	return c;
}

/*
 * A database: warn while replication is not running for it (waiting for the
 * file, stopped), and while copying its new commits fails — then fail once
 * that lasted fail_after_ms, as a replica's failure does; fail at once when it
 * stopped for good (older than a replica); warn (only) while no replica is
 * written to. why: the output.
 */
static json_t *db_check(const struct db_status *d, int64_t fail_after_ms, int64_t now_mono_ns,
			enum health_status *st, char *why, size_t whylen)
{
	json_t *c = json_object();
	*st = d->replicating ? HEALTH_PASS : HEALTH_WARN;
	snprintf(why, whylen, "%s", d->replicating ? "" : d->state);
	if (d->replicating && d->sync_failing_since_ns > 0) {
		int64_t for_ms = failed_ms(now_mono_ns, d->sync_failing_since_mono_ns);
		snprintf(why, whylen, "cannot copy new commits for %lld s: %s",
			 (long long)(for_ms / 1000), d->sync_error);
		*st = fail_after_ms > 0 && for_ms >= fail_after_ms ? HEALTH_FAIL : HEALTH_WARN;
	} else if (d->stopped_older) {
		/* stopped for good, the service's commits replicated nowhere: only a restore helps */
		snprintf(why, whylen, "%s", d->state);
		*st = HEALTH_FAIL;
	} else if (!d->replicating && d->stuck_since_mono_ns > 0) {
		int64_t for_ms = failed_ms(now_mono_ns, d->stuck_since_mono_ns);
		snprintf(why, whylen, "not replicating for %lld s: %s", (long long)(for_ms / 1000),
			 d->state);
		*st = fail_after_ms > 0 && for_ms >= fail_after_ms ? HEALTH_FAIL : HEALTH_WARN;
	} else if (d->replicating && d->no_writable_replica[0]) {
		/* replication trouble: warn, never fail (a node hosting its store may only restore) */
		snprintf(why, whylen, "%s", d->no_writable_replica);
		*st = HEALTH_WARN;
	}
	json_object_set_new(c, "componentId", jstr(d->name));
	json_object_set_new(c, "componentType", jstr("datastore"));
	json_object_set_new(c, "status", jstr(health_status_name(*st)));
	json_object_set_new(c, "path", jstr(d->path));
	json_object_set_new(c, "state", jstr(d->state));
	json_object_set_new(c, "position", pos_json(&d->pos));
	json_object_set_new(c, "dbSizeBytes", json_integer(d->db_size));
	json_object_set_new(c, "walSizeBytes", json_integer(d->wal_size));
	if (d->restore_result[0]) {
		json_object_set_new(c, "restoreResult", jstr(d->restore_result));
		json_object_set_new(c, "restoreSource", jstr(d->restore_source));
		json_object_set_new(c, "restoreDurationSeconds",
				    json_real((double)d->restore_duration_ms / 1000.0));
		json_object_set_new(c, "restorePosition", pos_json(&d->restore_pos));
	}
	if (d->sync_failing_since_ns > 0) {
		set_time(c, "syncFailingSince", d->sync_failing_since_ns);
		json_object_set_new(c, "syncError", jstr(d->sync_error));
	}
	if (why[0])
		json_object_set_new(c, "output", jstr(why));
	return c;
}

static json_t *replica_check(const struct db_status *d, const struct replica_status *r,
			     int64_t fail_after_ms, int64_t now_wall_ns, int64_t now_mono_ns,
			     enum health_status *st, char *why, size_t whylen)
{
	char id[160];
	*st = health_replica(r, fail_after_ms, now_mono_ns, why, whylen);
	snprintf(id, sizeof(id), "%s/%s", d->name, r->name);
	json_t *c = json_object();
	json_object_set_new(c, "componentId", jstr(id));
	json_object_set_new(c, "componentType", jstr("datastore"));
	json_object_set_new(c, "status", jstr(health_status_name(*st)));
	json_object_set_new(c, "observedValue", json_real(r->lag_seconds));
	json_object_set_new(c, "observedUnit", jstr("s"));
	json_object_set_new(c, "type", jstr(r->type));
	json_object_set_new(c, "replica", jstr(r->description));
	if (r->restore_only)
		json_object_set_new(c, "restoreOnly", json_true());
	json_object_set_new(c, "position", pos_json(&r->pos));
	set_time(c, "time", now_wall_ns);
	set_time(c, "lastSync", r->last_sync_ns);
	set_time(c, "lastSnapshot", r->last_snapshot_ns);
	set_time(c, "failingSince", r->failing_since_ns);
	if (r->last_error[0]) {
		json_object_set_new(c, "lastError", jstr(r->last_error));
		set_time(c, "lastErrorTime", r->last_error_ns);
	}
	if (r->other_writer[0]) {
		json_object_set_new(c, "otherWriter", jstr(r->other_writer));
		set_time(c, "otherWriterSince", r->other_writer_ns);
	}
	if (why[0])
		json_object_set_new(c, "output", jstr(why));
	return c;
}

/*
 * The overall status; each check added to checks (when not NULL); the text of
 * the worst problem (the first of that status) into problem, "" when none.
 */
static enum health_status evaluate(const struct health_view *v, json_t *checks, char *problem,
				   size_t plen)
{
	char why[256] = "";
	bool ready;
	if (v->no_service) {
		ready = v->sup->phase == SUP_RUNNING;
		if (!ready)
			snprintf(why, sizeof(why), "%s", v->sup->reason[0] ? v->sup->reason
									 : sup_phase_name(v->sup->phase));
	} else {
		ready = health_ready(v->sup, why, sizeof(why));
	}
	int64_t fail_after = v->cfg ? v->cfg->health.fail_after_ms : 0;
	enum health_status overall = ready ? HEALTH_PASS : HEALTH_FAIL;
	snprintf(problem, plen, "%s", ready ? "" : why);

	if (!v->no_service)
		add_check(checks, "service:process",
			  service_check(v->sup, v->now_wall_ns, why));
	if (!v->no_service && v->sup->probe != SUP_PROBE_NONE)
		add_check(checks, "service:probe", probe_check(v->sup, v->now_wall_ns));

	for (size_t i = 0; v->eng && i < v->eng->ndbs; i++) {
		const struct db_status *d = &v->eng->dbs[i];
		enum health_status st;
		char dwhy[320];
		add_check(checks, "database:replication",
			  db_check(d, fail_after, v->now_mono_ns, &st, dwhy, sizeof(dwhy)));
		if (st > overall || (st > HEALTH_PASS && !problem[0]))
			snprintf(problem, plen, "%s: %s", d->name, dwhy);
		overall = worst(overall, st);
		for (size_t j = 0; j < d->nreplicas; j++) {
			char rwhy[256];
			add_check(checks, "replica:lag",
				  replica_check(d, &d->replicas[j], fail_after, v->now_wall_ns,
					       v->now_mono_ns, &st,
						rwhy, sizeof(rwhy)));
			if (st > overall || (st > HEALTH_PASS && !problem[0]))
				snprintf(problem, plen, "%s/%s: %s", d->name, d->replicas[j].name, rwhy);
			overall = worst(overall, st);
		}
	}
	return overall;
}

enum health_status health_overall(const struct health_view *v, char *why, size_t whylen)
{
	return evaluate(v, NULL, why, whylen);
}

char *health_render(const struct health_view *v, int *http_status)
{
	char problem[512];
	char *out = NULL;
	enum health_status overall = HEALTH_FAIL;
	json_t *doc = json_object();
	json_t *checks = json_object();
	if (!doc || !checks)
		goto out;
	overall = evaluate(v, checks, problem, sizeof(problem));
	json_object_set_new(doc, "status", jstr(health_status_name(overall)));
	json_object_set_new(doc, "version", jstr(litevisor_version()));
	json_object_set_new(doc, "serviceId", jstr("litevisor"));
	json_object_set_new(doc, "description", jstr("litevisor: supervisor and SQLite replication"));
	if (overall != HEALTH_PASS && problem[0])
		json_object_set_new(doc, "output", jstr(problem));
	json_object_set_new(doc, "checks", checks);
	checks = NULL;
	/* 15 digits: 0.03, not 0.029999999999999999 */
	out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
out:
	json_decref(checks);
	json_decref(doc);
	*http_status = overall == HEALTH_FAIL ? 503 : 200;
	return out;
}
