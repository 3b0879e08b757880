/*
 * shadow.h — the shadow WAL: litevisor's local copy of every committed frame.
 *
 * For each WAL index of the current generation there is one file,
 * <state>/generations/<gen>/wal/<%08x>.wal, a byte-exact prefix of the real
 * -wal file of that WAL session (so offsets, and thus segment names, are the
 * ones Litestream uses). It grows only by whole transactions (up to the last
 * commit frame), each frame validated (salts, checksum chain) with
 * wal_reader; the running checksum at its end is kept so a sync never
 * rescans. An index's file is created only once its session has a committed
 * frame, so "index N with no file yet" is a normal state (offset 0).
 *
 * shadow_sync() compares the real WAL with the shadow and reports what it
 * found; the caller (engine) decides between "next index" and "new
 * generation" because only it knows whether its read hold was continuous.
 *
 * Owned by one thread (the database's monitor). Replica threads only read the
 * files, up to sizes the monitor publishes.
 */
#ifndef LITEVISOR_SHADOW_H
#define LITEVISOR_SHADOW_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "replication/wal.h"

struct shadow {
	char dir[PATH_MAX];          /* state directory */
	char err[PATH_MAX + 128];    /* why the last shadow_start() failed */
	char err_key[96];            /* the same without names: its step and errno */
	char gen[17];                /* "" before a generation exists */
	uint32_t index;              /* current index */
	int fd;                      /* current index's file, -1 while none */
	uint64_t size;               /* its length (ends on a commit frame) */
	uint8_t hdr_raw[WAL_HEADER_SIZE]; /* its WAL header (valid when fd >= 0) */
	struct wal_header hdr;
	uint32_t s1, s2;             /* running checksum at size */
	uint8_t last_fh[WAL_FRAME_HEADER_SIZE]; /* header of the last frame (size > 32) */
	bool have_prev;              /* prev_hdr holds the previous index's header */
	uint8_t prev_hdr[WAL_HEADER_SIZE];
	uint32_t commit_pages;       /* database size in pages at the last commit copied */
	uint64_t commits;            /* commit frames copied since shadow_init(), every index */
	/*
	 * The current index's session follows the previous one with salt-1 more
	 * than one ahead. Each restart adds one, but so does each TRUNCATE
	 * checkpoint of an already empty WAL: either sessions were never copied,
	 * or the app truncated an empty WAL. The caller decides (commits.h)
	 * before anything of this index is published; why says what was seen.
	 */
	bool unproven;
	char unproven_why[96];
	int64_t prev_end;            /* where index-1 ended (its committed size), -1 unknown */
	/*
	 * The current index's frames up to here (bytes) are, as a look at
	 * SQLite's WAL index proved, the ones it publishes (shadow_note_index).
	 * Past it: frames copied before their commit was published. Most often
	 * a commit that SQLite publishes a moment later (after its fsync). But a
	 * writer killed between its fsync and the index update leaves frames
	 * that validate, commit flag and all, which SQLite never counts while
	 * any connection keeps the -shm (ours do): the next writer starts at the
	 * index's last frame and writes over them, or a checkpoint backfills up
	 * to it and the next write restarts the WAL. Those are still shipped,
	 * because when every connection closes first, the next opener's recovery
	 * counts them (a durable commit). So the caller must notice when they are
	 * dropped: written over (shadow_note_index says SHADOW_BROKEN), or left
	 * behind by a restart or a truncation (shadow_unpublished() at the end of
	 * the session). Either way the replica holds a commit the database never
	 * got, from the first such frame on: a new generation.
	 */
	uint64_t published;
	struct shadow_look {          /* the last look at the WAL index, for shadow_sync */
		bool set;
		uint8_t salts[8];
		uint32_t frames;
	} look;
	uid_t uid;
	gid_t gid;
};

enum shadow_result {
	SHADOW_NONE = 0,      /* nothing new */
	SHADOW_GREW,          /* committed frames appended */
	SHADOW_NEW_SESSION,   /* the real WAL has a different header: a restart happened */
	SHADOW_BROKEN,        /* the real WAL no longer continues the shadow (why set) */
	SHADOW_ERROR,         /* local I/O error, nothing copied this time: the file is cut
			       * back to its size (why set, not logged) */
};

