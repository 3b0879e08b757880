/*
 * config_consul.c — the `consul:` section: where the agent is, the service
 * registration and the single-writer lock (consul/README.md). Bounds are
 * Consul's own (api-docs/session.mdx, agent/service.mdx), so a value Consul
 * would refuse at start is refused here, naming the key.
 */
#include "common/config_walk.h"

#include <ctype.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/duration.h"
#include "common/utf8.h"
#include "common/banned.h"

#define C(field) offsetof(struct cfg_consul, field)
#define SERVICE_TEXT_MAX 256 /* name, ID: leaves room for "-<host>-<pid>" in CONSUL_ID_MAX */

int cfg_consul_addr_check(const char *s, char *why, size_t whylen)
{
	/* user:password@ is a credential: refused before any message could echo the value */
	if (strchr(s, '@')) {
		snprintf(why, whylen, "must not carry credentials (user@HOST): the agent's address "
			 "only, HOST:PORT or http(s)://HOST:PORT; give the ACL token as token or token-file");
		return -1;
	}
	const char *hp = s;
	if (strncmp(s, "http://", 7) == 0)
		hp = s + 7;
	else if (strncmp(s, "https://", 8) == 0)
		hp = s + 8;
	else if (strstr(s, "://")) {
		/* unix:// would need a socket path option: not offered */
		snprintf(why, whylen, "expected http://HOST:PORT, https://HOST:PORT or HOST:PORT, got \"%s\"",
			 s);
		return -1;
	}
	if (!*hp || strchr(hp, '/') || strchr(hp, '?')) {
		snprintf(why, whylen, "expected the agent's address only (HOST:PORT), got \"%s\"", s);
		return -1;
	}
	/* the port: after "[v6]", else after the last ':' */
	const char *port = NULL, *rb = *hp == '[' ? strchr(hp, ']') : NULL;
	if (rb)
		port = rb[1] == ':' ? rb + 2 : rb[1] ? rb + 1 : NULL;
	else if (strrchr(hp, ':'))
		port = strrchr(hp, ':') + 1;
	if (port) {
		size_t n = strspn(port, "0123456789");
		long p = n && n <= 5 && !port[n] ? strtol(port, NULL, 10) : 0;
		if (p < 1 || p > 65535) {
			snprintf(why, whylen, "\"%s\": the port is not a number from 1 to 65535", s);
			return -1;
		}
	} else if (hp == s) {
		/* libcurl would try port 80; an agent listens on 8500 */
		snprintf(why, whylen, "\"%s\" has no port: HOST:PORT (the agent's HTTP port, 8500 by "
			 "default), or http(s)://HOST for the scheme's own port", s);
		return -1;
	}
	/* ":8500" (a "${CONSUL_HOST}:8500" left unset) fails every request, for lock.wait, then 111 */
	const char *bad = cfg_authority_problem(hp, strlen(hp));
	if (bad) {
		snprintf(why, whylen, "\"%s\" %s (HOST:PORT, [IPV6]:PORT or http(s)://HOST[:PORT])", s, bad);
		return -1;
	}
	return 0;
}

static int set_addr_url(struct walk *w, const struct field *f, const struct cfg_node *v,
			const char *path, void *target)
{
	struct cfg_consul *c = target;
	char *s = NULL, why[600];
	if (walk_required(w, v, path, &s) < 0)
		return -1;
	if (cfg_consul_addr_check(s, why, sizeof(why)) < 0) {
		cfg_error(w->e, v, path, "%s", why);
		free(s);
		return -1;
	}
	free(c->addr);
	c->addr = s;
	return 0;
}

