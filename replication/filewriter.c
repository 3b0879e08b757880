/* filewriter.c — a bounded ring of buffers written to a file by a second thread. See filewriter.h. */
#include "replication/filewriter.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/banned.h"

struct fwriter {
	int fd;
	size_t nbufs, bufsize;
	uint64_t step;          /* writeback step, 0 = none */
	uint64_t flush_step;    /* flush step, 0 = no flusher thread */
	uint64_t prealloc_step; /* 0 = none, or given up (the file system has no fallocate, or is full) */
	uint64_t prealloc_reserve; /* left free for other files (fw_opts) */
	off_t prealloc_end;     /* blocks allocated up to here (writer thread) */
	bool preallocated;      /* some past the writes' start: fw_finish frees what lies past the end */
	int (*flush)(int fd);
	void (*inspect)(void *ctx, const void *buf, size_t len);
	void *inspect_ctx;
	unsigned char **bufs;   /* nbufs pointers into ring */
	unsigned char *ring;    /* one mapping of nbufs * bufsize bytes */
	size_t ring_len;
	size_t *lens;

	pthread_mutex_t mu;
	pthread_cond_t cv;      /* both directions: one producer, one writer */
	size_t head, tail, full; /* producer fills bufs[head]; writer writes bufs[tail] */
	size_t fill;            /* bytes in bufs[head] */
	bool closing, discard, failed, joined;
	int err;                /* errno of the first failed write */
	uint64_t accepted, written;
	pthread_t thread;

	pthread_cond_t fcv;     /* wakes the flusher */
	bool flush_req, flush_stop, flusher_joined;
	pthread_t flusher;
};

/*
 * The buffers as one anonymous mapping, asked for transparent huge pages and
 * populated now: the decoder writes every byte of them, and faulting 4 KiB
 * pages in one by one cost a 15 MB restore about a tenth of its time. Both
 * advices are best effort (older kernels, THP off): the mapping works anyway.
 */
static unsigned char *ring_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	(void)madvise(p, len, MADV_HUGEPAGE);
#endif
#ifdef MADV_POPULATE_WRITE
	(void)madvise(p, len, MADV_POPULATE_WRITE);
#endif
	return p;
}

/*
 * Allocate the next prealloc_step bytes once a write of len would pass what
 * is allocated (writer thread). Any failure ends the preallocation: EOPNOTSUPP
 * will not change, and on ENOSPC the writes report the full disk themselves.
 *
 * Only while the file system keeps at least another step free after it,
 * besides the reserve: blocks allocated ahead, or held by a fallocate that
 * fails until the truncate gives them back (ext4), are room other files
 * written meanwhile (the restore's WAL downloads beside the target) lack, and
 * those failed with ENOSPC on a disk with room for them all (seen in CI: 40 MB
 * free, an 8 MB restore; QA126 D2: 300 MB free, 288 MB needed). Near the end
 * of a disk the writes go on without allocating ahead.
 */
static void prealloc_ahead(struct fwriter *w, size_t len)
{
	off_t at = lseek(w->fd, 0, SEEK_CUR);
	if (at < 0 || (uint64_t)at + len <= (uint64_t)w->prealloc_end)
		return;
	if (at > w->prealloc_end)
		w->prealloc_end = at;
	struct statvfs vs;
	uint64_t avail = fstatvfs(w->fd, &vs) == 0 ? (uint64_t)vs.f_bavail * vs.f_frsize : 0;
	if (avail < w->prealloc_reserve || (avail - w->prealloc_reserve) / 2 < w->prealloc_step) {
		w->prealloc_step = 0;
		return;
	}
	/* before the call: a failed one (ENOSPC) may keep what it allocated (ext4, QA118 D1) */
	w->preallocated = true;
	if (fallocate(w->fd, FALLOC_FL_KEEP_SIZE, w->prealloc_end, (off_t)w->prealloc_step) < 0) {
		/* and gives it back at once: a full disk is the writes' to report */
		struct stat sb;
		if (fstat(w->fd, &sb) == 0)
			(void)ftruncate(w->fd, sb.st_size);
		w->prealloc_step = 0;
		return;
	}
	w->prealloc_end += (off_t)w->prealloc_step;
}

