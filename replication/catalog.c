/* catalog.c — list a replica's generations, snapshots and WAL segments. */
#include "replication/catalog.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "replication/lz4io.h"
#include "common/banned.h"

int wal_pos_cmp(const struct wal_pos *a, const struct wal_pos *b)
{
	if (a->index != b->index)
		return a->index < b->index ? -1 : 1;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return 0;
}

bool wal_pos_past(const struct wal_pos *end, const struct wal_pos *at)
{
	if (end->index == at->index)
		return end->offset > at->offset;
	return end->index > at->index + 1 || (end->index == at->index + 1 && end->offset > 0);
}

int catalog_generations(struct storage *st, char (**ids)[LAYOUT_GEN_LEN + 1], size_t *n,
			const struct st_call *call, struct st_error *err)
{
	struct st_list l = { 0 };
	char (*out)[LAYOUT_GEN_LEN + 1] = NULL;
	size_t count = 0;
	int rc = storage_list(st, LAYOUT_GENERATIONS_PREFIX, "/", &l, call, err);

	*ids = NULL;
	*n = 0;
	if (rc == ST_NOT_FOUND) /* an empty replica: no directory, no prefix */
		return 0;
	if (rc < 0)
		return rc;
	if (l.nprefixes) {
		out = calloc(l.nprefixes, sizeof(*out));
		if (!out) {
			st_list_release(&l);
			st_error_set(err, ST_PERMANENT, 0, "out of memory listing generations");
			return ST_PERMANENT;
		}
	}
	for (size_t i = 0; i < l.nprefixes; i++) {
		/* "generations/<gen>/" */
		const char *p = l.prefixes[i] + strlen(LAYOUT_GENERATIONS_PREFIX);
		size_t len = strlen(p);
		if (len != LAYOUT_GEN_LEN + 1 || p[LAYOUT_GEN_LEN] != '/')
			continue;
		memcpy(out[count], p, LAYOUT_GEN_LEN);
		out[count][LAYOUT_GEN_LEN] = '\0';
		if (layout_generation_valid(out[count]))
			count++;
	}
	st_list_release(&l);
	*ids = out;
	*n = count;
	return 0;
}

static void widen(struct cat_generation *g, int64_t t)
{
	if (g->min_ns == 0 || t < g->min_ns)
		g->min_ns = t;
	if (t > g->max_ns)
		g->max_ns = t;
}

