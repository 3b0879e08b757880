/*
 * fsutil.h — durable, atomic file operations.
 *
 * Everything litevisor writes that must survive a crash goes temp → fsync →
 * rename → fsync(dir), so a reader sees the old content or the new, never a
 * torn file (style.md §6). Ownership matters because litevisor often runs as
 * root beside an app that does not: callers pass the uid/gid to give new
 * files and directories (-1 = leave as created).
 */
#ifndef LITEVISOR_FSUTIL_H
#define LITEVISOR_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/*
 * pwrite(2) all len bytes at off, resuming after a short write (a full disk
 * first writes what fits, then fails with ENOSPC). Returns 0 or -1 (errno
 * set; never a stale errno after a short write).
 */
int fs_pwrite_all(int fd, const void *buf, size_t len, off_t off);

/* fsync the directory at path. Returns 0 or -1 (errno set). */
int fs_fsync_dir(const char *path);

/* fsync the directory holding path (its dirname). Returns 0 or -1. */
int fs_fsync_parent(const char *path);

/*
 * Create path and missing parents with mode, chowning each directory it
 * creates to uid/gid (-1: leave). Existing directories are left alone.
 * Returns 0 or -1 (errno set).
 */
int fs_mkdir_p(const char *path, mode_t mode, uid_t uid, gid_t gid);
/*
 * As fs_mkdir_p for base/rel, making only the directories rel names, never
 * base itself: one removed since it was locked is not made again, unlocked
 * (ENOENT). An empty rel is EINVAL.
 */
int fs_mkdir_below(const char *base, const char *rel, mode_t mode, uid_t uid, gid_t gid);

/*
 * Atomically replace path with len bytes of data: write <path>.tmp, fsync,
 * chown/chmod, rename, fsync the directory. Returns 0 or -1 (errno set; the
 * old file is untouched and the temp file removed).
 */
int fs_write_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid,
		    gid_t gid);

/* The process's umask, read without changing it (umask(2) would race with other threads). */
mode_t fs_umask(void);

/*
 * Read a whole small file (at most max bytes) into a NUL-terminated malloc'd
 * buffer. Returns 0, or -1 (errno set; ENOENT if absent, EFBIG if larger).
 */
int fs_read_small(const char *path, size_t max, char **out, size_t *len);

/*
 * Read at most len - 1 bytes of the file at path into buf, NUL-terminated,
 * in one read (a /proc file: what the kernel gives at once). The length, or
 * -1 when it cannot be opened or read, or is empty.
 */
ssize_t fs_read_text(const char *path, char *buf, size_t len);

/*
 * Open path read-only (close-on-exec, symlinks followed), refusing anything
 * but a regular file. open(2) never waits: a FIFO with no writer or a
 * terminal would otherwise block the caller for good (O_NONBLOCK, cleared
 * again on the regular file). Returns the descriptor, or -1 with why
 * written ("not a regular file but a FIFO (named pipe)", or strerror).
 */
int fs_open_regular(const char *path, char *why, size_t whylen);

/*
 * Move path aside to "<path>.<tag>-<UTC timestamp>" (keeping it, never
 * deleting), fsyncing the directory. *moved_to gets the new name
 * (malloc'd; may be NULL). Returns 0, or -1 (errno set). ENOENT if absent.
 * When the directory's fsync fails the move is taken back (-1, the fsync's
 * errno); only if that rename fails too is the move kept (0).
 */
int fs_move_aside(const char *path, const char *tag, char **moved_to);

/*
 * A read-write file in dir that has no name (O_TMPFILE; where the filesystem
 * has none, a mkostemp file "<dir>/<prefix>XXXXXX" unlinked at once), so
 * nothing is left behind whatever happens to the process. Returns the
 * descriptor (close-on-exec), or -1 (errno set).
 */
int fs_open_unnamed(const char *dir, const char *prefix);

/*
 * Remove path and, if it is a directory, everything under it (symbolic
 * links are removed, never followed). Returns 0 (also when absent) or -1
 * (errno set; what could be removed is gone).
 */
int fs_remove_tree(const char *path);

#endif
