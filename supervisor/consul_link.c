/*
 * consul_link.c — `run`'s use of the writer lock and the registration
 * (supervisor/consul_link.h): names from Nomad's environment, health from
 * the same evaluation as /healthz.
 */
#include "supervisor/consul_link.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/duration.h"
#include "common/log.h"
#include "consul/client.h"
#include "consul/register.h"
#include "nomad/env.h"
#include "replication/status.h"
#include "supervisor/health.h"
#include "supervisor/lifecycle.h"
#include "supervisor/signals.h"
#include "common/banned.h"

struct sup_consul {
	const struct config *cfg;
	struct consul_lock *lock;
	struct consul_reg *reg;
	struct sup_state *st;
	struct sup_state *lock_st; /* where the lock's state is shown (/metrics) */
	pthread_mutex_t mu;        /* guards status and status_ctx: set once replication exists */
	http_status_fn status;
	void *status_ctx;
	bool unclean_wait_said;    /* sup_consul_unclean_wait_ms logged its longer wait */
};

struct sup_consul *sup_consul_new(const struct config *cfg, int *code)
{
	char err[512];
	*code = 0;
	if (!cfg->consul.lock_key && !cfg->consul.service_name)
		return NULL;
	if (consul_agent_check(&cfg->consul, err, sizeof(err)) < 0) {
		log_error("consul", "cannot use the Consul agent", "error=\"%s\"", err);
		*code = SUP_EXIT_CONFIG;
		return NULL;
	}
	struct sup_consul *c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("consul", "out of memory", NULL);
		*code = SUP_EXIT_TEMPFAIL;
		return NULL;
	}
	c->cfg = cfg;
	pthread_mutex_init(&c->mu, NULL);
	return c;
}

/* Who holds the lock, for the other waiters: node (or host), Nomad allocation, pid. */
static void holder(const struct config *cfg, char *buf, size_t len)
{
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "?");
	const char *alloc = nomad_alloc_id();
	snprintf(buf, len, "%s%s%s pid %d", cfg->node ? cfg->node : host, alloc ? " alloc " : "",
		 alloc ? alloc : "", (int)getpid());
}

/*
 * Consul may end the session while this process cannot reach its agent (its
 * node left, or failed serfHealth); the lock delay then starts, but the lost
 * lock is learned only up to a TTL later, and the stop and the final flush
 * come on top. The next writer's restore waits for that flush only within
 * restore.handover-wait (docs/restore.md); say so when the two cannot cover it.
 */
static void warn_detection_lag(const struct config *cfg)
{
	const struct cfg_consul *k = &cfg->consul;
	int64_t need = k->lock_ttl_ms + cfg->supervisor.stop_grace_ms + cfg->supervisor.flush_timeout_ms;
	int64_t have = k->lock_delay_ms + cfg->restore.handover_wait_ms;
	if (have >= need)
		return;
	char a[32], b[32], t[32], g[32], f[32];
	log_warn("consul", "a lost lock is learned up to its TTL late when the agent cannot be "
		 "reached: the next writer may then restore before this one's final flush (its last "
		 "commits lost); make lock-delay + restore.handover-wait cover ttl + stop-grace + "
		 "flush-timeout", "lock_delay=%s handover_wait=%s ttl=%s stop_grace=%s flush_timeout=%s",
		 duration_format(k->lock_delay_ms, a, sizeof(a)),
		 duration_format(cfg->restore.handover_wait_ms, b, sizeof(b)),
		 duration_format(k->lock_ttl_ms, t, sizeof(t)),
		 duration_format(cfg->supervisor.stop_grace_ms, g, sizeof(g)),
		 duration_format(cfg->supervisor.flush_timeout_ms, f, sizeof(f)));
}

