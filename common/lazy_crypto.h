/*
 * lazy_crypto.h — OpenSSL's libcrypto, loaded on first use (see
 * common/lazylib.h). Only the S3 client hashes (SigV4's SHA-256 and HMAC,
 * Content-MD5); storage_s3_open loads it. The forwarded functions are those
 * listed in common/lazy_crypto.c.
 */
#ifndef LITEVISOR_LAZY_CRYPTO_H
#define LITEVISOR_LAZY_CRYPTO_H

#include <stddef.h>

/* Load libcrypto once per process (thread-safe). Returns 0, or -1 with the cause in err. */
int lazy_crypto_load(char *err, size_t errlen);

#endif