/* A number, or a Nomad port label whose port the environment gives at start. */
static int set_port(struct walk *w, const struct field *f, const struct cfg_node *v,
		    const char *path, void *target)
{
	struct cfg_consul *c = target;
	char *s = NULL;
	if (walk_required(w, v, path, &s) < 0)
		return -1;
	if (strspn(s, "0123456789") == strlen(s)) {
		long n = strlen(s) <= 5 ? strtol(s, NULL, 10) : 0;
		if (n < 1 || n > 65535) {
			cfg_error(w->e, v, path, "%s is not a port (1 to 65535)", s);
			free(s);
			return -1;
		}
		c->service_port = (int)n;
		free(c->service_port_label);
		c->service_port_label = NULL;
		free(s);
		return 0;
	}
	/* a Nomad port label: [a-zA-Z0-9_]+, what its jobspec takes ("-5" is no label) */
	for (const char *p = s; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_') {
			cfg_error(w->e, v, path,
				  "\"%s\" is neither a port number nor a Nomad port label (letters, digits and _)", s);
			free(s);
			return -1;
		}
	}
	c->service_port = 0;
	free(c->service_port_label);
	c->service_port_label = s;
	return 0;
}

static int set_tags(struct walk *w, const struct field *f, const struct cfg_node *v,
		    const char *path, void *target)
{
	return walk_string_list(w, v, path, "a list of tags", &((struct cfg_consul *)target)->service_tags);
}

/* Consul's rules for service meta keys (agent/structs: ValidateServiceMetadata). */
#define META_MAX_PAIRS 64
#define META_KEY_MAX 128
#define META_VALUE_MAX 512

static int set_meta(struct walk *w, const struct field *f, const struct cfg_node *v,
		    const char *path, void *target)
{
	struct cfg_consul *c = target;
	char kp[340];
	if (cfg_node_is_null(v))
		return 0;
	if (v->kind != CN_MAP) {
		cfg_error(w->e, v, path, "expected a map of key → value, got %s", walk_kind_name(v));
		return -1;
	}
	size_t n = v->nitems / 2;
	if (n > META_MAX_PAIRS) {
		cfg_error(w->e, v, path, "%zu keys: Consul takes at most %d", n, META_MAX_PAIRS);
		return -1;
	}
	char **l = calloc(2 * n + 1, sizeof(*l));
	if (!l) {
		cfg_error(w->e, v, path, "out of memory");
		return -1;
	}
	if (c->service_meta)
		for (char **o = c->service_meta; *o; o++)
			free(*o);
	free(c->service_meta);
	c->service_meta = l;
	for (size_t i = 0; i < n; i++) {
		const struct cfg_node *k = v->items[2 * i], *val = v->items[2 * i + 1];
		const char *key = k->value ? k->value : "";
		walk_path(kp, sizeof(kp), path, key);
		size_t kl = strlen(key);
		if (kl == 0 || kl > META_KEY_MAX || strspn(key, "abcdefghijklmnopqrstuvwxyz"
					"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != kl) {
			cfg_error(w->e, k, kp, "a meta key is 1 to %d letters, digits, _ and - (Consul's rule)",
				  META_KEY_MAX);
			return -1;
		}
		if (strncmp(key, "consul-", 7) == 0) {
			cfg_error(w->e, k, kp, "the \"consul-\" prefix is reserved by Consul");
			return -1;
		}
		l[2 * i] = strdup(key);
		if (!l[2 * i]) {
			cfg_error(w->e, k, kp, "out of memory");
			return -1;
		}
		if (walk_scalar(w, val, kp, false, &l[2 * i + 1]) < 0)
			return -1;
		if (!l[2 * i + 1] && !(l[2 * i + 1] = strdup(""))) {
			cfg_error(w->e, val, kp, "out of memory");
			return -1;
		}
		if (strlen(l[2 * i + 1]) > META_VALUE_MAX) {
			cfg_error(w->e, val, kp, "a meta value is at most %d bytes (Consul's rule)", META_VALUE_MAX);
			return -1;
		}
	}
	return 0;
}

enum { SE_NAME, SE_ID, SE_ADDRESS, SE_PORT, SE_TAGS, SE_META, SE_TTL, SE_DEREG, SE_N };
static const struct field service_tab[SE_N] = {
	[SE_NAME] = { .key = "name", .kind = F_STR, .off = C(service_name) },
	[SE_ID] = { .key = "id", .kind = F_STR, .off = C(service_id) },
	[SE_ADDRESS] = { .key = "address", .kind = F_STR, .off = C(service_address) },
	[SE_PORT] = { .key = "port", .kind = F_CUSTOM, .fn = set_port },
	[SE_TAGS] = { .key = "tags", .kind = F_CUSTOM, .fn = set_tags },
	[SE_META] = { .key = "meta", .kind = F_CUSTOM, .fn = set_meta },
	[SE_TTL] = { .key = "check-ttl", .kind = F_DUR, .off = C(check_ttl_ms) },
	[SE_DEREG] = { .key = "deregister-critical-after", .kind = F_DUR, .off = C(deregister_after_ms) },
};

enum { LK_KEY, LK_TTL, LK_DELAY, LK_WAIT, LK_N };
static const struct field lock_tab[LK_N] = {
	[LK_KEY] = { .key = "key", .kind = F_STR, .off = C(lock_key) },
	[LK_TTL] = { .key = "ttl", .kind = F_DUR, .off = C(lock_ttl_ms) },
	[LK_DELAY] = { .key = "lock-delay", .kind = F_DUR, .off = C(lock_delay_ms) },
	[LK_WAIT] = { .key = "wait", .kind = F_DUR, .off = C(lock_wait_ms) },
};

/* Not a key whose URL path libcurl or Consul would change: "a//b", "/a", "a/", "a/../b". */
static bool bad_key(const char *k)
{
	/* Consul 1.21.5 (hashicorp/consul#22682) takes only these in a key name */
	if (!*k || strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./,-") !=
			   strlen(k))
		return true;
	for (const char *p = k;; p++) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return true;
		p += n;
		if (!*p)
			return false;
	}
}

