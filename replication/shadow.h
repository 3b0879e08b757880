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
 * position), else -1. 0 or -1 (logged).
 */
int shadow_start(struct shadow *s, const char *gen, uint32_t index, int64_t prev_end);

/* Remove the current index's file if it is unproven (nothing of it was published). */
void shadow_drop_unproven(struct shadow *s);

/* Close the current index (complete) and move to index+1 with no file yet. */
void shadow_next_index(struct shadow *s);

/*
 * Copy newly committed frames of the real WAL (fd wal) into the shadow.
 * *grew gets the bytes appended. On SHADOW_NEW_SESSION nothing is copied:
 * call shadow_next_index() (or start a new generation) and sync again.
 */
enum shadow_result shadow_sync(struct shadow *s, int wal, uint64_t *grew, char *why,
			       size_t whylen);

/* Delete this generation's shadow files with an index below min. */
void shadow_remove_below(struct shadow *s, uint32_t min);

/* Lowest index with a shadow file in the current generation (s->index if none). */
uint32_t shadow_lowest_index(const struct shadow *s);

/* Size of shadow file index of the current generation, -1 if absent. */
int64_t shadow_file_size(const struct shadow *s, uint32_t index);

void shadow_close(struct shadow *s);

#endif
