/* test_filewriter.c — the restore's second-thread file writer: order, bytes, errors. */
#include "tests/unit/unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replication/filewriter.h"
#include "replication/xxh32.h"

static void hash_cb(void *ctx, const void *buf, size_t len)
{
	xxh32_update(ctx, buf, len);
}

static unsigned char *pattern(size_t n)
{
	unsigned char *p = malloc(n);
	uint32_t x = 7;
	for (size_t i = 0; i < n; i++) {
		x = x * 1664525u + 1013904223u;
		p[i] = (unsigned char)(x >> 24);
	}
	return p;
}

static unsigned char *slurp(const char *path, size_t *n)
{
	struct stat sb;
	CHECK_INT(stat(path, &sb), 0);
	unsigned char *b = malloc((size_t)sb.st_size + 1);
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_INT(read(fd, b, (size_t)sb.st_size), sb.st_size);
	close(fd);
	*n = (size_t)sb.st_size;
	return b;
}

/* Writes n bytes in pieces of `piece`, half through the sink, half in place. */
static void round_trip(size_t n, size_t piece, size_t nbufs, size_t bufsize, uint64_t step)
{
	char path[] = "/tmp/litevisor-fw-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	unsigned char *data = pattern(n);
	struct xxh32 h;
	xxh32_init(&h, 0);
	struct fw_opts o = { .nbufs = nbufs, .bufsize = bufsize, .writeback_step = step,
			     .inspect = hash_cb, .inspect_ctx = &h };
	struct st_sink sink;
	struct fwriter *w = fw_start(fd, &o, &sink);
	CHECK(w != NULL);
	size_t off = 0;
	for (int k = 0; off < n; k++) {
		size_t len = n - off < piece ? n - off : piece;
		if (k % 2 == 0) {
			CHECK_INT(sink.write(sink.ctx, data + off, len), 0);
			off += len;
			continue;
		}
		while (len > 0) { /* in place: as much as the lent room allows */
			size_t cap;
			unsigned char *dst = fw_reserve(w, &cap);
			CHECK(dst != NULL && cap > 0);
			size_t m = cap < len ? cap : len;
			memcpy(dst, data + off, m);
			CHECK_INT(fw_commit(w, m), 0);
			off += m;
			len -= m;
		}
	}
	CHECK_INT(fw_finish(w), 0);
	CHECK_INT(fw_bytes(w), n);
	CHECK_INT(fw_error(w), 0);
	fw_free(w);
	close(fd);
	size_t got;
	unsigned char *back = slurp(path, &got);
	CHECK_INT(got, n);
	CHECK_MEM(back, data, n);
	CHECK_INT(xxh32_digest(&h), xxh32(data, n, 0)); /* inspect saw every byte, in order */
	unlink(path);
	free(back);
	free(data);
}

TEST(writes_every_byte_in_order)
{
	round_trip(0, 1, 2, 16, 0);
	round_trip(1, 1, 2, 16, 0);
	round_trip(1000, 7, 2, 16, 0);
	round_trip(1000, 16, 3, 16, 64);
	round_trip((3u << 20) + 5, 65536 + 3, 2, 1u << 20, 1u << 20);
	round_trip((3u << 20) + 5, 1u << 20, 4, 65536, 0);
}

TEST(blocks_allocated_ahead_are_freed_past_the_end)
{
	/* 64 KiB ahead at a time, 100 KiB + 5 written: nothing allocated past the end after */
	char path[] = "/tmp/litevisor-fw-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	size_t n = (100u << 10) + 5;
	unsigned char *data = pattern(n);
	struct fw_opts o = { .nbufs = 2, .bufsize = 4096, .prealloc_step = 1u << 16 };
	struct st_sink sink;
	struct fwriter *w = fw_start(fd, &o, &sink);
	CHECK(w != NULL);
	CHECK_INT(sink.write(sink.ctx, data, n), 0);
	CHECK_INT(fw_finish(w), 0);
	fw_free(w);
	struct stat sb;
	CHECK_INT(fstat(fd, &sb), 0);
	CHECK_INT(sb.st_size, n);
	/* 4 KiB blocks, plus an indirect or extent block at most */
	CHECK((uint64_t)sb.st_blocks * 512 <= ((n + 4095) / 4096 + 1) * 4096);
	close(fd);
	size_t got;
	unsigned char *back = slurp(path, &got);
	CHECK_INT(got, n);
	CHECK_MEM(back, data, n);
	unlink(path);
	free(back);
	free(data);
}

