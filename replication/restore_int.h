/*
 * restore_int.h — what the restore_*.c files share (not for other modules).
 *
 *   restore.c         the restore session: probe, decide, apply with
 *                     fallback; the entry points (run, `litevisor restore`)
 *   restore_existing.c  (an existing local database against the replicas)
 *   restore_records.c   (the marker and records a restore writes; the
 *                        move-aside callbacks)
 *   restore_target.c    (the target's directory; the apply options)
 *   restore_probe.c   probe every candidate in parallel under a deadline
 *   restore_plan.c    from one replica's catalog: the generation, snapshot
 *                     and segments a restore would use
 *   restore_choose.c  rank the candidates; the decision log block
 *   restore_apply.c   download, verify, apply, checkpoint, rename into place
 *   restore_db.c        (its temp database: WAL applied, finished, installed)
 *   restore_lock.c      (one restore per target; restore_abort/abandon)
 *   restore_local.c   an existing local database: compare, move aside
 *
 * A candidate is one replica of the database (restore-only ones included).
 * The probe fills its catalog and plan; choose orders the candidates and
 * says why; apply tries them in that order.
 */
#ifndef LITEVISOR_RESTORE_INT_H
#define LITEVISOR_RESTORE_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "replication/catalog.h"
#include "replication/localstate.h"
#include "replication/restore.h"

/*
 * A service waits for the restore: a transfer stalled for this long (under
 * 1 KiB/s) fails at once (st_call.stall_s) when another candidate can take
 * over, instead of waiting out (and retrying) the 30 s window that suits
 * uploads to a busy server. From the last candidate it is resumed instead
 * (rs_apply_opts.last_candidate).
 */
#define RS_STALL_S 10

/* What the restore aims for: the end of the newest generation, or a point in time. */
struct rs_target {
	const char *generation;  /* NULL: newest */
	const char *exclude;     /* a generation never picked as the newest (run: the local
				    file's, which its own state ranks below another): NULL */
	bool has_index;
	uint32_t index;
	int64_t timestamp_ns;    /* 0: none */
	int64_t skew_ns;         /* one replica's generations whose newest objects are closer
				    than this cannot be told apart by time (a replica copied
				    object by object gives all the copy's): RS_COPY_TIE_NS */
	/*
	 * Set by rs_plans_whole_second_cut only: the listing of one generation
	 * on a replica keeping finer times, and the timestamp the cut moved
	 * timestamp_ns back from (the server's time). A segment of that
	 * generation stamped after timestamp_ns still applies when finer holds
	 * it, the same size, stored by finer_ts (see there). NULL: none.
	 */
	const struct cat_generation *finer;
	int64_t finer_ts;
};

/*
 * One server's clock orders its own objects; what it cannot order is a copy
 * (cp -r, an S3 sync or mc mirror), which gives every object the copy's
 * time, all within a second or so. Generations of one replica whose newest
 * objects lie closer than this are tied. Not restore.clock-skew: that is
 * for two servers' clocks, and two writers one after the other (a node
 * taking over within seconds) are seconds apart on one clock, not tied.
 */
#define RS_COPY_TIE_NS (1000LL * 1000 * 1000)

static inline bool rs_target_pit(const struct rs_target *t)
{
	return t->has_index || t->timestamp_ns > 0;
}

