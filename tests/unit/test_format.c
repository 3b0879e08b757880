/* Unit tests for the replica format primitives: layout names, WAL validation, LZ4 streaming. */
#include "tests/unit/unit.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "replication/layout.h"
#include "replication/lz4io.h"
#include "replication/wal.h"
#include "replication/xxh32.h"

TEST(layout_names)
{
	char key[LAYOUT_KEY_MAX], gen[17];
	uint32_t i, o;
	CHECK_STR(layout_snapshot_key(key, "0123456789abcdef", 1), "generations/0123456789abcdef/snapshots/00000001.snapshot.lz4");
	CHECK_STR(layout_wal_key(key, "0123456789abcdef", 0x1a, 0x4080), "generations/0123456789abcdef/wal/0000001a_00004080.wal.lz4");
	CHECK_INT(layout_parse_wal("0000001a_00004080.wal.lz4", &i, &o), 0);
	CHECK_INT(i, 0x1a);
	CHECK_INT(o, 0x4080);
	CHECK_INT(layout_parse_snapshot("ffffffff.snapshot.lz4", &i), 0);
	CHECK_INT(i, 0xffffffffu);
	CHECK_INT(layout_parse_snapshot("FFFFFFFF.snapshot.lz4", &i), -1);
	CHECK_INT(layout_parse_snapshot("0000001.snapshot.lz4", &i), -1);
	CHECK_INT(layout_parse_wal("00000001_0000000.wal.lz4", &i, &o), -1);
	CHECK_INT(layout_parse_wal("00000001-00000000.wal.lz4", &i, &o), -1);
	CHECK_INT(layout_parse_wal("00000001_00000000.wal", &i, &o), -1);
	CHECK_STR(layout_closed_key(key, "0123456789abcdef", 2, 0x1038), "generations/0123456789abcdef/closed/00000002_00001038");
	CHECK_INT(layout_parse_closed("00000002_00001038", &i, &o), 0);
	CHECK_INT(i, 2);
	CHECK_INT(o, 0x1038);
	CHECK_INT(layout_parse_closed("00000002_00001038.wal.lz4", &i, &o), -1);
	CHECK_INT(layout_parse_closed("00000002-00001038", &i, &o), -1);
	char id[LAYOUT_DBID_LEN + 1], id2[LAYOUT_DBID_LEN + 1];
	CHECK_STR(layout_database_key(key, "0123456789abcdef", "00112233445566778899aabbccddeeff"),
		  "generations/0123456789abcdef/database/00112233445566778899aabbccddeeff");
	CHECK_INT(layout_parse_database("00112233445566778899aabbccddeeff", id), 0);
	CHECK_STR(id, "00112233445566778899aabbccddeeff");
	CHECK_INT(layout_parse_database("00112233445566778899AABBCCDDEEFF", id), -1);
	CHECK_INT(layout_parse_database("00112233445566778899aabbccddeef", id), -1);
	CHECK_INT(layout_parse_database("00112233445566778899aabbccddeeff0", id), -1);
	CHECK_INT(layout_database_id_new(id), 0);
	CHECK_INT(layout_database_id_new(id2), 0);
	CHECK(layout_database_id_valid(id));
	CHECK(strcmp(id, id2) != 0);
	CHECK_INT(layout_generation_new(gen), 0);
	CHECK(layout_generation_valid(gen));
	CHECK(!layout_generation_valid("0123456789ABCDEF"));
	CHECK(!layout_generation_valid("0123456789abcde"));
}

/* Write n rows into a fresh WAL-mode database kept with its -wal in dir; return the WAL's
 * bytes and remove dir. */
static unsigned char *make_wal(const char *dir, int rows, size_t *len)
{
	char path[256], wal[300];
	sqlite3 *db;
	snprintf(path, sizeof(path), "%s/t.db", dir);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	int persist = 1;
	CHECK_INT(sqlite3_exec(db, "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0;"
				   "CREATE TABLE t(x)", 0, 0, 0), SQLITE_OK);
	sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
	for (int i = 0; i < rows; i++)
		CHECK_INT(sqlite3_exec(db, "INSERT INTO t VALUES (randomblob(300))", 0, 0, 0), SQLITE_OK);
	int fd = open(wal, O_RDONLY);
	CHECK(fd >= 0);
	struct stat st;
	fstat(fd, &st);
	unsigned char *buf = malloc((size_t)st.st_size);
	CHECK(read(fd, buf, (size_t)st.st_size) == st.st_size);
	close(fd);
	sqlite3_close(db);
	*len = (size_t)st.st_size;
	/* The bytes are in memory now: leave nothing behind in /tmp. */
	static const char *const files[] = { "t.db", "t.db-wal", "t.db-shm" };
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	CHECK_INT(rmdir(dir), 0);
	return buf;
}

