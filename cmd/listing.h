/*
 * listing.h — the loop shared by `generations`, `snapshots` and `wal`: parse -config,
 * -no-expand-env, -replica (and -generation), then call print for every
 * generation of every matching replica.
 */
#ifndef LITEVISOR_CMD_LISTING_H
#define LITEVISOR_CMD_LISTING_H

#include <stdbool.h>

#include "cmd/cli.h"
#include "cmd/table.h"
#include "replication/catalog.h"

/* What is listed: db_path the database's file, NULL for a replica URL. */
struct listing_of {
	const char *db_path;
};

/* Adds the rows of one generation of replica to t. */
typedef void (*listing_print_fn)(struct table *t, const char *replica,
				 const struct cat_generation *g, const struct listing_of *of,
				 void *ctx);

/*
 * Run the command: a table of ncols columns under header, its rows added by
 * print, printed once every replica has been listed (aligned as Litestream's
 * tabwriter does). with_generation adds the -generation flag. Returns the exit code (0; 100 usage; 111 or 1
 * when a replica could not be listed, see listing_failed; the others are
 * still printed).
 */
int listing_run(const struct command *cmd, int argc, char **argv, bool with_generation,
		const char *const *header, size_t ncols, listing_print_fn print, void *ctx);

/*
 * The exit code once a replica could not be listed with err, given the one
 * so far (rc): 111 when retrying later may work (network, timeout, 5xx), 1
 * when it will not (credentials refused, no such bucket); 1 wins.
 */
int listing_failed(int rc, const struct st_error *err);

#endif
