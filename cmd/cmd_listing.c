/* cmd_listing.c — the replica walk shared by `generations`, `snapshots` and `wal` (listing.h). */
#include "cmd/listing.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/source.h"
#include "replication/layout.h"
#include "common/banned.h"

#define LIST_DEADLINE_MS 15000

int listing_run(const struct command *cmd, int argc, char **argv, bool with_generation,
		const char *const *header, size_t ncols, listing_print_fn print, void *ctx)
{
	const char *config = NULL, *replica = NULL, *generation = NULL;
	bool no_expand = false, help;
	struct flag flags[] = {
		{ "config", FLAG_STRING, &config, "PATH", "configuration file" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in the config" },
		{ "replica", FLAG_STRING, &replica, "NAME", "only this replica" },
		{ "generation", FLAG_STRING, &generation, "NAME", "only this generation" },
		{ 0 },
	};
	if (!with_generation)
		memset(&flags[3], 0, sizeof(flags[3]));
	struct cmd_source src;
	int i = cli_parse(cmd, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	if (i >= argc)
		return cli_usage_error(cmd, "database path or replica URL required");
	if (i + 1 < argc)
		return cli_usage_error(cmd, "unexpected argument \"%s\"", argv[i + 1]);
	if (generation && !layout_generation_valid(generation))
		return cli_usage_error(cmd, "-generation: \"%s\" is not a generation name", generation);
	int rc = cmd_source_open(cmd, config, no_expand, argv[i], &src);
	if (rc)
		return rc;
	/* before the header: a typo is a usage error, not an empty table */
	if ((rc = cli_check_replica(cmd, src.db, replica, argv[i]))) {
		cmd_source_release(&src);
		return rc;
	}

	struct listing_of of = { .db_path = src.from_url ? NULL : src.db->path };
	struct st_call call = { .deadline_ms = LIST_DEADLINE_MS };
	struct table t = TABLE_INIT(ncols);
	table_row(&t, header);
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
			fprintf(stderr, "litevisor %s: replica %s: %s\n", cmd->name, name, err.message);
			rc = listing_failed(rc, &err);
			storage_free(st);
			continue;
		}
		for (size_t g = 0; g < n; g++) {
			struct cat_generation cg;
			if (generation && strcmp(generation, ids[g]) != 0)
				continue;
			if (catalog_load(st, ids[g], &cg, &call, &err) < 0) {
				fprintf(stderr, "litevisor %s: replica %s: %s\n", cmd->name, name,
					err.message);
				rc = listing_failed(rc, &err);
				continue;
			}
			print(&t, name, &cg, &of, ctx);
			catalog_generation_release(&cg);
		}
		free(ids);
		storage_free(st);
	}
	table_print(&t, stdout);
	table_release(&t);
	cmd_source_release(&src);
	return rc;
}

int listing_failed(int rc, const struct st_error *err)
{
	int code = err->status == ST_TRANSIENT ? EXIT_TEMPFAIL : 1;
	return rc == 1 || code == 1 ? 1 : code;
}