static char *tmpdir(void)
{
	static char d[] = "/tmp/litevisor-unit-XXXXXX";
	CHECK(mkdtemp(d) != NULL);
	return d;
}

TEST(wal_placeholder_is_a_valid_header_sqlite_never_writes)
{
	uint8_t h[WAL_HEADER_SIZE];
	struct wal_header w;
	char why[128];
	wal_header_placeholder(h, 4096);
	CHECK_INT(wal_header_parse(h, &w, why, sizeof(why)), 0);
	CHECK_INT(w.page_size, 4096);
	CHECK(wal_header_is_placeholder(h));
	h[23] = 1; /* a salt SQLite drew */
	CHECK(!wal_header_is_placeholder(h));
}

TEST(wal_reader_accepts_sqlite_wal)
{
	size_t len;
	unsigned char *w = make_wal(tmpdir(), 20, &len);
	struct wal_reader r;
	CHECK_INT(wal_reader_init(&r), 0);
	/* feed in odd-sized pieces */
	for (size_t off = 0; off < len; off += 777)
		CHECK_INT(wal_reader_feed(&r, w + off, len - off < 777 ? len - off : 777), 0);
	CHECK(r.have_header);
	CHECK_INT(r.commit_end, len);
	CHECK_INT(r.offset, len);
	CHECK_INT(r.hdr.page_size, 4096);
	CHECK(r.frames >= 21);
	wal_reader_release(&r);
	free(w);
}

TEST(wal_reader_detects_corruption)
{
	size_t len;
	unsigned char *w = make_wal(tmpdir(), 5, &len);
	struct wal_reader r;
	uint64_t frame = 24 + 4096;
	w[32 + 2 * frame + 100] ^= 0x40; /* a byte in the third frame's page */
	CHECK_INT(wal_reader_init(&r), 0);
	CHECK_INT(wal_reader_feed(&r, w, len), -1);
	CHECK(strstr(r.error, "checksum mismatch"));
	CHECK_INT(r.offset, 32 + 2 * frame);
	CHECK(r.commit_end <= 32 + 2 * frame);
	wal_reader_release(&r);

	/* a bad header */
	w[17] ^= 1;
	CHECK_INT(wal_reader_init(&r), 0);
	CHECK_INT(wal_reader_feed(&r, w, 32), -1);
	CHECK(strstr(r.error, "header checksum"));
	wal_reader_release(&r);
	free(w);
}

/* Set frame k's page number and commit field, then fix the checksum chain from it on. */
static void set_frame(unsigned char *w, size_t len, size_t k, uint32_t pgno, uint32_t commit)
{
	const size_t fs = 24 + 4096;
	bool be = wal_get32(w) & 1;
	uint32_t s1 = wal_get32(w + 24), s2 = wal_get32(w + 28);
	wal_put32(w + 32 + k * fs, pgno);
	wal_put32(w + 32 + k * fs + 4, commit);
	for (size_t off = 32; off + fs <= len; off += fs) {
		wal_checksum(be, w + off, 8, &s1, &s2);
		wal_checksum(be, w + off + 24, 4096, &s1, &s2);
		wal_put32(w + off + 16, s1);
		wal_put32(w + off + 20, s2);
	}
}

/* Feed w (len bytes) whole; returns r's error ("" if it passed) and its last commit end. */
static const char *feed_all(const unsigned char *w, size_t len, uint64_t *commit_end)
{
	static char err[160];
	struct wal_reader r;
	CHECK_INT(wal_reader_init(&r), 0);
	int rc = wal_reader_feed(&r, w, len);
	CHECK_INT(rc, r.failed ? -1 : 0);
	snprintf(err, sizeof(err), "%s", r.failed ? r.error : "");
	*commit_end = r.commit_end;
	wal_reader_release(&r);
	return err;
}

/*
 * A frame whose checksums are right but whose page number SQLite could not
 * have written is corrupt: SQLite's checkpoint would skip it (page 0, or
 * past the commit's database size: a committed change lost without a word).
 */
