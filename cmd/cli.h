/*
 * cli.h — subcommands and their flags.
 *
 * Flags are Go-style as in Litestream (-config F, -o PATH, -dry-run); the
 * GNU spellings --config F and --config=F work too. "--" ends the flags.
 * Every command answers -h/-help/--help with its usage on stdout and exit 0.
 *
 * litevisor's own exit codes (before a service runs; after that `run` exits
 * with the service's code):
 */
#ifndef LITEVISOR_CLI_H
#define LITEVISOR_CLI_H

#include <stdbool.h>
#include <stdint.h>

#define EXIT_USAGE     100 /* bad command line or configuration */
#define EXIT_TEMPFAIL  111 /* temporary failure: no replica reachable, I/O error */
#define EXIT_NODATA    1   /* restore: no backup matched (as Litestream) */

enum flag_type { FLAG_BOOL, FLAG_STRING, FLAG_INT, FLAG_DURATION };

struct flag {
	const char *name;      /* without dashes: "config" */
	enum flag_type type;
	void *dst;             /* bool*, const char**, long* (within int), int64_t* (ms) */
	const char *arg;       /* argument name in usage ("PATH"), NULL for bool */
	const char *help;
};

struct cfg_db;

struct command {
	const char *name;
	const char *summary;   /* one line for `litevisor help` */
	const char *usage;     /* "litevisor restore [flags] [DB_PATH|REPLICA_URL]" */
	const char *description; /* paragraph shown by -help, or NULL */
	int (*run)(int argc, char **argv); /* argv[0] is the command name */
};

/*
 * Parse flags from argv[1..]; stops at "--" or the first non-flag argument.
 * Unknown flags, missing arguments and bad values print a usage error
 * naming the flag to stderr. -h/-help/--help prints the usage and sets *help.
 * Returns the index of the first positional argument, or -1 on error.
 */
int cli_parse(const struct command *cmd, const struct flag *flags, int argc, char **argv,
	      bool *help);

/* Print a command's usage and flags to stdout (help) or stderr (errors). */
void cli_usage(const struct command *cmd, const struct flag *flags, bool to_stderr);

/* Print "litevisor <cmd>: <message>" to stderr; returns EXIT_USAGE. */
int cli_usage_error(const struct command *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * -replica NAME: does db have a replica of that name (an unnamed one is
 * "replica")? Checked before the command prints or probes anything.
 * Returns 0, or prints "litevisor <cmd>: no replica named "NAME" for ARG"
 * to stderr and returns EXIT_USAGE. name NULL: 0.
 */
int cli_check_replica(const struct command *cmd, const struct cfg_db *db, const char *name,
		      const char *arg);

/* The command table (cmd/main.c). */
extern const struct command *const cli_commands[];

#endif
