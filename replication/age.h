/*
 * age.h — age-encryption.org/v1, as Litestream v0.3.13 stores the objects of
 * a replica with `age:` (age(lz4(data)), names unchanged). X25519 recipients
 * and identities only.
 *
 * An age file:
 *   "age-encryption.org/v1\n"
 *   per recipient "-> X25519 <ephemeral share>\n<wrapped file key>\n"
 *   "--- <HMAC-SHA256 of the header up to and including "---">\n"
 *   a 16-byte nonce, then the payload in STREAM chunks: 64 KiB of plain
 *   bytes each, sealed with ChaCha20-Poly1305 (16 more bytes) under an
 *   11-byte big-endian counter and a last-chunk flag.
 * Keys come from HKDF-SHA256: the wrap key (salt share||recipient, info
 * "age-encryption.org/v1/X25519"), the header MAC key (info "header") and
 * the payload key (salt nonce, info "payload") from the 16-byte file key.
 * Base64 is the standard alphabet, unpadded, canonical.
 *
 * Encryption is a struct st_source pulling plain bytes (the LZ4 frame) from
 * another source; decryption a struct st_sink in front of another sink (the
 * LZ4 decoder). Memory: one chunk plus the header (grown up to AGE_HEADER_MAX),
 * whatever the object's size. libcrypto must be loaded (lazy_crypto_load)
 * before any call here; storage_open does that for a replica with age:.
 */
#ifndef LITEVISOR_AGE_H
#define LITEVISOR_AGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "replication/storage.h"

#define AGE_CHUNK (64 * 1024)
#define AGE_TAG 16
/*
 * The largest header read: about 10,000 X25519 recipients (98 bytes each).
 * The age tool sets no limit; config refuses more recipients than fit here,
 * so litevisor always reads back what it writes.
 */
#define AGE_HEADER_MAX (1024 * 1024)
/* "-> X25519 " + 43 + "\n" + 43 + "\n" a recipient, the magic and MAC lines */
_Static_assert(CFG_AGE_MAX_RECIPIENTS * 98 + 128 <= AGE_HEADER_MAX,
	       "config admits more age recipients than a header read back holds");

/* The X25519 public key (recipient) of identity id. Returns 0 or -1. */
int age_x25519_public(const unsigned char id[32], unsigned char pub[32]);

/*
 * Whether what is encrypted for keys->recipients can be read back with
 * keys->identities: one identity's public key is among the recipients.
 * False also when libcrypto fails.
 */
bool age_keys_read_back(const struct cfg_age *keys);

/* The length of the age file of plain bytes for n recipients. */
int64_t age_encrypted_size(int64_t plain, size_t nrecipients);

/*
 * Build the header of a new file for keys->recipients (a fresh random file
 * key, into file_key) into buf[cap]. Returns its length, or -1 with err set.
 */
int age_header_build(const struct cfg_age *keys, unsigned char file_key[16], unsigned char *buf,
		     size_t cap, char *err, size_t errlen);

/*
 * Parse a whole header (hdr[len], ending with the MAC line's newline), unwrap
 * the file key with one of keys->identities and check the MAC. Returns 0,
 * -2 with err set when the header is well formed but for none of the
 * identities ("no identity matches …": another key wrote it), or -1 with err
 * set ("header MAC mismatch", "malformed age header", …).
 */
int age_header_open(const unsigned char *hdr, size_t len, const struct cfg_age *keys,
		    unsigned char file_key[16], char *err, size_t errlen);

/*
 * One ChaCha20-Poly1305 seal (enc) or open of in[n] into out under key and
 * nonce, on ctx (an EVP_CIPHER_CTX kept for a stream's chunks) or, with NULL,
 * a context of its own. Open: in ends with the tag. Returns the output
 * length, or -1 (open: not authentic).
 */
int age_aead(void *ctx, bool enc, const unsigned char key[32], const unsigned char nonce[12],
	     const unsigned char *in, size_t n, unsigned char *out);

/* The payload key of a file key and the payload's nonce. Returns 0 or -1. */
int age_payload_key(const unsigned char file_key[16], const unsigned char nonce[16],
		    unsigned char key[32]);

struct age_enc {
	const struct st_source *inner;
	const struct cfg_age *keys;
	void *cctx;               /* EVP_CIPHER_CTX */
	unsigned char key[32];    /* payload key */
	unsigned char *in;        /* AGE_CHUNK + 1 plain bytes: one more says "not last" */
	size_t in_len;
	unsigned char *out;       /* header, or one sealed chunk, being handed out */
	size_t out_cap, out_len, out_pos;
	uint64_t counter;
	int state;                /* 0 = header pending, 1 = chunks, 2 = last chunk out */
	char error[200];
};

/*
 * Set up src to yield the age file of everything inner yields, for
 * keys->recipients (at least one). src->size is the exact length when
 * inner's is known, else -1; src->rewind (a new file key) when inner
 * rewinds. Returns 0, or -1 on allocation failure.
 */
int age_enc_init(struct age_enc *e, struct st_source *src, const struct st_source *inner,
		 const struct cfg_age *keys);
void age_enc_release(struct age_enc *e);

struct age_dec {
	const struct st_sink *inner;
	const struct cfg_age *keys;
	void *cctx;               /* EVP_CIPHER_CTX */
	unsigned char *buf;       /* header while state 0 (grown up to AGE_HEADER_MAX); then one sealed chunk */
	size_t buf_len, buf_cap;
	unsigned char *plain;     /* one opened chunk */
	unsigned char key[32];
	unsigned char nonce[16];
	size_t nonce_len;
	uint64_t counter;
	int state;                /* 0 = header, 1 = nonce, 2 = chunks */
	bool failed;              /* the object does not decrypt: error says why */
	bool foreign;             /* ... because it is plain LZ4, or for none of the
				   * identities: not damage, other age: settings wrote it */
	bool inner_failed;        /* the inner sink refused data (its own error) */
	char error[256];
};

/*
 * Set up sink to decrypt into inner with keys->identities. The last chunk
 * reaches inner only in age_dec_finish. Returns 0 or -1 (ENOMEM).
 */
int age_dec_init(struct age_dec *d, struct st_sink *sink, const struct st_sink *inner,
		 const struct cfg_age *keys);

/*
 * After the last write: open the last chunk and hand it on. 0 if the whole
 * file decrypted and authenticated, else -1 (d->failed with d->error, or
 * d->inner_failed).
 */
int age_dec_finish(struct age_dec *d);
void age_dec_release(struct age_dec *d);

#endif
