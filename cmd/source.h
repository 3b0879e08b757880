/*
 * source.h — the DB_PATH|REPLICA_URL argument shared by `restore`,
 * `generations`, `snapshots` and `wal` (as in Litestream v0.3): either a
 * database of the configuration file, or a single replica given by URL.
 */
#ifndef LITEVISOR_CMD_SOURCE_H
#define LITEVISOR_CMD_SOURCE_H

#include <stdbool.h>

#include "cmd/cli.h"
#include "common/config.h"

struct cmd_source {
	struct config cfg;        /* loaded, or defaults for a URL */
	struct cfg_db *db;        /* the database: in cfg, or &url_db */
	struct cfg_db url_db;
	struct cfg_replica url_replica;
	bool from_url;
};

/*
 * The config file a command reads: config_default_path(config_path) into
 * *file. Returns 0, or prints the usage error naming the empty -config or
 * variable and returns EXIT_USAGE.
 */
int cmd_config_path(const struct command *cmd, const char *config_path, const char **file);

/*
 * A replica URL with -config (config_path neither NULL nor ""), which
 * Litestream refuses: prints the usage error and returns EXIT_USAGE; else 0.
 * An empty -config beside a URL is fine, as in Litestream: no file is read.
 */
int cmd_source_check(const struct command *cmd, const char *config_path, const char *arg);

/*
 * Resolve arg (a path or name of a configured database, or a replica URL
 * when it has a scheme "xxx://"). config_path: -config (NULL: the default
 * lookup); a URL source reads no config file, and with -config it is a usage
 * error (cmd_source_check). Sets up logging from the config. Returns 0, or
 * an exit code (message printed) with src released.
 */
int cmd_source_open(const struct command *cmd, const char *config_path, bool no_expand_env,
		    const char *arg, struct cmd_source *src);

/*
 * The start of a command whose only flags are -config and -no-expand-env and
 * which takes no argument (`config`, `databases`): parse, then load the file.
 * Returns 0 with *cfg loaded (release it), *file the path it came from and
 * *no_expand the flag; or -1 with *code the exit code (0 after -help, 100;
 * message printed).
 */
int cmd_config_only(const struct command *cmd, int argc, char **argv, struct config *cfg,
		    const char **file, bool *no_expand, int *code);

/*
 * The config's exec is about to be used: warn when it expanded an unset
 * variable (to nothing, as a shell does), since a failure to start the
 * command would otherwise name only what was left of it.
 */
void cmd_note_exec(const struct config *cfg);

/*
 * The command about to be supervised (argv, from "--" or exec) has an empty
 * name (`run -- ""`, `exec: '"$UNSET" --flag'`): a usage error, 100, as no
 * command at all is, rather than 127 from a failed exec. unset: the unset
 * variable the config's exec used, when argv came from it (else NULL).
 * Returns 0, or 100 with the message printed.
 */
int cmd_check_command(const struct command *cmd, char *const *argv, const char *unset);

/*
 * A config file that is empty or whose "dbs:" has no value (what a template
 * renders when its data is missing) would start a service unrestored: `run`
 * refuses it, and `config` with it. Prints the usage error and returns
 * EXIT_USAGE; 0 for any other config (an explicit "dbs: []" included).
 */
int cmd_refuse_blank_dbs(const struct command *cmd, const struct config *cfg, const char *file);

/* True if s looks like a replica URL (scheme://...). */
bool cmd_source_is_url(const char *s);

void cmd_source_release(struct cmd_source *src);

#endif
