/* cli.c — flag parsing and usage text shared by every subcommand. */
#include "cmd/cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/duration.h"
#include "common/banned.h"

static const struct flag *find_flag(const struct flag *flags, const char *name, size_t len)
{
	for (const struct flag *f = flags; f && f->name; f++)
		if (strlen(f->name) == len && strncmp(f->name, name, len) == 0)
			return f;
	return NULL;
}

int cli_usage_error(const struct command *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "litevisor %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nRun 'litevisor %s -help' for usage.\n", cmd->name);
	return EXIT_USAGE;
}

int cli_check_replica(const struct command *cmd, const struct cfg_db *db, const char *name,
		      const char *arg)
{
	if (!name)
		return 0;
	if (!*name)
		return cli_usage_error(cmd, "-replica: a replica name is required (it is empty)");
	for (size_t k = 0; k < db->nreplicas; k++)
		if (!strcmp(db->replicas[k].name ? db->replicas[k].name : "replica", name))
			return 0;
	fprintf(stderr, "litevisor %s: no replica named \"%s\" for %s\n", cmd->name, name, arg);
	return EXIT_USAGE;
}

/* Whether v is one of the space-separated words of list. */
static bool word_in(const char *v, const char *list)
{
	size_t n = strlen(v);
	for (const char *p = list; n && *p;) {
		size_t len = strcspn(p, " ");
		if (len == n && !strncmp(p, v, n))
			return true;
		p += len + (p[len] == ' ');
	}
	return false;
}

static int set_value(const struct command *cmd, const struct flag *f, const char *v)
{
	char *end;
	switch (f->type) {
	case FLAG_BOOL:
		/* Go's strconv.ParseBool, as Litestream's flags read them */
		if (word_in(v, "1 t T true TRUE True"))
			*(bool *)f->dst = true;
		else if (word_in(v, "0 f F false FALSE False"))
			*(bool *)f->dst = false;
		else
			return cli_usage_error(cmd, "-%s: invalid boolean \"%s\"", f->name, v), -1;
		return 0;
	case FLAG_STRING:
		*(const char **)f->dst = v;
		return 0;
	case FLAG_INT:
		errno = 0;
		long n = strtol(v, &end, 0);
		if (errno || end == v || *end || n < INT_MIN || n > INT_MAX)
			return cli_usage_error(cmd, "-%s: invalid number \"%s\"", f->name, v), -1;
		*(long *)f->dst = n;
		return 0;
	case FLAG_DURATION: {
		char why[128];
		if (duration_parse(v, (int64_t *)f->dst, why, sizeof(why)) < 0)
			return cli_usage_error(cmd, "-%s: %s", f->name, why), -1;
		return 0;
	}
	}
	return -1;
}

int cli_parse(const struct command *cmd, const struct flag *flags, int argc, char **argv,
	      bool *help)
{
	int i;
	*help = false;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0)
			return i + 1;
		if (a[0] != '-' || a[1] == '\0')
			return i;
		a += (a[1] == '-') ? 2 : 1;
		if (!strcmp(a, "h") || !strcmp(a, "help")) {
			cli_usage(cmd, flags, false);
			*help = true;
			return -1;
		}
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a) : strlen(a);
		const struct flag *f = find_flag(flags, a, len);
		if (!f) {
			cli_usage_error(cmd, "unknown flag \"%s\"", argv[i]);
			return -1;
		}
		const char *v = eq ? eq + 1 : NULL;
		if (!v && f->type == FLAG_BOOL)
			v = "true";
		if (!v) {
			if (i + 1 >= argc) {
				cli_usage_error(cmd, "flag -%s needs an argument (%s)", f->name,
						f->arg ? f->arg : "value");
				return -1;
			}
			v = argv[++i];
		}
		if (set_value(cmd, f, v) < 0)
			return -1;
	}
	return i;
}

void cli_usage(const struct command *cmd, const struct flag *flags, bool to_stderr)
{
	FILE *out = to_stderr ? stderr : stdout;
	fprintf(out, "Usage: %s\n", cmd->usage);
	if (cmd->description)
		fprintf(out, "\n%s\n", cmd->description);
	if (flags && flags->name) {
		fprintf(out, "\nFlags:\n");
		for (const struct flag *f = flags; f->name; f++) {
			char left[64];
			snprintf(left, sizeof(left), "-%s%s%s", f->name, f->arg ? " " : "",
				 f->arg ? f->arg : "");
			fprintf(out, "  %-24s %s\n", left, f->help);
		}
	}
	fprintf(out, "  %-24s %s\n", "-h, -help", "show this help");
}
