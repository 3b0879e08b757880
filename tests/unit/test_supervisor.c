/* Unit tests for the supervisor's pure parts: shell words, health rules,
 * the health+json document, the metrics text, push URLs, env names, text buffers. */
#include "tests/unit/unit.h"

#include <jansson.h>
#include <limits.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "common/envexpand.h"
#include "common/utf8.h"
#include "nomad/env.h"
#include "supervisor/child.h"
#include "supervisor/health.h"
#include "supervisor/metrics.h"
#include "supervisor/push.h"
#include "supervisor/state.h"
#include "supervisor/svcenv.h"
#include "supervisor/text.h"
#include "common/words.h"

static char **split_ok(const char *s, int want)
{
	char **argv = NULL;
	char err[128] = "";
	int n = words_split(s, &argv, err, sizeof(err));
	if (n != want)
		FAIL("words_split(%s) = %d (%s), expected %d", s, n, err, want);
	return argv;
}

TEST(words_plain_and_quoted)
{
	char **a = split_ok("  /bin/app  -data=/config\t'two words' \"x \\\"y\\\" $HOME\" a\\ b ''", 6);
	CHECK_STR(a[0], "/bin/app");
	CHECK_STR(a[1], "-data=/config");
	CHECK_STR(a[2], "two words");
	CHECK_STR(a[3], "x \"y\" $HOME");
	CHECK_STR(a[4], "a b");
	CHECK_STR(a[5], "");
	CHECK(a[6] == NULL);
	words_free(a);
	a = split_ok("   ", 0);
	CHECK(a[0] == NULL);
	words_free(a);
	a = split_ok("pre'mid dle'post \"\\n\"", 2);
	CHECK_STR(a[0], "premid dlepost");
	CHECK_STR(a[1], "\\n"); /* backslash only escapes " \ $ ` newline inside double quotes */
	words_free(a);
}

static const char *word_env(const char *name, void *ctx)
{
	static const char *const env[][2] = {
		{ "Q", "x\" \"--evil" }, { "ODD", "a\"b" }, { "TWO", "-a  -b" }, { "BS", "c:\\dir" },
		{ "MIX", "it's $HOME `id`" },
	};
	(void)ctx;
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
		if (strcmp(env[i][0], name) == 0)
			return env[i][1];
	return NULL;
}

/* exec's variables, expanded then split: a value is data, never shell syntax */
static char **expand_split(const char *in, int want)
{
	char *s = NULL, why[128];
	CHECK_INT(envexpand_words(in, word_env, NULL, &s, NULL, why, sizeof(why)), 0);
	char **a = split_ok(s, want);
	free(s);
	return a;
}

TEST(words_from_variables_are_never_reparsed)
{
	char **a = expand_split("app \"$Q\" end", 3); /* quoted: one word, whatever it holds */
	CHECK_STR(a[1], "x\" \"--evil");
	words_free(a);
	a = expand_split("app \"$ODD\" ${ODD}", 3); /* an odd quote is no syntax error */
	CHECK_STR(a[1], "a\"b");
	CHECK_STR(a[2], "a\"b");
	words_free(a);
	a = expand_split("app $TWO", 3); /* unquoted: split at its blanks, as a shell does */
	CHECK_STR(a[1], "-a");
	CHECK_STR(a[2], "-b");
	words_free(a);
	a = expand_split("app $BS \"$MIX\" '$Q' \\$Q \"${NONE:-it's \"x\"}\"", 6);
	CHECK_STR(a[1], "c:\\dir");
	CHECK_STR(a[2], "it's $HOME `id`");
	CHECK_STR(a[3], "$Q"); /* single quotes: nothing expanded */
	CHECK_STR(a[4], "$Q"); /* escaped dollar */
	CHECK_STR(a[5], "it's \"x\"");
	words_free(a);
	/* a nested default's value is data too, quoted or not */
	a = expand_split("app \"${NONE:-$Q}\" ${NONE:-${ODD}}", 3);
	CHECK_STR(a[1], "x\" \"--evil");
	CHECK_STR(a[2], "a\"b");
	words_free(a);
	/* an unquoted reference's default is shell text: its quoting groups, as in /bin/sh */
	a = expand_split("app ${NONE:-\"a b\"} ${NONE:-'c d'} ${NONE:-e\\ f} ${NONE:-g h}", 6);
	CHECK_STR(a[1], "a b");
	CHECK_STR(a[2], "c d");
	CHECK_STR(a[3], "e f");
	CHECK_STR(a[4], "g");
	CHECK_STR(a[5], "h");
	words_free(a);
	/* a '}' quoted in such a default is the default's, as in a shell; cut there, the
	 * default left a quote open and $Q's quotes were read as syntax (QA137 D1) */
	a = expand_split("app ${NONE:-\"a}b\"} $Q ${NONE:-${NB:-'x}y'}} ${NONE:-c\\}d}", 6);
	CHECK_STR(a[1], "a}b");
	CHECK_STR(a[2], "x\"");
	CHECK_STR(a[3], "\"--evil");
	CHECK_STR(a[4], "x}y");
	CHECK_STR(a[5], "c}d");
	words_free(a);
	a = expand_split("app ${NONE:-\"$TWO\"} ${NONE:-$TWO} ${NONE:-'$Q'}", 5);
	CHECK_STR(a[1], "-a  -b");
	CHECK_STR(a[2], "-a");
	CHECK_STR(a[3], "-b");
	CHECK_STR(a[4], "$Q");
	words_free(a);
}

