/*
 * test_age.c — Bech32 keys and the age v1 format (replication/age.h).
 *
 * The known-answer files in tests/unit/age/ were made by the real age tool
 * (Debian's age 1.1.1) from the pattern below, for the identity below:
 *   age -r age14s9zhqkgvccmaru37adf88vxcfsk4z5w0qh293wh0g97fn7puegqqnjnvc
 *     (empty.age: 0 bytes, one-full-chunk.age: 65536 bytes) and
 *   age -r <another key> -r age14s9…njnvc (three-chunks-two-recipients.age: 131077 bytes).
 */
#include "unit.h"

#include "common/bech32.h"
#include "common/lazy_crypto.h"
#include "replication/age.h"

static const char kat_identity[] =
	"AGE-SECRET-KEY-1ZK6J7HR06S8VERXYETW4F2VRDCH60D3N2F6UJ0PJQ0GHZFT25V3SLXQHPC";
static const char kat_recipient[] = "age14s9zhqkgvccmaru37adf88vxcfsk4z5w0qh293wh0g97fn7puegqqnjnvc";

__attribute__((constructor)) static void load_libcrypto(void)
{
	char err[512];
	if (lazy_crypto_load(err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + i / 251);
}

static void decode_key(const char *s, const char *hrp, unsigned char key[32])
{
	char got[32];
	const char *why = NULL;
	CHECK_INT(bech32_decode(s, got, sizeof(got), key, 32, &why), 32);
	CHECK_STR(got, hrp);
}

/* A cfg_age with the KAT identity (and its recipient). */
static void kat_keys(struct cfg_age *a, unsigned char id[32], unsigned char rcpt[32])
{
	decode_key(kat_identity, "age-secret-key-", id);
	decode_key(kat_recipient, "age", rcpt);
	*a = (struct cfg_age){ .set = true, .identities = (unsigned char (*)[32])id, .nidentities = 1,
			       .recipients = (unsigned char (*)[32])rcpt, .nrecipients = 1 };
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		FAIL("cannot open %s (run from tests/)", path);
	unsigned char *buf = malloc(1 << 20);
	CHECK(buf);
	*len = fread(buf, 1, 1 << 20, f);
	fclose(f);
	return buf;
}

/* A growing sink for decrypted bytes (tests only: bounded by the KAT sizes). */
struct collect {
	unsigned char *data;
	size_t len, cap;
	int calls;
};

static int collect_write(void *ctx, const void *buf, size_t len)
{
	struct collect *c = ctx;
	if (c->len + len > c->cap) {
		c->cap = (c->len + len) * 2;
		c->data = realloc(c->data, c->cap);
		if (!c->data)
			return -1;
	}
	memcpy(c->data + c->len, buf, len);
	c->len += len;
	c->calls++;
	return 0;
}

/* The last decrypt() failed for the object's form (age_dec.foreign), not damage. */
static bool dec_foreign;

/*
 * Decrypt data[len] fed in pieces of `step` bytes. Returns 0 with the plain
 * bytes in *out, or -1 with the decoder's error in why.
 */
static int decrypt(const struct cfg_age *keys, const unsigned char *data, size_t len, size_t step,
		   struct collect *out, char *why, size_t whylen)
{
	struct age_dec d;
	struct st_sink sink, inner = { collect_write, out };
	memset(out, 0, sizeof(*out));
	CHECK_INT(age_dec_init(&d, &sink, &inner, keys), 0);
	int rc = 0;
	for (size_t off = 0; off < len && rc == 0; off += step)
		rc = sink.write(sink.ctx, data + off, len - off < step ? len - off : step);
	if (rc == 0)
		rc = age_dec_finish(&d);
	snprintf(why, whylen, "%s", d.error);
	if (rc < 0)
		CHECK(d.failed);
	dec_foreign = d.foreign;
	age_dec_release(&d);
	return rc;
}

/* Encrypt n pattern bytes with our encoder; the age file into *out. */
static void encrypt(const struct cfg_age *keys, size_t n, bool known_size, struct collect *out)
{
	unsigned char *plain = malloc(n ? n : 1);
	CHECK(plain);
	for (size_t i = 0; i < n; i++)
		plain[i] = pattern(i);
	struct st_mem_source m;
	struct st_source src, esrc;
	struct age_enc e;
	st_mem_source_init(&src, &m, plain, n);
	if (!known_size)
		src.size = -1;
	CHECK_INT(age_enc_init(&e, &esrc, &src, keys), 0);
	CHECK_INT(esrc.size, known_size ? age_encrypted_size((int64_t)n, keys->nrecipients) : -1);
	memset(out, 0, sizeof(*out));
	unsigned char buf[7000]; /* odd reads: the source hands out partial chunks */
	for (;;) {
		ssize_t r = esrc.read(esrc.ctx, buf, sizeof(buf));
		CHECK(r >= 0);
		if (r == 0)
			break;
		CHECK_INT(collect_write(out, buf, (size_t)r), 0);
	}
	CHECK_INT(out->len, age_encrypted_size((int64_t)n, keys->nrecipients));
	age_enc_release(&e);
	free(plain);
}

/* ---- Bech32 ---- */

TEST(bech32_bip173_vectors)
{
	static const char *const valid[] = {
		"A12UEL5L", "a12uel5l",
		"an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
		"abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
		"split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
	};
	static const char *const invalid[] = {
		"pzry9x0s0muk",     /* no separator */
		"1pzry9x0s0muk",    /* empty hrp */
		"x1b4n0q5v",        /* invalid data character */
		"li1dgmt3",         /* too short checksum */
		"A1G7SGD8",         /* checksum over upper case hrp computed wrongly */
		"a12UEL5L",         /* mixed case */
		"abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxx", /* bad checksum */
	};
	char hrp[100];
	unsigned char data[100];
	const char *why;
	for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++)
		if (bech32_decode(valid[i], hrp, sizeof(hrp), data, sizeof(data), &why) < 0)
			FAIL("%s: %s", valid[i], why);
	for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
		if (bech32_decode(invalid[i], hrp, sizeof(hrp), data, sizeof(data), &why) >= 0)
			FAIL("%s decoded", invalid[i]);
	/* round trip, both cases */
	unsigned char key[32];
	char out[100];
	decode_key(kat_identity, "age-secret-key-", key);
	CHECK(bech32_encode("age-secret-key-", key, 32, true, out, sizeof(out)) > 0);
	CHECK_STR(out, kat_identity);
	decode_key(kat_recipient, "age", key);
	CHECK(bech32_encode("age", key, 32, false, out, sizeof(out)) > 0);
	CHECK_STR(out, kat_recipient);
	CHECK_INT(bech32_encode("age", key, 32, false, out, 20), -1); /* too small */
}

