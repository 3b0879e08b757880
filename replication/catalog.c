/* catalog.c — list a replica's generations, snapshots and WAL segments. */
#include "replication/catalog.h"

#include <stdlib.h>
#include <string.h>

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

int catalog_load(struct storage *st, const char *gen, struct cat_generation *g,
		 const struct st_call *call, struct st_error *err)
{
	char prefix[LAYOUT_KEY_MAX];
	struct st_list snaps = { 0 }, wals = { 0 };
	int rc;

	memset(g, 0, sizeof(*g));
	memcpy(g->id, gen, LAYOUT_GEN_LEN);
	rc = storage_list(st, layout_snapshots_prefix(prefix, gen), NULL, &snaps, call, err);
	if (rc < 0 && rc != ST_NOT_FOUND)
		goto out;
	rc = storage_list(st, layout_wal_prefix(prefix, gen), NULL, &wals, call, err);
	if (rc < 0 && rc != ST_NOT_FOUND)
		goto out;
	rc = 0;
	g->snapshots = calloc(snaps.nobjects + 1, sizeof(*g->snapshots));
	g->segments = calloc(wals.nobjects + 1, sizeof(*g->segments));
	if (!g->snapshots || !g->segments) {
		st_error_set(err, ST_PERMANENT, 0, "out of memory listing generation %s", gen);
		rc = ST_PERMANENT;
		goto out;
	}
	for (size_t i = 0; i < snaps.nobjects; i++) {
		const char *base = strrchr(snaps.objects[i].key, '/');
		struct cat_snapshot *s = &g->snapshots[g->nsnapshots];
		if (layout_parse_snapshot(base ? base + 1 : snaps.objects[i].key, &s->index) < 0)
			continue;
		s->size = snaps.objects[i].size;
		s->mtime_ns = snaps.objects[i].mtime_ns;
		widen(g, s->mtime_ns);
		g->nsnapshots++;
	}
	for (size_t i = 0; i < wals.nobjects; i++) {
		const char *base = strrchr(wals.objects[i].key, '/');
		struct cat_segment *s = &g->segments[g->nsegments];
		if (layout_parse_wal(base ? base + 1 : wals.objects[i].key, &s->index, &s->offset) < 0)
			continue;
		s->size = wals.objects[i].size;
		s->mtime_ns = wals.objects[i].mtime_ns;
		widen(g, s->mtime_ns);
		g->nsegments++;
	}
	qsort(g->snapshots, g->nsnapshots, sizeof(*g->snapshots), cmp_snap);
	qsort(g->segments, g->nsegments, sizeof(*g->segments), cmp_seg);
out:
	st_list_release(&snaps);
	st_list_release(&wals);
	if (rc < 0)
		catalog_generation_release(g);
	return rc;
}

void catalog_generation_release(struct cat_generation *g)
{
	free(g->snapshots);
	free(g->segments);
	g->snapshots = NULL;
	g->segments = NULL;
	g->nsnapshots = g->nsegments = 0;
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

/* A sink that only counts bytes. */
static int count_write(void *ctx, const void *buf, size_t len)
{
	(void)buf;
	*(uint64_t *)ctx += len;
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

	char key[LAYOUT_KEY_MAX];
	uint64_t plain = 0;
	struct st_sink counter = { count_write, &plain }, sink;
	struct lz4_dec dec;
	if (lz4_dec_init(&dec, &sink, &counter) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "out of memory");
		return ST_PERMANENT;
	}
	layout_wal_key(key, g->id, last->index, last->offset);
	int rc = storage_get(st, key, &sink, call, err);
	if (rc == 0 && lz4_dec_finish(&dec) < 0) {
		st_error_set(err, ST_PERMANENT, 0, "%s: %s", key, dec.error);
		rc = ST_PERMANENT;
	}
	lz4_dec_release(&dec);
	if (rc < 0)
		return rc;
	pos->index = last->index;
	pos->offset = last->offset + (uint32_t)plain;
	return 0;
}
