/*
 * s3.c — the S3 backend: addressing (path-style for an endpoint such as
 * MinIO, virtual-hosted for AWS), ListObjectsV2 with full pagination,
 * GetObject streamed to the sink, HeadObject, DeleteObjects in batches.
 * PutObject lives in s3_put.c; transport, signing and retries in s3_http.c.
 */
#include "replication/s3.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/clock.h"
#include "common/log.h"
#include "replication/s3_xml.h"
#include "common/banned.h"

char *s3_full_key(const struct s3 *s3, const char *key)
{
	char *out = NULL;
	if (asprintf(&out, "%s%s", s3->prefix, key) < 0)
		return NULL;
	return out;
}

static int oom(struct st_error *err, const char *op, const char *key)
{
	st_error_set(err, ST_TRANSIENT, 0, "%s %s: out of memory", op, key);
	return ST_TRANSIENT;
}

/* ---- get / stat ---- */

static int s3_get(struct storage *st, const char *key, const struct st_sink *sink,
		  const struct st_call *call, struct st_error *err)
{
	struct s3 *s3 = (struct s3 *)st;
	struct s3_ctl ctl;
	struct s3_resp resp;
	char *full = s3_full_key(s3, key);
	if (!full)
		return oom(err, "get", key);
	s3_ctl_init(&ctl, call);
	s3_resp_init(&resp);
	struct s3_req req = { .op = "get", .method = "GET", .key = full, .read_len = -1,
			      .sink = sink, .big = true };
	int rc = s3_request(s3, &req, &resp, &ctl, err);
	s3_resp_release(&resp);
	free(full);
	return rc;
}

/* The offset applied for offset_ns: nothing below what a whole-second Date explains. */
static int64_t applied(int64_t offset_ns)
{
	return offset_ns > -S3_CLOCK_OFFSET_MIN_NS && offset_ns < S3_CLOCK_OFFSET_MIN_NS ? 0 : offset_ns;
}

int64_t s3_clock_correction(struct s3 *s3, const struct s3_resp *resp)
{
	/* whole seconds, rounded half away from zero */
	int64_t est = resp->clock_offset_ns;
	est = (est >= 0 ? est + NS_PER_SEC / 2 : est - NS_PER_SEC / 2) / NS_PER_SEC * NS_PER_SEC;
	pthread_mutex_lock(&s3->lock);
	int64_t was = s3->offset_known ? applied(s3->offset_ns) : 0;
	if (resp->have_date && (!s3->offset_known || est - s3->offset_ns >= S3_CLOCK_OFFSET_MIN_NS ||
				s3->offset_ns - est >= S3_CLOCK_OFFSET_MIN_NS)) {
		s3->offset_ns = est;
		s3->offset_known = true;
	}
	int64_t off = s3->offset_known ? applied(s3->offset_ns) : 0;
	pthread_mutex_unlock(&s3->lock);
	if (off != was && off)
		log_warn("s3", "the server's clock differs from ours: its object times are read on "
			 "our clock", "host=%s bucket=%s offset_s=%+lld", s3->host, s3->bucket,
			 (long long)(off / NS_PER_SEC));
	else if (off != was)
		log_info("s3", "the server's clock agrees with ours again", "host=%s bucket=%s",
			 s3->host, s3->bucket);
	return off;
}

static int s3_stat(struct storage *st, const char *key, struct st_object *out,
		   const struct st_call *call, struct st_error *err)
{
	struct s3 *s3 = (struct s3 *)st;
	struct s3_ctl ctl;
	struct s3_resp resp;
	char *full = s3_full_key(s3, key);
	if (!full)
		return oom(err, "head", key);
	s3_ctl_init(&ctl, call);
	s3_resp_init(&resp);
	struct s3_req req = { .op = "head", .method = "HEAD", .key = full, .read_len = -1, .head = true };
	int rc = s3_request(s3, &req, &resp, &ctl, err);
	if (rc == 0) {
		out->size = resp.content_length >= 0 ? resp.content_length : 0;
		out->mtime_ns = resp.last_modified_ns;
		if (out->mtime_ns)
			out->mtime_ns -= s3_clock_correction(s3, &resp);
	}
	s3_resp_release(&resp);
	free(full);
	return rc;
}

/* ---- list ---- */

