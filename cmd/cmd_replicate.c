/*
 * cmd_replicate.c — `litevisor replicate [-config F] [-exec CMD] [DB_PATH REPLICA_URL…]`:
 * replicate every configured database continuously until SIGTERM/SIGINT,
 * then flush everything committed to every reachable replica and exit 0
 * (1 when the flush could not ship everything, as Litestream exits 1).
 * With `addr` (or health.port-label) it serves supervisor/http.h's server
 * without a service (/livez, /readyz, /healthz, /status, /metrics), as
 * Litestream serves /metrics.
 *
 * With -exec (or the config's `exec`) it is `run` with that command: restore,
 * supervise, replicate, flush (supervisor/lifecycle.h), as Litestream's
 * `replicate -exec` is used as an entrypoint.
 */
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include "cmd/commands.h"
#include "cmd/source.h"
#include "common/bounded.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "replication/engine.h"
#include "supervisor/consul_link.h"
#include "supervisor/http.h"
#include "supervisor/lifecycle.h"
#include "supervisor/push.h"
#include "supervisor/signals.h"
#include "supervisor/state.h"
#include "common/words.h"
#include "common/banned.h"

/* The main loop turns at least this often (heartbeat for /livez). */
#define TICK_MS 1000

/*
 * Build a one-database config from `replicate DB_PATH REPLICA_URL…`. DB_PATH
 * may be relative or start with "~/", as in a config file and in Litestream.
 */
static int config_from_args(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
	char why[512];
	config_defaults(cfg);
	cfg->dbs = calloc(1, sizeof(*cfg->dbs));
	if (!cfg->dbs)
		goto oom;
	cfg->ndbs = 1;
	config_db_defaults(&cfg->dbs[0]);
	struct cfg_db *db = &cfg->dbs[0];
	if (!(db->path = config_abs_path(argv[0], why, sizeof(why)))) {
		snprintf(err, errlen, "DB_PATH: %s", why);
		return -1;
	}
	const char *base = strrchr(db->path, '/') + 1;
	if (!*base) {
		snprintf(err, errlen, "DB_PATH: \"%s\" is a directory, not a database file", argv[0]);
		return -1;
	}
	if (config_db_path_check(db->path, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "DB_PATH: %s", why);
		return -1;
	}
	if (!(db->name = strdup(base)))
		goto oom;
	db->replicas = calloc((size_t)argc - 1, sizeof(*db->replicas));
	if (!db->replicas)
		goto oom;
	for (int i = 1; i < argc; i++) {
		struct cfg_replica *r = &db->replicas[db->nreplicas];
		if (config_replica_from_url(argv[i], r, err, errlen) < 0)
			return -1;
		db->nreplicas++;
	}
	if (config_unique_replica_names(db) < 0)
		goto oom;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -1;
}

/* The engine's status for the HTTP server (an http_status_fn). */
static int engine_status_source(void *e, struct engine_status *out)
{
	return engine_status_get(e, out);
}

static void engine_free_main(void *e)
{
	engine_free(e);
}

/*
 * Replicate until TERM/INT, then flush. The main loop turns at least every
 * TICK_MS so /livez sees it alive; the HTTP server (if any) runs in its own
 * thread and reads copies of the state and of the engine's status. From the
 * stop signal to the exit takes at most flush-timeout + SUP_STOP_THREADS_MS.
 */
static void heartbeat_tick(void *state)
{
	sup_state_heartbeat(state);
}

struct flush_job {
	struct engine *e;
	int64_t ms;
	int rc;
};

static void flush_main(void *arg)
{
	struct flush_job *j = arg;
	j->rc = engine_flush(j->e, j->ms);
}

