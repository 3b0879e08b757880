/* lz4io.c — LZ4 frame streaming: a compressing st_source and a decompressing st_sink. */
#include "replication/lz4io.h"

/* the static part of lz4frame.h: LZ4F_createDecompressionContext_advanced (liblz4 >= 1.9.4) */
#define LZ4F_STATIC_LINKING_ONLY
#include <lz4.h>
#include <lz4frame.h>
#if LZ4_VERSION_NUMBER < 10904
#error "liblz4 1.9.4 or newer is needed (LZ4F_createDecompressionContext_advanced)"
#endif

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/banned.h"

/* Replica objects: see lz4io.h for the block mode. */
static const LZ4F_preferences_t lz4_prefs = {
	.frameInfo = {
		.blockSizeID = LZ4F_max64KB,
		.blockMode = LZ4F_blockIndependent,
		.contentChecksumFlag = LZ4F_contentChecksumEnabled,
		.frameType = LZ4F_frame,
	},
	.compressionLevel = 0, /* fast mode: replication must stay cheap */
};

/* Refill e->out with the next piece of the frame. Returns 0, or -1 (errno set). */
static int enc_refill(struct lz4_enc *e)
{
	size_t n;
	e->out_len = e->out_pos = 0;
	if (e->state == 0) {
		n = LZ4F_compressBegin(e->cctx, e->out, e->out_cap, &e->prefs);
		if (LZ4F_isError(n))
			goto lz4_error;
		e->out_len = n;
		e->state = 1;
		return 0;
	}
	if (e->state == 2)
		return 0;
	/* a whole block (or up to EOF) from the inner source */
	ssize_t r = st_read_full(e->inner, e->in, LZ4IO_BLOCK_SIZE);
	if (r < 0)
		return -1;
	size_t got = (size_t)r;
	e->plain_bytes += got;
	if (got > 0) {
		n = LZ4F_compressUpdate(e->cctx, e->out, e->out_cap, e->in, got, NULL);
		if (LZ4F_isError(n))
			goto lz4_error;
		e->out_len = n;
	}
	if (got < LZ4IO_BLOCK_SIZE) {
		size_t m = LZ4F_compressEnd(e->cctx, e->out + e->out_len, e->out_cap - e->out_len, NULL);
		if (LZ4F_isError(m))
			goto lz4_error;
		e->out_len += m;
		e->state = 2;
	}
	return 0;
lz4_error:
	errno = EIO;
	return -1;
}

static ssize_t enc_read(void *ctx, void *buf, size_t len)
{
	struct lz4_enc *e = ctx;
	while (e->out_pos == e->out_len) {
		if (e->state == 2)
			return 0;
		if (enc_refill(e) < 0)
			return -1;
	}
	size_t n = e->out_len - e->out_pos;
	if (n > len)
		n = len;
	memcpy(buf, e->out + e->out_pos, n);
	e->out_pos += n;
	e->packed_bytes += n;
	return (ssize_t)n;
}

static int enc_rewind(void *ctx)
{
	struct lz4_enc *e = ctx;
	if (!e->inner->rewind || e->inner->rewind(e->inner->ctx) < 0)
		return -1;
	e->state = 0;
	e->out_len = e->out_pos = 0;
	e->plain_bytes = e->packed_bytes = 0;
	return 0;
}

int lz4_enc_init(struct lz4_enc *e, struct st_source *src, const struct st_source *inner,
		 enum lz4_blocks blocks)
{
	memset(e, 0, sizeof(*e));
	e->inner = inner;
	e->prefs = lz4_prefs;
	if (blocks == LZ4_BLOCKS_LINKED)
		e->prefs.frameInfo.blockMode = LZ4F_blockLinked;
	e->out_cap = LZ4F_compressBound(LZ4IO_BLOCK_SIZE, &e->prefs) + LZ4F_HEADER_SIZE_MAX + 16;
	e->in = malloc(LZ4IO_BLOCK_SIZE);
	e->out = malloc(e->out_cap);
	if (!e->in || !e->out || LZ4F_isError(LZ4F_createCompressionContext(&e->cctx, LZ4F_VERSION))) {
		lz4_enc_release(e);
		return -1;
	}
	*src = (struct st_source){ .read = enc_read, .rewind = inner->rewind ? enc_rewind : NULL,
				   .ctx = e, .size = -1 };
	return 0;
}

