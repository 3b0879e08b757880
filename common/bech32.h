/*
 * bech32.h — Bech32 (BIP 173) as age writes its keys: "age1…" recipients
 * (lowercase) and "AGE-SECRET-KEY-1…" identities (uppercase).
 *
 * As age's own decoder: a string is all lowercase or all uppercase, the
 * checksum is over its lowercase form, there is no 90-character limit, and
 * the 5-to-8-bit conversion refuses padding that is not zero or a whole
 * group long. Pure functions, no allocation.
 */
#ifndef LITEVISOR_BECH32_H
#define LITEVISOR_BECH32_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Decode s into its human-readable part (lowercased, NUL-terminated, into
 * hrp[hrplen]) and its data bytes (into data[datalen]). Returns the number
 * of data bytes, or -1 with *why set to a static reason ("bad checksum", …).
 */
int bech32_decode(const char *s, char *hrp, size_t hrplen, unsigned char *data, size_t datalen,
		  const char **why);

/*
 * Encode data under hrp (given lowercase) into out[outlen], in uppercase if
 * upper. Returns the length written (without the NUL), or -1 if out is too
 * small or hrp is not printable ASCII.
 */
int bech32_encode(const char *hrp, const unsigned char *data, size_t len, bool upper, char *out,
		  size_t outlen);

#endif