TEST(commit_beyond_the_lent_room_is_refused)
{
	char path[] = "/tmp/litevisor-fw-XXXXXX";
	int fd = mkstemp(path);
	struct fw_opts o = { .nbufs = 2, .bufsize = 64 };
	struct fwriter *w = fw_start(fd, &o, NULL);
	CHECK(w != NULL);
	size_t cap;
	CHECK(fw_reserve(w, &cap) != NULL);
	CHECK_INT(cap, 64);
	CHECK_INT(fw_commit(w, 65), -1);
	CHECK_INT(errno, EINVAL);
	CHECK_INT(fw_finish(w), 0);
	fw_free(w);
	close(fd);
	unlink(path);
}

TEST(bad_options_are_refused)
{
	struct fw_opts o = { .nbufs = 1, .bufsize = 64 };
	CHECK(fw_start(1, &o, NULL) == NULL);
	CHECK_INT(errno, EINVAL);
	o = (struct fw_opts){ .nbufs = 2, .bufsize = 0 };
	CHECK(fw_start(1, &o, NULL) == NULL);
	fw_free(NULL);
}

TEST(a_full_disk_stops_the_producer_and_names_the_error)
{
	int fd = open("/dev/full", O_WRONLY);
	CHECK(fd >= 0);
	struct fw_opts o = { .nbufs = 2, .bufsize = 4096 };
	struct st_sink sink;
	struct fwriter *w = fw_start(fd, &o, &sink);
	CHECK(w != NULL);
	unsigned char buf[1000] = { 0 };
	int rc = 0;
	/* the first full buffer fails; within a few more the producer is told */
	for (int i = 0; i < 10000 && rc == 0; i++)
		rc = sink.write(sink.ctx, buf, sizeof(buf));
	CHECK_INT(rc, -1);
	CHECK_INT(errno, ENOSPC);
	CHECK_INT(fw_error(w), ENOSPC);
	size_t cap;
	CHECK(fw_reserve(w, &cap) == NULL);
	CHECK_INT(fw_finish(w), -1);
	CHECK_INT(errno, ENOSPC);
	fw_free(w);
	close(fd);
}

TEST(free_without_finish_discards_and_stops)
{
	char path[] = "/tmp/litevisor-fw-XXXXXX";
	int fd = mkstemp(path);
	struct fw_opts o = { .nbufs = 2, .bufsize = 16 };
	struct st_sink sink;
	struct fwriter *w = fw_start(fd, &o, &sink);
	CHECK(w != NULL);
	CHECK_INT(sink.write(sink.ctx, "0123456789abcdefXYZ", 19), 0);
	fw_free(w); /* joins the thread: no leak, no hang (ASan and the harness's timeout tell) */
	close(fd);
	unlink(path);
}

/* ---- the flusher ---- */

static atomic_int flushes, flushing, flush_errno;

/* A slow flush that records what it saw, or fails with flush_errno. */
static int fake_flush(int fd)
{
	(void)fd;
	atomic_fetch_add(&flushing, 1);
	usleep(20000);
	atomic_fetch_add(&flushes, 1);
	atomic_fetch_sub(&flushing, 1);
	if (atomic_load(&flush_errno)) {
		errno = atomic_load(&flush_errno);
		return -1;
	}
	return 0;
}

/* Writes n bytes of zeros through the sink; returns the sink's last result. */
static int pour(const struct st_sink *sink, size_t n)
{
	static const unsigned char zeros[4096];
	int rc = 0;
	for (size_t off = 0; off < n && rc == 0; off += sizeof(zeros))
		rc = sink->write(sink->ctx, zeros, sizeof(zeros));
	return rc;
}

/* A writer on a fresh temp file, flushing through fake_flush every `step` bytes (0: never). */
struct flush_fixture {
	char path[32];
	int fd;
	struct st_sink sink;
	struct fwriter *w;
};