/* A name Consul would take as part of a URL path or DNS label: no '/', '?', '#', blanks. */
static int check_id_text(struct walk *w, const struct cfg_node *n, const char *path, const char *s)
{
	if (!*s || strpbrk(s, "/?#% \t\r\n")) {
		cfg_error(w->e, n, path, "\"%s\": use letters, digits, '-', '_' and '.'", s);
		return -1;
	}
	return 0;
}

/*
 * What goes into the registration's JSON must be UTF-8 (jansson refuses
 * anything else), and name and ID short enough to stay whole once the ID
 * gets its default suffix (consul/register.h: CONSUL_ID_MAX).
 */
static int check_utf8(struct walk *w, const struct cfg_consul *c, const struct cfg_node **at)
{
	const char *one[] = { c->service_name, c->service_id, c->service_address };
	const int idx[] = { SE_NAME, SE_ID, SE_ADDRESS };
	static const char *const keys[] = { "consul.service.name", "consul.service.id",
					    "consul.service.address" };
	for (int i = 0; i < 3; i++) {
		if (one[i] && (!utf8_valid(one[i]) || (i < 2 && strlen(one[i]) > SERVICE_TEXT_MAX))) {
			cfg_error(w->e, at[idx[i]], keys[i], "must be UTF-8 text of at most %d bytes",
				  SERVICE_TEXT_MAX);
			return -1;
		}
	}
	for (char **t = c->service_tags; t && *t; t++)
		if (!utf8_valid(*t)) {
			cfg_error(w->e, at[SE_TAGS], "consul.service.tags", "a tag is not UTF-8 text");
			return -1;
		}
	for (char **m = c->service_meta; m && m[0] && m[1]; m += 2)
		if (!utf8_valid(m[1])) {
			cfg_error(w->e, at[SE_META], "consul.service.meta", "the value of %s is not UTF-8 text",
				  m[0]);
			return -1;
		}
	return 0;
}

