/* age.c — age v1 keys and header: X25519 stanzas, HKDF, the header MAC (see age.h). */
#include "replication/age.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/banned.h"

#define MAGIC "age-encryption.org/v1"
#define X25519_INFO "age-encryption.org/v1/X25519"
#define B64_32 43 /* unpadded base64 of 32 bytes */
#define STANZA_LINE 64

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Unpadded base64 of in[n] into out (room for 4n/3+2). Returns the length. */
static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64[v >> 18];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = b64[v >> 6 & 63];
		out[o++] = b64[v & 63];
	}
	if (n - i == 1) {
		out[o++] = b64[in[i] >> 2];
		out[o++] = b64[(in[i] & 3) << 4];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];
		out[o++] = b64[v >> 10];
		out[o++] = b64[v >> 4 & 63];
		out[o++] = b64[(v & 15) << 2];
	}
	return o;
}

/*
 * Decode canonical unpadded base64 s[n] into out[cap]. Returns the byte
 * count, or -1 (a character outside the alphabet, '=' padding, a length
 * that cannot be, leftover bits that are not zero, too long).
 */
static int b64_decode(const char *s, size_t n, unsigned char *out, size_t cap)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;
	if (n % 4 == 1)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *p = s[i] ? memchr(b64, s[i], 64) : NULL;
		if (!p)
			return -1;
		acc = (acc << 6 | (uint32_t)(p - b64)) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o == cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (acc & ((1u << bits) - 1))
		return -1;
	return (int)o;
}

/* HKDF-SHA256 (RFC 5869) with 32 bytes of output: all age needs. Returns 0 or -1. */
static int hkdf32(const unsigned char *salt, size_t saltlen, const unsigned char *ikm, size_t ikmlen,
		  const char *info, unsigned char out[32])
{
	static const unsigned char zeros[32];
	unsigned char prk[32], msg[64];
	unsigned int len = 0;
	size_t il = strlen(info);
	int rc = -1;
	if (il + 1 > sizeof(msg))
		return -1;
	if (saltlen == 0) { /* RFC 5869: no salt is HashLen zeros */
		salt = zeros;
		saltlen = sizeof(zeros);
	}
	if (!HMAC(EVP_sha256(), salt, (int)saltlen, ikm, ikmlen, prk, &len) || len != 32)
		goto out;
	memcpy(msg, info, il);
	msg[il] = 1;
	if (!HMAC(EVP_sha256(), prk, 32, msg, il + 1, out, &len) || len != 32)
		goto out;
	rc = 0;
out:
	explicit_bzero(prk, sizeof(prk));
	return rc;
}

/* X25519(scalar, point) into out; -1 on failure, -2 for a low-order point (an all-zero secret). */
static int x25519(const unsigned char scalar[32], const unsigned char point[32], unsigned char out[32])
{
	EVP_PKEY *priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, scalar, 32);
	EVP_PKEY *pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, point, 32);
	EVP_PKEY_CTX *ctx = priv ? EVP_PKEY_CTX_new(priv, NULL) : NULL;
	size_t len = 32;
	int rc = -1;
	if (ctx && pub && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_derive_set_peer(ctx, pub) > 0) {
		/* OpenSSL fails the derivation itself when the secret is all zero */
		unsigned char any = 0;
		bool ok = EVP_PKEY_derive(ctx, out, &len) > 0 && len == 32;
		for (size_t i = 0; ok && i < 32; i++)
			any |= out[i];
		rc = ok && any ? 0 : -2;
	}
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
	return rc;
}

int age_x25519_public(const unsigned char id[32], unsigned char pub[32])
{
	EVP_PKEY *priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, id, 32);
	size_t len = 32;
	int ok = priv && EVP_PKEY_get_raw_public_key(priv, pub, &len) > 0 && len == 32;
	EVP_PKEY_free(priv);
	return ok ? 0 : -1;
}