struct list_page {
	struct st_list *out;
	const char *root;          /* replica prefix to strip */
	size_t rootlen;
	char *key;                 /* current <Contents> */
	int64_t size, mtime_ns;
	bool have_mtime;
	bool truncated;
	char *next_token;
	int failed;                /* out of memory */
	char bad[200];             /* the first value that cannot be read, "" none */
	char root_elem[40];        /* the document's element: must be ListBucketResult */
	char *lo, *hi;             /* the page's lowest and highest key or prefix (NULL none) */
};

static char *dup_text(const char *t, size_t len)
{
	char *s = malloc(len + 1);
	if (s) {
		memcpy(s, t, len);
		s[len] = '\0';
	}
	return s;
}

/* text without the blanks around it, into buf (cut to fit). */
static const char *trimmed(const char *text, size_t len, char *buf, size_t buflen)
{
	while (len && isspace((unsigned char)*text))
		text++, len--;
	while (len && isspace((unsigned char)text[len - 1]))
		len--;
	snprintf(buf, buflen, "%.*s", (int)len, text);
	return buf;
}

/*
 * <IsTruncated> as Go's strconv.ParseBool reads it (aws-sdk-go, so
 * Litestream): 1 t T TRUE true True, 0 f F FALSE false False. -1 otherwise:
 * read as "false", a page that is not the last would end the listing.
 */
static int parse_bool(const char *s)
{
	static const char *const yes[] = { "1", "t", "T", "TRUE", "true", "True" };
	static const char *const no[] = { "0", "f", "F", "FALSE", "false", "False" };
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcmp(s, yes[i]))
			return 1;
		if (!strcmp(s, no[i]))
			return 0;
	}
	return -1;
}

