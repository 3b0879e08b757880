/*
 * cmd_config.c — `litevisor config`: load and validate a config file, then
 * print the effective configuration (defaults applied, replicas resolved
 * against their stores, credentials redacted) as YAML that loads again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/source.h"
#include "supervisor/child.h"
#include "common/words.h"
#include "common/config.h"
#include "common/secret.h"
#include "consul/client.h"
#include "common/duration.h"
#include "common/bech32.h"
#include "common/banned.h"

/* Where the effective config goes, and how its values must be written to load back. */
struct printer {
	FILE *f;
	bool expand_env; /* values will be env-expanded when loaded: write "$" as "$$" */
};

/*
 * A double-quoted YAML string (always quoted: no surprises with "on", "1e3",
 * ":") that loads back as exactly s. With env expansion on, "$" is written
 * "$$": a path "/a$b.db" (written "/a$$b.db" in the file) printed as is would
 * load back as "/a.db". YAML's Unicode line breaks are escaped, as they would
 * be folded into spaces.
 */
static void put_str(struct printer *out, const char *s)
{
	fputc('"', out->f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '$' && out->expand_env)
			fputs("$$", out->f);
		else if (*p == '"' || *p == '\\')
			fprintf(out->f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", out->f);
		else if (*p == '\t')
			fputs("\\t", out->f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(out->f, "\\x%02x", *p);
		else if (p[0] == 0xc2 && p[1] == 0x85)
			fputs("\\N", out->f), p++;
		else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
			fputs(p[2] == 0xa8 ? "\\L" : "\\P", out->f), p += 2;
		else
			fputc(*p, out->f);
	}
	fputc('"', out->f);
}

/* Text inside a "# …" comment: anything that could end the line becomes "?". */
static void put_comment(struct printer *out, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			fputc('?', out->f);
		else if (p[0] == 0xc2 && p[1] == 0x85)
			fputc('?', out->f), p++;
		else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9))
			fputc('?', out->f), p += 2;
		else
			fputc(*p, out->f);
	}
}

static void kv_str(struct printer *out, int ind, const char *key, const char *v)
{
	if (!v)
		return;
	fprintf(out->f, "%*s%s: ", ind, "", key);
	put_str(out, v);
	fputc('\n', out->f);
}

/* A URL with its user:password@ (if any) replaced: a probe may carry basic auth. */
static void print_url_redacted(struct printer *out, int ind, const char *key, const char *url)
{
	const char *scheme = url ? strstr(url, "://") : NULL;
	const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
	const char *slash = scheme ? strchr(scheme + 3, '/') : NULL;
	if (!at || (slash && slash < at)) {
		kv_str(out, ind, key, url);
		return;
	}
	char buf[2048];
	snprintf(buf, sizeof(buf), "%.*s" CFG_REDACTED "%s", (int)(scheme + 3 - url), url, at);
	kv_str(out, ind, key, buf);
}


/*
 * exec, which loads as shell words: envexpand_words expands nothing inside
 * '…', so a "$" there printed as "$$" would come back as "$$". With expansion
 * on, exec is printed as its words re-quoted (words_quote puts every "$" inside
 * '…'), so it loads back as the same argv; without, it is printed as written.
 */
static void kv_exec(struct printer *out, const char *exec)
{
	char **argv = NULL, err[128], *quoted = NULL;
	struct printer literal = { .f = out->f, .expand_env = false };

	if (!exec)
		return;
	if (!out->expand_env || words_split(exec, &argv, err, sizeof(err)) < 0 ||
	    !(quoted = words_quote(argv))) {
		/* out of memory (the load refused an exec that does not split): as given */
		kv_str(out, 0, "exec", exec);
		goto out;
	}
	fputs("exec: ", out->f);
	put_str(&literal, quoted);
	fputc('\n', out->f);
out:
	free(quoted);
	words_free(argv);
}

static void kv_dur(struct printer *out, int ind, const char *key, int64_t ms)
{
	char buf[64];
	fprintf(out->f, "%*s%s: %s\n", ind, "", key, duration_format(ms, buf, sizeof(buf)));
}

static void kv_bool(struct printer *out, int ind, const char *key, bool b)
{
	fprintf(out->f, "%*s%s: %s\n", ind, "", key, b ? "true" : "false");
}

static void kv_int(struct printer *out, int ind, const char *key, long long n)
{
	fprintf(out->f, "%*s%s: %lld\n", ind, "", key, n);
}

static void kv_size(struct printer *out, int ind, const char *key, int64_t n)
{
	static const char *const units[] = { "TiB", "GiB", "MiB", "KiB" };
	for (int i = 0; i < 4; i++) {
		int64_t m = (int64_t)1 << (10 * (4 - i));
		if (n >= m && n % m == 0) {
			fprintf(out->f, "%*s%s: %lld%s\n", ind, "", key, (long long)(n / m), units[i]);
			return;
		}
	}
	kv_int(out, ind, key, n);
}

/* A flow list, ["a", "b"]; nothing for NULL. */
static void kv_list(struct printer *out, int ind, const char *key, char **l)
{
	if (!l)
		return;
	fprintf(out->f, "%*s%s: [", ind, "", key);
	for (char **p = l; *p; p++) {
		if (p != l)
			fputs(", ", out->f);
		put_str(out, *p);
	}
	fprintf(out->f, "]\n");
}

