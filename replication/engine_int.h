/*
 * engine_int.h — the engine's private state, shared by engine.c (lifecycle,
 * status, flush), monitor.c, monitor_open.c and monitor_checkpoint.c (one
 * thread per database), backlog.c, replica.c (one thread per replica, with
 * replica_look.c, replica_history.c and replica_older.c) and retention.c.
 *
 * Threads: per database one monitor thread (owns the SQLite connections and
 * the shadow WAL: struct eng_db's "monitor only" fields) and per replica one
 * thread (uploads). Everything marked "mu" is guarded by the database's
 * mutex, held only for copies of small fields, never across I/O.
 */
#ifndef LITEVISOR_ENGINE_INT_H
#define LITEVISOR_ENGINE_INT_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/config.h"
#include "replication/commits.h"
#include "replication/db.h"
#include "replication/lagring.h"
#include "replication/layout.h"
#include "replication/localstate.h"
#include "replication/lz4io.h"
#include "replication/shadow.h"
#include "replication/status.h"
#include "replication/storage.h"
#include "replication/watch.h"

/* Move to a new WAL index (through a checkpoint) after this many segments in one (#585). */
#define ENG_MAX_SEGMENTS_PER_INDEX 64
/* The database state while its file does not exist (yet): nothing to replicate. */
#define ENG_STATE_WAITING "waiting for database"
/*
 * The same once a database this process had open was removed: an app that
 * still has it open commits into a file no replica will see, so this one is
 * stuck (health: warn, fail after fail-after), not merely waiting.
 */
#define ENG_STATE_REMOVED "removed: its file was removed while in use, and commits made to it " \
			  "since reach no replica"

/* Generations of this process remembered as its own (writers.c); older ones were seen listed. */
#define ENG_OWN_GENS 16
/* Segments written between two writer checks that the next one looks for (writers.c). */
#define ENG_SHIPPED_MAX 1024

struct eng_db;

/* A snapshot compressed into an unnamed file (snapshot.c): a descriptor and its figures. */
struct snap_file {
	int fd;
	char gen[17];
	uint32_t index;               /* the shadow index it was taken at */
	int64_t packed;               /* bytes in fd */
	uint64_t plain;               /* database bytes it holds */
	uint32_t page_size;
	struct wal_pos covers;        /* the WAL position its bytes may reach */
	struct wal_pos sure;          /* ... and the one they surely hold (<= covers) */
	int64_t covers_mono;          /* when covers was pinned */
};

struct eng_replica {
	struct eng_db *db;
	const struct cfg_replica *cfg;
	struct storage *st;
	struct st_op_stats *restore_ops; /* the restore's calls to it (opstats.h), or NULL */
	pthread_t thread;
	bool started;
	pthread_cond_t cond;          /* woken on new data, flush, stop */

