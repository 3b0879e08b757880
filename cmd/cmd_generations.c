/*
 * cmd_generations.c — `litevisor generations [flags] DB_PATH|REPLICA_URL`:
 * the generations each replica holds and their time window, as Litestream's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "cmd/listing.h"
#include "common/clock.h"
#include "replication/catalog.h"
#include "common/banned.h"

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

static void print_generation(struct table *t, const char *replica,
			     const struct cat_generation *g, void *ctx)
{
	int64_t now = *(const int64_t *)ctx;
	char a[40], b[40], lag[32];
	if (!g->nsnapshots && !g->nsegments)
		return;
	lag_text(now - g->max_ns, lag, sizeof(lag));
	clock_rfc3339_exact(g->min_ns, a, sizeof(a));
	clock_rfc3339_exact(g->max_ns, b, sizeof(b));
	table_row(t, (const char *[]){ replica, g->id, lag, a, b });
}

static int run_generations(int argc, char **argv)
{
	static const char *const header[] = { "name", "generation", "lag", "start", "end" };
	int64_t now = clock_wall_ns();
	return listing_run(&cmd_generations, argc, argv, false, header, 5, print_generation, &now);
}

const struct command cmd_generations = {
	.name = "generations",
	.summary = "list the generations each replica holds",
	.usage = "litevisor generations [flags] DB_PATH|REPLICA_URL",
	.description = "Lag is the time since the generation's newest object; start and end are\n"
		       "the times of its oldest and newest objects (the servers' clocks).",
	.run = run_generations,
};
