/*
 * config_schema.c — the keys of litevisor's config: the top level, logging,
 * dbs, restore, supervisor and health, and the checks across them. The
 * generic walk is config_walk.c; stores and replicas are config_replica.c.
 */
#include "common/config_walk.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/duration.h"
#include "common/envexpand.h"
#include "common/words.h"
#include "common/banned.h"

/* ---- logging ---- */

static int set_log_level(struct walk *w, const struct field *f, const struct cfg_node *v,
			 const char *path, void *target)
{
	struct config *cfg = target;
	char *s = NULL;
	int o = walk_optional(w, v, path, &s);
	if (o)
		return o; /* no value: the default */
	int rc = log_parse_level(s, &cfg->log_level);
	if (rc < 0)
		cfg_error(w->e, v, path, "invalid level \"%s\" (one of: debug, info, warn, error)", s);
	free(s);
	return rc;
}

static int set_log_type(struct walk *w, const struct field *f, const struct cfg_node *v,
			const char *path, void *target)
{
	struct config *cfg = target;
	char *s = NULL;
	int rc = 0;
	int o = walk_optional(w, v, path, &s);
	if (o)
		return o; /* no value: the default */
	if (strcasecmp(s, "json") == 0) {
		cfg->log_json = true;
	} else if (strcasecmp(s, "text") == 0) {
		cfg->log_json = false;
	} else {
		cfg_error(w->e, v, path, "invalid type \"%s\" (one of: text, json)", s);
		rc = -1;
	}
	free(s);
	return rc;
}

static int set_log_stderr(struct walk *w, const struct field *f, const struct cfg_node *v,
			  const char *path, void *target)
{
	char *s = NULL;
	bool b = true;
	int o = walk_optional(w, v, path, &s);
	if (o)
		return o; /* no value: the default */
	int rc = walk_parse_bool(s, &b);
	if (rc < 0)
		cfg_error(w->e, v, path, "invalid boolean \"%s\" (use true or false)", s);
	else if (!b) {
		cfg_error(w->e, v, path,
			  "litevisor always logs to stderr (stdout belongs to the service); "
			  "remove the key or set it to true");
		rc = -1;
	}
	free(s);
	return rc;
}

static const struct field logging_tab[] = {
	{ .key = "level", .kind = F_CUSTOM, .fn = set_log_level },
	{ .key = "type", .kind = F_CUSTOM, .fn = set_log_type },
	{ .key = "stderr", .kind = F_CUSTOM, .fn = set_log_stderr },
};

static int set_logging(struct walk *w, const struct field *f, const struct cfg_node *v,
		       const char *path, void *target)
{
	return walk_map(w, v, path, logging_tab, sizeof(logging_tab) / sizeof(logging_tab[0]), ON_ALL,
			target, NULL);
}

/* ---- restore ---- */

static const char *const restore_modes[] = { "freshest-reachable", "all", "quorum", NULL };
static const char *const restore_existing[] = { "newest-wins", "keep-local", NULL };
static const char *const restore_verify[] = { "quick", "integrity", "none", NULL };

enum { RS_PROBE, RS_MODE, RS_QUORUM, RS_WAIT, RS_ALLOW, RS_EXISTING, RS_VERIFY, RS_PAR, RS_SKEW,
       RS_HANDOVER, RS_KEEP, RS_N };
static const struct field restore_tab[RS_N] = {
	[RS_PROBE] = { .key = "probe-timeout", .kind = F_DUR, .off = offsetof(struct cfg_restore, probe_timeout_ms), .min = 1 },
	[RS_MODE] = { .key = "mode", .kind = F_ENUM, .off = offsetof(struct cfg_restore, mode), .names = restore_modes },
	[RS_QUORUM] = { .key = "quorum", .kind = F_INT, .off = offsetof(struct cfg_restore, quorum), .min = 1, .max = 64 },
	[RS_WAIT] = { .key = "wait-timeout", .kind = F_DUR, .off = offsetof(struct cfg_restore, wait_timeout_ms), .min = 1 },
	[RS_ALLOW] = { .key = "allow-empty-when-unreachable", .kind = F_BOOL, .off = offsetof(struct cfg_restore, allow_empty_unreachable) },
	[RS_EXISTING] = { .key = "existing", .kind = F_ENUM, .off = offsetof(struct cfg_restore, existing), .names = restore_existing },
	[RS_VERIFY] = { .key = "verify", .kind = F_ENUM, .off = offsetof(struct cfg_restore, verify), .names = restore_verify },
	[RS_PAR] = { .key = "parallelism", .kind = F_INT, .off = offsetof(struct cfg_restore, parallelism), .min = 1, .max = 256 },
	[RS_SKEW] = { .key = "clock-skew", .kind = F_DUR, .off = offsetof(struct cfg_restore, clock_skew_ms) },
	[RS_HANDOVER] = { .key = "handover-wait", .kind = F_DUR, .off = offsetof(struct cfg_restore, handover_wait_ms) },
	[RS_KEEP] = { .key = "keep-replaced", .kind = F_INT, .off = offsetof(struct cfg_restore, keep_replaced), .min = 1, .max = 1000000 },
};

