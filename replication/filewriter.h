/*
 * filewriter.h — write a stream to a file from a second thread.
 *
 * A restore decompresses on one core while the kernel copies the result into
 * the page cache on the other: the producer fills fixed buffers (a bounded
 * ring, so memory stays flat whatever the file size) and a writer thread
 * write(2)s them in order, starting the disk's writeback every
 * writeback_step bytes. With flush_step, a third thread also fdatasync(2)s
 * the file every flush_step bytes, without holding the writer up, so the
 * final fsync finds little left to do: starting writeback is not enough
 * where a flush has work of its own (on a VM it makes the host write its
 * cache: 500 MB written at download speed still took 0.25 s to fsync).
 *
 * The producer either writes through the sink (a copy into the ring) or
 * fills ring buffers in place with fw_reserve()/fw_commit() (no copy). An
 * optional inspect() callback sees every buffer, in order, on the writer
 * thread just before it is written (a restore hashes the file there).
 *
 * Single producer. After fw_finish() the fd holds exactly the bytes written
 * (and no blocks allocated past them),
 * or fw_finish() reports the first write error (errno), which also makes
 * every later write through the sink fail so a doomed download stops early;
 * a failed flush counts as a failed write (the kernel reports a writeback
 * error to one flush per open file only, so it must not be dropped here).
 * The fd stays the caller's: it is never closed here, and the caller's own
 * fsync is still needed once fw_finish() returns.
 */
#ifndef LITEVISOR_FILEWRITER_H
#define LITEVISOR_FILEWRITER_H

#include <stddef.h>
#include <stdint.h>

#include "replication/storage.h"

struct fwriter;

struct fw_opts {
	size_t nbufs, bufsize;   /* the ring: nbufs >= 2 buffers of bufsize bytes */
	uint64_t writeback_step; /* start writeback every this many bytes; 0 = the kernel's choice */
	uint64_t flush_step;     /* fdatasync every this many bytes, from another thread; 0 = never */
	/*
	 * Allocate the file's blocks this many bytes at a time ahead of the
	 * writes (fallocate, keeping the size): the page-cache writes then skip
	 * the file system's delayed-allocation work (ext4: 35-40 ms of CPU less
	 * per 500 MB here, a third of the writes' own), CPU a restore shares
	 * with the server it downloads from. Best effort: a file system without
	 * it, or one with less than two steps free besides prealloc_reserve, is
	 * left to the writes (blocks allocated ahead, or held by a failed
	 * fallocate until it is undone, are room other files' writes lack
	 * meanwhile). What lies past the end is freed by fw_finish(). 0 = never.
	 */
	uint64_t prealloc_step;
	uint64_t prealloc_reserve; /* bytes other files on that file system need meanwhile */
	int (*flush)(int fd);    /* the flush: NULL = fdatasync (tests count or fail it) */
	void (*inspect)(void *ctx, const void *buf, size_t len); /* optional, writer thread */
	void *inspect_ctx;
};

/*
 * Start a writer for fd. Sets *sink (if not NULL) to a sink that copies
 * into the ring (blocking while the writer is behind).
 * Returns the writer, or NULL (errno: EINVAL, ENOMEM, or pthread_create's error).
 */
struct fwriter *fw_start(int fd, const struct fw_opts *o, struct st_sink *sink);

/*
 * Lend the free part of the current ring buffer (blocking until one is free):
 * *cap is its room (> 0). NULL, errno set, once a write has failed.
 * Idempotent until fw_commit().
 */
unsigned char *fw_reserve(struct fwriter *w, size_t *cap);

/* n bytes (<= the room fw_reserve gave) of the lent buffer are filled. 0, or -1 (errno). */
int fw_commit(struct fwriter *w, size_t n);

/*
 * Hand over the last partial buffer, wait until everything is written, stop
 * the thread, free the blocks allocated past the end (prealloc_step).
 * Returns 0, or -1 with errno set to the first write's error (or that freeing's).
 */
int fw_finish(struct fwriter *w);

/* errno of the first failed write so far, or 0 (any thread). */
int fw_error(struct fwriter *w);

/* Bytes accepted through the sink so far. */
uint64_t fw_bytes(const struct fwriter *w);

/* Stop the thread if fw_finish was not called (discarding what is queued), free. NULL ok. */
void fw_free(struct fwriter *w);

#endif
