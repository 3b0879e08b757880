/* lazy_crypto.c — the libcrypto functions litevisor calls, forwarded to the loaded library. */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/lazy_crypto.h"
#include "common/lazylib.h"
#include "common/banned.h"

#ifndef LAZY_CRYPTO_SONAME
#define LAZY_CRYPTO_SONAME "libcrypto.so.3"
#endif

static struct {
	__typeof__(EVP_sha256) *EVP_sha256;
	__typeof__(EVP_md5) *EVP_md5;
	__typeof__(EVP_Digest) *EVP_Digest;
	__typeof__(EVP_MD_CTX_new) *EVP_MD_CTX_new;
	__typeof__(EVP_MD_CTX_free) *EVP_MD_CTX_free;
	__typeof__(EVP_DigestInit_ex) *EVP_DigestInit_ex;
	__typeof__(EVP_DigestUpdate) *EVP_DigestUpdate;
	__typeof__(EVP_DigestFinal_ex) *EVP_DigestFinal_ex;
	__typeof__(EVP_EncodeBlock) *EVP_EncodeBlock;
	__typeof__(HMAC) *HMAC;
	/* age encryption (replication/age.c) */
	__typeof__(EVP_PKEY_new_raw_private_key) *EVP_PKEY_new_raw_private_key;
	__typeof__(EVP_PKEY_new_raw_public_key) *EVP_PKEY_new_raw_public_key;
	__typeof__(EVP_PKEY_get_raw_public_key) *EVP_PKEY_get_raw_public_key;
	__typeof__(EVP_PKEY_free) *EVP_PKEY_free;
	__typeof__(EVP_PKEY_CTX_new) *EVP_PKEY_CTX_new;
	__typeof__(EVP_PKEY_CTX_free) *EVP_PKEY_CTX_free;
	__typeof__(EVP_PKEY_derive_init) *EVP_PKEY_derive_init;
	__typeof__(EVP_PKEY_derive_set_peer) *EVP_PKEY_derive_set_peer;
	__typeof__(EVP_PKEY_derive) *EVP_PKEY_derive;
	__typeof__(EVP_chacha20_poly1305) *EVP_chacha20_poly1305;
	__typeof__(EVP_CIPHER_CTX_new) *EVP_CIPHER_CTX_new;
	__typeof__(EVP_CIPHER_CTX_free) *EVP_CIPHER_CTX_free;
	__typeof__(EVP_CIPHER_CTX_ctrl) *EVP_CIPHER_CTX_ctrl;
	__typeof__(EVP_CipherInit_ex) *EVP_CipherInit_ex;
	__typeof__(EVP_CipherUpdate) *EVP_CipherUpdate;
	__typeof__(EVP_CipherFinal_ex) *EVP_CipherFinal_ex;
} fn;

#define SYM(n) LAZYLIB_SYM(fn, n)
static const struct lazylib_sym syms[] = {
	SYM(EVP_sha256),        SYM(EVP_md5),          SYM(EVP_Digest),
	SYM(EVP_MD_CTX_new),    SYM(EVP_MD_CTX_free),  SYM(EVP_DigestInit_ex),
	SYM(EVP_DigestUpdate),  SYM(EVP_DigestFinal_ex), SYM(EVP_EncodeBlock),
	SYM(HMAC),
	SYM(EVP_PKEY_new_raw_private_key), SYM(EVP_PKEY_new_raw_public_key),
	SYM(EVP_PKEY_get_raw_public_key), SYM(EVP_PKEY_free), SYM(EVP_PKEY_CTX_new),
	SYM(EVP_PKEY_CTX_free), SYM(EVP_PKEY_derive_init), SYM(EVP_PKEY_derive_set_peer),
	SYM(EVP_PKEY_derive), SYM(EVP_chacha20_poly1305), SYM(EVP_CIPHER_CTX_new),
	SYM(EVP_CIPHER_CTX_free), SYM(EVP_CIPHER_CTX_ctrl), SYM(EVP_CipherInit_ex),
	SYM(EVP_CipherUpdate), SYM(EVP_CipherFinal_ex),
};

static struct lazylib lib = LAZYLIB_INIT(LAZY_CRYPTO_SONAME, "libssl3", syms, NULL);