TEST(wal_reader_checks_page_numbers)
{
	size_t len;
	uint64_t end;
	const size_t fs = 24 + 4096;
	unsigned char *orig = make_wal(tmpdir(), 5, &len), *w = malloc(len);
	size_t n = (len - 32) / fs, last = n - 1;
	CHECK(n >= 3);
	/* make_wal's WAL: frame 0 page 1 (not a commit), then commits of page 2, size 2 */
	CHECK_INT(wal_get32(orig + 32), 1);
	CHECK_INT(wal_get32(orig + 32 + 4), 0);
	CHECK_INT(wal_get32(orig + 32 + last * fs), 2);
	CHECK_INT(wal_get32(orig + 32 + last * fs + 4), 2);
	char want[160];
	static const struct {
		int last;           /* 1: the last (commit) frame, 0: frame 0 */
		uint32_t pgno, commit;
		const char *error;  /* NULL: valid */
	} cases[] = {
		{ 1, 0xffffffffu, 2, "WAL page number 4294967295 (SQLite's largest is 4294967294)" },
		{ 1, 3, 2, "WAL page number 3 beyond the commit's database size (2 pages)" },
		{ 1, 2, 0xffffffffu, "WAL database size of 4294967295 pages in a commit (SQLite's largest is 4294967294)" },
		{ 1, 0, 2, "WAL page number 0" },
		{ 0, 0, 0, "WAL page number 0" },
		{ 0, 0xffffffffu, 0, "WAL page number 4294967295 (SQLite's largest is 4294967294)" },
		/* before the commit, a page past its size is SQLite's own doing (spilled, then shrunk) */
		{ 0, 7, 0, NULL },
		{ 1, 2, 0xfffffffeu, NULL },
		{ 1, 0xfffffffeu, 0xfffffffeu, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t k = cases[i].last ? last : 0;
		memcpy(w, orig, len);
		set_frame(w, len, k, cases[i].pgno, cases[i].commit);
		const char *err = feed_all(w, len, &end);
		if (!cases[i].error) {
			CHECK_STR(err, "");
			CHECK_INT(end, len);
			continue;
		}
		snprintf(want, sizeof(want), "%s in frame at offset %zu", cases[i].error, 32 + k * fs);
		CHECK_STR(err, want);
		/* nothing from the bad frame on counts: the last commit before it ends the data */
		CHECK_INT(end, 32 + k * fs);
	}
	free(w);
	free(orig);
}

struct membuf {
	unsigned char *data;
	size_t len, cap;
};

static int mem_write(void *ctx, const void *buf, size_t len)
{
	struct membuf *m = ctx;
	if (m->len + len > m->cap) {
		m->cap = (m->len + len) * 2;
		m->data = realloc(m->data, m->cap);
	}
	memcpy(m->data + m->len, buf, len);
	m->len += len;
	return 0;
}

static void fill_pattern(unsigned char *p, size_t n)
{
	uint32_t x = 12345;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		/* half compressible, half noise */
		p[i] = (i / 4096) % 2 ? (unsigned char)(x >> 16) : (unsigned char)(i & 7);
	}
}

/* Compress plain through lz4_enc, read back in small pieces. */
static struct membuf encode(const unsigned char *plain, size_t n, enum lz4_blocks blocks)
{
	unsigned char chunk[1000];
	struct st_mem_source ms;
	struct st_source inner, src;
	struct lz4_enc enc;
	struct membuf packed = { 0 };
	st_mem_source_init(&inner, &ms, plain, n);
	CHECK_INT(lz4_enc_init(&enc, &src, &inner, blocks), 0);
	for (;;) {
		ssize_t r = src.read(src.ctx, chunk, sizeof(chunk));
		CHECK(r >= 0);
		if (r == 0)
			break;
		mem_write(&packed, chunk, (size_t)r);
	}
	CHECK_INT(enc.plain_bytes, n);
	lz4_enc_release(&enc);
	/* FLG: version 01, block independence as asked, content checksum; BD: 64 KiB */
	CHECK_INT(packed.data[4], blocks == LZ4_BLOCKS_LINKED ? 0x44 : 0x64);
	CHECK_INT(packed.data[5], 0x40);
	return packed;
}

