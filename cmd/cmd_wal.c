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

static void print_wal(struct table *t, const char *replica, const struct cat_generation *g,
		      const struct listing_of *of, void *ctx)
{
	char index[16], offset[16], size[24], created[40];
	(void)of;
	(void)ctx;
	for (size_t i = 0; i < g->nsegments; i++) {
		snprintf(index, sizeof(index), "%u", g->segments[i].index);
		snprintf(offset, sizeof(offset), "%u", g->segments[i].offset);
		snprintf(size, sizeof(size), "%lld", (long long)g->segments[i].size);
		/* the server's own time (struct st_list), which -timestamp is read against */
		clock_rfc3339_exact(g->segments[i].mtime_ns + g->clock_offset_ns, created,
				    sizeof(created));
		table_row(t, (const char *[]){ replica, g->id, index, offset, size, created });
	}
}

static int run_wal(int argc, char **argv)
{
	static const char *const header[] = { "replica", "generation", "index", "offset", "size",
					      "created" };
	return listing_run(&cmd_wal, argc, argv, true, header, 6, print_wal, NULL);
}

const struct command cmd_wal = {
	.name = "wal",
	.summary = "list the WAL segments each replica holds",
	.usage = "litevisor wal [flags] DB_PATH|REPLICA_URL",
	.run = run_wal,
};