static void __attribute__((format(printf, 2, 3))) list_bad(struct list_page *p, const char *fmt, ...)
{
	if (p->bad[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->bad, sizeof(p->bad), fmt, ap);
	va_end(ap);
}

/*
 * Widen the page's key range [lo, hi] by key (len bytes): S3 lists in byte
 * order, each page after the last (s3_list checks it). -1 out of memory.
 */
static int note_key(struct list_page *p, const char *key, size_t len)
{
	char **ends[2] = { &p->lo, &p->hi };
	for (int i = 0; i < 2; i++) {
		char *now = *ends[i];
		int c = now ? strncmp(key, now, len) : 0;
		if (now && c == 0)
			c = now[len] ? -1 : 0; /* key is a prefix of now: it sorts first */
		if (now && (i == 0 ? c >= 0 : c <= 0))
			continue;
		char *k = dup_text(key, len);
		if (!k)
			return -1;
		free(now);
		*ends[i] = k;
	}
	return 0;
}

static int list_cb(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	struct list_page *p = ctx;
	if (ev == S3_XML_OPEN) {
		if (!p->root_elem[0] && !strchr(path, '/'))
			snprintf(p->root_elem, sizeof(p->root_elem), "%s", path);
		if (!strcmp(path, "ListBucketResult/Contents")) {
			free(p->key);
			p->key = NULL;
			p->size = p->mtime_ns = 0;
			p->have_mtime = false;
		}
		return 0;
	}
	char v[64];
	if (!strcmp(path, "ListBucketResult/Contents/Key")) {
		free(p->key);
		if (!(p->key = dup_text(text, len)))
			return p->failed = 1;
	} else if (!strcmp(path, "ListBucketResult/Contents/Size")) {
		p->size = strtoll(text, NULL, 10);
	} else if (!strcmp(path, "ListBucketResult/Contents/LastModified")) {
		/*
		 * An object's time decides retention, -timestamp and which
		 * generation is newest: one that cannot be read is no 1970
		 */
		p->have_mtime = clock_parse_rfc3339(trimmed(text, len, v, sizeof(v)), &p->mtime_ns) == 0;
		if (!p->have_mtime)
			list_bad(p, "<LastModified>%s</LastModified> is not a time", v);
	} else if (!strcmp(path, "ListBucketResult/Contents")) {
		if (p->key && !p->have_mtime)
			list_bad(p, "object \"%.100s\" without <LastModified>", p->key);
		if (p->key && note_key(p, p->key, strlen(p->key)) < 0)
			return p->failed = 1;
		/* keys outside the replica's prefix cannot appear, but never trust that */
		if (p->key && !strncmp(p->key, p->root, p->rootlen) &&
		    st_list_add_object(p->out, p->key + p->rootlen, p->size, p->mtime_ns) < 0)
			return p->failed = 1;
	} else if (!strcmp(path, "ListBucketResult/CommonPrefixes/Prefix")) {
		if (note_key(p, text, len) < 0)
			return p->failed = 1;
		if (len >= p->rootlen && !strncmp(text, p->root, p->rootlen) && len > p->rootlen &&
		    st_list_add_prefix(p->out, text + p->rootlen) < 0)
			return p->failed = 1;
	} else if (!strcmp(path, "ListBucketResult/IsTruncated")) {
		int b = parse_bool(trimmed(text, len, v, sizeof(v)));
		p->truncated = b == 1;
		if (b < 0)
			list_bad(p, "<IsTruncated>%s</IsTruncated> is neither true nor false", v);
	} else if (!strcmp(path, "ListBucketResult/NextContinuationToken")) {
		free(p->next_token);
		if (!(p->next_token = dup_text(text, len)))
			return p->failed = 1;
	}
	return 0;
}

/* Truncated pages listing nothing, in a row, before a listing counts as stuck. */
#define LIST_EMPTY_PAGES_MAX 100

static int s3_list(struct storage *st, const char *prefix, const char *delimiter,
		   struct st_list *out, const struct st_call *call, struct st_error *err)
{
	struct s3 *s3 = (struct s3 *)st;
	struct s3_ctl ctl;
	struct s3_resp resp;
	char *full = s3_full_key(s3, prefix), *token = NULL, *prev_hi = NULL;
	char why[256], stuck[300];
	int rc = 0, empty = 0;

	if (!full)
		return oom(err, "list", prefix);
	s3_ctl_init(&ctl, call);
	s3_resp_init(&resp);
	resp.body.cap = S3_LIST_BODY_CAP;
	for (int page = 0;; page++) {
		struct s3_kv q[4];
		size_t nq = 0;
		q[nq++] = (struct s3_kv){ "list-type", "2" };
		if (full[0])
			q[nq++] = (struct s3_kv){ "prefix", full };
		if (delimiter && delimiter[0])
			q[nq++] = (struct s3_kv){ "delimiter", delimiter };
		if (token)
			q[nq++] = (struct s3_kv){ "continuation-token", token };
		struct s3_req req = { .op = "list", .method = "GET", .key = NULL, .query = q, .nquery = nq,
				      .read_len = -1, .body_cap = S3_LIST_BODY_CAP,
				      .xml_root = "ListBucketResult" };
		if ((rc = s3_request(s3, &req, &resp, &ctl, err)) != 0) {
			/*
			 * Listing a prefix that holds nothing answers an empty list:
			 * a 404 means the bucket does not exist (or the endpoint is
			 * no S3 server). Not "no data": with a typo in the bucket,
			 * a restore would start the service on an empty database.
			 */
			if (rc == ST_NOT_FOUND) {
				char cause[sizeof(err->message)];
				snprintf(cause, sizeof(cause), "%s", err->message);
				rc = ST_PERMANENT;
				st_error_set(err, rc, err->http_status,
					     "list %s/%s: bucket %s does not exist at %s%s (%s)", s3->bucket,
					     full, s3->bucket, s3->base_url, s3->path_prefix, cause);
			}
			break;
		}
		struct list_page p = { .out = out, .root = s3->prefix, .rootlen = strlen(s3->prefix) };
		size_t had = out->nobjects;
		int prc = s3_xml_parse(resp.body.data, resp.body.len, list_cb, &p, why, sizeof(why));
		if (prc == 0) {
			int64_t fix = s3_clock_correction(s3, &resp);
			for (size_t i = had; fix && i < out->nobjects; i++)
				out->objects[i].mtime_ns -= fix;
			out->clock_offset_ns = fix;
		}
		free(p.key);
		/*
		 * Each page's keys come after the last page's: a server that
		 * ignores continuation-token, answering the same keys under a
		 * new token each time, was followed for ever, the listing
		 * growing (QA167 D1); so was one whose truncated pages are empty
		 * (a hundred in a row: AWS may answer a few, past delete markers).
		 * Some servers repeat the last page's last common prefix at the
		 * top of the next (older MinIO, LocalStack; st_list_sort drops the
		 * duplicate): a page may start at the last one's end, not before
		 * it, and one that is not the last must reach past it.
		 */
		stuck[0] = '\0';
		if (p.lo && prev_hi &&
		    (strcmp(p.lo, prev_hi) < 0 || (p.truncated && strcmp(p.hi, prev_hi) <= 0)))
			snprintf(stuck, sizeof(stuck), "page %d lists \"%.80s\", not after the last "
				 "page's \"%.80s\": the listing goes back", page + 1, p.lo, prev_hi);
		empty = p.lo ? 0 : empty + 1;
		if (p.truncated && empty >= LIST_EMPTY_PAGES_MAX)
			snprintf(stuck, sizeof(stuck), "%d truncated pages in a row list nothing: the "
				 "listing does not advance", empty);
		free(p.lo);
		if (p.hi) {
			free(prev_hi);
			prev_hi = p.hi;
		}
		if (prc == 0 && p.bad[0]) {
			snprintf(why, sizeof(why), "%s", p.bad);
			prc = -1;
		}
		if (prc == 0 && strcmp(p.root_elem, "ListBucketResult") != 0) {
			/*
			 * Another document (ListAllMyBuckets from a server without
			 * virtual hosts, a console's HTML page) is no empty listing:
			 * read as one, a restore would start the service on an empty
			 * database while the bucket holds the data.
			 */
			snprintf(why, sizeof(why), "%s%s%s", p.root_elem[0] ? "<" : "no XML document",
				 p.root_elem, p.root_elem[0] ? "> instead of <ListBucketResult>" : "");
			prc = -1;
		}
		if (prc != 0) {
			free(p.next_token);
			rc = p.failed ? oom(err, "list", full) : ST_PERMANENT;
			if (!p.failed)
				st_error_set(err, rc, (int)resp.status,
					     "list %s/%s: %s in the answer to page %d from %s (is this the "
					     "S3 API endpoint, with the right force-path-style?)",
					     s3->bucket, full, why, page + 1, s3->base_url);
			break;
		}
		if (stuck[0]) {
			free(p.next_token);
			rc = ST_PERMANENT;
			st_error_set(err, rc, (int)resp.status, "list %s/%s at %s: %s (does the server "
				     "ignore continuation-token?)", s3->bucket, full, s3->base_url, stuck);
			break;
		}
		if (!p.truncated) {
			free(p.next_token);
			break;
		}
		if (!p.next_token || !p.next_token[0] || (token && !strcmp(token, p.next_token))) {
			free(p.next_token);
			rc = ST_PERMANENT;
			st_error_set(err, rc, (int)resp.status,
				     "list %s/%s: truncated answer without a new continuation token", s3->bucket, full);
			break;
		}
		free(token);
		token = p.next_token;
	}
	s3_resp_release(&resp);
	free(token);
	free(prev_hi);
	free(full);
	return rc;
}

/* ---- delete ---- */

struct delete_result {
	char key[256], code[96], msg[200];
	char first[600];  /* first real failure, for the message */
	int status;
};

static void copy_text(char *dst, size_t dstlen, const char *t, size_t len)
{
	if (len >= dstlen)
		len = dstlen - 1;
	memcpy(dst, t, len);
	dst[len] = '\0';
}

/* What an S3 error code in a delete's answer means: denied, worth again, or not. */
static int delete_code_status(const char *code)
{
	if (!strcmp(code, "AccessDenied"))
		return ST_AUTH;
	if (!strcmp(code, "InternalError") || !strcmp(code, "SlowDown") ||
	    !strcmp(code, "ServiceUnavailable"))
		return ST_TRANSIENT;
	return ST_PERMANENT;
}

static int delete_cb(void *ctx, enum s3_xml_event ev, const char *path, const char *text, size_t len)
{
	struct delete_result *d = ctx;
	if (ev == S3_XML_OPEN) {
		if (!strcmp(path, "DeleteResult/Error"))
			d->key[0] = d->code[0] = d->msg[0] = '\0';
		return 0;
	}
	if (!strcmp(path, "DeleteResult/Error/Key"))
		copy_text(d->key, sizeof(d->key), text, len);
	else if (!strcmp(path, "DeleteResult/Error/Code"))
		copy_text(d->code, sizeof(d->code), text, len);
	else if (!strcmp(path, "DeleteResult/Error/Message"))
		copy_text(d->msg, sizeof(d->msg), text, len);
	else if (!strcmp(path, "DeleteResult/Error") && strcmp(d->code, "NoSuchKey") != 0 && !d->status) {
		d->status = delete_code_status(d->code);
		snprintf(d->first, sizeof(d->first), "%s: %s %s", d->key, d->code, d->msg);
	}
	return 0;
}

static void content_md5(const void *buf, size_t len, char out[32])
{
	unsigned char md[16];
	unsigned int mdlen = 0;
	EVP_Digest(buf, len, md, &mdlen, EVP_md5(), NULL);
	EVP_EncodeBlock((unsigned char *)out, md, 16);
}

static int delete_batch(struct s3 *s3, const char *const *keys, size_t n, const struct s3_ctl *ctl,
			struct st_error *err)
{
	struct s3_buf body = S3_BUF_INIT(64 * 1024 * 1024);
	struct s3_resp resp;
	struct delete_result d = { .status = 0 };
	char md5[32], why[128];
	int rc = 0;

	s3_resp_init(&resp);
	resp.body.cap = S3_LIST_BODY_CAP;
	if (s3_buf_adds(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
			       "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>") < 0)
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		/* the prefix too: "&" or "<" in a replica's path was MalformedXML (QA91 D1) */
		if (s3_buf_adds(&body, "<Object><Key>") < 0 || s3_xml_escape(&body, s3->prefix) < 0 ||
		    s3_xml_escape(&body, keys[i]) < 0 || s3_buf_adds(&body, "</Key></Object>") < 0)
			goto nomem;
	}
	if (s3_buf_adds(&body, "</Delete>") < 0)
		goto nomem;
	content_md5(body.data, body.len, md5);
	struct s3_kv q[] = { { "delete", "" } };
	struct s3_req req = { .op = "delete", .method = "POST", .key = NULL, .query = q, .nquery = 1,
			      .content_md5 = md5, .content_type = "application/xml",
			      .body = body.data, .body_len = body.len, .read_len = -1,
			      .body_cap = S3_LIST_BODY_CAP, .xml_root = "DeleteResult" };
	if ((rc = s3_request(s3, &req, &resp, ctl, err)) != 0)
		goto out;
	/*
	 * 200 and no DeleteResult (an <Error>, a proxy's page): not deleted
	 * (QA91 D2). An empty body, its length said (one without is retried as
	 * cut short, s3_request), is quiet mode's "no key failed", as aws-sdk-go
	 * takes it.
	 */
	if (resp.body.len == 0)
		goto out;
	char code[96], msg[200];
	if (s3_xml_error(resp.body.data, resp.body.len, code, sizeof(code), msg, sizeof(msg)) == 0) {
		rc = delete_code_status(code);
		st_error_set(err, rc, (int)resp.status, "delete %s (%zu keys): %s: %s", s3->bucket, n,
			     code, msg);
		goto out;
	}
	if (!s3_xml_root_is(resp.body.data, resp.body.len, "DeleteResult")) {
		rc = ST_TRANSIENT;
		st_error_set(err, rc, (int)resp.status, "delete %s (%zu keys): HTTP %ld without a "
			     "DeleteResult (%zu bytes): nothing known deleted", s3->bucket, n,
			     resp.status, resp.body.len);
		goto out;
	}
	if (s3_xml_parse(resp.body.data, resp.body.len, delete_cb, &d, why, sizeof(why)) != 0) {
		rc = ST_PERMANENT;
		st_error_set(err, rc, (int)resp.status, "delete %s (%zu keys): %s in the answer", s3->bucket, n, why);
		goto out;
	}
	if (d.status) {
		rc = d.status;
		st_error_set(err, rc, (int)resp.status, "delete %s: %s", s3->bucket, d.first);
	}
	goto out;
nomem:
	rc = oom(err, "delete", s3->bucket);
out:
	s3_resp_release(&resp);
	s3_buf_release(&body);
	return rc;
}

