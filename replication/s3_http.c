/*
 * s3_http.c — one signed S3 request over libcurl: a pool of easy handles
 * (keep-alive connections reused across calls and threads), a deadline for
 * the whole call, an idle timeout for each attempt (no byte moved either
 * way for idle-timeout: a server that accepted the request and went silent),
 * retries with exponential backoff and jitter on what is worth retrying, and
 * the classification of every failure.
 */
#include "replication/s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/sockios.h>

#include "common/clock.h"
#include "common/lazy_crypto.h"
#include "common/lazy_curl.h"
#include "common/log.h"
#include "replication/s3_xml.h"
#include "common/banned.h"

#define MAX_ATTEMPTS 5
/*
 * A download cut short that moved at least PROGRESS_RESUME_BYTES before it
 * broke starts the count of attempts again (a link that drops every few MB
 * still gets a large snapshot down: QA91 O1), at most MAX_PROGRESS_RESUMES
 * times per call. One that gives a few bytes a connection is a broken
 * server: five tries, and a restore goes to another candidate.
 */
#define PROGRESS_RESUME_BYTES (1024 * 1024)
#define MAX_PROGRESS_RESUMES 1000
#define BACKOFF_BASE_MS 200
#define BACKOFF_MAX_MS 5000
#define SMALL_TIMEOUT_MS 30000   /* a non-streaming request with no deadline */
#define STALL_BYTES_PER_SEC 1024 /* big transfers: slower than this … */
#define STALL_SECONDS 30         /* … for this long is a stall */
#define STALL_RING 64            /* seconds of byte counts kept (> every stall window) */
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

int s3_global_init(char *err, size_t errlen)
{
	return lazy_curl_load(err, errlen) == 0 && lazy_crypto_load(err, errlen) == 0 ? 0 : -1;
}

/*
 * Jitter: a per-thread xorshift seeded from the clock, the pid and the
 * thread, so processes and threads that failed together do not retry in step.
 */
static uint64_t jitter_random(void)
{
	static __thread uint64_t state;
	if (!state)
		state = ((uint64_t)clock_mono_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&state) | 1;
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

void s3_ctl_init(struct s3_ctl *c, const struct st_call *call)
{
	c->deadline_ms = call && call->deadline_ms > 0 ? clock_mono_ms() + call->deadline_ms : 0;
	c->no_retry = call && call->no_retry;
	c->fail_refused = call && call->fail_refused;
	c->stall_s = call && call->stall_s > 0 ? call->stall_s : 0;
	c->create_only = call && call->create_only;
}

void s3_resp_init(struct s3_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->body = (struct s3_buf)S3_BUF_INIT(S3_ERROR_BODY_CAP);
	r->content_length = -1;
}

void s3_resp_release(struct s3_resp *r)
{
	s3_buf_release(&r->body);
}

/* ---- handle pool ---- */

static struct s3_conn *pool_take(struct s3 *s3)
{
	struct s3_conn *c = NULL;
	pthread_mutex_lock(&s3->lock);
	if (s3->nidle > 0)
		c = s3->idle[--s3->nidle];
	pthread_mutex_unlock(&s3->lock);
	if (c) {
		curl_easy_reset(c->h); /* keeps its connection cache: that is the point */
		return c;
	}
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	c->fd = -1;
	if (!(c->h = curl_easy_init())) {
		free(c);
		return NULL;
	}
	return c;
}

static void pool_give(struct s3 *s3, struct s3_conn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&s3->lock);
	if (s3->nidle < S3_POOL_MAX) {
		s3->idle[s3->nidle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&s3->lock);
	if (c) {
		curl_easy_cleanup(c->h);
		free(c);
	}
}

/* curl made the connection's socket: remember it (unsent() looks at it). */
static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose)
{
	(void)purpose;
	((struct s3_conn *)ud)->fd = fd;
	return CURL_SOCKOPT_OK;
}

static int on_closesocket(void *ud, curl_socket_t fd)
{
	struct s3_conn *c = ud;
	if (c->fd == fd)
		c->fd = -1;
	return close(fd);
}

/* ---- one transfer ---- */

/* How long a slow answer (s3_req.slow_answer) keeps the replica from counting as stalled. */
#define SLOW_ANSWER_SPARED_MS 15000

struct xfer {
	struct storage *st;    /* told of every byte moved (storage_stalled) */
	int64_t call_start_ms; /* mono ms the call (all its attempts) began */
	const struct s3_req *req;
	struct s3_resp *resp;
	CURL *h;
	struct s3_conn *conn;
	int64_t sent;          /* request body bytes handed to curl */
	int64_t delivered;     /* response bytes handed to the sink */
	bool read_failed, sink_failed, source_short;
	int read_errno;
	long idle_ms;          /* 0: no idle timeout */
	int64_t last_move_ms;  /* mono ms when a byte last moved (or the attempt began) */
	curl_off_t moved;      /* body bytes up + down seen by on_progress */
	bool idle;             /* on_progress abandoned the attempt */
	int stall_s;           /* big transfers: the stall window (0: none) */
	bool stalled;          /* on_progress abandoned it: under the rate for stall_s */
	int64_t start_ms;      /* mono ms the stall window began (the attempt, or a late call) */
	int64_t last_cb_ms;    /* mono ms of on_progress's last call */
	int64_t sec_seen;      /* the last whole second of the attempt sampled in at_sec */
	curl_off_t at_sec[STALL_RING]; /* moved at each whole second since start_ms */
	long outq;             /* bytes the socket still held for the server at the last look, -1 */
	/* resuming a GET cut short: ask for the rest (Range), of the same object (If-Match) */
	int64_t resume_from;   /* delivered when this attempt began; 0: from the start */
	int64_t skip;          /* a 200 answer to a resume: its bytes the sink already has */
	int64_t range_start;   /* a 206's Content-Range start, -1 if none */
	int64_t range_total;   /* its total (a 416's "bytes * /N" too), -1 if none */
	bool changed;          /* a later answer's ETag is not the first one's */
	bool bad_range;        /* the 206 does not start where we asked */
	bool chunked;          /* the answer's body is chunked (its end is marked) */
	bool body_cut;         /* on_write stopped an answer at its cap (resp->body.overflow) */
	char etag[256];        /* of the first answer that reached the sink */
};

