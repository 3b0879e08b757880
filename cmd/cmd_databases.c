/*
 * cmd_databases.c — `litevisor databases [-config F]`: the databases of the
 * configuration file and the names of their replicas, as Litestream v0.3's
 * `databases` prints them (a "path  replicas" table, names comma-joined).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/source.h"
#include "common/config.h"
#include "common/banned.h"

/* The replica names of db, comma-joined, into buf. */
static void replica_names(const struct cfg_db *db, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t r = 0; r < db->nreplicas && o < len; r++) {
		const char *name = db->replicas[r].name ? db->replicas[r].name : "replica";
		int n = snprintf(buf + o, len - o, "%s%s", r ? "," : "", name);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

static int run_databases(int argc, char **argv)
{
	struct config cfg;
	const char *file;
	bool no_expand;
	int code;
	if (cmd_config_only(&cmd_databases, argc, argv, &cfg, &file, &no_expand, &code) < 0)
		return code;
	/* columns as Litestream's tabwriter sets them: the widest cell, two spaces */
	size_t w = strlen("path");
	for (size_t d = 0; d < cfg.ndbs; d++)
		if (strlen(cfg.dbs[d].path) > w)
			w = strlen(cfg.dbs[d].path);
	printf("%-*s  %s\n", (int)w, "path", "replicas");
	for (size_t d = 0; d < cfg.ndbs; d++) {
		char names[4096];
		replica_names(&cfg.dbs[d], names, sizeof(names));
		printf("%-*s  %s\n", (int)w, cfg.dbs[d].path, names);
	}
	config_release(&cfg);
	return 0;
}

const struct command cmd_databases = {
	.name = "databases",
	.summary = "list the databases of the config file and their replicas",
	.usage = "litevisor databases [-config PATH] [-no-expand-env]",
	.run = run_databases,
};
