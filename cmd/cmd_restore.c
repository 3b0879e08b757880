/*
 * cmd_restore.c — `litevisor restore [flags] DB_PATH|REPLICA_URL`.
 *
 * Litestream v0.3's flags and exit codes (1 = no backup found or the output
 * exists), minus its bugs (an -index past the end is an error), plus
 * litevisor's 100 (usage/config) and 111 (no replica reachable, network).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cmd/commands.h"
#include "cmd/source.h"
#include "common/clock.h"
#include "common/log.h"
#include "replication/layout.h"
#include "replication/restore.h"
#include "supervisor/signals.h"
#include "common/banned.h"

/*
 * After INT/TERM/HUP/QUIT, how long the restore gets to stop and remove its temp
 * files itself (a download stops at its next bytes: milliseconds) before
 * they are removed under it and the command exits anyway (a peer that sends
 * nothing calls no sink; a probe runs to its deadline).
 */
#define ABORT_GRACE_MS 1000

/* The restore runs on a thread of its own; the main thread reads signals. */
struct job {
	const struct config *cfg;
	const struct cfg_db *db;
	const struct restore_opts *opt;
	struct restore_result res;
	int done_fd;               /* eventfd: written when the restore returns */
};

static void *job_main(void *p)
{
	struct job *j = p;
	uint64_t one = 1;
	restore_explicit(j->cfg, j->db, j->opt, &j->res);
	ssize_t n = write(j->done_fd, &one, sizeof(one));
	(void)n;
	return NULL;
}

static const char *stop_name(int sig)
{
	return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM"
					: sig == SIGHUP ? "SIGHUP" : sig == SIGQUIT ? "SIGQUIT" : "signal";
}

/*
 * Run the restore while reading INT/TERM/HUP/QUIT from sfd (signals are data: no
 * handler runs). The first one asks the restore to stop (restore_abort);
 * if it has not ended ABORT_GRACE_MS later, or a second signal comes, its
 * temp files are removed under it and the process exits 128+signal.
 * Returns the signal that came (0: none) once the restore returned.
 */
static int run_interruptible(struct job *j, int sfd)
{
	pthread_t th;
	int sig = 0;
	if (pthread_create(&th, NULL, job_main, j) != 0) {
		restore_explicit(j->cfg, j->db, j->opt, &j->res); /* no thread: no interruption */
		return 0;
	}
	for (int watch = sfd; !sig;) {
		struct pollfd pfd[2] = { { .fd = watch, .events = POLLIN },
					 { .fd = j->done_fd, .events = POLLIN } };
		int rc = poll(pfd, 2, -1);
		if (rc > 0 && (pfd[1].revents & POLLIN))
			break;
		if (rc > 0 && (sig = sig_read(sfd)) < 0) {
			sig = 0; /* logged; the restore goes on, uninterruptible */
			watch = -1;
		}
	}
	if (sig) {
		log_warn("restore", "interrupted: stopping, removing the temp files", "signal=%s",
			 stop_name(sig));
		restore_abort(stop_name(sig));
		if (!sig_wait_done(sfd, j->done_fd, ABORT_GRACE_MS, NULL)) {
			log_warn("restore", "the restore did not stop in time; removing its temp files "
				 "under it", "signal=%s grace_ms=%d", stop_name(sig), ABORT_GRACE_MS);
			restore_abandon();
			fflush(NULL);
			_exit(128 + sig);
		}
	}
	pthread_join(th, NULL);
	return sig;
}

/*
 * Do paths a and b name one file: the same last component in the same
 * directory (neither file need exist)? `restore -o` naming a configured
 * database's own path restores it there, as without -o (its state, its id).
 */