static int set_service(struct walk *w, const struct field *f, const struct cfg_node *v,
		       const char *path, void *target)
{
	struct cfg_consul *c = target;
	const struct cfg_node *at[SE_N] = { 0 };
	if (walk_map(w, v, path, service_tab, SE_N, ON_ALL, c, at) < 0)
		return -1;
	if (cfg_node_is_null(v))
		return 0;
	if (!c->service_name) {
		cfg_error(w->e, v, path, "needs name: the service's name in Consul");
		return -1;
	}
	if (check_id_text(w, at[SE_NAME], "consul.service.name", c->service_name) < 0)
		return -1;
	if (c->service_id && check_id_text(w, at[SE_ID], "consul.service.id", c->service_id) < 0)
		return -1;
	if (check_utf8(w, c, at) < 0)
		return -1;
	if (c->service_address && (strcmp(c->service_address, "0.0.0.0") == 0 ||
				   strcmp(c->service_address, "::") == 0 ||
				   strcmp(c->service_address, "[::]") == 0)) {
		/* agent_endpoint.go AgentRegisterService: "Invalid service address" */
		cfg_error(w->e, at[SE_ADDRESS], "consul.service.address",
			  "\"%s\" is every interface, not an address clients can reach: Consul refuses it",
			  c->service_address);
		return -1;
	}
	if (c->check_ttl_ms < 5000) {
		/* updates come each second at best, plus the request: a shorter TTL flaps */
		cfg_error(w->e, at[SE_TTL], "consul.service.check-ttl",
			  "at least 5s: litevisor looks at its health each second and updates the check "
			  "at least every third of the TTL");
		return -1;
	}
	if (c->deregister_after_ms && c->deregister_after_ms < 60000) {
		cfg_error(w->e, at[SE_DEREG], "consul.service.deregister-critical-after",
			  "Consul's minimum is 1m (its reaper runs every 30s); 0 never deregisters");
		return -1;
	}
	return 0;
}

static int set_lock(struct walk *w, const struct field *f, const struct cfg_node *v,
		    const char *path, void *target)
{
	struct cfg_consul *c = target;
	const struct cfg_node *at[LK_N] = { 0 };
	if (walk_map(w, v, path, lock_tab, LK_N, ON_ALL, c, at) < 0)
		return -1;
	if (cfg_node_is_null(v))
		return 0;
	if (!c->lock_key) {
		cfg_error(w->e, v, path, "needs key: the KV key every writer of these databases locks");
		return -1;
	}
	const char *k = c->lock_key;
	if (strlen(k) > CFG_CONSUL_KEY_MAX) {
		cfg_error(w->e, at[LK_KEY], "consul.lock.key", "longer than %d bytes", CFG_CONSUL_KEY_MAX);
		return -1;
	}
	if (bad_key(k)) {
		cfg_error(w->e, at[LK_KEY], "consul.lock.key",
			  "\"%s\": a KV key such as litevisor/radarr: letters, digits, '_', '.', ',', '-' "
			  "and '/' (what every Consul version takes), no leading or trailing '/', no empty, "
			  "\".\" or \"..\" part", k);
		return -1;
	}
	if (c->lock_ttl_ms < 10000 || c->lock_ttl_ms > 86400000) {
		cfg_error(w->e, at[LK_TTL], "consul.lock.ttl", "Consul takes a session TTL of 10s to 24h");
		return -1;
	}
	if (c->lock_delay_ms > 60000) {
		cfg_error(w->e, at[LK_DELAY], "consul.lock.lock-delay", "Consul takes a lock delay of 0s to 60s");
		return -1;
	}
	w->lock_node = v;
	w->lock_delay_node = at[LK_DELAY];
	return 0;
}

/*
 * A lost lock stops the service and flushes; Consul keeps the next writer out
 * only for the lock delay after it ends the session, so that stop must fit in
 * it, or the next writer restores without the last commits (or runs beside
 * us). Once supervisor: is read too. The default is the stop's time + 1 s.
 */
