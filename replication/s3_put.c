/*
 * s3_put.c — PutObject without ever holding the object in memory.
 *
 *   size known, < 256 KiB    one PUT, body in memory, its SHA-256 signed;
 *   size known, < 5 MiB      one PUT streamed from the source, retried only if
 *                            the source can rewind; a source that can seek (a
 *                            shared snapshot file) is read once first, its
 *                            SHA-256 signed and its Content-MD5 sent, so the
 *                            server rejects a body damaged on the way (and it
 *                            is sent again); others go UNSIGNED-PAYLOAD;
 *   otherwise                multipart: each part's SHA-256 is computed, then
 *                            the part is uploaded (and retried) from a source
 *                            that can seek (a file: a shared snapshot) or else
 *                            from a copy spooled to an anonymous temporary file
 *                            (O_TMPFILE in $TMPDIR or /tmp); an unknown-size
 *                            source that turns out small becomes a single PUT.
 * A failed multipart upload is aborted so no orphan parts are billed.
 * Memory use: one 64 KiB buffer and the list of part ETags.
 */
#include "replication/s3.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "replication/s3_xml.h"
#include "common/banned.h"

#define COPY_CHUNK (64 * 1024)
#define MAX_PARTS 10000
#define ABORT_DEADLINE_MS 10000

/* The current part: a copy in the spool file (fd), or [start, start + len) of a seekable src. */
struct spool {
	int fd;       /* -1: the part is read from src itself */
	const struct st_source *src;
	int64_t start; /* window mode: the part's offset in src */
	int64_t len;  /* bytes in the current part */
	int64_t pos;  /* read position while uploading */
	char hash[S3_SHA256_HEX_LEN + 1];
};

static ssize_t spool_read(void *ctx, void *buf, size_t len)
{
	struct spool *s = ctx;
	if ((int64_t)len > s->len - s->pos)
		len = (size_t)(s->len - s->pos);
	if (len == 0)
		return 0;
	ssize_t n = s->fd >= 0 ? pread(s->fd, buf, len, s->pos) : s->src->read(s->src->ctx, buf, len);
	if (n == 0) {
		errno = EIO; /* shorter than when it was hashed */
		return -1;
	}
	if (n > 0)
		s->pos += n;
	return n;
}

static int spool_rewind(void *ctx)
{
	struct spool *s = ctx;
	s->pos = 0;
	return s->fd >= 0 ? 0 : s->src->seek(s->src->ctx, s->start);
}

/* Where spools go: $TMPDIR, or /tmp. */
static const char *spool_dir(void)
{
	const char *dir = getenv("TMPDIR");
	return dir && *dir ? dir : "/tmp";
}

/* A spool in spool_dir() with no name: nothing is left behind. */
static int spool_open(void)
{
	return fs_open_unnamed(spool_dir(), "litevisor-s3-");
}

/*
 * Read up to want bytes of the source into the spool (replacing the previous
 * part) and hash them; in window mode, hash the source's next want bytes in
 * place and go back to where they start. *eof is set when the source ended.
 * Returns 0, or -1 with err set.
 */
