/*
 * main.c — litevisor's entry point: pick the subcommand and run it.
 *
 * Signal handling is set up by the commands that need it (run, replicate),
 * first thing and before any thread exists (see supervisor/).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
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
 * Started with stdin, stdout or stderr closed (`2>&-`, a supervisor that
 * closes them), the next descriptor litevisor opened would take that number:
 * its log lines would go into an eventfd (adding to its counter) or into
 * whatever file landed there, a database or a replica object. /dev/null
 * holds each closed one instead, as catatonit does; the service inherits it.
 */
static void stdio_hold(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int n = open("/dev/null", O_RDWR | O_NOCTTY);
		if (n < 0) /* no /dev in a bare chroot: any descriptor that takes no data */
			n = open("/", O_RDONLY | O_DIRECTORY);
		if (n >= 0 && n != fd) { /* lowest first, so n == fd unless it failed */
			(void)dup2(n, fd);
			close(n);
		}
	}
}

int main(int argc, char **argv)
{
	stdio_hold();
	child_note_inherited_fds(); /* before anything opens one */
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
					return cli_commands[i]->run(2, args);
				}
			}
			fprintf(stderr, "litevisor: unknown command \"%s\"\n", argv[2]);
			return EXIT_USAGE;
		}
		usage(stdout);
		return 0;
	}
	if (!strcmp(name, "-version") || !strcmp(name, "--version"))
		name = "version";
	for (int i = 0; cli_commands[i]; i++)
		if (!strcmp(cli_commands[i]->name, name))
			return cli_commands[i]->run(argc - 1, argv + 1);
	fprintf(stderr, "litevisor: unknown command \"%s\"\nRun 'litevisor help' for the list.\n", name);
	return EXIT_USAGE;
}