/* The objects of one generation a restore applies, in order. */
struct rs_plan {
	char generation[LAYOUT_GEN_LEN + 1];
	struct cat_snapshot snapshot;
	struct cat_segment *segments;  /* malloc'd, sorted by (index, offset) */
	size_t nsegments;
	uint64_t bytes;                /* compressed bytes to download */
	int64_t newest_ns;             /* newest object time in the generation (with
					  -timestamp, at or before it: rs_gen_time_at) */
	int64_t oldest_ns;             /* oldest object time in the generation */
	struct wal_pos end;            /* position after applying it all */
	bool end_open;                 /* end.offset is where the last segment starts: its
					  length is unknown until it is measured or applied */
	bool truncated;                /* a gap: applying will fail at it (missing segment) */
	char note[160];                /* where the gap is, or "" */
	char ignored[160];             /* an object the plan leaves out as inconsistent, or "" */
	size_t ntied;                  /* other generations of this replica its time cannot be
					  told from (RS_COPY_TIE_NS); the pick among them is
					  rs_plan_build's rule, an ambiguous order */
	char tied[4 * (LAYOUT_GEN_LEN + 1)]; /* the first three of them, comma-separated */
	char database_id[LAYOUT_DBID_LEN + 1]; /* its generation's label (catalog.h), "" none */
	/*
	 * No plan (rs_plan_build 0 or -1) because the generation newest for the
	 * target cannot serve it (an -index past its end; written at -timestamp
	 * without a snapshot by then): its id and time (rs_gen_time_at), so
	 * that another replica's older generation does not win instead. "" none.
	 */
	char blocked[LAYOUT_GEN_LEN + 1];
	int64_t blocked_ns;
};

void rs_plan_release(struct rs_plan *p);

enum rs_state {
	RC_PENDING = 0, /* probe did not finish before the deadline */
	RC_OK,          /* answered; has_data says whether it holds a usable plan */
	RC_ERROR,       /* answered with an error, or could not be opened */
};

/* The local state's records of its file's past (struct rs_local_past) */
#define RS_PAST_MAX (2 + LOCALSTATE_EARLIER_MAX)

struct rs_cand {
	const struct cfg_replica *rep;
	char name[64];                 /* a copy: an abandoned probe may outlive the config */
	struct storage *st;            /* owned; NULL if it could not be opened or timed out */
	struct st_op_stats *carried;   /* where its calls are counted when it is released
					  (opstats.h), or NULL */
	enum rs_state state;
	bool timed_out;                /* the decision did not wait for its probe */
	bool no_answer;                /* its probe failed at its own deadline */
	bool unfinished;               /* answered, then did not finish its listings in time
					  (or they timed out): alive and may hold the newest data */
	bool net_fail;                 /* its last probe failed without an HTTP answer */
	bool measure_failed;           /* answered, then its last segment could not be read: */
	struct wal_pos lower;          /* where that segment starts (it holds at least this) */
	bool measure_answered;         /* ... the server answered that read (corrupt, refused) */
	bool measure_corrupt;          /* ... and it failed for good (st_status ST_PERMANENT:
					  the object is corrupt, or the replica's disk failed) */
	bool foreign_form;             /* its last segment is in another form than its age:
					  settings read (st_error.foreign_form): they changed */
	bool end_by_mark;              /* ... and its end was taken from this node's closed
					  mark instead (measure_one) */
	int64_t own_end_ns;            /* the local file's generation here: the time of this
					  node's closed mark of it, listed (its last clean
					  stop); with no closed record for this candidate at
					  all (killed), its newest object; else 0
					  (rs_local_past) */
	bool own_killed;               /* own_end_ns is the newest object's */
	struct wal_pos past_end[RS_PAST_MAX]; /* where the generation of the local state's
						 record k (rs_local_past.past[k]) ends here,
						 measured */
	bool past_known[RS_PAST_MAX];  /* ... when it holds it and that was measured */
	char error[600];
	int64_t rtt_us;                /* first request's round trip */
	int64_t probe_ms;              /* whole probe */
	struct cat_generation *gens;   /* every generation it holds (owned) */
	size_t ngens;
	bool has_data;                 /* a plan matching the target */
	int64_t cut_ns;                /* -timestamp its objects are read up to when the
					  whole-second cut applies to it (its plan's, or with no
					  plan its listing's: rs_plans_whole_second_cut), else
					  0: the target's */
	struct rs_plan plan;
	char nodata[512];              /* why no plan, when answered without data */

	/* filled by choose */
	int rank;                      /* 0 = winner, 1.. order to try; -1 = not usable */
	bool fallback_ok;              /* holds the same data as the winner */
	char verdict[600];
};

