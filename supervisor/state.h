/*
 * state.h — what the supervisor is doing, shared between the main loop (the
 * only writer) and the HTTP, probe and push threads (readers).
 *
 * Every field lives in one plain struct sup_snapshot guarded by a mutex held
 * only to copy a few hundred bytes, so a reader never waits on the main loop
 * or the data path. Readers work on their own copy (sup_state_get).
 */
#ifndef LITEVISOR_SUP_STATE_H
#define LITEVISOR_SUP_STATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum sup_phase {
	SUP_STARTING = 0,  /* loading config, opening the HTTP server */
	SUP_RESTORING,     /* restoring databases before the service exists */
	SUP_RUNNING,       /* the service runs */
	SUP_BACKOFF,       /* the service failed; waiting before a restart */
	SUP_STOPPING,      /* grace period: waiting for the service and its children */
	SUP_FLUSHING,      /* final flush to the replicas */
	SUP_EXITING,       /* done; the process is about to exit */
};

/* "starting", "restoring", "running", "backoff", "stopping", "flushing", "exiting". */
const char *sup_phase_name(enum sup_phase p);

enum sup_probe { SUP_PROBE_NONE = 0, SUP_PROBE_UNKNOWN, SUP_PROBE_OK, SUP_PROBE_FAIL };

/* The Consul writer lock (consul.lock.key): none configured, waited for, held, lost. */
enum sup_lock { SUP_LOCK_NONE = 0, SUP_LOCK_WAITING, SUP_LOCK_HELD, SUP_LOCK_LOST };

struct sup_snapshot {
	enum sup_phase phase;
	pid_t service_pid;          /* 0 when none runs */
	bool restore_done;          /* every required database restored (or none configured) */
	char reason[256];           /* why not ready ("restoring databases", …); "" when ready */
	enum sup_probe probe;       /* the service's own readiness probe */
	char probe_error[256];
	int64_t probe_latency_ms;
	uint64_t restarts;          /* service restarts by the restart policy */
	int last_exit_code;         /* the service's last exit code, -1 if it never exited */
	int64_t started_wall_ns;    /* litevisor's start */
	int64_t service_started_wall_ns; /* last (re)start of the service, 0 if never */
	int64_t restore_duration_ms;     /* whole restore step */
	int64_t heartbeat_mono_ns;  /* last turn of the main loop */
	enum sup_lock lock;         /* the Consul writer lock */
};

struct sup_state {
	pthread_mutex_t lock;
	struct sup_snapshot s;
};

/* Initialise: phase starting, no service, probe none. Returns 0 or -1. */
int sup_state_init(struct sup_state *st);
void sup_state_release(struct sup_state *st);

/* Copy the current snapshot into *out. */
void sup_state_get(struct sup_state *st, struct sup_snapshot *out);

/* Writers (main loop, probe thread). Each takes the lock briefly. */
void sup_state_set_phase(struct sup_state *st, enum sup_phase phase, const char *reason);
void sup_state_set_service(struct sup_state *st, pid_t pid, int64_t started_wall_ns);
void sup_state_service_exited(struct sup_state *st, int code);
void sup_state_set_restore(struct sup_state *st, bool done, int64_t duration_ms);
void sup_state_add_restart(struct sup_state *st);
void sup_state_set_lock(struct sup_state *st, enum sup_lock lock);
/*
 * The probe's result for the service process pid; dropped when that process
 * is no longer the service (it exited or was restarted meanwhile). pid 0:
 * set whatever runs (the probe's configuration at start).
 */
void sup_state_set_probe(struct sup_state *st, pid_t pid, enum sup_probe p, int64_t latency_ms,
			 const char *error);
void sup_state_heartbeat(struct sup_state *st);

#endif
