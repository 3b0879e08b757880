/*
 * storage.c — the backend-independent half of storage.h: opening by type,
 * the counting wrappers, listings, errors, and the stock sources and sinks.
 */
#include "replication/storage.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/lazy_crypto.h"
#include "replication/age.h"
#include "common/banned.h"

const char *st_status_name(enum st_status s)
{
	switch (s) {
	case ST_OK: return "ok";
	case ST_NOT_FOUND: return "not found";
	case ST_AUTH: return "auth";
	case ST_TRANSIENT: return "transient";
	case ST_PERMANENT: return "permanent";
	case ST_EXISTS: return "exists";
	}
	return "unknown";
}

const char *st_op_name(enum st_op op)
{
	static const char *const names[ST_OP__COUNT] = { "get", "put", "list", "delete", "head" };
	if ((int)op < 0 || op >= ST_OP__COUNT)
		return "unknown";
	return names[op];
}

void st_error_set(struct st_error *err, enum st_status status, int http_status,
		  const char *fmt, ...)
{
	va_list ap;
	if (!err)
		return;
	err->status = status;
	err->http_status = http_status;
	err->foreign_form = false;
	err->maybe_own = false;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
}

/* ---- listings ---- */

void st_list_release(struct st_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nobjects; i++)
		free(l->objects[i].key);
	for (size_t i = 0; i < l->nprefixes; i++)
		free(l->prefixes[i]);
	free(l->objects);
	free(l->prefixes);
	memset(l, 0, sizeof(*l));
}

/* Capacity is not stored: it is 16, then doubles whenever the count reaches it. */
static int grow(void **arr, size_t n, size_t elem)
{
	size_t cap;
	if (n == 0)
		cap = 16;
	else if (n >= 16 && (n & (n - 1)) == 0)
		cap = n * 2;
	else
		return 0;
	void *p = realloc(*arr, cap * elem);
	if (!p)
		return -1;
	*arr = p;
	return 0;
}

/* Returns 0, or -1 (out of memory, errno set). */
int st_list_add_object(struct st_list *l, const char *key, int64_t size, int64_t mtime_ns)
{
	char *k = strdup(key);
	if (!k || grow((void **)&l->objects, l->nobjects, sizeof(*l->objects)) < 0) {
		free(k);
		errno = ENOMEM;
		return -1;
	}
	l->objects[l->nobjects].key = k;
	l->objects[l->nobjects].size = size;
	l->objects[l->nobjects].mtime_ns = mtime_ns;
	l->nobjects++;
	return 0;
}

/* Returns 0, or -1 (out of memory, errno set). */
int st_list_add_prefix(struct st_list *l, const char *prefix)
{
	char *p = strdup(prefix);
	if (!p || grow((void **)&l->prefixes, l->nprefixes, sizeof(*l->prefixes)) < 0) {
		free(p);
		errno = ENOMEM;
		return -1;
	}
	l->prefixes[l->nprefixes++] = p;
	return 0;
}