int cfg_check_consul(struct walk *w)
{
	struct cfg_consul *c = &w->cfg->consul;
	const struct cfg_supervisor *sv = &w->cfg->supervisor;
	int64_t stop = sv->stop_grace_ms + sv->flush_timeout_ms;
	char a[32], b[32], d[32];
	if (!w->lock_delay_node)
		c->lock_delay_ms = stop + 1000 > 60000 ? 60000 : stop + 1000;
	if (!c->lock_key || c->lock_delay_ms >= stop)
		return 0;
	cfg_error(w->e, w->lock_delay_node ? w->lock_delay_node : w->lock_node,
		  w->lock_delay_node ? "consul.lock.lock-delay" : "consul.lock",
		  "the lock delay (%s) must cover supervisor.stop-grace + supervisor.flush-timeout "
		  "(%s + %s): a lost lock stops the service and flushes within that time, and Consul "
		  "keeps the next writer out only for the lock delay (at most 60s)",
		  duration_format(c->lock_delay_ms, d, sizeof(d)), duration_format(sv->stop_grace_ms, a, sizeof(a)),
		  duration_format(sv->flush_timeout_ms, b, sizeof(b)));
	return -1;
}

enum { CO_ADDR, CO_TOKEN, CO_TOKEN_FILE, CO_CA, CO_TIMEOUT, CO_SERVICE, CO_LOCK, CO_N };
static const struct field consul_tab[CO_N] = {
	[CO_ADDR] = { .key = "addr", .kind = F_CUSTOM, .fn = set_addr_url },
	[CO_TOKEN] = { .key = "token", .kind = F_SECRET, .off = C(token.value) },
	[CO_TOKEN_FILE] = { .key = "token-file", .kind = F_SECRET_FILE, .off = C(token.file) },
	[CO_CA] = { .key = "ca-file", .kind = F_STR, .off = C(ca_file) },
	[CO_TIMEOUT] = { .key = "timeout", .kind = F_DUR, .off = C(timeout_ms), .min = 1 },
	[CO_SERVICE] = { .key = "service", .kind = F_CUSTOM, .fn = set_service },
	[CO_LOCK] = { .key = "lock", .kind = F_CUSTOM, .fn = set_lock },
};

int cfg_set_consul(struct walk *w, const struct field *f, const struct cfg_node *v,
		   const char *path, void *target)
{
	struct config *cfg = target;
	const struct cfg_node *at[CO_N] = { 0 };
	if (walk_map(w, v, path, consul_tab, CO_N, ON_ALL, &cfg->consul, at) < 0)
		return -1;
	if (cfg->consul.token.value && cfg->consul.token.file) {
		cfg_error(w->e, at[CO_TOKEN_FILE], "consul.token-file", "give token or token-file, not both");
		return -1;
	}
	/* never sent (it would end the X-Consul-Token header) and it cannot change: say so now */
	if (cfg->consul.token.value && strpbrk(cfg->consul.token.value, "\r\n")) {
		cfg_error(w->e, at[CO_TOKEN], "consul.token",
			  "contains a line break: it cannot be sent as the X-Consul-Token header");
		return -1;
	}
	/* as the S3 key files: a missing one is a mistake to name now, not a wait of lock.wait */
	if (cfg->consul.token.file &&
	    cfg_check_readable(w, at[CO_TOKEN_FILE], "consul.token-file", cfg->consul.token.file) < 0)
		return -1;
	/* libcurl would fail every https request, as Consul's own client refuses to start */
	if (cfg->consul.ca_file && *cfg->consul.ca_file &&
	    cfg_check_ca_file(w, at[CO_CA], "consul.ca-file", cfg->consul.ca_file) < 0)
		return -1;
	/* and its default, which consul/client.c reads when the key is unset and Consul is used */
	const char *env_ca = getenv("CONSUL_CACERT");
	if (!cfg->consul.ca_file && env_ca && *env_ca && (cfg->consul.lock_key || cfg->consul.service_name) &&
	    cfg_check_ca_file(w, v, "consul.ca-file ($CONSUL_CACERT)", env_ca) < 0)
		return -1;
	return 0;
}