static int set_restore(struct walk *w, const struct field *f, const struct cfg_node *v,
		       const char *path, void *target)
{
	struct config *cfg = target;
	const struct cfg_node *at[RS_N] = { 0 };
	if (walk_map(w, v, path, restore_tab, RS_N, ON_ALL, &cfg->restore, at) < 0)
		return -1;
	w->restore_node = v;
	w->quorum_node = at[RS_QUORUM];
	w->mode_node = at[RS_MODE];
	if (cfg->restore.mode == RESTORE_QUORUM && !at[RS_QUORUM]) {
		cfg_error(w->e, at[RS_MODE], "restore.mode",
			  "mode quorum needs restore.quorum (how many replicas must answer)");
		return -1;
	}
	if (cfg->restore.mode != RESTORE_QUORUM && at[RS_QUORUM]) {
		cfg_error(w->e, at[RS_QUORUM], "restore.quorum", "only used with restore.mode: quorum");
		return -1;
	}
	return 0;
}

/* ---- supervisor ---- */

static const char *const restart_policies[] = { "never", "on-failure", NULL };

static struct cfg_where where_of(const struct cfg_node *n)
{
	return n ? (struct cfg_where){ n->line, n->column } : (struct cfg_where){ 0, 0 };
}

static int set_groups(struct walk *w, const struct field *f, const struct cfg_node *v,
		      const char *path, void *target)
{
	struct cfg_supervisor *s = target;
	if (walk_string_list(w, v, path, "a list of group names", &s->groups) < 0)
		return -1;
	free(s->groups_at);
	s->groups_at = NULL;
	if (!s->groups)
		return 0;
	if (!(s->groups_at = calloc(v->nitems ? v->nitems : 1, sizeof(*s->groups_at)))) {
		cfg_error(w->e, v, path, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < v->nitems; i++)
		s->groups_at[i] = where_of(v->items[i]);
	return 0;
}

enum { SV_USER, SV_GROUP, SV_GROUPS, SV_GRACE, SV_FLUSH, SV_SIGGROUP, SV_NEWPG, SV_RESTART,
       SV_LIMIT, SV_DELAY, SV_DELAYMAX, SV_RESET, SV_N };
static const struct field supervisor_tab[SV_N] = {
	[SV_USER] = { .key = "user", .kind = F_STR, .off = offsetof(struct cfg_supervisor, user) },
	[SV_GROUP] = { .key = "group", .kind = F_STR, .off = offsetof(struct cfg_supervisor, group) },
	[SV_GROUPS] = { .key = "groups", .kind = F_CUSTOM, .fn = set_groups },
	[SV_GRACE] = { .key = "stop-grace", .kind = F_DUR, .off = offsetof(struct cfg_supervisor, stop_grace_ms), .min = 1 },
	[SV_FLUSH] = { .key = "flush-timeout", .kind = F_DUR, .off = offsetof(struct cfg_supervisor, flush_timeout_ms), .min = 1 },
	[SV_SIGGROUP] = { .key = "signal-group", .kind = F_BOOL, .off = offsetof(struct cfg_supervisor, signal_group) },
	[SV_NEWPG] = { .key = "new-process-group", .kind = F_BOOL, .off = offsetof(struct cfg_supervisor, new_process_group) },
	[SV_RESTART] = { .key = "restart", .kind = F_ENUM, .off = offsetof(struct cfg_supervisor, restart), .names = restart_policies },
	[SV_LIMIT] = { .key = "restart-limit", .kind = F_INT, .off = offsetof(struct cfg_supervisor, restart_limit), .min = 0, .max = INT_MAX },
	[SV_DELAY] = { .key = "restart-delay", .kind = F_DUR, .off = offsetof(struct cfg_supervisor, restart_delay_ms) },
	[SV_DELAYMAX] = { .key = "restart-delay-max", .kind = F_DUR, .off = offsetof(struct cfg_supervisor, restart_delay_max_ms) },
	[SV_RESET] = { .key = "restart-reset", .kind = F_DUR, .off = offsetof(struct cfg_supervisor, restart_reset_ms) },
};

static int set_supervisor(struct walk *w, const struct field *f, const struct cfg_node *v,
			  const char *path, void *target)
{
	struct config *cfg = target;
	const struct cfg_node *at[SV_N] = { 0 };
	struct cfg_supervisor *s = &cfg->supervisor;
	if (walk_map(w, v, path, supervisor_tab, SV_N, ON_ALL, s, at) < 0)
		return -1;
	s->user_at = where_of(at[SV_USER]);
	s->group_at = where_of(at[SV_GROUP]);
	if (s->restart_delay_max_ms < s->restart_delay_ms) {
		const struct cfg_node *n = at[SV_DELAYMAX] ? at[SV_DELAYMAX] : at[SV_DELAY];
		cfg_error(w->e, n, at[SV_DELAYMAX] ? "supervisor.restart-delay-max" : "supervisor.restart-delay",
			  "restart-delay-max must not be less than restart-delay");
		return -1;
	}
	/* a run at least restart-reset long ends a series of restarts: every run would */
	if (s->restart_reset_ms <= 0) {
		cfg_error(w->e, at[SV_RESET], "supervisor.restart-reset",
			  "must be longer than 0s: a run at least this long starts a new series of "
			  "restarts, so every run would, and restart-limit would never apply");
		return -1;
	}
	/* forwarded to the group of a service in litevisor's own would signal litevisor too */
	if (s->signal_group && !s->new_process_group) {
		cfg_error(w->e, at[SV_SIGGROUP], "supervisor.signal-group",
			  "needs new-process-group: true (the service's own process group to signal); "
			  "set both");
		return -1;
	}
	return 0;
}

/* ---- health ---- */

/* An http(s) URL whose host and port a request can use; never echoed (a push URL holds a token). */
static int check_http_url(struct walk *w, const struct cfg_node *v, const char *path, const char *s)
{
	if (strncmp(s, "http://", 7) != 0 && strncmp(s, "https://", 8) != 0) {
		cfg_error(w->e, v, path, "expected an http:// or https:// URL");
		return -1;
	}
	const char *auth = strstr(s, "://") + 3;
	size_t alen = strcspn(auth, "/?#");
	/* user:password@ is libcurl's to send (a probe behind basic auth) */
	for (const char *at; (at = memchr(auth, '@', alen)); auth = at + 1)
		alen -= (size_t)(at + 1 - auth);
	const char *why = cfg_authority_problem(auth, alen);
	if (why) {
		cfg_error(w->e, v, path, "invalid URL: %s", why);
		return -1;
	}
	return 0;
}

static int set_url_field(struct walk *w, const struct field *f, const struct cfg_node *v,
			 const char *path, void *target)
{
	char **slot = (char **)(void *)((char *)target + f->off);
	char *s = NULL;
	/* A push URL carries a token: never echo it (nor the probe URL, for symmetry). */
	if (walk_required_ex(w, v, path, true, &s) < 0)
		return -1;
	/* "http://${APP_HOST}:7878/ping" would probe nobody and never be ready: say why */
	const char *unset = walk_unset_var(w, v);
	if (unset) {
		char phrase[256];
		cfg_error(w->e, v, path, "%s", walk_unset_phrase(phrase, sizeof(phrase), unset));
		free(s);
		return -1;
	}
	if (check_http_url(w, v, path, s) < 0) {
		free(s);
		return -1;
	}
	free(*slot);
	*slot = s;
	return 0;
}

static int set_port_label(struct walk *w, const struct field *f, const struct cfg_node *v,
			  const char *path, void *target)
{
	struct cfg_health *h = target;
	char *s = NULL;
	if (walk_required(w, v, path, &s) < 0)
		return -1;
	for (const char *p = s; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') {
			cfg_error(w->e, v, path, "invalid port label \"%s\" (letters, digits, _ and -)", s);
			free(s);
			return -1;
		}
	}
	free(h->port_label);
	h->port_label = s;
	return 0;
}

