/*
 * xxh32.h — XXH32, the checksum of LZ4 frames (content and block checksums).
 *
 * Written from the xxHash specification. Streaming: feed the bytes in any
 * pieces, in order; the digest equals the one-shot hash of their
 * concatenation. liblz4 computes it internally but does not export it; a
 * restore computes it here, on the thread that writes the file, so the
 * decompressing thread does not (see lz4io.h, lz4_dec_defer_checksum).
 */
#ifndef LITEVISOR_XXH32_H
#define LITEVISOR_XXH32_H

#include <stddef.h>
#include <stdint.h>

struct xxh32 {
	uint32_t v[4];
	uint64_t total;
	unsigned char buf[16];
	size_t nbuf;
	uint32_t seed;
};

void xxh32_init(struct xxh32 *h, uint32_t seed);
void xxh32_update(struct xxh32 *h, const void *data, size_t len);
/* The hash of everything fed so far (h is unchanged and can take more). */
uint32_t xxh32_digest(const struct xxh32 *h);
/* One-shot. */
uint32_t xxh32(const void *data, size_t len, uint32_t seed);

#endif
