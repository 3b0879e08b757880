/*
 * push.h — Uptime-Kuma push heartbeat: GET <push-url>?status=up|down&msg=…&ping=…
 * every health.push-interval from a thread of its own (uptime-kuma
 * server/routers/api-router.js: "up" is UP, anything else DOWN). up when
 * /readyz would answer 200 and /healthz would not fail (msg "OK", or the
 * warning's text); down with the reason once the service, ready before since
 * it last started, is not any more (its probe fails), waits to be restarted
 * after a crash, or /healthz fails (replication failing past
 * health.fail-after: a push monitor must not show green while no commit
 * reaches a replica); nothing while litevisor starts, restores or stops, nor
 * while the service comes up, so a deploy raises no alert (one that lasts
 * longer than Kuma's heartbeat interval shows as missed beats).
 * ping is the service probe's latency in ms when a probe is configured. The
 * push URL holds a token: it is never logged.
 */
#ifndef LITEVISOR_SUP_PUSH_H
#define LITEVISOR_SUP_PUSH_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"
#include "replication/status.h"
#include "supervisor/state.h"

struct push;

/* Where the engine's status comes from, as for the HTTP server: 0, or non-zero for none. */
typedef int (*push_status_fn)(void *ctx, struct engine_status *out);

/*
 * Start pushing to cfg->health.push_url (must be set); replication's health
 * from status(ctx) (NULL: the service's readiness alone). Without a service
 * (`replicate`, service false) up is replication running and /healthz not
 * failing; down with /healthz's reason when it fails. Returns the pusher,
 * or NULL (logged).
 */
struct push *push_start(const struct config *cfg, struct sup_state *st, bool service,
			push_status_fn status, void *ctx);

/* Stop and free. NULL is fine. */
void push_stop(struct push *p);

/*
 * Build the full URL for one heartbeat into buf: base (without the status,
 * msg and ping parameters it may carry: Kuma shows the URL with
 * "?status=up&msg=OK&ping=", and a key given twice is an array to it, never
 * "up") + ('?' or '&') + status, url-encoded msg and ping (empty when
 * ping_ms < 0). Returns 0, or -1 if it does not fit.
 */
int push_url(const char *base, bool up, const char *msg, long long ping_ms, char *buf,
	     size_t len);

#endif
