/*
 * config_dups.c — what must be unique across the whole config: each
 * database's file, name, env variable and state directory (meta-path), and
 * each replica's destination.
 *
 * Paths are compared as files (symlinks followed, pathnorm_resolve), so each
 * is resolved once and duplicates are found by sorting the keys: n log n.
 * Comparing every pair, and resolving both paths of each pair again, took
 * minutes for 2,000 databases.
 */
#include "common/config_walk.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pathnorm.h"
#include "common/utf8.h"
#include "common/banned.h"

#define NONE SIZE_MAX
#define NKEY 4

/* What is compared (up to NKEY strings; NULL reads as ""), and its place in config order. */
struct key {
	const char *s[NKEY];
	size_t i;
};

static int key_cmp_strings(const struct key *a, const struct key *b)
{
	for (int k = 0; k < NKEY; k++) {
		int c = strcmp(a->s[k] ? a->s[k] : "", b->s[k] ? b->s[k] : "");
		if (c)
			return c;
	}
	return 0;
}

static int key_cmp(const void *pa, const void *pb)
{
	const struct key *a = pa, *b = pb;
	int c = key_cmp_strings(a, b);
	return c ? c : a->i < b->i ? -1 : a->i > b->i;
}

/*
 * Sort keys (n of them, their i being 0..n-1) and set first[i] to the
 * smallest i of an equal key placed before it, or NONE.
 */
static void first_equal(struct key *keys, size_t n, size_t *first)
{
	qsort(keys, n, sizeof(*keys), key_cmp);
	for (size_t a = 0, b; a < n; a = b) {
		first[keys[a].i] = NONE;
		for (b = a + 1; b < n && key_cmp_strings(&keys[a], &keys[b]) == 0; b++)
			first[keys[b].i] = keys[a].i;
	}
}

/*
 * The physical path of path (malloc'd), or a copy of path itself when it
 * cannot be resolved, so equal spellings still compare equal. NULL: no memory.
 */
static char *resolved(const char *path)
{
	char buf[PATH_MAX];
	return strdup(pathnorm_resolve(path, buf, sizeof(buf)) == 0 ? buf : path);
}

/* s as logs, health and metrics show it (utf8_repair; malloc'd), or NULL: no memory. */
static char *shown(const char *s)
{
	size_t len = strlen(s) * 3 + 1; /* each byte at most one U+FFFD */
	char *out = malloc(len);
	return out ? utf8_repair(s, out, len) : NULL;
}

static void free_all(char **v, size_t n)
{
	if (v)
		for (size_t i = 0; i < n; i++)
			free(v[i]);
	free(v);
}

int cfg_check_replica_dests(struct walk *w, const struct cfg_node *seq)
{
	struct config *cfg = w->cfg;
	struct key *keys = NULL;
	size_t n = 0, k = 0, *first = NULL, *db_of = NULL, *rep_of = NULL;
	char **res = NULL;
	int rc = -1;

	for (size_t d = 0; d < cfg->ndbs; d++)
		n += cfg->dbs[d].nreplicas;
	if (n == 0)
		return 0;
	keys = calloc(n, sizeof(*keys));
	first = calloc(n, sizeof(*first));
	db_of = calloc(n, sizeof(*db_of));
	rep_of = calloc(n, sizeof(*rep_of));
	res = calloc(n, sizeof(*res));
	if (!keys || !first || !db_of || !rep_of || !res)
		goto oom;
	for (size_t d = 0; d < cfg->ndbs; d++) {
		for (size_t j = 0; j < cfg->dbs[d].nreplicas; j++, k++) {
			const struct cfg_replica *r = &cfg->dbs[d].replicas[j];
			db_of[k] = d;
			rep_of[k] = j;
			keys[k].i = k;
			if (r->type == REPLICA_FILE) {
				/* a file replica is a directory: one place however it is spelled */
				if (r->path && !(res[k] = resolved(r->path)))
					goto oom;
				keys[k].s[0] = "file";
				keys[k].s[1] = res[k];
			} else {
				keys[k].s[0] = "s3";
				keys[k].s[1] = r->bucket;
				keys[k].s[2] = r->endpoint;
				keys[k].s[3] = r->path;
			}
		}
	}
	first_equal(keys, n, first);
	for (k = 0; k < n; k++) {
		if (first[k] == NONE)
			continue;
		/* Two replicas (of any db) writing to one place would destroy each other's generations. */
		const struct cfg_replica *r = &cfg->dbs[db_of[k]].replicas[rep_of[k]];
		const struct cfg_replica *o = &cfg->dbs[db_of[first[k]]].replicas[rep_of[first[k]]];
		struct cfg_node at = { .line = r->line, .column = r->column };
		char rp[80], place[PATH_MAX + 8];
		if (r->type == REPLICA_FILE)
			snprintf(place, sizeof(place), "%s", strcmp(r->path, o->path) == 0 ? r->path : res[k]);
		else
			snprintf(place, sizeof(place), "s3://%s/%s", r->bucket, r->path);
		snprintf(rp, sizeof(rp), "dbs[%zu].replicas[%zu]", db_of[k], rep_of[k]);
		cfg_error(w->e, &at, rp,
			  "writes to the same place as dbs[%zu].replicas[%zu] (line %d): %s; give it its own path",
			  db_of[first[k]], rep_of[first[k]], o->line, place);
		goto out;
	}
	rc = 0;
	goto out;
oom:
	cfg_error(w->e, seq, "dbs", "out of memory");
out:
	free_all(res, n);
	free(keys);
	free(first);
	free(db_of);
	free(rep_of);
	return rc;
}