enum { HE_LABEL, HE_PROBE_URL, HE_PROBE_INT, HE_PROBE_TO, HE_PROBE_SKIPV, HE_FAIL, HE_PUSH_URL,
       HE_PUSH_INT, HE_N };
static const struct field health_tab[HE_N] = {
	[HE_LABEL] = { .key = "port-label", .kind = F_CUSTOM, .fn = set_port_label },
	[HE_PROBE_URL] = { .key = "probe-url", .kind = F_CUSTOM, .off = offsetof(struct cfg_health, probe_url), .fn = set_url_field },
	[HE_PROBE_INT] = { .key = "probe-interval", .kind = F_DUR, .off = offsetof(struct cfg_health, probe_interval_ms), .min = 1 },
	[HE_PROBE_TO] = { .key = "probe-timeout", .kind = F_DUR, .off = offsetof(struct cfg_health, probe_timeout_ms), .min = 1 },
	[HE_PROBE_SKIPV] = { .key = "probe-skip-verify", .kind = F_BOOL, .off = offsetof(struct cfg_health, probe_skip_verify) },
	[HE_FAIL] = { .key = "fail-after", .kind = F_DUR, .off = offsetof(struct cfg_health, fail_after_ms) },
	[HE_PUSH_URL] = { .key = "push-url", .kind = F_CUSTOM, .off = offsetof(struct cfg_health, push_url), .fn = set_url_field },
	[HE_PUSH_INT] = { .key = "push-interval", .kind = F_DUR, .off = offsetof(struct cfg_health, push_interval_ms), .min = 1 },
};