static int cmp_snap(const void *a, const void *b)
{
	const struct cat_snapshot *x = a, *y = b;
	return x->index < y->index ? -1 : x->index > y->index;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct cat_segment *x = a, *y = b;
	if (x->index != y->index)
		return x->index < y->index ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_closed(const void *a, const void *b)
{
	const struct cat_closed *x = a, *y = b;
	if (x->index != y->index)
		return x->index < y->index ? -1 : 1;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The name of an object directly inside folder ("snapshots/"), or NULL. */
static const char *folder_entry(const char *rel, const char *folder)
{
	size_t n = strlen(folder);
	if (strncmp(rel, folder, n) != 0 || strchr(rel + n, '/'))
		return NULL;
	return rel + n;
}

/*
 * One listing of the whole generation ("generations/<gen>/", no delimiter)
 * instead of one per folder: every probe and restore pays it on the critical
 * path, and over S3 each listing is a round trip.
 */
int catalog_load(struct storage *st, const char *gen, struct cat_generation *g,
		 const struct st_call *call, struct st_error *err)
{
	char prefix[LAYOUT_KEY_MAX];
	struct st_list l = { 0 };
	size_t plen;
	int rc;

	memset(g, 0, sizeof(*g));
	memcpy(g->id, gen, LAYOUT_GEN_LEN);
	plen = strlen(layout_generation_prefix(prefix, gen));
	rc = storage_list(st, prefix, NULL, &l, call, err);
	if (rc < 0 && rc != ST_NOT_FOUND)
		goto out;
	rc = 0;
	g->clock_offset_ns = l.clock_offset_ns;
	/* each object is at most one of the two; sizing both arrays for all is simplest */
	g->snapshots = calloc(l.nobjects + 1, sizeof(*g->snapshots));
	g->segments = calloc(l.nobjects + 1, sizeof(*g->segments));
	g->closed = calloc(l.nobjects + 1, sizeof(*g->closed));
	g->labels = calloc(l.nobjects + 1, sizeof(*g->labels));
	if (!g->snapshots || !g->segments || !g->closed || !g->labels) {
		st_error_set(err, ST_PERMANENT, 0, "out of memory listing generation %s", gen);
		rc = ST_PERMANENT;
		goto out;
	}
	for (size_t i = 0; i < l.nobjects; i++) {
		const struct st_object *o = &l.objects[i];
		const char *rel = strncmp(o->key, prefix, plen) == 0 ? o->key + plen : "";
		const char *name;
		if ((name = folder_entry(rel, "snapshots/")) != NULL) {
			struct cat_snapshot *s = &g->snapshots[g->nsnapshots];
			if (layout_parse_snapshot(name, &s->index) < 0)
				continue;
			s->size = o->size;
			s->mtime_ns = o->mtime_ns;
			g->nsnapshots++;
		} else if ((name = folder_entry(rel, "wal/")) != NULL) {
			struct cat_segment *s = &g->segments[g->nsegments];
			if (layout_parse_wal(name, &s->index, &s->offset) < 0)
				continue;
			s->size = o->size;
			s->mtime_ns = o->mtime_ns;
			g->nsegments++;
		} else if ((name = folder_entry(rel, "closed/")) != NULL) {
			struct cat_closed *c = &g->closed[g->nclosed];
			if (layout_parse_closed(name, &c->index, &c->offset) == 0) {
				c->mtime_ns = o->mtime_ns;
				g->nclosed++;
			}
			continue; /* a mark, not data: it does not date the generation */
		} else if ((name = folder_entry(rel, "database/")) != NULL) {
			if (layout_parse_database(name, g->labels[g->nlabels]) == 0)
				g->nlabels++;
			continue; /* a label, not data, likewise */
		} else {
			continue; /* not part of the layout: skipped, as Litestream does */
		}
		widen(g, o->mtime_ns);
	}
	qsort(g->snapshots, g->nsnapshots, sizeof(*g->snapshots), cmp_snap);
	qsort(g->segments, g->nsegments, sizeof(*g->segments), cmp_seg);
	qsort(g->closed, g->nclosed, sizeof(*g->closed), cmp_closed);
	/* one label, or several of one id (a listing cannot list a key twice, but be safe) */
	for (size_t i = 0; i < g->nlabels; i++) {
		if (i == 0) {
			memcpy(g->database_id, g->labels[0], sizeof(g->database_id));
		} else if (strcmp(g->labels[i], g->database_id) != 0) {
			g->database_id[0] = '\0';
			break;
		}
	}
out:
	st_list_release(&l);
	if (rc < 0)
		catalog_generation_release(g);
	return rc;
}

struct load_many {
	pthread_mutex_t mu;
	struct storage *st;
	char (*ids)[LAYOUT_GEN_LEN + 1];
	struct cat_generation *gens;
	const struct st_call *call;
	int64_t end_ms;          /* call's deadline as a monotonic time, 0 = none */
	size_t n, next;
	bool stop;               /* a listing failed: take no more */
	size_t failed_at;        /* lowest failed index, n if none */
	int rc;
	struct st_error err;
};

/* Take indexes in order until none is left or a listing failed. */
static void *load_worker(void *p)
{
	struct load_many *m = p;
	for (;;) {
		pthread_mutex_lock(&m->mu);
		size_t i = m->next;
		bool done = m->stop || i >= m->n;
		if (!done)
			m->next++;
		pthread_mutex_unlock(&m->mu);
		if (done)
			return NULL;
		struct st_error e = { 0 };
		struct st_call c = m->call ? *m->call : (struct st_call){ 0 };
		if (m->end_ms) {
			int64_t left = m->end_ms - clock_mono_ms();
			c.deadline_ms = left > 1 ? left : 1;
		}
		int rc = catalog_load(m->st, m->ids[i], &m->gens[i], &c, &e);
		if (rc < 0) {
			pthread_mutex_lock(&m->mu);
			m->stop = true;
			if (i < m->failed_at) {
				m->failed_at = i;
				m->rc = rc;
				m->err = e;
			}
			pthread_mutex_unlock(&m->mu);
		}
	}
}

int catalog_load_many(struct storage *st, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
		      struct cat_generation *gens, size_t parallel, const struct st_call *call,
		      struct st_error *err)
{
	if (n == 0)
		return 0;
	struct load_many m = { .st = st, .ids = ids, .gens = gens, .call = call, .n = n,
			       .failed_at = n };
	if (call && call->deadline_ms > 0)
		m.end_ms = clock_mono_ms() + call->deadline_ms;
	pthread_t th[CATALOG_MAX_PARALLEL];
	size_t nth = 0;

	/* a failed listing leaves its slot zeroed; unstarted ones must be too */
	memset(gens, 0, n * sizeof(*gens));
	pthread_mutex_init(&m.mu, NULL);
	if (parallel > CATALOG_MAX_PARALLEL)
		parallel = CATALOG_MAX_PARALLEL;
	/* this thread is one of the workers; fewer threads if any cannot start */
	while (nth + 1 < parallel && nth + 1 < n &&
	       pthread_create(&th[nth], NULL, load_worker, &m) == 0)
		nth++;
	load_worker(&m);
	for (size_t i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	pthread_mutex_destroy(&m.mu);
	if (m.failed_at == n)
		return 0;
	for (size_t i = 0; i < n; i++)
		catalog_generation_release(&gens[i]);
	*err = m.err;
	return m.rc;
}

void catalog_generation_release(struct cat_generation *g)
{
	free(g->snapshots);
	free(g->segments);
	free(g->closed);
	free(g->labels);
	g->snapshots = NULL;
	g->segments = NULL;
	g->closed = NULL;
	g->labels = NULL;
	g->nsnapshots = g->nsegments = g->nclosed = g->nlabels = 0;
	g->database_id[0] = '\0';
}

bool catalog_closed_at(const struct cat_generation *g, const struct wal_pos *end)
{
	for (size_t i = 0; i < g->nclosed; i++) {
		const struct cat_closed *c = &g->closed[i];
		if ((c->index == end->index && c->offset == end->offset) ||
		    (c->offset == 0 && end->index != UINT32_MAX && c->index == end->index + 1))
			return true;
	}
	return false;
}

bool catalog_closed_at_end(const struct cat_generation *g)
{
	if (!g->nclosed)
		return false;
	if (!g->nsegments)
		return true;
	const struct cat_closed *c = &g->closed[g->nclosed - 1];
	const struct cat_segment *s = &g->segments[g->nsegments - 1];
	return c->index > s->index || (c->index == s->index && c->offset > s->offset);
}

int catalog_gen_order(const struct cat_generation *a, const struct cat_generation *b)
{
	if (a->max_ns != b->max_ns)
		return a->max_ns > b->max_ns ? 1 : -1;
	if (a->min_ns != b->min_ns)
		return a->min_ns > b->min_ns ? 1 : -1;
	bool ca = catalog_closed_at_end(a), cb = catalog_closed_at_end(b);
	if (ca != cb)
		return ca ? -1 : 1;
	return 0;
}

bool catalog_written_after(const struct cat_generation *g, int64_t mark_ns)
{
	if (!g->max_ns || !mark_ns)
		return false;
	if (g->max_ns > mark_ns)
		return true;
	bool whole = g->max_ns % NS_PER_SEC == 0 || mark_ns % NS_PER_SEC == 0;
	return whole && g->max_ns / NS_PER_SEC == mark_ns / NS_PER_SEC;
}

const struct cat_snapshot *catalog_snapshot_at_or_before(const struct cat_generation *g,
							 uint32_t max_index)
{
	const struct cat_snapshot *best = NULL;
	for (size_t i = 0; i < g->nsnapshots; i++)
		if (g->snapshots[i].index <= max_index)
			best = &g->snapshots[i];
	return best;
}

bool catalog_continuable(const struct cat_generation *g, char *why, size_t len)
{
	uint32_t end = 0;
	for (size_t i = 0; i < g->nsnapshots; i++)
		end = g->snapshots[i].index > end ? g->snapshots[i].index : end;
	if (g->nsegments && g->segments[g->nsegments - 1].index > end)
		end = g->segments[g->nsegments - 1].index;
	const struct cat_snapshot *s = catalog_snapshot_at_or_before(g, end);
	if (!s && g->nsegments) {
		/* a snapshot still to come (its upload failed after its WAL's) goes at this
		 * index or a later one: this index must hold its start */
		size_t k = g->nsegments - 1;
		while (k > 0 && g->segments[k - 1].index == end)
			k--;
		if (g->segments[k].offset == 0)
			return true;
		snprintf(why, len, "in generation %s, with no snapshot, WAL index %08x has lost its "
			 "first segment (offset 0)", g->id, end);
		return false;
	}
	/*
	 * Below it too, each index kept starts at offset 0: Litestream reads every
	 * segment of the generation and refuses it all for one index without its
	 * start (retention deletes an index's offset-0 segment last).
	 */
	for (size_t i = 0; s && i < g->nsegments && g->segments[i].index < s->index; i++) {
		const struct cat_segment *c = &g->segments[i];
		if ((i == 0 || g->segments[i - 1].index != c->index) && c->offset != 0) {
			snprintf(why, len, "in generation %s, WAL index %08x (below the newest "
				 "snapshot's) has lost its first segment (offset 0)", g->id, c->index);
			return false;
		}
	}
	if (!s || (s->index == end && (!g->nsegments || g->segments[g->nsegments - 1].index < end)))
		return true; /* nothing, or the snapshot alone */
	/* each index from the snapshot's on, each from its offset-0 segment */
	uint32_t want = s->index;
	for (size_t i = 0; i < g->nsegments; i++) {
		const struct cat_segment *c = &g->segments[i];
		if (c->index < s->index || (i > 0 && g->segments[i - 1].index == c->index))
			continue;
		if (c->index != want || c->offset != 0) {
			snprintf(why, len, "in generation %s, WAL index %08x %s", g->id,
				 c->index != want ? want : c->index,
				 c->index != want ? "is missing" : "has lost its first segment (offset 0)");
			return false;
		}
		want++;
	}
	return true;
}

/* A sink that only counts bytes. */
static int count_write(void *ctx, const void *buf, size_t len)
{
	(void)buf;
	*(uint64_t *)ctx += len;
	return 0;
}

int catalog_read_segment(struct storage *st, const char *gen, uint32_t index, uint32_t offset,
			 struct st_sink *plain, const struct st_call *call, struct st_error *err)
{
	char key[LAYOUT_KEY_MAX];
	struct st_sink sink;
	struct lz4_dec dec;
	if (lz4_dec_init(&dec, &sink, plain) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "out of memory");
		return ST_PERMANENT;
	}
	layout_wal_key(key, gen, index, offset);
	int rc = storage_get(st, key, &sink, call, err);
	if (rc == 0 && lz4_dec_finish(&dec) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "%s: %s", key, dec.error);
		rc = ST_PERMANENT;
	}
	/* the decoder knows why it refused the bytes; the storage only that they were refused */
	if (rc < 0 && dec.failed) {
		st_error_set(err, ST_PERMANENT, 0, "%s: %s", key, dec.error);
		err->foreign_form = dec.age_encrypted;
		rc = ST_PERMANENT;
	}
	lz4_dec_release(&dec);
	return rc;
}

struct form_sink {
	unsigned char head[19];
	size_t have;
};

/* Keep the first bytes, then refuse the rest: they tell the form. */
static int form_write(void *ctx, const void *buf, size_t len)
{
	struct form_sink *f = ctx;
	size_t take = len < sizeof(f->head) - f->have ? len : sizeof(f->head) - f->have;
	memcpy(f->head + f->have, buf, take);
	f->have += take;
	return f->have == sizeof(f->head) ? -1 : 0;
}

int catalog_snapshot_form(struct storage *st, const char *gen, uint32_t index,
			  const struct st_call *call, struct st_error *err)
{
	static const unsigned char lz4[4] = { 0x04, 0x22, 0x4d, 0x18 };
	char key[LAYOUT_KEY_MAX];
	struct form_sink f = { .have = 0 };
	struct st_sink sink = { form_write, &f };
	layout_snapshot_key(key, gen, index);
	int rc = storage_get(st, key, &sink, call, err);
	if (rc < 0 && (err->foreign_form || f.have < sizeof(lz4)))
		return rc; /* the other form under age:, or the get failed */
	if (f.have >= sizeof(lz4) && memcmp(f.head, lz4, sizeof(lz4)) == 0)
		return 0; /* an LZ4 frame, decrypted or not: the form expected */
	if (f.have == sizeof(f.head) && memcmp(f.head, "age-encryption.org/", 19) == 0) {
		st_error_set(err, ST_PERMANENT, 0, "%s: the object is age-encrypted: give the "
			     "replica's age: identities in the config", key);
		err->foreign_form = true;
		return ST_PERMANENT;
	}
	st_error_set(err, ST_PERMANENT, 0, "%s: corrupt LZ4 frame (no LZ4 magic)", key);
	return ST_PERMANENT;
}

/* Just past the last byte of segment *seg, its plain length found by downloading it. */
static int segment_end(struct storage *st, const char *gen, const struct cat_segment *seg,
		       uint32_t *end, const struct st_call *call, struct st_error *err)
{
	uint64_t plain = 0;
	struct st_sink counter = { count_write, &plain };
	int rc = catalog_read_segment(st, gen, seg->index, seg->offset, &counter, call, err);
	if (rc < 0)
		return rc;
	/* a WAL header alone (a placeholder, wal.h) holds nothing: the index ends at 0 */
	*end = seg->offset == 0 && plain == WAL_HEADER_SIZE ? 0 : seg->offset + (uint32_t)plain;
	return 0;
}

int catalog_end_position(struct storage *st, const struct cat_generation *g, struct wal_pos *pos,
			 const struct st_call *call, struct st_error *err)
{
	memset(pos, 0, sizeof(*pos));
	memcpy(pos->generation, g->id, sizeof(pos->generation));
	if (g->nsnapshots == 0 && g->nsegments == 0) {
		st_error_set(err, ST_NOT_FOUND, 0, "generation %s holds no objects", g->id);
		return ST_NOT_FOUND;
	}
	if (g->nsnapshots)
		pos->index = g->snapshots[g->nsnapshots - 1].index;
	if (g->nsegments == 0)
		return 0;
	const struct cat_segment *last = &g->segments[g->nsegments - 1];
	if (last->index < pos->index)
		return 0;
	int rc = segment_end(st, g->id, last, &pos->offset, call, err);
	if (rc == 0)
		pos->index = last->index;
	return rc;
}

int catalog_index_end(struct storage *st, const struct cat_generation *g, uint32_t index,
		      uint32_t *end, const struct st_call *call, struct st_error *err)
{
	const struct cat_segment *last = NULL;
	for (size_t i = 0; i < g->nsegments; i++)
		if (g->segments[i].index == index)
			last = &g->segments[i];
	if (!last) {
		st_error_set(err, ST_NOT_FOUND, 0, "generation %s holds no segment of index %08x",
			     g->id, index);
		return ST_NOT_FOUND;
	}
	return segment_end(st, g->id, last, end, call, err);
}

struct head_sink {
	uint8_t *buf;
	size_t have;
};

static int head_write(void *ctx, const void *buf, size_t len)
{
	struct head_sink *h = ctx;
	size_t take = len < WAL_HEADER_SIZE - h->have ? len : WAL_HEADER_SIZE - h->have;
	memcpy(h->buf + h->have, buf, take);
	h->have += take;
	return 0;
}

int catalog_index_header(struct storage *st, const struct cat_generation *g, uint32_t index,
			 uint8_t hdr[WAL_HEADER_SIZE], const struct st_call *call,
			 struct st_error *err)
{
	bool found = false;
	for (size_t i = 0; i < g->nsegments && !found; i++)
		found = g->segments[i].index == index && g->segments[i].offset == 0;
	if (!found) {
		st_error_set(err, ST_NOT_FOUND, 0, "generation %s holds no segment at %08x/00000000",
			     g->id, index);
		return ST_NOT_FOUND;
	}
	struct head_sink head = { hdr, 0 };
	struct st_sink collect = { head_write, &head };
	int rc = catalog_read_segment(st, g->id, index, 0, &collect, call, err);
	if (rc == 0 && head.have < WAL_HEADER_SIZE) {
		st_error_set(err, ST_PERMANENT, 0, "generation %s: segment %08x/00000000 is shorter "
			     "than a WAL header", g->id, index);
		rc = ST_PERMANENT;
	}
	return rc;
}