static int cmp_object(const void *a, const void *b)
{
	return strcmp(((const struct st_object *)a)->key, ((const struct st_object *)b)->key);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort objects and prefixes in byte order (strcmp compares unsigned bytes),
 * and drop duplicate prefixes, which a paginated listing may repeat. */
void st_list_sort(struct st_list *l)
{
	if (l->nobjects > 1)
		qsort(l->objects, l->nobjects, sizeof(*l->objects), cmp_object);
	if (l->nprefixes > 1) {
		qsort(l->prefixes, l->nprefixes, sizeof(*l->prefixes), cmp_str);
		size_t w = 1;
		for (size_t i = 1; i < l->nprefixes; i++) {
			if (strcmp(l->prefixes[i], l->prefixes[w - 1]) == 0)
				free(l->prefixes[i]);
			else
				l->prefixes[w++] = l->prefixes[i];
		}
		l->nprefixes = w;
	}
}

/* ---- sources and sinks ---- */

static ssize_t mem_read(void *ctx, void *buf, size_t len)
{
	struct st_mem_source *m = ctx;
	size_t n = m->len - m->pos;
	if (n > len)
		n = len;
	if (n)
		memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	return (ssize_t)n;
}

static int mem_rewind(void *ctx)
{
	((struct st_mem_source *)ctx)->pos = 0;
	return 0;
}

void st_mem_source_init(struct st_source *src, struct st_mem_source *m, const void *data, size_t len)
{
	m->data = data;
	m->len = len;
	m->pos = 0;
	*src = (struct st_source){ .read = mem_read, .rewind = mem_rewind, .ctx = m,
				   .size = (int64_t)len };
}

static ssize_t fd_read(void *ctx, void *buf, size_t len)
{
	struct st_fd_source *f = ctx;
	for (;;) {
		ssize_t n = read(f->fd, buf, len);
		if (n >= 0 || errno != EINTR)
			return n;
	}
}

static int fd_rewind(void *ctx)
{
	struct st_fd_source *f = ctx;
	return lseek(f->fd, f->start, SEEK_SET) < 0 ? -1 : 0;
}

static int fd_seek(void *ctx, int64_t off)
{
	struct st_fd_source *f = ctx;
	return lseek(f->fd, f->start + off, SEEK_SET) < 0 ? -1 : 0;
}

/* The start offset is taken now; a pipe (unseekable) gives a source without rewind or seek. */
void st_fd_source_init(struct st_source *src, struct st_fd_source *f, int fd, int64_t size)
{
	f->fd = fd;
	f->start = lseek(fd, 0, SEEK_CUR);
	*src = (struct st_source){ .read = fd_read, .rewind = f->start < 0 ? NULL : fd_rewind,
				   .ctx = f, .size = size,
				   .seek = f->start < 0 || size < 0 ? NULL : fd_seek };
}

/* Writes all of buf (retrying short writes and EINTR). Returns 0 or -1. */
int st_fd_sink_write(void *ctx, const void *buf, size_t len)
{
	int fd = *(int *)ctx;
	const unsigned char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t st_read_full(const struct st_source *src, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = src->read(src->ctx, (unsigned char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* ---- open / free ---- */

struct storage *storage_open(const struct cfg_replica *r, struct st_error *err)
{
	struct st_error local;
	if (!err)
		err = &local;
	memset(err, 0, sizeof(*err));
	struct storage *st = NULL;
	char why[512];
	if (r->age.set && lazy_crypto_load(why, sizeof(why)) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "open replica %s: age encryption needs libcrypto: %s",
			     r->name ? r->name : "?", why);
		return NULL;
	}
	switch (r->type) {
	case REPLICA_FILE:
		st = storage_file_open(r, err);
		break;
	case REPLICA_S3:
		st = storage_s3_open(r, err);
		break;
	default:
		st_error_set(err, ST_PERMANENT, 0, "open replica %s: unknown type %d",
			     r->name ? r->name : "?", (int)r->type);
		return NULL;
	}
	if (st && r->age.set) {
		const struct cfg_age *a = &r->age;
		size_t ni = a->nidentities * sizeof(*a->identities);
		size_t nr = a->nrecipients * sizeof(*a->recipients);
		st->age.identities = malloc(ni ? ni : 1);
		st->age.recipients = malloc(nr ? nr : 1);
		if (!st->age.identities || !st->age.recipients) {
			storage_free(st);
			st_error_set(err, ST_PERMANENT, 0, "out of memory");
			return NULL;
		}
		if (ni)
			memcpy(st->age.identities, a->identities, ni);
		if (nr) /* identities alone: a->recipients is NULL */
			memcpy(st->age.recipients, a->recipients, nr);
		st->age.nidentities = a->nidentities;
		st->age.nrecipients = a->nrecipients;
		st->age.set = true;
	}
	return st;
}

void storage_free(struct storage *st)
{
	if (!st)
		return;
	if (st->age.identities)
		explicit_bzero(st->age.identities, st->age.nidentities * sizeof(*st->age.identities));
	free(st->age.identities);
	free(st->age.recipients);
	free(st->like);
	st->ops->destroy(st);
}

int storage_set_like(struct storage *st, const char *path)
{
	char *copy = strdup(path);
	if (!copy)
		return -1;
	free(st->like);
	st->like = copy;
	return 0;
}

/* ---- counting wrappers ---- */

void st_moved(struct storage *st)
{
	atomic_store_explicit(&st->moved_ns, clock_mono_ns(), memory_order_relaxed);
}

bool storage_stalled(struct storage *st, int64_t now, int64_t ns)
{
	return atomic_load(&st->busy) > 0 &&
	       now - atomic_load_explicit(&st->moved_ns, memory_order_relaxed) > ns;
}

bool storage_under_way(struct storage *st, int64_t now, char *buf, size_t len)
{
	buf[0] = '\0';
	if (atomic_load(&st->busy) <= 0)
		return false;
	int op = atomic_load(&st->begun_op);
	int64_t begun = atomic_load(&st->begun_ns);
	int64_t moved = atomic_load_explicit(&st->moved_ns, memory_order_relaxed);
	snprintf(buf, len, "a %s under way for %.1f s, nothing moved for %.1f s",
		 st_op_name((enum st_op)op), (double)(now - begun) / NS_PER_SEC,
		 (double)(now - moved) / NS_PER_SEC);
	return true;
}

/* A call on st begins or ends: the stall clock starts over. */
static void call_begin(struct storage *st, enum st_op op)
{
	st_moved(st);
	atomic_store(&st->begun_op, (int)op);
	atomic_store(&st->begun_ns, clock_mono_ns());
	atomic_fetch_add(&st->busy, 1);
}

static void call_end(struct storage *st)
{
	st_moved(st);
	atomic_fetch_sub(&st->busy, 1);
}

static void account(struct storage *st, enum st_op op, int64_t t0, uint64_t bytes, int rc)
{
	struct st_op_stats *s = &st->stats[op];
	call_end(st);
	atomic_fetch_add(&s->count, 1);
	atomic_fetch_add(&s->bytes, bytes);
	atomic_fetch_add(&s->latency_ns, (uint64_t)(clock_mono_ns() - t0));
	if (rc != 0 && rc != ST_NOT_FOUND) /* "not there" is an answer (a first listing, a HEAD) */
		atomic_fetch_add(&s->errors, 1);
	else
		atomic_fetch_add(&s->answered, 1);
}

/* Every wrapper hands the backend a cleared error so messages never leak across calls. */
static struct st_error *prepare(struct st_error *err, struct st_error *local)
{
	if (!err)
		err = local;
	memset(err, 0, sizeof(*err));
	return err;
}

/* A backend that fails must say why; make sure the status is never ST_OK then. */
static int settle(int rc, struct st_error *err, const char *op)
{
	if (rc == 0)
		return 0;
	if (err->status == ST_OK) {
		err->status = rc < 0 && rc >= ST_PERMANENT ? (enum st_status)rc : ST_PERMANENT;
		if (!err->message[0])
			snprintf(err->message, sizeof(err->message), "%s failed", op);
	}
	return err->status;
}

struct counting_sink {
	struct storage *st;
	const struct st_sink *inner;
	uint64_t bytes;
	bool stopped;  /* the reader stopped the get (enough read, or its own failure) */
};

static int counting_write(void *ctx, const void *buf, size_t len)
{
	struct counting_sink *c = ctx;
	int rc = c->inner->write(c->inner->ctx, buf, len);
	st_moved(c->st);
	if (rc == 0)
		c->bytes += len;
	else
		c->stopped = true;
	return rc;
}

struct counting_source {
	struct storage *st;
	const struct st_source *inner;
	uint64_t bytes;
};

static ssize_t counting_read(void *ctx, void *buf, size_t len)
{
	struct counting_source *c = ctx;
	ssize_t n = c->inner->read(c->inner->ctx, buf, len);
	st_moved(c->st);
	if (n > 0)
		c->bytes += (uint64_t)n;
	return n;
}

/* A rewound source is read again: count only what the final attempt moved. */
static int counting_rewind(void *ctx)
{
	struct counting_source *c = ctx;
	int rc = c->inner->rewind(c->inner->ctx);
	if (rc == 0)
		c->bytes = 0;
	return rc;
}

/* Seeking sources are read in passes (hash, then send): count the position reached. */
static int counting_seek(void *ctx, int64_t off)
{
	struct counting_source *c = ctx;
	int rc = c->inner->seek(c->inner->ctx, off);
	if (rc == 0)
		c->bytes = (uint64_t)off;
	return rc;
}

static int counting_unnamed_file(void *ctx)
{
	struct counting_source *c = ctx;
	return c->inner->unnamed_file(c->inner->ctx);
}

int storage_list(struct storage *st, const char *prefix, const char *delimiter,
		 struct st_list *out, const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	int64_t t0 = clock_mono_ns();
	err = prepare(err, &local);
	memset(out, 0, sizeof(*out));
	call_begin(st, ST_OP_LIST);
	int rc = st->ops->list(st, prefix ? prefix : "", delimiter, out, call, err);
	if (rc != 0)
		st_list_release(out);
	else
		st_list_sort(out);
	rc = settle(rc, err, "list");
	account(st, ST_OP_LIST, t0, 0, rc);
	return rc;
}

/* Whether key is an object that st encrypts: a snapshot or WAL segment of an age: replica. */
static bool age_object(const struct storage *st, const char *key)
{
	if (!st->age.set) /* the plain path pays one test */
		return false;
	size_t n = strlen(key);
	return n > 4 && strcmp(key + n - 4, ".lz4") == 0;
}

static int plain_get(struct storage *st, const char *key, const struct st_sink *sink,
		     const struct st_call *call, struct st_error *err);
static int plain_put(struct storage *st, const char *key, const struct st_source *src,
		     const struct st_call *call, struct st_error *err);

/* get through the age decryptor: its failure is the object's, ST_PERMANENT. */
static int age_get(struct storage *st, const char *key, const struct st_sink *sink,
		   const struct st_call *call, struct st_error *err)
{
	struct age_dec dec;
	struct st_sink dsink;
	if (age_dec_init(&dec, &dsink, sink, &st->age) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "get %s: out of memory", key);
		return ST_PERMANENT;
	}
	int rc = plain_get(st, key, &dsink, call, err);
	if (rc == 0 && age_dec_finish(&dec) < 0) {
		rc = ST_PERMANENT;
		if (!dec.failed)
			st_error_set(err, rc, 0, "get %s: the destination refused the data", key);
	}
	if (rc < 0 && dec.failed) {
		st_error_set(err, ST_PERMANENT, 0, "cannot decrypt %s: %s", key, dec.error);
		err->foreign_form = dec.foreign;
	}
	age_dec_release(&dec);
	return rc < 0 && dec.failed ? ST_PERMANENT : rc;
}

/* put through the age encryptor, for every recipient of the replica. */
static int age_put(struct storage *st, const char *key, const struct st_source *src,
		   const struct st_call *call, struct st_error *err)
{
	struct age_enc enc;
	struct st_source esrc;
	if (st->age.nrecipients == 0) {
		st_error_set(err, ST_PERMANENT, 0, "put %s: age: no recipients to encrypt for (the "
			     "replica has identities only)", key);
		return ST_PERMANENT;
	}
	if (age_enc_init(&enc, &esrc, src, &st->age) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "put %s: out of memory", key);
		return ST_PERMANENT;
	}
	int rc = plain_put(st, key, &esrc, call, err);
	if (rc < 0 && enc.error[0])
		st_error_set(err, ST_PERMANENT, 0, "cannot encrypt %s: %s", key, enc.error);
	age_enc_release(&enc);
	return rc;
}

int storage_get(struct storage *st, const char *key, const struct st_sink *sink,
		const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	if (age_object(st, key))
		return age_get(st, key, sink, call, prepare(err, &local));
	return plain_get(st, key, sink, call, err);
}

int storage_put(struct storage *st, const char *key, const struct st_source *src,
		const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	if (age_object(st, key))
		return age_put(st, key, src, call, prepare(err, &local));
	return plain_put(st, key, src, call, err);
}

static int plain_get(struct storage *st, const char *key, const struct st_sink *sink,
		     const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	int64_t t0 = clock_mono_ns();
	struct counting_sink cs = { st, sink, 0, false };
	struct st_sink wrapped = { counting_write, &cs };
	err = prepare(err, &local);
	call_begin(st, ST_OP_GET);
	int rc = settle(st->ops->get(st, key, &wrapped, call, err), err, "get");
	/*
	 * A get its reader stopped is no failure of the storage: a form check
	 * that needs the first bytes only (catalog_snapshot_form), a local disk
	 * that refused them, an object that does not decode (each reported where
	 * it happened). Counted, it would raise the error metric at every start.
	 */
	account(st, ST_OP_GET, t0, cs.bytes, cs.stopped ? 0 : rc);
	return rc;
}

static int plain_put(struct storage *st, const char *key, const struct st_source *src,
		     const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	int64_t t0 = clock_mono_ns();
	struct counting_source cs = { st, src, 0 };
	struct st_source wrapped = {
		.read = counting_read,
		.rewind = src->rewind ? counting_rewind : NULL,
		.ctx = &cs,
		.size = src->size,
		.seek = src->seek ? counting_seek : NULL,
		.unnamed_file = src->unnamed_file ? counting_unnamed_file : NULL,
	};
	err = prepare(err, &local);
	call_begin(st, ST_OP_PUT);
	int rc = settle(st->ops->put(st, key, &wrapped, call, err), err, "put");
	/* a linked-in unnamed file was never read: its size is what the object got */
	uint64_t bytes = cs.bytes || src->size < 0 ? cs.bytes : (uint64_t)src->size;
	account(st, ST_OP_PUT, t0, rc == 0 ? bytes : 0, rc);
	return rc;
}

int storage_delete(struct storage *st, const char *const *keys, size_t nkeys,
		   const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	int64_t t0 = clock_mono_ns();
	err = prepare(err, &local);
	call_begin(st, ST_OP_DELETE);
	int rc = nkeys ? st->ops->del(st, keys, nkeys, call, err) : 0;
	rc = settle(rc, err, "delete");
	account(st, ST_OP_DELETE, t0, 0, rc);
	return rc;
}

int storage_stat(struct storage *st, const char *key, struct st_object *out,
		 const struct st_call *call, struct st_error *err)
{
	struct st_error local;
	int64_t t0 = clock_mono_ns();
	err = prepare(err, &local);
	memset(out, 0, sizeof(*out));
	call_begin(st, ST_OP_HEAD);
	int rc = st->ops->stat(st, key, out, call, err);
	if (rc == 0 && !out->key) {
		out->key = strdup(key);
		if (!out->key) {
			st_error_set(err, ST_PERMANENT, 0, "stat %s: out of memory", key);
			rc = ST_PERMANENT;
		}
	}
	if (rc != 0) {
		free(out->key);
		out->key = NULL;
	}
	rc = settle(rc, err, "head");
	account(st, ST_OP_HEAD, t0, 0, rc);
	return rc;
}