TEST(identity_gives_its_recipient)
{
	/* what age-keygen -y printed for the KAT identity */
	unsigned char id[32], rcpt[32], pub[32];
	decode_key(kat_identity, "age-secret-key-", id);
	decode_key(kat_recipient, "age", rcpt);
	CHECK_INT(age_x25519_public(id, pub), 0);
	CHECK_MEM(pub, rcpt, 32);
}

/* ---- known answers from the age tool ---- */

static void check_kat(const char *path, size_t n)
{
	unsigned char id[32], rcpt[32];
	struct cfg_age keys;
	struct collect out;
	char why[256];
	size_t len;
	kat_keys(&keys, id, rcpt);
	unsigned char *data = read_file(path, &len);
	CHECK_INT(len, age_encrypted_size((int64_t)n, strstr(path, "two-recipients") ? 2 : 1));
	static const size_t steps[] = { 1 << 20, 1, 4093, 65552, 65553 };
	for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		if (steps[s] == 1 && n > 65536)
			continue; /* byte by byte: the header is what matters, the small files do it */
		if (decrypt(&keys, data, len, steps[s], &out, why, sizeof(why)) < 0)
			FAIL("%s step %zu: %s", path, steps[s], why);
		CHECK_INT(out.len, n);
		for (size_t i = 0; i < n; i++)
			if (out.data[i] != pattern(i))
				FAIL("%s: byte %zu differs", path, i);
		free(out.data);
	}
	free(data);
}