/*
 * Whether two ETags name different versions. Both must be known; a weak
 * one ("W/" prefix, as a proxy that re-encodes may answer) compares by its
 * opaque tag, the weak comparison of RFC 9110 8.8.3.2.
 */
static const char *etag_tag(const char *e)
{
	return !strncmp(e, "W/", 2) ? e + 2 : e;
}

static bool etag_differs(const char *a, const char *b)
{
	return a[0] && b[0] && strcmp(etag_tag(a), etag_tag(b)) != 0;
}

/*
 * curl rewinds a body itself when a reused connection turns out dead after
 * the request went out (the answer lost): without this it gave up with
 * "necessary data rewind wasn't possible", failing a multipart upload's
 * part instead of sending it again. Only back to the start is needed.
 */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
	struct xfer *x = ud;
	const struct s3_req *r = x->req;
	if (origin != SEEK_SET || offset != 0)
		return CURL_SEEKFUNC_CANTSEEK;
	if (r->read_len >= 0 && x->sent > 0 && (!r->rewind || r->rewind(r->read_ctx) < 0))
		return CURL_SEEKFUNC_CANTSEEK;
	x->sent = 0;
	return CURL_SEEKFUNC_OK;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
	struct xfer *x = ud;
	const struct s3_req *r = x->req;
	size_t want = size * n;
	if (r->read_len < 0) { /* in-memory body */
		size_t left = r->body_len - (size_t)x->sent;
		if (want > left)
			want = left;
		if (want)
			memcpy(buf, (const char *)r->body + x->sent, want);
		x->sent += (int64_t)want;
		return want;
	}
	int64_t left = r->read_len - x->sent;
	if ((int64_t)want > left)
		want = (size_t)left;
	if (want == 0)
		return 0;
	ssize_t got;
	do
		got = r->read(r->read_ctx, buf, want);
	while (got < 0 && errno == EINTR);
	if (got < 0) {
		x->read_failed = true;
		x->read_errno = errno;
		return CURL_READFUNC_ABORT;
	}
	if (got == 0) { /* ended before the length it promised */
		x->source_short = true;
		return CURL_READFUNC_ABORT;
	}
	x->sent += got;
	return (size_t)got;
}

static size_t on_write(char *buf, size_t size, size_t n, void *ud)
{
	struct xfer *x = ud;
	size_t len = size * n;
	long code = 0;
	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &code);
	if (x->req->sink && code >= 200 && code < 300) {
		if (x->resume_from > 0 && code == 206 && x->range_start != x->resume_from) {
			x->bad_range = true;
			return 0;
		}
		if (etag_differs(x->etag, x->resp->etag) ||
		    (x->resume_from > 0 && x->etag[0] && !x->resp->etag[0])) {
			/* a resume answered by another version (a server ignoring If-Match), or
			 * by one that names none: with no If-Match sent (a weak tag), nothing
			 * else would tell the two apart */
			x->changed = true;
			return 0;
		}
		if (x->resume_from > 0 && code != 206 && x->skip > 0) {
			/* the server ignored the Range: the whole object again */
			size_t drop = (int64_t)len < x->skip ? len : (size_t)x->skip;
			x->skip -= (int64_t)drop;
			buf += drop;
			len -= drop;
			if (len == 0)
				return size * n;
		}
		if (!x->etag[0])
			snprintf(x->etag, sizeof(x->etag), "%s", x->resp->etag);
		if (x->req->sink->write(x->req->sink->ctx, buf, len) < 0) {
			x->sink_failed = true;
			return 0;
		}
		x->delivered += (int64_t)len;
		return size * n;
	}
	/*
	 * An answer past the cap is kept truncated and not read on: its status
	 * came with its headers, and a body that never ends (a broken server
	 * or proxy) kept the attempt alive for ever, its bytes counted as
	 * progress (QA167 D3). attempt() classifies it as if it had ended.
	 */
	if (s3_buf_add(&x->resp->body, buf, len) < 0 && x->resp->body.overflow) {
		x->body_cut = true;
		return 0;
	}
	return len;
}

/*
 * Bytes of the request the kernel still holds for the server (sent, not yet
 * acknowledged), or -1. curl hands a body to a socket whose buffer may hold
 * megabytes and then sees nothing move while a slow link drains it.
 */
static long unsent(struct xfer *x)
{
	int n = 0;
	if (x->conn->fd < 0 || ioctl(x->conn->fd, SIOCOUTQ, &n) < 0)
		return -1;
	return n;
}

/*
 * Has the transfer moved under STALL_BYTES_PER_SEC over its last stall_s
 * seconds? Sampled at each whole second of the attempt (curl calls
 * on_progress at least once a second). curl's own low-speed check first
 * averages over about 5 s, so a download that stopped dead was dropped after
 * 16 s, not the 10 s the restore documents (QA79 D1).
 */
