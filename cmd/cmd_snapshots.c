/*
 * cmd_snapshots.c — `litevisor snapshots [flags] DB_PATH|REPLICA_URL`:
 * every snapshot of every generation on each replica, as Litestream's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/listing.h"
#include "common/clock.h"
#include "common/banned.h"

static void print_snapshots(const char *replica, const struct cat_generation *g, void *ctx)
{
	char t[40];
	(void)ctx;
	for (size_t i = 0; i < g->nsnapshots; i++)
		printf("%-16s %-16s  %-10u %-12lld %s\n", replica, g->id, g->snapshots[i].index,
		       (long long)g->snapshots[i].size,
		       clock_rfc3339_exact(g->snapshots[i].mtime_ns, t, sizeof(t)));
}

static int run_snapshots(int argc, char **argv)
{
	return listing_run(&cmd_snapshots, argc, argv, false,
			   "replica          generation        index      size         created",
			   print_snapshots, NULL);
}

const struct command cmd_snapshots = {
	.name = "snapshots",
	.summary = "list the snapshots each replica holds",
	.usage = "litevisor snapshots [flags] DB_PATH|REPLICA_URL",
	.run = run_snapshots,
};
