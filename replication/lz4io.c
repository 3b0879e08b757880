/* lz4io.c — LZ4 frame streaming: a compressing st_source and a decompressing st_sink. */
#include "replication/lz4io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

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
		n = LZ4F_compressBegin(e->cctx, e->out, e->out_cap, &lz4_prefs);
		if (LZ4F_isError(n))
			goto lz4_error;
		e->out_len = n;
		e->state = 1;
		return 0;
	}
	if (e->state == 2)
		return 0;
	/* read a whole block (or up to EOF) from the inner source */
	size_t got = 0;
	while (got < LZ4IO_BLOCK_SIZE) {
		ssize_t r = e->inner->read(e->inner->ctx, e->in + got, LZ4IO_BLOCK_SIZE - got);
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
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

int lz4_enc_init(struct lz4_enc *e, struct st_source *src, const struct st_source *inner)
{
	memset(e, 0, sizeof(*e));
	e->inner = inner;
	e->out_cap = LZ4F_compressBound(LZ4IO_BLOCK_SIZE, &lz4_prefs) + LZ4F_HEADER_SIZE_MAX + 16;
	e->in = malloc(LZ4IO_BLOCK_SIZE);
	e->out = malloc(e->out_cap);
	if (!e->in || !e->out || LZ4F_isError(LZ4F_createCompressionContext(&e->cctx, LZ4F_VERSION))) {
		lz4_enc_release(e);
		return -1;
	}
	src->read = enc_read;
	src->rewind = inner->rewind ? enc_rewind : NULL;
	src->ctx = e;
	src->size = -1;
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

static int dec_write(void *ctx, const void *buf, size_t len)
{
	struct lz4_dec *d = ctx;
	const unsigned char *p = buf;

	if (d->failed)
		return -1;
	while (len > 0) {
		if (d->started && d->hint == 0) {
			d->failed = true;
			snprintf(d->error, sizeof(d->error), "unexpected data after the LZ4 frame");
			return -1;
		}
		size_t in = len, out = d->out_cap;
		size_t r = LZ4F_decompress(d->dctx, d->out, &out, p, &in, NULL);
		if (LZ4F_isError(r)) {
			d->failed = true;
			snprintf(d->error, sizeof(d->error), "corrupt LZ4 frame: %s", LZ4F_getErrorName(r));
			return -1;
		}
		d->started = true;
		d->hint = r;
		p += in;
		len -= in;
		if (out > 0) {
			if (d->inner->write(d->inner->ctx, d->out, out) < 0) {
				d->failed = true;
				snprintf(d->error, sizeof(d->error), "writing decompressed data failed");
				return -1;
			}
			d->plain_bytes += out;
		}
	}
	return 0;
}

int lz4_dec_init(struct lz4_dec *d, struct st_sink *sink, const struct st_sink *inner)
{
	memset(d, 0, sizeof(*d));
	d->inner = inner;
	d->out_cap = LZ4IO_BLOCK_SIZE;
	d->out = malloc(d->out_cap);
	d->hint = 1;
	if (!d->out || LZ4F_isError(LZ4F_createDecompressionContext(&d->dctx, LZ4F_VERSION))) {
		lz4_dec_release(d);
		return -1;
	}
	sink->write = dec_write;
	sink->ctx = d;
	return 0;
}

int lz4_dec_finish(struct lz4_dec *d)
{
	if (d->failed)
		return -1;
	if (!d->started || d->hint != 0) {
		/* flush what LZ4F may still hold in its output buffer */
		size_t in = 0, out = d->out_cap;
		size_t r = LZ4F_decompress(d->dctx, d->out, &out, NULL, &in, NULL);
		if (!LZ4F_isError(r) && out > 0 && d->inner->write(d->inner->ctx, d->out, out) == 0)
			d->plain_bytes += out;
		if (LZ4F_isError(r) || r != 0) {
			snprintf(d->error, sizeof(d->error), "truncated LZ4 frame");
			d->failed = true;
			return -1;
		}
	}
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

int lz4_compress_mem(const void *in, size_t len, unsigned char **out, size_t *outlen)
{
	LZ4F_preferences_t prefs = lz4_prefs;
	size_t cap = LZ4F_compressFrameBound(len, &prefs);
	unsigned char *buf = malloc(cap);
	if (!buf)
		return -1;
	size_t n = LZ4F_compressFrame(buf, cap, in, len, &prefs);
	if (LZ4F_isError(n)) {
		free(buf);
		return -1;
	}
	*out = buf;
	*outlen = n;
	return 0;
}