static bool stalled_now(struct xfer *x, int64_t now, curl_off_t moved)
{
	/*
	 * Called late: our own side held the transfer (a slow write in the sink,
	 * the process stopped). The seconds missed say nothing of the server:
	 * the window starts over (QA80 D2).
	 */
	if (now - x->last_cb_ms > 2000) {
		x->start_ms = now;
		x->sec_seen = 0;
		x->at_sec[0] = moved;
	}
	x->last_cb_ms = now;
	int64_t sec = (now - x->start_ms) / 1000;
	while (x->sec_seen < sec) {
		x->sec_seen++;
		x->at_sec[x->sec_seen % STALL_RING] = moved;
	}
	if (sec < x->stall_s)
		return false;
	curl_off_t then = x->at_sec[(sec - x->stall_s) % STALL_RING];
	return moved - then < (curl_off_t)STALL_BYTES_PER_SEC * x->stall_s;
}

/*
 * libcurl calls this at least once a second, also while nothing moves: the
 * idle timeout. A slow transfer that keeps moving is never cut here (big
 * ones have the stall window, stalled_now), nor one whose sent body is still
 * draining from the socket; the call's deadline bounds the total.
 */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
		       curl_off_t ulnow)
{
	struct xfer *x = ud;
	int64_t now = clock_mono_ms();
	(void)dltotal;
	(void)ultotal;
	if (x->stall_s > 0 && stalled_now(x, now, dlnow + ulnow)) {
		x->stalled = true;
		return 1; /* CURLE_ABORTED_BY_CALLBACK */
	}
	/* an answer a server may think over (CompleteMultipartUpload) is no stall of the
	 * replica's either (storage_stalled, QA124 D4), for its first
	 * SLOW_ANSWER_SPARED_MS: one that never comes is (QA125 D2) */
	if (dlnow + ulnow != x->moved ||
	    (x->req->slow_answer && now - x->call_start_ms < SLOW_ANSWER_SPARED_MS))
		st_moved(x->st);
	if (dlnow + ulnow != x->moved) {
		x->moved = dlnow + ulnow;
		x->last_move_ms = now;
		return 0;
	}
	long q = ulnow > 0 ? unsent(x) : -1;
	if (q >= 0 && x->outq >= 0 && q < x->outq) {
		x->last_move_ms = now;
		st_moved(x->st);
	}
	x->outq = q;
	if (x->idle_ms > 0 && now - x->last_move_ms >= x->idle_ms) {
		x->idle = true;
		return 1; /* CURLE_ABORTED_BY_CALLBACK */
	}
	return 0;
}