int sup_consul_take_lock(struct sup_consul *c, int sfd, struct sup_state *st,
			 void (*tick)(void *arg), void *arg)
{
	char who[512], why[512];
	if (!c || !c->cfg->consul.lock_key)
		return 0;
	const char *key = c->cfg->consul.lock_key;
	warn_detection_lag(c->cfg);
	holder(c->cfg, who, sizeof(who));
	c->lock = consul_lock_start(&c->cfg->consul, who, why, sizeof(why));
	if (!c->lock) {
		log_error("consul", "cannot take the writer lock", "error=\"%s\"", why);
		return SUP_EXIT_TEMPFAIL;
	}
	c->lock_st = st;
	sup_state_set_lock(st, SUP_LOCK_WAITING);
	sup_state_set_phase(st, SUP_STARTING, "waiting for the writer lock");
	for (;;) {
		int sig = sig_wait_fd(sfd, consul_lock_fd(c->lock), tick, arg);
		if (sig) {
			log_warn("consul", "stopped while waiting for the writer lock; nothing was started",
				 "signal=%s", sig_name(sig));
			return 128 + sig;
		}
		enum consul_lock_state ls = consul_lock_state(c->lock, why, sizeof(why));
		if (ls == CONSUL_LOCK_HELD) {
			sup_state_set_lock(st, SUP_LOCK_HELD);
			log_info("consul", "writer lock held", "key=\"%s\"", key);
			return 0;
		}
		if (ls != CONSUL_LOCK_WAITING) {
			sup_state_set_lock(st, SUP_LOCK_LOST);
			log_error("consul", "no writer lock: nothing restored or replicated, no service started",
				  "key=\"%s\" error=\"%s\"", key, why);
			return SUP_EXIT_TEMPFAIL;
		}
	}
}

int sup_consul_lock_fd(const struct sup_consul *c)
{
	return c && c->lock ? consul_lock_fd(c->lock) : -1;
}

enum consul_lock_state sup_consul_lock_state(struct sup_consul *c, char *why, size_t whylen)
{
	enum consul_lock_state ls = consul_lock_state(c->lock, why, whylen);
	if (ls == CONSUL_LOCK_LOST && c->lock_st)
		sup_state_set_lock(c->lock_st, SUP_LOCK_LOST);
	return ls;
}

bool sup_consul_lock_held(struct sup_consul *c, char *why, size_t whylen)
{
	return !c || !c->lock || consul_lock_state(c->lock, why, whylen) == CONSUL_LOCK_HELD;
}

int64_t sup_consul_unclean_wait_ms(struct sup_consul *c)
{
	if (!c || !consul_lock_unclean(c->lock))
		return 0;
	const struct config *cfg = c->cfg;
	int64_t wait = cfg->restore.handover_wait_ms;
	int64_t worst = cfg->consul.lock_ttl_ms + cfg->supervisor.stop_grace_ms +
			cfg->supervisor.flush_timeout_ms;
	if (wait > 0 && consul_lock_undelayed(c->lock) && worst > wait) {
		char w[32];
		if (!c->unclean_wait_said)
			log_info("consul", "no lock delay held the key before this take: the restore "
				 "waits for the old holder's open generation as long as it may take to "
				 "learn of its loss and stop (ttl + stop-grace + flush-timeout)", "wait=%s",
				 duration_format(worst, w, sizeof(w)));
		c->unclean_wait_said = true; /* a refused database's second restore: said once */
		wait = worst;
	}
	return wait; /* handover-wait 0: no wait for any generation */
}

void sup_consul_lock_settled(struct sup_consul *c)
{
	if (c)
		consul_lock_settled(c->lock);
}

/* The TTL check's status: /healthz's, from the same evaluation. */
static enum consul_check health_now(void *ctx, char *out, size_t len)
{
	struct sup_consul *c = ctx;
	struct sup_snapshot snap;
	struct engine_status es;
	memset(&es, 0, sizeof(es));
	sup_state_get(c->st, &snap);
	pthread_mutex_lock(&c->mu);
	bool have = c->status && c->status(c->status_ctx, &es) == 0;
	pthread_mutex_unlock(&c->mu);
	struct health_view v = { &snap, have ? &es : NULL, c->cfg, clock_wall_ns(), clock_mono_ns(),
				 false };
	enum health_status hs = health_overall(&v, out, len);
	if (have)
		engine_status_release(&es);
	if (hs == HEALTH_PASS)
		snprintf(out, len, "OK");
	return hs == HEALTH_PASS ? CONSUL_PASSING : hs == HEALTH_WARN ? CONSUL_WARNING : CONSUL_CRITICAL;
}

