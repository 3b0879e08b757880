/*
 * cmd_run.c — `litevisor run [-config F] [-- command args…]`: restore every
 * database, run the service under supervision, replicate, flush at the end
 * (supervisor/lifecycle.h). The command comes from after `--`, else from the
 * config's `exec` (split shell-words style, no shell). With a command on the
 * command line the config file is optional: when none is named and the
 * default one does not exist, `run` supervises the command with no database.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd/commands.h"
#include "cmd/source.h"
#include "common/config.h"
#include "common/log.h"
#include "supervisor/lifecycle.h"
#include "supervisor/signals.h"
#include "common/words.h"
#include "common/banned.h"

static int run_run(int argc, char **argv)
{
	const char *path = NULL;
	bool no_expand = false, help;
	char err[1024];
	char **words = NULL;
	struct config cfg;
	int code;

	/* First thing, before anything can create a thread: see signals.h. */
	if (sig_block() < 0)
		return EXIT_TEMPFAIL;

	const struct flag flags[] = {
		{ "config", FLAG_STRING, &path, "PATH",
		  "config file (default $LITEVISOR_CONFIG, $LITESTREAM_CONFIG, /etc/litevisor.yml, /etc/litestream.yml;"
		  " optional when a command is given)" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in config values" },
		{ 0 },
	};
	int i = cli_parse(&cmd_run, flags, argc, argv, &help);
	if (i < 0)
		return help ? 0 : EXIT_USAGE;
	char *const *command = i < argc ? argv + i : NULL;

	const char *file;
	struct config_options opt = { .no_expand_env = no_expand };
	if ((code = cmd_config_path(&cmd_run, path, &file)))
		return code;
	/* no config at all is fine with a command; a file named by flag or variable must exist */
	if (command && config_path_is_fallback(path) && config_path_absent(file)) {
		config_defaults(&cfg);
	} else if (config_load(file, &opt, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "litevisor run: %s\n", err);
		return EXIT_USAGE;
	}
	log_configure(cfg.log_level, cfg.log_json);
	if ((code = cmd_refuse_blank_dbs(&cmd_run, &cfg, file)))
		goto out;

	if (!command) {
		if ((!cfg.exec || !*cfg.exec) && cfg.exec_unset) {
			/* `exec: $APP_CMD` whose variable did not come: name it (QA110 O3) */
			code = cli_usage_error(&cmd_run, "%s: exec: empty: environment variable %s is "
					       "not set", file, cfg.exec_unset);
			goto out;
		}
		if (!cfg.exec || !*cfg.exec) {
			code = cli_usage_error(&cmd_run, "no command: give one after \"--\" or set \"exec\" in %s",
					       file);
			goto out;
		}
		cmd_note_exec(&cfg);
		int n = words_split(cfg.exec, &words, err, sizeof(err));
		if (n <= 0) {
			code = cli_usage_error(&cmd_run, "%s: exec: %s", file, n == 0 ? "empty command" : err);
			goto out;
		}
		command = words;
	}
	if ((code = cmd_check_command(&cmd_run, command, command == words ? cfg.exec_unset : NULL)))
		goto out;
	code = run_supervised(&cfg, command);
out:
	words_free(words);
	config_release(&cfg);
	return code;
}

const struct command cmd_run = {
	.name = "run",
	.summary = "restore, run a service as its supervisor (PID 1 or not), replicate, flush on exit",
	.usage = "litevisor run [flags] [-- command [args…]]",
	.description =
		"Restores every configured database from the freshest reachable replica, starts\n"
		"the command (after \"--\", else the config's \"exec\"), forwards to it every signal\n"
		"it can catch (HUP INT QUIT TERM USR1 USR2 WINCH CONT ALRM PWR RTMIN..RTMAX…; not\n"
		"CHLD, the fault signals, PIPE XFSZ TTIN TTOU), reaps every zombie, replicates\n"
		"continuously and, when the service stops, flushes every database before exiting\n"
		"with the service's own exit code (128+signal if it was killed). Serves /livez\n"
		"/readyz /healthz /metrics on \"addr\". Before the service starts: 100\n"
		"configuration error, 111 temporary failure.",
	.run = run_run,
};
