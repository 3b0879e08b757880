/* Unit tests for the replica format primitives: layout names, WAL validation, LZ4 streaming. */
#include "tests/unit/unit.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "replication/layout.h"
#include "replication/lz4io.h"
#include "replication/wal.h"

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
	CHECK_INT(layout_generation_new(gen), 0);
	CHECK(layout_generation_valid(gen));
	CHECK(!layout_generation_valid("0123456789ABCDEF"));
	CHECK(!layout_generation_valid("0123456789abcde"));
}

/* Write n rows into a fresh WAL-mode database kept with its -wal; return the WAL's bytes. */
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
	return buf;
}

static char *tmpdir(void)
{
	static char d[] = "/tmp/litevisor-unit-XXXXXX";
	CHECK(mkdtemp(d) != NULL);
	return d;
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

TEST(lz4_stream_round_trip)
{
	size_t n = 3 * 1024 * 1024 + 17;
	unsigned char *plain = malloc(n), chunk[1000];
	fill_pattern(plain, n);
	struct st_mem_source ms;
	struct st_source inner, src;
	struct lz4_enc enc;
	struct membuf packed = { 0 }, out = { 0 };
	st_mem_source_init(&inner, &ms, plain, n);
	CHECK_INT(lz4_enc_init(&enc, &src, &inner), 0);
	for (;;) {
		ssize_t r = src.read(src.ctx, chunk, sizeof(chunk));
		CHECK(r >= 0);
		if (r == 0)
			break;
		mem_write(&packed, chunk, (size_t)r);
	}
	CHECK_INT(enc.plain_bytes, n);
	lz4_enc_release(&enc);

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
	CHECK_INT(lz4_enc_init(&enc, &src, &inner), 0);
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

UNIT_MAIN(T(layout_names), T(wal_reader_accepts_sqlite_wal), T(wal_reader_detects_corruption),
	  T(lz4_stream_round_trip), T(lz4_reads_4mib_blocks), T(lz4_empty_input))
