/* state.c — the supervisor's shared state (see state.h). */
#include "supervisor/state.h"

#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "common/banned.h"

const char *sup_phase_name(enum sup_phase p)
{
	switch (p) {
	case SUP_STARTING: return "starting";
	case SUP_RESTORING: return "restoring";
	case SUP_RUNNING: return "running";
	case SUP_BACKOFF: return "backoff";
	case SUP_STOPPING: return "stopping";
	case SUP_FLUSHING: return "flushing";
	case SUP_EXITING: return "exiting";
	}
	return "unknown";
}

int sup_state_init(struct sup_state *st)
{
	memset(st, 0, sizeof(*st));
	if (pthread_mutex_init(&st->lock, NULL) != 0)
		return -1;
	st->s.phase = SUP_STARTING;
	st->s.last_exit_code = -1;
	st->s.started_wall_ns = clock_wall_ns();
	st->s.heartbeat_mono_ns = clock_mono_ns();
	snprintf(st->s.reason, sizeof(st->s.reason), "starting");
	return 0;
}

void sup_state_release(struct sup_state *st)
{
	pthread_mutex_destroy(&st->lock);
}

void sup_state_get(struct sup_state *st, struct sup_snapshot *out)
{
	pthread_mutex_lock(&st->lock);
	*out = st->s;
	pthread_mutex_unlock(&st->lock);
}

void sup_state_set_phase(struct sup_state *st, enum sup_phase phase, const char *reason)
{
	pthread_mutex_lock(&st->lock);
	st->s.phase = phase;
	snprintf(st->s.reason, sizeof(st->s.reason), "%s", reason ? reason : "");
	st->s.heartbeat_mono_ns = clock_mono_ns();
	pthread_mutex_unlock(&st->lock);
}

void sup_state_set_service(struct sup_state *st, pid_t pid, int64_t started_wall_ns)
{
	pthread_mutex_lock(&st->lock);
	st->s.service_pid = pid;
	st->s.service_started_wall_ns = started_wall_ns;
	if (st->s.probe != SUP_PROBE_NONE) {
		/* A fresh service must pass its probe again before it is ready. */
		st->s.probe = SUP_PROBE_UNKNOWN;
		snprintf(st->s.probe_error, sizeof(st->s.probe_error), "not probed yet");
	}
	pthread_mutex_unlock(&st->lock);
}

void sup_state_service_exited(struct sup_state *st, int code)
{
	pthread_mutex_lock(&st->lock);
	st->s.service_pid = 0;
	st->s.last_exit_code = code;
	if (st->s.probe != SUP_PROBE_NONE) {
		/* its last answer died with it: no passing probe (or ping) for a process gone */
		st->s.probe = SUP_PROBE_FAIL;
		st->s.probe_latency_ms = 0;
		snprintf(st->s.probe_error, sizeof(st->s.probe_error), "service not running");
	}
	pthread_mutex_unlock(&st->lock);
}

void sup_state_set_restore(struct sup_state *st, bool done, int64_t duration_ms)
{
	pthread_mutex_lock(&st->lock);
	st->s.restore_done = done;
	st->s.restore_duration_ms = duration_ms;
	pthread_mutex_unlock(&st->lock);
}

void sup_state_add_restart(struct sup_state *st)
{
	pthread_mutex_lock(&st->lock);
	st->s.restarts++;
	pthread_mutex_unlock(&st->lock);
}

void sup_state_set_lock(struct sup_state *st, enum sup_lock lock)
{
	pthread_mutex_lock(&st->lock);
	st->s.lock = lock;
	pthread_mutex_unlock(&st->lock);
}

void sup_state_set_probe(struct sup_state *st, pid_t pid, enum sup_probe p, int64_t latency_ms,
			 const char *error)
{
	pthread_mutex_lock(&st->lock);
	if (pid && pid != st->s.service_pid) {
		pthread_mutex_unlock(&st->lock);
		return;
	}
	st->s.probe = p;
	st->s.probe_latency_ms = latency_ms;
	snprintf(st->s.probe_error, sizeof(st->s.probe_error), "%s", error ? error : "");
	pthread_mutex_unlock(&st->lock);
}

void sup_state_heartbeat(struct sup_state *st)
{
	pthread_mutex_lock(&st->lock);
	st->s.heartbeat_mono_ns = clock_mono_ns();
	pthread_mutex_unlock(&st->lock);
}