static void round_trip(enum lz4_blocks blocks)
{
	size_t n = 3 * 1024 * 1024 + 17;
	unsigned char *plain = malloc(n);
	fill_pattern(plain, n);
	struct membuf packed = encode(plain, n, blocks), out = { 0 };

	/* decode with small writes */
	struct st_sink inner_sink = { mem_write, &out }, sink;
	struct lz4_dec dec;
	CHECK_INT(lz4_dec_init(&dec, &sink, &inner_sink), 0);
	for (size_t off = 0; off < packed.len; off += 333)
		CHECK_INT(sink.write(sink.ctx, packed.data + off, packed.len - off < 333 ? packed.len - off : 333), 0);
	CHECK_INT(lz4_dec_finish(&dec), 0);
	CHECK_INT(out.len, n);
	CHECK_MEM(out.data, plain, n);
	lz4_dec_release(&dec);

	/* truncated */
	out.len = 0;
	CHECK_INT(lz4_dec_init(&dec, &sink, &inner_sink), 0);
	CHECK_INT(sink.write(sink.ctx, packed.data, packed.len - 5), 0);
	CHECK_INT(lz4_dec_finish(&dec), -1);
	CHECK(strstr(dec.error, "truncated"));
	lz4_dec_release(&dec);

	/* corrupted content: the frame checksum (or block decoding) must catch it */
	packed.data[packed.len / 2] ^= 0x55;
	out.len = 0;
	CHECK_INT(lz4_dec_init(&dec, &sink, &inner_sink), 0);
	int w = sink.write(sink.ctx, packed.data, packed.len);
	CHECK(w < 0 || lz4_dec_finish(&dec) < 0);
	lz4_dec_release(&dec);
	free(plain);
}

TEST(lz4_stream_round_trip)
{
	round_trip(LZ4_BLOCKS_INDEPENDENT);
}

TEST(lz4_linked_stream_round_trip)
{
	round_trip(LZ4_BLOCKS_LINKED);
}

TEST(lz4_reads_4mib_blocks)
{
	/* Litestream writes 4 MiB blocks (pierrec/lz4 default) */
	size_t n = 9 * 1024 * 1024;
	unsigned char *plain = malloc(n);
	fill_pattern(plain, n);
	LZ4F_preferences_t p = { .frameInfo = { .blockSizeID = LZ4F_max4MB,
						.contentChecksumFlag = LZ4F_contentChecksumEnabled } };
	size_t cap = LZ4F_compressFrameBound(n, &p);
	unsigned char *packed = malloc(cap);
	size_t plen = LZ4F_compressFrame(packed, cap, plain, n, &p);
	CHECK(!LZ4F_isError(plen));
	struct membuf out = { 0 };
	struct st_sink inner = { mem_write, &out }, sink;
	struct lz4_dec dec;
	CHECK_INT(lz4_dec_init(&dec, &sink, &inner), 0);
	for (size_t off = 0; off < plen; off += 65536)
		CHECK_INT(sink.write(sink.ctx, packed + off, plen - off < 65536 ? plen - off : 65536), 0);
	CHECK_INT(lz4_dec_finish(&dec), 0);
	CHECK_INT(out.len, n);
	CHECK_MEM(out.data, plain, n);
	lz4_dec_release(&dec);
}

TEST(lz4_empty_input)
{
	struct st_mem_source ms;
	struct st_source inner, src;
	struct lz4_enc enc;
	unsigned char buf[256];
	size_t total = 0;
	st_mem_source_init(&inner, &ms, "", 0);
	CHECK_INT(lz4_enc_init(&enc, &src, &inner, LZ4_BLOCKS_INDEPENDENT), 0);
	for (ssize_t r; (r = src.read(src.ctx, buf + total, sizeof(buf) - total)) > 0;)
		total += (size_t)r;
	CHECK(total > 7);
	lz4_enc_release(&enc);
	struct membuf out = { 0 };
	struct st_sink inner_sink = { mem_write, &out }, sink;
	struct lz4_dec dec;
	CHECK_INT(lz4_dec_init(&dec, &sink, &inner_sink), 0);
	CHECK_INT(sink.write(sink.ctx, buf, total), 0);
	CHECK_INT(lz4_dec_finish(&dec), 0);
	CHECK_INT(out.len, 0);
	lz4_dec_release(&dec);
}

/* a zero-copy output lending buffers of a fixed room, into one growing memory buffer */
struct lender {
	struct membuf m;
	size_t room;          /* what each reserve() lends */
	unsigned char *lent;
	size_t reserves, fails_after;
};

