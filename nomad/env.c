/* env.c — Nomad's task environment (see env.h). */
#include "nomad/env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

static const char *nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

bool nomad_present(void)
{
	return nonempty("NOMAD_ALLOC_ID") != NULL;
}

/* A per-label variable: prefix + label as written, then cleaned as Nomad does; or NULL. */
static const char *nomad_label_env(const char *prefix, const char *label)
{
	char name[256];
	int n = snprintf(name, sizeof(name), "%s%s", prefix, label);
	if (n < 0 || (size_t)n >= sizeof(name))
		return NULL;
	const char *v = nonempty(name);
	if (v)
		return v;
	bool changed = false;
	for (char *p = name + strlen(prefix); *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_')) {
			*p = '_';
			changed = true;
		}
	}
	return changed ? nonempty(name) : NULL;
}

static int label_port(const char *prefix, const char *label)
{
	const char *v = nomad_label_env(prefix, label);
	if (!v)
		return 0;
	char *end;
	errno = 0;
	long port = strtol(v, &end, 10);
	if (errno || end == v || *end || port < 1 || port > 65535)
		return -1;
	return (int)port;
}

int nomad_port(const char *label)
{
	return label_port("NOMAD_PORT_", label);
}

int nomad_host_port(const char *label)
{
	return label_port("NOMAD_HOST_PORT_", label);
}

const char *nomad_ip(const char *label)
{
	return nomad_label_env("NOMAD_IP_", label);
}

const char *nomad_alloc_id(void)
{
	return nonempty("NOMAD_ALLOC_ID");
}