struct rs_probe_opts {
	int64_t probe_timeout_ms;
	enum restore_mode mode;
	int quorum;
	int64_t wait_timeout_ms;
	const struct rs_target *target;
	/*
	 * The local database's state directory when it exists, else NULL. A
	 * candidate whose last segment is in another form than its age:
	 * settings read (encryption turned on or off, keys rotated) ends, for
	 * rs_measure_ends, where this node's closed record for it says this
	 * node stopped writing it, if its listing is closed right there: no one
	 * wrote it since. Otherwise it cannot be measured (RC_ERROR).
	 */
	const char *statedir;
};

/*
 * Probe the n candidates (whose rep/name/st are set) in parallel and wait
 * as the mode says. A candidate that does not finish in time is left
 * RC_PENDING with timed_out set; its thread finishes on its own and frees
 * what it holds (including its storage: c->st is then NULL).
 */
void rs_probe_all(struct rs_cand *c, size_t n, const struct rs_probe_opts *o);

/*
 * Measure the last segment of the probed candidates whose end is open and
 * must be known exactly: all of them when `all` (a dry run prints them, a
 * local database is compared with them), else those sharing their
 * generation with another candidate with data (they are ranked by it).
 * A candidate alone in its generation needs no measuring: its end is only
 * compared with itself, and applying its plan finds it. Downloads in
 * parallel, each under the probe's wait timeout; a candidate whose segment
 * cannot be read becomes RC_ERROR (but see o->statedir).
 */
void rs_measure_ends(struct rs_cand *c, size_t n, bool all, const struct rs_probe_opts *o);

/*
 * Where generation gen ends on candidate c (a probed one: its catalog is
 * loaded), as replication measures it (catalog_end_position: its last
 * segment downloaded; a placeholder ends where its index starts), within
 * timeout_ms. 0 with *end; -1 (err set) when c does not hold gen or the
 * download fails.
 */
int rs_gen_end(struct rs_cand *c, const char *gen, int64_t timeout_ms, struct wal_pos *end,
	       char *err, size_t errlen);

/*
 * Where index of generation gen ends on candidate c (a probed one: its
 * catalog is loaded): its last segment is downloaded and measured, within
 * timeout_ms. 0 with *end; -1 when c holds no segment of that index or the
 * download fails (err says which).
 */
int rs_index_end(struct rs_cand *c, const char *gen, uint32_t index, int64_t timeout_ms,
		 uint64_t *end, char *err, size_t errlen);

/*
 * Does candidate c's index `index` of generation gen continue the local
 * session in statedir (lineage.h)? An enum lineage, or -1 with why set when
 * c could not be read within timeout_ms.
 */
int rs_lineage(struct rs_cand *c, const char *gen, uint32_t index, const char *statedir,
	       int64_t timeout_ms, char *why, size_t len);

/* Release what a candidate holds (catalog, plan, storage). */
void rs_cand_release(struct rs_cand *c);

/*
 * A generation's time on our clock: its newest object, or with ts (a
 * -timestamp, the server's time as Litestream reads it) its newest object at
 * or before ts (0 if none).
 */
int64_t rs_gen_time_at(const struct cat_generation *g, int64_t ts);

/*
 * Order two generations by time (>0: a is newer): catalog_gen_order, or with
 * ts first by rs_gen_time_at, then the one that started later (two writers
 * taking turns on one replica leave windows that overlap: the one newest
 * overall need not be the one written at ts; QA58, QA65).
 */
int rs_gen_order_at(const struct cat_generation *a, const struct cat_generation *b, int64_t ts);

/*
 * Build the plan for target from a replica's catalog: pick the generation
 * (target->generation, else the newest by object time among those that
 * cover the target time), the snapshot and the segments. Returns 1 with
 * *p filled, 0 when nothing matches (why in nodata), -1 on a user error
 * (index past the end: message in nodata), -2 when the replica's newest
 * data cannot be restored (a newer generation without a snapshot: the
 * replica is failing, not empty or stale; message in nodata). A -timestamp
 * whose snapshot retention removed is 0: gone for good, with the reason.
 */
