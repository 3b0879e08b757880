/*
 * config.c — loading entry points, defaults, release, and replica URLs.
 * The YAML reader is config_yaml.c; the keys are config_schema.c and
 * config_replica.c.
 */
#include "common/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config_int.h"
#include "common/pathnorm.h"
#include "common/banned.h"

static const char FALLBACK_PATH[] = "/etc/litevisor.yml";

const char *config_default_path(const char *explicit_path)
{
	const char *p;
	if (explicit_path && *explicit_path)
		return explicit_path;
	if ((p = getenv("LITEVISOR_CONFIG")) && *p)
		return p;
	if ((p = getenv("LITESTREAM_CONFIG")) && *p)
		return p;
	return FALLBACK_PATH;
}

bool config_path_is_fallback(const char *explicit_path)
{
	return config_default_path(explicit_path) == FALLBACK_PATH;
}

void config_replica_defaults(struct cfg_replica *r)
{
	memset(r, 0, sizeof(*r));
	r->type = REPLICA_FILE;
	r->connect_timeout_ms = 1000;
	r->sync_interval_ms = 1000;
	r->snapshot_interval_ms = 0;
	r->retention_ms = 24 * 3600 * 1000LL;
	r->retention_check_interval_ms = 3600 * 1000LL;
	r->retention_grace_ms = 3600 * 1000LL;
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
	cfg->supervisor.stop_grace_ms = 10000;
	cfg->supervisor.flush_timeout_ms = 5000;
	cfg->supervisor.restart = RESTART_NEVER;
	cfg->supervisor.restart_limit = 5;
	cfg->supervisor.restart_delay_ms = 1000;
	cfg->supervisor.restart_delay_max_ms = 60000;
	cfg->health.probe_interval_ms = 5000;
	cfg->health.probe_timeout_ms = 2000;
	cfg->health.fail_after_ms = 0;
	cfg->health.push_interval_ms = 60000;
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
	memset(r, 0, sizeof(*r));
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
	free(cfg->node);
	free(cfg->supervisor.user);
	free(cfg->supervisor.group);
	if (cfg->supervisor.groups)
		for (char **g = cfg->supervisor.groups; *g; g++)
			free(*g);
	free(cfg->supervisor.groups);
	free(cfg->health.port_label);
	free(cfg->health.probe_url);
	free(cfg->health.push_url);
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
	struct stat st;

	memset(cfg, 0, sizeof(*cfg));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "%s: cannot read the config file: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
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
	free(buf);
	return rc;
}

/* ---- replica URLs ---- */

void cfg_clean_prefix(char *p)
{
	char *q = p;
	while (*q == '/')
		q++;
	memmove(p, q, strlen(q) + 1);
	pathnorm_clean(p);
	/* As under a root: "/../x" is "/x", and "/." is "/" (no prefix). */
	while (strncmp(p, "..", 2) == 0 && (p[2] == '/' || p[2] == '\0'))
		memmove(p, p + (p[2] ? 3 : 2), strlen(p + (p[2] ? 3 : 2)) + 1);
	if (strcmp(p, ".") == 0)
		p[0] = '\0';
}

void cfg_url_release(struct cfg_url *u)
{
	free(u->bucket);
	free(u->path);
	free(u->endpoint);
	free(u->region);
	memset(u, 0, sizeof(*u));
}

/* If host ends with ".suffix" (or is suffix), the part before. */
static bool strip_suffix(const char *host, const char *suffix, char *before, size_t len)
{
	size_t hl = strlen(host), sl = strlen(suffix);
	if (hl < sl || strcmp(host + hl - sl, suffix) != 0)
		return false;
	if (hl == sl) {
		before[0] = '\0';
		return true;
	}
	if (host[hl - sl - 1] != '.')
		return false;
	snprintf(before, len, "%.*s", (int)(hl - sl - 1), host);
	return true;
}

/* Split s at its last dot: s keeps the head ("" if none), label gets the last label. */
static void split_last_label(char *s, char *label, size_t len)
{
	char *dot = strrchr(s, '.');
	snprintf(label, len, "%s", dot ? dot + 1 : s);
	if (dot)
		*dot = '\0';
	else
		s[0] = '\0';
}

/*
 * Litestream's host shortcuts for non-AWS services; any other host is an
 * AWS bucket name. The port, if any, goes to the endpoint.
 */
