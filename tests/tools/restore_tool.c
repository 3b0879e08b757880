/*
 * restore_tool.c — runs restore_db_for_run() (the restore step of `run`)
 * for every database of a config, for tests/test_restore.py, until `run`
 * itself drives it. Test-only: not part of the litevisor binary.
 *
 *   restore_tool CONFIG
 *
 * Prints one JSON line per database: db, outcome, source, generation, index,
 * offset, message, moved_aside, rc. Exit: 0 if every db may start, 1 if not,
 * 64 on a config error.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "replication/restore.h"
#include "common/banned.h"

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	char err[1024];
	int code = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: restore_tool CONFIG\n");
		return 64;
	}
	if (config_load(argv[1], NULL, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "restore_tool: %s\n", err);
		return 64;
	}
	log_configure(cfg.log_level, cfg.log_json);
	for (size_t i = 0; i < cfg.ndbs; i++) {
		struct restore_result res;
		int rc = restore_db_for_run(&cfg, &cfg.dbs[i], 0, &res);
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:i, s:I}",
				      "db", cfg.dbs[i].path, "outcome", restore_outcome_name(res.outcome),
				      "source", res.source, "generation", res.pos.generation,
				      "index", (json_int_t)res.pos.index, "offset",
				      (json_int_t)res.pos.offset, "message", res.message,
				      "moved_aside", res.moved_aside, "rc", rc, "ms",
				      (json_int_t)res.duration_ms);
		char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		if (s)
			puts(s);
		free(s);
		json_decref(o);
		if (rc < 0)
			code = 1;
	}
	config_release(&cfg);
	if (restore_probes_wait(2000)) {
		fflush(NULL); /* a probe left behind may be inside OpenSSL: skip atexit */
		_exit(code);
	}
	return code;
}
