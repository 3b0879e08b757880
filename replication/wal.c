/* wal.c — SQLite WAL header/frame parsing and checksum-chain validation. */
#include "replication/wal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

void wal_checksum(bool big_endian, const uint8_t *data, size_t len, uint32_t *s1, uint32_t *s2)
{
	uint32_t a = *s1, b = *s2;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint32_t x0, x1;
		if (big_endian) {
			x0 = wal_get32(data + i);
			x1 = wal_get32(data + i + 4);
		} else {
			x0 = (uint32_t)data[i] | (uint32_t)data[i + 1] << 8 |
			     (uint32_t)data[i + 2] << 16 | (uint32_t)data[i + 3] << 24;
			x1 = (uint32_t)data[i + 4] | (uint32_t)data[i + 5] << 8 |
			     (uint32_t)data[i + 6] << 16 | (uint32_t)data[i + 7] << 24;
		}
		a += x0 + b;
		b += x1 + a;
	}
	*s1 = a;
	*s2 = b;
}

void wal_header_placeholder(uint8_t buf[WAL_HEADER_SIZE], uint32_t page_size)
{
	uint32_t s1 = 0, s2 = 0;
	memset(buf, 0, WAL_HEADER_SIZE);
	wal_put32(buf, WAL_MAGIC_LE);
	wal_put32(buf + 4, 3007000);
	wal_put32(buf + 8, page_size);
	wal_checksum(false, buf, 24, &s1, &s2);
	wal_put32(buf + 24, s1);
	wal_put32(buf + 28, s2);
}

bool wal_header_is_placeholder(const uint8_t buf[WAL_HEADER_SIZE])
{
	return wal_get32(buf + 16) == 0 && wal_get32(buf + 20) == 0;
}

int wal_header_parse(const uint8_t buf[WAL_HEADER_SIZE], struct wal_header *h, char *why,
		     size_t whylen)
{
	uint32_t s1 = 0, s2 = 0;

	h->magic = wal_get32(buf);
	h->version = wal_get32(buf + 4);
	h->page_size = wal_get32(buf + 8);
	h->checkpoint_seq = wal_get32(buf + 12);
	h->salt1 = wal_get32(buf + 16);
	h->salt2 = wal_get32(buf + 20);
	h->cksum1 = wal_get32(buf + 24);
	h->cksum2 = wal_get32(buf + 28);
	if (h->magic != WAL_MAGIC_LE && h->magic != WAL_MAGIC_BE) {
		snprintf(why, whylen, "bad WAL magic 0x%08x", h->magic);
		return -1;
	}
	if (h->version != 3007000) {
		snprintf(why, whylen, "unsupported WAL format version %u", h->version);
		return -1;
	}
	/* SQLite writes 65536 as 1 in the database header, but as-is in the WAL */
	if (h->page_size < 512 || h->page_size > WAL_MAX_PAGE_SIZE ||
	    (h->page_size & (h->page_size - 1))) {
		snprintf(why, whylen, "invalid WAL page size %u", h->page_size);
		return -1;
	}
	wal_checksum(h->magic & 1, buf, 24, &s1, &s2);
	if (s1 != h->cksum1 || s2 != h->cksum2) {
		snprintf(why, whylen, "WAL header checksum mismatch");
		return -1;
	}
	return 0;
}

void wal_frame_header_parse(const uint8_t buf[WAL_FRAME_HEADER_SIZE], struct wal_frame_header *f)
{
	f->pgno = wal_get32(buf);
	f->commit = wal_get32(buf + 4);
	f->salt1 = wal_get32(buf + 8);
	f->salt2 = wal_get32(buf + 12);
	f->cksum1 = wal_get32(buf + 16);
	f->cksum2 = wal_get32(buf + 20);
}

int wal_reader_init(struct wal_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->buf = malloc(WAL_FRAME_HEADER_SIZE + WAL_MAX_PAGE_SIZE);
	return r->buf ? 0 : -1;
}

int wal_reader_init_at(struct wal_reader *r, const struct wal_header *h, uint64_t offset,
		       uint32_t s1, uint32_t s2)
{
	if (wal_reader_init(r) < 0)
		return -1;
	r->hdr = *h;
	r->have_header = true;
	r->offset = offset;
	r->s1 = s1;
	r->s2 = s2;
	r->commit_end = offset;
	r->commit_s1 = s1;
	r->commit_s2 = s2;
	return 0;
}

