/*
 * http.h — the health, readiness and metrics server (libmicrohttpd).
 *
 * Runs in libmicrohttpd's own polling thread (MHD_USE_INTERNAL_POLLING_THREAD
 * | MHD_USE_AUTO), so it answers while the main loop waits on signals and the
 * engine's threads wait on replicas. Each request copies the supervisor state
 * and the engine status (short locks, no I/O) and formats from the copies.
 * Connection limit and idle timeout are set; every answer closes the
 * connection; no answer ever holds a credential (replica descriptions and
 * errors are credential-free by the storage contract; push/probe URLs are
 * never shown).
 *
 * Routes (GET/HEAD): /livez, /readyz, /healthz and /status (same document),
 * /metrics. Anything else: 404; other methods: 405.
 *
 * Without a service (`litevisor replicate`, HTTP_NO_SERVICE) /readyz answers
 * 200 while the state's phase is "running" (replication started), /livez and
 * /metrics are as above, and /healthz and /status carry the databases' and
 * replicas' checks without the service's (health_view.no_service).
 */
#ifndef LITEVISOR_SUP_HTTP_H
#define LITEVISOR_SUP_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "common/config.h"
#include "replication/status.h"
#include "supervisor/state.h"

/*
 * Connections at once, and from one address. A client that trickles its
 * request a byte at a time keeps its connection (the idle timeout restarts at
 * each byte): the per-address share keeps one such host from taking every
 * slot, and a request not read whole within HTTP_REQUEST_DEADLINE_S of its
 * accept ends its connection (http_deadline.h), so a few such hosts cannot
 * either: the checkers (Nomad, Consul, Uptime-Kuma, Prometheus) are still
 * answered.
 */
#define HTTP_CONNECTION_LIMIT 256
#define HTTP_PER_IP_CONNECTION_LIMIT 32
#define HTTP_CONNECTION_TIMEOUT_S 10
#define HTTP_REQUEST_DEADLINE_S 5

struct http_server;

/* Where the engine's status comes from (set once replication runs). 0 or -1. */
typedef int (*http_status_fn)(void *ctx, struct engine_status *out);

/*
 * Resolve the listen address: NOMAD_PORT_<health.port-label> when that label
 * is configured and set (bound on NOMAD_IP_<label> if set, else all
 * interfaces), else the top-level addr ("host:port", ":port" = all IPv4
 * interfaces as in Litestream, "[v6]:port"). Returns 1 with *sa filled, 0
 * when no HTTP server is configured, -1 with err set.
 */
int http_resolve_addr(const struct config *cfg, struct sockaddr_storage *sa, socklen_t *salen,
		      char *desc, size_t desclen, char *err, size_t errlen);

/* What the server reports on: `run`'s supervised service, or replication alone. */
enum http_mode { HTTP_SERVICE = 0, HTTP_NO_SERVICE };


/*
 * The configured server (http_resolve_addr), started in mode, each outcome
 * logged. Returns 0 with *srv the server, or NULL when none is configured;
 * else litevisor's exit code: 100 (a bad address), 111 (cannot listen).
 */
int http_serve_configured(const struct config *cfg, struct sup_state *state, enum http_mode mode,
			  struct http_server **srv);

/*
 * Start listening on sa in mode. state and cfg are borrowed and must outlive
 * the server. Returns the server, or NULL when the address cannot be bound.
 */
struct http_server *http_start_mode(const struct sockaddr_storage *sa, struct sup_state *state,
				    const struct config *cfg, enum http_mode mode);

/* The port actually bound (useful with port 0), or 0. */
int http_port(const struct http_server *srv);

/* Install (or clear, fn = NULL) the engine status source. Thread-safe. */
void http_set_status_source(struct http_server *srv, http_status_fn fn, void *ctx);

/* Stop the server and free it (waits for the thread). NULL is fine. */
void http_stop(struct http_server *srv);

#endif