static int s3_del(struct storage *st, const char *const *keys, size_t nkeys,
		  const struct st_call *call, struct st_error *err)
{
	struct s3 *s3 = (struct s3 *)st;
	struct s3_ctl ctl;
	s3_ctl_init(&ctl, call);
	for (size_t i = 0; i < nkeys; i += S3_DELETE_BATCH) {
		size_t n = nkeys - i < S3_DELETE_BATCH ? nkeys - i : S3_DELETE_BATCH;
		int rc = delete_batch(s3, keys + i, n, &ctl, err);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* ---- open / close ---- */

static void secret_release(struct cfg_secret *s)
{
	if (s->value) {
		explicit_bzero(s->value, strlen(s->value));
		free(s->value);
	}
	free(s->file);
	s->value = s->file = NULL;
}

static int secret_copy(struct cfg_secret *dst, const struct cfg_secret *src)
{
	dst->value = src->value ? strdup(src->value) : NULL;
	dst->file = src->file ? strdup(src->file) : NULL;
	return (src->value && !dst->value) || (src->file && !dst->file) ? -1 : 0;
}

static void s3_destroy(struct storage *st)
{
	struct s3 *s3 = (struct s3 *)st;
	for (int i = 0; i < s3->nidle; i++) {
		curl_easy_cleanup(s3->idle[i]->h);
		free(s3->idle[i]);
	}
	pthread_mutex_destroy(&s3->lock);
	secret_release(&s3->akid);
	secret_release(&s3->secret);
	secret_release(&s3->token);
	free(s3->bucket);
	free(s3->prefix);
	free(s3->region);
	free(s3->base_url);
	free(s3->host);
	free(s3->path_prefix);
	free(s3->ca_file);
	free(s3->base.description);
	free(s3->base.location);
	free(s3);
}

static const struct storage_ops s3_ops = {
	.list = s3_list,
	.get = s3_get,
	.put = s3_put,
	.del = s3_del,
	.stat = s3_stat,
	.destroy = s3_destroy,
};

/* Host header form of an authority: the scheme's default port is left out. */
static char *host_of(const char *authority, size_t len, bool https)
{
	const char *dflt = https ? ":443" : ":80";
	size_t dl = strlen(dflt);
	if (len > dl && !memcmp(authority + len - dl, dflt, dl))
		len -= dl;
	return dup_text(authority, len);
}

/* Fill base_url/host/path_prefix from the endpoint (or AWS). Returns 0 or -1 with err set. */
static int addressing(struct s3 *s3, const struct cfg_replica *r, struct st_error *err)
{
	const char *name = r->name ? r->name : "s3";
	bool path_style = r->force_path_style || strchr(s3->bucket, '.') != NULL;
	if (!r->endpoint || !r->endpoint[0]) {
		if (path_style) {
			if (asprintf(&s3->host, "s3.%s.amazonaws.com", s3->region) < 0 ||
			    asprintf(&s3->path_prefix, "/%s", s3->bucket) < 0)
				return -1;
		} else {
			if (asprintf(&s3->host, "%s.s3.%s.amazonaws.com", s3->bucket, s3->region) < 0 ||
			    !(s3->path_prefix = strdup("")))
				return -1;
		}
		return asprintf(&s3->base_url, "https://%s", s3->host) < 0 ? -1 : 0;
	}
	const char *ep = r->endpoint, *sep = strstr(ep, "://");
	bool https = true;
	const char *auth = ep;
	if (sep) {
		size_t sl = (size_t)(sep - ep);
		if (sl == 4 && !strncasecmp(ep, "http", 4))
			https = false;
		else if (!(sl == 5 && !strncasecmp(ep, "https", 5))) {
			st_error_set(err, ST_PERMANENT, 0, "replica %s: endpoint scheme must be http or https", name);
			errno = EINVAL;
			return -2;
		}
		auth = sep + 3;
	}
	size_t alen = strcspn(auth, "/?#");
	if (alen == 0 || memchr(auth, '@', alen)) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: endpoint needs a host (and must not carry credentials)",
			     name);
		return -2;
	}
	/*
	 * A path after the host (a MinIO behind a reverse proxy at a sub-path)
	 * comes before every request's own, as in Litestream (aws-sdk-go keeps
	 * the endpoint's path); dropped, the two tools would use different places.
	 */
	const char *ep_path = auth + alen;
	size_t plen = strcspn(ep_path, "?#");
	if (ep_path[plen]) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: endpoint must not carry a query or fragment",
			     name);
		return -2;
	}
	static const char path_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					 "0123456789-._~/";
	if (strspn(ep_path, path_chars) < plen) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: endpoint path \"%.*s\" may hold only "
			     "letters, digits, '-', '.', '_', '~' and '/'", name, (int)plen, ep_path);
		return -2;
	}
	/* cleaned as aws-sdk-go does: "//gw//x/" is "/gw/x" */
	char clean[256];
	size_t cl = 0;
	if (plen >= sizeof(clean)) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: endpoint path longer than %zu bytes", name,
			     sizeof(clean) - 1);
		return -2;
	}
	for (size_t i = 0; i < plen; i++)
		if (!(ep_path[i] == '/' && cl > 0 && clean[cl - 1] == '/'))
			clean[cl++] = ep_path[i];
	while (cl > 0 && clean[cl - 1] == '/')
		cl--;
	clean[cl] = '\0';
	/*
	 * An explicit endpoint (MinIO, Ceph, …) is addressed path-style unless the
	 * config says force-path-style: false; then <bucket>.<endpoint host>.
	 */
	if (!(s3->host = host_of(auth, alen, https)))
		return -1;
	char *pp = NULL; /* asprintf leaves it undefined on failure: s3_destroy frees path_prefix */
	if (asprintf(&pp, "%s%s%s", clean, path_style ? "/" : "", path_style ? s3->bucket : "") < 0)
		return -1;
	s3->path_prefix = pp;
	if (!path_style) {
		char *vhost = NULL;
		if (asprintf(&vhost, "%s.%s", s3->bucket, s3->host) < 0)
			return -1;
		free(s3->host);
		s3->host = vhost;
	}
	return asprintf(&s3->base_url, "%s://%s", https ? "https" : "http", s3->host) < 0 ? -1 : 0;
}