/* Is path dir itself or under it? */
static bool within(const char *dir, const char *path)
{
	size_t l = strlen(dir);
	if (l == 1 && dir[0] == '/')
		return true;
	return strncmp(dir, path, l) == 0 && (path[l] == '/' || path[l] == '\0');
}

int cfg_check_same_dbs(struct walk *w, const struct cfg_node *seq)
{
	struct config *cfg = w->cfg;
	size_t n = cfg->ndbs;
	struct key *keys = NULL;
	size_t *first[6] = { 0 };
	char **res = NULL;
	int rc = -1;

	if (n == 0)
		return 0;
	keys = calloc(n, sizeof(*keys));
	/* resolved paths, resolved meta-paths, names and paths as shown (utf8.h) */
	res = calloc(4 * n, sizeof(*res));
	for (int f = 0; f < 6; f++)
		if (!(first[f] = calloc(n, sizeof(*first[f]))))
			goto oom;
	if (!keys || !res)
		goto oom;
	for (size_t i = 0; i < n; i++)
		if (!(res[i] = resolved(cfg->dbs[i].path)) ||
		    !(res[n + i] = resolved(cfg->dbs[i].meta_path)) ||
		    !(res[2 * n + i] = shown(cfg->dbs[i].name)) ||
		    !(res[3 * n + i] = shown(cfg->dbs[i].path)))
			goto oom;
	/*
	 * the same file (spelled differently or through a symlink), name, env
	 * variable, state directory (shared, each database's replication would
	 * take the other's generation and shadow WAL for its own); the same name
	 * or path once shown (bytes that are not UTF-8 all read U+FFFD: two
	 * databases in one series of /metrics, which Prometheus refuses, and one
	 * in the logs and /healthz: QA93 D2)
	 */
	for (int f = 0; f < 6; f++) {
		for (size_t i = 0; i < n; i++) {
			const char *k = f == 0 ? res[i] : f == 1 ? cfg->dbs[i].name
				      : f == 2 ? cfg->dbs[i].env : f == 3 ? res[n + i]
				      : f == 4 ? res[2 * n + i] : res[3 * n + i];
			keys[i] = (struct key){ .s = { k }, .i = i };
		}
		first_equal(keys, n, first[f]);
	}
	for (size_t i = 0; i < n; i++) {
		size_t j = NONE;
		for (int f = 0; f < 6; f++)
			if (first[f][i] < j)
				j = first[f][i];
		if (j == NONE)
			continue;
		/* dbs[i] is dbs[j] again: say how, path first */
		const struct cfg_db *db = &cfg->dbs[i], *o = &cfg->dbs[j];
		const char *what = strcmp(res[i], res[j]) == 0 ? "path"
				 : strcmp(db->name, o->name) == 0 ? "name"
				 : strcmp(db->env, o->env) == 0 ? "env"
				 : strcmp(res[n + i], res[n + j]) == 0 ? "meta-path"
				 : strcmp(res[2 * n + i], res[2 * n + j]) == 0 ? "name" : "path";
		bool as_shown = strcmp(res[i], res[j]) != 0 && strcmp(db->name, o->name) != 0 &&
				strcmp(db->env, o->env) != 0 && strcmp(res[n + i], res[n + j]) != 0;
		char kp[96];
		snprintf(kp, sizeof(kp), "dbs[%zu].%s", i, what);
		const struct cfg_node *at = walk_map_get(seq->items[i], what);
		if (as_shown)
			cfg_error(w->e, at ? at : seq->items[i], kp,
				  "shows as the same %s as dbs[%zu] (line %d) in logs, /healthz and "
				  "/metrics, %s: bytes that are not UTF-8 all read as U+FFFD; %s", what, j,
				  o->line, what[0] == 'n' ? res[2 * n + i] : res[3 * n + i],
				  what[0] == 'n' ? "give each database its own \"name\""
						 : "Litestream's series name a database by its path: "
						   "rename one of the files");
		else if (what[0] == 'm')
			cfg_error(w->e, at ? at : seq->items[i], kp,
				  "same state directory as dbs[%zu] (line %d): %s; give each database its own "
				  "\"meta-path\"", j, o->line, db->meta_path);
		else if (what[0] != 'p')
			cfg_error(w->e, at ? at : seq->items[i], kp,
				  "same %s as dbs[%zu] (line %d); give each database its own \"name\" and \"env\"",
				  what, j, o->line);
		else if (strcmp(o->path, db->path) == 0)
			cfg_error(w->e, at ? at : seq->items[i], kp, "same file as dbs[%zu].path (line %d): %s",
				  j, o->line, db->path);
		else
			cfg_error(w->e, at ? at : seq->items[i], kp,
				  "%s is the same file as dbs[%zu].path %s (line %d), through a symlink",
				  db->path, j, o->path, o->line);
		goto out;
	}
	/*
	 * A state directory is moved aside whole when a replica's newer data
	 * replaces its database: one that holds a database (its own, set to the
	 * database's directory) or another database's state directory would take
	 * that along (QA41, QA42)
	 */
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < n; j++) {
			const char *held = within(res[n + i], res[j]) ? res[j]
					 : j != i && within(res[n + i], res[n + j]) ? res[n + j] : NULL;
			if (!held)
				continue;
			char kp[96];
			snprintf(kp, sizeof(kp), "dbs[%zu].meta-path", i);
			const struct cfg_node *at = walk_map_get(seq->items[i], "meta-path");
			cfg_error(w->e, at ? at : seq->items[i], kp,
				  "%s holds %s (%s of dbs[%zu]): a state directory is moved aside whole "
				  "when a replica's data replaces its database; give it a directory of "
				  "its own", cfg->dbs[i].meta_path, held, held == res[j] ? "the database"
				  : "the state directory", j);
			goto out;
		}
	}
	rc = 0;
	goto out;