static void header_value(char *dst, size_t dstlen, const char *v, size_t len)
{
	while (len && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
		len--;
	if (len >= dstlen)
		len = dstlen - 1;
	memcpy(dst, v, len);
	dst[len] = '\0';
}

static size_t on_header(char *buf, size_t size, size_t n, void *ud)
{
	struct xfer *x = ud;
	size_t len = size * n;
	char tmp[128];
	x->last_move_ms = clock_mono_ms();
	if (len > 5 && !strncmp(buf, "HTTP/", 5)) {
		/* a new response (e.g. after 100 Continue): forget the previous headers */
		x->resp->etag[0] = '\0';
		x->resp->content_length = -1;
		x->resp->last_modified_ns = 0;
		x->resp->clock_offset_ns = 0;
		x->resp->have_date = false;
		x->resp->date_ns = 0;
		x->resp->bucket_region[0] = '\0';
		x->resp->location[0] = '\0';
		x->range_start = x->range_total = -1;
		x->chunked = false;
	} else if (len > 18 && !strncasecmp(buf, "Transfer-Encoding:", 18)) {
		header_value(tmp, sizeof(tmp), buf + 18, len - 18);
		x->chunked = strcasestr(tmp, "chunked") != NULL;
	} else if (len > 14 && !strncasecmp(buf, "Content-Range:", 14)) {
		/* "bytes START-END/TOTAL" */
		header_value(tmp, sizeof(tmp), buf + 14, len - 14);
		if (!strncasecmp(tmp, "bytes ", 6) && tmp[6] != '*')
			x->range_start = strtoll(tmp + 6, NULL, 10);
		const char *slash = strchr(tmp, '/');
		if (slash && slash[1] >= '0' && slash[1] <= '9')
			x->range_total = strtoll(slash + 1, NULL, 10);
	} else if (len > 20 && !strncasecmp(buf, "x-amz-bucket-region:", 20)) {
		header_value(x->resp->bucket_region, sizeof(x->resp->bucket_region), buf + 20, len - 20);
	} else if (len > 9 && !strncasecmp(buf, "Location:", 9)) {
		header_value(x->resp->location, sizeof(x->resp->location), buf + 9, len - 9);
	} else if (len > 5 && !strncasecmp(buf, "ETag:", 5)) {
		header_value(x->resp->etag, sizeof(x->resp->etag), buf + 5, len - 5);
	} else if (len > 15 && !strncasecmp(buf, "Content-Length:", 15)) {
		header_value(tmp, sizeof(tmp), buf + 15, len - 15);
		x->resp->content_length = strtoll(tmp, NULL, 10);
	} else if (len > 5 && !strncasecmp(buf, "Date:", 5)) {
		header_value(tmp, sizeof(tmp), buf + 5, len - 5);
		time_t t = curl_getdate(tmp, NULL);
		if (t > 0) {
			x->resp->clock_offset_ns = (int64_t)t * NS_PER_SEC + NS_PER_SEC / 2 -
						   clock_wall_ns();
			x->resp->have_date = true;
			x->resp->date_ns = (int64_t)t * NS_PER_SEC;
		}
	} else if (len > 14 && !strncasecmp(buf, "Last-Modified:", 14)) {
		header_value(tmp, sizeof(tmp), buf + 14, len - 14);
		time_t t = curl_getdate(tmp, NULL);
		if (t > 0)
			x->resp->last_modified_ns = (int64_t)t * NS_PER_SEC;
	}
	return len;
}

/* ---- classification ---- */

struct outcome {
	int status;            /* 0 or negative st_status */
	bool retry;            /* worth another attempt */
	bool refused;          /* the connection itself failed: nobody listens there */
	bool conditional;      /* this attempt sent If-None-Match: * */
	bool no_conditional;   /* the server rejected If-None-Match: try again without it */
	char cause[512];       /* for the message and the retry log */
};

static bool code_is(const char *code, const char *what)
{
	return strcmp(code, what) == 0;
}

static void classify_http(const struct s3_req *req, const struct s3_resp *resp, struct outcome *o)
{
	char code[96], msg[200];
	long st = resp->status;
	if (s3_xml_error(resp->body.data, resp->body.len, code, sizeof(code), msg, sizeof(msg)) < 0)
		code[0] = msg[0] = '\0';
	if (code[0])
		snprintf(o->cause, sizeof(o->cause), "HTTP %ld %s%s%s", st, code, msg[0] ? ": " : "", msg);
	else
		snprintf(o->cause, sizeof(o->cause), "HTTP %ld", st);
	/* a redirect is not followed (the signature covers the host): say where it pointed */
	if (st / 100 == 3 && resp->location[0]) {
		size_t k = strlen(o->cause);
		snprintf(o->cause + k, sizeof(o->cause) - k, " (redirected to %s: is the endpoint "
			 "right?)", resp->location);
	}
	/* AWS names the bucket's region when it was asked in another one (a 301, or a 400) */
	const char *br = resp->bucket_region;
	if (br[0] && strspn(br, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(br) &&
	    (st == 301 || code_is(code, "PermanentRedirect") ||
				       code_is(code, "AuthorizationHeaderMalformed"))) {
		size_t k = strlen(o->cause);
		snprintf(o->cause + k, sizeof(o->cause) - k, " (the bucket is in region %s: set the "
			 "replica's region: %s, in a config file for a replica URL)", br, br);
	}

	if (req->if_none_match && (st == 412 || code_is(code, "PreconditionFailed"))) {
		o->status = ST_EXISTS; /* the key is taken: what a create-only put asked about */
	} else if (o->conditional && (st == 501 || code_is(code, "NotImplemented"))) {
		o->status = ST_TRANSIENT;
		o->retry = o->no_conditional = true;
	} else if (st == 404 || code_is(code, "NoSuchKey") || code_is(code, "NoSuchBucket")) {
		o->status = ST_NOT_FOUND;
	} else if (code_is(code, "RequestTimeTooSkewed")) {
		/* before the 403 AWS sends it with: our clock, so retrying now will not help, later might */
		o->status = ST_TRANSIENT;
	} else if (st == 401 || st == 403 || code_is(code, "InvalidAccessKeyId") ||
		   code_is(code, "SignatureDoesNotMatch") || code_is(code, "ExpiredToken") ||
		   code_is(code, "InvalidToken") || code_is(code, "AccessDenied")) {
		o->status = ST_AUTH;
	} else if (st >= 500 || st == 429 || st == 408 || code_is(code, "SlowDown") ||
		   code_is(code, "ConditionalRequestConflict") || /* a concurrent conditional write */
		   code_is(code, "XMinioStorageFull") || code_is(code, "RequestTimeout") ||
		   code_is(code, "InternalError")) {
		o->status = ST_TRANSIENT;
		o->retry = true;
		if (st == 507 || code_is(code, "XMinioStorageFull"))
			snprintf(o->cause, sizeof(o->cause), "HTTP %ld %s: replica storage full", st,
				 code[0] ? code : "InsufficientStorage");
	} else {
		o->status = ST_PERMANENT;
	}
}

static void classify_curl(CURLcode rc, const char *errbuf, const struct xfer *x, struct outcome *o)
{
	const char *what = errbuf[0] ? errbuf : curl_easy_strerror(rc);
	if (x->sink_failed) {
		o->status = ST_PERMANENT;
		snprintf(o->cause, sizeof(o->cause), "the destination refused the data");
		return;
	}
	if (x->read_failed) {
		char eb[128];
		o->status = ST_PERMANENT;
		snprintf(o->cause, sizeof(o->cause), "reading the source: %s",
			 strerror_r(x->read_errno, eb, sizeof(eb)));
		return;
	}
	if (x->changed) {
		o->status = ST_TRANSIENT;
		snprintf(o->cause, sizeof(o->cause), "the object changed during the download (ETag %.100s, "
			 "then %.100s)", x->etag, x->resp->etag[0] ? x->resp->etag : "none");
		return;
	}
	if (x->bad_range) {
		o->status = ST_TRANSIENT;
		snprintf(o->cause, sizeof(o->cause), "resuming the download: the server sent a "
			 "range that does not start at byte %lld", (long long)x->resume_from);
		return;
	}
	if (x->source_short) {
		o->status = ST_PERMANENT;
		snprintf(o->cause, sizeof(o->cause), "the source ended before its stated size");
		return;
	}
	if (rc == CURLE_ABORTED_BY_CALLBACK && x->stalled) {
		o->status = ST_TRANSIENT;
		o->retry = true; /* attempt() says when the caller has somewhere else to go */
		snprintf(o->cause, sizeof(o->cause), "transfer stalled: under %d bytes/s for %d s",
			 STALL_BYTES_PER_SEC, x->stall_s);
		return;
	}
	if (rc == CURLE_ABORTED_BY_CALLBACK && x->idle) {
		o->status = ST_TRANSIENT;
		o->retry = true;
		snprintf(o->cause, sizeof(o->cause), "no answer: nothing moved for %ld ms (idle-timeout)",
			 x->idle_ms);
		return;
	}
	snprintf(o->cause, sizeof(o->cause), "%s", what);
	/* OpenSSL's words for a plain HTTP answer to its hello (QA91 O6) */
	if (rc == CURLE_SSL_CONNECT_ERROR && strstr(what, "wrong version number"))
		snprintf(o->cause, sizeof(o->cause), "%.300s (the server answered in plain HTTP? an "
			 "endpoint without a scheme is https://: write http:// in endpoint)", what);
	o->refused = rc == CURLE_COULDNT_CONNECT;
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_WEIRD_SERVER_REPLY:
		o->status = ST_TRANSIENT;
		o->retry = true;
		break;
	case CURLE_OUT_OF_MEMORY:
		o->status = ST_TRANSIENT;
		break;
	default: /* TLS verification, bad URL, unsupported protocol …: fix the config */
		o->status = ST_PERMANENT;
		break;
	}
}

/* ---- request building ---- */

/* "/bucket/enc(key)" or "/enc(key)"; for the bucket itself "/bucket" or "/". malloc'd. */
static char *request_path(const struct s3 *s3, const char *key)
{
	char *enc = key ? s3_uri_encode(key, true) : NULL, *out = NULL;
	if (key && !enc)
		return NULL;
	if (asprintf(&out, "%s/%s", s3->path_prefix, key ? enc : "") < 0)
		out = NULL;
	free(enc);
	/* path-style bucket URL is "/bucket", not "/bucket/" */
	if (out && !key && s3->path_prefix[0])
		out[strlen(out) - 1] = '\0';
	return out;
}

static struct curl_slist *add_header(struct curl_slist *l, bool *oom, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static struct curl_slist *add_header(struct curl_slist *l, bool *oom, const char *fmt, ...)
{
	char *line = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0) {
		*oom = true;
		return l;
	}
	struct curl_slist *nl = curl_slist_append(l, line);
	/* the line may hold a signature or token: wipe our copy */
	memset(line, 0, (size_t)n);
	free(line);
	if (!nl)
		*oom = true;
	return nl ? nl : l;
}

static void free_headers(struct curl_slist *l)
{
	for (struct curl_slist *p = l; p; p = p->next)
		memset(p->data, 0, strlen(p->data));
	curl_slist_free_all(l);
}

/*
 * One attempt. Fills o; returns with resp->status set when an answer came.
 * timeout_ms: what is left of the deadline (0 = no deadline).
 */
static void attempt(struct s3 *s3, const struct s3_req *req, struct s3_resp *resp,
		    int64_t timeout_ms, int stall_s, struct xfer *x, struct outcome *o,
		    struct st_error *err)
{
	struct s3_creds cr;
	struct curl_slist *hdrs = NULL;
	char *path = NULL, *query = NULL, *url = NULL;
	char date[17], authz[1024], hash[S3_SHA256_HEX_LEN + 1], errbuf[CURL_ERROR_SIZE] = "";
	const char *payload;
	bool oom = false;
	struct s3_conn *conn = NULL;
	CURL *h = NULL;
	CURLcode rc;

	memset(o, 0, sizeof(*o));
	memset(&cr, 0, sizeof(cr));
	s3_buf_reset(&resp->body);
	resp->status = 0;
	if (s3_credentials(s3, &cr, err) != 0) {
		o->status = ST_AUTH;
		snprintf(o->cause, sizeof(o->cause), "%s", err->message);
		goto out;
	}
	if (req->read_len >= 0) {
		payload = req->payload_hash ? req->payload_hash : "UNSIGNED-PAYLOAD";
	} else if (req->body_len) {
		s3_sha256_hex(req->body, req->body_len, hash);
		payload = hash;
	} else {
		payload = EMPTY_SHA256;
	}
	s3_amz_date(clock_wall_ns(), date);

	struct s3_kv sh[6];
	size_t nsh = 0;
	sh[nsh++] = (struct s3_kv){ "host", s3->host };
	sh[nsh++] = (struct s3_kv){ "x-amz-content-sha256", payload };
	sh[nsh++] = (struct s3_kv){ "x-amz-date", date };
	if (cr.token[0])
		sh[nsh++] = (struct s3_kv){ "x-amz-security-token", cr.token };
	if (req->content_md5)
		sh[nsh++] = (struct s3_kv){ "content-md5", req->content_md5 };
	struct s3_sign_input in = {
		.method = req->method, .path = NULL, .query = req->query, .nquery = req->nquery,
		.headers = sh, .nheaders = nsh, .payload_hash = payload, .amz_date = date,
		.region = s3->region, .service = "s3", .access_key = cr.akid, .secret_key = cr.secret,
	};
	path = request_path(s3, req->key);
	in.path = path;
	if (!path || s3_sigv4_sign(&in, &query, authz, sizeof(authz)) < 0 ||
	    asprintf(&url, "%s%s%s%s", s3->base_url, path, query[0] ? "?" : "", query) < 0) {
		url = NULL;
		o->status = ST_TRANSIENT;
		snprintf(o->cause, sizeof(o->cause), "out of memory building the request");
		goto out;
	}
	hdrs = add_header(hdrs, &oom, "Host: %s", s3->host);
	hdrs = add_header(hdrs, &oom, "x-amz-content-sha256: %s", payload);
	hdrs = add_header(hdrs, &oom, "x-amz-date: %s", date);
	if (cr.token[0])
		hdrs = add_header(hdrs, &oom, "x-amz-security-token: %s", cr.token);
	if (req->content_md5)
		hdrs = add_header(hdrs, &oom, "Content-MD5: %s", req->content_md5);
	pthread_mutex_lock(&s3->lock);
	o->conditional = req->if_none_match && !s3->no_conditional;
	pthread_mutex_unlock(&s3->lock);
	if (o->conditional)
		hdrs = add_header(hdrs, &oom, "If-None-Match: *");
	hdrs = add_header(hdrs, &oom, "Content-Type:%s%s", req->content_type ? " " : "",
			  req->content_type ? req->content_type : "");
	hdrs = add_header(hdrs, &oom, "Authorization: %s", authz);
	hdrs = add_header(hdrs, &oom, "Expect:"); /* no 100-continue round trip */
	if (oom) {
		o->status = ST_TRANSIENT;
		snprintf(o->cause, sizeof(o->cause), "out of memory building the request");
		goto out;
	}

	conn = pool_take(s3);
	h = conn ? conn->h : NULL;
	if (!h) {
		o->status = ST_TRANSIENT;
		snprintf(o->cause, sizeof(o->cause), "cannot create a curl handle");
		goto out;
	}
	x->st = &s3->base;
	x->req = req;
	x->resp = resp;
	x->h = h;
	x->conn = conn;
	x->sent = 0;
	x->read_failed = x->sink_failed = x->source_short = x->body_cut = false;
	/* a caller with a stall window (restore) has its own rule for a silent server */
	x->idle_ms = req->slow_answer || stall_s > 0 ? 0 : s3->idle_timeout_ms;
	x->last_move_ms = clock_mono_ms();
	x->moved = 0;
	x->idle = false;
	x->stall_s = !req->big ? 0 : stall_s > 0 ? stall_s : STALL_SECONDS;
	if (x->stall_s >= STALL_RING)
		x->stall_s = STALL_RING - 1;
	x->stalled = false;
	x->start_ms = x->last_cb_ms = x->last_move_ms;
	x->sec_seen = 0;
	x->at_sec[0] = 0;
	x->outq = -1;
	x->resume_from = x->skip = x->delivered;
	x->range_start = -1;
	x->bad_range = false;
	char range[32];
	if (x->resume_from > 0) {
		snprintf(range, sizeof(range), "%lld-", (long long)x->resume_from);
		curl_easy_setopt(h, CURLOPT_RANGE, range);
		/* If-Match compares strongly: a weak tag would never match, so the
		 * answer's own ETag is checked instead (on_write) */
		if (x->etag[0] && strncmp(x->etag, "W/", 2) != 0)
			hdrs = add_header(hdrs, &oom, "If-Match: %s", x->etag);
		if (oom) {
			o->status = ST_TRANSIENT;
			snprintf(o->cause, sizeof(o->cause), "out of memory building the request");
			goto out;
		}
	}

	long connect_ms = s3->connect_timeout_ms > 0 ? s3->connect_timeout_ms : 1000;
	if (timeout_ms > 0 && connect_ms > timeout_ms)
		connect_ms = (long)timeout_ms;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	lazy_curl_defaults(h);
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, x);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
	curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, conn);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_closesocket);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, conn);
	if (s3->skip_verify) {
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (s3->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, s3->ca_file);
	if (timeout_ms > 0)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	else if (!req->big)
		curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)SMALL_TIMEOUT_MS);
	bool has_body = req->read_len >= 0 || req->body_len > 0 ||
			!strcmp(req->method, "PUT") || !strcmp(req->method, "POST");
	curl_off_t body_len = req->read_len >= 0 ? (curl_off_t)req->read_len : (curl_off_t)req->body_len;
	if (has_body) {
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, x);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, x);
	}
	if (!strcmp(req->method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, body_len);
	} else if (!strcmp(req->method, "POST")) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, body_len);
	} else if (req->head) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(req->method, "GET") != 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	}

	int64_t t0 = clock_mono_ms();
	rc = curl_easy_perform(h);
	if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && x->body_cut)) {
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
		if (resp->status >= 200 && resp->status < 300) {
			o->status = 0;
		} else {
			classify_http(req, resp, o);
		}
	} else {
		classify_curl(rc, errbuf, x, o);
		bool deadline = timeout_ms > 0 && clock_mono_ms() - t0 >= timeout_ms - 100;
		if (rc == CURLE_OPERATION_TIMEDOUT && (deadline || (timeout_ms > 0 && !stall_s)))
			snprintf(o->cause, sizeof(o->cause), "deadline of the call reached (%s)",
				 errbuf[0] ? errbuf : "timed out");
		else if (x->stalled && stall_s > 0)
			o->retry = false; /* a caller's stall window: it has somewhere else to go */
	}
