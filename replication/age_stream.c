/* age_stream.c — the age payload: an encrypting st_source and a decrypting st_sink (see age.h). */
#include "replication/age.h"

#include <errno.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/banned.h"

#define SEALED (AGE_CHUNK + AGE_TAG)
#define MAGIC "age-encryption.org/v1\n"

/* STREAM nonce: 11-byte big-endian chunk counter, then 1 for the last chunk. */
static void chunk_nonce(unsigned char nonce[12], uint64_t counter, bool last)
{
	memset(nonce, 0, 12);
	for (int i = 0; i < 8; i++)
		nonce[10 - i] = (unsigned char)(counter >> (8 * i));
	nonce[11] = last ? 1 : 0;
}

/* Seal (enc) or open in[n] as chunk `counter` into out: age_aead() with the STREAM nonce. */
static int chunk_crypt(EVP_CIPHER_CTX *c, bool enc, const unsigned char key[32], uint64_t counter,
		       bool last, const unsigned char *in, size_t n, unsigned char *out)
{
	unsigned char nonce[12];
	chunk_nonce(nonce, counter, last);
	return age_aead(c, enc, key, nonce, in, n, out);
}

/* ---- encryption ---- */

/* Header and nonce into e->out. Returns 0 or -1 (errno EIO, e->error set). */
static int enc_start(struct age_enc *e)
{
	unsigned char file_key[16], nonce[16];
	int n = age_header_build(e->keys, file_key, e->out, e->out_cap - 16, e->error, sizeof(e->error));
	int rc = -1;
	if (n < 0)
		goto out;
	ssize_t r = getrandom(nonce, sizeof(nonce), 0);
	if (r != (ssize_t)sizeof(nonce) || age_payload_key(file_key, nonce, e->key) < 0) {
		snprintf(e->error, sizeof(e->error), "cannot derive the payload key");
		goto out;
	}
	memcpy(e->out + n, nonce, 16);
	e->out_len = (size_t)n + 16;
	e->out_pos = 0;
	e->state = 1;
	rc = 0;
out:
	explicit_bzero(file_key, sizeof(file_key));
	if (rc < 0)
		errno = EIO;
	return rc;
}

/* The next sealed chunk into e->out. Returns 0 or -1 (errno set). */
static int enc_chunk(struct age_enc *e)
{
	/* fill to one byte past a chunk: that byte tells this chunk is not the last */
	ssize_t r = st_read_full(e->inner, e->in + e->in_len, AGE_CHUNK + 1 - e->in_len);
	if (r < 0)
		return -1;
	e->in_len += (size_t)r;
	bool last = e->in_len <= AGE_CHUNK;
	size_t n = last ? e->in_len : AGE_CHUNK;
	int k = chunk_crypt(e->cctx, true, e->key, e->counter, last, e->in, n, e->out);
	if (k < 0) {
		snprintf(e->error, sizeof(e->error), "ChaCha20-Poly1305 failed");
		errno = EIO;
		return -1;
	}
	e->counter++;
	e->out_len = (size_t)k;
	e->out_pos = 0;
	if (last) {
		e->in_len = 0;
		e->state = 2;
	} else {
		e->in[0] = e->in[AGE_CHUNK];
		e->in_len = 1;
	}
	return 0;
}

static ssize_t enc_read(void *ctx, void *buf, size_t len)
{
	struct age_enc *e = ctx;
	while (e->out_pos == e->out_len) {
		if (e->state == 2)
			return 0;
		if ((e->state == 0 ? enc_start(e) : enc_chunk(e)) < 0)
			return -1;
	}
	size_t n = e->out_len - e->out_pos;
	if (n > len)
		n = len;
	memcpy(buf, e->out + e->out_pos, n);
	e->out_pos += n;
	return (ssize_t)n;
}

/* Start over with a new file key and nonce: never a nonce twice under one key. */
static int enc_rewind(void *ctx)
{
	struct age_enc *e = ctx;
	if (!e->inner->rewind || e->inner->rewind(e->inner->ctx) < 0)
		return -1;
	e->state = 0;
	e->in_len = e->out_len = e->out_pos = 0;
	e->counter = 0;
	return 0;
}

