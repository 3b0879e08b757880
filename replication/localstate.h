/*
 * localstate.h — litevisor's own files beside a database.
 *
 * The state directory is the db's `meta-path`, by default
 * <dir>/.<file>-litevisor/ (not Litestream's .<file>-litestream, so both tools
 * can be tried side by side). It holds:
 *
 *   generation                    current generation name + "\n"
 *   database-id                   this database's id (32 hex digits) + "\n":
 *                                 what the label of each generation it
 *                                 writes names (layout.h); written by the
 *                                 engine when it chooses one, and by a
 *                                 restore with the label of the generation
 *                                 it restored
 *   previous                      "gen index offset\n": where the file stood
 *                                 in the generation it last left for a new
 *                                 one (localstate_write_previous)
 *   earlier                       the "previous" records before it, and the
 *                                 generations a restore ranked below the one
 *                                 it restored, newest first
 *                                 (localstate_read_earlier)
 *   generations/<gen>/wal/<%08x>.wal
 *                                 shadow WALs: for each index, a byte-exact
 *                                 prefix of the real -wal file of that WAL
 *                                 session (offsets match the real WAL), grown
 *                                 only by whole transactions
 *   generations/<gen>/index       the index the shadow entered last ("%08x\n"):
 *                                 the position when that index has no file
 *                                 yet (nothing committed since a restore, or
 *                                 since a checkpoint whose older files were
 *                                 shipped and removed)
 *   restored                      written by restore, read by the engine on
 *                                 start: the position the database was
 *                                 restored to and the replicas that hold
 *                                 exactly that position, so replication
 *                                 continues the generation there
 *                                 (localstate_next_index) instead of
 *                                 starting a new one
 *   closed-<%08x xxh32 of a replica's name>
 *                                 "gen index offset location\n": this node
 *                                 marked gen closed at (index, offset) in
 *                                 the replica's storage at location (its
 *                                 location, storage.h, no credentials) when it
 *                                 last stopped (localstate_write_closed);
 *                                 records before 2026-12 have no location
 *   refused                       "dev ino born why\n": replication refused
 *                                 this file as older than a replica's data
 *                                 (localstate_write_refused); born: its
 *                                 birth time "b<s>.<ns>", or "-"; records
 *                                 before 2026-12-06 have none: "dev ino why"
 *   failing-<%08x xxh32 of a replica's name>
 *                                 "failing-since behind-since name\n": that
 *                                 replica fails since then (wall ns), and
 *                                 lacks commits since then (0: none known);
 *                                 kept while it fails, so a restart
 *                                 (clean or not) carries its failure and
 *                                 lag over (localstate_write_failure)
 *
 * Every file is written atomically (common/fsutil.h) and created with the
 * database's owner so an app running as another user is never locked out.
 */
#ifndef LITEVISOR_LOCALSTATE_H
#define LITEVISOR_LOCALSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/config.h"
#include "replication/status.h"
#include "replication/wal.h"

#define LOCALSTATE_MAX_REPLICAS 32

/*
 * The database's files as the record of a clean stop (<state>/clean, "gen
 * index shadow-size " then this) keeps them: the database file's device,
 * inode, size and mtime, the -wal's size and header. Into buf. 0, or -1 when
 * the database cannot be stat'ed.
 */
int localstate_files_line(const char *dbpath, char *buf, size_t len);

/*
 * Did nothing touch the database's files since the clean stop recorded in
 * statedir (its "clean" file)? False when there is no such record.
 */
bool localstate_clean_unchanged(const char *statedir, const char *dbpath);

/* The state directory of db (its physical path: symlinks resolved) into buf. Returns buf. */
char *localstate_dir(const struct cfg_db *db, char *buf, size_t len);

/*
 * Litestream v0.3's state directory of db into buf: where a node migrating
 * from Litestream keeps its position. Its default <dir>/.<file>-litestream,
 * or, with meta-path set (the same litestream.yml), that directory, which
 * litevisor then shares with it (localstate_dir). Returns buf.
 */