static int parse_s3_host(const char *hostport, struct cfg_url *u)
{
	char host[256], port[16] = "", pre[256], head[256], label[256], ep[320];
	const char *colon = strrchr(hostport, ':');
	const char *scheme = "https";
	const char *bucket = NULL, *region = NULL;

	snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - hostport) : (int)strlen(hostport),
		 hostport);
	if (colon)
		snprintf(port, sizeof(port), "%s", colon + 1);
	ep[0] = '\0';
	if (strip_suffix(host, "localhost", pre, sizeof(pre))) {
		bucket = pre;
		region = "us-east-1";
		scheme = "http";
		snprintf(ep, sizeof(ep), "localhost");
	} else if (strip_suffix(host, "s3.filebase.com", pre, sizeof(pre))) {
		bucket = pre;
		snprintf(ep, sizeof(ep), "s3.filebase.com");
	} else if (strip_suffix(host, "backblazeb2.com", pre, sizeof(pre))) {
		/* BKT.s3.REGION.backblazeb2.com */
		split_last_label(pre, label, sizeof(label));
		if (strip_suffix(pre, "s3", head, sizeof(head))) {
			bucket = head;
			region = label;
			snprintf(ep, sizeof(ep), "s3.%s.backblazeb2.com", label);
		}
	} else if (strip_suffix(host, "scw.cloud", pre, sizeof(pre))) {
		/* BKT.s3.REGION.scw.cloud */
		split_last_label(pre, label, sizeof(label));
		if (strip_suffix(pre, "s3", head, sizeof(head))) {
			bucket = head;
			region = label;
			snprintf(ep, sizeof(ep), "s3.%s.scw.cloud", label);
		}
	} else if (strip_suffix(host, "digitaloceanspaces.com", pre, sizeof(pre))) {
		/* BKT.REGION.digitaloceanspaces.com */
		split_last_label(pre, label, sizeof(label));
		bucket = pre;
		region = label;
		snprintf(ep, sizeof(ep), "%s.digitaloceanspaces.com", label);
	} else if (strip_suffix(host, "linodeobjects.com", pre, sizeof(pre))) {
		/* BKT.REGION.linodeobjects.com */
		split_last_label(pre, label, sizeof(label));
		bucket = pre;
		region = label;
		snprintf(ep, sizeof(ep), "%s.linodeobjects.com", label);
	}
	if (!ep[0]) {
		/* Any other host is an AWS bucket name. */
		u->bucket = strdup(hostport);
		return u->bucket ? 0 : -1;
	}
	char full[400];
	snprintf(full, sizeof(full), "%s://%s%s%s", scheme, ep, port[0] ? ":" : "", port);
	u->force_path_style = true;
	if (!(u->endpoint = strdup(full)))
		return -1;
	if (region && *region && !(u->region = strdup(region)))
		return -1;
	if (bucket && *bucket && !(u->bucket = strdup(bucket)))
		return -1;
	return 0;
}

int cfg_parse_url(const char *url_in, struct cfg_url *u, bool *unsupported, char *why, size_t whylen)
{
	/* user:password@ in a URL is a credential: never echo such a URL. */
	const char *url = strchr(url_in, '@') ? "(not shown: it contains user@)" : url_in;
	memset(u, 0, sizeof(*u));
	*unsupported = false;
	if (url != url_in) {
		const char *sep = strstr(url_in, "://");
		if (sep && !(sep - url_in == 2 && strncmp(url_in, "s3", 2) == 0) &&
		    !(sep - url_in == 4 && strncmp(url_in, "file", 4) == 0)) {
			*unsupported = true;
			snprintf(why, whylen, "replica URL scheme \"%.*s\" is not supported by litevisor",
				 (int)(sep - url_in), url_in);
			return -1;
		}
		snprintf(why, whylen,
			 "a replica URL must not carry credentials (user@host); use access-key-id and "
			 "secret-access-key");
		return -1;
	}
	const char *sep = strstr(url, "://");
	if (!sep) {
		if (url[0] == '/') {
			u->type = REPLICA_FILE;
			if (!(u->path = strdup(url)))
				goto oom;
			return 0;
		}
		snprintf(why, whylen, "invalid replica URL \"%s\" (expected s3://BUCKET/PATH or file:///DIR)",
			 url);
		return -1;
	}
	size_t sl = (size_t)(sep - url);
	const char *rest = sep + 3;
	if (sl == 4 && strncmp(url, "file", 4) == 0) {
		if (rest[0] != '/') {
			snprintf(why, whylen, "invalid file URL \"%s\" (expected file:///ABSOLUTE/DIR)", url);
			return -1;
		}
		u->type = REPLICA_FILE;
		if (!(u->path = strdup(rest)))
			goto oom;
		size_t n = strlen(u->path);
		while (n > 1 && u->path[n - 1] == '/')
			u->path[--n] = '\0';
		return 0;
	}
	if (sl == 2 && strncmp(url, "s3", 2) == 0) {
		const char *slash = strchr(rest, '/');
		size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
		char host[300];
		if (hl == 0 || hl >= sizeof(host) || memchr(rest, '@', hl)) {
			snprintf(why, whylen, "invalid s3 URL \"%s\" (expected s3://BUCKET/PATH)", url);
			return -1;
		}
		memcpy(host, rest, hl);
		host[hl] = '\0';
		u->type = REPLICA_S3;
		if (parse_s3_host(host, u) < 0)
			goto oom;
		if (!u->bucket) {
			snprintf(why, whylen, "s3 URL \"%s\" names no bucket (expected s3://BUCKET.%s/PATH)",
				 url, host);
			cfg_url_release(u);
			return -1;
		}
		if (!(u->path = strdup(slash ? slash : "")))
			goto oom;
		cfg_clean_prefix(u->path);
		return 0;
	}
	*unsupported = true;
	snprintf(why, whylen, "replica URL scheme \"%.*s\" is not supported by litevisor", (int)sl, url);
	return -1;
oom:
	cfg_url_release(u);
	snprintf(why, whylen, "out of memory");
	return -1;
}

int config_replica_from_url(const char *url, struct cfg_replica *r, char *err, size_t errlen)
{
	struct cfg_url u;
	bool unsupported;
	config_replica_defaults(r);
	if (cfg_parse_url(url, &u, &unsupported, err, errlen) < 0)
		return -1;
	r->type = u.type;
	r->path = u.path;
	r->bucket = u.bucket;
	r->endpoint = u.endpoint;
	r->region = u.region;
	r->force_path_style = u.force_path_style || u.endpoint;
	if (!(r->url = strdup(url)) || !(r->name = strdup(u.type == REPLICA_S3 ? "s3" : "file")))
		goto oom;
	if (u.type == REPLICA_S3 && !r->region && !(r->region = strdup("us-east-1")))
		goto oom;
	return 0;
oom:
	config_replica_release(r);
	snprintf(err, errlen, "out of memory");
	return -1;
}