struct storage *storage_s3_open(const struct cfg_replica *r, struct st_error *err)
{
	const char *name = r->name ? r->name : "s3";
	struct s3 *s3 = NULL;
	const char *path = r->path ? r->path : "";

	char why[512];
	if (s3_global_init(why, sizeof(why)) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: %s", name, why);
		return NULL;
	}
	if (!r->bucket || !r->bucket[0]) {
		st_error_set(err, ST_PERMANENT, 0, "replica %s: S3 replica without a bucket", name);
		return NULL;
	}
	s3 = calloc(1, sizeof(*s3));
	if (!s3)
		goto nomem;
	pthread_mutex_init(&s3->lock, NULL);
	while (*path == '/')
		path++;
	if (!(s3->bucket = strdup(r->bucket)) ||
	    !(s3->region = strdup(r->region && r->region[0] ? r->region : "us-east-1")) ||
	    asprintf(&s3->prefix, "%s%s", path, path[0] && path[strlen(path) - 1] != '/' ? "/" : "") < 0) {
		s3->prefix = NULL;
		goto nomem;
	}
	int arc = addressing(s3, r, err);
	if (arc == -2)
		goto fail;
	if (arc < 0)
		goto nomem;
	s3->skip_verify = r->skip_verify;
	if (r->ca_file && !(s3->ca_file = strdup(r->ca_file)))
		goto nomem;
	s3->connect_timeout_ms = r->connect_timeout_ms > 0 ? (long)r->connect_timeout_ms : 1000;
	s3->idle_timeout_ms = r->idle_timeout_ms > 0 ? (long)r->idle_timeout_ms : 5000;
	if (secret_copy(&s3->akid, &r->access_key_id) < 0 ||
	    secret_copy(&s3->secret, &r->secret_access_key) < 0 ||
	    secret_copy(&s3->token, &r->session_token) < 0)
		goto nomem;
	if (asprintf(&s3->base.description, "s3 %s%s/%s", s3->base_url, s3->path_prefix, s3->prefix) < 0) {
		s3->base.description = NULL;
		goto nomem;
	}
	/* host names are case-insensitive: the scheme and host, in lower case */
	if (!(s3->base.location = strdup(s3->base.description)))
		goto nomem;
	char *host = s3->base.location + strlen("s3 ");
	for (size_t i = 0, n = strlen(s3->base_url); i < n; i++)
		host[i] = (char)tolower((unsigned char)host[i]);
	s3->base.ops = &s3_ops;
	s3->base.type = "s3";
	return &s3->base;
nomem:
	st_error_set(err, ST_PERMANENT, 0, "replica %s: out of memory", name);
fail:
	if (s3)
		s3_destroy(&s3->base);
	return NULL;
}
