/*
 * cmd_generations.c — `litevisor generations [flags] DB_PATH|REPLICA_URL`:
 * the generations each replica holds and their time window, as Litestream's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/listing.h"
#include "cmd/source.h"
#include "common/clock.h"
#include "common/log.h"
#include "replication/catalog.h"
#include "common/banned.h"

#define LIST_DEADLINE_MS 15000

/* "3s", "2h5m" style truncation to seconds for the lag column. */
static void lag_text(int64_t ns, char *buf, size_t len)
{
	int64_t s = ns / NS_PER_SEC;
	if (s < 0)
		s = 0;
	if (s >= 3600)
		snprintf(buf, len, "%lldh%lldm%llds", (long long)(s / 3600), (long long)(s % 3600 / 60),
			 (long long)(s % 60));
	else if (s >= 60)
		snprintf(buf, len, "%lldm%llds", (long long)(s / 60), (long long)(s % 60));
	else
		snprintf(buf, len, "%llds", (long long)s);
}

static int run_generations(int argc, char **argv)
{
	const char *config = NULL, *replica = NULL;
	bool no_expand = false, help;
	const struct flag flags[] = {
		{ "config", FLAG_STRING, &config, "PATH", "configuration file" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in the config" },
		{ "replica", FLAG_STRING, &replica, "NAME", "only this replica" },
		{ 0 },
	};
	struct cmd_source src;
	int i = cli_parse(&cmd_generations, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	if (i >= argc)
		return cli_usage_error(&cmd_generations, "database path or replica URL required");
	if (i + 1 < argc)
		return cli_usage_error(&cmd_generations, "unexpected argument \"%s\"", argv[i + 1]);
	int rc = cmd_source_open(&cmd_generations, config, no_expand, argv[i], &src);
	if (rc)
		return rc;
	/* before the table's header: an unknown name prints nothing on stdout */
	if ((rc = cli_check_replica(&cmd_generations, src.db, replica, argv[i]))) {
		cmd_source_release(&src);
		return rc;
	}

	struct st_call call = { .deadline_ms = LIST_DEADLINE_MS };
	int64_t now = clock_wall_ns();
	printf("%-16s %-16s  %-10s %-24s %-24s\n", "name", "generation", "lag", "start", "end");
	for (size_t r = 0; r < src.db->nreplicas; r++) {
		const struct cfg_replica *rep = &src.db->replicas[r];
		const char *name = rep->name ? rep->name : "replica";
		struct st_error err = { 0 };
		char (*ids)[LAYOUT_GEN_LEN + 1] = NULL;
		size_t n = 0;
		if (replica && strcmp(replica, name) != 0)
			continue;
		struct storage *st = storage_open(rep, &err);
		if (!st || catalog_generations(st, &ids, &n, &call, &err) < 0) {
			fprintf(stderr, "litevisor generations: replica %s: %s\n", name, err.message);
			rc = listing_failed(rc, &err);
			storage_free(st);
			continue;
		}
		for (size_t g = 0; g < n; g++) {
			struct cat_generation cg;
			char a[40], b[40], lag[32];
			if (catalog_load(st, ids[g], &cg, &call, &err) < 0) {
				fprintf(stderr, "litevisor generations: replica %s: %s\n", name, err.message);
				rc = listing_failed(rc, &err);
				continue;
			}
			if (cg.nsnapshots || cg.nsegments) {
				lag_text(now - cg.max_ns, lag, sizeof(lag));
				printf("%-16s %-16s  %-10s %-24s %-24s\n", name, cg.id, lag,
				       clock_rfc3339_exact(cg.min_ns, a, sizeof(a)),
				       clock_rfc3339_exact(cg.max_ns, b, sizeof(b)));
			}
			catalog_generation_release(&cg);
		}
		free(ids);
		storage_free(st);
	}
	cmd_source_release(&src);
	return rc;
}

const struct command cmd_generations = {
	.name = "generations",
	.summary = "list the generations each replica holds",
	.usage = "litevisor generations [flags] DB_PATH|REPLICA_URL",
	.description = "Lag is the time since the generation's newest object; start and end are\n"
		       "the times of its oldest and newest objects (the servers' clocks).",
	.run = run_generations,
};
