/*
 * catalog.h — what a replica holds: its generations, and for one generation
 * its snapshots and WAL segments, read through the storage interface.
 *
 * Used by the engine (where does a replica stand after a restart or a
 * restore?), by restore (probing candidates, choosing objects) and by the
 * `generations`, `snapshots` and `wal` commands. Objects whose names do not
 * follow the Litestream v0.3 layout are skipped, as Litestream does.
 */
#ifndef LITEVISOR_CATALOG_H
#define LITEVISOR_CATALOG_H

#include "replication/layout.h"
#include "replication/status.h"
#include "replication/storage.h"
#include "replication/wal.h"

struct cat_snapshot {
	uint32_t index;
	int64_t size;      /* compressed bytes stored */
	int64_t mtime_ns;  /* object time ("CreatedAt" in Litestream) */
};

struct cat_segment {
	uint32_t index, offset;
	int64_t size;      /* compressed bytes stored */
	int64_t mtime_ns;
};

/* A "closed" mark (layout.h): the writer stopped cleanly here. Not data. */
struct cat_closed {
	uint32_t index, offset;
	int64_t mtime_ns;
};

struct cat_generation {
	char id[LAYOUT_GEN_LEN + 1];
	struct cat_snapshot *snapshots; /* sorted by index */
	size_t nsnapshots;
	struct cat_segment *segments;   /* sorted by (index, offset) */
	size_t nsegments;
	struct cat_closed *closed;      /* sorted by (index, offset) */
	size_t nclosed;
	int64_t min_ns, max_ns;         /* time window of its snapshots and segments (0 if none) */
	int64_t clock_offset_ns;        /* its listing's (struct st_list): + a time = the server's */
	/*
	 * The database id its label names (layout.h), "" when it has no label
	 * or labels naming different ids (taken as unlabelled: nobody's in
	 * particular). labels: every label's id, for deleting them.
	 */
	char database_id[LAYOUT_DBID_LEN + 1];
	char (*labels)[LAYOUT_DBID_LEN + 1];
	size_t nlabels;
};

/*
 * List the generation names on a replica (sorted). *ids is a malloc'd array
 * of n names (free it). Returns 0 or a negative st_status with err set.
 */
int catalog_generations(struct storage *st, char (**ids)[LAYOUT_GEN_LEN + 1], size_t *n,
			const struct st_call *call, struct st_error *err);

/* List one generation's snapshots and segments into *g. Returns 0 or negative st_status. */
int catalog_load(struct storage *st, const char *gen, struct cat_generation *g,
		 const struct st_call *call, struct st_error *err);

#define CATALOG_MAX_PARALLEL 8 /* catalog_load_many's cap on listings in flight */

/*
 * catalog_load for each of the n generations ids[], into gens[0..n), with up
 * to `parallel` listings in flight (one round trip each: a replica Litestream
 * restarted often holds dozens of generations, and a probe listing them one
 * after another would spend its deadline on round trips). call->deadline_ms,
 * if set, bounds the whole: each listing gets what is left of it when it
 * starts. Returns 0 with all n loaded, or the status of the failed listing
 * with the lowest index, its message in err, and nothing left allocated in
 * gens; no listing starts after a failure is seen.
 */
int catalog_load_many(struct storage *st, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
		      struct cat_generation *gens, size_t parallel, const struct st_call *call,
		      struct st_error *err);

void catalog_generation_release(struct cat_generation *g);

/* The highest snapshot with index <= max_index (UINT32_MAX: any), or NULL. */
const struct cat_snapshot *catalog_snapshot_at_or_before(const struct cat_generation *g,
							 uint32_t max_index);

/*
 * Can a writer go on in g, as its listing shows it? With a snapshot: g
 * restores to its end, every index from the newest snapshot's on present,
 * each from its offset-0 segment, as both Litestream and litevisor require,
 * and every index kept below it from its offset-0 segment too (Litestream
 * reads them all).
 * Without one (its upload failed after its WAL's): the last index starts at
 * offset 0, so a snapshot taken there or later makes g whole. False with why
 * set when not: objects deleted under the writer (a replica emptied, then
 * written into again; a hand), which no snapshot at the current index mends.
 */
bool catalog_continuable(const struct cat_generation *g, char *why, size_t len);

/*
 * The replica's end position in generation g: just past the last byte of its
 * newest WAL segment (whose decompressed length is found by downloading it),
 * or the newest snapshot's index at offset 0 when no segment is newer.
 * Returns 0, or a negative st_status (ST_NOT_FOUND if g holds nothing).
 */
