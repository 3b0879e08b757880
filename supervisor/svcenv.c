/* svcenv.c — the service's environment (see svcenv.h). */
#include "supervisor/svcenv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

extern char **environ;

void svcenv_db_var(const struct cfg_db *db, char *buf, size_t len)
{
	if (db->env && *db->env) {
		snprintf(buf, len, "%s", db->env);
		return;
	}
	const char *name = db->name;
	if (!name || !*name) {
		const char *slash = db->path ? strrchr(db->path, '/') : NULL;
		name = slash ? slash + 1 : (db->path ? db->path : "DB");
	}
	config_db_env_name(name, buf, len);
}

struct envb {
	char **v;
	size_t n, cap;
};

/* Set name=value, replacing an existing entry. 0 or -1. */
static int env_set(struct envb *e, const char *name, const char *value)
{
	size_t nl = strlen(name);
	size_t len = nl + 1 + strlen(value) + 1;
	char *entry = malloc(len);
	if (!entry)
		return -1;
	snprintf(entry, len, "%s=%s", name, value);
	for (size_t i = 0; i < e->n; i++) {
		if (strncmp(e->v[i], name, nl) == 0 && e->v[i][nl] == '=') {
			free(e->v[i]);
			e->v[i] = entry;
			return 0;
		}
	}
	if (e->n + 2 > e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 64;
		char **p = realloc(e->v, cap * sizeof(*p));
		if (!p) {
			free(entry);
			return -1;
		}
		e->v = p;
		e->cap = cap;
	}
	e->v[e->n++] = entry;
	e->v[e->n] = NULL;
	return 0;
}

/* Remove name's entry, if any. */
static void env_unset(struct envb *e, const char *name)
{
	size_t nl = strlen(name);
	for (size_t i = 0; i < e->n; i++) {
		if (strncmp(e->v[i], name, nl) == 0 && e->v[i][nl] == '=') {
			free(e->v[i]);
			e->v[i] = e->v[--e->n];
			e->v[e->n] = NULL;
			return;
		}
	}
}

char **svcenv_build(const struct config *cfg, const struct child_creds *creds)
{
	struct envb e = { NULL, 0, 0 };
	size_t count = 0;
	for (char **p = environ; p && *p; p++)
		count++;
	e.cap = count + 16;
	e.v = calloc(e.cap, sizeof(*e.v));
	if (!e.v)
		return NULL;
	for (char **p = environ; p && *p; p++) {
		if (!(e.v[e.n] = strdup(*p)))
			goto fail;
		e.n++;
	}
	for (size_t i = 0; cfg && i < cfg->ndbs; i++) {
		char name[256];
		svcenv_db_var(&cfg->dbs[i], name, sizeof(name));
		if (env_set(&e, name, cfg->dbs[i].path) < 0)
			goto fail;
	}
	if (cfg && cfg->ndbs == 1 && env_set(&e, "LITESTREAM_DB_PATH", cfg->dbs[0].path) < 0)
		goto fail;
	if (creds && creds->set && creds->user &&
	    (env_set(&e, "USER", creds->user) < 0 || env_set(&e, "LOGNAME", creds->user) < 0))
		goto fail;
	/* a bare uid without a passwd entry has no name: ours (root's) would lie */
	if (creds && creds->set && !creds->user && creds->home) {
		env_unset(&e, "USER");
		env_unset(&e, "LOGNAME");
	}
	/* the user's home; "/" for a bare uid without a passwd entry (child.h) */
	if (creds && creds->set && creds->home && env_set(&e, "HOME", creds->home) < 0)
		goto fail;
	return e.v;
fail:
	svcenv_free(e.v);
	return NULL;
}

void svcenv_free(char **env)
{
	if (!env)
		return;
	for (char **p = env; *p; p++)
		free(*p);
	free(env);
}