#define F(n) LAZYLIB_FN(lib, fn, n)

int lazy_crypto_load(char *err, size_t errlen)
{
	return lazylib_load(&lib, err, errlen);
}

const EVP_MD *EVP_sha256(void) { return F(EVP_sha256)(); }
const EVP_MD *EVP_md5(void) { return F(EVP_md5)(); }
EVP_MD_CTX *EVP_MD_CTX_new(void) { return F(EVP_MD_CTX_new)(); }
void EVP_MD_CTX_free(EVP_MD_CTX *ctx) { F(EVP_MD_CTX_free)(ctx); }

int EVP_Digest(const void *data, size_t count, unsigned char *md, unsigned int *size,
	       const EVP_MD *type, ENGINE *impl)
{
	return F(EVP_Digest)(data, count, md, size, type, impl);
}

int EVP_DigestInit_ex(EVP_MD_CTX *ctx, const EVP_MD *type, ENGINE *impl)
{
	return F(EVP_DigestInit_ex)(ctx, type, impl);
}

int EVP_DigestUpdate(EVP_MD_CTX *ctx, const void *d, size_t cnt)
{
	return F(EVP_DigestUpdate)(ctx, d, cnt);
}

int EVP_DigestFinal_ex(EVP_MD_CTX *ctx, unsigned char *md, unsigned int *s)
{
	return F(EVP_DigestFinal_ex)(ctx, md, s);
}

int EVP_EncodeBlock(unsigned char *t, const unsigned char *f, int n)
{
	return F(EVP_EncodeBlock)(t, f, n);
}

unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d,
		    size_t n, unsigned char *md, unsigned int *md_len)
{
	return F(HMAC)(evp_md, key, key_len, d, n, md, md_len);
}

EVP_PKEY *EVP_PKEY_new_raw_private_key(int type, ENGINE *e, const unsigned char *priv, size_t len)
{
	return F(EVP_PKEY_new_raw_private_key)(type, e, priv, len);
}

EVP_PKEY *EVP_PKEY_new_raw_public_key(int type, ENGINE *e, const unsigned char *pub, size_t len)
{
	return F(EVP_PKEY_new_raw_public_key)(type, e, pub, len);
}

int EVP_PKEY_get_raw_public_key(const EVP_PKEY *pkey, unsigned char *pub, size_t *len)
{
	return F(EVP_PKEY_get_raw_public_key)(pkey, pub, len);
}

void EVP_PKEY_free(EVP_PKEY *pkey) { F(EVP_PKEY_free)(pkey); }
EVP_PKEY_CTX *EVP_PKEY_CTX_new(EVP_PKEY *pkey, ENGINE *e) { return F(EVP_PKEY_CTX_new)(pkey, e); }
void EVP_PKEY_CTX_free(EVP_PKEY_CTX *ctx) { F(EVP_PKEY_CTX_free)(ctx); }
int EVP_PKEY_derive_init(EVP_PKEY_CTX *ctx) { return F(EVP_PKEY_derive_init)(ctx); }
int EVP_PKEY_derive_set_peer(EVP_PKEY_CTX *ctx, EVP_PKEY *peer) { return F(EVP_PKEY_derive_set_peer)(ctx, peer); }

int EVP_PKEY_derive(EVP_PKEY_CTX *ctx, unsigned char *key, size_t *keylen)
{
	return F(EVP_PKEY_derive)(ctx, key, keylen);
}

const EVP_CIPHER *EVP_chacha20_poly1305(void) { return F(EVP_chacha20_poly1305)(); }
EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void) { return F(EVP_CIPHER_CTX_new)(); }
void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx) { F(EVP_CIPHER_CTX_free)(ctx); }

int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
{
	return F(EVP_CIPHER_CTX_ctrl)(ctx, type, arg, ptr);
}

int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl,
		      const unsigned char *key, const unsigned char *iv, int enc)
{
	return F(EVP_CipherInit_ex)(ctx, type, impl, key, iv, enc);
}

int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *in,
		     int inl)
{
	return F(EVP_CipherUpdate)(ctx, out, outl, in, inl);
}

int EVP_CipherFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl)
{
	return F(EVP_CipherFinal_ex)(ctx, outm, outl);
}
