/*
 * storage.h — the one interface between litevisor and a replica's storage.
 *
 * The replication engine and restore see a replica only through this: list,
 * get (streamed into a sink), put (streamed from a source), delete many, stat.
 * Backends: file (storage_file.c) and S3 (s3.c). A new backend (sftp, GCS,
 * Azure) implements struct storage_ops and a constructor; nothing above this
 * layer changes.
 *
 * Keys are relative to the replica's root (its directory or key prefix) and
 * use '/' separators, e.g. "generations/0123456789abcdef/wal/00000001_00000000.wal.lz4".
 * Listings return keys relative to the root too, sorted in byte order (as S3
 * does).
 *
 * Thread-safety: every operation may be called from several threads at once
 * on the same struct storage (S3 keeps a pool of connections).
 *
 * Errors: every operation returns 0 or a negative enum st_status and fills
 * the caller's struct st_error with the class and one readable message
 * (operation, bucket/dir, key, HTTP status, S3 code); never a credential.
 */
#ifndef LITEVISOR_STORAGE_H
#define LITEVISOR_STORAGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/config.h"

enum st_status {
	ST_OK = 0,
	ST_NOT_FOUND = -1, /* no such key; for list, a file replica's missing directory (an
			      S3 bucket that does not exist is ST_PERMANENT: a typo in
			      the config must not read as an empty replica) */
	ST_AUTH = -2,      /* credentials rejected or permission denied */
	ST_TRANSIENT = -3, /* worth retrying later: network, timeout, 5xx, full replica */
	ST_PERMANENT = -4, /* anything else: bad request, corrupt answer, local I/O error */
	ST_EXISTS = -5,    /* a create-only put (st_call.create_only) found the key taken */
};

struct st_error {
	enum st_status status;
	int http_status;   /* 0 if not HTTP */
	char message[512];
	/*
	 * ST_PERMANENT from a get whose object was read far enough to see it is
	 * not in the form the replica's age: settings expect: plain LZ4 where
	 * age-encrypted objects are expected, age-encrypted where plain ones
	 * are, or encrypted for none of its identities. The object is fine: the
	 * settings changed since it was written. Never set for a network or
	 * storage failure. st_error_set clears it.
	 */
	bool foreign_form;
	/*
	 * ST_EXISTS from a create-only put of which an earlier attempt sent
	 * the whole body and got no answer: the key may hold this very body
	 * (that attempt landed), or another's (it never reached the server).
	 * Only a look at the key tells. st_error_set clears it.
	 */
	bool maybe_own;
};

/* Name of a status class: "not found", "auth", "transient", "permanent". */
const char *st_status_name(enum st_status s);

/* One object in a listing or a stat. */
struct st_object {
	char *key;         /* relative to the root; owned by the list/caller */
	int64_t size;      /* bytes stored */
	int64_t mtime_ns;  /* creation/modification time, ns since the epoch */
};

struct st_list {
	struct st_object *objects; /* sorted by key */
	size_t nobjects;
	char **prefixes;           /* with a delimiter: common prefixes, ending in it; sorted */
	size_t nprefixes;
	/* S3: how far the server's clock is ahead of ours, by which the objects' times were
	 * moved onto our clock (s3_clock_correction); added back, the server's own times,
	 * which a listing prints and -timestamp is read against, as Litestream does: whole
	 * seconds measured by one process, they might differ by one in the next. 0: none. */
	int64_t clock_offset_ns;
};

/* Release a listing's contents and zero it. */
void st_list_release(struct st_list *l);

/* Where get() writes: write() returns 0, or -1 to abort (the get then fails ST_PERMANENT). */
struct st_sink {
	int (*write)(void *ctx, const void *buf, size_t len);
	void *ctx;
};

/*
 * What put() reads: read() returns bytes read (0 = end, -1 = error, errno set).
 * size is the total length if known, else -1 (then large bodies go multipart,
 * spooled part by part, never whole in memory). rewind(), if set, restarts
 * the stream from the beginning so a failed single PUT can be retried;
 * without it put() does not retry a body it has already consumed.
 */
