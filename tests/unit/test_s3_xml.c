/* test_s3_xml.c — the S3 response reader on the shapes S3 sends, and on bad input. */
#include "tests/unit/unit.h"

#include "replication/s3_xml.h"

struct rec {
	char out[4096];
	size_t len;
};

/* Records "path=text;" for every close event. */
static int record(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	struct rec *r = ctx;
	if (ev == S3_XML_CLOSE)
		r->len += (size_t)snprintf(r->out + r->len, sizeof(r->out) - r->len, "%s=%.*s;", path,
					   (int)len, text);
	return 0;
}

static int parse(const char *xml, struct rec *r)
{
	memset(r, 0, sizeof(*r));
	return s3_xml_parse(xml, strlen(xml), record, r, NULL, 0);
}

TEST(list_bucket_result)
{
	struct rec r;
	const char *xml =
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
		"<Name>b</Name><IsTruncated>true</IsTruncated>"
		"<Contents><Key>a &amp; b&lt;c&gt;&quot;&apos;&#233;&#x65E5;</Key><Size>12</Size></Contents>"
		"<CommonPrefixes><Prefix>p/</Prefix></CommonPrefixes>"
		"<!-- a comment --><NextContinuationToken><![CDATA[t<&>]]></NextContinuationToken>"
		"<Empty/></ListBucketResult>";
	CHECK_INT(parse(xml, &r), 0);
	CHECK_STR(r.out, "ListBucketResult/Name=b;ListBucketResult/IsTruncated=true;"
			 "ListBucketResult/Contents/Key=a & b<c>\"'\xC3\xA9\xE6\x97\xA5;"
			 "ListBucketResult/Contents/Size=12;ListBucketResult/Contents=;"
			 "ListBucketResult/CommonPrefixes/Prefix=p/;ListBucketResult/CommonPrefixes=;"
			 "ListBucketResult/NextContinuationToken=t<&>;ListBucketResult/Empty=;"
			 "ListBucketResult=;");
}

TEST(error_document)
{
	const char *xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>"
			  "<Message>The key &quot;x&quot; does not exist</Message><Key>x</Key></Error>";
	char code[32], msg[64];
	CHECK_INT(s3_xml_error(xml, strlen(xml), code, sizeof(code), msg, sizeof(msg)), 0);
	CHECK_STR(code, "NoSuchKey");
	CHECK_STR(msg, "The key \"x\" does not exist");
	const char *other = "<ListBucketResult><Name>b</Name></ListBucketResult>";
	CHECK_INT(s3_xml_error(other, strlen(other), code, sizeof(code), msg, sizeof(msg)), -1);
	CHECK_INT(s3_xml_error("not xml", 7, code, sizeof(code), msg, sizeof(msg)), -1);
	CHECK_INT(s3_xml_error(NULL, 0, code, sizeof(code), msg, sizeof(msg)), -1);
}

TEST(namespace_prefixes_dropped)
{
	struct rec r;
	CHECK_INT(parse("<s3:Delete xmlns:s3=\"x\"><s3:Key a='>'>k</s3:Key></s3:Delete>", &r), 0);
	CHECK_STR(r.out, "Delete/Key=k;Delete=;");
}

TEST(malformed_rejected)
{
	struct rec r;
	char why[128] = "";
	const char *bad[] = {
		"<a><b></a></b>", "<a>", "<a></a><b></b>", "<a>&bogus;</a>", "<a>&#0;</a>",
		"<a>&#xD800;</a>", "text<a/>", "<a><!-- open</a>", "<a><![CDATA[x</a>", "", "</a>",
		"<a b=\"unterminated></a>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&r, 0, sizeof(r));
		if (s3_xml_parse(bad[i], strlen(bad[i]), record, &r, why, sizeof(why)) != -1)
			FAIL("accepted: %s", bad[i]);
		CHECK(strstr(why, "malformed XML"));
	}
}

TEST(too_deep_rejected)
{
	char xml[2048] = "";
	for (int i = 0; i < 40; i++)
		strncat(xml, "<a>", sizeof(xml) - strlen(xml) - 1);
	for (int i = 0; i < 40; i++)
		strncat(xml, "</a>", sizeof(xml) - strlen(xml) - 1);
	struct rec r;
	CHECK_INT(parse(xml, &r), -1);
}

static int stop_at_key(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	(void)ctx;
	(void)text;
	(void)len;
	return ev == S3_XML_CLOSE && !strcmp(path, "R/Key") ? 7 : 0;
}

TEST(callback_stops_parse)
{
	const char *xml = "<R><Key>k</Key><Key>l</Key></R>";
	CHECK_INT(s3_xml_parse(xml, strlen(xml), stop_at_key, NULL, NULL, 0), 7);
}

TEST(escape_round_trip)
{
	struct s3_buf b = S3_BUF_INIT(1024);
	CHECK_INT(s3_buf_adds(&b, "<K>"), 0);
	CHECK_INT(s3_xml_escape(&b, "a&b<c>\"d'e\tf\n"), 0);
	CHECK_INT(s3_buf_adds(&b, "</K>"), 0);
	struct rec r;
	CHECK_INT(parse(s3_buf_str(&b), &r), 0);
	CHECK_STR(r.out, "K=a&b<c>\"d'e\tf\n;");
	s3_buf_release(&b);
}

TEST(buffer_cap_enforced)
{
	struct s3_buf b = S3_BUF_INIT(8);
	CHECK_INT(s3_buf_adds(&b, "12345678"), 0);
	CHECK_INT(s3_buf_adds(&b, "9"), -1);
	CHECK(b.overflow);
	CHECK_STR(s3_buf_str(&b), "12345678");
	s3_buf_release(&b);
}

#define CUT(s, root) s3_xml_cut_short(s, strlen(s), root)

TEST(cut_short_only_for_the_expected_document_ending_early)
{
	const char *whole = "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name></ListBucketResult>";
	/* every prefix of the expected document is cut short; the whole one is not */
	for (size_t n = 0; n < strlen(whole); n++)
		if (!s3_xml_cut_short(whole, n, "ListBucketResult"))
			FAIL("prefix of %zu bytes not taken for cut", n);
	CHECK(!CUT(whole, "ListBucketResult"));
	CHECK(!CUT("<DeleteResult/>", "DeleteResult"));
	CHECK(!CUT("\xEF\xBB\xBF<!-- c --><R><![CDATA[x]]></R>  \n", "R"));
	/* an <Error> cut short counts too */
	CHECK(CUT("<Error><Code>Internal", "R"));
	CHECK(CUT("<?xml version=\"1.0\"?>\n  ", "R"));
	CHECK(CUT("<R>&am", "R"));
	/* malformed before its end, or another kind of page: the caller's error */
	CHECK(!CUT("<R><Name>b</Nme></R>", "R"));
	CHECK(!CUT("<!doctype html><html><head><meta charset=utf-8></head><body>x", "R"));
	CHECK(!CUT("<html><body>x", "R"));
	CHECK(!CUT("{\"json\": true}", "R"));
	CHECK(!CUT("</R>", "R"));
}

UNIT_MAIN(T(list_bucket_result), T(error_document), T(namespace_prefixes_dropped),
	  T(malformed_rejected), T(too_deep_rejected), T(callback_stops_parse), T(escape_round_trip),
	  T(buffer_cap_enforced), T(cut_short_only_for_the_expected_document_ending_early))