out:
	memset(authz, 0, sizeof(authz));
	s3_creds_wipe(&cr);
	pool_give(s3, conn);
	free_headers(hdrs);
	free(path);
	free(query);
	free(url);
}

int s3_head_once(struct s3 *s3, const char *key, const struct s3_ctl *ctl, struct s3_resp *resp,
		 struct st_error *err)
{
	struct s3_ctl hctl = *ctl;
	struct s3_req req = { .op = "head", .method = "HEAD", .key = key, .read_len = -1, .head = true };
	hctl.stall_s = 0; /* the stall window is for a transfer: the idle-timeout applies */
	hctl.no_retry = true;
	return s3_request(s3, &req, resp, &hctl, err);
}

/* The size and ETag of req's object (s3_head_once()). Returns 0, or -1 with why set. */
static int object_size(struct s3 *s3, const struct s3_req *req, const struct s3_ctl *ctl,
		       int64_t *size, char *etag, size_t etaglen, char *why, size_t whylen)
{
	struct s3_resp head;
	struct st_error herr = { 0 };
	s3_resp_init(&head);
	int rc = s3_head_once(s3, req->key, ctl, &head, &herr);
	*size = head.content_length;
	snprintf(etag, etaglen, "%s", head.etag);
	s3_resp_release(&head);
	if (rc != 0 || *size < 0) {
		snprintf(why, whylen, "%.290s", rc ? herr.message : "the HEAD gave no size");
		return -1;
	}
	return 0;
}