void lz4_enc_release(struct lz4_enc *e)
{
	if (e->cctx)
		LZ4F_freeCompressionContext(e->cctx);
	free(e->in);
	free(e->out);
	e->cctx = NULL;
	e->in = e->out = NULL;
}

/*
 * Decide, on the frame's first bytes, whether its content checksum can be
 * left to the caller: only a frame with a content checksum and no block
 * checksums (LZ4F's skipChecksums would skip those too).
 */
static void decide_checksum(struct lz4_dec *d, const unsigned char *p, size_t len)
{
	static const unsigned char magic[4] = { 0x04, 0x22, 0x4d, 0x18 };
	if (!d->want_deferred || len < 5 || memcmp(p, magic, 4) != 0)
		return;
	unsigned flg = p[4];
	if ((flg & 0x04) && !(flg & 0x10))
		d->checksum_deferred = true;
}

/* Keep the last 4 bytes the frame consumed: its content checksum once it ends. */
static void keep_tail(struct lz4_dec *d, const unsigned char *p, size_t n)
{
	if (n >= 4) {
		memcpy(d->tail, p + n - 4, 4);
		return;
	}
	memmove(d->tail, d->tail + n, 4 - n);
	memcpy(d->tail + 4 - n, p, n);
}

/* Where the next decompressed bytes go: the caller's buffer (direct) or ours. */
static unsigned char *out_buffer(struct lz4_dec *d, size_t *cap)
{
	if (!d->direct) {
		*cap = d->out_cap;
		return d->out;
	}
	unsigned char *b = d->direct->reserve(d->direct->ctx, cap);
	if (!b || *cap == 0) {
		d->failed = true;
		snprintf(d->error, sizeof(d->error), "writing decompressed data failed");
		return NULL;
	}
	return b;
}

static int deliver(struct lz4_dec *d, const unsigned char *b, size_t n)
{
	int rc = d->direct ? d->direct->commit(d->direct->ctx, n) : d->inner->write(d->inner->ctx, b, n);
	if (rc < 0) {
		d->failed = true;
		snprintf(d->error, sizeof(d->error), "writing decompressed data failed");
		return -1;
	}
	d->plain_bytes += n;
	return 0;
}

static int dec_write(void *ctx, const void *buf, size_t len)
{
	struct lz4_dec *d = ctx;
	const unsigned char *p = buf;

	if (d->failed)
		return -1;
	if (!d->started && len > 0)
		decide_checksum(d, p, len);
	LZ4F_decompressOptions_t opts = { .skipChecksums = d->checksum_deferred };
	while (len > 0) {
		if (d->started && d->hint == 0) {
			d->failed = true;
			snprintf(d->error, sizeof(d->error), "unexpected data after the LZ4 frame");
			return -1;
		}
		size_t in = len, out;
		unsigned char *dst = out_buffer(d, &out);
		if (!dst)
			return -1;
		size_t r = LZ4F_decompress(d->dctx, dst, &out, p, &in, &opts);
		if (LZ4F_isError(r)) {
			d->failed = true;
			d->age_encrypted = !d->started && len >= 19 &&
					   memcmp(p, "age-encryption.org/", 19) == 0;
			if (d->age_encrypted)
				snprintf(d->error, sizeof(d->error), "the object is age-encrypted: give "
					 "the replica's age: identities in the config");
			else
				snprintf(d->error, sizeof(d->error), "corrupt LZ4 frame: %s",
					 LZ4F_getErrorName(r));
			return -1;
		}
		d->started = true;
		d->hint = r;
		keep_tail(d, p, in);
		p += in;
		len -= in;
		if (out > 0 && deliver(d, dst, out) < 0)
			return -1;
	}
	return 0;
}

