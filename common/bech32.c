/* bech32.c — Bech32 encoding and strict decoding (BIP 173, as age uses it). */
#include "common/bech32.h"

#include <stdint.h>
#include <string.h>

#include "common/banned.h"

static const char charset[] = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

static uint32_t polymod_step(uint32_t chk, unsigned v)
{
	static const uint32_t gen[5] = { 0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3 };
	uint32_t top = chk >> 25;
	chk = (chk & 0x1ffffff) << 5 ^ v;
	for (int i = 0; i < 5; i++)
		if (top >> i & 1)
			chk ^= gen[i];
	return chk;
}

/* The checksum state after the expanded human-readable part (lowercase). */
static uint32_t hrp_polymod(const char *hrp, size_t n)
{
	uint32_t chk = 1;
	for (size_t i = 0; i < n; i++)
		chk = polymod_step(chk, (unsigned char)hrp[i] >> 5);
	chk = polymod_step(chk, 0);
	for (size_t i = 0; i < n; i++)
		chk = polymod_step(chk, (unsigned char)hrp[i] & 31);
	return chk;
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

int bech32_decode(const char *s, char *hrp, size_t hrplen, unsigned char *data, size_t datalen,
		  const char **why)
{
	size_t len = strlen(s);
	bool has_lower = false, has_upper = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 33 || c > 126) {
			*why = "invalid character";
			return -1;
		}
		has_lower |= c >= 'a' && c <= 'z';
		has_upper |= c >= 'A' && c <= 'Z';
	}
	if (has_lower && has_upper) {
		*why = "mixed case";
		return -1;
	}
	const char *sep = strrchr(s, '1');
	if (!sep || sep == s || (size_t)(s + len - sep) < 7) {
		*why = "no separator, or too short";
		return -1;
	}
	size_t hn = (size_t)(sep - s);
	if (hn + 1 > hrplen) {
		*why = "prefix too long";
		return -1;
	}
	for (size_t i = 0; i < hn; i++)
		hrp[i] = (char)lower(s[i]);
	hrp[hn] = '\0';
	uint32_t chk = hrp_polymod(hrp, hn);
	const char *d = sep + 1;
	size_t dn = len - hn - 1, out = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < dn; i++) {
		const char *p = strchr(charset, lower(d[i]));
		if (!p || !*p) {
			*why = "invalid character";
			return -1;
		}
		unsigned v = (unsigned)(p - charset);
		chk = polymod_step(chk, v);
		if (i + 6 >= dn)
			continue; /* the checksum's six characters */
		acc = acc << 5 | v;
		bits += 5;
		if (bits >= 8) {
			bits -= 8;
			if (out == datalen) {
				*why = "too long";
				return -1;
			}
			data[out++] = (unsigned char)(acc >> bits);
		}
	}
	if (chk != 1) {
		*why = "bad checksum";
		return -1;
	}
	if (bits >= 5 || (acc & ((1u << bits) - 1)) != 0) {
		*why = "invalid padding";
		return -1;
	}
	return (int)out;
}

int bech32_encode(const char *hrp, const unsigned char *data, size_t len, bool upper, char *out,
		  size_t outlen)
{
	size_t hn = strlen(hrp), n = 0, need = hn + 1 + (len * 8 + 4) / 5 + 6 + 1;
	if (need > outlen)
		return -1;
	for (size_t i = 0; i < hn; i++)
		if ((unsigned char)hrp[i] < 33 || (unsigned char)hrp[i] > 126)
			return -1;
	uint32_t chk = hrp_polymod(hrp, hn);
	memcpy(out, hrp, hn);
	n = hn;
	out[n++] = '1';
	uint32_t acc = 0;
	unsigned bits = 0;
	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8 | data[i]) & 0xfff;
		bits += 8;
		while (bits >= 5) {
			bits -= 5;
			unsigned v = acc >> bits & 31;
			chk = polymod_step(chk, v);
			out[n++] = charset[v];
		}
	}
	if (bits) {
		unsigned v = acc << (5 - bits) & 31;
		chk = polymod_step(chk, v);
		out[n++] = charset[v];
	}
	for (int i = 0; i < 6; i++)
		chk = polymod_step(chk, 0);
	chk ^= 1;
	for (int i = 0; i < 6; i++)
		out[n++] = charset[chk >> (5 * (5 - i)) & 31];
	out[n] = '\0';
	if (upper)
		for (size_t i = 0; i < n; i++)
			if (out[i] >= 'a' && out[i] <= 'z')
				out[i] = (char)(out[i] - 'a' + 'A');
	return (int)n;
}