/*
 * A GET answered with neither Content-Length nor chunked encoding ends where
 * the server closes the connection (HTTP/1.1 allows it: some proxies, an
 * HTTP/1.0 server): a connection dropped midway looks the same to curl, and
 * the object then only looked corrupt to its reader (QA44 #5). Ask the
 * object's size (HEAD): short of it, o is a transient failure, which
 * s3_request resumes from where the sink stands; another ETag, the object
 * changed meanwhile. A HEAD that fails leaves the answer as it came, with a
 * warning: what reads it still checks it.
 */
static void check_close_delimited(struct s3 *s3, const struct s3_req *req, const struct s3_ctl *ctl,
				  const struct xfer *x, struct outcome *o)
{
	int64_t size;
	char etag[256], why[300];
	if (object_size(s3, req, ctl, &size, etag, sizeof(etag), why, sizeof(why)) < 0) {
		log_warn("s3", "cannot check a download that came without Content-Length against the "
			 "object's size: its content checks decide", "host=%s key=\"%s\" bytes=%lld "
			 "err=\"%s\"", s3->host, req->key, (long long)x->delivered, why);
		return;
	}
	if (etag_differs(x->etag, etag)) {
		o->status = ST_TRANSIENT;
		snprintf(o->cause, sizeof(o->cause), "the object changed during the download (ETag "
			 "%.100s, then %.100s)", x->etag, etag);
		return;
	}
	if (x->delivered >= size)
		return;
	o->status = ST_TRANSIENT;
	o->retry = true;
	snprintf(o->cause, sizeof(o->cause), "the answer, without Content-Length, ended at byte %lld "
		 "of %lld: connection closed early", (long long)x->delivered, (long long)size);
}

