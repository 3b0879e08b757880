/*
 * env.h — what Nomad tells a task through its environment
 * (hashicorp/nomad client/taskenv/env.go): the ports to bind, the
 * allocation's id. Everything here only reads the environment; nothing fails
 * outside Nomad, it just answers "not set".
 */
#ifndef LITEVISOR_NOMAD_ENV_H
#define LITEVISOR_NOMAD_ENV_H

#include <stdbool.h>
#include <stddef.h>

/* True when running as a Nomad task (NOMAD_ALLOC_ID is set). */
bool nomad_present(void);

/*
 * The port Nomad allocated for a port label: $NOMAD_PORT_<label>, trying the
 * label as written and then with every character other than [A-Za-z0-9_]
 * replaced by '_' (as Nomad does for variable names). Returns the port
 * (1..65535), 0 when not set, -1 when set but not a port number.
 */
int nomad_port(const char *label);

/*
 * The host's side of that port ($NOMAD_HOST_PORT_<label>; differs from
 * nomad_port under Docker's port mapping), the same way.
 */
int nomad_host_port(const char *label);

/* The IP Nomad chose for a port label ($NOMAD_IP_<label>), or NULL. */
const char *nomad_ip(const char *label);

/* $NOMAD_ALLOC_ID; NULL when unset or empty. */
const char *nomad_alloc_id(void);

#endif