TEST(words_errors)
{
	char **a = NULL;
	char err[128];
	CHECK_INT(words_split("app 'open", &a, err, sizeof(err)), -1);
	CHECK(strstr(err, "single quote"));
	CHECK_INT(words_split("app \"open", &a, err, sizeof(err)), -1);
	CHECK(strstr(err, "double quote"));
	CHECK_INT(words_split("app \\", &a, err, sizeof(err)), -1);
	CHECK(strstr(err, "backslash"));
	CHECK(a == NULL);
}

static struct sup_snapshot running(void)
{
	struct sup_snapshot s;
	memset(&s, 0, sizeof(s));
	s.phase = SUP_RUNNING;
	s.restore_done = true;
	s.service_pid = 1234;
	s.last_exit_code = -1;
	s.heartbeat_mono_ns = 5 * NS_PER_SEC;
	return s;
}

TEST(readiness_rules)
{
	char why[256];
	struct sup_snapshot s = running();
	CHECK(health_ready(&s, why, sizeof(why)));
	s.probe = SUP_PROBE_UNKNOWN;
	snprintf(s.probe_error, sizeof(s.probe_error), "connection refused");
	CHECK(!health_ready(&s, why, sizeof(why)));
	CHECK_STR(why, "service probe: connection refused");
	s.probe = SUP_PROBE_OK;
	CHECK(health_ready(&s, why, sizeof(why)));
	s.service_pid = 0;
	CHECK(!health_ready(&s, why, sizeof(why)));
	s = running();
	s.phase = SUP_RESTORING;
	snprintf(s.reason, sizeof(s.reason), "restoring databases");
	CHECK(!health_ready(&s, why, sizeof(why)));
	CHECK_STR(why, "restoring databases");
}

TEST(liveness_rules)
{
	char why[256];
	struct sup_snapshot s = running();
	CHECK(health_alive(&s, s.heartbeat_mono_ns + 2 * NS_PER_SEC, why, sizeof(why)));
	CHECK(!health_alive(&s, s.heartbeat_mono_ns + 11 * NS_PER_SEC, why, sizeof(why)));
	CHECK(strstr(why, "stalled"));
	s.phase = SUP_FLUSHING; /* has its own deadline */
	CHECK(health_alive(&s, s.heartbeat_mono_ns + 60 * NS_PER_SEC, why, sizeof(why)));
}

