/*
 * listing.h — the loop shared by `snapshots` and `wal`: parse -config,
 * -no-expand-env, -replica (and -generation), then call print for every
 * generation of every matching replica.
 */
#ifndef LITEVISOR_CMD_LISTING_H
#define LITEVISOR_CMD_LISTING_H

#include <stdbool.h>

#include "cmd/cli.h"
#include "replication/catalog.h"

typedef void (*listing_print_fn)(const char *replica, const struct cat_generation *g, void *ctx);

/*
 * Run the command: prints header, then rows through print. with_generation
 * adds the -generation flag. Returns the exit code (0; 100 usage; 111 when
 * a replica could not be listed; the others are still printed).
 */
int listing_run(const struct command *cmd, int argc, char **argv, bool with_generation,
		const char *header, listing_print_fn print, void *ctx);

#endif