int rs_plan_build(const struct cat_generation *gens, size_t ngens, const struct rs_target *t,
		  struct rs_plan *p, char *nodata, size_t len);

/*
 * -timestamp over replicas whose clocks differ in grain (QA122 D1). A
 * whole-second server (most S3) stamps an object up to a second before it
 * was stored: alone, its plan takes in the objects of the timestamp's own
 * second, as Litestream does, some of them written after it. Beside a
 * candidate that answered with finer times (a file replica), which cuts
 * exactly there, that candidate "held more" and won: the restore brought
 * back commits made after the timestamp. The plan of a candidate whose
 * every time is a whole second is built again on only what was surely
 * stored by the timestamp when a candidate that answered with finer times
 * has a plan in its generation at the timestamp, or stored some of that
 * generation by it (QA155 D2): objects stamped a whole second before it or
 * earlier, and the segments of the timestamp's second that the finer one
 * holds under the same name and size, stored by the timestamp (QA159 D4).
 * Returns how many were.
 */
size_t rs_plans_whole_second_cut(struct rs_cand *c, size_t n, const struct rs_target *t);

/* Where the local file stood in a generation of its past; open: not closed there. */
struct rs_past {
	struct wal_pos at;             /* at.generation "": no record */
	bool open;
};

/*
 * What this node's own state says of its file's past (localstate.h): the
 * file is in generation current; past[0] is its "previous" record (the
 * generation it left for current), past[1] its "aside" record (a restore
 * moved its file aside from that generation), past[2...] its "earlier"
 * records (the generations it left before; "" after the last one).
 * rs_choose orders each of
 * those against current as replication's refusal rules read the records
 * (replica_history.c): the past one is newer exactly when a candidate holds it past
 * where the file stood (another node went on in it; for one left open, the
 * times decide then), else it is this file's own past. And a generation
 * written after this node's last clean stop of current, or after its last
 * object when this node was killed in it (rs_cand.own_end_ns), on the same
 * server is newer, the same whole second counting.
 */
struct rs_local_past {
	char current[LAYOUT_GEN_LEN + 1];
	struct wal_pos local;          /* where the file stands in current */
	struct rs_past past[RS_PAST_MAX];
};

/* How a record of rs_local_past.past[k] came to be, for the log: "left", ... */
const char *rs_past_how(size_t k);

struct rs_choice {
	int winner;                    /* index into the candidates, or -1 */
	size_t answered, unreachable, with_data;
	size_t unfinished;             /* of the unreachable: answered, listings not finished */
	size_t corrupt;                /* of the unreachable: answered, their last segment
					  could not be read for good (measure_corrupt) */
	size_t data_failing;           /* of the unreachable: listed data, then reading their
					  last segment failed (measure_failed): they hold data,
					  so nothing is "empty" while one does */
	char generation[LAYOUT_GEN_LEN + 1];
	bool ambiguous;                /* generations within the clock-skew margin */
	int blocked;                   /* a candidate whose newer generation cannot serve the
					  target (rs_plan.blocked): no winner; or -1 */
	char why[1024];
	char by_record[400];           /* why, when the local database's own state (its records,
					  its closed mark: rs_local_past) ordered the winner
					  against the local file's generation, or that one
					  (the winner) against another candidate's */
	char local_newer[LAYOUT_GEN_LEN + 1]; /* the winner's generation, when that state ranks
					  it above the local file's (by_record says why):
					  rs_replica_newer follows it; else "" */
};

/*
 * Rank the candidates (fills rank, fallback_ok, verdict) and out.
 * skew_ms: clock-skew margin; ts: the -timestamp (server time), 0 none;
 * past: the local database's record (struct rs_local_past), NULL if none.
 * need: the answers the mode needs before it settles (0 for
 * freshest-reachable); short of them the winner is still ranked, but
 * out->why says it is not used. Logs nothing: see rs_log_decision().
 */