void sup_consul_set_status_source(struct sup_consul *c, http_status_fn status, void *ctx)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->status = status;
	c->status_ctx = ctx;
	pthread_mutex_unlock(&c->mu);
}

int sup_consul_register(struct sup_consul *c, struct sup_state *st)
{
	const struct cfg_consul *cc;
	char id[CONSUL_ID_MAX + 1], host[256] = "", err[512];
	if (!c || !c->cfg->consul.service_name)
		return 0;
	cc = &c->cfg->consul;
	c->st = st;
	struct consul_service svc = { .name = cc->service_name, .address = cc->service_address,
				      .port = cc->service_port };
	if (cc->service_port_label) {
		/* the port clients reach: the host's side of a mapped (Docker) port first */
		int p = nomad_host_port(cc->service_port_label);
		if (p == 0)
			p = nomad_port(cc->service_port_label);
		if (p <= 0) {
			log_error("consul", p < 0 ? "consul.service.port names a Nomad port label whose "
				  "variable is not a port number" : "consul.service.port names a Nomad "
				  "port label with no port in the environment",
				  "label=\"%s\" expected=\"NOMAD_HOST_PORT_%s or NOMAD_PORT_%s\"",
				  cc->service_port_label, cc->service_port_label, cc->service_port_label);
			return SUP_EXIT_CONFIG;
		}
		svc.port = (int)p;
		if (!svc.address)
			svc.address = nomad_ip(cc->service_port_label);
	}
	if (cc->service_id) {
		snprintf(id, sizeof(id), "%s", cc->service_id);
	} else {
		/*
		 * Unique per allocation, as Nomad names the services it registers;
		 * outside Nomad per process, so a second instance on the same host
		 * (waiting for the lock) never takes over the first one's entry.
		 */
		const char *alloc = nomad_alloc_id();
		if (alloc)
			snprintf(id, sizeof(id), "%s-%s", cc->service_name, alloc);
		else {
			if (gethostname(host, sizeof(host) - 1) < 0)
				snprintf(host, sizeof(host), "local");
			snprintf(id, sizeof(id), "%s-%s-%d", cc->service_name, host, (int)getpid());
		}
	}
	svc.id = id;
	c->reg = consul_reg_start(cc, &svc, health_now, c, err, sizeof(err));
	if (!c->reg) {
		log_error("consul", "cannot register the service", "error=\"%s\"", err);
		return SUP_EXIT_TEMPFAIL;
	}
	return 0;
}

void sup_consul_leave(struct sup_consul *c)
{
	if (c)
		consul_reg_leave(c->reg);
}

void sup_consul_close(struct sup_consul *c, int64_t budget_ms)
{
	if (!c)
		return;
	int64_t end = clock_mono_ms() + budget_ms;
	/*
	 * The release first, the registration's thread going on meanwhile: the
	 * next writer waits for the release (else for the session's TTL twice and
	 * the lock delay), and the deregistration the stop's start sent may still
	 * be under way in that thread. Halted first and stopped first, a slow
	 * agent's registration left the release 1 ms (QA142 D4). A stop that
	 * never began the stop sequence (one during the restore)
	 * starts the deregistration now, beside the release (QA145 D3).
	 */
	consul_reg_leave(c->reg);
	consul_lock_release(c->lock, budget_ms);
	int64_t left = end - clock_mono_ms();
	consul_reg_stop(c->reg, left > 0 ? left : 0);
	pthread_mutex_destroy(&c->mu);
	free(c);
}