static int spool_fill(struct spool *s, const struct st_source *src, int64_t want, unsigned char *buf,
		      bool *eof, const char *key, struct st_error *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char digest[32];
	char eb[128];
	int rc = -1;

	if (s->fd < 0)
		s->start += s->len;
	s->len = s->pos = 0;
	*eof = false;
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		st_error_set(err, ST_TRANSIENT, 0, "put %s: out of memory", key);
		goto out;
	}
	if (s->fd < 0 && src->seek(src->ctx, s->start) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "put %s: seeking the source: %s", key,
			     strerror_r(errno, eb, sizeof(eb)));
		goto out;
	}
	if (s->fd >= 0 && ftruncate(s->fd, 0) < 0) {
		st_error_set(err, ST_TRANSIENT, 0, "put %s: spool file: %s", key, strerror_r(errno, eb, sizeof(eb)));
		goto out;
	}
	while (s->len < want) {
		size_t n = want - s->len < COPY_CHUNK ? (size_t)(want - s->len) : COPY_CHUNK;
		ssize_t got = src->read(src->ctx, buf, n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			st_error_set(err, ST_PERMANENT, 0, "put %s: reading the source: %s", key,
				     strerror_r(errno, eb, sizeof(eb)));
			goto out;
		}
		if (got == 0) {
			*eof = true;
			break;
		}
		for (ssize_t off = 0; s->fd >= 0 && off < got;) {
			ssize_t w = pwrite(s->fd, buf + off, (size_t)(got - off), s->len + off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				/* a full local disk is worth retrying later, like a full replica */
				st_error_set(err, errno == ENOSPC ? ST_TRANSIENT : ST_PERMANENT, 0,
					     "put %s: spool file in %s ($TMPDIR, or /tmp): %s", key,
					     spool_dir(), strerror_r(errno, eb, sizeof(eb)));
				goto out;
			}
			off += w;
		}
		EVP_DigestUpdate(md, buf, (size_t)got);
		s->len += got;
	}
	if (s->fd < 0 && s->start + s->len == src->size)
		*eof = true; /* no read past the end needed to know it */
	if (s->fd < 0 && src->seek(src->ctx, s->start) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "put %s: seeking the source: %s", key,
			     strerror_r(errno, eb, sizeof(eb)));
		goto out;
	}
	EVP_DigestFinal_ex(md, digest, NULL);
	s3_hex(digest, 32, s->hash);
	rc = 0;
out:
	EVP_MD_CTX_free(md);
	return rc;
}

/* Upload the spool as one PUT (the whole object, or one part when upload_id is set).
 * A whole object keeps ctl->create_only (If-None-Match: *); a part cannot carry it:
 * the multipart upload's completion does. */
static int put_spool(struct s3 *s3, const char *full, struct spool *s, const char *upload_id, int part,
		     struct s3_resp *resp, const struct s3_ctl *ctl, struct st_error *err)
{
	char num[16];
	snprintf(num, sizeof(num), "%d", part);
	struct s3_kv q[] = { { "partNumber", num }, { "uploadId", upload_id } };
	struct s3_req req = {
		.op = upload_id ? "upload part" : "put", .method = "PUT", .key = full,
		.query = upload_id ? q : NULL, .nquery = upload_id ? 2 : 0,
		.read = spool_read, .rewind = spool_rewind, .read_ctx = s, .read_len = s->len,
		.payload_hash = s->hash, .big = true, .if_none_match = !upload_id && ctl->create_only,
	};
	s->pos = 0;
	return s3_request(s3, &req, resp, ctl, err);
}

struct upload_id_ctx {
	char id[1024];
	bool found;
};

static int upload_id_cb(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	struct upload_id_ctx *u = ctx;
	if (ev == S3_XML_CLOSE && !strcmp(path, "InitiateMultipartUploadResult/UploadId") &&
	    len > 0 && len < sizeof(u->id)) {
		memcpy(u->id, text, len);
		u->id[len] = '\0';
		u->found = true;
	}
	return 0;
}

static int initiate(struct s3 *s3, const char *full, char *id, size_t idlen, int64_t *date_ns,
		    const struct s3_ctl *ctl, struct st_error *err)
{
	struct s3_resp resp;
	struct upload_id_ctx u = { .found = false };
	struct s3_kv q[] = { { "uploads", "" } };
	struct s3_req req = { .op = "initiate multipart upload", .method = "POST", .key = full,
			      .query = q, .nquery = 1, .read_len = -1,
			      .xml_root = "InitiateMultipartUploadResult" };
	int rc;
	s3_resp_init(&resp);
	rc = s3_request(s3, &req, &resp, ctl, err);
	if (rc == 0 && (s3_xml_parse(resp.body.data, resp.body.len, upload_id_cb, &u, NULL, 0) != 0 || !u.found)) {
		rc = ST_PERMANENT;
		st_error_set(err, rc, (int)resp.status, "initiate multipart upload %s/%s: no UploadId in the answer",
			     s3->bucket, full);
	}
	if (rc == 0)
		snprintf(id, idlen, "%s", u.id);
	*date_ns = resp.date_ns;
	s3_resp_release(&resp);
	return rc;
}