/* Mark the stream failed at the frame starting at r->offset. */
static int fail(struct wal_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct wal_reader *r, const char *fmt, ...)
{
	char what[112];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	r->failed = true;
	snprintf(r->error, sizeof(r->error), "WAL %s in frame at offset %llu", what,
		 (unsigned long long)r->offset);
	return -1;
}

/*
 * Page numbers SQLite itself could have written. Its recovery stops at a
 * frame for page 0, and its checkpoint skips a frame for a page beyond the
 * database size of the last commit, so a frame with such a number that passes
 * the checksums would lose its change without a word. SQLite never puts a
 * page past the size a commit frame declares into that frame (pagerWalFrames
 * leaves such pages out); a frame before the commit may hold one (a page
 * spilled, then the file shrunk), and SQLite rightly skips it.
 */
static int check_pages(struct wal_reader *r, const struct wal_frame_header *f)
{
	if (f->pgno == 0)
		return fail(r, "page number 0");
	if (f->pgno > WAL_MAX_PGNO)
		return fail(r, "page number %u (SQLite's largest is %u)", f->pgno, WAL_MAX_PGNO);
	if (f->commit > WAL_MAX_PGNO)
		return fail(r, "database size of %u pages in a commit (SQLite's largest is %u)",
			    f->commit, WAL_MAX_PGNO);
	if (f->commit && f->pgno > f->commit)
		return fail(r, "page number %u beyond the commit's database size (%u pages)", f->pgno,
			    f->commit);
	return 0;
}

/* Validate the assembled header or frame in r->buf. */
static int accept_unit(struct wal_reader *r)
{
	if (!r->have_header) {
		char why[96];
		if (wal_header_parse(r->buf, &r->hdr, why, sizeof(why)) < 0) {
			r->failed = true;
			snprintf(r->error, sizeof(r->error), "%s", why);
			return -1;
		}
		r->have_header = true;
		r->s1 = r->hdr.cksum1;
		r->s2 = r->hdr.cksum2;
		r->offset = WAL_HEADER_SIZE;
		r->commit_end = WAL_HEADER_SIZE;
		r->commit_s1 = r->s1;
		r->commit_s2 = r->s2;
		return 0;
	}
	struct wal_frame_header f;
	uint32_t s1 = r->s1, s2 = r->s2;
	bool be = r->hdr.magic & 1;

	wal_frame_header_parse(r->buf, &f);
	if (f.salt1 != r->hdr.salt1 || f.salt2 != r->hdr.salt2)
		return fail(r, "salt mismatch");
	wal_checksum(be, r->buf, 8, &s1, &s2);
	wal_checksum(be, r->buf + WAL_FRAME_HEADER_SIZE, r->hdr.page_size, &s1, &s2);
	if (s1 != f.cksum1 || s2 != f.cksum2)
		return fail(r, "checksum mismatch");
	if (check_pages(r, &f) < 0)
		return -1;
	r->s1 = s1;
	r->s2 = s2;
	r->offset += wal_frame_size(r->hdr.page_size);
	r->frames++;
	if (f.commit) {
		r->commit_end = r->offset;
		r->commit_pages = f.commit;
		r->commits++;
		r->commit_s1 = s1;
		r->commit_s2 = s2;
	}
	return 0;
}

int wal_reader_feed(struct wal_reader *r, const void *data, size_t len)
{
	const uint8_t *p = data;
	if (r->failed)
		return -1;
	while (len > 0) {
		size_t unit = r->have_header ? wal_frame_size(r->hdr.page_size) : WAL_HEADER_SIZE;
		size_t n = unit - r->fill;
		if (n > len)
			n = len;
		memcpy(r->buf + r->fill, p, n);
		r->fill += n;
		p += n;
		len -= n;
		if (r->fill == unit) {
			r->fill = 0;
			if (accept_unit(r) < 0)
				return -1;
		}
	}
	return 0;
}

void wal_reader_release(struct wal_reader *r)
{
	free(r->buf);
	r->buf = NULL;
}
