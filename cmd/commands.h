/*
 * commands.h — every subcommand's descriptor, one per cmd/cmd_*.c file.
 * A command is listed here only once it works end to end.
 */
#ifndef LITEVISOR_COMMANDS_H
#define LITEVISOR_COMMANDS_H

#include "cmd/cli.h"

extern const struct command cmd_version;
extern const struct command cmd_config;
extern const struct command cmd_run;
extern const struct command cmd_replicate;
extern const struct command cmd_restore;
extern const struct command cmd_databases;
extern const struct command cmd_generations;
extern const struct command cmd_snapshots;
extern const struct command cmd_wal;

#endif