/* A hex digit's value, or -1. */
static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/*
 * The ETag S3 gives the object completed from these parts: the MD5 of their
 * MD5s, "-N" (AWS, MinIO; parts whose ETag is no plain MD5, as under
 * SSE-KMS, give none). Returns 0 with out set ("<32 hex>-N"), or -1.
 */
static int multipart_etag(char **etags, int nparts, char *out, size_t outlen)
{
	EVP_MD_CTX *m5 = EVP_MD_CTX_new();
	unsigned char d[16];
	int rc = -1;
	if (!m5 || !EVP_DigestInit_ex(m5, EVP_md5(), NULL))
		goto out;
	for (int i = 0; i < nparts; i++) {
		const char *e = etags[i] + (etags[i][0] == '"');
		size_t n = strlen(e) - (e[0] && e[strlen(e) - 1] == '"');
		if (n != 32)
			goto out;
		for (int k = 0; k < 16; k++) {
			int hi = hexval(e[2 * k]), lo = hexval(e[2 * k + 1]);
			if (hi < 0 || lo < 0)
				goto out;
			d[k] = (unsigned char)(hi << 4 | lo);
		}
		if (!EVP_DigestUpdate(m5, d, sizeof(d)))
			goto out;
	}
	if (!EVP_DigestFinal_ex(m5, d, NULL))
		goto out;
	char hex[33];
	for (int k = 0; k < 16; k++)
		snprintf(hex + 2 * k, 3, "%02x", d[k]);
	snprintf(out, outlen, "%s-%d", hex, nparts);
	rc = 0;
out:
	EVP_MD_CTX_free(m5);
	return rc;
}

/*
 * A completion that failed may have been done all the same: its answer was
 * lost or cut (S3 answers 200 at once and its result when done), and the
 * retry found the upload gone (NoSuchUpload; a 500 on some servers). The
 * object is ours when it has the upload's size and either
 * the ETag its parts give (AWS, MinIO) or a Last-Modified no older than the
 * upload's start by the server's own Date (servers whose ETag is the whole
 * object's MD5). One HEAD, on a failure path only.
 */
static bool completed_anyway(struct s3 *s3, const char *full, char **etags, int nparts,
			     int64_t total, int64_t started_ns, const struct s3_ctl *ctl)
{
	char want[64] = "";
	struct s3_resp resp;
	struct st_error err = { 0 };
	if (multipart_etag(etags, nparts, want, sizeof(want)) < 0)
		want[0] = '\0';
	s3_resp_init(&resp);
	bool ours = false;
	if (s3_head_once(s3, full, ctl, &resp, &err) == 0 && resp.content_length == total) {
		const char *e = resp.etag + (resp.etag[0] == '"');
		size_t n = strlen(e) - (e[0] && e[strlen(e) - 1] == '"');
		ours = (want[0] && n == strlen(want) && !strncasecmp(e, want, n)) ||
		       (started_ns > 0 && resp.last_modified_ns >= started_ns);
	}
	s3_resp_release(&resp);
	if (ours)
		log_info("s3", "the multipart upload's completion failed, but the object is there, whole: "
			 "done", "bucket=%s key=\"%s\" bytes=%lld", s3->bucket, full, (long long)total);
	return ours;
}

