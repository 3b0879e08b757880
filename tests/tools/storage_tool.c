/*
 * storage_tool.c — drives replication/storage.h from the Python tests
 * (tests/test_storage.py). Test-only: not part of the litevisor binary.
 *
 *   storage_tool [options] put FILE KEY      FILE "-" = stdin (size unknown)
 *   storage_tool [options] get KEY FILE      FILE "-" = stdout
 *   storage_tool [options] list PREFIX [DELIM]
 *   storage_tool [options] delete KEY...     KEY "-" = one key per line on stdin
 *   storage_tool [options] stat KEY
 *   storage_tool [options] fill PREFIX N [THREADS [PER_DIR]]
 *        put N keys PREFIX00000… (content "data-<i>") from THREADS threads sharing
 *        one storage; with PER_DIR, keys are PREFIX<i/PER_DIR>/sub/k<i%PER_DIR>
 *
 * Replica: -file DIR, or -s3 BUCKET [-endpoint URL [-virtual-host]] [-region R]
 * [-path PREFIX] [-skip-verify] [-ca-file F] [-access-key-id K -secret-access-key S]
 * (else the usual environment variables). Call options: -deadline-ms N,
 * -no-retry, -connect-timeout-ms N, -idle-timeout-ms N, -unknown-size (put: hide the size),
 * -create-only (put: never replace an existing key).
 *
 * Output: JSON lines on stdout (listing entries, then one result line with
 * ok/status/http/message, elapsed_ms, vmhwm_kb and the op counters).
 * Exit: 0 ok, 2 not found, 3 auth, 4 transient, 5 permanent, 6 exists, 64 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/storage.h"
#include "common/banned.h"

static int usage(void)
{
	fprintf(stderr, "usage: storage_tool (-file DIR | -s3 BUCKET [-endpoint URL] ...) "
			"put FILE KEY | get KEY FILE | list PREFIX [DELIM] | delete KEY... | stat KEY\n");
	return 64;
}

/* Peak resident set size of this process, from /proc (kB), or -1. */
static long vmhwm_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmHWM:", 6) == 0)
			kb = strtol(line + 6, NULL, 10);
	fclose(f);
	return kb;
}

static void emit(json_t *obj)
{
	char *s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII);
	if (s) {
		puts(s);
		free(s);
	}
	json_decref(obj);
}

static int exit_code(int rc)
{
	switch (rc) {
	case ST_OK: return 0;
	case ST_NOT_FOUND: return 2;
	case ST_AUTH: return 3;
	case ST_TRANSIENT: return 4;
	case ST_EXISTS: return 6;
	default: return 5;
	}
}

static json_t *stats_json(struct storage *st)
{
	json_t *o = json_object();
	for (int op = 0; op < ST_OP__COUNT; op++) {
		struct st_op_stats *s = &st->stats[op];
		json_object_set_new(o, st_op_name(op),
				    json_pack("{s:I,s:I,s:I,s:I}",
					      "count", (json_int_t)atomic_load(&s->count),
					      "errors", (json_int_t)atomic_load(&s->errors),
					      "bytes", (json_int_t)atomic_load(&s->bytes),
					      "latency_ns", (json_int_t)atomic_load(&s->latency_ns)));
	}
	return o;
}

/* Reads keys, one per line, from stdin into a NULL-terminated array. */
static char **read_keys(size_t *n)
{
	char **keys = NULL, *line = NULL;
	size_t cap = 0, len = 0;
	ssize_t r;
	*n = 0;
	while ((r = getline(&line, &len, stdin)) > 0) {
		if (line[r - 1] == '\n')
			line[r - 1] = '\0';
		if (*n + 1 >= cap) {
			cap = cap ? cap * 2 : 64;
			char **k = realloc(keys, cap * sizeof(*keys));
			if (!k)
				exit(70);
			keys = k;
		}
		keys[(*n)++] = strdup(line);
	}
	free(line);
	return keys;
}

struct filler {
	struct storage *st;
	const struct st_call *call;
	const char *prefix;
	long n, step, first, per_dir;
	int rc;
	struct st_error err;
};

