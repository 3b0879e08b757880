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
#include "cmd/table.h"
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
	struct table t = TABLE_INIT(2);
	table_row(&t, (const char *[]){ "path", "replicas" });
	for (size_t d = 0; d < cfg.ndbs; d++) {
		char names[4096];
		replica_names(&cfg.dbs[d], names, sizeof(names));
		table_row(&t, (const char *[]){ cfg.dbs[d].path, names });
	}
	table_print(&t, stdout);
	table_release(&t);
	config_release(&cfg);
	return 0;
}

const struct command cmd_databases = {
	.name = "databases",
	.summary = "list the databases of the config file and their replicas",
	.usage = "litevisor databases [-config PATH] [-no-expand-env]",
	.run = run_databases,
};
