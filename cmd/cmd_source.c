/* cmd_source.c — resolve DB_PATH|REPLICA_URL for the replica commands. */
#include "cmd/source.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pathnorm.h"
#include "common/banned.h"

bool cmd_source_is_url(const char *s)
{
	const char *p = strstr(s, "://");
	if (!p || p == s)
		return false;
	for (const char *q = s; q < p; q++)
		if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
		      *q == '+' || *q == '-' || *q == '.'))
			return false;
	return true;
}

int cmd_config_path(const struct command *cmd, const char *config_path, const char **file)
{
	char why[160];
	if (!(*file = config_default_path(config_path, why, sizeof(why))))
		return cli_usage_error(cmd, "%s", why);
	return 0;
}

int cmd_source_check(const struct command *cmd, const char *config_path, const char *arg)
{
	/* a script's "$DB" left unset: say so rather than "not found in config F: " (QA174 O7) */
	if (!arg[strspn(arg, " \t\r\n")])
		return cli_usage_error(cmd, "the database path or replica URL is %s (an unset "
				       "variable?)", *arg ? "blank" : "empty");
	/* As Litestream v0.3.13: the URL's replica would be restored with none of the file's settings */
	if (config_path && *config_path && cmd_source_is_url(arg))
		return cli_usage_error(cmd, "cannot specify a replica URL and the -config flag");
	return 0;
}

int cmd_source_open(const struct command *cmd, const char *config_path, bool no_expand_env,
		    const char *arg, struct cmd_source *src)
{
	char err[1024];
	int rc;

	memset(src, 0, sizeof(*src));
	if ((rc = cmd_source_check(cmd, config_path, arg)))
		return rc;
	if (cmd_source_is_url(arg)) {
		config_defaults(&src->cfg);
		config_db_defaults(&src->url_db);
		if (config_replica_from_url(arg, &src->url_replica, err, sizeof(err)) < 0) {
			fprintf(stderr, "litevisor %s: %s\n", cmd->name, err);
			return EXIT_USAGE;
		}
		src->url_db.replicas = &src->url_replica;
		src->url_db.nreplicas = 1;
		src->url_db.name = src->url_replica.name;
		src->db = &src->url_db;
		src->from_url = true;
		return 0;
	}

	struct config_options opt = { .no_expand_env = no_expand_env };
	const char *path;
	if ((rc = cmd_config_path(cmd, config_path, &path)))
		return rc;
	if (config_load(path, &opt, &src->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "litevisor %s: %s\n", cmd->name, err);
		return EXIT_USAGE;
	}
	log_configure(src->cfg.log_level, src->cfg.log_json);
	/* As Litestream: the path made absolute as the config's are ("~/" too); a
	 * database's name is litevisor's shortcut, when no path is arg */
	char *abs = config_abs_path(arg, err, sizeof(err));
	for (int by_name = 0; abs && !src->db && by_name < 2; by_name++)
		for (size_t i = 0; i < src->cfg.ndbs && !src->db; i++) {
			struct cfg_db *d = &src->cfg.dbs[i];
			if (by_name ? d->name && strcmp(d->name, arg) == 0 : strcmp(d->path, abs) == 0)
				src->db = d;
		}
	free(abs);
	if (src->db)
		return 0;
	fprintf(stderr, "litevisor %s: database not found in config %s: %s\n", cmd->name, path, arg);
	config_release(&src->cfg);
	return EXIT_USAGE;
}

int cmd_config_only(const struct command *cmd, int argc, char **argv, struct config *cfg,
		    const char **file, bool *no_expand, int *code)
{
	const char *path = NULL;
	bool help;
	char err[1024];
	*no_expand = false;
	const struct flag flags[] = {
		{ "config", FLAG_STRING, &path, "PATH",
		  "config file (default $LITEVISOR_CONFIG, $LITESTREAM_CONFIG, /etc/litevisor.yml, /etc/litestream.yml)" },
		{ "no-expand-env", FLAG_BOOL, no_expand, NULL, "do not expand $VAR in config values" },
		{ 0 },
	};
	int i = cli_parse(cmd, flags, argc, argv, &help);
	if (i < 0) {
		*code = help ? 0 : EXIT_USAGE;
		return -1;
	}
	if (i < argc) {
		*code = cli_usage_error(cmd, "unexpected argument \"%s\"", argv[i]);
		return -1;
	}
	struct config_options opt = { .no_expand_env = *no_expand };
	if ((*code = cmd_config_path(cmd, path, file)))
		return -1;
	if (config_load(*file, &opt, cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "litevisor %s: %s\n", cmd->name, err);
		*code = EXIT_USAGE;
		return -1;
	}
	return 0;
}

void cmd_note_exec(const struct config *cfg)
{
	if (cfg->exec_unset)
		log_warn("config", "exec: an environment variable it uses is not set (it expanded to "
			 "nothing)", "variable=%s exec=\"%s\"", cfg->exec_unset, cfg->exec);
}

int cmd_check_command(const struct command *cmd, char *const *argv, const char *unset)
{
	if (argv[0][0])
		return 0;
	if (unset)
		return cli_usage_error(cmd, "the command's name is empty (exec uses environment "
				       "variable %s, which is not set, or an empty one)", unset);
	return cli_usage_error(cmd, "the command's name is empty (\"\")");
}

void cmd_source_release(struct cmd_source *src)
{
	if (src->from_url) {
		config_replica_release(&src->url_replica);
		free(src->url_db.path);
	}
	config_release(&src->cfg);
	memset(src, 0, sizeof(*src));
}

int cmd_refuse_blank_dbs(const struct command *cmd, const struct config *cfg, const char *file)
{
	if (!cfg->file || !cfg->dbs_blank)
		return 0;
	/* what an empty template renders (a Nomad variable missing): never start unrestored */
	return cli_usage_error(cmd, "%s is empty or its \"dbs:\" has no value, so the service "
			       "would start without its restore (a template whose data is missing?); "
			       "write \"dbs: []\" to supervise it without databases", file);
}
