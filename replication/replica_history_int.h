/*
 * replica_history_int.h — what a replica's first look (replica_look.c) and
 * the older-database gate (replica_older.c) ask of a replica's history (not
 * for other modules): did another node write to it since this node last
 * did? Read from the replica's listing and this node's local records
 * (localstate.h: closed, previous, aside, earlier, Litestream's state).
 *
 * Invariant: the answers only read. Nothing here writes to the replica or
 * the local state; the caller refuses, leaves the generation or goes on.
 * Replica thread, mu not held (taken briefly where d's fields are read).
 * "why" is filled (at most len bytes) whenever an answer is 1.
 */
#ifndef LITEVISOR_REPLICA_HISTORY_INT_H
#define LITEVISOR_REPLICA_HISTORY_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replication/catalog.h"
#include "replication/engine_int.h"

/*
 * This node's closed record for r into *at, if it was written for the
 * location r now points at. Returns 0, or -1 (none usable; errno EXDEV when
 * it was written for another location).
 */
int replica_history_read_closed(const struct eng_replica *r, struct wal_pos *at);
/*
 * Does this node's closed record for r name generation gen (*at: where it
 * closed it, not written into since)?
 */
bool replica_history_closed_here(const struct eng_replica *r, const char *gen, struct wal_pos *at);
/*
 * Did Litestream replicate this very database into g (its state, as the
 * monitor captured it, names g and r holds no more of g than that)? 1 yes,
 * 0 no (or cannot tell), or a negative st_status (err set).
 */
int replica_history_litestream_wrote_here(struct eng_replica *r, const struct cat_generation *g,
					  const struct st_call *call, struct st_error *err);
/*
 * Without a closed record: does r hold the generation the database left
 * (its "previous" record *prev) past where its file stood there, among the
 * n listed ids? 1 (why set), 0, or a negative st_status.
 */
int replica_history_went_on_past(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1], size_t n,
				 const struct wal_pos *prev, char *why, size_t len,
				 const struct st_call *call, struct st_error *err);
/*
 * Without a closed record: has another node gone on in a generation of its
 * own since this node last wrote base (one written after it that is not
 * current, left, this node's recorded past, or Litestream's from this
 * file)? restored/restored_at: base is the generation restored (see the
 * definition). 1 (why set), 0, or a negative st_status.
 */
int replica_history_newer_elsewhere(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1],
				    size_t n, const char *base, const char *current,
				    const char *left, bool restored,
				    const struct wal_pos *restored_at, char *why, size_t len,
				    const struct st_call *call, struct st_error *err);
/*
 * Does g on r hold more of index than the `had` bytes this node's file held
 * of it when it went on to the next index? 1 (why set), 0 (no, or its
 * segments are gone), or a negative st_status.
 */
int replica_history_index_grew(struct eng_replica *r, const struct cat_generation *g,
			       uint32_t index, int64_t had, char *why, size_t len,
			       const struct st_call *call, struct st_error *err);
/*
 * With a closed record *at: has another node written to r since this node
 * closed at->generation there (that generation gone on past *at, reopened,
 * deleted while others remain, or another written after the closed mark)?
 * 1 (why set), 0, or a negative st_status.
 */
int replica_history_continued_since(struct eng_replica *r, char (*ids)[LAYOUT_GEN_LEN + 1],
				    size_t n, const struct wal_pos *at, char *why, size_t len,
				    const struct st_call *call, struct st_error *err);

#endif
