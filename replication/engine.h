/*
 * engine.h — continuous replication of every configured database.
 *
 * One engine serves a whole config: for each database it watches the WAL
 * (inotify, polling fallback), keeps litevisor's shadow state beside the
 * database, and ships new frames to each replica on that replica's own
 * schedule, each replica in its own thread so a slow one never delays another.
 *
 * Lifecycle (the supervisor's step 3 and step 6):
 *   e = engine_new(cfg)        validate, open storages; no threads yet
 *   engine_lock(e)             take every database's state directory (before a restore)
 *   engine_start(e)            threads start; databases that do not exist yet are waited for
 *   engine_status_get(e, &st)  any time, from any thread, never blocks on I/O
 *   engine_flush(e, ms)        final flush: ship everything committed to every
 *                              reachable replica within the deadline
 *   engine_free(e)             stop threads, release the read lock held on each DB
 *
 * Not async-signal-safe; call from normal threads only. The engine installs no
 * signal handlers (block signals before engine_start so its threads inherit the mask).
 */
#ifndef LITEVISOR_ENGINE_H
#define LITEVISOR_ENGINE_H

#include <stdint.h>

#include "common/config.h"
#include "replication/status.h"

struct engine;

/* Create an engine for cfg (borrowed; must outlive the engine). NULL + log on error. */
struct engine *engine_new(const struct config *cfg);

/* Record what the restore step did for db index i (shown in status). */
void engine_note_restore(struct engine *e, size_t db_index, const char *source,
			 const char *result, int64_t duration_ms, const struct wal_pos *pos);

/*
 * Take each database's state directory for this process
 * (replication/statelock.h), before anything reads or writes there: the
 * restore step included. A state directory that does not exist yet (a new
 * node) is taken by the database's monitor when it makes it, before it
 * reads it. One held by another
 * process is waited for a few seconds (ENG_LOCK_WAIT_MS: a process handing
 * over on this host may still be exiting). Returns 0, or -1 (logged, naming
 * the directory and the other process) when another process still holds
 * one, or a lock file cannot be made: exit 111 (the other may stop).
 */
int engine_lock(struct engine *e);

/* Start replication threads. Returns 0, or -1 (logged). */
int engine_start(struct engine *e);

/*
 * Wait, at most timeout_ms, until each database's monitor has looked at its
 * files once: resumed its generation, started one, or found no database
 * yet. A service started before that can change the files first, and the
 * engine must then take the change for one made while nobody watched (a new
 * generation and a full snapshot at every restart of an app that writes as
 * it starts). Returns false if the time ran out.
 */
bool engine_wait_looked(struct engine *e, int64_t timeout_ms);

/*
 * After engine_wait_looked: wait, at most timeout_ms, until each open
 * database's replicas have looked at their data once (the left-behind check,
 * which ends on its own after a few seconds for a replica that does not
 * answer). Returns whether one of them refused a database as older than a
 * replica's data (another node went on since this node's file; recorded in
 * its state, so a restore now restores the newer data).
 */
bool engine_wait_checked(struct engine *e, int64_t timeout_ms);

/*
 * Final flush: sync every database's WAL and ship it to every replica that is
 * reachable, in parallel, for at most deadline_ms. Returns 0 when every
 * replica holds everything committed, -1 otherwise (each miss logged).
 */
int engine_flush(struct engine *e, int64_t deadline_ms);

/* Copy the current state into *out (free with engine_status_release). Returns 0 or -1 (ENOMEM). */
int engine_status_get(struct engine *e, struct engine_status *out);

/* Stop all threads (without flushing) and free everything. NULL is fine. */
void engine_free(struct engine *e);

#endif