static void kv_secret(struct printer *out, int ind, const char *key, const struct cfg_secret *s)
{
	char fkey[64];
	if (s->value)
		fprintf(out->f, "%*s%s: \"" CFG_REDACTED "\"\n", ind, "", key);
	snprintf(fkey, sizeof(fkey), "%s-file", key);
	kv_str(out, ind, fkey, s->file);
}

static void print_replica(struct printer *out, const struct cfg_replica *r)
{
	const int i = 8;
	fprintf(out->f, "      - name: ");
	put_str(out, r->name);
	fputc('\n', out->f);
	if (r->store || r->url) {
		fprintf(out->f, "%*s# from %s ", i, "", r->store ? "store" : "url");
		put_comment(out, r->store ? r->store : r->url);
		fputc('\n', out->f);
	}
	fprintf(out->f, "%*stype: %s\n", i, "", r->type == REPLICA_S3 ? "s3" : "file");
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
		kv_dur(out, i, "idle-timeout", r->idle_timeout_ms);
	}
	kv_dur(out, i, "sync-interval", r->sync_interval_ms);
	kv_dur(out, i, "snapshot-interval", r->snapshot_interval_ms);
	kv_dur(out, i, "retention", r->retention_ms);
	kv_dur(out, i, "retention-check-interval", r->retention_check_interval_ms);
	kv_dur(out, i, "retention-grace", r->retention_grace_ms);
	kv_dur(out, i, "writer-check-interval", r->writer_check_interval_ms);
	kv_str(out, i, "node", r->node);
	kv_bool(out, i, "restore-only", r->restore_only);
	if (r->age.set) {
		/* identities are secrets: counted, never printed (nor their public keys) */
		fprintf(out->f, "%*sage:\n%*s# identities: %zu, redacted\n", i, "", i + 2, "",
			r->age.nidentities);
		if (r->age.nrecipients)
			fprintf(out->f, "%*srecipients:\n", i + 2, "");
		for (size_t k = 0; k < r->age.nrecipients; k++) {
			char rcpt[100];
			if (bech32_encode("age", r->age.recipients[k], 32, false, rcpt, sizeof(rcpt)) > 0)
				fprintf(out->f, "%*s- %s\n", i + 4, "", rcpt);
		}
	}
}

/* Only when something of it is in use: its defaults alone say nothing. */
static void print_consul(struct printer *out, const struct cfg_consul *c)
{
	if (!c->service_name && !c->lock_key && !c->addr && !secret_is_set(&c->token) && !c->ca_file)
		return;
	fprintf(out->f, "consul:\n");
	kv_str(out, 2, "addr", c->addr);
	if (!c->addr) /* read at start: this file would freeze the environment's value */
		fprintf(out->f, "  # addr: $CONSUL_HTTP_ADDR, else 127.0.0.1:8500\n");
	kv_secret(out, 2, "token", &c->token);
	if (!secret_is_set(&c->token))
		fprintf(out->f, "  # token: $CONSUL_HTTP_TOKEN or $CONSUL_HTTP_TOKEN_FILE, else none\n");
	kv_str(out, 2, "ca-file", c->ca_file);
	kv_dur(out, 2, "timeout", c->timeout_ms);
	if (c->service_name) {
		fprintf(out->f, "  service:\n");
		kv_str(out, 4, "name", c->service_name);
		kv_str(out, 4, "id", c->service_id);
		kv_str(out, 4, "address", c->service_address);
		if (c->service_port)
			kv_int(out, 4, "port", c->service_port);
		else
			kv_str(out, 4, "port", c->service_port_label);
		kv_list(out, 4, "tags", c->service_tags);
		if (c->service_meta) {
			fprintf(out->f, "    meta:\n");
			for (char **m = c->service_meta; m[0] && m[1]; m += 2)
				kv_str(out, 6, m[0], m[1]);
		}
		kv_dur(out, 4, "check-ttl", c->check_ttl_ms);
		kv_dur(out, 4, "deregister-critical-after", c->deregister_after_ms);
	}
	if (c->lock_key) {
		fprintf(out->f, "  lock:\n");
		kv_str(out, 4, "key", c->lock_key);
		kv_dur(out, 4, "ttl", c->lock_ttl_ms);
		kv_dur(out, 4, "lock-delay", c->lock_delay_ms);
		kv_dur(out, 4, "wait", c->lock_wait_ms);
	}
}