TEST(replica_warn_and_fail)
{
	char why[256];
	struct replica_status r;
	memset(&r, 0, sizeof(r));
	int64_t now = 1000 * NS_PER_SEC;
	r.max_lag_ms = 2000;
	r.lag_seconds = 1.0;
	CHECK_INT(health_replica(&r, 0, now, why, sizeof(why)), HEALTH_PASS);
	r.lag_seconds = 3.0;
	CHECK_INT(health_replica(&r, 0, now, why, sizeof(why)), HEALTH_WARN);
	CHECK(strstr(why, "lag"));
	r.lag_seconds = 0;
	/* how long it has failed is on the monotonic clock: the wall time (shown) is not used */
	r.failing_since_ns = 1;
	r.failing_since_mono_ns = now - 120 * NS_PER_SEC;
	snprintf(r.last_error, sizeof(r.last_error), "connect timeout");
	CHECK_INT(health_replica(&r, 0, now, why, sizeof(why)), HEALTH_WARN);
	CHECK(strstr(why, "failing for 120 s: connect timeout"));
	CHECK_INT(health_replica(&r, 300000, now, why, sizeof(why)), HEALTH_WARN);
	CHECK_INT(health_replica(&r, 60000, now, why, sizeof(why)), HEALTH_FAIL);
	/* never a negative time */
	CHECK_INT(health_replica(&r, 60000, now - 3600 * NS_PER_SEC, why, sizeof(why)), HEALTH_WARN);
	CHECK(strstr(why, "failing for 0 s"));
	/* failing only just, but lagging past max-lag + fail-after: still fail (QA136 D4) */
	r.failing_since_mono_ns = now;
	r.lag_seconds = 40.0;
	CHECK_INT(health_replica(&r, 20000, now, why, sizeof(why)), HEALTH_FAIL);
	CHECK(strstr(why, "failing for 0 s, lag 40.0 s: connect timeout"));
	/* an error as long as the reason can be still leaves the lag shown (QA141 O7) */
	memset(r.last_error, 'x', sizeof(r.last_error) - 1);
	r.last_error[sizeof(r.last_error) - 1] = '\0';
	char shortwhy[256];
	CHECK_INT(health_replica(&r, 20000, now, shortwhy, sizeof(shortwhy)), HEALTH_FAIL);
	CHECK(strstr(shortwhy, "failing for 0 s, lag 40.0 s: xxx"));
	snprintf(r.last_error, sizeof(r.last_error), "connect timeout");
	r.lag_seconds = 10.0; /* lagging, not that far: the failing clock decides */
	CHECK_INT(health_replica(&r, 20000, now, why, sizeof(why)), HEALTH_WARN);
	r.lag_seconds = 0;
	r.restore_only = true;
	CHECK_INT(health_replica(&r, 60000, now, why, sizeof(why)), HEALTH_PASS);
	/* another writer warns, and never fails (which node to stop is not ours to say) */
	r.restore_only = false;
	r.failing_since_ns = 0;
	snprintf(r.other_writer, sizeof(r.other_writer), "0123456789abcdef");
	CHECK_INT(health_replica(&r, 1, now, why, sizeof(why)), HEALTH_WARN);
	CHECK(strstr(why, "another writer: generation 0123456789abcdef"));
}

static struct engine_status fake_engine(struct db_status *d, struct replica_status *r)
{
	memset(d, 0, sizeof(*d));
	memset(r, 0, 2 * sizeof(*r));
	snprintf(d->name, sizeof(d->name), "app\"db");
	snprintf(d->path, sizeof(d->path), "/data/app.db");
	snprintf(d->state, sizeof(d->state), "replicating");
	d->replicating = true;
	snprintf(d->restore_source, sizeof(d->restore_source), "nas");
	snprintf(d->restore_result, sizeof(d->restore_result), "restored");
	d->restore_duration_ms = 1500;
	d->checkpoints_total[1] = 3;
	snprintf(r[0].name, sizeof(r[0].name), "nas");
	snprintf(r[1].name, sizeof(r[1].name), "s3");
	r[1].failing_since_ns = clock_wall_ns() - NS_PER_SEC;
	r[1].failing_since_mono_ns = clock_mono_ns() - NS_PER_SEC;
	snprintf(r[1].last_error, sizeof(r[1].last_error), "HTTP 503");
	r[0].ops[ST_OP_PUT].count = 7;
	r[0].ops[ST_OP_PUT].answered = 7;
	r[0].ops[ST_OP_PUT].latency_ns = 1500000000ULL;
	d->replicas = r;
	d->nreplicas = 2;
	struct engine_status e = { clock_wall_ns(), d, 1 };
	return e;
}

TEST(health_document_warns_on_failing_replica)
{
	struct db_status d;
	struct replica_status r[2];
	struct engine_status e = fake_engine(&d, r);
	struct sup_snapshot s = running();
	struct health_view v = { &s, &e, NULL, clock_wall_ns(), clock_mono_ns(), false };
	int code = 0;
	char *body = health_render(&v, &code);
	CHECK(body);
	CHECK_INT(code, 200);
	CHECK(strstr(body, "{\"status\":\"warn\""));
	/* the keyword docs/supervisor.md gives Uptime-Kuma matches the overall status only */
	CHECK(strncmp(body, "{\"status\":\"warn\"", 16) == 0);
	CHECK(strstr(body, "\"status\":\"pass\"")); /* a check passes ... */
	CHECK(!strstr(body, "{\"status\":\"pass\"")); /* ... but the keyword does not match */
	CHECK(strstr(body, "HTTP 503"));
	json_t *doc = json_loads(body, 0, NULL);
	CHECK(doc);
	json_t *lag = json_object_get(json_object_get(doc, "checks"), "replica:lag");
	CHECK_INT(json_array_size(lag), 2);
	CHECK_STR(json_string_value(json_object_get(json_array_get(lag, 0), "componentId")),
		  "app\"db/nas");
	CHECK_STR(json_string_value(json_object_get(json_array_get(lag, 1), "status")), "warn");
	json_decref(doc);
	free(body);

	s.service_pid = 0; /* not ready → fail, 503 */
	body = health_render(&v, &code);
	CHECK_INT(code, 503);
	CHECK(strstr(body, "{\"status\":\"fail\""));
	free(body);

	/* `replicate`: no service to check; running is ready, the replicas still count */
	v.no_service = true;
	body = health_render(&v, &code);
	CHECK_INT(code, 200);
	CHECK(strstr(body, "{\"status\":\"warn\""));
	CHECK(!strstr(body, "service:"));
	free(body);
	s.phase = SUP_FLUSHING;
	body = health_render(&v, &code);
	CHECK_INT(code, 503);
	free(body);
}

