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
} fn;

#define SYM(n) LAZYLIB_SYM(fn, n)
static const struct lazylib_sym syms[] = {
	SYM(EVP_sha256),        SYM(EVP_md5),          SYM(EVP_Digest),
	SYM(EVP_MD_CTX_new),    SYM(EVP_MD_CTX_free),  SYM(EVP_DigestInit_ex),
	SYM(EVP_DigestUpdate),  SYM(EVP_DigestFinal_ex), SYM(EVP_EncodeBlock),
	SYM(HMAC),
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
