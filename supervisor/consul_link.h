/*
 * consul_link.h — what `run` does with Consul (consul/), when the config's
 * `consul:` section asks for it:
 *
 *   at start             register the service (consul.service) with a TTL
 *                        check that follows /healthz (pass → passing, warn →
 *                        warning, fail → critical, output = /healthz's): it
 *                        stays critical, saying why, until the service is ready;
 *   before the restore   take the writer lock (consul.lock): no restore, no
 *                        replication, no service until it is held; given up
 *                        after consul.lock.wait → exit 111;
 *   stop begins          deregister at once (beside the service's signal,
 *                        without waiting), so clients stop being sent to a
 *                        service that is going;
 *   after the final      release the lock and destroy its session, so the
 *   flush                next writer restores everything without waiting out
 *                        a lock delay.
 * A lock lost while the service runs (see consul/lock.h) starts the stop
 * sequence; litevisor then exits 111 so the orchestrator starts it again,
 * and that start waits for the lock.
 */
#ifndef LITEVISOR_SUP_CONSUL_LINK_H
#define LITEVISOR_SUP_CONSUL_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "consul/lock.h"
#include "supervisor/http.h"
#include "supervisor/state.h"

/* What sup_consul_close gets, out of the threads' share of the stop budget (lifecycle.h). */
#define SUP_CONSUL_CLOSE_MS 1000

struct sup_consul;

/*
 * For cfg (borrowed): NULL with *code 0 when the config asks nothing of
 * Consul; NULL with *code 100 (SUP_EXIT_CONFIG, logged) when the agent's
 * address or token file cannot be used (consul_agent_check), or 111.
 */
struct sup_consul *sup_consul_new(const struct config *cfg, int *code);

/*
 * Take the writer lock, if configured, waiting for it while reading signals
 * from sfd (signals.h: sig_wait_fd, with tick(arg) at every turn); st's
 * phase says so meanwhile. Returns 0 when held or not configured;
 * 111 (SUP_EXIT_TEMPFAIL) when not taken (logged); 128+signal when stopped.
 */
int sup_consul_take_lock(struct sup_consul *c, int sfd, struct sup_state *st,
			 void (*tick)(void *arg), void *arg);

/* Readable when the lock's state changes; -1 without a lock (or NULL). */
int sup_consul_lock_fd(const struct sup_consul *c);

/* The lock's state now (drains the fd); unless waiting or held, why. */
enum consul_lock_state sup_consul_lock_state(struct sup_consul *c, char *why, size_t whylen);

/*
 * True when no lock is configured or it is still held; else why (lost while
 * the databases were restored: nothing may be replicated or started then).
 */
bool sup_consul_lock_held(struct sup_consul *c, char *why, size_t whylen);

/*
 * What the restore owes the old holder (restore_db_for_run's any_age_ms):
 * 0 after a clean take, or with restore.handover-wait 0 (no wait at all);
 * else a wait for its open generation however old, for handover-wait, or,
 * with no lock delay before the take (consul_lock_undelayed), for at least
 * the holder's worst case to learn of its loss and stop: ttl + stop-grace +
 * flush-timeout (this node's settings standing for the holder's, as the
 * start's warning takes them).
 */
int64_t sup_consul_unclean_wait_ms(struct sup_consul *c);

/* That is settled: the release may mark the key released (consul_lock_settled). */
void sup_consul_lock_settled(struct sup_consul *c);

/*
 * Register the service, if configured, with a check that follows st (and
 * replication, once sup_consul_set_status_source gave it). Returns 0, or 100
 * (SUP_EXIT_CONFIG) when its port label names no port in the environment,
 * 111 when it cannot start.
 */
int sup_consul_register(struct sup_consul *c, struct sup_state *st);

/* Where the check reads replication's status from from now on. NULL c is fine. */
void sup_consul_set_status_source(struct sup_consul *c, http_status_fn status, void *ctx);

/* The stop sequence began: deregister now (without waiting). NULL is fine. */
void sup_consul_leave(struct sup_consul *c);

/* Deregister, release the lock, free; within budget_ms. NULL is fine. */
void sup_consul_close(struct sup_consul *c, int64_t budget_ms);

#endif