static unsigned char *lend(void *ctx, size_t *cap)
{
	struct lender *l = ctx;
	if (l->fails_after && ++l->reserves > l->fails_after)
		return NULL;
	if (!l->lent)
		l->lent = malloc(l->room);
	*cap = l->room;
	return l->lent;
}

static int take_back(void *ctx, size_t n)
{
	struct lender *l = ctx;
	CHECK(n <= l->room);
	return mem_write(&l->m, l->lent, n);
}

/* Release a decoder and the lender's memory. */
static void done_with(struct lender *l, struct lz4_dec *dec)
{
	lz4_dec_release(dec);
	free(l->m.data);
	free(l->lent);
}

static unsigned char *frame_of(const unsigned char *plain, size_t n, LZ4F_blockSizeID_t bs,
			       bool block_checksums, size_t *plen)
{
	LZ4F_preferences_t p = { .frameInfo = { .blockSizeID = bs,
						.blockChecksumFlag = block_checksums ? LZ4F_blockChecksumEnabled : LZ4F_noBlockChecksum,
						.contentChecksumFlag = LZ4F_contentChecksumEnabled } };
	size_t cap = LZ4F_compressFrameBound(n, &p);
	unsigned char *packed = malloc(cap);
	*plen = LZ4F_compressFrame(packed, cap, plain, n, &p);
	CHECK(!LZ4F_isError(*plen));
	return packed;
}

/* decode packed through the direct output in pieces of `piece` bytes */
static int decode_direct(const unsigned char *packed, size_t plen, size_t piece, struct lender *l,
			 bool defer, struct lz4_dec *dec)
{
	struct lz4_out out = { lend, take_back, l };
	struct st_sink sink;
	CHECK_INT(lz4_dec_init_direct(dec, &sink, &out), 0);
	if (defer)
		lz4_dec_defer_checksum(dec);
	for (size_t off = 0; off < plen; off += piece)
		if (sink.write(sink.ctx, packed + off, plen - off < piece ? plen - off : piece) < 0)
			return -1;
	return lz4_dec_finish(dec);
}

TEST(lz4_direct_output_any_room)
{
	size_t n = 9 * 1024 * 1024 + 123;
	unsigned char *plain = malloc(n);
	fill_pattern(plain, n);
	size_t plen;
	unsigned char *packed = frame_of(plain, n, LZ4F_max4MB, false, &plen);
	/* room below the block size (LZ4F's own buffer, then copied), and a whole block */
	size_t rooms[] = { 1, 1000, 65536, 4u << 20, (4u << 20) + 7 };
	for (size_t i = 0; i < sizeof(rooms) / sizeof(rooms[0]); i++) {
		struct lender l = { .room = rooms[i] };
		struct lz4_dec dec;
		/* a 1-byte room is a byte per call: a prefix of the frame is enough */
		size_t want = rooms[i] == 1 ? 100000 : n;
		if (rooms[i] == 1) {
			struct lz4_out out = { lend, take_back, &l };
			struct st_sink sink;
			CHECK_INT(lz4_dec_init_direct(&dec, &sink, &out), 0);
			for (size_t off = 0; l.m.len < want; off += 64)
				CHECK_INT(sink.write(sink.ctx, packed + off, 64), 0);
			CHECK_MEM(l.m.data, plain, l.m.len);
		} else {
			CHECK_INT(decode_direct(packed, plen, 65536, &l, false, &dec), 0);
			CHECK(!dec.checksum_deferred);
			CHECK_INT(l.m.len, want);
			CHECK_MEM(l.m.data, plain, n);
			CHECK_INT(dec.plain_bytes, n);
		}
		done_with(&l, &dec);
	}
	/* the lender failing is an error of the decoder, not a crash */
	struct lender l = { .room = 65536, .fails_after = 3 };
	struct lz4_dec dec;
	CHECK_INT(decode_direct(packed, plen, 65536, &l, false, &dec), -1);
	CHECK(strstr(dec.error, "writing decompressed data failed"));
	done_with(&l, &dec);
	free(packed);
	free(plain);
}