static int replicate_loop(const struct config *cfg)
{
	struct engine *e = NULL;
	struct http_server *http = NULL;
	struct sup_consul *consul = NULL;
	struct push *push = NULL;
	struct sup_state state;
	bool state_ok = false, lock_lost = false;
	int sfd = -1, code = EXIT_TEMPFAIL;

	/* jansson hashes with a random seed; seed it before any thread can race on it. */
	json_object_seed(0);
	if ((sfd = sig_open_fd()) < 0)
		goto out;
	if (sup_state_init(&state) < 0) {
		log_error("replicate", "cannot initialise state", NULL);
		goto out;
	}
	state_ok = true;
	if ((code = http_serve_configured(cfg, &state, HTTP_NO_SERVICE, &http)) != 0)
		goto out;
	consul = sup_consul_new(cfg, &code);
	if (code || (code = sup_consul_take_lock(consul, sfd, &state, heartbeat_tick, &state)) != 0)
		goto out;
	sup_consul_lock_settled(consul); /* replicate waits for no one: its clean stop is one */
	/* what engine_new refuses is the configuration's (a replica it cannot write): 100, as run */
	if (!(e = engine_new(cfg))) {
		code = EXIT_USAGE;
		goto out;
	}
	code = EXIT_TEMPFAIL;
	/* a state directory another litevisor uses: 111, the other may stop */
	if (engine_lock(e) < 0 || engine_start(e) < 0)
		goto out;
	http_set_status_source(http, engine_status_source, e);
	if (cfg->health.push_url)
		push = push_start(cfg, &state, false, engine_status_source, e);
	sup_state_set_phase(&state, SUP_RUNNING, "");
	log_info("replicate", "replicating", "databases=%zu", cfg->ndbs);
	for (;;) {
		struct pollfd p[2] = { { .fd = sfd, .events = POLLIN },
				       { .fd = sup_consul_lock_fd(consul), .events = POLLIN } };
		int rc = poll(p, 2, TICK_MS);
		if (rc < 0 && errno != EINTR)
			break;
		sup_state_heartbeat(&state);
		char why[512];
		if (rc > 0 && (p[1].revents & POLLIN) &&
		    sup_consul_lock_state(consul, why, sizeof(why)) == CONSUL_LOCK_LOST) {
			log_error("replicate", "the writer lock is lost: flushing, then exiting 111",
				  "key=\"%s\" error=\"%s\"", cfg->consul.lock_key, why);
			lock_lost = true;
			break;
		}
		int sig = sig_read(sfd);
		if (sig < 0)
			break;
		if (sig == 0)
			continue;
		/* QUIT too: a stop signal (STOPSIGNAL SIGQUIT), as while waiting for the lock */
		if (sig_ends_idle(sig)) {
			log_info("replicate", "signal received, flushing", "signal=%s", sig_name(sig));
			break;
		}
		if (sig == SIGTSTP)
			sig_job_stop();
		else if (sig != SIGCHLD)
			log_info("replicate", "signal ignored", "signal=%s", sig_name(sig));
	}
	/* the stop budget (lifecycle.h); a thread stuck in a request is abandoned to the exit */
	int64_t stop_end = clock_mono_ms() + cfg->supervisor.flush_timeout_ms + SUP_STOP_THREADS_MS -
			   SUP_EXIT_MARGIN_MS;
	sup_state_set_phase(&state, SUP_FLUSHING, "final flush");
	code = 0;
	struct flush_job fj = { e, cfg->supervisor.flush_timeout_ms, 0 };
	sig_run_noting(sfd, "the final flush", flush_main, &fj, heartbeat_tick, &state);
	if (fj.rc < 0) {
		/* a wrapper or init system must see that the last commits are not out */
		log_warn("replicate", "final flush incomplete: see above; exiting 1", NULL);
		code = 1;
	}
	if (lock_lost)
		code = EXIT_TEMPFAIL;
	/* after the final flush: the next writer restores all of it */
	sup_consul_close(consul, SUP_CONSUL_CLOSE_MS);
	consul = NULL;
	sup_state_set_phase(&state, SUP_EXITING, "exiting");
	push_stop(push); /* both before the engine they read from goes */
	push = NULL;
	http_stop(http);
	http = NULL;
	int64_t left = stop_end - clock_mono_ms();
	if (left > SUP_STOP_THREADS_MS)
		left = SUP_STOP_THREADS_MS;
	if (bounded_run(engine_free_main, e, left > 0 ? left : 0) < 0) {
		/* cfg and the engine are still in use: leave without freeing them */
		log_warn("replicate", "replication threads did not stop in time; leaving them to the exit",
			 "waited_ms=%lld", (long long)(left > 0 ? left : 0));
		log_info("replicate", "exiting", "code=%d", code);
		_exit(code);
	}
	e = NULL;
out:
	sup_consul_close(consul, SUP_CONSUL_CLOSE_MS);
	push_stop(push);
	http_stop(http); /* before the engine it reads from goes */
	engine_free(e);
	if (state_ok)
		sup_state_release(&state);
	if (sfd >= 0)
		close(sfd);
	return code;
}

