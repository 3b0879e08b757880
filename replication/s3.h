/*
 * s3.h — the S3 backend's internals, shared by its files (not for callers:
 * they use storage.h and storage_s3_open()).
 *
 *   s3.c       open/close, credentials, list, get, stat, delete
 *   s3_put.c   PutObject: single PUT or multipart, spooled part by part
 *   s3_http.c  one signed request over a pooled curl handle, with deadline,
 *              retries (exponential backoff with jitter) and error classes
 *   s3_sigv4.c the signer;  s3_xml.c the response reader;  s3_buf.c buffers
 *
 * Threads: a struct s3 is shared; only its handle pool changes after open,
 * under its mutex. Callers must ignore SIGPIPE (CURLOPT_NOSIGNAL is set, so
 * libcurl does not do it for us); litevisor's main does.
 */
#ifndef LITEVISOR_S3_H
#define LITEVISOR_S3_H

#include <curl/curl.h>
#include <pthread.h>

#include "replication/s3_buf.h"
#include "replication/s3_sigv4.h"
#include "replication/storage.h"

#define S3_POOL_MAX 16
#define S3_SINGLE_PUT_MAX (5LL * 1024 * 1024)   /* below this: one PUT */
#define S3_INLINE_PUT_MAX (256 * 1024)          /* below this: body held in memory, hash signed */
#define S3_PART_SIZE (8LL * 1024 * 1024)        /* multipart part size (grows past 1000 parts) */
#define S3_DELETE_BATCH 1000                    /* DeleteObjects' limit */
#define S3_ERROR_BODY_CAP (64 * 1024)
#define S3_LIST_BODY_CAP (16 * 1024 * 1024)

struct s3 {
	struct storage base;
	char *bucket;
	char *prefix;        /* key prefix: "" or ending in '/' */
	char *region;
	char *base_url;      /* "https://bkt.s3.us-east-1.amazonaws.com", "http://127.0.0.1:9000" */
	char *host;          /* Host header (port only when not the scheme's default) */
	char *path_prefix;   /* endpoint path + "/bucket" (path-style), or the endpoint
				path alone (virtual-hosted) */
	bool skip_verify;
	char *ca_file;
	long connect_timeout_ms;
	long idle_timeout_ms;  /* no byte moved for this long: the attempt is abandoned */
	struct cfg_secret akid, secret, token; /* copies of the config's */

	pthread_mutex_t lock;
	struct s3_conn *idle[S3_POOL_MAX];
	int nidle;
	int64_t offset_ns;         /* under lock: the server's clock offset, whole seconds */
	bool offset_known;         /* under lock: offset_ns was measured */
	/*
	 * under lock: the last call gave up on a transient failure (the server
	 * down, or failing). Until a call gets an answer, each retry is logged at
	 * debug level: the caller logs the failure it reports, so an outage does
	 * not add a WARN per attempt (QA68). One for reads (GET, HEAD, listings)
	 * and one for writes (PUT, POST, DELETE): a server refusing writes only
	 * (its disk full, a quota) answers the reads in between, and each of them
	 * ended the outage, its retries said at WARN again (QA167 O1).
	 */
	bool failing[2];
	/*
	 * under lock: the server rejected If-None-Match (501 NotImplemented, as
	 * AWS did before 2024 and gateways without conditional writes do): PUTs
	 * go without it from then on, as to a server that ignores it.
	 */
	bool no_conditional;
};

/*
 * A pooled curl handle and the socket of its connection, as curl made it
 * (-1: closed or not made yet). Lives until after curl_easy_cleanup(h): the
 * handle's connections call back with it when they close.
 */
struct s3_conn {
	CURL *h;
	int fd;
};

/* When a whole storage call must end and whether it may retry. */
struct s3_ctl {
	int64_t deadline_ms; /* absolute, clock_mono_ms(); 0 = none */
	bool no_retry;
	bool fail_refused;   /* see st_call */
	int stall_s;         /* see st_call; 0: STALL_SECONDS */
	bool create_only;    /* see st_call: PUTs and multipart completions send If-None-Match: * */
};

void s3_ctl_init(struct s3_ctl *c, const struct st_call *call);