static bool same_file_name(const char *a, const char *b)
{
	const char *na = strrchr(a, '/'), *nb = strrchr(b, '/');
	char da[PATH_MAX], db[PATH_MAX];
	struct stat sa, sb;

	snprintf(da, sizeof(da), "%.*s", na ? (int)(na - a) + 1 : 1, na ? a : ".");
	snprintf(db, sizeof(db), "%.*s", nb ? (int)(nb - b) + 1 : 1, nb ? b : ".");
	na = na ? na + 1 : a;
	nb = nb ? nb + 1 : b;
	return *na && strcmp(na, nb) == 0 && stat(da, &sa) == 0 && stat(db, &sb) == 0 &&
	       sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int run_restore(int argc, char **argv)
{
	const char *config = NULL, *output = NULL, *generation = NULL, *index = NULL,
		   *timestamp = NULL, *replica = NULL;
	long parallelism = LONG_MIN; /* not given (a given value is within int: cli.h) */
	bool no_expand = false, if_db = false, if_rep = false, dry = false, verbose = false, help;
	const struct flag flags[] = {
		{ "config", FLAG_STRING, &config, "PATH", "configuration file" },
		{ "no-expand-env", FLAG_BOOL, &no_expand, NULL, "do not expand $VAR in the config" },
		{ "o", FLAG_STRING, &output, "PATH", "output path (default: the database's path)" },
		{ "generation", FLAG_STRING, &generation, "NAME", "restore this generation" },
		{ "index", FLAG_STRING, &index, "HEX", "restore up to this WAL index (hex)" },
		{ "timestamp", FLAG_STRING, &timestamp, "RFC3339", "restore the state as of this time" },
		{ "replica", FLAG_STRING, &replica, "NAME", "restore from this replica only" },
		{ "parallelism", FLAG_INT, &parallelism, "N", "WAL downloads at once, 1 to 256 (default: restore.parallelism, 8)" },
		{ "if-db-not-exists", FLAG_BOOL, &if_db, NULL, "exit 0 if the database already exists" },
		{ "if-replica-exists", FLAG_BOOL, &if_rep, NULL, "exit 0 if no replica holds data" },
		{ "dry-run", FLAG_BOOL, &dry, NULL, "print the decision, write nothing" },
		/* Litestream's restore -v (documented in v0.3.13's help, accepted up to v0.3.11) */
		{ "v", FLAG_BOOL, &verbose, NULL, "verbose output: log at debug level, whatever the config says" },
		{ 0 },
	};
	struct cmd_source src;
	struct restore_opts opt = { 0 };
	struct job job = { .done_fd = -1 };
	struct restore_result *res = &job.res;
	sigset_t stops;
	int sfd = -1, sig = 0, rc;

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
		/* hex digits, after an optional '+', as Litestream (Go's ParseInt) takes it:
		 * strtoul alone also takes blanks and a 0x prefix (QA122 O2) */
		const char *digits = index + (index[0] == '+');
		unsigned long v = strtoul(digits, &end, 16);
		if (errno || !isxdigit((unsigned char)digits[0]) || digits[strspn(digits,
		    "0123456789abcdefABCDEF")] || *end || v > 0xffffffffUL)
			return cli_usage_error(&cmd_restore, "-index: invalid hex index \"%s\"", index);
		opt.has_index = true;
		opt.index = (uint32_t)v;
	}
	if (timestamp) {
		int t = clock_parse_rfc3339(timestamp, &opt.timestamp_ns);
		if (t == -2)
			return cli_usage_error(&cmd_restore, "-timestamp: \"%s\" is out of range: "
					       "times from " CLOCK_NS_MIN_TEXT " to " CLOCK_NS_MAX_TEXT
					       " only", timestamp);
		if (t < 0)
			return cli_usage_error(&cmd_restore, "-timestamp: \"%s\" is not an RFC 3339 "
					       "time on a real date (e.g. 2026-11-22T06:27:38Z)", timestamp);
		/*
		 * 0 means "no -timestamp" below: a time at or before 1970 matches
		 * no object (object times are later), as it does for Litestream.
		 */
		if (opt.timestamp_ns <= 0)
			opt.timestamp_ns = 1;
	}
	if (parallelism == LONG_MIN)
		parallelism = 0; /* restore.parallelism from the config */
	else if (parallelism < 1 || parallelism > 256) /* as restore.parallelism */
		return cli_usage_error(&cmd_restore, "-parallelism: must be 1 to 256, not %ld",
				       parallelism);
	if ((rc = cmd_source_check(&cmd_restore, config, argv[i])))
		return rc;
	if (output && !output[0])
		return cli_usage_error(&cmd_restore, "-o: output path required (it is empty)");
	if (cmd_source_is_url(argv[i]) && !output)
		return cli_usage_error(&cmd_restore, "-o is required when restoring from a replica URL");
	char why[PATH_MAX + 300];
	const char *base = output ? strrchr(output, '/') : NULL;
	base = base ? base + 1 : output;
	if (output && (!*base || !strcmp(base, ".") || !strcmp(base, "..")))
		return cli_usage_error(&cmd_restore, "-o: %s names a directory (it ends with /, . "
				       "or ..): give the database file's path", output);
	if (output && config_db_name_check(output, why, sizeof(why)) < 0)
		return cli_usage_error(&cmd_restore, "-o: %s", why);

	/* before any thread: they all inherit the mask, so only the main thread reads these */
	sigemptyset(&stops);
	sigaddset(&stops, SIGINT);
	sigaddset(&stops, SIGTERM);
	sigaddset(&stops, SIGHUP);
	sigaddset(&stops, SIGQUIT);
	if (pthread_sigmask(SIG_BLOCK, &stops, NULL) != 0 ||
	    (sfd = signalfd(-1, &stops, SFD_NONBLOCK | SFD_CLOEXEC)) < 0 ||
	    (job.done_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
		fprintf(stderr, "litevisor restore: cannot set up signal handling: %s\n",
			strerror(errno));
		if (sfd >= 0)
			close(sfd);
		return EXIT_TEMPFAIL;
	}

	rc = cmd_source_open(&cmd_restore, config, no_expand, argv[i], &src);
	if (rc)
		goto out_fds;
	if (verbose) /* after the config's logging: settings, which it overrides */
		log_configure(LOG_DEBUG, src.cfg.log_json);
	if ((rc = cli_check_replica(&cmd_restore, src.db, replica, argv[i])))
		goto out_src;
	if (src.from_url && !(src.url_db.path = strdup(output))) {
		rc = EXIT_TEMPFAIL;
		goto out_src;
	}
	log_debug("restore", "options",
		  "db=\"%s\" output=\"%s\" replica=%s generation=%s index=%s timestamp=%s "
		  "parallelism=%ld dry_run=%d",
		  src.db->path ? src.db->path : "-", output ? output : "-", replica ? replica : "-",
		  generation ? generation : "-", index ? index : "-", timestamp ? timestamp : "-",
		  parallelism ? parallelism : (long)src.cfg.restore.parallelism, dry);
	opt.output = src.from_url || !output || !same_file_name(output, src.db->path) ? output
										      : NULL;
	opt.generation = generation;
	opt.replica = replica;
	opt.parallelism = (int)parallelism;
	opt.dry_run = dry;
	opt.if_db_not_exists = if_db;

	job.cfg = &src.cfg;
	job.db = src.db;
	job.opt = &opt;
	sig = run_interruptible(&job, sfd);
	if (sig && res->outcome != RESTORE_RESTORED) {
		fprintf(stderr, "litevisor restore: interrupted by %s; nothing restored (%s)\n",
			stop_name(sig), res->message);
		rc = 128 + sig;
		goto out_src;
	}
	if (sig)
		log_warn("restore", "the restore was complete before the signal could stop it",
			 "signal=%s", stop_name(sig));
	switch (res->outcome) {
	case RESTORE_RESTORED:
		rc = 0;
		if (!dry)
			log_info("restore", "done", "source=%s generation=%s index=%08x offset=%08x ms=%lld",
				 res->source, res->pos.generation, res->pos.index, res->pos.offset,
				 (long long)res->duration_ms);
		break;
	case RESTORE_EXISTS:
	case RESTORE_EMPTY:
		log_info("restore", "nothing to do", "reason=\"%s\"", res->message);
		rc = 0;
		break;
	case RESTORE_NO_DATA:
		/* not when a replica holds data the request missed (an -index past the end) */
		if (if_rep && !res->held_data) {
			log_info("restore", "no matching backups found, skipping (-if-replica-exists)",
				 "reason=\"%s\"", res->message);
			rc = 0;
		} else {
			fprintf(stderr, "litevisor restore: %s\n", res->message);
			rc = EXIT_NODATA;
		}
		break;
	case RESTORE_UNREACHABLE:
		fprintf(stderr, "litevisor restore: %s\n", res->message);
		rc = EXIT_TEMPFAIL;
		break;
	case RESTORE_FAILED:
		fprintf(stderr, "litevisor restore: %s\n", res->message);
		rc = res->temporary ? EXIT_TEMPFAIL : 1;
		break;
	}
out_src:
	cmd_source_release(&src);
	if (restore_probes_wait(sig ? 0 : 2000)) {
		/* a probe left behind may be inside OpenSSL: skip its atexit cleanup */
		fflush(NULL);
		_exit(rc);
	}
out_fds:
	close(sfd);
	close(job.done_fd);
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
		"100 usage or configuration error, 111 no replica reachable or network failure,\n"
		"128+N stopped by signal N (INT 130, TERM 143, HUP 129, QUIT 131; temp files removed).",
	.run = run_restore,
};