oom:
	cfg_error(w->e, seq, "dbs", "out of memory");
out:
	free_all(res, 4 * n);
	free(keys);
	for (int f = 0; f < 6; f++)
		free(first[f]);
	return rc;
}

/* The last n components of path ("a/b/c", 2: "b/c"), or all of it. */
static const char *last_components(const char *path, int n)
{
	const char *p = path + strlen(path);
	while (p > path && n > 0) {
		p--;
		if (*p == '/' && --n == 0)
			return p + 1;
	}
	return *path == '/' ? path + 1 : path;
}

/*
 * clash[i]: another database has dbs[i]'s name and another path. keys has
 * room for every database.
 */
static void find_clashes(const struct config *cfg, struct key *keys, bool *clash)
{
	size_t n = cfg->ndbs;
	for (size_t i = 0; i < n; i++)
		keys[i] = (struct key){ .s = { cfg->dbs[i].name, cfg->dbs[i].path }, .i = i };
	qsort(keys, n, sizeof(*keys), key_cmp);
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a + 1; b < n && strcmp(keys[a].s[0], keys[b].s[0]) == 0; b++)
			;
		/* sorted by path within one name: two paths differ if the first and last do */
		bool c = strcmp(keys[a].s[1], keys[b - 1].s[1]) != 0;
		for (size_t k = a; k < b; k++)
			clash[keys[k].i] = c;
	}
}

int cfg_distinct_default_names(struct walk *w, const struct cfg_node *seq)
{
	struct config *cfg = w->cfg;
	bool *clash = calloc(cfg->ndbs + 1, sizeof(*clash));
	struct key *keys = calloc(cfg->ndbs + 1, sizeof(*keys));
	int rc = -1;

	if (!clash || !keys)
		goto oom;
	for (int depth = 2; depth < 64; depth++) {
		bool changed = false;
		/* who clashes is decided before any is renamed: all of them get longer */
		find_clashes(cfg, keys, clash);
		for (size_t i = 0; i < cfg->ndbs; i++) {
			struct cfg_db *db = &cfg->dbs[i];
			if (!clash[i] || walk_map_get(seq->items[i], "name"))
				continue;
			const char *longer = last_components(db->path, depth);
			if (!strcmp(longer, db->name))
				continue;
			char *name = strdup(longer);
			if (!name)
				goto oom;
			free(db->name);
			db->name = name;
			if (!walk_map_get(seq->items[i], "env")) {
				size_t len = strlen(name) + 16;
				char *env = malloc(len);
				if (!env)
					goto oom;
				config_db_env_name(name, env, len);
				free(db->env);
				db->env = env;
			}
			changed = true;
		}
		if (!changed)
			break;
	}
	rc = 0;
	goto out;
oom:
	cfg_error(w->e, seq, "dbs", "out of memory");
out:
	free(clash);
	free(keys);
	return rc;
}