static void *writer(void *p)
{
	struct fwriter *w = p;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (w->full == 0 && !w->closing && !w->discard)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->discard || w->full == 0)
			break;
		size_t i = w->tail, len = w->lens[i];
		bool skip = w->failed; /* after an error only drain, so the producer never blocks */
		pthread_mutex_unlock(&w->mu);
		int rc = 0, e = 0;
		if (!skip) {
			if (w->inspect)
				w->inspect(w->inspect_ctx, w->bufs[i], len);
			if (w->prealloc_step)
				prealloc_ahead(w, len);
			rc = st_fd_sink_write(&w->fd, w->bufs[i], len);
			e = errno;
		}
		bool want_flush = false;
		if (rc == 0 && !skip) {
			uint64_t from = w->step ? w->written / w->step * w->step : 0;
			want_flush = w->flush_step && (w->written + len) / w->flush_step >
							      w->written / w->flush_step;
			w->written += len;
			uint64_t to = w->step ? w->written / w->step * w->step : 0;
			/* whole steps just completed: advisory, the caller's fsync follows */
			if (to > from)
				(void)sync_file_range(w->fd, (off_t)from, (off_t)(to - from),
						      SYNC_FILE_RANGE_WRITE);
		}
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && !w->failed) {
			w->failed = true;
			w->err = e;
		}
		if (want_flush) { /* one pending request covers everything written so far */
			w->flush_req = true;
			pthread_cond_signal(&w->fcv);
		}
		w->tail = (w->tail + 1) % w->nbufs;
		w->full--;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/*
 * The flusher: one fdatasync per request, never more than one at a time;
 * requests made while one runs are merged into the next. A failure is the
 * writer's failure (the producer stops at its next reserve). EINVAL: the
 * file cannot be flushed at all, which the caller's own fsync will report.
 */
