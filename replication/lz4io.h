/*
 * lz4io.h — streaming LZ4 frame compression and decompression.
 *
 * Replica objects are single LZ4 frames (Litestream v0.3 format). litevisor
 * writes 64 KiB blocks with a content checksum, independent for snapshots and
 * linked for WAL segments (Litestream v0.3.13's reader takes any block size
 * and linked blocks too); it reads any valid frame, including Litestream's
 * 4 MiB blocks. Both directions stream: memory stays bounded by one block
 * whatever the object's size.
 *
 * Compression is a struct st_source that pulls from another source
 * (e.g. a database file) and yields compressed bytes, so storage_put() can
 * stream a snapshot. Decompression is a struct st_sink that takes compressed
 * bytes (e.g. from storage_get()) and writes the plain bytes to another sink;
 * lz4_dec_finish() then checks the frame was complete and its checksum right.
 */
#ifndef LITEVISOR_LZ4IO_H
#define LITEVISOR_LZ4IO_H

#include <lz4frame.h>

#include "replication/storage.h"

#define LZ4IO_BLOCK_SIZE (64 * 1024)

/*
 * Whether a block may refer to the 64 KiB before it. Linked blocks make WAL
 * segments about a quarter smaller (a commit rewrites pages much like those
 * of the commits just before it, often across a block boundary); on database
 * pages they gain nothing, and a reader must then keep 64 KiB of history
 * (LZ4F copies it at every call), so snapshots stay independent.
 */
enum lz4_blocks { LZ4_BLOCKS_INDEPENDENT, LZ4_BLOCKS_LINKED };

struct lz4_enc {
	const struct st_source *inner;
	LZ4F_preferences_t prefs;
	LZ4F_cctx *cctx;
	unsigned char *in;     /* one block of plain input */
	unsigned char *out;    /* compressed output not yet handed out */
	size_t out_cap, out_len, out_pos;
	int state;             /* 0 = header pending, 1 = data, 2 = ended */
	uint64_t plain_bytes;  /* plain bytes read from inner so far */
	uint64_t packed_bytes; /* compressed bytes produced so far */
};

/*
 * Set up src to yield the LZ4 frame of everything inner yields, in blocks of
 * the given mode. src->size is -1 (unknown). src->rewind works when inner can
 * rewind. Returns 0, or -1 on allocation failure.
 */
int lz4_enc_init(struct lz4_enc *e, struct st_source *src, const struct st_source *inner,
		 enum lz4_blocks blocks);
void lz4_enc_release(struct lz4_enc *e);

/*
 * Zero-copy output for the decoder: reserve() lends a buffer (room in *cap,
 * at least 1 byte; NULL on failure), commit() says n bytes of it are filled.
 * LZ4F decodes a block straight into the buffer when the room is at least
 * the frame's block size (else through its own buffer, then copied).
 */
struct lz4_out {
	unsigned char *(*reserve)(void *ctx, size_t *cap);
	int (*commit)(void *ctx, size_t n);
	void *ctx;
};

struct lz4_dec {
	const struct st_sink *inner;     /* copying output, or */
	const struct lz4_out *direct;    /* zero-copy output */
	LZ4F_dctx *dctx;
	unsigned char *out;
	size_t out_cap;
	size_t hint;           /* 0 once a frame has fully ended */
	bool started, failed;
	bool age_encrypted;    /* failed: the object is age-encrypted (the replica has no age:) */
	bool want_deferred;    /* lz4_dec_defer_checksum() was called */
	bool checksum_deferred; /* ...and this frame's checksum is the caller's to check */
	unsigned char tail[4]; /* last 4 bytes of the frame so far */
	uint32_t content_checksum; /* set by lz4_dec_finish when checksum_deferred */
	uint64_t plain_bytes;  /* bytes written to inner */
	char error[128];
};

/* Set up sink to decompress into inner. Returns 0 or -1 (ENOMEM). */
int lz4_dec_init(struct lz4_dec *d, struct st_sink *sink, const struct st_sink *inner);

/* The same, decompressing into buffers lent by out (no copy). */
int lz4_dec_init_direct(struct lz4_dec *d, struct st_sink *sink, const struct lz4_out *out);

/*
 * Call before the first write: leave the frame's content checksum (XXH32 of
 * the plain bytes, see xxh32.h) to the caller, who can compute it on another
 * thread. Applies only to a frame with a content checksum and no block
 * checksums (Litestream's and litevisor's); any other frame is checked here
 * as usual. After lz4_dec_finish() returns 0 with d->checksum_deferred set,
 * the caller MUST compare its XXH32 of every plain byte with
 * d->content_checksum and treat a mismatch as a corrupt object.
 */
void lz4_dec_defer_checksum(struct lz4_dec *d);

/*
 * After the last write: 0 if exactly one complete frame was decoded and its
 * checksum matched (or was deferred), else -1 with d->error ("truncated LZ4 frame", …).
 */
int lz4_dec_finish(struct lz4_dec *d);
void lz4_dec_release(struct lz4_dec *d);

#endif
