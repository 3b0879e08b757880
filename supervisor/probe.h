/*
 * probe.h — the service's own readiness check (e.g. radarr's /ping), polled
 * with libcurl in a thread of its own so a hanging service never delays the
 * main loop or the HTTP server. Any 2xx answer within health.probe-timeout
 * passes. While the probe has not passed yet it is retried every second (or
 * every probe-interval if shorter), then every probe-interval. The result
 * goes into the supervisor state, which /readyz reads.
 * libcurl is loaded when the first probe starts (common/lazy_curl.h).
 */
#ifndef LITEVISOR_SUP_PROBE_H
#define LITEVISOR_SUP_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "supervisor/state.h"

struct probe;

/*
 * Start probing h->probe_url (must be set). The state's probe goes to
 * "unknown" now. Returns the probe, or NULL (logged).
 */
struct probe *probe_start(const struct cfg_health *h, struct sup_state *st);

/* Stop the thread and free. NULL is fine. */
void probe_stop(struct probe *p);

/*
 * One GET of url with a total timeout, body discarded; an https URL's
 * certificate is verified unless skip_verify. Returns the HTTP status (>0),
 * or -1 with err set (connection refused, timeout, …). Used by the probe and
 * the Uptime-Kuma push. The URL is never put into err.
 */
long probe_http_get(void *curl, const char *url, int64_t timeout_ms, bool skip_verify, char *err,
		    size_t errlen);

/* A wait that ends early when stop is set; shared by probe and push threads. */
struct probe_waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int stop;
};
int probe_waiter_init(struct probe_waiter *w);
void probe_waiter_destroy(struct probe_waiter *w);
/* Sleep up to ms; returns 1 if stop was requested. */
int probe_waiter_wait(struct probe_waiter *w, int64_t ms);
void probe_waiter_stop(struct probe_waiter *w);

/*
 * A thread with its own curl handle and a stop-aware waiter: the lifecycle
 * the probe and the push threads share. start: 0, or -1 (logged under
 * component, nothing left allocated). stop: wake, join, release.
 */
struct probe_worker {
	struct probe_waiter w;
	pthread_t thread;
	void *curl;
};
int probe_worker_start(struct probe_worker *k, const char *component, void *(*fn)(void *),
		       void *arg);
void probe_worker_stop(struct probe_worker *k);

#endif