static void *flusher(void *p)
{
	struct fwriter *w = p;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->flush_req && !w->flush_stop)
			pthread_cond_wait(&w->fcv, &w->mu);
		if (!w->flush_req || w->discard)
			break;
		w->flush_req = false;
		bool skip = w->failed;
		pthread_mutex_unlock(&w->mu);
		int rc = skip ? 0 : w->flush(w->fd), e = errno;
		pthread_mutex_lock(&w->mu);
		if (rc < 0 && e != EINVAL && !w->failed) {
			w->failed = true;
			w->err = e;
			pthread_cond_broadcast(&w->cv);
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Let the flusher finish what is asked of it (or drop it, on discard) and join it. */
static void stop_flusher(struct fwriter *w)
{
	if (w->flusher_joined)
		return;
	pthread_mutex_lock(&w->mu);
	w->flush_stop = true;
	pthread_cond_signal(&w->fcv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->flusher, NULL);
	w->flusher_joined = true;
}

/* Queue bufs[head] (fill bytes). Called with mu held. */
static void submit(struct fwriter *w)
{
	w->lens[w->head] = w->fill;
	w->head = (w->head + 1) % w->nbufs;
	w->full++;
	w->fill = 0;
	pthread_cond_broadcast(&w->cv);
}

unsigned char *fw_reserve(struct fwriter *w, size_t *cap)
{
	if (w->fill == 0) { /* need a free buffer to fill */
		pthread_mutex_lock(&w->mu);
		while (w->full == w->nbufs && !w->failed)
			pthread_cond_wait(&w->cv, &w->mu);
		bool failed = w->failed;
		int e = w->err;
		pthread_mutex_unlock(&w->mu);
		if (failed) {
			errno = e;
			return NULL;
		}
	}
	*cap = w->bufsize - w->fill;
	return w->bufs[w->head] + w->fill;
}

int fw_commit(struct fwriter *w, size_t n)
{
	if (n > w->bufsize - w->fill) {
		errno = EINVAL;
		return -1;
	}
	w->fill += n;
	w->accepted += n;
	if (w->fill == w->bufsize) {
		pthread_mutex_lock(&w->mu);
		submit(w);
		pthread_mutex_unlock(&w->mu);
	}
	return 0;
}

static int sink_write(void *ctx, const void *buf, size_t len)
{
	struct fwriter *w = ctx;
	const unsigned char *p = buf;
	while (len > 0) {
		size_t n;
		unsigned char *dst = fw_reserve(w, &n);
		if (!dst)
			return -1;
		if (n > len)
			n = len;
		memcpy(dst, p, n);
		p += n;
		len -= n;
		if (fw_commit(w, n) < 0)
			return -1;
	}
	return 0;
}

struct fwriter *fw_start(int fd, const struct fw_opts *o, struct st_sink *sink)
{
	size_t nbufs = o->nbufs;
	struct fwriter *w = NULL;
	int e = EINVAL;
	if (nbufs < 2 || o->bufsize == 0)
		goto fail;
	e = ENOMEM;
	if (!(w = calloc(1, sizeof(*w))))
		goto fail;
	w->fd = fd;
	w->nbufs = nbufs;
	w->bufsize = o->bufsize;
	w->step = o->writeback_step;
	w->flush_step = o->flush_step;
	w->prealloc_step = o->prealloc_step;
	w->prealloc_reserve = o->prealloc_reserve;
	w->flush = o->flush ? o->flush : fdatasync;
	w->flusher_joined = true;
	w->inspect = o->inspect;
	w->inspect_ctx = o->inspect_ctx;
	w->joined = true;
	w->bufs = calloc(nbufs, sizeof(*w->bufs));
	w->lens = calloc(nbufs, sizeof(*w->lens));
	if (!w->bufs || !w->lens)
		goto fail;
	if (o->bufsize > SIZE_MAX / nbufs)
		goto fail;
	w->ring_len = nbufs * o->bufsize;
	if (!(w->ring = ring_map(w->ring_len)))
		goto fail;
	for (size_t i = 0; i < nbufs; i++)
		w->bufs[i] = w->ring + i * o->bufsize;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	pthread_cond_init(&w->fcv, NULL);
	if (w->flush_step) {
		if ((e = pthread_create(&w->flusher, NULL, flusher, w)) != 0)
			goto fail_sync;
		w->flusher_joined = false;
	}
	if ((e = pthread_create(&w->thread, NULL, writer, w)) != 0) {
		stop_flusher(w);
		goto fail_sync;
	}
	w->joined = false;
	if (sink) {
		sink->write = sink_write;
		sink->ctx = w;
	}
	return w;
fail_sync:
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	pthread_cond_destroy(&w->fcv);
fail:
	if (w) {
		if (w->ring)
			munmap(w->ring, w->ring_len);
		free(w->bufs);
		free(w->lens);
		free(w);
	}
	errno = e;
	return NULL;
}

int fw_finish(struct fwriter *w)
{
	pthread_mutex_lock(&w->mu);
	if (w->fill > 0 && !w->failed)
		submit(w);
	w->closing = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	w->joined = true;
	stop_flusher(w); /* after the writer: its last request is honoured */
	if (w->failed) {
		errno = w->err;
		return -1;
	}
	/* a truncate to its own size frees the blocks allocated past the end */
	struct stat sb;
	if (w->preallocated && (fstat(w->fd, &sb) < 0 || ftruncate(w->fd, sb.st_size) < 0))
		return -1;
	return 0;
}

int fw_error(struct fwriter *w)
{
	pthread_mutex_lock(&w->mu);
	int e = w->failed ? w->err : 0;
	pthread_mutex_unlock(&w->mu);
	return e;
}

uint64_t fw_bytes(const struct fwriter *w)
{
	return w->accepted;
}

void fw_free(struct fwriter *w)
{
	if (!w)
		return;
	if (!w->joined) {
		pthread_mutex_lock(&w->mu);
		w->discard = true;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(w->thread, NULL);
	}
	stop_flusher(w); /* discard set above: a pending flush is dropped */
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	pthread_cond_destroy(&w->fcv);
	munmap(w->ring, w->ring_len);
	free(w->bufs);
	free(w->lens);
	free(w);
}