/* Backed up nowhere (every replica restore-only): a warning with the reason, never a failure (QA32 #6). */
TEST(health_warns_when_no_replica_is_written_to)
{
	struct db_status d;
	struct replica_status r[2];
	struct engine_status e = fake_engine(&d, r);
	struct sup_snapshot s = running();
	struct health_view v = { &s, &e, NULL, clock_wall_ns(), clock_mono_ns(), false };
	int code = 0;
	r[1].failing_since_ns = 0;
	r[0].restore_only = r[1].restore_only = true;
	char *body = health_render(&v, &code);
	CHECK_INT(code, 200);
	CHECK(strncmp(body, "{\"status\":\"pass\"", 16) == 0); /* nothing says why yet */
	free(body);
	snprintf(d.no_writable_replica, sizeof(d.no_writable_replica),
		 "no replica is written to, every one is restore-only: nas on this node (n1)");
	body = health_render(&v, &code);
	CHECK_INT(code, 200);
	CHECK(strncmp(body, "{\"status\":\"warn\"", 16) == 0);
	CHECK(strstr(body, "\"output\":\"app\\\"db: no replica is written to, every one is restore-only: nas on this node (n1)\""));
	free(body);
}

TEST(metrics_text_rules)
{
	struct db_status d;
	struct replica_status r[2];
	struct engine_status e = fake_engine(&d, r);
	struct sup_snapshot s = running();
	struct metrics_proc p = { 1.5, 4096, 8192, 7, 3 };
	struct metrics_view v = { &s, &e, &p, 2, 1, false };
	struct text t = TEXT_INIT(1 << 20);
	CHECK_INT(metrics_render(&v, &t), 0);
	CHECK(strstr(t.buf, "# TYPE litevisor_replica_syncs_total counter\n"));
	CHECK(strstr(t.buf, "litevisor_db_checkpoints_total{db=\"app\\\"db\",mode=\"restart\"} 3\n"));
	CHECK(strstr(t.buf, "litevisor_storage_operations_total{db=\"app\\\"db\",replica=\"nas\",operation=\"put\"} 7\n"));
	CHECK(strstr(t.buf, "litevisor_storage_operation_seconds_total{db=\"app\\\"db\",replica=\"nas\",operation=\"put\"} 1.5\n"));
	CHECK(strstr(t.buf, "litevisor_restore_duration_seconds{db=\"app\\\"db\",source=\"nas\"} 1.5\n"));
	CHECK(strstr(t.buf, "litevisor_replica_failing{db=\"app\\\"db\",replica=\"s3\"} 1\n"));
	CHECK(strstr(t.buf, "litevisor_replica_other_writer{db=\"app\\\"db\",replica=\"s3\"} 0\n"));
	CHECK(strstr(t.buf, "litevisor_db_writable_replicas{db=\"app\\\"db\"} 2\n"));
	CHECK(strstr(t.buf, "litevisor_process_cpu_seconds_total 1.5\n"));
	CHECK(strstr(t.buf, "litevisor_service_up 1\n"));
	/* each HELP exactly once */
	const char *needle = "# HELP litevisor_replica_lag_seconds ";
	const char *first = strstr(t.buf, needle);
	CHECK(first && !strstr(first + 1, needle));
	text_release(&t);

	/* `replicate` without a service: no service series at all, not a constant 0 */
	struct metrics_view nv = v;
	nv.no_service = true;
	struct text ns = TEXT_INIT(1 << 20);
	CHECK_INT(metrics_render(&nv, &ns), 0);
	CHECK(!strstr(ns.buf, "litevisor_service_up"));
	CHECK(!strstr(ns.buf, "litevisor_service_restarts_total"));
	CHECK(strstr(ns.buf, "litevisor_ready 1\n"));
	text_release(&ns);

	struct text small = TEXT_INIT(100);
	CHECK_INT(metrics_render(&v, &small), -1);
	CHECK(text_detach(&small, NULL) == NULL);
	text_release(&small);
}