static int set_health(struct walk *w, const struct field *f, const struct cfg_node *v,
		      const char *path, void *target)
{
	struct config *cfg = target;
	if (walk_map(w, v, path, health_tab, HE_N, ON_ALL, &cfg->health, NULL) < 0)
		return -1;
	const struct cfg_health *h = &cfg->health;
	if (h->probe_skip_verify && (!h->probe_url || strncasecmp(h->probe_url, "https://", 8) != 0)) {
		/* a key that exists works: alone it would do nothing (QA94 O6) */
		const struct cfg_node *at = walk_map_get(v, "probe-skip-verify");
		char kp[96];
		snprintf(kp, sizeof(kp), "%s.probe-skip-verify", path);
		cfg_error(w->e, at ? at : v, kp, "needs an https:// probe-url (it skips that URL's "
			  "certificate check)%s", h->probe_url ? "" : ": there is no probe-url");
		return -1;
	}
	return 0;
}

/* ---- top level ---- */

int config_addr_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon = strrchr(addr, ':'), *h = addr;
	size_t hl, pl;
	if (!colon)
		return -1;
	hl = (size_t)(colon - addr);
	pl = strlen(colon + 1);
	if (pl == 0 || pl > 5 || strspn(colon + 1, "0123456789") != pl ||
	    strtol(colon + 1, NULL, 10) > 65535)
		return -1;
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	/* "[::1" or "a]b": brackets only around the whole host, as Go's net.SplitHostPort */
	if (memchr(h, '[', hl) || memchr(h, ']', hl) || hl >= hostlen || pl >= portlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	memcpy(port, colon + 1, pl + 1);
	return 0;
}

static int set_addr(struct walk *w, const struct field *f, const struct cfg_node *v,
		    const char *path, void *target)
{
	struct config *cfg = target;
	char *s = NULL, host[256], port[16];
	if (walk_scalar(w, v, path, false, &s) < 0)
		return -1;
	if (!s || !*s) {
		free(s);
		return 0;
	}
	/* the server's own split (supervisor/http.c), so what loads here can be served */
	const char *unset = walk_unset_var(w, v);
	if (unset && config_addr_split(s, host, sizeof(host), port, sizeof(port)) == 0) {
		/* "${HOST_IP}:9090" would become ":9090", every interface: never silently */
		char phrase[256];
		cfg_error(w->e, v, path, "\"%s\": %s", s, walk_unset_phrase(phrase, sizeof(phrase), unset));
		free(s);
		return -1;
	}
	if (config_addr_split(s, host, sizeof(host), port, sizeof(port)) < 0) {
		cfg_error(w->e, v, path,
			  "invalid address \"%s\" (expected HOST:PORT, [IPV6]:PORT or :PORT)", s);
		free(s);
		return -1;
	}
	/* whether a name resolves is for run to find; "a b" or "1.2.3.4.5" never can */
	if (*host && !cfg_host_ok(host, strlen(host))) {
		cfg_error(w->e, v, path, "invalid address \"%s\": \"%s\" is neither an IP address nor a "
			  "DNS name", s, host);
		free(s);
		return -1;
	}
	free(cfg->addr);
	cfg->addr = s;
	return 0;
}

/* exec is expanded once the databases are known (service_lookup): only checked here */
static int note_exec(struct walk *w, const struct field *f, const struct cfg_node *v,
		     const char *path, void *target)
{
	(void)f;
	(void)target;
	if (v->kind != CN_SCALAR) {
		cfg_error(w->e, v, path, "expected a single value, got %s", walk_kind_name(v));
		return -1;
	}
	return cfg_node_is_null(v) ? 1 : 0;
}