	/* mu */
	bool wake;
	bool pos_known;               /* pos is the replica's real end position */
	bool failed_here;             /* a call of this process's failed since the replica's last
				       * success, a segment's or a whole sync's (failing_since_ns
				       * may be the last run's record) */
	struct {                      /* failures said at WARN in this outage (replica_note_error) */
		uint64_t shape;       /* ...a hash of the text's shape */
		int64_t mono;         /* ...when, mono ns (0: an empty slot) */
	} said[4];
	bool snap_failing;            /* its last snapshot failed: the outage lasts until one is
				       * stored, whatever segments are meanwhile */
	int64_t look_since_mono;      /* a look at its position under way since then, or 0 */
	struct wal_pos pos;
	bool need_snapshot;           /* next upload starts with a snapshot */
	bool dropped;                 /* backlog cap exceeded: ignore for shadow cleanup */
	int64_t behind_since_mono;    /* dropped, or behind when a new generation began: when
				       * the oldest commit it lacked was made (0 none) */
	struct wal_pos behind_until;  /* ...until its position reaches this (generation "":
				       * until a snapshot), past which the lag ring knows
				       * every commit it lacks (snapshot.c, snapshot_done) */
	bool gap;                     /* the next snapshot follows a gap in this replica's history */
	bool skew_warned;             /* retention saw this replica's clock behind ours (logged once) */
	/*
	 * Carried over a restart from r's failure record (failrec.c):
	 * the oldest commit it lacked before it, which the new process's lag
	 * ring cannot know. Dropped once it syncs or takes a snapshot.
	 */
	bool carried;
	int64_t carried_since_mono;
	uint32_t segs_in_index;       /* segments written at pos.index */
	bool snap_known;              /* the replica's newest snapshot is at (snap_gen, snap_index) */
	char snap_gen[17];
	uint32_t snap_index;
	/*
	 * The WAL that newest snapshot's bytes surely hold, when this process
	 * wrote it (snap_covers.generation "" otherwise): a database past it has
	 * something new for the next one. Not the position its bytes may reach
	 * (snapshot.c: the file lacks the frames not yet checkpointed into it):
	 * a quiet app's last commits never got a snapshot (QA163 D1).
	 */
	struct wal_pos snap_covers;
	int64_t snap_written_ns;      /* by our clock, the last snapshot this process wrote (0 none) */
	/* by our clock, the last WAL segment this process wrote (0 none), and where */
	int64_t seg_written_ns;
	/*
	 * The same two moments on the monotonic clock: retention times the
	 * replica's clock on from them, so that a step of our wall clock since
	 * moves none of its cuts (QA166 D1).
	 */
	int64_t snap_written_mono, seg_written_mono;
	char seg_written_gen[17];
	/*
	 * Its look found generations besides the database's (others_listed):
	 * an earlier process may have written one of them within the second
	 * before this one's thread started (thread_started_ns, by our clock).
	 */
	bool others_listed;
	int64_t thread_started_ns;
	uint32_t seg_written_index, seg_written_offset;
	/*
	 * A snapshot of its own in progress at (snap_hold_gen, snap_hold_index):
	 * it ships from that index once stored, so backlog.c keeps the index's
	 * shadow WAL meanwhile, as for the shared one. "" none.
	 */
	char snap_hold_gen[17];
	uint32_t snap_hold_index;
	/*
	 * Its own snapshot file ("spooled", snapshot.c) kept after a failed
	 * upload, for the retries while the database stays at that index: an
	 * outage no longer compresses the database again at every try (QA130 D1:
	 * 266 MB written locally in 40 s for a 64 MB database). fd -1: none.
	 * Replica thread only.
	 */
	struct snap_file kept;
	bool refused;                 /* found the database older than its data: writes nothing
				       * more, looks no more (replica_older_refuse) */
	bool older_check;             /* has a closed record, or the restored marker names it:
				       * counted in db->older_pending until its first look at
				       * the replica (replica_older.c) */
	bool snap_wait;               /* retention wants a snapshot once the database is past
				       * snap_index (one there would replace the one it has) */
	char await_gen[17];           /* holds another node's history of this generation:
				       * idle until the monitor starts a new one */
	uint64_t flush_seq;           /* last flush request served */
	bool closed;                  /* the final flush closed the generation here: write no more */
	bool flush_handled;           /* the final flush has judged it (engine_flush) */
	int64_t flush_failed_ns;      /* wall time the final flush gave up on it, 0 if it did not */
	bool close_done;              /* its own thread has tried the closed mark's PUT */
	bool oversize;                /* index oversize_index grew past max_offset: snapshot */
	uint32_t oversize_index;      /* after it, at a later index (see ship()) */
	struct replica_status stat;

	/*
	 * replica thread only: the segment whose upload last failed. The PUT may
	 * still land (a server or proxy that answers after we gave up), so its
	 * key is written again only with the same bytes; what came since goes
	 * into the next segment. gen[0] == '\0': none.
	 */
	struct {
		char gen[17];
		uint32_t index;
		uint64_t from, to;
	} unsure;