static int complete(struct s3 *s3, const char *full, const char *id, char **etags, int nparts,
		    int64_t total, int64_t started_ns, const struct s3_ctl *ctl, struct st_error *err)
{
	struct s3_buf body = S3_BUF_INIT(4 * 1024 * 1024);
	struct s3_resp resp;
	char code[96], msg[200];
	int rc;
	s3_resp_init(&resp);
	if (s3_buf_adds(&body, "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">") < 0)
		goto nomem;
	for (int i = 0; i < nparts; i++)
		if (s3_buf_addf(&body, "<Part><PartNumber>%d</PartNumber><ETag>", i + 1) < 0 ||
		    s3_xml_escape(&body, etags[i]) < 0 || s3_buf_adds(&body, "</ETag></Part>") < 0)
			goto nomem;
	if (s3_buf_adds(&body, "</CompleteMultipartUpload>") < 0)
		goto nomem;
	struct s3_kv q[] = { { "uploadId", id } };
	struct s3_req req = { .op = "complete multipart upload", .method = "POST", .key = full,
			      .query = q, .nquery = 1, .content_type = "application/xml",
			      .body = body.data, .body_len = body.len, .read_len = -1,
			      .slow_answer = true, .if_none_match = ctl->create_only,
			      .xml_root = "CompleteMultipartUploadResult" };
	rc = s3_request(s3, &req, &resp, ctl, err);
	/* S3 may answer 200 and still fail: the error is then in the body */
	if (rc == 0 && s3_xml_error(resp.body.data, resp.body.len, code, sizeof(code), msg, sizeof(msg)) == 0) {
		rc = !strcmp(code, "InternalError") || !strcmp(code, "SlowDown") ? ST_TRANSIENT : ST_PERMANENT;
		st_error_set(err, rc, (int)resp.status, "complete multipart upload %s/%s: %s: %s", s3->bucket,
			     full, code, msg);
	} else if (rc == 0 && !s3_xml_root_is(resp.body.data, resp.body.len,
					      "CompleteMultipartUploadResult")) {
		/* nor is anything else the object written: whether it is, completed_anyway asks (QA91 D3) */
		rc = ST_TRANSIENT;
		st_error_set(err, rc, (int)resp.status, "complete multipart upload %s/%s: HTTP %ld "
			     "without a CompleteMultipartUploadResult (%zu bytes)", s3->bucket, full,
			     resp.status, resp.body.len);
	}
	/* (not after If-None-Match's 412: the object there may be another's, of the same size) */
	if (rc != 0 && rc != ST_AUTH && rc != ST_EXISTS &&
	    completed_anyway(s3, full, etags, nparts, total, started_ns, ctl)) {
		rc = 0;
		st_error_set(err, 0, 0, "%s", "");
	}
	goto out;
nomem:
	rc = ST_TRANSIENT;
	st_error_set(err, rc, 0, "complete multipart upload %s/%s: out of memory", s3->bucket, full);
out:
	s3_resp_release(&resp);
	s3_buf_release(&body);
	return rc;
}

static void abort_upload(struct s3 *s3, const char *full, const char *id)
{
	struct s3_resp resp;
	struct st_error err = { 0 };
	struct s3_kv q[] = { { "uploadId", id } };
	struct s3_req req = { .op = "abort multipart upload", .method = "DELETE", .key = full,
			      .query = q, .nquery = 1, .read_len = -1 };
	struct st_call call = { .deadline_ms = ABORT_DEADLINE_MS };
	struct s3_ctl ctl;
	s3_ctl_init(&ctl, &call);
	s3_resp_init(&resp);
	if (s3_request(s3, &req, &resp, &ctl, &err) != 0)
		log_warn("s3", "multipart upload not aborted", "bucket=%s key=\"%s\" cause=\"%s\"",
			 s3->bucket, full, err.message);
	s3_resp_release(&resp);
}

/* Part n's size: grows every 1000 parts so an unknown-size stream fits in 10,000 parts. */
static int64_t part_size(const struct st_source *src, int n)
{
	if (src->size >= 0) {
		int64_t need = (src->size + MAX_PARTS - 1) / MAX_PARTS;
		return need > S3_PART_SIZE ? need : S3_PART_SIZE;
	}
	return S3_PART_SIZE * (1 + (n - 1) / 1000);
}

static int put_multipart(struct s3 *s3, const char *full, const char *key, const struct st_source *src,
			 const struct s3_ctl *ctl, struct st_error *err)
{
	struct spool sp = { .fd = -1 };
	struct s3_resp resp;
	unsigned char *buf = malloc(COPY_CHUNK);
	char **etags = NULL, upload_id[1024] = "", eb[128];
	int nparts = 0, rc;
	int64_t total = 0, started_ns = 0; /* the server's Date when the upload began */
	bool eof = false;

	s3_resp_init(&resp);
	if (!buf || !(etags = calloc(MAX_PARTS, sizeof(*etags)))) {
		rc = ST_TRANSIENT;
		st_error_set(err, rc, 0, "put %s/%s: out of memory", s3->bucket, full);
		goto out;
	}
	sp.src = src;
	if (!(src->seek && src->size >= 0) && (sp.fd = spool_open()) < 0) {
		rc = ST_TRANSIENT;
		st_error_set(err, rc, 0, "put %s/%s: cannot create a spool file in %s ($TMPDIR, or "
			     "/tmp): %s", s3->bucket, full, spool_dir(), strerror_r(errno, eb, sizeof(eb)));
		goto out;
	}
	if (spool_fill(&sp, src, part_size(src, 1), buf, &eof, key, err) < 0) {
		rc = err->status;
		goto out;
	}
	if (eof && sp.len < S3_SINGLE_PUT_MAX) {
		if (src->size >= 0 && sp.len != src->size)
			goto short_source;
		rc = put_spool(s3, full, &sp, NULL, 0, &resp, ctl, err);
		goto out;
	}
	if ((rc = initiate(s3, full, upload_id, sizeof(upload_id), &started_ns, ctl, err)) != 0)
		goto out;
	for (;;) {
		if (nparts >= MAX_PARTS) {
			rc = ST_PERMANENT;
			st_error_set(err, rc, 0, "put %s/%s: more than %d parts", s3->bucket, full, MAX_PARTS);
			goto abort;
		}
		if ((rc = put_spool(s3, full, &sp, upload_id, nparts + 1, &resp, ctl, err)) != 0)
			goto abort;
		if (!resp.etag[0]) {
			rc = ST_PERMANENT;
			st_error_set(err, rc, (int)resp.status, "upload part %s/%s: no ETag in the answer to part %d",
				     s3->bucket, full, nparts + 1);
			goto abort;
		}
		if (!(etags[nparts] = strdup(resp.etag))) {
			rc = ST_TRANSIENT;
			st_error_set(err, rc, 0, "put %s/%s: out of memory", s3->bucket, full);
			goto abort;
		}
		nparts++;
		total += sp.len;
		if (eof)
			break;
		if (spool_fill(&sp, src, part_size(src, nparts + 1), buf, &eof, key, err) < 0) {
			rc = err->status;
			goto abort;
		}
		if (sp.len == 0)
			break;
	}
	if (src->size >= 0 && total != src->size)
		goto short_source;
	if ((rc = complete(s3, full, upload_id, etags, nparts, total, started_ns, ctl, err)) != 0)
		goto abort;
	goto out;
short_source:
	rc = ST_PERMANENT;
	st_error_set(err, rc, 0, "put %s/%s: source gave %lld bytes, expected %lld", s3->bucket, full,
		     (long long)(total ? total : sp.len), (long long)src->size);
abort:
	if (upload_id[0])
		abort_upload(s3, full, upload_id);
out:
	if (sp.fd >= 0)
		close(sp.fd);
	if (etags)
		for (int i = 0; i < nparts; i++)
			free(etags[i]);
	free(etags);
	free(buf);
	s3_resp_release(&resp);
	return rc;
}

/*
 * The SHA-256 (hex, signed) and MD5 (base64, Content-MD5) of a seekable
 * source of known size, read once from the start and sought back there.
 * Returns 0, or -1 with err set.
 */
static int hash_source(const struct st_source *src, const char *key, char hex[S3_SHA256_HEX_LEN + 1],
		       char md5_b64[32], struct st_error *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new(), *m5 = EVP_MD_CTX_new();
	unsigned char *buf = malloc(COPY_CHUNK), digest[32], d5[16];
	int64_t total = 0;
	char eb[128];
	int rc = -1;

	if (!md || !m5 || !buf || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
	    !EVP_DigestInit_ex(m5, EVP_md5(), NULL)) {
		st_error_set(err, ST_TRANSIENT, 0, "put %s: out of memory", key);
		goto out;
	}
	if (src->seek(src->ctx, 0) < 0)
		goto fail;
	for (;;) {
		ssize_t n = src->read(src->ctx, buf, COPY_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		EVP_DigestUpdate(md, buf, (size_t)n);
		EVP_DigestUpdate(m5, buf, (size_t)n);
		total += n;
	}
	if (total != src->size) {
		st_error_set(err, ST_PERMANENT, 0, "put %s: source gave %lld bytes, expected %lld", key,
			     (long long)total, (long long)src->size);
		goto out;
	}
	if (src->seek(src->ctx, 0) < 0)
		goto fail;
	EVP_DigestFinal_ex(md, digest, NULL);
	s3_hex(digest, 32, hex);
	EVP_DigestFinal_ex(m5, d5, NULL);
	EVP_EncodeBlock((unsigned char *)md5_b64, d5, 16);
	rc = 0;
	goto out;
fail:
	st_error_set(err, ST_PERMANENT, 0, "put %s: reading the source: %s", key,
		     strerror_r(errno, eb, sizeof(eb)));
out:
	EVP_MD_CTX_free(md);
	EVP_MD_CTX_free(m5);
	free(buf);
	return rc;
}

int s3_put(struct storage *st, const char *key, const struct st_source *src,
	   const struct st_call *call, struct st_error *err)
{
	struct s3 *s3 = (struct s3 *)st;
	struct s3_ctl ctl;
	struct s3_resp resp;
	char *full = s3_full_key(s3, key);
	unsigned char *body = NULL;
	char eb[128];
	int rc;

	if (!full) {
		st_error_set(err, ST_TRANSIENT, 0, "put %s: out of memory", key);
		return ST_TRANSIENT;
	}
	s3_ctl_init(&ctl, call);
	s3_resp_init(&resp);
	if (src->size < 0 || src->size >= S3_SINGLE_PUT_MAX) {
		rc = put_multipart(s3, full, key, src, &ctl, err);
	} else if (src->size <= S3_INLINE_PUT_MAX) {
		/* small, known size: read it whole (bounded by S3_INLINE_PUT_MAX) and sign its hash */
		size_t have = 0;
		unsigned char extra;
		int read_errno = 0;
		body = malloc(src->size ? (size_t)src->size : 1);
		if (!body) {
			rc = ST_TRANSIENT;
			st_error_set(err, rc, 0, "put %s/%s: out of memory", s3->bucket, full);
			goto out;
		}
		ssize_t n = st_read_full(src, body, (size_t)src->size);
		if (n < 0)
			read_errno = errno;
		else
			have = (size_t)n;
		ssize_t more = !read_errno && have == (size_t)src->size ? src->read(src->ctx, &extra, 1) : 0;
		if (more < 0)
			read_errno = errno;
		if (have != (size_t)src->size || more != 0) {
			rc = ST_PERMANENT;
			if (read_errno)
				st_error_set(err, rc, 0, "put %s/%s: reading the source: %s", s3->bucket, full,
					     strerror_r(read_errno, eb, sizeof(eb)));
			else
				st_error_set(err, rc, 0, "put %s/%s: source size differs from the stated %lld bytes",
					     s3->bucket, full, (long long)src->size);
			goto out;
		}
		struct s3_req req = { .op = "put", .method = "PUT", .key = full, .body = body,
				      .body_len = have, .read_len = -1, .if_none_match = ctl.create_only };
		rc = s3_request(s3, &req, &resp, &ctl, err);
	} else {
		char hash[S3_SHA256_HEX_LEN + 1], md5[32];
		if (src->seek && (rc = hash_source(src, key, hash, md5, err)) < 0) {
			rc = err->status;
			goto out;
		}
		struct s3_req req = { .op = "put", .method = "PUT", .key = full, .read = src->read,
				      .rewind = src->rewind, .read_ctx = src->ctx, .read_len = src->size,
				      .big = true, .payload_hash = src->seek ? hash : NULL,
				      .content_md5 = src->seek ? md5 : NULL,
				      .if_none_match = ctl.create_only };
		rc = s3_request(s3, &req, &resp, &ctl, err);
	}
out:
	s3_resp_release(&resp);
	free(body);
	free(full);
	return rc;
}
