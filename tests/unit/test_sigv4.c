/*
 * test_sigv4.c — the SigV4 signer against signatures computed elsewhere.
 *
 * get_vanilla, get_vanilla_query_order, post_x_www_form_urlencoded: AWS's
 * published SigV4 test suite (aws-sig-v4-test-suite, credentials AKIDEXAMPLE).
 * s3_get_object_range: the GET example of AWS's "Signature Calculations for the
 * Authorization Header" page for S3 (examplebucket, 20130524T000000Z).
 * The s3_* cases below those were computed with Debian's python3-botocore
 * 1.29.27 (botocore.auth.S3SigV4Auth: canonical_request → string_to_sign →
 * signature with request.context['timestamp'] fixed), e.g.
 *   auth = S3SigV4Auth(Credentials(ak, sk, token), 's3', region)
 *   req = AWSRequest(method, url, params=..., headers={..., 'X-Amz-Date': ts})
 *   req.context['timestamp'] = ts; cr = auth.canonical_request(req)
 *   auth.signature(auth.string_to_sign(req, cr), req)
 * Both are independent of this code.
 */
#include "tests/unit/unit.h"

#include "replication/s3_sigv4.h"
#include "common/lazy_crypto.h"

#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define AWS_AK "AKIDEXAMPLE"
#define AWS_SK "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define OUR_AK "AKIDLITEVISOR"
#define OUR_SK "se/cret+key=="
#define TS "20261122T063455Z"

/* Signs and returns the signature part of the Authorization header (static buffer). */
static const char *signature_of(const struct s3_sign_input *in, char **query)
{
	static char authz[1024];
	CHECK_INT(s3_sigv4_sign(in, query, authz, sizeof(authz)), 0);
	const char *sig = strstr(authz, "Signature=");
	CHECK(sig);
	return sig + strlen("Signature=");
}