	/* replica thread only (writers.c) */
	char (*writers_seen)[17];     /* generations listed on the replica so far */
	size_t writers_nseen;
	bool writers_primed;          /* the first listing (what was there before us) is in */
	char snap_missing[LAYOUT_KEY_MAX]; /* the newest snapshot's key, missing at the last look */
	char snap_looked[LAYOUT_KEY_MAX];  /* the newest snapshot's key at the last look */
	/*
	 * The segments of shipped_gen this process wrote and the next look
	 * checks for (writers.c, check_segments), oldest first. Past
	 * ENG_SHIPPED_MAX between two looks, the oldest go unchecked.
	 */
	char shipped_gen[17];
	struct eng_seg_ref { uint32_t index, offset; } shipped[ENG_SHIPPED_MAX];
	size_t nshipped;

	/* replica thread only (replica_label, retention.c) */
	char labelled_gen[17];        /* the generation known to carry our label here, "" none */
	char (*foreign_warned)[17];   /* generations of another database id, warned of once */
	size_t foreign_nwarned;

	/*
	 * failrec.c, under rec_mu: r's thread, and engine_flush when it gives up
	 * on r (set by engine_new before either runs)
	 */
	pthread_mutex_t rec_mu;
	bool failure_recorded;        /* r's failure record is on disk */
	int64_t recorded_behind_ns;   /* ... with this behind-since (wall ns, 0 none) */
};

/*
 * One compressed snapshot shared by the replicas of a database that need the
 * same one (snapshot.c). All fields under the database's mu.
 */
enum snap_share_state { SHARE_NONE, SHARE_BUILDING, SHARE_READY };
struct snap_share {
	enum snap_share_state state;
	char gen[17];
	uint32_t index;               /* the shadow index it was taken at */
	int fd;                       /* READY: the LZ4 frame, an unnamed file in the state dir */
	int64_t packed;               /* READY: bytes in fd */
	uint64_t plain;               /* READY: database bytes it holds */
	uint32_t page_size;           /* READY: the database's page size */
	struct wal_pos covers;        /* READY: the WAL position its bytes may reach (snapshot.c) */
	struct wal_pos sure;          /* READY: ... and the one they surely hold */
	int64_t covers_mono;          /* READY: when covers was pinned (mono ns) */
};

struct eng_db {
	struct engine *eng;
	const struct cfg_db *cfg;
	char dir[PATH_MAX];           /* state directory */
	int state_fd[2];              /* hold its locks (statelock.h); both -1: not yet */
	bool state_held_logged;       /* "in use by another process" said once (monitor) */
	pthread_t thread;
	bool started;
	struct watch watch;

	pthread_mutex_t mu;
	pthread_cond_t cond;          /* monitor progress (flush waits on it) */
	/* mu: published by the monitor */
	bool ready;                   /* gen/index valid */
	/*
	 * A resumed generation the WAL has not yet shown to go on from the
	 * shadow (monitor_open.c, monitor_open_db): published (lag, flush and health read
	 * it), but no replica looks at its replica or writes until the monitor
	 * proves it or starts a new generation. A replica that looked first
	 * reopened (unclosed) a generation the WAL then disowned.
	 */
	bool resume_pending;
	/*
	 * Litestream's state directory's position (localstate_position) as the
	 * monitor first found it, before this process wrote into it (with
	 * meta-path, the directory both share): ls_rc 0, or -1 (none).
	 */
	bool ls_captured;
	int ls_rc;
	struct wal_pos ls_pos;
	bool looked;                  /* the monitor's first look at the files is done */
	char gen[17];
	uint32_t index;               /* current shadow index */
	uint64_t size;                /* bytes in its shadow file (0: no file yet) */
	int64_t prev_end;             /* where index-1 ended, -1 unknown (shadow.h) */
	uint32_t min_index;           /* lowest shadow index still on disk */
	uint64_t gen_epoch;           /* bumped at each new generation */
	dev_t dev;
	ino_t ino;                    /* the database file of this generation */
	uint64_t sync_seq;            /* completed syncs */
	uint64_t sync_req;            /* requested syncs (flush) */
	bool ckpt_req;                /* a replica asks for a new index */
	uint32_t ckpt_req_index;      /* ... to move past this one */
	bool restart_req;             /* ... now, without waiting for the app's next write */
	int64_t flush_deadline_ns;    /* monotonic end of the current final flush */
	bool flush_unsynced;          /* the final flush could not sync the WAL in time */
	bool flush_skip;              /* the final flush has nothing of it to ship */
	bool flush_closing;           /* replicas close themselves on reaching flush_target */
	struct wal_pos flush_target;  /* where the final flush brings its replicas */
	struct lag_entry lag[LAG_RING];  /* lagring.h */
	size_t lag_n;
	int64_t gen_start_mono;
	char own_gens[ENG_OWN_GENS][17]; /* generations this process wrote, newest last (writers.c) */
	size_t own_n;
	char gen_req[17];             /* a replica asks for a new generation instead of this one */
	char gen_req_why[400];
	bool older_req;               /* a replica found the database older than its data: stop */
	size_t older_pending;         /* replicas with older_check not yet checked (replica_older.c) */
	int64_t older_deadline_mono;  /* ... waited for until then at most (set once the
				       * replicas may first look: replica_older_clock_start) */
	bool older_wait_logged;       /* "replicas wait for …" said once */
	bool older_late_logged;       /* "… did not answer in time" said once */
	bool older_clock_started;     /* older_deadline_mono set (replica_older_clock_start) */
	struct restored_marker marker; /* from restore, while replicas consume it */
	bool have_marker;
	size_t marker_pending;        /* replicas that have not looked at it yet */
	struct db_status stat;        /* replicas/nreplicas unused here */
	struct snap_share share;      /* see snapshot.c */

