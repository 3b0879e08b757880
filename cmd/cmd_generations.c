/*
 * cmd_generations.c — `litevisor generations [flags] DB_PATH|REPLICA_URL`:
 * the generations each replica holds and their time window, as Litestream's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <limits.h>

#include "cmd/commands.h"
#include "cmd/listing.h"
#include "common/clock.h"
#include "replication/catalog.h"
#include "common/banned.h"

/*
 * The lag column as Litestream prints it: Go's Duration.String of the
 * difference, truncated as its truncateDuration does (whole seconds past
 * 10 s, tenths past 1 s, then ms, then µs), negative when the replica's
 * clock is ahead.
 */
static void lag_text(int64_t ns, char *buf, size_t len)
{
	const char *sign = ns < 0 ? "-" : "";
	uint64_t a = ns < 0 ? (uint64_t)0 - (uint64_t)ns : (uint64_t)ns;
	const uint64_t us = 1000, ms = 1000 * us, sec = 1000 * ms;
	if (a > 10 * sec)
		a -= a % sec;
	else if (a > sec)
		a -= a % (100 * ms);
	else if (a > ms)
		a -= a % ms;
	else if (a > us)
		a -= a % us;
	if (a == 0)
		snprintf(buf, len, "0s");
	else if (a < us)
		snprintf(buf, len, "%s%lluns", sign, (unsigned long long)a);
	else if (a < ms)
		snprintf(buf, len, "%s%lluµs", sign, (unsigned long long)(a / us));
	else if (a < sec)
		snprintf(buf, len, "%s%llums", sign, (unsigned long long)(a / ms));
	else if (a < 60 * sec && a % sec)
		snprintf(buf, len, "%s%llu.%llus", sign, (unsigned long long)(a / sec),
			 (unsigned long long)(a % sec / (100 * ms)));
	else if (a < 60 * sec)
		snprintf(buf, len, "%s%llus", sign, (unsigned long long)(a / sec));
	else if (a < 3600 * sec)
		snprintf(buf, len, "%s%llum%llus", sign, (unsigned long long)(a / (60 * sec)),
			 (unsigned long long)(a / sec % 60));
	else
		snprintf(buf, len, "%s%lluh%llum%llus", sign, (unsigned long long)(a / (3600 * sec)),
			 (unsigned long long)(a / sec / 60 % 60), (unsigned long long)(a / sec % 60));
}

/* ns of a file's last change, 0 if it cannot be read. */
static int64_t mtime_ns(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return 0;
	return (int64_t)st.st_mtim.tv_sec * NS_PER_SEC + st.st_mtim.tv_nsec;
}

/*
 * What the lag counts from, as in Litestream: for DB_PATH, the database's last
 * write (its file or -wal, whichever changed last), so a replica holding
 * everything shows about 0 however long the database has been idle; for a
 * replica URL, or a database not there, now.
 */
static int64_t lag_base(const struct listing_of *of)
{
	char wal[PATH_MAX + 8];
	int64_t db = of->db_path ? mtime_ns(of->db_path) : 0;
	if (!db)
		return clock_wall_ns();
	snprintf(wal, sizeof(wal), "%s-wal", of->db_path);
	int64_t w = mtime_ns(wal);
	return db > w ? db : w;
}

static void print_generation(struct table *t, const char *replica,
			     const struct cat_generation *g, const struct listing_of *of, void *ctx)
{
	int64_t *base = ctx; /* read once, at the first row */
	char a[40], b[40], lag[32];
	if (!g->nsnapshots && !g->nsegments)
		return;
	if (!*base)
		*base = lag_base(of);
	/* the server's own times, as Litestream prints them (struct st_list) */
	lag_text(*base - (g->max_ns + g->clock_offset_ns), lag, sizeof(lag));
	clock_rfc3339_exact(g->min_ns + g->clock_offset_ns, a, sizeof(a));
	clock_rfc3339_exact(g->max_ns + g->clock_offset_ns, b, sizeof(b));
	table_row(t, (const char *[]){ replica, g->id, lag, a, b });
}

static int run_generations(int argc, char **argv)
{
	static const char *const header[] = { "name", "generation", "lag", "start", "end" };
	int64_t base = 0;
	return listing_run(&cmd_generations, argc, argv, false, header, 5, print_generation, &base);
}

const struct command cmd_generations = {
	.name = "generations",
	.summary = "list the generations each replica holds",
	.usage = "litevisor generations [flags] DB_PATH|REPLICA_URL",
	.description = "Lag is how far the generation's newest object lies behind the database's\n"
		       "last write (DB_PATH), or behind now (REPLICA_URL), as Litestream prints it;\n"
		       "start and end are the times of its oldest and newest objects (the servers'\n"
		       "clocks).",
	.run = run_generations,
};
