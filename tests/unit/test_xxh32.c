/* test_xxh32.c — XXH32 against published values and against liblz4's own frame checksums. */
#include "unit.h"

#include <lz4frame.h>

#include "replication/xxh32.h"

TEST(published_values)
{
	CHECK_INT(xxh32("", 0, 0), 0x02CC5D05u);
	CHECK_INT(xxh32("a", 1, 0), 0x550D7456u);
	CHECK_INT(xxh32("abc", 3, 0), 0x32D153FFu);
}

/* liblz4 writes XXH32(content, seed 0) at the end of a frame with a content checksum */
static uint32_t lz4_content_checksum(const unsigned char *in, size_t len)
{
	LZ4F_preferences_t prefs = { 0 };
	prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
	size_t cap = LZ4F_compressFrameBound(len, &prefs);
	unsigned char *out = malloc(cap);
	CHECK(out != NULL);
	size_t n = LZ4F_compressFrame(out, cap, in, len, &prefs);
	CHECK(!LZ4F_isError(n) && n >= 4);
	uint32_t c = (uint32_t)out[n - 4] | (uint32_t)out[n - 3] << 8 | (uint32_t)out[n - 2] << 16 |
		     (uint32_t)out[n - 1] << 24;
	free(out);
	return c;
}

TEST(matches_liblz4_for_every_length_and_split)
{
	unsigned char data[300];
	uint32_t x = 12345;
	for (size_t i = 0; i < sizeof(data); i++) {
		x = x * 1103515245u + 12345u;
		data[i] = (unsigned char)(x >> 16);
	}
	for (size_t len = 0; len <= sizeof(data); len++) {
		uint32_t want = lz4_content_checksum(data, len);
		CHECK_INT(xxh32(data, len, 0), want);
		/* streamed in uneven pieces: the same digest */
		for (size_t piece = 1; piece <= 17; piece += 3) {
			struct xxh32 h;
			xxh32_init(&h, 0);
			for (size_t off = 0; off < len; off += piece)
				xxh32_update(&h, data + off, len - off < piece ? len - off : piece);
			if (xxh32_digest(&h) != want)
				FAIL("len %zu piece %zu: %08x, liblz4 says %08x", len, piece,
				     xxh32_digest(&h), want);
		}
	}
}

TEST(large_input_matches_liblz4)
{
	size_t len = 5u << 20;
	unsigned char *data = malloc(len);
	CHECK(data != NULL);
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 2654435761u >> 13);
	uint32_t want = lz4_content_checksum(data, len);
	struct xxh32 h;
	xxh32_init(&h, 0);
	for (size_t off = 0; off < len; off += 65537)
		xxh32_update(&h, data + off, len - off < 65537 ? len - off : 65537);
	CHECK_INT(xxh32_digest(&h), want);
	free(data);
}

TEST(seed_changes_the_hash)
{
	CHECK(xxh32("abc", 3, 1) != xxh32("abc", 3, 0));
}

UNIT_MAIN(T(published_values), T(matches_liblz4_for_every_length_and_split),
	  T(large_input_matches_liblz4), T(seed_changes_the_hash))
