/*
 * config.c — loading entry points, defaults and release.
 * The YAML reader is config_yaml.c; the keys are config_schema.c and
 * config_replica.c; replica URLs are config_url.c.
 */
#include "common/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config_int.h"
#include "common/fsutil.h"
#include "common/banned.h"

/*
 * The files read when nothing names one: ours, else Litestream's (a node
 * switching over). Arrays, not literals: config_path_is_fallback() tells
 * them by address, and a caller's equal literal may share a literal's.
 */
static const char SYSTEM_PATH[] = "/etc/litevisor.yml";
static const char LITESTREAM_PATH[] = "/etc/litestream.yml";
static const char *system_path = SYSTEM_PATH;
static const char *litestream_path = LITESTREAM_PATH;

void config_set_system_paths(const char *litevisor, const char *litestream)
{
	system_path = litevisor ? litevisor : SYSTEM_PATH;
	litestream_path = litestream ? litestream : LITESTREAM_PATH;
}

/*
 * A variable consulted for the file's name: unset is "look further", set but
 * empty is an error (a Nomad env block or `docker run -e` that rendered empty).
 */
static int from_env(const char *var, const char **path, char *why, size_t len)
{
	const char *p = getenv(var);
	if (!p)
		return 0;
	if (!*p) {
		snprintf(why, len, "$%s is set but empty: name the config file in it, or unset it", var);
		return -1;
	}
	*path = p;
	return 1;
}

const char *config_default_path(const char *explicit_path, char *why, size_t len)
{
	const char *p = NULL;
	int rc;
	if (explicit_path && !*explicit_path) {
		snprintf(why, len, "-config: a config file is required (the path is empty)");
		return NULL;
	}
	if (explicit_path)
		return explicit_path;
	if ((rc = from_env("LITEVISOR_CONFIG", &p, why, len)) ||
	    (rc = from_env("LITESTREAM_CONFIG", &p, why, len)))
		return rc < 0 ? NULL : p;
	/* Litestream's default, there (a link to nowhere too: the load names it, QA90 D2) */
	if (config_path_absent(system_path) && !config_path_absent(litestream_path))
		return litestream_path;
	return system_path;
}

bool config_path_absent(const char *path)
{
	struct stat st;
	return lstat(path, &st) < 0 && errno == ENOENT;
}

bool config_path_is_fallback(const char *explicit_path)
{
	char why[160];
	const char *p = config_default_path(explicit_path, why, sizeof(why));
	return p == system_path || p == litestream_path;
}

void config_replica_defaults(struct cfg_replica *r)
{
	memset(r, 0, sizeof(*r));
	r->type = REPLICA_FILE;
	r->connect_timeout_ms = 1000;
	r->idle_timeout_ms = 5000;
	r->sync_interval_ms = 1000;
	r->snapshot_interval_ms = 0;
	r->retention_ms = 24 * 3600 * 1000LL;
	r->retention_check_interval_ms = 3600 * 1000LL;
	r->retention_grace_ms = 3600 * 1000LL;
	r->writer_check_interval_ms = 60 * 1000LL;
}

void config_db_defaults(struct cfg_db *db)
{
	memset(db, 0, sizeof(*db));
	db->monitor_interval_ms = 1000;
	db->checkpoint_interval_ms = 60000;
	db->min_checkpoint_page_count = 1000;
	db->max_checkpoint_page_count = 10000;
	db->truncate_page_count = 500000;
	db->max_backlog_bytes = 1024LL * 1024 * 1024;
}

void config_defaults(struct config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->log_level = LOG_INFO;
	cfg->log_json = false;
	cfg->restore.probe_timeout_ms = 1000;
	cfg->restore.mode = RESTORE_FRESHEST_REACHABLE;
	cfg->restore.quorum = 0;
	cfg->restore.wait_timeout_ms = 30000;
	cfg->restore.allow_empty_unreachable = false;
	cfg->restore.existing = EXISTING_NEWEST_WINS;
	cfg->restore.verify = VERIFY_QUICK;
	cfg->restore.parallelism = 8;
	cfg->restore.clock_skew_ms = 10000;
	cfg->restore.handover_wait_ms = 20000;
	cfg->supervisor.stop_grace_ms = 10000;
	cfg->supervisor.flush_timeout_ms = 5000;
	cfg->supervisor.restart = RESTART_NEVER;
	cfg->supervisor.restart_limit = 5;
	cfg->supervisor.restart_delay_ms = 1000;
	cfg->supervisor.restart_delay_max_ms = 60000;
	cfg->supervisor.restart_reset_ms = 10000;
	cfg->health.probe_interval_ms = 5000;
	cfg->health.probe_timeout_ms = 2000;
	cfg->health.fail_after_ms = 0;
	cfg->health.push_interval_ms = 60000;
	cfg->consul.timeout_ms = 5000;
	cfg->consul.check_ttl_ms = 30000;
	cfg->consul.deregister_after_ms = 600000;
	cfg->consul.lock_ttl_ms = 15000;
	/* the stop's time + 1 s; recomputed at load from the supervisor's settings */
	cfg->consul.lock_delay_ms = cfg->supervisor.stop_grace_ms + cfg->supervisor.flush_timeout_ms + 1000;
	cfg->consul.lock_wait_ms = 300000;
}