	/* monitor only */
	struct db_conns conns;
	bool open;
	bool removed;                 /* its file was removed while open, and is not back (monitor) */
	bool side_known;              /* side_dev/side_ino hold the -wal and -shm our connections use */
	int64_t locked_since;         /* monotonic: first failed open on another process's lock, 0 none */
	bool locked_warned;
	char open_why[320];           /* the failure to open last said (monitor_open_failed), "" none */
	bool gone_said;               /* "the local history was deleted" said, not yet mended */
	dev_t side_dev[2];
	ino_t side_ino[2];
	bool continuous;              /* the read hold has not lapsed since the last sync */
	bool gave_up_hold;            /* copies failed too long: the hold is let go after each
					 (monitor_give_up_hold); cleared when one works */
	bool copy_behind;             /* the last copy failed: the WAL holds frames the shadow
					 lacks, which the hold keeps (db_hold_rotate's keep_wal) */
	struct shadow sh;
	int wal_fd;
	int64_t last_ckpt_mono;
	bool ckpt_done;               /* a full checkpoint was done at ckpt_done_index */
	uint64_t ckpt_done_epoch;     /* ... in this generation (gen_epoch) */
	uint32_t ckpt_done_index;
	uint64_t ckpt_done_frames;    /* ... when the index held this many frames */
	uint32_t seen_index;          /* index and frames at the previous pass: the WAL's growth */
	uint64_t seen_frames;
	int64_t last_cleanup_mono;
	int64_t db_mtime_ns;          /* the database file's mtime at the previous pass */
	int64_t follow_until;         /* another process checkpoints: look often until then (mono ns) */
	int64_t follow_step_ms;       /* ... this often, growing */
	uint32_t follow_backfilled;   /* the WAL's end when following last ran a pass */
	struct commit_anchor commits; /* where SQLite's commit count last matched ours */
	int64_t unproven_mono;        /* since when sh.unproven waits for monitor_check_commits, 0 none */
	char sync_why[256];           /* why the last copy into the shadow failed */
	char start_err_logged[96];    /* the shadow_start failure last logged, its err_key ("" none) */
	char gen_owed[256];           /* a new generation the state directory refused: its reason
				       * ("" none), the first one; monitor_copy_wal starts it before
				       * copying anything */
	int64_t gen_owed_mono;        /* when monitor_start_generation last tried it */
	uint64_t urgent_seq;          /* mu: a final flush wants the passes before sync_seq
				       * reaches this: an owed generation is tried in each */
	int64_t start_err_mono;       /* when */
	char sync_logged[256];        /* ... as last logged, and when */
	int64_t sync_logged_mono;