int catalog_end_position(struct storage *st, const struct cat_generation *g, struct wal_pos *pos,
			 const struct st_call *call, struct st_error *err);

/*
 * Where index `index` of g ends on the replica: just past the last byte of
 * its newest segment (downloaded to find its length; 0 for a header alone).
 * Returns 0, or a negative st_status (ST_NOT_FOUND: no segment of index).
 */
int catalog_index_end(struct storage *st, const struct cat_generation *g, uint32_t index,
		      uint32_t *end, const struct st_call *call, struct st_error *err);

/*
 * Is snapshot `index` of generation gen in the form st's age: settings read
 * (age-encrypted with an age: replica, plain LZ4 without)? Reads only its
 * first bytes (an encrypted one: its header and first chunk). Returns 0, or
 * a negative st_status: ST_PERMANENT with err->foreign_form when it is in the
 * other form, or for none of the identities. For a replica's end position
 * found from a snapshot alone (catalog_end_position reads no segment then).
 */
int catalog_snapshot_form(struct storage *st, const char *gen, uint32_t index,
			  const struct st_call *call, struct st_error *err);

/*
 * Did the node writing g close it at end, g's end position on this replica
 * (as catalog_end_position gives it)? True when a closed mark names end, or
 * names (end.index + 1, 0): the writer had entered the next index and
 * written nothing into it.
 */
bool catalog_closed_at(const struct cat_generation *g, const struct wal_pos *end);

/*
 * Download WAL segment (index, offset) of generation gen and write its
 * decompressed bytes into plain. Returns 0, or a negative st_status (a
 * corrupt LZ4 frame is ST_PERMANENT, its key named in err).
 */
int catalog_read_segment(struct storage *st, const char *gen, uint32_t index, uint32_t offset,
			 struct st_sink *plain, const struct st_call *call, struct st_error *err);

/*
 * The WAL header that starts index `index` of generation g on the replica:
 * the first 32 bytes of its offset-0 segment (the whole segment is read, no
 * more than 32 bytes kept). Its salts are drawn at random by the SQLite that
 * wrote the session, so two nodes never write the same header. Returns 0,
 * ST_NOT_FOUND if g lists no such segment, or a negative st_status.
 */
int catalog_index_header(struct storage *st, const struct cat_generation *g, uint32_t index,
			 uint8_t hdr[WAL_HEADER_SIZE], const struct st_call *call,
			 struct st_error *err);

/*
 * Did g's writer close it at its end: a closed mark past its last segment
 * (or any mark when it has no segment)? Read from the listing alone.
 */
bool catalog_closed_at_end(const struct cat_generation *g);

/*
 * Which of two generations was written later, from their listings: >0 a,
 * <0 b, 0 cannot tell. The newest object time decides; object times are
 * whole seconds on many S3 servers, so on a tie the one whose oldest
 * object is later (it started later: a successor starts after the one it
 * came from) is newer, then a generation whose closed mark lies past its
 * last segment (its writer stopped: it handed over) is the older. Closed
 * first hid the rows of a node that took over a killed node's generation
 * and stopped in the second that one ended (QA95 D2). Meant for two generations on one server (one clock); across
 * servers only an exact tie should come here (restore_choose.c keeps the
 * clock-skew margin).
 */
int catalog_gen_order(const struct cat_generation *a, const struct cat_generation *b);

/*
 * Was g written after a closed mark stamped mark_ns on the same server (one
 * clock)? True when g holds a data object (snapshot or segment) stamped
 * later; where either time is a whole second (S3 servers that keep no
 * more: each object was stored up to a second after its stamp), one in the
 * same second counts as later: the mark cannot be shown to come after it.
 * The one rule by which both a restart's engine (another node went on since
 * this node's clean stop: refuse the file) and `run`'s restore step (restore
 * that generation over the file) read "after this node stopped", so the
 * two never disagree (QA84 D3, D5). False when either time is unknown (0).
 */
bool catalog_written_after(const struct cat_generation *g, int64_t mark_ns);

/* Compare positions within one generation: <0, 0, >0. */
int wal_pos_cmp(const struct wal_pos *a, const struct wal_pos *b);

/*
 * Does a generation ending at end hold data past at? at's next index at
 * offset 0 is at itself (a WAL restarted after a checkpoint: nothing new).
 */
bool wal_pos_past(const struct wal_pos *end, const struct wal_pos *at);

#endif