char *localstate_litestream_dir(const struct cfg_db *db, char *buf, size_t len);

/*
 * Create the state directory if missing, owned like the database file (or,
 * if it does not exist yet, like its directory). Returns 0 or -1 (errno set;
 * the caller logs).
 */
int localstate_ensure(const struct cfg_db *db, const char *dir);

/* Owner to give files created beside db (from the db file, else its directory). */
void localstate_owner(const struct cfg_db *db, uid_t *uid, gid_t *gid);

/* Read the current generation into gen[17]. 0, or -1 (errno ENOENT: none). */
int localstate_read_generation(const char *dir, char gen[17]);

/*
 * The clean-stop record (<dir>/clean, written by the monitor at a clean stop:
 * "gen index shadow-size dev ino db-size db-mtime wal-size wal-header"):
 * the device and inode of the database file it was written for. 0, or -1
 * (no record, or unreadable).
 */
int localstate_clean_file_id(const char *dir, dev_t *dev, ino_t *ino);
int localstate_write_generation(const char *dir, const char *gen, uid_t uid, gid_t gid);

/*
 * The "previous" record: where this node's file stood in the generation it
 * left when it started another one ("gen index offset\n": the end of its
 * shadow there). A restart whose closed record does not apply (the replica
 * respelled or moved) still tells from it that another node went on in that
 * generation: a replica holding it past that end. "gen index offset open\n"
 * (open): a restore's, of a generation no node had closed there (its node
 * killed, or alive and writing on: a handover-wait that ran out): that
 * generation ending there is this node's past whatever the times, but going
 * on past it is no proof of writing after this node (replica_history.c,
 * replica_history_continued_since). read: 0, or -1 (ENOENT: none; EINVAL: corrupt); open
 * may be NULL.
 */
int localstate_write_previous(const char *dir, const struct wal_pos *end, bool open, uid_t uid,
			      gid_t gid);
int localstate_read_previous(const char *dir, struct wal_pos *end, bool *open);

/*
 * The "previous" record a restore writes (" restored" after it): the file
 * was restored to end, the newest there was, the restore having weighed
 * every generation then listed, ties to the second included. Replication
 * then counts another generation as written after it only when it holds an
 * object strictly later, as after a restored marker (QA99 D1, D2).
 * read_previous_by: restored (may be NULL) tells which kind it is.
 */
int localstate_write_restored_previous(const char *dir, const struct wal_pos *end, bool open,
				       uid_t uid, gid_t gid);
int localstate_read_previous_by(const char *dir, struct wal_pos *end, bool *open, bool *restored);

/*
 * The "earlier" record: the "previous" records this file had before its
 * current one, newest first, one line each in the same form, at most
 * LOCALSTATE_EARLIER_MAX: the generations it descends from beyond the one
 * it left last. Writing a "previous" record moves the one it replaces there
 * first (a crash between the two leaves it in both). A chain of forks
 * within one whole second (S3 keeps no more) made the generation two back
 * read as another node's going on, the file being its descendant (QA101
 * D2): each is this file's own past unless a replica holds it past where
 * the file stood there, as for "previous". A restore adds the generations
 * it weighed and ranked below the one it restored, at their ends then
 * (localstate_add_earlier): older, unless a replica holds one past that.
 * read: how many records it put in
 * at[] and open[] (up to max; a malformed line ends the list; none: 0).
 */
#define LOCALSTATE_EARLIER_MAX 8
size_t localstate_read_earlier(const char *dir, struct wal_pos *at, bool *open, size_t max);

/*
 * Put a record first in "earlier" (the oldest beyond LOCALSTATE_EARLIER_MAX
 * goes): also a restore's, for a generation it weighed and ranked below the
 * one it restored, where that one ended then (restore_records.c, note_weighed). 0 or
 * -1 (errno set).
 */
int localstate_add_earlier(const char *dir, const struct wal_pos *at, bool open, uid_t uid,
			   gid_t gid);