	/*
	 * The database id (layout.h: what our generations' labels name), ""
	 * until known: read from the local state by the monitor when it opens
	 * the database, else chosen by the first replica that needs it
	 * (replica_database_id). mu; id_mu serialises choosing and writing it,
	 * and writing and clearing the refusal record (replica_look.c, replica_older.c).
	 */
	char dbid[LAYOUT_DBID_LEN + 1];
	pthread_mutex_t id_mu;

	struct eng_replica *replicas;
	size_t nreplicas;
};

struct engine {
	const struct config *cfg;
	struct eng_db *dbs;
	size_t ndbs;
	/* atomic: threads of every database read them, each under its own db's mu */
	atomic_bool stop;             /* set once by engine_free, then each db woken */
	_Atomic uint64_t flush_seq;   /* current flush request, one per engine_flush */
	/*
	 * The furthest WAL offset a segment may end at: UINT32_MAX, since the
	 * format names offsets in 8 hex digits (Litestream parses no more).
	 * LITEVISOR_TEST_MAX_WAL_OFFSET lowers it, so tests can pass it without
	 * writing 4 GiB.
	 */
	uint64_t max_offset;
	bool started;
};

/* engine.c */
/* How long engine_lock waits for another process to let go of a state directory. */
#define ENG_LOCK_WAIT_MS 3000
/*
 * Take d's state directory for this process unless held already
 * (statelock.h). 0: held, or its directory does not exist yet; 1: another
 * process holds it (holder: who, or ""); -1: error (logged).
 */
int eng_take_state(struct eng_db *d, char *holder, size_t holderlen);

/* replica.c */
void *replica_thread(void *arg);
/*
 * Per-call options for r's storage calls: no deadline (the client's idle
 * timeout ends a silent request), except in a final flush, which gets what
 * is left of its deadline.
 */
void replica_call_for(struct eng_replica *r, struct st_call *call, bool flush);
/*
 * Mark r's generation closed at `at`, r's position once the final flush
 * reached it (layout.h), so another node that restores it may continue it.
 * Call with r->closed already set, without mu, from r's own thread: between
 * two of its uploads, so that no segment lands after the mark. Returns 0 or
 * -1 (logged).
 */
int replica_close(struct eng_replica *r, const struct wal_pos *at);

/*
 * Does r hold target (and, whole, owe no snapshot either)? mu held.
 */
bool replica_holds(const struct eng_replica *r, const struct wal_pos *target, bool whole);
/*
 * Size of shadow file (gen, index) of d, or -1 if absent (gen copied under
 * mu: the monitor may move on). Any thread.
 */
int64_t replica_shadow_size(const struct eng_db *d, const char *gen, uint32_t index);

/* replica_older.c (what only the replica files share: replica_older_int.h) */
/*
 * Before d's threads start: count the replicas holding this node's closed
 * record, and under newest-wins those the restored marker names
 * (localstate.h). None of d's replicas writes anything until each of them
 * has looked at its replica once (or REPLICA_OLDER_WAIT_MS passed): a
 * replica that finds the database older than its data stops it
 * (monitor_request_stop_older) before another, which holds only this
 * node's history, writes a new generation from it (QA21) or goes on in
 * the restored one (QA87 F3).
 */
void replica_count_closed_records(struct eng_db *d);
/*
 * The replicas may look now (the first position published, a resume
 * proven): REPLICA_OLDER_WAIT_MS count from here, not from the engine's
 * start, which a long first copy would have used up. Once; mu held.
 */
void replica_older_clock_start(struct eng_db *d);

/* replica.c */
/* May r's replicas look and write at d's position? (ready, no resume pending) mu held. */
static inline bool replica_pos_ready(const struct eng_db *d)
{
	return d->ready && !d->resume_pending;
}
/*
 * d's database id into id[33], choosing it first if d has none yet: adopt
 * (a label found on the generation d continues, or NULL/""), else a new
 * random one; a chosen one is written to the local state (a failure there
 * is logged: it is chosen again after a restart, the same way). Replica
 * thread, mu not held. Returns 0, or -1 (no random bytes: logged).
 */