bool age_keys_read_back(const struct cfg_age *keys)
{
	unsigned char pub[32];
	for (size_t i = 0; i < keys->nidentities; i++) {
		if (age_x25519_public(keys->identities[i], pub) < 0)
			continue;
		for (size_t j = 0; j < keys->nrecipients; j++)
			if (memcmp(pub, keys->recipients[j], 32) == 0)
				return true;
	}
	return false;
}

int age_aead(void *ctx, bool enc, const unsigned char key[32], const unsigned char nonce[12],
	     const unsigned char *in, size_t n, unsigned char *out)
{
	EVP_CIPHER_CTX *c = ctx ? ctx : EVP_CIPHER_CTX_new();
	int len = 0, fin = 0, rc = -1;
	size_t body = enc ? n : n - AGE_TAG;
	if (!c || (!enc && n < AGE_TAG))
		goto out;
	if (EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, key, nonce, enc) <= 0)
		goto out;
	if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, AGE_TAG, (void *)(in + body)) <= 0)
		goto out;
	if ((body > 0 && EVP_CipherUpdate(c, out, &len, in, (int)body) <= 0) ||
	    EVP_CipherFinal_ex(c, out + len, &fin) <= 0)
		goto out;
	if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, AGE_TAG, out + body) <= 0)
		goto out;
	rc = (int)(enc ? body + AGE_TAG : body);
out:
	if (c != ctx)
		EVP_CIPHER_CTX_free(c);
	return rc;
}

/* The file key's wrap or unwrap in a stanza: a zero nonce, its key used once. */
static int aead_zero_nonce(bool enc, const unsigned char key[32], const unsigned char *in, size_t n,
			   unsigned char *out)
{
	static const unsigned char zero[12];
	return age_aead(NULL, enc, key, zero, in, n, out);
}

/* The header MAC over hdr[len] (up to and including "---"). Returns 0 or -1. */
static int header_mac(const unsigned char file_key[16], const unsigned char *hdr, size_t len,
		      unsigned char mac[32])
{
	unsigned char k[32];
	unsigned int ml = 0;
	int rc = -1;
	if (hkdf32(NULL, 0, file_key, 16, "header", k) == 0 &&
	    HMAC(EVP_sha256(), k, 32, hdr, len, mac, &ml) && ml == 32)
		rc = 0;
	explicit_bzero(k, sizeof(k));
	return rc;
}

int age_payload_key(const unsigned char file_key[16], const unsigned char nonce[16],
		    unsigned char key[32])
{
	return hkdf32(nonce, 16, file_key, 16, "payload", key);
}

int64_t age_encrypted_size(int64_t plain, size_t nrecipients)
{
	int64_t chunks = plain == 0 ? 1 : (plain + AGE_CHUNK - 1) / AGE_CHUNK;
	int64_t header = (int64_t)sizeof(MAGIC "\n") - 1 +
			 (int64_t)nrecipients * (int64_t)(sizeof("-> X25519 \n\n") - 1 + 2 * B64_32) +
			 (int64_t)(sizeof("--- \n") - 1 + B64_32);
	return header + 16 + plain + chunks * AGE_TAG;
}