void rs_choose(struct rs_cand *c, size_t n, int64_t skew_ms, int64_t ts,
	       const struct rs_local_past *past, const char *dbname, const char *mode, size_t need,
	       struct rs_choice *out);

/*
 * A generation some candidate lists, which the candidates' own orders rank
 * below the local file's generation (it is no candidate's plan), but which
 * the local database's own state ranks above it as replication reads that
 * state (struct rs_local_past: a generation written on a server in the
 * whole second of this node's last object there, QA95 D1), and which a
 * candidate can restore: replication would refuse the local file for it.
 * Into gen (why set), or false.
 */
bool rs_local_newer(const struct rs_cand *c, size_t n, const struct rs_local_past *past,
		    char gen[LAYOUT_GEN_LEN + 1], char *why, size_t len);

/*
 * How the local database's own state ranks generation gen against the
 * local file's (struct rs_local_past): >0 above it, <0 below (the file's own
 * past), 0 it does not tell.
 */
int rs_local_order(const struct rs_cand *c, size_t n, const struct rs_local_past *past,
		   const char *gen);

/*
 * Does generation gen rank above the local file's: the local state ranks it
 * above (rs_local_order > 0), or a server holding it and such a generation
 * orders it later by its one clock (another node went on from there, in a
 * generation of its own)? What a supersede restores must (QA104 D3: the
 * newest of the others by time across servers was an older fork).
 */
bool rs_local_outranked_by(const struct rs_cand *c, size_t n, const struct rs_local_past *past,
			   const char *gen);

/* Log rs_choose's decision block under component "restore": a header, one line per candidate, the result. */
void rs_log_decision(const struct rs_cand *c, size_t n, const struct rs_choice *out,
		     int64_t skew_ms, const char *dbname, const char *mode);

/* Print the decision as a table on stdout (dry run). */
void rs_print_decision(const struct rs_cand *c, size_t n, const struct rs_choice *ch,
		       const char *output);

struct rs_apply_opts {
	const char *target;            /* final path; must not exist */
	/*
	 * no other candidate holds this data: a stalled download is resumed
	 * (retried from where it stands, as a cut connection is) instead of
	 * failing at once (RS_STALL_S), which would end the whole restore
	 */
	bool last_candidate;
	int parallelism;
	enum restore_verify verify;
	uid_t uid;                     /* owner to give the file (-1: leave) */
	gid_t gid;
	mode_t mode;
	/*
	 * called after verification, just before the rename, with the verified
	 * temp file (e.g. check it, then move the old file aside); 0; -1 with
	 * why set when the data will not do (the replica's fault: another
	 * candidate with the same data may); -2 with why set for a local failure
	 */
	int (*before_rename)(void *ctx, const char *tmp, char *why, size_t len);
	/* called when the rename (or its directory's fsync) failed after before_rename
	 * returned 0: undo what it did (the restored file is already gone) */
	void (*rename_failed)(void *ctx);
	void *before_ctx;
};

/* Whose fault a failed restore is: whether another candidate, or a later try, can help. */
enum rs_cause {
	RS_CAUSE_REPLICA = 0,  /* the replica's data: corrupt, missing, refused */
	RS_CAUSE_NETWORK,      /* the transfer: another candidate or a later try may do */
	RS_CAUSE_LOCAL,        /* our side: disk full, read-only, I/O error, memory */
};

/*
 * Restore cand's plan into opts->target: temp file beside it, verified,
 * checkpointed into one file, renamed into place. On failure nothing is
 * left at the target (or beside it), err says why and *cause whose fault
 * it is. Returns 0 or -1.
 */
int rs_apply(struct rs_cand *c, const struct rs_apply_opts *opts, struct wal_pos *restored,
	     char *err, size_t errlen, enum rs_cause *cause);

/* The temp file name used beside target (buf of PATH_MAX). */
char *rs_temp_path(const char *target, char *buf, size_t len);