TEST(decrypts_what_the_age_tool_wrote)
{
	check_kat("unit/age/empty.age", 0);
	check_kat("unit/age/one-full-chunk.age", 65536);
	check_kat("unit/age/three-chunks-two-recipients.age", 131077);
}

/* ---- round trips and sizes ---- */

TEST(round_trip_at_chunk_boundaries)
{
	unsigned char id[32], rcpt[32];
	struct cfg_age keys;
	struct collect enc, dec;
	char why[256];
	kat_keys(&keys, id, rcpt);
	static const size_t sizes[] = { 0, 1, 65535, 65536, 65537, 131072, 200000 };
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		encrypt(&keys, sizes[k], k % 2 == 0, &enc);
		if (decrypt(&keys, enc.data, enc.len, 10007, &dec, why, sizeof(why)) < 0)
			FAIL("size %zu: %s", sizes[k], why);
		CHECK_INT(dec.len, sizes[k]);
		for (size_t i = 0; i < sizes[k]; i++)
			CHECK(dec.data[i] == pattern(i));
		free(enc.data);
		free(dec.data);
	}
}

TEST(several_recipients_each_open_it)
{
	unsigned char ids[3][32], rcpts[3][32];
	for (int i = 0; i < 3; i++) {
		for (int j = 0; j < 32; j++)
			ids[i][j] = (unsigned char)(i * 40 + j + 1);
		CHECK_INT(age_x25519_public(ids[i], rcpts[i]), 0);
	}
	struct cfg_age w = { .set = true, .identities = ids, .nidentities = 1, .recipients = rcpts,
			     .nrecipients = 2 };
	struct collect enc, dec;
	char why[256];
	encrypt(&w, 1000, true, &enc);
	for (int i = 0; i < 3; i++) {
		struct cfg_age r = { .set = true, .identities = &ids[i], .nidentities = 1 };
		int rc = decrypt(&r, enc.data, enc.len, 333, &dec, why, sizeof(why));
		if (i < 2) {
			CHECK_INT(rc, 0);
			CHECK_INT(dec.len, 1000);
		} else {
			CHECK_INT(rc, -1);
			CHECK_STR(why, "no identity matches (the object is for 2 other X25519 recipient(s))");
			CHECK(dec_foreign); /* other keys wrote it: a settings change, not damage */
		}
		free(dec.data);
	}
	free(enc.data);
}

/* ---- what must not decrypt ---- */

static void expect_error(const unsigned char *data, size_t len, const char *want)
{
	unsigned char id[32], rcpt[32];
	struct cfg_age keys;
	struct collect out;
	char why[256];
	kat_keys(&keys, id, rcpt);
	if (decrypt(&keys, data, len, 5000, &out, why, sizeof(why)) == 0)
		FAIL("decrypted, expected \"%s\"", want);
	if (!strstr(why, want))
		FAIL("error \"%s\", expected \"%s\"", why, want);
	/* only another form (plain, other keys) is foreign: damage never is */
	if (dec_foreign != (strstr(why, "no identity matches") || strstr(why, "not encrypted")))
		FAIL("error \"%s\": foreign %d", why, dec_foreign);
	free(out.data);
}

TEST(damage_is_detected)
{
	size_t len;
	unsigned char *data = read_file("unit/age/three-chunks-two-recipients.age", &len);
	unsigned char *copy = malloc(len + 1);
	size_t hdr = len - 16 - 131077 - 3 * 16; /* the header's length */

	/* cut after the second chunk: the second is then taken for the last and fails */
	expect_error(data, hdr + 16 + 2 * 65552, "payload chunk 1 does not authenticate");
	/* cut inside a chunk, or a byte added */
	expect_error(data, len - 1, "payload chunk 2 does not authenticate");
	memcpy(copy, data, len);
	copy[len] = 0;
	expect_error(copy, len + 1, "payload chunk 2 does not authenticate");
	/* one bit of the payload */
	memcpy(copy, data, len);
	copy[hdr + 16 + 70000] ^= 4;
	expect_error(copy, len, "payload chunk 1 does not authenticate");
	/* the header's MAC */
	memcpy(copy, data, len);
	copy[hdr - 3] ^= 1;
	expect_error(copy, len, "header MAC mismatch");
	/* the first (not our) stanza's share: ours still opens, the MAC does not match */
	memcpy(copy, data, len);
	size_t at = sizeof("age-encryption.org/v1\n-> X25519 "); /* the share's second character */
	copy[at] = copy[at] == 'B' ? 'C' : 'B';
	expect_error(copy, len, "header MAC mismatch");
	/* cut short in the header, in the nonce, and before any payload */
	expect_error(data, 60, "truncated age header");
	expect_error(data, hdr + 8, "nonce is cut short");
	expect_error(data, hdr + 16, "no payload");
	expect_error(data, 0, "empty object");
	free(copy);
	free(data);
}