static void flush_setup(struct flush_fixture *f, uint64_t step, int fail_errno)
{
	snprintf(f->path, sizeof(f->path), "/tmp/litevisor-fw-XXXXXX");
	f->fd = mkstemp(f->path);
	CHECK(f->fd >= 0);
	atomic_store(&flushes, 0);
	atomic_store(&flush_errno, fail_errno);
	struct fw_opts o = { .nbufs = 2, .bufsize = 4096, .flush_step = step, .flush = fake_flush };
	f->w = fw_start(f->fd, &o, &f->sink);
	CHECK(f->w != NULL);
}

static void flush_teardown(struct flush_fixture *f)
{
	fw_free(f->w);
	atomic_store(&flush_errno, 0);
	close(f->fd);
	unlink(f->path);
}

TEST(flushes_every_step_merged_and_finished_before_finish_returns)
{
	struct flush_fixture f;
	flush_setup(&f, 16384, 0);
	CHECK_INT(pour(&f.sink, 40 * 16384), 0);
	CHECK_INT(fw_finish(f.w), 0);
	/* 40 steps; a flush takes 20 ms, so requests made meanwhile are merged */
	int n = atomic_load(&flushes);
	CHECK(n >= 1 && n <= 40);
	CHECK_INT(atomic_load(&flushing), 0); /* none still running once finish returned */
	struct stat sb;
	CHECK_INT(fstat(f.fd, &sb), 0);
	CHECK_INT(sb.st_size, 40 * 16384);
	flush_teardown(&f);
}

TEST(no_flush_step_means_no_flush)
{
	struct flush_fixture f;
	flush_setup(&f, 0, 0);
	CHECK_INT(pour(&f.sink, 1 << 20), 0);
	CHECK_INT(fw_finish(f.w), 0);
	CHECK_INT(atomic_load(&flushes), 0);
	flush_teardown(&f);
}

TEST(a_failed_flush_is_a_failed_write)
{
	struct flush_fixture f;
	flush_setup(&f, 4096, EIO);
	/* the producer is told once the first flush (20 ms) has failed */
	int rc = 0;
	for (int i = 0; i < 100000 && rc == 0; i++) { /* 100000 x 64 KiB: never reached */
		rc = pour(&f.sink, 64 * 1024);
		if (rc == 0)
			usleep(100);
	}
	CHECK_INT(rc, -1);
	CHECK_INT(errno, EIO);
	CHECK_INT(fw_error(f.w), EIO);
	CHECK_INT(fw_finish(f.w), -1);
	CHECK_INT(errno, EIO);
	flush_teardown(&f);
}

TEST(a_file_that_cannot_be_flushed_is_left_to_the_callers_fsync)
{
	struct flush_fixture f;
	flush_setup(&f, 4096, EINVAL);
	CHECK_INT(pour(&f.sink, 256 * 1024), 0);
	CHECK_INT(fw_finish(f.w), 0);
	CHECK(atomic_load(&flushes) >= 1);
	flush_teardown(&f);
}

TEST(free_without_finish_stops_the_flusher_too)
{
	struct flush_fixture f;
	flush_setup(&f, 4096, 0);
	CHECK_INT(pour(&f.sink, 64 * 1024), 0);
	fw_free(f.w); /* no fw_finish: the flusher must be stopped and joined here */
	f.w = NULL;
	CHECK_INT(atomic_load(&flushing), 0);
	flush_teardown(&f); /* fw_free(NULL) is a no-op */
}

UNIT_MAIN(T(writes_every_byte_in_order), T(blocks_allocated_ahead_are_freed_past_the_end),
	  T(commit_beyond_the_lent_room_is_refused),
	  T(bad_options_are_refused), T(a_full_disk_stops_the_producer_and_names_the_error),
	  T(free_without_finish_discards_and_stops),
	  T(flushes_every_step_merged_and_finished_before_finish_returns),
	  T(no_flush_step_means_no_flush), T(a_failed_flush_is_a_failed_write),
	  T(a_file_that_cannot_be_flushed_is_left_to_the_callers_fsync),
	  T(free_without_finish_stops_the_flusher_too))