static void print_config(struct printer *out, const struct config *c)
{
	static const char *const levels[] = { "debug", "info", "warn", "error" };
	static const char *const modes[] = { "freshest-reachable", "all", "quorum" };
	static const char *const existing[] = { "newest-wins", "keep-local" };
	static const char *const verify[] = { "quick", "integrity", "none" };
	static const char *const restart[] = { "never", "on-failure" };

	fputs("# effective configuration of ", out->f);
	put_comment(out, c->file ? c->file : "<config>");
	fputs(" (defaults applied, credentials redacted)\n", out->f);
	if (!out->expand_env)
		fputs("# values as written, \"$\" unescaped: load this with -no-expand-env\n", out->f);
	kv_str(out, 0, "addr", c->addr);
	kv_exec(out, c->exec);
	kv_str(out, 0, "node", c->node);
	fprintf(out->f, "logging:\n  level: %s\n  type: %s\n", levels[c->log_level],
		c->log_json ? "json" : "text");

	const struct cfg_restore *r = &c->restore;
	fprintf(out->f, "restore:\n");
	kv_dur(out, 2, "probe-timeout", r->probe_timeout_ms);
	fprintf(out->f, "  mode: %s\n", modes[r->mode]);
	if (r->mode == RESTORE_QUORUM)
		kv_int(out, 2, "quorum", r->quorum);
	kv_dur(out, 2, "wait-timeout", r->wait_timeout_ms);
	kv_bool(out, 2, "allow-empty-when-unreachable", r->allow_empty_unreachable);
	fprintf(out->f, "  existing: %s\n  verify: %s\n", existing[r->existing], verify[r->verify]);
	kv_int(out, 2, "parallelism", r->parallelism);
	kv_dur(out, 2, "clock-skew", r->clock_skew_ms);
	kv_dur(out, 2, "handover-wait", r->handover_wait_ms);
	if (r->keep_replaced > 0)
		kv_int(out, 2, "keep-replaced", r->keep_replaced);

	const struct cfg_supervisor *s = &c->supervisor;
	fprintf(out->f, "supervisor:\n");
	kv_str(out, 2, "user", s->user);
	kv_str(out, 2, "group", s->group);
	kv_list(out, 2, "groups", s->groups);
	kv_dur(out, 2, "stop-grace", s->stop_grace_ms);
	kv_dur(out, 2, "flush-timeout", s->flush_timeout_ms);
	kv_bool(out, 2, "signal-group", s->signal_group);
	kv_bool(out, 2, "new-process-group", s->new_process_group);
	fprintf(out->f, "  restart: %s\n", restart[s->restart]);
	kv_int(out, 2, "restart-limit", s->restart_limit);
	kv_dur(out, 2, "restart-delay", s->restart_delay_ms);
	kv_dur(out, 2, "restart-delay-max", s->restart_delay_max_ms);
	kv_dur(out, 2, "restart-reset", s->restart_reset_ms);

	const struct cfg_health *h = &c->health;
	fprintf(out->f, "health:\n");
	kv_str(out, 2, "port-label", h->port_label);
	print_url_redacted(out, 2, "probe-url", h->probe_url);
	kv_dur(out, 2, "probe-interval", h->probe_interval_ms);
	kv_dur(out, 2, "probe-timeout", h->probe_timeout_ms);
	kv_bool(out, 2, "probe-skip-verify", h->probe_skip_verify);
	kv_dur(out, 2, "fail-after", h->fail_after_ms);
	/* The push URL ends in a token that lets anyone report "up": keep it out of the output. */
	if (h->push_url)
		fprintf(out->f, "  push-url: \"" CFG_REDACTED "\"\n");
	kv_dur(out, 2, "push-interval", h->push_interval_ms);

	print_consul(out, &c->consul);
	fprintf(out->f, "dbs:%s\n", c->ndbs ? "" : " []");
	for (size_t i = 0; i < c->ndbs; i++) {
		const struct cfg_db *d = &c->dbs[i];
		fprintf(out->f, "  - path: ");
		put_str(out, d->path);
		fputc('\n', out->f);
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
		fprintf(out->f, "    replicas:%s\n", d->nreplicas ? "" : " []");
		for (size_t j = 0; j < d->nreplicas; j++)
			print_replica(out, &d->replicas[j]);
	}
}

static int run_config(int argc, char **argv)
{
	struct config cfg;
	const char *file;
	bool no_expand;
	int code;
	char err[1024];
	if (cmd_config_only(&cmd_config, argc, argv, &cfg, &file, &no_expand, &code) < 0)
		return code;
	if ((code = cmd_refuse_blank_dbs(&cmd_config, &cfg, file))) {
		config_release(&cfg);
		return code;
	}
	/* what run refuses before starting, on this machine: users and groups that do not exist */
	struct child_creds creds;
	if (child_creds_resolve(&cfg, &creds, err, sizeof(err)) < 0) {
		fprintf(stderr, "litevisor config: %s\n", err);
		config_release(&cfg);
		return EXIT_USAGE;
	}
	child_creds_release(&creds);
	/* and a Consul agent address or token file it could not use (CONSUL_HTTP_* included) */
	if ((cfg.consul.lock_key || cfg.consul.service_name) &&
	    consul_agent_check(&cfg.consul, err, sizeof(err)) < 0) {
		fprintf(stderr, "litevisor config: %s: %s\n", file, err);
		config_release(&cfg);
		return EXIT_USAGE;
	}
	/* Printed to load back the same way it was loaded (with or without expansion). */
	struct printer out = { .f = stdout, .expand_env = !no_expand };
	print_config(&out, &cfg);
	config_release(&cfg);
	return 0; /* main() checks that the output reached stdout */
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