/* Owner and mode for the restored file from the config (user/group) or the directory. */
void rs_owner_for(const struct config *cfg, const char *target, uid_t *uid, gid_t *gid,
		  mode_t *mode);

/* restore_local.c: move -wal/-shm/-journal beside a missing target aside. 0 or -1. */
int rs_move_strays(const char *target);

/*
 * An empty file at target (0 bytes, and no -wal with frames beside it: what
 * `sqlite3 app.db .tables` or a touch leaves) holds no data: it is moved
 * aside so the restore runs as for a missing database. 1 moved, 0 not
 * such a file, -1 error (logged).
 */
int rs_move_empty_aside(const char *target);

/*
 * Is there something at path that is no database file and could not become
 * one: a directory, a FIFO or device, a symlink to nothing (SQLite would
 * create its target, litevisor would replace the link)? True with why set
 * ("… is a directory, not a database"); false when path is absent or leads
 * to a regular file.
 */
bool rs_no_db_file_at(const char *path, char *why, size_t len);

/*
 * Move a state directory aside (if present); *moved (may be NULL) gets where
 * its state went, or "". 0 or -1.
 */
int rs_move_state_aside(const char *statedir, const char *why, char *moved, size_t mlen);

/*
 * Checkpoint the existing database at target whole into its file and empty
 * its WAL (TRUNCATE): what a restore leaves, a single file. Fails rather than
 * wait when another process holds the database. 0, or -1 with err set.
 */
int rs_checkpoint_whole(const char *target, char *err, size_t len);

/*
 * Move an existing database, its -wal/-shm and its state directory (may be
 * NULL) aside; *moved gets the database's new name, *smoved where its state
 * went. 0 or -1 (logged, errno set).
 */
int rs_move_local_aside(const char *target, const char *statedir, char *moved, size_t mlen,
			char *smoved, size_t slen);

/*
 * Undo rs_move_local_aside once the restored file could not take the
 * target's place: the database (from moved, with its -wal/-shm) and its
 * state (from smoved) back where they were, each step logged. Empty or NULL
 * moved/smoved: nothing of that to put back.
 */
void rs_put_local_back(const char *target, const char *moved, const char *statedir,
		       const char *smoved, const char *why);

/*
 * Keep only the newest `keep` moved-aside copies of target (with their
 * -wal/-shm) and of its state directory statedir (may be NULL); keep 0
 * deletes nothing and warns when copies pile up. just_moved and
 * state_moved (may be NULL or ""): the copies of the database and of its
 * state this restore made, kept first whatever the clock said. Best effort
 * (logged).
 */
void rs_prune_aside(const char *target, const char *statedir, int keep, const char *just_moved,
		    const char *state_moved);

/*
 * Before the local database is replaced by a replica's (run, newest-wins):
 * is the restored file (complete, not yet in place) the same database, or
 * another one whose history sits at this replica's location (a path copied
 * from another job's config, two databases' paths swapped)? 1 the same as
 * far as can be told: every table of the local one is in it (a migration
 * adds tables), they being at least three or half of its, or neither of the
 * following; 0 another database, why says how they differ (their
 * application_ids differ, or they share fewer than half the tables of the
 * one with more); -1 one of them could not be read (why). A local database
 * without tables tells nothing: 1. other_id: the restored file's generation
 * is labelled with another database id than the local database's
 * (layout.h): another database, 0, whatever the tables (two instances of
 * one app have the same).
 */
int rs_same_database(const char *local, const char *restored, const char *other_id, char *why,
		     size_t len);

/*
 * The local position from the state dir (shadow WAL, else the restored
 * marker) and its time (*mtime_ns: the shadow WAL's, else the marker's; 0
 * unknown). *state_ns: when the state was last written, the newest of that
 * and of the generation, restored and clean records (a state a restore just
 * wrote has no shadow WAL yet, and is still newer than a Litestream state
 * beside it from before that restore). NULL: not wanted.
 */
int rs_local_position(const char *statedir, struct wal_pos *pos, int64_t *mtime_ns,
		      int64_t *state_ns);