static int note_node(struct walk *w, const struct field *f, const struct cfg_node *v,
		     const char *path, void *target)
{
	if (!cfg_node_is_null(v) && v->kind != (f->key[0] == 's' ? CN_MAP : CN_SEQ)) {
		cfg_error(w->e, v, path, "expected %s, got %s",
			  f->key[0] == 's' ? "a map of store name → settings" : "a list of databases",
			  walk_kind_name(v));
		return -1;
	}
	if (f->key[0] == 's')
		w->stores_node = v;
	else
		w->dbs_node = v;
	return 0;
}

static int set_top_secret(struct walk *w, const struct field *f, const struct cfg_node *v,
			  const char *path, void *target)
{
	struct cfg_secret *s = strstr(f->key, "access-key-id") ? &w->top_akid : &w->top_sak;
	char **slot = strstr(f->key, "-file") ? &s->file : &s->value;
	char *val = NULL;
	if (walk_scalar(w, v, path, slot == &s->value, &val) < 0)
		return -1;
	if (val && !*val) {
		free(val);
		val = NULL;
	}
	free(*slot);
	*slot = val;
	return 0;
}

enum { TOP_ADDR, TOP_EXEC, TOP_NODE, TOP_AKID, TOP_AKID_FILE, TOP_SAK, TOP_SAK_FILE, TOP_LOGGING,
       TOP_DBS, TOP_STORES, TOP_RESTORE, TOP_SUPERVISOR, TOP_HEALTH, TOP_CONSUL, TOP_N };
static const struct field top_tab[TOP_N] = {
	[TOP_ADDR] = { .key = "addr", .kind = F_CUSTOM, .fn = set_addr },
	[TOP_EXEC] = { .key = "exec", .kind = F_CUSTOM, .fn = note_exec },
	[TOP_NODE] = { .key = "node", .kind = F_STR, .off = offsetof(struct config, node) },
	[TOP_AKID] = { .key = "access-key-id", .kind = F_CUSTOM, .fn = set_top_secret },
	[TOP_AKID_FILE] = { .key = "access-key-id-file", .kind = F_CUSTOM, .fn = set_top_secret },
	[TOP_SAK] = { .key = "secret-access-key", .kind = F_CUSTOM, .fn = set_top_secret },
	[TOP_SAK_FILE] = { .key = "secret-access-key-file", .kind = F_CUSTOM, .fn = set_top_secret },
	[TOP_LOGGING] = { .key = "logging", .kind = F_CUSTOM, .fn = set_logging },
	[TOP_DBS] = { .key = "dbs", .kind = F_CUSTOM, .fn = note_node },
	[TOP_STORES] = { .key = "stores", .kind = F_CUSTOM, .fn = note_node },
	[TOP_RESTORE] = { .key = "restore", .kind = F_CUSTOM, .fn = set_restore },
	[TOP_SUPERVISOR] = { .key = "supervisor", .kind = F_CUSTOM, .fn = set_supervisor },
	[TOP_HEALTH] = { .key = "health", .kind = F_CUSTOM, .fn = set_health },
	[TOP_CONSUL] = { .key = "consul", .kind = F_CUSTOM, .fn = cfg_set_consul },
};

/* ---- dbs ---- */

static int set_db_path(struct walk *w, const struct field *f, const struct cfg_node *v,
		       const char *path, void *target)
{
	char **slot = (char **)(void *)((char *)target + f->off);
	char *s = NULL;
	/* a meta-path that expands to nothing is Litestream's default one, as unset */
	bool optional = f->off == offsetof(struct cfg_db, meta_path);
	int o = optional ? walk_optional(w, v, path, &s) : walk_required(w, v, path, &s);
	if (o)
		return o;
	char *abs = cfg_abs_path(s);
	if (!abs) {
		cfg_error(w->e, v, path, "cannot make \"%s\" an absolute path", s);
		free(s);
		return -1;
	}
	free(s);
	char why[3 * PATH_MAX + 200];
	if (!optional && config_db_path_check(abs, why, sizeof(why)) < 0) {
		cfg_error(w->e, v, path, "%s", why);
		free(abs);
		return -1;
	}
	free(*slot);
	*slot = abs;
	return 0;
}

/*
 * What a variable the service needs from its environment is for, or NULL
 * when name is free: a database's path put in PATH, HOME or LD_PRELOAD
 * breaks the service far from the cause ("ls: not found").
 */
static const char *service_needs(const char *name)
{
	static const struct {
		const char *name, *what;
	} needed[] = {
		{ "PATH", "where it finds the programs it runs" },
		{ "HOME", "its home directory" },
		{ "USER", "its user's name" },
		{ "LOGNAME", "its user's name" },
		{ "SHELL", "its shell" },
		{ "PWD", "its working directory" },
		{ "TMPDIR", "where it keeps temporary files" },
	};
	if (strncmp(name, "LD_", 3) == 0)
		return "the dynamic loader's settings";
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
		if (strcmp(name, needed[i].name) == 0)
			return needed[i].what;
	return NULL;
}

