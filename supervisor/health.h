/*
 * health.h — the answers of /livez, /readyz and /healthz, computed from a
 * copy of the supervisor's state and of the engine's status (no I/O, no
 * locks: the HTTP thread takes the copies, these functions only read them).
 *
 * Rules:
 *  - live: the main loop turned within HEALTH_STALE_MS, or it is in a phase
 *    that legitimately blocks it (restore, final flush), which have their own
 *    deadlines.
 *  - ready: restore done, service running, and its own probe passing when one
 *    is configured. Replication trouble alone never makes litevisor unready.
 *  - /healthz status: fail when not ready; otherwise warn when a replica is
 *    failing, lags beyond its allowed bound or a database is not replicating;
 *    a replica failing (or lagging) for longer than health.fail-after becomes
 *    fail. pass/warn answer 200, fail 503 (draft-inadarei-api-health-check).
 */
#ifndef LITEVISOR_SUP_HEALTH_H
#define LITEVISOR_SUP_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "replication/status.h"
#include "supervisor/state.h"

#define HEALTH_STALE_MS 10000

enum health_status { HEALTH_PASS = 0, HEALTH_WARN, HEALTH_FAIL };

/* "pass", "warn", "fail". */
const char *health_status_name(enum health_status s);

/* True when the supervisor loop is alive; else why. */
bool health_alive(const struct sup_snapshot *s, int64_t now_mono_ns, char *why, size_t whylen);

/* True when ready; else why ("restoring databases", "service not running", "probe: …"). */
bool health_ready(const struct sup_snapshot *s, char *why, size_t whylen);

/* Status of one replica (restore-only replicas always pass); now_mono_ns from clock_mono_ns(). */
enum health_status health_replica(const struct replica_status *r, int64_t fail_after_ms,
				  int64_t now_mono_ns, char *why, size_t whylen);

struct health_view {
	const struct sup_snapshot *sup;
	const struct engine_status *eng;  /* NULL when no engine runs */
	const struct config *cfg;         /* NULL: defaults */
	int64_t now_wall_ns;              /* for the times shown */
	int64_t now_mono_ns;              /* for how long something has failed */
	bool no_service;                  /* `replicate`: no service:* checks; ready when running */
};

/*
 * The status the /healthz document of v has, and unless pass its "output"
 * (the worst problem, the first of that status) into why.
 */
enum health_status health_overall(const struct health_view *v, char *why, size_t whylen);

/*
 * Render the application/health+json document (compact). Sets *http_status to
 * 200 (pass, warn) or 503 (fail). Returns a malloc'd NUL-terminated body, or
 * NULL on ENOMEM.
 */
char *health_render(const struct health_view *v, int *http_status);

#endif
