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

static void print_snapshots(struct table *t, const char *replica,
			    const struct cat_generation *g, const struct listing_of *of, void *ctx)
{
	char index[16], size[24], created[40];
	(void)of;
	(void)ctx;
	for (size_t i = 0; i < g->nsnapshots; i++) {
		snprintf(index, sizeof(index), "%u", g->snapshots[i].index);
		snprintf(size, sizeof(size), "%lld", (long long)g->snapshots[i].size);
		/* the server's own time (struct st_list), which -timestamp is read against */
		clock_rfc3339_exact(g->snapshots[i].mtime_ns + g->clock_offset_ns, created,
				    sizeof(created));
		table_row(t, (const char *[]){ replica, g->id, index, size, created });
	}
}

static int run_snapshots(int argc, char **argv)
{
	static const char *const header[] = { "replica", "generation", "index", "size", "created" };
	return listing_run(&cmd_snapshots, argc, argv, false, header, 5, print_snapshots, NULL);
}

const struct command cmd_snapshots = {
	.name = "snapshots",
	.summary = "list the snapshots each replica holds",
	.usage = "litevisor snapshots [flags] DB_PATH|REPLICA_URL",
	.run = run_snapshots,
};
