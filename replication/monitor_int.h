/*
 * monitor_int.h — what the files of the monitor thread share (not for other
 * modules: what they use is in engine_int.h).
 *
 *   monitor.c             the thread's loop and its pass: copy the app's WAL
 *                         into the shadow WAL, note the copy's failure,
 *                         start generations, publish the shadow's position
 *   monitor_open.c        the database and its local state opened (resumed,
 *                         a restore continued, a new generation) and closed
 *                         (a clean stop recorded); its -wal/-shm watched for
 *                         deletion, replacement or truncation
 *   monitor_checkpoint.c  our checkpoints, and yielding the read hold to
 *                         another process's checkpoint
 *
 * Every function here runs on the database's monitor thread and uses its
 * "monitor only" fields of struct eng_db; each takes d->mu itself where it
 * touches fields under mu, unless it says "under mu".
 */
#ifndef LITEVISOR_MONITOR_INT_H
#define LITEVISOR_MONITOR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/engine_int.h"

#define CKPT_RETRY_NS (1 * NS_PER_SEC)

#define STATE_HELD "waiting: state directory in use by another litevisor process"

/*
 * What monitor_start_generation and monitor_copy_wal return when an owed generation's try
 * waits for its second (owed_too_soon): nothing was tried, so nothing
 * failed again. Counted as a failure, sync_errors_total grew with every
 * pass, 5 to 20 a second, for one try a second (QA121 O4).
 */
#define GEN_WAITS (-2)

/* Why a session that ended with frames no look saw published cannot be followed. */
#define DROPPED_WHY "the WAL moved on without frames SQLite never published, which were " \
		    "copied (a writer killed inside its commit?)"

/* monitor.c */

/* Set d's state line and whether it replicates (logged when it changes; takes mu). */
void monitor_db_set_state(struct eng_db *d, bool replicating, const char *state);
/* Is the engine stopping? (takes mu) */
bool monitor_stopping(struct eng_db *d);
/* Publish the shadow's position to the replicas (takes mu); grew: non-zero when a commit landed. */
void monitor_publish(struct eng_db *d, uint64_t grew);
/* Log a failed shadow_start (d->sh.err) when its cause changes and every SYNC_LOG_EVERY_NS. */
void monitor_shadow_start_failed(struct eng_db *d);
/*
 * Start a new generation for reason and publish it. Returns 0, -1 when the
 * state directory refused it (it is owed from then on, logged), or
 * GEN_WAITS when an owed generation's next try waits for its second.
 */
int monitor_start_generation(struct eng_db *d, const char *reason);
/*
 * Tell the shadow what SQLite's WAL index publishes (shadow_note_index).
 * Returns SHADOW_NONE when there was no consistent look, else what
 * shadow_note_index says (the cause in why when SHADOW_BROKEN).
 */
enum shadow_result monitor_note_index(struct eng_db *d, char *why, size_t len);
/*
 * Copy everything committed into the shadow, following index changes and
 * starting generations where the history breaks. Returns 0, -1 with the
 * cause in d->sync_why, or GEN_WAITS (nothing copied).
 */
int monitor_copy_wal(struct eng_db *d);
/* The shadow copy works (again): no failure to report. Under mu. */
void monitor_clear_sync_failure(struct eng_db *d);
/* Note a copy's result (rc from monitor_copy_wal) in d's status; logs a failure (takes mu). */
void monitor_note_sync(struct eng_db *d, int rc);
/* Frames in the current WAL session, as copied into the shadow (0: none). */
uint64_t monitor_shadow_frames(const struct eng_db *d);
/*
 * After a copy under the hold: were all of SQLite's commits copied
 * (commits.h)? Vouches for an unproven session, or starts a new generation
 * (d->continuous false if that fails).
 */
void monitor_check_commits(struct eng_db *d);

/* monitor_open.c */

/*
 * Open the database and its local state: continue a restore, resume the
 * generation in the state directory, or start a new one (fresh: the file
 * was replaced, nothing is resumed). Returns 0 when replicating, 1 to try
 * again later (waiting for the database, its lock, its state directory),
 * -1 on a local error (logged, state set, everything closed).
 */
int monitor_open_db(struct eng_db *d, bool fresh);
/* Close d's shadow, connections and -wal; the next open decides afresh. Never fails. */
void monitor_close_db(struct eng_db *d);
/* Close at shutdown, recording the files' state (<dir>/clean) when it may be resumed. */
void monitor_close_db_clean(struct eng_db *d);
/* (Re)open d->wal_fd on the -wal file. Returns 0, or -1 when there is none (errno). */
int monitor_wal_open(struct eng_db *d);
/*
 * Take d's state directory unless held already. 0: held, or no directory
 * yet; 1: another process holds it (said once, state set); -1: error
 * (state set).
 */
int monitor_take_state(struct eng_db *d);
/* Log a failure to open the database or its state: at level when new, at debug while the same. */
void monitor_open_failed(struct eng_db *d, enum log_level level, const char *what, const char *why);
/* Was the shadow this process writes deleted under it? Why in why; false while it is there. */
bool monitor_shadow_gone(const struct eng_db *d, char *why, size_t len);
/* Was the -wal or -shm our connections use deleted or replaced (by another process)? */
bool monitor_side_files_changed(struct eng_db *d);
/* Was the -wal cut short in place, below the frames the WAL index counts? */
bool monitor_wal_cut_short(struct eng_db *d);

/* monitor_checkpoint.c */

/* Checkpoint when due. Returns true when it ran one (the database file may have been written). */
bool monitor_maybe_checkpoint(struct eng_db *d);
/*
 * Is the WAL fully backfilled at about frames already, so that no
 * checkpoint is due before it grew by a quarter of the threshold?
 */
bool monitor_ckpt_settled(const struct eng_db *d, uint64_t frames);
/*
 * After a failed copy: once copies have failed for SYNC_GIVE_UP_NS, let the
 * read hold go (d->continuous false) so the app's checkpoints can restart
 * its WAL. Logged once per failure.
 */
void monitor_give_up_hold(struct eng_db *d);
/*
 * After each pass (grew: the pass copied something), look for another
 * process's checkpoint that waits for our hold, and yield to it. Returns
 * true when a pass should run now; otherwise *wait (ms) is shortened while
 * following.
 */
bool monitor_follow_checkpoint(struct eng_db *d, int64_t mtime_ns, bool grew, int64_t *wait);

#endif
