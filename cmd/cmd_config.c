/*
 * cmd_config.c — `litevisor config`: load and validate a config file, then
 * print the effective configuration (defaults applied, replicas resolved
 * against their stores, credentials redacted) as YAML that loads again.
 */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "common/config.h"
#include "common/duration.h"
#include "common/banned.h"

/* A double-quoted YAML string (always quoted: no surprises with "on", "1e3", ":"). */
static void put_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out);
		else if (*p == '\t')
			fputs("\\t", out);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out, "\\x%02x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void kv_str(FILE *out, int ind, const char *key, const char *v)
{
	if (!v)
		return;
	fprintf(out, "%*s%s: ", ind, "", key);
	put_str(out, v);
	fputc('\n', out);
}

static void kv_dur(FILE *out, int ind, const char *key, int64_t ms)
{
	char buf[64];
	fprintf(out, "%*s%s: %s\n", ind, "", key, duration_format(ms, buf, sizeof(buf)));
}

static void kv_bool(FILE *out, int ind, const char *key, bool b)
{
	fprintf(out, "%*s%s: %s\n", ind, "", key, b ? "true" : "false");
}

static void kv_int(FILE *out, int ind, const char *key, long long n)
{
	fprintf(out, "%*s%s: %lld\n", ind, "", key, n);
}

static void kv_size(FILE *out, int ind, const char *key, int64_t n)
{
	static const char *const units[] = { "TiB", "GiB", "MiB", "KiB" };
	for (int i = 0; i < 4; i++) {
		int64_t m = (int64_t)1 << (10 * (4 - i));
		if (n >= m && n % m == 0) {
			fprintf(out, "%*s%s: %lld%s\n", ind, "", key, (long long)(n / m), units[i]);
			return;
		}
	}
	kv_int(out, ind, key, n);
}

static void kv_secret(FILE *out, int ind, const char *key, const struct cfg_secret *s)
{
	char fkey[64];
	if (s->value)
		fprintf(out, "%*s%s: \"<redacted>\"\n", ind, "", key);
	snprintf(fkey, sizeof(fkey), "%s-file", key);
	kv_str(out, ind, fkey, s->file);
}

static void print_replica(FILE *out, const struct cfg_replica *r)
{
	const int i = 8;
	fprintf(out, "      - name: ");
	put_str(out, r->name);
	fputc('\n', out);
	if (r->store)
		fprintf(out, "%*s# from store %s\n", i, "", r->store);
	else if (r->url)
		fprintf(out, "%*s# from url %s\n", i, "", r->url);
	fprintf(out, "%*stype: %s\n", i, "", r->type == REPLICA_S3 ? "s3" : "file");
	kv_str(out, i, "path", r->path);
	if (r->type == REPLICA_S3) {
		kv_str(out, i, "bucket", r->bucket);
		kv_str(out, i, "endpoint", r->endpoint);
		kv_str(out, i, "region", r->region);
		kv_bool(out, i, "force-path-style", r->force_path_style);
		kv_bool(out, i, "skip-verify", r->skip_verify);
		kv_str(out, i, "ca-file", r->ca_file);
		kv_secret(out, i, "access-key-id", &r->access_key_id);
		kv_secret(out, i, "secret-access-key", &r->secret_access_key);
		kv_secret(out, i, "session-token", &r->session_token);
		kv_dur(out, i, "connect-timeout", r->connect_timeout_ms);
	}
	kv_dur(out, i, "sync-interval", r->sync_interval_ms);
	kv_dur(out, i, "snapshot-interval", r->snapshot_interval_ms);
	kv_dur(out, i, "retention", r->retention_ms);
	kv_dur(out, i, "retention-check-interval", r->retention_check_interval_ms);
	kv_dur(out, i, "retention-grace", r->retention_grace_ms);
	kv_str(out, i, "node", r->node);
	kv_bool(out, i, "restore-only", r->restore_only);
}

