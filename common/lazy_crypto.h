/*
 * lazy_crypto.h — OpenSSL's libcrypto, loaded on first use (see
 * common/lazylib.h). The S3 client hashes (SigV4's SHA-256 and HMAC,
 * Content-MD5) and age encryption (X25519, ChaCha20-Poly1305, HMAC) use it;
 * storage_open loads it for an S3 replica and for any replica with age:. The forwarded functions are those
 * listed in common/lazy_crypto.c.
 */
#ifndef LITEVISOR_LAZY_CRYPTO_H
#define LITEVISOR_LAZY_CRYPTO_H

#include <stddef.h>

/* Load libcrypto once per process (thread-safe). Returns 0, or -1 with the cause in err. */
int lazy_crypto_load(char *err, size_t errlen);

#endif
