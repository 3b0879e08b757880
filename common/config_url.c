/*
 * config_url.c — replica URLs taken apart as Litestream v0.3.13 does
 * (cmd/litestream/main.go ParseReplicaURL, s3.ParseHost), for config_load's
 * url: keys and for the commands that take a REPLICA_URL argument.
 */
#include "common/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config_int.h"
#include "common/pathnorm.h"
#include "common/banned.h"


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
