/*
 * dbs.h — the databases' part of `run`: restore them before the service
 * exists, replicate while it runs, flush them after it stopped
 * (replication/restore.h, replication/engine.h).
 *
 * The restores run in threads of their own (one per database) so the main
 * loop keeps reading signals meanwhile; dbs_restore_fd() becomes readable when
 * every restore has finished. With no database configured there is no engine
 * and every step succeeds at once.
 */
#ifndef LITEVISOR_SUP_DBS_H
#define LITEVISOR_SUP_DBS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "replication/status.h"

struct sup_dbs;

/* Create the engine for cfg (borrowed): validates, opens storages, no thread yet. NULL (logged) on error. */
struct sup_dbs *dbs_open(const struct config *cfg);

/*
 * Take every database's state directory for this process, before the
 * restore (engine_lock). Returns 0, or -1 (logged): another process uses
 * one (exit 111).
 */
int dbs_lock(struct sup_dbs *d);

/*
 * Start restoring every database. any_age_ms > 0: the writer lock was taken
 * from a holder that did not release it, which may still be stopping: the
 * restores wait for its open generation however old, that long at least
 * (restore_db_for_run, sup_consul_unclean_wait_ms). Returns 0, or -1 (logged).
 */
int dbs_restore_start(struct sup_dbs *d, int64_t any_age_ms);

/* An fd that becomes readable once every restore has finished. */
int dbs_restore_fd(const struct sup_dbs *d);

/*
 * Stopping during the restore step: dbs_restore_abort() asks every restore
 * to stop and remove its temp files (the fd then fires); dbs_restore_abandon()
 * removes them from under restores that did not stop, for a process about
 * to _exit() (replication/restore.h: restore_abort, restore_abandon).
 */
void dbs_restore_abort(const char *why);
void dbs_restore_abandon(void);

/*
 * After the fd fired: join the threads, log each outcome and record it in the
 * engine. Returns 0 when the service may start (every required database
 * restored, exists or is new), else the exit code (111: a required database
 * could not be restored). *duration_ms is the time the whole step took.
 */
int dbs_restore_finish(struct sup_dbs *d, int64_t *duration_ms);

/*
 * Start replicating, and wait (at most DBS_LOOK_TIMEOUT_MS) until the engine
 * has looked at every database's files, so the service's first writes come
 * after: the generation resumes instead of restarting. Returns 0, or -1 (logged).
 */
#define DBS_LOOK_TIMEOUT_MS 5000
int dbs_start(struct sup_dbs *d);

/*
 * After dbs_start: did replication refuse a database at its first look, as
 * older than a replica's data (another node went on since this node's
 * file)? Waits for the replicas' first looks, at most restore.probe-timeout.
 * The service has not started: dbs_reset, then the restore step again,
 * restores the newer data before it does.
 */
bool dbs_refused(struct sup_dbs *d);

/*
 * Stop replicating (nothing flushed: the service never ran), within
 * DBS_RESET_TIMEOUT_MS, and make a new engine, its state directories taken
 * again, for the restore step to run again. Returns 0, or -1 (logged: the
 * old engine did not stop in time, then dbs_close says the process must
 * _exit; the new one could not be made; or another process took a state
 * directory meanwhile).
 */
#define DBS_RESET_TIMEOUT_MS 5000
int dbs_reset(struct sup_dbs *d);

/* Copy the engine's status (an http_status_fn). 0, 1 when there is no engine, -1 on ENOMEM. */
int dbs_status(void *d, struct engine_status *out);

/* Final flush within deadline_ms. 0 when every replica holds everything, -1 otherwise. */
int dbs_flush(struct sup_dbs *d, int64_t deadline_ms);

/* Stop replication and free. Restores still running must have finished (or the process be exiting). NULL is fine. */
void dbs_free(struct sup_dbs *d);

/*
 * dbs_free for the way out, bounded: replication threads stuck in a storage
 * call (a replica that accepts connections and never answers) must not keep
 * litevisor past its orchestrator's kill timeout. Returns 0 when everything
 * was freed in time; -1 when it was not (d is then abandoned to the exiting
 * process, which must leave with _exit).
 */
int dbs_close(struct sup_dbs *d, int64_t deadline_ms);

#endif