static void print_config(FILE *out, const struct config *c)
{
	static const char *const levels[] = { "debug", "info", "warn", "error" };
	static const char *const modes[] = { "freshest-reachable", "all", "quorum" };
	static const char *const existing[] = { "newest-wins", "keep-local" };
	static const char *const verify[] = { "quick", "integrity", "none" };
	static const char *const restart[] = { "never", "on-failure" };

	fprintf(out, "# effective configuration of %s (defaults applied, credentials redacted)\n",
		c->file ? c->file : "<config>");
	kv_str(out, 0, "addr", c->addr);
	kv_str(out, 0, "exec", c->exec);
	kv_str(out, 0, "node", c->node);
	fprintf(out, "logging:\n  level: %s\n  type: %s\n", levels[c->log_level],
		c->log_json ? "json" : "text");

	const struct cfg_restore *r = &c->restore;
	fprintf(out, "restore:\n");
	kv_dur(out, 2, "probe-timeout", r->probe_timeout_ms);
	fprintf(out, "  mode: %s\n", modes[r->mode]);
	if (r->mode == RESTORE_QUORUM)
		kv_int(out, 2, "quorum", r->quorum);
	kv_dur(out, 2, "wait-timeout", r->wait_timeout_ms);
	kv_bool(out, 2, "allow-empty-when-unreachable", r->allow_empty_unreachable);
	fprintf(out, "  existing: %s\n  verify: %s\n", existing[r->existing], verify[r->verify]);
	kv_int(out, 2, "parallelism", r->parallelism);
	kv_dur(out, 2, "clock-skew", r->clock_skew_ms);

	const struct cfg_supervisor *s = &c->supervisor;
	fprintf(out, "supervisor:\n");
	kv_str(out, 2, "user", s->user);
	kv_str(out, 2, "group", s->group);
	if (s->groups) {
		fprintf(out, "  groups: [");
		for (char **g = s->groups; *g; g++) {
			if (g != s->groups)
				fputs(", ", out);
			put_str(out, *g);
		}
		fprintf(out, "]\n");
	}
	kv_dur(out, 2, "stop-grace", s->stop_grace_ms);
	kv_dur(out, 2, "flush-timeout", s->flush_timeout_ms);
	kv_bool(out, 2, "signal-group", s->signal_group);
	kv_bool(out, 2, "new-process-group", s->new_process_group);
	fprintf(out, "  restart: %s\n", restart[s->restart]);
	kv_int(out, 2, "restart-limit", s->restart_limit);
	kv_dur(out, 2, "restart-delay", s->restart_delay_ms);
	kv_dur(out, 2, "restart-delay-max", s->restart_delay_max_ms);

	const struct cfg_health *h = &c->health;
	fprintf(out, "health:\n");
	kv_str(out, 2, "port-label", h->port_label);
	kv_str(out, 2, "probe-url", h->probe_url);
	kv_dur(out, 2, "probe-interval", h->probe_interval_ms);
	kv_dur(out, 2, "probe-timeout", h->probe_timeout_ms);
	kv_dur(out, 2, "fail-after", h->fail_after_ms);
	/* The push URL ends in a token that lets anyone report "up": keep it out of the output. */
	if (h->push_url)
		fprintf(out, "  push-url: \"<redacted>\"\n");
	kv_dur(out, 2, "push-interval", h->push_interval_ms);

	fprintf(out, "dbs:%s\n", c->ndbs ? "" : " []");
	for (size_t i = 0; i < c->ndbs; i++) {
		const struct cfg_db *d = &c->dbs[i];
		fprintf(out, "  - path: ");
		put_str(out, d->path);
		fputc('\n', out);
		kv_str(out, 4, "name", d->name);
		kv_str(out, 4, "meta-path", d->meta_path);
		kv_str(out, 4, "env", d->env);
		kv_bool(out, 4, "optional", d->optional);
		kv_dur(out, 4, "monitor-interval", d->monitor_interval_ms);
		kv_dur(out, 4, "checkpoint-interval", d->checkpoint_interval_ms);
		kv_int(out, 4, "min-checkpoint-page-count", d->min_checkpoint_page_count);
		kv_int(out, 4, "max-checkpoint-page-count", d->max_checkpoint_page_count);
		kv_int(out, 4, "truncate-page-count", d->truncate_page_count);
		kv_size(out, 4, "max-backlog", d->max_backlog_bytes);
		fprintf(out, "    replicas:%s\n", d->nreplicas ? "" : " []");
		for (size_t j = 0; j < d->nreplicas; j++)
			print_replica(out, &d->replicas[j]);
	}
}

static int run_config(int argc, char **argv)
{
	const char *path = NULL;
	bool no_expand = false, help;
	const struct flag flags[] = {
		{ "config", FLAG_STRING, &path, "PATH",
		  "config file (default $LITEVISOR_CONFIG, $LITESTREAM_CONFIG, /etc/litevisor.yml)" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in config values" },
		{ 0 },
	};
	int i = cli_parse(&cmd_config, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	if (i < argc)
		return cli_usage_error(&cmd_config, "unexpected argument \"%s\"", argv[i]);

	struct config cfg;
	struct config_options opt = { .no_expand_env = no_expand };
	char err[1024];
	if (config_load(config_default_path(path), &opt, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "litevisor config: %s\n", err);
		return EXIT_USAGE;
	}
	print_config(stdout, &cfg);
	config_release(&cfg);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("litevisor config: stdout");
		return EXIT_TEMPFAIL;
	}
	return 0;
}

const struct command cmd_config = {
	.name = "config",
	.summary = "validate a config file and print the effective configuration",
	.usage = "litevisor config [-config PATH] [-no-expand-env]",
	.description =
		"Loads the config file exactly as `run` would and prints it back as YAML with every\n"
		"default filled in, replicas resolved against their stores, and credentials shown as\n"
		"\"<redacted>\". A bad config prints FILE:LINE:COL: KEY: problem and exits 100.",
	.run = run_config,
};