int age_enc_init(struct age_enc *e, struct st_source *src, const struct st_source *inner,
		 const struct cfg_age *keys)
{
	memset(e, 0, sizeof(*e));
	e->inner = inner;
	e->keys = keys;
	size_t header = (size_t)age_encrypted_size(0, keys->nrecipients) - AGE_TAG;
	e->out_cap = header > SEALED ? header : SEALED;
	e->in = malloc(AGE_CHUNK + 1);
	e->out = malloc(e->out_cap);
	e->cctx = EVP_CIPHER_CTX_new();
	if (!e->in || !e->out || !e->cctx) {
		age_enc_release(e);
		return -1;
	}
	*src = (struct st_source){
		.read = enc_read, .rewind = inner->rewind ? enc_rewind : NULL, .ctx = e,
		.size = inner->size >= 0 ? age_encrypted_size(inner->size, keys->nrecipients) : -1,
	};
	return 0;
}

void age_enc_release(struct age_enc *e)
{
	EVP_CIPHER_CTX_free(e->cctx);
	explicit_bzero(e->key, sizeof(e->key));
	if (e->in)
		explicit_bzero(e->in, AGE_CHUNK + 1);
	free(e->in);
	free(e->out);
	e->cctx = NULL;
	e->in = e->out = NULL;
}

/* ---- decryption ---- */