static int set_db_env(struct walk *w, const struct field *f, const struct cfg_node *v,
		      const char *path, void *target)
{
	struct cfg_db *db = target;
	char *s = NULL;
	if (walk_required(w, v, path, &s) < 0)
		return -1;
	bool ok = isalpha((unsigned char)s[0]) || s[0] == '_';
	for (const char *p = s; *p && ok; p++)
		ok = isalnum((unsigned char)*p) || *p == '_';
	if (!ok) {
		cfg_error(w->e, v, path, "invalid environment variable name \"%s\" (letters, digits and _, "
			  "not starting with a digit)", s);
		free(s);
		return -1;
	}
	const char *needed = service_needs(s);
	if (needed) {
		cfg_error(w->e, v, path, "\"%s\" is %s, which the service needs: the database's path "
			  "would replace it; give another name (the default is LITEVISOR_DB_<NAME>)", s, needed);
		free(s);
		return -1;
	}
	free(db->env);
	db->env = s;
	return 0;
}

static int note_replicas(struct walk *w, const struct field *f, const struct cfg_node *v,
			 const char *path, void *target)
{
	return 0; /* walked after the db's own keys, see walk_db */
}

enum { DB_PATH, DB_META, DB_NAME, DB_ENV, DB_OPTIONAL, DB_MONITOR, DB_CKPT, DB_MINCK, DB_MAXCK,
       DB_TRUNC, DB_BACKLOG, DB_REPLICAS, DB_REPLICA, DB_N };
static const struct field db_tab[DB_N] = {
	[DB_PATH] = { .key = "path", .kind = F_CUSTOM, .off = offsetof(struct cfg_db, path), .fn = set_db_path },
	[DB_META] = { .key = "meta-path", .kind = F_CUSTOM, .off = offsetof(struct cfg_db, meta_path), .fn = set_db_path },
	[DB_NAME] = { .key = "name", .kind = F_STR, .off = offsetof(struct cfg_db, name) },
	[DB_ENV] = { .key = "env", .kind = F_CUSTOM, .fn = set_db_env },
	[DB_OPTIONAL] = { .key = "optional", .kind = F_BOOL, .off = offsetof(struct cfg_db, optional) },
	/* 0 makes Litestream v0.3.13 start no monitor: nothing replicates while it runs */
	[DB_MONITOR] = { .key = "monitor-interval", .kind = F_DUR, .off = offsetof(struct cfg_db, monitor_interval_ms), .min = 1,
			 .why = "Litestream v0.3.13 would not watch the database at all and replicate nothing "
				"while it runs; remove the key for the 1s default" },
	/* 0: no time-based checkpoints, as in Litestream (replication/monitor.c checks > 0) */
	[DB_CKPT] = { .key = "checkpoint-interval", .kind = F_DUR, .off = offsetof(struct cfg_db, checkpoint_interval_ms) },
	[DB_MINCK] = { .key = "min-checkpoint-page-count", .kind = F_INT64, .off = offsetof(struct cfg_db, min_checkpoint_page_count), .min = 1, .max = INT64_MAX },
	[DB_MAXCK] = { .key = "max-checkpoint-page-count", .kind = F_INT64, .off = offsetof(struct cfg_db, max_checkpoint_page_count), .min = 0, .max = INT64_MAX },
	[DB_TRUNC] = { .key = "truncate-page-count", .kind = F_INT64, .off = offsetof(struct cfg_db, truncate_page_count), .min = 0, .max = INT64_MAX },
	[DB_BACKLOG] = { .key = "max-backlog", .kind = F_SIZE, .off = offsetof(struct cfg_db, max_backlog_bytes) },
	[DB_REPLICAS] = { .key = "replicas", .kind = F_CUSTOM, .fn = note_replicas },
	[DB_REPLICA] = { .key = "replica", .kind = F_UNSUPPORTED,
			 .why = "the single-replica shorthand (Litestream 0.5's; v0.3.13 ignores it and "
			        "replicates that database nowhere); write it as a one-item replicas: list" },
};