static void secret_free(struct cfg_secret *s)
{
	if (s->value) {
		/* Do not leave credentials in freed heap memory. */
		explicit_bzero(s->value, strlen(s->value));
		free(s->value);
	}
	free(s->file);
	s->value = s->file = NULL;
}

void config_replica_release(struct cfg_replica *r)
{
	free(r->name);
	free(r->url);
	free(r->path);
	free(r->bucket);
	free(r->endpoint);
	free(r->region);
	free(r->ca_file);
	secret_free(&r->access_key_id);
	secret_free(&r->secret_access_key);
	secret_free(&r->session_token);
	free(r->store);
	free(r->node);
	if (r->age.identities)
		explicit_bzero(r->age.identities, r->age.nidentities * sizeof(*r->age.identities));
	free(r->age.identities);
	free(r->age.recipients);
	memset(r, 0, sizeof(*r));
}

static void free_list(char **l)
{
	if (l)
		for (char **p = l; *p; p++)
			free(*p);
	free(l);
}

static void consul_release(struct cfg_consul *c)
{
	free(c->addr);
	secret_free(&c->token);
	free(c->ca_file);
	free(c->service_name);
	free(c->service_id);
	free(c->service_address);
	free(c->service_port_label);
	free_list(c->service_tags);
	free_list(c->service_meta);
	free(c->lock_key);
}

void config_release(struct config *cfg)
{
	for (size_t i = 0; i < cfg->ndbs; i++) {
		struct cfg_db *db = &cfg->dbs[i];
		for (size_t j = 0; j < db->nreplicas; j++)
			config_replica_release(&db->replicas[j]);
		free(db->replicas);
		free(db->path);
		free(db->name);
		free(db->meta_path);
		free(db->env);
	}
	free(cfg->dbs);
	free(cfg->file);
	free(cfg->addr);
	free(cfg->exec);
	free(cfg->exec_unset);
	free(cfg->node);
	free(cfg->supervisor.user);
	free(cfg->supervisor.group);
	free_list(cfg->supervisor.groups);
	free(cfg->supervisor.groups_at);
	free(cfg->health.port_label);
	free(cfg->health.probe_url);
	free(cfg->health.push_url);
	consul_release(&cfg->consul);
	memset(cfg, 0, sizeof(*cfg));
}

static int load_text(const char *text, size_t len, const char *name, const char *file,
		     const struct config_options *opt, struct config *cfg, char *err, size_t errlen)
{
	static const struct config_options none;
	struct cfg_err e = { .name = name, .buf = err, .len = errlen };
	struct cfg_doc doc = { 0 };
	int rc = -1;

	if (errlen)
		err[0] = '\0';
	memset(cfg, 0, sizeof(*cfg));
	if (cfg_yaml_parse(text, len, &doc, &e) < 0)
		goto out;
	if (cfg_schema_load(&doc, opt ? opt : &none, cfg, &e) < 0)
		goto out;
	if (file && !(cfg->file = strdup(file))) {
		snprintf(err, errlen, "%s: out of memory", name);
		goto out;
	}
	rc = 0;
out:
	cfg_doc_free(&doc);
	if (rc < 0)
		config_release(cfg);
	return rc;
}

int config_load_string(const char *text, const char *name, const struct config_options *opt,
		       struct config *cfg, char *err, size_t errlen)
{
	return load_text(text, strlen(text), name ? name : "<config>", NULL, opt, cfg, err, errlen);
}

int config_load(const char *path, const struct config_options *opt, struct config *cfg,
		char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int fd = -1, rc = -1;
	char why[160];

	memset(cfg, 0, sizeof(*cfg));
	/* "~/c.yml", as Litestream expands a config file's name (messages keep it as given) */
	char *home = NULL;
	if (path[0] == '~' && (path[1] == '/' || !path[1]) &&
	    !(home = config_abs_path(path, why, sizeof(why)))) {
		snprintf(err, errlen, "%s: %s", path, why);
		return -1;
	}
	/*
	 * A regular file only: a FIFO or a terminal can block the read for good,
	 * and run, replicate and restore load the config with TERM already blocked.
	 */
	fd = fs_open_regular(home ? home : path, why, sizeof(why));
	free(home);
	if (fd < 0) {
		/* the default, missing: say where else it was looked for and how to name one */
		bool fallback = path == system_path && errno == ENOENT && config_path_absent(path);
		snprintf(err, errlen, "%s: cannot read the config file: %s%s%s%s", path, why,
			 fallback ? " (nor is there " : "", fallback ? litestream_path : "",
			 fallback ? "; name one with -config or $LITEVISOR_CONFIG)" : "");
		goto out;
	}
	buf = malloc(CFG_MAX_FILE + 1);
	if (!buf) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, CFG_MAX_FILE + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: cannot read the config file: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > CFG_MAX_FILE) {
			snprintf(err, errlen, "%s: larger than %d bytes; is this really the config file?",
				 path, CFG_MAX_FILE);
			goto out;
		}
	}
	buf[len] = '\0';
	if (strlen(buf) != len) {
		snprintf(err, errlen, "%s: contains a NUL byte; not a YAML text file", path);
		goto out;
	}
	rc = load_text(buf, len, path, path, opt, cfg, err, errlen);
out:
	if (fd >= 0)
		close(fd);
	if (buf) /* it holds every secret written inline: none stays in freed memory */
		explicit_bzero(buf, len);
	free(buf);
	return rc;
}
