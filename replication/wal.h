/*
 * wal.h — SQLite's write-ahead-log format: headers, checksums, validation.
 *
 * A WAL file is a 32-byte header then frames of (24-byte frame header + one
 * page). Every frame carries the header's salts and a running checksum over
 * the header and all previous frames; a frame whose commit field is non-zero
 * ends a transaction. See https://www.sqlite.org/fileformat2.html#walformat.
 *
 * struct wal_reader validates a WAL byte stream fed in arbitrary chunks (a
 * file read piece by piece, or downloaded segments of one index, in order)
 * and tracks where the last complete transaction ends. It never holds more
 * than one frame in memory.
 */
#ifndef LITEVISOR_WAL_H
#define LITEVISOR_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WAL_HEADER_SIZE 32
#define WAL_FRAME_HEADER_SIZE 24
#define WAL_MAGIC_LE 0x377f0682u
#define WAL_MAGIC_BE 0x377f0683u
#define WAL_MAX_PAGE_SIZE 65536
/* SQLite's largest page number and database size in pages (SQLITE_MAX_PAGE_COUNT's limit). */
#define WAL_MAX_PGNO 0xfffffffeu

struct wal_header {
	uint32_t magic;
	uint32_t version;
	uint32_t page_size;
	uint32_t checkpoint_seq;
	uint32_t salt1, salt2;
	uint32_t cksum1, cksum2;
};

struct wal_frame_header {
	uint32_t pgno;
	uint32_t commit;  /* database size in pages after a commit frame, else 0 */
	uint32_t salt1, salt2;
	uint32_t cksum1, cksum2;
};

static inline uint32_t wal_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wal_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Size of one frame for a page size. */
static inline uint64_t wal_frame_size(uint32_t page_size)
{
	return WAL_FRAME_HEADER_SIZE + (uint64_t)page_size;
}

/*
 * SQLite's WAL checksum over len bytes (a multiple of 8), continuing from
 * (*s1, *s2). big_endian: the header magic's low bit.
 */
void wal_checksum(bool big_endian, const uint8_t *data, size_t len, uint32_t *s1, uint32_t *s2);

/*
 * Parse and validate a 32-byte WAL header (magic, version, page size, its own
 * checksum). Returns 0, or -1 with a reason in why.
 */
int wal_header_parse(const uint8_t buf[WAL_HEADER_SIZE], struct wal_header *h, char *why,
		     size_t whylen);

void wal_frame_header_parse(const uint8_t buf[WAL_FRAME_HEADER_SIZE], struct wal_frame_header *f);

/*
 * The placeholder of an index entered with nothing written into it yet: a
 * valid WAL header (page_size, both salts 0, which SQLite never draws) and
 * no frame. Uploaded as the index's first segment after a snapshot that
 * follows a gap, because Litestream v0.3.13's restore panics ("makechan:
 * size out of range") when a generation's newest snapshot is two or more
 * indexes past its newest segment. It holds nothing: the first upload of
 * the index's real WAL replaces it, and readers take the index as ending
 * at offset 0 (catalog_end_position, restore).
 */
void wal_header_placeholder(uint8_t buf[WAL_HEADER_SIZE], uint32_t page_size);
bool wal_header_is_placeholder(const uint8_t buf[WAL_HEADER_SIZE]);

/* Incremental validator; see the file comment. */
struct wal_reader {
	struct wal_header hdr;
	bool have_header;
	bool failed;           /* a frame failed validation: nothing after it counts */
	char error[160];       /* why it failed */
	uint32_t s1, s2;       /* running checksum after the last valid frame */
	uint64_t offset;       /* bytes accepted so far (header + valid frames) */
	uint64_t commit_end;   /* offset just past the last valid commit frame (0 = none) */
	uint32_t commit_pages; /* database size in pages at that commit */
	uint32_t commit_s1, commit_s2; /* checksum at commit_end */
	uint64_t commits;      /* valid commit frames seen */
	uint64_t frames;       /* valid frames seen */
	uint8_t *buf;          /* one header or frame being assembled */
	size_t fill;
};

/* Start validating a stream that begins at WAL offset 0. Returns 0 or -1 (ENOMEM). */
int wal_reader_init(struct wal_reader *r);

/*
 * Start validating in the middle of a WAL whose header is already known, at
 * a frame boundary offset with the running checksum (s1, s2) there.
 */
int wal_reader_init_at(struct wal_reader *r, const struct wal_header *h, uint64_t offset,
		       uint32_t s1, uint32_t s2);

/*
 * Feed bytes. Returns 0 while the stream is valid; -1 once a header or frame
 * fails (salt or checksum mismatch: the usual sign of the end of the live
 * part of a WAL, or of corruption in a replica; or, checksums valid, a page
 * number SQLite could not have written: 0, past WAL_MAX_PGNO, or past the
 * size its commit frame declares); r->error says which. Bytes after a
 * failure are ignored.
 */
int wal_reader_feed(struct wal_reader *r, const void *data, size_t len);

/* Bytes of an incomplete frame held at the end (a torn tail). */
static inline size_t wal_reader_partial(const struct wal_reader *r) { return r->fill; }

void wal_reader_release(struct wal_reader *r);

#endif