static int walk_db(struct walk *w, const struct cfg_node *v, const char *path, struct cfg_db *db)
{
	const struct cfg_node *at[DB_N] = { 0 };
	char kp[340];

	config_db_defaults(db);
	db->line = v->line;
	db->column = v->column;
	if (v->kind != CN_MAP) {
		cfg_error(w->e, v, path, "expected a map with path: and replicas:, got %s",
			  walk_kind_name(v));
		return -1;
	}
	if (walk_map(w, v, path, db_tab, DB_N, ON_ALL, db, at) < 0)
		return -1;
	if (!db->path) {
		walk_path(kp, sizeof(kp), path, "path");
		if (at[DB_PATH])
			return walk_required(w, at[DB_PATH], kp, &db->path);
		cfg_error(w->e, v, path, "missing required key \"path\" (the database file)");
		return -1;
	}
	const char *base = strrchr(db->path, '/');
	base = base ? base + 1 : db->path;
	if (db->name && walk_check_name(w, at[DB_NAME], path, db->name) < 0)
		return -1;
	if (!db->name) {
		if (!(db->name = strdup(base)))
			goto oom;
		cfg_name_fit(db->name);
	}
	if (!db->meta_path) {
		size_t dl = (size_t)(base - db->path);
		size_t len = dl + strlen(base) + 16;
		if (!(db->meta_path = malloc(len)))
			goto oom;
		snprintf(db->meta_path, len, "%.*s.%s-litevisor", (int)dl, db->path, base);
	}
	if (!db->env) {
		size_t len = strlen(db->name) + 16;
		if (!(db->env = malloc(len)))
			goto oom;
		config_db_env_name(db->name, db->env, len);
	}
	walk_path(kp, sizeof(kp), path, "replicas");
	if (at[DB_REPLICAS] && !cfg_node_is_null(at[DB_REPLICAS]))
		return walk_replicas(w, at[DB_REPLICAS], kp, db);
	return 0;
oom:
	cfg_error(w->e, v, path, "out of memory");
	return -1;
}

const char *config_service_var(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->ndbs; i++)
		if (cfg->dbs[i].env && strcmp(cfg->dbs[i].env, name) == 0)
			return cfg->dbs[i].path;
	if (cfg->ndbs == 1 && strcmp(name, "LITESTREAM_DB_PATH") == 0)
		return cfg->dbs[0].path;
	return NULL;
}

/* exec's lookup: what the service gets from litevisor first, then the environment */
static const char *service_lookup(const char *name, void *ctx)
{
	const char *v = config_service_var(ctx, name);
	return v ? v : getenv(name);
}

void config_db_env_name(const char *name, char *buf, size_t len)
{
	size_t k = (size_t)snprintf(buf, len, "LITEVISOR_DB_");
	bool in_seq = false; /* inside a UTF-8 sequence already given its '_' */
	for (const unsigned char *p = (const unsigned char *)name; *p && k + 1 < len; p++) {
		bool cont = (*p & 0xC0) == 0x80;
		if (cont && in_seq)
			continue;
		in_seq = *p >= 0x80;
		buf[k++] = *p < 0x80 && isalnum(*p) ? (char)toupper(*p) : '_';
	}
	buf[k < len ? k : len - 1] = '\0';
}

static int walk_dbs(struct walk *w)
{
	const struct cfg_node *seq = w->dbs_node;
	struct config *cfg = w->cfg;
	char path[64];

	if (seq && cfg_node_is_null(seq))
		cfg->dbs_blank = true;
	if (!seq || cfg_node_is_null(seq))
		return 0;
	cfg->dbs = calloc(seq->nitems ? seq->nitems : 1, sizeof(*cfg->dbs));
	if (!cfg->dbs) {
		cfg_error(w->e, seq, "dbs", "out of memory");
		return -1;
	}
	for (size_t i = 0; i < seq->nitems; i++) {
		struct cfg_db *db = &cfg->dbs[i];
		snprintf(path, sizeof(path), "dbs[%zu]", i);
		cfg->ndbs = i + 1;
		if (walk_db(w, seq->items[i], path, db) < 0)
			return -1;
	}
	if (cfg_check_replica_dests(w, seq) < 0 || cfg_distinct_default_names(w, seq) < 0 ||
	    cfg_check_same_dbs(w, seq) < 0)
		return -1;
	return 0;
}

/* Where a key that is not valid in one map does belong: for "not valid here" messages. */
const char *cfg_other_place(const char *key, const struct field *here)
{
	static const struct {
		const struct field *tab;
		size_t n;
		const char *where;
	} places[] = {
		{ top_tab, TOP_N, "the top level" },
		{ db_tab, DB_N, "each entry of dbs:" },
		{ replica_tab, RF_N, "each entry of a db's replicas:" },
		{ restore_tab, RS_N, "restore:" },
		{ supervisor_tab, SV_N, "supervisor:" },
		{ health_tab, HE_N, "health:" },
		{ logging_tab, sizeof(logging_tab) / sizeof(logging_tab[0]), "logging:" },
	};
	for (size_t p = 0; p < sizeof(places) / sizeof(places[0]); p++) {
		if (places[p].tab == here)
			continue;
		for (size_t i = 0; i < places[p].n; i++)
			if (places[p].tab[i].kind != F_UNSUPPORTED && strcmp(places[p].tab[i].key, key) == 0)
				return places[p].where;
	}
	return NULL;
}