TEST(lz4_deferred_checksum_is_the_frames)
{
	size_t n = 5 * 1024 * 1024 + 99;
	unsigned char *plain = malloc(n);
	fill_pattern(plain, n);
	size_t plen;
	unsigned char *packed = frame_of(plain, n, LZ4F_max4MB, false, &plen);
	size_t pieces[] = { 1, 3, 4096, 1u << 20 };
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		/* tiny writes: too short to see the header at once, so checked here as usual */
		size_t m = pieces[i] < 5 ? 70000 : n, mlen;
		unsigned char *mp = pieces[i] < 5 ? frame_of(plain, m, LZ4F_max4MB, false, &mlen) : packed;
		if (mp == packed)
			mlen = plen;
		struct lender l = { .room = 4u << 20 };
		struct lz4_dec dec;
		CHECK_INT(decode_direct(mp, mlen, pieces[i], &l, true, &dec), 0);
		CHECK_INT(dec.checksum_deferred, pieces[i] >= 5);
		CHECK_INT(l.m.len, m);
		CHECK_MEM(l.m.data, plain, m);
		if (dec.checksum_deferred)
			CHECK_INT(dec.content_checksum, xxh32(plain, m, 0));
		if (mp != packed)
			free(mp);
		done_with(&l, &dec);
	}
	/* a wrong checksum: deferred, the decoder accepts and the caller's hash differs */
	packed[plen - 1] ^= 0x01;
	struct lender l = { .room = 4u << 20 };
	struct lz4_dec dec;
	CHECK_INT(decode_direct(packed, plen, 65536, &l, true, &dec), 0);
	CHECK(dec.checksum_deferred);
	CHECK(dec.content_checksum != xxh32(l.m.data, l.m.len, 0));
	done_with(&l, &dec);
	/* not deferred: the decoder itself refuses it */
	l = (struct lender){ .room = 4u << 20 };
	CHECK_INT(decode_direct(packed, plen, 65536, &l, false, &dec), -1);
	done_with(&l, &dec);
	free(packed);

	/* block checksums present: never deferred (LZ4F would skip those too) */
	packed = frame_of(plain, n, LZ4F_max64KB, true, &plen);
	l = (struct lender){ .room = 65536 };
	CHECK_INT(decode_direct(packed, plen, 65536, &l, true, &dec), 0);
	CHECK(!dec.checksum_deferred);
	CHECK_MEM(l.m.data, plain, n);
	done_with(&l, &dec);
	free(packed);
	free(plain);
}

/*
 * WAL-like data: 4 KiB pages, each a slightly changed copy of the one 8 KiB
 * before it (a table page rewritten by each commit). Linked blocks find the
 * previous copy across a block boundary too; independent ones lose it at the
 * start of every block. The zero-copy decoder keeps the history although
 * every block lands in the same reused buffer.
 */
TEST(lz4_linked_blocks_are_smaller_on_wal_like_data)
{
	size_t page = 4096, n = 600 * page;
	unsigned char *plain = malloc(n);
	uint32_t x = 99;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245 + 12345;
		plain[i] = i < 2 * page || x % 50 == 0 ? (unsigned char)(x >> 16) : plain[i - 2 * page];
	}
	struct membuf ind = encode(plain, n, LZ4_BLOCKS_INDEPENDENT);
	struct membuf lnk = encode(plain, n, LZ4_BLOCKS_LINKED);
	CHECK(lnk.len * 10 < ind.len * 9);
	size_t rooms[] = { 1000, 65536, 100000 };
	for (size_t i = 0; i < sizeof(rooms) / sizeof(rooms[0]); i++) {
		struct lender l = { .room = rooms[i] };
		struct lz4_dec dec;
		CHECK_INT(decode_direct(lnk.data, lnk.len, 777, &l, false, &dec), 0);
		CHECK_INT(l.m.len, n);
		CHECK_MEM(l.m.data, plain, n);
		done_with(&l, &dec);
	}
	free(ind.data);
	free(lnk.data);
	free(plain);
}

UNIT_MAIN(T(layout_names), T(wal_placeholder_is_a_valid_header_sqlite_never_writes), T(wal_reader_accepts_sqlite_wal), T(wal_reader_detects_corruption),
	  T(wal_reader_checks_page_numbers),
	  T(lz4_stream_round_trip), T(lz4_linked_stream_round_trip), T(lz4_reads_4mib_blocks), T(lz4_empty_input),
	  T(lz4_direct_output_any_room), T(lz4_deferred_checksum_is_the_frames),
	  T(lz4_linked_blocks_are_smaller_on_wal_like_data))