struct st_source {
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	int (*rewind)(void *ctx);
	void *ctx;
	int64_t size;
	/*
	 * Optional (sources of known size): continue reading at byte off of the
	 * source. Lets the S3 client hash a multipart part and then send it from
	 * the source itself, instead of copying it to a spool file first.
	 */
	int (*seek)(void *ctx, int64_t off);
	/*
	 * Optional: the descriptor of an unnamed regular file (O_TMPFILE) whose
	 * whole content is exactly this source and is never written again. A
	 * file replica on the same filesystem links that file in as the object
	 * instead of copying it. Returns -1 when there is none.
	 */
	int (*unnamed_file)(void *ctx);
};

/* Per-call options; NULL means the defaults (retries, no total deadline). */
struct st_call {
	int64_t deadline_ms;  /* >0: the whole call (all attempts) must end in this time */
	bool no_retry;        /* one attempt only */
	bool fail_refused;    /* a connection refused (or no route) fails the call at once:
				 nobody listens there now (restore's probes) */
	int stall_s;          /* network transfers of big objects: seconds below 1 KiB/s that
				 make a stall. 0: 30 s, and a stall is retried like any
				 network failure. Set by callers with somewhere else to go
				 (restore's next candidate): a stall then fails the call
				 at once, ST_TRANSIENT, and replaces the S3 replica's
				 idle-timeout (after which a request is retried) */
	bool create_only;     /* put: never replace an object: a key already there (even
				 one this call's own earlier attempt wrote) is kept and the
				 put fails ST_EXISTS. S3: If-None-Match: * (AWS since 2024,
				 MinIO; a server that ignores it replaces the object as
				 before); file: link(2) instead of rename(2) */
};

enum st_op { ST_OP_GET = 0, ST_OP_PUT, ST_OP_LIST, ST_OP_DELETE, ST_OP_HEAD, ST_OP__COUNT };

/* Name of an operation for metrics: "get", "put", "list", "delete", "head". */
const char *st_op_name(enum st_op op);

/* Counters per operation, updated atomically; read them for /metrics. */
struct st_op_stats {
	atomic_uint_fast64_t count;      /* calls */
	atomic_uint_fast64_t errors;     /* calls that failed */
	atomic_uint_fast64_t answered;   /* calls that did not: counted apart, so a reader
					    never sees count - errors go back mid-call */
	atomic_uint_fast64_t bytes;      /* payload bytes moved */
	atomic_uint_fast64_t latency_ns; /* summed duration of calls */
};

struct storage;

struct storage_ops {
	int (*list)(struct storage *st, const char *prefix, const char *delimiter,
		    struct st_list *out, const struct st_call *call, struct st_error *err);
	int (*get)(struct storage *st, const char *key, const struct st_sink *sink,
		   const struct st_call *call, struct st_error *err);
	int (*put)(struct storage *st, const char *key, const struct st_source *src,
		   const struct st_call *call, struct st_error *err);
	int (*del)(struct storage *st, const char *const *keys, size_t nkeys,
		   const struct st_call *call, struct st_error *err);
	int (*stat)(struct storage *st, const char *key, struct st_object *out,
		    const struct st_call *call, struct st_error *err);
	void (*destroy)(struct storage *st);
};

struct storage {
	const struct storage_ops *ops;
	const char *type;          /* "file", "s3" */
	char *description;         /* for logs: "s3 http://host:port/bucket/prefix" or the dir; no credentials */
	/*
	 * The place, as independent of its spelling as can be told without I/O
	 * to the server: "file <root, symlinks resolved>" (the existing part of
	 * it), or the S3 description with its scheme and host in lower case.
	 * Records that hold for one place only (localstate.h, the closed record)
	 * name it. Two spellings of one server (a name and its address) still
	 * differ.
	 */
	char *location;
	struct st_op_stats stats[ST_OP__COUNT];
	/*
	 * The replica's age: keys (a copy, owned), set by storage_open. With
	 * age.set, storage_put and storage_get encrypt and decrypt every
	 * object whose key ends in ".lz4" (snapshots and WAL segments, as
	 * Litestream does; see replication/age.h); the backends see only the
	 * encrypted bytes.
	 */
	struct cfg_age age;
	/*
	 * Set by the engine (storage_set_like): a file replica gives each object
	 * it creates this file's owner and read bits, read-only (storage_file.c),
	 * as Litestream gives the database's mode and owner: a restore run as the
	 * app's user can read what was written as root. Its directories stay
	 * this process's. NULL (restores, listings): 0600, this process's. S3
	 * ignores it.
	 */
	char *like;
	/*
	 * Calls under way on it, and (mono ns) when one of them last moved data,
	 * began or ended: storage_stalled. Kept by the wrappers below and by the
	 * backends through st_moved.
	 */
	atomic_int busy;
	atomic_int_fast64_t moved_ns;
	/* the call begun last: its operation and when (mono ns), for storage_under_way */
	atomic_int begun_op;
	atomic_int_fast64_t begun_ns;
};