int replica_database_id(struct eng_db *d, const char *adopt, char id[LAYOUT_DBID_LEN + 1]);
/*
 * Put our label into generation gen of r's replica unless r put it or found
 * it there already in this process (labelled_gen): at most one PUT per
 * generation. Replica thread, mu not held. Returns 0 or a negative
 * st_status with err set.
 */
int replica_label(struct eng_replica *r, const char *gen, const struct st_call *call,
		  struct st_error *err);
/*
 * Log a failure of r and count it in r's status (takes mu; failrec_note).
 * Said at WARN once per failure of an outage, again every five minutes with
 * how long it lasts, at debug in between; "the same" masks the numbers and
 * temporary names that change from one try to the next.
 */
void replica_note_error(struct eng_replica *r, const char *what, const char *msg);
/*
 * Under mu: r succeeded; end its outage, if any. Returns 0 when none was
 * under way, else its mono start, for replica_outage_over.
 */
int64_t replica_end_outage(struct eng_replica *r);
/*
 * mu not held, after replica_end_outage: drop r's failure record (a restart
 * would count it failing) and log the end of the outage it returned, if any.
 */
void replica_outage_over(struct eng_replica *r, int64_t since);

/*
 * r will not write into gen (the database's current generation) any more:
 * ask the monitor for a new one, which every replica then takes a snapshot
 * of; r waits for it. Takes d->mu.
 */
void replica_leave_generation(struct eng_replica *r, const char *gen, const char *why);
/* Compress plain into one LZ4 frame (of the given block mode) stored at key. Returns 0 or a negative st_status. */
int replica_put_lz4(struct eng_replica *r, const char *key, const struct st_source *plain,
		    enum lz4_blocks blocks, const struct st_call *call, uint64_t *plain_bytes,
		    struct st_error *err);
/* A rewindable source over [start, end) of a file, read with pread (fd stays the caller's). */
struct range_src {
	int fd;
	uint64_t start, pos, end;
};
void range_src_init(struct st_source *src, struct range_src *r, int fd, uint64_t start,
		    uint64_t end);

/*
 * Ship everything the shadow holds past r's position (the target of now).
 * Returns 0 (done, or nothing more possible: r->need_snapshot may now be
 * set), or -1 (noted).
 */
int replica_ship(struct eng_replica *r, bool flush);

/*
 * snapshot.c: snapshot the database into r's replica, named by the current
 * shadow index, and restart r's position there. The WAL its bytes may
 * reach is shipped to r first: a snapshot is never on a replica before the
 * segments that make it consistent. Returns 0 or -1 (noted).
 */
int snapshot_take(struct eng_replica *r, bool flush);
/*
 * Drop the shared snapshot if no replica still needs it, or it is stale
 * (under mu). Returns its descriptor for the caller to close once mu is
 * released (freeing a large file may take a while), or -1.
 */
int snapshot_share_settle(struct eng_db *d);
/* Close it whatever the state (engine teardown, no other thread running). */
void snapshot_share_close(struct eng_db *d);
/* r's kept snapshot file (eng_replica.kept): let it go (r's thread, or teardown). */
void snapshot_kept_release(struct eng_replica *r);
/* ... if the database has left its generation or WAL index (r's thread, each sync). */
void snapshot_kept_check(struct eng_replica *r);
/*
 * The position every replica should reach (the monitor's), under mu. An
 * offset past e->max_offset reads as max_offset: never wrapped to a smaller one.
 */
void replica_target(struct eng_db *d, struct wal_pos *pos);
/*
 * Seconds since the oldest commit r lacks (0 if none), under mu: past its
 * position in the shadow; while copying into the shadow fails, at least the
 * time since it first failed; with its backlog dropped, at least since the
 * oldest commit it lacked then; after a restart while it failed, at least
 * since the oldest commit it lacked before (carried). Never negative.
 */
double replica_lag_seconds(const struct eng_db *d, const struct eng_replica *r, int64_t now);