/* Puts every step-th key from first: the threads share st (and its connection pool). */
static void *fill_thread(void *arg)
{
	struct filler *f = arg;
	for (long i = f->first; i < f->n && f->rc == 0; i += f->step) {
		char key[1024], data[32];
		struct st_source src;
		struct st_mem_source m;
		if (f->per_dir > 0)
			snprintf(key, sizeof(key), "%s%05ld/sub/k%ld", f->prefix, i / f->per_dir, i % f->per_dir);
		else
			snprintf(key, sizeof(key), "%s%05ld", f->prefix, i);
		int len = snprintf(data, sizeof(data), "data-%05ld", i);
		st_mem_source_init(&src, &m, data, (size_t)len);
		f->rc = storage_put(f->st, key, &src, f->call, &f->err);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	/* Built here rather than by config.c: the tool tests storage alone. */
	struct cfg_replica r = { .connect_timeout_ms = 1000 };
	struct st_call call = { 0 };
	struct st_error err = { 0 };
	struct storage *st = NULL;
	bool unknown_size = false, have_call = false;
	int i = 1, rc = ST_PERMANENT, fd = -1;
	json_t *res = json_object();

	signal(SIGPIPE, SIG_IGN); /* as litevisor does: curl runs with CURLOPT_NOSIGNAL */
	log_configure(LOG_WARN, false);
	for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		const char *o = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		bool takes = true;
		if (!strcmp(o, "-file")) {
			r.type = REPLICA_FILE;
			r.path = (char *)v;
		} else if (!strcmp(o, "-s3")) {
			r.type = REPLICA_S3;
			r.bucket = (char *)v;
		} else if (!strcmp(o, "-endpoint")) {
			r.endpoint = (char *)v;
			r.force_path_style = true;
		} else if (!strcmp(o, "-region")) {
			r.region = (char *)v;
		} else if (!strcmp(o, "-path")) {
			r.path = (char *)v;
		} else if (!strcmp(o, "-ca-file")) {
			r.ca_file = (char *)v;
		} else if (!strcmp(o, "-access-key-id")) {
			r.access_key_id.value = (char *)v;
		} else if (!strcmp(o, "-secret-access-key")) {
			r.secret_access_key.value = (char *)v;
		} else if (!strcmp(o, "-idle-timeout-ms")) {
			r.idle_timeout_ms = v ? strtoll(v, NULL, 10) : 0;
		} else if (!strcmp(o, "-connect-timeout-ms")) {
			r.connect_timeout_ms = v ? strtoll(v, NULL, 10) : 0;
		} else if (!strcmp(o, "-deadline-ms")) {
			call.deadline_ms = v ? strtoll(v, NULL, 10) : 0;
			have_call = true;
		} else {
			takes = false;
			if (!strcmp(o, "-skip-verify"))
				r.skip_verify = true;
			else if (!strcmp(o, "-virtual-host"))
				r.force_path_style = false; /* after -endpoint: <bucket>.<host> */
			else if (!strcmp(o, "-no-retry"))
				call.no_retry = have_call = true;
			else if (!strcmp(o, "-unknown-size"))
				unknown_size = true;
			else if (!strcmp(o, "-create-only"))
				call.create_only = have_call = true;
			else if (!strcmp(o, "-debug"))
				log_configure(LOG_DEBUG, false);
			else
				return usage();
		}
		if (takes) {
			if (!v)
				return usage();
			i++;
		}
	}
	if (i >= argc)
		return usage();
	r.name = (char *)"test";
	if (!r.region)
		r.region = (char *)"us-east-1";

	const char *op = argv[i++];
	int nargs = argc - i;
	char **args = argv + i;
	const struct st_call *cp = have_call ? &call : NULL;

	st = storage_open(&r, &err);
	int64_t t0 = clock_mono_ns();
	if (!st) {
		rc = err.status ? (int)err.status : ST_PERMANENT;
	} else if (!strcmp(op, "put") && nargs == 2) {
		struct st_source src;
		struct st_fd_source fsrc;
		struct stat sb;
		fd = strcmp(args[0], "-") ? open(args[0], O_RDONLY | O_CLOEXEC) : 0;
		if (fd < 0) {
			perror(args[0]);
			return 66;
		}
		int64_t size = fd && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : -1;
		st_fd_source_init(&src, &fsrc, fd, unknown_size ? -1 : size);
		if (fd == 0)
			src.rewind = NULL, src.seek = NULL;
		rc = storage_put(st, args[1], &src, cp, &err);
	} else if (!strcmp(op, "get") && nargs == 2) {
		fd = strcmp(args[1], "-") ? open(args[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : 1;
		if (fd < 0) {
			perror(args[1]);
			return 73;
		}
		struct st_sink sink = { st_fd_sink_write, &fd };
		rc = storage_get(st, args[0], &sink, cp, &err);
	} else if (!strcmp(op, "list") && (nargs == 1 || nargs == 2)) {
		struct st_list l = { 0 };
		rc = storage_list(st, args[0], nargs == 2 ? args[1] : NULL, &l, cp, &err);
		for (size_t k = 0; rc == 0 && k < l.nobjects; k++)
			emit(json_pack("{s:s,s:I,s:I}", "key", l.objects[k].key,
				       "size", (json_int_t)l.objects[k].size,
				       "mtime_ns", (json_int_t)l.objects[k].mtime_ns));
		for (size_t k = 0; rc == 0 && k < l.nprefixes; k++)
			emit(json_pack("{s:s}", "prefix", l.prefixes[k]));
		json_object_set_new(res, "objects", json_integer((json_int_t)l.nobjects));
		json_object_set_new(res, "prefixes", json_integer((json_int_t)l.nprefixes));
		st_list_release(&l);
	} else if (!strcmp(op, "delete") && nargs >= 1) {
		size_t n = (size_t)nargs;
		char **keys = args;
		if (nargs == 1 && !strcmp(args[0], "-"))
			keys = read_keys(&n);
		rc = storage_delete(st, (const char *const *)keys, n, cp, &err);
		json_object_set_new(res, "deleted", json_integer((json_int_t)n));
		if (keys != args) {
			for (size_t k = 0; k < n; k++)
				free(keys[k]);
			free(keys);
		}
	} else if (!strcmp(op, "fill") && nargs >= 2 && nargs <= 4) {
		long n = strtol(args[1], NULL, 10), nt = nargs >= 3 ? strtol(args[2], NULL, 10) : 1;
		long per_dir = nargs == 4 ? strtol(args[3], NULL, 10) : 0;
		if (nt < 1 || nt > 64)
			nt = 1;
		struct filler f[64];
		pthread_t tid[64];
		for (long t = 0; t < nt; t++) {
			f[t] = (struct filler){ .st = st, .call = cp, .prefix = args[0], .n = n, .step = nt, .first = t,
					       .per_dir = per_dir };
			pthread_create(&tid[t], NULL, fill_thread, &f[t]);
		}
		rc = 0;
		for (long t = 0; t < nt; t++) {
			pthread_join(tid[t], NULL);
			if (f[t].rc != 0 && rc == 0) {
				rc = f[t].rc;
				err = f[t].err;
			}
		}
	} else if (!strcmp(op, "stat") && nargs == 1) {
		struct st_object o = { 0 };
		rc = storage_stat(st, args[0], &o, cp, &err);
		if (rc == 0) {
			json_object_set_new(res, "key", json_string(o.key));
			json_object_set_new(res, "size", json_integer(o.size));
			json_object_set_new(res, "mtime_ns", json_integer(o.mtime_ns));
		}
		free(o.key);
	} else {
		storage_free(st);
		return usage();
	}
	json_object_set_new(res, "ok", json_boolean(rc == 0));
	json_object_set_new(res, "status", json_string(st_status_name(rc)));
	json_object_set_new(res, "http", json_integer(err.http_status));
	json_object_set_new(res, "message", json_string(err.message));
	json_object_set_new(res, "elapsed_ms", json_integer((clock_mono_ns() - t0) / 1000000));
	json_object_set_new(res, "vmhwm_kb", json_integer(vmhwm_kb()));
	if (st) {
		json_object_set_new(res, "description", json_string(st->description));
		json_object_set_new(res, "stats", stats_json(st));
	}
	if (fd > 1 && close(fd) < 0 && rc == 0) {
		perror("close");
		rc = ST_PERMANENT;
	}
	emit(res);
	storage_free(st);
	return exit_code(rc);
}