/* mtime of a file in ns, 0 if absent. */
int64_t rs_file_mtime_ns(const char *path);

/* "gen/0000000a/00001f40" style text of a position into buf. */
char *rs_pos_text(const struct wal_pos *p, char *buf, size_t len);

/* ---- restore.c: the restore session ------------------------------------- */

/*
 * The end of a record's generation on one replica, measured by downloading
 * its last segment (rs_gen_end), kept for the session's later probes (a
 * handover wait probes every second): the same last object (key, size,
 * time) ends at the same place.
 */
#define END_MEMO_MAX 32
struct end_memo {
	char replica[64];
	char generation[LAYOUT_GEN_LEN + 1];
	struct cat_segment last; /* the generation's last segment, or its snapshot's index alone */
	struct wal_pos end;
};

/*
 * One restore of one database (restore.c): its config, its candidates and
 * the decision over them, and what the local database's state says.
 */
struct session {
	const struct config *cfg;
	const struct cfg_db *db;
	const char *dbname;
	/*
	 * The candidates: the one thing a session owns (session_release).
	 * session_again copies everything else; an owned field added here
	 * must be handled in both.
	 */
	struct rs_cand *c;
	size_t n;
	struct rs_target t;
	struct rs_choice ch;
	bool quiet;  /* re-probes of a handover wait: their decision blocks are not logged */
	int64_t any_age_ms; /* > 0: the handover wait is for any open generation, this long at
			     * least (restore_db_for_run) */
	const char *statedir; /* the local database's state, when it exists (rs_probe_opts) */
	struct rs_local_past past; /* its records, when its state is litevisor's */
	char superseded[400];      /* why that state ranks another generation above the local
				      file's: the newest of the others is restored (t.exclude) */
	char only_gen[LAYOUT_GEN_LEN + 1]; /* t.generation of a probe again for the winner's
					      generation alone (more_elsewhere) */
	struct end_memo memo[END_MEMO_MAX]; /* record generations' ends measured (past_end_of) */
	size_t nmemo;
	const struct rs_cand *applying; /* the candidate apply_with_fallback is restoring */
	/* the database id the state directory moved aside for a restore named ("" none),
	 * and the generation it recorded ("" none): rs_note_state_id, for
	 * rs_write_database_id when the restored generation has no label */
	char kept_id[LAYOUT_DBID_LEN + 1];
	char kept_gen[LAYOUT_GEN_LEN + 1];
};

/*
 * Set res's outcome and its message (printf format). The message is what
 * the caller reports; nothing is logged here.
 */