static int fill_random(unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int age_header_build(const struct cfg_age *keys, unsigned char file_key[16], unsigned char *buf,
		     size_t cap, char *err, size_t errlen)
{
	size_t need = (size_t)age_encrypted_size(0, keys->nrecipients) - 16 - AGE_TAG, o = 0;
	unsigned char eph[32], share[32], shared[32], salt[64], wrap[32], body[16 + AGE_TAG], mac[32];
	int rc = -1;
	if (need > cap || keys->nrecipients == 0) {
		snprintf(err, errlen, keys->nrecipients ? "age header too large" : "no age recipients");
		return -1;
	}
	if (fill_random(file_key, 16) < 0) {
		snprintf(err, errlen, "getrandom: %m");
		return -1;
	}
	memcpy(buf, MAGIC "\n", sizeof(MAGIC));
	o = sizeof(MAGIC);
	for (size_t i = 0; i < keys->nrecipients; i++) {
		const unsigned char *rcpt = keys->recipients[i];
		if (fill_random(eph, 32) < 0 || age_x25519_public(eph, share) < 0 ||
		    x25519(eph, rcpt, shared) < 0) {
			snprintf(err, errlen, "cannot wrap the file key for recipient %zu", i + 1);
			goto out;
		}
		memcpy(salt, share, 32);
		memcpy(salt + 32, rcpt, 32);
		if (hkdf32(salt, 64, shared, 32, X25519_INFO, wrap) < 0 ||
		    aead_zero_nonce(true, wrap, file_key, 16, body) != (int)sizeof(body)) {
			snprintf(err, errlen, "cannot wrap the file key");
			goto out;
		}
		memcpy(buf + o, "-> X25519 ", 10);
		o += 10;
		o += b64_encode(share, 32, (char *)buf + o);
		buf[o++] = '\n';
		o += b64_encode(body, sizeof(body), (char *)buf + o);
		buf[o++] = '\n';
	}
	memcpy(buf + o, "---", 3);
	o += 3;
	if (header_mac(file_key, buf, o, mac) < 0) {
		snprintf(err, errlen, "cannot compute the header MAC");
		goto out;
	}
	buf[o++] = ' ';
	o += b64_encode(mac, 32, (char *)buf + o);
	buf[o++] = '\n';
	rc = (int)o;
out:
	explicit_bzero(eph, sizeof(eph));
	explicit_bzero(shared, sizeof(shared));
	explicit_bzero(wrap, sizeof(wrap));
	return rc;
}

/* Next line of [*p, end) without its '\n' into (*line, *len). Returns 0, or -1 at the end. */
static int next_line(const unsigned char **p, const unsigned char *end, const char **line, size_t *len)
{
	const unsigned char *nl = *p < end ? memchr(*p, '\n', (size_t)(end - *p)) : NULL;
	if (!nl)
		return -1;
	*line = (const char *)*p;
	*len = (size_t)(nl - *p);
	*p = nl + 1;
	return 0;
}

/*
 * Try every identity on one X25519 stanza. Returns 0 with file_key set, -1
 * when none opens it, -2 for a low-order share: the age spec has the whole
 * file refused then, as age and Litestream do.
 */
static int x25519_unwrap(const struct cfg_age *keys, const unsigned char share[32],
			 const unsigned char *body, size_t blen, unsigned char file_key[16])
{
	unsigned char shared[32], pub[32], salt[64], wrap[32], fk[32];
	int rc = -1;
	if (blen != 16 + AGE_TAG)
		return -1;
	for (size_t i = 0; i < keys->nidentities && rc == -1; i++) {
		if (age_x25519_public(keys->identities[i], pub) < 0)
			continue;
		int x = x25519(keys->identities[i], share, shared);
		if (x == -2)
			rc = -2;
		if (x < 0)
			continue;
		memcpy(salt, share, 32);
		memcpy(salt + 32, pub, 32);
		if (hkdf32(salt, 64, shared, 32, X25519_INFO, wrap) < 0)
			continue;
		if (aead_zero_nonce(false, wrap, body, blen, fk) == 16) {
			memcpy(file_key, fk, 16);
			rc = 0;
		}
	}
	explicit_bzero(shared, sizeof(shared));
	explicit_bzero(wrap, sizeof(wrap));
	explicit_bzero(fk, sizeof(fk));
	return rc;
}

int age_header_open(const unsigned char *hdr, size_t len, const struct cfg_age *keys,
		    unsigned char file_key[16], char *err, size_t errlen)
{
	const unsigned char *p = hdr, *end = hdr + len;
	const char *line;
	size_t ll, nx = 0, nother = 0;
	char other[64] = "";
	bool found = false, scrypt = false;
	unsigned char mac[32], want[32];

	if (next_line(&p, end, &line, &ll) < 0 || ll != sizeof(MAGIC) - 1 || memcmp(line, MAGIC, ll)) {
		snprintf(err, errlen, "not an age v1 file (no \"%s\" header)", MAGIC);
		return -1;
	}
	for (;;) {
		if (next_line(&p, end, &line, &ll) < 0)
			goto malformed;
		if (ll >= 3 && memcmp(line, "---", 3) == 0)
			break;
		if (ll < 4 || memcmp(line, "-> ", 3) != 0)
			goto malformed;
		/* stanza: "-> TYPE ARG…", then body lines of 64 columns ended by a shorter one */
		const char *args = line + 3;
		size_t alen = ll - 3, tlen = strcspn(args, " \n");
		if (tlen > alen)
			tlen = alen;
		unsigned char body[STANZA_LINE * 3 / 4 * 4];
		size_t blen = 0;
		bool body_ok = true;
		for (;;) {
			const char *bl;
			size_t bn;
			if (next_line(&p, end, &bl, &bn) < 0 || bn > STANZA_LINE)
				goto malformed;
			if (blen + bn * 3 / 4 > sizeof(body)) {
				body_ok = false; /* a large body: some other stanza type, skipped */
			} else {
				int k = b64_decode(bl, bn, body + blen, sizeof(body) - blen);
				if (k < 0)
					goto malformed;
				blen += (size_t)k;
			}
			if (bn < STANZA_LINE)
				break;
		}
		if (tlen == 6 && memcmp(args, "X25519", 6) == 0) {
			unsigned char share[33];
			nx++;
			if (alen != 7 + B64_32 || !body_ok ||
			    b64_decode(args + 7, B64_32, share, sizeof(share)) != 32)
				goto malformed;
			int u = found ? -1 : x25519_unwrap(keys, share, body, blen, file_key);
			if (u == -2) {
				snprintf(err, errlen, "an X25519 stanza has a low-order share (the age "
					 "format says to refuse such a file)");
				return -1;
			}
			if (u == 0)
				found = true;
		} else {
			if (tlen == 6 && memcmp(args, "scrypt", 6) == 0)
				scrypt = true;
			if (nother++ == 0)
				snprintf(other, sizeof(other), "%.*s", (int)(tlen < 40 ? tlen : 40), args);
		}
	}
	if (scrypt) {
		snprintf(err, errlen, "encrypted with a passphrase (scrypt): litevisor decrypts with "
			 "X25519 identities only");
		return -1;
	}
	if (!found) {
		if (nother)
			snprintf(err, errlen, "no identity matches (the object has %zu X25519 and %zu "
				 "other recipient(s), e.g. \"%s\"; litevisor reads X25519 only)", nx,
				 nother, other);
		else
			snprintf(err, errlen, "no identity matches (the object is for %zu other X25519 "
				 "recipient(s))", nx);
		return -2;
	}
	/* MAC line: "--- " and 43 characters; the MAC covers the header up to "---" */
	size_t upto = (size_t)((const unsigned char *)line - hdr) + 3;
	if (ll != 4 + B64_32 || line[3] != ' ' || b64_decode(line + 4, B64_32, mac, sizeof(mac)) != 32 ||
	    p != end)
		goto malformed;
	if (header_mac(file_key, hdr, upto, want) < 0) {
		snprintf(err, errlen, "cannot compute the header MAC");
		return -1;
	}
	unsigned char diff = 0;
	for (size_t i = 0; i < 32; i++)
		diff |= mac[i] ^ want[i];
	if (diff) {
		snprintf(err, errlen, "header MAC mismatch (corrupt or altered header)");
		return -1;
	}
	return 0;
malformed:
	snprintf(err, errlen, "malformed age header");
	return -1;
}