static int dec_fail(struct age_dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int dec_fail(struct age_dec *d, const char *fmt, ...)
{
	va_list ap;
	d->failed = true;
	va_start(ap, fmt);
	vsnprintf(d->error, sizeof(d->error), fmt, ap);
	va_end(ap);
	return -1;
}

/* Open the chunk in d->buf and hand it on. Returns 0 or -1. */
static int dec_chunk(struct age_dec *d, bool last)
{
	if (last && d->buf_len == AGE_TAG && d->counter > 0)
		return dec_fail(d, "empty last chunk %llu (not written by age)",
				(unsigned long long)d->counter);
	int k = chunk_crypt(d->cctx, false, d->key, d->counter, last, d->buf, d->buf_len, d->plain);
	if (k < 0)
		return dec_fail(d, "payload chunk %llu does not authenticate (corrupt or truncated "
				"object)", (unsigned long long)d->counter);
	d->counter++;
	d->buf_len = 0;
	if (k > 0 && d->inner->write(d->inner->ctx, d->plain, (size_t)k) < 0) {
		d->inner_failed = true;
		return -1;
	}
	return 0;
}

/* Take header bytes; at the MAC line's end, open it. Returns bytes used, or -1. */
static ssize_t dec_header(struct age_dec *d, const unsigned char *p, size_t len)
{
	size_t used = 0;
	while (used < len) {
		if (d->buf_len == d->buf_cap) {
			if (d->buf_cap >= AGE_HEADER_MAX)
				return dec_fail(d, "age header over %d bytes", AGE_HEADER_MAX);
			size_t cap = d->buf_cap * 2 < AGE_HEADER_MAX ? d->buf_cap * 2 : AGE_HEADER_MAX;
			unsigned char *grown = realloc(d->buf, cap);
			if (!grown)
				return dec_fail(d, "out of memory for an age header of %zu bytes", cap);
			d->buf = grown;
			d->buf_cap = cap;
		}
		unsigned char c = p[used++];
		d->buf[d->buf_len++] = c;
		if (d->buf_len <= sizeof(MAGIC) - 1 && c != (unsigned char)MAGIC[d->buf_len - 1]) {
			static const unsigned char lz4[4] = { 0x04, 0x22, 0x4d, 0x18 };
			if (d->buf_len == 1 && c == lz4[0]) {
				d->foreign = true;
				return dec_fail(d, "not encrypted (a plain LZ4 object where the replica's "
						"age: settings expect age-encrypted ones)");
			}
			return dec_fail(d, "not an age-encrypted object (no \"%.*s\" header)",
					(int)sizeof(MAGIC) - 2, MAGIC);
		}
		if (c != '\n')
			continue;
		/* a line ended: is it the MAC line ("---" at a line start)? */
		size_t start = d->buf_len - 1;
		while (start > 0 && d->buf[start - 1] != '\n')
			start--;
		if (d->buf_len - start < 4 || memcmp(d->buf + start, "---", 3) != 0)
			continue;
		unsigned char file_key[16];
		char why[200];
		int rc = age_header_open(d->buf, d->buf_len, d->keys, file_key, why, sizeof(why));
		if (rc < 0) {
			d->failed = true;
			d->foreign = rc == -2;
			snprintf(d->error, sizeof(d->error), "%s", why);
			return -1;
		}
		memcpy(d->key, file_key, 16); /* until the nonce is in */
		explicit_bzero(file_key, sizeof(file_key));
		d->buf_len = 0;
		d->state = 1;
		break;
	}
	return (ssize_t)used;
}

static int dec_write(void *ctx, const void *buf, size_t len)
{
	struct age_dec *d = ctx;
	const unsigned char *p = buf;
	if (d->failed || d->inner_failed)
		return -1;
	while (len > 0) {
		if (d->state == 0) {
			ssize_t n = dec_header(d, p, len);
			if (n < 0)
				return -1;
			p += n;
			len -= (size_t)n;
		} else if (d->state == 1) {
			size_t n = 16 - d->nonce_len < len ? 16 - d->nonce_len : len;
			memcpy(d->nonce + d->nonce_len, p, n);
			d->nonce_len += n;
			p += n;
			len -= n;
			if (d->nonce_len == 16) {
				unsigned char file_key[16];
				memcpy(file_key, d->key, 16);
				int rc = age_payload_key(file_key, d->nonce, d->key);
				explicit_bzero(file_key, sizeof(file_key));
				if (rc < 0)
					return dec_fail(d, "cannot derive the payload key");
				d->state = 2;
			}
		} else {
			/* a full chunk is opened only once more bytes show it is not the last */
			if (d->buf_len == SEALED && dec_chunk(d, false) < 0)
				return -1;
			size_t n = SEALED - d->buf_len < len ? SEALED - d->buf_len : len;
			memcpy(d->buf + d->buf_len, p, n);
			d->buf_len += n;
			p += n;
			len -= n;
		}
	}
	return 0;
}

int age_dec_init(struct age_dec *d, struct st_sink *sink, const struct st_sink *inner,
		 const struct cfg_age *keys)
{
	memset(d, 0, sizeof(*d));
	d->inner = inner;
	d->keys = keys;
	d->buf_cap = SEALED; /* the header grows it if need be (many recipients) */
	d->buf = malloc(d->buf_cap);
	d->plain = malloc(AGE_CHUNK);
	d->cctx = EVP_CIPHER_CTX_new();
	if (!d->buf || !d->plain || !d->cctx) {
		age_dec_release(d);
		return -1;
	}
	sink->write = dec_write;
	sink->ctx = d;
	return 0;
}

int age_dec_finish(struct age_dec *d)
{
	if (d->failed || d->inner_failed)
		return -1;
	if (d->state == 0)
		return dec_fail(d, d->buf_len ? "truncated age header" : "empty object");
	if (d->state == 1)
		return dec_fail(d, "truncated: the payload nonce is cut short");
	if (d->buf_len == 0)
		return dec_fail(d, "truncated: no payload after chunk %llu",
				(unsigned long long)d->counter);
	return dec_chunk(d, true);
}

void age_dec_release(struct age_dec *d)
{
	EVP_CIPHER_CTX_free(d->cctx);
	explicit_bzero(d->key, sizeof(d->key));
	free(d->buf);
	if (d->plain)
		explicit_bzero(d->plain, AGE_CHUNK);
	free(d->plain);
	d->cctx = NULL;
	d->buf = d->plain = NULL;
}
