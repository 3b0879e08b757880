/*
 * main.c — litevisor's entry point: pick the subcommand and run it.
 *
 * Signal handling is set up by the commands that need it (run, replicate),
 * first thing and before any thread exists (see supervisor/).
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "cmd/commands.h"
#include "supervisor/child.h"
#include "common/banned.h"

const struct command *const cli_commands[] = {
	&cmd_version,
	&cmd_config,
	&cmd_run,
	&cmd_replicate,
	&cmd_restore,
	&cmd_databases,
	&cmd_generations,
	&cmd_snapshots,
	&cmd_wal,
	NULL,
};

static void usage(FILE *out)
{
	fprintf(out,
		"litevisor: restore, supervise and continuously replicate SQLite databases\n"
		"(Litestream v0.3 replica format).\n\n"
		"Usage: litevisor <command> [flags] [arguments]\n\nCommands:\n");
	for (int i = 0; cli_commands[i]; i++)
		fprintf(out, "  %-12s %s\n", cli_commands[i]->name, cli_commands[i]->summary);
	fprintf(out, "\nRun 'litevisor <command> -help' for a command's flags.\n"
		     "Exit codes: 100 usage or configuration error, 111 temporary failure;\n"
		     "`run` exits with the service's own code once it has started.\n");
}

/*
 * What a command printed must have reached its stdout (`> /dev/full`, a
 * closed pipe or descriptor): else the command fails, whatever it returned.
 * litevisor logs only to stderr, so only output and -help pass here.
 */
static int output_done(const char *name, int rc)
{
	errno = 0;
	if (fflush(stdout) == 0 && !ferror(stdout))
		return rc;
	fprintf(stderr, "litevisor %s: writing standard output: %s\n", name,
		errno ? strerror(errno) : "a write failed");
	return rc == 0 ? EXIT_TEMPFAIL : rc;
}

/*
 * One malloc arena. glibc gives each thread that allocates an arena of its
 * own, up to 8 per core, and never trims them: with 5 databases of two
 * replicas each (17 threads) 6.5 of the 10.8 MB malloc held was free, in 15
 * arenas, and the private memory stood at 11-12 MiB where one arena keeps
 * 7-8 MiB (QA68). The threads mostly wait, and the byte paths (restore,
 * snapshots, segments) use buffers made once, so they hardly contend for it.
 * An operator's own choice (MALLOC_ARENA_MAX, GLIBC_TUNABLES) wins.
 */
static void one_arena(void)
{
#ifdef M_ARENA_MAX
	const char *t = getenv("GLIBC_TUNABLES");
	if (!getenv("MALLOC_ARENA_MAX") && !(t && strstr(t, "malloc.arena_max")))
		(void)mallopt(M_ARENA_MAX, 1);
#endif
}

int main(int argc, char **argv)
{
	child_hold_closed_stdio(); /* first: before anything opens a descriptor */
	one_arena();
	child_note_inherited_fds();
	child_raise_fd_limit();
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[1];
	if (!strcmp(name, "help") || !strcmp(name, "-h") || !strcmp(name, "-help") ||
	    !strcmp(name, "--help")) {
		if (argc > 2 && strcmp(name, "help") == 0) {
			for (int i = 0; cli_commands[i]; i++) {
				if (!strcmp(cli_commands[i]->name, argv[2])) {
					char *args[] = { argv[2], "-help", NULL };
					return output_done(argv[2], cli_commands[i]->run(2, args));
				}
			}
			fprintf(stderr, "litevisor: unknown command \"%s\"\n", argv[2]);
			return EXIT_USAGE;
		}
		usage(stdout);
		return output_done("help", 0);
	}
	if (!strcmp(name, "-version") || !strcmp(name, "--version"))
		name = "version";
	for (int i = 0; cli_commands[i]; i++)
		if (!strcmp(cli_commands[i]->name, name))
			return output_done(name, cli_commands[i]->run(argc - 1, argv + 1));
	fprintf(stderr, "litevisor: unknown command \"%s\"\nRun 'litevisor help' for the list.\n", name);
	return EXIT_USAGE;
}