/*
 * A resume (Range from what the sink holds) answered 416: the range starts
 * at or past the end. When the object's size (the 416's Content-Range, else
 * a HEAD) is what the sink holds, the first answer was whole after all: its
 * framing had promised more (a chunked body's last chunk lost, a length too
 * large). Returns true then.
 */
static bool resume_was_at_end(struct s3 *s3, const struct s3_req *req, const struct s3_ctl *ctl,
			      const struct xfer *x)
{
	int64_t size = x->range_total;
	char etag[256] = "", why[300];
	snprintf(etag, sizeof(etag), "%s", x->resp->etag); /* the 416's own, if it sent one */
	if (size < 0 && object_size(s3, req, ctl, &size, etag, sizeof(etag), why, sizeof(why)) < 0)
		return false;
	return size == x->delivered && !etag_differs(etag, x->etag);
}

/* A call ended: failing (gave up on a transient failure) or answered. Logs the changes. */
/* Which of s3->failing a request counts in: 0 reads, 1 writes. */
static int failing_class(const struct s3_req *req)
{
	return strcmp(req->method, "GET") != 0 && !req->head;
}

static void note_failing(struct s3 *s3, bool failing, const struct s3_req *req, const char *cause)
{
	int k = failing_class(req);
	pthread_mutex_lock(&s3->lock);
	bool was = s3->failing[k];
	s3->failing[k] = failing;
	pthread_mutex_unlock(&s3->lock);
	const char *calls = k ? "writes" : "reads";
	if (failing && !was)
		log_warn("s3", "the server keeps failing: retries are logged at debug level until it "
			 "answers again", "calls=%s op=%s host=%s bucket=%s cause=\"%s\"", calls, req->op,
			 s3->host, s3->bucket, cause);
	else if (!failing && was)
		log_info("s3", "the server answers again", "calls=%s op=%s host=%s bucket=%s", calls,
			 req->op, s3->host, s3->bucket);
}