TEST(not_age_or_other_stanzas_are_refused)
{
	static const unsigned char lz4[] = { 0x04, 0x22, 0x4d, 0x18, 0x64, 0x40, 0xa7 };
	expect_error(lz4, sizeof(lz4), "not encrypted (a plain LZ4 object");
	static const char v2[] = "age-encryption.org/v2\n";
	expect_error((const unsigned char *)v2, sizeof(v2) - 1,
		     "not an age-encrypted object (no \"age-encryption.org/v1\" header)");
	/* a passphrase file: the scrypt stanza is named, not a generic failure */
	static const char scrypt[] =
		"age-encryption.org/v1\n"
		"-> scrypt rF0/NLVLU8ZZFlf+ccgbsQ 18\n"
		"IuGBO7FNpbXh8Nc8sJ8C9wQjF1HtvxBn5WeqrUJGpL4\n"
		"--- 7eKtmTLrGeeNL54bRjRmxmcY1bpFJsRx6j6tqMmYxhI\n"
		"0123456789abcdef0123456789abcdef";
	expect_error((const unsigned char *)scrypt, sizeof(scrypt) - 1, "passphrase (scrypt)");
	/* an ssh-ed25519 stanza only: no identity matches, and the type is named */
	static const char ssh[] =
		"age-encryption.org/v1\n"
		"-> ssh-ed25519 Xyxtqw BjV5/9Pz4Z+HbyMdL9IBiZhtJfr63o6aFS6JMQbMXmA\n"
		"IuGBO7FNpbXh8Nc8sJ8C9wQjF1HtvxBn5WeqrUJGpL4\n"
		"--- 7eKtmTLrGeeNL54bRjRmxmcY1bpFJsRx6j6tqMmYxhI\n"
		"0123456789abcdef0123456789abcdef";
	expect_error((const unsigned char *)ssh, sizeof(ssh) - 1, "e.g. \"ssh-ed25519\"");
	/* base64 with '=' padding is not canonical */
	static const char badbody[] =
		"age-encryption.org/v1\n"
		"-> X25519 6Aorx2VmA09mryVrz2EDdw9a+O4FnAga6dDstRl/GlU\n"
		"Q5KlWYdpJy+iJnHtNfoDc/nEAfjzHd3WawTLqMsMfI8=\n"
		"--- 7eKtmTLrGeeNL54bRjRmxmcY1bpFJsRx6j6tqMmYxhI\n";
	expect_error((const unsigned char *)badbody, sizeof(badbody) - 1, "malformed age header");
	/*
	 * a low-order share (here the point 0): every identity derives an all-zero
	 * secret, and the spec has the file refused, not the stanza skipped (QA23)
	 */
	static const char low[] =
		"age-encryption.org/v1\n"
		"-> X25519 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
		"IuGBO7FNpbXh8Nc8sJ8C9wQjF1HtvxBn5WeqrUJGpL4\n"
		"--- 7eKtmTLrGeeNL54bRjRmxmcY1bpFJsRx6j6tqMmYxhI\n"
		"0123456789abcdef0123456789abcdef";
	expect_error((const unsigned char *)low, sizeof(low) - 1, "low-order share");
}

UNIT_MAIN(T(bech32_bip173_vectors), T(identity_gives_its_recipient),
	  T(decrypts_what_the_age_tool_wrote), T(round_trip_at_chunk_boundaries),
	  T(several_recipients_each_open_it), T(damage_is_detected),
	  T(not_age_or_other_stanzas_are_refused))