void shadow_init(struct shadow *s, const char *dir, uid_t uid, gid_t gid);

/*
 * Reopen the last index of generation gen from disk: validate it, cut any
 * torn or uncommitted tail. When the index record is newer than every file
 * (an index entered with nothing copied into it: after a restore, a
 * checkpoint), it resumes there with no file (s->fd < 0): nothing on disk
 * then proves the WAL did not change since, the caller must know it
 * otherwise (a clean stop's record of the files) or start a new generation.
 * Returns 0; -1 if the generation has neither (the caller starts a new one).
 */
int shadow_resume(struct shadow *s, const char *gen);

/*
 * Start generation gen at index (no file yet): make its directory, write the
 * generation file, remove every other generation's directory. prev_end:
 * where index-1 ended when the database continues it (a restore's
 * position), else -1. 0 or -1 with s->err (and s->err_key) set, not
 * logged: the caller retries at every pass and says it once (a full state
 * disk logged an ERROR each time, QA115 D5). A failed start leaves no
 * directory of gen behind.
 */
int shadow_start(struct shadow *s, const char *gen, uint32_t index, int64_t prev_end);

/* Remove the current index's file if it is unproven (nothing of it was published). */
void shadow_drop_unproven(struct shadow *s);

/* Close the current index (complete) and move to index+1 with no file yet. */
void shadow_next_index(struct shadow *s);

/*
 * Copy newly committed frames of the real WAL (fd wal) into the shadow.
 * *grew gets the bytes appended. On SHADOW_NEW_SESSION nothing is copied:
 * call shadow_next_index() (or start a new generation: see
 * shadow_unpublished()) and sync again. Frames it copies at positions the
 * last look (shadow_note_index) saw published are published: that look came
 * before this read, a published frame stays in place for as long as its
 * session does, and each frame's checksum covers every frame before it.
 */
enum shadow_result shadow_sync(struct shadow *s, int wal, uint64_t *grew, char *why,
			       size_t whylen);

/*
 * Tell the shadow what SQLite's WAL index publishes now (its header, read
 * through a connection of ours, consistent): the session with salts holds
 * frames 1..frames. Read before this call looks at the WAL file, since
 * SQLite writes a commit's frames before it publishes them. When salts are
 * the current index's session, the WAL file's header of frame
 * min(frames, the shadow's) is compared with the shadow's: the same, and
 * s->published moves there (the checksum in a frame header covers every
 * frame before it). Another one while the WAL's own header is still the
 * session's: SQLite published a frame written over one the shadow holds, so
 * the shadow holds frames the database dropped (a writer killed inside its
 * commit, then the next writer's): SHADOW_BROKEN, why set. Otherwise
 * SHADOW_NONE (a restart meanwhile: shadow_sync tells). No error is
 * returned: a failed read proves nothing and leaves published where it was.
 */
enum shadow_result shadow_note_index(struct shadow *s, int wal, const uint8_t salts[8],
				     uint32_t frames, char *why, size_t whylen);

/*
 * Does the current index hold frames no look saw published? At the end of
 * its session (SHADOW_NEW_SESSION, or a TRUNCATE of ours) such frames were
 * dropped: SQLite restarts the WAL only once it backfilled every frame it
 * published, and it cannot backfill a frame published after the read hold
 * began while the hold stays (slot 1..N: past its mark; slot 0: the
 * checkpoint's lock of slot 0 fails), and a look right after the hold began
 * saw every frame published before it (the caller's part). Only the first of
 * them can be where the history breaks.
 */
bool shadow_unpublished(const struct shadow *s);

/* Delete this generation's shadow files with an index below min. */
void shadow_remove_below(struct shadow *s, uint32_t min);

/* Lowest index with a shadow file in the current generation (s->index if none). */
uint32_t shadow_lowest_index(const struct shadow *s);

/* Size of shadow file index of the current generation, -1 if absent. */
int64_t shadow_file_size(const struct shadow *s, uint32_t index);

void shadow_close(struct shadow *s);

#endif