TEST(get_vanilla)
{
	struct s3_kv h[] = { { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } };
	struct s3_sign_input in = { .method = "GET", .path = "/", .headers = h, .nheaders = 2,
				    .payload_hash = EMPTY_SHA, .amz_date = "20150830T123600Z",
				    .region = "us-east-1", .service = "service",
				    .access_key = AWS_AK, .secret_key = AWS_SK };
	char authz[512], *q = NULL;
	CHECK_INT(s3_sigv4_sign(&in, &q, authz, sizeof(authz)), 0);
	CHECK_STR(authz, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
			 "SignedHeaders=host;x-amz-date, "
			 "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
	CHECK_STR(q, "");
	free(q);
}

TEST(get_vanilla_query_order)
{
	struct s3_kv h[] = { { "host", "example.amazonaws.com" }, { "x-amz-date", "20150830T123600Z" } };
	struct s3_kv qs[] = { { "Param2", "value2" }, { "Param1", "value1" } };
	struct s3_sign_input in = { .method = "GET", .path = "/", .query = qs, .nquery = 2,
				    .headers = h, .nheaders = 2, .payload_hash = EMPTY_SHA,
				    .amz_date = "20150830T123600Z", .region = "us-east-1",
				    .service = "service", .access_key = AWS_AK, .secret_key = AWS_SK };
	char *q = NULL;
	CHECK_STR(signature_of(&in, &q), "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
	CHECK_STR(q, "Param1=value1&Param2=value2");
	free(q);
}

TEST(post_x_www_form_urlencoded)
{
	const char *body = "Param1=value1";
	char hash[65];
	s3_sha256_hex(body, strlen(body), hash);
	CHECK_STR(hash, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
	struct s3_kv h[] = { { "Content-Type", "application/x-www-form-urlencoded" },
			     { "Host", "example.amazonaws.com" }, { "X-Amz-Date", "20150830T123600Z" } };
	struct s3_sign_input in = { .method = "POST", .path = "/", .headers = h, .nheaders = 3,
				    .payload_hash = hash, .amz_date = "20150830T123600Z",
				    .region = "us-east-1", .service = "service",
				    .access_key = AWS_AK, .secret_key = AWS_SK };
	char *q = NULL;
	CHECK_STR(signature_of(&in, &q), "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
	free(q);
}

TEST(s3_get_object_range)
{
	struct s3_kv h[] = { { "Host", "examplebucket.s3.amazonaws.com" }, { "Range", "bytes=0-9" },
			     { "x-amz-content-sha256", EMPTY_SHA }, { "x-amz-date", "20130524T000000Z" } };
	struct s3_sign_input in = { .method = "GET", .path = "/test.txt", .headers = h, .nheaders = 4,
				    .payload_hash = EMPTY_SHA, .amz_date = "20130524T000000Z",
				    .region = "us-east-1", .service = "s3",
				    .access_key = "AKIAIOSFODNN7EXAMPLE",
				    .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" };
	char *q = NULL;
	CHECK_STR(signature_of(&in, &q), "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
	free(q);
}

/* Key with space, '+', '%' and unicode; port in Host; session token; unsigned payload. */
TEST(s3_put_encoded_key_token_port)
{
	char *path = s3_uri_encode("/bucket/a b+c%d/été.txt", true);
	CHECK_STR(path, "/bucket/a%20b%2Bc%25d/%C3%A9t%C3%A9.txt");
	struct s3_kv h[] = { { "host", "127.0.0.1:9000" }, { "x-amz-content-sha256", "UNSIGNED-PAYLOAD" },
			     { "x-amz-date", TS }, { "x-amz-security-token", "tok/en+==" } };
	struct s3_sign_input in = { .method = "PUT", .path = path, .headers = h, .nheaders = 4,
				    .payload_hash = "UNSIGNED-PAYLOAD", .amz_date = TS,
				    .region = "eu-west-3", .service = "s3",
				    .access_key = OUR_AK, .secret_key = OUR_SK };
	char authz[1024], *q = NULL;
	CHECK_INT(s3_sigv4_sign(&in, &q, authz, sizeof(authz)), 0);
	CHECK(strstr(authz, "SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
	CHECK(strstr(authz, "Credential=AKIDLITEVISOR/20261122/eu-west-3/s3/aws4_request,"));
	CHECK_STR(strstr(authz, "Signature=") + 10,
		  "1919981751324bcf94e98f0e809d6d5712dee152496373644bfc6bc54e22a74b");
	free(q);
	free(path);
}

/* ListObjectsV2 query: values with '/', space, unicode, '+', '=' are encoded and sorted. */
TEST(s3_list_query_encoding)
{
	struct s3_kv h[] = { { "host", "s3.amazonaws.com" }, { "x-amz-content-sha256", EMPTY_SHA },
			     { "x-amz-date", TS } };
	struct s3_kv qs[] = { { "list-type", "2" }, { "prefix", "dir with space/ü+" },
			      { "delimiter", "/" }, { "continuation-token", "abc+/==" } };
	struct s3_sign_input in = { .method = "GET", .path = "/bucket", .query = qs, .nquery = 4,
				    .headers = h, .nheaders = 3, .payload_hash = EMPTY_SHA,
				    .amz_date = TS, .region = "us-east-1", .service = "s3",
				    .access_key = OUR_AK, .secret_key = OUR_SK };
	char *q = NULL;
	CHECK_STR(signature_of(&in, &q), "9549ce1aa81896d01f61aed87e0b53c2569c2282b4eb16d63a780e2089051afc");
	CHECK_STR(q, "continuation-token=abc%2B%2F%3D%3D&delimiter=%2F&list-type=2&prefix=dir%20with%20space%2F%C3%BC%2B");
	free(q);
}

/* DeleteObjects: valueless "delete" query, Content-MD5 signed, real body hash. */
TEST(s3_delete_objects_md5)
{
	const char *body = "<Delete><Quiet>true</Quiet><Object><Key>a</Key></Object></Delete>";
	char hash[65];
	s3_sha256_hex(body, strlen(body), hash);
	CHECK_STR(hash, "bd232bcfb3ac6bfcb538539917180318278ab6bd65d113ce07df95d96e741ec4");
	struct s3_kv h[] = { { "Content-MD5", "kr09joMOwMlnmHIATQxZjg==" }, { "host", "localhost:4568" },
			     { "x-amz-content-sha256", hash }, { "x-amz-date", TS } };
	struct s3_kv qs[] = { { "delete", NULL } };
	struct s3_sign_input in = { .method = "POST", .path = "/bucket", .query = qs, .nquery = 1,
				    .headers = h, .nheaders = 4, .payload_hash = hash, .amz_date = TS,
				    .region = "us-east-1", .service = "s3",
				    .access_key = OUR_AK, .secret_key = OUR_SK };
	char *q = NULL;
	CHECK_STR(signature_of(&in, &q), "72c341907f504634087d7985b1b26070957747c3d985d7e20336e93f2b4dcf4f");
	CHECK_STR(q, "delete=");
	free(q);
}

/* Virtual-hosted style; '~' stays unencoded in the path. */
TEST(s3_initiate_multipart_virtual_host)
{
	char *path = s3_uri_encode("/k~y", true);
	CHECK_STR(path, "/k~y");
	struct s3_kv h[] = { { "host", "bkt.s3.us-east-1.amazonaws.com" },
			     { "x-amz-content-sha256", EMPTY_SHA }, { "x-amz-date", TS } };
	struct s3_kv qs[] = { { "uploads", "" } };
	struct s3_sign_input in = { .method = "POST", .path = "/k%7Ey", .query = qs, .nquery = 1,
				    .headers = h, .nheaders = 3, .payload_hash = EMPTY_SHA,
				    .amz_date = TS, .region = "us-east-1", .service = "s3",
				    .access_key = OUR_AK, .secret_key = OUR_SK };
	char *q = NULL;
	/* botocore signed the path as given ("/k%7Ey"): S3 does not re-normalise it. */
	CHECK_STR(signature_of(&in, &q), "165eddf87005129b30b9692941394ec0edd138c98f49fcce7b77d094d428820e");
	free(q);
	free(path);
}

TEST(header_values_trimmed_and_squeezed)
{
	/* "a   b" must sign like "a b" and "  a b  " (SigV4 canonical header values). */
	struct s3_kv h1[] = { { "host", "h" }, { "x-amz-date", TS }, { "x-amz-meta-x", "  a   b  " } };
	struct s3_kv h2[] = { { "host", "h" }, { "x-amz-date", TS }, { "x-amz-meta-x", "a b" } };
	struct s3_sign_input in = { .method = "GET", .path = "/", .headers = h1, .nheaders = 3,
				    .payload_hash = EMPTY_SHA, .amz_date = TS, .region = "us-east-1",
				    .service = "s3", .access_key = OUR_AK, .secret_key = OUR_SK };
	char a1[512], a2[512], *q1 = NULL, *q2 = NULL;
	CHECK_INT(s3_sigv4_sign(&in, &q1, a1, sizeof(a1)), 0);
	in.headers = h2;
	CHECK_INT(s3_sigv4_sign(&in, &q2, a2, sizeof(a2)), 0);
	CHECK_STR(a1, a2);
	free(q1);
	free(q2);
}

TEST(amz_date_format)
{
	char d[17];
	s3_amz_date(1440938160LL * 1000000000LL, d); /* 2015-08-30T12:36:00Z */
	CHECK_STR(d, "20150830T123600Z");
}

TEST(authz_buffer_too_small_fails)
{
	struct s3_kv h[] = { { "host", "h" }, { "x-amz-date", TS } };
	struct s3_sign_input in = { .method = "GET", .path = "/", .headers = h, .nheaders = 2,
				    .payload_hash = EMPTY_SHA, .amz_date = TS, .region = "us-east-1",
				    .service = "s3", .access_key = OUR_AK, .secret_key = OUR_SK };
	char small[32], *q = NULL;
	CHECK_INT(s3_sigv4_sign(&in, &q, small, sizeof(small)), -1);
	CHECK(q == NULL);
}

/* SigV4 hashes with libcrypto, which the S3 client loads on first use (common/lazylib.h). */
__attribute__((constructor)) static void load_libcrypto(void)
{
	char err[512];
	if (lazy_crypto_load(err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
}

UNIT_MAIN(T(get_vanilla), T(get_vanilla_query_order), T(post_x_www_form_urlencoded),
	  T(s3_get_object_range), T(s3_put_encoded_key_token_port), T(s3_list_query_encoding),
	  T(s3_delete_objects_md5), T(s3_initiate_multipart_virtual_host),
	  T(header_values_trimmed_and_squeezed), T(amz_date_format), T(authz_buffer_too_small_fails))