void rs_result_set(struct restore_result *res, enum restore_outcome o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* How long a download made while probing may take (as rs_measure_ends allows), in ms. */
int64_t rs_probe_wait_ms(const struct config *cfg);

/* ---- restore_existing.c: an existing local database against the replicas -- */

/*
 * Fill each candidate's own_end_ns, own_killed, past_end and past_known
 * from the session's records (s->past) and this node's closed records, as
 * rs_choose weighs them. Generation ends measured are kept in s->memo (a
 * handover wait's later probes reuse them); one that cannot be measured
 * leaves past_known false.
 */
void rs_note_own_marks(struct session *s);

/*
 * Does the winner (s->ch.winner, which must be >= 0) hold newer data than
 * the local database at lpos, written at lt_ns, whose state is in lsdir (""
 * if none)? why (len bytes) says how that was read either way; *at_next is
 * set when the winner's only news is a snapshot at the next index taken
 * where the local database ends (then false). May download a segment
 * (rs_index_end, rs_lineage) to tell.
 */
bool rs_replica_newer(const struct session *s, const struct wal_pos *lpos, int64_t lt_ns,
		      const char *lsdir, bool *at_next, char *why, size_t len);

/*
 * Where the existing database db stands: litevisor's state in statedir or
 * Litestream's, whichever was written last (from, PATH_MAX bytes, gets that
 * directory), else *lpos zeroed (generation "", from "") and *lt the file's
 * last write. Never fails: what cannot be read is logged and compared by time.
 */
void rs_existing_position(const struct cfg_db *db, const char *statedir, struct wal_pos *lpos,
			  int64_t *lt, char from[PATH_MAX]);

/* ---- restore_records.c: what a restore writes into the new state ---------- */

/* Does a candidate that answered hold a closed mark of pos's generation at pos? */
bool rs_closed_somewhere(const struct session *s, const struct wal_pos *pos);

/*
 * After a restore to pos: the database id, the "earlier" records, and the
 * "restored" marker when replication may continue the restored generation
 * (else its "previous" record). Each failure is logged, never fatal. True
 * when the marker was written (replication continues the generation),
 * false when it starts a new one.
 */
bool rs_write_marker(struct session *s, const struct wal_pos *pos);

/*
 * After a restore to pos at the database's own path (its old state directory
 * moved aside): the id the restored generation is labelled with into the new
 * one. For a generation with no label (Litestream's), the id the replicas'
 * other labels name, or s->kept_id where they confirm it, as
 * docs/replication.md ("Database id") states the rule; else none (logged).
 * Failures are logged, never fatal.
 */
void rs_write_database_id(struct session *s, const struct wal_pos *pos);

/*
 * Before the state directory at statedir goes aside for a restore: its
 * database id and recorded generation into s->kept_id, s->kept_gen ("" for
 * none), for rs_write_database_id.
 */
void rs_note_state_id(struct session *s, const char *statedir);

/*
 * The before_ctx of rs_move_local_cb / rs_put_local_back_cb: the local
 * database and its state, where they are moved (moved, smoved: buffers the
 * caller owns, "" until moved), and the session whose winner is restored.
 */
struct rs_aside_ctx {
	const char *target, *statedir;
	char *moved, *smoved;
	size_t mlen, slen;
	const struct session *s;
	const struct wal_pos *lpos; /* the local database's position */
	const char *from;           /* the state it came from (rs_existing_position) */
	bool wrote_aside;           /* the new state's "aside" record (note_set_aside) */
};

/*
 * rs_apply_opts.before_rename (p: struct rs_aside_ctx): the restored file at
 * tmp must be this database (rs_same_database); then the local database and
 * its state go aside and the new state's "aside" record is written. 0; -1
 * with why set when the restored file is another database's; -2 with why
 * set when a local step failed.
 */
int rs_move_local_cb(void *p, const char *tmp, char *why, size_t len);

/* rs_apply_opts.rename_failed (p: struct rs_aside_ctx): the "aside" record gone, the local database back. */
void rs_put_local_back_cb(void *p);

/* ---- restore_target.c: the target's directory ---------------------------- */

/* ao for a restore into target: owner, mode (rs_owner_for), verify, parallelism (0: config's, else 8). */
void rs_apply_opts_init(struct rs_apply_opts *ao, const struct config *cfg, const char *target,
			int parallelism);

/*
 * Can target's directory be made? A parent that is a file (-o afile/x.db) is
 * an error naming it, found before anything is probed or written. 0, or -1
 * with res set (RESTORE_FAILED).
 */
int rs_check_parent(const char *target, struct restore_result *res);

/*
 * Create the directories that will hold ao->target, owned and with modes as
 * the restored file's directory would be. made_top gets the first directory
 * created ("" if none) for rs_undo_parent, also on failure. 0, or -1 with
 * res set (RESTORE_FAILED).
 */
int rs_ensure_parent(const struct rs_apply_opts *ao, struct restore_result *res,
		     char made_top[PATH_MAX]);

/* Remove what rs_ensure_parent made for target, deepest first, up to made_top (rmdir only; logged). */
void rs_undo_parent(const char *target, const char *made_top);

/*
 * A first deploy that starts empty: make the database's directory as a
 * restore would (rs_ensure_parent), for a service that cannot. Failure is
 * only logged.
 */
void rs_parent_for_service(const struct config *cfg, const char *path);

#endif