int s3_request(struct s3 *s3, const struct s3_req *req, struct s3_resp *resp,
	       const struct s3_ctl *ctl, struct st_error *err)
{
	struct xfer x = { .call_start_ms = clock_mono_ms() };
	struct outcome o = { 0 };
	const char *key = req->key ? req->key : "";
	/* a listing is named by its prefix, so a log tells which replica's path failed */
	for (size_t i = 0; !req->key && i < req->nquery; i++)
		if (!strcmp(req->query[i].name, "prefix") && req->query[i].value)
			key = req->query[i].value;
	int max = ctl->no_retry ? 1 : MAX_ATTEMPTS;
	int progress_resumes = 0;
	bool retried = false;
	/* an attempt sent the whole body and got no answer: it may have landed */
	bool whole_unanswered = false;
	bool unconditional = false; /* tried again without If-None-Match (no_conditional) */
	int64_t body_len = req->read_len >= 0 ? req->read_len : (int64_t)req->body_len;

	for (int n = 1;; n++) {
		int64_t left = 0;
		if (ctl->deadline_ms) {
			left = ctl->deadline_ms - clock_mono_ms();
			if (left <= 0) {
				if (n == 1)
					snprintf(o.cause, sizeof(o.cause), "deadline of the call reached before sending");
				o.status = ST_TRANSIENT;
				break;
			}
		}
		if (n > 1 && req->read_len >= 0 && x.sent > 0) {
			if (!req->rewind || req->rewind(req->read_ctx) < 0)
				break; /* the body is gone: report the last failure */
		}
		int64_t had = x.delivered;
		attempt(s3, req, resp, left, ctl->stall_s, &x, &o, err);
		bool unsized = resp->status / 100 == 2 && resp->content_length < 0 && !x.chunked &&
			       !req->head;
		if (o.status == 0 && unsized && req->sink && !strcmp(req->method, "GET"))
			check_close_delimited(s3, req, ctl, &x, &o);
		if (o.status != 0 && resp->status == 416 && x.resume_from > 0 && req->sink) {
			if (resume_was_at_end(s3, req, ctl, &x))
				return 0;
			if (etag_differs(x.etag, resp->etag)) {
				o.status = ST_TRANSIENT;
				o.retry = false;
				snprintf(o.cause, sizeof(o.cause), "the object changed during the download "
					 "(ETag %.100s, then %.100s)", x.etag, resp->etag);
			}
		}
		if (o.status == 0 && unsized && !req->sink && req->xml_root && !resp->body.overflow &&
		    s3_xml_cut_short(resp->body.data, resp->body.len, req->xml_root)) {
			o.status = ST_TRANSIENT;
			o.retry = true;
			snprintf(o.cause, sizeof(o.cause), "the answer, without Content-Length, ended "
				 "after %zu bytes, before its XML document did: connection closed early",
				 resp->body.len);
		}
		if (o.no_conditional) {
			/* at once, without the header: nothing landed */
			pthread_mutex_lock(&s3->lock);
			bool first = !s3->no_conditional;
			s3->no_conditional = true;
			pthread_mutex_unlock(&s3->lock);
			if (first)
				log_warn("s3", "the server does not take conditional writes (If-None-Match): "
					 "objects are put without it from now on, so an upload given up on "
					 "and landing late, or a restart on a listing that lags, may "
					 "replace a segment (docs/replication.md)", "host=%s bucket=%s "
					 "cause=\"%s\"", s3->host, s3->bucket, o.cause);
			o.no_conditional = false;
			if (!unconditional) {
				unconditional = true;
				n--; /* not an attempt of the call's: the same one again */
				if (req->read_len >= 0 && x.sent > 0 &&
				    (!req->rewind || req->rewind(req->read_ctx) < 0))
					break;
				continue;
			}
		}
		if (o.status != 0 && resp->status == 0 && body_len > 0 && x.sent >= body_len)
			whole_unanswered = true;
		if (o.status == 0) {
			if (resp->body.overflow && !req->sink) {
				o.status = ST_PERMANENT;
				snprintf(o.cause, sizeof(o.cause), "answer larger than %zu bytes", resp->body.cap);
				break;
			}
			note_failing(s3, false, req, NULL);
			return 0;
		}
		/* a GET cut short resumes where its sink stands (attempt() asks for the rest) */
		if (o.retry && max > 1 && x.delivered - had >= PROGRESS_RESUME_BYTES && req->sink &&
		    !strcmp(req->method, "GET") &&
		    progress_resumes < MAX_PROGRESS_RESUMES) {
			progress_resumes++;
			n = 1;
		}
		if (!o.retry || n >= max || (o.refused && ctl->fail_refused) ||
		    (x.delivered > 0 && (!req->sink || strcmp(req->method, "GET"))))
			break;
		/* full jitter over an exponential window, at least half of it */
		int64_t window = (int64_t)BACKOFF_BASE_MS << (n - 1);
		if (window > BACKOFF_MAX_MS)
			window = BACKOFF_MAX_MS;
		int64_t sleep_ms = window / 2 + (int64_t)(jitter_random() % (uint64_t)(window / 2 + 1));
		if (ctl->deadline_ms && clock_mono_ms() + sleep_ms >= ctl->deadline_ms)
			break;
		/* the server by name: two MinIOs often share bucket and keys */
		pthread_mutex_lock(&s3->lock);
		bool quiet = s3->failing[failing_class(req)];
		pthread_mutex_unlock(&s3->lock);
		log_event(quiet ? LOG_DEBUG : LOG_WARN, "s3", "request retried",
			  "op=%s host=%s bucket=%s key=\"%s\" attempt=%d backoff_ms=%lld cause=\"%s\"",
			  req->op, s3->host, s3->bucket, key, n + 1, (long long)sleep_ms, o.cause);
		clock_sleep_ms(sleep_ms);
		retried = true;
	}
	/*
	 * Down: it was retried and failed each time (not a local cause, not one
	 * answer that no retry would help, not a probe that may not retry). Up
	 * again: the server answered, whatever it said.
	 */
	if (o.status == ST_TRANSIENT && retried)
		note_failing(s3, true, req, o.cause);
	else if (o.status != ST_TRANSIENT && resp->status > 0)
		note_failing(s3, false, req, NULL);
	st_error_set(err, (enum st_status)o.status, (int)resp->status, "%s %s/%s: %s", req->op,
		     s3->bucket, key, o.cause);
	/*
	 * A create-only PUT refused (412) after an attempt of its own that sent
	 * everything and got no answer: that attempt may have landed, and the
	 * key hold this very body (QA106 D3). Or it never reached the server,
	 * and the key is another's: "sent" is what curl was handed, not what
	 * the server took (QA107 D1). The caller looks.
	 */
	if (err && o.status == ST_EXISTS && req->if_none_match && whole_unanswered)
		err->maybe_own = true;
	return o.status;
}