/*
 * The "aside" record, in the same form: where this node's file stood, in
 * its own generation, when a restore moved it aside for another one (open:
 * not closed there as the replicas showed it). That generation is the
 * restored file's past, as the one a "previous" record names: a replica
 * holding it newer than its own copy of the restored generation (this
 * node's fork, which the restore ranked older) is not another node going
 * on, unless it holds it past there (QA95 D1, D3).
 */
int localstate_write_aside(const char *dir, const struct wal_pos *end, bool open, uid_t uid,
			   gid_t gid);
int localstate_read_aside(const char *dir, struct wal_pos *end, bool *open);

/*
 * Read the database id into id[33]. 0, or -1 (errno ENOENT: none; EINVAL:
 * not an id). write: 0 or -1.
 */
int localstate_read_database_id(const char *dir, char id[33]);
int localstate_write_database_id(const char *dir, const char *id, uid_t uid, gid_t gid);

/* The highest index with a shadow WAL file in gen into *index. false if none. */
bool localstate_last_shadow(const char *dir, const char *gen, uint32_t *index);

/*
 * Is name (an entry of a state directory) one of the files and directories
 * listed above, or the temporary file one of them is written through? What
 * else a state directory may hold (a volume's lost+found, a user's files,
 * another database's meta-path, the lock file, old copies) is not the state.
 */
bool localstate_is_own_entry(const char *name);

/* Path of a shadow WAL file. Returns buf. */
char *localstate_shadow_path(const char *dir, const char *gen, uint32_t index, char *buf,
			     size_t len);

/* The WAL header a shadow WAL file starts with. 0, or -1 (no such file, or too short). */
int localstate_shadow_header(const char *dir, const char *gen, uint32_t index,
			     uint8_t hdr[WAL_HEADER_SIZE]);

/*
 * The local position: the current generation, its highest shadow WAL index
 * and that file's size; when the index record is newer than every file, the
 * end of the index before it if the record knows it, else (record, 0). 0, or -1 (errno ENOENT: no state). The layout is Litestream
 * v0.3's too (without the record), so this reads its state directory as well.
 */
int localstate_position(const char *dir, struct wal_pos *pos);

/*
 * The index record (generations/<gen>/index): the index the shadow entered
 * last, and what it knew of the index before it, which a restart needs
 * when the files of both are gone (a restore's position; shipped and
 * removed) or were never made:
 *   prev_end   where the previous index ended (its committed size), so a
 *              replica ending there continues at (index, 0) without a
 *              snapshot; -1 unknown
 *   prev_hdr   the previous WAL session's header when that session is
 *              finished but still the real WAL's (a checkpoint or TRUNCATE
 *              and no write since): its frames are not copied again
 * One line: "%08x %08x <64 hex>
", "-" for an unknown field (an index alone
 * is also read).
 */
struct index_record {
	uint32_t index;
	int64_t prev_end;
	bool have_prev_hdr;
	uint8_t prev_hdr[WAL_HEADER_SIZE];
};

/* Write the record of gen. 0 or -1. */
int localstate_write_index(const char *dir, const char *gen, const struct index_record *rec,
			   uid_t uid, gid_t gid);

/* Read the record of gen. 0, or -1 (absent or unreadable). */
int localstate_read_index(const char *dir, const char *gen, struct index_record *rec);

struct restored_marker {
	struct wal_pos pos;                  /* position the database was restored to */
	char replicas[LOCALSTATE_MAX_REPLICAS][64]; /* names holding exactly pos */
	size_t nreplicas;
};

/*
 * The WAL index replication continues at after a restore to pos: the next
 * one, unless the restore ended on a snapshot with no WAL after it (offset
 * 0). That index then holds no segment yet and must not be skipped: a
 * restore needs every index from its snapshot's on (Litestream's too).
 */
static inline uint32_t localstate_next_index(const struct wal_pos *pos)
{
	return pos->offset == 0 ? pos->index : pos->index + 1;
}

