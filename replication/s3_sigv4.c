/* s3_sigv4.c — AWS Signature Version 4 over OpenSSL's SHA-256 and HMAC. */
#include "replication/s3_sigv4.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replication/s3_buf.h"
#include "common/banned.h"

/* Canonical requests hold a few headers and a query; far below this. */
#define SIGV4_TEXT_CAP (64 * 1024)

void s3_hex(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

void s3_sha256_hex(const void *buf, size_t len, char out[S3_SHA256_HEX_LEN + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL);
	s3_hex(md, 32, out);
}

void s3_amz_date(int64_t wall_ns, char out[17])
{
	time_t t = (time_t)(wall_ns / 1000000000LL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static bool unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

char *s3_uri_encode(const char *s, bool keep_slash)
{
	static const char digits[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *o = out;
	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p < 0x80 && unreserved(*p)) || (keep_slash && *p == '/')) {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = digits[*p >> 4];
			*o++ = digits[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

struct enc_kv {
	char *name, *value;
};

static int cmp_enc_kv(const void *a, const void *b)
{
	const struct enc_kv *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

/* Sorted, encoded "a=1&b=2" (malloc'd), or NULL when out of memory. */
static char *canonical_query(const struct s3_kv *q, size_t n)
{
	struct enc_kv *kv = calloc(n ? n : 1, sizeof(*kv));
	struct s3_buf b = S3_BUF_INIT(SIGV4_TEXT_CAP);
	char *out = NULL;
	size_t i;
	if (!kv)
		return NULL;
	for (i = 0; i < n; i++) {
		kv[i].name = s3_uri_encode(q[i].name, false);
		kv[i].value = s3_uri_encode(q[i].value ? q[i].value : "", false);
		if (!kv[i].name || !kv[i].value)
			goto out;
	}
	qsort(kv, n, sizeof(*kv), cmp_enc_kv);
	if (s3_buf_add(&b, "", 0) < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (s3_buf_addf(&b, "%s%s=%s", i ? "&" : "", kv[i].name, kv[i].value) < 0)
			goto out;
	out = b.data;
	b.data = NULL;
out:
	for (i = 0; i < n; i++) {
		free(kv[i].name);
		free(kv[i].value);
	}
	free(kv);
	s3_buf_release(&b);
	return out;
}

struct canon_hdr {
	char *name;        /* lowercased */
	const char *value;
};

static int cmp_hdr(const void *a, const void *b)
{
	return strcmp(((const struct canon_hdr *)a)->name, ((const struct canon_hdr *)b)->name);
}

/* Value with leading/trailing blanks removed and inner runs of blanks squeezed to one space. */
static int add_trimmed(struct s3_buf *b, const char *v)
{
	bool pending_space = false, started = false;
	for (; v && *v; v++) {
		if (*v == ' ' || *v == '\t') {
			pending_space = started;
			continue;
		}
		if (pending_space && s3_buf_add(b, " ", 1) < 0)
			return -1;
		if (s3_buf_add(b, v, 1) < 0)
			return -1;
		pending_space = false;
		started = true;
	}
	return 0;
}

/* Appends the canonical headers block and fills signed ("host;x-amz-date"). */
static int canonical_headers(const struct s3_kv *h, size_t n, struct s3_buf *b, struct s3_buf *signed_hdrs)
{
	struct canon_hdr *ch = calloc(n ? n : 1, sizeof(*ch));
	int rc = -1;
	size_t i;
	if (!ch)
		return -1;
	for (i = 0; i < n; i++) {
		ch[i].name = strdup(h[i].name);
		if (!ch[i].name)
			goto out;
		for (char *p = ch[i].name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		ch[i].value = h[i].value;
	}
	/* Stable enough: equal names keep caller order in practice; combine them with ','. */
	qsort(ch, n, sizeof(*ch), cmp_hdr);
	for (i = 0; i < n; i++) {
		bool same = i > 0 && strcmp(ch[i].name, ch[i - 1].name) == 0;
		if (same) {
			b->len--; /* drop the '\n' to join values */
			if (s3_buf_add(b, ",", 1) < 0)
				goto out;
		} else {
			if ((i && s3_buf_add(signed_hdrs, ";", 1) < 0) || s3_buf_adds(signed_hdrs, ch[i].name) < 0 ||
			    s3_buf_addf(b, "%s:", ch[i].name) < 0)
				goto out;
		}
		if (add_trimmed(b, ch[i].value) < 0 || s3_buf_add(b, "\n", 1) < 0)
			goto out;
	}
	rc = 0;
out:
	for (i = 0; i < n; i++)
		free(ch[i].name);
	free(ch);
	return rc;
}

static void hmac(const void *key, size_t keylen, const char *msg, unsigned char out[32])
{
	unsigned int len = 32;
	HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, strlen(msg), out, &len);
}

int s3_sigv4_sign_debug(const struct s3_sign_input *in, char **query_out, char *authz,
			size_t authzlen, char **canonical_request, char **string_to_sign)
{
	struct s3_buf creq = S3_BUF_INIT(SIGV4_TEXT_CAP), sts = S3_BUF_INIT(SIGV4_TEXT_CAP);
	struct s3_buf signed_hdrs = S3_BUF_INIT(SIGV4_TEXT_CAP);
	struct s3_buf keybuf = S3_BUF_INIT(4096);
	char *query = NULL, date[9], hash[S3_SHA256_HEX_LEN + 1], sig[65];
	unsigned char k1[32], k2[32], k3[32], k4[32], mac[32];
	int rc = -1;

	*query_out = NULL;
	if (strlen(in->amz_date) < 8)
		goto out;
	memcpy(date, in->amz_date, 8);
	date[8] = '\0';
	query = canonical_query(in->query, in->nquery);
	if (!query)
		goto out;
	if (s3_buf_addf(&creq, "%s\n%s\n%s\n", in->method, in->path, query) < 0 ||
	    canonical_headers(in->headers, in->nheaders, &creq, &signed_hdrs) < 0 ||
	    s3_buf_addf(&creq, "\n%s\n%s", s3_buf_str(&signed_hdrs), in->payload_hash) < 0)
		goto out;
	s3_sha256_hex(creq.data, creq.len, hash);
	if (s3_buf_addf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", in->amz_date, date,
			in->region, in->service, hash) < 0)
		goto out;

	if (s3_buf_addf(&keybuf, "AWS4%s", in->secret_key) < 0)
		goto out;
	hmac(keybuf.data, keybuf.len, date, k1);
	hmac(k1, 32, in->region, k2);
	hmac(k2, 32, in->service, k3);
	hmac(k3, 32, "aws4_request", k4);
	hmac(k4, 32, sts.data, mac);
	s3_hex(mac, 32, sig);

	int n = snprintf(authz, authzlen,
			 "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
			 in->access_key, date, in->region, in->service, s3_buf_str(&signed_hdrs), sig);
	if (n < 0 || (size_t)n >= authzlen)
		goto out;
	if (canonical_request) {
		*canonical_request = creq.data;
		creq.data = NULL;
	}
	if (string_to_sign) {
		*string_to_sign = sts.data;
		sts.data = NULL;
	}
	*query_out = query;
	query = NULL;
	rc = 0;
out:
	/* The derived keys and the secret copy are wiped, not just freed. */
	explicit_bzero(k1, sizeof(k1));
	explicit_bzero(k2, sizeof(k2));
	explicit_bzero(k3, sizeof(k3));
	explicit_bzero(k4, sizeof(k4));
	if (keybuf.data)
		explicit_bzero(keybuf.data, keybuf.alloc);
	s3_buf_release(&keybuf);
	s3_buf_release(&creq);
	s3_buf_release(&sts);
	s3_buf_release(&signed_hdrs);
	free(query);
	return rc;
}

int s3_sigv4_sign(const struct s3_sign_input *in, char **query_out, char *authz, size_t authzlen)
{
	return s3_sigv4_sign_debug(in, query_out, authz, authzlen, NULL, NULL);
}