static int check_quorum(struct walk *w)
{
	const struct config *cfg = w->cfg;
	if (cfg->restore.mode != RESTORE_QUORUM)
		return 0;
	for (size_t i = 0; i < cfg->ndbs; i++) {
		if ((size_t)cfg->restore.quorum > cfg->dbs[i].nreplicas) {
			cfg_error(w->e, w->quorum_node, "restore.quorum",
				  "%d is more than the %zu replicas of dbs[%zu] (%s)", cfg->restore.quorum,
				  cfg->dbs[i].nreplicas, i, cfg->dbs[i].name);
			return -1;
		}
	}
	return 0;
}

/* An exec run could not split (an unterminated quote…) is refused here, where its line is known. */
static int check_exec(struct walk *w, const struct cfg_node *v)
{
	char **argv = NULL, why[128];
	int n = words_split(w->cfg->exec, &argv, why, sizeof(why));
	words_free(argv);
	if (n < 0) {
		cfg_error(w->e, v, "exec", "%s", why);
		return -1;
	}
	return 0;
}

int cfg_schema_load(const struct cfg_doc *doc, const struct config_options *opt,
		    struct config *cfg, struct cfg_err *e)
{
	struct walk w = { .opt = opt, .e = e, .cfg = cfg };
	const struct cfg_node *at[TOP_N] = { 0 };
	int rc = -1;

	config_defaults(cfg);
	/* a file with no setting at all: empty, or comments only */
	cfg->dbs_blank = !doc->root || cfg_node_is_null(doc->root) ||
			 (doc->root->kind == CN_MAP && doc->root->nitems == 0);
	if (doc->root && walk_map(&w, doc->root, "", top_tab, TOP_N, ON_ALL, cfg, at) < 0)
		goto out;
	if (w.top_akid.value && w.top_akid.file) {
		cfg_error(e, at[TOP_AKID_FILE], "access-key-id-file",
			  "give access-key-id or access-key-id-file, not both");
		goto out;
	}
	if (w.top_sak.value && w.top_sak.file) {
		cfg_error(e, at[TOP_SAK_FILE], "secret-access-key-file",
			  "give secret-access-key or secret-access-key-file, not both");
		goto out;
	}
	if (cfg_check_secret(&w, &w.top_akid, at[TOP_AKID], "access-key-id", at[TOP_AKID_FILE],
			     "access-key-id-file") < 0 ||
	    cfg_check_secret(&w, &w.top_sak, at[TOP_SAK], "secret-access-key", at[TOP_SAK_FILE],
			     "secret-access-key-file") < 0)
		goto out;
	if (walk_stores(&w) < 0 || walk_dbs(&w) < 0 || check_quorum(&w) < 0 || cfg_check_consul(&w) < 0)
		goto out;
	if (at[TOP_EXEC]) {
		w.lookup = service_lookup;
		w.lookup_ctx = cfg;
		int xrc = walk_words(&w, at[TOP_EXEC], "exec", &cfg->exec);
		w.lookup = NULL;
		if (xrc < 0 || (cfg->exec && check_exec(&w, at[TOP_EXEC]) < 0))
			goto out;
	}
	/* shell-like: an unset variable is no word, often on purpose ($EXTRA_ARGS); said at use */
	if (at[TOP_EXEC] && walk_unset_var(&w, at[TOP_EXEC]) &&
	    !(cfg->exec_unset = strdup(walk_unset_var(&w, at[TOP_EXEC])))) {
		cfg_error(e, at[TOP_EXEC], "exec", "out of memory");
		goto out;
	}
	rc = 0;
out:
	if (rc < 0 && e->at && walk_unset_var(&w, e->at) && !strstr(e->buf, "environment variable")) {
		/* "cannot read \"/s3_key\"": say which variable left the hole */
		size_t k = strlen(e->buf), room = e->len > k + 4 ? e->len - k - 3 : 1;
		char phrase[256];
		snprintf(e->buf + k, e->len - k, " (%s)",
			 walk_unset_phrase(phrase, room < sizeof(phrase) ? room : sizeof(phrase),
					   walk_unset_var(&w, e->at)));
	}
	walk_stores_free(&w);
	walk_release(&w);
	free(w.top_akid.value);
	free(w.top_akid.file);
	free(w.top_sak.value);
	free(w.top_sak.file);
	return rc;
}