/* Write / read / remove the "restored" marker. read: 0, or -1 (ENOENT: none; EINVAL: corrupt). */
int localstate_write_restored(const char *dir, const struct restored_marker *m, uid_t uid,
			      gid_t gid);
int localstate_read_restored(const char *dir, struct restored_marker *m);
int localstate_clear_restored(const char *dir);

/*
 * The refusal record (<state>/refused, "dev ino born why\n"): replication
 * stopped this database as older than a replica's data
 * (replica_older_refuse). Read back at every later start while the database file is
 * the same one (device, inode, and birth time where the filesystem keeps
 * one: not another file given the freed inode number, QA87 F7): its state
 * may have moved on meanwhile (a new local generation, never written
 * anywhere), and the file is no newer for that (QA86 D2). A restore moves
 * the state directory aside, and the record with it; replication writing
 * the file to a replica (keep-local, or a replica emptied) removes it.
 * read: 0 with why set, or -1 (ENOENT: none; ESTALE: another file is there
 * now; EINVAL: corrupt).
 */
int localstate_write_refused(const char *dir, const char *dbpath, const char *why, uid_t uid,
			     gid_t gid);
int localstate_read_refused(const char *dir, const char *dbpath, char *why, size_t len);
/* Remove the refusal record (replication writes this file to a replica again). 0, or -1. */
int localstate_clear_refused(const char *dir);

/*
 * The closed record of replica `replica`: written once this node's closed
 * mark is on that replica (replica_close), removed when the engine writes
 * there again. A restart that finds the record but not the mark knows
 * another node reopened the generation since (it restored it and deletes
 * the marks before writing): continuing it here would write a second
 * history under the same object names.
 *
 * The record names the location it was written to (location: the storage's
 * location, storage.h, never a credential): a replica's name stays when its
 * url changes (a file replica is named "file" whatever its directory), and a
 * mark written elsewhere says nothing of what this location holds. read
 * returns it only for the same location or its alias (the spelling an
 * earlier version wrote: the storage's description), or when it names none
 * (written by an older version: taken as this location's, as before). With
 * no record under this name, one written under another name for this very
 * location (the replica renamed in the config) is taken over: renamed to
 * this name's and returned. read: 0, or -1 (ENOENT: none; EXDEV: written
 * for another location; EINVAL: corrupt). clear: 0, or -1.
 */
int localstate_write_closed(const char *dir, const char *replica, const char *location,
			    const struct wal_pos *at, uid_t uid, gid_t gid);
int localstate_read_closed(const char *dir, const char *replica, const char *location,
			   const char *alias, struct wal_pos *at);
int localstate_clear_closed(const char *dir, const char *replica);


/*
 * The failure record of replica `replica` (the engine files it under the
 * replica's location, failrec.c): written when it starts failing
 * (and once more when it is first found lacking a commit meanwhile),
 * removed when it succeeds again; never at each sync. A restart reads it
 * back so the replica's failure keeps its start and its lag the oldest
 * commit it lacked (failrec.c). Times are wall ns since the
 * epoch: the monotonic clock does not survive a reboot.
 */
struct failure_record {
	int64_t failing_since_ns;  /* first failure of the run of failures (> 0) */
	int64_t behind_since_ns;   /* the oldest commit it lacked, 0 if it lacked none then */
};

/* Write / remove the record. 0, or -1 (errno set; clear: a missing record is 0). */
int localstate_write_failure(const char *dir, const char *replica,
			     const struct failure_record *rec, uid_t uid, gid_t gid);
int localstate_clear_failure(const char *dir, const char *replica);
/*
 * Read the record. 0, or -1: errno ENOENT (none), EINVAL (garbage, or
 * written for another name with the same hash: the caller ignores it).
 */
int localstate_read_failure(const char *dir, const char *replica, struct failure_record *rec);
/*
 * Remove the failure records of replicas not among names[0..n) (a replica
 * removed from the config, or renamed). Returns how many it removed.
 */
int localstate_prune_failures(const char *dir, const char *const *names, size_t n);

#endif
