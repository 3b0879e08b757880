/*
 * cmd_wal.c — `litevisor wal [flags] DB_PATH|REPLICA_URL`: every WAL
 * segment of every generation (or of -generation) on each replica, as
 * Litestream's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/listing.h"
#include "common/clock.h"
#include "common/banned.h"

static void print_wal(const char *replica, const struct cat_generation *g, void *ctx)
{
	char t[40];
	(void)ctx;
	for (size_t i = 0; i < g->nsegments; i++)
		printf("%-16s %-16s  %-10u %-10u %-12lld %s\n", replica, g->id, g->segments[i].index,
		       g->segments[i].offset, (long long)g->segments[i].size,
		       clock_rfc3339_exact(g->segments[i].mtime_ns, t, sizeof(t)));
}

static int run_wal(int argc, char **argv)
{
	return listing_run(&cmd_wal, argc, argv, true,
			   "replica          generation        index      offset     size         created",
			   print_wal, NULL);
}

const struct command cmd_wal = {
	.name = "wal",
	.summary = "list the WAL segments each replica holds",
	.usage = "litevisor wal [flags] DB_PATH|REPLICA_URL",
	.run = run_wal,
};