/* Dashboards built on Litestream v0.3.13 keep their series: its names, labels, units (QA27). */
TEST(metrics_litestream_series)
{
	struct db_status d;
	struct replica_status r[2];
	struct engine_status e = fake_engine(&d, r);
	struct sup_snapshot s = running();
	snprintf(d.path, sizeof(d.path), "/data/a\"b.db");
	d.db_size = 8192;
	d.wal_size = 4152;
	d.pos.index = 4;
	d.sync_errors_total = 2;
	d.syncs_total = 40;
	d.sync_ns_total = 250000000;
	d.shadow_bytes_total = 123456;
	snprintf(r[0].type, sizeof(r[0].type), "file");
	snprintf(r[1].type, sizeof(r[1].type), "s3");
	r[0].pos.index = 4;
	r[0].pos.offset = 4152;
	r[0].wal_bytes_total = 99;
	r[0].ops[ST_OP_PUT].bytes = 2048;
	r[1].ops[ST_OP_PUT].count = 5;
	r[1].ops[ST_OP_PUT].errors = 2;
	r[1].ops[ST_OP_PUT].answered = 3;
	r[1].ops[ST_OP_GET].count = 1;
	r[1].ops[ST_OP_GET].answered = 1;
	r[1].ops[ST_OP_GET].bytes = 10;
	r[1].ops[ST_OP_HEAD].count = 9;
	r[1].ops[ST_OP_HEAD].answered = 9;
	struct metrics_proc p = { 1.5, 4096, 8192, 7, 3 };
	struct metrics_view v = { &s, &e, &p, 2, 1, false };
	struct text t = TEXT_INIT(1 << 20);
	CHECK_INT(metrics_render(&v, &t), 0);
	static const char *const want[] = {
		"# TYPE litestream_db_size gauge\nlitestream_db_size{db=\"/data/a\\\"b.db\"} 8192\n",
		"# TYPE litestream_wal_size gauge\nlitestream_wal_size{db=\"/data/a\\\"b.db\"} 4152\n",
		"litestream_total_wal_bytes{db=\"/data/a\\\"b.db\"} 123456\n",
		"litestream_shadow_wal_index{db=\"/data/a\\\"b.db\"} 4\n",
		"# TYPE litestream_sync_count counter\nlitestream_sync_count{db=\"/data/a\\\"b.db\"} 40\n",
		"litestream_sync_error_count{db=\"/data/a\\\"b.db\"} 2\n",
		"litestream_sync_seconds{db=\"/data/a\\\"b.db\"} 0.25\n",
		"litestream_checkpoint_count{db=\"/data/a\\\"b.db\",mode=\"RESTART\"} 3\n",
		"litestream_replica_wal_bytes{db=\"/data/a\\\"b.db\",name=\"nas\"} 99\n",
		"litestream_replica_wal_index{db=\"/data/a\\\"b.db\",name=\"nas\"} 4\n",
		"litestream_replica_wal_offset{db=\"/data/a\\\"b.db\",name=\"nas\"} 4152\n",
		"litestream_replica_validation_total{db=\"/data/a\\\"b.db\",name=\"s3\",status=\"error\"} 0\n",
		/* answered calls: failed ones are not operations performed */
		"litestream_replica_operation_total{replica_type=\"file\",operation=\"PUT\"} 7\n",
		"litestream_replica_operation_total{replica_type=\"s3\",operation=\"PUT\"} 3\n",
		"litestream_replica_operation_total{replica_type=\"s3\",operation=\"GET\"} 1\n",
		"litestream_replica_operation_bytes{replica_type=\"file\",operation=\"PUT\"} 2048\n",
		"litestream_replica_operation_bytes{replica_type=\"s3\",operation=\"GET\"} 10\n",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		CHECK(strstr(t.buf, want[i]));
	/* never made up: what litevisor cannot tell is not there at all */
	CHECK(!strstr(t.buf, "litestream_shadow_wal_size"));
	CHECK(!strstr(t.buf, "litestream_checkpoint_seconds"));
	CHECK(!strstr(t.buf, "operation=\"HEAD\""));
	CHECK(!strstr(t.buf, "litestream_replica_operation_bytes{replica_type=\"s3\",operation=\"LIST\"}"));
	const char *needle = "# HELP litestream_replica_operation_total ";
	const char *first = strstr(t.buf, needle);
	CHECK(first && !strstr(first + 1, needle));
	text_release(&t);
}

/* Names and error texts are bytes: what is not UTF-8 is replaced, never dropped (QA25 D4, D5). */
TEST(text_that_is_not_utf8)
{
	struct db_status d;
	struct replica_status r[2];
	struct engine_status e = fake_engine(&d, r);
	struct sup_snapshot s = running();
	snprintf(d.name, sizeof(d.name), "caf\xE9");   /* a Latin-1 file name */
	snprintf(d.path, sizeof(d.path), "/data/caf\xE9.db");
	/* a server's message cut by snprintf inside a two-byte character */
	snprintf(r[1].last_error, sizeof(r[1].last_error), "HTTP 403: Zugriff verweigert \xC3");
	struct health_view v = { &s, &e, NULL, clock_wall_ns(), clock_mono_ns(), false };
	int code = 0;
	char *body = health_render(&v, &code);
	CHECK(body);
	json_t *doc = json_loads(body, 0, NULL);
	CHECK(doc);
	CHECK_STR(json_string_value(json_object_get(doc, "output")),
		  "caf\xEF\xBF\xBD/s3: failing for 1 s: HTTP 403: Zugriff verweigert \xEF\xBF\xBD");
	json_t *lag = json_object_get(json_object_get(doc, "checks"), "replica:lag");
	CHECK_STR(json_string_value(json_object_get(json_array_get(lag, 1), "lastError")),
		  "HTTP 403: Zugriff verweigert \xEF\xBF\xBD");
	json_t *db = json_array_get(json_object_get(json_object_get(doc, "checks"),
						    "database:replication"), 0);
	CHECK_STR(json_string_value(json_object_get(db, "componentId")), "caf\xEF\xBF\xBD");
	CHECK_STR(json_string_value(json_object_get(db, "path")), "/data/caf\xEF\xBF\xBD.db");
	json_decref(doc);
	free(body);

	struct metrics_proc p = { 1.5, 4096, 8192, 7, 3 };
	struct metrics_view mv = { &s, &e, &p, 2, 1, false };
	struct text t = TEXT_INIT(1 << 20);
	CHECK_INT(metrics_render(&mv, &t), 0);
	CHECK(strstr(t.buf, "litevisor_replica_failing{db=\"caf\xEF\xBF\xBD\",replica=\"s3\"} 1\n"));
	CHECK(utf8_valid(t.buf));
	text_release(&t);
}

/* A service that exited has no passing probe, whatever it last answered (QA25 D3). */
TEST(probe_result_dies_with_the_service)
{
	struct sup_state st;
	struct sup_snapshot s;
	CHECK_INT(sup_state_init(&st), 0);
	sup_state_set_phase(&st, SUP_RUNNING, "");
	sup_state_set_restore(&st, true, 0);
	sup_state_set_probe(&st, 0, SUP_PROBE_UNKNOWN, 0, "not probed yet");
	sup_state_set_service(&st, 4242, clock_wall_ns());
	sup_state_set_probe(&st, 4242, SUP_PROBE_OK, 12, "");
	sup_state_get(&st, &s);
	CHECK(s.probe == SUP_PROBE_OK);
	sup_state_service_exited(&st, 137);
	sup_state_set_phase(&st, SUP_BACKOFF, "restarting in 6 s");
	sup_state_set_probe(&st, 4242, SUP_PROBE_OK, 11, ""); /* answered just before it died */
	sup_state_get(&st, &s);
	CHECK(s.probe == SUP_PROBE_FAIL);
	CHECK_INT(s.probe_latency_ms, 0);
	CHECK_STR(s.probe_error, "service not running");
	/* the next start must pass its probe again */
	sup_state_set_service(&st, 4243, clock_wall_ns());
	sup_state_get(&st, &s);
	CHECK(s.probe == SUP_PROBE_UNKNOWN);
	sup_state_release(&st);

	/* no probe configured: nothing to report */
	CHECK_INT(sup_state_init(&st), 0);
	sup_state_set_service(&st, 4242, clock_wall_ns());
	sup_state_service_exited(&st, 0);
	sup_state_get(&st, &s);
	CHECK(s.probe == SUP_PROBE_NONE);
	sup_state_release(&st);
}

TEST(push_url_building)
{
	char buf[512];
	CHECK_INT(push_url("http://kuma:3001/api/push/Tok", true, "OK", 12, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "http://kuma:3001/api/push/Tok?status=up&msg=OK&ping=12");
	CHECK_INT(push_url("http://k/api/push/T?x=1", false, "not ready: a&b", -1, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "http://k/api/push/T?x=1&status=down&msg=not%20ready%3A%20a%26b&ping=");
	CHECK_INT(push_url("http://k/api/push/T", true, "OK", 1, buf, 20), -1);
	/* pasted as Kuma shows it: its own status, msg and ping give way to ours */
	CHECK_INT(push_url("http://k/api/push/T?status=up&msg=OK&ping=", true, "OK", 5, buf,
			   sizeof(buf)), 0);
	CHECK_STR(buf, "http://k/api/push/T?status=up&msg=OK&ping=5");
	CHECK_INT(push_url("http://k/api/push/T?a=1&msg=x&&b&ping=", false, "no", -1, buf,
			   sizeof(buf)), 0);
	CHECK_STR(buf, "http://k/api/push/T?a=1&b&status=down&msg=no&ping=");
}

TEST(db_env_names)
{
	char buf[128];
	struct cfg_db db;
	memset(&db, 0, sizeof(db));
	db.path = "/data/radarr.db";
	db.name = "radarr-logs.db";
	svcenv_db_var(&db, buf, sizeof(buf));
	CHECK_STR(buf, "LITEVISOR_DB_RADARR_LOGS_DB");
	db.name = "caf\xc3\xa9-\xe6\x97\xa5\xe6\x9c\xac\x80x"; /* é, 日本, a stray byte */
	svcenv_db_var(&db, buf, sizeof(buf));
	CHECK_STR(buf, "LITEVISOR_DB_CAF____X");
	db.env = "RADARR_DB";
	svcenv_db_var(&db, buf, sizeof(buf));
	CHECK_STR(buf, "RADARR_DB");
}

TEST(nomad_port_labels)
{
	unsetenv("NOMAD_PORT_sup_http");
	CHECK_INT(nomad_port("sup-http"), 0);
	setenv("NOMAD_PORT_sup_http", "23456", 1);
	CHECK_INT(nomad_port("sup-http"), 23456); /* '-' is '_' in Nomad's variable names */
	CHECK_INT(nomad_port("sup_http"), 23456);
	setenv("NOMAD_PORT_bad", "http", 1);
	CHECK_INT(nomad_port("bad"), -1);
	setenv("NOMAD_PORT_big", "70000", 1);
	CHECK_INT(nomad_port("big"), -1);
	setenv("NOMAD_PORT_empty", "", 1);
	CHECK_INT(nomad_port("empty"), 0); /* empty is unset */
	setenv("NOMAD_HOST_PORT_sup_http", "80x80", 1);
	CHECK_INT(nomad_host_port("sup-http"), -1);
	setenv("NOMAD_HOST_PORT_sup_http", "28080", 1);
	CHECK_INT(nomad_host_port("sup-http"), 28080);
	setenv("NOMAD_IP_sup_http", "10.0.0.5", 1);
	CHECK_STR(nomad_ip("sup-http"), "10.0.0.5");
	unsetenv("NOMAD_ALLOC_ID");
	CHECK(!nomad_present());
	setenv("NOMAD_ALLOC_ID", "5f2c", 1);
	CHECK(nomad_present());
	CHECK_STR(nomad_alloc_id(), "5f2c");
}

TEST(program_search)
{
	char dir[] = "/tmp/lv-unit-XXXXXX";
	CHECK(mkdtemp(dir));
	char exe[128], plain[128], path[300];
	snprintf(exe, sizeof(exe), "%s/tool", dir);
	snprintf(plain, sizeof(plain), "%s/data", dir);
	FILE *f = fopen(exe, "w");
	fclose(f);
	chmod(exe, 0755);
	f = fopen(plain, "w");
	fclose(f);
	chmod(plain, 0644);
	snprintf(path, sizeof(path), "/nonexistent:%s", dir);
	setenv("PATH", path, 1);
	char *p = child_find_program("tool", NULL);
	CHECK_STR(p, exe);
	free(p);
	p = child_find_program("data", NULL); /* exists, not executable: exec will say EACCES */
	CHECK_STR(p, plain);
	free(p);
	p = child_find_program("missing", NULL); /* never ./missing: the working directory is not in PATH */
	CHECK_STR(p, "");
	free(p);
	p = child_find_program("./rel/x", NULL);
	CHECK_STR(p, "./rel/x");
	free(p);
	/* a trailing empty element is the working directory, as a leading one (QA89 D4) */
	char cwd[PATH_MAX];
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	CHECK_INT(chdir(dir), 0);
	setenv("PATH", "/nonexistent:", 1);
	p = child_find_program("tool", NULL);
	CHECK_STR(p, "tool");
	free(p);
	CHECK_INT(chdir(cwd), 0);
	/*
	 * As the service's user: a copy only its owner may run, first in $PATH, is
	 * passed over for the next (QA89 D5); as root (any x bit), or as its owner, taken.
	 */
	char dir2[] = "/tmp/lv-unit-XXXXXX", mine[128], theirs[128];
	CHECK(mkdtemp(dir2));
	chmod(dir2, 0755);
	chmod(dir, 0755);
	snprintf(mine, sizeof(mine), "%s/both", dir);
	snprintf(theirs, sizeof(theirs), "%s/both", dir2);
	fclose(fopen(mine, "w"));
	chmod(mine, 0700);
	fclose(fopen(theirs, "w"));
	chmod(theirs, 0755);
	snprintf(path, sizeof(path), "%s:%s", dir, dir2);
	setenv("PATH", path, 1);
	struct stat st;
	CHECK_INT(stat(mine, &st), 0);
	gid_t none[1] = { 0 };
	struct child_creds other = { .set = true, .uid = st.st_uid + 4242, .gid = st.st_gid + 4242,
				     .groups = none, .ngroups = 0 };
	struct child_creds owner = { .set = true, .uid = st.st_uid, .gid = st.st_gid };
	struct child_creds root = { .set = true, .uid = 0, .gid = 0 };
	p = child_find_program("both", &other);
	CHECK_STR(p, theirs);
	free(p);
	p = child_find_program("both", st.st_uid ? &owner : &root);
	CHECK_STR(p, mine);
	free(p);
	/* its group may, others not: a member of the group takes it */
	chmod(mine, 0710);
	gid_t member[1] = { st.st_gid };
	other.groups = member;
	other.ngroups = 1;
	p = child_find_program("both", &other);
	CHECK_STR(p, mine);
	free(p);
	/* a copy under a directory the user may not enter, one level up, is passed over (QA90 D4) */
	char dir3[] = "/tmp/lv-unit-XXXXXX", sub[128], deep[160];
	CHECK(mkdtemp(dir3));
	chmod(dir3, 0700);
	snprintf(sub, sizeof(sub), "%s/bin", dir3);
	CHECK_INT(mkdir(sub, 0755), 0);
	snprintf(deep, sizeof(deep), "%s/both", sub);
	fclose(fopen(deep, "w"));
	chmod(deep, 0755);
	snprintf(path, sizeof(path), "%s:%s", sub, dir2);
	setenv("PATH", path, 1);
	other.ngroups = 0;
	p = child_find_program("both", &other);
	CHECK_STR(p, theirs);
	free(p);
	p = child_find_program("both", NULL);
	CHECK_STR(p, deep);
	free(p);
	unlink(deep);
	rmdir(sub);
	rmdir(dir3);
	unlink(mine);
	unlink(theirs);
	rmdir(dir2);
	unlink(exe);
	unlink(plain);
	rmdir(dir);
}

/*
 * words_quote is words_split's inverse, and what it prints survives
 * envexpand_words unchanged: `litevisor config` prints exec this way so it
 * loads back as the same argv.
 */
TEST(words_quote_round_trips_through_expansion_and_split)
{
	static const char *const argvs[][6] = {
		{ "/usr/bin/printf", "[%s]", "$HOME", "cost $5", NULL },
		{ "app", "", "it's", "'", "''", NULL },
		{ "a\\b", "\\", "\"q\"", "$$", "${X:-y}", NULL },
		{ "tab\there", "new\nline", " lead", "trail ", "`cmd`", NULL },
		{ "plain", "-data=/config", "k=v,w+x@h:1%", NULL },
	};
	for (size_t i = 0; i < sizeof(argvs) / sizeof(argvs[0]); i++) {
		char **back = NULL, *quoted = words_quote((char *const *)argvs[i]), *expanded = NULL;
		char err[128] = "";
		size_t n = 0;
		while (argvs[i][n])
			n++;
		CHECK(quoted != NULL);
		if (envexpand_words(quoted, NULL, NULL, &expanded, NULL, err, sizeof(err)) < 0)
			FAIL("envexpand_words(%s): %s", quoted, err);
		CHECK_STR(expanded, quoted);
		CHECK_INT(words_split(quoted, &back, err, sizeof(err)), n);
		for (size_t k = 0; k < n; k++)
			CHECK_STR(back[k], argvs[i][k]);
		words_free(back);
		free(expanded);
		free(quoted);
	}
	char *const plain[] = { "radarr", "-nobrowser", NULL };
	char *q = words_quote(plain);
	CHECK_STR(q, "radarr -nobrowser");
	free(q);
	char *const tricky[] = { "it's", "$HOME", "", NULL };
	q = words_quote(tricky);
	CHECK_STR(q, "'it'\\''s' '$HOME' ''");
	free(q);
}

UNIT_MAIN(T(nomad_port_labels), T(program_search), T(words_plain_and_quoted),
	  T(words_from_variables_are_never_reparsed), T(words_errors), T(words_quote_round_trips_through_expansion_and_split), T(readiness_rules), T(liveness_rules),
	  T(replica_warn_and_fail), T(health_document_warns_on_failing_replica),
	  T(health_warns_when_no_replica_is_written_to), T(metrics_text_rules), T(metrics_litestream_series), T(text_that_is_not_utf8), T(probe_result_dies_with_the_service),
	  T(push_url_building), T(db_env_names))
