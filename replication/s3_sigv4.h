/*
 * s3_sigv4.h — AWS Signature Version 4 (header form), written here rather than
 * taken from libcurl: curl 7.88's CURLOPT_AWS_SIGV4 neither sorts nor encodes
 * the query and signs uploads as empty (ecosystem-notes §7).
 *
 * Pure functions (no I/O, no global state): thread-safe, unit-tested against
 * AWS's published test vectors and botocore (tests/unit/test_sigv4.c).
 *
 * The caller passes the exact header values it will send; the signer
 * canonicalises (lowercase names, trimmed values, sorted) and signs all of
 * them. The query is given raw; the signer encodes and sorts it and returns
 * that same canonical string for the URL, so what is signed is what is sent.
 */
#ifndef LITEVISOR_S3_SIGV4_H
#define LITEVISOR_S3_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct s3_kv {
	const char *name;
	const char *value; /* NULL is the same as "" */
};

struct s3_sign_input {
	const char *method;               /* "GET", "PUT", … */
	const char *path;                 /* URI-encoded absolute path, as sent ("/bucket/a%20b") */
	const struct s3_kv *query;        /* raw names and values, any order */
	size_t nquery;
	const struct s3_kv *headers;      /* every header to sign, incl. host and x-amz-date */
	size_t nheaders;
	const char *payload_hash;         /* lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD" */
	const char *amz_date;             /* "YYYYMMDDTHHMMSSZ" (its first 8 chars are the scope date) */
	const char *region;
	const char *service;              /* "s3" */
	const char *access_key;
	const char *secret_key;
};

#define S3_SHA256_HEX_LEN 64

/*
 * Sign. On success returns 0 with *query_out set to the canonical query
 * string (malloc'd, "" when there is none; append it after '?') and authz
 * filled with the Authorization header value. Returns -1 on out of memory or
 * if authz is too small (>= 512 bytes is always enough for sane input).
 */
int s3_sigv4_sign(const struct s3_sign_input *in, char **query_out, char *authz, size_t authzlen);

/*
 * Same as s3_sigv4_sign, but also returns the canonical request and the
 * string to sign (malloc'd) for tests and debugging. Never log them together
 * with a secret.
 */
int s3_sigv4_sign_debug(const struct s3_sign_input *in, char **query_out, char *authz,
			size_t authzlen, char **canonical_request, char **string_to_sign);

/*
 * RFC 3986 percent-encoding as SigV4 wants it: unreserved A-Z a-z 0-9 - . _ ~
 * kept, everything else %XX (uppercase hex), '/' kept if keep_slash. Returns
 * a malloc'd string, or NULL when out of memory.
 */
char *s3_uri_encode(const char *s, bool keep_slash);

/* Lowercase hex SHA-256 of buf into out (65 bytes). */
void s3_sha256_hex(const void *buf, size_t len, char out[S3_SHA256_HEX_LEN + 1]);

/* Bytes to lowercase hex into out (2*len+1 bytes). */
void s3_hex(const unsigned char *in, size_t len, char *out);

/* The x-amz-date form of a wall time (ns since the epoch): "YYYYMMDDTHHMMSSZ" into out (17 bytes). */
void s3_amz_date(int64_t wall_ns, char out[17]);

#endif