/*
 * Open the storage for a configured replica (file or S3). Does no I/O that
 * can block on the network; loads libcrypto for S3 and for age:. Returns a
 * new storage (free with storage_free), or NULL with err set.
 */
struct storage *storage_open(const struct cfg_replica *r, struct st_error *err);

/* Close and free; NULL is fine. */
void storage_free(struct storage *st);

/* Set st->like to a copy of path. 0, or -1 out of memory. */
int storage_set_like(struct storage *st, const char *path);

/*
 * Thin wrappers over st->ops that also count the call in st->stats.
 * list: prefix may be "" (everything); delimiter NULL or "/".
 * get: streams the object into sink; ST_NOT_FOUND if absent. An object that
 *      does not decrypt (st->age) fails ST_PERMANENT, "cannot decrypt KEY: why",
 *      with err->foreign_form when it is plain or for other identities.
 * put: atomic: the key either keeps its old content or gets all of the new.
 *      With st->age, an object is encrypted for the recipients (none: the
 *      put fails ST_PERMANENT).
 * del: deletes keys (missing ones are not an error), batching as needed.
 * stat: size and mtime of one key; out->key is set to a copy of key.
 */
int storage_list(struct storage *st, const char *prefix, const char *delimiter,
		 struct st_list *out, const struct st_call *call, struct st_error *err);
int storage_get(struct storage *st, const char *key, const struct st_sink *sink,
		const struct st_call *call, struct st_error *err);
int storage_put(struct storage *st, const char *key, const struct st_source *src,
		const struct st_call *call, struct st_error *err);
int storage_delete(struct storage *st, const char *const *keys, size_t nkeys,
		   const struct st_call *call, struct st_error *err);
int storage_stat(struct storage *st, const char *key, struct st_object *out,
		 const struct st_call *call, struct st_error *err);

/*
 * Whether a call on st has been under way for ns without any call moving
 * data: a replica that neither answers nor fails (a hard NFS mount whose
 * server went away: its system calls never return). S3 calls end by their
 * own idle and stall timeouts; one retrying a server that is down counts
 * too. now is clock_mono_ns().
 */
bool storage_stalled(struct storage *st, int64_t now, int64_t ns);

/*
 * What is under way on st, for a message: "a put under way for 12.3 s,
 * nothing moved for 11.0 s" (the call begun last, when several are) into
 * buf; false (buf "") when no call is. now is clock_mono_ns().
 */
bool storage_under_way(struct storage *st, int64_t now, char *buf, size_t len);

/* Helpers for backends. */
/* A call on st moved data (a chunk read or written, a listing's entry, a key deleted). */
void st_moved(struct storage *st);
void st_error_set(struct st_error *err, enum st_status status, int http_status,
		  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int st_list_add_object(struct st_list *l, const char *key, int64_t size, int64_t mtime_ns);
int st_list_add_prefix(struct st_list *l, const char *prefix);
void st_list_sort(struct st_list *l);

/* A source over a buffer in memory (tests, small state objects). */
struct st_mem_source {
	const unsigned char *data;
	size_t len, pos;
};
void st_mem_source_init(struct st_source *src, struct st_mem_source *m, const void *data, size_t len);

/* A source over an open file descriptor from its current offset to EOF, rewindable. */
struct st_fd_source {
	int fd;
	off_t start;
};
void st_fd_source_init(struct st_source *src, struct st_fd_source *f, int fd, int64_t size);

/* A sink writing to a file descriptor. */
int st_fd_sink_write(void *ctx /* int* fd */, const void *buf, size_t len);

/*
 * Read src until len bytes or its end, retrying EINTR: the count read (less
 * than len only at the end), or -1 (errno set) at the first failed read.
 */
ssize_t st_read_full(const struct st_source *src, void *buf, size_t len);

/* Backends' constructors (storage_open dispatches on r->type). */
struct storage *storage_file_open(const struct cfg_replica *r, struct st_error *err);
struct storage *storage_s3_open(const struct cfg_replica *r, struct st_error *err);

#endif
