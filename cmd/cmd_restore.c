/*
 * cmd_restore.c — `litevisor restore [flags] DB_PATH|REPLICA_URL`.
 *
 * Litestream v0.3's flags and exit codes (1 = no backup found or the output
 * exists), minus its bugs (an -index past the end is an error), plus
 * litevisor's 100 (usage/config) and 111 (no replica reachable, network).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/commands.h"
#include "cmd/source.h"
#include "common/clock.h"
#include "common/log.h"
#include "replication/layout.h"
#include "replication/restore.h"
#include "common/banned.h"

static int run_restore(int argc, char **argv)
{
	const char *config = NULL, *output = NULL, *generation = NULL, *index = NULL,
		   *timestamp = NULL, *replica = NULL;
	long parallelism = 0;
	bool no_expand = false, if_db = false, if_rep = false, dry = false, help;
	const struct flag flags[] = {
		{ "config", FLAG_STRING, &config, "PATH", "configuration file" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in the config" },
		{ "o", FLAG_STRING, &output, "PATH", "output path (default: the database's path)" },
		{ "generation", FLAG_STRING, &generation, "NAME", "restore this generation" },
		{ "index", FLAG_STRING, &index, "HEX", "restore up to this WAL index (hex)" },
		{ "timestamp", FLAG_STRING, &timestamp, "RFC3339", "restore the state as of this time" },
		{ "replica", FLAG_STRING, &replica, "NAME", "restore from this replica only" },
		{ "parallelism", FLAG_INT, &parallelism, "N", "WAL downloads at once (default 8)" },
		{ "if-db-not-exists", FLAG_BOOL, &if_db, NULL, "exit 0 if the database already exists" },
		{ "if-replica-exists", FLAG_BOOL, &if_rep, NULL, "exit 0 if no replica holds data" },
		{ "dry-run", FLAG_BOOL, &dry, NULL, "print the decision, write nothing" },
		{ 0 },
	};
	struct cmd_source src;
	struct restore_opts opt = { 0 };
	struct restore_result res;

	int i = cli_parse(&cmd_restore, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	if (i >= argc)
		return cli_usage_error(&cmd_restore, "database path or replica URL required");
	if (i + 1 < argc)
		return cli_usage_error(&cmd_restore, "unexpected argument \"%s\"", argv[i + 1]);
	if (generation && !layout_generation_valid(generation))
		return cli_usage_error(&cmd_restore, "-generation: \"%s\" is not a generation name "
				       "(16 lowercase hex digits)", generation);
	if (index) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(index, &end, 16);
		if (errno || !*index || *end || v > 0xffffffffUL || index[0] == '-')
			return cli_usage_error(&cmd_restore, "-index: invalid hex index \"%s\"", index);
		opt.has_index = true;
		opt.index = (uint32_t)v;
	}
	if (timestamp && clock_parse_rfc3339(timestamp, &opt.timestamp_ns) < 0)
		return cli_usage_error(&cmd_restore, "-timestamp: \"%s\" is not RFC 3339 "
				       "(e.g. 2026-11-22T06:27:38Z)", timestamp);
	if (parallelism < 0 || parallelism > 64)
		return cli_usage_error(&cmd_restore, "-parallelism: must be 1 to 64");
	if (cmd_source_is_url(argv[i]) && !output)
		return cli_usage_error(&cmd_restore, "-o is required when restoring from a replica URL");

	int rc = cmd_source_open(&cmd_restore, config, no_expand, argv[i], &src);
	if (rc)
		return rc;
	if (replica) {
		bool found = false;
		for (size_t k = 0; k < src.db->nreplicas; k++)
			if (src.db->replicas[k].name && !strcmp(src.db->replicas[k].name, replica))
				found = true;
		if (!found) {
			fprintf(stderr, "litevisor restore: no replica named \"%s\" for %s\n", replica,
				argv[i]);
			cmd_source_release(&src);
			return EXIT_USAGE;
		}
	}
	if (src.from_url && !(src.url_db.path = strdup(output))) {
		cmd_source_release(&src);
		return EXIT_TEMPFAIL;
	}
	opt.output = output;
	opt.generation = generation;
	opt.replica = replica;
	opt.parallelism = (int)parallelism;
	opt.dry_run = dry;
	opt.if_db_not_exists = if_db;

	restore_explicit(&src.cfg, src.db, &opt, &res);
	switch (res.outcome) {
	case RESTORE_RESTORED:
		rc = 0;
		if (!dry)
			log_info("restore", "done", "source=%s generation=%s index=%08x offset=%08x ms=%lld",
				 res.source, res.pos.generation, res.pos.index, res.pos.offset,
				 (long long)res.duration_ms);
		break;
	case RESTORE_EXISTS:
	case RESTORE_EMPTY:
		log_info("restore", "nothing to do", "reason=\"%s\"", res.message);
		rc = 0;
		break;
	case RESTORE_NO_DATA:
		if (if_rep) {
			log_info("restore", "no matching backups found, skipping (-if-replica-exists)",
				 "reason=\"%s\"", res.message);
			rc = 0;
		} else {
			fprintf(stderr, "litevisor restore: %s\n", res.message);
			rc = EXIT_NODATA;
		}
		break;
	case RESTORE_UNREACHABLE:
		fprintf(stderr, "litevisor restore: %s\n", res.message);
		rc = EXIT_TEMPFAIL;
		break;
	case RESTORE_FAILED:
		fprintf(stderr, "litevisor restore: %s\n", res.message);
		rc = res.temporary ? EXIT_TEMPFAIL : 1;
		break;
	}
	cmd_source_release(&src);
	if (restore_probes_wait(2000)) {
		/* a probe left behind may be inside OpenSSL: skip its atexit cleanup */
		fflush(NULL);
		_exit(rc);
	}
	return rc;
}

const struct command cmd_restore = {
	.name = "restore",
	.summary = "restore a database from the freshest replica",
	.usage = "litevisor restore [flags] DB_PATH|REPLICA_URL",
	.description =
		"Probes every replica of the database in parallel and restores from the one with\n"
		"the newest data (ties: the fastest), falling back to another holding the same data\n"
		"if a download fails or an object is corrupt. Never overwrites an existing file.\n"
		"Exit codes: 0 restored (or skipped by -if-*), 1 no matching backup or output exists,\n"
		"100 usage or configuration error, 111 no replica reachable or network failure.",
	.run = run_restore,
};