struct s3_req {
	const char *op;                  /* "get", "put", "list", "delete", "head", "upload part", … */
	const char *method;
	const char *key;                 /* full object key (with the replica prefix), NULL = bucket */
	const struct s3_kv *query;
	size_t nquery;
	const char *content_md5;         /* base64, or NULL */
	const char *content_type;        /* or NULL */
	/* request body: in memory … */
	const void *body;
	size_t body_len;
	/* … or streamed with a known length (read_len >= 0 turns this on) */
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	int (*rewind)(void *ctx);        /* NULL: a consumed body cannot be retried */
	void *read_ctx;
	int64_t read_len;
	const char *payload_hash;        /* streamed body's SHA-256 hex if known, else unsigned */
	/* response */
	const struct st_sink *sink;      /* 2xx body goes here (GET); else it is collected */
	bool head;                       /* HEAD: no body */
	bool big;                        /* long transfer: stall detection instead of a total timeout */
	bool slow_answer;                /* the server may think for minutes before answering:
					    no idle timeout (CompleteMultipartUpload) */
	size_t body_cap;                 /* collected body cap; 0 = S3_ERROR_BODY_CAP */
	bool if_none_match;              /* send If-None-Match: *; 412 is then ST_EXISTS */
	/*
	 * The root element of the XML document a 2xx answer carries (not for a
	 * sink), NULL for any body. An answer without Content-Length (nor
	 * chunked) ends where the connection closes, so one cut midway came
	 * whole to curl: such a body that is that document (or an <Error>, or
	 * nothing yet) cut short is a transient failure, retried
	 * (s3_xml_cut_short()). Another kind of page is left to the caller.
	 */
	const char *xml_root;
};

struct s3_resp {
	long status;
	struct s3_buf body;              /* collected body (errors; XML answers) */
	char etag[256];
	int64_t content_length;          /* -1 if not sent */
	int64_t last_modified_ns;        /* 0 if not sent */
	/* The server's clock against ours: its Date (whole seconds, so + 0.5 s) minus our
	 * wall clock when the header arrived; have_date false when it sent none. */
	int64_t clock_offset_ns;
	bool have_date;
	int64_t date_ns;                 /* the server's Date itself, 0 if not sent */
	char bucket_region[64];          /* AWS's x-amz-bucket-region, "" if not sent */
	char location[200];              /* a redirect's Location, "" if not sent */
};

/*
 * By how much to move the times a server gave in resp onto our clock (subtract it).
 * Each object a replica holds carries the server's time; read on ours, "newest",
 * "written a moment ago" and retention hold across servers whose clocks differ (S3
 * itself accepts 15 minutes of skew). The offset is whole seconds, kept per server
 * (s3->offset_ns) until an answer's Date says it moved by S3_CLOCK_OFFSET_MIN_NS or
 * more (a clock stepped), so listed times stay the same from one call to the next
 * and one printed can be given back to -timestamp; applied once it reaches
 * S3_CLOCK_OFFSET_MIN_NS (less is what the Date's whole seconds and the trip
 * explain), else 0. Logs a WARN when a server's applied offset is first seen, and
 * when it changes.
 */
#define S3_CLOCK_OFFSET_MIN_NS (2 * NS_PER_SEC)
int64_t s3_clock_correction(struct s3 *s3, const struct s3_resp *resp);

void s3_resp_init(struct s3_resp *r);
void s3_resp_release(struct s3_resp *r);

/*
 * HEAD of full key into resp, once: a look on a failure path (is the object
 * whole, is it ours), bounded by the replica's idle-timeout within ctl's
 * deadline, never retried. Returns as s3_request().
 */
int s3_head_once(struct s3 *s3, const char *key, const struct s3_ctl *ctl, struct s3_resp *resp,
		 struct st_error *err);

/*
 * Perform one S3 request (with retries, within ctl's deadline). An attempt on
 * which nothing moves for the replica's idle-timeout is abandoned and retried;
 * a GET into a sink cut short is retried for the rest only (Range), so the
 * sink sees the object once, in order. Returns 0 on
 * a 2xx answer, or a negative st_status with err filled:
 * "<op> <bucket>/<key>: HTTP <status> <Code>: <message>" or the network cause.
 */
int s3_request(struct s3 *s3, const struct s3_req *req, struct s3_resp *resp,
	       const struct s3_ctl *ctl, struct st_error *err);

/* Credentials for one request; wipe with s3_creds_wipe after signing. */
struct s3_creds {
	char akid[256];
	char secret[512];
	char token[8192]; /* "" if none */
};

/*
 * Resolve credentials: the replica's config (inline or file, re-read when it
 * changes), else LITESTREAM_ACCESS_KEY_ID / LITESTREAM_SECRET_ACCESS_KEY,
 * else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN).
 * Returns 0, or ST_AUTH with err set (never quoting a value). (s3_cred.c)
 */
int s3_credentials(const struct s3 *s3, struct s3_creds *out, struct st_error *err);
void s3_creds_wipe(struct s3_creds *c);

/* Full key (replica prefix + key), malloc'd, or NULL. */
char *s3_full_key(const struct s3 *s3, const char *key);

/* PutObject (s3_put.c). */
int s3_put(struct storage *st, const char *key, const struct st_source *src,
	   const struct st_call *call, struct st_error *err);

/*
 * Load libcurl and libcrypto and set up libcurl, once per process
 * (idempotent, thread-safe); storage_s3_open does it before anything else.
 * Returns 0, or -1 with the cause in err.
 */
int s3_global_init(char *err, size_t errlen);

#endif