/*
 * Under mu, once r's position moved (a segment shipped, a snapshot stored):
 * past behind_until, the lag ring holds every commit it still lacks, and
 * behind_since_mono no longer counts (snapshot.c, snapshot_done).
 */
void replica_lag_caught_up(struct eng_replica *r);

/*
 * retention.c: apply the replica's retention; *need_snapshot when the current
 * generation has no snapshot younger than retention (the caller takes it at a
 * new index). Returns 0, or -1 (logged).
 */
int retention_enforce(struct eng_replica *r, bool *need_snapshot);

/*
 * Another writer (writers.c). writers_prime: the generations a replica holds
 * when this process starts writing it are no news (called with the first
 * listing). writers_check: list the generations again; one that appeared
 * since and that this process did not write means another process writes
 * this database to this replica (a second node in a network partition, a
 * second task): logged once as an error and shown in the replica's status.
 * The same look checks that what this process wrote of the current
 * generation is still there: its newest snapshot, and the segments written
 * since the last look (writers_note_segment); a replica that lost them gets a
 * new generation. A listing that fails is tried again next time. Replica
 * thread, mu not held.
 */
void writers_prime(struct eng_replica *r, char (*ids)[17], size_t n);
void writers_check(struct eng_replica *r);
/* The server took segment (gen, index, offset): the next writers_check looks for it. Replica thread. */
void writers_note_segment(struct eng_replica *r, const char *gen, uint32_t index, uint32_t offset);
/* Note gen as written by this process. Under d->mu (the monitor, on a new generation). */
void writers_note_own(struct eng_db *d, const char *gen);

/* monitor.c: the database's thread; ask it for a checkpoint into a new index (under mu). */
void *monitor_thread(void *arg);
void monitor_request_checkpoint(struct eng_db *d);
/*
 * The same, and the new index must not wait for the app's next write: once
 * the WAL is fully backfilled the monitor truncates it (an oversize index,
 * whose replicas can ship nothing until then). Under mu.
 */
void monitor_request_restart(struct eng_db *d);
/*
 * A replica found another node's history in generation gen (lineage.h): ask
 * for a new generation, once, if gen is still the current one (under mu).
 */
void monitor_request_generation(struct eng_db *d, const char *gen, const char *why);
/*
 * A replica found the database older than what it holds of its generation
 * (another node continued it since; replica_older.c): stop replicating this
 * database for the rest of the process, state "stopped: …", so no replica
 * starts a generation that would hide the newer data. Under mu.
 */
void monitor_request_stop_older(struct eng_db *d);
/* Wake every replica thread of d (under mu). */
void monitor_wake_replicas(struct eng_db *d);

/* backlog.c: shadow cleanup and the backlog cap (monitor thread). */
void backlog_cleanup(struct eng_db *d);

/*
 * failrec.c: a replica's failure record (localstate.h), so a replica still
 * failing after a restart keeps the start of its failure and a lag from the
 * oldest commit it lacked before (eng_replica.carried).
 * failrec_note: after r's failure was counted (first: it began a run of
 * failures); writes the record then, and again if r is first found lacking
 * a commit while the record says it lacked none. failrec_clear: r synced;
 * removes the record. Both on r's thread, without mu (they take rec_mu); a
 * write that fails is logged, and tried again at the next failure.
 * failrec_load: in engine_new, before any thread: reads d's records (wall
 * times, clamped to now and converted to monotonic); removes, with a log
 * line, garbage ones and those of replicas no longer configured.
 */
void failrec_note(struct eng_replica *r, bool first);
void failrec_clear(struct eng_replica *r);
void failrec_load(struct eng_db *d);

/*
 * engine_flush, without mu: the final flush gave up on r (flush_failed_ns).
 * That is a failure even if none of r's requests had ended in one yet (a
 * server that accepts and never answers fails a request only after its
 * retries, about half a minute): it is recorded with the oldest commit r
 * lacks, so a restart sooner goes on counting both.
 */
void failrec_note_flush_failed(struct eng_replica *r);

#endif