static int run_replicate(int argc, char **argv)
{
	const char *path = NULL, *exec = NULL;
	bool no_expand = false, help;
	char err[1024];
	char **words = NULL;
	struct config cfg = { 0 };
	int code;

	/* Before any thread exists, so no thread can ever take a TERM (signals.h). */
	if (sig_block() < 0)
		return EXIT_TEMPFAIL;

	const struct flag flags[] = {
		{ "config", FLAG_STRING, &path, "PATH",
		  "config file (default $LITEVISOR_CONFIG, $LITESTREAM_CONFIG, /etc/litevisor.yml, /etc/litestream.yml)" },
		{ "exec", FLAG_STRING, &exec, "CMD",
		  "run CMD as a supervised service, as `run` does (overrides the config's exec)" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in config values" },
		{ 0 },
	};
	int i = cli_parse(&cmd_replicate, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	if (i < argc) {
		/* -config "" beside a URL is no config, as Litestream (and our restore) take it */
		if (path && *path)
			return cli_usage_error(&cmd_replicate, "give either -config or DB_PATH REPLICA_URL…");
		if (argc - i < 2)
			return cli_usage_error(&cmd_replicate, "DB_PATH needs at least one REPLICA_URL");
		if (config_from_args(&cfg, argc - i, argv + i, err, sizeof(err)) < 0) {
			config_release(&cfg);
			return cli_usage_error(&cmd_replicate, "%s", err);
		}
	} else {
		const char *file;
		struct config_options opt = { .no_expand_env = no_expand };
		if ((code = cmd_config_path(&cmd_replicate, path, &file)))
			return code;
		if (config_load(file, &opt, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "litevisor replicate: %s\n", err);
			return EXIT_USAGE;
		}
	}
	log_configure(cfg.log_level, cfg.log_json);
	/* with -exec too, as Litestream: a service never starts without its restore by accident */
	if (cfg.ndbs == 0) {
		code = cli_usage_error(&cmd_replicate, "no databases configured");
		goto out;
	}
	/* `-exec ""` is no -exec, as in Litestream (a wrapper's "$APP_CMD" left unset) */
	if ((!exec || !*exec) && cfg.exec && *cfg.exec) {
		exec = cfg.exec;
		cmd_note_exec(&cfg);
	}
	if (exec && *exec) {
		int n = words_split(exec, &words, err, sizeof(err));
		if (n <= 0) {
			code = cli_usage_error(&cmd_replicate, "exec: %s", n == 0 ? "empty command" : err);
			goto out;
		}
		if ((code = cmd_check_command(&cmd_replicate, words,
					      exec == cfg.exec ? cfg.exec_unset : NULL)))
			goto out;
		code = run_supervised(&cfg, words);
		goto out;
	}
	if (cfg.consul.service_name) {
		code = cli_usage_error(&cmd_replicate, "consul.service registers the service litevisor "
				       "supervises, and `replicate` without -exec has none: use `run`, "
				       "or give -exec (consul.lock alone works here)");
		goto out;
	}
	if (cfg.health.probe_url) {
		code = cli_usage_error(&cmd_replicate, "health.probe-url checks the service litevisor "
				       "supervises, and `replicate` without -exec has none: use `run`, "
				       "or give -exec (health.push-url alone works here)");
		goto out;
	}
	code = replicate_loop(&cfg);
out:
	words_free(words);
	config_release(&cfg);
	return code;
}

const struct command cmd_replicate = {
	.name = "replicate",
	.summary = "replicate databases continuously to their replicas (Litestream v0.3 format)",
	.usage = "litevisor replicate [flags] [DB_PATH REPLICA_URL…]",
	.description =
		"Watches every configured database's WAL and ships each committed transaction to\n"
		"every replica on its own schedule, in the Litestream v0.3 layout. SIGTERM,\n"
		"SIGINT or SIGQUIT flushes everything committed to every reachable replica (within\n"
		"supervisor.flush-timeout) and exits 0, or 1 if some could not be shipped.\n"
		"SIGHUP and other signals are logged and ignored (no configuration is reloaded).\n"
		"Serves /livez /readyz /healthz /metrics on \"addr\"; pushes to health.push-url.\n"
		"DB_PATH may be relative. With -exec CMD (or `exec` in the config) it behaves like\n"
		"`run` with that command.",
	.run = run_replicate,
};