/*
 * The decoder's memory. A frame with 4 MiB blocks (Litestream's) makes LZ4F
 * allocate two block-sized buffers, and it assembles each compressed block
 * in one of them. Touching such a buffer one 4 KiB page at a time costs a
 * page fault per page, about 12 µs each on a VM here (a 15 MB restore spent
 * more time in those faults than in decoding). Buffers from BIG_ALLOC up are
 * therefore their own mapping with transparent huge pages where the kernel
 * allows them (a fault per 2 MiB); smaller ones come from malloc. A header
 * before each block records which, and the mapping's length.
 */
#define BIG_ALLOC ((size_t)256 << 10)
#define HDR 16 /* keeps malloc's 16-byte alignment */

static void *dec_alloc_impl(size_t size, int zero)
{
	if (size > SIZE_MAX - HDR)
		return NULL;
	size_t len = size + HDR;
	unsigned char *p;
	if (size < BIG_ALLOC) {
		if (!(p = zero ? calloc(1, len) : malloc(len)))
			return NULL;
		len = 0; /* malloc'd */
	} else {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
#ifdef MADV_HUGEPAGE
		(void)madvise(p, len, MADV_HUGEPAGE); /* advice: works without it */
#endif
	}
	memcpy(p, &len, sizeof(len));
	return p + HDR;
}

static void *dec_alloc(void *state, size_t size)
{
	(void)state;
	return dec_alloc_impl(size, 0);
}

static void *dec_calloc(void *state, size_t size)
{
	(void)state;
	return dec_alloc_impl(size, 1); /* a fresh mapping is zeroed already */
}

static void dec_free(void *state, void *address)
{
	(void)state;
	if (!address)
		return;
	unsigned char *p = (unsigned char *)address - HDR;
	size_t len;
	memcpy(&len, p, sizeof(len));
	if (len)
		munmap(p, len);
	else
		free(p);
}

static int dec_setup(struct lz4_dec *d, struct st_sink *sink)
{
	static const LZ4F_CustomMem mem = { dec_alloc, dec_calloc, dec_free, NULL };
	d->hint = 1;
	if (!(d->dctx = LZ4F_createDecompressionContext_advanced(mem, LZ4F_VERSION))) {
		lz4_dec_release(d);
		return -1;
	}
	sink->write = dec_write;
	sink->ctx = d;
	return 0;
}

int lz4_dec_init(struct lz4_dec *d, struct st_sink *sink, const struct st_sink *inner)
{
	memset(d, 0, sizeof(*d));
	d->inner = inner;
	d->out_cap = LZ4IO_BLOCK_SIZE;
	d->out = malloc(d->out_cap);
	if (!d->out) {
		lz4_dec_release(d);
		return -1;
	}
	return dec_setup(d, sink);
}

int lz4_dec_init_direct(struct lz4_dec *d, struct st_sink *sink, const struct lz4_out *out)
{
	memset(d, 0, sizeof(*d));
	d->direct = out;
	return dec_setup(d, sink);
}

void lz4_dec_defer_checksum(struct lz4_dec *d)
{
	d->want_deferred = true;
}

int lz4_dec_finish(struct lz4_dec *d)
{
	if (d->failed)
		return -1;
	if (!d->started || d->hint != 0) {
		/* flush what LZ4F may still hold in its output buffer */
		size_t in = 0, out;
		unsigned char *dst = out_buffer(d, &out);
		if (!dst)
			return -1;
		LZ4F_decompressOptions_t opts = { .skipChecksums = d->checksum_deferred };
		size_t r = LZ4F_decompress(d->dctx, dst, &out, NULL, &in, &opts);
		if (!LZ4F_isError(r) && out > 0)
			(void)deliver(d, dst, out);
		if (LZ4F_isError(r) || r != 0 || d->failed) {
			snprintf(d->error, sizeof(d->error), "truncated LZ4 frame");
			d->failed = true;
			return -1;
		}
	}
	if (d->checksum_deferred)
		d->content_checksum = (uint32_t)d->tail[0] | (uint32_t)d->tail[1] << 8 |
				      (uint32_t)d->tail[2] << 16 | (uint32_t)d->tail[3] << 24;
	return 0;
}

void lz4_dec_release(struct lz4_dec *d)
{
	if (d->dctx)
		LZ4F_freeDecompressionContext(d->dctx);
	free(d->out);
	d->dctx = NULL;
	d->out = NULL;
}
