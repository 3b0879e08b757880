/*
 * register.h — the service in Consul's catalog, registered through the local
 * agent (api-docs/agent/service.mdx) with one TTL check that litevisor drives
 * from its own health (agent/check.mdx), so Consul DNS and
 * `service.healthy` queries follow /healthz: passing, warning (a replica
 * lags or fails) or critical (not ready, or replication failing past
 * health.fail-after), the check's output being /healthz's.
 *
 * A thread of its own:
 *  - registers (PUT /v1/agent/service/register?replace-existing-checks=true)
 *    with the check critical until the first update, and
 *    DeregisterCriticalServiceAfter, so an allocation that vanished without
 *    deregistering (SIGKILL, node lost) is removed by the agent;
 *  - asks health() every second and updates the check
 *    (PUT /v1/agent/check/update/:id) when its status changes, and at least
 *    every third of the TTL; an agent that forgot the check (404: restarted
 *    without its data) gets the registration again at once, but one that
 *    forgets it again right after (several agents behind one address, an
 *    agent restarting in a loop) only after a pause, 1 s doubling to 10 s,
 *    logged once;
 *  - on consul_reg_leave(), deregisters at once (the service is stopping:
 *    clients must stop being sent to it before it goes), abandoning an
 *    update or a registration under way (libcurl notices within a second)
 *    rather than waiting up to consul.timeout for it, then idles.
 * The agent being unreachable never stops or delays the service: it is
 * logged once per distinct error and tried again.
 */
#ifndef LITEVISOR_CONSUL_REGISTER_H
#define LITEVISOR_CONSUL_REGISTER_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

/* The check's status: Consul's passing, warning, critical. */
enum consul_check { CONSUL_PASSING = 0, CONSUL_WARNING, CONSUL_CRITICAL };

/* The health now, with its text into output (may be left ""). Called from the thread. */
typedef enum consul_check (*consul_health_fn)(void *ctx, char *output, size_t len);

/* Longest service ID and name (with its NUL) consul_reg_start takes. */
#define CONSUL_ID_MAX 512

/* What is registered, resolved by the caller (IDs from Nomad's environment, ports). */
struct consul_service {
	const char *id;           /* unique on the agent */
	const char *name;
	const char *address;      /* NULL: the agent's */
	int port;                 /* 0: none */
};

struct consul_reg;

/*
 * Start registering svc (copied) with cfg's tags, meta, check-ttl and
 * deregister-critical-after (cfg borrowed, must outlive it). Returns the
 * registration, or NULL with err set (no libcurl, memory, thread, an ID or
 * name of CONSUL_ID_MAX bytes or more).
 */
struct consul_reg *consul_reg_start(const struct cfg_consul *cfg, const struct consul_service *svc,
				    consul_health_fn health, void *ctx, char *err, size_t errlen);

/*
 * Deregister now, without waiting (the thread does it, abandoning the
 * request under way first). NULL is fine.
 */
void consul_reg_leave(struct consul_reg *r);

/* Ask the thread to stop, without waiting (see consul_lock_halt). NULL is fine. */
void consul_reg_halt(struct consul_reg *r);

/*
 * Deregister if not done yet, within budget_ms, stop the thread and free.
 * NULL is fine.
 */
void consul_reg_stop(struct consul_reg *r, int64_t budget_ms);

/* "passing", "warning", "critical". */
const char *consul_check_name(enum consul_check c);

#endif
